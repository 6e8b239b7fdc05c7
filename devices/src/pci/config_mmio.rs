//! PCI Express enhanced configuration access (ECAM, "MMCONFIG"): every function's 4 KiB
//! configuration space at `base + bus << 20 | device << 15 | function << 12`. One guest access
//! is one exit, where mechanism #1 ([`super::PciConfigIo`]) takes two (address latch, data).
//! The VMM announces the window in the ACPI MCFG table and reserves it in the e820 map.

use std::sync::{Arc, Mutex};

use log_limit::debug_limit_global;
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::MutDeviceMmio;

use super::bus::PciBus;
use super::config_space::{dword_read_bytes, dword_write_parts};
use crate::GUEST_LOG_INTERVAL;

/// Bytes of the window per bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// The ECAM window device; register it over `buses * ECAM_BUS_SIZE` bytes of MMIO space.
pub struct PciConfigMmio {
    bus: Arc<Mutex<PciBus>>,
}

/// A decoded window offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EcamAddress {
    bus: u8,
    slot: u8,
    function: u8,
    reg_idx: usize,
    /// Byte within the dword.
    byte: usize,
}

impl EcamAddress {
    /// The function, register and byte at `offset` into the window; `None` past bus 255.
    fn decode(offset: u64) -> Option<Self> {
        let bus = u8::try_from(offset >> 20).ok()?;
        Some(Self {
            bus,
            slot: ((offset >> 15) & 0x1f) as u8,
            function: ((offset >> 12) & 0x7) as u8,
            reg_idx: ((offset & 0xfff) >> 2) as usize,
            byte: (offset & 0x3) as usize,
        })
    }
}

impl PciConfigMmio {
    /// The ECAM window of `bus`.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        Self { bus }
    }

    fn bus(&self) -> std::sync::MutexGuard<'_, PciBus> {
        self.bus.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `data.len()` bytes at `offset` into the window. An access of another size than 1,
    /// 2 or 4 bytes, or one that crosses a dword, reads all-ones (as a root complex answers an
    /// unsupported request).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(a) = EcamAddress::decode(offset) else {
            data.fill(0xff);
            return;
        };
        if !matches!(data.len(), 1 | 2 | 4) || a.byte + data.len() > 4 {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci ecam: read of {} bytes at {offset:#x} is not within one dword",
                data.len()
            );
            data.fill(0xff);
            return;
        }
        let value = self.bus().read_config(a.bus, a.slot, a.function, a.reg_idx);
        dword_read_bytes(value, a.byte, data);
    }

    /// Writes `data` at `offset` into the window; an access that is not 1, 2 or 4 bytes within
    /// one dword is dropped.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(a) = EcamAddress::decode(offset) else {
            return;
        };
        if dword_write_parts(a.byte, data).is_none() {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci ecam: write of {} bytes at {offset:#x} ignored",
                data.len()
            );
            return;
        }
        self.bus()
            .write_config(a.bus, a.slot, a.function, a.reg_idx, a.byte, data);
    }
}

impl MutDeviceMmio for PciConfigMmio {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_decode_to_bus_device_function_and_register() {
        let at = |bus: u64, dev: u64, func: u64, reg: u64| bus << 20 | dev << 15 | func << 12 | reg;
        assert_eq!(
            EcamAddress::decode(at(1, 3, 5, 0x104 + 2)),
            Some(EcamAddress {
                bus: 1,
                slot: 3,
                function: 5,
                reg_idx: 0x41,
                byte: 2
            })
        );
        assert_eq!(
            EcamAddress::decode(at(255, 31, 7, 0xffc))
                .map(|a| (a.bus, a.slot, a.function, a.reg_idx)),
            Some((255, 31, 7, 1023))
        );
        assert_eq!(EcamAddress::decode(256 << 20), None);
    }
}
