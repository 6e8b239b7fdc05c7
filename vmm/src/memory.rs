//! Guest RAM, split around the MMIO hole: one memfd mapped shared ([`RamBacking::Memfd`]), or
//! private anonymous memory ([`RamBacking::Anonymous`]).
//!
//! The memfd carries `F_SEAL_SHRINK` (and not `F_SEAL_WRITE`) so that `/dev/udmabuf` can later
//! export guest pages as dma-bufs. Anonymous memory cannot be exported that way, but it gets
//! transparent huge pages with a host's default settings (`enabled` = `madvise` or `always`),
//! while shmem (the memfd) gets them only where `shmem_enabled` allows (the default is `never`).
//! Where the host has reserved enough 2 MiB hugetlb pages, the memfd is a hugetlb one instead
//! (udmabuf exports those too): huge pages without any THP setting.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::layout::{ram_ranges, RamRange};

/// Errors while creating guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// memfd_create failed.
    #[error("cannot create the guest RAM memfd: {0}")]
    Memfd(#[source] io::Error),
    /// ftruncate failed.
    #[error("cannot size the guest RAM memfd to {size} bytes: {source}")]
    Resize {
        /// Requested size.
        size: u64,
        /// OS error.
        source: io::Error,
    },
    /// Adding the seals failed.
    #[error("cannot seal the guest RAM memfd: {0}")]
    Seal(#[source] io::Error),
    /// vm-memory could not map the regions.
    #[error("cannot map guest RAM: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
    /// A hugetlb region could not be mapped (e.g. the pool cannot reserve its pages).
    #[error("cannot map guest RAM from hugetlb pages: {0}")]
    MapHugetlb(#[from] vm_memory::mmap::MmapRegionError),
    /// The hugetlb regions do not form guest memory.
    #[error("cannot assemble guest RAM: {0}")]
    Regions(#[from] vm_memory::GuestRegionCollectionError),
}

/// Size of the hugetlb pages guest RAM asks for.
const HUGETLB_PAGE: u64 = 2 << 20;

/// What backs guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamBacking {
    /// A sealed memfd: udmabuf can export guest pages (the virtio-gpu's blobs in guest RAM).
    /// Backed by 2 MiB hugetlb pages when the host's pool has enough of them, else by shmem.
    Memfd,
    /// Private anonymous memory: huge pages by default, no udmabuf exports.
    Anonymous,
}

/// One mapped region of guest RAM and where it lives in the memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// Guest-physical range.
    pub range: RamRange,
    /// Offset of the region's first byte in the memfd (`None`: anonymous memory).
    pub memfd_offset: Option<u64>,
    /// Host virtual address of the region's mapping.
    pub host_addr: u64,
}

/// Guest RAM backed by a sealed memfd or by anonymous memory.
#[derive(Debug)]
pub struct GuestRam {
    memory: GuestMemoryMmap,
    memfd: Option<Arc<File>>,
    hugetlb: bool,
    regions: Vec<RamRegion>,
}

impl GuestRam {
    /// Creates `mem_size` bytes of RAM laid out by [`ram_ranges`], backed as `backing` says.
    pub fn new(mem_size: u64, backing: RamBacking) -> Result<Self, MemoryError> {
        match backing {
            RamBacking::Anonymous => Self::map(mem_size, None, false),
            RamBacking::Memfd => {
                if mem_size.is_multiple_of(HUGETLB_PAGE) {
                    let hugetlb = create_sealed_memfd(mem_size, true)
                        .and_then(|f| Self::map(mem_size, Some(Arc::new(f)), true));
                    match hugetlb {
                        Ok(ram) => return Ok(ram),
                        // The usual case: no pool reserved (vm.nr_hugepages = 0).
                        Err(e) => {
                            log::debug!("no hugetlb pages for guest RAM ({e}); shmem instead")
                        }
                    }
                }
                let memfd = create_sealed_memfd(mem_size, false)?;
                Self::map(mem_size, Some(Arc::new(memfd)), false)
            }
        }
    }

    /// Maps the RAM ranges of `mem_size` from `memfd` (anonymous memory without one). Hugetlb
    /// mappings are made without `MAP_NORESERVE`: the kernel then reserves every huge page at
    /// mmap time, or fails it, so a guest can never fault on an empty pool (a SIGBUS).
    fn map(mem_size: u64, memfd: Option<Arc<File>>, hugetlb: bool) -> Result<Self, MemoryError> {
        let mut offset = 0;
        let mut ranges = Vec::new();
        for r in ram_ranges(mem_size) {
            ranges.push((
                GuestAddress(r.start),
                r.len as usize,
                memfd
                    .as_ref()
                    .map(|f| FileOffset::from_arc(f.clone(), offset)),
            ));
            offset += r.len;
        }
        let memory = if hugetlb {
            let regions = ranges
                .into_iter()
                .map(|(addr, len, file)| {
                    let mut b = MmapRegionBuilder::new(len)
                        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                        .with_mmap_flags(libc::MAP_SHARED)
                        .with_hugetlbfs(true);
                    if let Some(f) = file {
                        b = b.with_file_offset(f);
                    }
                    let region = b.build()?;
                    Ok(GuestRegionMmap::new(region, addr).expect("RAM ranges do not wrap"))
                })
                .collect::<Result<Vec<_>, MemoryError>>()?;
            GuestMemoryMmap::from_regions(regions)?
        } else {
            let memory = GuestMemoryMmap::from_ranges_with_files(&ranges)?;
            for reg in memory.iter() {
                advise_huge_pages(reg.as_ptr(), reg.len() as usize);
            }
            memory
        };
        let regions = memory
            .iter()
            .map(|reg| RamRegion {
                range: RamRange {
                    start: reg.start_addr().0,
                    len: reg.len(),
                },
                memfd_offset: reg.file_offset().map(FileOffset::start),
                host_addr: reg.as_ptr() as u64,
            })
            .collect();
        Ok(GuestRam {
            memory,
            memfd,
            hugetlb,
            regions,
        })
    }

    /// Whether RAM is a hugetlb memfd (2 MiB pages reserved from the host's pool).
    pub fn hugetlb(&self) -> bool {
        self.hugetlb
    }

    /// The vm-memory view of guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The memfd backing all of guest RAM (for udmabuf), if RAM is a memfd.
    pub fn memfd(&self) -> Option<&Arc<File>> {
        self.memfd.as_ref()
    }

    /// The mapped regions, in guest-physical order.
    pub fn regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// Total RAM in bytes.
    pub fn size(&self) -> u64 {
        self.regions.iter().map(|r| r.range.len).sum()
    }
}

/// Asks for transparent huge pages on a guest RAM mapping: with 2 MiB host pages KVM can map
/// guest RAM with 2 MiB stage-2 entries, which saves most of the first-touch faults (each one
/// is a costly exit under nested virtualisation). For anonymous memory this takes effect with
/// `/sys/kernel/mm/transparent_hugepage/enabled` = `madvise` (most distributions' default) or
/// `always`; for memfd (shmem) memory when `shmem_enabled` is `advise`, `within_size` or
/// `always`. Otherwise it is a no-op.
fn advise_huge_pages(addr: *mut u8, len: usize) {
    // SAFETY: madvise only changes paging hints of a mapping this process owns (guest RAM,
    // mapped by vm-memory); MADV_HUGEPAGE does not alter its contents.
    let ret = unsafe { libc::madvise(addr.cast(), len, libc::MADV_HUGEPAGE) };
    if ret != 0 {
        log::debug!(
            "madvise(MADV_HUGEPAGE) on guest RAM: {}",
            io::Error::last_os_error()
        );
    }
}

/// A memfd of `size` bytes sealed against shrinking; `hugetlb`: from the 2 MiB hugetlb pool.
fn create_sealed_memfd(size: u64, hugetlb: bool) -> Result<File, MemoryError> {
    let name: &CStr = c"vmm-guest-ram";
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if hugetlb {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: `name` is a valid NUL-terminated string; the flags are valid memfd_create flags.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|source| MemoryError::Resize { size, source })?;
    // SAFETY: F_ADD_SEALS on a valid memfd with a valid seal mask; no memory is touched.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
    if ret < 0 {
        return Err(MemoryError::Seal(io::Error::last_os_error()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{HIGH_RAM_START, MMIO_HOLE_START};
    use std::os::unix::fs::FileExt;
    use vm_memory::Bytes;

    #[test]
    fn memfd_is_sealed_against_shrinking_only() {
        let ram = GuestRam::new(64 << 20, RamBacking::Memfd).unwrap();
        // SAFETY: F_GET_SEALS on a valid fd.
        let seals = unsafe { libc::fcntl(ram.memfd().unwrap().as_raw_fd(), libc::F_GET_SEALS) };
        assert!(seals >= 0);
        assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
        assert_eq!(seals & libc::F_SEAL_WRITE, 0);
        assert!(
            ram.memfd().unwrap().set_len(4096).is_err(),
            "shrinking is refused"
        );
    }

    /// The smaps header line of the mapping at `host` and the lines after it.
    fn smaps_of(host: u64) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let contains = |l: &str| {
            let range = l.split_whitespace().next().unwrap_or("");
            let mut ends = range.split('-').map(|x| u64::from_str_radix(x, 16));
            matches!((ends.next(), ends.next()), (Some(Ok(a)), Some(Ok(b))) if a <= host && host < b)
        };
        let lines: Vec<&str> = smaps.lines().collect();
        let at = lines
            .iter()
            .position(|l| contains(l))
            .expect("the RAM mapping in smaps");
        lines[at..]
            .iter()
            .take_while(|l| !l.starts_with("VmFlags:"))
            .map(|l| l.to_string())
            .collect()
    }

    #[test]
    fn a_memfd_takes_reserved_hugetlb_pages_when_the_pool_has_them() {
        let size = 16u64 << 20;
        let free: u64 =
            std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
        let ram = GuestRam::new(size, RamBacking::Memfd).unwrap();
        let smaps = smaps_of(ram.regions()[0].host_addr).join("\n");
        // Other tests may take pages from the pool meanwhile: what was chosen must be what
        // the mapping is, and an empty pool means shmem.
        if ram.hugetlb() {
            assert!(smaps.contains("KernelPageSize:     2048 kB"), "{smaps}");
        } else {
            assert!(smaps.contains("KernelPageSize:        4 kB"), "{smaps}");
        }
        if free == 0 {
            assert!(!ram.hugetlb());
        }
        eprintln!("{free} free hugetlb pages: hugetlb = {}", ram.hugetlb());
        // Either way: sealed against shrinking, and writes land in the memfd.
        // SAFETY: F_GET_SEALS on a valid fd.
        let seals = unsafe { libc::fcntl(ram.memfd().unwrap().as_raw_fd(), libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
        ram.memory()
            .write_obj(0xfeed_u16, GuestAddress(size - 2))
            .unwrap();
        let mut buf = [0u8; 2];
        ram.memfd()
            .unwrap()
            .read_exact_at(&mut buf, size - 2)
            .unwrap();
        assert_eq!(u16::from_le_bytes(buf), 0xfeed);
        // A size the pool cannot map in whole pages takes shmem.
        let odd = GuestRam::new(size + 4096, RamBacking::Memfd).unwrap();
        assert!(!odd.hugetlb());
    }

    #[test]
    fn guest_writes_land_in_the_memfd() {
        let ram = GuestRam::new(64 << 20, RamBacking::Memfd).unwrap();
        ram.memory()
            .write_obj(0xdead_beef_u32, GuestAddress(0x1234))
            .unwrap();
        let mut buf = [0u8; 4];
        ram.memfd()
            .unwrap()
            .read_exact_at(&mut buf, 0x1234)
            .unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xdead_beef);
    }

    #[test]
    fn ram_above_the_hole_follows_in_the_memfd() {
        // Mapping is lazy (MAP_NORESERVE): 3.25 GiB costs nothing until touched.
        let size = MMIO_HOLE_START + (256 << 20);
        let ram = GuestRam::new(size, RamBacking::Memfd).unwrap();
        assert_eq!(ram.size(), size);
        let r = ram.regions();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].range.start, HIGH_RAM_START);
        assert_eq!(r[1].memfd_offset, Some(MMIO_HOLE_START));
        ram.memory()
            .write_obj(0x55aa_u16, GuestAddress(HIGH_RAM_START + 8))
            .unwrap();
        let mut buf = [0u8; 2];
        ram.memfd()
            .unwrap()
            .read_exact_at(&mut buf, MMIO_HOLE_START + 8)
            .unwrap();
        assert_eq!(u16::from_le_bytes(buf), 0x55aa);
        assert!(ram
            .memory()
            .write_obj(1u8, GuestAddress(MMIO_HOLE_START + 8))
            .is_err());
    }

    #[test]
    fn anonymous_ram_has_no_memfd_and_holds_guest_writes() {
        let size = MMIO_HOLE_START + (64 << 20);
        let ram = GuestRam::new(size, RamBacking::Anonymous).unwrap();
        assert!(ram.memfd().is_none());
        assert_eq!(ram.size(), size);
        assert!(ram.regions().iter().all(|r| r.memfd_offset.is_none()));
        ram.memory()
            .write_obj(0x1234_5678_u32, GuestAddress(HIGH_RAM_START + 16))
            .unwrap();
        let v: u32 = ram
            .memory()
            .read_obj(GuestAddress(HIGH_RAM_START + 16))
            .unwrap();
        assert_eq!(v, 0x1234_5678);
        // The mapping is private anonymous memory, advised for huge pages.
        let host = ram.regions()[0].host_addr;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        // Anonymous mappings may merge with a neighbour: find the one that contains the RAM.
        let contains = |l: &&str| {
            let range = l.split_whitespace().next().unwrap_or("");
            let mut ends = range.split('-').map(|x| u64::from_str_radix(x, 16));
            matches!((ends.next(), ends.next()), (Some(Ok(a)), Some(Ok(b))) if a <= host && host < b)
        };
        let header = lines.find(contains).expect("the RAM mapping in smaps");
        assert!(!header.contains("memfd"), "{header}");
        let flags = lines.find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(flags.contains(" hg"), "MADV_HUGEPAGE: {flags}");
    }
}
