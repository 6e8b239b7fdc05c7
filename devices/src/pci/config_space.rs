//! A type-0 PCI configuration space: registers with write masks, BARs with the sizing
//! protocol, the command register and the capability list.
//!
//! Every register is a dword with a write mask: a guest write only changes the bits of the
//! mask, so read-only fields, BAR flag bits and the low bits of a BAR below its size stay as
//! they are. Writing all-ones to a BAR therefore reads back `!(size - 1) | flags`, which is
//! the PCI sizing protocol, with no special case.

use log_limit::debug_limit_global;

use super::bar::{
    BarKind, BarReprogram, BarSpace, PciBar, MIN_IO_BAR_SIZE, MIN_MEM_BAR_SIZE, NUM_BARS,
};
use super::error::{PciError, Result};
use crate::GUEST_LOG_INTERVAL;

/// Size of the conventional configuration space in bytes.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Size of the PCI Express extended configuration space in bytes.
pub const EXTENDED_CONFIG_SPACE_SIZE: usize = 4096;

/// Dword index of the vendor/device ID register.
pub const REG_ID: usize = 0;
/// Dword index of the command/status register.
pub const REG_COMMAND: usize = 1;
/// Dword index of the revision/class register.
pub const REG_CLASS: usize = 2;
/// Dword index of the cache line / latency / header type / BIST register.
pub const REG_HEADER: usize = 3;
/// Dword index of BAR 0.
pub const REG_BAR0: usize = 4;
/// Dword index of the subsystem vendor/ID register.
pub const REG_SUBSYSTEM: usize = 11;
/// Dword index of the expansion ROM BAR.
pub const REG_ROM: usize = 12;
/// Dword index of the capabilities pointer.
pub const REG_CAP_PTR: usize = 13;
/// Dword index of the interrupt line/pin register.
pub const REG_INTERRUPT: usize = 15;

/// Command register: I/O space decoding.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus mastering (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Writable bits of the command register (I/O, memory, bus master, parity, SERR, INTx off).
pub const COMMAND_WRITABLE: u16 = 0x0547;
/// Status register: capabilities list present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// First offset used for capabilities (right after the type-0 header).
pub const FIRST_CAPABILITY_OFFSET: usize = 0x40;
/// Capability ID of MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID of vendor-specific capabilities (used by virtio-pci).
pub const CAP_ID_VENDOR: u8 = 0x09;
/// Capability ID of PCI Express.
pub const CAP_ID_PCIE: u8 = 0x10;
/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;

/// Most capabilities a 256-byte space can hold (each is at least 4 bytes after 0x40);
/// bounds the list walk so that a malformed (looping) list cannot hang us.
pub const MAX_CAPABILITIES: usize = (CONFIG_SPACE_SIZE - FIRST_CAPABILITY_OFFSET) / 4;

/// Fields of a type-0 header that identify a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHeader {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Base class code (e.g. 0x06 bridge, 0x03 display).
    pub class: u8,
    /// Subclass code.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Interrupt pin: 0 none, 1..=4 INTA..INTD.
    pub interrupt_pin: u8,
}

/// State of one BAR of the configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BarState {
    kind: BarKind,
    size: u64,
    /// The address last reported (the one the bus routes to).
    addr: u64,
}

/// A type-0 configuration space with write masks, BARs and a capability list.
#[derive(Clone, Debug)]
pub struct PciConfigSpace {
    regs: Vec<u32>,
    write_masks: Vec<u32>,
    bars: [Option<BarState>; NUM_BARS],
    /// Offset of the last capability added (0 when none).
    last_cap: usize,
    /// First free offset for the next capability.
    next_cap: usize,
}

/// Byte mask (as a dword mask) and value of a write of `data` at `offset` within a dword.
/// `None` for lengths other than 1, 2, 4 or an access that crosses the dword.
pub fn dword_write_parts(offset: usize, data: &[u8]) -> Option<(u32, u32)> {
    let len = data.len();
    if !matches!(len, 1 | 2 | 4) || offset.checked_add(len)? > 4 {
        return None;
    }
    let mut value = 0u32;
    let mut mask = 0u32;
    for (i, byte) in data.iter().enumerate() {
        let shift = (offset + i) * 8;
        value |= u32::from(*byte) << shift;
        mask |= 0xff << shift;
    }
    Some((mask, value))
}

/// Copies the bytes `offset..offset + data.len()` of a dword into `data` (little endian).
/// Out-of-range parts are filled with all-ones.
pub fn dword_read_bytes(value: u32, offset: usize, data: &mut [u8]) {
    let bytes = value.to_le_bytes();
    for (i, out) in data.iter_mut().enumerate() {
        *out = offset
            .checked_add(i)
            .and_then(|idx| bytes.get(idx).copied())
            .unwrap_or(0xff);
    }
}

impl PciConfigSpace {
    /// A 256-byte configuration space with the given identity.
    pub fn new(header: PciHeader) -> Self {
        Self::with_size(header, CONFIG_SPACE_SIZE)
    }

    /// A 4 KiB (PCI Express) configuration space with the given identity.
    pub fn new_extended(header: PciHeader) -> Self {
        Self::with_size(header, EXTENDED_CONFIG_SPACE_SIZE)
    }

    fn with_size(header: PciHeader, size: usize) -> Self {
        let dwords = size / 4;
        let mut regs = vec![0u32; dwords];
        let mut write_masks = vec![0u32; dwords];
        regs[REG_ID] = u32::from(header.vendor_id) | (u32::from(header.device_id) << 16);
        regs[REG_CLASS] = u32::from(header.revision)
            | (u32::from(header.prog_if) << 8)
            | (u32::from(header.subclass) << 16)
            | (u32::from(header.class) << 24);
        // Header type 0, single function.
        regs[REG_HEADER] = 0;
        regs[REG_SUBSYSTEM] =
            u32::from(header.subsystem_vendor_id) | (u32::from(header.subsystem_id) << 16);
        regs[REG_INTERRUPT] = u32::from(header.interrupt_pin) << 8;

        write_masks[REG_COMMAND] = u32::from(COMMAND_WRITABLE);
        // Cache line size and latency timer are read/write.
        write_masks[REG_HEADER] = 0x0000_ffff;
        // Interrupt line is read/write (firmware/OS scratch).
        write_masks[REG_INTERRUPT] = 0x0000_00ff;
        Self {
            regs,
            write_masks,
            bars: [None; NUM_BARS],
            last_cap: 0,
            next_cap: FIRST_CAPABILITY_OFFSET,
        }
    }

    /// Size of this configuration space in bytes (256 or 4096).
    pub fn size(&self) -> usize {
        self.regs.len() * 4
    }

    /// Reads dword register `reg_idx`; all-ones past the end of the space.
    pub fn read_reg(&self, reg_idx: usize) -> u32 {
        self.regs.get(reg_idx).copied().unwrap_or(0xffff_ffff)
    }

    /// Sets dword register `reg_idx` ignoring the write mask (for the VMM, not the guest).
    /// Out-of-range indices are ignored.
    pub fn set_reg(&mut self, reg_idx: usize, value: u32) {
        if let Some(reg) = self.regs.get_mut(reg_idx) {
            *reg = value;
        }
    }

    /// Sets the write mask of dword register `reg_idx`. Out-of-range indices are ignored.
    pub fn set_write_mask(&mut self, reg_idx: usize, mask: u32) {
        if let Some(m) = self.write_masks.get_mut(reg_idx) {
            *m = mask;
        }
    }

    /// Reads `data.len()` bytes at byte `offset` (any length, any alignment); bytes past the
    /// end of the space read as 0xff.
    pub fn read_bytes(&self, offset: usize, data: &mut [u8]) {
        for (i, out) in data.iter_mut().enumerate() {
            *out = match offset.checked_add(i) {
                Some(pos) => dword_byte(self.read_reg(pos / 4), pos % 4),
                None => 0xff,
            };
        }
    }

    /// Writes bytes at byte `offset` ignoring write masks (for building capabilities).
    /// Bytes past the end of the space are dropped.
    pub fn set_bytes(&mut self, offset: usize, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            let Some(pos) = offset.checked_add(i) else {
                return;
            };
            if let Some(reg) = self.regs.get_mut(pos / 4) {
                let shift = (pos % 4) * 8;
                *reg = (*reg & !(0xff << shift)) | (u32::from(*byte) << shift);
            }
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        (self.regs[REG_COMMAND] & 0xffff) as u16
    }

    /// Whether the command register enables decoding of `space` (Memory Space or I/O
    /// Space bit).
    pub fn decodes(&self, space: BarSpace) -> bool {
        command_decodes(self.command(), space)
    }

    /// The status register.
    pub fn status(&self) -> u16 {
        (self.regs[REG_COMMAND] >> 16) as u16
    }

    /// A guest write of `data` (1, 2 or 4 bytes) at byte `offset` within dword `reg_idx`.
    ///
    /// Only bits of the write mask change. Returns the BAR move this write completes, if any:
    /// - a write of all-ones bytes to a BAR register is a sizing probe and never a move;
    /// - a 64-bit BAR is reported when its upper dword is written (Linux writes the lower
    ///   dword first), so a half-written address is never routed;
    /// - the move is relative to the address last reported, so the restore after a sizing
    ///   probe reports nothing.
    ///
    /// Malformed accesses (bad length, crossing the dword, out of range) are ignored.
    pub fn write_reg(
        &mut self,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<BarReprogram> {
        let Some((byte_mask, value)) = dword_write_parts(offset, data) else {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci config: ignored write of {} bytes at reg {reg_idx} offset {offset}",
                data.len()
            );
            return None;
        };
        let (Some(reg), Some(wmask)) = (
            self.regs.get(reg_idx).copied(),
            self.write_masks.get(reg_idx).copied(),
        ) else {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci config: ignored write past the end, reg {reg_idx}"
            );
            return None;
        };
        let mask = byte_mask & wmask;
        self.regs[reg_idx] = (reg & !mask) | (value & mask);

        if !(REG_BAR0..REG_BAR0 + NUM_BARS).contains(&reg_idx) {
            return None;
        }
        let probe = data.iter().all(|b| *b == 0xff);
        if probe {
            return None;
        }
        let bar_reg = reg_idx - REG_BAR0;
        let bar_idx = match self.bars[bar_reg] {
            Some(state) if state.kind.is_64bit() => return None, // wait for the upper half
            Some(_) => bar_reg,
            None => match bar_reg
                .checked_sub(1)
                .and_then(|i| self.bars[i].map(|s| (i, s)))
            {
                Some((i, state)) if state.kind.is_64bit() => i,
                _ => return None,
            },
        };
        self.report_move(bar_idx)
    }

    /// Compares the programmed address of BAR `bar_idx` with the reported one.
    fn report_move(&mut self, bar_idx: usize) -> Option<BarReprogram> {
        let new_addr = self.programmed_bar_addr(bar_idx)?;
        let state = self.bars[bar_idx].as_mut()?;
        if new_addr == state.addr {
            return None;
        }
        let old_addr = state.addr;
        state.addr = new_addr;
        Some(BarReprogram {
            bar: bar_idx,
            kind: state.kind,
            old_addr,
            new_addr,
            size: state.size,
        })
    }

    /// The address currently held in the registers of BAR `bar_idx`.
    fn programmed_bar_addr(&self, bar_idx: usize) -> Option<u64> {
        let state = self.bars.get(bar_idx).copied().flatten()?;
        let low = self.regs[REG_BAR0 + bar_idx];
        Some(match state.kind {
            BarKind::Io => u64::from(low & !0x3),
            BarKind::Mem32 { .. } => u64::from(low & !0xf),
            BarKind::Mem64 { .. } => {
                let high = self.regs[REG_BAR0 + bar_idx + 1];
                (u64::from(high) << 32) | u64::from(low & !0xf)
            }
        })
    }

    /// Defines BAR `index` of `kind` and `size` at address 0 (unprogrammed).
    ///
    /// Memory BARs need a power-of-two size of at least 16 bytes (32-bit ones at most 2 GiB),
    /// I/O BARs at least 4 bytes and at most 64 KiB (x86 port space).
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u64) -> Result<()> {
        let regs_needed = if kind.is_64bit() { 2 } else { 1 };
        if index + regs_needed > NUM_BARS {
            return Err(PciError::InvalidBarIndex(index));
        }
        for i in index..index + regs_needed {
            if self.bar_register_used(i) {
                return Err(PciError::BarInUse(i));
            }
        }
        let min = if kind.is_mem() {
            MIN_MEM_BAR_SIZE
        } else {
            MIN_IO_BAR_SIZE
        };
        if !size.is_power_of_two() || size < min {
            return Err(PciError::InvalidBarSize { size, kind, min });
        }
        let max = match kind {
            BarKind::Io => 1 << 16,
            BarKind::Mem32 { .. } => 1 << 31,
            BarKind::Mem64 { .. } => 1 << 63,
        };
        if size > max {
            return Err(PciError::BarTooLarge { size, kind });
        }
        let size_mask = !(size - 1);
        let flags = kind.flag_bits();
        let low_addr_bits = if kind.is_mem() { !0xfu32 } else { !0x3u32 };
        self.regs[REG_BAR0 + index] = flags;
        self.write_masks[REG_BAR0 + index] = (size_mask as u32) & low_addr_bits;
        if kind.is_64bit() {
            self.regs[REG_BAR0 + index + 1] = 0;
            self.write_masks[REG_BAR0 + index + 1] = (size_mask >> 32) as u32;
        }
        self.bars[index] = Some(BarState {
            kind,
            size,
            addr: 0,
        });
        Ok(())
    }

    fn bar_register_used(&self, reg: usize) -> bool {
        if self.bars[reg].is_some() {
            return true;
        }
        reg.checked_sub(1)
            .and_then(|i| self.bars[i])
            .is_some_and(|s| s.kind.is_64bit())
    }

    /// Programs BAR `index` to `addr` as firmware would (two dword writes for a 64-bit BAR),
    /// returning the move to report. `addr` is masked to the BAR's alignment.
    pub fn program_bar(&mut self, index: usize, addr: u64) -> Option<BarReprogram> {
        let state = self.bars.get(index).copied().flatten()?;
        let low = (addr as u32).to_le_bytes();
        let r = self.write_reg(REG_BAR0 + index, 0, &low);
        if state.kind.is_64bit() {
            let high = ((addr >> 32) as u32).to_le_bytes();
            return self.write_reg(REG_BAR0 + index + 1, 0, &high);
        }
        r
    }

    /// The BARs defined so far with their current (reported) addresses.
    pub fn bars(&self) -> Vec<PciBar> {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(index, s)| {
                s.map(|s| PciBar {
                    index,
                    kind: s.kind,
                    size: s.size,
                    addr: s.addr,
                })
            })
            .collect()
    }

    /// BAR `index` if it is defined (the lower register of a 64-bit BAR).
    pub fn bar(&self, index: usize) -> Option<PciBar> {
        let s = self.bars.get(index).copied().flatten()?;
        Some(PciBar {
            index,
            kind: s.kind,
            size: s.size,
            addr: s.addr,
        })
    }

    /// Adds a capability with ID `id`; `body` are the bytes after the 2-byte header
    /// (ID, next pointer), `write_mask` the guest-writable bits of those bytes (same length).
    /// Returns the capability's offset (dword aligned, from 0x40 on).
    pub fn add_capability(&mut self, id: u8, body: &[u8], write_mask: &[u8]) -> Result<usize> {
        if body.len() != write_mask.len() {
            return Err(PciError::CapabilityMaskLength {
                body: body.len(),
                mask: write_mask.len(),
            });
        }
        let total = body.len() + 2;
        let offset = self.next_cap;
        // Conventional capabilities live in the first 256 bytes.
        if offset + total > CONFIG_SPACE_SIZE {
            return Err(PciError::CapabilitySpaceFull(total));
        }
        self.set_bytes(offset, &[id, 0]);
        self.set_bytes(offset + 2, body);
        for (i, m) in write_mask.iter().enumerate() {
            let pos = offset + 2 + i;
            let shift = (pos % 4) * 8;
            let reg = &mut self.write_masks[pos / 4];
            *reg = (*reg & !(0xff << shift)) | (u32::from(*m) << shift);
        }
        if self.last_cap == 0 {
            self.set_bytes(REG_CAP_PTR * 4, &[offset as u8]);
            self.regs[REG_COMMAND] |= u32::from(STATUS_CAP_LIST) << 16;
        } else {
            self.set_bytes(self.last_cap + 1, &[offset as u8]);
        }
        self.last_cap = offset;
        self.next_cap = (offset + total + 3) & !3;
        Ok(offset)
    }

    /// Offset of the first capability with ID `id`, walking the list from the capabilities
    /// pointer (bounded, so a malformed list cannot loop forever).
    pub fn find_capability(&self, id: u8) -> Option<usize> {
        find_capability_in(
            |off| {
                let mut b = [0u8; 1];
                self.read_bytes(off, &mut b);
                b[0]
            },
            self.status(),
            id,
        )
    }
}

/// Whether command register value `command` enables decoding of `space`.
pub fn command_decodes(command: u16, space: BarSpace) -> bool {
    let bit = match space {
        BarSpace::Mmio => COMMAND_MEMORY,
        BarSpace::Io => COMMAND_IO,
    };
    command & bit != 0
}

/// Walks a conventional capability list with `read_byte` and returns the offset of the first
/// capability with `id`. Bounded to [`MAX_CAPABILITIES`] steps; pointers below 0x40 end it.
pub fn find_capability_in(read_byte: impl Fn(usize) -> u8, status: u16, id: u8) -> Option<usize> {
    if status & STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut ptr = usize::from(read_byte(REG_CAP_PTR * 4) & !0x3);
    for _ in 0..MAX_CAPABILITIES {
        if !(FIRST_CAPABILITY_OFFSET..CONFIG_SPACE_SIZE).contains(&ptr) {
            return None;
        }
        if read_byte(ptr) == id {
            return Some(ptr);
        }
        ptr = usize::from(read_byte(ptr + 1) & !0x3);
    }
    None
}

fn dword_byte(value: u32, byte: usize) -> u8 {
    (value >> (byte * 8)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PciHeader {
        PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1050,
            class: 0x03,
            subclass: 0x80,
            interrupt_pin: 1,
            ..Default::default()
        }
    }

    fn write32(cs: &mut PciConfigSpace, reg: usize, v: u32) -> Option<BarReprogram> {
        cs.write_reg(reg, 0, &v.to_le_bytes())
    }

    #[test]
    fn identity_and_read_only_fields() {
        let mut cs = PciConfigSpace::new(header());
        assert_eq!(cs.read_reg(REG_ID), 0x1050_1af4);
        assert_eq!(cs.read_reg(REG_CLASS) >> 16, 0x0380);
        write32(&mut cs, REG_ID, 0xdead_beef);
        write32(&mut cs, REG_CLASS, 0xffff_ffff);
        assert_eq!(cs.read_reg(REG_ID), 0x1050_1af4);
        assert_eq!(cs.read_reg(REG_CLASS) >> 16, 0x0380);
        // Interrupt line writable, pin not.
        write32(&mut cs, REG_INTERRUPT, 0xffff_ff0b);
        assert_eq!(cs.read_reg(REG_INTERRUPT), 0x0000_010b);
    }

    #[test]
    fn command_register_masks_and_byte_writes() {
        let mut cs = PciConfigSpace::new(header());
        write32(&mut cs, REG_COMMAND, 0xffff_ffff);
        assert_eq!(cs.command(), COMMAND_WRITABLE);
        assert_eq!(cs.status(), 0, "status is not writable");
        cs.write_reg(REG_COMMAND, 0, &[0x00]);
        assert_eq!(cs.command(), COMMAND_WRITABLE & 0xff00);
        cs.write_reg(REG_COMMAND, 0, &[0x06, 0x00]);
        assert_eq!(cs.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER);
    }

    #[test]
    fn sizing_protocol_32bit_memory() {
        let mut cs = PciConfigSpace::new(header());
        cs.add_bar(
            0,
            BarKind::Mem32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
        assert_eq!(write32(&mut cs, REG_BAR0, 0xffff_ffff), None);
        assert_eq!(cs.read_reg(REG_BAR0), 0xffff_f000);
        // Restore to the original (0) address: not a move.
        assert_eq!(write32(&mut cs, REG_BAR0, 0), None);
        let mv = write32(&mut cs, REG_BAR0, 0xc000_0000).unwrap();
        assert_eq!(
            mv,
            BarReprogram {
                bar: 0,
                kind: BarKind::Mem32 {
                    prefetchable: false
                },
                old_addr: 0,
                new_addr: 0xc000_0000,
                size: 0x1000
            }
        );
        // Unaligned low bits are dropped.
        assert_eq!(write32(&mut cs, REG_BAR0, 0xc000_0fff), None);
        assert_eq!(cs.read_reg(REG_BAR0), 0xc000_0000);
    }

    #[test]
    fn sizing_protocol_prefetchable_and_io() {
        let mut cs = PciConfigSpace::new(header());
        cs.add_bar(1, BarKind::Mem32 { prefetchable: true }, 0x10_0000)
            .unwrap();
        cs.add_bar(2, BarKind::Io, 0x20).unwrap();
        write32(&mut cs, REG_BAR0 + 1, 0xffff_ffff);
        assert_eq!(cs.read_reg(REG_BAR0 + 1), 0xfff0_0008);
        write32(&mut cs, REG_BAR0 + 2, 0xffff_ffff);
        assert_eq!(cs.read_reg(REG_BAR0 + 2), 0xffff_ffe1);
        let mv = write32(&mut cs, REG_BAR0 + 2, 0x1040).unwrap();
        assert_eq!((mv.bar, mv.new_addr, mv.kind), (2, 0x1040, BarKind::Io));
        assert_eq!(cs.read_reg(REG_BAR0 + 2), 0x1041);
    }

    #[test]
    fn sixty_four_bit_bar_pair() {
        let mut cs = PciConfigSpace::new(header());
        let kind = BarKind::Mem64 { prefetchable: true };
        cs.add_bar(2, kind, 0x2_0000_0000).unwrap();
        assert!(matches!(
            cs.add_bar(3, BarKind::Io, 4),
            Err(PciError::BarInUse(3))
        ));
        // Size the low half, then the high half, like Linux.
        write32(&mut cs, REG_BAR0 + 2, 0xffff_ffff);
        assert_eq!(cs.read_reg(REG_BAR0 + 2), 0x0000_000c);
        assert_eq!(write32(&mut cs, REG_BAR0 + 2, 0), None);
        assert_eq!(write32(&mut cs, REG_BAR0 + 3, 0xffff_ffff), None);
        assert_eq!(cs.read_reg(REG_BAR0 + 3), 0xffff_fffe);
        assert_eq!(write32(&mut cs, REG_BAR0 + 3, 0), None);
        // Program 0x10_0000_0000: low first (no report), then high (report).
        assert_eq!(write32(&mut cs, REG_BAR0 + 2, 0), None);
        let mv = write32(&mut cs, REG_BAR0 + 3, 0x10).unwrap();
        assert_eq!(
            (mv.bar, mv.old_addr, mv.new_addr, mv.size),
            (2, 0, 0x10_0000_0000, 0x2_0000_0000)
        );
        assert_eq!(cs.bar(2).unwrap().addr, 0x10_0000_0000);
        // program_bar does both halves.
        let mv = cs.program_bar(2, 0x20_0000_0000).unwrap();
        assert_eq!((mv.old_addr, mv.new_addr), (0x10_0000_0000, 0x20_0000_0000));
    }

    #[test]
    fn small_64bit_bar_upper_half_all_writable() {
        let mut cs = PciConfigSpace::new(header());
        cs.add_bar(
            0,
            BarKind::Mem64 {
                prefetchable: false,
            },
            0x4000,
        )
        .unwrap();
        write32(&mut cs, REG_BAR0, 0xffff_ffff);
        write32(&mut cs, REG_BAR0 + 1, 0xffff_ffff);
        assert_eq!(cs.read_reg(REG_BAR0), 0xffff_c004);
        assert_eq!(cs.read_reg(REG_BAR0 + 1), 0xffff_ffff);
    }

    #[test]
    fn bar_validation() {
        let mut cs = PciConfigSpace::new(header());
        let m32 = BarKind::Mem32 {
            prefetchable: false,
        };
        assert!(matches!(
            cs.add_bar(0, m32, 0x1800),
            Err(PciError::InvalidBarSize { .. })
        ));
        assert!(matches!(
            cs.add_bar(0, m32, 8),
            Err(PciError::InvalidBarSize { .. })
        ));
        assert!(matches!(
            cs.add_bar(0, m32, 1 << 32),
            Err(PciError::BarTooLarge { .. })
        ));
        assert!(matches!(
            cs.add_bar(6, m32, 0x1000),
            Err(PciError::InvalidBarIndex(6))
        ));
        assert!(matches!(
            cs.add_bar(
                5,
                BarKind::Mem64 {
                    prefetchable: false
                },
                0x1000
            ),
            Err(PciError::InvalidBarIndex(5))
        ));
        cs.add_bar(0, m32, 0x1000).unwrap();
        assert!(matches!(
            cs.add_bar(0, m32, 0x1000),
            Err(PciError::BarInUse(0))
        ));
    }

    #[test]
    fn undefined_bars_and_rom_read_zero() {
        let mut cs = PciConfigSpace::new(header());
        for reg in REG_BAR0..REG_BAR0 + NUM_BARS {
            assert_eq!(write32(&mut cs, reg, 0xffff_ffff), None);
            assert_eq!(cs.read_reg(reg), 0);
        }
        write32(&mut cs, REG_ROM, 0xffff_ffff);
        assert_eq!(cs.read_reg(REG_ROM), 0);
    }

    #[test]
    fn byte_writes_to_bar() {
        let mut cs = PciConfigSpace::new(header());
        cs.add_bar(
            0,
            BarKind::Mem32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
        assert_eq!(
            cs.write_reg(REG_BAR0, 2, &[0x00, 0xd0]).map(|m| m.new_addr),
            Some(0xd000_0000)
        );
        assert_eq!(
            cs.write_reg(REG_BAR0, 1, &[0x10]).map(|m| m.new_addr),
            Some(0xd000_1000)
        );
    }

    #[test]
    fn capabilities_chain_and_find() {
        let mut cs = PciConfigSpace::new(header());
        assert_eq!(cs.find_capability(CAP_ID_MSIX), None);
        let a = cs
            .add_capability(
                CAP_ID_VENDOR,
                &[14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
                &[0; 14],
            )
            .unwrap();
        let b = cs
            .add_capability(
                CAP_ID_MSIX,
                &[0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
                &[0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0],
            )
            .unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x50);
        assert_ne!(cs.status() & STATUS_CAP_LIST, 0);
        assert_eq!(cs.read_reg(REG_CAP_PTR) & 0xff, 0x40);
        assert_eq!(cs.find_capability(CAP_ID_VENDOR), Some(0x40));
        assert_eq!(cs.find_capability(CAP_ID_MSIX), Some(0x50));
        assert_eq!(cs.find_capability(CAP_ID_MSI), None);
        // Only the enable/mask bits of MSI-X message control are writable.
        cs.write_reg(0x50 / 4, 0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(cs.read_reg(0x50 / 4), 0xc003_0011);
        assert!(matches!(
            cs.add_capability(CAP_ID_MSI, &[0; 2], &[0; 3]),
            Err(PciError::CapabilityMaskLength { .. })
        ));
        assert!(matches!(
            cs.add_capability(CAP_ID_MSI, &[0; 200], &[0; 200]),
            Err(PciError::CapabilitySpaceFull(_))
        ));
    }

    #[test]
    fn looping_capability_list_terminates() {
        let mut cs = PciConfigSpace::new(header());
        cs.add_capability(CAP_ID_VENDOR, &[0, 0], &[0, 0]).unwrap();
        // Make the capability point to itself.
        cs.set_bytes(0x41, &[0x40]);
        assert_eq!(cs.find_capability(CAP_ID_MSIX), None);
    }

    #[test]
    fn hostile_accesses_do_not_panic() {
        let mut cs = PciConfigSpace::new(header());
        cs.add_bar(
            0,
            BarKind::Mem32 {
                prefetchable: false,
            },
            0x1000,
        )
        .unwrap();
        assert_eq!(cs.write_reg(REG_BAR0, 3, &[1, 2]), None);
        assert_eq!(cs.write_reg(REG_BAR0, 0, &[1, 2, 3]), None);
        assert_eq!(cs.write_reg(REG_BAR0, usize::MAX, &[1]), None);
        assert_eq!(cs.write_reg(usize::MAX, 0, &[1]), None);
        assert_eq!(cs.write_reg(64, 0, &[1, 2, 3, 4]), None);
        assert_eq!(cs.read_reg(64), 0xffff_ffff);
        assert_eq!(cs.read_reg(usize::MAX), 0xffff_ffff);
        let mut buf = [0u8; 8];
        cs.read_bytes(usize::MAX - 2, &mut buf);
        assert_eq!(buf, [0xff; 8]);
        cs.set_bytes(usize::MAX - 1, &[1, 2, 3]);
        assert_eq!(cs.read_reg(REG_BAR0), 0);
    }

    #[test]
    fn extended_space() {
        let cs = PciConfigSpace::new_extended(header());
        assert_eq!(cs.size(), 4096);
        assert_eq!(cs.read_reg(1023), 0);
        assert_eq!(cs.read_reg(1024), 0xffff_ffff);
    }

    #[test]
    fn dword_helpers() {
        assert_eq!(
            dword_write_parts(2, &[0x34, 0x12]),
            Some((0xffff_0000, 0x1234_0000))
        );
        assert_eq!(dword_write_parts(3, &[0x34, 0x12]), None);
        assert_eq!(dword_write_parts(0, &[]), None);
        let mut b = [0u8; 2];
        dword_read_bytes(0x1234_5678, 1, &mut b);
        assert_eq!(b, [0x56, 0x34]);
        dword_read_bytes(0x1234_5678, 3, &mut b);
        assert_eq!(b, [0x12, 0xff]);
    }
}
