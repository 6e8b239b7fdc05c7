//! "Export these ranges": one trait so virtio-gpu can ask for a dma-buf (and
//! a CPU view of the same bytes) without knowing which memory backs a blob.

use std::os::fd::{AsFd, OwnedFd};

use crate::cpu_map::CpuMapping;
use crate::error::{DmaBufError, Result};
use crate::registry::{DeviceId, SharedRegistry};
use crate::translate::BlobEntry;
use crate::udmabuf::{UdmabufExporter, UdmabufIoctl};
use crate::vfio_export::{DeviceFeatureIoctl, SysDeviceFeature};

/// Which kind of memory a dma-buf came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaBufSource {
    /// A passthrough device's BAR (VFIO dma-buf).
    Vfio {
        /// The device.
        device: DeviceId,
        /// The region index (BAR).
        region_index: u32,
    },
    /// Memfd-backed guest RAM (udmabuf).
    Udmabuf,
}

/// An exported dma-buf.
#[derive(Debug)]
pub struct DmaBuf {
    /// The dma-buf fd (closed on drop).
    pub fd: OwnedFd,
    /// Its size in bytes (sum of the blob's entries).
    pub size: u64,
    /// Where its pages live.
    pub source: DmaBufSource,
}

/// Exports a blob's guest entries (guest order) as one dma-buf.
pub trait DmaBufExporter: Send + Sync {
    /// True if entry 0's address lies in memory this exporter handles.
    fn handles(&self, gpa: u64) -> bool;

    /// Exports the entries as one dma-buf. `open_flags`: `O_RDONLY`/`O_RDWR`,
    /// optionally `| O_CLOEXEC` (udmabufs are always read/write).
    fn export_blob(&self, entries: &[BlobEntry], open_flags: i32) -> Result<DmaBuf>;

    /// Maps the same bytes, in entry order, for CPU reads (display backends).
    fn map_blob(&self, entries: &[BlobEntry]) -> Result<CpuMapping>;
}

/// Exporter for blobs in passthrough BARs.
#[derive(Debug)]
pub struct VfioExporter<I: DeviceFeatureIoctl = SysDeviceFeature> {
    registry: SharedRegistry,
    ioctl: I,
}

impl VfioExporter<SysDeviceFeature> {
    /// An exporter over the shared registry using the real ioctl.
    pub fn new(registry: SharedRegistry) -> Self {
        Self::with_ioctl(registry, SysDeviceFeature)
    }
}

impl<I: DeviceFeatureIoctl> VfioExporter<I> {
    /// An exporter with a chosen ioctl implementation (a fake in tests).
    pub fn with_ioctl(registry: SharedRegistry, ioctl: I) -> Self {
        VfioExporter { registry, ioctl }
    }

    /// The shared registry.
    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, crate::registry::DeviceRegistry> {
        // A writer that panicked leaves a table that is still structurally
        // valid (updates are all-or-nothing); keep serving.
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl<I: DeviceFeatureIoctl> DmaBufExporter for VfioExporter<I> {
    fn handles(&self, gpa: u64) -> bool {
        self.read().lookup_gpa(gpa).is_some()
    }

    fn export_blob(&self, entries: &[BlobEntry], open_flags: i32) -> Result<DmaBuf> {
        let reg = self.read();
        let t = reg.translate(entries)?;
        let fd = reg.export(&t, open_flags, &self.ioctl)?;
        Ok(DmaBuf {
            fd,
            size: t.total_len,
            source: DmaBufSource::Vfio {
                device: t.device,
                region_index: t.region_index,
            },
        })
    }

    fn map_blob(&self, entries: &[BlobEntry]) -> Result<CpuMapping> {
        let reg = self.read();
        let t = reg.translate(entries)?;
        reg.map_for_cpu(&t, false)
    }
}

impl<U: UdmabufIoctl> DmaBufExporter for UdmabufExporter<U> {
    fn handles(&self, gpa: u64) -> bool {
        self.ram().lookup(gpa).is_some()
    }

    fn export_blob(&self, entries: &[BlobEntry], open_flags: i32) -> Result<DmaBuf> {
        let (fd, size) = self.export(entries, open_flags & libc::O_CLOEXEC != 0)?;
        Ok(DmaBuf {
            fd,
            size,
            source: DmaBufSource::Udmabuf,
        })
    }

    fn map_blob(&self, entries: &[BlobEntry]) -> Result<CpuMapping> {
        let (fd, size) = self.export(entries, true)?;
        CpuMapping::map_fd(fd.as_fd(), size, false)
    }
}

/// Picks the exporter that owns entry 0's address (BAR first, then RAM).
#[derive(Default)]
pub struct BlobExporter {
    exporters: Vec<Box<dyn DmaBufExporter>>,
}

impl std::fmt::Debug for BlobExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobExporter({} backends)", self.exporters.len())
    }
}

impl BlobExporter {
    /// No backends yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a backend; earlier backends win.
    pub fn with(mut self, e: Box<dyn DmaBufExporter>) -> Self {
        self.exporters.push(e);
        self
    }

    fn pick(&self, entries: &[BlobEntry]) -> Result<&dyn DmaBufExporter> {
        let first = entries.first().ok_or(DmaBufError::NoEntries)?;
        self.exporters
            .iter()
            .find(|e| e.handles(first.addr))
            .map(|b| b.as_ref())
            .ok_or(DmaBufError::NotInRegion {
                entry: 0,
                addr: first.addr,
            })
    }
}

impl DmaBufExporter for BlobExporter {
    fn handles(&self, gpa: u64) -> bool {
        self.exporters.iter().any(|e| e.handles(gpa))
    }

    fn export_blob(&self, entries: &[BlobEntry], open_flags: i32) -> Result<DmaBuf> {
        self.pick(entries)?.export_blob(entries, open_flags)
    }

    fn map_blob(&self, entries: &[BlobEntry]) -> Result<CpuMapping> {
        self.pick(entries)?.map_blob(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_kernel::{FakeUdmabuf, FakeVfioPci};
    use crate::memfd::{add_seals, create_memfd};
    use crate::region::RegionInfo;
    use crate::registry::DeviceRegistry;
    use crate::udmabuf::{GuestRam, UdmabufLimits};
    use std::os::unix::fs::FileExt;
    use std::sync::{Arc, RwLock};

    const P: u64 = 4096;
    const BAR2: u64 = 0x8000_0000;

    fn tagged_memfd(pages: u64, tag: u8) -> OwnedFd {
        let fd = create_memfd("m", pages * P).unwrap();
        let f = std::fs::File::from(fd.try_clone().unwrap());
        for i in 0..pages {
            f.write_all_at(&vec![tag + i as u8; P as usize], i * P)
                .unwrap();
        }
        fd
    }

    fn combined() -> BlobExporter {
        // "device fd" = a memfd standing in for the BAR, region at fd offset 0.
        let dev = tagged_memfd(16, 100);
        let mut reg = DeviceRegistry::with_limits(P, 1024);
        let id = reg.register_device("fake", dev.as_fd()).unwrap();
        reg.set_region(id, RegionInfo::new(2, BAR2, 16 * P, 0, 7))
            .unwrap();
        let vfio =
            VfioExporter::with_ioctl(Arc::new(RwLock::new(reg)), FakeVfioPci::ivshmem_like());
        let ramfd = tagged_memfd(16, 0);
        add_seals(ramfd.as_fd(), libc::F_SEAL_SHRINK).unwrap();
        let mut ram = GuestRam::new();
        ram.add_region(0, 16 * P, ramfd.as_fd(), 0).unwrap();
        let udm = UdmabufExporter::with_device(
            create_memfd("udmabuf", 0).unwrap(),
            ram,
            UdmabufLimits::default(),
            FakeUdmabuf::default(),
        );
        BlobExporter::new().with(Box::new(vfio)).with(Box::new(udm))
    }

    fn first_bytes(m: &CpuMapping) -> Vec<u8> {
        (0..m.len() / P as usize)
            .map(|i| {
                let mut b = [0u8; 1];
                assert!(m.read_at(i * P as usize, &mut b));
                b[0]
            })
            .collect()
    }

    #[test]
    fn dispatches_by_memory_kind() {
        let x = combined();
        let bar_blob = [BlobEntry::new(BAR2 + 3 * P, P), BlobEntry::new(BAR2, P)];
        let d = x
            .export_blob(&bar_blob, libc::O_RDONLY | libc::O_CLOEXEC)
            .unwrap();
        assert_eq!(d.size, 2 * P);
        assert!(matches!(
            d.source,
            DmaBufSource::Vfio {
                region_index: 2,
                ..
            }
        ));
        assert_eq!(first_bytes(&x.map_blob(&bar_blob).unwrap()), vec![103, 100]);

        let ram_blob = [BlobEntry::new(5 * P, P), BlobEntry::new(P, P)];
        let d = x.export_blob(&ram_blob, libc::O_RDWR).unwrap();
        assert_eq!(d.source, DmaBufSource::Udmabuf);
        assert_eq!(d.size, 2 * P);
        assert_eq!(first_bytes(&x.map_blob(&ram_blob).unwrap()), vec![5, 1]);

        let err = x
            .export_blob(&[BlobEntry::new(0x4000_0000, P)], 0)
            .unwrap_err();
        assert_eq!(
            err,
            DmaBufError::NotInRegion {
                entry: 0,
                addr: 0x4000_0000
            }
        );
        assert_eq!(x.export_blob(&[], 0).unwrap_err(), DmaBufError::NoEntries);
        // a blob starting in the BAR and continuing in RAM is refused
        let err = x
            .export_blob(&[BlobEntry::new(BAR2, P), BlobEntry::new(0, P)], 0)
            .unwrap_err();
        assert_eq!(err, DmaBufError::NotInRegion { entry: 1, addr: 0 });
        assert!(err.is_guest_fault());
    }
}
