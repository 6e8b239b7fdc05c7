//! The error a user sees: `vmm --device vfio=<BDF>` of a device that is not bound to vfio-pci
//! (ivshmem left without a driver in L1) refuses to start, with a message that says why
//! (scenario `vfio-notbound`). The scenario only gathers facts (the driver, the vmm's exit code and
//! message, whether L2 booted); they are judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn a_device_not_bound_to_vfio_pci_is_refused_with_a_clear_message() {
    let out = Scenario::new("vfio-notbound")
        .timeout(Duration::from_secs(240))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    println!("{r}");
    let msg = out
        .data_value("vmm_error")
        .unwrap_or("none")
        .replace('_', " ");
    println!("vmm's message: {msg}");
    assert!(
        r.is_pass(),
        "{r}\n(reason {:?})\nlog: {}",
        r.reason(),
        out.log_path.display()
    );
    let bdf = r.get("bdf").unwrap_or_default();
    assert_ne!(r.get("driver"), Some("vfio-pci"), "{r}");
    assert!(r.get("vmm_exit").is_some(), "no vmm_exit: {r}");
    assert_ne!(r.get("vmm_exit"), Some("0"), "the vmm started: {r}");
    assert_eq!(r.get("marker"), Some("0"), "L2 must not boot: {r}");
    assert_ne!(msg, "none", "the vmm printed no error message: {r}");
    assert!(
        msg.contains(bdf.trim_start_matches("0000:")),
        "message does not name {bdf}: {msg}"
    );
    let lower = msg.to_lowercase();
    assert!(
        ["vfio-pci", "driver", "bound"]
            .iter()
            .any(|w| lower.contains(w)),
        "message does not say what is wrong: {msg}"
    );
    // "not implemented", "not-implemented", "not_implemented" (now a space), ...
    let not_implemented = lower.match_indices("not").any(|(i, _)| {
        lower
            .get(i + 4..)
            .is_some_and(|r| r.starts_with("implemented"))
    });
    assert!(
        !not_implemented,
        "the vmm says VFIO is not implemented: {msg}"
    );
    // The message as the vmm printed it (with its indented continuation lines) is in the log.
    let full: Vec<&str> = out
        .vmm_output()
        .skip_while(|l| !l.starts_with("vmm: error: "))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
        .map(|(_, l)| l)
        .collect();
    assert!(!full.is_empty(), "no `vmm: error:` line in the log");
    println!("as printed:\n{}", full.join("\n"));
}
