//! Transport tests: a driver's view of the PCI function (config space, BAR 0), with the fake
//! MSI router, ioeventfd registrar and virtio device of `crate::test_utils`.

use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::pci::{
    PciDevice, CAP_ID_MSIX, CAP_ID_VENDOR, COMMAND_BUS_MASTER, COMMAND_MEMORY, REG_CAP_PTR,
    REG_CLASS, REG_COMMAND, REG_ID,
};
use crate::test_utils::{FakeIoEvents, FakeMsiRouter, FakeVirtioDevice, FakeVirtioState};

const BAR: u64 = 0xc000_0000;

struct T {
    dev: VirtioPciDevice,
    seen: Arc<Mutex<FakeVirtioState>>,
    router: Arc<FakeMsiRouter>,
    ioevents: Arc<FakeIoEvents>,
}

fn setup() -> T {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let seen = Arc::new(Mutex::new(FakeVirtioState::default()));
    let router = Arc::new(FakeMsiRouter::default());
    let ioevents = Arc::new(FakeIoEvents::default());
    let mut dev = VirtioPciDevice::new(
        Box::new(FakeVirtioDevice(seen.clone())),
        mem,
        router.clone(),
        ioevents.clone(),
    )
    .unwrap();
    let moved = dev.program_bar(0, BAR).unwrap();
    dev.move_bar(&moved).unwrap();
    assert!(
        ioevents.registered.lock().unwrap().is_empty(),
        "no ioeventfd before memory decoding is on"
    );
    // What Linux's pci_enable_device does: memory decoding and bus mastering on.
    let command = COMMAND_MEMORY | COMMAND_BUS_MASTER;
    dev.write_config_register(REG_COMMAND, 0, &command.to_le_bytes());
    T {
        dev,
        seen,
        router,
        ioevents,
    }
}

impl T {
    fn w(&mut self, off: u64, v: u64, len: usize) {
        self.dev.write_bar(0, off, &v.to_le_bytes()[..len]);
    }
    fn r(&mut self, off: u64, len: usize) -> u64 {
        let mut d = [0u8; 8];
        self.dev.read_bar(0, off, &mut d[..len]);
        u64::from_le_bytes(d)
    }
    fn cfg_byte(&mut self, off: usize) -> u8 {
        (self.dev.read_config_register(off / 4) >> ((off % 4) * 8)) as u8
    }
    fn cfg_dword(&mut self, off: usize) -> u32 {
        self.dev.read_config_register(off / 4)
    }

    /// Driver initialisation up to DRIVER_OK with both queues, MSI-X vectors 1 and 2 for the
    /// queues and 0 for config.
    fn bring_up(&mut self) {
        self.bring_up_with_sizes([8, 8]);
    }

    /// [`T::bring_up`] with the driver writing these queue sizes.
    fn bring_up_with_sizes(&mut self, sizes: [u64; 2]) {
        self.w(0x14, 1, 1);
        self.w(0x14, 3, 1);
        self.w(0x08, 0, 4);
        self.w(0x0c, 0b1000, 4);
        self.w(0x08, 1, 4);
        self.w(0x0c, 1, 4);
        self.w(0x14, 0xb, 1);
        assert_eq!(self.r(0x14, 1), 0xb);
        self.enable_msix();
        self.w(0x10, 0, 2);
        for q in 0..2u64 {
            self.w(0x16, q, 2);
            self.w(0x18, sizes[q as usize], 2);
            let base = 0x1000 * (q + 1);
            self.w(0x20, base, 8);
            self.w(0x28, base + 0x100, 8);
            self.w(0x30, base + 0x200, 8);
            self.w(0x1a, q + 1, 2);
            assert_eq!(self.r(0x1a, 2), q + 1);
            self.w(0x1c, 1, 2);
        }
        self.w(0x14, 0xf, 1);
    }

    fn enable_msix(&mut self) {
        let cap = find_cap(self, CAP_ID_MSIX).unwrap();
        // Message control is the upper half of the capability's first dword.
        self.dev
            .write_config_register(cap / 4, 2, &0x8000u16.to_le_bytes());
        for v in 0..3u64 {
            let e = MSIX_TABLE_OFFSET + v * 16;
            self.w(e, 0xfee0_0000 + v * 0x1000, 4);
            self.w(e + 4, 0, 4);
            self.w(e + 8, 0x40 + v, 4);
            self.w(e + 12, 0, 4);
        }
    }
}

fn find_cap(t: &mut T, id: u8) -> Option<usize> {
    let mut off = t.cfg_byte(REG_CAP_PTR * 4) as usize;
    for _ in 0..48 {
        if off < 0x40 {
            return None;
        }
        if t.cfg_byte(off) == id {
            return Some(off);
        }
        off = t.cfg_byte(off + 1) as usize;
    }
    None
}

#[test]
fn config_space_identifies_a_modern_virtio_gpu_with_all_capabilities() {
    let mut t = setup();
    assert_eq!(t.cfg_dword(REG_ID * 4), 0x1050_1af4);
    assert_eq!(t.cfg_dword(REG_CLASS * 4) >> 16, 0x0380);
    let mut types = Vec::new();
    let mut off = t.cfg_byte(REG_CAP_PTR * 4) as usize;
    while off >= 0x40 {
        if t.cfg_byte(off) == CAP_ID_VENDOR {
            let cfg_type = t.cfg_byte(off + 3);
            let bar = t.cfg_byte(off + 4);
            let offset = t.cfg_dword(off + 8);
            let length = t.cfg_dword(off + 12);
            types.push((cfg_type, bar, offset, length));
            if cfg_type == 2 {
                assert_eq!(t.cfg_dword(off + 16), NOTIFY_OFF_MULTIPLIER);
            }
        }
        off = t.cfg_byte(off + 1) as usize;
    }
    assert_eq!(
        types,
        vec![
            (1, 0, COMMON_CFG_OFFSET as u32, 0x38),
            (3, 0, ISR_OFFSET as u32, 4),
            (4, 0, DEVICE_CFG_OFFSET as u32, 0x1000),
            (2, 0, NOTIFY_OFFSET as u32, 8),
            (5, 0, 0, 0),
        ]
    );
    let msix = find_cap(&mut t, CAP_ID_MSIX).unwrap();
    let d = t.cfg_dword(msix);
    assert_eq!(d >> 16, 2, "3 vectors: table size - 1");
    assert_eq!(t.cfg_dword(msix + 4), MSIX_TABLE_OFFSET as u32);
    assert_eq!(t.cfg_dword(msix + 8), MSIX_PBA_OFFSET as u32);
    // BAR 0 is a 64-bit memory BAR at the programmed address.
    let bars = t.dev.bars();
    assert_eq!((bars[0].addr, bars[0].size), (BAR, BAR0_SIZE));
    assert_eq!(t.router.irqfds.lock().unwrap().len(), 3);
}

#[test]
fn ioeventfds_follow_bar_moves() {
    let mut t = setup();
    assert_eq!(
        *t.ioevents.registered.lock().unwrap(),
        vec![BAR + NOTIFY_OFFSET, BAR + NOTIFY_OFFSET + 4]
    );
    let moved = t.dev.program_bar(0, 0xd000_0000).unwrap();
    t.dev.move_bar(&moved).unwrap();
    assert_eq!(
        *t.ioevents.registered.lock().unwrap(),
        vec![0xd000_0000 + NOTIFY_OFFSET, 0xd000_0000 + NOTIFY_OFFSET + 4]
    );
}

#[test]
fn ioeventfds_go_while_memory_decoding_is_off_and_come_back_at_the_current_bar() {
    let mut t = setup();
    let on = (COMMAND_MEMORY | COMMAND_BUS_MASTER).to_le_bytes();
    t.dev
        .write_config_register(REG_COMMAND, 0, &COMMAND_BUS_MASTER.to_le_bytes());
    assert!(t.ioevents.registered.lock().unwrap().is_empty());
    // A BAR moved while decoding is off gets its ioeventfds when decoding comes back.
    let moved = t.dev.program_bar(0, 0xd000_0000).unwrap();
    t.dev.move_bar(&moved).unwrap();
    assert!(t.ioevents.registered.lock().unwrap().is_empty());
    t.dev.write_config_register(REG_COMMAND, 0, &on);
    assert_eq!(
        *t.ioevents.registered.lock().unwrap(),
        vec![0xd000_0000 + NOTIFY_OFFSET, 0xd000_0000 + NOTIFY_OFFSET + 4]
    );
    // Writing the same command again registers nothing twice.
    t.dev.write_config_register(REG_COMMAND, 0, &on);
    assert_eq!(t.ioevents.registered.lock().unwrap().len(), 2);
}

#[test]
fn driver_bring_up_activates_with_the_configured_queues() {
    let mut t = setup();
    t.bring_up();
    assert!(t.dev.is_active());
    assert_eq!(t.r(0x14, 1), 0xf);
    let s = t.seen.lock().unwrap();
    assert_eq!(s.acked, Some(0b1000 | 1 << 32));
    assert_eq!(s.activated, vec![(0, 8, 0x1000), (1, 8, 0x2000)]);
    // Routes were set for the three vectors.
    let routes = t.router.routes.lock().unwrap();
    assert_eq!(routes.get(&24), Some(&(0xfee0_0000, 0x40)));
    assert_eq!(routes.get(&26), Some(&(0xfee0_2000, 0x42)));
}

#[test]
fn queue_interrupts_reach_the_vectors_irqfd_and_masking_sets_pending() {
    let mut t = setup();
    t.bring_up();
    let irq = t.seen.lock().unwrap().interrupt.clone().unwrap();
    let (fd1, _) = t.dev.vector_irqfd(1).unwrap();
    let (fd0, _) = t.dev.vector_irqfd(0).unwrap();
    irq.trigger(InterruptSource::Queue(0));
    assert_eq!(fd1.read().unwrap(), 1);
    irq.trigger(InterruptSource::Config);
    assert_eq!(fd0.read().unwrap(), 1);
    // ISR: queue and config bits, cleared on read.
    assert_eq!(t.r(ISR_OFFSET, 1), 3);
    assert_eq!(t.r(ISR_OFFSET, 1), 0);
    // Mask vector 1: the interrupt becomes pending, unmasking delivers it.
    t.w(MSIX_TABLE_OFFSET + 16 + 12, 1, 4);
    irq.trigger(InterruptSource::Queue(0));
    assert!(fd1.read().is_err(), "masked vector must not fire");
    assert_eq!(t.r(MSIX_PBA_OFFSET, 8), 0b10);
    t.w(MSIX_TABLE_OFFSET + 16 + 12, 0, 4);
    assert_eq!(fd1.read().unwrap(), 1);
    assert_eq!(t.r(MSIX_PBA_OFFSET, 8), 0);
    // Function mask works the same way.
    let cap = find_cap(&mut t, CAP_ID_MSIX).unwrap();
    t.dev
        .write_config_register(cap / 4, 2, &0xc000u16.to_le_bytes());
    irq.trigger(InterruptSource::Queue(1));
    let (fd2, _) = t.dev.vector_irqfd(2).unwrap();
    assert!(fd2.read().is_err());
    t.dev
        .write_config_register(cap / 4, 2, &0x8000u16.to_le_bytes());
    assert_eq!(fd2.read().unwrap(), 1);
}

/// An empty read at the ISR (the router passes any length through) neither panics nor
/// clears the ISR.
#[test]
fn empty_isr_read_leaves_the_isr_alone() {
    let mut t = setup();
    t.bring_up();
    let irq = t.seen.lock().unwrap().interrupt.clone().unwrap();
    irq.trigger(InterruptSource::Queue(0));
    t.dev.read_bar(0, ISR_OFFSET, &mut []);
    assert_eq!(t.r(ISR_OFFSET, 1), 1);
}

#[test]
fn trapped_notify_writes_signal_the_queue_eventfd() {
    let mut t = setup();
    t.bring_up();
    t.w(NOTIFY_OFFSET + 4, 1, 2);
    let s = t.seen.lock().unwrap();
    assert_eq!(s.notify[1].read().unwrap(), 1);
    assert!(s.notify[0].read().is_err());
}

#[test]
fn reset_stops_the_device_and_clears_state() {
    let mut t = setup();
    t.bring_up();
    t.w(0x14, 0, 1);
    assert!(!t.dev.is_active());
    assert_eq!(t.r(0x14, 1), 0);
    assert_eq!(t.seen.lock().unwrap().resets, 1);
    t.w(0x16, 0, 2);
    assert_eq!(t.r(0x1c, 2), 0);
    assert_eq!(t.r(0x1a, 2), u64::from(NO_VECTOR));
    // A second bring-up works.
    t.bring_up();
    assert!(t.dev.is_active());
}

/// Status bits only accumulate until a reset: a driver that clears DRIVER_OK and sets it
/// again, rewrites the status, or writes NEEDS_RESET/FAILED never gets a second activation
/// (which would hand the device the same rings again and replay old requests).
#[test]
fn status_rewrites_do_not_reactivate_without_a_reset() {
    let mut t = setup();
    t.bring_up();
    assert_eq!(t.seen.lock().unwrap().activations, 1);
    // Clearing DRIVER_OK (or any other bit) without a reset is ignored.
    t.w(0x14, 0xb, 1);
    assert_eq!(t.r(0x14, 1), 0xf);
    t.w(0x14, 0xf, 1);
    t.w(0x14, 0xf, 1);
    t.w(0x14, 0x7, 1);
    t.w(0x14, 0x4, 1);
    t.w(0x14, 0xf, 1);
    assert!(t.dev.is_active());
    assert_eq!(t.r(0x14, 1), 0xf);
    // NEEDS_RESET belongs to the device; FAILED may be added by the driver. Neither crashes
    // or activates again.
    t.w(0x14, 0x4f, 1);
    assert_eq!(t.r(0x14, 1) & 0x40, 0, "the driver cannot set NEEDS_RESET");
    t.w(0x14, 0x8f, 1);
    assert_eq!(t.r(0x14, 1), 0x8f);
    t.w(0x14, 0xff, 1);
    t.w(0x14, 0x40, 1);
    t.w(0x14, 0x80, 1);
    {
        let s = t.seen.lock().unwrap();
        assert_eq!((s.activations, s.resets), (1, 0));
        assert_eq!(s.activated.len(), 2, "two queues, handed over once");
    }
    // A reset allows exactly one new activation.
    t.w(0x14, 0, 1);
    assert!(!t.dev.is_active());
    t.bring_up();
    t.w(0x14, 0xb, 1);
    t.w(0x14, 0xf, 1);
    let s = t.seen.lock().unwrap();
    assert_eq!((s.activations, s.resets), (2, 1));
}

/// A failed activation leaves the device inactive with NEEDS_RESET until the driver resets
/// it: rewriting DRIVER_OK (with or without clearing it first) does not retry it.
#[test]
fn failed_activation_is_not_retried_by_status_writes() {
    let mut t = setup();
    t.seen.lock().unwrap().refuse_activation = true;
    t.bring_up();
    assert!(!t.dev.is_active());
    assert_eq!(t.r(0x14, 1), 0x4f);
    t.seen.lock().unwrap().refuse_activation = false;
    t.w(0x14, 0x4b, 1);
    t.w(0x14, 0x4f, 1);
    t.w(0x14, 0xb, 1);
    t.w(0x14, 0xf, 1);
    assert!(!t.dev.is_active());
    assert_eq!(t.r(0x14, 1), 0x4f, "NEEDS_RESET stays until a reset");
    assert_eq!(t.seen.lock().unwrap().activations, 1);
    t.w(0x14, 0, 1);
    assert_eq!(t.r(0x14, 1), 0);
    t.bring_up();
    assert!(t.dev.is_active());
    assert_eq!(t.seen.lock().unwrap().activations, 2);
}

/// A queue size of 0, above the queue's maximum or not a power of two (split virtqueues) is
/// refused at DRIVER_OK: the device stays inactive with NEEDS_RESET (virtio-queue would
/// otherwise keep its maximum size and serve rings the driver did not allocate).
#[test]
fn invalid_queue_sizes_are_refused_at_activation() {
    // Queue 0 has a maximum of 256, queue 1 of 16.
    for sizes in [[0, 8], [3, 8], [512, 8], [8, 32], [8, 12], [0xffff, 16]] {
        let mut t = setup();
        t.bring_up_with_sizes(sizes);
        assert!(!t.dev.is_active(), "sizes {sizes:?} accepted");
        assert_eq!(t.r(0x14, 1), 0x4f, "sizes {sizes:?}: NEEDS_RESET");
        assert_eq!(t.seen.lock().unwrap().activations, 0, "sizes {sizes:?}");
        // A reset and a valid bring-up work.
        t.w(0x14, 0, 1);
        t.bring_up_with_sizes([256, 1]);
        assert!(t.dev.is_active());
        assert_eq!(
            t.seen.lock().unwrap().activated,
            vec![(0, 256, 0x1000), (1, 1, 0x2000)]
        );
    }
}

/// A misaligned ring address is refused too (virtio-queue would keep its default address 0
/// and the device would serve a ring the driver never set up there).
#[test]
fn misaligned_rings_are_refused_at_activation() {
    for (reg, addr) in [(0x20u64, 0x1008u64), (0x28, 0x1101), (0x30, 0x1202)] {
        let mut t = setup();
        t.w(0x14, 3, 1);
        t.w(0x08, 1, 4);
        t.w(0x0c, 1, 4);
        t.w(0x14, 0xb, 1);
        t.w(0x16, 0, 2);
        t.w(0x18, 8, 2);
        t.w(0x20, 0x1000, 8);
        t.w(0x28, 0x1100, 8);
        t.w(0x30, 0x1200, 8);
        t.w(reg, addr, 8);
        t.w(0x1c, 1, 2);
        t.w(0x14, 0xf, 1);
        assert!(!t.dev.is_active(), "{addr:#x} at {reg:#x} accepted");
        assert_ne!(t.r(0x14, 1) & 0x40, 0);
    }
}

/// A device whose maximum queue size virtio-queue cannot serve is refused when the transport
/// is built, not at the driver's DRIVER_OK.
#[test]
fn unusable_maximum_queue_sizes_are_a_setup_error() {
    for bad in [0u16, 12, 0xffff] {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let seen = Arc::new(Mutex::new(FakeVirtioState {
            max_sizes: Some(vec![16, bad]),
            ..FakeVirtioState::default()
        }));
        let r = VirtioPciDevice::new(
            Box::new(FakeVirtioDevice(seen)),
            mem,
            Arc::new(FakeMsiRouter::default()),
            Arc::new(FakeIoEvents::default()),
        );
        match r {
            Err(VirtioPciError::Queue { index, size, .. }) => assert_eq!((index, size), (1, bad)),
            Err(e) => panic!("max size {bad}: {e}"),
            Ok(_) => panic!("max size {bad} accepted"),
        }
    }
}

#[test]
fn invalid_rings_mark_the_device_needs_reset() {
    let mut t = setup();
    t.w(0x14, 3, 1);
    t.w(0x08, 1, 4);
    t.w(0x0c, 1, 4);
    t.w(0x14, 0xb, 1);
    t.w(0x16, 0, 2);
    t.w(0x20, 0x10_0000_0000, 8); // outside guest memory
    t.w(0x1c, 1, 2);
    t.w(0x14, 0xf, 1);
    assert!(!t.dev.is_active());
    assert_ne!(t.r(0x14, 1) & 0x40, 0);
    assert!(t.seen.lock().unwrap().activated.is_empty());
}

#[test]
fn out_of_range_vectors_read_back_as_no_vector() {
    let mut t = setup();
    t.w(0x10, 7, 2);
    assert_eq!(t.r(0x10, 2), u64::from(NO_VECTOR));
    t.w(0x16, 1, 2);
    t.w(0x1a, 3, 2);
    assert_eq!(t.r(0x1a, 2), u64::from(NO_VECTOR));
}

#[test]
fn device_config_is_forwarded() {
    let mut t = setup();
    assert_eq!(
        t.r(DEVICE_CFG_OFFSET + 8, 4),
        u64::from_le_bytes([8, 9, 10, 11, 0, 0, 0, 0])
    );
    t.w(DEVICE_CFG_OFFSET + 4, 1, 4);
    assert_eq!(
        t.seen.lock().unwrap().config_writes,
        vec![(4, vec![1, 0, 0, 0])]
    );
}

#[test]
fn hostile_bar_and_config_accesses_do_not_panic() {
    let mut t = setup();
    // xorshift64: a fixed, reproducible sequence of accesses.
    let mut rng = 0x1234_5678_9abc_def1u64;
    for _ in 0..20000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let off = rng % (BAR0_SIZE + 16);
        let len = [1usize, 2, 3, 4, 8][(rng >> 20) as usize % 5];
        let v = rng >> 7;
        if rng & 1 == 0 {
            // Avoid resetting status constantly so that deeper states are reached.
            t.dev.write_bar(0, off, &v.to_le_bytes()[..len]);
        } else {
            let mut d = [0u8; 8];
            t.dev.read_bar(0, off, &mut d[..len]);
        }
        let reg = (rng >> 32) as usize % 80;
        let o = (rng >> 40) as usize % 4;
        t.dev
            .write_config_register(reg, o, &v.to_le_bytes()[..len.min(4)]);
        let _ = t.dev.read_config_register(reg);
        t.dev.read_bar(3, off, &mut [0u8; 4]);
        t.dev.write_bar(5, off, &[1, 2, 3, 4]);
    }
}

#[test]
fn drop_releases_gsis() {
    let t = setup();
    let router = t.router.clone();
    drop(t);
    assert_eq!(*router.released.lock().unwrap(), vec![24, 25, 26]);
}

#[test]
fn pci_cfg_window_reaches_bar0() {
    let mut t = setup();
    // Find the PCI_CFG capability (vendor cap of cfg_type 5).
    let mut off = t.cfg_byte(REG_CAP_PTR * 4) as usize;
    while !(t.cfg_byte(off) == CAP_ID_VENDOR && t.cfg_byte(off + 3) == 5) {
        off = t.cfg_byte(off + 1) as usize;
    }
    // Read num_queues (common cfg 0x12, 2 bytes) through the window.
    t.dev
        .write_config_register((off + 8) / 4, 0, &0x12u32.to_le_bytes());
    t.dev
        .write_config_register((off + 12) / 4, 0, &2u32.to_le_bytes());
    assert_eq!(t.dev.read_config_register((off + 16) / 4) & 0xffff, 2);
    // Write device_status = ACKNOWLEDGE through it.
    t.dev
        .write_config_register((off + 8) / 4, 0, &0x14u32.to_le_bytes());
    t.dev
        .write_config_register((off + 12) / 4, 0, &1u32.to_le_bytes());
    t.dev.write_config_register((off + 16) / 4, 0, &[1]);
    assert_eq!(t.dev.status(), 1);
    // Another BAR or a bad length accesses nothing.
    t.dev
        .write_config_register((off + 12) / 4, 0, &3u32.to_le_bytes());
    t.dev.write_config_register((off + 16) / 4, 0, &[0]);
    assert_eq!(t.dev.status(), 1);
}

/// The transport on a bus: the router only reaches BAR 0 while the driver has Memory Space
/// decoding on in the command register (a fresh function has it off, like after reset).
#[test]
fn bar0_is_reached_only_with_memory_decoding_on() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let seen = Arc::new(Mutex::new(FakeVirtioState::default()));
    let dev = VirtioPciDevice::new(
        Box::new(FakeVirtioDevice(seen)),
        mem,
        Arc::new(FakeMsiRouter::default()),
        Arc::new(FakeIoEvents::default()),
    )
    .unwrap();
    let mut bus = crate::pci::PciBus::new();
    let mut alloc = crate::pci::BarAllocator::new(
        crate::pci::BarWindow::new(0xc000_0000, 0x1000_0000),
        Some(crate::pci::BarWindow::new(0x1_0000_0000, 0x1_0000_0000)),
        None,
    )
    .unwrap();
    let shared: crate::pci::SharedPciDevice = Arc::new(Mutex::new(dev));
    let slot = bus
        .add_device(crate::pci::ROOT_BUS, shared.clone(), &mut alloc)
        .unwrap();
    let router = bus.router();
    let bar0 = crate::pci::lock_device(&shared).bars()[0].addr;
    let num_queues = |router: &crate::pci::PciBarRouter| {
        let mut b = [0u8; 2];
        router.read(crate::pci::BarSpace::Mmio, bar0 + 0x12, &mut b);
        u16::from_le_bytes(b)
    };
    assert_eq!(num_queues(&router), 0xffff, "decoded with Memory Space off");
    // device_status write dropped while decoding is off.
    router.write(crate::pci::BarSpace::Mmio, bar0 + 0x14, &[1]);
    bus.write_config(slot.bus, slot.slot, 0, REG_COMMAND, 0, &[0x02, 0x00]);
    assert_eq!(num_queues(&router), 2);
    let mut st = [0u8; 1];
    router.read(crate::pci::BarSpace::Mmio, bar0 + 0x14, &mut st);
    assert_eq!(st[0], 0, "the write with decoding off reached the device");
    router.write(crate::pci::BarSpace::Mmio, bar0 + 0x14, &[1]);
    router.read(crate::pci::BarSpace::Mmio, bar0 + 0x14, &mut st);
    assert_eq!(st[0], 1);
}

/// A guest repeating a bad access 10000 times gets a handful of log lines for it, not 10000
/// (each kind of guest error is logged once, then at most once per interval).
#[test]
fn repeated_guest_errors_log_a_handful_of_lines() {
    use crate::test_log::lines_logged_by;
    let mut t = setup();
    t.bring_up();
    let mut kinds: Vec<(&str, Vec<crate::test_log::Line>)> = Vec::new();
    kinds.push((
        "status write clearing DRIVER_OK",
        lines_logged_by(|| {
            for _ in 0..10000 {
                t.w(0x14, 0xb, 1);
            }
        }),
    ));
    kinds.push((
        "DRIVER_OK without FEATURES_OK",
        lines_logged_by(|| {
            for _ in 0..10000 {
                t.w(0x14, 0, 1);
                t.w(0x14, 0x7, 1);
            }
        }),
    ));
    kinds.push((
        "refused features",
        lines_logged_by(|| {
            for _ in 0..10000 {
                t.w(0x14, 0, 1);
                t.w(0x08, 0, 4);
                t.w(0x0c, 0b1, 4);
                t.w(0x14, 0xb, 1);
            }
        }),
    ));
    kinds.push((
        "invalid queue size at DRIVER_OK",
        lines_logged_by(|| {
            for _ in 0..10000 {
                t.w(0x14, 0, 1);
                t.bring_up_with_sizes([3, 8]);
            }
        }),
    ));
    kinds.push((
        "odd-width common cfg writes and reads",
        lines_logged_by(|| {
            for _ in 0..10000 {
                t.w(0x14, 0xff, 2);
                t.r(0x15, 2);
            }
        }),
    ));
    kinds.push((
        "BAR 0 writes outside every structure",
        lines_logged_by(|| {
            for _ in 0..10000 {
                t.w(0x7000, 1, 4);
            }
        }),
    ));
    kinds.push((
        "malformed MSI-X table writes",
        lines_logged_by(|| {
            for _ in 0..10000 {
                t.w(MSIX_TABLE_OFFSET + 1, 1, 2);
            }
        }),
    ));
    for (what, lines) in &kinds {
        // The line itself and log_limit's note that it starts suppressing (a third and
        // fourth only if the interval ran out meanwhile).
        assert!(
            lines.len() <= 4,
            "{what}: {} lines: {lines:#?}",
            lines.len()
        );
    }
}

/// `KvmIoEvents` against the real KVM of this machine (a VM fd is enough for ioeventfds).
#[test]
fn kvm_ioeventfd_registration() {
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        eprintln!("no /dev/kvm: KvmIoEvents not exercised");
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    let io = KvmIoEvents(vm);
    let fd = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
    io.register(&fd, 0xd000_3000).unwrap();
    // The same (address, fd) twice is refused by KVM (EEXIST).
    assert!(io.register(&fd, 0xd000_3000).is_err());
    io.unregister(&fd, 0xd000_3000).unwrap();
    assert!(io.unregister(&fd, 0xd000_3000).is_err());
}

/// The transport with the real KVM MSI router and ioeventfds: GSI allocation, irqfd
/// registration, MSI routes from the guest's table and ioeventfds on BAR moves all succeed.
#[test]
fn transport_on_real_kvm_routes_and_ioeventfds() {
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        eprintln!("no /dev/kvm: not exercised");
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.create_irq_chip().unwrap();
    let router = Arc::new(crate::pci::KvmMsiRouter::new(vm.clone(), 1024));
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let seen = Arc::new(Mutex::new(FakeVirtioState::default()));
    let mut dev = VirtioPciDevice::new(
        Box::new(FakeVirtioDevice(seen)),
        mem,
        router,
        Arc::new(KvmIoEvents(vm.clone())),
    )
    .unwrap();
    let moved = dev.program_bar(0, BAR).unwrap();
    dev.move_bar(&moved).unwrap();
    dev.write_config_register(REG_COMMAND, 0, &COMMAND_MEMORY.to_le_bytes());
    let moved = dev.program_bar(0, BAR + 0x10_0000).unwrap();
    dev.move_bar(&moved).unwrap();
    // The notify ioeventfd moved: registered at the new address (a second registration is
    // EEXIST), gone from the old one (registering there succeeds).
    let probe = KvmIoEvents(vm);
    let fd = dev.notify_fd(0).unwrap();
    assert!(probe.register(fd, BAR + 0x10_0000 + NOTIFY_OFFSET).is_err());
    probe.register(fd, BAR + NOTIFY_OFFSET).unwrap();
    probe.unregister(fd, BAR + NOTIFY_OFFSET).unwrap();
    // Vector 0: address/data written (KVM_SET_GSI_ROUTING), unmasked, MSI-X enabled.
    let mut t_cap = 0;
    let mut off = (dev.read_config_register(REG_CAP_PTR) & 0xff) as usize;
    while off >= 0x40 {
        let d = dev.read_config_register(off / 4);
        if d & 0xff == u32::from(CAP_ID_MSIX) {
            t_cap = off;
            break;
        }
        off = ((d >> 8) & 0xff) as usize;
    }
    assert_ne!(t_cap, 0);
    dev.write_config_register(t_cap / 4, 2, &0x8000u16.to_le_bytes());
    dev.write_bar(0, MSIX_TABLE_OFFSET, &0xfee0_0000u32.to_le_bytes());
    dev.write_bar(0, MSIX_TABLE_OFFSET + 8, &0x30u32.to_le_bytes());
    dev.write_bar(0, MSIX_TABLE_OFFSET + 12, &0u32.to_le_bytes());
    let (_, gsi) = dev.vector_irqfd(0).unwrap();
    assert!(gsi >= 24);
}
