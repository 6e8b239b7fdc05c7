//! The `virtio-gpu` device model behind the virtio transport: configuration space, feature
//! bits and a worker thread that serves both queues when their notify eventfds fire.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_ids::VIRTIO_ID_GPU;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use virtio_gpu_blob::protocol::NUM_SCANOUTS;
use virtio_gpu_blob::{GpuDevice, QueueKind, DEVICE_FEATURES};

use super::worker_thread::WorkerThread;
use super::{ActivatedQueue, InterruptSource, VirtioDevice, VirtioInterrupt};

/// The GPU model over the guest memory the transport hands over at activation.
pub type GpuModel = GpuDevice<Arc<GuestMemoryMmap>>;

/// Size of the control queue.
pub const CONTROL_QUEUE_SIZE: u16 = 256;
/// Size of the cursor queue.
pub const CURSOR_QUEUE_SIZE: u16 = 16;

const KILL_TOKEN: u64 = u64::MAX;

/// virtio-gpu behind a virtio transport.
pub struct VirtioGpu {
    device: Arc<Mutex<GpuModel>>,
    worker: Option<WorkerThread>,
    acked_features: u64,
    events_read: u32,
}

fn lock(device: &Mutex<GpuModel>) -> MutexGuard<'_, GpuModel> {
    // A panic in a handler would be a bug; the state is still usable for a reset.
    device.lock().unwrap_or_else(|p| p.into_inner())
}

impl VirtioGpu {
    /// Wraps a device built with [`GpuDevice::new`].
    pub fn new(device: GpuModel) -> Self {
        VirtioGpu {
            device: Arc::new(Mutex::new(device)),
            worker: None,
            acked_features: 0,
            events_read: 0,
        }
    }

    /// The shared device (for diagnostics and tests).
    pub fn device(&self) -> Arc<Mutex<GpuModel>> {
        self.device.clone()
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }

    fn config_bytes(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..4].copy_from_slice(&self.events_read.to_le_bytes());
        // events_clear reads 0.
        c[8..12].copy_from_slice(&NUM_SCANOUTS.to_le_bytes());
        // num_capsets: 0 (no 3D).
        c
    }
}

impl Drop for VirtioGpu {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

fn serve(
    device: &Mutex<GpuModel>,
    queue: &mut Queue,
    kind: QueueKind,
    index: u16,
    interrupt: &dyn VirtioInterrupt,
) {
    match lock(device).process_queue(queue, kind) {
        Ok(true) => interrupt.trigger(InterruptSource::Queue(index)),
        Ok(false) => {}
        Err(e) => log::error!("virtio-gpu: queue {index}: {e}"),
    }
}

fn run_worker(
    device: Arc<Mutex<GpuModel>>,
    interrupt: Arc<dyn VirtioInterrupt>,
    mut queues: Vec<(ActivatedQueue, QueueKind)>,
    kill: EventFd,
) {
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log::error!("virtio-gpu: epoll: {e}");
            return;
        }
    };
    let add = |fd: i32, token: u64| {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    };
    for (i, (q, _)) in queues.iter().enumerate() {
        if let Err(e) = add(q.notify.as_raw_fd(), i as u64) {
            log::error!("virtio-gpu: epoll add: {e}");
            return;
        }
    }
    if let Err(e) = add(kill.as_raw_fd(), KILL_TOKEN) {
        log::error!("virtio-gpu: epoll add: {e}");
        return;
    }
    // Requests posted before activation.
    for (q, kind) in queues.iter_mut() {
        serve(&device, &mut q.queue, *kind, q.index, interrupt.as_ref());
    }
    let mut events = vec![EpollEvent::default(); queues.len() + 1];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("virtio-gpu: epoll wait: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == KILL_TOKEN {
                return;
            }
            let Some((q, kind)) = queues.get_mut(token as usize) else {
                continue;
            };
            // Non-blocking: a spurious wakeup reads EAGAIN, which is fine.
            let _ = q.notify.read();
            serve(&device, &mut q.queue, *kind, q.index, interrupt.as_ref());
        }
    }
}

impl VirtioDevice for VirtioGpu {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_GPU
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![CONTROL_QUEUE_SIZE, CURSOR_QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        DEVICE_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| c.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only events_clear (offset 4, 4 bytes) is writable.
        if offset == 4 && data.len() == 4 {
            let mut b = [0u8; 4];
            b.copy_from_slice(data);
            self.events_read &= !u32::from_le_bytes(b);
        }
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActivatedQueue>,
    ) -> Result<(), crate::Error> {
        self.stop_worker();
        lock(&self.device).activate(Arc::new(mem));
        let queues: Vec<(ActivatedQueue, QueueKind)> = queues
            .into_iter()
            .filter_map(|q| match q.index {
                0 => Some((q, QueueKind::Control)),
                1 => Some((q, QueueKind::Cursor)),
                _ => None,
            })
            .collect();
        if !queues.iter().any(|(_, k)| *k == QueueKind::Control) {
            return Err(crate::Error::QueueNotEnabled {
                index: 0,
                name: "control",
            });
        }
        let device = self.device.clone();
        self.worker = Some(WorkerThread::spawn("virtio-gpu", move |kill| {
            run_worker(device, interrupt, queues, kill)
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        self.stop_worker();
        lock(&self.device).reset();
        self.acked_features = 0;
        self.events_read = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use virtio_gpu_blob::display::HeadlessDisplay;
    use virtio_gpu_blob::protocol::{encode, resp};
    use virtio_gpu_blob::{BlobExporter, GpuConfig};

    #[derive(Default)]
    struct CountingInterrupt(AtomicU32);

    impl VirtioInterrupt for CountingInterrupt {
        fn trigger(&self, _source: InterruptSource) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn activation_without_the_control_queue_is_refused_naming_it() {
        let mut gpu = VirtioGpu::new(GpuDevice::new(
            GpuConfig::default(),
            Box::new(HeadlessDisplay::default()),
            Box::new(BlobExporter::new()),
        ));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let err = gpu
            .activate(mem, Arc::new(CountingInterrupt::default()), Vec::new())
            .unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::QueueNotEnabled {
                    index: 0,
                    name: "control"
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("queue 0 (control)"), "{err}");
    }

    #[test]
    fn config_space_and_features() {
        let gpu = VirtioGpu::new(GpuDevice::new(
            GpuConfig::default(),
            Box::new(HeadlessDisplay::default()),
            Box::new(BlobExporter::new()),
        ));
        assert_eq!(gpu.device_type(), 16);
        assert_eq!(gpu.device_features(), 0b1010);
        let mut d = [0u8; 4];
        gpu.read_config(8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1);
        gpu.read_config(u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    /// The worker serves a request written before the notify and interrupts once.
    #[test]
    fn worker_serves_the_control_queue_on_notify() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut gpu = VirtioGpu::new(GpuDevice::new(
            GpuConfig::default(),
            Box::new(HeadlessDisplay::default()),
            Box::new(BlobExporter::new()),
        ));
        // Ring at 0: desc table (16 entries), avail at 0x100, used at 0x200.
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(0), Some(0));
        q.set_avail_ring_address(Some(0x100), Some(0));
        q.set_used_ring_address(Some(0x200), Some(0));
        q.set_ready(true);
        let notify = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let irq = Arc::new(CountingInterrupt::default());
        gpu.activate(
            mem.clone(),
            irq.clone(),
            vec![ActivatedQueue {
                index: 0,
                queue: q,
                notify: notify.try_clone().unwrap(),
            }],
        )
        .unwrap();
        let req = encode::get_display_info();
        mem.write_slice(&req, GuestAddress(0x1000)).unwrap();
        let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            mem.write_obj(addr, GuestAddress(i * 16)).unwrap();
            mem.write_obj(len, GuestAddress(i * 16 + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(i * 16 + 12)).unwrap();
            mem.write_obj(next, GuestAddress(i * 16 + 14)).unwrap();
        };
        desc(0, 0x1000, req.len() as u32, 1, 1);
        desc(1, 0x2000, 1024, 2, 0);
        mem.write_obj(0u16, GuestAddress(0x104)).unwrap();
        mem.write_obj(1u16, GuestAddress(0x102)).unwrap();
        notify.write(1).unwrap();
        let start = Instant::now();
        while mem.read_obj::<u16>(GuestAddress(0x202)).unwrap() != 1 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "worker did not answer"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let t: u32 = mem.read_obj(GuestAddress(0x2000)).unwrap();
        assert_eq!(t, resp::OK_DISPLAY_INFO);
        while irq.0.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "no interrupt");
            std::thread::sleep(Duration::from_millis(1));
        }
        gpu.reset();
        assert!(gpu.worker.is_none());
    }
}
