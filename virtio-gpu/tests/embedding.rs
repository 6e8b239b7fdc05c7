//! Embedding the GPU without this project's VMM: the device over dirty-tracked guest memory
//! behind an atomic handle (what cloud-hypervisor hands its devices), blobs exported by
//! `vfio_dmabuf::BlobExporter` (over its fake kernels, which follow the kernel's rules), and a
//! display of the embedder's own. No `devices` crate, no KVM.

use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, RwLock};

use vfio_dmabuf::fake_kernel::{FakeUdmabuf, FakeVfioPci};
use vfio_dmabuf::memfd::{add_seals, create_memfd};
use vfio_dmabuf::{
    BlobExporter, DeviceId, DeviceRegistry, GuestRam, RegionInfo, RegionKey, SharedRegistry,
    UdmabufExporter, UdmabufLimits,
};
use virtio_gpu_blob::backing::BlobPath;
use virtio_gpu_blob::display::{DisplayError, ScanoutFrame};
use virtio_gpu_blob::protocol::encode::*;
use virtio_gpu_blob::protocol::{decode_request, resp, BlobEntry, Rect, ScanoutBlob};
use virtio_gpu_blob::{DisplayBackend, ExportKind, GpuConfig, GpuDevice};
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

/// The embedder's display: keeps the RGBA of the last flushed frame.
#[derive(Clone, Default)]
struct LastFrame(Arc<Mutex<Option<Vec<u8>>>>);

impl LastFrame {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap().take()
    }
}

impl DisplayBackend for LastFrame {
    fn set_scanout(&mut self, _: u32, _: Option<&ScanoutFrame<'_>>) -> Result<(), DisplayError> {
        Ok(())
    }

    fn flush(&mut self, _: u32, frame: &ScanoutFrame<'_>, _: Rect) -> Result<(), DisplayError> {
        *self.0.lock().unwrap() = Some(frame.to_rgba()?);
        Ok(())
    }
}

const P: u64 = 4096;
const BAR2: u64 = 0xc000_0000;
const RAM: u64 = 64 * P;

/// What cloud-hypervisor hands its devices: dirty-tracked memory behind an atomic handle.
type Mem = GuestMemoryAtomic<GuestMemoryMmap<AtomicBitmap>>;

struct Setup {
    dev: GpuDevice<Mem>,
    display: LastFrame,
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
    let mut exporter = BlobExporter::new().with_vfio(registry.clone(), FakeVfioPci::ivshmem_like());

    let ram_fd = create_memfd("ram", RAM).unwrap();
    add_seals(ram_fd.as_fd(), libc::F_SEAL_SHRINK).unwrap();
    let ram_file = std::fs::File::from(ram_fd.try_clone().unwrap());
    let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges_with_files(&[(
        GuestAddress(0),
        RAM as usize,
        Some(FileOffset::new(ram_file.try_clone().unwrap(), 0)),
    )])
    .unwrap();
    if with_udmabuf {
        let mut ram = GuestRam::new();
        ram.add_region(0, RAM, ram_fd.as_fd(), 0).unwrap();
        exporter = exporter.with_udmabuf(UdmabufExporter::with_device(
            create_memfd("udmabuf", 0).unwrap(),
            ram,
            UdmabufLimits::default(),
            FakeUdmabuf::default(),
        ));
    }
    let display = LastFrame::default();
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
        registry,
    }
}

fn run(dev: &mut GpuDevice<Mem>, req: Vec<u8>) -> u32 {
    let r = decode_request(&req).unwrap();
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
    let rgba = s.display.take().expect("a flushed frame");
    // First pixel of each page (32 rows of 128 bytes = one page).
    vec![rgba[0], rgba[32 * 32 * 4]]
}

fn e(addr: u64, len: u64) -> BlobEntry {
    BlobEntry::new(addr, len)
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
            BlobPath::Export(ExportKind::Vfio(RegionKey {
                device: DeviceId(0),
                index: 2
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
fn mixed_blob_reads_the_bar_through_the_device_fd() {
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
        let entries: Vec<BlobEntry> = (0..64).map(|i| e(BAR2 + (i % 8) * 2 * P, P)).collect();
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
    assert_eq!(s.display.take(), None, "no frame while the memory is off");
    set(true);
    tag_pages(&s.bar, 0, 16, 50);
    assert_eq!(run(&mut s.dev, flush(1, rect)), resp::OK_NODATA);
    assert_eq!(s.dev.blob_state(1).map(|b| b.1), Some(true));
    assert_eq!(show(&mut s, 1), vec![55, 52]);
}

/// The device's responses go into guest memory through the virtqueue; with a dirty-tracking
/// bitmap the written page is marked dirty (what live migration relies on).
#[test]
fn responses_through_the_queue_mark_guest_pages_dirty() {
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_gpu_blob::QueueKind;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::bitmap::Bitmap;
    use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};

    const REQ: u64 = 0x4000;
    const RESP: u64 = 0x8000;
    let mem = GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let atomic = GuestMemoryAtomic::new(mem);
    let m = atomic.memory();
    let dirty = |addr: u64| {
        let region = m.find_region(GuestAddress(addr)).unwrap();
        region.bitmap().dirty_at(addr as usize)
    };
    let req = get_display_info();
    m.write_slice(&req, GuestAddress(REQ)).unwrap();
    let vq = MockSplitQueue::new(&*m, 16);
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(
            REQ,
            req.len() as u32,
            VRING_DESC_F_NEXT as u16,
            1,
        )),
        RawDescriptor::from(SplitDescriptor::new(
            RESP,
            1024,
            VRING_DESC_F_WRITE as u16,
            0,
        )),
    ];
    vq.add_desc_chains(&descs, 0).unwrap();
    let mut queue: Queue = vq.create_queue().unwrap();
    assert!(!dirty(RESP));

    let mut dev = GpuDevice::new(
        GpuConfig::default(),
        Box::new(LastFrame::default()),
        Box::new(BlobExporter::new()),
    );
    dev.activate(atomic.clone());
    assert!(dev.process_queue(&mut queue, QueueKind::Control).is_ok());
    let t: u32 = m.read_obj(GuestAddress(RESP)).unwrap();
    assert_eq!(t, resp::OK_DISPLAY_INFO);
    assert!(dirty(RESP), "the response page is marked dirty");
}
