//! Scenario `wayland-smoke` (run.sh `--l0-root`): a real Wayland compositor inside L1 for the
//! vmm's Wayland display, weston 14 from Debian 13 (`resources/rig/weston-root.sh`, run in a
//! chroot by lib.sh's `rig_weston_*`), headless, 1280x800, no GPU:
//! - with the gl renderer (Mesa's llvmpipe) weston offers `zwp_linux_dmabuf_v1` with XRGB8888 and
//!   ARGB8888 LINEAR, and `wl_shm`; its socket is reachable from L1 outside the chroot;
//! - a stock wl_shm client (weston-simple-shm) shows in weston-screenshooter's PNG, which is black
//!   once the client is gone; weston's WAYLAND_DEBUG=server log shows the client's wl_shm traffic;
//! - with the pixman renderer weston offers `wl_shm` but no `zwp_linux_dmabuf_v1`: a Wayland
//!   display test that needs dma-buf import must use the gl renderer;
//! - SIGTERM ends weston cleanly, SIGKILL kills it (exit 137).

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::{decode_png, Outcome, ResultLine, Scenario};

/// The RIG-DATA lines of weston run `run` that name a global, as (name, version).
fn globals(out: &Outcome, run: &str) -> Vec<(String, u32)> {
    out.data
        .iter()
        .filter(|d| d.get("run") == Some(run))
        .filter_map(|d| Some((d.get("global")?.to_string(), d.parse_field("version")?)))
        .collect()
}

/// The modifiers wayland-info listed for dma-buf format `fourcc` in run `run`.
fn dmabuf_modifiers(out: &Outcome, run: &str, fourcc: &str) -> Vec<String> {
    out.data
        .iter()
        .filter(|d| d.get("run") == Some(run) && d.get("dmabuf_format") == Some(fourcc))
        .flat_map(|d| d.get("modifiers").unwrap_or("").split(','))
        .map(str::to_string)
        .collect()
}

/// The RIG-DATA line of run `run` that has key `key`.
fn run_data<'a>(out: &'a Outcome, run: &str, key: &str) -> &'a ResultLine {
    out.data
        .iter()
        .find(|d| d.get("run") == Some(run) && d.get(key).is_some())
        .unwrap_or_else(|| panic!("no RIG-DATA run={run} {key}=...: {}", out.result))
}

/// Screenshot `name` as sent to L0: (pixels that are not black, all pixels); panics unless it is a
/// 1280x800 PNG.
fn non_black(out: &Outcome, name: &str) -> (usize, usize) {
    let f = out
        .files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not sent: {}", out.result));
    let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!((img.width, img.height), (1280, 800), "{name}: size");
    let lit = img
        .pixels
        .chunks(img.channels)
        .filter(|p| p[..3].iter().any(|&c| c != 0))
        .count();
    (lit, (img.width * img.height) as usize)
}

#[test]
fn weston_in_l1_offers_dmabuf_and_shows_a_shm_client() {
    let out = Scenario::new("wayland-smoke")
        .timeout(Duration::from_secs(1200))
        .l0_root(true)
        .weston_root(true)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;
    println!("result: {r}");

    // Weston 14 (Debian 13), started with each renderer.
    let versions: Vec<&ResultLine> = out
        .data
        .iter()
        .filter(|d| d.get("weston").is_some())
        .collect();
    assert_eq!(versions.len(), 2, "one weston line per run: {versions:?}");
    for v in &versions {
        println!("weston: {v}");
        let ver = v.get("weston").unwrap_or("");
        assert!(ver.starts_with("14."), "weston version {ver}: {v}");
    }
    assert_eq!(versions[0].get("renderer"), Some("gl"), "{}", versions[0]);
    assert_eq!(
        versions[1].get("renderer"),
        Some("pixman"),
        "{}",
        versions[1]
    );
    assert_eq!(
        r.get("socket_in_l1"),
        Some("1"),
        "weston's socket seen from L1: {r}"
    );

    // gl renderer (llvmpipe): dma-buf import with XRGB8888/ARGB8888 LINEAR, and wl_shm.
    assert_eq!(r.get("gl_info_exit"), Some("0"), "{r}");
    let gl = globals(&out, "gl");
    println!("gl globals: {gl:?}");
    for name in [
        "wl_compositor",
        "wl_shm",
        "xdg_wm_base",
        "weston_capture_v1",
    ] {
        assert!(gl.iter().any(|(g, _)| g == name), "gl: no {name}: {gl:?}");
    }
    let dmabuf = gl.iter().find(|(g, _)| g == "zwp_linux_dmabuf_v1");
    assert!(
        matches!(dmabuf, Some((_, v)) if *v >= 3),
        "gl: zwp_linux_dmabuf_v1 >= 3 expected: {gl:?}"
    );
    for fourcc in ["XR24", "AR24"] {
        let mods = dmabuf_modifiers(&out, "gl", fourcc);
        println!("gl dma-buf {fourcc}: {mods:?}");
        assert!(
            mods.iter().any(|m| m == "LINEAR"),
            "gl: {fourcc} without LINEAR: {mods:?}"
        );
    }
    let shm = run_data(&out, "gl", "shm_formats");
    for fourcc in ["XR24", "AR24"] {
        assert!(
            shm.get("shm_formats")
                .unwrap_or("")
                .split(',')
                .any(|f| f == fourcc),
            "gl: wl_shm without {fourcc}: {shm}"
        );
    }

    // The wl_shm client, in weston's protocol log and in the screenshot.
    let proto = run_data(&out, "gl", "shm_pools");
    println!("gl protocol counts: {proto}");
    let count = |k: &str| proto.parse_field::<u64>(k).unwrap_or(0);
    assert!(count("shm_pools") >= 1, "{proto}");
    assert!(count("shm_buffers") >= 1, "{proto}");
    assert!(count("commits") >= 10, "{proto}");
    assert_eq!(count("client_errors"), 0, "{proto}");
    assert_eq!(count("dmabuf_params"), 0, "no dma-buf client ran: {proto}");
    assert_eq!(
        r.get("shm_client_alive"),
        Some("1"),
        "simple-shm at the screenshot: {r}"
    );
    assert_eq!(r.get("shot_shm_exit"), Some("0"), "{r}");
    assert_eq!(r.get("shot_empty_exit"), Some("0"), "{r}");
    let (lit, all) = non_black(&out, "wayland-shm.png");
    println!("wayland-shm.png: {lit} of {all} pixels not black");
    // weston-simple-shm's window is 250x250 with its border.
    assert!(
        lit >= 20_000,
        "the client's window should show: {lit} lit pixels"
    );
    assert!(
        lit < all / 2,
        "the background should be black: {lit} lit pixels"
    );
    let (lit, _) = non_black(&out, "wayland-empty.png");
    println!("wayland-empty.png: {lit} pixels not black");
    assert_eq!(lit, 0, "nothing should show once the client is gone");
    assert_eq!(
        r.get("gl_stop_exit"),
        Some("0"),
        "weston after SIGTERM: {r}"
    );

    // pixman renderer: wl_shm, no dma-buf import (weston 14's pixman renderer has none).
    assert_eq!(r.get("pixman_info_exit"), Some("0"), "{r}");
    let pixman = globals(&out, "pixman");
    println!("pixman globals: {pixman:?}");
    assert!(
        pixman.iter().any(|(g, _)| g == "wl_shm"),
        "pixman: no wl_shm: {pixman:?}"
    );
    assert!(
        !pixman.iter().any(|(g, _)| g == "zwp_linux_dmabuf_v1"),
        "pixman offers zwp_linux_dmabuf_v1 now: use it for dma-buf tests? {pixman:?}"
    );
    assert_eq!(
        r.get("pixman_kill_exit"),
        Some("137"),
        "weston after SIGKILL: {r}"
    );
    assert!(out.file_errors.is_empty(), "{:?}", out.file_errors);
}
