//! MSI-X table and pending-bit array (PCI Local Bus spec 6.8.2), as the guest programs them.

/// "No vector" (virtio: the driver did not assign a vector).
pub const NO_VECTOR: u16 = 0xffff;
/// Bytes per table entry: address low, address high, data, vector control.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Vector control: mask bit.
const VECTOR_MASKED: u32 = 1;
/// Message control: function mask.
pub const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;
/// Message control: MSI-X enable.
pub const MSIX_CTRL_ENABLE: u16 = 1 << 15;

/// One table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message address (low dword).
    pub addr_lo: u32,
    /// Message address (high dword).
    pub addr_hi: u32,
    /// Message data.
    pub data: u32,
    /// Vector control (bit 0: masked).
    pub ctrl: u32,
}

impl Default for MsixEntry {
    fn default() -> Self {
        // Entries start masked.
        MsixEntry {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            ctrl: VECTOR_MASKED,
        }
    }
}

impl MsixEntry {
    /// The 64-bit message address.
    pub fn address(&self) -> u64 {
        (u64::from(self.addr_hi) << 32) | u64::from(self.addr_lo)
    }

    /// Whether the vector is masked.
    pub fn masked(&self) -> bool {
        self.ctrl & VECTOR_MASKED != 0
    }
}

/// What a table write changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableWrite {
    /// Entry whose address or data changed (its route must be updated).
    pub route_changed: Option<usize>,
    /// Entry that went from masked to unmasked (deliver its pending message).
    pub unmasked: Option<usize>,
}

/// The MSI-X state of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsixTable {
    entries: Vec<MsixEntry>,
    pending: Vec<u64>,
    /// MSI-X enable (message control bit 15).
    pub enabled: bool,
    /// Function mask (message control bit 14).
    pub function_masked: bool,
}

impl MsixTable {
    /// A table of `vectors` masked entries (1..=2048).
    pub fn new(vectors: u16) -> Self {
        let n = usize::from(vectors.clamp(1, 2048));
        MsixTable {
            entries: vec![MsixEntry::default(); n],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true (at least one vector).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `v`.
    pub fn entry(&self, v: usize) -> Option<&MsixEntry> {
        self.entries.get(v)
    }

    /// Whether vector `v` may fire now (enabled, not function-masked, not masked).
    pub fn can_fire(&self, v: usize) -> bool {
        self.enabled && !self.function_masked && self.entries.get(v).is_some_and(|e| !e.masked())
    }

    /// Sets the pending bit of `v`.
    pub fn set_pending(&mut self, v: usize, pending: bool) {
        if let Some(word) = self.pending.get_mut(v / 64) {
            let bit = 1u64 << (v % 64);
            if pending {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    /// Whether `v` is pending.
    pub fn is_pending(&self, v: usize) -> bool {
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & (1u64 << (v % 64)) != 0)
    }

    /// Size of the table in bytes.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Size of the PBA in bytes.
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    fn dword(&self, offset: u64) -> Option<u32> {
        let e = self
            .entries
            .get(usize::try_from(offset / MSIX_ENTRY_SIZE).ok()?)?;
        Some(match offset % MSIX_ENTRY_SIZE / 4 {
            0 => e.addr_lo,
            1 => e.addr_hi,
            2 => e.data,
            _ => e.ctrl,
        })
    }

    /// Guest read of the table. Accesses must be 4 or 8 bytes, naturally aligned (spec);
    /// anything else reads as zeros.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let aligned = offset.is_multiple_of(data.len().max(1) as u64);
        if !matches!(data.len(), 4 | 8) || !aligned {
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            if let Some(v) = self.dword(offset + 4 * i as u64) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Guest write of the table (4 or 8 bytes, aligned; others are ignored).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> TableWrite {
        let mut out = TableWrite::default();
        let aligned = offset.is_multiple_of(data.len().max(1) as u64);
        if !matches!(data.len(), 4 | 8) || !aligned {
            log_limit::debug_limit_global!(
                1,
                crate::GUEST_LOG_INTERVAL,
                "msix: ignored {}-byte table write at {offset:#x}",
                data.len()
            );
            return out;
        }
        for (i, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * i as u64;
            let Ok(idx) = usize::try_from(off / MSIX_ENTRY_SIZE) else {
                continue;
            };
            let Some(e) = self.entries.get_mut(idx) else {
                continue;
            };
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            let v = u32::from_le_bytes(b);
            match off % MSIX_ENTRY_SIZE / 4 {
                0 => {
                    if e.addr_lo != v {
                        out.route_changed = Some(idx);
                    }
                    e.addr_lo = v;
                }
                1 => {
                    if e.addr_hi != v {
                        out.route_changed = Some(idx);
                    }
                    e.addr_hi = v;
                }
                2 => {
                    if e.data != v {
                        out.route_changed = Some(idx);
                    }
                    e.data = v;
                }
                _ => {
                    let was_masked = e.masked();
                    e.ctrl = v & VECTOR_MASKED;
                    if was_masked && !e.masked() {
                        out.unmasked = Some(idx);
                    }
                }
            }
        }
        out
    }

    /// Guest read of the PBA (read-only).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let bytes: Vec<u8> = self.pending.iter().flat_map(|w| w.to_le_bytes()).collect();
        for (i, out) in data.iter_mut().enumerate() {
            *out = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| bytes.get(o).copied())
                .unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_start_masked_and_unmask_is_reported() {
        let mut t = MsixTable::new(3);
        t.enabled = true;
        assert!(!t.can_fire(0));
        let w = t.write_table(16, &0xfee0_0000u32.to_le_bytes());
        assert_eq!(w.route_changed, Some(1));
        let w = t.write_table(16 + 8, &0x41u32.to_le_bytes());
        assert_eq!(w.route_changed, Some(1));
        let w = t.write_table(16 + 12, &0u32.to_le_bytes());
        assert_eq!(w.unmasked, Some(1));
        assert!(t.can_fire(1));
        assert_eq!(t.entry(1).unwrap().address(), 0xfee0_0000);
        let mut d = [0u8; 8];
        t.read_table(16, &mut d);
        assert_eq!(d, [0, 0, 0xe0, 0xfe, 0, 0, 0, 0]);
        t.function_masked = true;
        assert!(!t.can_fire(1));
    }

    #[test]
    fn hostile_accesses_are_ignored() {
        let mut t = MsixTable::new(2);
        let before = t.clone();
        assert_eq!(t.write_table(2, &[1, 2, 3, 4]), TableWrite::default());
        assert_eq!(t.write_table(0, &[1, 2]), TableWrite::default());
        assert_eq!(
            t.write_table(u64::MAX - 3, &[1, 2, 3, 4]),
            TableWrite::default()
        );
        assert_eq!(t.write_table(1 << 40, &[1, 2, 3, 4]), TableWrite::default());
        assert_eq!(t, before);
        let mut d = [0xaau8; 4];
        t.read_table(u64::MAX - 3, &mut d);
        assert_eq!(d, [0; 4]);
        let mut p = [0xaau8; 3];
        t.read_pba(u64::MAX, &mut p);
        assert_eq!(p, [0; 3]);
    }

    #[test]
    fn pending_bits_show_in_the_pba() {
        let mut t = MsixTable::new(70);
        t.set_pending(65, true);
        assert!(t.is_pending(65));
        let mut d = [0u8; 8];
        t.read_pba(8, &mut d);
        assert_eq!(u64::from_le_bytes(d), 2);
        t.set_pending(65, false);
        t.read_pba(8, &mut d);
        assert_eq!(u64::from_le_bytes(d), 0);
        assert_eq!(t.pba_size(), 16);
    }
}
