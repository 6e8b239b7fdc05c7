//! SIGTERM (and SIGINT when stdin is not a terminal) ask the guest to shut down: the first one
//! presses the ACPI power button; if the guest has not stopped when the shutdown timeout runs
//! out, or when a second signal comes, the VMM stops the VM ([`VmExit::Stopped`]). Either way the
//! VM ends through the normal path: vCPUs stopped, devices shut down (displays write their last
//! frame), the summary line printed.
//!
//! The handler only writes to an eventfd (async-signal-safe); [`ShutdownRequests`] does the rest
//! in the event loop.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use libc::{c_int, c_void, siginfo_t};
use log::{info, warn};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::register_signal_handler;
use vmm_sys_util::timerfd::TimerFd;

use crate::vcpu::{ExitNotifier, StopCause, VmExit};

/// Default of `--shutdown-timeout`: how long the guest has to power off after the power button.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The eventfd the handler writes to (-1 until [`install`]).
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
/// The last signal caught, for the log line.
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(num: c_int, _info: *mut siginfo_t, _unused: *mut c_void) {
    LAST_SIGNAL.store(num, Ordering::Relaxed);
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; `fd` is the eventfd `install` leaked for the
        // life of the process, and `one` is an 8-byte buffer on this stack frame.
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

/// The name of signal `num`, for log lines.
pub fn signal_name(num: i32) -> &'static str {
    match num {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

/// The caught signals, counted by an eventfd.
#[derive(Debug)]
pub struct SignalEvents {
    evt: EventFd,
}

impl SignalEvents {
    /// Number of signals since the last call (0 if none).
    fn take(&self) -> u64 {
        self.evt.read().unwrap_or(0)
    }
}

/// Catches SIGTERM, and SIGINT too when `sigint` (stdin is not a terminal), from now on. Once
/// per process: a second call returns an error.
pub fn install(sigint: bool) -> std::io::Result<SignalEvents> {
    let evt = EventFd::new(EFD_NONBLOCK)?;
    // The handler may run at any time until the process exits: it keeps its own duplicate.
    let fd = evt.try_clone()?;
    if SIGNAL_FD
        .compare_exchange(-1, fd.as_raw_fd(), Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(std::io::Error::other(
            "signal handlers are already installed",
        ));
    }
    std::mem::forget(fd);
    let mut signals = vec![libc::SIGTERM];
    if sigint {
        signals.push(libc::SIGINT);
    }
    for s in signals {
        register_signal_handler(s, on_signal)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(SignalEvents { evt })
}

/// Something that presses the guest's power button.
pub trait PowerButton: Send {
    /// Presses it once.
    fn press(&self) -> std::io::Result<()>;
}

impl PowerButton for EventFd {
    fn press(&self) -> std::io::Result<()> {
        self.write(1)
    }
}

/// The event loop's side: turns caught signals into a power button press, then a stop.
pub struct ShutdownRequests {
    signals: SignalEvents,
    button: Box<dyn PowerButton>,
    timer: TimerFd,
    timeout: Duration,
    exit: Arc<ExitNotifier>,
    pressed: bool,
}

impl ShutdownRequests {
    /// Presses `button` on the first signal, stops the VM through `exit` after `timeout` or on
    /// the next signal.
    pub fn new(
        signals: SignalEvents,
        button: Box<dyn PowerButton>,
        timeout: Duration,
        exit: Arc<ExitNotifier>,
    ) -> std::io::Result<Self> {
        Ok(ShutdownRequests {
            signals,
            button,
            timer: TimerFd::new().map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?,
            timeout,
            exit,
            pressed: false,
        })
    }

    /// Handles `count` new signals.
    fn on_signals(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let name = signal_name(LAST_SIGNAL.load(Ordering::Relaxed));
        if self.pressed || count > 1 {
            warn!("vmm: {name} again: stopping the VM");
            self.exit.notify(VmExit::Stopped {
                signal: name,
                cause: StopCause::SecondSignal,
            });
            return;
        }
        self.pressed = true;
        match self.button.press() {
            Ok(()) => info!(
                "vmm: {name}: pressed the guest's ACPI power button; the VM stops in {} s unless \
                 the guest powers off first (a second {name} stops it now)",
                self.timeout.as_secs_f64()
            ),
            Err(e) => warn!("vmm: {name}: cannot press the power button ({e})"),
        }
        if let Err(e) = self.timer.reset(self.timeout, None) {
            warn!("vmm: cannot arm the shutdown timer ({e}): stopping the VM now");
            self.on_timeout(name);
        }
    }

    fn on_timeout(&mut self, name: &'static str) {
        warn!(
            "vmm: the guest did not power off within {} s of {name}: stopping the VM",
            self.timeout.as_secs_f64()
        );
        self.exit.notify(VmExit::Stopped {
            signal: name,
            cause: StopCause::Timeout(self.timeout),
        });
    }

    fn signal_fd(&self) -> RawFd {
        self.signals.evt.as_raw_fd()
    }
}

impl MutEventSubscriber for ShutdownRequests {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.signal_fd() {
            let n = self.signals.take();
            self.on_signals(n);
        } else if events.fd() == self.timer.as_raw_fd() {
            let _ = self.timer.wait();
            self.on_timeout(signal_name(LAST_SIGNAL.load(Ordering::Relaxed)));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(self.signal_fd(), EventSet::IN)) {
            warn!("cannot watch for SIGTERM: {e}");
        }
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            warn!("cannot watch the shutdown timer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct CountingButton(Arc<AtomicUsize>);

    impl PowerButton for CountingButton {
        fn press(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn requests(timeout: Duration) -> (ShutdownRequests, Arc<AtomicUsize>, Arc<ExitNotifier>) {
        let presses = Arc::new(AtomicUsize::new(0));
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let signals = SignalEvents {
            evt: EventFd::new(EFD_NONBLOCK).unwrap(),
        };
        let r = ShutdownRequests::new(
            signals,
            Box::new(CountingButton(presses.clone())),
            timeout,
            exit.clone(),
        )
        .unwrap();
        (r, presses, exit)
    }

    #[test]
    fn the_first_signal_presses_the_button_and_the_second_stops() {
        let (mut r, presses, exit) = requests(Duration::from_secs(60));
        r.on_signals(0);
        assert_eq!(presses.load(Ordering::SeqCst), 0);
        r.on_signals(1);
        assert_eq!(presses.load(Ordering::SeqCst), 1);
        assert_eq!(exit.reason(), None, "the guest has its timeout");
        assert!(r.timer.is_armed().unwrap());
        r.on_signals(1);
        assert_eq!(presses.load(Ordering::SeqCst), 1);
        let reason = exit.reason().unwrap();
        assert!(matches!(
            reason,
            VmExit::Stopped {
                cause: StopCause::SecondSignal,
                ..
            }
        ));
        assert_eq!(reason.exit_code(), crate::vcpu::EXIT_STOPPED);
    }

    #[test]
    fn two_signals_at_once_stop_at_once() {
        let (mut r, _presses, exit) = requests(Duration::from_secs(60));
        r.on_signals(2);
        assert!(matches!(
            exit.reason(),
            Some(VmExit::Stopped {
                cause: StopCause::SecondSignal,
                ..
            })
        ));
    }

    #[test]
    fn the_timer_stops_a_guest_that_ignores_the_button() {
        let (mut r, presses, exit) = requests(Duration::from_millis(20));
        r.on_signals(1);
        assert_eq!(presses.load(Ordering::SeqCst), 1);
        // The timer fires once, after the timeout (the event loop would wake on it).
        assert_eq!(r.timer.wait().unwrap(), 1);
        r.on_timeout("SIGTERM");
        assert!(matches!(
            exit.reason(),
            Some(VmExit::Stopped {
                signal: "SIGTERM",
                cause: StopCause::Timeout(t),
            }) if t == Duration::from_millis(20)
        ));
    }
}
