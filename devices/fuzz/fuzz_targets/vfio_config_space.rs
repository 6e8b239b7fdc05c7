//! The VFIO passthrough device's virtualised configuration space, MSI and MSI-X emulation and
//! BAR handling, over the fake VFIO region set of `devices::test_utils` on a PCI bus. The
//! first input byte picks the device: the ivshmem-like fake (without or with INTx), a device
//! with odd reports (an I/O BAR, sparse mmap areas, an impossible 64-bit BAR 5, an MSI-X table
//! in a missing BAR, a looping capability list), or one described by the next input bytes
//! (BAR kinds and sizes, MSI and MSI-X capabilities, interrupt counts). The rest are guest
//! operations: configuration reads and writes (BARs, command register, MSI and MSI-X
//! registers, anything else), MSI-X table and PBA accesses, BAR reads and writes at any offset
//! and length, BAR sizing and moves, and accesses anywhere through the BAR router.
//!
//! Checked after every operation: no access reaches VFIO outside a region, a read no decoding
//! BAR claims is all-ones, the ROM reads 0, the function is never multi-function, BAR flag
//! bits hold and BARs follow their registers (a probe reads back the size), KVM slots exist
//! only with memory decoding on and lie inside their BAR, a BAR's region-table record (when it
//! has one) has its address and decoding state, the interrupt type VFIO has enabled is the
//! emulated mode's, irqfds are exactly the live vectors', routes only name GSIs in use and no
//! GSI leaks. At the end of each input the device is dropped and must leave no slot,
//! region-table entry, enabled interrupt, irqfd or GSI behind.
//!
//! Run from `devices/fuzz` (nightly; one target at a time on a shared machine):
//!
//! ```text
//! nice -n 10 cargo +nightly fuzz run -O -a -s none vfio_config_space -- -runs=10000000 -rss_limit_mb=2048
//! ```
//!
//! `-a` keeps overflow checks and debug assertions in the optimised build; `-s none` leaves out
//! AddressSanitizer, which slows these targets about sixfold and adds little to safe Rust (drop it
//! to check `unsafe` code).
//!
//! The seeds are in `corpus/vfio_config_space/`; a crash is saved under
//! `artifacts/vfio_config_space/` and replayed with
//! `cargo +nightly fuzz run vfio_config_space <file>`.
//!
//! Input: a device byte (mod 4: 0 ivshmem-like, 1 the same with INTx, 2 odd, 3 described:
//! see `described_device`), then operations, each a tag byte (taken modulo 10) and its
//! arguments (little endian; an exhausted input reads zeros), at most `MAX_OPS` per input:
//!
//! | tag | operation | arguments |
//! |-----|-----------|-----------|
//! | 0 | config write | register u8 (mod 66), byte u8 (mod 4), length u8 (mod 5), data |
//! | 1 | config read | register u8 (mod 66) |
//! | 2 | MSI capability write | offset in it u8 (mod 24), length u8 (1/2/4), data |
//! | 3 | MSI-X message control | form u8 (bit 0: dword write at the capability), value u32 |
//! | 4 | MSI-X table access | vector u8, dword u8 (mod 4), width u8 (1/2/4/8), write u8 (bit 0), value u64 |
//! | 5 | PBA access | offset u8, length u8 (mod 17), write u8 (bit 0), data |
//! | 6 | BAR access | BAR u8 (mod 6), offset u32, length u8 (mod 17), write u8 (bit 0), data |
//! | 7 | BAR program | BAR u8 (mod 6), probe u8 (bit 0), address u64 |
//! | 8 | command write | value u16 |
//! | 9 | access anywhere | space u8 (bit 0: I/O, bit 1: write), address u64, length u8 (mod 17), data |
#![no_main]

use std::sync::{Arc, Mutex};

use devices::pci::{
    BarAllocator, BarSpace, BarWindow, MsixCapInfo, PciBar, PciBarRouter, PciBus, PciDevice,
    PciSlot, SharedPciDevice, BRIDGE_BUS, CAP_ID_MSI, CAP_ID_MSIX, COMMAND_MEMORY, NUM_BARS,
    REG_BAR0, REG_COMMAND, REG_HEADER, REG_ROM,
};
use devices::test_utils::{lock, FakeMsiRouter, FakeSlots, FakeVfio};
use devices::vfio::{
    IrqModeKind, VfioPciDevice, VfioPciDeviceEnv, IRQ_INTX, IRQ_MSI, IRQ_MSIX, REGION_READ,
    REGION_WRITE,
};
use devices_fuzz::{capabilities, program_bar, ConfigAccess, Input, MAX_ACCESS, MAX_OPS};
use libfuzzer_sys::fuzz_target;
use vfio_dmabuf::{DeviceRegistry, SharedRegistry};

/// The irqchip pin INTx goes to when the device has it wired.
const INTX_GSI: u32 = 10;

/// The ivshmem-like device of the unit tests.
fn ivshmem() -> Arc<FakeVfio> {
    FakeVfio::new()
}

/// The odd device of the unit tests: I/O BAR 0, BAR 1 with two sparse mmap areas, a "64-bit"
/// BAR 5, an MSI-X table in the absent BAR 3, a vendor capability pointing at itself.
fn odd() -> Arc<FakeVfio> {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
    c[4..8].copy_from_slice(&0x0010_0003u32.to_le_bytes());
    c[0x10..0x14].copy_from_slice(&1u32.to_le_bytes());
    c[0x14..0x18].copy_from_slice(&0u32.to_le_bytes());
    c[0x24..0x28].copy_from_slice(&4u32.to_le_bytes());
    c[0x34] = 0x40;
    c[0x40..0x44].copy_from_slice(&0x0003_5011u32.to_le_bytes());
    c[0x44..0x48].copy_from_slice(&0x0000_0003u32.to_le_bytes());
    c[0x48..0x4c].copy_from_slice(&0x0000_0803u32.to_le_bytes());
    c[0x50] = 0x09;
    c[0x51] = 0x50;
    FakeVfio::custom(
        c,
        &[
            (0, 0x20, REGION_READ | REGION_WRITE),
            (1, 0x4000, FakeVfio::RW_MMAP),
            (5, 0x1000, FakeVfio::RW_MMAP),
        ],
        Some((1, vec![(0x1000, 0x1000), (0x3000, 0x1000)])),
    )
}

/// A device described by the input:
/// - command u8 (the low byte of the command register VFIO reports);
/// - per BAR register 0..6: kind u8 (mod 5: absent, 32-bit memory, 64-bit memory, I/O,
///   64-bit prefetchable memory; a 64-bit BAR takes the next register too) and size u8
///   (region of 4 << (bits 0-4 mod 24) bytes, mappable with bit 7);
/// - capabilities u8 (bit 0: MSI-X, bit 1: MSI, left out if it would overlap MSI-X) and
///   their offsets u8, u8 (0x40 + 4 * (b mod 48));
/// - MSI-X message control u16, table u32, PBA u32; MSI message control u16;
/// - interrupt counts u8 (bit 0: INTx), u8 (MSI, mod 33), u8 (MSI-X, mod 9); INTx wired u8 (bit 0).
fn described_device(inp: &mut Input) -> (Arc<FakeVfio>, Option<u32>) {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&0x5678_abcdu32.to_le_bytes());
    c[4] = inp.u8();
    c[0x3d] = 1;
    let mut regions = Vec::new();
    let mut index = 0;
    while index < NUM_BARS {
        let kind = inp.u8() % 5;
        let size = inp.u8();
        let reg: u32 = match kind {
            0 => {
                index += 1;
                continue;
            }
            1 => 0,
            2 => 0x4,
            3 => 0x1,
            _ => 0xc,
        };
        c[0x10 + 4 * index..0x14 + 4 * index].copy_from_slice(&reg.to_le_bytes());
        let flags = if size & 0x80 != 0 {
            FakeVfio::RW_MMAP
        } else {
            REGION_READ | REGION_WRITE
        };
        regions.push((index as u32, 4u64 << ((size & 0x1f) % 24), flags));
        index += if matches!(kind, 2 | 4) { 2 } else { 1 };
    }
    let caps = inp.u8();
    let msix_at = 0x40 + 4 * usize::from(inp.u8() % 48);
    let msi_at = 0x40 + 4 * usize::from(inp.u8() % 48);
    let msix_control = inp.u16();
    let table = inp.u32();
    let pba = inp.u32();
    let msi_control = inp.u16();
    // Overlapping capabilities are a broken device, not a guest's doing: MSI gives way.
    let overlap = msi_at < msix_at + 12 && msix_at < msi_at + 24;
    let caps = if caps & 1 != 0 && overlap {
        caps & !2
    } else {
        caps
    };
    let mut first = 0;
    if caps & 2 != 0 {
        c[msi_at] = CAP_ID_MSI;
        c[msi_at + 1] = 0;
        c[msi_at + 2..msi_at + 4].copy_from_slice(&msi_control.to_le_bytes());
        first = msi_at;
    }
    if caps & 1 != 0 {
        c[msix_at] = CAP_ID_MSIX;
        c[msix_at + 1] = first as u8;
        c[msix_at + 2..msix_at + 4].copy_from_slice(&msix_control.to_le_bytes());
        if msix_at + 12 <= c.len() {
            c[msix_at + 4..msix_at + 8].copy_from_slice(&table.to_le_bytes());
            c[msix_at + 8..msix_at + 12].copy_from_slice(&pba.to_le_bytes());
        }
        first = msix_at;
    }
    if first != 0 {
        c[6] |= 0x10; // capability list
        c[0x34] = first as u8;
    }
    let irq_counts = [
        u32::from(inp.u8() & 1),
        u32::from(inp.u8() % 33),
        u32::from(inp.u8() % 9),
    ];
    let intx = (inp.u8() & 1 != 0).then_some(INTX_GSI);
    (
        FakeVfio::custom_with_irqs(c, &regions, None, irq_counts),
        intx,
    )
}

struct Rig {
    bus: PciBus,
    router: Arc<PciBarRouter>,
    vfio: Arc<Mutex<VfioPciDevice>>,
    fake: Arc<FakeVfio>,
    slots: Arc<FakeSlots>,
    msi: Arc<FakeMsiRouter>,
    registry: SharedRegistry,
    /// Behind the PCI-to-PCI bridge, as the VMM places it.
    slot: PciSlot,
    /// VFIO accesses outside a region while the device was built (from its own reports).
    out_of_bounds: u64,
    /// Offsets of the MSI and MSI-X capabilities in the guest's view.
    msi_cap: Option<usize>,
    msix: Option<MsixCapInfo>,
    /// Routes the router must keep: (MMIO, I/O).
    routes: (usize, usize),
}

impl Rig {
    fn new(inp: &mut Input) -> Option<Self> {
        let (fake, intx) = match inp.u8() % 4 {
            0 => (ivshmem(), None),
            1 => (ivshmem(), Some(INTX_GSI)),
            2 => (odd(), None),
            _ => described_device(inp),
        };
        let slots = Arc::new(FakeSlots::default());
        let msi = Arc::new(FakeMsiRouter::default());
        let registry = DeviceRegistry::shared();
        let vfio = VfioPciDevice::new(
            fake.clone(),
            VfioPciDeviceEnv {
                slots: slots.clone(),
                irq_router: Some(msi.clone()),
                intx_gsi: intx,
                registry: Some(registry.clone()),
                page_size: 0x1000,
            },
        )
        .expect("the region table accepts the device");
        let vfio = Arc::new(Mutex::new(vfio));
        let mut bus = PciBus::new();
        let mut alloc = BarAllocator::new(
            BarWindow::new(0xc000_0000, 0x3ec0_0000),
            Some(BarWindow::new(1 << 32, 1 << 32)),
            Some(BarWindow::new(0x1000, 0xf000)),
        )
        .expect("windows");
        let shared: SharedPciDevice = vfio.clone();
        // A described device may not fit the windows: nothing to fuzz then.
        bus.add_bridge(&alloc).ok()?;
        let slot = bus.add_device(BRIDGE_BUS, shared, &mut alloc).ok()?;
        let caps = capabilities(&bus, slot);
        let cap = |id| caps.iter().find(|(_, i)| *i == id).map(|(off, _)| *off);
        let msi_cap = cap(CAP_ID_MSI);
        let msix = cap(CAP_ID_MSIX).map(|off| {
            let r = |o: usize| bus.read_config(slot.bus, slot.slot, 0, o / 4);
            MsixCapInfo::parse(off, r(off), r(off + 4), r(off + 8))
        });
        let bars = lock(&vfio).bars();
        let routes = (
            bars.iter().filter(|b| b.kind.is_mem()).count(),
            bars.iter().filter(|b| !b.kind.is_mem()).count(),
        );
        Some(Self {
            router: bus.router(),
            bus,
            out_of_bounds: fake.out_of_bounds(),
            vfio,
            fake,
            slots,
            msi,
            registry,
            slot,
            msi_cap,
            msix,
            routes,
        })
    }

    fn bar(&self, index: usize) -> Option<PciBar> {
        lock(&self.vfio)
            .bars()
            .into_iter()
            .find(|b| b.index == index)
    }

    fn cfg_write(&self, reg: usize, byte: usize, data: &[u8]) {
        self.bus
            .write_config(self.slot.bus, self.slot.slot, 0, reg, byte, data);
    }

    fn cfg_read(&self, reg: usize) -> u32 {
        self.bus.read_config(self.slot.bus, self.slot.slot, 0, reg)
    }

    /// An access at `addr` of `space`; a read that no BAR claims, or one of a space the device
    /// does not decode, must be all-ones.
    fn access(&self, space: BarSpace, addr: u64, write: bool, len: usize, inp: &mut Input) {
        if write {
            let data = inp.data(len);
            self.router.write(space, addr, &data[..len]);
            return;
        }
        let mut buf = [0xa5u8; MAX_ACCESS];
        self.router.read(space, addr, &mut buf[..len]);
        let vfio = lock(&self.vfio);
        let claimed = vfio
            .bars()
            .iter()
            .any(|b| b.kind.space() == space && addr >= b.addr && addr - b.addr < b.size);
        if !claimed || !vfio.decodes(space) {
            assert!(
                buf[..len].iter().all(|b| *b == 0xff),
                "{space:?} {addr:#x} hits no decoding BAR but read {:02x?}",
                &buf[..len]
            );
        }
    }

    /// An access at `offset` of BAR `index`, if the device has that BAR.
    fn bar_access(&self, index: usize, offset: u64, write: bool, len: usize, inp: &mut Input) {
        if let Some(b) = self.bar(index) {
            self.access(b.kind.space(), b.addr.wrapping_add(offset), write, len, inp);
        }
    }

    fn step(&mut self, inp: &mut Input) {
        match inp.u8() % 10 {
            0 => {
                let reg = usize::from(inp.u8() % 66);
                let byte = usize::from(inp.u8() % 4);
                let len = usize::from(inp.u8() % 5);
                let data = inp.data(len);
                self.cfg_write(reg, byte, &data[..len]);
            }
            1 => {
                let reg = usize::from(inp.u8() % 66);
                let v = self.cfg_read(reg);
                match reg {
                    REG_ROM => assert_eq!(v, 0, "the ROM is hidden"),
                    REG_HEADER => assert_eq!(v & (0x80 << 16), 0, "single function"),
                    64.. => assert_eq!(v, 0xffff_ffff, "past the 256-byte space"),
                    _ => {}
                }
                if let Some(b) = self.bar(reg.wrapping_sub(REG_BAR0)) {
                    let flags = if b.kind.is_mem() { 0xf } else { 0x3 };
                    assert_eq!(v & flags, b.kind.flag_bits(), "BAR {} flags", b.index);
                }
            }
            2 => {
                let at = usize::from(inp.u8() % 24);
                let len = [1, 2, 4, 1][usize::from(inp.u8() % 4)];
                let data = inp.data(len);
                if let Some(cap) = self.msi_cap {
                    let off = cap + 2 + at;
                    let len = if off % 4 + len > 4 { 1 } else { len };
                    self.cfg_write(off / 4, off % 4, &data[..len]);
                }
            }
            3 => {
                let form = inp.u8();
                let value = inp.u32();
                if let Some(m) = self.msix {
                    let cap = m.cap_offset;
                    if form & 1 != 0 {
                        self.cfg_write(cap / 4, 0, &value.to_le_bytes());
                    } else {
                        self.cfg_write(cap / 4, 3, &[value as u8]);
                    }
                    let control = self.cfg_read(cap / 4) >> 16;
                    let written = if form & 1 != 0 {
                        value >> 24
                    } else {
                        value & 0xff
                    };
                    assert_eq!(control & 0xc000, (written & 0xc0) << 8, "MSI-X enable/mask");
                }
            }
            4 => {
                let vector = u64::from(inp.u8());
                let dword = u64::from(inp.u8() % 4);
                let len = [1, 2, 4, 8][usize::from(inp.u8() % 4)];
                let write = inp.u8() & 1 != 0;
                let value = inp.u64();
                if let Some(m) = self.msix {
                    let vector = vector % (u64::from(m.vectors) + 1);
                    let offset = m.table_offset + vector * 16 + dword * 4;
                    if let Some(b) = self.bar(m.table_bar as usize) {
                        let addr = b.addr.wrapping_add(offset);
                        if write {
                            self.router
                                .write(b.kind.space(), addr, &value.to_le_bytes()[..len]);
                        } else {
                            let mut buf = [0u8; 8];
                            self.router.read(b.kind.space(), addr, &mut buf[..len]);
                        }
                    }
                }
            }
            5 => {
                let offset = u64::from(inp.u8());
                let len = inp.any_len();
                let write = inp.u8() & 1 != 0;
                if let Some(m) = self.msix {
                    let start = m.pba_offset.wrapping_add(offset);
                    self.bar_access(m.pba_bar as usize, start, write, len, inp);
                }
            }
            6 => {
                let index = usize::from(inp.u8() % 6);
                let offset = u64::from(inp.u32());
                let len = inp.any_len();
                let write = inp.u8() & 1 != 0;
                let offset = match self.bar(index) {
                    Some(b) => offset % (2 * b.size),
                    None => offset,
                };
                self.bar_access(index, offset, write, len, inp);
            }
            7 => {
                let index = usize::from(inp.u8() % 6);
                let probe = inp.u8() & 1 != 0;
                let addr = inp.u64();
                let bar = self.bar(index);
                if let Some(expect) = program_bar(&mut Config(self), bar, index, probe, addr) {
                    let now = self.bar(index).expect("the BAR is still there").addr;
                    assert_eq!(now, expect, "BAR {index} follows its registers");
                }
            }
            8 => {
                let value = inp.u16();
                self.cfg_write(REG_COMMAND, 0, &value.to_le_bytes());
                let command = self.cfg_read(REG_COMMAND);
                assert_eq!(
                    lock(&self.vfio).mem_decode(),
                    command & u32::from(COMMAND_MEMORY) != 0,
                    "memory decoding follows the command register"
                );
            }
            9 => {
                let mode = inp.u8();
                let addr = inp.u64();
                let len = inp.any_len();
                let space = if mode & 1 != 0 {
                    BarSpace::Io
                } else {
                    BarSpace::Mmio
                };
                self.access(space, addr, mode & 2 != 0, len, inp);
            }
            _ => unreachable!(),
        }
    }

    /// Invariants that hold after every operation.
    fn check(&self) {
        assert_eq!(
            self.fake.out_of_bounds(),
            self.out_of_bounds,
            "a guest access reached VFIO outside a region"
        );
        assert_eq!(self.router.route_count(), self.routes, "one route per BAR");
        let vfio = lock(&self.vfio);
        let bars = vfio.bars();
        let decode = vfio.mem_decode();
        let live = self.slots.live();
        if !decode {
            assert!(
                live.is_empty(),
                "KVM slots with memory decoding off: {live:x?}"
            );
        }
        for (gpa, size) in &live {
            assert!(
                bars.iter()
                    .any(|b| b.kind.is_mem() && *gpa >= b.addr && gpa - b.addr + size <= b.size),
                "slot {gpa:#x}+{size:#x} outside every BAR {bars:x?}"
            );
        }
        // The region table never describes a BAR where it is not: a BAR's record (if any: a
        // BAR at 0, one whose move failed or one the table refused has none) has its address
        // and the device's decoding state, and there is no record of anything else.
        let table = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let ids = table.device_ids();
        assert_eq!(ids.len(), 1, "the device is in the region table");
        for index in 0..NUM_BARS as u32 {
            let Some(r) = table.region(ids[0], index) else {
                continue;
            };
            let b = bars
                .iter()
                .find(|b| b.index as u32 == index)
                .unwrap_or_else(|| panic!("region-table record of BAR {index}, which is no BAR"));
            assert_eq!(
                r.guest_base, b.addr,
                "region table has BAR {index}'s address"
            );
            assert_ne!(r.guest_base, 0, "a record of BAR {index} at 0");
            assert_eq!(
                r.decoding, decode,
                "region table has BAR {index}'s decoding"
            );
        }
        drop(table);

        let irq = vfio.interrupts().expect("interrupts are routed");
        let mode = irq.mode();
        let gsis = irq.gsis();
        let enabled: Vec<(u32, usize)> =
            lock(&self.fake.irq).iter().map(|(k, v)| (*k, *v)).collect();
        let (expect_enabled, mut expect_irqfds, vectors) = match mode {
            IrqModeKind::Off => (vec![], vec![], 0),
            IrqModeKind::Intx => (vec![(IRQ_INTX, 1)], vec![INTX_GSI], 0),
            IrqModeKind::Msi(n) | IrqModeKind::Msix(n) => {
                let index = if matches!(mode, IrqModeKind::Msi(_)) {
                    IRQ_MSI
                } else {
                    IRQ_MSIX
                };
                let live: Vec<u32> = irq.live_vectors().iter().map(|v| gsis[*v]).collect();
                (vec![(index, n as usize)], live, n)
            }
        };
        assert_eq!(enabled, expect_enabled, "VFIO interrupts for {mode:?}");
        let mut irqfds = lock(&self.msi.irqfds).clone();
        irqfds.sort_unstable();
        expect_irqfds.sort_unstable();
        assert_eq!(
            irqfds, expect_irqfds,
            "irqfds of the live vectors in {mode:?}"
        );
        assert!(
            lock(&self.msi.routes).keys().all(|g| gsis.contains(g)),
            "routes only for GSIs in use"
        );
        assert_eq!(
            self.msi.allocated() as usize,
            lock(&self.msi.released).len() + vectors as usize,
            "GSIs in use are the mode's vectors"
        );
    }
}

/// Configuration access to the passed-through function.
struct Config<'a>(&'a Rig);

impl ConfigAccess for Config<'_> {
    fn read(&mut self, reg: usize) -> u32 {
        self.0.cfg_read(reg)
    }
    fn write(&mut self, reg: usize, value: u32) {
        self.0.cfg_write(reg, 0, &value.to_le_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some(mut rig) = Rig::new(&mut inp) else {
        return;
    };
    rig.check();
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        rig.step(&mut inp);
        rig.check();
        ops += 1;
    }
    let Rig {
        bus,
        router,
        vfio,
        fake,
        slots,
        msi,
        registry,
        ..
    } = rig;
    drop((bus, router, vfio));
    assert!(slots.live().is_empty(), "KVM slots left");
    assert!(
        registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .device_ids()
            .is_empty(),
        "still in the region table"
    );
    assert!(lock(&fake.irq).is_empty(), "VFIO interrupts left enabled");
    assert!(lock(&msi.irqfds).is_empty(), "irqfds left");
    assert_eq!(
        msi.allocated() as usize,
        lock(&msi.released).len(),
        "every GSI given back"
    );
});
