//! An ioeventfd registrar that keeps the registered addresses and a small virtio device that
//! records what the transport tells it.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::lock;
use crate::virtio::{ActivatedQueue, IoEventRegistrar, VirtioDevice, VirtioInterrupt};
use crate::Error;

/// Keeps the addresses ioeventfds are registered at, like `KVM_IOEVENTFD` would.
#[derive(Default)]
pub struct FakeIoEvents {
    /// Registered addresses, in registration order.
    pub registered: Mutex<Vec<u64>>,
}

impl IoEventRegistrar for FakeIoEvents {
    fn register(&self, _fd: &EventFd, addr: u64) -> Result<(), Error> {
        lock(&self.registered).push(addr);
        Ok(())
    }
    fn unregister(&self, _fd: &EventFd, addr: u64) -> Result<(), Error> {
        lock(&self.registered).retain(|a| *a != addr);
        Ok(())
    }
}

/// What [`FakeVirtioDevice`] was told.
#[derive(Default)]
pub struct FakeVirtioState {
    /// Features of the last `ack_features`.
    pub acked: Option<u64>,
    /// (index, size, descriptor table address) of the queues of the last activation.
    pub activated: Vec<(u16, u16, u64)>,
    /// The notify eventfds of the last activation.
    pub notify: Vec<EventFd>,
    /// The interrupt of the last activation (cleared by reset).
    pub interrupt: Option<Arc<dyn VirtioInterrupt>>,
    /// Number of activations.
    pub activations: u32,
    /// Number of resets.
    pub resets: u32,
    /// Device configuration writes (offset, bytes).
    pub config_writes: Vec<(u64, Vec<u8>)>,
    /// `activate` fails (counting the attempt) while set.
    pub refuse_activation: bool,
    /// Queue maximum sizes instead of [`FakeVirtioDevice::QUEUE_MAX_SIZES`].
    pub max_sizes: Option<Vec<u16>>,
}

/// A virtio device of type 16 (GPU) with two queues (max sizes 256 and 16) offering feature
/// bits 1 and 3 (queue sizes and activation can be changed through its state); its configuration space reads `offset + i` at byte `i`.
pub struct FakeVirtioDevice(pub Arc<Mutex<FakeVirtioState>>);

impl FakeVirtioDevice {
    /// Maximum sizes of the two queues.
    pub const QUEUE_MAX_SIZES: [u16; 2] = [256, 16];
    /// Device feature bits offered.
    pub const FEATURES: u64 = 0b1010;

    /// The device and the record of what it is told.
    pub fn new() -> (Self, Arc<Mutex<FakeVirtioState>>) {
        let state = Arc::new(Mutex::new(FakeVirtioState::default()));
        (Self(state.clone()), state)
    }
}

impl VirtioDevice for FakeVirtioDevice {
    fn device_type(&self) -> u32 {
        16
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        lock(&self.0)
            .max_sizes
            .clone()
            .unwrap_or_else(|| Self::QUEUE_MAX_SIZES.to_vec())
    }
    fn device_features(&self) -> u64 {
        Self::FEATURES
    }
    fn ack_features(&mut self, f: u64) {
        lock(&self.0).acked = Some(f);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        lock(&self.0).config_writes.push((offset, data.to_vec()));
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<(), Error> {
        let mut s = lock(&self.0);
        s.activations += 1;
        if s.refuse_activation {
            return Err(Error::QueueNotEnabled {
                index: 0,
                name: "refused by the fake device",
            });
        }
        s.activated.clear();
        s.notify.clear();
        for q in queues {
            s.activated
                .push((q.index, q.queue.size(), q.queue.desc_table()));
            s.notify.push(q.notify);
        }
        s.interrupt = Some(interrupt);
        Ok(())
    }
    fn reset(&mut self) {
        let mut s = lock(&self.0);
        s.resets += 1;
        s.interrupt = None;
    }
}
