//! Scenario `boot-smp`: `vmm --vcpus 2` inside L1 boots the L2 kernel to its init, which sees both
//! CPUs, prints `L2-MARKER` and reboots; the VMM exits 0 without a KVM error (scenario `boot-smp`).

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn vmm_boots_l2_with_two_vcpus() {
    // Normally 15 s of QEMU; the scenario gives the vmm 150 s. L1 itself sometimes hangs here (nested
    // SMP under TCG): the harness then reruns the scenario once, so a shorter wait costs less.
    let out = Scenario::new("boot-smp")
        .timeout(Duration::from_secs(210))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    println!("boot-smp: {r}");
    assert_eq!(
        r.get("marker"),
        Some("1"),
        "L2 marker not seen: {r}\nlog: {}",
        out.log_path.display()
    );
    assert_eq!(r.get("l2_cpus"), Some("2"), "CPUs seen by L2: {r}");
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
    println!("l2_boot_s={boot_s:.2} with 2 vCPUs (vmm start to L2-MARKER, L1 clock)");
}
