//! "Guest RAM blob" in the rig (scenario `gpu-ram-blob`): L2 loads the stock virtio-gpu
//! module and /bin/gpu-kms-blob shows a pattern-painted blob in guest RAM with KMS; the vmm exports it
//! through udmabuf (fdinfo `exp_name: udmabuf`) and its capture display writes PNGs, which L1 sends
//! back over the console. The scenario only gathers facts; checked here: the vmm exited 0 after L2
//! booted, without a KVM error; gpu-kms-blob passed without device errors; a udmabuf of the blob's
//! size was logged; frames were captured and the last one matches the pattern, every pixel.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{first_bad_pixel, VARIANT_KMS};
use rig_tests::{decode_png, Scenario};

#[test]
fn guest_ram_blob_is_exported_through_udmabuf_and_captured() {
    let out = Scenario::new("gpu-ram-blob")
        .timeout(Duration::from_secs(480))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for e in out.dmabuf_exports() {
        println!("vmm: {}", e.line);
    }
    out.assert_passed();
    out.assert_vmm_ran_clean();

    let l2 = out.assert_l2_passed("gpu-kms-blob");
    assert_eq!(l2.get("device_errors"), Some("0"), "{l2}");
    let width: u32 = l2.parse_field("width").expect("width");
    let height: u32 = l2.parse_field("height").expect("height");
    let blob_size: u64 = l2.parse_field("blob_size").expect("blob_size");

    // The vmm exported the blob through udmabuf, exactly its size.
    let udmabufs: Vec<_> = out
        .dmabuf_exports()
        .into_iter()
        .filter(|e| e.exp_name.as_deref() == Some("udmabuf"))
        .collect();
    assert!(
        !udmabufs.is_empty(),
        "no udmabuf fdinfo line in the vmm log"
    );
    assert!(
        udmabufs.iter().any(|e| e.size == Some(blob_size)),
        "no udmabuf of {blob_size} bytes: {udmabufs:?}"
    );

    // The captured frames came back intact; the last one shows the pattern, pixel for pixel.
    let captured: u32 = out
        .result
        .parse_field("frames")
        .unwrap_or_else(|| panic!("no frames= in {}", out.result));
    assert!(captured >= 1, "the vmm captured no frame: {}", out.result);
    assert!(out.file_errors.is_empty(), "{:?}", out.file_errors);
    let frames: Vec<_> = out.files_named("frame-").collect();
    assert!(!frames.is_empty(), "no frames received: {}", out.result);
    let mut last_ok = false;
    for f in &frames {
        let img = decode_png(&f.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let bad = first_bad_pixel(&img.pixels, img.channels, width, height, VARIANT_KMS);
        let fits = (img.width, img.height) == (width, height);
        println!(
            "{}: {}x{}x{} first bad pixel {bad:?} ({})",
            f.name,
            img.width,
            img.height,
            img.channels,
            f.path.display()
        );
        last_ok = fits && bad.is_none();
    }
    assert!(
        last_ok,
        "the last frame does not show the {width}x{height} pattern"
    );
}
