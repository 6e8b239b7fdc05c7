//! DMA by a passed-through device in the rig (scenario `vfio-edu`, QEMU's `edu` device in L0): L1
//! binds edu and ivshmem to vfio-pci and passes both to L2; L2's /bin/edu-dma makes edu DMA 4000
//! bytes from guest RAM into the device and back, through the IOMMU mapping of guest RAM, and
//! compares. The scenario only gathers facts (IOMMU groups, the vmm's exit, edu-dma's results);
//! they are judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn edu_dma_through_the_iommu_mapping_of_guest_ram() {
    let out = Scenario::new("vfio-edu")
        .timeout(Duration::from_secs(420))
        .edu(true)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for l in out.vmm_output().filter(|l| l.contains("lspci: ")) {
        println!("{l}");
    }
    // Checked first: with a shared group the vmm cannot open both devices, and this says why.
    let groups = (out.data_value("edu_group"), out.data_value("ivshmem_group"));
    if let (Some(edu), Some(ivshmem)) = groups {
        assert_ne!(
            edu, ivshmem,
            "edu and ivshmem must be in different IOMMU groups"
        );
    }
    out.assert_passed();
    assert!(
        groups.0.is_some() && groups.1.is_some(),
        "IOMMU groups {groups:?}: {}",
        out.result
    );
    out.assert_vmm_ran_clean();
    let l2 = out.assert_l2_passed("edu-dma");
    let len: usize = l2
        .parse_field("len")
        .unwrap_or_else(|| panic!("no len in {l2}"));
    assert!((1..4096).contains(&len), "DMA length {len}: {l2}");
    assert_eq!(l2.get("bad_bytes"), Some("0"), "{l2}");
    assert_eq!(l2.get("first_bad"), Some("none"), "{l2}");
    assert!(
        out.vmm_output()
            .any(|l| l.starts_with("edu-dma: lspci: ") && l.contains("1234:11e8")),
        "no lspci line of edu from L2"
    );
    println!(
        "edu DMA {len} bytes: to device {} ms, back {} ms",
        l2.get("to_device_ms").unwrap_or("?"),
        l2.get("to_ram_ms").unwrap_or("?")
    );
}
