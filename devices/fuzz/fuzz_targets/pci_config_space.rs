//! The PCI core: bus 0 with the host bridge (slot 0), two bytes-backed devices (slots 1 and 2:
//! a 4 KiB 32-bit BAR 0, a 64 KiB 64-bit BAR 2, a 32-port I/O BAR 4) and a virtio-pci device
//! (slot 3: a 32 KiB 64-bit BAR 0 and six capabilities), reached as a guest reaches them:
//! type-1 configuration accesses at ports 0xCF8-0xCFF (address latch and data window, any
//! offset and length), BAR sizing and programming in Linux's order, command register writes,
//! capability list walks, and MMIO and port I/O through the BAR router at any address and
//! length. KVM is replaced by the fakes of `devices::test_utils`.
//!
//! Checked: the latch reads back what was written (bits 1:0 clear), data-port reads of absent
//! functions, malformed accesses and registers past a device's space are all-ones, the
//! command register keeps exactly its writable bits, a BAR probe reads back its size and flags,
//! BARs stay aligned to their size and each keeps one route, the moves a device is told about
//! form a chain ending at the BAR's address, capability lists never change, and an access that
//! no BAR of a device decoding its space claims reads all-ones. At the end of each input
//! everything is dropped and the virtio device must give back its GSIs.
//!
//! Run from `devices/fuzz` (nightly; one target at a time on a shared machine):
//!
//! ```text
//! nice -n 10 cargo +nightly fuzz run -O -a -s none pci_config_space -- -runs=10000000 -rss_limit_mb=2048
//! ```
//!
//! `-a` keeps overflow checks and debug assertions in the optimised build; `-s none` leaves out
//! AddressSanitizer, which slows these targets about sixfold and adds little to safe Rust (drop it
//! to check `unsafe` code).
//!
//! The seeds are in `corpus/pci_config_space/`; a crash is saved under
//! `artifacts/pci_config_space/` and replayed with
//! `cargo +nightly fuzz run pci_config_space <file>`.
//!
//! Input: operations, each a tag byte (taken modulo 10) and its arguments (little endian; an
//! exhausted input reads zeros), at most `MAX_OPS` per input:
//!
//! | tag | operation | arguments |
//! |-----|-----------|-----------|
//! | 0 | port write at 0xCF8 + offset | offset u8 (mod 10), length u8 (mod 9), data |
//! | 1 | port read at 0xCF8 + offset | offset u8 (mod 10), length u8 (mod 9) |
//! | 2 | latch a function's register | slot u8 (mod 5), function u8 (bit 7: function bits 0-2, else 0), register u8, extended u8 (bit 7: bits 0-3 as register bits 8-11) |
//! | 3 | data port write | byte u8 (mod 4), length u8 (1/2/4/3), data |
//! | 4 | data port read | byte u8 (mod 4), length u8 (1/2/4/3) |
//! | 5 | BAR program | slot u8 (1 + b mod 3), BAR u8 (mod 6), probe u8 (bit 0: size it first), address u64 |
//! | 6 | command write | slot u8 (mod 5), value u16 |
//! | 7 | MMIO access | mode u8 (bit 0: write, bit 1: absolute), then absolute address u64, or slot u8 (mod 5), BAR u8 (mod 6), offset u32 (mod 0x20000) from that BAR; length u8 (mod 17), data |
//! | 8 | port I/O access | as 7 |
//! | 9 | capability walk | slot u8 (mod 5) |
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use devices::pci::{
    lock_device, BarAllocator, BarReprogram, BarSpace, BarWindow, PciBar, PciBarRouter, PciBus,
    PciConfigIo, PciSlot, SharedPciDevice, COMMAND_WRITABLE, REG_COMMAND,
};
use devices::test_utils::{lock, FakeIoEvents, FakeMsiRouter, FakePciDevice, FakeVirtioDevice};
use devices::virtio::VirtioPciDevice;
use devices_fuzz::{capabilities, program_bar, ConfigAccess, Input, MAX_ACCESS, MAX_OPS};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Slots 1 and 2: bytes-backed devices; slot 3: virtio-pci; slot 4 stays empty.
const FAKE_SLOTS: [u8; 2] = [1, 2];
const VIRTIO_SLOT: u8 = 3;
const SLOTS: u8 = 5;
/// MMIO BARs: two per fake device and the virtio BAR 0; I/O BARs: one per fake device.
const ROUTES: (usize, usize) = (5, 2);

fn memory() -> GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).expect("64 KiB of memory")
    })
    .clone()
}

struct Rig {
    bus: Arc<Mutex<PciBus>>,
    io: PciConfigIo,
    router: Arc<PciBarRouter>,
    /// The devices by slot (the host bridge at 0).
    devices: Vec<SharedPciDevice>,
    /// Moves told to the fake devices, and how many of them were checked.
    moves: Vec<(Arc<Mutex<Vec<BarReprogram>>>, usize)>,
    /// The last checked address of each BAR of each fake device.
    fake_bars: Vec<Vec<PciBar>>,
    msi: Arc<FakeMsiRouter>,
    /// Capability list of each slot at the start.
    caps: Vec<Vec<(usize, u8)>>,
}

fn bars_of(device: &SharedPciDevice) -> Vec<PciBar> {
    lock_device(device).bars()
}

impl Rig {
    fn new() -> Self {
        let mut bus = PciBus::new();
        let mut alloc = BarAllocator::new(
            BarWindow::new(0xc000_0000, 0x3ec0_0000),
            Some(BarWindow::new(1 << 32, 1 << 32)),
            Some(BarWindow::new(0x1000, 0xf000)),
        )
        .expect("windows");
        let mut devices = vec![bus.device(PciSlot::root(0)).expect("host bridge")];
        let mut moves = Vec::new();
        for slot in FAKE_SLOTS {
            let (dev, m) = FakePciDevice::new();
            let dev: SharedPciDevice = Arc::new(Mutex::new(dev));
            bus.add_device_at(PciSlot::root(slot), dev.clone(), &mut alloc)
                .expect("free slot");
            devices.push(dev);
            // The moves of the initial programming are where `fake_bars` starts.
            let seen = lock(&m).len();
            moves.push((m, seen));
        }
        let msi = Arc::new(FakeMsiRouter::default());
        let (virtio, _) = FakeVirtioDevice::new();
        let virtio: SharedPciDevice = Arc::new(Mutex::new(
            VirtioPciDevice::new(
                Box::new(virtio),
                memory(),
                msi.clone(),
                Arc::new(FakeIoEvents::default()),
            )
            .expect("the transport builds"),
        ));
        bus.add_device_at(PciSlot::root(VIRTIO_SLOT), virtio.clone(), &mut alloc)
            .expect("free slot");
        devices.push(virtio);
        let caps = (0..SLOTS)
            .map(|s| capabilities(&bus, PciSlot::root(s)))
            .collect();
        let fake_bars = FAKE_SLOTS
            .iter()
            .map(|s| bars_of(&devices[usize::from(*s)]))
            .collect();
        let router = bus.router();
        let bus = Arc::new(Mutex::new(bus));
        Self {
            io: PciConfigIo::new(bus.clone()),
            bus,
            router,
            devices,
            moves,
            fake_bars,
            msi,
            caps,
        }
    }

    fn device(&self, slot: u8) -> Option<&SharedPciDevice> {
        self.devices.get(usize::from(slot))
    }

    fn latch(&mut self, slot: u8, function: u8, offset: u32) {
        let addr = 0x8000_0000 | (u32::from(slot) << 11) | (u32::from(function) << 8) | offset;
        self.io.write(0, &addr.to_le_bytes());
    }

    fn cfg_write32(&mut self, slot: u8, reg: usize, value: u32) {
        self.latch(slot, 0, (reg as u32) * 4);
        self.io.write(4, &value.to_le_bytes());
    }

    fn cfg_read32(&mut self, slot: u8, reg: usize) -> u32 {
        self.latch(slot, 0, (reg as u32) * 4);
        let mut b = [0u8; 4];
        self.io.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    /// Whether the latched address names a register some device has; `None` for a disabled
    /// latch.
    fn latched_register_exists(&self) -> bool {
        let a = self.io.address();
        let slot = ((a >> 11) & 0x1f) as u8;
        let function = (a >> 8) & 0x7;
        let reg = (((a >> 24) & 0xf) << 6) | ((a >> 2) & 0x3f);
        a & 0x8000_0000 != 0
            && (a >> 16) & 0xff == 0
            && function == 0
            && self.device(slot).is_some()
            && reg < 64
    }

    fn step(&mut self, inp: &mut Input) {
        match inp.u8() % 10 {
            0 => {
                let offset = u64::from(inp.u8() % 10);
                let len = usize::from(inp.u8() % 9);
                let data = inp.data(len);
                self.io.write(offset, &data[..len]);
            }
            1 => {
                let offset = u64::from(inp.u8() % 10);
                let len = usize::from(inp.u8() % 9);
                let mut buf = [0xa5u8; 8];
                self.io.read(offset, &mut buf[..len]);
                let latch = self.io.address().to_le_bytes();
                for (i, b) in buf[..len].iter().enumerate() {
                    let pos = offset as usize + i;
                    match offset {
                        0..=3 => assert_eq!(*b, latch.get(pos).copied().unwrap_or(0xff)),
                        4..=7 if offset as usize + len <= 8 => {
                            if !self.latched_register_exists() {
                                assert_eq!(*b, 0xff, "absent register read");
                            }
                        }
                        _ => assert_eq!(*b, 0xff, "malformed port read at {offset} len {len}"),
                    }
                }
            }
            2 => {
                let slot = inp.u8() % SLOTS;
                let f = inp.u8();
                let function = if f & 0x80 != 0 { f & 0x7 } else { 0 };
                let reg = u32::from(inp.u8()) & 0xfc;
                let ext = inp.u8();
                let ext = if ext & 0x80 != 0 {
                    u32::from(ext & 0xf) << 24
                } else {
                    0
                };
                self.latch(slot, function, reg | ext);
                assert_eq!(
                    self.io.address() & !0x8000_0000,
                    (u32::from(slot) << 11) | (u32::from(function) << 8) | reg | ext,
                    "latch"
                );
            }
            3 => {
                let byte = u64::from(inp.u8() % 4);
                let len = [1, 2, 4, 3][usize::from(inp.u8() % 4)];
                let data = inp.data(len);
                self.io.write(4 + byte, &data[..len]);
            }
            4 => {
                let byte = u64::from(inp.u8() % 4);
                let len = [1, 2, 4, 3][usize::from(inp.u8() % 4)];
                let mut buf = [0xa5u8; 4];
                self.io.read(4 + byte, &mut buf[..len]);
                if byte as usize + len > 4 || !self.latched_register_exists() {
                    assert!(
                        buf[..len].iter().all(|b| *b == 0xff),
                        "{:02x?}",
                        &buf[..len]
                    );
                }
            }
            5 => self.program_bar(inp),
            6 => {
                let slot = inp.u8() % SLOTS;
                let value = inp.u16();
                self.latch(slot, 0, (REG_COMMAND as u32) * 4);
                self.io.write(4, &value.to_le_bytes());
                let read = self.cfg_read32(slot, REG_COMMAND) & 0xffff;
                if self.device(slot).is_some() {
                    assert_eq!(
                        read,
                        u32::from(value & COMMAND_WRITABLE),
                        "command register"
                    );
                } else {
                    assert_eq!(read, 0xffff, "empty slot");
                }
            }
            tag @ (7 | 8) => {
                let space = if tag == 7 {
                    BarSpace::Mmio
                } else {
                    BarSpace::Io
                };
                let mode = inp.u8();
                let addr = if mode & 2 != 0 {
                    inp.u64()
                } else {
                    let slot = inp.u8() % SLOTS;
                    let bar = usize::from(inp.u8() % 6);
                    let offset = u64::from(inp.u32() % 0x2_0000);
                    let base = self
                        .device(slot)
                        .and_then(|d| bars_of(d).into_iter().find(|b| b.index == bar))
                        .map_or(0, |b| b.addr);
                    base.wrapping_add(offset)
                };
                let len = inp.any_len();
                if mode & 1 != 0 {
                    let data = inp.data(len);
                    self.router.write(space, addr, &data[..len]);
                } else {
                    let mut buf = [0xa5u8; MAX_ACCESS];
                    self.router.read(space, addr, &mut buf[..len]);
                    // A BAR of a device decoding its space holds the address (BARs of several
                    // devices can overlap: the guest programs them).
                    let claimed = self.devices.iter().any(|d| {
                        let dev = lock_device(d);
                        dev.decodes(space)
                            && dev.bars().iter().any(|b| {
                                b.kind.space() == space && addr >= b.addr && addr - b.addr < b.size
                            })
                    });
                    if !claimed {
                        assert!(
                            buf[..len].iter().all(|b| *b == 0xff),
                            "{space:?} {addr:#x} hits no decoding BAR but read {:02x?}",
                            &buf[..len]
                        );
                    }
                }
            }
            9 => {
                let slot = inp.u8() % SLOTS;
                let caps = capabilities(
                    &self.bus.lock().unwrap_or_else(|p| p.into_inner()),
                    PciSlot::root(slot),
                );
                assert_eq!(
                    caps,
                    self.caps[usize::from(slot)],
                    "capability list of slot {slot}"
                );
            }
            _ => unreachable!(),
        }
    }

    /// Sizes (optionally) and programs a BAR of a device through the ports, as Linux does.
    fn program_bar(&mut self, inp: &mut Input) {
        let slot = 1 + inp.u8() % 3;
        let index = usize::from(inp.u8() % 6);
        let probe = inp.u8() & 1 != 0;
        let addr = inp.u64();
        let find = |rig: &Self| {
            rig.device(slot)
                .and_then(|d| bars_of(d).into_iter().find(|b| b.index == index))
        };
        let bar = find(self);
        let expect = program_bar(&mut Ports { rig: self, slot }, bar, index, probe, addr);
        if let Some(expect) = expect {
            let now = find(self).expect("the BAR is still there").addr;
            assert_eq!(
                now, expect,
                "BAR {index} of slot {slot} follows its registers"
            );
        }
    }

    /// Invariants that hold after every operation.
    fn check(&mut self) {
        assert_eq!(self.router.route_count(), ROUTES, "one route per BAR");
        for (slot, device) in self.devices.iter().enumerate() {
            for b in bars_of(device) {
                assert_eq!(
                    b.addr % b.size,
                    0,
                    "slot {slot} BAR {} at {:#x}",
                    b.index,
                    b.addr
                );
            }
        }
        for (i, slot) in FAKE_SLOTS.iter().enumerate() {
            let (moves, checked) = &mut self.moves[i];
            let moves = lock(moves);
            let last = &mut self.fake_bars[i];
            for mv in &moves[*checked..] {
                let bar = last
                    .iter_mut()
                    .find(|b| b.index == mv.bar)
                    .expect("a move of a defined BAR");
                assert_eq!(
                    mv.old_addr, bar.addr,
                    "slot {slot} BAR {} moved from where it was",
                    mv.bar
                );
                assert_eq!((mv.kind, mv.size), (bar.kind, bar.size));
                bar.addr = mv.new_addr;
            }
            *checked = moves.len();
            drop(moves);
            assert_eq!(
                *last,
                bars_of(&self.devices[usize::from(*slot)]),
                "slot {slot}: moves told end where the BARs are"
            );
        }
    }
}

/// Configuration access through ports 0xCF8/0xCFC.
struct Ports<'a> {
    rig: &'a mut Rig,
    slot: u8,
}

impl ConfigAccess for Ports<'_> {
    fn read(&mut self, reg: usize) -> u32 {
        self.rig.cfg_read32(self.slot, reg)
    }
    fn write(&mut self, reg: usize, value: u32) {
        self.rig.cfg_write32(self.slot, reg, value);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut rig = Rig::new();
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        rig.step(&mut inp);
        rig.check();
        ops += 1;
    }
    let msi = rig.msi.clone();
    drop(rig);
    assert_eq!(
        lock(&msi.released).len() as u32,
        msi.allocated(),
        "the virtio device gave its GSIs back"
    );
});
