//! Scenario `boot-thp`: with the stock shmem THP setting (`never`), a VM without a virtio-gpu gets
//! anonymous guest RAM and boots L2 with a few hundred stage-2 faults (2 MiB pages), where a memfd
//! takes thousands (4 KiB pages, fewer where KVM pre-faults the kernel and initramfs); with `shmem_enabled` = advise the memfd gets huge pages
//! too. The boot times are printed, not judged (they vary with load).

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn anonymous_guest_ram_gets_huge_pages_with_stock_thp_settings() {
    let out = Scenario::new("boot-thp")
        .timeout(Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;
    let pf = |case: &str| -> u64 {
        for key in ["exit", "marker"] {
            let want = if key == "exit" { "0" } else { "1" };
            assert_eq!(r.get(&format!("{case}_{key}")), Some(want), "{case}: {r}");
        }
        r.parse_field(&format!("{case}_pf_fixed"))
            .unwrap_or_else(|| panic!("no {case}_pf_fixed in {r}"))
    };
    let (anon, memfd, memfd_adv) = (pf("anon"), pf("memfd"), pf("memfd_adv"));
    // 512 MiB of guest RAM: 4 KiB pages take one fault per touched page (thousands), 2 MiB pages
    // one per 2 MiB (at most 256).
    assert!(anon < 1000, "anonymous RAM: {anon} stage-2 faults: {r}");
    assert!(memfd > 5 * anon, "memfd with shmem THP never: {memfd}: {r}");
    assert!(
        memfd_adv < 1000,
        "memfd with shmem THP advise: {memfd_adv}: {r}"
    );
    for case in ["anon", "memfd", "memfd_adv"] {
        println!(
            "{case}: boot {} s, {} stage-2 faults, {} KVM exits",
            r.get(&format!("{case}_boot_s")).unwrap_or("?"),
            r.get(&format!("{case}_pf_fixed")).unwrap_or("?"),
            r.get(&format!("{case}_exits")).unwrap_or("?")
        );
    }
}
