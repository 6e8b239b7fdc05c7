//! CPU mapping of a blob's ranges, in entry order, into one contiguous host
//! virtual range.
//!
//! The kernel's VFIO dma-buf cannot be mmapped, so (as the reference design
//! does) the same ranges are mapped from the VFIO device fd at
//! `region fd offset + range offset`. A udmabuf can be mmapped directly
//! ([`CpuMapping::map_fd`]).
//!
//! Caution: a guest that owns the passthrough device can turn off its memory
//! decoding at any time; vfio-pci then zaps BAR mmaps and a host access to a
//! mapping of the BAR gets `SIGBUS`. Drop BAR mappings when the VFIO device
//! sees memory decoding go off, or read guest-racy bytes with
//! [`DeviceRegistry::read_blob`] (a `pread` that fails with `EIO` instead).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

use crate::error::{DmaBufError, Errno, KernelOp, Result};
use crate::registry::DeviceRegistry;
use crate::translate::{DmaRange, Translation};

/// A host mapping, unmapped on drop.
#[derive(Debug)]
pub struct CpuMapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving or
// sharing the pointer between threads is sound (accesses go through
// `read_at`, which copies with raw pointer reads).
unsafe impl Send for CpuMapping {}
// SAFETY: see above; `&self` methods only read.
unsafe impl Sync for CpuMapping {}

fn mmap_err() -> DmaBufError {
    DmaBufError::Kernel {
        op: KernelOp::Mmap,
        errno: Errno::last(),
    }
}

fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| DmaBufError::Kernel {
        op: KernelOp::Mmap,
        errno: Errno(libc::EOVERFLOW),
    })
}

fn to_off(v: u64) -> Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| DmaBufError::Kernel {
        op: KernelOp::Mmap,
        errno: Errno(libc::EOVERFLOW),
    })
}

impl CpuMapping {
    /// Reserves one contiguous range, then maps each range from `fd` at
    /// `base_offset + range.offset` into it with `MAP_FIXED`, in order.
    /// Offsets and lengths must be page-aligned (translation guarantees it).
    pub fn map_ranges(
        fd: BorrowedFd<'_>,
        base_offset: u64,
        ranges: &[DmaRange],
        writable: bool,
    ) -> Result<Self> {
        let total = ranges
            .iter()
            .try_fold(0u64, |acc, r| acc.checked_add(r.len));
        let total = to_usize(total.unwrap_or(u64::MAX))?;
        if total == 0 {
            return Err(DmaBufError::NoEntries);
        }
        // SAFETY: a fresh anonymous PROT_NONE reservation at an address of the
        // kernel's choice; it overlaps no existing mapping.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(mmap_err());
        }
        // From here on, Drop unmaps the whole reservation on any error.
        let mapping = CpuMapping {
            addr: base.cast(),
            len: total,
        };
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let mut cursor = 0usize;
        for r in ranges {
            let len = to_usize(r.len)?;
            let off = to_off(base_offset.saturating_add(r.offset))?;
            // SAFETY: `cursor + len <= total`, so the target lies inside our own
            // reservation; MAP_FIXED replaces only pages we own.
            let p = unsafe {
                libc::mmap(
                    mapping.addr.add(cursor).cast(),
                    len,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    off,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(mmap_err());
            }
            cursor += len;
        }
        Ok(mapping)
    }

    /// Maps `len` bytes of `fd` from offset 0 (e.g. a udmabuf).
    pub fn map_fd(fd: BorrowedFd<'_>, len: u64, writable: bool) -> Result<Self> {
        Self::map_ranges(fd, 0, &[DmaRange { offset: 0, len }], writable)
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *const u8 {
        self.addr
    }

    /// Start of the mapping, for writes (only valid if mapped writable).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (an empty mapping cannot be built).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes at `offset` into `dst`. Returns false (copying nothing)
    /// if the span is outside the mapping.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> bool {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len => {
                // SAFETY: `offset..end` is inside our live mapping and `dst`
                // is a distinct Rust buffer; the source may change under us
                // (shared memory), which a byte copy tolerates.
                unsafe {
                    ptr::copy_nonoverlapping(self.addr.add(offset), dst.as_mut_ptr(), dst.len())
                };
                true
            }
            _ => false,
        }
    }
}

impl Drop for CpuMapping {
    fn drop(&mut self) {
        // SAFETY: `addr..addr+len` is the reservation we created and own.
        let r = unsafe { libc::munmap(self.addr.cast(), self.len) };
        if r != 0 {
            log::error!(
                "vfio-dmabuf: munmap of CPU mapping failed: {}",
                Errno::last()
            );
        }
    }
}

impl DeviceRegistry {
    /// Maps a translated blob for CPU access (read-only unless `writable`):
    /// the ranges, in order, from the device fd at `region fd offset + offset`.
    pub fn map_for_cpu(&self, t: &Translation, writable: bool) -> Result<CpuMapping> {
        let region = self
            .region(t.device, t.region_index)
            .ok_or(DmaBufError::UnknownRegion {
                device: t.device,
                index: t.region_index,
            })?;
        if !region.mappable() {
            return Err(DmaBufError::NotMappable {
                index: t.region_index,
            });
        }
        let fd = self
            .device_fd(t.device)
            .ok_or(DmaBufError::UnknownDevice(t.device))?;
        CpuMapping::map_ranges(fd, region.fd_offset, &t.ranges, writable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd::create_memfd;
    use crate::region::RegionInfo;
    use crate::translate::BlobEntry;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::FileExt;

    const P: u64 = 4096;

    /// A memfd whose page `i` is filled with byte `i`.
    fn pattern_fd(pages: u64) -> OwnedFd {
        let fd = create_memfd("pattern", pages * P).unwrap();
        let f = std::fs::File::from(fd.try_clone().unwrap());
        for i in 0..pages {
            f.write_all_at(&vec![i as u8; P as usize], i * P).unwrap();
        }
        fd
    }

    fn page_tags(m: &CpuMapping) -> Vec<u8> {
        (0..m.len() / P as usize)
            .map(|i| {
                let mut b = [0u8; 2];
                assert!(m.read_at(i * P as usize + 100, &mut b));
                assert_eq!(b[0], b[1]);
                b[0]
            })
            .collect()
    }

    #[test]
    fn ranges_are_mapped_in_entry_order() {
        let fd = pattern_fd(16);
        let ranges = [
            DmaRange {
                offset: 9 * P,
                len: 2 * P,
            },
            DmaRange { offset: 0, len: P },
            DmaRange {
                offset: 4 * P,
                len: P,
            },
        ];
        let m = CpuMapping::map_ranges(fd.as_fd(), 0, &ranges, false).unwrap();
        assert_eq!(m.len(), 4 * P as usize);
        assert_eq!(page_tags(&m), vec![9, 10, 0, 4]);
        let mut b = [0u8; 1];
        assert!(!m.read_at(m.len(), &mut b));
        assert!(!m.read_at(usize::MAX, &mut b));
    }

    #[test]
    fn region_fd_offset_is_added() {
        let fd = pattern_fd(16);
        let m = CpuMapping::map_ranges(fd.as_fd(), 8 * P, &[DmaRange { offset: P, len: P }], false)
            .unwrap();
        assert_eq!(page_tags(&m), vec![9]);
    }

    #[test]
    fn registry_maps_a_translation_from_the_device_fd() {
        let fd = pattern_fd(32);
        let mut reg = DeviceRegistry::with_limits(P, 64);
        let a = reg.register_device("fake", fd.as_fd()).unwrap();
        // region 2 lives at fd offset 16 pages
        reg.set_region(a, RegionInfo::new(2, 0x8000_0000, 16 * P, 16 * P, 7))
            .unwrap();
        reg.set_region(a, RegionInfo::new(0, 0x9000_0000, 16 * P, 0, 3))
            .unwrap();
        let t = reg
            .translate(&[
                BlobEntry::new(0x8000_0000 + 3 * P, P),
                BlobEntry::new(0x8000_0000, P),
            ])
            .unwrap();
        let m = reg.map_for_cpu(&t, false).unwrap();
        assert_eq!(page_tags(&m), vec![19, 16]);
        let t0 = reg.translate(&[BlobEntry::new(0x9000_0000, P)]).unwrap();
        assert_eq!(
            reg.map_for_cpu(&t0, false).unwrap_err(),
            DmaBufError::NotMappable { index: 0 }
        );
    }

    #[test]
    fn mmap_failures_are_host_faults_and_release_the_reservation() {
        // A read-only fd cannot back a shared writable mapping: EACCES.
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let e = CpuMapping::map_ranges(f.as_fd(), 0, &[DmaRange { offset: 0, len: P }], true)
            .unwrap_err();
        assert_eq!(
            e,
            DmaBufError::Kernel {
                op: KernelOp::Mmap,
                errno: Errno(libc::EACCES)
            }
        );
        assert!(!e.is_guest_fault());
        assert!(
            CpuMapping::map_ranges(f.as_fd(), 0, &[DmaRange { offset: 0, len: P }], false).is_ok()
        );
        let fd = pattern_fd(1);
        let err = CpuMapping::map_ranges(
            fd.as_fd(),
            0,
            &[
                DmaRange { offset: 0, len: P },
                DmaRange {
                    offset: 0x800,
                    len: P,
                },
            ],
            false,
        )
        .unwrap_err();
        assert_eq!(
            err,
            DmaBufError::Kernel {
                op: KernelOp::Mmap,
                errno: Errno(libc::EINVAL)
            }
        );
        assert_eq!(
            CpuMapping::map_ranges(fd.as_fd(), 0, &[], false).unwrap_err(),
            DmaBufError::NoEntries
        );
    }
}
