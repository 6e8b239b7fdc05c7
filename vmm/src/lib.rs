//! A minimal x86_64 VMM on rust-vmm crates: boots a Linux bzImage or vmlinux at its 64-bit
//! entry point on KVM, with a 16550 console, i8042 reset, CMOS, ACPI tables (power off, reset, power button) and PCI
//! bus 0.
//!
//! [`run`] is the whole VMM; `main.rs` only parses the command line ([`cli`]) and maps the
//! outcome to an exit status.

pub mod boot;
pub mod cli;
pub mod console;
pub mod error;
pub mod event_loop;
pub mod guest_input;
pub mod kvm_stats;
pub mod layout;
pub mod memory;
pub mod pci_devices;
pub mod rlimit;
pub mod signals;
pub mod terminal;
pub mod vcpu;
pub mod vm;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use error::VmmError;

/// Rate limit of log lines a guest can trigger at will (accesses to ports and addresses no
/// device claims): per call site, the first occurrence is logged, then at most one line per
/// interval, preceded by the number of suppressed ones (`log_limit`'s `*_limit_global!`).
pub(crate) const GUEST_LOG_INTERVAL: Duration = Duration::from_secs(10);

use crate::cli::{Args, DeviceSpec, DisplayConfig};
use crate::event_loop::{EventLoop, SerialInput};
use crate::memory::RamBacking;
use crate::vcpu::{install_kick_handler, ExitNotifier, ExitStats, VcpuThread, VmExit};
use crate::vm::{ConsoleOut, Vm};
use devices::legacy::AcpiPmEvent;
use devices::pvpanic::PvpanicEvent;

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initramfs: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// How a bzImage is unpacked.
    pub unpacking: boot::Unpacking,
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Extra devices.
    pub devices: Vec<DeviceSpec>,
    /// Where the virtio-gpu's scanouts go (each of them).
    pub display: Vec<DisplayConfig>,
    /// How long the guest has to power off after SIGTERM pressed its power button.
    pub shutdown_timeout: Duration,
    /// How the guest reaches PCI configuration space.
    pub pci_config: vm::PciConfigAccess,
}

impl From<Args> for VmConfig {
    fn from(a: Args) -> Self {
        VmConfig {
            kernel: a.kernel,
            initramfs: a.initramfs,
            cmdline: a.cmdline,
            unpacking: boot::Unpacking {
                decompressor: a.decompress,
                cache: match a.kernel_cache {
                    Some(cli::KernelCacheArg::Off) => None,
                    Some(cli::KernelCacheArg::Dir(dir)) => Some(dir),
                    None => boot::kernel_cache::default_dir(),
                },
            },
            mem_size: a.memory.bytes(),
            vcpus: a.vcpus,
            devices: a.devices,
            display: a.display,
            shutdown_timeout: Duration::from_secs(a.shutdown_timeout),
            pci_config: a.pci_config,
        }
    }
}

/// How the VM ended.
#[derive(Debug)]
pub struct Outcome {
    /// Why.
    pub exit: VmExit,
    /// User-space exits handled.
    pub stats: ExitStats,
    /// Time from VM creation to the exit.
    pub elapsed: Duration,
    /// The displays' exit-summary lines (e.g. the Wayland display's paths and copies).
    pub displays: Vec<String>,
}

/// Runs configured vCPUs, one thread each, with the main thread in the event loop (the i8042
/// `reset_evt` and `subscribers`), until a VM exit reason is recorded; then stops and joins the
/// vCPU threads and shuts the VM down ([`Vm::shutdown`]). Returns the reason and the
/// user-space exit counts.
pub fn run_vcpus(
    vm: Vm,
    vcpu_fds: Vec<kvm_ioctls::VcpuFd>,
    reset_evt: vmm_sys_util::eventfd::EventFd,
    subscribers: Vec<event_loop::Subscriber>,
) -> Result<(VmExit, ExitStats), VmmError> {
    let exit = Arc::new(ExitNotifier::new().map_err(VmmError::EventFd)?);
    run_vcpus_until(vm, vcpu_fds, reset_evt, subscribers, exit)
}

/// [`run_vcpus`] with the exit record given: devices built before may already report to it
/// (the pvpanic device).
pub fn run_vcpus_until(
    mut vm: Vm,
    vcpu_fds: Vec<kvm_ioctls::VcpuFd>,
    reset_evt: vmm_sys_util::eventfd::EventFd,
    subscribers: Vec<event_loop::Subscriber>,
    exit: Arc<ExitNotifier>,
) -> Result<(VmExit, ExitStats), VmmError> {
    install_kick_handler().map_err(VmmError::Signal)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut event_loop = EventLoop::new(exit.clone(), Some(reset_evt))?;
    for s in subscribers {
        event_loop.add(s);
    }

    let vcpus = vm.runnable_vcpus(vcpu_fds, exit.clone(), stop.clone());
    let mut threads = Vec::new();
    for v in vcpus {
        match VcpuThread::spawn(v) {
            Ok(t) => threads.push(t),
            Err(e) => {
                exit.notify(VmExit::Error(format!("cannot start a vCPU thread: {e}")));
                break;
            }
        }
    }
    let result = event_loop.run();
    stop.store(true, Ordering::Release);
    let mut stats = ExitStats::default();
    for t in threads {
        stats.merge(&t.stop_and_join());
    }
    // Nothing reaches the devices any more: tear the VM down in order.
    drop(event_loop);
    vm.shutdown();
    Ok((result?, stats))
}

/// What the VM does with the pvpanic device's events: a panic ends it
/// ([`VmExit::GuestPanic`]); a crash kernel taking over (which the device logs) does not.
pub fn pvpanic_handler(exit: Arc<ExitNotifier>) -> devices::pvpanic::PvpanicHandler {
    Box::new(move |event| {
        if event == PvpanicEvent::Panicked {
            exit.notify(VmExit::GuestPanic);
        }
    })
}

/// What the VM does with the ACPI power management registers' requests: both end it.
pub fn acpi_pm_handler(exit: Arc<ExitNotifier>) -> devices::legacy::AcpiPmHandler {
    Box::new(move |event| {
        // Either ends the VM: at most one line per VM.
        match event {
            AcpiPmEvent::PowerOff => {
                log::info!("vmm: the guest entered ACPI S5 (sleep control register): power off");
                exit.notify(VmExit::PowerOff)
            }
            AcpiPmEvent::Reset => {
                log::info!("vmm: the guest wrote the ACPI reset register: reset");
                exit.notify(VmExit::Reset)
            }
        }
    })
}

/// Boots the guest and runs it until it resets, powers off or fails. With `console_escape`
/// (stdin is a terminal in raw mode), `Ctrl-A x` on stdin quits. With `signals` (from
/// [`signals::install`]), a caught signal presses the guest's power button and then stops the
/// VM after `config.shutdown_timeout`.
pub fn run(
    config: &VmConfig,
    console_escape: bool,
    signals: Option<signals::SignalEvents>,
) -> Result<Outcome, VmmError> {
    let start = Instant::now();
    // Eventfds per vector and queue, irqfds, VFIO and dma-buf fds: allow as many as the
    // hard limit does.
    rlimit::raise_open_file_limit_or_warn();
    // Refuse impossible device combinations before creating anything.
    let plan = pci_devices::plan(&config.devices)?;
    // Only the virtio-gpu exports guest pages (udmabuf, which needs a memfd); anonymous memory
    // gets huge pages with a host's default settings.
    let backing = if plan.gpu.is_some() {
        RamBacking::Memfd
    } else {
        RamBacking::Anonymous
    };
    let mut vm = Vm::new(config.mem_size, backing, config.pci_config)?;
    if vm.ram().hugetlb() {
        // Pages reserved from the host's pool: worth a line by default.
        log::info!(
            "guest RAM: Memfd (hugetlb, 2 MiB pages): {} MiB reserved from the host's pool",
            vm.ram().size() >> 20
        );
    } else {
        log::debug!("guest RAM: {backing:?}");
    }
    let ram_ready = start.elapsed();
    let entry = boot::loader::load(
        vm.ram().memory(),
        config.mem_size,
        &config.kernel,
        config.initramfs.as_deref(),
        &config.cmdline,
        &config.unpacking,
    )
    .map_err(boot::BootError::from)?;
    let kernel_ready = start.elapsed();
    boot::write_boot_structures(
        vm.ram().memory(),
        config.vcpus,
        layout::pci_mmio64_window(config.mem_size),
        config.pci_config,
    )?;
    log::debug!(
        "kernel entry {:#x}, initramfs {:x?}",
        entry.entry,
        entry.initramfs
    );

    let console: ConsoleOut = Box::new(console::GuestConsole::stdout());
    let exit = Arc::new(ExitNotifier::new().map_err(VmmError::EventFd)?);
    let legacy = vm.add_legacy_devices(console, acpi_pm_handler(exit.clone()))?;
    // Passthrough devices are opened (and guest RAM DMA-mapped) before any vCPU runs.
    let pci = pci_devices::build(&vm, &config.devices, &config.display)?;
    pci_devices::add_pvpanic(&vm, pvpanic_handler(exit.clone()))?;
    let vcpu_fds = vm.create_vcpus(config.vcpus, Some(entry.entry))?;
    if backing == RamBacking::Memfd && !vm.ram().hugetlb() {
        // Without shmem huge pages every 4 KiB the guest touches first is an exit: map what the
        // kernel is sure to touch at once (its boot footprint, the initramfs) ahead.
        let (start, end) = entry.boot_footprint;
        let mut ranges = vec![(start, end.saturating_sub(start))];
        ranges.extend(entry.initramfs);
        let t = Instant::now();
        if let Some(bytes) = vcpu_fds.first().and_then(|v| vm.prefault(v, &ranges)) {
            log::debug!(
                "vmm: pre-faulted {} MiB of guest RAM in {:.1} ms",
                bytes >> 20,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    // Read stdin through its own descriptor, unbuffered: std's Stdin buffers internally, and
    // bytes sitting in that buffer would never wake epoll again.
    let mut subscribers: Vec<event_loop::Subscriber> = Vec::new();
    match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let mut input = SerialInput::new(std::fs::File::from(fd), legacy.serial.clone());
            if console_escape {
                input = input.with_escape(exit.clone());
            }
            subscribers.push(Arc::new(Mutex::new(input)));
        }
        Err(e) => log::warn!("no console input: cannot duplicate stdin: {e}"),
    }
    if let Some(signals) = signals {
        let requests = signals::ShutdownRequests::new(
            signals,
            Box::new(legacy.power_button),
            config.shutdown_timeout,
            exit.clone(),
        )
        .map_err(VmmError::EventFd)?;
        subscribers.push(Arc::new(Mutex::new(requests)));
    }
    // Phases of the VMM's own start, for boot measurements (RUST_LOG=vmm=debug).
    log::debug!(
        "vmm: set up in {:.1} ms (VM and guest RAM {:.1} ms, kernel {:.1} ms, then tables and devices)",
        start.elapsed().as_secs_f64() * 1e3,
        ram_ready.as_secs_f64() * 1e3,
        (kernel_ready - ram_ready).as_secs_f64() * 1e3
    );
    let (exit, stats) = run_vcpus_until(vm, vcpu_fds, legacy.reset_evt, subscribers, exit)?;
    Ok(Outcome {
        exit,
        stats,
        elapsed: start.elapsed(),
        displays: pci.display_summaries(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pvpanic_panic_ends_the_vm_and_a_crash_kernel_does_not() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let mut handler = pvpanic_handler(exit.clone());
        handler(PvpanicEvent::CrashLoaded);
        assert_eq!(exit.reason(), None);
        handler(PvpanicEvent::Panicked);
        assert_eq!(exit.reason(), Some(VmExit::GuestPanic));
        assert_eq!(exit.reason().unwrap().exit_code(), 3);
    }

    #[test]
    fn acpi_power_off_and_reset_end_the_vm_with_status_0() {
        for (event, want) in [
            (AcpiPmEvent::PowerOff, VmExit::PowerOff),
            (AcpiPmEvent::Reset, VmExit::Reset),
        ] {
            let exit = Arc::new(ExitNotifier::new().unwrap());
            acpi_pm_handler(exit.clone())(event);
            let reason = exit.reason().unwrap();
            assert_eq!(reason, want);
            assert_eq!(reason.exit_code(), 0);
        }
    }
}
