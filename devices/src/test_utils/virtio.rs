//! An ioeventfd registrar that keeps the registered addresses, a small virtio device that
//! records what the transport tells it, and the driver's side of a split virtqueue in guest
//! memory.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
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

/// Descriptor flag: the buffer continues in the `next` descriptor.
const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes the buffer.
const DESC_F_WRITE: u16 = 2;

/// One buffer of a chain a [`DriverQueue`] offers: guest address, length, device-writable.
#[derive(Debug, Clone, Copy)]
pub struct DriverBuffer {
    /// Guest address of the buffer.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u32,
    /// The device writes it (otherwise it reads it).
    pub writable: bool,
}

/// The driver's side of a split virtqueue in guest memory, as a guest driver sets it up:
/// the descriptor table at `base`, the available ring after it and the used ring after that
/// (4-byte aligned). Descriptors are handed out round-robin, so a test keeps at most `size`
/// of them outstanding.
pub struct DriverQueue {
    mem: GuestMemoryMmap,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl DriverQueue {
    /// A queue of `size` entries (a power of two) at guest address `base`.
    pub fn new(mem: &GuestMemoryMmap, size: u16, base: u64) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        DriverQueue {
            mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The device's view: a ready [`Queue`] at this queue's addresses, as the transport
    /// builds it from the driver's common-configuration writes.
    pub fn device_queue(&self) -> Queue {
        let mut q = Queue::new(self.size).expect("a power-of-two queue size");
        q.set_size(self.size);
        let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
        let (lo, hi) = split(self.desc);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.avail);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.used);
        q.set_used_ring_address(lo, hi);
        q.set_ready(true);
        q
    }

    /// Writes `buffers` as one descriptor chain and makes it available; returns its head.
    pub fn add_chain(&mut self, buffers: &[DriverBuffer]) -> u16 {
        let head = self.next_desc;
        for (i, b) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = i + 1 == buffers.len();
            let mut flags = if b.writable { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let at = self.desc + 16 * u64::from(index);
            self.write(at, b.addr);
            self.write(at + 8, b.len);
            self.write(at + 12, flags);
            self.write(at + 14, self.next_desc);
        }
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.write(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write(self.avail + 2, self.avail_idx);
        head
    }

    /// Makes one device-writable buffer available; returns its head.
    pub fn add_writable(&mut self, addr: u64, len: u32) -> u16 {
        self.add_chain(&[DriverBuffer {
            addr,
            len,
            writable: true,
        }])
    }

    /// Makes one device-readable buffer available; returns its head.
    pub fn add_readable(&mut self, addr: u64, len: u32) -> u16 {
        self.add_chain(&[DriverBuffer {
            addr,
            len,
            writable: false,
        }])
    }

    /// Sets or clears `VRING_AVAIL_F_NO_INTERRUPT` (the driver does not want interrupts).
    pub fn suppress_interrupts(&self, suppress: bool) {
        self.write(self.avail, u16::from(suppress));
    }

    /// The used ring's index as the device last wrote it.
    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.used + 2))
            .expect("the used ring is in guest memory")
    }

    /// The (head, length) entries the device added to the used ring since the last call.
    pub fn take_used(&mut self) -> Vec<(u16, u32)> {
        let end = self.used_idx();
        let mut out = Vec::new();
        while self.used_seen != end {
            let at = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
            let id: u32 = self.read(at);
            let len: u32 = self.read(at + 4);
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    fn write<T: vm_memory::ByteValued>(&self, at: u64, v: T) {
        self.mem
            .write_obj(v, GuestAddress(at))
            .expect("the ring is in guest memory");
    }

    fn read<T: vm_memory::ByteValued>(&self, at: u64) -> T {
        self.mem
            .read_obj(GuestAddress(at))
            .expect("the ring is in guest memory")
    }
}
