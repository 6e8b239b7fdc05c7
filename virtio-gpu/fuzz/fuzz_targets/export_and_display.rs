//! Requests executed by a device whose blobs really go through the export paths: guest RAM is
//! a sealed memfd exported through `vfio_dmabuf::UdmabufExporter`, a passthrough BAR is a
//! memfd registered in a `vfio_dmabuf::DeviceRegistry` and exported through
//! `vfio_dmabuf::BlobExporter`, both over the crate's fake kernels (which follow the kernel's
//! rules: page alignment, BAR bounds, list and size limits, seals). Scanouts go to the
//! `capture` display (rate-limited PNGs, the newest two kept) and BAR pixels are read through
//! the device fd. Between requests the input can turn the BAR's memory decoding off and on or
//! move it, as a guest can with the PCI command register and BAR registers.
//!
//! Input: records `[op][len lo][len hi][len bytes]`; op % 4 == 0 runs the bytes as a request,
//! 1 toggles memory decoding, 2 moves the BAR to one of two addresses, 3 resets the device.
//!
//! Run: `cargo +nightly fuzz run export_and_display -- -runs=10000000 -max_len=4096`
#![no_main]

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use libfuzzer_sys::fuzz_target;
use vfio_dmabuf::fake_kernel::{FakeUdmabuf, FakeVfioPci};
use vfio_dmabuf::memfd::{add_seals, create_memfd};
use vfio_dmabuf::{
    BlobExporter, DeviceId, DeviceRegistry, GuestRam, RegionInfo, SharedRegistry,
    UdmabufExporter, UdmabufLimits,
};
use virtio_gpu_display::CaptureDisplay;
use virtio_gpu_blob::protocol::decode_request;
use virtio_gpu_blob::{GpuConfig, GpuDevice};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

const PAGE: u64 = 4096;
const RAM_SIZE: u64 = 1 << 20;
const BAR_SIZE: u64 = 1 << 20;
const BAR_BASES: [u64; 2] = [0xe000_0000, 0xe800_0000];

struct Target {
    dev: GpuDevice<Arc<GuestMemoryMmap>>,
    registry: SharedRegistry,
    device: DeviceId,
    decoding: bool,
    base: usize,
}

impl Target {
    fn set_bar(&mut self) {
        let info = RegionInfo::new(2, BAR_BASES[self.base], BAR_SIZE, 0, 7)
            .with_decoding(self.decoding);
        let mut reg = self.registry.write().unwrap();
        reg.set_region(self.device, info).unwrap();
    }
}

fn target() -> &'static Mutex<Target> {
    static T: OnceLock<Mutex<Target>> = OnceLock::new();
    T.get_or_init(|| {
        let ram_fd = create_memfd("ram", RAM_SIZE).unwrap();
        add_seals(ram_fd.as_fd(), libc::F_SEAL_SHRINK).unwrap();
        let ram_file = std::fs::File::from(ram_fd.try_clone().unwrap());
        let mem = GuestMemoryMmap::from_ranges_with_files(&[(
            GuestAddress(0),
            RAM_SIZE as usize,
            Some(FileOffset::new(ram_file, 0)),
        )])
        .unwrap();
        let mut ram = GuestRam::new();
        ram.add_region(0, RAM_SIZE, ram_fd.as_fd(), 0).unwrap();
        let udmabuf = UdmabufExporter::with_device(
            create_memfd("udmabuf", 0).unwrap(),
            ram,
            UdmabufLimits::default(),
            FakeUdmabuf::default(),
        );

        let bar_fd = create_memfd("bar2", BAR_SIZE).unwrap();
        let mut reg = DeviceRegistry::with_limits(PAGE, 16384);
        let device = reg.register_device("fuzz", bar_fd.as_fd()).unwrap();
        let registry: SharedRegistry = Arc::new(RwLock::new(reg));
        let exporter = BlobExporter::new()
            .with_vfio(registry.clone(), FakeVfioPci::ivshmem_like())
            .with_udmabuf(udmabuf);
        let dir = std::env::temp_dir().join(format!("vgpu-fuzz-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let display = CaptureDisplay::new(dir, 10, 2).unwrap();
        let config = GpuConfig {
            max_hostmem: 64 << 20,
            max_resource_bytes: 16 << 20,
            max_resources: 64,
            max_dmabufs: 16,
            max_total_dmabuf_ranges: 4096,
            ..GpuConfig::default()
        };
        let mut dev = GpuDevice::new(config, Box::new(display), Box::new(exporter));
        dev.activate(Arc::new(mem));
        let mut t = Target {
            dev,
            registry,
            device,
            decoding: true,
            base: 0,
        };
        t.set_bar();
        Mutex::new(t)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut t = target().lock().unwrap();
    t.dev.reset();
    t.decoding = true;
    t.base = 0;
    t.set_bar();
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0] % 4;
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match op {
            0 => {
                let ty = match decode_request(bytes) {
                    Ok(r) => t.dev.handle(&r).response_type(),
                    Err(e) => e.response_type(),
                };
                assert!((0x1100..=0x1106).contains(&ty) || (0x1200..=0x1205).contains(&ty));
            }
            1 => {
                t.decoding = !t.decoding;
                t.set_bar();
            }
            2 => {
                t.base ^= 1;
                t.set_bar();
            }
            _ => t.dev.reset(),
        }
        let (dmabufs, ranges) = t.dev.dmabuf_usage();
        assert!(dmabufs <= 16 && ranges <= 4096);
        assert!(t.dev.hostmem_used() <= 64 << 20);
    }
});
