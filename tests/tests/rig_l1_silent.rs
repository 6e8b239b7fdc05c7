//! run.sh's watch on L1 (the heartbeat L1's init writes to its second serial port): an L1 that
//! goes silent gets an NMI, and one that stays silent has QEMU stopped (run.sh exit 4) instead of
//! running into the scenario's timeout.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::path::Path;
use std::time::Duration;

use rig_tests::{RigError, Scenario};

const SILENT: Duration = Duration::from_secs(20);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_silent_l1_gets_an_nmi_and_is_watched_again_once_it_beats() {
    let scenario = Scenario::new("l1-nmi")
        .timeout(Duration::from_secs(300))
        .silent(SILENT);
    let path = scenario.silent_log_path();
    let out = scenario.run().unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;
    let nmis = |k: &str| {
        r.parse_field::<u64>(k)
            .unwrap_or_else(|| panic!("{k} in {r}"))
    };
    assert!(nmis("nmis_after") > nmis("nmis_before"), "{r}");
    let log = read(&path);
    assert!(log.contains("no heartbeat from L1 for"), "{log}");
    // QEMU's `info registers` for the silent CPU.
    assert!(log.contains("RIP="), "{log}");
    assert!(log.contains("heartbeat is back after the NMI"), "{log}");
    assert!(!log.contains("telling QEMU to quit"), "{log}");
    println!("l1-nmi: {r}\n{log}");
}

#[test]
fn an_l1_that_stays_silent_is_stopped_by_the_watch_not_the_timeout() {
    let scenario = Scenario::new("l1-silent")
        .timeout(Duration::from_secs(600))
        .silent(SILENT)
        .retry_hung(false);
    let path = scenario.silent_log_path();
    match scenario.run() {
        Err(RigError::NoResult { why, .. }) => {
            assert!(why.contains("exit status: 4"), "{why}")
        }
        Err(e) => panic!("{e}"),
        Ok(out) => panic!("l1-silent reported {}", out.result),
    }
    let log = read(&path);
    assert!(log.contains("no heartbeat from L1 for"), "{log}");
    assert!(log.contains("RIP="), "{log}");
    assert!(log.contains("telling QEMU to quit"), "{log}");
    assert!(!log.contains("heartbeat is back"), "{log}");
    println!("l1-silent:\n{log}");
}
