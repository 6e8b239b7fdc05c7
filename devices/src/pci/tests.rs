//! Tests of the bus, configuration mechanism #1 and BAR routing working together.

use std::sync::{Arc, Mutex};

use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vm_device::{DeviceMmio, MutDevicePio};

use super::*;

use crate::test_utils::FakePciDevice;

const MMIO32: u64 = 0xc000_0000;
const MMIO64: u64 = 0x1_0000_0000;

fn allocator() -> BarAllocator {
    BarAllocator::new(
        BarWindow::new(MMIO32, 0x3ec0_0000),
        Some(BarWindow::new(MMIO64, 0x1_0000_0000)),
        Some(BarWindow::new(0x1000, 0xf000)),
    )
    .unwrap()
}

struct Rig {
    bus: Arc<Mutex<PciBus>>,
    io: PciConfigIo,
    router: Arc<PciBarRouter>,
    moves: Arc<Mutex<Vec<BarReprogram>>>,
    slot: u8,
}

fn rig() -> Rig {
    let mut bus = PciBus::new();
    let (dev, moves) = FakePciDevice::new();
    let slot = bus
        .add_device(ROOT_BUS, Arc::new(Mutex::new(dev)), &mut allocator())
        .unwrap()
        .slot;
    let router = bus.router();
    // Decoding on, as the guest's driver enables it before using the BARs.
    bus.write_config(
        ROOT_BUS,
        slot,
        0,
        REG_COMMAND,
        0,
        &(COMMAND_MEMORY | COMMAND_IO).to_le_bytes(),
    );
    let bus = Arc::new(Mutex::new(bus));
    Rig {
        io: PciConfigIo::new(bus.clone()),
        bus,
        router,
        moves,
        slot,
    }
}

fn cfg_addr(slot: u8, function: u8, offset: u8) -> u32 {
    0x8000_0000 | (u32::from(slot) << 11) | (u32::from(function) << 8) | u32::from(offset & 0xfc)
}

fn cfg_read32(io: &mut PciConfigIo, slot: u8, offset: u8) -> u32 {
    io.write(0, &cfg_addr(slot, 0, offset).to_le_bytes());
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    u32::from_le_bytes(b)
}

fn cfg_write32(io: &mut PciConfigIo, slot: u8, offset: u8, value: u32) {
    io.write(0, &cfg_addr(slot, 0, offset).to_le_bytes());
    io.write(4, &value.to_le_bytes());
}

#[test]
fn host_bridge_at_slot_zero_and_empty_slots() {
    let mut r = rig();
    assert_eq!(r.slot, 1);
    assert_eq!(cfg_read32(&mut r.io, 0, 0), 0x0d57_8086);
    assert_eq!(cfg_read32(&mut r.io, 0, 8) >> 16, 0x0600);
    assert_eq!(cfg_read32(&mut r.io, 0, 0x10), 0, "host bridge has no BARs");
    for slot in 2..32 {
        assert_eq!(cfg_read32(&mut r.io, slot, 0), 0xffff_ffff);
    }
    cfg_write32(&mut r.io, 7, 0x04, 0x7);
    assert_eq!(cfg_read32(&mut r.io, 7, 0x04), 0xffff_ffff);
}

#[test]
fn latch_semantics() {
    let mut r = rig();
    r.io.write(0, &0x8000_0813u32.to_le_bytes());
    assert_eq!(r.io.address(), 0x8000_0810, "bits 1:0 read as zero");
    let mut b = [0u8; 4];
    r.io.read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x8000_0810);
    // A byte write to 0xCF8 does not touch the latch.
    r.io.write(0, &[0x00]);
    assert_eq!(r.io.address(), 0x8000_0810);
    // Enable bit clear: data port reads all-ones.
    r.io.write(0, &(cfg_addr(0, 0, 0) & !0x8000_0000).to_le_bytes());
    r.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    // Another bus, another function: all-ones.
    r.io.write(0, &(cfg_addr(0, 0, 0) | (1 << 16)).to_le_bytes());
    r.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    r.io.write(0, &cfg_addr(0, 1, 0).to_le_bytes());
    r.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
}

#[test]
fn extended_register_bits_do_not_alias() {
    let mut r = rig();
    // Register 0x100 (bits 27:24 = 1): a 256-byte device has no extended space -> all-ones,
    // not an alias of register 0x00.
    r.io.write(0, &(cfg_addr(r.slot, 0, 0) | (1 << 24)).to_le_bytes());
    let mut b = [0u8; 4];
    r.io.read(4, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0xffff_ffff);
    // A write there changes nothing below.
    r.io.write(4, &0u32.to_le_bytes());
    assert_eq!(cfg_read32(&mut r.io, r.slot, 0), 0x1110_1af4);
}

#[test]
fn byte_and_word_data_accesses() {
    let mut r = rig();
    let slot = r.slot;
    r.io.write(0, &cfg_addr(slot, 0, 0).to_le_bytes());
    let mut w = [0u8; 2];
    r.io.read(6, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x1110);
    let mut b = [0u8; 1];
    r.io.read(5, &mut b);
    assert_eq!(b[0], 0x1a);
    // Word write to the command register at 0xCFC, byte write at 0xCFD.
    r.io.write(0, &cfg_addr(slot, 0, 4).to_le_bytes());
    r.io.write(4, &[0x06, 0x00]);
    r.io.write(5, &[0x04]);
    assert_eq!(cfg_read32(&mut r.io, slot, 4) & 0xffff, 0x0406);
}

#[test]
fn initial_bars_allocated_programmed_and_routed() {
    let r = rig();
    let dev = r.bus.lock().unwrap().device(PciSlot::root(r.slot)).unwrap();
    let bars = lock_device(&dev).bars();
    assert_eq!(bars.len(), 3);
    assert_eq!(bars[0].addr, MMIO32);
    assert_eq!(bars[1].addr, MMIO64);
    assert_eq!(bars[2].kind, BarKind::Io);
    assert_eq!(bars[2].addr % 0x20, 0);
    assert_eq!(
        r.moves.lock().unwrap().len(),
        3,
        "device followed each programmed BAR"
    );
    assert_eq!(r.router.route_count(), (2, 1));
    r.router.write(BarSpace::Mmio, MMIO64 + 0x10, &[1, 2, 3, 4]);
    let mut b = [0u8; 4];
    r.router.read(BarSpace::Mmio, MMIO64 + 0x10, &mut b);
    assert_eq!(b, [1, 2, 3, 4]);
    r.router.write(BarSpace::Io, bars[2].addr + 2, &[9]);
    let mut one = [0u8; 1];
    r.router.read(BarSpace::Io, bars[2].addr + 2, &mut one);
    assert_eq!(one[0], 9);
}

#[test]
fn guest_bar_move_reroutes() {
    let mut r = rig();
    let slot = r.slot;
    r.router.write(BarSpace::Mmio, MMIO32 + 8, &[0xab]);
    r.moves.lock().unwrap().clear();
    // Sizing through the config port is not a move.
    cfg_write32(&mut r.io, slot, 0x10, 0xffff_ffff);
    assert_eq!(cfg_read32(&mut r.io, slot, 0x10), 0xffff_f000);
    cfg_write32(&mut r.io, slot, 0x10, MMIO32 as u32);
    assert!(r.moves.lock().unwrap().is_empty());
    // Move BAR 0.
    let new = MMIO32 + 0x10_0000;
    cfg_write32(&mut r.io, slot, 0x10, new as u32);
    assert_eq!(
        r.moves.lock().unwrap().as_slice(),
        &[BarReprogram {
            bar: 0,
            kind: BarKind::Mem32 {
                prefetchable: false
            },
            old_addr: MMIO32,
            new_addr: new,
            size: 0x1000
        }]
    );
    let mut b = [0u8; 1];
    r.router.read(BarSpace::Mmio, new + 8, &mut b);
    assert_eq!(b[0], 0xab);
    r.router.read(BarSpace::Mmio, MMIO32 + 8, &mut b);
    assert_eq!(b[0], 0xff, "old address no longer decoded");
    // Move the 64-bit BAR below 4 GiB: low then high.
    cfg_write32(&mut r.io, slot, 0x18, 0xd000_0000);
    cfg_write32(&mut r.io, slot, 0x1c, 0);
    let last = *r.moves.lock().unwrap().last().unwrap();
    assert_eq!(
        (last.bar, last.old_addr, last.new_addr),
        (2, MMIO64, 0xd000_0000)
    );
    r.router.write(BarSpace::Mmio, 0xd000_fffc, &[5, 6, 7, 8]);
    let mut w = [0u8; 4];
    r.router.read(BarSpace::Mmio, 0xd000_fffc, &mut w);
    assert_eq!(w, [5, 6, 7, 8]);
    assert_eq!(r.router.route_count(), (2, 1));
}

#[test]
fn removed_devices_are_no_longer_routed_or_held() {
    let r = rig();
    let dev = r.bus.lock().unwrap().device(PciSlot::root(r.slot)).unwrap();
    assert_eq!(
        Arc::strong_count(&dev),
        5,
        "ours, the bus's and three routes"
    );
    let removed = r.bus.lock().unwrap().remove_devices();
    assert_eq!(removed.len(), 1, "the host bridge stays");
    assert!(Arc::ptr_eq(&removed[0], &dev));
    assert_eq!(r.router.route_count(), (0, 0));
    assert!(r
        .bus
        .lock()
        .unwrap()
        .device(PciSlot::root(r.slot))
        .is_none());
    assert!(r.bus.lock().unwrap().device(PciSlot::root(0)).is_some());
    let mut b = [0u8; 1];
    r.router.read(BarSpace::Mmio, MMIO32 + 8, &mut b);
    assert_eq!(b[0], 0xff, "BAR 0 no longer decoded");
    drop(removed);
    assert_eq!(Arc::strong_count(&dev), 1, "the bus and the router let go");
}

/// The command register's decode bits gate the router: with Memory Space off, MMIO BARs
/// read all-ones and drop writes; with I/O Space off, the same for I/O BARs. Turning decoding
/// back on finds the device as it was.
#[test]
fn command_register_decode_bits_gate_bar_accesses() {
    let mut r = rig();
    let slot = r.slot;
    let io_bar = {
        let dev = r.bus.lock().unwrap().device(PciSlot::root(slot)).unwrap();
        let bars = lock_device(&dev).bars();
        bars[2].addr
    };
    r.router.write(BarSpace::Mmio, MMIO32 + 8, &[0x11]);
    r.router.write(BarSpace::Io, io_bar + 2, &[0x22]);
    // Memory off, I/O on.
    cfg_write32(&mut r.io, slot, 0x04, u32::from(COMMAND_IO));
    let mut b = [0u8; 1];
    r.router.read(BarSpace::Mmio, MMIO32 + 8, &mut b);
    assert_eq!(b[0], 0xff, "memory BAR decoded with Memory Space off");
    r.router.write(BarSpace::Mmio, MMIO32 + 8, &[0x33]);
    r.router.write(BarSpace::Mmio, MMIO64, &[0x44]);
    r.router.read(BarSpace::Io, io_bar + 2, &mut b);
    assert_eq!(b[0], 0x22);
    // I/O off, memory on.
    cfg_write32(&mut r.io, slot, 0x04, u32::from(COMMAND_MEMORY));
    r.router.read(BarSpace::Io, io_bar + 2, &mut b);
    assert_eq!(b[0], 0xff, "I/O BAR decoded with I/O Space off");
    r.router.write(BarSpace::Io, io_bar + 2, &[0x55]);
    r.router.read(BarSpace::Mmio, MMIO32 + 8, &mut b);
    assert_eq!(b[0], 0x11, "the write with decoding off was dropped");
    r.router.read(BarSpace::Mmio, MMIO64, &mut b);
    assert_eq!(b[0], 0);
    // Both on again.
    cfg_write32(
        &mut r.io,
        slot,
        0x04,
        u32::from(COMMAND_MEMORY | COMMAND_IO),
    );
    r.router.read(BarSpace::Io, io_bar + 2, &mut b);
    assert_eq!(b[0], 0x22);
    // Both off.
    cfg_write32(&mut r.io, slot, 0x04, 0);
    let mut w = [0u8; 4];
    r.router.read(BarSpace::Mmio, MMIO32 + 8, &mut w);
    assert_eq!(w, [0xff; 4]);
    r.router.read(BarSpace::Io, io_bar, &mut w);
    assert_eq!(w, [0xff; 4]);
}

/// A guest repeating a bad access 10000 times gets a handful of log lines for it.
#[test]
fn repeated_bad_pci_accesses_log_a_handful_of_lines() {
    use crate::test_log::lines_logged_by;
    let mut r = rig();
    let slot = r.slot;
    let mut kinds: Vec<(&str, Vec<crate::test_log::Line>)> = Vec::new();
    kinds.push((
        "malformed config data port writes",
        lines_logged_by(|| {
            for _ in 0..10000 {
                r.io.write(0, &cfg_addr(slot, 0, 0x10).to_le_bytes());
                r.io.write(7, &[1, 2]);
                r.io.write(9, &[1]);
                let mut b = [0u8; 4];
                r.io.read(6, &mut b);
            }
        }),
    ));
    kinds.push((
        "accesses hitting no BAR or crossing one's end",
        lines_logged_by(|| {
            let mut b = [0u8; 8];
            for _ in 0..10000 {
                r.router.read(BarSpace::Mmio, MMIO32 + 0x2000_0000, &mut b);
                r.router.write(BarSpace::Mmio, MMIO32 + 0xffc, &b);
            }
        }),
    ));
    kinds.push((
        "BAR accesses with decoding off",
        lines_logged_by(|| {
            cfg_write32(&mut r.io, slot, 0x04, 0);
            let mut b = [0u8; 4];
            for _ in 0..10000 {
                r.router.read(BarSpace::Mmio, MMIO32, &mut b);
                r.router.write(BarSpace::Mmio, MMIO32, &b);
            }
        }),
    ));
    kinds.push((
        "BAR moves (and failed follows)",
        lines_logged_by(|| {
            let dev = r.bus.lock().unwrap().device(PciSlot::root(slot)).unwrap();
            for i in 0..10000u32 {
                cfg_write32(&mut r.io, slot, 0x10, MMIO32 as u32 + (i % 2 + 1) * 0x1000);
            }
            drop(dev);
        }),
    ));
    for (what, lines) in &kinds {
        assert!(
            lines.len() <= 6,
            "{what}: {} lines: {lines:#?}",
            lines.len()
        );
    }
}

#[test]
fn accesses_outside_bars_read_all_ones() {
    let r = rig();
    let mut b = [0u8; 8];
    // Crossing the end of BAR 0 (4 KiB).
    r.router.read(BarSpace::Mmio, MMIO32 + 0xffc, &mut b);
    assert_eq!(b, [0xff; 8]);
    r.router.write(BarSpace::Mmio, MMIO32 + 0xffc, &[1; 8]);
    // Between BARs and at the ends of the address space.
    r.router.read(BarSpace::Mmio, MMIO32 + 0x1000, &mut b);
    assert_eq!(b, [0xff; 8]);
    r.router.read(BarSpace::Mmio, u64::MAX, &mut b);
    assert_eq!(b, [0xff; 8]);
    r.router.read(BarSpace::Io, 0, &mut b);
    assert_eq!(b, [0xff; 8]);
}

#[test]
fn hostile_config_io_accesses() {
    let mut r = rig();
    r.io.write(0, &cfg_addr(r.slot, 0, 0).to_le_bytes());
    let mut b = [0u8; 4];
    // Crossing the data port end, too long, odd offsets beyond 8.
    r.io.read(6, &mut b);
    assert_eq!(b, [0xff; 4]);
    r.io.write(7, &[1, 2]);
    r.io.write(4, &[1, 2, 3]);
    r.io.write(9, &[1]);
    r.io.read(1000, &mut b);
    assert_eq!(b, [0xff; 4]);
    let mut big = [0u8; 16];
    r.io.read(4, &mut big);
    assert_eq!(big, [0xff; 16]);
    r.io.write(4, &[0; 0]);
    // The device is still intact.
    assert_eq!(cfg_read32(&mut r.io, r.slot, 0), 0x1110_1af4);
}

#[test]
fn failed_add_frees_everything() {
    let mut bus = PciBus::new();
    let mut alloc = BarAllocator::new(
        BarWindow::new(MMIO32, 0x1000),
        None,
        Some(BarWindow::new(0x1000, 0x100)),
    )
    .unwrap();
    let (dev, _) = FakePciDevice::new();
    // BAR 2 (64 KiB) does not fit the 4 KiB window.
    assert!(matches!(
        bus.add_device(ROOT_BUS, Arc::new(Mutex::new(dev)), &mut alloc),
        Err(PciError::WindowExhausted { .. })
    ));
    assert_eq!(
        alloc
            .allocate(
                BarKind::Mem32 {
                    prefetchable: false
                },
                0x1000
            )
            .unwrap(),
        MMIO32
    );
    assert_eq!(bus.router().route_count(), (0, 0));

    let (mut dev, _) = FakePciDevice::new();
    dev.fail_moves = true;
    let mut alloc = allocator();
    let err = bus
        .add_device(ROOT_BUS, Arc::new(Mutex::new(dev)), &mut alloc)
        .unwrap_err();
    assert!(matches!(err, PciError::MoveBar { .. }), "{err}");
    assert_eq!(
        alloc
            .allocate(
                BarKind::Mem32 {
                    prefetchable: false
                },
                0x1000
            )
            .unwrap(),
        MMIO32
    );
    assert!(bus.device(PciSlot::root(1)).is_none());
}

#[test]
fn bus_full_and_slot_errors() {
    let mut bus = PciBus::new();
    let mut alloc = allocator();
    let host = bus.device(PciSlot::root(0)).unwrap();
    assert!(matches!(
        bus.add_device_at(PciSlot::root(0), host.clone(), &mut alloc),
        Err(PciError::SlotUnavailable(s)) if s == "00:00.0"
    ));
    assert!(matches!(
        bus.add_device_at(PciSlot::root(32), host.clone(), &mut alloc),
        Err(PciError::SlotUnavailable(_))
    ));
    assert!(matches!(
        bus.add_device_at(PciSlot::behind_bridge(0), host, &mut alloc),
        Err(PciError::NoSuchBus(BRIDGE_BUS))
    ));
    assert!(matches!(bus.free_slot(2), Err(PciError::NoSuchBus(2))));
    for slot in 1..32 {
        assert_eq!(bus.free_slot(ROOT_BUS).unwrap(), PciSlot::root(slot));
        let got = bus.add_device(
            ROOT_BUS,
            Arc::new(Mutex::new(PciHostBridge::new())),
            &mut alloc,
        );
        assert_eq!(
            got.unwrap(),
            PciSlot::root(slot),
            "add_device takes the slot free_slot named"
        );
    }
    assert!(matches!(bus.free_slot(ROOT_BUS), Err(PciError::BusFull(0))));
    assert!(matches!(
        bus.add_device(
            ROOT_BUS,
            Arc::new(Mutex::new(PciHostBridge::new())),
            &mut alloc
        ),
        Err(PciError::BusFull(0))
    ));
    assert!(matches!(bus.add_bridge(&alloc), Err(PciError::BusFull(0))));
}

/// A bus with the bridge at 00:01.0 and a fake device at 01:00.0 behind it.
fn bridged() -> (
    Arc<Mutex<PciBus>>,
    PciConfigIo,
    Arc<PciBarRouter>,
    SharedPciDevice,
) {
    let mut bus = PciBus::new();
    let mut alloc = allocator();
    assert_eq!(bus.add_bridge(&alloc).unwrap(), PciSlot::root(1));
    assert!(matches!(
        bus.add_bridge(&alloc),
        Err(PciError::SecondBridge)
    ));
    let (dev, _) = FakePciDevice::new();
    let dev: SharedPciDevice = Arc::new(Mutex::new(dev));
    let at = bus.add_device(BRIDGE_BUS, dev.clone(), &mut alloc).unwrap();
    assert_eq!(
        at,
        PciSlot::behind_bridge(0),
        "slot 0 is free behind a bridge"
    );
    assert_eq!(at.to_string(), "01:00.0");
    let router = bus.router();
    let bus = Arc::new(Mutex::new(bus));
    (bus.clone(), PciConfigIo::new(bus), router, dev)
}

fn cfg_bus_read32(io: &mut PciConfigIo, bus: u8, slot: u8, offset: u8) -> u32 {
    io.write(
        0,
        &(cfg_addr(slot, 0, offset) | u32::from(bus) << 16).to_le_bytes(),
    );
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    u32::from_le_bytes(b)
}

fn cfg_bus_write32(io: &mut PciConfigIo, bus: u8, slot: u8, offset: u8, value: u32) {
    io.write(
        0,
        &(cfg_addr(slot, 0, offset) | u32::from(bus) << 16).to_le_bytes(),
    );
    io.write(4, &value.to_le_bytes());
}

/// Configuration accesses reach the devices behind the bridge at the bridge's secondary bus
/// number, whatever the guest makes it; its BARs lie inside the bridge's windows.
#[test]
fn devices_behind_the_bridge_answer_at_its_secondary_bus() {
    let (bus, mut io, router, dev) = bridged();
    assert_eq!(cfg_bus_read32(&mut io, 0, 1, 0), 0x0001_1b36);
    assert_eq!(cfg_bus_read32(&mut io, 0, 1, 8) >> 8, 0x06_0400);
    assert_eq!(cfg_bus_read32(&mut io, 0, 1, 0x18) & 0xff_ffff, 0x01_01_00);
    assert_eq!(cfg_bus_read32(&mut io, 1, 0, 0), 0x1110_1af4);
    // An empty slot on either bus, a bus behind nothing.
    for (b, s) in [(0, 2), (1, 1), (2, 0), (0xff, 0)] {
        assert_eq!(
            cfg_bus_read32(&mut io, b, s, 0),
            0xffff_ffff,
            "{b:02x}:{s:02x}"
        );
    }
    // Every BAR lies inside the window of its kind.
    let windows = allocator().bridge_windows();
    for bar in lock_device(&dev).bars() {
        let (first, last) = match bar.kind {
            BarKind::Io => windows.io.unwrap(),
            BarKind::Mem64 { prefetchable: true } => windows.prefetchable.unwrap(),
            _ => windows.mem,
        };
        assert!(
            bar.addr >= first && bar.addr + bar.size - 1 <= last,
            "{bar:x?}"
        );
    }

    // The guest renumbers: secondary 5, subordinate 5.
    cfg_bus_write32(&mut io, 0, 1, 0x18, 0x00_05_05_00);
    assert_eq!(cfg_bus_read32(&mut io, 5, 0, 0), 0x1110_1af4);
    assert_eq!(cfg_bus_read32(&mut io, 1, 0, 0), 0xffff_ffff);
    // A BAR move through the new number is routed.
    cfg_bus_write32(&mut io, 5, 0, 0x04, u32::from(COMMAND_MEMORY));
    cfg_bus_write32(&mut io, 5, 0, 0x10, 0xd000_0000);
    assert_eq!(lock_device(&dev).bars()[0].addr, 0xd000_0000);
    router.write(BarSpace::Mmio, 0xd000_0008, &[0x5a]);
    let mut b = [0u8; 1];
    router.read(BarSpace::Mmio, 0xd000_0008, &mut b);
    assert_eq!(b[0], 0x5a);
    assert_eq!(router.route_count(), (2, 1));
    // Secondary bus 0 (unconfigured): nothing behind the bridge answers.
    cfg_bus_write32(&mut io, 0, 1, 0x18, 0);
    assert_eq!(
        cfg_bus_read32(&mut io, 0, 0, 0),
        0x0d57_8086,
        "the host bridge still does"
    );
    for b in [0, 1, 5] {
        let id = cfg_bus_read32(&mut io, b, 0, 0);
        assert_ne!(id, 0x1110_1af4, "bus {b}");
    }
    drop(bus);
}

#[test]
fn removing_devices_keeps_both_bridges() {
    let (bus, mut io, router, dev) = bridged();
    let removed = bus.lock().unwrap().remove_devices();
    assert_eq!(removed.len(), 1);
    assert!(Arc::ptr_eq(&removed[0], &dev));
    assert_eq!(router.route_count(), (0, 0));
    assert_eq!(cfg_bus_read32(&mut io, 1, 0, 0), 0xffff_ffff);
    assert_eq!(cfg_bus_read32(&mut io, 0, 1, 0), 0x0001_1b36);
    assert_eq!(cfg_bus_read32(&mut io, 0, 0, 0), 0x0d57_8086);
    let b = bus.lock().unwrap();
    assert_eq!(b.free_slot(BRIDGE_BUS).unwrap(), PciSlot::behind_bridge(0));
    assert_eq!(b.free_slot(ROOT_BUS).unwrap(), PciSlot::root(2));
}

#[test]
fn works_through_vm_device_io_manager() {
    let r = rig();
    let mut manager = IoManager::new();
    manager
        .register_pio(
            PioRange::new(PioAddress(PCI_CONFIG_IO_PORT), PCI_CONFIG_IO_PORT_SIZE).unwrap(),
            Arc::new(Mutex::new(PciConfigIo::new(r.bus.clone()))),
        )
        .unwrap();
    let router: Arc<dyn DeviceMmio + Send + Sync> = r.router.clone();
    manager
        .register_mmio(
            MmioRange::new(MmioAddress(MMIO32), 0x3ec0_0000).unwrap(),
            router,
        )
        .unwrap();
    manager
        .pio_write(PioAddress(0xcf8), &cfg_addr(r.slot, 0, 0).to_le_bytes())
        .unwrap();
    let mut b = [0u8; 2];
    manager.pio_read(PioAddress(0xcfe), &mut b).unwrap();
    assert_eq!(u16::from_le_bytes(b), 0x1110);
    manager.mmio_write(MmioAddress(MMIO32 + 4), &[7]).unwrap();
    let mut one = [0u8; 1];
    manager
        .mmio_read(MmioAddress(MMIO32 + 4), &mut one)
        .unwrap();
    assert_eq!(one[0], 7);
    // The Mutex-wrapped form also works for callers that prefer it.
    let mut io = PciConfigIo::new(r.bus.clone());
    io.pio_write(PioAddress(0xcf8), 0, &cfg_addr(0, 0, 0).to_le_bytes());
    let mut d = [0u8; 4];
    io.pio_read(PioAddress(0xcf8), 4, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x0d57_8086);
}

mod hostile {
    use proptest::prelude::*;

    use super::*;

    /// One guest port access at 0xCF8 + offset: (offset, length, value, write?).
    fn access() -> impl Strategy<Value = (u64, usize, u64, bool)> {
        (
            0u64..10,
            prop_oneof![Just(1usize), Just(2), Just(3), Just(4), Just(8)],
            any::<u64>(),
            any::<bool>(),
        )
    }

    proptest! {
        /// Any sequence of port accesses: no panic, BAR flag bits intact, BARs stay aligned to
        /// their size, and the router keeps exactly one route per BAR.
        #[test]
        fn config_io_survives_any_access_sequence(ops in prop::collection::vec(access(), 0..300)) {
            let mut r = rig();
            for (offset, len, value, write) in ops {
                let bytes = value.to_le_bytes();
                if write {
                    // Aim at our device half of the time so BARs really get hit.
                    if offset == 0 && len == 4 && value & 1 == 0 {
                        let reg = (value >> 8) as u8 & 0x3c;
                        r.io.write(0, &cfg_addr(r.slot, 0, reg).to_le_bytes());
                    } else {
                        r.io.write(offset, &bytes[..len]);
                    }
                } else {
                    let mut buf = vec![0u8; len];
                    r.io.read(offset, &mut buf);
                }
            }
            let dev = r.bus.lock().unwrap().device(PciSlot::root(r.slot)).unwrap();
            let mut d = lock_device(&dev);
            prop_assert_eq!(d.read_config_register(REG_BAR0) & 0xf, 0x0);
            prop_assert_eq!(d.read_config_register(REG_BAR0 + 2) & 0xf, 0xc);
            prop_assert_eq!(d.read_config_register(REG_BAR0 + 4) & 0x3, 0x1);
            for bar in d.bars() {
                prop_assert_eq!(bar.addr % bar.size, 0);
            }
            drop(d);
            prop_assert_eq!(r.router.route_count(), (2, 1));
        }

        /// Any sequence of port accesses to the bridge and the buses around it (renumbering
        /// included): no panic, the bridge's read-only bits hold, the device behind it answers
        /// exactly at the bridge's secondary bus (when that is not 0) and keeps one route per BAR.
        #[test]
        fn bridged_config_io_survives_any_access_sequence(
            ops in prop::collection::vec((0u8..4, 0u8..3, 0u8..0x40, any::<u32>(), 0u8..3), 0..300)
        ) {
            let (bus, mut io, router, dev) = bridged();
            for (b, slot, reg, value, len) in ops {
                // Buses 0, 1, 2 and 5; slots 0 (the host bridge, or the device), 1 (the bridge), 2.
                let b: u8 = [0, 1, 2, 5][usize::from(b)];
                io.write(0, &(cfg_addr(slot, 0, reg) | u32::from(b) << 16).to_le_bytes());
                let bytes = value.to_le_bytes();
                match len {
                    0 => io.write(4 + u64::from(reg & 3), &bytes[..1]),
                    1 => io.write(4 + u64::from(reg & 2), &bytes[..2]),
                    _ => io.write(4, &bytes),
                }
            }
            let secondary = cfg_bus_read32(&mut io, 0, 1, 0x18) >> 8 & 0xff;
            prop_assert_eq!(cfg_bus_read32(&mut io, 0, 1, 0), 0x0001_1b36);
            prop_assert_eq!(cfg_bus_read32(&mut io, 0, 1, 0x0c) >> 16 & 0x7f, 1);
            prop_assert_eq!(cfg_bus_read32(&mut io, 0, 1, 0x1c) & 0x0f0f, 0);
            prop_assert_eq!(cfg_bus_read32(&mut io, 0, 1, 0x24) & 0x000f_000f, 0x0001_0001);
            for b in [1u8, 2, 5] {
                let id = cfg_bus_read32(&mut io, b, 0, 0);
                let expected = if u32::from(b) == secondary { 0x1110_1af4 } else { 0xffff_ffff };
                prop_assert_eq!(id, expected, "bus {} (secondary {})", b, secondary);
            }
            let mut d = lock_device(&dev);
            prop_assert_eq!(d.read_config_register(REG_BAR0 + 2) & 0xf, 0xc);
            for bar in d.bars() {
                prop_assert_eq!(bar.addr % bar.size, 0);
            }
            drop(d);
            prop_assert_eq!(router.route_count(), (2, 1));
            drop(bus);
        }

        /// Any MMIO/PIO access on the router: no panic, reads outside BARs are all-ones.
        #[test]
        fn router_survives_any_access(addr in any::<u64>(), len in 0usize..16, io in any::<bool>()) {
            let r = rig();
            let space = if io { BarSpace::Io } else { BarSpace::Mmio };
            let mut buf = vec![0u8; len];
            r.router.read(space, addr, &mut buf);
            r.router.write(space, addr, &buf);
            let dev = r.bus.lock().unwrap().device(PciSlot::root(r.slot)).unwrap();
            let inside = lock_device(&dev).bars().iter().any(|b| {
                b.kind.space() == space && addr >= b.addr && addr - b.addr < b.size
            });
            if !inside {
                prop_assert!(buf.iter().all(|b| *b == 0xff));
            }
        }
    }
}

/// ECAM offset of `bus`:`slot`.0, register `offset`.
fn ecam_at(bus: u8, slot: u8, offset: u16) -> u64 {
    u64::from(bus) << 20 | u64::from(slot) << 15 | u64::from(offset)
}

/// The ECAM window sees every function and register mechanism #1 does, in every access size,
/// and a write through one is read back through the other; accesses the window cannot serve
/// read all-ones and write nothing.
#[test]
fn ecam_and_the_configuration_ports_agree() {
    let (bus, mut io, _router, dev) = bridged();
    let mut ecam = PciConfigMmio::new(bus.clone());
    let read = |ecam: &mut PciConfigMmio, at: u64, len: usize| {
        let mut b = [0u8; 8];
        ecam.read(at, &mut b[..len]);
        u64::from_le_bytes(b)
    };
    for (b, s) in [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0), (0xff, 31)] {
        for reg in (0..0x40).step_by(4) {
            let want = cfg_bus_read32(&mut io, b, s, reg);
            let at = ecam_at(b, s, reg.into());
            assert_eq!(
                read(&mut ecam, at, 4),
                u64::from(want),
                "{b:02x}:{s:02x} {reg:#x}"
            );
            assert_eq!(read(&mut ecam, at + 2, 2), u64::from(want >> 16));
            assert_eq!(read(&mut ecam, at + 3, 1), u64::from(want >> 24));
        }
    }
    assert_eq!(read(&mut ecam, ecam_at(1, 0, 0), 4), 0x1110_1af4);
    // Crossing a dword or 8 bytes at once: all-ones.
    assert_eq!(read(&mut ecam, ecam_at(1, 0, 2), 4), 0xffff_ffff);
    assert_eq!(read(&mut ecam, ecam_at(1, 0, 0), 8), u64::MAX);
    // Past bus 255.
    assert_eq!(read(&mut ecam, 256 << 20, 4), 0xffff_ffff);

    // The guest renumbers the bridge's buses through ECAM (one byte), then moves a BAR.
    ecam.write(ecam_at(0, 1, 0x19), &[5]);
    ecam.write(ecam_at(0, 1, 0x1a), &[5]);
    assert_eq!(cfg_bus_read32(&mut io, 5, 0, 0), 0x1110_1af4);
    ecam.write(ecam_at(5, 0, 0x04), &COMMAND_MEMORY.to_le_bytes());
    ecam.write(ecam_at(5, 0, 0x10), &0xd000_0000u32.to_le_bytes());
    assert_eq!(lock_device(&dev).bars()[0].addr, 0xd000_0000);
    assert_eq!(cfg_bus_read32(&mut io, 5, 0, 0x10) & !0xf, 0xd000_0000);
    // A write that crosses a dword changes nothing.
    ecam.write(ecam_at(5, 0, 0x12), &0xc000_0000u32.to_le_bytes());
    assert_eq!(lock_device(&dev).bars()[0].addr, 0xd000_0000);
    drop(bus);
}
