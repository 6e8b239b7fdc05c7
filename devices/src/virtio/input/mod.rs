//! virtio-input: a keyboard or an absolute pointer (tablet) whose input comes from host
//! threads (a VNC server's clients, ...) through [`InputHandle`]s.
//!
//! - `config`: what each kind of device reports (name, ids, event codes, axis ranges) and
//!   the select/subsel configuration window the driver reads it through.
//! - `events`: the 8-byte events and the bounded queue of those waiting for guest buffers.
//! - `handle`: [`InputHandle`], the injection API, and the state it shares with the device.
//! - `worker`: the thread that moves pending events into the event queue's buffers and
//!   returns the status queue's buffers.
//!
//! Queue 0 (eventq) carries events to the driver, one per buffer; queue 1 (statusq) brings
//! the driver's own events (keyboard LEDs), which are logged at debug level and returned.
//! The device has no feature bits of its own.

mod config;
mod events;
mod handle;
mod worker;

#[cfg(test)]
mod device_tests;

use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_INPUT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::worker_thread::WorkerThread;
use super::{ActivatedQueue, VirtioDevice, VirtioInterrupt};
use config::{ConfigSpace, Profile, KEYBOARD, TABLET};
use handle::Shared;

pub use config::TABLET_ABS_MAX;
pub use events::PENDING_EVENTS;
pub use handle::InputHandle;

/// Size of the event queue (the most buffers the driver can offer at once).
pub const EVENT_QUEUE_SIZE: u16 = 64;
/// Size of the status queue.
pub const STATUS_QUEUE_SIZE: u16 = 64;

/// Which input device a [`VirtioInput`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A keyboard ("vmm virtio keyboard"): keys `KEY_ESC` to `KEY_MICMUTE`, auto-repeat by
    /// the guest, lock LEDs reported by the guest.
    Keyboard,
    /// An absolute pointer ("vmm virtio tablet"): X and Y in `0..=TABLET_ABS_MAX`, left,
    /// middle and right buttons, a scroll wheel.
    Tablet,
}

/// A virtio-input device behind a virtio transport. Input is injected through
/// [`VirtioInput::handle`]; it reaches the guest once the driver has activated the device.
pub struct VirtioInput {
    kind: InputKind,
    shared: Arc<Shared>,
    config: ConfigSpace,
    worker: Option<WorkerThread>,
}

impl std::fmt::Debug for VirtioInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioInput")
            .field("kind", &self.kind)
            .field("active", &self.worker.is_some())
            .finish()
    }
}

impl VirtioInput {
    /// A keyboard. Fails only if its wakeup eventfd cannot be created.
    pub fn keyboard() -> Result<Self, crate::Error> {
        Self::new(InputKind::Keyboard)
    }

    /// An absolute pointer. Fails only if its wakeup eventfd cannot be created.
    pub fn tablet() -> Result<Self, crate::Error> {
        Self::new(InputKind::Tablet)
    }

    /// A device of `kind`.
    pub fn new(kind: InputKind) -> Result<Self, crate::Error> {
        let profile: &'static Profile = match kind {
            InputKind::Keyboard => &KEYBOARD,
            InputKind::Tablet => &TABLET,
        };
        let wake = EventFd::new(EFD_NONBLOCK).map_err(crate::Error::EventFd)?;
        Ok(VirtioInput {
            kind,
            shared: Arc::new(Shared::new(profile, wake)),
            config: ConfigSpace::new(profile),
            worker: None,
        })
    }

    /// Which device this is.
    pub fn kind(&self) -> InputKind {
        self.kind
    }

    /// A handle to inject input from any thread; valid for the device's whole life, across
    /// resets and re-activations.
    pub fn handle(&self) -> InputHandle {
        InputHandle {
            shared: self.shared.clone(),
        }
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

impl Drop for VirtioInput {
    fn drop(&mut self) {
        self.stop_worker();
        // Handles that outlive the device drop what they are given.
        self.shared.set_active(false);
    }
}

impl VirtioDevice for VirtioInput {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_INPUT
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![EVENT_QUEUE_SIZE, STATUS_QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<(), crate::Error> {
        self.stop_worker();
        self.shared.set_active(false);
        let mut event = None;
        let mut status = None;
        for q in queues {
            match q.index {
                0 => event = Some(q),
                1 => status = Some(q),
                _ => {}
            }
        }
        let Some(event) = event else {
            return Err(crate::Error::QueueNotEnabled {
                index: 0,
                name: "eventq",
            });
        };
        let shared = self.shared.clone();
        let queues = worker::Queues { event, status };
        // Active before the worker starts: what is injected from now on is delivered.
        self.shared.set_active(true);
        let spawned = WorkerThread::spawn("virtio-input", move |kill| {
            worker::run(shared, mem, interrupt, queues, kill)
        });
        match spawned {
            Ok(w) => {
                self.worker = Some(w);
                Ok(())
            }
            Err(e) => {
                self.shared.set_active(false);
                Err(e)
            }
        }
    }

    fn reset(&mut self) {
        self.stop_worker();
        self.shared.set_active(false);
        self.config.reset();
    }
}
