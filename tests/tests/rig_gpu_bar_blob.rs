//! "BAR blob" in the rig (scenario `gpu-bar-blob`): ivshmem is passed
//! through to L2, whose user-space virtio-gpu driver (/bin/gpu-user-blob) paints blob 1 into six
//! out-of-order, non-contiguous ranges of BAR2 and blob 2 into guest RAM + BAR2, and shows each.
//! The scenario only gathers facts; checked here: the vmm exited 0 after L2 booted, without a KVM
//! error; L2's driver passed; the vmm exported ONE VFIO dma-buf (`exp_name: vfio_pci_core`, size =
//! the blob) and showed blob 2 through the CPU path; frames were captured, and the PNGs show blob
//! 1's pattern in entry order and then blob 2's, pixel for pixel; and L0 finds both patterns in the
//! ivshmem backing file.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{
    bar_blob_entries, first_bad_blob_word, parse_entries, VARIANT_BAR_BLOB, VARIANT_MIXED_BLOB,
};
use rig_tests::{decode_png, identify_image, Scenario, GPU_USER_BLOB_IMAGES};

const WIDTH: u32 = 256;
const HEIGHT: u32 = 192;
const BLOB_SIZE: u64 = 196_608;

#[test]
fn bar_blob_is_one_vfio_dmabuf_and_displays_in_entry_order() {
    let out = Scenario::new("gpu-bar-blob")
        .timeout(Duration::from_secs(480))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for e in out.dmabuf_exports() {
        println!("vmm: {}", e.line);
    }
    out.assert_passed();
    out.assert_vmm_ran_clean();

    // L2's driver: every command answered OK.
    let l2 = out.assert_l2_passed("gpu-user-blob");
    assert_eq!(l2.parse_field::<u64>("blob_size"), Some(BLOB_SIZE), "{l2}");
    assert_eq!(l2.parse_field::<u32>("width"), Some(WIDTH), "{l2}");
    assert_eq!(l2.parse_field::<u32>("height"), Some(HEIGHT), "{l2}");

    // Blob 1's entries: >= 4 non-contiguous, out-of-order ranges of BAR2.
    let blob = |id: &str| {
        out.l2_data("gpu-user-blob")
            .find(|d| d.get("blob") == Some(id))
            .unwrap_or_else(|| panic!("no data line of blob {id}"))
    };
    let b1 = blob("1");
    let entries = parse_entries(b1.get("bar_entries").unwrap_or_default())
        .unwrap_or_else(|| panic!("bar_entries of {b1}"));
    assert_eq!(
        Some(entries.clone()),
        bar_blob_entries(0x10_0000, BLOB_SIZE, 6, 4096)
    );
    assert!(entries.len() >= 4);
    for w in entries.windows(2) {
        assert!(
            w[1].0 + w[1].1 < w[0].0,
            "entries must be out of order with holes: {entries:x?}"
        );
    }

    // ONE VFIO dma-buf, exactly the blob's size.
    let exports = out.dmabuf_exports();
    let vfio: Vec<_> = exports
        .iter()
        .filter(|e| e.exp_name.as_deref() == Some("vfio_pci_core"))
        .collect();
    assert_eq!(vfio.len(), 1, "VFIO dma-bufs: {exports:?}");
    assert_eq!(vfio[0].size, Some(BLOB_SIZE), "{}", vfio[0].line);
    assert_eq!(vfio[0].blob, Some(1), "{}", vfio[0].line);
    // Blob 2 (guest RAM + BAR2) took the CPU path: no export of it.
    assert!(
        out.vmm_output()
            .any(|l| l.contains("blob 2 uses the CPU path")),
        "no CPU-path line for blob 2"
    );
    assert!(
        exports.iter().all(|e| e.blob != Some(2)),
        "blob 2 was exported: {exports:?}"
    );

    // L0: the patterns are in the ivshmem backing file, blob 1 in entry order.
    let image = u64::from(WIDTH) * u64::from(HEIGHT) * 4;
    assert_eq!(
        first_bad_blob_word(&out.shm_after, &entries, 0, VARIANT_BAR_BLOB, WIDTH, image),
        None,
        "blob 1's pattern in the ivshmem file (blob offset, word found)"
    );
    let b2 = blob("2");
    let bar2 = parse_entries(b2.get("bar_entry").unwrap_or_default())
        .unwrap_or_else(|| panic!("bar_entry of {b2}"));
    let ram_bytes: u64 = b2.parse_field("ram_bytes").expect("ram_bytes");
    assert_eq!(
        first_bad_blob_word(
            &out.shm_after,
            &bar2,
            ram_bytes,
            VARIANT_MIXED_BLOB,
            WIDTH,
            image
        ),
        None,
        "blob 2's BAR part in the ivshmem file"
    );

    // The frames: blob 1's pattern, then blob 2's, every pixel.
    let frames: u32 = out
        .result
        .parse_field("frames")
        .unwrap_or_else(|| panic!("no frames= in {}", out.result));
    assert!(frames >= 1, "the vmm captured no frame: {}", out.result);
    assert!(out.file_errors.is_empty(), "{:?}", out.file_errors);
    assert!(
        out.files_named("frame-").next().is_some(),
        "no frame reached L0: {}",
        out.result
    );
    assert_eq!(
        GPU_USER_BLOB_IMAGES.map(|k| (k.variant, k.width, k.height)),
        [
            (VARIANT_BAR_BLOB, WIDTH, HEIGHT),
            (VARIANT_MIXED_BLOB, WIDTH, HEIGHT)
        ]
    );
    let mut shown = Vec::new();
    for f in out.files_named("frame-") {
        let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let which = identify_image(&img, &GPU_USER_BLOB_IMAGES);
        println!(
            "{}: {}x{} shows {} ({})",
            f.name,
            img.width,
            img.height,
            which
                .as_ref()
                .map_or_else(|why| format!("no blob: {why}"), |k| k.name.to_string()),
            f.path.display()
        );
        shown.extend(which.ok().map(|k| k.variant));
    }
    let first1 = shown.iter().position(|&v| v == VARIANT_BAR_BLOB);
    let last2 = shown.iter().rposition(|&v| v == VARIANT_MIXED_BLOB);
    assert!(first1.is_some(), "no frame shows blob 1: {shown:?}");
    assert!(last2.is_some(), "no frame shows blob 2: {shown:?}");
    assert!(first1 < last2, "blob 2 shown before blob 1: {shown:?}");
}
