//! The crate's error type and its guest/host classification.

use std::fmt;

use crate::registry::DeviceId;

/// An OS error number, kept as the kernel returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's last OS error.
    pub fn last() -> Self {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (errno {})",
            std::io::Error::from_raw_os_error(self.0),
            self.0
        )
    }
}

/// Which kernel operation returned an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOp {
    /// `VFIO_DEVICE_FEATURE` with `GET | DMA_BUF` (the export itself).
    VfioDmaBufExport,
    /// `VFIO_DEVICE_FEATURE` with `PROBE | GET | DMA_BUF`.
    VfioDmaBufProbe,
    /// `UDMABUF_CREATE_LIST` on `/dev/udmabuf`.
    UdmabufCreateList,
    /// Opening `/dev/udmabuf`.
    UdmabufOpen,
    /// `fcntl(F_GET_SEALS)` on a memfd backing guest RAM.
    GetSeals,
    /// Duplicating a file descriptor.
    Dup,
    /// `pread` of region bytes through the VFIO device fd (`EIO` when the
    /// device's memory decoding is off).
    DeviceRead,
}

impl fmt::Display for KernelOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            KernelOp::VfioDmaBufExport => "VFIO_DEVICE_FEATURE(GET|DMA_BUF)",
            KernelOp::VfioDmaBufProbe => "VFIO_DEVICE_FEATURE(PROBE|GET|DMA_BUF)",
            KernelOp::UdmabufCreateList => "UDMABUF_CREATE_LIST",
            KernelOp::UdmabufOpen => "open(/dev/udmabuf)",
            KernelOp::GetSeals => "fcntl(F_GET_SEALS)",
            KernelOp::Dup => "dup",
            KernelOp::DeviceRead => "pread(VFIO device fd)",
        };
        f.write_str(s)
    }
}

/// Everything that can go wrong between a blob's entries and a dma-buf.
///
/// [`DmaBufError::is_guest_fault`] tells the caller whether the guest asked for
/// something impossible (log it as a guest error and answer the guest with an
/// error response) or whether the host failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmaBufError {
    /// The blob has no entries.
    #[error("the blob has no memory entries")]
    NoEntries,
    /// More entries than the configured bound.
    #[error("the blob has {count} memory entries, more than the limit of {max}")]
    TooManyEntries {
        /// Entries given.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// An entry of length zero.
    #[error("entry {entry}: length is zero")]
    ZeroLength {
        /// Index of the entry in guest order.
        entry: usize,
    },
    /// `addr + len` does not fit in 64 bits.
    #[error("entry {entry}: address {addr:#x} + length {len:#x} overflows")]
    EntryOverflow {
        /// Index of the entry in guest order.
        entry: usize,
        /// Guest-physical address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The entry's start is in no registered region.
    #[error("entry {entry}: guest address {addr:#x} is not in any exportable memory region")]
    NotInRegion {
        /// Index of the entry in guest order.
        entry: usize,
        /// Guest-physical address.
        addr: u64,
    },
    /// The entry lies in another region of the same device than entry 0.
    #[error(
        "entry {entry}: guest address {addr:#x} is in region {found} but entry 0 is in region {expected}; one dma-buf covers one region"
    )]
    DifferentRegion {
        /// Index of the entry in guest order.
        entry: usize,
        /// Guest-physical address.
        addr: u64,
        /// Region index of entry 0.
        expected: u32,
        /// Region index of this entry.
        found: u32,
    },
    /// The entry lies in another device (or in other memory) than entry 0.
    #[error(
        "entry {entry}: guest address {addr:#x} belongs to other memory than entry 0; one dma-buf covers one device region"
    )]
    DifferentDevice {
        /// Index of the entry in guest order.
        entry: usize,
        /// Guest-physical address.
        addr: u64,
    },
    /// The entry starts inside the region but runs past its end.
    #[error(
        "entry {entry}: range {addr:#x}+{len:#x} runs past the end of its region ({region_end:#x})"
    )]
    PastRegionEnd {
        /// Index of the entry in guest order.
        entry: usize,
        /// Guest-physical address.
        addr: u64,
        /// Length.
        len: u64,
        /// Exclusive guest-physical end of the region.
        region_end: u64,
    },
    /// Offset in the region or length is not a multiple of the page size.
    #[error("entry {entry}: region offset {offset:#x} or length {len:#x} is not aligned to the {page_size}-byte page")]
    Unaligned {
        /// Index of the entry in guest order.
        entry: usize,
        /// Offset inside the region.
        offset: u64,
        /// Length.
        len: u64,
        /// Page size.
        page_size: u64,
    },
    /// The region is not a PCI BAR (the kernel only exports BARs 0..=5).
    #[error("region {index} is not a PCI BAR (0..=5); it cannot be exported")]
    NotABar {
        /// Region index.
        index: u32,
    },
    /// After coalescing, more udmabuf items than the kernel's `list_limit`.
    #[error("the blob needs {items} udmabuf items, more than the limit of {max}")]
    TooManyItems {
        /// Items needed.
        items: usize,
        /// Limit.
        max: usize,
    },
    /// The blob is larger than the kernel's udmabuf `size_limit_mb`.
    #[error("the blob is {size} bytes, more than the udmabuf limit of {max}")]
    TooLarge {
        /// Bytes requested.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// The device id is not registered.
    #[error("device {0} is not registered")]
    UnknownDevice(DeviceId),
    /// The region is not registered for that device.
    #[error("region {index} of device {device} is not registered")]
    UnknownRegion {
        /// Device.
        device: DeviceId,
        /// Region index.
        index: u32,
    },
    /// A region-table update was inconsistent (a VMM bug, not a guest one).
    #[error("invalid region table update: {0}")]
    InvalidRegion(String),
    /// The device does not offer VFIO dma-buf export (probe failed).
    #[error("device {device} does not support VFIO dma-buf export: probe returned {errno}")]
    NotSupported {
        /// Device.
        device: DeviceId,
        /// What the probe returned.
        errno: Errno,
    },
    /// The memfd backing guest RAM has seals the udmabuf driver rejects.
    #[error("memfd backing guest RAM at {guest_base:#x} has seals {seals:#x}: udmabuf needs F_SEAL_SHRINK and no F_SEAL_WRITE/F_SEAL_FUTURE_WRITE")]
    BadSeals {
        /// Guest base of the RAM region.
        guest_base: u64,
        /// The seals found.
        seals: i32,
    },
    /// The guest turned the device's decoding of the region off (PCI command register).
    #[error(
        "region {index} of device {device} is not decoded (the guest turned memory decoding off)"
    )]
    NotDecoding {
        /// Device.
        device: DeviceId,
        /// Region index.
        index: u32,
    },
    /// A read asked for bytes outside the region or blob (a caller bug).
    #[error("read of {len} bytes at offset {offset:#x} is outside the {size}-byte span")]
    OutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// Size of the region or blob.
        size: u64,
    },
    /// No exporter of this kind of memory is configured on this host.
    #[error("no {0} exporter is configured")]
    NoExporter(&'static str),
    /// A kernel call failed; the errno is kept.
    #[error("{op} failed: {errno}")]
    Kernel {
        /// Which call.
        op: KernelOp,
        /// What it returned.
        errno: Errno,
    },
}

impl DmaBufError {
    /// True if the guest is to blame: lookup/translation failures, and
    /// `ENODEV`/`EINVAL` from the export ioctls (the kernel rejected the
    /// ranges the guest chose). Everything else is a host fault.
    pub fn is_guest_fault(&self) -> bool {
        match self {
            DmaBufError::NoEntries
            | DmaBufError::TooManyEntries { .. }
            | DmaBufError::ZeroLength { .. }
            | DmaBufError::EntryOverflow { .. }
            | DmaBufError::NotInRegion { .. }
            | DmaBufError::DifferentRegion { .. }
            | DmaBufError::DifferentDevice { .. }
            | DmaBufError::PastRegionEnd { .. }
            | DmaBufError::Unaligned { .. }
            | DmaBufError::NotABar { .. }
            | DmaBufError::TooManyItems { .. }
            | DmaBufError::TooLarge { .. }
            | DmaBufError::NotDecoding { .. } => true,
            DmaBufError::Kernel {
                op: KernelOp::VfioDmaBufExport | KernelOp::UdmabufCreateList,
                errno,
            } => errno.0 == libc::ENODEV || errno.0 == libc::EINVAL,
            DmaBufError::UnknownDevice(_)
            | DmaBufError::UnknownRegion { .. }
            | DmaBufError::InvalidRegion(_)
            | DmaBufError::NotSupported { .. }
            | DmaBufError::BadSeals { .. }
            | DmaBufError::OutOfRange { .. }
            | DmaBufError::NoExporter(_)
            | DmaBufError::Kernel { .. } => false,
        }
    }

    /// The errno, if a kernel call produced this error.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            DmaBufError::Kernel { errno, .. } | DmaBufError::NotSupported { errno, .. } => {
                Some(*errno)
            }
            _ => None,
        }
    }

    /// The index (guest order) of the entry that broke a rule, if any.
    pub fn entry(&self) -> Option<usize> {
        match self {
            DmaBufError::ZeroLength { entry }
            | DmaBufError::EntryOverflow { entry, .. }
            | DmaBufError::NotInRegion { entry, .. }
            | DmaBufError::DifferentRegion { entry, .. }
            | DmaBufError::DifferentDevice { entry, .. }
            | DmaBufError::PastRegionEnd { entry, .. }
            | DmaBufError::Unaligned { entry, .. } => Some(*entry),
            _ => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DmaBufError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_einval_enodev_from_export_are_guest_faults() {
        for errno in [libc::EINVAL, libc::ENODEV] {
            for op in [KernelOp::VfioDmaBufExport, KernelOp::UdmabufCreateList] {
                let e = DmaBufError::Kernel {
                    op,
                    errno: Errno(errno),
                };
                assert!(e.is_guest_fault(), "{e}");
                assert_eq!(e.errno(), Some(Errno(errno)));
            }
        }
    }

    #[test]
    fn other_errnos_and_ops_are_host_faults() {
        for errno in [
            libc::EOPNOTSUPP,
            libc::EOVERFLOW,
            libc::ENOMEM,
            libc::EFAULT,
            libc::EBADFD,
        ] {
            let e = DmaBufError::Kernel {
                op: KernelOp::VfioDmaBufExport,
                errno: Errno(errno),
            };
            assert!(!e.is_guest_fault(), "{e}");
        }
        let e = DmaBufError::Kernel {
            op: KernelOp::DeviceRead,
            errno: Errno(libc::EINVAL),
        };
        assert!(!e.is_guest_fault());
        let e = DmaBufError::NotSupported {
            device: DeviceId(0),
            errno: Errno(libc::ENOTTY),
        };
        assert!(!e.is_guest_fault());
        assert!(!DmaBufError::BadSeals {
            guest_base: 0,
            seals: 0
        }
        .is_guest_fault());
    }

    #[test]
    fn translation_errors_are_guest_faults_and_name_the_entry() {
        let e = DmaBufError::PastRegionEnd {
            entry: 3,
            addr: 0x1000,
            len: 0x1000,
            region_end: 0x1800,
        };
        assert!(e.is_guest_fault());
        assert_eq!(e.entry(), Some(3));
        assert!(e.to_string().contains("entry 3"));
        assert!(DmaBufError::NoEntries.is_guest_fault());
        assert_eq!(DmaBufError::NoEntries.entry(), None);
    }

    #[test]
    fn errno_display_names_the_error() {
        let s = Errno(libc::EINVAL).to_string();
        assert!(s.contains("errno 22"), "{s}");
    }
}
