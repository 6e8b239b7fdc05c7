//! resources/demo.sh runs scenario gpu-bar-blob with the time limit its test gives it.

use std::fs;

use rig_tests::workspace_root;

/// The number after `prefix` in `text` (the first occurrence).
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn demo_timeout_is_the_gpu_bar_blob_tests() {
    let root = workspace_root();
    let demo = fs::read_to_string(root.join("resources/demo.sh")).unwrap();
    let test = fs::read_to_string(root.join("tests/tests/rig_gpu_bar_blob.rs")).unwrap();
    assert!(
        demo.contains("run.sh gpu-bar-blob --timeout \"$timeout\""),
        "demo.sh no longer passes $timeout to run.sh"
    );
    let demo_secs = number_after(&demo, "\ntimeout=");
    let scenario = test
        .find("Scenario::new(\"gpu-bar-blob\")")
        .expect("the test's Scenario::new");
    let test_secs = number_after(&test[scenario..], ".timeout(Duration::from_secs(");
    assert!(demo_secs.is_some(), "no timeout=<secs> line in demo.sh");
    assert_eq!(
        demo_secs, test_secs,
        "demo.sh's timeout vs rig_gpu_bar_blob.rs"
    );
}
