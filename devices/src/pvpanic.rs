//! pvpanic as a PCI function (the IDs of QEMU's `pvpanic-pci`, driven by Linux's
//! `pvpanic-pci` module): a guest tells the host that it panicked or that a crash kernel is
//! loaded.
//!
//! BAR 0 is a 16-byte 32-bit memory BAR. Byte 0 is the event register: a read returns the
//! events the device supports ([`PVPANIC_PANICKED`] | [`PVPANIC_CRASH_LOADED`]); a write
//! reports the events whose bits are set. Every other byte reads as zero and ignores writes.
//! What a reported event does is up to the [`PvpanicHandler`] (the VMM ends the VM on
//! [`PvpanicEvent::Panicked`]).

use std::fmt;

use log_limit::{info_limit_global, warn_limit_global};

use crate::pci::{BarKind, BarReprogram, BarSpace, PciBar, PciConfigSpace, PciDevice, PciHeader};
use crate::GUEST_LOG_INTERVAL;

/// Vendor ID of `pvpanic-pci` (Red Hat, QEMU's PCI IDs).
pub const PVPANIC_VENDOR_ID: u16 = 0x1b36;
/// Device ID of `pvpanic-pci`.
pub const PVPANIC_DEVICE_ID: u16 = 0x0011;
/// Base class: base system peripheral.
pub const PVPANIC_CLASS: u8 = 0x08;
/// Subclass: other system peripheral.
pub const PVPANIC_SUBCLASS: u8 = 0x80;
/// Size of BAR 0.
pub const PVPANIC_BAR_SIZE: u64 = 16;
/// Event bit: the guest kernel panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
/// Event bit: the guest loaded a crash kernel (kdump) and is about to run it.
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;
/// The events this device supports (what the event register reads as).
pub const PVPANIC_EVENTS: u8 = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;

/// An event a guest reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvpanicEvent {
    /// `PVPANIC_PANICKED`: the guest kernel panicked.
    Panicked,
    /// `PVPANIC_CRASH_LOADED`: a crash kernel takes over.
    CrashLoaded,
}

impl fmt::Display for PvpanicEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PvpanicEvent::Panicked => "PVPANIC_PANICKED",
            PvpanicEvent::CrashLoaded => "PVPANIC_CRASH_LOADED",
        })
    }
}

/// Called (from a vCPU thread) for each event the guest reports.
pub type PvpanicHandler = Box<dyn FnMut(PvpanicEvent) + Send>;

/// The pvpanic PCI function.
pub struct PvpanicDevice {
    config: PciConfigSpace,
    handler: PvpanicHandler,
}

impl fmt::Debug for PvpanicDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PvpanicDevice")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PvpanicDevice {
    /// A pvpanic device that hands reported events to `handler`.
    pub fn new(handler: PvpanicHandler) -> Result<Self, crate::pci::PciError> {
        let mut config = PciConfigSpace::new(PciHeader {
            vendor_id: PVPANIC_VENDOR_ID,
            device_id: PVPANIC_DEVICE_ID,
            class: PVPANIC_CLASS,
            subclass: PVPANIC_SUBCLASS,
            subsystem_vendor_id: PVPANIC_VENDOR_ID,
            subsystem_id: PVPANIC_DEVICE_ID,
            ..Default::default()
        });
        config.add_bar(
            0,
            BarKind::Mem32 {
                prefetchable: false,
            },
            PVPANIC_BAR_SIZE,
        )?;
        Ok(PvpanicDevice { config, handler })
    }

    /// Handles a write of `value` to the event register.
    fn write_events(&mut self, value: u8) {
        let unknown = value & !PVPANIC_EVENTS;
        if unknown != 0 {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pvpanic: guest wrote unsupported event bits {unknown:#04x}; ignored"
            );
        }
        if value & PVPANIC_CRASH_LOADED != 0 {
            info_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pvpanic: guest reported {} (a crash kernel takes over)",
                PvpanicEvent::CrashLoaded
            );
            (self.handler)(PvpanicEvent::CrashLoaded);
        }
        if value & PVPANIC_PANICKED != 0 {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pvpanic: guest reported {} (the guest kernel panicked)",
                PvpanicEvent::Panicked
            );
            (self.handler)(PvpanicEvent::Panicked);
        }
    }
}

impl PciDevice for PvpanicDevice {
    fn name(&self) -> String {
        "pvpanic".to_string()
    }

    fn read_config_register(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }

    fn write_config_register(
        &mut self,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<BarReprogram> {
        self.config.write_reg(reg_idx, offset, data)
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn program_bar(&mut self, index: usize, addr: u64) -> Option<BarReprogram> {
        self.config.program_bar(index, addr)
    }

    fn decodes(&self, space: BarSpace) -> bool {
        self.config.decodes(space)
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar == 0 && offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = PVPANIC_EVENTS;
            }
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 || offset != 0 {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pvpanic: ignored write to BAR {bar} offset {offset:#x} ({} bytes)",
                data.len()
            );
            return;
        }
        if let Some(&value) = data.first() {
            self.write_events(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{REG_BAR0, REG_CLASS, REG_ID};
    use std::sync::{Arc, Mutex};

    fn device() -> (PvpanicDevice, Arc<Mutex<Vec<PvpanicEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let dev = PvpanicDevice::new(Box::new(move |e| seen.lock().unwrap().push(e))).unwrap();
        (dev, events)
    }

    #[test]
    fn config_space_has_the_pvpanic_pci_ids() {
        let (mut dev, _) = device();
        assert_eq!(dev.read_config_register(REG_ID), 0x0011_1b36);
        // Class 0x08, subclass 0x80, prog-if 0, revision 0.
        assert_eq!(dev.read_config_register(REG_CLASS), 0x0880_0000);
        assert_eq!(dev.name(), "pvpanic");
    }

    #[test]
    fn bar0_is_a_16_byte_memory_bar() {
        let (mut dev, _) = device();
        let bars = dev.bars();
        assert_eq!(bars.len(), 1);
        assert_eq!(bars[0].index, 0);
        assert_eq!(bars[0].size, PVPANIC_BAR_SIZE);
        assert_eq!(
            bars[0].kind,
            BarKind::Mem32 {
                prefetchable: false
            }
        );
        // Sizing as the guest does it: all-ones in, size mask out.
        dev.write_config_register(REG_BAR0, 0, &u32::MAX.to_le_bytes());
        assert_eq!(dev.read_config_register(REG_BAR0), !(16u32 - 1));
        // The other BARs are not implemented.
        for reg in REG_BAR0 + 1..REG_BAR0 + 6 {
            dev.write_config_register(reg, 0, &u32::MAX.to_le_bytes());
            assert_eq!(dev.read_config_register(reg), 0, "register {reg}");
        }
        let mv = dev.program_bar(0, 0xc000_1000).unwrap();
        assert_eq!(mv.new_addr, 0xc000_1000);
        assert_eq!(dev.bars()[0].addr, 0xc000_1000);
    }

    #[test]
    fn event_register_reads_the_supported_events() {
        let (mut dev, _) = device();
        let mut b = [0xffu8; 1];
        dev.read_bar(0, 0, &mut b);
        assert_eq!(b[0], PVPANIC_PANICKED | PVPANIC_CRASH_LOADED);
        assert_eq!(b[0], 0x03);
        let mut d = [0xffu8; 4];
        dev.read_bar(0, 0, &mut d);
        assert_eq!(d, [0x03, 0, 0, 0]);
        let mut other = [0xffu8; 1];
        dev.read_bar(0, 1, &mut other);
        assert_eq!(other, [0]);
    }

    #[test]
    fn writes_report_events_to_the_handler() {
        // The only test that writes PANICKED, whose log line (rate-limited per call site) it
        // checks.
        let (mut dev, events) = device();
        let lines = crate::test_log::lines_logged_by(|| {
            dev.write_bar(0, 0, &[PVPANIC_CRASH_LOADED]);
            assert_eq!(*events.lock().unwrap(), vec![PvpanicEvent::CrashLoaded]);
            dev.write_bar(0, 0, &[PVPANIC_PANICKED]);
        });
        assert_eq!(
            *events.lock().unwrap(),
            vec![PvpanicEvent::CrashLoaded, PvpanicEvent::Panicked]
        );
        assert!(
            lines
                .iter()
                .any(|(_, l)| l.contains("PVPANIC_PANICKED") && l.contains("panicked")),
            "{lines:?}"
        );
    }

    #[test]
    fn unsupported_bits_and_other_offsets_report_nothing() {
        let (mut dev, events) = device();
        dev.write_bar(0, 0, &[0x04]);
        dev.write_bar(0, 0, &[0xf0]);
        dev.write_bar(0, 1, &[PVPANIC_PANICKED]);
        dev.write_bar(0, 8, &[0xff; 8]);
        dev.write_bar(1, 0, &[PVPANIC_PANICKED]);
        dev.write_bar(0, 0, &[]);
        assert!(events.lock().unwrap().is_empty());
        // A supported bit among unsupported ones still counts.
        dev.write_bar(0, 0, &[0x82]);
        assert_eq!(*events.lock().unwrap(), vec![PvpanicEvent::CrashLoaded]);
    }
}
