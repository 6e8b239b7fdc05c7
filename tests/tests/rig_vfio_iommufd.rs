//! The vmm's iommufd back end in the rig (scenario `vfio-iommufd`, L1 on build-kernel.sh's kernel with
//! IOMMUFD and the VFIO device cdev, QEMU's `edu` in L0): edu and ivshmem bound to vfio-pci in L1 and
//! passed to L2, opened by the vmm through /dev/vfio/devices/vfioN and one IOAS on /dev/iommu. In one L2
//! run, edu-dma DMAs 4000 bytes RAM -> edu -> RAM (guest RAM is mapped in the IOAS) and bar-pattern
//! reads L0's words from ivshmem's BAR2 and writes its own, which L0 checks here. The scenario only
//! gathers facts (the vmm's exit and back end, both programs' results); they are judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use guest_tools::pattern::{fill_words, DEFAULT_PAGES, IVSHMEM_L0_TAG, L0_WORD_OFFSET};
use rig_tests::{L1Kernel, Scenario};

mod common;

#[test]
fn iommufd_backend_does_edu_dma_and_bar_both_ways() {
    let out = Scenario::new("vfio-iommufd")
        .l1_kernel(L1Kernel::Iommufd)
        .edu(true)
        .timeout(Duration::from_secs(480))
        .shm_fill(|b: &mut [u8]| fill_words(b, IVSHMEM_L0_TAG, DEFAULT_PAGES, L0_WORD_OFFSET))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for l in out
        .vmm_output()
        .filter(|l| l.contains("vfio") && !l.contains("lspci"))
    {
        println!("{l}");
    }
    out.assert_passed();
    out.assert_vmm_ran_clean();
    let r = &out.result;

    // The back end, from the vmm's own log: iommufd for both devices, guest RAM mapped in the IOAS.
    assert_eq!(r.get("vfio_backend"), Some("iommufd"), "{r}");
    assert_eq!(r.get("opened_cdev"), Some("2"), "{r}");
    let mapped: u64 = r
        .parse_field("dma_mapped_mib")
        .unwrap_or_else(|| panic!("no dma_mapped_mib in {r}"));
    assert!(
        mapped >= 500,
        "only {mapped} MiB of the 512 MiB guest RAM mapped: {r}"
    );
    assert!(
        out.vmm_output()
            .any(|l| l.contains("vfio: passthrough devices use iommufd")),
        "the vmm did not log the iommufd back end"
    );
    assert!(
        !out.vmm_output()
            .any(|l| l.contains("legacy VFIO container")),
        "the vmm mentions the legacy container"
    );

    // edu DMA through the IOAS mapping of guest RAM.
    let edu = out.assert_l2_passed("edu-dma");
    let len: usize = edu
        .parse_field("len")
        .unwrap_or_else(|| panic!("no len in {edu}"));
    assert!((1..4096).contains(&len), "DMA length {len}: {edu}");
    assert_eq!(edu.get("bad_bytes"), Some("0"), "{edu}");

    // ivshmem BAR2 both ways.
    let bar = out.assert_l2_passed("bar-pattern");
    assert_eq!(
        bar.parse_field::<usize>("pages"),
        Some(DEFAULT_PAGES),
        "{bar}"
    );
    assert_eq!(bar.get("read_bad"), Some("0"), "{bar}");
    assert_eq!(bar.get("readback_bad"), Some("0"), "{bar}");
    common::assert_ivshmem_exchange(&out.shm_after);
    println!(
        "vfio-iommufd: edu DMA {len} bytes (to device {} ms, back {} ms), {mapped} MiB mapped in the IOAS, l2_boot_s {}",
        edu.get("to_device_ms").unwrap_or("?"),
        edu.get("to_ram_ms").unwrap_or("?"),
        r.get("l2_boot_s").unwrap_or("?")
    );
}
