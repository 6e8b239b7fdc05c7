//! The stock guest path in the rig (scenario `stock-p2p`, L2 on build-kernel.sh's kernel): L2's
//! vfio-pci (noiommu mode) exports out-of-order BAR2 pages of the passed-through ivshmem as ONE
//! dma-buf per 1280x800 framebuffer, and L2's stock virtio-gpu DRM driver imports it (PRIME) and
//! sends the pages' bus addresses as a guest blob, which the vmm exports as a host VFIO dma-buf.
//! L2 then flips between two such framebuffers, revokes them (closes its VFIO device fd) and
//! imports the front one again.
//!
//! Run twice: with L1 on a Zen CPU (AMD family 0x17, which the guest's p2pdma code lets devices
//! use through the host bridge) and on a family 0x16 CPU, where the guest refuses devices that
//! do not share an upstream bridge. The scenario reports facts; here they are judged:
//! - Zen, first vmm run (revoke by closing the VFIO device fd): the vmm ran clean; exactly one `vfio_pci_core` dma-buf of the framebuffer's size per
//!   import (front, back, again: 3, none per flip), no CPU path; every PNG is one of the images,
//!   pixel for pixel, the last one the image imported again; L0 finds the pixels in the ivshmem
//!   file; the vmm's fds drop at the revoke and come back with the new import; its mappings do not
//!   grow with the flips.
//! - Zen, second vmm run (revoke by Memory Space off through VFIO, then on): the same import is
//!   shown again; the vmm's dma-bufs go at the revoke and the front one comes back (a new export
//!   of the same resource), the last PNG is the image painted again.
//! - non-Zen: exporter and importer sit below the vmm's PCI-to-PCI bridge in L2 (on this CPU the
//!   guest refuses devices that meet only at the host bridge), and everything as on Zen.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{
    first_bad_blob_word, p2p_fb_pages, P2P_FB_BASE, VARIANT_P2P_AGAIN, VARIANT_P2P_BACK,
    VARIANT_P2P_FRONT,
};
use rig_tests::{
    decode_png, identify_image, parse_export, DmabufExport, KnownImage, L1Cpu, L2Kernel, Outcome,
    ResultLine, Scenario,
};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;
const FB_BYTES: u64 = WIDTH as u64 * HEIGHT as u64 * 4;
const PROGRAM: &str = "stock-p2p";
/// L2's program in the second vmm run (revoke by Memory Space off, then on).
const PROGRAM_DECODE: &str = "stock-p2p-decode";
/// The p2pdma refusal of drivers/pci/p2pdma.c.
const P2PDMA_REFUSAL: &str = "do_not_share_an_upstream_bridge_or_whitelisted_host_bridge";

const IMAGES: [KnownImage; 3] = [
    KnownImage {
        name: "front",
        about: "1000 out-of-order BAR2 pages, L2's VFIO dma-buf imported by virtio-gpu",
        variant: VARIANT_P2P_FRONT,
        width: WIDTH,
        height: HEIGHT,
    },
    KnownImage {
        name: "back",
        about: "the second framebuffer of the flips",
        variant: VARIANT_P2P_BACK,
        width: WIDTH,
        height: HEIGHT,
    },
    KnownImage {
        name: "again",
        about: "the front pages painted again and imported after the revoke",
        variant: VARIANT_P2P_AGAIN,
        width: WIDTH,
        height: HEIGHT,
    },
];

fn run(cpu: L1Cpu) -> Outcome {
    Scenario::new("stock-p2p")
        .timeout(Duration::from_secs(600))
        .l2_kernel(L2Kernel::Rig)
        .l1_cpu(cpu)
        .run()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// L2's data line of `stock-p2p` that has `key`, the last one if several.
fn l2_data<'a>(out: &'a Outcome, key: &str) -> Option<&'a ResultLine> {
    out.l2_data(PROGRAM).filter(|d| d.get(key).is_some()).last()
}

/// The dma-bufs the vmm logged, per vmm run (split at each run's `RIG-VMM-EXIT` line).
fn exports_per_run(out: &Outcome) -> Vec<Vec<DmabufExport>> {
    let mut runs = vec![Vec::new()];
    for l in out.vmm_output() {
        if l.contains("RIG-VMM-EXIT") {
            runs.push(Vec::new());
        } else if let Some(e) = parse_export(l) {
            runs.last_mut().expect("one run").push(e);
        }
    }
    runs
}

/// The scenario's per-phase sample line of `phase` in vmm run `run` (`close` or `decode`):
/// (samples, maps_min, maps_max, fds_min, fds_max).
fn phase(out: &Outcome, run: &str, name: &str) -> (u32, u32, u32, u32, u32) {
    let d = out
        .data
        .iter()
        .find(|d| d.get("run") == Some(run) && d.get("phase_samples") == Some(name))
        .unwrap_or_else(|| panic!("no run={run} phase_samples={name} line"));
    let f = |k: &str| {
        d.parse_field::<u32>(k)
            .unwrap_or_else(|| panic!("{k} in {d}"))
    };
    (
        f("samples"),
        f("maps_min"),
        f("maps_max"),
        f("fds_min"),
        f("fds_max"),
    )
}

/// Prints the facts both runs share: L2's CPU and PCI topology.
fn print_facts(out: &Outcome) {
    if let Some(d) = l2_data(out, "cpu_family") {
        println!("L2 CPU: {d}");
    }
    for d in out.l2_data(PROGRAM).filter(|d| d.get("pci").is_some()) {
        println!("L2 PCI: {d}");
    }
    for l in out.vmm_output().filter(|l| l.contains("kernel: ")) {
        println!("{l}");
    }
    for d in out.data.iter().filter(|d| d.get("phase_samples").is_some()) {
        println!("vmm samples: {d}");
    }
}

/// Everything the working path must show.
fn assert_shown(out: &Outcome) {
    out.assert_vmm_ran_clean();
    let l2 = out.assert_l2_passed(PROGRAM);
    assert_eq!(l2.get("import"), Some("ok"), "{l2}");
    assert_eq!(l2.parse_field::<u64>("fb_bytes"), Some(FB_BYTES), "{l2}");
    let flips: u32 = l2.parse_field("flips").expect("flips");
    assert!(flips >= 300, "{l2}");
    assert_eq!(l2.get("new_handle_after_revoke"), Some("true"), "{l2}");
    println!(
        "flips: {flips} at {} per second in L2",
        l2.get("flips_per_s").unwrap_or("?")
    );

    // L2's dma-bufs: one per framebuffer, vfio_pci_core, the framebuffer's size.
    let l2_exports: Vec<_> = out
        .l2_data(PROGRAM)
        .filter(|d| d.get("export") == Some("ok"))
        .collect();
    assert_eq!(l2_exports.len(), 3, "{l2_exports:?}");
    for d in &l2_exports {
        assert_eq!(d.get("exp_name"), Some("vfio_pci_core"), "{d}");
        assert_eq!(d.parse_field::<u64>("dmabuf_size"), Some(FB_BYTES), "{d}");
        assert_eq!(d.parse_field::<u32>("ranges"), Some(1000), "{d}");
    }

    // The vmm: one host dma-buf per import (front, back, again), none per flip, no CPU path.
    let exports = exports_per_run(out).swap_remove(0);
    for e in &exports {
        println!("vmm: {}", e.line);
    }
    assert_eq!(exports.len(), 3, "the vmm's dma-bufs: {exports:?}");
    for e in &exports {
        assert_eq!(e.exp_name.as_deref(), Some("vfio_pci_core"), "{}", e.line);
        assert_eq!(e.size, Some(FB_BYTES), "{}", e.line);
    }
    assert_eq!(
        out.result.parse_field::<u32>("cpu_path_lines"),
        Some(0),
        "{}",
        out.result
    );

    // Fds: two dma-bufs go at the revoke, one comes back with the new import. Mappings: flat
    // while flipping.
    let shown = phase(out, "close", "shown-front");
    let flipping = phase(out, "close", "flips");
    let flipped = phase(out, "close", "flipped");
    let revoked = phase(out, "close", "revoked");
    let again = phase(out, "close", "shown-again");
    println!(
        "vmm fds: {} shown, {} after the flips, {} revoked, {} shown again; mappings {}..{} \
         while flipping ({} before)",
        shown.4, flipped.4, revoked.4, again.4, flipping.1, flipping.2, shown.2
    );
    assert!(shown.0 > 0 && flipped.0 > 0 && revoked.0 > 0 && again.0 > 0);
    assert_eq!(
        revoked.4 + 2,
        flipped.3,
        "the revoke must release both dma-bufs"
    );
    assert_eq!(revoked.3, revoked.4, "fds moved while revoked");
    assert_eq!(again.3, revoked.4 + 1, "the new import holds one dma-buf");
    if flipping.0 > 0 {
        assert!(
            flipping.2 <= shown.2 + 4,
            "mappings grew while flipping: {flipping:?} vs {shown:?}"
        );
        // At most one more: the capture display's PNG file being written.
        assert!(
            flipping.4 <= shown.4 + 1 && flipping.3 >= shown.3,
            "fds changed while flipping: {flipping:?} vs {shown:?}"
        );
    }
    // KVM exits (L1's debugfs, all of L2's exits) from the last sample before the flips to the
    // first after; "net" takes off the idle rate of the hold before, over the whole window.
    if let Some(d) = out
        .data
        .iter()
        .find(|d| d.get("run") == Some("close") && d.get("window_exits").is_some())
    {
        let exits: f64 = d.parse_field("window_exits").unwrap_or(0.0);
        let secs: f64 = d.parse_field("window_s").unwrap_or(0.0);
        let idle: f64 = d.parse_field("idle_exits_per_s").unwrap_or(0.0);
        println!(
            "KVM exits around the flips: {exits} in {secs:.2} s = {:.1} per flip; net of the idle \
             rate ({idle}/s): {:.1} per flip",
            exits / f64::from(flips),
            (exits - idle * secs).max(0.0) / f64::from(flips)
        );
    }

    // The frames: each is one of the images, pixel for pixel; the last is the new import.
    assert!(out.file_errors.is_empty(), "{:?}", out.file_errors);
    let mut shown_images = Vec::new();
    for f in out.files_named("frame-close-") {
        let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let which = identify_image(&img, &IMAGES)
            .unwrap_or_else(|why| panic!("{} ({}): {why}", f.name, f.path.display()));
        println!("{}: {}", f.name, which.name);
        shown_images.push(which.name);
    }
    // The capture keeps the last 12 PNGs of the run, so which of the two flipped framebuffers
    // the kept ones show depends on where the captures fell; one of them must be there.
    assert!(
        shown_images.iter().any(|n| *n == "front" || *n == "back"),
        "{shown_images:?}"
    );
    assert_eq!(shown_images.last(), Some(&"again"), "{shown_images:?}");

    // L0: the pixels in the ivshmem file, page by page in framebuffer order.
    assert_eq!(
        first_bad_blob_word(
            &out.shm_after,
            &p2p_fb_pages(P2P_FB_BASE[0], FB_BYTES),
            0,
            VARIANT_P2P_AGAIN,
            WIDTH,
            FB_BYTES
        ),
        None,
        "the front framebuffer (painted again) in the ivshmem file"
    );
    assert_eq!(
        first_bad_blob_word(
            &out.shm_after,
            &p2p_fb_pages(P2P_FB_BASE[1], FB_BYTES),
            0,
            VARIANT_P2P_BACK,
            WIDTH,
            FB_BYTES
        ),
        None,
        "the back framebuffer in the ivshmem file"
    );
}

/// The second vmm run: Memory Space off through L2's VFIO revokes, on again un-revokes, and the
/// next commit maps the same import again (RESOURCE_ATTACH_BACKING: a new host dma-buf).
fn assert_decode_run(out: &Outcome) {
    let r = &out.result;
    for (k, want) in [
        ("decode_vmm_exit", "0"),
        ("decode_marker", "1"),
        ("decode_kvm_error", "0"),
    ] {
        assert_eq!(r.get(k), Some(want), "{k} in {r}");
    }
    let l2 = out
        .l2_result(PROGRAM_DECODE)
        .unwrap_or_else(|| panic!("no result from L2's {PROGRAM_DECODE}"));
    assert!(l2.is_pass(), "{l2}");
    assert_eq!(l2.get("revoke"), Some("decode"), "{l2}");
    assert_eq!(l2.parse_field::<u32>("imports"), Some(2), "{l2}");
    for d in out.l2_data(PROGRAM_DECODE) {
        if d.get("command_before").is_some()
            || d.get("command_restored").is_some()
            || d.get("dirtyfb_after_revoke").is_some()
        {
            println!("decode run: {d}");
        }
    }
    let exports = exports_per_run(out).swap_remove(1);
    for e in &exports {
        println!("vmm (decode run): {}", e.line);
    }
    assert_eq!(exports.len(), 3, "front, back, front again: {exports:?}");
    for e in &exports {
        assert_eq!(e.exp_name.as_deref(), Some("vfio_pci_core"), "{}", e.line);
        assert_eq!(e.size, Some(FB_BYTES), "{}", e.line);
    }
    assert_eq!(
        exports[2].blob, exports[0].blob,
        "the same resource re-attached: {exports:?}"
    );
    assert_eq!(
        r.parse_field::<u32>("decode_cpu_path_lines"),
        Some(0),
        "{r}"
    );
    let flipped = phase(out, "decode", "flipped");
    let revoked = phase(out, "decode", "revoked");
    let again = phase(out, "decode", "shown-again");
    println!(
        "vmm fds (decode run): {} before, {} revoked, {} shown again",
        flipped.3, revoked.4, again.3
    );
    assert_eq!(
        revoked.4 + 2,
        flipped.3,
        "the revoke must release both dma-bufs"
    );
    assert_eq!(
        again.3,
        revoked.4 + 1,
        "the re-attached front holds one dma-buf"
    );
    let mut shown_images = Vec::new();
    for f in out.files_named("frame-decode-") {
        let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let which = identify_image(&img, &IMAGES)
            .unwrap_or_else(|why| panic!("{} ({}): {why}", f.name, f.path.display()));
        println!("{}: {}", f.name, which.name);
        shown_images.push(which.name);
    }
    assert_eq!(shown_images.last(), Some(&"again"), "{shown_images:?}");
}

#[test]
fn stock_driver_shows_bar_pages_on_zen() {
    let out = run(L1Cpu::Zen);
    out.assert_passed();
    print_facts(&out);
    let cpu = l2_data(&out, "cpu_family").expect("L2's CPU facts");
    assert_eq!(cpu.get("cpu_family_hex"), Some("0x17"), "{cpu}");
    assert_shown(&out);
    assert_decode_run(&out);
}

/// The PCI-to-PCI bridge that L2's ivshmem (the exporter) and virtio-gpu (the importer) both sit
/// directly below, from L2's sysfs paths (`pci0000:00/0000:00:01.0/0000:01:00.0`): its data line.
fn common_bridge(out: &Outcome) -> Option<&ResultLine> {
    let pci: Vec<&ResultLine> = out
        .l2_data(PROGRAM)
        .filter(|d| d.get("pci").is_some())
        .collect();
    let parent = |ids: &str| {
        let path = pci
            .iter()
            .find(|d| d.get("ids") == Some(ids))?
            .get("path")?;
        path.rsplit_once('/').map(|(up, _)| up.to_owned())
    };
    let (exporter, importer) = (parent("1af4:1110")?, parent("1af4:1050")?);
    if exporter != importer {
        return None;
    }
    pci.into_iter()
        .find(|d| d.get("path") == Some(exporter.as_str()))
}

/// On a CPU whose vendor and family the guest's p2pdma code does not trust (AMD family 0x16), the
/// import must pass through the topology: exporter and importer below one PCI-to-PCI bridge (the
/// vmm's, 1b36:0001, class 060400), and then everything as on Zen.
#[test]
fn stock_driver_on_a_cpu_that_is_not_zen() {
    let out = run(L1Cpu::NonZen);
    out.assert_passed();
    print_facts(&out);
    let cpu = l2_data(&out, "cpu_family").expect("L2's CPU facts");
    assert_eq!(cpu.get("cpu_family_hex"), Some("0x16"), "{cpu}");
    let bridge = common_bridge(&out).expect("ivshmem and virtio-gpu below one bridge in L2");
    println!("exporter and importer below: {bridge}");
    assert_eq!(bridge.get("class"), Some("060400"), "{bridge}");
    assert_eq!(bridge.get("ids"), Some("1b36:0001"), "{bridge}");
    if let Some(line) = l2_data(&out, "kernel_p2pdma").and_then(|d| d.get("kernel_p2pdma")) {
        assert!(
            !line.contains(P2PDMA_REFUSAL),
            "the guest refused peer-to-peer DMA: {line}"
        );
    }
    assert_shown(&out);
    assert_decode_run(&out);
}
