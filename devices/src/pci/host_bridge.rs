//! The PCI host bridge at 00:00.0.

use super::bar::{BarReprogram, BarSpace, PciBar};
use super::config_space::{PciConfigSpace, PciHeader};
use super::device::PciDevice;

/// Vendor ID of the host bridge (Intel).
pub const HOST_BRIDGE_VENDOR_ID: u16 = 0x8086;
/// Device ID of the host bridge (the one cloud-hypervisor uses; any host bridge ID works).
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0d57;
/// Base class: bridge.
pub const CLASS_BRIDGE: u8 = 0x06;
/// Subclass: host bridge.
pub const SUBCLASS_HOST_BRIDGE: u8 = 0x00;

/// A host bridge with no BARs: lets the guest find bus 0.
#[derive(Debug)]
pub struct PciHostBridge {
    config: PciConfigSpace,
}

impl PciHostBridge {
    /// A host bridge with the default IDs.
    pub fn new() -> Self {
        Self {
            config: PciConfigSpace::new(PciHeader {
                vendor_id: HOST_BRIDGE_VENDOR_ID,
                device_id: HOST_BRIDGE_DEVICE_ID,
                class: CLASS_BRIDGE,
                subclass: SUBCLASS_HOST_BRIDGE,
                ..Default::default()
            }),
        }
    }
}

impl Default for PciHostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for PciHostBridge {
    fn name(&self) -> String {
        "host-bridge".to_string()
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
        Vec::new()
    }

    fn program_bar(&mut self, _index: usize, _addr: u64) -> Option<BarReprogram> {
        None
    }

    fn decodes(&self, space: BarSpace) -> bool {
        self.config.decodes(space)
    }

    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}
