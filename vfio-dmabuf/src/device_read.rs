//! Reads of region bytes through the VFIO device fd (`pread` at
//! `region fd offset + offset`), the fault-free alternative to a
//! [`crate::CpuMapping`].
//!
//! A guest that owns a passthrough device can turn off its memory decoding
//! (PCI command register) at any time; vfio-pci then zaps the BAR mmaps and a
//! host access through a [`crate::CpuMapping`] of the BAR gets `SIGBUS`. A
//! `pread` on the device fd instead fails with `EIO`, which the caller can
//! report. Use these reads when the guest may race the host reader.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::{DmaBufError, Errno, KernelOp, Result};
use crate::registry::{DeviceId, DeviceRegistry};
use crate::translate::Translation;

fn pread_exact(fd: BorrowedFd<'_>, mut file_offset: u64, mut dst: &mut [u8]) -> Result<()> {
    while !dst.is_empty() {
        let off = libc::off_t::try_from(file_offset).map_err(|_| DmaBufError::Kernel {
            op: KernelOp::DeviceRead,
            errno: Errno(libc::EOVERFLOW),
        })?;
        // SAFETY: `dst` is a live, writable buffer of `dst.len()` bytes; the fd
        // is borrowed for the call.
        let n = unsafe { libc::pread(fd.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len(), off) };
        if n < 0 {
            let errno = Errno::last();
            if errno.0 == libc::EINTR {
                continue;
            }
            return Err(DmaBufError::Kernel {
                op: KernelOp::DeviceRead,
                errno,
            });
        }
        if n == 0 {
            return Err(DmaBufError::Kernel {
                op: KernelOp::DeviceRead,
                errno: Errno(libc::EIO),
            });
        }
        let n = n as usize; // 0 < n <= dst.len()
        file_offset += n as u64;
        dst = &mut dst[n..];
    }
    Ok(())
}

impl DeviceRegistry {
    /// Reads `dst.len()` bytes at `offset` of region `index` of a device
    /// through its fd. Fails with `Kernel { DeviceRead, EIO }` (not `SIGBUS`)
    /// if the device's memory decoding is off.
    pub fn read_region(
        &self,
        device: DeviceId,
        index: u32,
        offset: u64,
        dst: &mut [u8],
    ) -> Result<()> {
        let r = self
            .region(device, index)
            .ok_or(DmaBufError::UnknownRegion { device, index })?;
        if !r.decoding {
            return Err(DmaBufError::NotDecoding { device, index });
        }
        let len = dst.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > r.size) {
            return Err(DmaBufError::OutOfRange {
                offset,
                len,
                size: r.size,
            });
        }
        let fd = self
            .device_fd(device)
            .ok_or(DmaBufError::UnknownDevice(device))?;
        pread_exact(fd, r.fd_offset + offset, dst)
    }

    /// Reads bytes `[blob_offset, blob_offset + dst.len())` of a translated
    /// blob (bytes in entry order, as in its dma-buf) through the device fd.
    pub fn read_blob(&self, t: &Translation, blob_offset: u64, dst: &mut [u8]) -> Result<()> {
        let len = dst.len() as u64;
        if blob_offset
            .checked_add(len)
            .is_none_or(|end| end > t.total_len)
        {
            return Err(DmaBufError::OutOfRange {
                offset: blob_offset,
                len,
                size: t.total_len,
            });
        }
        let mut skip = blob_offset;
        let mut out = &mut dst[..];
        for r in &t.ranges {
            if out.is_empty() {
                break;
            }
            if skip >= r.len {
                skip -= r.len;
                continue;
            }
            let take = (r.len - skip).min(out.len() as u64) as usize;
            let (head, rest) = out.split_at_mut(take);
            self.read_region(t.device, t.region_index, r.offset + skip, head)?;
            out = rest;
            skip = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd::create_memfd;
    use crate::region::RegionInfo;
    use crate::translate::BlobEntry;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    const P: u64 = 4096;

    fn setup() -> (DeviceRegistry, DeviceId) {
        // A memfd stands in for the device fd; region 2 at fd offset 8 pages.
        let fd = create_memfd("dev", 24 * P).unwrap();
        let f = std::fs::File::from(fd.try_clone().unwrap());
        for i in 0..24u64 {
            f.write_all_at(&vec![i as u8; P as usize], i * P).unwrap();
        }
        let mut reg = DeviceRegistry::with_limits(P, 64);
        let id = reg.register_device("dev", fd.as_fd()).unwrap();
        reg.set_region(id, RegionInfo::new(2, 0x8000_0000, 16 * P, 8 * P, 7))
            .unwrap();
        (reg, id)
    }

    #[test]
    fn read_region_uses_the_region_fd_offset_and_checks_bounds() {
        let (reg, id) = setup();
        let mut b = [0u8; 3];
        reg.read_region(id, 2, 2 * P - 1, &mut b).unwrap();
        assert_eq!(b, [9, 10, 10]);
        assert_eq!(
            reg.read_region(id, 2, 16 * P - 1, &mut b).unwrap_err(),
            DmaBufError::OutOfRange {
                offset: 16 * P - 1,
                len: 3,
                size: 16 * P
            }
        );
        assert_eq!(
            reg.read_region(id, 0, 0, &mut b).unwrap_err(),
            DmaBufError::UnknownRegion {
                device: id,
                index: 0
            }
        );
    }

    #[test]
    fn read_blob_follows_entry_order_across_ranges() {
        let (reg, _) = setup();
        let t = reg
            .translate(&[
                BlobEntry::new(0x8000_0000 + 5 * P, P),
                BlobEntry::new(0x8000_0000 + P, 2 * P),
            ])
            .unwrap();
        let mut all = vec![0u8; 3 * P as usize];
        reg.read_blob(&t, 0, &mut all).unwrap();
        assert_eq!([all[0], all[P as usize], all[2 * P as usize]], [13, 9, 10]);
        let mut b = [0u8; 2];
        reg.read_blob(&t, P - 1, &mut b).unwrap();
        assert_eq!(b, [13, 9]);
        let err = reg.read_blob(&t, 3 * P - 1, &mut b).unwrap_err();
        assert!(matches!(err, DmaBufError::OutOfRange { .. }));
        assert!(!err.is_guest_fault());
    }

    #[test]
    fn read_errors_keep_errno() {
        // A directory fd: pread fails with EISDIR, reported as a host fault.
        let dir = std::fs::File::open("/").unwrap();
        let mut reg = DeviceRegistry::with_limits(P, 64);
        let id = reg.register_device("dir", dir.as_fd()).unwrap();
        reg.set_region(id, RegionInfo::new(2, 0x8000_0000, P, 0, 7))
            .unwrap();
        let err = reg.read_region(id, 2, 0, &mut [0u8; 4]).unwrap_err();
        assert_eq!(
            err,
            DmaBufError::Kernel {
                op: KernelOp::DeviceRead,
                errno: Errno(libc::EISDIR)
            }
        );
        assert!(!err.is_guest_fault());
    }
}
