//! L1 smoke test in the rig: KVM (kvm_amd) inside L1, ivshmem bound to vfio-pci, and the
//! ivshmem BAR2 <-> /dev/shm round trip between L0 and L1.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn l1_has_kvm_and_binds_ivshmem_to_vfio() {
    let out = Scenario::new("l1-smoke")
        .timeout(Duration::from_secs(240))
        .shm_fill(|buf: &mut [u8]| buf[..4].copy_from_slice(&0x1122_3344u32.to_le_bytes()))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    assert!(r.is_pass(), "{r}\nlog: {}", out.log_path.display());
    let bdf = r.get("bdf").unwrap_or_default();
    assert!(bdf.starts_with("0000:"), "bdf in {r}");
    assert!(
        r.get("vfio_group")
            .unwrap_or_default()
            .starts_with("/dev/vfio/"),
        "{r}"
    );
    // L1 read what L0 wrote at offset 0 and wrote "RIG!" at offset 4.
    assert_eq!(r.get("shm_word0"), Some("0x11223344"), "{r}");
    assert_eq!(
        &out.shm_after[4..8],
        &0x5249_4721u32.to_le_bytes(),
        "L1's write into BAR2"
    );
    println!(
        "l1-smoke: {r}; L1 init done at {} s",
        out.data_value("l1_init_done_s").unwrap_or("?")
    );
}
