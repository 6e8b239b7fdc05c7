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

/// lib.sh's `rig_weston_proto_counts` (run with `sh` here, busybox ash in L1) on `log`, a weston
/// protocol log as libwayland's WAYLAND_DEBUG=server writes it.
fn proto_counts(log: &str) -> String {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "rig-weston-proto-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, log).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}'; rig_weston_proto_counts \"$1\"",
            rig_script("lib.sh").display()
        ))
        .arg("sh")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn weston_proto_counts_tell_dmabuf_requests_from_their_answers() {
    let log = "\
[100.001] wl_shm#10.create_pool(new id wl_shm_pool#3, fd 19, 4096)
[100.002] wl_shm_pool#3.create_buffer(new id wl_buffer#4, 0, 32, 32, 128, 1)
[100.003] zwp_linux_dmabuf_v1#7.create_params(new id zwp_linux_buffer_params_v1#12)
[100.004] zwp_linux_buffer_params_v1#12.add(fd 21, 0, 0, 5120, 0, 0)
[100.005] zwp_linux_buffer_params_v1#12.create(1280, 800, 875713112, 0)
[100.006]  -> zwp_linux_buffer_params_v1#12.created(new id wl_buffer#ff000000)
[100.007] zwp_linux_dmabuf_v1#7.create_params(new id zwp_linux_buffer_params_v1#13)
[100.008] zwp_linux_buffer_params_v1#13.create(1280, 800, 875713112, 0)
[100.009]  -> zwp_linux_buffer_params_v1#13.failed()
[100.010] zwp_linux_dmabuf_v1#7.create_params(new id zwp_linux_buffer_params_v1#14)
[100.011] zwp_linux_buffer_params_v1#14.create_immed(new id wl_buffer#15, 64, 64, 875713112, 0)
[100.012] wl_surface#9.attach(wl_buffer#ff000000, 0, 0)
[100.013] wl_surface#9.commit()
[100.014]  -> wl_display#1.error(wl_surface#9, 2, \"invalid buffer\")
";
    assert_eq!(
        proto_counts(log),
        "dmabuf_params=3 dmabuf_create=2 dmabuf_create_immed=1 dmabuf_created=1 dmabuf_failed=1 \
         shm_pools=1 shm_buffers=1 attaches=1 commits=1 client_errors=1"
    );
    assert_eq!(
        proto_counts(""),
        "dmabuf_params=0 dmabuf_create=0 dmabuf_create_immed=0 dmabuf_created=0 dmabuf_failed=0 \
         shm_pools=0 shm_buffers=0 attaches=0 commits=0 client_errors=0"
    );
}
