//! The error a user sees: `vmm --device vfio=<BDF>` of a device that is not bound to vfio-pci
//! (ivshmem left without a driver in L1) refuses to start, with a message that says why
//! (scenario `vfio-notbound`).

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
    assert_ne!(r.get("vmm_exit"), Some("0"), "{r}");
    assert_eq!(r.get("marker"), Some("0"), "L2 must not boot: {r}");
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
    assert!(!lower.contains("not implemented"), "{msg}");
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
