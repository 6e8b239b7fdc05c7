//! The passthrough device against a fake VFIO device, fake KVM slots, a fake MSI router and a
//! fake region table: configuration virtualisation, BAR mapping and moves, MSI/MSI-X wiring.

use std::sync::{Arc, Mutex};

use super::*;
use crate::pci::{BarAllocator, BarSpace, BarWindow, PciBus, PciConfigIo, SharedPciDevice};
use crate::test_utils::{FakeMsiRouter as FakeRouter, FakeRegistry, FakeSlots, FakeVfio};

const RW_MMAP: u32 = FakeVfio::RW_MMAP;
const BAR2_SIZE: u64 = FakeVfio::BAR2_SIZE;

struct Rig {
    fake: Arc<FakeVfio>,
    slots: Arc<FakeSlots>,
    router: Arc<FakeRouter>,
    registry: Arc<FakeRegistry>,
    device: SharedPciDevice,
    vfio: Arc<Mutex<VfioPciDevice>>,
    io: PciConfigIo,
    bar_router: Arc<crate::pci::PciBarRouter>,
    slot: u8,
}

fn rig(intx: Option<u32>) -> Rig {
    rig_with(FakeVfio::new(), intx)
}

fn rig_with(fake: Arc<FakeVfio>, intx: Option<u32>) -> Rig {
    let slots = Arc::new(FakeSlots::default());
    let router = Arc::new(FakeRouter::default());
    let registry = Arc::new(FakeRegistry::default());
    let dev = VfioPciDevice::new(
        fake.clone(),
        VfioPciDeviceEnv {
            slots: slots.clone(),
            irq_router: Some(router.clone()),
            intx_gsi: intx,
            registry: Some(registry.clone()),
            page_size: 0x1000,
        },
    )
    .unwrap();
    let vfio = Arc::new(Mutex::new(dev));
    let device: SharedPciDevice = vfio.clone();
    let mut bus = PciBus::new();
    let mut alloc = BarAllocator::new(
        BarWindow::new(0xc000_0000, 0x3ec0_0000),
        Some(BarWindow::new(0x1_0000_0000, 0x1_0000_0000)),
        Some(BarWindow::new(0x1000, 0xf000)),
    )
    .unwrap();
    let slot = bus.add_device(device.clone(), &mut alloc).unwrap();
    let bar_router = bus.router();
    let io = PciConfigIo::new(Arc::new(Mutex::new(bus)));
    Rig {
        fake,
        slots,
        router,
        registry,
        device,
        vfio,
        io,
        bar_router,
        slot,
    }
}

impl Rig {
    fn select(&mut self, offset: u8) {
        let addr = 0x8000_0000u32 | (u32::from(self.slot) << 11) | u32::from(offset & 0xfc);
        self.io.write(0, &addr.to_le_bytes());
    }
    fn cfg_read(&mut self, offset: u8) -> u32 {
        self.select(offset);
        let mut b = [0u8; 4];
        self.io.read(4, &mut b);
        u32::from_le_bytes(b)
    }
    fn cfg_write(&mut self, offset: u8, data: &[u8]) {
        self.select(offset);
        self.io.write(4 + u64::from(offset & 3), data);
    }
    fn bar(&self, i: usize) -> crate::pci::PciBar {
        self.device
            .lock()
            .unwrap()
            .bars()
            .into_iter()
            .find(|b| b.index == i)
            .unwrap()
    }
}

#[test]
fn config_space_is_virtualised() {
    let mut r = rig(None);
    assert_eq!(r.cfg_read(0x00), 0x1110_1af4, "identity from the device");
    assert_eq!(r.cfg_read(0x30), 0, "ROM hidden");
    assert_eq!(
        r.cfg_read(0x0c) >> 16 & 0xff,
        0,
        "single function in the guest"
    );
    // BARs come from the shadow: BAR2 64-bit prefetchable in the 64-bit window.
    assert_eq!(r.cfg_read(0x18), 0x0000_000c);
    assert_eq!(r.cfg_read(0x1c), 0x1);
    // Sizing BAR2 reads back 16 MiB.
    r.cfg_write(0x18, &[0xff; 4]);
    assert_eq!(r.cfg_read(0x18), 0xff00_000c);
    r.cfg_write(0x18, &0u32.to_le_bytes());
    // BAR0 is 256 bytes.
    r.cfg_write(0x10, &[0xff; 4]);
    assert_eq!(r.cfg_read(0x10), 0xffff_ff00);
    // Command register writes reach the device; BAR writes do not.
    r.cfg_write(0x04, &[0x06, 0x00]);
    let log = r.fake.log();
    assert!(log.contains(&"write 7 0x4 [06, 00]".to_string()), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.starts_with("write 7 0x10") || l.starts_with("write 7 0x18")),
        "{log:?}"
    );
    assert_eq!(r.cfg_read(0x04) & 0xffff, 0x0006);
    // Interrupt line is scratch; INTx is not wired in this rig, so no pin.
    r.cfg_write(0x3c, &[0x0b]);
    assert_eq!(r.cfg_read(0x3c) & 0xffff, 0x000b);
    assert!(!r.fake.log().iter().any(|l| l.starts_with("write 7 0x3c")));
}

#[test]
fn bars_mapped_with_msix_carved_out() {
    let r = rig(None);
    let bar2 = r.bar(2);
    assert_eq!(bar2.addr, 0x1_0000_0000);
    // BAR0 (< page) and BAR1 (MSI-X table and PBA in its only page) are trapped; BAR2 mapped whole.
    let maps: Vec<_> = r
        .fake
        .log()
        .into_iter()
        .filter(|l| l.starts_with("map"))
        .collect();
    assert_eq!(maps, vec!["map 2 0x0 0x1000000".to_string()]);
    assert_eq!(r.slots.live(), vec![(0x1_0000_0000, BAR2_SIZE)]);
    let regions = r.registry.regions.lock().unwrap().clone();
    assert_eq!(regions.len(), 3);
    assert_eq!(regions[&2].guest_base, 0x1_0000_0000);
    assert_eq!(regions[&2].fd_offset, 2 << 40);
    assert_eq!(regions[&2].pieces.len(), 1);
    assert!(regions[&0].pieces.is_empty());
}

#[test]
fn guest_bar_move_recreates_slots() {
    let mut r = rig(None);
    // Move BAR2 to 0xd000_0000 (low dword, then high dword).
    r.cfg_write(0x18, &0xd000_000cu32.to_le_bytes());
    assert_eq!(
        r.slots.live(),
        vec![(0x1_0000_0000, BAR2_SIZE)],
        "no move on the low half"
    );
    r.cfg_write(0x1c, &0u32.to_le_bytes());
    assert_eq!(r.slots.live(), vec![(0xd000_0000, BAR2_SIZE)]);
    assert_eq!(
        r.registry.regions.lock().unwrap()[&2].guest_base,
        0xd000_0000
    );
    // A trapped BAR moves too: BAR0 registers reach the device at the new address.
    r.cfg_write(0x10, &0xc800_0000u32.to_le_bytes());
    r.bar_router
        .write(BarSpace::Mmio, 0xc800_0010, &[0xaa, 0xbb]);
    assert!(r.fake.log().contains(&"write 0 0x10 [aa, bb]".to_string()));
    let mut b = [0u8; 2];
    r.bar_router.read(BarSpace::Mmio, 0xc800_0010, &mut b);
    assert_eq!(b, [0xaa, 0xbb]);
    // A move onto an occupied range fails in KVM: the BAR falls back to trapping.
    {
        let mut d = r.device.lock().unwrap();
        let bad = crate::pci::BarReprogram {
            bar: 2,
            kind: crate::pci::BarKind::Mem64 { prefetchable: true },
            old_addr: 0xd000_0000,
            new_addr: 0xd000_0000,
            size: BAR2_SIZE,
        };
        // Remapping at the same place works (slots removed first).
        d.move_bar(&bad).unwrap();
    }
    assert_eq!(r.slots.live(), vec![(0xd000_0000, BAR2_SIZE)]);
}

#[test]
fn memory_decoding_controls_the_slots() {
    let mut r = rig(None);
    assert!(r.vfio.lock().unwrap().mem_decode());
    assert_eq!(r.slots.live().len(), 1);
    // Linux turns decoding off around BAR sizing: the slot goes, the BAR traps.
    r.cfg_write(0x04, &[0x01, 0x01]);
    assert!(!r.vfio.lock().unwrap().mem_decode());
    assert!(r.slots.live().is_empty());
    assert!(r.registry.regions.lock().unwrap()[&2].pieces.is_empty());
    // A move while decoding is off maps nothing...
    r.cfg_write(0x18, &0xd000_000cu32.to_le_bytes());
    r.cfg_write(0x1c, &0u32.to_le_bytes());
    assert!(r.slots.live().is_empty());
    assert_eq!(
        r.registry.regions.lock().unwrap()[&2].guest_base,
        0xd000_0000
    );
    // ...until decoding is back on, at the new address.
    r.cfg_write(0x04, &[0x03]);
    assert_eq!(r.slots.live(), vec![(0xd000_0000, BAR2_SIZE)]);
    assert_eq!(r.registry.regions.lock().unwrap()[&2].pieces.len(), 1);
    // Writes to other registers leave it alone.
    r.cfg_write(0x0c, &[0x10]);
    assert_eq!(r.slots.live().len(), 1);
}

#[test]
fn trapped_accesses_are_bounded() {
    let r = rig(None);
    let bar0 = r.bar(0).addr;
    let mut b = [0u8; 8];
    // BAR0 is 256 bytes of registers inside a 4 KiB allocation.
    r.bar_router.read(BarSpace::Mmio, bar0 + 0xfc, &mut b);
    assert_eq!(b, [0xff; 8], "crosses the end of the 256-byte region");
    r.bar_router.write(BarSpace::Mmio, bar0 + 0x200, &[1]);
    assert!(!r.fake.log().iter().any(|l| l.starts_with("write 0")));
    let mut d = r.device.lock().unwrap();
    d.read_bar(0, u64::MAX, &mut b);
    assert_eq!(b, [0xff; 8]);
    d.write_bar(9, 0, &[1]);
    d.read_bar(1, u64::MAX - 3, &mut b);
}

#[test]
fn msix_enable_and_table_programming() {
    let mut r = rig(None);
    let bar1 = r.bar(1).addr;
    // Program vector 1 through the trapped table, still masked.
    r.bar_router
        .write(BarSpace::Mmio, bar1 + 0x10, &0xfee0_0000u32.to_le_bytes());
    r.bar_router
        .write(BarSpace::Mmio, bar1 + 0x18, &0x0000_4041u32.to_le_bytes());
    // Enable MSI-X (message control high byte at 0x43).
    r.cfg_write(0x43, &[0x80]);
    assert_eq!(
        r.cfg_read(0x40) >> 16,
        0x8003,
        "enable bit and table size read back"
    );
    assert!(
        !r.fake.log().iter().any(|l| l.starts_with("write 7 0x43")),
        "not forwarded"
    );
    assert_eq!(r.fake.irq.lock().unwrap().get(&IRQ_MSIX), Some(&4));
    let d = r.vfio.lock().unwrap();
    let irq = d.interrupts().unwrap();
    assert_eq!(irq.mode(), IrqModeKind::Msix(4));
    assert!(irq.live_vectors().is_empty(), "all masked");
    let gsi1 = irq.gsis()[1];
    drop(d);
    // Unmask vector 1.
    r.bar_router
        .write(BarSpace::Mmio, bar1 + 0x1c, &0u32.to_le_bytes());
    assert_eq!(
        r.router.routes.lock().unwrap().get(&gsi1),
        Some(&(0xfee0_0000, 0x4041))
    );
    assert_eq!(r.router.irqfds.lock().unwrap().clone(), vec![gsi1]);
    let mut b = [0u8; 4];
    r.bar_router.read(BarSpace::Mmio, bar1 + 0x18, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x4041);
    // Function mask takes the irqfd away; clearing it brings it back.
    r.cfg_write(0x43, &[0xc0]);
    assert!(r.router.irqfds.lock().unwrap().is_empty());
    r.cfg_write(0x43, &[0x80]);
    assert_eq!(r.router.irqfds.lock().unwrap().clone(), vec![gsi1]);
    // Disable: VFIO stops, GSIs released.
    r.cfg_write(0x43, &[0x00]);
    assert!(r.fake.irq.lock().unwrap().is_empty());
    assert!(r.router.irqfds.lock().unwrap().is_empty());
    assert!(r.router.routes.lock().unwrap().is_empty());
}

#[test]
fn msi_enable_routes_message() {
    let mut r = rig(None);
    // MSI at 0x50: 64-bit address at 0x54/0x58, data at 0x5c.
    r.cfg_write(0x54, &0xfee0_2000u32.to_le_bytes());
    r.cfg_write(0x58, &0u32.to_le_bytes());
    r.cfg_write(0x5c, &[0x31, 0x00]);
    r.cfg_write(0x52, &[0x01]);
    assert_eq!(r.cfg_read(0x50) >> 16, 0x0081);
    assert_eq!(r.cfg_read(0x54), 0xfee0_2000);
    assert_eq!(r.fake.irq.lock().unwrap().get(&IRQ_MSI), Some(&1));
    let gsi = r.vfio.lock().unwrap().interrupts().unwrap().gsis()[0];
    assert_eq!(
        r.router.routes.lock().unwrap().get(&gsi),
        Some(&(0xfee0_2000, 0x31))
    );
    assert_eq!(r.router.irqfds.lock().unwrap().clone(), vec![gsi]);
    assert!(
        !r.fake.log().iter().any(|l| l.starts_with("write 7 0x5")),
        "MSI never reaches the device"
    );
}

#[test]
fn intx_then_msi_switches_modes() {
    let mut r = rig(Some(10));
    assert_eq!(
        r.cfg_read(0x3c) & 0xffff,
        0x010a,
        "line set by the VMM, pin INTA from the device"
    );
    assert_eq!(
        r.vfio.lock().unwrap().interrupts().unwrap().mode(),
        IrqModeKind::Intx
    );
    assert_eq!(r.fake.irq.lock().unwrap().get(&IRQ_INTX), Some(&1));
    r.cfg_write(0x52, &[0x01]);
    // The fake, like VFIO, refuses MSI while INTx is on: INTx must have been disabled first.
    assert_eq!(
        r.vfio.lock().unwrap().interrupts().unwrap().mode(),
        IrqModeKind::Msi(1)
    );
    assert_eq!(
        r.fake
            .irq
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![IRQ_MSI]
    );
    r.cfg_write(0x52, &[0x00]);
    assert_eq!(
        r.vfio.lock().unwrap().interrupts().unwrap().mode(),
        IrqModeKind::Intx
    );
}

#[test]
fn drop_unmaps_everything() {
    let mut r = rig(None);
    r.cfg_write(0x43, &[0x80]);
    assert!(!r.slots.live().is_empty());
    assert!(*r.registry.registered.lock().unwrap());
    let Rig {
        device,
        vfio,
        io,
        bar_router,
        slots,
        registry,
        fake,
        ..
    } = r;
    drop(io);
    drop(bar_router);
    drop(device);
    drop(vfio);
    assert!(slots.live().is_empty());
    assert!(!*registry.registered.lock().unwrap());
    assert!(fake.irq.lock().unwrap().is_empty());
}

/// A device whose reports are odd: an I/O BAR, a 64-bit BAR claimed at index 5 (impossible),
/// sparse mmap areas, an MSI-X table in a BAR that does not exist and a looping capability list.
#[test]
fn odd_device_reports_are_tolerated() {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
    c[4..8].copy_from_slice(&0x0010_0003u32.to_le_bytes());
    c[0x10..0x14].copy_from_slice(&1u32.to_le_bytes()); // BAR0: I/O
    c[0x14..0x18].copy_from_slice(&0u32.to_le_bytes()); // BAR1: mem32 with sparse areas
    c[0x24..0x28].copy_from_slice(&4u32.to_le_bytes()); // BAR5: "64-bit"
    c[0x34] = 0x40;
    // MSI-X at 0x40, table in BAR 3 (absent), then a capability pointing at itself.
    c[0x40..0x44].copy_from_slice(&0x0003_5011u32.to_le_bytes());
    c[0x44..0x48].copy_from_slice(&0x0000_0003u32.to_le_bytes());
    c[0x48..0x4c].copy_from_slice(&0x0000_0803u32.to_le_bytes());
    c[0x50] = 0x09; // vendor capability whose next pointer is itself
    c[0x51] = 0x50;
    let fake = FakeVfio::custom(
        c,
        &[
            (0, 0x20, REGION_READ | REGION_WRITE),
            (1, 0x4000, RW_MMAP),
            (5, 0x1000, RW_MMAP),
        ],
        Some((1, vec![(0x1000, 0x1000), (0x3000, 0x1000)])),
    );
    let mut r = rig_with(fake, None);
    let bars = r.device.lock().unwrap().bars();
    let kinds: Vec<_> = bars.iter().map(|b| (b.index, b.kind, b.size)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, crate::pci::BarKind::Io, 0x20),
            (
                1,
                crate::pci::BarKind::Mem32 {
                    prefetchable: false
                },
                0x4000
            )
        ],
        "the impossible 64-bit BAR 5 is left out"
    );
    // Only the two sparse areas of BAR1 are mapped.
    let maps: Vec<_> = r
        .fake
        .log()
        .into_iter()
        .filter(|l| l.starts_with("map"))
        .collect();
    assert_eq!(
        maps,
        vec![
            "map 1 0x1000 0x1000".to_string(),
            "map 1 0x3000 0x1000".to_string()
        ]
    );
    let bar1 = bars[1].addr;
    assert_eq!(
        r.slots.live(),
        vec![(bar1 + 0x1000, 0x1000), (bar1 + 0x3000, 0x1000)]
    );
    // I/O BAR accesses reach the device.
    let io = bars[0].addr;
    r.bar_router.write(BarSpace::Io, io + 2, &[0x5a]);
    assert!(r.fake.log().contains(&"write 0 0x2 [5a]".to_string()));
    // Enabling MSI-X whose table is nowhere still works (no panic, vectors wired).
    r.cfg_write(0x43, &[0x80]);
    assert_eq!(
        r.vfio.lock().unwrap().interrupts().unwrap().mode(),
        IrqModeKind::Msix(4)
    );
    assert_eq!(r.cfg_read(0x00), 0x1234_abcd);
}

/// Small I/O BARs (8 ports like a 16550, 4 like an IDE control block) keep their size: the guest
/// sizes and places them as the device has them (the 16-byte minimum is for memory BARs), and
/// port I/O in them reaches the VFIO region with its offset and width.
#[test]
fn small_io_bars_keep_their_size() {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
    c[4..8].copy_from_slice(&0x0000_0001u32.to_le_bytes());
    c[0x10..0x14].copy_from_slice(&1u32.to_le_bytes()); // BAR0: I/O, 8 ports
    c[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // BAR1: I/O, 4 ports
    let fake = FakeVfio::custom(
        c,
        &[
            (0, 8, REGION_READ | REGION_WRITE),
            (1, 4, REGION_READ | REGION_WRITE),
        ],
        None,
    );
    let mut r = rig_with(fake, None);
    let sizes: Vec<_> = r
        .device
        .lock()
        .unwrap()
        .bars()
        .iter()
        .map(|b| (b.index, b.kind, b.size))
        .collect();
    assert_eq!(
        sizes,
        vec![
            (0, crate::pci::BarKind::Io, 8),
            (1, crate::pci::BarKind::Io, 4)
        ]
    );
    // The guest's sizing sees 8 and 4 ports.
    let (io0, io1) = (r.bar(0).addr, r.bar(1).addr);
    for (reg, want) in [(0x10u8, 0xffff_fff9u32), (0x14, 0xffff_fffd)] {
        r.cfg_write(reg, &u32::MAX.to_le_bytes());
        assert_eq!(r.cfg_read(reg), want, "BAR at {reg:#x} sized");
    }
    r.cfg_write(0x10, &(io0 as u32).to_le_bytes());
    r.cfg_write(0x14, &(io1 as u32).to_le_bytes());
    assert_eq!(r.cfg_read(0x10), io0 as u32 | 1);
    // A 32-bit OUT/IN at +4 reaches region 0 at offset 4, a 16-bit OUT region 1.
    r.bar_router
        .write(BarSpace::Io, io0 + 4, &0x1234_5678u32.to_le_bytes());
    assert!(r
        .fake
        .log()
        .contains(&"write 0 0x4 [78, 56, 34, 12]".to_string()));
    let mut b = [0u8; 4];
    r.bar_router.read(BarSpace::Io, io0 + 4, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x1234_5678);
    r.bar_router.write(BarSpace::Io, io1 + 2, &[0xa5, 0x5a]);
    assert!(r.fake.log().contains(&"write 1 0x2 [a5, 5a]".to_string()));
}
