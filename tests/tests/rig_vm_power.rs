//! Scenario `vm-power`: five vmm runs in one L1 boot, one per way the VM's life ends through ACPI
//! and signals. The guest's `poweroff` (ACPI S5) exits 0; `reboot=a` resets through the FADT's
//! reset register and exits 0; SIGTERM presses the ACPI power button, the guest's own acpid
//! (busybox) powers off, and the vmm exits 0; a guest that ignores the button is stopped after
//! `--shutdown-timeout` (exit 5); a second SIGINT stops it at once (exit 5).

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn acpi_power_off_reset_and_signals_end_the_vm_as_documented() {
    let out = Scenario::new("vm-power")
        .timeout(Duration::from_secs(900))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;
    for (case, exit) in [
        ("poweroff", "0"),
        ("reboot", "0"),
        ("acpid", "0"),
        ("ignore", "5"),
        ("twice", "5"),
    ] {
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
            r.get(&format!("{case}_exit")),
            Some(exit),
            "{case}: vmm exit status: {r}"
        );
        assert_eq!(
            r.get(&format!("{case}_line")),
            Some("1"),
            "{case}: the vmm's output does not name the outcome: {r}"
        );
    }
    assert_eq!(
        r.get("acpid_ready"),
        Some("loaded=1_button=1"),
        "ACPI button driver or its input device missing in L2: {r}"
    );
    assert_eq!(
        r.get("acpid_pressed"),
        Some("1"),
        "the guest's acpid did not act on the power button: {r}"
    );
    let stop = |case: &str| -> f64 {
        r.parse_field(&format!("{case}_stop_s"))
            .unwrap_or_else(|| panic!("no {case}_stop_s in {r}"))
    };
    // The ignoring guest is stopped by the 3 s timeout, not before; two signals stop it at
    // once (1 s between them, well under the default 30 s timeout).
    let ignore = stop("ignore");
    assert!(
        (3.0..30.0).contains(&ignore),
        "ignore: stopped {ignore} s after SIGTERM"
    );
    let twice = stop("twice");
    assert!(
        (1.0..20.0).contains(&twice),
        "twice: stopped {twice} s after the first SIGINT"
    );
    println!("stop after SIGTERM (timeout 3 s): {ignore:.2} s; after two SIGINTs: {twice:.2} s");
}
