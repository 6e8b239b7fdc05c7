//! An owned `mmap` of part of a VFIO device region (or anonymous memory in tests), unmapped
//! on drop.

use std::os::fd::BorrowedFd;

/// A host mapping owned by the VFIO device; `munmap` on drop.
#[derive(Debug)]
pub struct HostMapping {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it between threads does not
// change what the address refers to, and this type never hands out references into it.
unsafe impl Send for HostMapping {}
// SAFETY: shared access only reads the address and length.
unsafe impl Sync for HostMapping {}

impl HostMapping {
    /// Maps `len` bytes of `fd` at file offset `offset`, shared, read/write.
    pub fn from_fd(fd: BorrowedFd<'_>, offset: u64, len: u64) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let len =
            usize::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let off = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED), so no existing memory is
        // affected; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }

    /// Maps `len` bytes of anonymous memory (for fakes in tests).
    pub fn anonymous(len: u64) -> std::io::Result<Self> {
        let len =
            usize::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh anonymous mapping chosen by the kernel; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { addr, len })
    }

    /// Host virtual address of the mapping.
    pub fn host_addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// True for an empty mapping (never produced).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: addr/len describe a mapping this value created and still owns; nothing else
        // refers to it once its KVM slots are removed (the owner removes them first).
        let ret = unsafe { libc::munmap(self.addr, self.len) };
        if ret != 0 {
            log::warn!(
                "vfio: munmap of {:#x} ({} bytes) failed: {}",
                self.addr as u64,
                self.len,
                std::io::Error::last_os_error()
            );
        }
    }
}
