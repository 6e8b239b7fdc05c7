//! udmabuf export for blobs in guest RAM: `UDMABUF_CREATE_LIST` over the
//! memfd(s) backing RAM, with the kernel's limits and seal rules checked first.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{DmaBufError, Errno, KernelOp, Result};
use crate::memfd::get_seals;
use crate::registry::{host_page_size, DEFAULT_MAX_ENTRIES};
use crate::translate::{check_count, check_shape, BlobEntry};

/// `UDMABUF_CREATE_LIST = _IOW('u', 0x43, struct udmabuf_create_list)` (8-byte header).
pub const UDMABUF_CREATE_LIST: libc::c_ulong = 0x4008_7543;
/// `UDMABUF_FLAGS_CLOEXEC`.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
/// Size of `struct udmabuf_create_list` (flags, count).
pub const UDMABUF_LIST_HDR_LEN: usize = 8;
/// Size of `struct udmabuf_create_item` (memfd, pad, offset, size).
pub const UDMABUF_ITEM_LEN: usize = 24;
/// The kernel's default `list_limit` module parameter.
pub const DEFAULT_LIST_LIMIT: usize = 1024;
/// The kernel's default `size_limit_mb` module parameter, in bytes.
pub const DEFAULT_SIZE_LIMIT: u64 = 64 << 20;

/// Seals the udmabuf driver requires on the memfd.
pub const SEALS_WANTED: i32 = libc::F_SEAL_SHRINK;
/// Seals the udmabuf driver refuses (`F_SEAL_FUTURE_WRITE` = 0x10).
pub const SEALS_DENIED: i32 = libc::F_SEAL_WRITE | 0x10;

/// The kernel limits to check before the ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdmabufLimits {
    /// Most items in one `UDMABUF_CREATE_LIST` (`list_limit`).
    pub max_items: usize,
    /// Largest buffer in bytes (`size_limit_mb`).
    pub max_bytes: u64,
}

impl Default for UdmabufLimits {
    fn default() -> Self {
        UdmabufLimits {
            max_items: DEFAULT_LIST_LIMIT,
            max_bytes: DEFAULT_SIZE_LIMIT,
        }
    }
}

/// One memfd-backed guest RAM region.
#[derive(Debug)]
pub struct RamRegion {
    /// Guest-physical base.
    pub guest_base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Offset of the region's first byte in the memfd.
    pub fd_offset: u64,
    memfd: OwnedFd,
}

impl RamRegion {
    /// The memfd backing this region.
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }
}

/// One udmabuf item: a span of one RAM region's memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdmabufItem {
    /// Guest base of the RAM region (its key in [`GuestRam`]).
    pub region_base: u64,
    /// Offset in the memfd.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The guest RAM layout: which memfd backs which guest-physical range.
#[derive(Debug)]
pub struct GuestRam {
    regions: BTreeMap<u64, RamRegion>,
    page_size: u64,
    max_entries: usize,
}

impl Default for GuestRam {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestRam {
    /// Empty layout with the host page size and the default entry bound.
    pub fn new() -> Self {
        GuestRam {
            regions: BTreeMap::new(),
            page_size: host_page_size(),
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Adds a RAM region backed by `memfd` (duplicated) from `fd_offset`.
    pub fn add_region(
        &mut self,
        guest_base: u64,
        size: u64,
        memfd: BorrowedFd<'_>,
        fd_offset: u64,
    ) -> Result<()> {
        let bad = |m: String| Err(DmaBufError::InvalidRegion(m));
        if size == 0
            || guest_base.checked_add(size).is_none()
            || fd_offset.checked_add(size).is_none()
        {
            return bad(format!(
                "RAM region {guest_base:#x}+{size:#x} is empty or overflows"
            ));
        }
        let end = guest_base + size;
        if let Some((_, prev)) = self.regions.range(..end).next_back() {
            if prev.guest_base + prev.size > guest_base {
                return bad(format!(
                    "RAM region {guest_base:#x}+{size:#x} overlaps {:#x}",
                    prev.guest_base
                ));
            }
        }
        let memfd = memfd
            .try_clone_to_owned()
            .map_err(|e| DmaBufError::Kernel {
                op: KernelOp::Dup,
                errno: Errno(e.raw_os_error().unwrap_or(libc::EBADF)),
            })?;
        self.regions.insert(
            guest_base,
            RamRegion {
                guest_base,
                size,
                fd_offset,
                memfd,
            },
        );
        Ok(())
    }

    /// The RAM region containing `gpa`. O(log n).
    pub fn lookup(&self, gpa: u64) -> Option<&RamRegion> {
        let (_, r) = self.regions.range(..=gpa).next_back()?;
        (gpa - r.guest_base < r.size).then_some(r)
    }

    /// Translates a blob's entries into coalesced memfd items, in order.
    /// Every entry must lie inside one RAM region, with page-aligned memfd
    /// offset and length. Entries may use different RAM regions.
    pub fn translate(&self, entries: &[BlobEntry]) -> Result<Vec<UdmabufItem>> {
        check_count(entries.len(), self.max_entries)?;
        let mask = self.page_size - 1;
        let mut items: Vec<UdmabufItem> = Vec::with_capacity(entries.len().min(1024));
        for (i, e) in entries.iter().enumerate() {
            let e_end = check_shape(i, e)?;
            let r = self.lookup(e.addr).ok_or(DmaBufError::NotInRegion {
                entry: i,
                addr: e.addr,
            })?;
            let region_end = r.guest_base + r.size;
            if e_end > region_end {
                return Err(DmaBufError::PastRegionEnd {
                    entry: i,
                    addr: e.addr,
                    len: e.len,
                    region_end,
                });
            }
            let offset = r.fd_offset + (e.addr - r.guest_base);
            if (offset | e.len) & mask != 0 {
                return Err(DmaBufError::Unaligned {
                    entry: i,
                    offset,
                    len: e.len,
                    page_size: self.page_size,
                });
            }
            match items.last_mut() {
                Some(last)
                    if last.region_base == r.guest_base && last.offset + last.len == offset =>
                {
                    last.len += e.len
                }
                _ => items.push(UdmabufItem {
                    region_base: r.guest_base,
                    offset,
                    len: e.len,
                }),
            }
        }
        Ok(items)
    }
}

/// The `UDMABUF_CREATE_LIST` ioctl on `/dev/udmabuf`.
pub trait UdmabufIoctl: Send + Sync {
    /// Issues the ioctl with `arg` (a `struct udmabuf_create_list` followed by
    /// its items). Returns the new dma-buf fd or the errno.
    fn create_list(&self, dev: BorrowedFd<'_>, arg: &mut [u8]) -> std::result::Result<i32, Errno>;
}

/// The real ioctl.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysUdmabuf;

impl<T: UdmabufIoctl + ?Sized> UdmabufIoctl for Box<T> {
    fn create_list(&self, dev: BorrowedFd<'_>, arg: &mut [u8]) -> std::result::Result<i32, Errno> {
        (**self).create_list(dev, arg)
    }
}

impl UdmabufIoctl for SysUdmabuf {
    fn create_list(&self, dev: BorrowedFd<'_>, arg: &mut [u8]) -> std::result::Result<i32, Errno> {
        let count = crate::vfio_export::read_u32(arg, 4).ok_or(Errno(libc::EINVAL))?;
        let need = (count as usize)
            .checked_mul(UDMABUF_ITEM_LEN)
            .and_then(|n| n.checked_add(UDMABUF_LIST_HDR_LEN));
        if need.is_none_or(|n| n > arg.len()) {
            return Err(Errno(libc::EINVAL));
        }
        // SAFETY: `arg` holds the header and `count` items, all of which the
        // kernel reads; it writes nothing back. The fd is borrowed for the call.
        let ret =
            unsafe { libc::ioctl(dev.as_raw_fd(), UDMABUF_CREATE_LIST as _, arg.as_mut_ptr()) };
        if ret < 0 {
            Err(Errno::last())
        } else {
            Ok(ret)
        }
    }
}

/// Encodes a `UDMABUF_CREATE_LIST` argument from (memfd, offset, size) items.
pub fn encode_create_list(flags: u32, items: &[(i32, u64, u64)]) -> Option<Vec<u8>> {
    let count = u32::try_from(items.len()).ok()?;
    let mut v = Vec::with_capacity(UDMABUF_LIST_HDR_LEN + items.len() * UDMABUF_ITEM_LEN);
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&count.to_ne_bytes());
    for (fd, offset, size) in items {
        v.extend_from_slice(&(*fd as u32).to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&offset.to_ne_bytes());
        v.extend_from_slice(&size.to_ne_bytes());
    }
    Some(v)
}

/// Exports blobs in memfd-backed guest RAM as udmabufs.
#[derive(Debug)]
pub struct UdmabufExporter<I: UdmabufIoctl = SysUdmabuf> {
    dev: OwnedFd,
    ram: GuestRam,
    limits: UdmabufLimits,
    ioctl: I,
}

impl UdmabufExporter<SysUdmabuf> {
    /// Opens `/dev/udmabuf` with the kernel's default limits.
    pub fn open(ram: GuestRam) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/udmabuf")
            .map_err(|e| DmaBufError::Kernel {
                op: KernelOp::UdmabufOpen,
                errno: Errno(e.raw_os_error().unwrap_or(libc::ENODEV)),
            })?;
        Ok(Self::with_device(
            OwnedFd::from(f),
            ram,
            UdmabufLimits::default(),
            SysUdmabuf,
        ))
    }
}

impl<I: UdmabufIoctl> UdmabufExporter<I> {
    /// An exporter over an already open udmabuf device (or a fake's fd).
    pub fn with_device(dev: OwnedFd, ram: GuestRam, limits: UdmabufLimits, ioctl: I) -> Self {
        UdmabufExporter {
            dev,
            ram,
            limits,
            ioctl,
        }
    }

    /// The RAM layout.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Translates and checks limits and seals; returns the items and total size.
    pub fn prepare(&self, entries: &[BlobEntry]) -> Result<(Vec<UdmabufItem>, u64)> {
        let items = self.ram.translate(entries)?;
        if items.len() > self.limits.max_items {
            return Err(DmaBufError::TooManyItems {
                items: items.len(),
                max: self.limits.max_items,
            });
        }
        let size = items
            .iter()
            .try_fold(0u64, |a, it| a.checked_add(it.len))
            .unwrap_or(u64::MAX);
        if size > self.limits.max_bytes {
            return Err(DmaBufError::TooLarge {
                size,
                max: self.limits.max_bytes,
            });
        }
        let mut checked = None;
        for it in &items {
            if checked == Some(it.region_base) {
                continue;
            }
            let r = self
                .ram
                .regions
                .get(&it.region_base)
                .ok_or(DmaBufError::NotInRegion {
                    entry: 0,
                    addr: it.region_base,
                })?;
            let seals = get_seals(r.memfd())?;
            if seals & SEALS_WANTED != SEALS_WANTED || seals & SEALS_DENIED != 0 {
                return Err(DmaBufError::BadSeals {
                    guest_base: r.guest_base,
                    seals,
                });
            }
            checked = Some(it.region_base);
        }
        Ok((items, size))
    }

    /// The same exporter with its ioctl behind a trait object.
    pub fn boxed(self) -> UdmabufExporter<Box<dyn UdmabufIoctl>>
    where
        I: 'static,
    {
        UdmabufExporter {
            dev: self.dev,
            ram: self.ram,
            limits: self.limits,
            ioctl: Box::new(self.ioctl),
        }
    }

    /// Exports the blob as a udmabuf (always read/write for the kernel;
    /// `cloexec` sets `UDMABUF_FLAGS_CLOEXEC`). Returns the fd and its size.
    pub fn export(&self, entries: &[BlobEntry], cloexec: bool) -> Result<(OwnedFd, u64)> {
        let (items, size) = self.prepare(entries)?;
        let raw: Vec<(i32, u64, u64)> = items
            .iter()
            .filter_map(|it| {
                self.ram
                    .regions
                    .get(&it.region_base)
                    .map(|r| (r.memfd.as_raw_fd(), it.offset, it.len))
            })
            .collect();
        let flags = if cloexec { UDMABUF_FLAGS_CLOEXEC } else { 0 };
        let mut arg = encode_create_list(flags, &raw).ok_or(DmaBufError::TooManyItems {
            items: raw.len(),
            max: self.limits.max_items,
        })?;
        match self.ioctl.create_list(self.dev.as_fd(), &mut arg) {
            Ok(fd) if fd >= 0 => {
                // SAFETY: UDMABUF_CREATE_LIST returns a new fd nobody else owns.
                Ok((unsafe { OwnedFd::from_raw_fd(fd) }, size))
            }
            Ok(other) => Err(DmaBufError::Kernel {
                op: KernelOp::UdmabufCreateList,
                errno: Errno(-other),
            }),
            Err(errno) => Err(DmaBufError::Kernel {
                op: KernelOp::UdmabufCreateList,
                errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_kernel::FakeUdmabuf;
    use crate::memfd::{add_seals, create_memfd};
    use std::os::unix::fs::FileExt;

    const P: u64 = 4096;
    const RAM0: u64 = 0;
    const RAM1: u64 = 0x1_0000_0000;

    fn ram_memfd(pages: u64, tag: u8, seals: i32) -> OwnedFd {
        let fd = create_memfd("ram", pages * P).unwrap();
        let f = std::fs::File::from(fd.try_clone().unwrap());
        for i in 0..pages {
            f.write_all_at(&vec![tag.wrapping_add(i as u8); P as usize], i * P)
                .unwrap();
        }
        if seals != 0 {
            add_seals(fd.as_fd(), seals).unwrap();
        }
        fd
    }

    fn exporter(seals: i32, limits: UdmabufLimits) -> UdmabufExporter<FakeUdmabuf> {
        // Two RAM regions (below and above 4 GiB) in one memfd, like a VMM's RAM.
        let fd = ram_memfd(64, 0, seals);
        let mut ram = GuestRam::new();
        ram.add_region(RAM0, 32 * P, fd.as_fd(), 0).unwrap();
        ram.add_region(RAM1, 32 * P, fd.as_fd(), 32 * P).unwrap();
        let dev = create_memfd("dev", 0).unwrap();
        UdmabufExporter::with_device(dev, ram, limits, FakeUdmabuf::default())
    }

    fn e(addr: u64, len: u64) -> BlobEntry {
        BlobEntry::new(addr, len)
    }

    #[test]
    fn export_coalesces_keeps_order_and_reads_back() {
        let x = exporter(libc::F_SEAL_SHRINK, UdmabufLimits::default());
        let entries = [
            e(RAM1 + P, P),
            e(RAM1 + 2 * P, P),
            e(RAM0 + 5 * P, P),
            e(RAM0, P),
        ];
        let (items, size) = x.prepare(&entries).unwrap();
        assert_eq!(size, 4 * P);
        assert_eq!(
            items,
            vec![
                UdmabufItem {
                    region_base: RAM1,
                    offset: 33 * P,
                    len: 2 * P
                },
                UdmabufItem {
                    region_base: RAM0,
                    offset: 5 * P,
                    len: P
                },
                UdmabufItem {
                    region_base: RAM0,
                    offset: 0,
                    len: P
                },
            ]
        );
        let (fd, size) = x.export(&entries, true).unwrap();
        assert_eq!(size, 4 * P);
        // The fake's dma-buf is a memfd holding the pages in entry order.
        let f = std::fs::File::from(fd);
        let mut tags = Vec::new();
        for i in 0..4 {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, i * P + 7).unwrap();
            tags.push(b[0]);
        }
        assert_eq!(tags, vec![33, 34, 5, 0]);
    }

    #[test]
    fn adjacent_in_guest_space_but_different_regions_do_not_merge() {
        let fd = ram_memfd(8, 0, libc::F_SEAL_SHRINK);
        let mut ram = GuestRam::new();
        ram.add_region(0, 4 * P, fd.as_fd(), 4 * P).unwrap();
        ram.add_region(4 * P, 4 * P, fd.as_fd(), 0).unwrap();
        let items = ram.translate(&[e(3 * P, P), e(4 * P, P)]).unwrap();
        assert_eq!(items.len(), 2);
        assert!(ram.add_region(2 * P, 4 * P, fd.as_fd(), 0).is_err());
    }

    #[test]
    fn limits_are_guest_faults_checked_before_the_ioctl() {
        let x = exporter(
            libc::F_SEAL_SHRINK,
            UdmabufLimits {
                max_items: 4,
                max_bytes: 8 * P,
            },
        );
        let scattered: Vec<_> = (0..5).map(|i| e(RAM0 + 2 * i * P, P)).collect();
        let err = x.export(&scattered, true).unwrap_err();
        assert_eq!(err, DmaBufError::TooManyItems { items: 5, max: 4 });
        assert!(err.is_guest_fault());
        let err = x.export(&[e(RAM0, 9 * P)], true).unwrap_err();
        assert_eq!(
            err,
            DmaBufError::TooLarge {
                size: 9 * P,
                max: 8 * P
            }
        );
        assert!(err.is_guest_fault());
        // Coalescing keeps a contiguous blob under the item limit.
        assert!(x
            .export(
                &(0..8).map(|i| e(RAM0 + i * P, P)).collect::<Vec<_>>(),
                true
            )
            .is_ok());
    }

    #[test]
    fn translation_rules() {
        let x = exporter(libc::F_SEAL_SHRINK, UdmabufLimits::default());
        assert_eq!(x.export(&[], true).unwrap_err(), DmaBufError::NoEntries);
        assert_eq!(
            x.export(&[e(RAM0, 0)], true).unwrap_err(),
            DmaBufError::ZeroLength { entry: 0 }
        );
        assert_eq!(
            x.export(&[e(RAM0, P), e(0x8000_0000, P)], true)
                .unwrap_err(),
            DmaBufError::NotInRegion {
                entry: 1,
                addr: 0x8000_0000
            }
        );
        assert!(matches!(
            x.export(&[e(RAM0 + 31 * P, 2 * P)], true),
            Err(DmaBufError::PastRegionEnd { entry: 0, .. })
        ));
        assert!(matches!(
            x.export(&[e(RAM0 + 0x10, P)], true),
            Err(DmaBufError::Unaligned { entry: 0, .. })
        ));
    }

    #[test]
    fn seals_are_host_faults() {
        for seals in [0, libc::F_SEAL_SHRINK | libc::F_SEAL_WRITE] {
            let x = exporter(seals, UdmabufLimits::default());
            let err = x.export(&[e(RAM0, P)], true).unwrap_err();
            assert!(
                matches!(
                    err,
                    DmaBufError::BadSeals {
                        guest_base: RAM0,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(!err.is_guest_fault());
        }
    }

    #[test]
    fn ram_not_in_a_memfd_is_a_host_fault() {
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let mut ram = GuestRam::new();
        ram.add_region(0, 16 * P, f.as_fd(), 0).unwrap();
        let x = UdmabufExporter::with_device(
            create_memfd("dev", 0).unwrap(),
            ram,
            UdmabufLimits::default(),
            FakeUdmabuf::default(),
        );
        let err = x.export(&[e(0, P)], true).unwrap_err();
        assert_eq!(
            err,
            DmaBufError::Kernel {
                op: KernelOp::GetSeals,
                errno: Errno(libc::EINVAL)
            }
        );
        assert!(!err.is_guest_fault());
    }

    #[test]
    fn kernel_refusal_keeps_errno() {
        // Our limits looser than the kernel's: the kernel's EINVAL comes back as a guest fault.
        let fd = ram_memfd(8, 0, libc::F_SEAL_SHRINK);
        let mut ram = GuestRam::new();
        ram.add_region(0, 8 * P, fd.as_fd(), 0).unwrap();
        let fake = FakeUdmabuf {
            list_limit: 1,
            size_limit_mb: 64,
        };
        let x = UdmabufExporter::with_device(
            create_memfd("dev", 0).unwrap(),
            ram,
            UdmabufLimits::default(),
            fake,
        );
        let err = x.export(&[e(2 * P, P), e(0, P)], true).unwrap_err();
        assert_eq!(
            err,
            DmaBufError::Kernel {
                op: KernelOp::UdmabufCreateList,
                errno: Errno(libc::EINVAL)
            }
        );
        assert!(err.is_guest_fault());
    }

    #[test]
    fn create_list_layout() {
        let v = encode_create_list(UDMABUF_FLAGS_CLOEXEC, &[(5, 0x1000, 0x2000)]).unwrap();
        assert_eq!(v.len(), 8 + 24);
        assert_eq!(&v[0..4], &1u32.to_ne_bytes());
        assert_eq!(&v[4..8], &1u32.to_ne_bytes());
        assert_eq!(&v[8..12], &5u32.to_ne_bytes());
        assert_eq!(&v[12..16], &0u32.to_ne_bytes());
        assert_eq!(&v[16..24], &0x1000u64.to_ne_bytes());
        assert_eq!(&v[24..32], &0x2000u64.to_ne_bytes());
        // _IOW('u', 0x43, 8-byte struct)
        assert_eq!(
            UDMABUF_CREATE_LIST,
            (1 << 30) | (8 << 16) | ((b'u' as libc::c_ulong) << 8) | 0x43
        );
    }
}
