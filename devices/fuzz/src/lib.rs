//! Helpers shared by the fuzz targets of the `devices` crate: a reader that turns the fuzzer's
//! bytes into operation arguments, and guest-side helpers (capability walk, access sizes).

use devices::pci::{PciBar, PciBus, PciSlot, REG_BAR0, REG_CAP_PTR};

/// Most operations one input runs: bounds the work (and what the fakes record) per input.
pub const MAX_OPS: usize = 1024;

/// Longest access the targets make (any length 0..=16: MMIO exits are at most 8 bytes, the
/// rest checks that odd lengths are handled).
pub const MAX_ACCESS: usize = 16;

/// Reads operation arguments from the input, little endian; an exhausted input reads zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 when exhausted).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next `N` bytes, zero-padded when the input runs out.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// An access length 0..=[`MAX_ACCESS`] from one byte.
    pub fn any_len(&mut self) -> usize {
        usize::from(self.u8()) % (MAX_ACCESS + 1)
    }

    /// A register access length (1, 2, 4 or 8) from one byte.
    pub fn reg_len(&mut self) -> usize {
        [1, 2, 4, 8][usize::from(self.u8() & 3)]
    }

    /// `len` (at most [`MAX_ACCESS`]) data bytes for a write, zero-padded.
    pub fn data(&mut self, len: usize) -> [u8; MAX_ACCESS] {
        let mut out = [0u8; MAX_ACCESS];
        let n = len.min(MAX_ACCESS).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }
}

/// Walks the capability list of the function in `slot` as a driver does (bounded): the
/// (offset, ID) of each capability.
pub fn capabilities(bus: &PciBus, at: PciSlot) -> Vec<(usize, u8)> {
    let byte = |off: usize| (bus.read_config(at.bus, at.slot, 0, off / 4) >> ((off % 4) * 8)) as u8;
    let mut caps = Vec::new();
    let mut off = usize::from(byte(REG_CAP_PTR * 4) & !3);
    while (0x40..0x100).contains(&off) && caps.len() < 48 {
        caps.push((off, byte(off)));
        off = usize::from(byte(off + 1) & !3);
    }
    caps
}

/// Dword access to one function's configuration space, as a guest driver has it.
pub trait ConfigAccess {
    /// Reads dword `reg`.
    fn read(&mut self, reg: usize) -> u32;
    /// Writes dword `reg`.
    fn write(&mut self, reg: usize, value: u32);
}

/// Sizes BAR register `index` when `probe` (all-ones, checking what reads back against `bar`,
/// the BAR the device reports there, then restoring it) and programs it to `addr` the way
/// Linux does: the low dword, then the high one of a 64-bit BAR.
///
/// Returns the address the BAR must report now, or `None` when nothing can be expected (no
/// BAR there, or the write that completes it was all-ones, which is a probe and never a move).
pub fn program_bar(
    cfg: &mut impl ConfigAccess,
    bar: Option<PciBar>,
    index: usize,
    probe: bool,
    addr: u64,
) -> Option<u64> {
    let reg = REG_BAR0 + index;
    if probe {
        let original = cfg.read(reg);
        cfg.write(reg, u32::MAX);
        let sized = cfg.read(reg);
        if let Some(b) = bar {
            let addr_bits = if b.kind.is_mem() { !0xf } else { !0x3 };
            let expect = (!(b.size - 1) as u32 & addr_bits) | b.kind.flag_bits();
            assert_eq!(sized, expect, "probe of BAR {index} ({b:x?})");
        }
        cfg.write(reg, original);
    }
    cfg.write(reg, addr as u32);
    let b = bar?;
    if b.kind.is_64bit() {
        cfg.write(reg + 1, (addr >> 32) as u32);
        ((addr >> 32) as u32 != u32::MAX).then_some(addr & !(b.size - 1))
    } else {
        let addr_bits = if b.kind.is_mem() { !0xfu32 } else { !0x3u32 };
        (addr as u32 != u32::MAX).then_some(u64::from(addr as u32 & addr_bits) & !(b.size - 1))
    }
}
