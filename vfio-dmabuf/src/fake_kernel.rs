//! Fake kernels for unit tests (here and in dependent crates).
//!
//! [`FakeVfioPci`] answers `VFIO_DEVICE_FEATURE` the way Linux 6.19+ does for
//! a vfio-pci device (`vfio_ioctl_device_feature` in `vfio_main.c`, then
//! `vfio_pci_core_feature_dma_buf` in `vfio_pci_dmabuf.c`), check for check,
//! in the same order, with the same errnos. [`FakeUdmabuf`] does the same for
//! `UDMABUF_CREATE_LIST` (`drivers/dma-buf/udmabuf.c`). On success both
//! return a real fd (a memfd holding a copy of the exported bytes where the
//! fake can know them), so ownership and mapping code paths are real.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::sync::Mutex;

use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_MASK,
    VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET,
};

use crate::error::Errno;
use crate::memfd::create_memfd;
use crate::translate::DmaRange;
use crate::udmabuf::{
    UdmabufIoctl, SEALS_DENIED, SEALS_WANTED, UDMABUF_FLAGS_CLOEXEC, UDMABUF_ITEM_LEN,
    UDMABUF_LIST_HDR_LEN,
};
use crate::vfio_export::{read_u32, read_u64, DeviceFeatureIoctl};

/// The kernel's `PAGE_SIZE` on x86-64.
pub const FAKE_PAGE_SIZE: u64 = 4096;
/// `DMA_IOVA_USE_SWIOTLB`: a total length with this bit set is refused.
pub const DMA_IOVA_USE_SWIOTLB: u64 = 1 << 63;
/// `VFIO_PCI_ROM_REGION_INDEX`: region indexes at or above it are not BARs.
pub const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;

/// One BAR of the fake device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeBar {
    /// `pci_resource_start`.
    pub phys_start: u64,
    /// `pci_resource_len`.
    pub len: u64,
    /// Whether `pcim_p2pdma_provider` finds a provider for it.
    pub p2p_provider: bool,
}

/// One successful export, as the fake recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeExport {
    /// Region index.
    pub region_index: u32,
    /// `open_flags` passed.
    pub open_flags: u32,
    /// The ranges, as received.
    pub ranges: Vec<DmaRange>,
}

/// A vfio-pci device as the kernel's `VFIO_DEVICE_FEATURE` handler sees it.
#[derive(Debug)]
pub struct FakeVfioPci {
    /// `vdev->pci_ops->get_dmabuf_phys` present (else `EOPNOTSUPP`).
    pub dma_buf_supported: bool,
    /// BARs 0..=5.
    pub bars: [Option<FakeBar>; 6],
    exports: Mutex<Vec<FakeExport>>,
    calls: Mutex<u32>,
}

impl FakeVfioPci {
    /// A device like the rig's ivshmem: BAR0 0x100 bytes, BAR2 16 MiB with a
    /// P2P provider.
    pub fn ivshmem_like() -> Self {
        let mut bars = [None; 6];
        bars[0] = Some(FakeBar {
            phys_start: 0xfe80_0000,
            len: 0x100,
            p2p_provider: false,
        });
        bars[2] = Some(FakeBar {
            phys_start: 0xfc00_0000,
            len: 16 << 20,
            p2p_provider: true,
        });
        FakeVfioPci {
            dma_buf_supported: true,
            bars,
            exports: Mutex::new(Vec::new()),
            calls: Mutex::new(0),
        }
    }

    /// A device with the given BARs.
    pub fn new(dma_buf_supported: bool, bars: [Option<FakeBar>; 6]) -> Self {
        FakeVfioPci {
            dma_buf_supported,
            bars,
            exports: Mutex::new(Vec::new()),
            calls: Mutex::new(0),
        }
    }

    /// Successful exports so far.
    pub fn exports(&self) -> Vec<FakeExport> {
        self.exports.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Number of ioctls received.
    pub fn calls(&self) -> u32 {
        self.calls.lock().map(|c| *c).unwrap_or(0)
    }

    /// The kernel's logic; `arg` is the user buffer (reads past it are `EFAULT`).
    fn handle(&self, arg: &[u8]) -> Result<i32, Errno> {
        let e = |n| Err(Errno(n));
        // vfio_ioctl_device_feature(): copy_from_user(argsz, flags)
        let (Some(argsz), Some(flags)) = (read_u32(arg, 0), read_u32(arg, 4)) else {
            return e(libc::EFAULT);
        };
        let minsz = 8u32;
        if argsz < minsz {
            return e(libc::EINVAL);
        }
        let known = VFIO_DEVICE_FEATURE_MASK
            | VFIO_DEVICE_FEATURE_SET
            | VFIO_DEVICE_FEATURE_GET
            | VFIO_DEVICE_FEATURE_PROBE;
        if flags & !known != 0 {
            return e(libc::EINVAL);
        }
        if flags & VFIO_DEVICE_FEATURE_PROBE == 0
            && flags & VFIO_DEVICE_FEATURE_SET != 0
            && flags & VFIO_DEVICE_FEATURE_GET != 0
        {
            return e(libc::EINVAL);
        }
        if flags & VFIO_DEVICE_FEATURE_MASK != VFIO_DEVICE_FEATURE_DMA_BUF {
            // vfio_pci_core_ioctl_feature(): other features are not modelled.
            return e(libc::ENOTTY);
        }
        let data_argsz = u64::from(argsz - minsz);
        // vfio_pci_core_feature_dma_buf()
        if !self.dma_buf_supported {
            return e(libc::EOPNOTSUPP);
        }
        // vfio_check_feature(flags, argsz, GET, sizeof(struct vfio_device_feature_dma_buf))
        if flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) & !VFIO_DEVICE_FEATURE_GET
            != 0
        {
            return e(libc::EINVAL);
        }
        if flags & VFIO_DEVICE_FEATURE_PROBE != 0 {
            return Ok(0);
        }
        if flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) == 0 {
            return e(libc::EINVAL);
        }
        if data_argsz < 16 {
            return e(libc::EINVAL);
        }
        // copy_from_user(&get_dma_buf, arg, sizeof(get_dma_buf))
        let (Some(region_index), Some(open_flags), Some(dflags), Some(nr_ranges)) = (
            read_u32(arg, 8),
            read_u32(arg, 12),
            read_u32(arg, 16),
            read_u32(arg, 20),
        ) else {
            return e(libc::EFAULT);
        };
        if nr_ranges == 0 || dflags != 0 {
            return e(libc::EINVAL);
        }
        if region_index >= VFIO_PCI_ROM_REGION_INDEX {
            return e(libc::ENODEV);
        }
        // memdup_array_user(&arg->dma_ranges, nr_ranges, 16)
        let mut ranges = Vec::new();
        for i in 0..nr_ranges as usize {
            let at = 24 + i * 16;
            let (Some(offset), Some(len)) = (read_u64(arg, at), read_u64(arg, at + 8)) else {
                return e(libc::EFAULT);
            };
            ranges.push(DmaRange { offset, len });
        }
        // validate_dmabuf_input()
        let mask = FAKE_PAGE_SIZE - 1;
        let mut length: u64 = 0;
        for r in &ranges {
            if r.len == 0 || r.offset & mask != 0 || r.len & mask != 0 {
                return e(libc::EINVAL);
            }
            length = match length.checked_add(r.len) {
                Some(l) => l,
                None => return e(libc::EINVAL),
            };
        }
        if length & DMA_IOVA_USE_SWIOTLB != 0 {
            return e(libc::EINVAL);
        }
        // get_dmabuf_phys(): provider, then vfio_pci_core_fill_phys_vec()
        let bar = match self.bars[region_index as usize] {
            Some(b) if b.p2p_provider => b,
            _ => return e(libc::EINVAL),
        };
        let max_addr = bar.phys_start.wrapping_add(bar.len);
        for r in &ranges {
            if r.len == 0 {
                return e(libc::EINVAL);
            }
            let Some(paddr) = bar.phys_start.checked_add(r.offset) else {
                return e(libc::EOVERFLOW);
            };
            let Some(end) = paddr.checked_add(r.len) else {
                return e(libc::EOVERFLOW);
            };
            if end > max_addr {
                return e(libc::EINVAL);
            }
        }
        // dma_buf_export() + dma_buf_fd(): hand out a real fd.
        let fd = create_memfd("fake-vfio-dmabuf", length)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::ENOMEM)))?;
        if let Ok(mut v) = self.exports.lock() {
            v.push(FakeExport {
                region_index,
                open_flags,
                ranges,
            });
        }
        Ok(fd.into_raw_fd())
    }
}

impl DeviceFeatureIoctl for FakeVfioPci {
    fn device_feature(&self, _device_fd: BorrowedFd<'_>, arg: &mut [u8]) -> Result<i32, Errno> {
        if let Ok(mut c) = self.calls.lock() {
            *c += 1;
        }
        self.handle(arg)
    }
}

/// `/dev/udmabuf` as `UDMABUF_CREATE_LIST` sees it. The memfds named in the
/// items are real; seals are read with the real `fcntl`.
#[derive(Debug)]
pub struct FakeUdmabuf {
    /// `list_limit` module parameter.
    pub list_limit: u32,
    /// `size_limit_mb` module parameter.
    pub size_limit_mb: u64,
}

impl Default for FakeUdmabuf {
    fn default() -> Self {
        FakeUdmabuf {
            list_limit: 1024,
            size_limit_mb: 64,
        }
    }
}

impl UdmabufIoctl for FakeUdmabuf {
    fn create_list(&self, _dev: BorrowedFd<'_>, arg: &mut [u8]) -> Result<i32, Errno> {
        let e = |n| Err(Errno(n));
        // udmabuf_ioctl_create_list()
        let (Some(flags), Some(count)) = (read_u32(arg, 0), read_u32(arg, 4)) else {
            return e(libc::EFAULT);
        };
        if count > self.list_limit {
            return e(libc::EINVAL);
        }
        let mut items = Vec::new();
        for i in 0..count as usize {
            let at = UDMABUF_LIST_HDR_LEN + i * UDMABUF_ITEM_LEN;
            let (Some(memfd), Some(offset), Some(size)) = (
                read_u32(arg, at),
                read_u64(arg, at + 8),
                read_u64(arg, at + 16),
            ) else {
                return e(libc::EFAULT);
            };
            items.push((memfd as i32, offset, size));
        }
        // udmabuf_create(): alignment and size limit over all items first
        let mask = FAKE_PAGE_SIZE - 1;
        let pglimit = (self.size_limit_mb * 1024 * 1024) / FAKE_PAGE_SIZE;
        let mut pgcnt: u64 = 0;
        for (_, offset, size) in &items {
            if offset & mask != 0 || size & mask != 0 {
                return e(libc::EINVAL);
            }
            pgcnt = pgcnt.saturating_add(size / FAKE_PAGE_SIZE);
            if pgcnt > pglimit {
                return e(libc::EINVAL);
            }
        }
        if pgcnt == 0 {
            return e(libc::EINVAL);
        }
        // then per item: fget, check_memfd_seals, pin the folios
        let out = create_memfd("fake-udmabuf", pgcnt * FAKE_PAGE_SIZE)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::ENOMEM)))?;
        let mut dst_off: u64 = 0;
        for (memfd, offset, size) in &items {
            // SAFETY: fcntl(F_GET_SEALS) on a caller-supplied fd number; no memory effects.
            let seals = unsafe { libc::fcntl(*memfd, libc::F_GET_SEALS) };
            if seals < 0 {
                // Not an open fd, or not shmem/hugetlbfs.
                return e(libc::EBADFD);
            }
            if seals & SEALS_WANTED != SEALS_WANTED || seals & SEALS_DENIED != 0 {
                return e(libc::EINVAL);
            }
            // SAFETY: fstat into a local, zero-initialised stat buffer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `st` is a valid out-pointer for fstat.
            if unsafe { libc::fstat(*memfd, &mut st) } < 0 {
                return e(libc::EBADFD);
            }
            if offset
                .checked_add(*size)
                .is_none_or(|end| end > st.st_size as u64)
            {
                return e(libc::EINVAL);
            }
            let mut buf = vec![0u8; *size as usize];
            // SAFETY: `buf` is a writable buffer of `size` bytes.
            let n = unsafe {
                libc::pread(
                    *memfd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    *offset as libc::off_t,
                )
            };
            // SAFETY: `buf` is readable for `size` bytes.
            let w = unsafe {
                libc::pwrite(
                    out.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    dst_off as libc::off_t,
                )
            };
            if n < 0 || w < 0 {
                return e(libc::EIO);
            }
            dst_off += size;
        }
        let _cloexec = flags & UDMABUF_FLAGS_CLOEXEC != 0; // the memfd is always CLOEXEC
        Ok(out.into_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    //! The fake itself: each check of the kernel's handler (see the module doc), in order.
    use super::*;
    use crate::vfio_export::encode_dma_buf_request;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    const P: u64 = 4096;
    const GET_DMA_BUF: u32 = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;

    fn call(dev: &FakeVfioPci, arg: &mut [u8]) -> Result<i32, Errno> {
        let f = std::fs::File::open("/dev/null").unwrap();
        let r = dev.device_feature(f.as_fd(), arg);
        if let Ok(fd) = r {
            if fd > 0 {
                // SAFETY: the fake returned a fresh fd that we now own.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        r
    }

    fn req(region: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
        let r: Vec<DmaRange> = ranges
            .iter()
            .map(|&(offset, len)| DmaRange { offset, len })
            .collect();
        encode_dma_buf_request(region, libc::O_RDWR as u32, &r).unwrap()
    }

    fn hdr(argsz: u32, flags: u32) -> Vec<u8> {
        let mut v = argsz.to_ne_bytes().to_vec();
        v.extend_from_slice(&flags.to_ne_bytes());
        v
    }

    fn set_u32(v: &mut [u8], at: usize, x: u32) {
        v[at..at + 4].copy_from_slice(&x.to_ne_bytes());
    }

    const EINVAL: Result<i32, Errno> = Err(Errno(libc::EINVAL));

    #[test]
    fn header_checks() {
        let dev = FakeVfioPci::ivshmem_like();
        assert_eq!(call(&dev, &mut [0u8; 4]), Err(Errno(libc::EFAULT)));
        assert_eq!(call(&dev, &mut hdr(4, GET_DMA_BUF)), EINVAL);
        assert_eq!(call(&dev, &mut hdr(8, GET_DMA_BUF | 1 << 20)), EINVAL);
        assert_eq!(
            call(&dev, &mut hdr(8, GET_DMA_BUF | VFIO_DEVICE_FEATURE_SET)),
            EINVAL
        );
        assert_eq!(
            call(&dev, &mut hdr(8, VFIO_DEVICE_FEATURE_GET | 9)),
            Err(Errno(libc::ENOTTY))
        );
    }

    #[test]
    fn unsupported_driver_is_eopnotsupp_before_any_argument_check() {
        let dev = FakeVfioPci::new(false, [None; 6]);
        assert_eq!(
            call(&dev, &mut hdr(8, GET_DMA_BUF)),
            Err(Errno(libc::EOPNOTSUPP))
        );
        assert_eq!(
            call(&dev, &mut hdr(8, VFIO_DEVICE_FEATURE_PROBE | GET_DMA_BUF)),
            Err(Errno(libc::EOPNOTSUPP))
        );
    }

    #[test]
    fn check_feature_rules() {
        let dev = FakeVfioPci::ivshmem_like();
        let probe_set =
            VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_BUF;
        assert_eq!(call(&dev, &mut hdr(8, probe_set)), EINVAL);
        assert_eq!(
            call(&dev, &mut hdr(8, VFIO_DEVICE_FEATURE_PROBE | GET_DMA_BUF)),
            Ok(0)
        );
        assert_eq!(call(&dev, &mut hdr(8, VFIO_DEVICE_FEATURE_DMA_BUF)), EINVAL);
        // argsz must cover struct vfio_device_feature_dma_buf (16 bytes)
        assert_eq!(call(&dev, &mut hdr(8 + 15, GET_DMA_BUF)), EINVAL);
        let mut short = hdr(8 + 16, GET_DMA_BUF);
        assert_eq!(call(&dev, &mut short), Err(Errno(libc::EFAULT)));
    }

    #[test]
    fn nr_ranges_zero_or_flags_nonzero() {
        let dev = FakeVfioPci::ivshmem_like();
        assert_eq!(call(&dev, &mut req(2, &[])), EINVAL);
        let mut r = req(2, &[(0, P)]);
        set_u32(&mut r, 16, 1);
        assert_eq!(call(&dev, &mut r), EINVAL);
    }

    #[test]
    fn non_bar_region_is_enodev_before_range_checks() {
        let dev = FakeVfioPci::ivshmem_like();
        assert_eq!(call(&dev, &mut req(6, &[(0, P)])), Err(Errno(libc::ENODEV)));
        assert_eq!(call(&dev, &mut req(9, &[(1, 0)])), Err(Errno(libc::ENODEV)));
    }

    #[test]
    fn ranges_missing_from_the_buffer_fault() {
        let dev = FakeVfioPci::ivshmem_like();
        let mut r = req(2, &[(0, P)]);
        set_u32(&mut r, 20, 2); // claims two ranges, carries one
        assert_eq!(call(&dev, &mut r), Err(Errno(libc::EFAULT)));
    }

    #[test]
    fn range_shape_checks() {
        let dev = FakeVfioPci::ivshmem_like();
        assert_eq!(call(&dev, &mut req(2, &[(0, 0)])), EINVAL);
        assert_eq!(call(&dev, &mut req(2, &[(0x800, P)])), EINVAL);
        assert_eq!(call(&dev, &mut req(2, &[(0, 0x1800)])), EINVAL);
        // total length overflow
        assert_eq!(
            call(&dev, &mut req(2, &[(0, u64::MAX - P + 1), (0, 2 * P)])),
            EINVAL
        );
        // DMA_IOVA_USE_SWIOTLB bit in the total
        assert_eq!(call(&dev, &mut req(2, &[(0, 1 << 63)])), EINVAL);
        // alignment is checked before bounds: unaligned and past the BAR is EINVAL, not EOVERFLOW
        assert_eq!(call(&dev, &mut req(2, &[(u64::MAX - 0x7ff, P)])), EINVAL);
    }

    #[test]
    fn provider_and_bounds_checks() {
        let dev = FakeVfioPci::ivshmem_like();
        // BAR0: no P2P provider (too small); BAR1: absent
        assert_eq!(call(&dev, &mut req(0, &[(0, P)])), EINVAL);
        assert_eq!(call(&dev, &mut req(1, &[(0, P)])), EINVAL);
        // past the BAR
        assert_eq!(call(&dev, &mut req(2, &[(0, P), (16 << 20, P)])), EINVAL);
        assert_eq!(call(&dev, &mut req(2, &[((16 << 20) - P, 2 * P)])), EINVAL);
        // arithmetic overflow of start + offset
        assert_eq!(
            call(&dev, &mut req(2, &[(u64::MAX - P + 1, P)])),
            Err(Errno(libc::EOVERFLOW))
        );
        assert!(dev.exports().is_empty());
    }

    #[test]
    fn success_returns_an_fd_and_records_the_request() {
        let dev = FakeVfioPci::ivshmem_like();
        let fd = call(&dev, &mut req(2, &[(4 * P, P), (0, 2 * P)])).unwrap();
        assert!(fd > 0);
        let ex = dev.exports();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].region_index, 2);
        assert_eq!(ex[0].open_flags, libc::O_RDWR as u32);
        assert_eq!(
            ex[0].ranges,
            vec![
                DmaRange {
                    offset: 4 * P,
                    len: P
                },
                DmaRange {
                    offset: 0,
                    len: 2 * P
                }
            ]
        );
        assert_eq!(dev.calls(), 1);
    }

    // ---- udmabuf ----

    fn udm_call(k: &FakeUdmabuf, arg: &mut [u8]) -> Result<i32, Errno> {
        let f = std::fs::File::open("/dev/null").unwrap();
        let r = k.create_list(f.as_fd(), arg);
        if let Ok(fd) = r {
            // SAFETY: the fake returned a fresh fd that we now own.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        r
    }

    fn sealed_memfd(size: u64, seals: i32) -> OwnedFd {
        let fd = create_memfd("t", size).unwrap();
        crate::memfd::add_seals(fd.as_fd(), seals).unwrap();
        fd
    }

    #[test]
    fn udmabuf_fake_follows_the_driver() {
        use crate::udmabuf::encode_create_list;
        let k = FakeUdmabuf {
            list_limit: 4,
            size_limit_mb: 1,
        };
        let good = sealed_memfd(1 << 20, libc::F_SEAL_SHRINK);
        let g = good.as_raw_fd();
        assert_eq!(udm_call(&k, &mut [0u8; 4]), Err(Errno(libc::EFAULT)));
        assert_eq!(
            udm_call(&k, &mut encode_create_list(0, &[(g, 0, P); 5]).unwrap()),
            EINVAL
        );
        assert_eq!(
            udm_call(&k, &mut encode_create_list(0, &[(g, 0x800, P)]).unwrap()),
            EINVAL
        );
        assert_eq!(
            udm_call(&k, &mut encode_create_list(0, &[(g, 0, 0x800)]).unwrap()),
            EINVAL
        );
        assert_eq!(
            udm_call(
                &k,
                &mut encode_create_list(0, &[(g, 0, (1 << 20) + P)]).unwrap()
            ),
            EINVAL
        );
        assert_eq!(
            udm_call(&k, &mut encode_create_list(0, &[(g, 0, 0)]).unwrap()),
            EINVAL
        );
        // limits are checked over all items before any fd is looked at
        assert_eq!(
            udm_call(
                &k,
                &mut encode_create_list(0, &[(-1, 0, P), (g, 1, P)]).unwrap()
            ),
            EINVAL
        );
        assert_eq!(
            udm_call(&k, &mut encode_create_list(0, &[(-1, 0, P)]).unwrap()),
            Err(Errno(libc::EBADFD))
        );
        let unsealed = create_memfd("u", 1 << 20).unwrap();
        let u = unsealed.as_raw_fd();
        assert_eq!(
            udm_call(&k, &mut encode_create_list(0, &[(u, 0, P)]).unwrap()),
            EINVAL
        );
        let write_sealed = sealed_memfd(1 << 20, libc::F_SEAL_SHRINK | libc::F_SEAL_WRITE);
        let w = write_sealed.as_raw_fd();
        assert_eq!(
            udm_call(&k, &mut encode_create_list(0, &[(w, 0, P)]).unwrap()),
            EINVAL
        );
        assert!(udm_call(
            &k,
            &mut encode_create_list(UDMABUF_FLAGS_CLOEXEC, &[(g, P, P), (g, 0, P)]).unwrap()
        )
        .is_ok());
    }
}
