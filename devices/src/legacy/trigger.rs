//! An [`EventFd`] that vm-superio devices can use as their interrupt or reset trigger.

use std::io;
use std::ops::Deref;

use vmm_sys_util::eventfd::EventFd;

/// Newtype over [`EventFd`] implementing [`vm_superio::Trigger`]: triggering writes 1 to the
/// eventfd. Registered as a KVM irqfd it injects an interrupt; polled by the event loop it
/// signals an event such as a guest reset.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        EventFdTrigger(evt)
    }

    /// Another trigger on the same underlying eventfd (a `dup` of the descriptor).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(EventFdTrigger(self.0.try_clone()?))
    }
}

impl Deref for EventFdTrigger {
    type Target = EventFd;

    fn deref(&self) -> &EventFd {
        &self.0
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_superio::Trigger;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn trigger_increments_the_eventfd_counter() {
        let t = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let clone = t.try_clone().unwrap();
        t.trigger().unwrap();
        clone.trigger().unwrap();
        assert_eq!(t.read().unwrap(), 2);
        // Drained: a second read would block.
        assert!(clone.read().is_err());
    }
}
