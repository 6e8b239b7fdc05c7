//! Scenario `vnc` (run.sh `--l0-root`): the vmm's VNC server (`--display vnc=127.0.0.1:5900`
//! and `--display vnc=unix:...`, two servers) with real clients from L0's root (gtk-vnc's
//! gvnccapture, vncdotool on Debian's python3), and the stock virtio-gpu and virtio-input
//! drivers in L2 (resources/rig/l2/vnc.sh):
//! - step 1: the 1280x800 KMS blob framebuffer (guest RAM) captured pixel-exact by gvnccapture
//!   (ZRLE) and vncdotool (Raw), and as a JPEG by vncsnapshot (RFB 3.3); vncdotool's `key a`, `move 100 200`, `click 1` and F12 arrive in
//!   L2 as evdev events of the virtio keyboard and tablet;
//! - step 2: the guest changes mode to 1024x768: vncdotool's session, connected across the change,
//!   gets the new size (DesktopSize) and a pixel-exact frame;
//! - step 3: with 50 idle connections, one that never reads and one that reads like a viewer open,
//!   the guest's 200 flushes complete and gvnccapture gets a pixel-exact frame;
//! - a second vmm run with ivshmem passed through: a blob in six out-of-order ranges of its BAR2,
//!   exported as one VFIO dma-buf, is captured pixel-exact by both clients, vncdotool through a
//!   second server with VNC Authentication (a wrong password is refused).

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{blob_word, first_bad_pixel, rgb, VARIANT_BAR_BLOB, VARIANT_KMS};
use rig_tests::{
    decode_png, guest_lines_starting, identify_image, Image, Outcome, Scenario,
    GPU_USER_BLOB_IMAGES,
};

/// Capture `name` as sent to L0 (its path for messages) and decoded; panics if it is missing, not
/// a PNG or not `width` x `height`.
fn capture(out: &Outcome, name: &str, width: u32, height: u32) -> (String, Image) {
    let f = out
        .files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not sent: {}", out.result));
    let path = f.path.display().to_string();
    let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{name} ({path}): {e}"));
    assert_eq!(
        (img.width, img.height),
        (width, height),
        "{name}: size ({path})"
    );
    (path, img)
}

/// Checks that capture `name` shows the KMS pattern at `width` x `height`, every pixel.
fn assert_exact(out: &Outcome, name: &str, width: u32, height: u32) {
    let (path, img) = capture(out, name, width, height);
    let bad = first_bad_pixel(&img.pixels, img.channels, width, height, VARIANT_KMS);
    assert_eq!(bad, None, "{name}: first wrong pixel ({path})");
    println!("{name}: {width}x{height}, every pixel right");
}

/// (largest, mean) difference per colour sample between capture `name` (a JPEG made PNG) and the
/// KMS pattern at `width` x `height`.
fn jpeg_error(out: &Outcome, name: &str, width: u32, height: u32) -> (u8, f64) {
    let (_, img) = capture(out, name, width, height);
    let (mut max, mut sum) = (0u8, 0u64);
    for y in 0..height {
        for x in 0..width {
            let i = (y * width + x) as usize * img.channels;
            let want = rgb(blob_word(VARIANT_KMS, width, u64::from(y * width + x) * 4));
            for (got, want) in img.pixels[i..i + 3].iter().zip(want) {
                let d = got.abs_diff(want);
                max = max.max(d);
                sum += u64::from(d);
            }
        }
    }
    (max, sum as f64 / f64::from(width * height * 3))
}

/// The EVDEV lines L2's evdev-watch printed for step `step` (as `(device name, type, code,
/// value)`, SYN events left out).
fn evdev_events(out: &Outcome, step: u32) -> Vec<(String, u16, u16, i32)> {
    // Each step's evdev-watch says EVDEV-READY before its events. EVDEV lines are mended where a
    // vmm log line was written into them.
    let mut current = 0;
    let mut events = Vec::new();
    for line in guest_lines_starting(&out.log, "EVDEV") {
        if line.starts_with("EVDEV-READY") {
            current += 1;
            continue;
        }
        let Some(rest) = line.strip_prefix("EVDEV ") else {
            continue;
        };
        if current != step {
            continue;
        }
        let field = |k: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        let (t, c, v): (u16, u16, i32) = (
            field("type").parse().unwrap(),
            field("code").parse().unwrap(),
            field("value").parse().unwrap(),
        );
        if t != 0 {
            events.push((field("name"), t, c, v));
        }
    }
    events
}

/// Where the virtio tablet reports pixel `p` of an `extent`-pixel edge (0..=32767).
fn abs(p: u32, extent: u32) -> i32 {
    ((u64::from(p) * 32767 + u64::from(extent - 1) / 2) / u64::from(extent - 1)) as i32
}

#[test]
fn vnc_clients_see_the_guest_and_drive_its_input() {
    let out = Scenario::new("vnc")
        .timeout(Duration::from_secs(1800))
        .l0_root(true)
        .vnc_clients(true)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for d in out.data.iter().filter(|d| d.get("client").is_some()) {
        println!("client: {d}");
    }
    out.assert_passed();
    out.assert_vmm_ran_clean();
    let r = &out.result;
    let l2 = out.assert_l2_passed("vnc-l2");
    assert_eq!(l2.get("steps"), Some("3"), "{l2}");
    for step in 1..=3 {
        let kms = out
            .l2_result(&format!("vnc-kms-{step}"))
            .unwrap_or_else(|| panic!("no result of gpu-kms-blob step {step}"));
        assert!(kms.is_pass(), "{kms}");
        assert_eq!(kms.get("device_errors"), Some("0"), "{kms}");
        println!("step {step}: {kms}");
    }
    for run in [
        "gvnccapture_1",
        "vncdo_input",
        "session",
        "vncdo_f12_2",
        "gvnccapture_3",
        "vncdo_f12_3",
        "stress",
    ] {
        assert_eq!(r.get(&format!("{run}_exit")), Some("0"), "{run}: {r}");
    }
    assert!(out.file_errors.is_empty(), "{:?}", out.file_errors);

    // The server's log lines: where it listens, each client coming and going.
    let vmm: Vec<&str> = out.vmm_output().collect();
    for listen in [
        "vnc: listening on 127.0.0.1:5900",
        "vnc: listening on unix:",
    ] {
        assert!(vmm.iter().any(|l| l.contains(listen)), "no '{listen}' line");
    }
    let connected = vmm
        .iter()
        .filter(|l| l.contains(" connected from "))
        .count();
    let disconnected = vmm.iter().filter(|l| l.contains(" disconnected: ")).count();
    println!("client lines: {connected} connected, {disconnected} disconnected");
    assert!(connected >= 6, "one line per client: {connected}");

    // 1. The 1280x800 blob framebuffer, through ZRLE (gtk-vnc) and Raw (vncdotool); vncsnapshot
    // (an RFB 3.3 client) only writes JPEGs: close, not exact.
    assert_exact(&out, "gvnc-1.png", 1280, 800);
    assert_eq!(r.get("vncsnapshot_1_exit"), Some("0"), "{r}");
    assert_eq!(r.get("jpeg_to_png_exit"), Some("0"), "{r}");
    let (max, mean) = jpeg_error(&out, "vncsnap-1.png", 1280, 800);
    println!("vncsnap-1.png: JPEG off by up to {max}, mean {mean:.2}");
    assert!(
        mean < 4.0,
        "vncsnapshot's picture is not the pattern: mean error {mean:.2}"
    );
    assert_exact(&out, "vncdo-1.png", 1280, 800);
    // 2. The same vncdotool connection after the mode change.
    assert_exact(&out, "vncdo-2.png", 1024, 768);
    // 3. A normal client while 51 others are connected, one of them never reading.
    assert_exact(&out, "gvnc-3.png", 1024, 768);
    let stress = |k: &str| -> u64 {
        out.data_value(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} from vnc-stress"))
    };
    assert_eq!(stress("connected"), 52);
    assert_eq!(stress("handshakes_ok"), 52);
    assert!(stress("requests_sent") > 0);
    // The viewer-like reader got updates while the guest flushed (the server's figures for every
    // client are in its disconnect line).
    assert!(stress("reader_updates") >= 2, "reader updates");
    for l in vmm.iter().filter(|l| l.contains("flush to sent")) {
        println!("{l}");
    }
    // The load was there while the guest flushed and while gvnccapture took its picture.
    let at = |k: &str| -> f64 { r.parse_field(k).unwrap_or_else(|| panic!("no {k} in {r}")) };
    assert!(at("stress_ready_at") < at("step3_at"), "{r}");
    assert!(at("gvnccapture_3_end_at") < at("stress_end_at"), "{r}");
    for step in [2, 3] {
        let kms = out.l2_result(&format!("vnc-kms-{step}")).unwrap();
        assert_eq!(kms.get("flushes"), Some("200"), "{kms}");
        let name = format!("vnc-kms-{step}");
        let data = out
            .l2_data(&name)
            .find(|d| d.get("flush_max_ms").is_some())
            .expect("flush times");
        println!("step {step} flushes: {data}");
    }

    // Keys and pointer from vncdotool, as evdev events of the stock virtio_input driver.
    let step1 = evdev_events(&out, 1);
    for e in &step1 {
        println!("evdev step 1: {e:?}");
    }
    assert!(
        !evdev_events(&out, 2).is_empty(),
        "no evdev events in step 2 (its F12)"
    );
    let kbd = "vmm_virtio_keyboard".to_string();
    let tab = "vmm_virtio_tablet".to_string();
    let (x, y) = (abs(100, 1280), abs(200, 800));
    let expected = [
        (kbd.clone(), 1, 30, 1),  // KEY_A down
        (kbd.clone(), 1, 30, 0),  // KEY_A up
        (tab.clone(), 3, 0, x),   // ABS_X
        (tab.clone(), 3, 1, y),   // ABS_Y
        (tab.clone(), 1, 272, 1), // BTN_LEFT down
        (tab.clone(), 1, 272, 0), // BTN_LEFT up
        (kbd.clone(), 1, 88, 1),  // KEY_F12 down
        (kbd, 1, 88, 0),          // KEY_F12 up
    ];
    // (The input core drops a repeated position, so vncdotool's three pointer events at one spot
    // give one ABS_X/ABS_Y pair.)
    assert_eq!(step1, expected, "evdev events of step 1");

    // The BAR blob: one VFIO dma-buf, both clients' captures are blob 1's picture.
    for k in ["bar_vmm_exit", "bar_kvm_error"] {
        assert_eq!(r.get(k), Some("0"), "{k}: {r}");
    }
    assert_eq!(r.get("bar_marker"), Some("1"), "{r}");
    assert_eq!(r.get("bar_exports_vfio"), Some("1"), "{r}");
    for run in ["gvnccapture_bar", "vncdo_bar"] {
        assert_eq!(r.get(&format!("{run}_exit")), Some("0"), "{run}: {r}");
    }
    // VNC Authentication (the second server): a wrong password gets no picture; the warning.
    assert_ne!(r.get("vncdo_badpw_exit"), Some("0"), "{r}");
    assert!(
        !out.files.iter().any(|f| f.name == "bar-badpw.png"),
        "a wrong password got a picture"
    );
    assert!(
        vmm.iter().any(|l| l.contains("VNC authentication failed")),
        "no log line of the failed authentication"
    );
    assert!(
        vmm.iter().any(|l| l.contains("VNC Authentication is weak")),
        "no warning that VNC Authentication is weak"
    );
    let bar = out.assert_l2_passed("gpu-user-blob");
    println!("BAR blob: {bar}");
    for name in ["bar-gvnc.png", "bar-vncdo.png"] {
        let (path, img) = capture(&out, name, 256, 192);
        let known = identify_image(&img, &GPU_USER_BLOB_IMAGES)
            .unwrap_or_else(|e| panic!("{name} ({path}): {e}"));
        assert_eq!(known.variant, VARIANT_BAR_BLOB, "{name}");
        println!(
            "{name}: {}x{}, every pixel of the BAR blob right",
            img.width, img.height
        );
    }
}
