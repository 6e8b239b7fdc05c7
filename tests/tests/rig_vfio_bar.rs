//! A passed-through BAR both ways in the rig (scenario `vfio-bar`): L1 binds ivshmem to vfio-pci
//! and runs `vmm --device vfio=<BDF>`; L2's /bin/bar-pattern reads the words L0 wrote into the
//! ivshmem file before the run and writes its own, which L0 checks here afterwards. The scenario
//! only gathers facts (the vmm's exit, bar-pattern's results); they are judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{fill_words, DEFAULT_PAGES, IVSHMEM_L0_TAG, L0_WORD_OFFSET};
use rig_tests::Scenario;

mod common;

#[test]
fn l2_reads_and_writes_the_passed_through_bar() {
    let out = Scenario::new("vfio-bar")
        .timeout(Duration::from_secs(420))
        .shm_fill(|b: &mut [u8]| fill_words(b, IVSHMEM_L0_TAG, DEFAULT_PAGES, L0_WORD_OFFSET))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    for l in out.vmm_output().filter(|l| l.contains("lspci: ")) {
        println!("{l}");
    }
    out.assert_passed();
    out.assert_vmm_ran_clean();

    // The guest's lspci-style view of the passed-through device.
    let bdf = r.get("bdf").unwrap_or_default();
    assert!(
        out.vmm_output()
            .any(|l| l.starts_with("bar-pattern: lspci: ") && l.contains("1af4:1110")),
        "no lspci line of ivshmem from L2"
    );
    let info = out
        .l2_data("bar-pattern")
        .find(|d| d.get("vendor").is_some())
        .unwrap_or_else(|| panic!("no device line from bar-pattern (L1 bdf {bdf})"));
    assert_eq!(info.get("vendor"), Some("1af4"), "{info}");
    assert_eq!(info.get("device"), Some("1110"), "{info}");
    assert!(info.get("bar2").is_some(), "no BAR2 in {info}");

    // L0 -> guest: L2 read every word L0 wrote.
    let l2 = out.assert_l2_passed("bar-pattern");
    assert_eq!(
        l2.parse_field::<usize>("pages"),
        Some(DEFAULT_PAGES),
        "{l2}"
    );
    assert_eq!(l2.get("read_bad"), Some("0"), "{l2}");
    assert_eq!(l2.get("readback_bad"), Some("0"), "{l2}");
    // The forwarded copy in L1's own data lines.
    assert_eq!(out.data_value("l2_read_bad"), Some("0"));

    // Guest -> L0: the guest's words are in the ivshmem backing file, L0's are untouched.
    common::assert_ivshmem_exchange(&out.shm_after);
}
