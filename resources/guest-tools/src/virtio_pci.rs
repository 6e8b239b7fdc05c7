//! A user-space virtio-pci (modern, virtio 1.x section 4.1) transport: capability parsing from
//! sysfs `config`, the common configuration structure in a BAR mapped through `resourceN`,
//! status/feature negotiation and queue setup, queue notification.
//!
//! Interrupts are not used: the driver polls the used ring (MSI-X vectors are set to NO_VECTOR and
//! INTx is disabled in the command register).

use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
};

use crate::error::{Error, Result};
use crate::pci::{MmioRegion, PciDevice};

/// PCI capability id of vendor-specific capabilities (virtio's).
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
/// `cfg_type` of the common configuration.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `cfg_type` of the notification area.
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `cfg_type` of the ISR status byte.
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
/// `cfg_type` of the device-specific configuration.
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
/// `cfg_type` of the PCI configuration access window.
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;
/// "No MSI-X vector".
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

/// Offsets in `struct virtio_pci_common_cfg`.
pub mod common {
    /// le32 device_feature_select
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    /// le32 device_feature
    pub const DEVICE_FEATURE: usize = 0x04;
    /// le32 driver_feature_select
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    /// le32 driver_feature
    pub const DRIVER_FEATURE: usize = 0x0c;
    /// le16 config_msix_vector
    pub const CONFIG_MSIX_VECTOR: usize = 0x10;
    /// le16 num_queues
    pub const NUM_QUEUES: usize = 0x12;
    /// u8 device_status
    pub const DEVICE_STATUS: usize = 0x14;
    /// u8 config_generation
    pub const CONFIG_GENERATION: usize = 0x15;
    /// le16 queue_select
    pub const QUEUE_SELECT: usize = 0x16;
    /// le16 queue_size
    pub const QUEUE_SIZE: usize = 0x18;
    /// le16 queue_msix_vector
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    /// le16 queue_enable
    pub const QUEUE_ENABLE: usize = 0x1c;
    /// le16 queue_notify_off
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    /// le64 queue_desc
    pub const QUEUE_DESC: usize = 0x20;
    /// le64 queue_driver (avail ring)
    pub const QUEUE_DRIVER: usize = 0x28;
    /// le64 queue_device (used ring)
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Size of the structure up to queue_device (virtio 1.0).
    pub const LEN: usize = 0x38;
}

/// One `struct virtio_pci_cap` (plus the notify multiplier of a notify capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioCap {
    /// Offset of the capability in config space.
    pub cap_offset: u8,
    /// `cfg_type` (VIRTIO_PCI_CAP_*).
    pub cfg_type: u8,
    /// BAR number.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
    /// `notify_off_multiplier` (notify capabilities only).
    pub notify_off_multiplier: Option<u32>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Walks the capability list of a config-space image and returns the virtio capabilities in list
/// order. Malformed lists (pointer out of range, loops) are errors.
pub fn parse_virtio_caps(config: &[u8]) -> Result<Vec<VirtioCap>> {
    const PCI_STATUS: usize = 0x06;
    const PCI_STATUS_CAP_LIST: u8 = 0x10;
    const PCI_CAPABILITY_LIST: usize = 0x34;
    if config.len() < 0x40 {
        return Err(Error::parse(
            "PCI config space",
            format!("only {} bytes", config.len()),
        ));
    }
    if config[PCI_STATUS] & PCI_STATUS_CAP_LIST == 0 {
        return Ok(Vec::new());
    }
    let mut caps = Vec::new();
    let mut ptr = usize::from(config[PCI_CAPABILITY_LIST] & !3);
    let mut steps = 0;
    while ptr != 0 {
        steps += 1;
        if steps > 48 {
            return Err(Error::parse(
                "PCI capability list",
                "more than 48 entries (a loop?)",
            ));
        }
        if ptr < 0x40 || ptr + 2 > config.len().min(256) {
            return Err(Error::parse(
                "PCI capability list",
                format!("pointer {ptr:#x} out of range"),
            ));
        }
        let id = config[ptr];
        let next = usize::from(config[ptr + 1] & !3);
        if id == PCI_CAP_ID_VNDR {
            let cap_len = usize::from(*config.get(ptr + 2).unwrap_or(&0));
            if cap_len < 16 || ptr + cap_len > config.len() {
                return Err(Error::parse(
                    "virtio PCI capability",
                    format!("at {ptr:#x}: cap_len {cap_len} too small or past the end"),
                ));
            }
            let cfg_type = config[ptr + 3];
            let bar = config[ptr + 4];
            let offset = le32(config, ptr + 8).unwrap_or(0);
            let length = le32(config, ptr + 12).unwrap_or(0);
            let notify_off_multiplier = if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG {
                if cap_len < 20 {
                    return Err(Error::parse(
                        "virtio notify capability",
                        format!("at {ptr:#x}: cap_len {cap_len} < 20"),
                    ));
                }
                le32(config, ptr + 16)
            } else {
                None
            };
            caps.push(VirtioCap {
                cap_offset: ptr as u8,
                cfg_type,
                bar,
                offset,
                length,
                notify_off_multiplier,
            });
        }
        ptr = next;
    }
    Ok(caps)
}

/// The structures a driver needs: the first capability of each type with a valid BAR (0..=5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioLayout {
    /// Common configuration.
    pub common: VirtioCap,
    /// Notification area (with multiplier).
    pub notify: VirtioCap,
    /// ISR byte.
    pub isr: VirtioCap,
    /// Device configuration (absent for devices without one).
    pub device: Option<VirtioCap>,
}

/// Picks the layout from parsed capabilities.
pub fn select_layout(caps: &[VirtioCap]) -> Result<VirtioLayout> {
    let first = |t: u8| caps.iter().copied().find(|c| c.cfg_type == t && c.bar <= 5);
    let need = |t: u8, name: &str| {
        first(t).ok_or_else(|| {
            Error::Unsupported(format!(
                "no virtio {name} capability (not a modern virtio-pci device?)"
            ))
        })
    };
    let common = need(VIRTIO_PCI_CAP_COMMON_CFG, "common config")?;
    if (common.length as usize) < common::LEN {
        return Err(Error::Unsupported(format!(
            "common config is only {} bytes",
            common.length
        )));
    }
    Ok(VirtioLayout {
        common,
        notify: need(VIRTIO_PCI_CAP_NOTIFY_CFG, "notify")?,
        isr: need(VIRTIO_PCI_CAP_ISR_CFG, "ISR")?,
        device: first(VIRTIO_PCI_CAP_DEVICE_CFG),
    })
}

/// A window (offset, length) into a mapped BAR.
#[derive(Debug, Clone, Copy)]
struct Window {
    bar: usize,
    offset: usize,
    length: usize,
}

/// A modern virtio-pci device driven from user space.
#[derive(Debug)]
pub struct VirtioPci {
    bars: Vec<Option<MmioRegion>>,
    common: Window,
    notify: Window,
    notify_mult: u32,
    isr: Window,
    /// The layout found.
    pub layout: VirtioLayout,
}

impl VirtioPci {
    /// Parses `dev`'s capabilities, maps the BARs they name and checks every window lies inside
    /// its BAR. The device must have no driver (see [`PciDevice::unbind`]).
    pub fn open(dev: &PciDevice) -> Result<Self> {
        let caps = parse_virtio_caps(&dev.read_config()?)?;
        let layout = select_layout(&caps)?;
        let mut bars: Vec<Option<MmioRegion>> = (0..6).map(|_| None).collect();
        let mut window = |c: &VirtioCap| -> Result<Window> {
            let bar = usize::from(c.bar);
            if bars[bar].is_none() {
                bars[bar] = Some(dev.map_bar(bar)?);
            }
            let len = bars[bar].as_ref().map_or(0, |m| m.len());
            let (offset, length) = (c.offset as usize, c.length as usize);
            if offset.checked_add(length).is_none_or(|e| e > len) {
                return Err(Error::Unsupported(format!(
                    "virtio cap type {} at BAR{bar}+{offset:#x} len {length:#x} is outside the {len:#x}-byte BAR",
                    c.cfg_type
                )));
            }
            Ok(Window {
                bar,
                offset,
                length,
            })
        };
        let common = window(&layout.common)?;
        let notify = window(&layout.notify)?;
        let isr = window(&layout.isr)?;
        Ok(VirtioPci {
            bars,
            common,
            notify,
            notify_mult: layout.notify.notify_off_multiplier.unwrap_or(0),
            isr,
            layout,
        })
    }

    fn region(&self, w: &Window) -> &MmioRegion {
        match self.bars.get(w.bar).and_then(Option::as_ref) {
            Some(r) => r,
            // `open` maps every BAR a window names.
            None => unreachable!("BAR{} of a window is mapped in open()", w.bar),
        }
    }

    fn c8(&self, off: usize) -> u8 {
        self.region(&self.common).read_u8(self.common.offset + off)
    }
    fn c16(&self, off: usize) -> u16 {
        self.region(&self.common).read_u16(self.common.offset + off)
    }
    fn c32(&self, off: usize) -> u32 {
        self.region(&self.common).read_u32(self.common.offset + off)
    }
    fn w8(&self, off: usize, v: u8) {
        self.region(&self.common)
            .write_u8(self.common.offset + off, v)
    }
    fn w16(&self, off: usize, v: u16) {
        self.region(&self.common)
            .write_u16(self.common.offset + off, v)
    }
    fn w32(&self, off: usize, v: u32) {
        self.region(&self.common)
            .write_u32(self.common.offset + off, v)
    }

    /// Device status byte.
    pub fn status(&self) -> u8 {
        self.c8(common::DEVICE_STATUS)
    }

    /// Writes the device status byte.
    pub fn set_status(&self, s: u8) {
        self.w8(common::DEVICE_STATUS, s)
    }

    /// Resets the device (status 0) and waits (bounded) until it reads back 0.
    pub fn reset(&self, timeout: Duration) -> Result<()> {
        self.set_status(0);
        let t0 = Instant::now();
        while self.status() != 0 {
            if t0.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: "virtio device reset (status 0)".into(),
                    ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// The 64 feature bits the device offers.
    pub fn device_features(&self) -> u64 {
        self.w32(common::DEVICE_FEATURE_SELECT, 0);
        let lo = self.c32(common::DEVICE_FEATURE);
        self.w32(common::DEVICE_FEATURE_SELECT, 1);
        let hi = self.c32(common::DEVICE_FEATURE);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, negotiate: `required` must all be offered, `optional` are taken
    /// if offered; then FEATURES_OK (checked). Returns (offered, accepted).
    pub fn negotiate(&self, required: u64, optional: u64) -> Result<(u64, u64)> {
        self.reset(Duration::from_secs(2))?;
        let ack = VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
        let drv = VIRTIO_CONFIG_S_DRIVER as u8;
        self.set_status(ack);
        self.set_status(ack | drv);
        let offered = self.device_features();
        if offered & required != required {
            self.set_status(ack | drv | VIRTIO_CONFIG_S_FAILED as u8);
            return Err(Error::Unsupported(format!(
                "device offers features {offered:#x}, missing required {:#x}",
                required & !offered
            )));
        }
        let accepted = required | (optional & offered);
        self.w32(common::DRIVER_FEATURE_SELECT, 0);
        self.w32(common::DRIVER_FEATURE, accepted as u32);
        self.w32(common::DRIVER_FEATURE_SELECT, 1);
        self.w32(common::DRIVER_FEATURE, (accepted >> 32) as u32);
        let fok = VIRTIO_CONFIG_S_FEATURES_OK as u8;
        self.set_status(ack | drv | fok);
        if self.status() & fok == 0 {
            self.set_status(ack | drv | VIRTIO_CONFIG_S_FAILED as u8);
            return Err(Error::Unsupported(format!(
                "device refused FEATURES_OK for features {accepted:#x}"
            )));
        }
        self.w16(common::CONFIG_MSIX_VECTOR, VIRTIO_MSI_NO_VECTOR);
        Ok((offered, accepted))
    }

    /// Number of queues.
    pub fn num_queues(&self) -> u16 {
        self.c16(common::NUM_QUEUES)
    }

    /// Maximum size of queue `q`.
    pub fn queue_max_size(&self, q: u16) -> u16 {
        self.w16(common::QUEUE_SELECT, q);
        self.c16(common::QUEUE_SIZE)
    }

    /// Programs and enables queue `q` with `size` entries at the given guest-physical addresses.
    pub fn setup_queue(&self, q: u16, size: u16, desc: u64, avail: u64, used: u64) -> Result<()> {
        self.w16(common::QUEUE_SELECT, q);
        let max = self.c16(common::QUEUE_SIZE);
        if size == 0 || size > max {
            return Err(Error::Unsupported(format!(
                "queue {q}: size {size} not in 1..={max}"
            )));
        }
        self.w16(common::QUEUE_SIZE, size);
        self.w16(common::QUEUE_MSIX_VECTOR, VIRTIO_MSI_NO_VECTOR);
        let r = self.region(&self.common);
        r.write_u64_split(self.common.offset + common::QUEUE_DESC, desc);
        r.write_u64_split(self.common.offset + common::QUEUE_DRIVER, avail);
        r.write_u64_split(self.common.offset + common::QUEUE_DEVICE, used);
        self.w16(common::QUEUE_ENABLE, 1);
        if self.c16(common::QUEUE_ENABLE) != 1 {
            return Err(Error::Unsupported(format!(
                "queue {q}: queue_enable did not stick"
            )));
        }
        Ok(())
    }

    /// Sets DRIVER_OK (after the queues are set up).
    pub fn driver_ok(&self) -> Result<()> {
        let s = self.status() | VIRTIO_CONFIG_S_DRIVER_OK as u8;
        self.set_status(s);
        let now = self.status();
        if now & VIRTIO_CONFIG_S_DRIVER_OK as u8 == 0 || now & VIRTIO_CONFIG_S_FAILED as u8 != 0 {
            return Err(Error::Unsupported(format!(
                "device status {now:#x} after DRIVER_OK"
            )));
        }
        Ok(())
    }

    /// Notifies the device that queue `q` has new buffers.
    pub fn notify(&self, q: u16) -> Result<()> {
        self.w16(common::QUEUE_SELECT, q);
        let off = usize::from(self.c16(common::QUEUE_NOTIFY_OFF)) * self.notify_mult as usize;
        if off + 2 > self.notify.length {
            return Err(Error::Unsupported(format!(
                "queue {q}: notify offset {off:#x} outside the {:#x}-byte notify area",
                self.notify.length
            )));
        }
        self.region(&self.notify)
            .write_u16(self.notify.offset + off, q);
        Ok(())
    }

    /// Reads (and so clears) the ISR byte, lowering a pending INTx.
    pub fn read_isr(&self) -> u8 {
        self.region(&self.isr).read_u8(self.isr.offset)
    }

    /// Config generation counter.
    pub fn config_generation(&self) -> u8 {
        self.c8(common::CONFIG_GENERATION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config-space image like QEMU's virtio-gpu-pci: MSI-X cap at 0x98, then virtio caps
    /// (common, isr, device, notify, pci-cfg) all in BAR4.
    fn qemu_like_config() -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[0..2].copy_from_slice(&0x1af4u16.to_le_bytes());
        c[2..4].copy_from_slice(&0x1050u16.to_le_bytes());
        c[6] = 0x10; // capability list
        c[0x34] = 0x98;
        c[0x98] = 0x11; // MSI-X
        c[0x99] = 0x84;
        let mut put = |at: usize,
                       next: u8,
                       len: u8,
                       t: u8,
                       bar: u8,
                       off: u32,
                       length: u32,
                       mult: Option<u32>| {
            c[at] = PCI_CAP_ID_VNDR;
            c[at + 1] = next;
            c[at + 2] = len;
            c[at + 3] = t;
            c[at + 4] = bar;
            c[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
            c[at + 12..at + 16].copy_from_slice(&length.to_le_bytes());
            if let Some(m) = mult {
                c[at + 16..at + 20].copy_from_slice(&m.to_le_bytes());
            }
        };
        put(
            0x84,
            0x70,
            16,
            VIRTIO_PCI_CAP_COMMON_CFG,
            4,
            0,
            0x1000,
            None,
        );
        put(
            0x70,
            0x60,
            16,
            VIRTIO_PCI_CAP_ISR_CFG,
            4,
            0x1000,
            0x1000,
            None,
        );
        put(
            0x60,
            0x4c,
            16,
            VIRTIO_PCI_CAP_DEVICE_CFG,
            4,
            0x2000,
            0x1000,
            None,
        );
        put(
            0x4c,
            0xb0,
            20,
            VIRTIO_PCI_CAP_NOTIFY_CFG,
            4,
            0x3000,
            0x1000,
            Some(4),
        );
        put(0xb0, 0x00, 20, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0, None);
        c
    }

    #[test]
    fn capabilities_are_found_in_list_order_and_layout_picks_each_type() {
        let caps = parse_virtio_caps(&qemu_like_config()).unwrap();
        assert_eq!(
            caps.iter().map(|c| c.cfg_type).collect::<Vec<_>>(),
            vec![1, 3, 4, 2, 5]
        );
        let l = select_layout(&caps).unwrap();
        assert_eq!(
            (l.common.bar, l.common.offset, l.common.length),
            (4, 0, 0x1000)
        );
        assert_eq!(
            (l.notify.offset, l.notify.notify_off_multiplier),
            (0x3000, Some(4))
        );
        assert_eq!(l.isr.offset, 0x1000);
        assert_eq!(l.device.map(|d| d.offset), Some(0x2000));
    }

    #[test]
    fn malformed_capability_lists_are_errors() {
        let mut c = qemu_like_config();
        c[0xb1] = 0x84; // loop back to the first virtio cap
        assert!(parse_virtio_caps(&c).is_err());
        let mut c = qemu_like_config();
        c[0x4e] = 16; // notify cap too short for its multiplier
        assert!(parse_virtio_caps(&c).is_err());
        let mut c = qemu_like_config();
        c[0x34] = 0x20; // pointer into the header
        assert!(parse_virtio_caps(&c).is_err());
        assert!(parse_virtio_caps(&[0u8; 16]).is_err());
    }

    #[test]
    fn a_device_without_common_config_has_no_layout() {
        let mut caps = parse_virtio_caps(&qemu_like_config()).unwrap();
        caps.retain(|c| c.cfg_type != VIRTIO_PCI_CAP_COMMON_CFG);
        assert!(select_layout(&caps).is_err());
        let mut caps = parse_virtio_caps(&qemu_like_config()).unwrap();
        caps[0].length = 0x20; // shorter than the 1.0 common config
        assert!(select_layout(&caps).is_err());
    }
}
