//! x86 port I/O from user space: a window of ports opened with `ioperm(2)` and accessed with
//! `in`/`out` instructions of a fixed width (a device register that only answers 32-bit accesses
//! must not be read byte by byte, as `/dev/port` would).
//!
//! Every access is a real `in`/`out` instruction: under a VMM it exits to the VMM, which is the
//! point (a passed-through device's I/O BAR cannot be mapped, it is trapped and forwarded).

use std::arch::asm;

use crate::error::{Error, Result};

/// Ports `base..base + len`, accessible to this process until dropped.
///
/// Offsets are checked: an access past the end, or misaligned for its width, panics.
#[derive(Debug)]
pub struct PortWindow {
    base: u16,
    len: u16,
}

impl PortWindow {
    /// Grants this process access to `len` ports from `base` (`ioperm`, needs CAP_SYS_RAWIO).
    pub fn open(base: u64, len: u64) -> Result<Self> {
        let (Ok(b), Ok(l)) = (u16::try_from(base), u16::try_from(len)) else {
            return Err(Error::Unsupported(format!(
                "ports {base:#x}+{len:#x} are not 16-bit port numbers"
            )));
        };
        if l == 0 || u32::from(b) + u32::from(l) > 0x1_0000 {
            return Err(Error::Unsupported(format!(
                "ports {base:#x}+{len:#x} do not fit in the 64 KiB port space"
            )));
        }
        // SAFETY: ioperm only changes this process's I/O permission bitmap; no memory is touched.
        let rc = unsafe { libc::ioperm(libc::c_ulong::from(b), libc::c_ulong::from(l), 1) };
        if rc != 0 {
            return Err(Error::last_os(format!("ioperm({base:#x}, {len:#x}, 1)")));
        }
        Ok(PortWindow { base: b, len: l })
    }

    /// First port.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// Number of ports.
    pub fn len(&self) -> u16 {
        self.len
    }

    /// Always false (an empty window cannot be opened).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn port(&self, off: u16, width: u16) -> u16 {
        assert!(
            off.checked_add(width).is_some_and(|e| e <= self.len) && off.is_multiple_of(width),
            "port access of {width} bytes at +{off:#x} outside a {:#x}-port window or misaligned",
            self.len
        );
        self.base + off
    }

    /// 32-bit `in` from port `base + off`.
    pub fn read_u32(&self, off: u16) -> u32 {
        let port = self.port(off, 4);
        let v: u32;
        // SAFETY: `in` reads a device register into eax; the port lies in the window ioperm
        // granted (checked in `port`), so it cannot fault, and no memory is accessed.
        unsafe {
            asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
        };
        v
    }

    /// 16-bit `in` from port `base + off`.
    pub fn read_u16(&self, off: u16) -> u16 {
        let port = self.port(off, 2);
        let v: u16;
        // SAFETY: as in read_u32, 16 bits wide.
        unsafe {
            asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags))
        };
        v
    }

    /// 32-bit `out` of `v` to port `base + off`.
    pub fn write_u32(&self, off: u16, v: u32) {
        let port = self.port(off, 4);
        // SAFETY: `out` writes eax to a device register; the port lies in the window ioperm
        // granted (checked in `port`), so it cannot fault, and no memory is accessed.
        unsafe {
            asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
        };
    }
}

impl Drop for PortWindow {
    fn drop(&mut self) {
        // SAFETY: as in open; revokes the access granted there.
        unsafe {
            libc::ioperm(
                libc::c_ulong::from(self.base),
                libc::c_ulong::from(self.len),
                0,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_outside_the_port_space_are_refused_before_ioperm() {
        assert!(PortWindow::open(0x1_0000, 4).is_err());
        assert!(PortWindow::open(0xfff0, 0x20).is_err());
        assert!(PortWindow::open(0x1000, 0).is_err());
    }
}
