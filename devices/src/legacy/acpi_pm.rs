//! The power management registers of a hardware-reduced ACPI platform, on the port I/O bus: the
//! FADT's sleep control and sleep status registers and its reset register. The guest's `poweroff`
//! writes `SLP_TYP` = [`SLEEP_TYPE_S5`] with `SLP_EN` to the sleep control register; its ACPI
//! reboot (`reboot=a`, Linux's first choice) writes [`RESET_VALUE`] to the reset register. What
//! either does is up to the [`AcpiPmHandler`] (the VMM ends the VM).
//!
//! | port | register | access |
//! |------|----------|--------|
//! | [`ACPI_PM_PORT`] | sleep control: `SLP_TYP` bits 2..5, `SLP_EN` bit 5 | write |
//! | [`ACPI_PM_PORT`] + 1 | sleep status: `WAK_STS` bit 7 | reads 0 (the VM never wakes) |
//! | [`ACPI_PM_PORT`] + 2 | reset: [`RESET_VALUE`] resets | write |
//!
//! Any other access reads as zero and is ignored (one rate-limited log line).

use log_limit::warn_limit_global;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use crate::GUEST_LOG_INTERVAL;

/// First port of the registers.
pub const ACPI_PM_PORT: u16 = 0x600;
/// Number of ports.
pub const ACPI_PM_PORT_LEN: u16 = 3;
/// Offset of the sleep control register.
pub const SLEEP_CONTROL_OFFSET: u16 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS_OFFSET: u16 = 1;
/// Offset of the reset register.
pub const RESET_OFFSET: u16 = 2;
/// The value the guest writes to the reset register to reset (the FADT's `RESET_VALUE`).
pub const RESET_VALUE: u8 = 0x01;
/// `SLP_TYP` of the S5 (soft-off) state, as the DSDT's `_S5` object gives it.
pub const SLEEP_TYPE_S5: u8 = 5;

/// `SLP_EN`: the sleep control register's "enter the sleep state" bit.
const SLP_EN: u8 = 1 << 5;
/// `SLP_TYP`: the sleep type field, bits 2..5.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;

/// What the guest asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiPmEvent {
    /// Entered S5 (soft off): `poweroff`.
    PowerOff,
    /// Wrote the reset value to the reset register.
    Reset,
}

/// Called (from a vCPU thread) for each event.
pub type AcpiPmHandler = Box<dyn FnMut(AcpiPmEvent) + Send>;

/// The sleep control/status and reset registers.
pub struct AcpiPm {
    handler: AcpiPmHandler,
}

impl std::fmt::Debug for AcpiPm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPm").finish_non_exhaustive()
    }
}

impl AcpiPm {
    /// Registers that hand power-off and reset requests to `handler`.
    pub fn new(handler: AcpiPmHandler) -> Self {
        AcpiPm { handler }
    }

    /// The register a one-byte access at `base + offset` reaches.
    fn offset(base: PioAddress, offset: PioAddressOffset, len: usize) -> Option<u16> {
        let port = base.0.checked_add(offset)?;
        let off = port.checked_sub(ACPI_PM_PORT)?;
        (len == 1 && off < ACPI_PM_PORT_LEN).then_some(off)
    }
}

impl MutDevicePio for AcpiPm {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        data.fill(0);
        if Self::offset(base, offset, data.len()).is_none() {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "acpi-pm: ignored {}-byte read at {:#x}+{offset}",
                data.len(),
                base.0
            );
        }
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let Some(off) = Self::offset(base, offset, data.len()) else {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "acpi-pm: ignored {}-byte write at {:#x}+{offset}",
                data.len(),
                base.0
            );
            return;
        };
        let value = data[0];
        match off {
            SLEEP_CONTROL_OFFSET if value & SLP_EN != 0 => {
                let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if sleep_type == SLEEP_TYPE_S5 {
                    (self.handler)(AcpiPmEvent::PowerOff);
                } else {
                    warn_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "acpi-pm: sleep type {sleep_type} is not supported (only S5, power off)"
                    );
                }
            }
            RESET_OFFSET if value == RESET_VALUE => (self.handler)(AcpiPmEvent::Reset),
            // SLP_EN clear, the sleep status register (nothing to clear), other reset values.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn device() -> (AcpiPm, Arc<Mutex<Vec<AcpiPmEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let dev = AcpiPm::new(Box::new(move |e| s.lock().unwrap().push(e)));
        (dev, seen)
    }

    fn write(dev: &mut AcpiPm, port: u16, data: &[u8]) {
        dev.pio_write(PioAddress(ACPI_PM_PORT), port - ACPI_PM_PORT, data);
    }

    #[test]
    fn s5_with_slp_en_powers_off_and_other_writes_do_nothing() {
        let (mut dev, seen) = device();
        let control = ACPI_PM_PORT + SLEEP_CONTROL_OFFSET;
        // Linux's acpi_hw_extended_sleep: SLP_TYP without SLP_EN first, then with it.
        write(&mut dev, control, &[SLEEP_TYPE_S5 << 2]);
        assert!(seen.lock().unwrap().is_empty(), "SLP_EN clear: no sleep");
        write(&mut dev, control, &[3 << 2 | SLP_EN]);
        assert!(seen.lock().unwrap().is_empty(), "S3 is not supported");
        write(&mut dev, ACPI_PM_PORT + SLEEP_STATUS_OFFSET, &[0xff]);
        write(&mut dev, control, &[SLEEP_TYPE_S5 << 2 | SLP_EN, 0]);
        assert!(seen.lock().unwrap().is_empty(), "two-byte access");
        write(&mut dev, control, &[SLEEP_TYPE_S5 << 2 | SLP_EN]);
        assert_eq!(*seen.lock().unwrap(), [AcpiPmEvent::PowerOff]);
    }

    #[test]
    fn only_the_reset_value_resets() {
        let (mut dev, seen) = device();
        let reset = ACPI_PM_PORT + RESET_OFFSET;
        for v in [0u8, 2, 0xfe, 0xff] {
            write(&mut dev, reset, &[v]);
        }
        assert!(seen.lock().unwrap().is_empty());
        write(&mut dev, reset, &[RESET_VALUE]);
        assert_eq!(*seen.lock().unwrap(), [AcpiPmEvent::Reset]);
    }

    #[test]
    fn reads_are_zero_and_out_of_range_accesses_are_ignored() {
        let (mut dev, seen) = device();
        for (off, len) in [
            (0u16, 1usize),
            (1, 1),
            (2, 1),
            (0, 4),
            (3, 1),
            (u16::MAX, 1),
        ] {
            let mut data = vec![0xaa; len];
            dev.pio_read(PioAddress(ACPI_PM_PORT), off, &mut data);
            assert!(data.iter().all(|&b| b == 0), "offset {off} len {len}");
        }
        dev.pio_write(PioAddress(ACPI_PM_PORT), 3, &[RESET_VALUE]);
        dev.pio_write(PioAddress(u16::MAX), 1, &[RESET_VALUE]);
        assert!(seen.lock().unwrap().is_empty());
    }
}
