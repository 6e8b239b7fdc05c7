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

    /// Like [`HostMapping::from_fd`], but places the mapping at a host address aligned to
    /// `align` (a power of two): with the guest address equally aligned, KVM can map the BAR
    /// with 2 MiB pages instead of 4 KiB ones. Falls back to an unaligned mapping.
    pub fn from_fd_aligned(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: u64,
        align: u64,
    ) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let page = 4096u64;
        if !align.is_power_of_two() || align <= page {
            return Self::from_fd(fd, offset, len);
        }
        let (Ok(ulen), Ok(off), Some(span)) = (
            usize::try_from(len),
            libc::off_t::try_from(offset),
            len.checked_add(align).and_then(|s| usize::try_from(s).ok()),
        ) else {
            return Self::from_fd(fd, offset, len);
        };
        // Reserve len + align of address space, then map the device over an aligned part of it.
        let reserved = Self::reserve(span)?;
        let base = reserved.addr as u64;
        let aligned = base.div_ceil(align) * align;
        // SAFETY: [aligned, aligned + len) lies inside the reservation this function owns
        // (aligned - base < align, span = len + align), so MAP_FIXED replaces only our own
        // PROT_NONE pages; the result is checked below.
        let addr = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                ulen,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                off,
            )
        };
        if addr == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            drop(reserved);
            log::debug!("vfio: aligned mmap failed ({e}), mapping unaligned");
            return Self::from_fd(fd, offset, len);
        }
        // Give back the unused head and tail of the reservation; the device mapping stays.
        let head = (aligned - base) as usize;
        let tail_start = aligned + len;
        let tail = (base + span as u64 - tail_start) as usize;
        std::mem::forget(reserved);
        if head > 0 {
            // SAFETY: [base, aligned) is the unused head of our own reservation.
            unsafe { libc::munmap(base as *mut libc::c_void, head) };
        }
        if tail > 0 {
            // SAFETY: [aligned + len, base + span) is the unused tail of our own reservation.
            unsafe { libc::munmap(tail_start as *mut libc::c_void, tail) };
        }
        Ok(Self { addr, len: ulen })
    }

    /// Reserves `len` bytes of address space (PROT_NONE, not backed).
    fn reserve(len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh inaccessible anonymous mapping chosen by the kernel; checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn aligned_mapping_of_a_file() {
        let path = std::env::temp_dir().join(format!("host-mapping-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(0x40_0000).unwrap();
        let m = HostMapping::from_fd_aligned(file.as_fd(), 0x1000, 0x20_0000, 0x20_0000).unwrap();
        assert_eq!(m.host_addr() % 0x20_0000, 0, "2 MiB aligned");
        assert_eq!(m.len(), 0x20_0000);
        // It maps the file at the offset asked for.
        let p = m.host_addr() as *mut u8;
        // SAFETY: p points into the live 2 MiB mapping `m`.
        unsafe { p.write_volatile(0x5a) };
        drop(m);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data[0x1000], 0x5a);
        // Small alignments fall back to a plain mapping.
        let m = HostMapping::from_fd_aligned(file.as_fd(), 0, 0x1000, 0x1000).unwrap();
        assert_eq!(m.len(), 0x1000);
        drop(m);
        let _ = std::fs::remove_file(&path);
    }
}
