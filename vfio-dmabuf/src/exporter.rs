//! "Export these ranges": one trait so virtio-gpu can ask for a dma-buf without knowing
//! which memory backs a blob.

use std::os::fd::OwnedFd;

use crate::error::Result;
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
        /// The region's generation at export time: the dma-buf is stale (revoked by the
        /// kernel, or describing memory the guest moved) once
        /// [`crate::DeviceRegistry::is_current`] says so.
        generation: u64,
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
                generation: t.generation,
            },
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DmaBufError;
    use crate::fake_kernel::{FakeUdmabuf, FakeVfioPci};
    use crate::memfd::{add_seals, create_memfd};
    use crate::region::RegionInfo;
    use crate::registry::DeviceRegistry;
    use crate::udmabuf::{GuestRam, UdmabufLimits};
    use std::os::fd::AsFd;
    use std::sync::{Arc, RwLock};

    const P: u64 = 4096;
    const BAR2: u64 = 0x8000_0000;

    fn vfio() -> (VfioExporter<FakeVfioPci>, DeviceId) {
        // "device fd" = a memfd standing in for the BAR, region at fd offset 0.
        let dev = create_memfd("bar", 16 * P).unwrap();
        let mut reg = DeviceRegistry::with_limits(P, 1024);
        let id = reg.register_device("fake", dev.as_fd()).unwrap();
        reg.set_region(id, RegionInfo::new(2, BAR2, 16 * P, 0, 7))
            .unwrap();
        let x = VfioExporter::with_ioctl(Arc::new(RwLock::new(reg)), FakeVfioPci::ivshmem_like());
        (x, id)
    }

    #[test]
    fn vfio_exports_carry_the_region_generation_and_go_stale_on_changes() {
        let (x, id) = vfio();
        let bar_blob = [BlobEntry::new(BAR2 + 3 * P, P), BlobEntry::new(BAR2, P)];
        assert!(x.handles(BAR2 + P));
        assert!(!x.handles(0x4000_0000));
        let d = x
            .export_blob(&bar_blob, libc::O_RDONLY | libc::O_CLOEXEC)
            .unwrap();
        assert_eq!(d.size, 2 * P);
        let DmaBufSource::Vfio {
            device,
            region_index: 2,
            generation,
        } = d.source
        else {
            panic!("{:?}", d.source)
        };
        assert_eq!(device, id);
        let current = |x: &VfioExporter<FakeVfioPci>| {
            x.registry().read().unwrap().is_current(id, 2, generation)
        };
        assert!(current(&x));
        // Memory decoding off: stale, and no new export or read of the region.
        let off = RegionInfo::new(2, BAR2, 16 * P, 0, 7).with_decoding(false);
        x.registry().write().unwrap().set_region(id, off).unwrap();
        assert!(!current(&x));
        let err = x.export_blob(&bar_blob, libc::O_RDWR).unwrap_err();
        assert_eq!(
            err,
            DmaBufError::NotDecoding {
                device: id,
                index: 2
            }
        );
        assert!(err.is_guest_fault());
        let mut b = [0u8; 4];
        assert_eq!(
            x.registry().read().unwrap().read_region(id, 2, 0, &mut b),
            Err(DmaBufError::NotDecoding {
                device: id,
                index: 2
            })
        );
        // Decoding on again: a new generation; the old export stays stale, a new one is current.
        let on = RegionInfo::new(2, BAR2, 16 * P, 0, 7);
        x.registry().write().unwrap().set_region(id, on).unwrap();
        assert!(!current(&x));
        let d2 = x.export_blob(&bar_blob, libc::O_RDWR).unwrap();
        let DmaBufSource::Vfio { generation: g2, .. } = d2.source else {
            panic!()
        };
        assert!(g2 > generation);
        assert!(x.registry().read().unwrap().is_current(id, 2, g2));
        // Removed: stale.
        x.registry().write().unwrap().remove_region(id, 2).unwrap();
        assert!(!x.registry().read().unwrap().is_current(id, 2, g2));
    }

    #[test]
    fn udmabuf_exports_ram() {
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
        assert!(udm.handles(5 * P));
        assert!(!udm.handles(BAR2));
        let d = udm
            .export_blob(
                &[BlobEntry::new(5 * P, P), BlobEntry::new(P, P)],
                libc::O_RDWR,
            )
            .unwrap();
        assert_eq!(d.source, DmaBufSource::Udmabuf);
        assert_eq!(d.size, 2 * P);
        let err = udm
            .export_blob(&[BlobEntry::new(BAR2, P)], libc::O_RDWR)
            .unwrap_err();
        assert!(err.is_guest_fault(), "{err}");
    }
}
