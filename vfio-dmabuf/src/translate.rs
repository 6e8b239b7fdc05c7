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
        let base = region.guest_base;
        let end = region.guest_end();
        let mask = self.page_size - 1;
        let mut ranges = Vec::with_capacity(entries.len().min(1024));
        let mut total: u64 = 0;
        for (i, e) in entries.iter().enumerate() {
            let e_end = check_shape(i, e)?;
            if e.addr < base || e.addr >= end {
                return Err(self.foreign_entry(i, e.addr, key));
            }
            if e_end > end {
                return Err(DmaBufError::PastRegionEnd {
                    entry: i,
                    addr: e.addr,
                    len: e.len,
                    region_end: end,
                });
            }
            let offset = e.addr - base;
            if (offset | e.len) & mask != 0 {
                return Err(DmaBufError::Unaligned {
                    entry: i,
                    offset,
                    len: e.len,
                    page_size: self.page_size,
                });
            }
            total = total.checked_add(e.len).ok_or(DmaBufError::EntryOverflow {
                entry: i,
                addr: e.addr,
                len: e.len,
            })?;
            push_coalesced(&mut ranges, DmaRange { offset, len: e.len });
        }
        Ok(Translation {
            device: key.device,
            region_index: key.index,
            ranges,
            total_len: total,
        })
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
