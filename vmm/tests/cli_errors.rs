//! The `vmm` binary's command-line errors: a clear message naming the flag, exit status 2.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(args)
        .output()
        .expect("run the vmm binary")
}

/// A readable stand-in kernel file, so that only the flag under test is wrong.
fn kernel_file(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("vmm-cli-it-{}-{name}", std::process::id()));
    std::fs::write(&p, b"not a kernel, never loaded").unwrap();
    p
}

fn assert_usage_error(out: &Output, flag: &str, detail: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(flag), "message names {flag}: {stderr}");
    assert!(stderr.contains(detail), "message says {detail:?}: {stderr}");
}

#[test]
fn unknown_device_key() {
    let k = kernel_file("dev");
    let out = vmm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--device",
        "vfio=00:03.0,colour=red",
    ]);
    assert_usage_error(&out, "--device", "unknown key 'colour'");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn malformed_device_value() {
    let k = kernel_file("devval");
    let out = vmm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--device",
        "gpu=blob,width=wide",
    ]);
    assert_usage_error(&out, "--device", "width='wide' is not a number");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn missing_kernel_file() {
    let out = vmm(&["--kernel", "/nonexistent/vmlinuz"]);
    assert_usage_error(&out, "--kernel", "/nonexistent/vmlinuz");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}

#[test]
fn missing_initramfs_file() {
    let k = kernel_file("initrd");
    let out = vmm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--initramfs",
        "/nonexistent/initrd",
    ]);
    assert_usage_error(&out, "--initramfs", "/nonexistent/initrd");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn memory_with_unknown_suffix() {
    let k = kernel_file("mem");
    let out = vmm(&["--kernel", k.to_str().unwrap(), "--memory", "12X"]);
    assert_usage_error(&out, "--memory", "unknown size suffix 'X'");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn unknown_display() {
    let k = kernel_file("display");
    let out = vmm(&["--kernel", k.to_str().unwrap(), "--display", "sdl"]);
    assert_usage_error(&out, "--display", "unknown display 'sdl'");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn empty_capture_directory() {
    let k = kernel_file("capture");
    let out = vmm(&["--kernel", k.to_str().unwrap(), "--display", "capture="]);
    assert_usage_error(&out, "--display", "capture=<dir>");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn missing_capture_directory_is_a_usage_error_and_is_not_created() {
    let k = kernel_file("capture-missing");
    let dir = std::env::temp_dir().join(format!("vmm-no-such-capture-{}", std::process::id()));
    let arg = format!("capture={}", dir.display());
    let out = vmm(&["--kernel", k.to_str().unwrap(), "--display", &arg]);
    assert_usage_error(&out, "--display", "never created");
    assert!(!dir.exists());
    std::fs::remove_file(k).unwrap();
}

#[test]
fn vnc_on_a_public_address_without_a_password_is_a_usage_error() {
    let k = kernel_file("vnc-public");
    for listen in ["vnc=0.0.0.0:5900", "vnc=[::]:5900", "vnc=192.0.2.1:5900"] {
        let out = vmm(&["--kernel", k.to_str().unwrap(), "--display", listen]);
        assert_usage_error(&out, "--display", "only loopback addresses");
    }
    let out = vmm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--display",
        "vnc=127.0.0.1:5900,input=sometimes",
    ]);
    assert_usage_error(&out, "--display", "input=on|off");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn two_gpus_are_refused_before_the_vm_starts() {
    let k = kernel_file("twogpus");
    let out = vmm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--device",
        "vfio=00:03.0,gpu=blob",
        "--device",
        "gpu=blob",
    ]);
    assert_usage_error(&out, "--device", "only one virtio-gpu is supported");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn the_same_host_device_twice_is_a_usage_error() {
    let k = kernel_file("twovfio");
    let out = vmm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--device",
        "vfio=0000:00:03.0",
        "--device",
        "vfio=00:03.0",
    ]);
    assert_usage_error(&out, "--device", "0000:00:03.0");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn a_capture_path_that_is_a_file_is_a_usage_error() {
    let k = kernel_file("capture-file");
    let arg = format!("capture={}", k.display());
    let out = vmm(&["--kernel", k.to_str().unwrap(), "--display", &arg]);
    assert_usage_error(&out, "--display", "not a directory");
    std::fs::remove_file(k).unwrap();
}

#[test]
fn shutdown_timeout_must_be_whole_seconds_up_to_a_day() {
    let k = kernel_file("shutdown");
    for bad in ["-1", "1.5", "86401", "soon"] {
        let arg = format!("--shutdown-timeout={bad}");
        let out = vmm(&["--kernel", k.to_str().unwrap(), &arg]);
        assert_usage_error(&out, "--shutdown-timeout", bad);
    }
    std::fs::remove_file(k).unwrap();
}
