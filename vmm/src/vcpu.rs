//! The vCPU run loop: one thread per vCPU, port and MMIO exits dispatched to the `IoManager`,
//! every other exit turned into a VM exit reason.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use log::{debug, warn};
use log_limit::{debug_limit_global, warn_limit_global};
use vm_device::bus::{MmioAddress, PioAddress};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::GUEST_LOG_INTERVAL;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest asked for a reset through the i8042 (`reboot=k`) or KVM_SYSTEM_EVENT_RESET.
    Reset,
    /// The guest reported a kernel panic through pvpanic (`PVPANIC_PANICKED`).
    GuestPanic,
    /// A vCPU triple-faulted (KVM_EXIT_SHUTDOWN): `reboot=t`, or a guest crash.
    TripleFault,
    /// The guest powered off (KVM_SYSTEM_EVENT_SHUTDOWN).
    PowerOff,
    /// The user typed the console escape `Ctrl-A x`.
    Quit,
    /// A vCPU executed HLT with no in-kernel irqchip to wake it (tiny test guests only).
    Halted,
    /// A KVM error or an exit the VMM cannot handle; the text names it and dumps registers.
    Error(String),
    /// The VMM stopped the VM after SIGTERM/SIGINT: the guest did not power off in time, or a
    /// second signal came.
    Stopped {
        /// The signal's name.
        signal: &'static str,
        /// Why the guest was not waited for.
        cause: StopCause,
    },
    /// A vCPU thread panicked (a VMM bug, e.g. in a device serving an exit): the VM cannot go
    /// on without that vCPU.
    VcpuPanic {
        /// Index of the vCPU.
        id: u8,
        /// The panic message.
        message: String,
    },
}

/// Why the VMM stopped a VM it had asked to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The guest had not powered off when the shutdown timeout ran out.
    Timeout(std::time::Duration),
    /// A second signal came.
    SecondSignal,
}

/// Exit status: the guest reset, powered off or halted.
pub const EXIT_OK: i32 = 0;
/// Exit status: a VMM or KVM error.
pub const EXIT_ERROR: i32 = 1;
/// Exit status: a command-line error (clap's usage-error code).
pub const EXIT_USAGE: i32 = 2;
/// Exit status: the guest reported a kernel panic through pvpanic.
pub const EXIT_GUEST_PANIC: i32 = 3;
/// Exit status: a vCPU triple-faulted (`reboot=t`, or a guest crash without pvpanic).
pub const EXIT_TRIPLE_FAULT: i32 = 4;

/// Exit status: the VMM stopped the guest after SIGTERM/SIGINT (it did not power off within the
/// shutdown timeout, or a second signal came).
pub const EXIT_STOPPED: i32 = 5;

/// Every exit status of the `vmm` binary with what it means, for `--help` and the docs.
pub const EXIT_CODES: &[(i32, &str)] = &[
    (
        EXIT_OK,
        "the guest reset or powered off (also after SIGTERM), or Ctrl-A x quit",
    ),
    (EXIT_ERROR, "VMM or KVM error"),
    (EXIT_USAGE, "command-line error"),
    (
        EXIT_GUEST_PANIC,
        "guest kernel panic, reported through the pvpanic device",
    ),
    (
        EXIT_TRIPLE_FAULT,
        "triple fault (reboot=t, or a guest crash)",
    ),
    (
        EXIT_STOPPED,
        "stopped by the VMM: the guest did not power off within --shutdown-timeout of SIGTERM, or a second SIGTERM came",
    ),
];

impl VmExit {
    /// Process exit status for this reason (see [`EXIT_CODES`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::Reset | VmExit::PowerOff | VmExit::Halted | VmExit::Quit => EXIT_OK,
            VmExit::GuestPanic => EXIT_GUEST_PANIC,
            VmExit::TripleFault => EXIT_TRIPLE_FAULT,
            VmExit::Stopped { .. } => EXIT_STOPPED,
            VmExit::Error(_) | VmExit::VcpuPanic { .. } => EXIT_ERROR,
        }
    }
}

/// First-reported-wins record of why the VM stops, plus an eventfd that wakes the event loop.
#[derive(Debug)]
pub struct ExitNotifier {
    reason: Mutex<Option<VmExit>>,
    evt: EventFd,
}

impl ExitNotifier {
    /// A notifier with no reason recorded.
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitNotifier {
            reason: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records `reason` unless one is already recorded, and wakes the event loop.
    pub fn notify(&self, reason: VmExit) {
        // The record is plain data: a panic elsewhere while it was locked leaves it usable.
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        if let Err(e) = self.evt.write(1) {
            warn!("cannot wake the event loop: {e}");
        }
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<VmExit> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The eventfd the event loop polls.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Counts of exits the VMM handled in user space, for the exit summary.
#[derive(Debug, Default, Clone)]
pub struct ExitStats {
    /// Port I/O exits per port.
    pub pio: HashMap<u16, u64>,
    /// MMIO exits.
    pub mmio: u64,
    /// KVM's own per-vCPU counters (in-kernel exits included), summed over vCPUs.
    pub kvm: BTreeMap<String, u64>,
    /// Event-delivery errors after which the vCPU ran again (see `DeliveryRetry`).
    pub delivery_retries: u64,
}

/// KVM counters shown in the summary, in this order.
const KVM_SUMMARY_STATS: &[&str] = &[
    "exits",
    "io_exits",
    "mmio_exits",
    "halt_exits",
    "irq_exits",
    "pf_fixed",
    "insn_emulation",
];

impl ExitStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ExitStats) {
        for (port, n) in &other.pio {
            *self.pio.entry(*port).or_default() += n;
        }
        self.mmio += other.mmio;
        for (name, n) in &other.kvm {
            *self.kvm.entry(name.clone()).or_default() += n;
        }
        self.delivery_retries += other.delivery_retries;
    }

    /// Total exits counted.
    pub fn total(&self) -> u64 {
        self.pio.values().sum::<u64>() + self.mmio
    }

    /// One line: totals and the busiest ports.
    pub fn summary(&self) -> String {
        let mut ports: Vec<_> = self.pio.iter().collect();
        ports.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut s = format!(
            "{} user-space exits: {} port I/O, {} MMIO",
            self.total(),
            self.total() - self.mmio,
            self.mmio
        );
        if !ports.is_empty() {
            s.push_str("; top ports:");
            for (port, n) in ports.iter().take(6) {
                let _ = write!(s, " {port:#x}={n}");
            }
        }
        if !self.kvm.is_empty() {
            s.push_str("; KVM:");
            for name in KVM_SUMMARY_STATS {
                if let Some(n) = self.kvm.get(*name) {
                    let _ = write!(s, " {name}={n}");
                }
            }
        }
        if self.delivery_retries > 0 {
            let _ = write!(s, "; event-delivery retries: {}", self.delivery_retries);
        }
        s
    }
}

/// Signal used to kick vCPU threads out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn noop_signal_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler of the kick signal, so that it interrupts KVM_RUN with EINTR
/// instead of killing the process. Idempotent.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), noop_signal_handler)
}

/// Whether to run a vCPU again after KVM's event-delivery error (`KVM_INTERNAL_ERROR_DELIVERY_EV`).
///
/// KVM reports it when it has to emulate an instruction (an MMIO access that faulted in the
/// nested page tables) and the exit says an event was being delivered to the guest. A host CPU
/// that is itself emulated (QEMU's TCG with nested SVM) leaves the type of the last event it
/// delivered to the guest in the exit's event information; KVM reads that as a delivery in
/// progress and stops an ordinary MMIO access. Run again, the vCPU repeats the access with no
/// event in flight and KVM emulates it. A real fault during event delivery comes back at once, so
/// the retry is allowed once until the vCPU makes progress (an exit the VMM handles).
#[derive(Debug, Default)]
struct DeliveryRetry {
    retried: bool,
}

impl DeliveryRetry {
    /// Whether an internal error with `suberror` gets one more run.
    fn allows(&mut self, suberror: u32) -> bool {
        if suberror != KVM_INTERNAL_ERROR_DELIVERY_EV || self.retried {
            return false;
        }
        self.retried = true;
        true
    }

    /// The vCPU got past the access: a later error gets its own retry.
    fn progressed(&mut self) {
        self.retried = false;
    }
}

/// A vCPU ready to run.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    io: Arc<IoManager>,
    exit: Arc<ExitNotifier>,
    stop: Arc<AtomicBool>,
    stats: ExitStats,
    delivery_retry: DeliveryRetry,
}

enum Step {
    Continue,
    Exit(VmExit),
    InternalError,
    FailEntry(u64),
    Unexpected(String),
}

impl Vcpu {
    /// Wraps a configured vCPU.
    pub fn new(
        id: u8,
        fd: VcpuFd,
        io: Arc<IoManager>,
        exit: Arc<ExitNotifier>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Vcpu {
            id,
            fd,
            io,
            exit,
            stop,
            stats: ExitStats::default(),
            delivery_retry: DeliveryRetry::default(),
        }
    }

    /// The KVM vCPU.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    fn step(&mut self) -> Result<Step, kvm_ioctls::Error> {
        // Only disjoint fields are borrowed while the exit (which borrows `self.fd`) is alive.
        let io = &self.io;
        let stats = &mut self.stats;
        let step = match self.fd.run()? {
            VcpuExit::IoIn(port, data) => {
                *stats.pio.entry(port).or_default() += 1;
                if io.pio_read(PioAddress(port), data).is_err() {
                    debug_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "unhandled port read {port:#x} ({} bytes)",
                        data.len()
                    );
                    data.fill(0xff);
                }
                Step::Continue
            }
            VcpuExit::IoOut(port, data) => {
                *stats.pio.entry(port).or_default() += 1;
                if io.pio_write(PioAddress(port), data).is_err() {
                    debug_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "unhandled port write {port:#x} ({} bytes)",
                        data.len()
                    );
                }
                Step::Continue
            }
            VcpuExit::MmioRead(addr, data) => {
                stats.mmio += 1;
                if io.mmio_read(MmioAddress(addr), data).is_err() {
                    debug_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "unhandled MMIO read {addr:#x} ({} bytes)",
                        data.len()
                    );
                    data.fill(0xff);
                }
                Step::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                stats.mmio += 1;
                if io.mmio_write(MmioAddress(addr), data).is_err() {
                    debug_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "unhandled MMIO write {addr:#x} ({} bytes)",
                        data.len()
                    );
                }
                Step::Continue
            }
            VcpuExit::Hlt => Step::Exit(VmExit::Halted),
            VcpuExit::Shutdown => Step::Exit(VmExit::TripleFault),
            VcpuExit::SystemEvent(kind, data) => match kind {
                KVM_SYSTEM_EVENT_RESET => Step::Exit(VmExit::Reset),
                KVM_SYSTEM_EVENT_SHUTDOWN => Step::Exit(VmExit::PowerOff),
                KVM_SYSTEM_EVENT_CRASH => Step::Unexpected(format!("guest crash event {data:x?}")),
                other => Step::Unexpected(format!("system event {other} {data:x?}")),
            },
            VcpuExit::InternalError => Step::InternalError,
            VcpuExit::FailEntry(reason, cpu) => {
                debug!("entry failure on host cpu {cpu}");
                Step::FailEntry(reason)
            }
            VcpuExit::Intr => Step::Continue,
            other => Step::Unexpected(format!("{other:?}")),
        };
        Ok(step)
    }

    /// The internal error's suberror and the data KVM gave with it.
    fn internal_error(&mut self) -> (u32, Vec<u64>) {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union member
        // KVM filled in; it is plain data.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        (internal.suberror, internal.data[..n].to_vec())
    }

    /// Registers and segment state, for error messages.
    pub fn dump_registers(&self) -> String {
        let mut s = String::new();
        match self.fd.get_regs() {
            Ok(r) => {
                let _ = write!(
                    s,
                    "rip={:#018x} rsp={:#018x} rbp={:#018x} rflags={:#x}\n  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
                    r.rip, r.rsp, r.rbp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi
                );
            }
            Err(e) => {
                let _ = write!(s, "(registers unavailable: {e})");
            }
        }
        match self.fd.get_sregs() {
            Ok(sr) => {
                let _ = write!(
                    s,
                    "\n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} apic_base={:#x}\n  cs={:#x} (base {:#x}, l={}) ss={:#x} gdt={:#x}/{:#x} idt={:#x}/{:#x}",
                    sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer, sr.apic_base, sr.cs.selector,
                    sr.cs.base, sr.cs.l, sr.ss.selector, sr.gdt.base, sr.gdt.limit,
                    sr.idt.base, sr.idt.limit
                );
            }
            Err(e) => {
                let _ = write!(s, "\n  (special registers unavailable: {e})");
            }
        }
        s
    }

    fn error(&self, what: String) -> VmExit {
        VmExit::Error(format!(
            "vCPU {}: {what}\n  {}",
            self.id,
            self.dump_registers()
        ))
    }

    /// Runs until the guest stops the VM, an error occurs, or `stop` is set and the thread is
    /// kicked. Reports the reason through the exit notifier and returns the exit counts.
    pub fn run(mut self) -> ExitStats {
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let step = match self.step() {
                Ok(step) => step,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    continue;
                }
                Err(e) => Step::Unexpected(format!("KVM_RUN failed: {e}")),
            };
            let reason = match step {
                Step::Continue => {
                    self.delivery_retry.progressed();
                    continue;
                }
                Step::Exit(reason) => reason,
                Step::InternalError => {
                    let (suberror, data) = self.internal_error();
                    if self.delivery_retry.allows(suberror) {
                        self.stats.delivery_retries += 1;
                        warn_limit_global!(
                            1,
                            GUEST_LOG_INTERVAL,
                            "vCPU {}: KVM would not emulate an access it took for part of an \
                             event delivery (suberror {suberror}, data {data:x?}); an emulated \
                             host CPU reports ordinary accesses so: running the vCPU again, once",
                            self.id
                        );
                        continue;
                    }
                    self.error(format!(
                        "KVM_EXIT_INTERNAL_ERROR suberror {suberror} data {data:x?}"
                    ))
                }
                Step::FailEntry(reason) => self.error(format!(
                    "KVM_EXIT_FAIL_ENTRY, hardware entry failure reason {reason:#x}"
                )),
                Step::Unexpected(what) => self.error(format!("unexpected exit: {what}")),
            };
            self.exit.notify(reason);
            break;
        }
        match crate::kvm_stats::read(&self.fd) {
            Ok(kvm) => self.stats.kvm = kvm,
            Err(e) => debug!("vCPU {}: no KVM statistics: {e}", self.id),
        }
        self.stats
    }
}

/// A running vCPU thread.
pub struct VcpuThread {
    handle: JoinHandle<ExitStats>,
}

impl VcpuThread {
    /// Starts `vcpu` on its own thread. A panic on that thread ends the VM (see
    /// [`run_reporting_panics`]).
    pub fn spawn(vcpu: Vcpu) -> std::io::Result<Self> {
        let id = vcpu.id;
        let exit = vcpu.exit.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || run_reporting_panics(id, &exit, move || vcpu.run()))?;
        Ok(VcpuThread { handle })
    }

    /// Kicks the thread out of KVM_RUN until it finishes (the caller has set the stop flag),
    /// then joins it. A thread that does not stop within [`STOP_TIMEOUT`] is left behind (it
    /// ends with the process) and reports no statistics.
    pub fn stop_and_join(self) -> ExitStats {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !self.handle.is_finished() {
            if Instant::now() > deadline {
                warn!("a vCPU thread did not stop within {STOP_TIMEOUT:?}");
                return ExitStats::default();
            }
            if let Err(e) = self.handle.kill(kick_signal()) {
                warn!("cannot signal vCPU thread: {e}");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.handle.join().unwrap_or_else(|_| {
            warn!("a vCPU thread panicked");
            ExitStats::default()
        })
    }
}

/// Runs `body`, the work of vCPU `id`'s thread. If it panics, the panic is caught and
/// recorded as the VM's exit reason ([`VmExit::VcpuPanic`]), which wakes the event loop: the
/// VMM stops the other vCPUs and exits with an error instead of waiting forever for a vCPU
/// that is gone. Returns `body`'s exit counts (none after a panic).
pub fn run_reporting_panics(
    id: u8,
    exit: &ExitNotifier,
    body: impl FnOnce() -> ExitStats,
) -> ExitStats {
    // Unwind safety: after a panic nothing of `body` is used again; devices it had locked
    // are recovered from poisoning by their users (`lock_device`) or no longer reached.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(stats) => stats,
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            log::error!("vCPU {id} panicked: {message}; stopping the VM");
            exit.notify(VmExit::VcpuPanic { id, message });
            ExitStats::default()
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a format string).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// How long [`VcpuThread::stop_and_join`] waits for a vCPU thread.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_delivery_error_is_retried_once_until_the_vcpu_progresses() {
        let mut retry = DeliveryRetry::default();
        assert!(retry.allows(KVM_INTERNAL_ERROR_DELIVERY_EV));
        // The same error again with no exit handled in between: a real delivery fault.
        assert!(!retry.allows(KVM_INTERNAL_ERROR_DELIVERY_EV));
        retry.progressed();
        assert!(retry.allows(KVM_INTERNAL_ERROR_DELIVERY_EV));
        // Other internal errors (emulation failure, unexpected exit reason) are never retried.
        let mut fresh = DeliveryRetry::default();
        for suberror in [
            kvm_bindings::KVM_INTERNAL_ERROR_EMULATION,
            kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX,
            kvm_bindings::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
        ] {
            assert!(!fresh.allows(suberror), "suberror {suberror}");
        }
        assert!(fresh.allows(KVM_INTERNAL_ERROR_DELIVERY_EV));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(VmExit::Reset.exit_code(), 0);
        assert_eq!(VmExit::PowerOff.exit_code(), 0);
        assert_eq!(VmExit::Halted.exit_code(), 0);
        assert_eq!(VmExit::GuestPanic.exit_code(), 3);
        assert_eq!(VmExit::TripleFault.exit_code(), 4);
        assert_eq!(VmExit::Error("x".into()).exit_code(), 1);
        let panic = VmExit::VcpuPanic {
            id: 0,
            message: "x".into(),
        };
        assert_eq!(panic.exit_code(), 1);
    }

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let codes: Vec<i32> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
        for reason in [
            VmExit::Reset,
            VmExit::TripleFault,
            VmExit::Error("x".into()),
            VmExit::Stopped {
                signal: "SIGTERM",
                cause: StopCause::SecondSignal,
            },
        ] {
            assert!(codes.contains(&reason.exit_code()), "{reason:?}");
        }
    }

    #[test]
    fn a_panicking_vcpu_body_is_reported_as_the_exit_reason() {
        let exit = ExitNotifier::new().unwrap();
        let stats = run_reporting_panics(3, &exit, || panic!("device bug {}", 42));
        assert_eq!(stats.total(), 0);
        assert_eq!(
            exit.reason(),
            Some(VmExit::VcpuPanic {
                id: 3,
                message: "device bug 42".into()
            })
        );
        assert_eq!(exit.eventfd().read().unwrap(), 1, "event loop woken");
        assert_eq!(exit.reason().unwrap().exit_code(), 1);
        // A body that returns normally is passed through and records nothing.
        let quiet = ExitNotifier::new().unwrap();
        let ok = ExitStats {
            mmio: 7,
            ..ExitStats::default()
        };
        assert_eq!(run_reporting_panics(0, &quiet, move || ok).mmio, 7);
        assert_eq!(quiet.reason(), None);
    }

    /// The event loop ends when a vCPU thread dies of a panic (it would wait forever
    /// otherwise).
    #[test]
    fn a_panicking_vcpu_thread_ends_the_event_loop() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let mut lp = crate::event_loop::EventLoop::new(exit.clone(), None).unwrap();
        let t = std::thread::spawn(move || {
            run_reporting_panics(1, &exit, || panic!("not an exit"));
        });
        assert_eq!(
            lp.run().unwrap(),
            VmExit::VcpuPanic {
                id: 1,
                message: "not an exit".into()
            }
        );
        t.join().unwrap();
    }

    #[test]
    fn stats_merge_and_summary() {
        let mut a = ExitStats::default();
        a.pio.insert(0x3f8, 10);
        a.kvm.insert("exits".into(), 100);
        let mut b = ExitStats::default();
        b.pio.insert(0x3f8, 5);
        b.pio.insert(0x70, 7);
        b.mmio = 2;
        b.kvm.insert("exits".into(), 50);
        a.merge(&b);
        assert_eq!(a.total(), 24);
        let s = a.summary();
        assert!(
            s.starts_with("24 user-space exits: 22 port I/O, 2 MMIO"),
            "{s}"
        );
        assert!(s.contains("top ports: 0x3f8=15 0x70=7"), "{s}");
        assert!(s.ends_with("KVM: exits=150"), "{s}");
        // Retries after event-delivery errors are summed and named only when there were some.
        b.delivery_retries = 2;
        a.merge(&b);
        a.merge(&b);
        assert!(
            a.summary().ends_with("; event-delivery retries: 4"),
            "{}",
            a.summary()
        );
    }

    #[test]
    fn register_dump_names_the_state() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm");
            return;
        };
        let vm = kvm.create_vm().unwrap();
        let fd = vm.create_vcpu(0).unwrap();
        let vcpu = Vcpu::new(
            0,
            fd,
            Arc::new(IoManager::new()),
            Arc::new(ExitNotifier::new().unwrap()),
            Arc::new(AtomicBool::new(false)),
        );
        let dump = vcpu.dump_registers();
        for field in [
            "rip=0x000000000000fff0",
            "rsp=",
            "cr0=",
            "cr3=",
            "cr4=",
            "efer=",
            "cs=0xf000",
        ] {
            assert!(dump.contains(field), "{field} missing in {dump}");
        }
        let VmExit::Error(msg) = vcpu.error("KVM_EXIT_FAIL_ENTRY".into()) else {
            panic!("not an error");
        };
        assert!(
            msg.starts_with("vCPU 0: KVM_EXIT_FAIL_ENTRY\n  rip="),
            "{msg}"
        );
    }
}
