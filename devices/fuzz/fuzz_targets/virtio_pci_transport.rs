//! The virtio-pci transport around a small virtio device (two queues, three MSI-X vectors) on
//! a PCI bus, driven by a stream of guest operations: BAR 0 reads and writes at any offset and
//! length (common configuration, ISR, device configuration, notify area, MSI-X table and PBA),
//! configuration space reads and writes (command, BARs, capabilities, the PCI_CFG window),
//! BAR 0 moves, MSI-X control, a driver bring-up with fuzzed parameters and interrupts raised
//! by the device. KVM is replaced by the fakes of `devices::test_utils` and guest memory is
//! 1 MiB of `GuestMemoryMmap`.
//!
//! Checked after every operation: accesses outside BAR 0, or to BAR 0 with memory decoding off
//! (the rig turns it on at the start), read all-ones, the ISR is clear after
//! a read, the ioeventfds sit at the notify addresses of the current BAR 0 while memory decoding
//! is on and nowhere while it is off, the MSI-X vectors
//! keep their GSIs and irqfds, the device only sees offered features, valid queue sizes and
//! device-configuration accesses inside its window, a reset device is inactive. At the end of
//! each input the transport is dropped and must give back every GSI and ioeventfd.
//!
//! Run from `devices/fuzz` (nightly; one target at a time on a shared machine):
//!
//! ```text
//! nice -n 10 cargo +nightly fuzz run -O -a -s none virtio_pci_transport -- -runs=10000000 -rss_limit_mb=2048
//! ```
//!
//! `-a` keeps overflow checks and debug assertions in the optimised build; `-s none` leaves out
//! AddressSanitizer, which slows these targets about sixfold and adds little to safe Rust (drop it
//! to check `unsafe` code).
//!
//! The seeds are in `corpus/virtio_pci_transport/`; a crash is saved under
//! `artifacts/virtio_pci_transport/` and replayed with
//! `cargo +nightly fuzz run virtio_pci_transport <file>`.
//!
//! Input: operations, each a tag byte (taken modulo 12) and its arguments (little endian; an
//! exhausted input reads zeros), at most `MAX_OPS` per input:
//!
//! | tag | operation | arguments |
//! |-----|-----------|-----------|
//! | 0 | BAR 0 write | offset u16, length u8 (mod 17), data |
//! | 1 | BAR 0 read | offset u16, length u8 (mod 17) |
//! | 2 | common cfg write | offset u8 (mod 0x38), width u8 (1/2/4/8), value u64 |
//! | 3 | common cfg read | offset u8 (mod 0x38), width u8 |
//! | 4 | config write | register u8 (mod 72), byte u8 (mod 4), length u8 (mod 5), data |
//! | 5 | config read | register u8 (mod 72) |
//! | 6 | BAR 0 move (low dword, then high) | probe u8 (bit 0: size it first), address u64 |
//! | 7 | MSI-X table dword write | vector u8 (mod 4), dword u8 (mod 4), value u32 |
//! | 8 | MSI-X message control (high byte) | value u8 |
//! | 9 | device interrupt | source u8 (bit 7: config, else queue mod 4) |
//! | 10 | driver bring-up | features u32, then per queue: size log2 u8, rings u16 x3, vector u8 |
//! | 11 | PCI_CFG window access | bar u8, offset u16, length u8, write u8 (bit 0), data u32 |
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use devices::pci::{
    BarAllocator, BarSpace, BarWindow, PciBarRouter, PciBus, PciDevice, PciSlot, SharedPciDevice,
    BRIDGE_BUS, CAP_ID_MSIX, CAP_ID_VENDOR, COMMAND_MEMORY, REG_BAR0, REG_COMMAND, REG_ID,
};
use devices::test_utils::{lock, FakeIoEvents, FakeMsiRouter, FakeVirtioDevice, FakeVirtioState};
use devices::virtio::{
    InterruptSource, VirtioPciDevice, BAR0_SIZE, COMMON_CFG_OFFSET, ISR_OFFSET, MSIX_PBA_OFFSET,
    MSIX_TABLE_OFFSET, NOTIFY_OFFSET, NOTIFY_OFF_MULTIPLIER, NO_VECTOR,
};
use devices_fuzz::{capabilities, program_bar, ConfigAccess, Input, MAX_ACCESS, MAX_OPS};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 1 << 20;
const QUEUES: usize = FakeVirtioDevice::QUEUE_MAX_SIZES.len();
/// One vector per queue and one for configuration changes.
const VECTORS: u64 = QUEUES as u64 + 1;
/// First GSI the fake router hands out.
const FIRST_GSI: u32 = 24;
const VERSION_1: u64 = 1 << 32;
const DEVICE_CFG_WINDOW: u64 = 0x1000;
/// Status bits.
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;

fn memory() -> GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("1 MiB of memory")
    })
    .clone()
}

struct Rig {
    bus: PciBus,
    router: Arc<PciBarRouter>,
    dev: Arc<Mutex<VirtioPciDevice>>,
    state: Arc<Mutex<FakeVirtioState>>,
    msi: Arc<FakeMsiRouter>,
    ioevents: Arc<FakeIoEvents>,
    /// Behind the PCI-to-PCI bridge, as the VMM places it.
    slot: PciSlot,
    msix_cap: usize,
    pci_cfg_cap: usize,
    /// Device configuration writes already checked.
    config_writes_checked: usize,
}

impl Rig {
    fn new() -> Self {
        let (device, state) = FakeVirtioDevice::new();
        let msi = Arc::new(FakeMsiRouter::default());
        let ioevents = Arc::new(FakeIoEvents::default());
        let dev = Arc::new(Mutex::new(
            VirtioPciDevice::new(Box::new(device), memory(), msi.clone(), ioevents.clone())
                .expect("the transport builds"),
        ));
        let mut bus = PciBus::new();
        let mut alloc = BarAllocator::new(
            BarWindow::new(0xc000_0000, 0x3ec0_0000),
            Some(BarWindow::new(1 << 32, 1 << 32)),
            None,
        )
        .expect("windows");
        let shared: SharedPciDevice = dev.clone();
        bus.add_bridge(&alloc).expect("the bridge");
        let slot = bus
            .add_device(BRIDGE_BUS, shared, &mut alloc)
            .expect("a free slot");
        // Memory decoding on, as firmware leaves a device it assigned BARs to; the input can
        // turn it off through the command register.
        bus.write_config(
            slot.bus,
            slot.slot,
            0,
            REG_COMMAND,
            0,
            &COMMAND_MEMORY.to_le_bytes(),
        );
        let caps = capabilities(&bus, slot);
        let cfg_byte = |off: usize| {
            (bus.read_config(slot.bus, slot.slot, 0, off / 4) >> ((off % 4) * 8)) as u8
        };
        let msix_cap = caps
            .iter()
            .find(|(_, id)| *id == CAP_ID_MSIX)
            .expect("MSI-X capability")
            .0;
        let pci_cfg_cap = caps
            .iter()
            .find(|(off, id)| *id == CAP_ID_VENDOR && cfg_byte(off + 3) == 5)
            .expect("PCI_CFG capability")
            .0;
        Self {
            router: bus.router(),
            bus,
            dev,
            state,
            msi,
            ioevents,
            slot,
            msix_cap,
            pci_cfg_cap,
            config_writes_checked: 0,
        }
    }

    fn bar0(&self) -> u64 {
        lock(&self.dev).bars()[0].addr
    }

    fn cfg_write(&self, reg: usize, offset: usize, data: &[u8]) {
        self.bus
            .write_config(self.slot.bus, self.slot.slot, 0, reg, offset, data);
    }

    fn cfg_read(&self, reg: usize) -> u32 {
        self.bus.read_config(self.slot.bus, self.slot.slot, 0, reg)
    }

    /// Memory decoding is on: BAR 0 answers (off, it reads all-ones and drops writes).
    fn decodes(&self) -> bool {
        self.cfg_read(REG_COMMAND) & u32::from(COMMAND_MEMORY) != 0
    }

    fn write_bar0(&self, offset: u64, data: &[u8]) {
        self.router
            .write(BarSpace::Mmio, self.bar0().wrapping_add(offset), data);
    }

    fn read_bar0(&self, offset: u64, len: usize) -> [u8; MAX_ACCESS] {
        let mut buf = [0xa5u8; MAX_ACCESS];
        let bar0 = self.bar0();
        self.router
            .read(BarSpace::Mmio, bar0.wrapping_add(offset), &mut buf[..len]);
        let inside = offset + len as u64 <= BAR0_SIZE;
        if !inside || !self.decodes() {
            assert!(
                buf[..len].iter().all(|b| *b == 0xff),
                "read of {len} bytes at BAR 0 + {offset:#x} (BAR 0 at {bar0:#x}) is outside BAR 0 \
                 or BAR 0 does not decode, but returned {:02x?}",
                &buf[..len]
            );
        }
        if offset == ISR_OFFSET && (1..=4).contains(&len) && self.decodes() {
            // Read-to-clear (a read within the 4-byte ISR window): nothing can raise an
            // interrupt in between.
            let mut again = [0u8; 1];
            self.router
                .read(BarSpace::Mmio, bar0 + ISR_OFFSET, &mut again);
            assert_eq!(again[0], 0, "ISR not cleared by the read");
        }
        buf
    }

    fn common_write(&self, offset: u64, value: u64, len: usize) {
        self.write_bar0(COMMON_CFG_OFFSET + offset, &value.to_le_bytes()[..len]);
    }

    fn common_read(&self, offset: u64, len: usize) -> u64 {
        let b = self.read_bar0(COMMON_CFG_OFFSET + offset, len);
        let mut v = [0u8; 8];
        v[..len.min(8)].copy_from_slice(&b[..len.min(8)]);
        u64::from_le_bytes(v)
    }

    fn step(&mut self, inp: &mut Input) {
        match inp.u8() % 12 {
            0 => {
                let offset = u64::from(inp.u16());
                let len = inp.any_len();
                let data = inp.data(len);
                self.write_bar0(offset, &data[..len]);
            }
            1 => {
                let offset = u64::from(inp.u16());
                let len = inp.any_len();
                self.read_bar0(offset, len);
            }
            2 => {
                let offset = u64::from(inp.u8() % 0x38);
                let len = inp.reg_len();
                let value = inp.u64();
                self.common_write(offset, value, len);
            }
            3 => {
                let offset = u64::from(inp.u8() % 0x38);
                let len = inp.reg_len();
                let v = self.common_read(offset, len);
                if !self.decodes() {
                    assert_eq!(v, u64::MAX >> (64 - 8 * len), "BAR 0 does not decode");
                    return;
                }
                match (offset, len) {
                    (0x12, 2) => assert_eq!(v, QUEUES as u64, "num_queues"),
                    (0x10 | 0x1a, 2) => assert!(
                        v < VECTORS || v == u64::from(NO_VECTOR),
                        "MSI-X vector {v:#x} at {offset:#x} names no vector"
                    ),
                    _ => {}
                }
            }
            4 => {
                let reg = usize::from(inp.u8()) % 72;
                let byte = usize::from(inp.u8() % 4);
                let len = usize::from(inp.u8() % 5);
                let data = inp.data(len);
                self.cfg_write(reg, byte, &data[..len]);
            }
            5 => {
                let reg = usize::from(inp.u8()) % 72;
                let v = self.cfg_read(reg);
                match reg {
                    REG_ID => assert_eq!(v, 0x1050_1af4, "identity"),
                    REG_BAR0 => assert_eq!(v & 0xf, 0x4, "BAR 0 flags: 64-bit memory"),
                    64.. => assert_eq!(v, 0xffff_ffff, "register past the 256-byte space"),
                    _ => {}
                }
            }
            6 => {
                let probe = inp.u8() & 1 != 0;
                let addr = inp.u64();
                let bar = lock(&self.dev).bars().first().copied();
                if let Some(expect) = program_bar(&mut Config(self), bar, 0, probe, addr) {
                    assert_eq!(self.bar0(), expect, "BAR 0 follows its registers");
                }
            }
            7 => {
                let vector = u64::from(inp.u8() % 4);
                let dword = u64::from(inp.u8() % 4);
                let value = inp.u32();
                self.write_bar0(
                    MSIX_TABLE_OFFSET + vector * 16 + dword * 4,
                    &value.to_le_bytes(),
                );
            }
            8 => {
                let value = inp.u8();
                self.cfg_write(self.msix_cap / 4, 3, &[value]);
                let control = self.cfg_read(self.msix_cap / 4) >> 16;
                assert_eq!(
                    control & 0xc000,
                    u32::from(value & 0xc0) << 8,
                    "MSI-X enable/mask"
                );
                assert_eq!(u64::from(control & 0x7ff), VECTORS - 1, "MSI-X table size");
            }
            9 => {
                let source = inp.u8();
                let irq = lock(&self.state).interrupt.clone();
                if let Some(irq) = irq {
                    irq.trigger(if source & 0x80 != 0 {
                        InterruptSource::Config
                    } else {
                        InterruptSource::Queue(u16::from(source % 4))
                    });
                }
            }
            10 => self.bring_up(inp),
            11 => {
                let cap = self.pci_cfg_cap;
                let bar = inp.u8() % 2;
                let offset = u32::from(inp.u16());
                let len = [1u32, 2, 4, 3][usize::from(inp.u8() % 4)];
                let write = inp.u8() & 1 != 0;
                let data = inp.u32();
                self.cfg_write((cap + 4) / 4, 0, &[bar]);
                self.cfg_write((cap + 8) / 4, 0, &offset.to_le_bytes());
                self.cfg_write((cap + 12) / 4, 0, &len.to_le_bytes());
                if write {
                    self.cfg_write((cap + 16) / 4, 0, &data.to_le_bytes());
                } else {
                    self.cfg_read((cap + 16) / 4);
                }
            }
            _ => unreachable!(),
        }
    }

    /// A driver's initialisation with fuzzed features, queue sizes, ring addresses (inside
    /// guest memory) and vectors.
    fn bring_up(&self, inp: &mut Input) {
        let features = inp.u32();
        self.common_write(0x14, u64::from(ACKNOWLEDGE), 1);
        self.common_write(0x14, u64::from(ACKNOWLEDGE | DRIVER), 1);
        self.common_write(0x08, 0, 4);
        self.common_write(0x0c, u64::from(features), 4);
        self.common_write(0x08, 1, 4);
        self.common_write(0x0c, 1, 4);
        self.common_write(0x14, u64::from(ACKNOWLEDGE | DRIVER | FEATURES_OK), 1);
        for q in 0..QUEUES as u64 {
            self.common_write(0x16, q, 2);
            self.common_write(0x18, 1 << (inp.u8() % 10), 2);
            for reg in [0x20, 0x28, 0x30] {
                self.common_write(reg, u64::from(inp.u16()) << 4, 8);
            }
            self.common_write(0x1a, u64::from(inp.u8() % 4), 2);
            self.common_write(0x1c, 1, 2);
        }
        self.common_write(
            0x14,
            u64::from(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK),
            1,
        );
    }

    /// Invariants that hold after every operation.
    fn check(&mut self) {
        let (bar0, decoding) = {
            let dev = lock(&self.dev);
            if dev.status() == 0 {
                assert!(!dev.is_active(), "a reset device is inactive");
            }
            (dev.bars()[0].addr, dev.decodes(BarSpace::Mmio))
        };
        let mut registered = lock(&self.ioevents.registered).clone();
        registered.sort_unstable();
        // A notify must not reach a queue while memory decoding is off.
        let expected: Vec<u64> = if bar0 == 0 || !decoding {
            Vec::new()
        } else {
            (0..QUEUES as u64)
                .map(|q| bar0 + NOTIFY_OFFSET + q * u64::from(NOTIFY_OFF_MULTIPLIER))
                .collect()
        };
        assert_eq!(
            registered, expected,
            "ioeventfds at BAR 0 {bar0:#x}, memory decoding {decoding}"
        );

        let gsis: Vec<u32> = (FIRST_GSI..FIRST_GSI + VECTORS as u32).collect();
        assert_eq!(self.msi.allocated(), VECTORS as u32);
        assert_eq!(*lock(&self.msi.irqfds), gsis, "one irqfd per vector");
        assert!(lock(&self.msi.routes).keys().all(|g| gsis.contains(g)));
        assert_eq!(self.router.route_count(), (1, 0));

        let mut pba = [0u8; 8];
        lock(&self.dev).read_bar(0, MSIX_PBA_OFFSET, &mut pba);
        assert_eq!(
            u64::from_le_bytes(pba) >> VECTORS,
            0,
            "pending bit of no vector"
        );

        let state = lock(&self.state);
        if let Some(f) = state.acked {
            assert_eq!(
                f & !(FakeVirtioDevice::FEATURES | VERSION_1),
                0,
                "unoffered features {f:#x}"
            );
            assert_ne!(f & VERSION_1, 0, "VERSION_1 accepted");
        }
        for &(index, size, _) in &state.activated {
            let max = FakeVirtioDevice::QUEUE_MAX_SIZES[usize::from(index)];
            assert!(
                size.is_power_of_two() && size <= max,
                "queue {index} size {size}"
            );
        }
        for (offset, data) in &state.config_writes[self.config_writes_checked..] {
            assert!(
                offset + data.len() as u64 <= DEVICE_CFG_WINDOW,
                "device config write {offset:#x}+{}",
                data.len()
            );
        }
        self.config_writes_checked = state.config_writes.len();
    }
}

/// Configuration access to the transport's function.
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
    let mut rig = Rig::new();
    let mut ops = 0;
    while !inp.is_empty() && ops < MAX_OPS {
        rig.step(&mut inp);
        rig.check();
        ops += 1;
    }
    let Rig {
        bus,
        router,
        dev,
        msi,
        ioevents,
        ..
    } = rig;
    drop((bus, router, dev));
    let mut released = lock(&msi.released).clone();
    released.sort_unstable();
    let gsis: Vec<u32> = (FIRST_GSI..FIRST_GSI + VECTORS as u32).collect();
    assert_eq!(released, gsis, "every GSI given back");
    assert!(lock(&msi.irqfds).is_empty(), "every irqfd unregistered");
    assert!(
        lock(&ioevents.registered).is_empty(),
        "every ioeventfd unregistered"
    );
});
