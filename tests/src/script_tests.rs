//! The host-side shell helpers of resources/rig, run with bash here as the scripts run them.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::paths::rig_script;

/// Runs `rig_progress` (resources/rig/progress.sh) with a 1 s interval on `cmd` (shell text) whose
/// log is counted for `o$` lines; returns (exit status, stderr, the log).
fn progress(cmd: &str) -> (i32, String, String) {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rig-progress-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("make.log");
    let script = format!(
        ". '{}'; rig_progress 'test: fake' '{}' 1 'o$' 7 sh -c \"$1\"; rc=$?; echo \"count=$RIG_PROGRESS_COUNT\" >&2; exit $rc",
        rig_script("progress.sh").display(),
        log.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .arg("bash")
        .arg(cmd)
        .output()
        .unwrap();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_dir(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        logged,
    )
}

#[test]
fn progress_counts_objects_while_the_command_runs_and_at_the_end() {
    let (rc, err, log) = progress("echo a.o; echo noise; sleep 2.5; echo b.o; echo c.o");
    assert_eq!(rc, 0, "{err}");
    let ticks: Vec<&str> = err.lines().filter(|l| l.contains("so far")).collect();
    assert!(!ticks.is_empty(), "no progress line while it ran: {err}");
    assert!(
        ticks[0].starts_with("test: fake: 0m0")
            && ticks[0].contains(", 1 objects so far (7 last time)"),
        "{err}"
    );
    assert!(err.contains("test: fake: done in 0m0"), "{err}");
    assert!(err.contains(", 3 objects (log: "), "{err}");
    assert!(err.contains("count=3"), "{err}");
    // The command's output is in the log, not on the terminal.
    assert_eq!(log, "a.o\nnoise\nb.o\nc.o\n");
    assert!(!err.contains("noise"), "{err}");
}

#[test]
fn progress_returns_the_commands_failure_with_the_logs_tail() {
    let (rc, err, _) = progress("echo x.o; echo 'error: it broke' >&2; exit 3");
    assert_eq!(rc, 3, "{err}");
    assert!(
        err.contains("test: fake: FAILED (exit 3) after 0m0"),
        "{err}"
    );
    assert!(err.contains(", 1 objects; last lines of "), "{err}");
    assert!(err.contains("error: it broke"), "{err}");
}
