//! The main thread's event loop (event-manager): host stdin to the guest's serial port, guest
//! reset requests from the i8042, and VM exits reported by the vCPU threads.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use log::{debug, warn};
use vmm_sys_util::eventfd::EventFd;

use crate::terminal::EscapeFilter;
use crate::vcpu::{ExitNotifier, VmExit};
use crate::vm::SharedSerial;

/// Errors of the event loop.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// epoll failed.
    #[error("event loop: {0}")]
    EventManager(#[from] event_manager::Error),
}

/// A subscriber of the main event loop.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Forwards bytes read from an input fd (the host's stdin) to the guest's UART.
pub struct SerialInput<R: Read + AsRawFd + Send> {
    input: R,
    serial: SharedSerial,
    escape: Option<(EscapeFilter, Arc<ExitNotifier>)>,
}

impl<R: Read + AsRawFd + Send> SerialInput<R> {
    /// Feeds `input` to `serial`.
    pub fn new(input: R, serial: SharedSerial) -> Self {
        SerialInput {
            input,
            serial,
            escape: None,
        }
    }

    /// Also watches the input for `Ctrl-A x` ([`EscapeFilter`]), which ends the VM with
    /// [`VmExit::Quit`] recorded in `exit`.
    pub fn with_escape(mut self, exit: Arc<ExitNotifier>) -> Self {
        self.escape = Some((EscapeFilter::new(), exit));
        self
    }
}

impl<R: Read + AsRawFd + Send> MutEventSubscriber for SerialInput<R> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 256];
        let n = if events.event_set().contains(EventSet::IN) {
            match self.input.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("console input: {e}; no more input goes to the guest");
                    0
                }
            }
        } else {
            0
        };
        if n == 0 {
            // EOF, hang-up or error: stop watching, or epoll would report it forever.
            debug!("console input closed");
            let _ = ops.remove(Events::empty_raw(self.input.as_raw_fd()));
            return;
        }
        let filtered;
        let mut bytes = &buf[..n];
        if let Some((filter, exit)) = &mut self.escape {
            filtered = filter.feed(bytes);
            if filtered.quit {
                exit.notify(VmExit::Quit);
            }
            bytes = &filtered.guest;
        }
        match self.serial.lock() {
            Ok(mut s) => {
                s.queue_input(bytes);
            }
            Err(_) => warn!("serial device lock poisoned; input dropped"),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        // Regular files and /dev/null cannot be polled (EPERM): then there is simply no input.
        if let Err(e) = ops.add(Events::new_raw(self.input.as_raw_fd(), EventSet::IN)) {
            debug!("console input not pollable ({e}); guest gets no input");
        }
    }
}

/// Watches the i8042 reset eventfd and the vCPUs' exit eventfd.
pub struct ExitWatcher {
    reset_evt: Option<EventFd>,
    exit: Arc<ExitNotifier>,
}

impl ExitWatcher {
    /// Turns `reset_evt` into [`VmExit::Reset`] and wakes on `exit`.
    pub fn new(reset_evt: Option<EventFd>, exit: Arc<ExitNotifier>) -> Self {
        ExitWatcher { reset_evt, exit }
    }

    fn fd_of(evt: &EventFd) -> RawFd {
        evt.as_raw_fd()
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if let Some(reset) = &self.reset_evt {
            if events.fd() == Self::fd_of(reset) {
                let _ = reset.read();
                self.exit.notify(VmExit::Reset);
                return;
            }
        }
        if events.fd() == Self::fd_of(self.exit.eventfd()) {
            let _ = self.exit.eventfd().read();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Some(reset) = &self.reset_evt {
            if let Err(e) = ops.add(Events::new(reset, EventSet::IN)) {
                warn!("cannot watch the reset event: {e}");
            }
        }
        if let Err(e) = ops.add(Events::new(self.exit.eventfd(), EventSet::IN)) {
            warn!("cannot watch the exit event: {e}");
        }
    }
}

/// The main-thread loop.
pub struct EventLoop {
    manager: EventManager<Subscriber>,
    exit: Arc<ExitNotifier>,
}

impl EventLoop {
    /// A loop that ends when `exit` holds a reason; `reset_evt` (the i8042's) counts as one.
    pub fn new(
        exit: Arc<ExitNotifier>,
        reset_evt: Option<EventFd>,
    ) -> Result<Self, EventLoopError> {
        let mut manager = EventManager::<Subscriber>::new()?;
        manager.add_subscriber(Arc::new(Mutex::new(ExitWatcher::new(
            reset_evt,
            exit.clone(),
        ))));
        Ok(EventLoop { manager, exit })
    }

    /// Adds a subscriber (e.g. [`SerialInput`]).
    pub fn add(&mut self, subscriber: Subscriber) {
        self.manager.add_subscriber(subscriber);
    }

    /// Dispatches events until a VM exit reason is recorded, and returns it.
    pub fn run(&mut self) -> Result<VmExit, EventLoopError> {
        loop {
            if let Some(reason) = self.exit.reason() {
                return Ok(reason);
            }
            match self.manager.run() {
                Ok(_) => {}
                Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EINTR => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::legacy::{EventFdTrigger, SerialDevice};
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use vm_device::bus::PioAddress;
    use vm_device::MutDevicePio;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn reset_event_ends_the_loop() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let trigger = reset.try_clone().unwrap();
        let mut lp = EventLoop::new(exit, Some(reset)).unwrap();
        trigger.write(1).unwrap();
        assert_eq!(lp.run().unwrap(), VmExit::Reset);
    }

    #[test]
    fn first_reported_exit_wins() {
        let exit = Arc::new(ExitNotifier::new().unwrap());
        exit.notify(VmExit::TripleFault);
        exit.notify(VmExit::Error("later".into()));
        let mut lp = EventLoop::new(exit, None).unwrap();
        assert_eq!(lp.run().unwrap(), VmExit::TripleFault);
    }

    #[test]
    fn ctrl_a_x_on_the_input_ends_the_loop_with_quit() {
        let (mut host, guest_side) = UnixStream::pair().unwrap();
        let serial: SharedSerial = Arc::new(Mutex::new(SerialDevice::new(
            EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            Box::new(Vec::new()),
        )));
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let mut lp = EventLoop::new(exit.clone(), None).unwrap();
        lp.add(Arc::new(Mutex::new(
            SerialInput::new(guest_side, serial.clone()).with_escape(exit.clone()),
        )));
        host.write_all(b"a\x01").unwrap();
        lp.manager.run_with_timeout(1000).unwrap();
        assert_eq!(exit.reason(), None, "a lone Ctrl-A waits for the next key");
        host.write_all(b"x").unwrap();
        assert_eq!(lp.run().unwrap(), VmExit::Quit);
        assert_eq!(VmExit::Quit.exit_code(), 0);
        let mut s = serial.lock().unwrap();
        let mut b = [0u8];
        s.pio_read(PioAddress(0x3f8), 0, &mut b);
        assert_eq!(b, *b"a", "only the key before the escape reached the guest");
    }

    #[test]
    fn input_reaches_the_uart() {
        let (mut host, guest_side) = UnixStream::pair().unwrap();
        let serial: SharedSerial = Arc::new(Mutex::new(SerialDevice::new(
            EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            Box::new(Vec::new()),
        )));
        let exit = Arc::new(ExitNotifier::new().unwrap());
        let mut lp = EventLoop::new(exit.clone(), None).unwrap();
        lp.add(Arc::new(Mutex::new(SerialInput::new(
            guest_side,
            serial.clone(),
        ))));
        host.write_all(b"ls\n").unwrap();
        // One round of dispatch, then read the UART's receive register.
        lp.manager.run_with_timeout(1000).unwrap();
        let mut got = Vec::new();
        let mut s = serial.lock().unwrap();
        for _ in 0..3 {
            let mut b = [0u8];
            s.pio_read(PioAddress(0x3f8), 0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, b"ls\n");
        drop(s);
        // EOF unsubscribes the input instead of spinning.
        drop(host);
        lp.manager.run_with_timeout(1000).unwrap();
        assert_eq!(lp.manager.run_with_timeout(0).unwrap(), 0);
    }
}
