//! An owned `mmap` accessed with bounds-checked volatile loads and stores: the one
//! piece under both locked RAM pages (`pagemap::LockedPages`) and device BARs
//! (`pci::MmioRegion`).

use std::os::fd::RawFd;

use crate::error::{Error, Result};

/// A live mapping of `len` bytes at `ptr`, unmapped on drop.
///
/// Offsets are checked: an access past the end, or misaligned for its width, panics
/// (offsets are computed by the programs, or checked against the length before use).
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` (or anonymous memory when `fd` is -1) from offset 0,
    /// read-write, with the given `MAP_*` flags. `what` names the mapping in errors.
    pub(crate) fn new(len: usize, flags: libc::c_int, fd: RawFd, what: &str) -> Result<Self> {
        Self::new_at(len, flags, fd, 0, what)
    }

    /// As [`Mapping::new`], from byte `offset` of `fd` (page-aligned, e.g. a VFIO region's
    /// offset in the device fd).
    pub(crate) fn new_at(
        len: usize,
        flags: libc::c_int,
        fd: RawFd,
        offset: u64,
        what: &str,
    ) -> Result<Self> {
        if len == 0 {
            return Err(Error::Unsupported(format!("{what}: zero-length mapping")));
        }
        // SAFETY: a new mapping chosen by the kernel (addr NULL); no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os(format!(
                "mmap {what} ({len:#x} bytes at offset {offset:#x})"
            )));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Maps `len` bytes of `fd` from offset 0, shared and read-write (e.g. a udmabuf).
    pub fn shared(fd: std::os::fd::BorrowedFd<'_>, len: usize, what: &str) -> Result<Self> {
        use std::os::fd::AsRawFd;
        Self::new(len, libc::MAP_SHARED, fd.as_raw_fd(), what)
    }

    /// Maps `len` bytes of private anonymous memory (no page present until first touched).
    pub fn anonymous(len: usize, what: &str) -> Result<Self> {
        Self::new(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, what)
    }

    /// Gives the pages back (`MADV_DONTNEED`): private anonymous memory reads as zeros again and
    /// its next touch is a page fault.
    pub fn discard(&self) -> Result<()> {
        // SAFETY: the range is exactly our live mapping; dropping its pages changes no Rust
        // object (every access goes through the volatile accessors).
        let rc = unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(Error::last_os("madvise MADV_DONTNEED"));
        }
        Ok(())
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (mappings are never empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Virtual address of byte `off`.
    pub fn va(&self, off: usize) -> usize {
        assert!(
            off < self.len,
            "offset {off:#x} outside {:#x} bytes",
            self.len
        );
        self.ptr as usize + off
    }

    fn at<T>(&self, off: usize) -> *mut T {
        let w = std::mem::size_of::<T>();
        assert!(
            off.checked_add(w).is_some_and(|e| e <= self.len) && off.is_multiple_of(w),
            "access of {w} bytes at {off:#x} outside a {:#x}-byte mapping or misaligned",
            self.len
        );
        // The pointer stays inside the mapping (checked above).
        self.ptr.wrapping_add(off).cast()
    }

    /// Volatile 8-bit read (the memory may be written by a device).
    pub fn read_u8(&self, off: usize) -> u8 {
        // SAFETY: `at` checked bounds and alignment inside our live mapping.
        unsafe { self.at::<u8>(off).read_volatile() }
    }
    /// Volatile 16-bit read.
    pub fn read_u16(&self, off: usize) -> u16 {
        // SAFETY: as in read_u8.
        unsafe { self.at::<u16>(off).read_volatile() }
    }
    /// Volatile 32-bit read.
    pub fn read_u32(&self, off: usize) -> u32 {
        // SAFETY: as in read_u8.
        unsafe { self.at::<u32>(off).read_volatile() }
    }
    /// Volatile 8-bit write (the memory may be read by a device).
    pub fn write_u8(&self, off: usize, v: u8) {
        // SAFETY: as in read_u8; the mapping is writable.
        unsafe { self.at::<u8>(off).write_volatile(v) }
    }
    /// Volatile 16-bit write.
    pub fn write_u16(&self, off: usize, v: u16) {
        // SAFETY: as in write_u8.
        unsafe { self.at::<u16>(off).write_volatile(v) }
    }
    /// Volatile 32-bit write.
    pub fn write_u32(&self, off: usize, v: u32) {
        // SAFETY: as in write_u8.
        unsafe { self.at::<u32>(off).write_volatile(v) }
    }
    /// A 64-bit register written as two 32-bit halves, low first (allowed for virtio-pci common config).
    pub fn write_u64_split(&self, off: usize, v: u64) {
        self.write_u32(off, v as u32);
        self.write_u32(off + 4, (v >> 32) as u32);
    }
    /// Copies `data` to byte `off` (volatile, byte by byte).
    pub fn write_bytes(&self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.write_u8(off + i, *b);
        }
    }
    /// Copies `out.len()` bytes from byte `off` (volatile, byte by byte).
    pub fn read_bytes(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read_u8(off + i);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_round_trip_and_bounds_are_checked() {
        let m = Mapping::new(4096, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, "test").unwrap();
        m.write_u64_split(8, 0x1122_3344_5566_7788);
        assert_eq!(m.read_u32(8), 0x5566_7788);
        assert_eq!(m.read_u32(12), 0x1122_3344);
        m.write_bytes(100, b"abc");
        let mut out = [0u8; 3];
        m.read_bytes(100, &mut out);
        assert_eq!(&out, b"abc");
        assert!(
            std::panic::catch_unwind(|| m.read_u32(4094)).is_err(),
            "past the end"
        );
        assert!(
            std::panic::catch_unwind(|| m.read_u16(1)).is_err(),
            "misaligned"
        );
        assert!(Mapping::new(0, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, "empty").is_err());
    }

    #[test]
    fn discarded_anonymous_memory_reads_as_zeros_again() {
        let m = Mapping::anonymous(8192, "test").unwrap();
        m.write_u32(4096, 0xdead_beef);
        assert_eq!(m.read_u32(4096), 0xdead_beef);
        m.discard().unwrap();
        assert_eq!(m.read_u32(4096), 0);
    }
}
