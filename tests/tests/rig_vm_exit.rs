//! Scenario `vm-exit`: three vmm runs in one L1 boot, one per way an L2 guest ends. A kernel
//! panic reported by the stock `pvpanic-pci` driver exits 3 (with `panic=-1` the guest then
//! resets, which alone would exit 0), a triple fault (`reboot=t`) exits 4 and an i8042 reset
//! (`reboot=k`) exits 0; each run's last line names its outcome.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn vmm_exit_status_tells_panic_triple_fault_and_reset_apart() {
    let out = Scenario::new("vm-exit")
        .timeout(Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    println!("vm-exit: {r}");
    assert!(
        r.is_pass(),
        "facts incomplete: {r}\nlog: {}",
        out.log_path.display()
    );
    for case in ["panic", "triple", "reset"] {
        assert_eq!(
            r.get(&format!("{case}_marker")),
            Some("1"),
            "{case}: L2 marker not seen: {r}"
        );
        assert_eq!(
            r.get(&format!("{case}_kvm_error")),
            Some("0"),
            "{case}: KVM error in vmm output: {r}"
        );
        assert_eq!(
            r.get(&format!("{case}_line")),
            Some("1"),
            "{case}: the vmm's exit line does not name the outcome: {r}"
        );
    }
    assert_eq!(
        r.get("panic_loaded"),
        Some("1"),
        "pvpanic-pci not loaded in L2: {r}"
    );
    assert_eq!(
        r.get("panic_bound"),
        Some("1"),
        "pvpanic-pci did not bind to the vmm's pvpanic device: {r}"
    );
    assert_eq!(r.get("panic_exit"), Some("3"), "guest panic: {r}");
    assert_eq!(r.get("triple_exit"), Some("4"), "triple fault: {r}");
    assert_eq!(r.get("reset_exit"), Some("0"), "reset: {r}");
}
