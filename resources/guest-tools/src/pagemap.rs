//! Locked anonymous pages and their guest-physical addresses from `/proc/self/pagemap`.
//!
//! pagemap (Linux `Documentation/admin-guide/mm/pagemap.rst`): one little-endian u64 per virtual
//! page; bit 63 = present, bit 62 = swapped, bits 0..=54 = PFN. The PFN reads as 0 without
//! `CAP_SYS_ADMIN`, so the programs run as root.
//!
//! Pages are mapped with `MAP_POPULATE | MAP_LOCKED` and `mlock`ed: they stay resident. (The kernel
//! may still migrate mlocked pages under compaction; for the seconds these programs run in an idle
//! guest that does not happen in practice, and the address is re-read before each use if needed.)

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::mapping::Mapping;

/// Page size of x86-64 Linux.
pub const PAGE_SIZE: usize = 4096;
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// The PFN in a pagemap entry, or None if the page is absent, swapped, or the PFN is hidden (0).
pub fn pfn_from_entry(entry: u64) -> Option<u64> {
    if entry & PM_PRESENT == 0 || entry & PM_SWAPPED != 0 {
        return None;
    }
    match entry & PM_PFN_MASK {
        0 => None,
        pfn => Some(pfn),
    }
}

/// Reader of `/proc/self/pagemap`.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
}

impl Pagemap {
    /// Opens `/proc/self/pagemap`.
    pub fn open() -> Result<Self> {
        let file =
            File::open("/proc/self/pagemap").map_err(Error::io("open /proc/self/pagemap"))?;
        Ok(Pagemap { file })
    }

    /// Physical address of virtual address `va` (which must be mapped and resident).
    pub fn phys(&self, va: usize) -> Result<u64> {
        let mut b = [0u8; 8];
        let off = (va / PAGE_SIZE) as u64 * 8;
        self.file
            .read_exact_at(&mut b, off)
            .map_err(Error::io(format!("read /proc/self/pagemap for {va:#x}")))?;
        let entry = u64::from_le_bytes(b);
        let pfn = pfn_from_entry(entry).ok_or_else(|| {
            Error::Unsupported(format!(
                "pagemap entry {entry:#018x} for {va:#x}: page not present or PFN hidden (run as root)"
            ))
        })?;
        Ok(pfn * PAGE_SIZE as u64 + (va % PAGE_SIZE) as u64)
    }
}

/// Anonymous, locked, resident, zeroed pages (private to this process). Derefs to
/// [`Mapping`] for the volatile accessors.
#[derive(Debug)]
pub struct LockedPages {
    map: Mapping,
}

impl LockedPages {
    /// Maps and locks `pages` pages.
    pub fn new(pages: usize) -> Result<Self> {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|&l| l > 0)
            .ok_or_else(|| Error::Unsupported(format!("cannot allocate {pages} pages")))?;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | libc::MAP_LOCKED;
        let map = Mapping::new(len, flags, -1, &format!("{pages} locked pages"))?;
        // SAFETY: locks exactly our mapping, which is live.
        if unsafe { libc::mlock(map.va(0) as *const libc::c_void, len) } != 0 {
            return Err(Error::last_os(format!("mlock {pages} pages")));
        }
        // Write every page so each has its own frame (not the shared zero page).
        for p in 0..pages {
            map.write_u8(p * PAGE_SIZE, 0);
        }
        Ok(LockedPages { map })
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.map.len() / PAGE_SIZE
    }

    /// Physical address of byte `off`.
    pub fn phys(&self, pm: &Pagemap, off: usize) -> Result<u64> {
        pm.phys(self.map.va(off))
    }

    /// Physical address of every page.
    pub fn phys_pages(&self, pm: &Pagemap) -> Result<Vec<u64>> {
        (0..self.pages())
            .map(|p| self.phys(pm, p * PAGE_SIZE))
            .collect()
    }
}

impl std::ops::Deref for LockedPages {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        &self.map
    }
}

/// Locked pages whose physical addresses were read once, for buffers a device reads or writes:
/// [`DmaPages::segments`] describes a byte range as physically contiguous pieces. Derefs to
/// [`Mapping`] for the volatile accessors.
#[derive(Debug)]
pub struct DmaPages {
    pages: LockedPages,
    phys: Vec<u64>,
}

impl DmaPages {
    /// Maps and locks `pages` pages and reads their physical addresses.
    pub fn new(pm: &Pagemap, pages: usize) -> Result<Self> {
        let pages = LockedPages::new(pages)?;
        let phys = pages.phys_pages(pm)?;
        Ok(DmaPages { pages, phys })
    }

    /// The (physical address, length) pieces of bytes `off..off + len`; None if the range is
    /// empty or not inside the pages.
    pub fn segments(&self, off: usize, len: usize) -> Option<Vec<(u64, u64)>> {
        phys_segments(&self.phys, off, len)
    }
}

impl std::ops::Deref for DmaPages {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        &self.pages
    }
}

/// Splits bytes `off..off + len` of a buffer whose page `i` lies at physical address `phys[i]`
/// into (physical address, length) pieces, merging pages that are physically adjacent. None if
/// the range is empty or runs past the pages.
pub fn phys_segments(phys: &[u64], off: usize, len: usize) -> Option<Vec<(u64, u64)>> {
    let end = off.checked_add(len)?;
    if len == 0 || end > phys.len().checked_mul(PAGE_SIZE)? {
        return None;
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = off;
    while at < end {
        let in_page = at % PAGE_SIZE;
        let n = (PAGE_SIZE - in_page).min(end - at);
        let addr = phys[at / PAGE_SIZE] + in_page as u64;
        match out.last_mut() {
            Some((a, l)) if *a + *l == addr => *l += n as u64,
            _ => out.push((addr, n as u64)),
        }
        at += n;
    }
    Some(out)
}

/// One page picked by [`find_pages_below`]: `chunks[chunk]`, page `page`, at `phys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickedPage {
    /// Index into the returned chunks.
    pub chunk: usize,
    /// Page index in that chunk.
    pub page: usize,
    /// Its physical address.
    pub phys: u64,
}

/// Allocates locked chunks of `chunk_pages` pages until `count` pages lie wholly below `limit`
/// (e.g. a device's DMA mask), trying at most `max_chunks` chunks. All chunks stay allocated
/// (so the allocator hands out other frames each time) and are returned with the picks.
pub fn find_pages_below(
    pm: &Pagemap,
    limit: u64,
    count: usize,
    chunk_pages: usize,
    max_chunks: usize,
) -> Result<(Vec<LockedPages>, Vec<PickedPage>)> {
    let mut chunks = Vec::new();
    let mut picks = Vec::new();
    for c in 0..max_chunks {
        let chunk = LockedPages::new(chunk_pages)?;
        for (page, phys) in chunk.phys_pages(pm)?.into_iter().enumerate() {
            if phys + PAGE_SIZE as u64 <= limit && picks.len() < count {
                picks.push(PickedPage {
                    chunk: c,
                    page,
                    phys,
                });
            }
        }
        chunks.push(chunk);
        if picks.len() == count {
            return Ok((chunks, picks));
        }
    }
    Err(Error::Unsupported(format!(
        "found only {} of {count} pages below {limit:#x} in {} MiB of locked memory",
        picks.len(),
        (max_chunks * chunk_pages * PAGE_SIZE) >> 20
    )))
}

/// Merges page addresses (in order) into (address, length) runs of physically contiguous pages.
pub fn merge_runs(phys: &[u64], page: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &p in phys {
        match runs.last_mut() {
            Some((start, len)) if *start + *len == p => *len += page,
            _ => runs.push((p, page)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_entries_decode_per_the_kernel_documentation() {
        assert_eq!(pfn_from_entry(PM_PRESENT | 0x1234), Some(0x1234));
        assert_eq!(pfn_from_entry(PM_PRESENT | (1 << 55) | 0x10), Some(0x10)); // soft-dirty bit ignored
        assert_eq!(pfn_from_entry(0x1234), None); // not present
        assert_eq!(pfn_from_entry(PM_PRESENT), None); // PFN hidden (not root)
        assert_eq!(pfn_from_entry(PM_PRESENT | PM_SWAPPED | 5), None);
    }

    #[test]
    fn contiguous_pages_merge_in_order_only() {
        let r = merge_runs(&[0x5000, 0x6000, 0x7000, 0x3000, 0x4000, 0x9000], 0x1000);
        assert_eq!(
            r,
            vec![(0x5000, 0x3000), (0x3000, 0x2000), (0x9000, 0x1000)]
        );
        assert!(merge_runs(&[], 0x1000).is_empty());
    }

    #[test]
    fn segments_split_where_pages_are_not_adjacent() {
        let phys = [0x5000, 0x6000, 0x2000, 0x9000];
        // Inside one page.
        assert_eq!(phys_segments(&phys, 0x10, 0x20), Some(vec![(0x5010, 0x20)]));
        // Pages 0 and 1 are adjacent: one piece; page 2 is not.
        assert_eq!(
            phys_segments(&phys, 0x800, 0x2000),
            Some(vec![(0x5800, 0x1800), (0x2000, 0x800)])
        );
        assert_eq!(
            phys_segments(&phys, 0, 4 * 4096),
            Some(vec![(0x5000, 0x2000), (0x2000, 0x1000), (0x9000, 0x1000)])
        );
        assert_eq!(phys_segments(&phys, 4 * 4096 - 1, 2), None);
        assert_eq!(phys_segments(&phys, 0, 0), None);
        assert_eq!(phys_segments(&phys, usize::MAX, 2), None);
    }

    #[test]
    fn locked_pages_are_zeroed_and_accessible() {
        // mlock may be refused by RLIMIT_MEMLOCK for non-root users; only then skip the checks.
        let Ok(p) = LockedPages::new(2) else { return };
        assert_eq!(p.pages(), 2);
        assert_eq!(p.read_u32(4096), 0);
        p.write_u32(4096, 0xdead_beef);
        assert_eq!(p.read_u32(4096), 0xdead_beef);
        p.write_bytes(10, b"abc");
        let mut b = [0u8; 3];
        p.read_bytes(10, &mut b);
        assert_eq!(&b, b"abc");
    }
}
