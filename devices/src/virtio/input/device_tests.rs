//! The device with its queues in guest memory, driven from the driver's side with
//! `test_utils::DriverQueue`: event delivery (directly and through the worker thread),
//! hostile buffers, the status queue, reset and re-activation, and the PCI transport's view.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::{KEYBOARD, TABLET};
use super::handle::Shared;
use super::worker::{deliver, drain_status, Delivery};
use super::*;
use crate::test_utils::{DriverBuffer, DriverQueue};
use crate::virtio::InterruptSource;

const MEM_SIZE: u64 = 1 << 20;
/// Event buffers: one 0x100-byte slot each from here.
const BUFS: u64 = 0x10000;

#[derive(Default)]
struct CountingInterrupt(AtomicU32);

impl VirtioInterrupt for CountingInterrupt {
    fn trigger(&self, source: InterruptSource) {
        assert!(matches!(source, InterruptSource::Queue(_)), "{source:?}");
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// Shared state of an activated device of `profile` and a handle to it, without a worker.
fn attached(profile: &'static config::Profile) -> (Arc<Shared>, InputHandle) {
    let shared = Arc::new(Shared::new(profile, EventFd::new(EFD_NONBLOCK).unwrap()));
    shared.set_active(true);
    let h = InputHandle {
        shared: shared.clone(),
    };
    (shared, h)
}

fn event_at(mem: &GuestMemoryMmap, addr: u64) -> (u16, u16, u32) {
    let mut b = [0u8; 8];
    mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
    let e = events::Event::from_le_bytes(b);
    (e.kind, e.code, e.value)
}

fn post(dq: &mut DriverQueue, n: u64, first_slot: u64) -> Vec<u16> {
    (first_slot..first_slot + n)
        .map(|i| dq.add_writable(BUFS + i * 0x100, 8))
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn events_fill_one_buffer_each_in_order() {
    let mem = mem();
    let mut dq = DriverQueue::new(&mem, 16, 0);
    let mut q = dq.device_queue();
    let (shared, h) = attached(&TABLET);
    let heads = post(&mut dq, 8, 0);
    h.pointer(399, 0, 800, 600, 0b001, 0);
    let d = deliver(&mut shared.lock(), &mut q, &mem, "test").unwrap();
    assert_eq!(
        d,
        Delivery {
            used: 4,
            events: 4,
            more: false
        }
    );
    let used = dq.take_used();
    assert_eq!(used, heads[..4].iter().map(|h| (*h, 8)).collect::<Vec<_>>());
    let got: Vec<_> = (0..4).map(|i| event_at(&mem, BUFS + i * 0x100)).collect();
    assert_eq!(
        got,
        [(3, 0, 16363), (3, 1, 0), (1, 0x110, 1), (0, 0, 0)],
        "ABS_X, ABS_Y, BTN_LEFT down, SYN"
    );
    assert!(shared.lock().pending.is_empty());
    // Nothing pending: the remaining buffers stay with the device.
    let d = deliver(&mut shared.lock(), &mut q, &mem, "test").unwrap();
    assert_eq!(d, Delivery::default());
    assert!(dq.take_used().is_empty());
}

#[test]
fn a_group_waits_until_the_driver_offers_room_for_all_of_it() {
    let mem = mem();
    let mut dq = DriverQueue::new(&mem, 16, 0);
    let mut q = dq.device_queue();
    let (shared, h) = attached(&KEYBOARD);
    h.key(30, true);
    h.key(30, false);
    post(&mut dq, 3, 0);
    // The first group (2 events) fits, the second does not fit in the 1 buffer left.
    let d = deliver(&mut shared.lock(), &mut q, &mem, "test").unwrap();
    assert_eq!(d.events, 2);
    assert_eq!(shared.lock().pending.len(), 2);
    post(&mut dq, 1, 3);
    let d = deliver(&mut shared.lock(), &mut q, &mem, "test").unwrap();
    assert_eq!(d.events, 2);
    let got: Vec<_> = (0..4).map(|i| event_at(&mem, BUFS + i * 0x100)).collect();
    assert_eq!(got, [(1, 30, 1), (0, 0, 0), (1, 30, 0), (0, 0, 0)]);
}

#[test]
fn a_queue_smaller_than_a_group_gets_it_in_parts() {
    let mem = mem();
    let mut dq = DriverQueue::new(&mem, 4, 0);
    let mut q = dq.device_queue();
    let (shared, h) = attached(&TABLET);
    // X, Y, three buttons, wheel, SYN: 7 events for a 4-entry queue.
    h.pointer(1, 1, 2, 2, 0b111, 1);
    post(&mut dq, 4, 0);
    let d = deliver(&mut shared.lock(), &mut q, &mem, "test").unwrap();
    assert_eq!(d.events, 4);
    assert_eq!(dq.take_used().len(), 4);
    post(&mut dq, 3, 4);
    let d = deliver(&mut shared.lock(), &mut q, &mem, "test").unwrap();
    assert_eq!(d.events, 3);
    let got: Vec<_> = (0..7).map(|i| event_at(&mem, BUFS + i * 0x100).1).collect();
    assert_eq!(
        got,
        [0, 1, 0x110, 0x112, 0x111, 8, 0],
        "buttons in bit order"
    );
}

/// Buffers the device cannot write an event into come back with 0 bytes; the event goes
/// into the next usable buffer; nothing panics.
#[test]
fn short_read_only_and_wild_buffers_are_returned_unused() {
    let mem = mem();
    let mut dq = DriverQueue::new(&mem, 16, 0);
    let mut q = dq.device_queue();
    let (shared, h) = attached(&KEYBOARD);
    let w = |addr, len| DriverBuffer {
        addr,
        len,
        writable: true,
    };
    let r = |addr, len| DriverBuffer {
        addr,
        len,
        writable: false,
    };
    let short = dq.add_writable(BUFS, 7);
    let read_only = dq.add_readable(BUFS + 0x100, 8);
    let outside = dq.add_writable(MEM_SIZE - 4, 8);
    let huge = dq.add_writable(0x1_0000_0000, u32::MAX);
    let empty = dq.add_writable(BUFS + 0x200, 0);
    // A readable header then 4 + 4 writable bytes: usable.
    let split = dq.add_chain(&[r(BUFS + 0x300, 8), w(BUFS + 0x400, 4), w(BUFS + 0x500, 4)]);
    let good = dq.add_writable(BUFS + 0x600, 8);
    h.key(2, true);
    let d = deliver(&mut shared.lock(), &mut q, &mem, "test").unwrap();
    assert_eq!(d.events, 2);
    assert_eq!(
        dq.take_used(),
        [
            (short, 0),
            (read_only, 0),
            (outside, 0),
            (huge, 0),
            (empty, 0),
            (split, 8),
            (good, 8)
        ]
    );
    assert_eq!(event_at(&mem, BUFS), (0, 0, 0), "nothing written");
    let mut b = [0u8; 8];
    mem.read_slice(&mut b[..4], GuestAddress(BUFS + 0x400))
        .unwrap();
    mem.read_slice(&mut b[4..], GuestAddress(BUFS + 0x500))
        .unwrap();
    assert_eq!(b, [1, 0, 2, 0, 1, 0, 0, 0], "EV_KEY 2 pressed, split");
    assert_eq!(event_at(&mem, BUFS + 0x600), (0, 0, 0x0), "SYN");
    assert!(shared.lock().pending.is_empty());
}

#[test]
fn status_buffers_are_read_and_returned_empty() {
    let mem = mem();
    let mut dq = DriverQueue::new(&mem, 8, 0);
    let mut q = dq.device_queue();
    let led = events::Event::new(0x11, 1, 1).to_le_bytes();
    mem.write_slice(&led, GuestAddress(BUFS)).unwrap();
    let a = dq.add_readable(BUFS, 8);
    let short = dq.add_readable(BUFS, 3);
    let writable = dq.add_writable(BUFS + 0x100, 8);
    let outside = dq.add_readable(MEM_SIZE, 8);
    let used = drain_status(&mut q, &mem, "test").unwrap();
    assert_eq!(used, 4);
    assert_eq!(
        dq.take_used(),
        [(a, 0), (short, 0), (writable, 0), (outside, 0)]
    );
    assert_eq!(drain_status(&mut q, &mem, "test").unwrap(), 0);
}

#[test]
fn activation_without_the_event_queue_is_refused_naming_it() {
    let mut dev = VirtioInput::keyboard().unwrap();
    let err = dev
        .activate(mem(), Arc::new(CountingInterrupt::default()), Vec::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::QueueNotEnabled {
                index: 0,
                name: "eventq"
            }
        ),
        "{err}"
    );
    // Not active: input is dropped, not queued.
    dev.handle().key(30, true);
    assert!(dev.shared.lock().pending.is_empty());
}

#[test]
fn identity_queues_and_features() {
    let kbd = VirtioInput::keyboard().unwrap();
    assert_eq!(kbd.device_type(), 18);
    assert_eq!(kbd.queue_max_sizes(), [64, 64]);
    assert_eq!(kbd.device_features(), 0);
    assert_eq!(kbd.kind(), InputKind::Keyboard);
    assert_eq!(VirtioInput::tablet().unwrap().kind(), InputKind::Tablet);
    assert!(format!("{:?}", kbd.handle()).contains("keyboard"));
}

/// A running device: activation, events from another thread into the driver's buffers, an
/// interrupt, the status queue, reset and a second activation with the same handle.
#[test]
fn the_worker_delivers_injected_events_across_reset_and_reactivation() {
    let mem = mem();
    let mut dev = VirtioInput::keyboard().unwrap();
    let h = dev.handle();
    // Before activation: dropped.
    h.key(16, true);

    let activate = |dev: &mut VirtioInput, evq: &DriverQueue, stq: &DriverQueue| {
        let irq = Arc::new(CountingInterrupt::default());
        let notify = [
            EventFd::new(EFD_NONBLOCK).unwrap(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        ];
        let queues = vec![
            ActivatedQueue {
                index: 0,
                queue: evq.device_queue(),
                notify: notify[0].try_clone().unwrap(),
            },
            ActivatedQueue {
                index: 1,
                queue: stq.device_queue(),
                notify: notify[1].try_clone().unwrap(),
            },
        ];
        dev.activate(mem.clone(), irq.clone(), queues).unwrap();
        (irq, notify)
    };

    let mut evq = DriverQueue::new(&mem, 16, 0);
    let mut stq = DriverQueue::new(&mem, 8, 0x1000);
    // No buffers yet: the event waits for them.
    let (irq, notify) = activate(&mut dev, &evq, &stq);
    let h2 = h.clone();
    std::thread::spawn(move || h2.key(30, true)).join().unwrap();
    post(&mut evq, 2, 0);
    notify[0].write(1).unwrap();
    wait_for("the key press", || evq.used_idx() == 2);
    assert_eq!(event_at(&mem, BUFS), (1, 30, 1));
    assert_eq!(event_at(&mem, BUFS + 0x100), (0, 0, 0));
    wait_for("an interrupt", || irq.0.load(Ordering::SeqCst) > 0);

    // Buffers posted without a notify: the injection alone wakes the worker.
    post(&mut evq, 2, 2);
    h.key(30, false);
    wait_for("the key release", || evq.used_idx() == 4);
    assert_eq!(event_at(&mem, BUFS + 0x200), (1, 30, 0));

    // Status queue: an LED change comes back.
    let led = events::Event::new(0x11, 0, 1).to_le_bytes();
    mem.write_slice(&led, GuestAddress(0x8000)).unwrap();
    let head = stq.add_readable(0x8000, 8);
    notify[1].write(1).unwrap();
    wait_for("the status buffer", || stq.used_idx() == 1);
    assert_eq!(stq.take_used(), [(head, 0)]);

    // Reset: the worker stops and input is dropped until the next activation.
    dev.reset();
    assert!(dev.worker.is_none());
    h.key(17, true);
    assert!(dev.shared.lock().pending.is_empty());

    let mut evq = DriverQueue::new(&mem, 16, 0x2000);
    let stq = DriverQueue::new(&mem, 8, 0x3000);
    post(&mut evq, 2, 8);
    let (irq, _notify) = activate(&mut dev, &evq, &stq);
    h.key(18, true);
    wait_for("the key after re-activation", || evq.used_idx() == 2);
    assert_eq!(event_at(&mem, BUFS + 0x800), (1, 18, 1));
    wait_for("an interrupt", || irq.0.load(Ordering::SeqCst) > 0);
    let shared = dev.shared.clone();
    drop(dev);
    // A handle outliving the device queues nothing.
    h.key(19, true);
    assert!(shared.lock().pending.is_empty());
}

/// The PCI function of a tablet: virtio device id 0x1052, an input-device class code, and
/// the configuration window through BAR 0.
#[test]
fn the_transport_shows_an_input_device_and_its_configuration() {
    use crate::pci::PciDevice;
    use crate::test_utils::{FakeIoEvents, FakeMsiRouter};
    use crate::virtio::{VirtioPciDevice, DEVICE_CFG_OFFSET};

    let mut dev = VirtioPciDevice::new(
        Box::new(VirtioInput::tablet().unwrap()),
        mem(),
        Arc::new(FakeMsiRouter::default()),
        Arc::new(FakeIoEvents::default()),
    )
    .unwrap();
    assert_eq!(dev.read_config_register(0), 0x1052_1af4);
    assert_eq!(dev.read_config_register(2) >> 16, 0x0980, "input, other");
    let moved = dev.program_bar(0, 0xe000_0000).unwrap();
    dev.move_bar(&moved).unwrap();
    dev.write_bar(0, DEVICE_CFG_OFFSET, &[0x01, 0x00]);
    let mut size = [0u8];
    dev.read_bar(0, DEVICE_CFG_OFFSET + 2, &mut size);
    assert_eq!(size[0], 17);
    let mut name = [0u8; 17];
    dev.read_bar(0, DEVICE_CFG_OFFSET + 8, &mut name);
    assert_eq!(&name, b"vmm virtio tablet");
    // ABS_INFO for ABS_Y: max at union offset 4.
    dev.write_bar(0, DEVICE_CFG_OFFSET, &[0x12]);
    dev.write_bar(0, DEVICE_CFG_OFFSET + 1, &[0x01]);
    let mut max = [0u8; 4];
    dev.read_bar(0, DEVICE_CFG_OFFSET + 12, &mut max);
    assert_eq!(u32::from_le_bytes(max), TABLET_ABS_MAX);
}
