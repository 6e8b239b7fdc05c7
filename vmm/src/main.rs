//! `vmm`: boots an x86_64 Linux kernel on KVM. See `vmm --help`.
//!
//! Exit status: see `vmm::vcpu::EXIT_CODES` (0 when the guest resets or powers off, 1 on a
//! VMM or KVM error, 2 on a command-line error, 3 on a guest panic reported through pvpanic, 4 on a
//! triple fault, 5 when the VMM stopped the guest after SIGTERM).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use vmm::cli::Args;
use vmm::vcpu::{StopCause, VmExit, EXIT_ERROR};
use vmm::VmConfig;

fn main() -> ExitCode {
    // Without RUST_LOG: warnings, plus the info lines that say what the devices do (PCI
    // slots, the VFIO back end and BARs of passthrough devices, dma-buf exports with their
    // fdinfo, capture files, the VNC server's
    // address and its clients). Not the guest-driven ones (interrupt mode changes).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        "warn,vmm=info,virtio_gpu=info,devices::vfio::open=info,devices::vfio::device=info",
    ))
    .target(env_logger::Target::Stderr)
    .init();
    // clap prints usage errors itself and exits with status 2.
    let args = Args::parse();
    // Checks across flags: one GPU, no host device twice (exit 2, as clap's own errors).
    if let Err(e) = vmm::pci_devices::plan(&args.devices) {
        Args::command()
            .error(ErrorKind::ArgumentConflict, format!("--device: {e}"))
            .exit();
    }
    let config = VmConfig::from(args);
    // Raw mode while the VM runs (keys, Ctrl-C included, go to the guest); restored when the
    // guard drops, before the summary line, and by its panic hook.
    let terminal = vmm::terminal::RawTerminal::enter_if_tty();
    // SIGTERM (and SIGINT unless stdin is a terminal, whose Ctrl-C goes to the guest) asks the
    // guest to power off.
    let signals = match vmm::signals::install(!std::io::stdin().is_terminal()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("vmm: warning: cannot catch SIGTERM ({e}): it ends the VMM at once");
            None
        }
    };
    let result = vmm::run(&config, terminal.is_some(), signals);
    drop(terminal);
    match result {
        Ok(outcome) => {
            let how = match &outcome.exit {
                VmExit::Reset => "guest reset".to_string(),
                VmExit::GuestPanic => {
                    "guest kernel panic (pvpanic event PVPANIC_PANICKED)".to_string()
                }
                VmExit::TripleFault => "guest triple fault (reboot=t or a crash)".to_string(),
                VmExit::PowerOff => "guest powered off".to_string(),
                VmExit::Halted => "guest halted".to_string(),
                VmExit::Quit => "quit on Ctrl-A x".to_string(),
                VmExit::Error(e) => format!("KVM error: {e}"),
                VmExit::Stopped { signal, cause } => match cause {
                    StopCause::Timeout(t) => format!(
                        "stopped: the guest did not power off within {} s of {signal}",
                        t.as_secs_f64()
                    ),
                    StopCause::SecondSignal => format!("stopped on a second {signal}"),
                },
                VmExit::VcpuPanic { id, message } => {
                    format!("error: vCPU {id} panicked ({message}), VM stopped")
                }
            };
            eprintln!(
                "vmm: {how} after {:.2} s; {}",
                outcome.elapsed.as_secs_f64(),
                outcome.stats.summary()
            );
            for line in &outcome.displays {
                eprintln!("vmm: {line}");
            }
            ExitCode::from(outcome.exit.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("vmm: error: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}
