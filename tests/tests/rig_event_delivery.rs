//! KVM's event-delivery error on emulated MMIO, in the rig: L0's TCG leaves the type of the last
//! event it delivered to L2 in the exit it reports next, and L1's KVM then refuses to emulate an
//! MMIO access on a page not yet in its nested page tables (`KVM_INTERNAL_ERROR_DELIVERY_EV`).
//! L2's mmio-after-fault makes that happen on purpose (a page fault, then at once a read of a
//! fresh page of the virtio-gpu's BAR0); the vmm runs the vCPU again and the guest goes on.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn an_mmio_read_right_after_a_guest_page_fault_does_not_stop_the_vm() {
    let out = Scenario::new("event-delivery")
        .timeout(Duration::from_secs(300))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    out.assert_vmm_ran_clean();
    let l2 = out.assert_l2_passed("mmio-after-fault");
    assert_eq!(l2.get("rounds"), Some("2000"), "{l2}");
    assert_eq!(l2.get("pages"), Some("8"), "{l2}");
    let r = &out.result;
    // Each retry is a run the vmm would otherwise have ended with a KVM error: the rig's L0 makes
    // them happen, so none here would mean the program no longer provokes the error.
    assert!(
        r.parse_field::<u64>("retries").is_some_and(|n| n >= 1),
        "{r}"
    );
    assert!(
        r.parse_field::<u64>("retry_lines").is_some_and(|n| n >= 1),
        "{r}"
    );
    println!("event-delivery: {r}\n{l2}");
}
