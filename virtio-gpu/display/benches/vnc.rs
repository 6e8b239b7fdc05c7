//! The VNC backend's costs for a full 1280x800 update: bytes on the wire per encoding (printed),
//! the CPU time of the GPU thread's copy of a flushed frame into the server and of each encoder,
//! and the time from a flush to a client on loopback having the whole update.
//!
//! `cargo bench -p virtio-gpu-display --bench vnc`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use virtio_gpu_blob::display::{DisplayBackend, ScanoutFrame};
use virtio_gpu_blob::format::FORMATS;
use virtio_gpu_blob::protocol::Rect;
use virtio_gpu_display::vnc::encode::{raw, PixelWriter, Zrle};
use virtio_gpu_display::vnc::protocol::{
    PixelFormat, ENCODING_DESKTOP_SIZE, ENCODING_RAW, ENCODING_ZRLE,
};
use virtio_gpu_display::vnc::test_client::TestClient;
use virtio_gpu_display::{VncConfig, VncDisplay};

const W: u32 = 1280;
const H: u32 = 800;

/// Two pictures: a colour gradient (every pixel differs from its neighbours) and a desktop (a
/// flat background, windows with text-like detail on 10% of their pixels).
fn picture(desktop: bool, seed: u32) -> Vec<u32> {
    let mut rng = 0x2545_f491u32 ^ seed;
    (0..W * H)
        .map(|i| {
            let (x, y) = (i % W, i / W);
            if !desktop {
                return (x & 0xff) << 16
                    | (y & 0xff) << 8
                    | (((x >> 8) + ((y >> 8) << 4) + seed) & 0xff);
            }
            let in_window = (100..700).contains(&x) && (80..560).contains(&y)
                || (640..1200).contains(&x) && (300..760).contains(&y);
            if !in_window {
                return 0x0030_5070;
            }
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            if rng % 10 == 0 {
                0x0000_0000
            } else {
                0x00f0_f0f0
            }
        })
        .collect()
}

fn bytes_of(p: &[u32]) -> Vec<u8> {
    p.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn frame(buf: &Vec<u8>) -> ScanoutFrame<'_> {
    ScanoutFrame {
        dmabuf: None,
        pixels: buf,
        fourcc: FORMATS
            .iter()
            .find(|f| f.fourcc == u32::from_le_bytes(*b"XR24"))
            .unwrap()
            .fourcc,
        width: W,
        height: H,
        stride: W * 4,
        offset: 0,
    }
}

const FULL: Rect = Rect {
    x: 0,
    y: 0,
    width: W,
    height: H,
};

/// One full update's bytes on the wire (rectangle headers and data) per encoding and picture.
fn print_wire_bytes() {
    for desktop in [false, true] {
        for (name, enc) in [("raw", ENCODING_RAW), ("zrle", ENCODING_ZRLE)] {
            let mut vnc =
                VncDisplay::start(&VncConfig::parse("127.0.0.1:0").unwrap(), None, "bench")
                    .unwrap();
            let buf = bytes_of(&picture(desktop, 0));
            vnc.set_scanout(0, Some(&frame(&buf))).unwrap();
            let mut c = TestClient::connect(vnc.address(), &[enc, ENCODING_DESKTOP_SIZE]);
            c.request(false);
            c.read_update();
            println!(
                "vnc wire bytes: {} 1280x800 {name}: {} bytes ({:.1}% of raw 32-bit pixels)",
                if desktop { "desktop" } else { "gradient" },
                c.bytes,
                c.bytes as f64 * 100.0 / f64::from(W * H * 4)
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    print_wire_bytes();
    let mut g = c.benchmark_group("vnc-1280x800");
    g.sample_size(20);
    for desktop in [false, true] {
        let kind = if desktop { "desktop" } else { "gradient" };
        let pixels = picture(desktop, 0);
        let writer = PixelWriter::new(PixelFormat::SERVER);
        g.bench_function(format!("encode-raw/{kind}"), |b| {
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                raw(&writer, &pixels, &mut out);
            })
        });
        g.bench_function(format!("encode-zrle/{kind}"), |b| {
            let mut z = Zrle::default();
            let mut out = Vec::new();
            b.iter(|| {
                out.clear();
                z.encode(&writer, &pixels, W as usize, &mut out).unwrap();
            })
        });
        // The GPU thread's part of a flush with no client: reading the frame into the server.
        g.bench_function(format!("flush-copy/{kind}"), |b| {
            let mut vnc =
                VncDisplay::start(&VncConfig::parse("127.0.0.1:0").unwrap(), None, "bench")
                    .unwrap();
            let buf = bytes_of(&pixels);
            vnc.set_scanout(0, Some(&frame(&buf))).unwrap();
            b.iter(|| vnc.flush(0, &frame(&buf), FULL).unwrap())
        });
        for (name, enc) in [("raw", ENCODING_RAW), ("zrle", ENCODING_ZRLE)] {
            // From flush() to the client having read (and decoded) the whole update.
            g.bench_function(format!("flush-to-client-{name}/{kind}"), |b| {
                let mut vnc =
                    VncDisplay::start(&VncConfig::parse("127.0.0.1:0").unwrap(), None, "bench")
                        .unwrap();
                let frames = [
                    bytes_of(&picture(desktop, 0)),
                    bytes_of(&picture(desktop, 1)),
                ];
                vnc.set_scanout(0, Some(&frame(&frames[0]))).unwrap();
                let mut client = TestClient::connect(vnc.address(), &[enc, ENCODING_DESKTOP_SIZE]);
                client.request(false);
                client.read_update();
                let mut n = 0usize;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        n += 1;
                        client.request(true);
                        let t = Instant::now();
                        vnc.flush(0, &frame(&frames[n % 2]), FULL).unwrap();
                        client.read_update();
                        total += t.elapsed();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
