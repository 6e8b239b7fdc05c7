//! [`BlobBackingExporter`] over the `vfio-dmabuf` crate: VFIO dma-bufs for blobs in a
//! passthrough BAR, udmabufs for blobs in memfd-backed guest RAM, and CPU reads of BAR memory
//! through the VFIO device fd (`pread`: no host mapping, so no VMA per range and no `SIGBUS`
//! when the guest turns memory decoding off).

use vfio_dmabuf::{
    BlobEntry, DeviceId, DmaBufError, DmaBufExporter, DmaBufSource, KernelOp, SharedRegistry,
};

use crate::exporter::{
    BlobBackingExporter, ExportError, ExportKind, ExportedBlob, PassthroughRegion, PixelReadError,
};
use crate::protocol::MemEntry;

/// The exporter the VMM gives the GPU: passthrough BARs through `registry` + `vfio`, guest RAM
/// through `udmabuf`. Either part may be absent (then those blobs take the CPU path).
pub struct DmaBufBlobExporter {
    registry: Option<SharedRegistry>,
    vfio: Option<Box<dyn DmaBufExporter>>,
    udmabuf: Option<Box<dyn DmaBufExporter>>,
}

impl DmaBufBlobExporter {
    /// `registry` + `vfio` (e.g. `vfio_dmabuf::VfioExporter::new(registry.clone())`) for
    /// passthrough BARs; `udmabuf` (e.g. `vfio_dmabuf::UdmabufExporter::open(ram)`) for RAM.
    pub fn new(
        registry: Option<SharedRegistry>,
        vfio: Option<Box<dyn DmaBufExporter>>,
        udmabuf: Option<Box<dyn DmaBufExporter>>,
    ) -> Self {
        DmaBufBlobExporter {
            registry,
            vfio,
            udmabuf,
        }
    }

    fn classify(kind: ExportKind, e: DmaBufError) -> ExportError {
        let msg = e.to_string();
        match (&kind, &e) {
            // RAM the udmabuf exporter does not know (not memfd-backed) is a host limit.
            (ExportKind::Udmabuf, DmaBufError::NotInRegion { .. })
            | (ExportKind::Udmabuf, DmaBufError::DifferentRegion { .. }) => {
                ExportError::Unsupported(msg)
            }
            _ if e.is_guest_fault() => ExportError::Guest(msg),
            (_, DmaBufError::NotSupported { .. })
            | (_, DmaBufError::BadSeals { .. })
            | (
                _,
                DmaBufError::Kernel {
                    op: KernelOp::UdmabufOpen,
                    ..
                },
            ) => ExportError::Unsupported(msg),
            _ => ExportError::Host(msg),
        }
    }
}

impl BlobBackingExporter for DmaBufBlobExporter {
    fn locate(&self, addr: u64, len: u64) -> Option<PassthroughRegion> {
        let reg = self.registry.as_ref()?.read().ok()?;
        let (key, info) = reg.lookup_gpa(addr)?;
        let end = addr.checked_add(len)?;
        (end <= info.guest_end()).then_some(PassthroughRegion {
            device: key.device.0,
            region: key.index,
        })
    }

    fn export(&self, kind: ExportKind, entries: &[MemEntry]) -> Result<ExportedBlob, ExportError> {
        let exporter = match kind {
            ExportKind::Udmabuf => self.udmabuf.as_deref(),
            ExportKind::Vfio(_) => self.vfio.as_deref(),
        }
        .ok_or_else(|| ExportError::Unsupported(format!("no {kind} exporter configured")))?;
        let blob: Vec<BlobEntry> = entries
            .iter()
            .map(|e| BlobEntry::new(e.addr, u64::from(e.len)))
            .collect();
        let dmabuf = exporter
            .export_blob(&blob, libc::O_RDWR | libc::O_CLOEXEC)
            .map_err(|e| Self::classify(kind, e))?;
        let generation = match dmabuf.source {
            DmaBufSource::Vfio { generation, .. } => generation,
            DmaBufSource::Udmabuf => 0,
        };
        Ok(ExportedBlob {
            kind,
            dmabuf: dmabuf.fd,
            generation,
        })
    }

    fn read_passthrough(&self, addr: u64, buf: &mut [u8]) -> Result<(), PixelReadError> {
        let len = buf.len();
        let err = |reason: String| PixelReadError {
            offset: addr,
            len,
            reason,
        };
        let registry = self
            .registry
            .as_ref()
            .ok_or_else(|| err("no passthrough devices".into()))?;
        let reg = registry.read().unwrap_or_else(|p| p.into_inner());
        let (key, info) = reg
            .lookup_gpa(addr)
            .ok_or_else(|| err("not in a passthrough region".into()))?;
        reg.read_region(key.device, key.index, addr - info.guest_base, buf)
            .map_err(|e| err(e.to_string()))
    }

    fn is_current(&self, blob: &ExportedBlob) -> bool {
        match blob.kind {
            ExportKind::Udmabuf => true,
            ExportKind::Vfio(r) => self.registry.as_ref().is_some_and(|reg| {
                reg.read().unwrap_or_else(|p| p.into_inner()).is_current(
                    DeviceId(r.device),
                    r.region,
                    blob.generation,
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;
    use std::sync::{Arc, RwLock};

    use vfio_dmabuf::fake_kernel::{FakeUdmabuf, FakeVfioPci};
    use vfio_dmabuf::memfd::{add_seals, create_memfd};
    use vfio_dmabuf::{
        DeviceRegistry, GuestRam, RegionInfo, UdmabufExporter, UdmabufLimits, VfioExporter,
    };
    use vm_memory::bitmap::AtomicBitmap;
    use vm_memory::{FileOffset, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

    use super::*;
    use crate::backing::BlobPath;
    use crate::protocol::encode::*;
    use crate::protocol::{resp, Rect, ScanoutBlob};
    use crate::test_util::{DisplayEvent, RecordingDisplay};
    use crate::{GpuConfig, GpuDevice};

    const P: u64 = 4096;
    const BAR2: u64 = 0xc000_0000;
    const RAM: u64 = 64 * P;

    /// What cloud-hypervisor hands its devices: dirty-tracked memory behind an atomic handle.
    type Mem = GuestMemoryAtomic<GuestMemoryMmap<AtomicBitmap>>;

    struct Setup {
        dev: GpuDevice<Mem>,
        display: RecordingDisplay,
        bar: std::fs::File,
        ram: std::fs::File,
        registry: SharedRegistry,
    }

    /// Guest RAM is a sealed memfd (udmabuf-ready); the "device fd" is a memfd holding BAR2's
    /// bytes at fd offset 0 (mmap-able like a VFIO region).
    fn setup(with_udmabuf: bool) -> Setup {
        let bar_fd = create_memfd("bar2", 16 * P).unwrap();
        let mut reg = DeviceRegistry::with_limits(P, 1024);
        let id = reg.register_device("ivshmem", bar_fd.as_fd()).unwrap();
        reg.set_region(id, RegionInfo::new(2, BAR2, 16 * P, 0, 7))
            .unwrap();
        let registry: SharedRegistry = Arc::new(RwLock::new(reg));
        let shared = registry.clone();
        let vfio = VfioExporter::with_ioctl(registry.clone(), FakeVfioPci::ivshmem_like());

        let ram_fd = create_memfd("ram", RAM).unwrap();
        add_seals(ram_fd.as_fd(), libc::F_SEAL_SHRINK).unwrap();
        let ram_file = std::fs::File::from(ram_fd.try_clone().unwrap());
        let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges_with_files(&[(
            GuestAddress(0),
            RAM as usize,
            Some(FileOffset::new(ram_file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let udmabuf: Option<Box<dyn DmaBufExporter>> = if with_udmabuf {
            let mut ram = GuestRam::new();
            ram.add_region(0, RAM, ram_fd.as_fd(), 0).unwrap();
            Some(Box::new(UdmabufExporter::with_device(
                create_memfd("udmabuf", 0).unwrap(),
                ram,
                UdmabufLimits::default(),
                FakeUdmabuf::default(),
            )))
        } else {
            None
        };
        let exporter = DmaBufBlobExporter::new(Some(registry), Some(Box::new(vfio)), udmabuf);
        let display = RecordingDisplay::default();
        let mut dev = GpuDevice::new(
            GpuConfig::default(),
            Box::new(display.clone()),
            Box::new(exporter),
        );
        dev.activate(GuestMemoryAtomic::new(mem));
        Setup {
            dev,
            display,
            bar: std::fs::File::from(bar_fd),
            ram: ram_file,
            registry: shared,
        }
    }

    fn run(dev: &mut GpuDevice<Mem>, req: Vec<u8>) -> u32 {
        let r = crate::protocol::decode_request(&req).unwrap();
        dev.handle(&r).response_type()
    }

    fn tag_pages(f: &std::fs::File, base: u64, pages: u64, tag: u8) {
        for i in 0..pages {
            f.write_all_at(&vec![tag + i as u8; P as usize], base + i * P)
                .unwrap();
        }
    }

    /// 32x32 XRGB = one page per 32x32 frame; show and flush, return the first byte (red
    /// channel of RGBA is byte 2 of XRGB memory, all bytes equal here).
    fn show(s: &mut Setup, id: u32) -> Vec<u8> {
        let b = ScanoutBlob {
            rect: Rect {
                x: 0,
                y: 0,
                width: 32,
                height: 64,
            },
            scanout_id: 0,
            resource_id: id,
            width: 32,
            height: 64,
            format: 2,
            strides: [128, 0, 0, 0],
            offsets: [0; 4],
        };
        assert_eq!(run(&mut s.dev, set_scanout_blob(&b)), resp::OK_NODATA);
        assert_eq!(run(&mut s.dev, flush(id, b.rect)), resp::OK_NODATA);
        let rgba = s
            .display
            .take()
            .into_iter()
            .rev()
            .find_map(|e| match e {
                DisplayEvent::Flush { rgba, .. } => Some(rgba),
                _ => None,
            })
            .unwrap();
        // First pixel of each page (32 rows of 128 bytes = one page).
        vec![rgba[0], rgba[32 * 32 * 4]]
    }

    fn e(addr: u64, len: u64) -> MemEntry {
        MemEntry {
            addr,
            len: len as u32,
        }
    }

    #[test]
    fn bar_blob_is_a_vfio_export_read_through_the_device_fd() {
        let mut s = setup(true);
        tag_pages(&s.bar, 0, 16, 100);
        let entries = [e(BAR2 + 5 * P, P), e(BAR2 + 2 * P, P)];
        assert_eq!(
            run(&mut s.dev, create_blob(1, 1, 0, 2 * P, &entries)),
            resp::OK_NODATA
        );
        assert_eq!(
            s.dev.blob_state(1),
            Some((
                BlobPath::Export(ExportKind::Vfio(PassthroughRegion {
                    device: 0,
                    region: 2
                })),
                true
            ))
        );
        assert_eq!(show(&mut s, 1), vec![105, 102]);
    }

    #[test]
    fn ram_blob_is_a_udmabuf_export() {
        let mut s = setup(true);
        tag_pages(&s.ram, 0, 16, 10);
        let entries = [e(7 * P, P), e(3 * P, P)];
        assert_eq!(
            run(&mut s.dev, create_blob(1, 1, 0, 2 * P, &entries)),
            resp::OK_NODATA
        );
        assert_eq!(
            s.dev.blob_state(1),
            Some((BlobPath::Export(ExportKind::Udmabuf), true))
        );
        assert_eq!(show(&mut s, 1), vec![17, 13]);
    }

    #[test]
    fn mixed_blob_reads_the_bar_through_a_region_mapping() {
        let mut s = setup(true);
        tag_pages(&s.bar, 0, 16, 100);
        tag_pages(&s.ram, 0, 16, 10);
        let entries = [e(BAR2 + 4 * P, P), e(2 * P, P)];
        assert_eq!(
            run(&mut s.dev, create_blob(1, 1, 0, 2 * P, &entries)),
            resp::OK_NODATA
        );
        assert!(matches!(
            s.dev.blob_state(1),
            Some((BlobPath::Cpu(_), false))
        ));
        assert_eq!(show(&mut s, 1), vec![104, 12]);
    }

    #[test]
    fn no_udmabuf_means_cpu_path_and_guest_faults_are_errors() {
        let mut s = setup(false);
        tag_pages(&s.ram, 0, 16, 10);
        assert_eq!(
            run(&mut s.dev, create_blob(1, 1, 0, 2 * P, &[e(P, 2 * P)])),
            resp::OK_NODATA
        );
        assert!(matches!(
            s.dev.blob_state(1),
            Some((BlobPath::Cpu(_), false))
        ));
        assert_eq!(show(&mut s, 1), vec![11, 12]);
        // Unaligned BAR range: the fake kernel's EINVAL is a guest fault.
        assert_eq!(
            run(&mut s.dev, create_blob(2, 1, 0, P, &[e(BAR2 + 8, P)])),
            resp::ERR_INVALID_PARAMETER
        );
    }

    fn maps() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count()
    }

    #[test]
    fn exports_add_no_host_mappings() {
        let mut s = setup(true);
        let before = maps();
        // 20 blobs of 64 separate BAR pages each: one VMA per range would add 1300 mappings.
        for id in 1..=20u32 {
            let entries: Vec<MemEntry> = (0..64).map(|i| e(BAR2 + (i % 8) * 2 * P, P)).collect();
            assert_eq!(
                run(&mut s.dev, create_blob(id, 1, 0, 64 * P, &entries)),
                resp::OK_NODATA
            );
            assert_eq!(s.dev.blob_state(id).map(|b| b.1), Some(true));
        }
        tag_pages(&s.bar, 0, 16, 100);
        assert_eq!(show(&mut s, 20), vec![100, 102]);
        // Other tests of this binary map memory concurrently: allow for them.
        let grown = maps().saturating_sub(before);
        assert!(grown < 200, "{grown} new mappings");
    }

    #[test]
    fn decode_off_revokes_and_decode_on_exports_again() {
        let mut s = setup(true);
        tag_pages(&s.bar, 0, 16, 100);
        let entries = [e(BAR2 + 5 * P, P), e(BAR2 + 2 * P, P)];
        assert_eq!(
            run(&mut s.dev, create_blob(1, 1, 0, 2 * P, &entries)),
            resp::OK_NODATA
        );
        assert_eq!(show(&mut s, 1), vec![105, 102]);
        let set = |decoding: bool| {
            let info = RegionInfo::new(2, BAR2, 16 * P, 0, 7).with_decoding(decoding);
            s.registry
                .write()
                .unwrap()
                .set_region(vfio_dmabuf::DeviceId(0), info)
                .unwrap();
        };
        set(false);
        let rect = Rect {
            x: 0,
            y: 0,
            width: 32,
            height: 64,
        };
        assert_eq!(run(&mut s.dev, flush(1, rect)), resp::OK_NODATA);
        assert_eq!(s.dev.blob_state(1).map(|b| b.1), Some(false));
        assert!(!s
            .display
            .take()
            .iter()
            .any(|ev| matches!(ev, DisplayEvent::Flush { .. })));
        set(true);
        tag_pages(&s.bar, 0, 16, 50);
        assert_eq!(run(&mut s.dev, flush(1, rect)), resp::OK_NODATA);
        assert_eq!(s.dev.blob_state(1).map(|b| b.1), Some(true));
        assert_eq!(show(&mut s, 1), vec![55, 52]);
    }
}
