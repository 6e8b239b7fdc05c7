//! Scenario `gpu-hostile`: a hostile L2 driver (/bin/gpu-hostile) attacks the vmm's virtio-gpu
//! (ivshmem passed through, capture display) in five phases - vma-bomb (blobs of 15000 one-page
//! BAR2 entries that cannot merge), fd-bomb (1100 one-page blobs), log-flood (10000 unrefs of
//! missing resources), capture-flood (2000 flushes of a scanout), decode-off (flushes of a BAR2
//! scanout while the BAR's Memory Space bit is off) - then shows a fresh image in BAR2.
//!
//! The scenario only gathers facts. The contract checked here (all of it, then one failure listing
//! every broken rule):
//! - the vmm exits 0 (the guest's `reboot -f`) after L2 reached its init, without a KVM error
//!   ([`vmm_run_problems`], the checks of `Outcome::assert_vmm_ran_clean`);
//! - L2's gpu-hostile reports PASS and no L2 program FAIL ([`l2_problems`], the checks of
//!   `Outcome::assert_l2_passed`);
//! - every phase reports, every command of it was answered (none lost or left unsent), its
//!   ordinary commands answered OK, each resource it created unreffed with OK_NODATA, and
//!   GET_DISPLAY_INFO answers OK_DISPLAY_INFO afterwards (attack commands may get errors: their
//!   counts are printed);
//! - the vmm's mappings stay below the first sample + 1000 and its open fds below the first
//!   sample + 600 (sampled every 0.5 s in L1);
//! - fewer than 200 vmm log lines contain `guest error`;
//! - the capture dir holds at most 4 PNG files at the end (`keep=4`; the flood writes more);
//! - the newest captured frame is the fresh image, pixel for pixel (and L0 finds the image in the
//!   ivshmem file at the ranges L2 reported).

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{
    first_bad_blob_word, first_bad_pixel, parse_entries, VARIANT_HOSTILE_FRESH,
};
use rig_tests::{decode_png, l2_problems, vmm_run_problems, Outcome, ResultLine, Scenario};

const L2: &str = "gpu-hostile";
const WIDTH: u32 = 256;
const HEIGHT: u32 = 192;
/// Phases in order, with the number of attack commands each sends (None: as many as it takes).
const PHASES: [(&str, Option<u64>); 5] = [
    ("vma-bomb", None),
    ("fd-bomb", Some(1100)),
    ("log-flood", Some(10000)),
    ("capture-flood", Some(2000)),
    ("decode-off", Some(4)),
];
const MAX_EXTRA_MAPS: u64 = 1000;
const MAX_EXTRA_FDS: u64 = 600;
const MAX_GUEST_ERROR_LINES: u64 = 200;
const MAX_PNGS: u64 = 4;
const OK_NODATA: &str = "OK_NODATA";
const PCI_COMMAND_MEMORY: u16 = 0x2;

/// What is wrong with one phase's data line (empty: nothing).
fn phase_problems(p: &ResultLine, want_sent: Option<u64>) -> Vec<String> {
    let mut bad = Vec::new();
    let num = |k: &str| p.parse_field::<u64>(k);
    let sent = num("sent");
    match (sent, want_sent) {
        (Some(s), Some(w)) if s != w => bad.push(format!("sent {s} attack commands, not {w}")),
        (Some(0), None) => bad.push("sent no attack command".into()),
        (None, _) => bad.push("no sent=".into()),
        _ => {}
    }
    if num("answered") != sent {
        bad.push(format!("{:?} of {sent:?} answered", num("answered")));
    }
    for k in ["lost", "unsent", "setup_bad", "unref_bad"] {
        if num(k) != Some(0) {
            bad.push(format!("{k}={:?}", p.get(k)));
        }
    }
    if num("unref_ok") != num("unref_sent") {
        bad.push(format!(
            "{:?} of {:?} unrefs answered OK_NODATA ({:?})",
            p.get("unref_ok"),
            p.get("unref_sent"),
            p.get("unref_bad_resp")
        ));
    }
    if p.get("display_info") != Some("OK_DISPLAY_INFO") {
        bad.push(format!(
            "GET_DISPLAY_INFO afterwards: {:?}",
            p.get("display_info")
        ));
    }
    bad
}

/// The decode-off phase really turned the BAR's decoding off and on again.
fn decode_toggle_problems(p: &ResultLine) -> Vec<String> {
    let reg = |k: &str| {
        p.get(k)
            .and_then(|v| u16::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    };
    let mut bad = Vec::new();
    match reg("command_off") {
        Some(c) if c & PCI_COMMAND_MEMORY == 0 => {}
        c => bad.push(format!(
            "command register with Memory Space off read {c:x?}"
        )),
    }
    match reg("command_on") {
        Some(c) if c & PCI_COMMAND_MEMORY != 0 => {}
        c => bad.push(format!("command register with Memory Space on read {c:x?}")),
    }
    bad
}

/// The newest frame and the ivshmem file against the fresh image.
fn fresh_image_problems(out: &Outcome) -> Vec<String> {
    let mut bad = Vec::new();
    // A missing result line is one of `l2_problems`.
    if let Some(r) = out.l2_result(L2) {
        println!("{r}");
        if r.get("fresh") != Some("OK_NODATA,OK_NODATA,OK_NODATA") {
            bad.push(format!(
                "fresh image: create, scanout, flush answered {:?}",
                r.get("fresh")
            ));
        }
    }
    let image = u64::from(WIDTH) * u64::from(HEIGHT) * 4;
    if let Some(f) = out.l2_data(L2).find(|d| d.get("blob") == Some("fresh")) {
        match parse_entries(f.get("bar_entries").unwrap_or_default()) {
            Some(ents) if ents.len() >= 4 => {
                if let Some(b) = first_bad_blob_word(
                    &out.shm_after,
                    &ents,
                    0,
                    VARIANT_HOSTILE_FRESH,
                    WIDTH,
                    image,
                ) {
                    bad.push(format!(
                        "fresh image in the ivshmem file: blob offset, word {b:x?}"
                    ));
                }
            }
            _ => bad.push(format!("fresh image entries: {f}")),
        }
    }
    if !out.file_errors.is_empty() {
        bad.push(format!("files from the console: {:?}", out.file_errors));
    }
    let newest = out.result.get("newest_frame").unwrap_or("none");
    let Some(frame) = out.files.iter().find(|f| f.name == newest) else {
        bad.push(format!("the newest frame ({newest}) did not reach L0"));
        return bad;
    };
    match decode_png(&frame.bytes) {
        Err(e) => bad.push(format!("{newest}: {e}")),
        Ok(img) if (img.width, img.height) != (WIDTH, HEIGHT) => bad.push(format!(
            "{newest} is {}x{}, the fresh image {WIDTH}x{HEIGHT}",
            img.width, img.height
        )),
        Ok(img) => {
            let wrong = first_bad_pixel(
                &img.pixels,
                img.channels,
                WIDTH,
                HEIGHT,
                VARIANT_HOSTILE_FRESH,
            );
            if let Some(xy) = wrong {
                bad.push(format!(
                    "{newest} ({}) is not the fresh image: first wrong pixel {xy:?}",
                    frame.path.display()
                ));
            }
        }
    }
    bad
}

#[test]
fn hostile_guest_neither_crashes_nor_exhausts_the_vmm() {
    let out = Scenario::new("gpu-hostile")
        .timeout(Duration::from_secs(480))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for d in out.data.iter().filter(|d| d.get("l2_line").is_none()) {
        println!("{d}");
    }
    let r = &out.result;
    println!("{r}");
    let num = |k: &str| r.parse_field::<u64>(k);
    let mut broken = Vec::new();
    if !r.is_pass() {
        broken.push(format!(
            "the scenario is missing data: reason {:?}",
            r.reason()
        ));
    }

    broken.extend(vmm_run_problems(r));
    broken.extend(l2_problems(&out.l2, L2));

    for (name, want_sent) in PHASES {
        let Some(p) = out.l2_data(L2).find(|d| d.get("phase") == Some(name)) else {
            broken.push(format!("phase {name}: no data line from L2"));
            continue;
        };
        println!("{p}");
        let mut bad = phase_problems(p, want_sent);
        if name == "decode-off" {
            bad.extend(decode_toggle_problems(p));
        }
        if p.get("setup")
            .is_some_and(|s| s != "none" && s.split(',').any(|t| t != OK_NODATA))
        {
            bad.push(format!("setup answered {:?}", p.get("setup")));
        }
        for b in bad {
            broken.push(format!("phase {name}: {b}"));
        }
    }

    match (num("maps_base"), num("maps_max")) {
        (Some(base), Some(max)) if num("samples").unwrap_or(0) > 0 => {
            if max >= base + MAX_EXTRA_MAPS {
                broken.push(format!(
                    "vmm mappings reached {max}, first sample {base} (limit +{MAX_EXTRA_MAPS})"
                ));
            }
        }
        m => broken.push(format!("no mapping samples: {m:?}")),
    }
    match (num("fds_base"), num("fds_max")) {
        (Some(base), Some(max)) if num("samples").unwrap_or(0) > 0 => {
            if max >= base + MAX_EXTRA_FDS {
                broken.push(format!(
                    "vmm open fds reached {max}, first sample {base} (limit +{MAX_EXTRA_FDS})"
                ));
            }
        }
        f => broken.push(format!("no fd samples: {f:?}")),
    }

    match num("guest_error_lines") {
        Some(n) if n < MAX_GUEST_ERROR_LINES => {}
        n => broken.push(format!(
            "{n:?} vmm log lines with `guest error` (of {:?}), limit {MAX_GUEST_ERROR_LINES}",
            r.get("vmm_log_lines")
        )),
    }

    match num("pngs") {
        Some(n) if n <= MAX_PNGS => {}
        n => broken.push(format!(
            "{n:?} PNG files in the capture dir, at most {MAX_PNGS}"
        )),
    }
    // The newest file's counter says how many were written: more than were kept, so the bound
    // is what limited the directory (not a flood too short to fill it).
    let written = r
        .get("newest_frame")
        .and_then(|f| f.strip_prefix("frame-0-"))
        .and_then(|f| f.strip_suffix(".png"))
        .and_then(|n| n.parse::<u64>().ok())
        .map(|last| last + 1);
    match written {
        Some(n) if n > MAX_PNGS => {}
        n => broken.push(format!(
            "{n:?} frames written: the flood must write more than the {MAX_PNGS} kept"
        )),
    }

    broken.extend(fresh_image_problems(&out));

    assert!(
        broken.is_empty(),
        "the vmm broke {} rule(s) of the hostile-guest contract:\n  {}\nlog: {}",
        broken.len(),
        broken.join("\n  "),
        out.log_path.display()
    );
}
