//! The Wayland display against a real compositor on this machine: Debian's Weston, headless
//! backend with its pixman renderer (no GPU), which offers no `zwp_linux_dmabuf_v1`, so every
//! frame takes the `wl_shm` path. Weston's own screenshooter (`--debug`) checks the pixels, a mode
//! change resizes the window, and a compositor killed mid-run ends the display, not its user.
//! Needs `weston` (resources/rig/setup.sh installs it); part of the rig feature.
#![cfg(feature = "rig")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use virtio_gpu_blob::display::ScanoutFrame;
use virtio_gpu_blob::protocol::Rect;
use virtio_gpu_blob::DisplayBackend;
use virtio_gpu_display::{WaylandConfig, WaylandDisplay};

/// Pixel (x, y) of pattern `v` as (r, g, b); never black, so the window's bounding box on the
/// black desktop is the window.
fn pattern(v: u8, x: u32, y: u32) -> (u8, u8, u8) {
    (
        (x as u8) | 0x80,
        (y as u8) ^ v,
        ((x ^ y) as u8).wrapping_add(v),
    )
}

/// XRGB8888 bytes (B, G, R, X with X = 0, as guests write them) of pattern `v`.
fn frame_bytes(v: u8, w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = pattern(v, x, y);
            out.extend_from_slice(&[b, g, r, 0]);
        }
    }
    out
}

struct Weston {
    child: Child,
    dir: PathBuf,
}

impl Weston {
    fn start(dir: &Path) -> Weston {
        std::fs::create_dir_all(dir).unwrap();
        // XDG_RUNTIME_DIR must be private.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let ini = dir.join("weston.ini");
        std::fs::write(
            &ini,
            "[core]\nshell=desktop-shell.so\n[shell]\npanel-position=none\nbackground-color=0xff000000\n\
             animation=none\nclose-animation=none\nstartup-animation=none\nfocus-animation=none\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("weston.log")).unwrap();
        let child = Command::new("weston")
            .args([
                "--backend=headless-backend.so",
                "--use-pixman",
                "--socket=wl-test",
                "--debug",
                "--width=1024",
                "--height=768",
            ])
            .arg(format!("--config={}", ini.display()))
            .env("XDG_RUNTIME_DIR", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("weston (Debian package weston; resources/rig/setup.sh installs it)");
        let socket = dir.join("wl-test");
        let t = Instant::now();
        while !socket.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "weston made no socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Weston {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn socket(&self) -> String {
        self.dir.join("wl-test").display().to_string()
    }

    /// A screenshot through weston-screenshooter: (width, height, RGB rows).
    fn screenshot(&self) -> (u32, u32, Vec<u8>) {
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "png") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let status = Command::new("timeout")
            .args(["30", "weston-screenshooter"])
            .current_dir(&self.dir)
            .env("XDG_RUNTIME_DIR", &self.dir)
            .env("WAYLAND_DISPLAY", "wl-test")
            .status()
            .unwrap();
        assert!(status.success(), "weston-screenshooter: {status}");
        let png = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "png"))
            .expect("a screenshot");
        let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let bpp = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            c => panic!("screenshot colour type {c:?}"),
        };
        let mut rgb = Vec::new();
        for px in buf[..info.buffer_size()].chunks_exact(bpp) {
            rgb.extend_from_slice(&px[..3]);
        }
        (info.width, info.height, rgb)
    }
}

impl Drop for Weston {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the non-black bounding box of the screenshot and checks it is pattern `v` of `w` x `h`.
fn assert_shows(shot: &(u32, u32, Vec<u8>), v: u8, w: u32, h: u32) {
    let (sw, sh, rgb) = shot;
    let at = |x: u32, y: u32| {
        let i = ((y * sw + x) * 3) as usize;
        (rgb[i], rgb[i + 1], rgb[i + 2])
    };
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for y in 0..*sh {
        for x in 0..*sw {
            if at(x, y) != (0, 0, 0) {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x + 1);
                y1 = y1.max(y + 1);
            }
        }
    }
    assert!(x0 < x1, "the screenshot is black: no window");
    assert_eq!((x1 - x0, y1 - y0), (w, h), "window at ({x0}, {y0})");
    let mut wrong = 0;
    for y in 0..h {
        for x in 0..w {
            if at(x0 + x, y0 + y) != pattern(v, x, y) {
                wrong += 1;
            }
        }
    }
    assert_eq!(
        wrong,
        0,
        "pixels differing from pattern {v}; at (0, 0): {:?} for {:?}, at (5, 3): {:?} for {:?}",
        at(x0, y0),
        pattern(v, 0, 0),
        at(x0 + 5, y0 + 3),
        pattern(v, 5, 3)
    );
}

fn show(display: &mut WaylandDisplay, pixels: &Vec<u8>, w: u32, h: u32, set: bool) {
    let frame = ScanoutFrame {
        dmabuf: None,
        pixels,
        fourcc: u32::from_le_bytes(*b"XR24"),
        width: w,
        height: h,
        stride: w * 4,
        offset: 0,
    };
    if set {
        display.set_scanout(0, Some(&frame)).unwrap();
    }
    let all = Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    display.flush(0, &frame, all).unwrap();
}

#[test]
fn weston_shows_the_frames_and_its_death_ends_only_the_display() {
    let dir = std::env::temp_dir().join(format!("host-weston-{}", std::process::id()));
    let mut weston = Weston::start(&dir);
    let config = WaylandConfig {
        socket: Some(weston.socket()),
    };
    let mut display = WaylandDisplay::connect(&config, None, "host-weston").unwrap();
    let summary = display.summary();

    // A 640x480 frame, then a mode change to 800x600 with another picture.
    let a = frame_bytes(1, 640, 480);
    show(&mut display, &a, 640, 480, true);
    std::thread::sleep(Duration::from_millis(500));
    assert_shows(&weston.screenshot(), 1, 640, 480);
    let b = frame_bytes(2, 800, 600);
    show(&mut display, &b, 800, 600, true);
    std::thread::sleep(Duration::from_millis(500));
    assert_shows(&weston.screenshot(), 2, 800, 600);
    // A partial flush of new pixels: only that rectangle changes.
    let mut c = b.clone();
    for y in 100..200 {
        for x in 50..150 {
            let i = ((y * 800 + x) * 4) as usize;
            c[i..i + 4].copy_from_slice(&[0x11, 0x22, 0x33, 0]);
        }
    }
    let frame = ScanoutFrame {
        dmabuf: None,
        pixels: &c,
        fourcc: u32::from_le_bytes(*b"XR24"),
        width: 800,
        height: 600,
        stride: 3200,
        offset: 0,
    };
    let rect = Rect {
        x: 50,
        y: 100,
        width: 100,
        height: 100,
    };
    display.flush(0, &frame, rect).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (sw, _, rgb) = weston.screenshot();
    let line = summary.line();
    println!("{line}");
    assert!(line.contains("frames dma-buf=0 wl_shm=2"), "{line}");
    // The changed square is there (its position: the window's, found by the unchanged corner).
    let count = rgb
        .chunks_exact(3)
        .filter(|p| *p == [0x33, 0x22, 0x11])
        .count();
    assert_eq!(
        count,
        100 * 100,
        "the flushed square ({sw} wide screenshot)"
    );

    // The compositor dies: the display stops, flushes still return, nothing panics.
    assert!(display.connected());
    weston.child.kill().unwrap();
    weston.child.wait().unwrap();
    for _ in 0..10 {
        show(&mut display, &a, 640, 480, true);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !display.connected(),
        "the display did not notice the compositor's end"
    );
    drop(display);
    let _ = std::fs::remove_dir_all(&dir);
}
