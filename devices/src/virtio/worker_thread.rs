//! A virtio device's worker thread and the eventfd that stops it (one per activation).

use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A running worker: [`WorkerThread::stop`] signals its kill eventfd and joins it.
#[derive(Debug)]
pub(crate) struct WorkerThread {
    name: &'static str,
    kill: EventFd,
    handle: JoinHandle<()>,
}

impl WorkerThread {
    /// Runs `body` on a thread called `name`. `body` gets the kill eventfd: it watches it and
    /// returns when it becomes readable.
    pub(crate) fn spawn(
        name: &'static str,
        body: impl FnOnce(EventFd) + Send + 'static,
    ) -> Result<Self, crate::Error> {
        let kill = EventFd::new(EFD_NONBLOCK).map_err(crate::Error::EventFd)?;
        let worker_kill = kill.try_clone().map_err(crate::Error::EventFd)?;
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(worker_kill))
            .map_err(|source| crate::Error::Thread { name, source })?;
        Ok(WorkerThread { name, kill, handle })
    }

    /// Tells the thread to return and waits until it has.
    pub(crate) fn stop(self) {
        if let Err(e) = self.kill.write(1) {
            log::error!("{}: stopping the worker: {e}", self.name);
        }
        if self.handle.join().is_err() {
            log::error!("{}: the worker thread panicked", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn the_body_runs_until_its_kill_eventfd_fires() {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let w = WorkerThread::spawn("test-worker", move |kill| {
            // Block until stop() writes the eventfd.
            let mut fds = [libc::pollfd {
                fd: kill.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd for the length given; the fd lives for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) };
            assert_eq!(n, 1, "woken by the kill eventfd");
            d.store(true, Ordering::SeqCst);
        })
        .unwrap();
        assert!(!done.load(Ordering::SeqCst));
        w.stop();
        assert!(
            done.load(Ordering::SeqCst),
            "stop() returns after the body did"
        );
    }
}
