//! The boundary a GPU device calls: [`BlobMemory`] says where a blob's entries live, exports
//! them as one dma-buf, reads passthrough memory for CPU consumers and tells whether an export
//! went stale. [`BlobExporter`] is the implementation over this crate's pieces: the
//! [`DeviceRegistry`] + `VFIO_DEVICE_FEATURE_DMA_BUF` for passthrough BARs, [`UdmabufExporter`]
//! for memfd-backed guest RAM.

use std::fmt;
use std::os::fd::OwnedFd;

use crate::error::{DmaBufError, KernelOp, Result};
use crate::registry::{RegionKey, SharedRegistry};
use crate::translate::BlobEntry;
use crate::udmabuf::{UdmabufExporter, UdmabufIoctl};
use crate::vfio_export::DeviceFeatureIoctl;

/// Which kind of dma-buf a blob becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// All entries lie in guest RAM: `UDMABUF_CREATE_LIST` over the memfd behind RAM.
    Udmabuf,
    /// All entries lie in one region of one passthrough device: `VFIO_DEVICE_FEATURE_DMA_BUF`.
    Vfio(RegionKey),
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportKind::Udmabuf => write!(f, "udmabuf"),
            ExportKind::Vfio(r) => write!(f, "vfio(device {}, region {})", r.device, r.index),
        }
    }
}

/// An exported dma-buf.
#[derive(Debug)]
pub struct DmaBuf {
    /// The dma-buf fd (closed, i.e. released, on drop).
    pub fd: OwnedFd,
    /// Its size in bytes (sum of the entries).
    pub size: u64,
    /// What it was made from.
    pub kind: ExportKind,
    /// The region's generation at export time (VFIO; 0 for udmabuf), see
    /// [`BlobMemory::is_current`].
    pub generation: u64,
}

/// Who is to blame for a failed export, as a device needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The guest's entries break a rule: the command fails.
    Guest,
    /// This host cannot export this memory (no `/dev/udmabuf`, RAM not memfd-backed, no
    /// DMA_BUF support): the blob is served without a dma-buf.
    Unsupported,
    /// The host failed (out of fds, an unexpected errno): served without a dma-buf, logged.
    Host,
}

impl DmaBufError {
    /// The fault class of an error of an export of `kind`.
    pub fn fault(&self, kind: ExportKind) -> Fault {
        match (kind, self) {
            // RAM the udmabuf exporter does not know (not memfd-backed) is a host limit.
            (ExportKind::Udmabuf, DmaBufError::NotInRegion { .. })
            | (ExportKind::Udmabuf, DmaBufError::DifferentRegion { .. }) => Fault::Unsupported,
            _ if self.is_guest_fault() => Fault::Guest,
            (_, DmaBufError::NotSupported { .. })
            | (_, DmaBufError::BadSeals { .. })
            | (_, DmaBufError::NoExporter(_))
            | (
                _,
                DmaBufError::Kernel {
                    op: KernelOp::UdmabufOpen,
                    ..
                },
            ) => Fault::Unsupported,
            _ => Fault::Host,
        }
    }
}

/// The memory behind blob entries, as a GPU device uses it.
pub trait BlobMemory: Send {
    /// The passthrough region that wholly contains `[addr, addr + len)`, if any.
    fn locate(&self, addr: u64, len: u64) -> Option<RegionKey>;

    /// Exports `entries` (guest-physical, in guest order) as one dma-buf of `kind`.
    fn export(&self, kind: ExportKind, entries: &[BlobEntry]) -> Result<DmaBuf>;

    /// Reads passthrough memory at guest-physical `addr` (CPU access to BAR entries). Never
    /// faults, even if the guest turned the device's memory decoding off: reads go through the
    /// device (`pread` on the VFIO device fd), never through a mapping.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()>;

    /// Whether `buf` still shows the memory it was made from. A VFIO dma-buf goes stale when
    /// the guest moves the BAR, turns memory decoding off (the kernel revokes it) or resets the
    /// device; the holder drops it and exports again when it can.
    fn is_current(&self, buf: &DmaBuf) -> bool;
}

/// [`BlobMemory`] over passthrough devices (a [`crate::DeviceRegistry`] and the VFIO
/// `DMA_BUF` ioctl) and memfd-backed guest RAM (udmabuf). Either part may be absent; a blob
/// whose memory has no exporter gets [`DmaBufError::NoExporter`] ([`Fault::Unsupported`]).
#[derive(Default)]
pub struct BlobExporter {
    vfio: Option<(SharedRegistry, Box<dyn DeviceFeatureIoctl>)>,
    udmabuf: Option<UdmabufExporter<Box<dyn UdmabufIoctl>>>,
}

impl fmt::Debug for BlobExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobExporter")
            .field("vfio", &self.vfio.is_some())
            .field("udmabuf", &self.udmabuf.is_some())
            .finish()
    }
}

impl BlobExporter {
    /// No passthrough devices, no udmabuf: every blob is served without a dma-buf.
    pub fn new() -> Self {
        Self::default()
    }

    /// Passthrough BARs from `registry`, exported with `ioctl` (`crate::SysDeviceFeature` on a
    /// real host).
    pub fn with_vfio(
        mut self,
        registry: SharedRegistry,
        ioctl: impl DeviceFeatureIoctl + 'static,
    ) -> Self {
        self.vfio = Some((registry, Box::new(ioctl)));
        self
    }

    /// Guest RAM through `udmabuf`.
    pub fn with_udmabuf<I: UdmabufIoctl + 'static>(mut self, udmabuf: UdmabufExporter<I>) -> Self {
        self.udmabuf = Some(udmabuf.boxed());
        self
    }

    /// The registry of passthrough devices, if any.
    pub fn registry(&self) -> Option<&SharedRegistry> {
        self.vfio.as_ref().map(|(r, _)| r)
    }

    fn read_registry(
        registry: &SharedRegistry,
    ) -> std::sync::RwLockReadGuard<'_, crate::registry::DeviceRegistry> {
        // A writer that panicked leaves a table that is still structurally valid (updates are
        // all-or-nothing); keep serving.
        registry.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlobMemory for BlobExporter {
    fn locate(&self, addr: u64, len: u64) -> Option<RegionKey> {
        let (registry, _) = self.vfio.as_ref()?;
        let reg = Self::read_registry(registry);
        let (key, info) = reg.lookup_gpa(addr)?;
        let end = addr.checked_add(len)?;
        (end <= info.guest_end()).then_some(key)
    }

    fn export(&self, kind: ExportKind, entries: &[BlobEntry]) -> Result<DmaBuf> {
        let flags = libc::O_RDWR | libc::O_CLOEXEC;
        match kind {
            ExportKind::Udmabuf => {
                let u = self
                    .udmabuf
                    .as_ref()
                    .ok_or(DmaBufError::NoExporter("udmabuf"))?;
                let (fd, size) = u.export(entries, true)?;
                Ok(DmaBuf {
                    fd,
                    size,
                    kind,
                    generation: 0,
                })
            }
            ExportKind::Vfio(_) => {
                let (registry, ioctl) =
                    self.vfio.as_ref().ok_or(DmaBufError::NoExporter("vfio"))?;
                let reg = Self::read_registry(registry);
                let t = reg.translate(entries)?;
                let fd = reg.export(&t, flags, ioctl.as_ref())?;
                Ok(DmaBuf {
                    fd,
                    size: t.total_len,
                    kind: ExportKind::Vfio(RegionKey {
                        device: t.device,
                        index: t.region_index,
                    }),
                    generation: t.generation,
                })
            }
        }
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        let (registry, _) = self
            .vfio
            .as_ref()
            .ok_or(DmaBufError::NotInRegion { entry: 0, addr })?;
        let reg = Self::read_registry(registry);
        let (key, info) = reg
            .lookup_gpa(addr)
            .ok_or(DmaBufError::NotInRegion { entry: 0, addr })?;
        reg.read_region(key.device, key.index, addr - info.guest_base, buf)
    }

    fn is_current(&self, buf: &DmaBuf) -> bool {
        match buf.kind {
            ExportKind::Udmabuf => true,
            ExportKind::Vfio(r) => self.vfio.as_ref().is_some_and(|(registry, _)| {
                Self::read_registry(registry).is_current(r.device, r.index, buf.generation)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_kernel::{FakeUdmabuf, FakeVfioPci};
    use crate::memfd::{add_seals, create_memfd};
    use crate::region::RegionInfo;
    use crate::registry::{DeviceId, DeviceRegistry};
    use crate::udmabuf::{GuestRam, UdmabufLimits};
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;
    use std::sync::{Arc, RwLock};

    const P: u64 = 4096;
    const BAR2: u64 = 0x8000_0000;

    /// BAR2 of a fake device (a memfd holding the BAR, region at fd offset 0, page `i` filled
    /// with `100 + i`) and 16 pages of sealed RAM (page `i` filled with `i`).
    fn exporter() -> (BlobExporter, DeviceId) {
        let dev = create_memfd("bar", 16 * P).unwrap();
        let f = std::fs::File::from(dev.try_clone().unwrap());
        for i in 0..16u64 {
            f.write_all_at(&vec![100 + i as u8; P as usize], i * P)
                .unwrap();
        }
        let mut reg = DeviceRegistry::with_limits(P, 1024);
        let id = reg.register_device("fake", dev.as_fd()).unwrap();
        reg.set_region(id, RegionInfo::new(2, BAR2, 16 * P, 0, 7))
            .unwrap();
        let ramfd = create_memfd("ram", 16 * P).unwrap();
        add_seals(ramfd.as_fd(), libc::F_SEAL_SHRINK).unwrap();
        let mut ram = GuestRam::new();
        ram.add_region(0, 16 * P, ramfd.as_fd(), 0).unwrap();
        let udm = UdmabufExporter::with_device(
            create_memfd("udmabuf", 0).unwrap(),
            ram,
            UdmabufLimits::default(),
            FakeUdmabuf::default(),
        );
        let x = BlobExporter::new()
            .with_vfio(Arc::new(RwLock::new(reg)), FakeVfioPci::ivshmem_like())
            .with_udmabuf(udm);
        (x, id)
    }

    fn set_bar2(x: &BlobExporter, id: DeviceId, info: RegionInfo) {
        x.registry()
            .unwrap()
            .write()
            .unwrap()
            .set_region(id, info)
            .unwrap();
    }

    #[test]
    fn locates_exports_and_reads_by_memory_kind() {
        let (x, id) = exporter();
        let region = RegionKey {
            device: id,
            index: 2,
        };
        assert_eq!(x.locate(BAR2 + P, P), Some(region));
        assert_eq!(
            x.locate(BAR2 + 15 * P, 2 * P),
            None,
            "crosses the BAR's end"
        );
        assert_eq!(x.locate(P, P), None, "guest RAM");
        let bar_blob = [BlobEntry::new(BAR2 + 3 * P, P), BlobEntry::new(BAR2, P)];
        let d = x.export(ExportKind::Vfio(region), &bar_blob).unwrap();
        assert_eq!((d.size, d.kind), (2 * P, ExportKind::Vfio(region)));
        let mut b = [0u8; 2];
        x.read(BAR2 + 3 * P - 1, &mut b).unwrap();
        assert_eq!(b, [102, 103]);
        let ram_blob = [BlobEntry::new(5 * P, P), BlobEntry::new(P, P)];
        let d = x.export(ExportKind::Udmabuf, &ram_blob).unwrap();
        assert_eq!(
            (d.size, d.kind, d.generation),
            (2 * P, ExportKind::Udmabuf, 0)
        );
        assert!(x.is_current(&d));
        // Unaligned BAR entry: the kernel's EINVAL is the guest's fault.
        let e = x
            .export(ExportKind::Vfio(region), &[BlobEntry::new(BAR2 + 8, P)])
            .unwrap_err();
        assert_eq!(e.fault(ExportKind::Vfio(region)), Fault::Guest);
        // RAM the udmabuf exporter does not cover is a host limit.
        let e = x
            .export(ExportKind::Udmabuf, &[BlobEntry::new(64 * P, P)])
            .unwrap_err();
        assert_eq!(e.fault(ExportKind::Udmabuf), Fault::Unsupported);
        // Nothing configured: unsupported, not the guest's fault.
        let none = BlobExporter::new();
        let e = none.export(ExportKind::Udmabuf, &ram_blob).unwrap_err();
        assert_eq!(e.fault(ExportKind::Udmabuf), Fault::Unsupported);
        assert!(none.read(BAR2, &mut b).is_err());
        assert_eq!(none.locate(BAR2, P), None);
    }

    #[test]
    fn vfio_exports_go_stale_on_region_changes() {
        let (x, id) = exporter();
        let region = RegionKey {
            device: id,
            index: 2,
        };
        let bar_blob = [BlobEntry::new(BAR2 + 3 * P, P), BlobEntry::new(BAR2, P)];
        let d = x.export(ExportKind::Vfio(region), &bar_blob).unwrap();
        assert!(x.is_current(&d));
        // Memory decoding off: stale, and no new export or read of the region.
        set_bar2(
            &x,
            id,
            RegionInfo::new(2, BAR2, 16 * P, 0, 7).with_decoding(false),
        );
        assert!(!x.is_current(&d));
        let err = x.export(ExportKind::Vfio(region), &bar_blob).unwrap_err();
        assert_eq!(
            err,
            DmaBufError::NotDecoding {
                device: id,
                index: 2
            }
        );
        assert_eq!(err.fault(ExportKind::Vfio(region)), Fault::Guest);
        let mut b = [0u8; 4];
        assert_eq!(
            x.read(BAR2, &mut b),
            Err(DmaBufError::NotDecoding {
                device: id,
                index: 2
            })
        );
        // Decoding on again: a new generation; the old export stays stale, a new one is current.
        set_bar2(&x, id, RegionInfo::new(2, BAR2, 16 * P, 0, 7));
        assert!(!x.is_current(&d));
        let d2 = x.export(ExportKind::Vfio(region), &bar_blob).unwrap();
        assert!(d2.generation > d.generation);
        assert!(x.is_current(&d2));
        // Removed: stale.
        x.registry()
            .unwrap()
            .write()
            .unwrap()
            .remove_region(id, 2)
            .unwrap();
        assert!(!x.is_current(&d2));
    }
}
