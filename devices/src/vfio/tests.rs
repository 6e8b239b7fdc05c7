//! The passthrough device against the fake VFIO device, KVM slots and MSI router of
//! `crate::test_utils` and a real region table: configuration virtualisation, BAR mapping and
//! moves, MSI/MSI-X wiring.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use vfio_dmabuf::{DeviceId, DeviceRegistry, RegionInfo, SharedRegistry};

use super::*;
use crate::pci::{
    BarAllocator, BarSpace, BarWindow, PciBus, PciConfigIo, PciSlot, SharedPciDevice, BRIDGE_BUS,
};
use crate::test_utils::{FakeMsiRouter, FakeSlots, FakeVfio};

const RW_MMAP: u32 = FakeVfio::RW_MMAP;
const BAR2_SIZE: u64 = FakeVfio::BAR2_SIZE;

struct Rig {
    fake: Arc<FakeVfio>,
    slots: Arc<FakeSlots>,
    router: Arc<FakeMsiRouter>,
    registry: SharedRegistry,
    device: SharedPciDevice,
    vfio: Arc<Mutex<VfioPciDevice>>,
    io: PciConfigIo,
    bar_router: Arc<crate::pci::PciBarRouter>,
    /// Behind the PCI-to-PCI bridge, as the VMM places passthrough devices.
    slot: PciSlot,
}

fn rig(intx: Option<u32>) -> Rig {
    rig_with(FakeVfio::new(), intx)
}

fn rig_with(fake: Arc<FakeVfio>, intx: Option<u32>) -> Rig {
    let slots = Arc::new(FakeSlots::default());
    let router = Arc::new(FakeMsiRouter::default());
    let registry = DeviceRegistry::shared();
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
    bus.add_bridge(&alloc).unwrap();
    let slot = bus
        .add_device(BRIDGE_BUS, device.clone(), &mut alloc)
        .unwrap();
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
        let addr = 0x8000_0000u32
            | (u32::from(self.slot.bus) << 16)
            | (u32::from(self.slot.slot) << 11)
            | u32::from(offset & 0xfc);
        self.io.write(0, &addr.to_le_bytes());
    }
    fn cfg_read(&mut self, offset: u8) -> u32 {
        self.select(offset);
        let mut b = [0u8; 4];
        self.io.read(4, &mut b);
        u32::from_le_bytes(b)
    }
    /// The device's id in the region table.
    fn id(&self) -> DeviceId {
        let table = self.registry.read().unwrap();
        table
            .device_ids()
            .into_iter()
            .find(|id| table.device_name(*id) == Some("0000:00:04.0"))
            .unwrap()
    }

    /// The region table's record of BAR `index`.
    fn region(&self, index: u32) -> Option<RegionInfo> {
        self.registry
            .read()
            .unwrap()
            .region(self.id(), index)
            .cloned()
    }

    /// Another device's region at `base`: the table refuses our BAR there (overlap).
    fn block(&self, base: u64) {
        let null = std::fs::File::open("/dev/null").unwrap();
        let mut table = self.registry.write().unwrap();
        let other = table.register_device("blocker", null.as_fd()).unwrap();
        table
            .set_region(other, RegionInfo::new(0, base, 0x1000, 0, 0))
            .unwrap();
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
    let regions: Vec<u32> = (0..6).filter(|i| r.region(*i).is_some()).collect();
    assert_eq!(regions, vec![0, 1, 2]);
    let bar2 = r.region(2).unwrap();
    assert_eq!(bar2.guest_base, 0x1_0000_0000);
    assert_eq!(bar2.fd_offset, 2 << 40);
    assert_eq!(bar2.mmap_pieces.len(), 1);
    assert!(r.region(0).unwrap().mmap_pieces.is_empty());
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
    assert_eq!(r.region(2).unwrap().guest_base, 0xd000_0000);
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
    assert!(r.region(2).unwrap().mmap_pieces.is_empty());
    assert!(!r.region(2).unwrap().decoding);
    // Trapped accesses are not decoded either: the device sees none of them.
    let bar0 = r.bar(0).addr;
    let writes_before = r.fake.log().len();
    r.bar_router.write(BarSpace::Mmio, bar0 + 0x10, &[0xaa]);
    let mut b = [0u8; 4];
    r.bar_router.read(BarSpace::Mmio, bar0 + 0x10, &mut b);
    assert_eq!(b, [0xff; 4]);
    assert_eq!(r.fake.log().len(), writes_before, "{:?}", r.fake.log());
    // A move while decoding is off maps nothing...
    r.cfg_write(0x18, &0xd000_000cu32.to_le_bytes());
    r.cfg_write(0x1c, &0u32.to_le_bytes());
    assert!(r.slots.live().is_empty());
    assert_eq!(r.region(2).unwrap().guest_base, 0xd000_0000);
    // ...until decoding is back on, at the new address.
    r.cfg_write(0x04, &[0x03]);
    assert_eq!(r.slots.live(), vec![(0xd000_0000, BAR2_SIZE)]);
    assert_eq!(r.region(2).unwrap().mmap_pieces.len(), 1);
    assert!(r.region(2).unwrap().decoding);
    // Writes to other registers leave it alone.
    r.cfg_write(0x0c, &[0x10]);
    assert_eq!(r.slots.live().len(), 1);
}

#[test]
fn a_capability_write_that_resets_the_device_turns_its_memory_off() {
    let mut r = rig(None);
    assert!(r.vfio.lock().unwrap().mem_decode());
    assert_eq!(r.slots.live().len(), 1);
    // A function-level reset through a capability register (as vfio-pci does for PCIe DevCtl
    // bit 15) clears the command register without a write to it.
    r.fake.config.lock().unwrap()[4..6].copy_from_slice(&[0, 0]);
    r.cfg_write(0x60, &[0x00, 0x80]);
    assert!(!r.vfio.lock().unwrap().mem_decode());
    assert!(r.slots.live().is_empty(), "no slot maps the revoked BAR");
    assert!(!r.region(2).unwrap().decoding);
    // The guest turns memory back on: mapped and decoded again.
    r.cfg_write(0x04, &[0x03]);
    assert_eq!(r.slots.live().len(), 1);
    assert!(r.region(2).unwrap().decoding);
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
    // The table takes aligned dwords and qwords only (PCI spec, as virtio-pci's): byte and word
    // writes of vector 1's control change nothing, word reads read zeros, nothing reaches the
    // device.
    r.bar_router.write(BarSpace::Mmio, bar1 + 0x1c, &[0]);
    r.bar_router.write(BarSpace::Mmio, bar1 + 0x1e, &[0, 0]);
    assert!(r.router.irqfds.lock().unwrap().is_empty(), "still masked");
    let mut w = [0xaau8; 2];
    r.bar_router.read(BarSpace::Mmio, bar1 + 0x1c, &mut w);
    assert_eq!(w, [0, 0]);
    assert!(!r.fake.log().iter().any(|l| l.starts_with("write 1 ")));
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
    assert_eq!(r.registry.read().unwrap().device_ids(), vec![r.id()]);
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
    assert!(registry.read().unwrap().device_ids().is_empty());
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
    // With I/O Space off in the device's command register, port I/O no longer reaches it.
    r.cfg_write(0x04, &[0x00, 0x00]);
    let before = r.fake.log().len();
    r.bar_router.write(BarSpace::Io, io0 + 4, &[1]);
    r.bar_router.read(BarSpace::Io, io0 + 4, &mut b);
    assert_eq!(b, [0xff; 4]);
    assert_eq!(r.fake.log().len(), before);
}

/// A device with 2048 MSI-X vectors (table in BAR 1, 32 KiB, PBA after it).
fn many_vector_device() -> Arc<FakeVfio> {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&0x1111_1af4u32.to_le_bytes());
    c[4..8].copy_from_slice(&0x0010_0102u32.to_le_bytes());
    c[0x14..0x18].copy_from_slice(&0u32.to_le_bytes()); // BAR1: mem32
    c[0x34] = 0x40;
    c[0x40..0x44].copy_from_slice(&0x07ff_0011u32.to_le_bytes()); // 2048 vectors
    c[0x44..0x48].copy_from_slice(&0x0000_0001u32.to_le_bytes()); // table: BAR1 + 0
    c[0x48..0x4c].copy_from_slice(&0x0000_8001u32.to_le_bytes()); // PBA: BAR1 + 0x8000
    FakeVfio::custom_with_irqs(c, &[(1, 0x1_0000, RW_MMAP)], None, [1, 1, 2048])
}

/// Programs and unmasks every vector of a [`many_vector_device`] (MSI-X still disabled).
fn program_all_vectors(r: &Rig) {
    let bar1 = r.bar(1).addr;
    for v in 0..2048u64 {
        let e = bar1 + v * 16;
        r.bar_router
            .write(BarSpace::Mmio, e, &0xfee0_0000u64.to_le_bytes());
        r.bar_router
            .write(BarSpace::Mmio, e + 8, &(0x4000 + v as u32).to_le_bytes());
        r.bar_router
            .write(BarSpace::Mmio, e + 12, &0u32.to_le_bytes());
    }
}

/// Enabling, function-masking, unmasking and disabling MSI-X of a 2048-vector device: each
/// of these single guest writes updates the routing table at most once (not once per
/// vector), and gives its GSIs back in one call.
#[test]
fn msix_control_writes_cost_one_routing_update_each() {
    let mut r = rig_with(many_vector_device(), None);
    program_all_vectors(&r);
    assert_eq!(r.router.calls(), (0, 0), "nothing routed while disabled");
    for (what, control, live) in [
        ("enable", 0x80u8, 2048usize),
        ("function mask", 0xc0, 0),
        ("function unmask", 0x80, 2048),
        ("disable", 0x00, 0),
        ("enable again", 0x80, 2048),
    ] {
        let before = r.router.calls();
        r.cfg_write(0x43, &[control]);
        let after = r.router.calls();
        let (updates, releases) = (after.0 - before.0, after.1 - before.1);
        assert!(updates <= 1, "{what}: {updates} routing updates");
        assert!(releases <= 1, "{what}: {releases} release calls");
        assert_eq!(r.router.irqfds.lock().unwrap().len(), live, "{what}");
    }
    let routes = r.router.routes.lock().unwrap().clone();
    assert_eq!(routes.len(), 2048);
    let gsis = r.vfio.lock().unwrap().interrupts().unwrap().gsis();
    assert_eq!(routes[&gsis[2047]], (0xfee0_0000, 0x4000 + 2047));
    // A table write while enabled re-routes its one vector, once.
    let before = r.router.calls();
    r.bar_router.write(
        BarSpace::Mmio,
        r.bar(1).addr + 5 * 16 + 8,
        &0x4242u32.to_le_bytes(),
    );
    assert_eq!(r.router.calls().0 - before.0, 1);
    assert_eq!(
        r.router.routes.lock().unwrap()[&gsis[5]],
        (0xfee0_0000, 0x4242)
    );
}

/// The same writes with the real KVM router of this machine: each costs at most one
/// KVM_SET_GSI_ROUTING, and the 2048 vectors are really routed and wired.
#[test]
fn msix_control_writes_cost_one_kvm_routing_update_each() {
    use crate::pci::PciDevice;
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        eprintln!("no /dev/kvm: not exercised");
        return;
    };
    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.create_irq_chip().unwrap();
    let router = Arc::new(crate::pci::KvmMsiRouter::new(vm, 4096));
    let fake = many_vector_device();
    let mut dev = VfioPciDevice::new(
        fake.clone(),
        VfioPciDeviceEnv {
            slots: Arc::new(FakeSlots::default()),
            irq_router: Some(router.clone()),
            intx_gsi: None,
            registry: None,
            page_size: 0x1000,
        },
    )
    .unwrap();
    for v in 0..2048u64 {
        let e = v * 16;
        dev.write_bar(1, e, &0xfee0_0000u64.to_le_bytes());
        dev.write_bar(1, e + 8, &(0x4000 + v as u32).to_le_bytes());
        dev.write_bar(1, e + 12, &0u32.to_le_bytes());
    }
    assert_eq!(router.routing_updates(), 0);
    let ctl = 0x40 / 4;
    for (what, control, live) in [
        ("enable", 0x80u8, 2048usize),
        ("function mask", 0xc0, 0),
        ("function unmask", 0x80, 2048),
        ("disable", 0x00, 0),
        ("enable again", 0x80, 2048),
        ("disable again", 0x00, 0),
    ] {
        let before = router.routing_updates();
        dev.write_config_register(ctl, 3, &[control]);
        let updates = router.routing_updates() - before;
        assert!(updates <= 1, "{what}: {updates} KVM_SET_GSI_ROUTING calls");
        assert_eq!(
            dev.interrupts().unwrap().live_vectors().len(),
            live,
            "{what}"
        );
    }
}

/// The region table refuses the record of a BAR move (it overlaps another device's region):
/// the BAR's old record must not stay behind, claiming the old address where nothing is
/// mapped any more.
#[test]
fn a_refused_region_record_leaves_no_stale_entry() {
    let mut r = rig(None);
    assert_eq!(r.region(2).unwrap().guest_base, 0x1_0000_0000);
    r.block(0xd000_0000);
    r.cfg_write(0x18, &0xd000_000cu32.to_le_bytes());
    r.cfg_write(0x1c, &0u32.to_le_bytes());
    assert_eq!(r.slots.live(), vec![(0xd000_0000, BAR2_SIZE)]);
    let rec = r.region(2);
    assert!(rec.is_none(), "{rec:?}");
    // A later move the table accepts records the BAR again.
    r.cfg_write(0x18, &0xe000_000cu32.to_le_bytes());
    r.cfg_write(0x1c, &0u32.to_le_bytes());
    let rec = r.region(2).unwrap().clone();
    assert_eq!((rec.guest_base, rec.mmap_pieces.len()), (0xe000_0000, 1));
}

/// KVM refuses the slots at the BAR's new address: the BAR is mapped nowhere, so the region
/// table must not describe it at the new address (nor at the old one).
#[test]
fn a_failed_bar_move_leaves_no_region_record() {
    let mut r = rig(None);
    *r.slots.refuse_at.lock().unwrap() = Some(0xd000_0000);
    r.cfg_write(0x18, &0xd000_000cu32.to_le_bytes());
    r.cfg_write(0x1c, &0u32.to_le_bytes());
    assert!(
        r.slots.live().is_empty(),
        "old slot removed, new one refused"
    );
    let rec = r.region(2);
    assert!(rec.is_none(), "{rec:?}");
    // Moving on to a free address maps and records it again.
    r.cfg_write(0x18, &0xe000_000cu32.to_le_bytes());
    r.cfg_write(0x1c, &0u32.to_le_bytes());
    assert_eq!(r.slots.live(), vec![(0xe000_0000, BAR2_SIZE)]);
    assert_eq!(r.region(2).unwrap().guest_base, 0xe000_0000);
}

/// A guest toggling MSI-X 10000 times, or repeating a BAR move the region table refuses, gets
/// a handful of log lines; the first change of each kind of interrupt mode is still logged
/// for every device (the `interrupts A -> B` lines say which modes a device used).
#[test]
fn repeated_guest_changes_log_a_handful_of_lines() {
    use crate::test_log::lines_logged_by;
    let mut r = rig(None);
    let toggles = lines_logged_by(|| {
        for _ in 0..10000 {
            r.cfg_write(0x43, &[0x80]);
            r.cfg_write(0x43, &[0x00]);
        }
    });
    let changes: Vec<_> = toggles
        .iter()
        .filter(|(_, l)| l.contains("interrupts "))
        .collect();
    assert!(
        changes[0].1.contains("interrupts Off -> Msix(4)"),
        "{changes:#?}"
    );
    assert!(
        changes[1].1.contains("interrupts Msix(4) -> Off"),
        "{changes:#?}"
    );
    assert!(toggles.len() <= 6, "{} lines: {toggles:#?}", toggles.len());
    // Another device logs its own first changes, whatever the first one did.
    let mut other = rig(None);
    let first = lines_logged_by(|| {
        other.cfg_write(0x43, &[0x80]);
        other.cfg_write(0x43, &[0x00]);
    });
    assert_eq!(
        first
            .iter()
            .filter(|(_, l)| l.contains("interrupts "))
            .count(),
        2,
        "{first:#?}"
    );

    r.block(0xd000_0000);
    let refused = lines_logged_by(|| {
        for _ in 0..10000 {
            r.cfg_write(0x18, &0xd000_000cu32.to_le_bytes());
            r.cfg_write(0x1c, &0u32.to_le_bytes());
            r.cfg_write(0x18, &0xe000_000cu32.to_le_bytes());
            r.cfg_write(0x1c, &0u32.to_le_bytes());
        }
    });
    assert!(refused.len() <= 6, "{} lines: {refused:#?}", refused.len());
    let decode = lines_logged_by(|| {
        for _ in 0..10000 {
            r.cfg_write(0x04, &[0x00, 0x01]);
            r.cfg_write(0x04, &[0x02, 0x01]);
            r.cfg_write(0x04, &[0x01, 0x02, 0x03]);
        }
    });
    assert!(decode.len() <= 6, "{} lines: {decode:#?}", decode.len());
}
