//! The rig's L1 -> L0 file channel (scenario `console-file`): 1 MiB of random bytes sent as base64
//! over L1's serial console arrives intact in target/rig/logs/console-file/.

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

#[test]
fn a_file_sent_over_the_console_arrives_intact() {
    let out = Scenario::new("console-file")
        .timeout(Duration::from_secs(300))
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = &out.result;
    println!("{r}");
    assert!(r.is_pass(), "{r}\nlog: {}", out.log_path.display());
    assert!(out.file_errors.is_empty(), "{:?}", out.file_errors);
    assert_eq!(out.files.len(), 1, "{:?}", out.files);
    let f = &out.files[0];
    assert_eq!(f.name, "random.bin");
    assert_eq!(f.bytes.len(), 1 << 20);
    assert_eq!(std::fs::read(&f.path).expect("saved file"), f.bytes);
    // The harness checked the SHA-256 sent with the file; it is the one L1 computed.
    let begin = out
        .log
        .lines()
        .find(|l| l.starts_with("RIG-FILE-BEGIN "))
        .expect("begin line");
    let sha = r.get("sha256").unwrap_or_default();
    assert!(!sha.is_empty() && begin.contains(sha), "{begin} vs {r}");
    println!("1 MiB in {} s of L1 time", r.get("send_s").unwrap_or("?"));
}
