//! MSI-X emulation: the capability's message control and the vector table the guest
//! programs. The real table is never touched: VFIO signals one eventfd per vector and the VMM
//! routes each to the guest's address/data through KVM.

/// Message control: MSI-X enable.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;

/// Where the MSI-X structures are, from the capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapInfo {
    /// Offset of the capability in config space.
    pub cap_offset: usize,
    /// Number of vectors.
    pub vectors: u16,
    /// BAR holding the table.
    pub table_bar: u32,
    /// Offset of the table in that BAR.
    pub table_offset: u64,
    /// BAR holding the PBA.
    pub pba_bar: u32,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u64,
}

impl MsixCapInfo {
    /// Decodes the capability from its first three dwords (ID/next/control, table, PBA).
    pub fn parse(cap_offset: usize, dw0: u32, table: u32, pba: u32) -> Self {
        let control = (dw0 >> 16) as u16;
        Self {
            cap_offset,
            vectors: (control & 0x7ff) + 1,
            table_bar: table & 0x7,
            table_offset: u64::from(table & !0x7),
            pba_bar: pba & 0x7,
            pba_offset: u64::from(pba & !0x7),
        }
    }

    /// Size of the table in bytes.
    pub fn table_size(&self) -> u64 {
        u64::from(self.vectors) * MSIX_ENTRY_SIZE
    }

    /// Size of the PBA in bytes (one bit per vector, in qwords).
    pub fn pba_size(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }
}

/// One table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message address (64-bit).
    pub address: u64,
    /// Message data.
    pub data: u32,
    /// Vector masked (bit 0 of vector control).
    pub masked: bool,
}

/// The emulated MSI-X state of a device.
#[derive(Clone, Debug)]
pub struct MsixState {
    info: MsixCapInfo,
    control: u16,
    /// The table as dwords: address low, address high, data, vector control per entry.
    table: Vec<u32>,
}

impl MsixState {
    /// Reset state: disabled, all vectors masked.
    pub fn new(info: MsixCapInfo) -> Self {
        let mut table = vec![0u32; usize::from(info.vectors) * 4];
        for entry in table.chunks_mut(4) {
            entry[3] = 1;
        }
        Self {
            info,
            control: 0,
            table,
        }
    }

    /// The capability's location.
    pub fn info(&self) -> &MsixCapInfo {
        &self.info
    }

    /// The emulated enable and function-mask bits of message control.
    pub fn control_bits(&self) -> u16 {
        self.control
    }

    /// Sets the enable and function-mask bits from a guest write of message control.
    pub fn write_control(&mut self, value: u16) {
        self.control = value & (MSIX_ENABLE | MSIX_FUNCTION_MASK);
    }

    /// MSI-X enabled by the guest.
    pub fn enabled(&self) -> bool {
        self.control & MSIX_ENABLE != 0
    }

    /// All vectors masked by the function mask.
    pub fn function_masked(&self) -> bool {
        self.control & MSIX_FUNCTION_MASK != 0
    }

    /// Entry `vector`.
    pub fn entry(&self, vector: usize) -> Option<MsixEntry> {
        let start = vector.checked_mul(4)?;
        let e = self.table.get(start..start.checked_add(4)?)?;
        Some(MsixEntry {
            address: u64::from(e[0]) | (u64::from(e[1]) << 32),
            data: e[2],
            masked: e[3] & 1 != 0,
        })
    }

    /// True if `offset..offset+len` of the table BAR falls in the table.
    pub fn in_table(&self, bar: u32, offset: u64, len: usize) -> bool {
        bar == self.info.table_bar
            && in_range(offset, len, self.info.table_offset, self.info.table_size())
    }

    /// True if `offset..offset+len` of the PBA BAR falls in the PBA.
    pub fn in_pba(&self, bar: u32, offset: u64, len: usize) -> bool {
        bar == self.info.pba_bar
            && in_range(offset, len, self.info.pba_offset, self.info.pba_size())
    }

    /// Reads the table at `offset` of the table BAR (any size and alignment inside it).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        let base = offset.wrapping_sub(self.info.table_offset);
        for (i, out) in data.iter_mut().enumerate() {
            let pos = base.wrapping_add(i as u64);
            *out = usize::try_from(pos / 4)
                .ok()
                .and_then(|d| self.table.get(d))
                .map_or(0xff, |dw| (dw >> ((pos % 4) * 8)) as u8);
        }
    }

    /// Writes the table at `offset` of the table BAR. Returns the vectors whose entry changed.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Vec<usize> {
        let base = offset.wrapping_sub(self.info.table_offset);
        let mut changed = Vec::new();
        for (i, byte) in data.iter().enumerate() {
            let pos = base.wrapping_add(i as u64);
            let Some(idx) = usize::try_from(pos / 4)
                .ok()
                .filter(|d| *d < self.table.len())
            else {
                continue;
            };
            let shift = (pos % 4) * 8;
            let old = self.table[idx];
            let mut new = (old & !(0xff << shift)) | (u32::from(*byte) << shift);
            if idx % 4 == 3 {
                new &= 1; // vector control: only the mask bit exists
            }
            self.table[idx] = new;
            if new != old && changed.last() != Some(&(idx / 4)) {
                changed.push(idx / 4);
            }
        }
        changed
    }

    /// Reads the PBA: nothing is ever pending in the emulated view (masked vectors keep their
    /// eventfd signalled and KVM delivers it when the vector is unmasked).
    pub fn read_pba(&self, data: &mut [u8]) {
        data.fill(0);
    }
}

fn in_range(offset: u64, len: usize, start: u64, size: u64) -> bool {
    offset >= start
        && offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= start.saturating_add(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> MsixState {
        // 4 vectors, table in BAR 1 at 0x2000, PBA in BAR 1 at 0x3000.
        MsixState::new(MsixCapInfo::parse(0x70, 0x0003_0011, 0x2001, 0x3001))
    }

    #[test]
    fn parse_cap() {
        let s = state();
        let i = s.info();
        assert_eq!(
            (
                i.vectors,
                i.table_bar,
                i.table_offset,
                i.pba_bar,
                i.pba_offset
            ),
            (4, 1, 0x2000, 1, 0x3000)
        );
        assert_eq!(i.table_size(), 64);
        assert_eq!(i.pba_size(), 8);
    }

    #[test]
    fn table_reset_masked_and_programmed() {
        let mut s = state();
        assert!(s.entry(0).unwrap().masked);
        assert_eq!(
            s.write_table(0x2010, &0xfee0_0000u32.to_le_bytes()),
            vec![1]
        );
        s.write_table(0x2014, &0u32.to_le_bytes());
        s.write_table(0x2018, &0x4041u32.to_le_bytes());
        assert_eq!(
            s.write_table(0x201c, &0xffff_fff0u32.to_le_bytes()),
            vec![1],
            "unmask; reserved bits dropped"
        );
        assert_eq!(
            s.entry(1).unwrap(),
            MsixEntry {
                address: 0xfee0_0000,
                data: 0x4041,
                masked: false
            }
        );
        let mut b = [0u8; 4];
        s.read_table(0x201c, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
        // A qword write of the address.
        s.write_table(0x2020, &0x1_fee0_1000u64.to_le_bytes());
        assert_eq!(s.entry(2).unwrap().address, 0x1_fee0_1000);
        // Writing the same value again changes nothing.
        assert!(s
            .write_table(0x2020, &0x1_fee0_1000u64.to_le_bytes())
            .is_empty());
    }

    #[test]
    fn ranges_and_control() {
        let mut s = state();
        assert!(s.in_table(1, 0x2000, 4));
        assert!(s.in_table(1, 0x203c, 4));
        assert!(!s.in_table(1, 0x203e, 4));
        assert!(!s.in_table(0, 0x2000, 4));
        assert!(s.in_pba(1, 0x3000, 8));
        assert!(!s.in_pba(1, u64::MAX, 8));
        s.write_control(0xffff);
        assert!(s.enabled() && s.function_masked());
        assert_eq!(s.control_bits(), 0xc000);
    }

    #[test]
    fn hostile_table_accesses() {
        let mut s = state();
        let mut b = [0u8; 8];
        s.read_table(u64::MAX, &mut b);
        assert_eq!(b, [0xff; 8]);
        assert!(s.write_table(0, &[1; 8]).is_empty());
        assert!(s.write_table(u64::MAX - 2, &[1; 8]).is_empty());
        assert!(s.entry(4).is_none());
        assert!(s.entry(usize::MAX / 2).is_none());
    }
}
