//! i8042 keyboard controller, reduced to what a VMM needs: the CPU reset command.

use log_limit::{debug_limit_global, warn_limit_global};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::I8042Device;

use super::trigger::EventFdTrigger;
use crate::GUEST_LOG_INTERVAL;

/// Data port of the i8042.
pub const I8042_DATA_PORT: u16 = 0x60;
/// Command/status port of the i8042. Writing 0xfe here resets the CPU.
pub const I8042_COMMAND_PORT: u16 = 0x64;

/// Status register as the guest reads it: output buffer full (bit 0), input buffer empty
/// (bit 1 clear). There is no keyboard behind this controller, and a status that never
/// drains makes Linux's i8042 driver give up after 16 reads of its flush loop ("No controller
/// found") instead of polling 10000 times for a CTR byte that never comes (each poll is a VM
/// exit). The reset path (`reboot=k`) only waits for bit 1 to clear, so it proceeds at once.
const STATUS_OUTPUT_FULL: u8 = 0x01;

/// The i8042 on the port bus. Register it twice, as unit ranges at [`I8042_DATA_PORT`] and
/// [`I8042_COMMAND_PORT`] (0x61-0x63 belong to other devices). A reset command (0xfe to the
/// command port) triggers the reset eventfd.
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller that signals `reset` when the guest asks for a CPU reset.
    pub fn new(reset: EventFdTrigger) -> Self {
        I8042 {
            inner: I8042Device::new(reset),
        }
    }

    /// Offset of the accessed port from the data port, if the access is one this device decodes.
    fn register(base: PioAddress, offset: PioAddressOffset, len: usize) -> Option<u8> {
        let port = base.0.checked_add(offset)?;
        match (port, len) {
            (I8042_DATA_PORT | I8042_COMMAND_PORT, 1) => Some((port - I8042_DATA_PORT) as u8),
            _ => None,
        }
    }
}

impl MutDevicePio for I8042 {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        match Self::register(base, offset, data.len()) {
            Some(reg) if reg == (I8042_COMMAND_PORT - I8042_DATA_PORT) as u8 => {
                data[0] = STATUS_OUTPUT_FULL
            }
            Some(reg) => data[0] = self.inner.read(reg),
            None => {
                debug_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "i8042: ignored read at {:#x}+{offset}",
                    base.0
                );
                data.fill(0xff);
            }
        }
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        match Self::register(base, offset, data.len()) {
            Some(reg) => {
                if let Err(e) = self.inner.write(reg, data[0]) {
                    warn_limit_global!(1, GUEST_LOG_INTERVAL, "i8042: failed to signal reset: {e}");
                }
            }
            None => debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "i8042: ignored write at {:#x}+{offset}",
                base.0
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn reset_command_triggers_the_reset_event() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(EventFdTrigger::new(evt.try_clone().unwrap()));
        // Other commands and data writes do nothing.
        dev.pio_write(PioAddress(I8042_COMMAND_PORT), 0, &[0xad]);
        dev.pio_write(PioAddress(I8042_DATA_PORT), 0, &[0xfe]);
        assert!(evt.read().is_err(), "no reset yet");
        dev.pio_write(PioAddress(I8042_COMMAND_PORT), 0, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
    }

    #[test]
    fn status_lets_reset_proceed_and_probe_fail_fast() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(EventFdTrigger::new(evt));
        let mut status = [0xaa];
        dev.pio_read(PioAddress(I8042_COMMAND_PORT), 0, &mut status);
        // Input buffer empty (bit 1 clear): Linux's kb_wait() before the reset returns at once.
        assert_eq!(status[0] & 0x02, 0);
        // Output buffer full (bit 0): the driver's flush loop gives up after 16 data reads.
        assert_eq!(status[0] & 0x01, 0x01);
        let mut data = [0xaa];
        dev.pio_read(PioAddress(I8042_DATA_PORT), 0, &mut data);
        assert_eq!(data[0], 0);
        let mut wide = [0u8; 2];
        dev.pio_read(PioAddress(I8042_COMMAND_PORT), 0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }
}
