//! Translation of a blob's guest entries into one region's `(offset, length)`
//! ranges, with every rule checked before any ioctl.
//!
//! Rules (each failure names the entry, in guest order, that broke it):
//! 1. `1 <= entries.len() <= max_entries`;
//! 2. per entry: non-zero length, `addr + len` does not overflow;
//! 3. entry 0 picks the region (O(log n) lookup); every entry starts in that
//!    same region of the same device and ends inside it;
//! 4. offset in the region (`addr - region base`, never an offset inside an
//!    mmap piece) and length are page-aligned;
//! 5. ranges adjacent in the region *and* consecutive in guest order are
//!    coalesced; order is preserved (the dma-buf's bytes follow entry order).

use crate::error::{DmaBufError, Result};
use crate::registry::{DeviceId, DeviceRegistry, RegionKey};

/// One guest memory entry of a blob (`virtio_gpu_mem_entry`): guest-physical
/// address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

impl BlobEntry {
    /// A new entry.
    pub fn new(addr: u64, len: u64) -> Self {
        BlobEntry { addr, len }
    }
}

/// One range inside a region (`vfio_region_dma_range`): offset from the
/// region start and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRange {
    /// Offset from the start of the region.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The result of translating a blob that lies in a passthrough BAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The owning device.
    pub device: DeviceId,
    /// The VFIO region index (BAR number).
    pub region_index: u32,
    /// Coalesced ranges in guest order.
    pub ranges: Vec<DmaRange>,
    /// Sum of the range lengths (the dma-buf's size).
    pub total_len: u64,
    /// The region's generation when translated (see [`DeviceRegistry::is_current`]).
    pub generation: u64,
}

/// Appends `r` to `ranges`, merging it into the last range when it continues it.
#[inline]
pub fn push_coalesced(ranges: &mut Vec<DmaRange>, r: DmaRange) {
    if let Some(last) = ranges.last_mut() {
        if last.offset.checked_add(last.len) == Some(r.offset) {
            last.len += r.len;
            return;
        }
    }
    ranges.push(r);
}

/// Checks rule 1.
pub(crate) fn check_count(count: usize, max: usize) -> Result<()> {
    if count == 0 {
        return Err(DmaBufError::NoEntries);
    }
    if count > max {
        return Err(DmaBufError::TooManyEntries { count, max });
    }
    Ok(())
}

/// Checks rule 2 and returns the exclusive end address.
#[inline]
pub(crate) fn check_shape(entry: usize, e: &BlobEntry) -> Result<u64> {
    if e.len == 0 {
        return Err(DmaBufError::ZeroLength { entry });
    }
    e.addr.checked_add(e.len).ok_or(DmaBufError::EntryOverflow {
        entry,
        addr: e.addr,
        len: e.len,
    })
}

impl DeviceRegistry {
    /// Translates a blob's entries (guest order) into one region's coalesced
    /// ranges. See the module documentation for the rules.
    pub fn translate(&self, entries: &[BlobEntry]) -> Result<Translation> {
        check_count(entries.len(), self.max_entries)?;
        let first = entries[0];
        check_shape(0, &first)?;
        let (key, region) = self
            .lookup_gpa(first.addr)
            .ok_or(DmaBufError::NotInRegion {
                entry: 0,
                addr: first.addr,
            })?;
        if !region.decoding {
            return Err(DmaBufError::NotDecoding {
                device: key.device,
                index: key.index,
            });
        }
        let generation = self.region_generation(key.device, key.index).unwrap_or(0);
        let (base, size) = (region.guest_base, region.size);
        let mask = self.page_size - 1;
        // One combined test per entry on the fast path; the slow path finds
        // which rule broke, in the documented order.
        let ok = |e: &BlobEntry, off: u64| {
            off < size && e.len.wrapping_sub(1) < size - off && (off | e.len) & mask == 0
        };
        let off0 = first.addr.wrapping_sub(base);
        if !ok(&first, off0) {
            return Err(self.entry_error(0, &first, key, base, size));
        }
        let mut ranges = Vec::with_capacity(entries.len());
        let mut cur = DmaRange {
            offset: off0,
            len: first.len,
        };
        let mut total: u64 = first.len;
        for (i, e) in entries.iter().enumerate().skip(1) {
            let off = e.addr.wrapping_sub(base);
            if !ok(e, off) {
                return Err(self.entry_error(i, e, key, base, size));
            }
            total = total.checked_add(e.len).ok_or(DmaBufError::EntryOverflow {
                entry: i,
                addr: e.addr,
                len: e.len,
            })?;
            // Both ends lie inside the region, so this cannot overflow.
            if cur.offset + cur.len == off {
                cur.len += e.len;
            } else {
                ranges.push(cur);
                cur = DmaRange {
                    offset: off,
                    len: e.len,
                };
            }
        }
        ranges.push(cur);
        Ok(Translation {
            device: key.device,
            region_index: key.index,
            ranges,
            total_len: total,
            generation,
        })
    }

    /// The rule entry `i` broke (zero length, overflow, other region,
    /// past the end, alignment), for an entry the fast path refused.
    fn entry_error(
        &self,
        i: usize,
        e: &BlobEntry,
        key: RegionKey,
        base: u64,
        size: u64,
    ) -> DmaBufError {
        let e_end = match check_shape(i, e) {
            Ok(end) => end,
            Err(err) => return err,
        };
        let end = base + size;
        if e.addr < base || e.addr >= end {
            return self.foreign_entry(i, e.addr, key);
        }
        if e_end > end {
            return DmaBufError::PastRegionEnd {
                entry: i,
                addr: e.addr,
                len: e.len,
                region_end: end,
            };
        }
        let offset = e.addr - base;
        DmaBufError::Unaligned {
            entry: i,
            offset,
            len: e.len,
            page_size: self.page_size,
        }
    }

    /// Classifies an entry that does not start in entry 0's region.
    fn foreign_entry(&self, entry: usize, addr: u64, first: RegionKey) -> DmaBufError {
        match self.lookup_gpa(addr) {
            None => DmaBufError::NotInRegion { entry, addr },
            Some((k, _)) if k.device == first.device => DmaBufError::DifferentRegion {
                entry,
                addr,
                expected: first.index,
                found: k.index,
            },
            Some(_) => DmaBufError::DifferentDevice { entry, addr },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{MmapPiece, RegionInfo};
    use std::os::fd::AsFd;

    const P: u64 = 4096;
    const BAR2: u64 = 0x8000_0000;
    const BAR0: u64 = 0x9000_0000;
    const OTHER: u64 = 0xa000_0000;

    fn setup() -> (DeviceRegistry, DeviceId, DeviceId) {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut reg = DeviceRegistry::with_limits(P, 64);
        let a = reg.register_device("a", f.as_fd()).unwrap();
        let b = reg.register_device("b", f.as_fd()).unwrap();
        reg.set_region(a, RegionInfo::new(2, BAR2, 16 << 20, 2 << 40, 7))
            .unwrap();
        reg.set_region(a, RegionInfo::new(0, BAR0, 0x100, 0, 7))
            .unwrap();
        reg.set_region(b, RegionInfo::new(2, OTHER, 1 << 20, 2 << 40, 7))
            .unwrap();
        (reg, a, b)
    }

    fn e(addr: u64, len: u64) -> BlobEntry {
        BlobEntry::new(addr, len)
    }

    #[test]
    fn out_of_order_ranges_keep_guest_order_and_adjacent_ones_coalesce() {
        let (reg, a, _) = setup();
        let t = reg
            .translate(&[
                e(BAR2 + 4 * P, P),
                e(BAR2 + 5 * P, P),
                e(BAR2, 2 * P),
                e(BAR2 + 2 * P, P),
                e(BAR2 + 9 * P, P),
            ])
            .unwrap();
        assert_eq!(t.device, a);
        assert_eq!(t.region_index, 2);
        assert_eq!(
            t.ranges,
            vec![
                DmaRange {
                    offset: 4 * P,
                    len: 2 * P
                },
                DmaRange {
                    offset: 0,
                    len: 3 * P
                },
                DmaRange {
                    offset: 9 * P,
                    len: P
                },
            ]
        );
        assert_eq!(t.total_len, 6 * P);
    }

    #[test]
    fn descending_pages_do_not_coalesce() {
        let (reg, _, _) = setup();
        let t = reg.translate(&[e(BAR2 + P, P), e(BAR2, P)]).unwrap();
        assert_eq!(t.ranges.len(), 2);
    }

    #[test]
    fn entry_count_is_bounded() {
        let (reg, _, _) = setup();
        assert_eq!(reg.translate(&[]), Err(DmaBufError::NoEntries));
        let many = vec![e(BAR2, P); 65];
        assert_eq!(
            reg.translate(&many),
            Err(DmaBufError::TooManyEntries { count: 65, max: 64 })
        );
        assert!(reg.translate(&many[..64]).is_ok());
    }

    #[test]
    fn zero_length_and_overflow_name_the_entry() {
        let (reg, _, _) = setup();
        assert_eq!(
            reg.translate(&[e(BAR2, P), e(BAR2, 0)]),
            Err(DmaBufError::ZeroLength { entry: 1 })
        );
        assert_eq!(
            reg.translate(&[e(BAR2, 0)]),
            Err(DmaBufError::ZeroLength { entry: 0 })
        );
        assert_eq!(
            reg.translate(&[e(BAR2, P), e(u64::MAX - P + 1, 2 * P)]),
            Err(DmaBufError::EntryOverflow {
                entry: 1,
                addr: u64::MAX - P + 1,
                len: 2 * P
            })
        );
    }

    #[test]
    fn entries_outside_any_region() {
        let (reg, _, _) = setup();
        assert_eq!(
            reg.translate(&[e(0x1000, P)]),
            Err(DmaBufError::NotInRegion {
                entry: 0,
                addr: 0x1000
            })
        );
        assert_eq!(
            reg.translate(&[e(BAR2, P), e(BAR2 + (16 << 20), P)]),
            Err(DmaBufError::NotInRegion {
                entry: 1,
                addr: BAR2 + (16 << 20)
            })
        );
    }

    #[test]
    fn two_regions_and_two_devices_are_refused() {
        let (reg, _, _) = setup();
        assert_eq!(
            reg.translate(&[e(BAR2, P), e(BAR2 + P, P), e(BAR0, P)]),
            Err(DmaBufError::DifferentRegion {
                entry: 2,
                addr: BAR0,
                expected: 2,
                found: 0
            })
        );
        assert_eq!(
            reg.translate(&[e(BAR2, P), e(OTHER, P)]),
            Err(DmaBufError::DifferentDevice {
                entry: 1,
                addr: OTHER
            })
        );
    }

    #[test]
    fn past_region_end() {
        let (reg, _, _) = setup();
        let end = BAR2 + (16 << 20);
        assert_eq!(
            reg.translate(&[e(end - P, 2 * P)]),
            Err(DmaBufError::PastRegionEnd {
                entry: 0,
                addr: end - P,
                len: 2 * P,
                region_end: end
            })
        );
        // BAR0 is smaller than a page: a one-page entry runs past its end.
        assert!(matches!(
            reg.translate(&[e(BAR0, P)]),
            Err(DmaBufError::PastRegionEnd { entry: 0, .. })
        ));
        assert!(reg.translate(&[e(end - P, P)]).is_ok());
    }

    #[test]
    fn unaligned_offset_or_length() {
        let (reg, _, _) = setup();
        assert_eq!(
            reg.translate(&[e(BAR2, P), e(BAR2 + 0x800, P)]),
            Err(DmaBufError::Unaligned {
                entry: 1,
                offset: 0x800,
                len: P,
                page_size: P
            })
        );
        assert_eq!(
            reg.translate(&[e(BAR2, 0x1800)]),
            Err(DmaBufError::Unaligned {
                entry: 0,
                offset: 0,
                len: 0x1800,
                page_size: P
            })
        );
    }

    #[test]
    fn first_broken_rule_in_guest_order_is_reported() {
        let (reg, _, _) = setup();
        let r = reg.translate(&[e(BAR2, P), e(BAR2 + 1, P), e(BAR2, 0)]);
        assert_eq!(r.unwrap_err().entry(), Some(1));
    }

    #[test]
    fn offsets_are_region_relative_with_sparse_mmaps() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut reg = DeviceRegistry::with_limits(P, 64);
        let a = reg.register_device("a", f.as_fd()).unwrap();
        let r = RegionInfo::new(4, BAR2, 0x1_0000, 4 << 40, 7)
            .with_mmap_piece(MmapPiece {
                region_offset: 0,
                size: 0x8000,
                host_addr: 0x7f00_0010_0000,
            })
            .with_mmap_piece(MmapPiece {
                region_offset: 0x9000,
                size: 0x7000,
                host_addr: 0x7f00_0000_0000,
            });
        reg.set_region(a, r).unwrap();
        let t = reg.translate(&[e(BAR2 + 0xa000, P)]).unwrap();
        assert_eq!(
            t.ranges,
            vec![DmaRange {
                offset: 0xa000,
                len: P
            }]
        );
    }

    #[test]
    fn push_coalesced_merges_only_continuations() {
        let mut v = Vec::new();
        push_coalesced(&mut v, DmaRange { offset: 0, len: P });
        push_coalesced(&mut v, DmaRange { offset: P, len: P });
        push_coalesced(&mut v, DmaRange { offset: 0, len: P });
        push_coalesced(
            &mut v,
            DmaRange {
                offset: u64::MAX,
                len: 1,
            },
        );
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0],
            DmaRange {
                offset: 0,
                len: 2 * P
            }
        );
    }
}
