//! The virtio-pci common configuration structure (virtio 1.2, 4.1.4.3): feature negotiation,
//! device status and per-queue setup, as registers.

use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1};

use super::msix::NO_VECTOR;

/// Size of `struct virtio_pci_common_cfg` without the optional queue-reset fields.
pub const COMMON_CFG_SIZE: u64 = 0x38;

/// Driver-side setup of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Largest size the device supports.
    pub max_size: u16,
    /// Size chosen by the driver.
    pub size: u16,
    /// MSI-X vector.
    pub msix_vector: u16,
    /// queue_enable.
    pub enabled: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Driver (available) ring address.
    pub driver: u64,
    /// Device (used) ring address.
    pub device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            msix_vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// What a common-cfg write asks the transport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonCfgAction {
    /// Nothing beyond the register update.
    None,
    /// Status written 0: reset the device.
    Reset,
    /// FEATURES_OK accepted: tell the device the driver's features.
    FeaturesOk(u64),
    /// DRIVER_OK set: activate.
    DriverOk,
    /// A vector assignment changed (config or queue).
    VectorsChanged,
}

/// Register state of the common configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonCfg {
    /// Features offered (including VERSION_1).
    pub device_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    /// Features the driver wrote.
    pub driver_features: u64,
    /// device_status.
    pub status: u8,
    /// config_generation.
    pub config_generation: u8,
    /// config_msix_vector.
    pub config_msix_vector: u16,
    queue_select: u16,
    /// Per-queue setup.
    pub queues: Vec<QueueConfig>,
}

fn le(v: u64, data: &mut [u8]) {
    let bytes = v.to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = bytes.get(i).copied().unwrap_or(0);
    }
}

fn value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

/// Replaces the bytes `[off, off + len)` of a 64-bit register with `v` (4- or 8-byte halves).
fn set_part(reg: &mut u64, off: u64, data: &[u8]) {
    let shift = off * 8;
    let len_bits = data.len() as u64 * 8;
    let mask = if len_bits >= 64 {
        u64::MAX
    } else {
        ((1u64 << len_bits) - 1) << shift
    };
    *reg = (*reg & !mask) | ((value(data) << shift) & mask);
}

impl CommonCfg {
    /// Registers for a device with these features and queue sizes.
    pub fn new(device_features: u64, queue_max_sizes: &[u16]) -> Self {
        CommonCfg {
            device_features: device_features | (1u64 << VIRTIO_F_VERSION_1),
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            config_msix_vector: NO_VECTOR,
            queue_select: 0,
            queues: queue_max_sizes
                .iter()
                .map(|s| QueueConfig::new(*s))
                .collect(),
        }
    }

    /// Back to the state after power-on (status 0).
    pub fn reset(&mut self) {
        let sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        let features = self.device_features;
        let generation = self.config_generation;
        *self = CommonCfg::new(features, &sizes);
        self.config_generation = generation;
    }

    fn selected(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn selected_mut(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    /// Guest read at `offset` (registers read with their natural width; a 4-byte read of a
    /// 64-bit address returns that half; unknown offsets read 0).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let q = self.selected();
        let v: u64 = match (offset, data.len()) {
            (0x00, 4) => u64::from(self.device_feature_select),
            (0x04, 4) => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            (0x08, 4) => u64::from(self.driver_feature_select),
            (0x0c, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => u64::from(self.config_msix_vector),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => u64::from(self.status),
            (0x15, 1) => u64::from(self.config_generation),
            (0x16, 2) => u64::from(self.queue_select),
            (0x18, 2) => q.map_or(0, |q| u64::from(q.size)),
            (0x1a, 2) => q.map_or(u64::from(NO_VECTOR), |q| u64::from(q.msix_vector)),
            (0x1c, 2) => q.map_or(0, |q| u64::from(q.enabled)),
            // queue_notify_off: queue i notifies at i * multiplier.
            (0x1e, 2) => u64::from(self.queue_select),
            (0x20..=0x37, 4 | 8)
                if offset.is_multiple_of(4) && (offset % 8) + data.len() as u64 <= 8 =>
            {
                let Some(q) = q else {
                    le(0, data);
                    return;
                };
                let reg = match offset {
                    0x20..=0x27 => q.desc,
                    0x28..=0x2f => q.driver,
                    _ => q.device,
                };
                let shift = (offset % 8) * 8;
                reg.checked_shr(shift as u32).unwrap_or(0)
            }
            _ => {
                log::debug!(
                    "virtio-pci: read of {} bytes at common cfg {offset:#x}",
                    data.len()
                );
                0
            }
        };
        le(v, data);
    }

    /// Guest write at `offset`; returns what the transport must do.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> CommonCfgAction {
        let v = value(data);
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v as u32,
            (0x08, 4) => self.driver_feature_select = v as u32,
            (0x0c, 4) => {
                if self.status & VIRTIO_CONFIG_S_FEATURES_OK as u8 == 0 {
                    match self.driver_feature_select {
                        0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
                        1 => {
                            self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32)
                        }
                        _ => {}
                    }
                }
            }
            (0x10, 2) => {
                self.config_msix_vector = v as u16;
                return CommonCfgAction::VectorsChanged;
            }
            (0x14, 1) => return self.write_status(v as u8),
            (0x16, 2) => self.queue_select = v as u16,
            (0x18, 2) => {
                if let Some(q) = self.selected_mut() {
                    if !q.enabled {
                        q.size = v as u16;
                    }
                }
            }
            (0x1a, 2) => {
                if let Some(q) = self.selected_mut() {
                    q.msix_vector = v as u16;
                    return CommonCfgAction::VectorsChanged;
                }
            }
            (0x1c, 2) => {
                if let Some(q) = self.selected_mut() {
                    // Writing 0 is not allowed (queue reset is not offered).
                    if v == 1 {
                        q.enabled = true;
                    }
                }
            }
            (0x20..=0x37, 4 | 8)
                if offset.is_multiple_of(4) && (offset % 8) + data.len() as u64 <= 8 =>
            {
                if let Some(q) = self.selected_mut() {
                    if !q.enabled {
                        let reg = match offset {
                            0x20..=0x27 => &mut q.desc,
                            0x28..=0x2f => &mut q.driver,
                            _ => &mut q.device,
                        };
                        set_part(reg, offset % 8, data);
                    }
                }
            }
            _ => log::debug!(
                "virtio-pci: ignored write of {} bytes at common cfg {offset:#x}",
                data.len()
            ),
        }
        CommonCfgAction::None
    }

    fn write_status(&mut self, new: u8) -> CommonCfgAction {
        if new == 0 {
            self.reset();
            return CommonCfgAction::Reset;
        }
        let old = self.status;
        // Only a reset clears bits (the driver must not, virtio 1.2, 2.1.2): otherwise a
        // running device could read 0, or get FEATURES_OK and DRIVER_OK again without a reset.
        // NEEDS_RESET is the device's to set.
        let needs_reset = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
        if old & !new & !needs_reset != 0 {
            log_limit::warn_limit_global!(
                1,
                crate::GUEST_LOG_INTERVAL,
                "virtio-pci: guest error: status {new:#x} clears bits of {old:#x} without a reset: ignored"
            );
            return CommonCfgAction::None;
        }
        let features_ok = VIRTIO_CONFIG_S_FEATURES_OK as u8;
        let driver_ok = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK as u8;
        let mut status = new;
        let mut action = CommonCfgAction::None;
        if new & features_ok != 0 && old & features_ok == 0 {
            let unknown = self.driver_features & !self.device_features;
            let modern = self.driver_features & (1u64 << VIRTIO_F_VERSION_1) != 0;
            if unknown != 0 || !modern {
                log::warn!(
                    "virtio-pci: guest error: driver features {:#x} refused (offered {:#x})",
                    self.driver_features,
                    self.device_features
                );
                status &= !features_ok;
            } else {
                action = CommonCfgAction::FeaturesOk(self.driver_features);
            }
        }
        if status & driver_ok != 0 && old & driver_ok == 0 {
            if status & features_ok == 0 {
                log::warn!("virtio-pci: guest error: DRIVER_OK without FEATURES_OK");
                status &= !driver_ok;
            } else {
                action = CommonCfgAction::DriverOk;
            }
        }
        self.status = status;
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(c: &mut CommonCfg, off: u64, v: u64, len: usize) -> CommonCfgAction {
        c.write(off, &v.to_le_bytes()[..len])
    }

    fn r(c: &CommonCfg, off: u64, len: usize) -> u64 {
        let mut d = vec![0u8; len];
        c.read(off, &mut d);
        value(&d)
    }

    #[test]
    fn feature_negotiation_needs_version_1_and_no_unknown_bits() {
        let mut c = CommonCfg::new(0b1010, &[256, 16]);
        assert_eq!(r(&c, 0x04, 4), 0b1010);
        w(&mut c, 0x00, 1, 4);
        assert_eq!(r(&c, 0x04, 4), 1); // VERSION_1 is bit 32
        assert_eq!(r(&c, 0x12, 2), 2);
        // Unknown bit 0 with VERSION_1: refused, FEATURES_OK does not stick.
        w(&mut c, 0x0c, 0b1011, 4);
        w(&mut c, 0x08, 1, 4);
        w(&mut c, 0x0c, 1, 4);
        assert_eq!(w(&mut c, 0x14, 0xb, 1), CommonCfgAction::None);
        assert_eq!(r(&c, 0x14, 1), 0x3);
        // Without VERSION_1: refused.
        w(&mut c, 0x08, 0, 4);
        w(&mut c, 0x0c, 0b1000, 4);
        w(&mut c, 0x08, 1, 4);
        w(&mut c, 0x0c, 0, 4);
        assert_eq!(w(&mut c, 0x14, 0xb, 1), CommonCfgAction::None);
        // Proper subset.
        w(&mut c, 0x0c, 1, 4);
        assert_eq!(
            w(&mut c, 0x14, 0xb, 1),
            CommonCfgAction::FeaturesOk(0b1000 | 1 << 32)
        );
        assert_eq!(r(&c, 0x14, 1), 0xb);
        // Features are frozen after FEATURES_OK.
        w(&mut c, 0x0c, 0, 4);
        assert_eq!(c.driver_features, 0b1000 | 1 << 32);
        assert_eq!(w(&mut c, 0x14, 0xf, 1), CommonCfgAction::DriverOk);
        assert_eq!(w(&mut c, 0x14, 0, 1), CommonCfgAction::Reset);
        assert_eq!(r(&c, 0x14, 1), 0);
        assert_eq!(c.driver_features, 0);
    }

    #[test]
    fn driver_ok_without_features_ok_is_refused() {
        let mut c = CommonCfg::new(0, &[8]);
        assert_eq!(w(&mut c, 0x14, 0x7, 1), CommonCfgAction::None);
        assert_eq!(r(&c, 0x14, 1), 0x3);
    }

    /// Only a reset clears status bits: a running device neither reads status 0 nor gets
    /// its features or activation again after the driver drops and re-sets bits.
    #[test]
    fn status_bits_are_cleared_only_by_reset() {
        let mut c = CommonCfg::new(0, &[8]);
        w(&mut c, 0x08, 1, 4);
        w(&mut c, 0x0c, 1, 4);
        assert_eq!(
            w(&mut c, 0x14, 0xb, 1),
            CommonCfgAction::FeaturesOk(1 << 32)
        );
        assert_eq!(w(&mut c, 0x14, 0xf, 1), CommonCfgAction::DriverOk);
        // Dropping DRIVER_OK, then writing DRIVER_OK alone (refused without FEATURES_OK).
        assert_eq!(w(&mut c, 0x14, 0xb, 1), CommonCfgAction::None);
        assert_eq!(w(&mut c, 0x14, 0x4, 1), CommonCfgAction::None);
        assert_eq!(r(&c, 0x14, 1), 0xf);
        assert_eq!(w(&mut c, 0x14, 0xf, 1), CommonCfgAction::None);
        // Adding a bit (FAILED) still works; reset still clears everything.
        assert_eq!(w(&mut c, 0x14, 0x8f, 1), CommonCfgAction::None);
        assert_eq!(r(&c, 0x14, 1), 0x8f);
        assert_eq!(w(&mut c, 0x14, 0, 1), CommonCfgAction::Reset);
        assert_eq!(r(&c, 0x14, 1), 0);
    }

    #[test]
    fn queue_registers_by_halves_and_whole() {
        let mut c = CommonCfg::new(0, &[256, 16]);
        w(&mut c, 0x16, 1, 2);
        assert_eq!(r(&c, 0x18, 2), 16);
        assert_eq!(r(&c, 0x1e, 2), 1);
        w(&mut c, 0x18, 8, 2);
        w(&mut c, 0x20, 0x1234_5000, 4);
        w(&mut c, 0x24, 0x1, 4);
        w(&mut c, 0x28, 0xabcd_0000_1000, 8);
        w(&mut c, 0x30, 0x2000, 4);
        w(&mut c, 0x1a, 1, 2);
        w(&mut c, 0x1c, 1, 2);
        let q = c.queues[1];
        assert_eq!(
            (q.size, q.desc, q.driver, q.device, q.msix_vector, q.enabled),
            (8, 0x1_1234_5000, 0xabcd_0000_1000, 0x2000, 1, true)
        );
        assert_eq!(r(&c, 0x24, 4), 1);
        assert_eq!(r(&c, 0x28, 8), 0xabcd_0000_1000);
        // Enabled queues are frozen.
        w(&mut c, 0x20, 0, 4);
        assert_eq!(c.queues[1].desc, 0x1_1234_5000);
        // An out-of-range queue select reads zeros / NO_VECTOR and ignores writes.
        w(&mut c, 0x16, 99, 2);
        assert_eq!(r(&c, 0x18, 2), 0);
        assert_eq!(r(&c, 0x1a, 2), u64::from(NO_VECTOR));
        w(&mut c, 0x1c, 1, 2);
        w(&mut c, 0x20, 5, 4);
        // Odd widths and offsets are ignored.
        w(&mut c, 0x22, 5, 4);
        w(&mut c, 0x14, 0xff, 2);
        w(&mut c, 0x1000, 5, 4);
        assert_eq!(c.status, 0);
    }
}
