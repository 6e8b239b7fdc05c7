//! Scenario `boot`: `vmm` inside L1 boots the L2 kernel to its init, which prints
//! `L2-MARKER` and reboots; the VMM exits 0 without a KVM error.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn vmm_boots_l2_to_its_marker() {
    let out = Scenario::new("boot")
        .timeout(Duration::from_secs(300))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    println!("boot: {r}");
    assert_eq!(
        r.get("marker"),
        Some("1"),
        "L2 marker not seen: {r}\nlog: {}",
        out.log_path.display()
    );
    assert_eq!(r.get("vmm_exit"), Some("0"), "vmm exit code: {r}");
    assert_eq!(
        r.get("kvm_error"),
        Some("0"),
        "KVM error in vmm output: {r}"
    );
    assert!(r.is_pass(), "{r}");
    let boot_s: f64 = r
        .parse_field("l2_boot_s")
        .unwrap_or_else(|| panic!("no l2_boot_s in {r}"));
    println!("l2_boot_s={boot_s:.2} (vmm start to L2-MARKER, L1 clock)");
}
