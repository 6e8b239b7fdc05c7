//! Scenario `wayland` (run.sh `--l0-root`): the vmm's Wayland display against a real compositor
//! in L1, weston 14 (Debian 13) headless with its gl renderer on Mesa's llvmpipe, which imports
//! linux-dmabuf buffers (resources/rig/scenarios/wayland.sh):
//! - no compositor at the socket: the vmm stops at start-up with status 1 and names the socket;
//! - the stock virtio-gpu driver's KMS blob framebuffer in guest RAM (a udmabuf): the compositor
//!   imports the dma-buf (`created`, the vmm's path line says dma-buf, its summary counts no
//!   `wl_shm` frame and no byte copied into one) and its screenshot is pixel-exact, before and
//!   after the guest changes the mode;
//! - weston killed mid-run: the vmm logs that the compositor went away, the guest's next 200
//!   flushes and its exit go on, the vmm exits 0;
//! - a blob in six out-of-order ranges of a passed-through BAR (one VFIO dma-buf, which cannot be
//!   mapped): the compositor names no GPU in its dma-buf feedback (llvmpipe maps what it imports),
//!   so the display does not offer it that dma-buf and shows the blob through `wl_shm`; the
//!   screenshot is still pixel-exact and the compositor lives on.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{first_bad_pixel, VARIANT_BAR_BLOB, VARIANT_KMS};
use rig_tests::{decode_png, identify_image, Image, Outcome, Scenario, GPU_USER_BLOB_IMAGES};

/// The window `vmm: scanout 0` cut out of screenshot `name` (its place from the scene graph,
/// checked to be `width` x `height`).
fn window(out: &Outcome, name: &str, width: u32, height: u32) -> Image {
    let shot = out
        .data
        .iter()
        .find(|d| d.get("shot") == Some(name))
        .unwrap_or_else(|| panic!("no RIG-DATA shot={name}: {}", out.result));
    assert_eq!(shot.get("exit"), Some("0"), "screenshot {name}: {shot}");
    let at = |k: &str| -> u32 {
        shot.parse_field(k)
            .unwrap_or_else(|| panic!("no window position {k} for {name}: {shot}"))
    };
    let (x, y) = (at("x"), at("y"));
    assert_eq!(
        (at("x2") - x, at("y2") - y),
        (width, height),
        "window size in {name}: {shot}"
    );
    let f = out
        .files
        .iter()
        .find(|f| f.name == format!("{name}.png"))
        .unwrap_or_else(|| panic!("{name}.png not sent: {}", out.result));
    let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        x + width <= img.width && y + height <= img.height,
        "{name}: window outside the {}x{} screenshot",
        img.width,
        img.height
    );
    let c = img.channels;
    let mut pixels = Vec::with_capacity((width * height) as usize * c);
    for row in y..y + height {
        let start = (row * img.width + x) as usize * c;
        pixels.extend_from_slice(&img.pixels[start..start + width as usize * c]);
    }
    Image {
        width,
        height,
        channels: c,
        pixels,
    }
}

fn vmm_lines<'a>(out: &'a Outcome, needle: &'a str) -> Vec<&'a str> {
    out.vmm_output().filter(|l| l.contains(needle)).collect()
}

#[test]
fn weston_imports_the_guest_ram_blob_and_falls_back_to_wl_shm_for_a_bar_blob() {
    let out = Scenario::new("wayland")
        .timeout(Duration::from_secs(2400))
        .l0_root(true)
        .vnc_clients(true)
        .weston_root(true)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;
    println!("result: {r}");
    let weston: Vec<_> = out
        .data
        .iter()
        .filter(|d| d.get("weston").is_some())
        .collect();
    assert_eq!(weston.len(), 2, "one weston per vmm run: {weston:?}");
    for w in &weston {
        println!("compositor: {w}");
        assert!(w.get("weston").unwrap_or("").starts_with("14."), "{w}");
        assert_eq!(w.get("renderer"), Some("gl"), "{w}");
    }

    // No compositor: a start-up error (status 1) that names the socket.
    assert_eq!(r.get("nowl_exit"), Some("1"), "{r}");
    let nowl: Vec<&str> = out
        .log
        .lines()
        .filter(|l| l.starts_with("vmm-nowl| "))
        .collect();
    assert!(
        nowl.iter().any(|l| l.contains("vmm: error: --display")
            && l.contains("cannot connect to the compositor at /tmp/no-such-compositor")),
        "{nowl:?}"
    );

    // Run 1: guest RAM. The compositor imported both buffers of each mode; nothing failed.
    for line in vmm_lines(&out, "wayland: ") {
        println!("vmm: {line}");
    }
    for mode in ["1280x800", "1024x768"] {
        let path = format!("wayland: scanout 0 ({mode} XR24): dma-buf, imported by the compositor");
        assert_eq!(vmm_lines(&out, &path).len(), 1, "{path}");
    }
    assert!(
        vmm_lines(&out, "wl_shm (a copy per frame)")
            .iter()
            .all(|l| l.contains("(256x192")),
        "only the BAR blob takes wl_shm"
    );
    let count = |k: &str| -> u64 { r.parse_field(k).unwrap_or_else(|| panic!("no {k}: {r}")) };
    assert!(count("ram_dmabuf_created") >= 4, "{r}");
    assert_eq!(count("ram_dmabuf_failed"), 0, "{r}");
    assert_eq!(count("ram_client_errors"), 0, "{r}");
    let summaries = vmm_lines(&out, "vmm: wayland: frames");
    assert_eq!(
        summaries.len(),
        2,
        "an exit summary line per run: {summaries:?}"
    );
    assert!(
        summaries[0].contains(" wl_shm=0;") && summaries[0].contains("to wl_shm=0;"),
        "no wl_shm frame, no byte copied into one: {}",
        summaries[0]
    );
    assert!(
        !summaries[0].contains("frames dma-buf=0 "),
        "dma-buf frames: {}",
        summaries[0]
    );
    // Pixel-exact in the compositor's own screenshot, before and after the mode change.
    for (name, w, h) in [("wl-1", 1280, 800), ("wl-2", 1024, 768)] {
        let img = window(&out, name, w, h);
        let bad = first_bad_pixel(&img.pixels, img.channels, w, h, VARIANT_KMS);
        assert_eq!(bad, None, "{name}: first wrong pixel");
        println!("{name}: the {w}x{h} window, every pixel right");
    }
    // The compositor killed: the display ends, the guest does not.
    assert_eq!(r.get("weston_kill_exit"), Some("137"), "{r}");
    assert_eq!(
        vmm_lines(&out, "went away").len(),
        1,
        "the vmm logs the compositor's end once"
    );
    let step3 = out.l2_result("vnc-kms-3").expect("step 3 after the kill");
    assert_eq!(step3.get("flushes"), Some("200"), "{step3}");
    assert_eq!(r.get("vmm_exit"), Some("0"), "{r}");
    assert_eq!(r.get("l2_status"), Some("PASS"), "{r}");

    // Run 2: weston renders with llvmpipe, which maps dma-bufs: the BAR blob's VFIO dma-buf
    // (which cannot be mapped) is not offered to it, wl_shm shows the blob.
    assert_eq!(r.get("bar_vmm_exit"), Some("0"), "{r}");
    assert_eq!(r.get("bar_exports_vfio"), Some("1"), "{r}");
    assert_eq!(count("bar_dmabuf_create"), 0, "{r}");
    assert_eq!(count("bar_client_errors"), 0, "{r}");
    assert!(
        vmm_lines(
            &out,
            "no main device: only dma-bufs that can be mapped are offered"
        )
        .len()
            == 2,
        "the compositor's lack of a GPU is logged at each connect"
    );
    let fallback = vmm_lines(
        &out,
        "wl_shm (a copy per frame): the compositor names no GPU",
    );
    assert_eq!(fallback.len(), 1, "{fallback:?}");
    assert!(fallback[0].contains("(256x192"), "{}", fallback[0]);
    assert!(
        summaries[1].contains("wl_shm=1;") && !summaries[1].contains("to wl_shm=0;"),
        "the BAR blob is a wl_shm frame: {}",
        summaries[1]
    );
    let img = window(&out, "wl-bar", 256, 192);
    let known = identify_image(&img, &GPU_USER_BLOB_IMAGES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(known.variant, VARIANT_BAR_BLOB);
    println!("wl-bar: the 256x192 window, every pixel of the BAR blob right");
    assert_eq!(r.get("weston_stop_exit"), Some("0"), "{r}");
}
