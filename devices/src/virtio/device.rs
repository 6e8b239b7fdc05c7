//! The trait a virtio device implements to sit behind a transport.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Why the device interrupts the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptSource {
    /// A used buffer on queue `index`.
    Queue(u16),
    /// The device configuration changed.
    Config,
}

/// How a device interrupts the driver; the transport implements it (MSI-X via irqfd).
pub trait VirtioInterrupt: Send + Sync {
    /// Signals the driver.
    fn trigger(&self, source: InterruptSource);
}

/// A queue handed to the device on activation.
pub struct ActivatedQueue {
    /// Queue index.
    pub index: u16,
    /// The ring, set up as the driver configured it.
    pub queue: Queue,
    /// Signalled when the driver notifies the queue (an ioeventfd, or written by the
    /// transport on a trapped notify write).
    pub notify: EventFd,
}

/// A virtio device (device-type specific part).
pub trait VirtioDevice: Send {
    /// `VIRTIO_ID_*`.
    fn device_type(&self) -> u32;

    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;

    /// Device feature bits (the transport adds `VIRTIO_F_VERSION_1`).
    fn device_features(&self) -> u64;

    /// The features the driver accepted (a subset of the offered ones).
    fn ack_features(&mut self, _features: u64) {}

    /// Reads the device configuration space at `offset` (out-of-range bytes read as 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device configuration space at `offset` (out-of-range writes are ignored).
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// DRIVER_OK: start serving `queues` (the enabled ones) over `mem`, interrupting through
    /// `interrupt`. An error marks the device as needing a reset.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<(), crate::Error>;

    /// Device reset (status 0): stop serving queues and return to the initial state.
    fn reset(&mut self);
}
