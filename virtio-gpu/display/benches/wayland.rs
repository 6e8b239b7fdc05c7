//! The Wayland display's cost per flip on the `wl_shm` path, against this machine's Weston
//! (headless, pixman renderer, started by the bench with a private `XDG_RUNTIME_DIR`):
//!
//!     cargo bench -p virtio-gpu-display --bench wayland
//!
//! For 1280x800 frames, whole-frame flushes and 64x64 ones, paced at 60 per second: the GPU
//! thread's time per flush, the display's summary (bytes copied into the picture and into
//! `wl_shm` buffers, commits, time from the flush to the commit that carries it). The dma-buf path
//! needs a compositor that imports dma-bufs and a dma-buf source (udmabuf): its figures come from
//! the rig's `wayland` scenario (the vmm's exit summary). Without `weston` on PATH the bench says
//! so and measures nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use virtio_gpu_blob::display::ScanoutFrame;
use virtio_gpu_blob::protocol::Rect;
use virtio_gpu_blob::DisplayBackend;
use virtio_gpu_display::{WaylandConfig, WaylandDisplay};

const W: u32 = 1280;
const H: u32 = 800;
const FLIPS: u32 = 300;

fn run(dir: &std::path::Path, label: &str, damage: Rect) {
    let config = WaylandConfig {
        socket: Some(dir.join("wl-bench").display().to_string()),
    };
    let mut display = WaylandDisplay::connect(&config, None, "bench").expect("connect");
    let mut pixels = vec![0u8; (W * H * 4) as usize];
    let frame = ScanoutFrame {
        dmabuf: None,
        pixels: &pixels,
        fourcc: u32::from_le_bytes(*b"XR24"),
        width: W,
        height: H,
        stride: W * 4,
        offset: 0,
    };
    display.set_scanout(0, Some(&frame)).unwrap();
    let mut gpu = Duration::ZERO;
    let mut max = Duration::ZERO;
    for i in 0..FLIPS {
        pixels.iter_mut().step_by(97).for_each(|b| *b = i as u8);
        let frame = ScanoutFrame {
            dmabuf: None,
            pixels: &pixels,
            fourcc: u32::from_le_bytes(*b"XR24"),
            width: W,
            height: H,
            stride: W * 4,
            offset: 0,
        };
        let t = Instant::now();
        display.flush(0, &frame, damage).unwrap();
        let took = t.elapsed();
        gpu += took;
        max = max.max(took);
        std::thread::sleep(Duration::from_micros(16_667).saturating_sub(took));
    }
    std::thread::sleep(Duration::from_millis(200));
    let summary = display.summary();
    drop(display);
    println!(
        "{label}: GPU thread per flush {:.3} ms mean, {:.3} ms max over {FLIPS}",
        gpu.as_secs_f64() * 1e3 / f64::from(FLIPS),
        max.as_secs_f64() * 1e3
    );
    println!("{label}: {}", summary.line());
}

fn main() {
    if Command::new("weston").arg("--version").output().is_err() {
        println!("wayland bench: no weston on PATH (Debian: apt install weston); nothing measured");
        return;
    }
    let dir = std::env::temp_dir().join(format!("wl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut weston = Command::new("weston")
        .args([
            "--backend=headless-backend.so",
            "--use-pixman",
            "--socket=wl-bench",
            "--width=1600",
            "--height=1000",
        ])
        .env("XDG_RUNTIME_DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weston");
    let t = Instant::now();
    while !dir.join("wl-bench").exists() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let version = Command::new("weston").arg("--version").output().unwrap();
    println!(
        "compositor: {} (headless, pixman: wl_shm only)",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    run(
        &dir,
        "wl_shm 1280x800 whole frame",
        Rect {
            x: 0,
            y: 0,
            width: W,
            height: H,
        },
    );
    run(
        &dir,
        "wl_shm 1280x800 64x64 damage",
        Rect {
            x: 600,
            y: 300,
            width: 64,
            height: 64,
        },
    );
    let _ = weston.kill();
    let _ = weston.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
