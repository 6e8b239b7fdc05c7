//! Interrupts of passed-through PCI devices in every mode (scenario `vfio-irq`; QEMU's e1000e and an
//! MSI-only nec-usb-xhci with a USB keyboard in L0): L1 binds both to vfio-pci and passes them to L2,
//! where stock drivers must receive interrupts in MSI-X (e1000e IntMode=2), MSI (xhci-pci) and legacy
//! INTx (e1000e IntMode=0) mode, each on its own irq chip, without falling back to another mode.
//! The scenario only gathers facts (the vmm's exit, L2's counts); they are judged here.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

/// (mode, driver, irq chip in /proc/interrupts)
const MODES: [(&str, &str, &str); 3] = [
    ("msix", "e1000e", "PCI-MSIX"),
    ("msi", "xhci_pci", "PCI-MSI"),
    ("intx", "e1000e", "IO-APIC"),
];

#[test]
fn passthrough_interrupts_reach_the_guest_in_msix_msi_and_intx_mode() {
    let out = Scenario::new("vfio-irq")
        .timeout(Duration::from_secs(420))
        .e1000e(true)
        .xhci(true)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    for l in out.vmm_output().filter(|l| l.contains("interrupts ")) {
        println!("{l}");
    }
    out.assert_passed();
    out.assert_vmm_ran_clean();
    let l2 = out.assert_l2_passed("irq-modes");

    for (mode, driver, chip) in MODES {
        let irqs: u64 = l2
            .parse_field(&format!("{mode}_irqs"))
            .unwrap_or_else(|| panic!("no {mode}_irqs in {l2}"));
        assert!(irqs > 0, "no {mode} interrupt reached L2: {l2}");
        assert_eq!(l2.get(&format!("{mode}_type")), Some(chip), "{l2}");
        // The scenario's own line carries the same figures (forwarded from L2).
        assert_eq!(
            out.result.parse_field::<u64>(&format!("{mode}_irqs")),
            Some(irqs),
            "{}",
            out.result
        );
        let data = out
            .l2_data("irq-modes")
            .find(|d| d.get("mode") == Some(mode))
            .unwrap_or_else(|| panic!("no RIG-DATA of mode {mode} from L2"));
        assert_eq!(data.get("driver"), Some(driver), "{data}");
        assert_eq!(data.get("ok"), Some("1"), "{data}");
        assert_eq!(data.get("fallback"), Some("0"), "{data}");
        assert_eq!(data.get("nobody_cared"), Some("0"), "{data}");
        println!("{mode}: {irqs} interrupts on {chip} ({driver})");
    }

    // e1000e's MSI-X: one vector each for rx, tx and other causes.
    assert_eq!(l2.get("msix_vectors"), Some("3"), "{l2}");
    // INTx is level-triggered: the IOAPIC line is handled as fasteoi.
    let intx = out
        .l2_data("irq-modes")
        .find(|d| d.get("mode") == Some("intx"))
        .expect("intx data");
    assert!(
        intx.get("hw").is_some_and(|h| h.ends_with("-fasteoi")),
        "INTx not level-triggered: {intx}"
    );
    // The vmm switched the devices into each mode (its `interrupts A -> B` log lines).
    for key in ["vmm_msix", "vmm_msi", "vmm_intx"] {
        let n: u32 = out
            .result
            .parse_field(key)
            .unwrap_or_else(|| panic!("no {key} in {}", out.result));
        assert!(n >= 1, "{key}={n}: {}", out.result);
    }
}
