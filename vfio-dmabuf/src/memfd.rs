//! Small memfd helpers (guest RAM backing, tests and fakes).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{DmaBufError, Errno, KernelOp, Result};

/// Creates a sealable memfd of `size` bytes.
pub fn create_memfd(name: &str, size: u64) -> std::io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the call.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let f = std::fs::File::from(fd);
    f.set_len(size)?;
    Ok(OwnedFd::from(f))
}

/// Adds seals (`F_SEAL_*`) to a memfd.
pub fn add_seals(fd: BorrowedFd<'_>, seals: i32) -> std::io::Result<()> {
    // SAFETY: fcntl(F_ADD_SEALS) on a borrowed, open fd has no memory effects.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a memfd's seals (`fcntl(F_GET_SEALS)`).
pub fn get_seals(fd: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: fcntl(F_GET_SEALS) on a borrowed, open fd has no memory effects.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        return Err(DmaBufError::Kernel {
            op: KernelOp::GetSeals,
            errno: Errno::last(),
        });
    }
    Ok(r)
}
