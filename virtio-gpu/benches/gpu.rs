//! Criterion benches of the device's hot paths:
//! - scanout flip (SET_SCANOUT_BLOB + RESOURCE_FLUSH, decoded and executed) for a 64x64 and a
//!   3840x2160 blob exported as a dma-buf, headless display: the cost must not grow with the
//!   size (no copy);
//! - TRANSFER_TO_HOST_2D of a 1920x1080 frame (scattered 4 KiB pages and one contiguous
//!   range) against a plain memcpy of the same bytes.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vfio_dmabuf::DmaBufError;
use virtio_gpu_blob::display::HeadlessDisplay;
use virtio_gpu_blob::exporter::{BlobMemory, DmaBuf, ExportKind, RegionKey};
use virtio_gpu_blob::protocol::{decode_request, encode, resp, BlobEntry, Rect, ScanoutBlob};
use virtio_gpu_blob::{GpuConfig, GpuDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PAGE: u64 = 4096;
const XRGB: u32 = 2;

/// Exports every RAM blob as a dma-buf (a /dev/null fd stands in for the udmabuf).
struct BenchExporter;

impl BlobMemory for BenchExporter {
    fn locate(&self, _: u64, _: u64) -> Option<RegionKey> {
        None
    }
    fn export(&self, kind: ExportKind, entries: &[BlobEntry]) -> Result<DmaBuf, DmaBufError> {
        let fd: OwnedFd = File::open("/dev/null")
            .map_err(|_| DmaBufError::NoExporter("bench"))?
            .into();
        Ok(DmaBuf {
            fd,
            size: entries.iter().map(|e| e.len).sum(),
            kind,
            generation: 0,
        })
    }
    fn read(&self, addr: u64, _: &mut [u8]) -> Result<(), DmaBufError> {
        Err(DmaBufError::NotInRegion { entry: 0, addr })
    }
    fn is_current(&self, _: &DmaBuf) -> bool {
        true
    }
}

type Device = GpuDevice<Arc<GuestMemoryMmap>>;

fn device(mem_size: u64) -> Device {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size as usize)]).unwrap();
    let mut dev = GpuDevice::new(
        GpuConfig::default(),
        Box::new(HeadlessDisplay::default()),
        Box::new(BenchExporter),
    );
    dev.activate(Arc::new(mem));
    dev
}

fn run(dev: &mut Device, bytes: &[u8]) -> u32 {
    let req = decode_request(bytes).unwrap();
    dev.handle(&req).response_type()
}

/// Page entries of a `bytes`-long buffer, every other page (fragmented, as a guest allocator
/// hands them out), starting at 1 MiB.
fn scattered_pages(bytes: u64) -> Vec<BlobEntry> {
    (0..bytes.div_ceil(PAGE))
        .map(|i| BlobEntry::new((1 << 20) + 2 * i * PAGE, PAGE))
        .collect()
}

fn scanout_flip(c: &mut Criterion) {
    let mut g = c.benchmark_group("scanout_flip");
    for (w, h) in [(64u32, 64u32), (3840, 2160)] {
        let bytes = u64::from(w) * u64::from(h) * 4;
        let mut dev = device((1 << 20) + 2 * bytes + PAGE);
        let entries = scattered_pages(bytes);
        assert_eq!(
            run(&mut dev, &encode::create_blob(1, 1, 0, bytes, &entries)),
            resp::OK_NODATA
        );
        assert!(dev.blob_state(1).unwrap().1, "blob must be exported");
        let rect = Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        };
        let set = encode::set_scanout_blob(&ScanoutBlob {
            rect,
            scanout_id: 0,
            resource_id: 1,
            width: w,
            height: h,
            format: XRGB,
            strides: [w * 4, 0, 0, 0],
            offsets: [0; 4],
        });
        let flush = encode::flush(1, rect);
        g.bench_function(BenchmarkId::from_parameter(format!("{w}x{h}")), |b| {
            b.iter(|| {
                assert_eq!(run(&mut dev, &set), resp::OK_NODATA);
                assert_eq!(run(&mut dev, &flush), resp::OK_NODATA);
            })
        });
    }
    g.finish();
}

fn transfer_to_host_2d(c: &mut Criterion) {
    let (w, h) = (1920u32, 1080u32);
    let bytes = u64::from(w) * u64::from(h) * 4;
    let mut g = c.benchmark_group("transfer_to_host_2d_1080p");
    g.throughput(Throughput::Bytes(bytes));
    let rect = Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    for (name, entries) in [
        ("scattered_4k_pages", scattered_pages(bytes)),
        ("contiguous", vec![BlobEntry::new(1 << 20, bytes)]),
    ] {
        let mut dev = device((1 << 20) + 2 * bytes + PAGE);
        // Guest pages hold a picture (real, distinct pages, not the shared zero page).
        for e in &entries {
            dev.memory()
                .unwrap()
                .write_slice(&vec![0x5a; e.len as usize], GuestAddress(e.addr))
                .unwrap();
        }
        assert_eq!(
            run(&mut dev, &encode::create_2d(1, XRGB, w, h)),
            resp::OK_NODATA
        );
        assert_eq!(
            run(&mut dev, &encode::attach_backing(1, &entries)),
            resp::OK_NODATA
        );
        let req = encode::transfer_to_host_2d(1, rect, 0);
        g.bench_function(name, |b| {
            b.iter(|| assert_eq!(run(&mut dev, &req), resp::OK_NODATA))
        });
    }
    // Both buffers touched up front, like the guest pages and the host copy above.
    let src = vec![0x5au8; bytes as usize];
    let mut dst = vec![1u8; bytes as usize];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
        })
    });
    // The same copy as the scattered backing: every other 4 KiB page of the source.
    let sparse_src = vec![0x5au8; 2 * bytes as usize];
    g.bench_function("memcpy_scattered_4k_pages", |b| {
        b.iter(|| {
            let src = std::hint::black_box(&sparse_src);
            for (i, chunk) in dst.chunks_mut(PAGE as usize).enumerate() {
                let at = 2 * i * PAGE as usize;
                chunk.copy_from_slice(&src[at..at + chunk.len()]);
            }
            std::hint::black_box(&dst);
        })
    });
    g.finish();
}

criterion_group!(benches, scanout_flip, transfer_to_host_2d);
criterion_main!(benches);
