//! Shows a test pattern through the Wayland display, as the GPU device would drive it:
//!
//!     cargo run -p virtio-gpu-display --example wayland-pattern -- [SOCKET] [SECONDS] [WxH]
//!
//! SOCKET as `--display wayland=<socket>` takes it (default: `$WAYLAND_DISPLAY`). The pattern is
//! `pattern_pixel` below (XRGB8888, a CPU frame: the `wl_shm` path); a flush of the whole frame
//! every 100 ms; the display's summary line at the end.

use std::time::{Duration, Instant};

use virtio_gpu_blob::display::ScanoutFrame;
use virtio_gpu_blob::protocol::Rect;
use virtio_gpu_blob::DisplayBackend;
use virtio_gpu_display::{WaylandConfig, WaylandDisplay};

/// The pattern: red = x, green = y, blue = x ^ y (low 8 bits).
fn pattern_pixel(x: u32, y: u32) -> [u8; 4] {
    [(x ^ y) as u8, y as u8, x as u8, 0]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = WaylandConfig {
        socket: args.first().cloned(),
    };
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (w, h) = args
        .get(2)
        .and_then(|s| s.split_once('x'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((640u32, 480u32));
    let mut display = match WaylandDisplay::connect(&config, None, "wayland-pattern") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("wayland-pattern: {e}");
            std::process::exit(1);
        }
    };
    let mut pixels = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            pixels.extend_from_slice(&pattern_pixel(x, y));
        }
    }
    let frame = ScanoutFrame {
        dmabuf: None,
        pixels: &pixels,
        fourcc: u32::from_le_bytes(*b"XR24"),
        width: w,
        height: h,
        stride: w * 4,
        offset: 0,
    };
    let all = Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    display.set_scanout(0, Some(&frame)).expect("set_scanout");
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        display.flush(0, &frame, all).expect("flush");
    }
    let summary = display.summary();
    drop(display);
    println!("{}", summary.line());
}
