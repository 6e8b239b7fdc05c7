//! `VFIO_DEVICE_FEATURE(GET | DMA_BUF)` issued by us on the device fd, so that
//! both group/container and cdev devices work.
//!
//! The ioctl goes through [`DeviceFeatureIoctl`] so unit tests can use
//! [`crate::fake_kernel::FakeVfioPci`], which follows the kernel's checks.

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use vfio_bindings::bindings::vfio::{
    vfio_device_feature, vfio_device_feature_dma_buf, vfio_region_dma_range,
    VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE,
};

use crate::error::{DmaBufError, Errno, KernelOp, Result};
use crate::region::PCI_NUM_BARS;
use crate::registry::{DeviceId, DeviceRegistry};
use crate::translate::{DmaRange, Translation};

/// `VFIO_DEVICE_FEATURE = _IO(';', 100 + 17)`.
pub const VFIO_DEVICE_FEATURE: libc::c_ulong = (b';' as libc::c_ulong) << 8 | (100 + 17);

/// Size of `struct vfio_device_feature` (argsz, flags).
pub const FEATURE_HDR_LEN: usize = size_of::<vfio_device_feature>();
/// Size of `struct vfio_device_feature_dma_buf` without its ranges.
pub const DMA_BUF_HDR_LEN: usize = size_of::<vfio_device_feature_dma_buf>();
/// Size of one `struct vfio_region_dma_range`.
pub const DMA_RANGE_LEN: usize = size_of::<vfio_region_dma_range>();

/// The `VFIO_DEVICE_FEATURE` ioctl on a device fd.
pub trait DeviceFeatureIoctl: Send + Sync {
    /// Issues the ioctl with `arg` as its argument (a `struct
    /// vfio_device_feature` followed by its payload, exactly the bytes the
    /// kernel reads). Returns the ioctl's non-negative result (a new fd for
    /// `GET | DMA_BUF`, 0 for `PROBE`) or the errno.
    fn device_feature(
        &self,
        device_fd: BorrowedFd<'_>,
        arg: &mut [u8],
    ) -> std::result::Result<i32, Errno>;
}

/// The real ioctl.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysDeviceFeature;

impl<T: DeviceFeatureIoctl + ?Sized> DeviceFeatureIoctl for Box<T> {
    fn device_feature(
        &self,
        device_fd: BorrowedFd<'_>,
        arg: &mut [u8],
    ) -> std::result::Result<i32, Errno> {
        (**self).device_feature(device_fd, arg)
    }
}

impl DeviceFeatureIoctl for SysDeviceFeature {
    fn device_feature(
        &self,
        device_fd: BorrowedFd<'_>,
        arg: &mut [u8],
    ) -> std::result::Result<i32, Errno> {
        // The kernel reads `argsz` bytes; never hand it a buffer shorter than
        // the argsz written in it.
        let argsz = read_u32(arg, 0).ok_or(Errno(libc::EINVAL))?;
        if usize::try_from(argsz).map_or(true, |a: usize| a > arg.len()) {
            return Err(Errno(libc::EINVAL));
        }
        // SAFETY: `arg` is a live, writable buffer of at least `argsz` bytes
        // holding a vfio_device_feature request; the kernel reads (and for GET
        // may write) at most `argsz` bytes of it. The fd is borrowed, so it
        // stays open for the call.
        let ret = unsafe {
            libc::ioctl(
                device_fd.as_raw_fd(),
                VFIO_DEVICE_FEATURE as _,
                arg.as_mut_ptr(),
            )
        };
        if ret < 0 {
            Err(Errno::last())
        } else {
            Ok(ret)
        }
    }
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

#[cfg(any(test, feature = "test-utils"))]
pub(crate) fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// Encodes a `PROBE | GET | DMA_BUF` request (header only: the kernel returns
/// before looking at the payload).
pub fn encode_probe() -> Vec<u8> {
    let mut v = Vec::with_capacity(FEATURE_HDR_LEN);
    v.extend_from_slice(&(FEATURE_HDR_LEN as u32).to_ne_bytes());
    v.extend_from_slice(
        &(VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF)
            .to_ne_bytes(),
    );
    v
}

/// Encodes a `GET | DMA_BUF` request for `ranges` of region `region_index`.
/// Returns `None` if the request would not fit a `u32` argsz.
pub fn encode_dma_buf_request(
    region_index: u32,
    open_flags: u32,
    ranges: &[DmaRange],
) -> Option<Vec<u8>> {
    let nr = u32::try_from(ranges.len()).ok()?;
    let len = ranges
        .len()
        .checked_mul(DMA_RANGE_LEN)?
        .checked_add(FEATURE_HDR_LEN + DMA_BUF_HDR_LEN)?;
    let argsz = u32::try_from(len).ok()?;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&argsz.to_ne_bytes());
    v.extend_from_slice(&(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF).to_ne_bytes());
    v.extend_from_slice(&region_index.to_ne_bytes());
    v.extend_from_slice(&open_flags.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes()); // flags: must be 0
    v.extend_from_slice(&nr.to_ne_bytes());
    for r in ranges {
        v.extend_from_slice(&r.offset.to_ne_bytes());
        v.extend_from_slice(&r.len.to_ne_bytes());
    }
    Some(v)
}

impl DeviceRegistry {
    /// Probes (once, then cached) whether the device exports dma-bufs.
    pub fn probe_dma_buf(&self, id: DeviceId, ioctl: &dyn DeviceFeatureIoctl) -> Result<()> {
        let dev = self
            .devices
            .get(&id)
            .ok_or(DmaBufError::UnknownDevice(id))?;
        let res = dev.probe.get_or_init(|| {
            let mut arg = encode_probe();
            let r = ioctl.device_feature(dev.fd.as_fd(), &mut arg).map(|_| ());
            if let Err(e) = r {
                log::info!(
                    "vfio-dmabuf: device {id} ({}) has no dma-buf export: {e}",
                    dev.name
                );
            }
            r
        });
        res.map_err(|errno| DmaBufError::NotSupported { device: id, errno })
    }

    /// Exports a translated blob as a dma-buf (`open_flags`: `O_RDONLY` or
    /// `O_RDWR`, optionally `| O_CLOEXEC`).
    pub fn export(
        &self,
        t: &Translation,
        open_flags: i32,
        ioctl: &dyn DeviceFeatureIoctl,
    ) -> Result<OwnedFd> {
        if t.region_index >= PCI_NUM_BARS {
            return Err(DmaBufError::NotABar {
                index: t.region_index,
            });
        }
        self.export_ranges(t.device, t.region_index, &t.ranges, open_flags, ioctl)
    }

    /// Sends `ranges` of region `region_index` to the kernel as they are,
    /// without translation checks (after the cached probe). Most callers want
    /// [`DeviceRegistry::translate`] + [`DeviceRegistry::export`]; this entry
    /// exists so the kernel's own checks can be exercised.
    pub fn export_ranges(
        &self,
        id: DeviceId,
        region_index: u32,
        ranges: &[DmaRange],
        open_flags: i32,
        ioctl: &dyn DeviceFeatureIoctl,
    ) -> Result<OwnedFd> {
        self.probe_dma_buf(id, ioctl)?;
        if ranges.len() > self.max_entries {
            return Err(DmaBufError::TooManyEntries {
                count: ranges.len(),
                max: self.max_entries,
            });
        }
        let dev = self
            .devices
            .get(&id)
            .ok_or(DmaBufError::UnknownDevice(id))?;
        let mut arg = encode_dma_buf_request(region_index, open_flags as u32, ranges).ok_or(
            DmaBufError::TooManyEntries {
                count: ranges.len(),
                max: self.max_entries,
            },
        )?;
        match ioctl.device_feature(dev.fd.as_fd(), &mut arg) {
            Ok(fd) if fd >= 0 => {
                // SAFETY: on success VFIO_DEVICE_FEATURE(GET|DMA_BUF) returns a
                // new file descriptor that nobody else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
            Ok(other) => Err(DmaBufError::Kernel {
                op: KernelOp::VfioDmaBufExport,
                errno: Errno(-other),
            }),
            Err(errno) => Err(DmaBufError::Kernel {
                op: KernelOp::VfioDmaBufExport,
                errno,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_uapi() {
        assert_eq!(VFIO_DEVICE_FEATURE, 0x3b75);
        assert_eq!(FEATURE_HDR_LEN, 8);
        assert_eq!(DMA_BUF_HDR_LEN, 16);
        assert_eq!(DMA_RANGE_LEN, 16);
        assert_eq!(
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
            0x1000b
        );
    }

    #[test]
    fn request_layout_matches_the_kernel_structs() {
        let ranges = [
            DmaRange {
                offset: 0x2000,
                len: 0x1000,
            },
            DmaRange {
                offset: 0,
                len: 0x3000,
            },
        ];
        let v =
            encode_dma_buf_request(2, (libc::O_RDWR | libc::O_CLOEXEC) as u32, &ranges).unwrap();
        assert_eq!(v.len(), 8 + 16 + 32);
        assert_eq!(read_u32(&v, 0), Some(56));
        assert_eq!(read_u32(&v, 4), Some(0x1000b));
        assert_eq!(read_u32(&v, 8), Some(2));
        assert_eq!(
            read_u32(&v, 12),
            Some((libc::O_RDWR | libc::O_CLOEXEC) as u32)
        );
        assert_eq!(read_u32(&v, 16), Some(0));
        assert_eq!(read_u32(&v, 20), Some(2));
        assert_eq!(read_u64(&v, 24), Some(0x2000));
        assert_eq!(read_u64(&v, 32), Some(0x1000));
        assert_eq!(read_u64(&v, 40), Some(0));
        assert_eq!(read_u64(&v, 48), Some(0x3000));
        let p = encode_probe();
        assert_eq!(read_u32(&p, 0), Some(8));
        assert_eq!(read_u32(&p, 4), Some(0x4000b | 0x10000));
    }

    use crate::fake_kernel::FakeVfioPci;
    use crate::region::RegionInfo;
    use crate::translate::BlobEntry;

    const P: u64 = 4096;
    const BAR2: u64 = 0x8000_0000;

    fn setup() -> (DeviceRegistry, DeviceId) {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut reg = DeviceRegistry::with_limits(P, 64);
        let a = reg.register_device("ivshmem", f.as_fd()).unwrap();
        reg.set_region(a, RegionInfo::new(2, BAR2, 16 << 20, 2 << 40, 7))
            .unwrap();
        reg.set_region(a, RegionInfo::new(0, 0x9000_0000, 0x100, 0, 7))
            .unwrap();
        reg.set_region(a, RegionInfo::new(7, 0xa000_0000, 0x1000, 7 << 40, 7))
            .unwrap();
        (reg, a)
    }

    fn fd_size(fd: &OwnedFd) -> u64 {
        std::fs::File::from(fd.try_clone().unwrap())
            .metadata()
            .unwrap()
            .len()
    }

    #[test]
    fn export_sends_translated_ranges_and_caches_the_probe() {
        let (reg, a) = setup();
        let fake = FakeVfioPci::ivshmem_like();
        let t = reg
            .translate(&[BlobEntry::new(BAR2 + 8 * P, P), BlobEntry::new(BAR2, 2 * P)])
            .unwrap();
        let fd = reg
            .export(&t, libc::O_RDONLY | libc::O_CLOEXEC, &fake)
            .unwrap();
        assert_eq!(fd_size(&fd), 3 * P);
        let fd2 = reg.export(&t, libc::O_RDWR, &fake).unwrap();
        drop((fd, fd2));
        assert_eq!(fake.calls(), 3, "one probe, two exports");
        let ex = fake.exports();
        assert_eq!(ex[0].ranges, t.ranges);
        assert_eq!(ex[0].open_flags, (libc::O_RDONLY | libc::O_CLOEXEC) as u32);
        assert_eq!(ex[1].open_flags, libc::O_RDWR as u32);
        assert!(reg.probe_dma_buf(a, &fake).is_ok());
        assert_eq!(fake.calls(), 3);
    }

    #[test]
    fn unsupported_device_is_a_host_fault_and_probed_once() {
        let (reg, a) = setup();
        let fake = FakeVfioPci::new(false, [None; 6]);
        let t = reg.translate(&[BlobEntry::new(BAR2, P)]).unwrap();
        for _ in 0..2 {
            let err = reg.export(&t, libc::O_RDWR, &fake).unwrap_err();
            assert_eq!(
                err,
                DmaBufError::NotSupported {
                    device: a,
                    errno: Errno(libc::EOPNOTSUPP)
                }
            );
            assert!(!err.is_guest_fault());
        }
        assert_eq!(fake.calls(), 1);
    }

    #[test]
    fn non_bar_region_is_refused_before_the_ioctl() {
        let (reg, _) = setup();
        let fake = FakeVfioPci::ivshmem_like();
        let t = reg.translate(&[BlobEntry::new(0xa000_0000, P)]).unwrap();
        let err = reg.export(&t, libc::O_RDWR, &fake).unwrap_err();
        assert_eq!(err, DmaBufError::NotABar { index: 7 });
        assert!(err.is_guest_fault());
        assert_eq!(fake.calls(), 0);
    }

    #[test]
    fn kernel_errors_keep_errno_and_classification() {
        let (reg, a) = setup();
        let fake = FakeVfioPci::ivshmem_like();
        let cases: [(u32, Vec<DmaRange>, i32, bool); 5] = [
            (
                2,
                vec![DmaRange {
                    offset: 0x800,
                    len: P,
                }],
                libc::EINVAL,
                true,
            ),
            (
                2,
                vec![DmaRange {
                    offset: 16 << 20,
                    len: P,
                }],
                libc::EINVAL,
                true,
            ),
            (0, vec![DmaRange { offset: 0, len: P }], libc::EINVAL, true),
            (6, vec![DmaRange { offset: 0, len: P }], libc::ENODEV, true),
            (
                2,
                vec![DmaRange {
                    offset: u64::MAX - P + 1,
                    len: P,
                }],
                libc::EOVERFLOW,
                false,
            ),
        ];
        for (region, ranges, errno, guest) in cases {
            let err = reg
                .export_ranges(a, region, &ranges, libc::O_RDWR, &fake)
                .unwrap_err();
            assert_eq!(
                err,
                DmaBufError::Kernel {
                    op: KernelOp::VfioDmaBufExport,
                    errno: Errno(errno)
                }
            );
            assert_eq!(err.is_guest_fault(), guest, "{err}");
        }
        assert_eq!(
            reg.export_ranges(DeviceId(42), 2, &[DmaRange { offset: 0, len: P }], 0, &fake)
                .unwrap_err(),
            DmaBufError::UnknownDevice(DeviceId(42))
        );
    }

    #[test]
    fn sys_ioctl_refuses_short_buffers() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut arg = vec![0xffu8, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            SysDeviceFeature.device_feature(f.as_fd(), &mut arg),
            Err(Errno(libc::EINVAL))
        );
        // Not a VFIO device: the real kernel answers ENOTTY.
        let mut arg = encode_probe();
        assert_eq!(
            SysDeviceFeature.device_feature(f.as_fd(), &mut arg),
            Err(Errno(libc::ENOTTY))
        );
    }
}
