//! vfio-dmabuf against the real kernel in L1 (scenario `dmabuf`).
//!
//! Before boot, L0 writes a per-page pattern into the ivshmem backing file
//! (= BAR2): "DMAB", the page index (u32 LE), then the byte `page * 7 + 1`
//! to the end of the page. `dmabuf-rigtest` (resources/guest-tools) checks
//! that the CPU mapping of a multi-range, out-of-order export reads exactly
//! these pages in entry order.
//!
//! The scenario only gathers facts (dmabuf-rigtest's DATA lines and its own checks' outcome,
//! `rigtest_status`); they are judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

const PAGE: usize = 4096;

/// Keep in step with `page_header` in resources/guest-tools/src/bin/dmabuf-rigtest.rs.
fn fill_pattern(buf: &mut [u8]) {
    for (i, page) in buf.chunks_mut(PAGE).enumerate() {
        page.fill((i.wrapping_mul(7).wrapping_add(1)) as u8);
        page[..4].copy_from_slice(b"DMAB");
        page[4..8].copy_from_slice(&(i as u32).to_le_bytes());
    }
}

#[test]
fn vfio_and_udmabuf_exports_against_the_real_kernel() {
    let out = Scenario::new("dmabuf")
        .timeout(Duration::from_secs(300))
        .shm_fill(fill_pattern)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    for d in &out.data {
        println!("{d}");
    }
    for l in out.log.lines().filter(|l| l.contains("fdinfo")) {
        println!("{l}");
    }
    println!("{r}");
    assert!(r.is_pass(), "{r}\nlog: {}", out.log_path.display());
    assert_eq!(
        r.get("rigtest_status"),
        Some("PASS"),
        "dmabuf-rigtest's checks (reason {:?}, failed {:?}): {r}\nlog: {}",
        r.get("rigtest_reason"),
        r.get("rigtest_failed"),
        out.log_path.display()
    );
    assert_eq!(r.get("rc"), Some("0"), "dmabuf-rigtest's exit code: {r}");

    // The real dma-buf.
    assert_eq!(out.data_value("vfio_exp_name"), Some("vfio_pci_core"));
    assert_eq!(out.data_value("vfio_size"), Some("28672"), "7 pages");
    assert_eq!(out.data_value("vfio_ranges"), Some("4"));
    assert!(
        out.log.contains("exp_name:\tvfio_pci_core") || out.log.contains("exp_name: vfio_pci_core")
    );
    // Reads through the device fd in entry order.
    assert_eq!(out.data_value("blob_read_pages"), Some("5,6,1,10,11,12,3"));
    // With memory decoding off, reads through the device fd fail cleanly.
    assert_eq!(out.data_value("mem_off_read"), Some("Kernel/EIO"));
    // Typed errors from our checks and from the real kernel.
    assert_eq!(out.data_value("ours_unaligned"), Some("Unaligned"));
    assert_eq!(out.data_value("ours_past_bar"), Some("PastRegionEnd"));
    assert_eq!(out.data_value("ours_wrong_region"), Some("PastRegionEnd"));
    assert_eq!(out.data_value("ours_two_regions"), Some("DifferentRegion"));
    assert_eq!(out.data_value("kernel_unaligned"), Some("Kernel/EINVAL"));
    assert_eq!(out.data_value("kernel_past_bar"), Some("Kernel/EINVAL"));
    assert_eq!(out.data_value("kernel_wrong_region"), Some("Kernel/EINVAL"));
    assert_eq!(out.data_value("kernel_not_a_bar"), Some("Kernel/ENODEV"));
    assert_eq!(out.data_value("kernel_overflow"), Some("Kernel/EOVERFLOW"));
    assert_eq!(out.data_value("fake_agrees"), Some("true"));
    // udmabuf.
    assert_eq!(out.data_value("udmabuf_exp_name"), Some("udmabuf"));
    assert_eq!(out.data_value("udmabuf_size"), Some("20480"));
    assert_eq!(out.data_value("udmabuf_map_pages"), Some("7,8,2,40,0"));
    assert_eq!(out.data_value("ours_unsealed"), Some("BadSeals"));
    // L1 only read BAR2: the backing file is unchanged.
    let mut want = vec![0u8; out.shm_after.len()];
    fill_pattern(&mut want);
    assert!(out.shm_after == want, "ivshmem backing file changed");
}
