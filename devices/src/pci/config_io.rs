//! PCI configuration mechanism #1: the address latch at port 0xCF8 and the data window at
//! 0xCFC-0xCFF.

use std::sync::{Arc, Mutex};

use log_limit::debug_limit_global;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;

use super::bus::PciBus;
use super::config_space::{dword_read_bytes, dword_write_parts};
use crate::GUEST_LOG_INTERVAL;

/// First port of the configuration mechanism.
pub const PCI_CONFIG_IO_PORT: u16 = 0xcf8;
/// Number of ports (address dword + data dword).
pub const PCI_CONFIG_IO_PORT_SIZE: u16 = 8;

const ENABLE_BIT: u32 = 1 << 31;

/// The type-1 configuration access device; register it at 0xCF8 with length 8.
pub struct PciConfigIo {
    bus: Arc<Mutex<PciBus>>,
    /// CONFIG_ADDRESS: enable bit, bus, device, function, register.
    address: u32,
}

/// A decoded CONFIG_ADDRESS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConfigAddress {
    bus: u8,
    slot: u8,
    function: u8,
    reg_idx: usize,
}

impl PciConfigIo {
    /// A configuration access device for `bus`.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        Self { bus, address: 0 }
    }

    /// The current CONFIG_ADDRESS latch.
    pub fn address(&self) -> u32 {
        self.address
    }

    fn decode(&self) -> Option<ConfigAddress> {
        if self.address & ENABLE_BIT == 0 {
            return None;
        }
        Some(ConfigAddress {
            bus: ((self.address >> 16) & 0xff) as u8,
            slot: ((self.address >> 11) & 0x1f) as u8,
            function: ((self.address >> 8) & 0x7) as u8,
            // Bits 27:24 extend the register number to 4 KiB (AMD's extended configuration
            // access through 0xCF8, which Linux uses on AMD CPUs): dwords 0..1024.
            reg_idx: ((((self.address >> 24) & 0xf) << 6) | ((self.address >> 2) & 0x3f)) as usize,
        })
    }

    fn bus(&self) -> std::sync::MutexGuard<'_, PciBus> {
        self.bus.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads from port `0xCF8 + offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0..=3 => dword_read_bytes(self.address, offset as usize, data),
            4..=7 => {
                let byte = (offset - 4) as usize;
                if byte + data.len() > 4 {
                    debug_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "pci config io: read of {} bytes at {offset} crosses the data port",
                        data.len()
                    );
                    data.fill(0xff);
                    return;
                }
                let value = match self.decode() {
                    Some(a) => self.bus().read_config(a.bus, a.slot, a.function, a.reg_idx),
                    _ => 0xffff_ffff,
                };
                dword_read_bytes(value, byte, data);
            }
            _ => data.fill(0xff),
        }
    }

    /// Writes to port `0xCF8 + offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                // Bits 1:0 are reserved and read as 0.
                self.address = u32::from_le_bytes(b) & !0x3;
            }
            4..=7 => {
                let byte = (offset - 4) as usize;
                if dword_write_parts(byte, data).is_none() {
                    debug_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "pci config io: write of {} bytes at {offset} ignored",
                        data.len()
                    );
                    return;
                }
                if let Some(a) = self.decode() {
                    self.bus()
                        .write_config(a.bus, a.slot, a.function, a.reg_idx, byte, data);
                }
            }
            _ => debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci config io: write of {} bytes at 0xcf8+{offset} ignored",
                data.len()
            ),
        }
    }
}

impl MutDevicePio for PciConfigIo {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(u64::from(offset), data);
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(u64::from(offset), data);
    }
}
