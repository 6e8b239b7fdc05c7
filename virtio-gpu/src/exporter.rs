//! The boundary between the device and whatever turns a blob's memory into a host dma-buf
//! (the `vfio-dmabuf` crate: a VFIO dma-buf for passthrough BARs, a udmabuf for guest RAM).
//!
//! The device classifies a blob's entries itself (guest RAM through `vm-memory`, passthrough
//! regions through [`BlobBackingExporter::locate`]) and asks for one export per blob.

use std::fmt;
use std::os::fd::OwnedFd;

use crate::protocol::MemEntry;

/// Where a passthrough region lives: which device, which VFIO region (BAR index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PassthroughRegion {
    /// Exporter-defined id of the passthrough device.
    pub device: u32,
    /// VFIO region index (BAR 0..5).
    pub region: u32,
}

/// Which kind of dma-buf to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// All entries lie in guest RAM: `UDMABUF_CREATE_LIST` over the memfd behind RAM.
    Udmabuf,
    /// All entries lie in one region of one passthrough device: `VFIO_DEVICE_FEATURE_DMA_BUF`.
    Vfio(PassthroughRegion),
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportKind::Udmabuf => write!(f, "udmabuf"),
            ExportKind::Vfio(r) => write!(f, "vfio(device {}, region {})", r.device, r.region),
        }
    }
}

/// Error reading pixels through a CPU mapping or guest memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pixel read of {len} bytes at offset {offset} failed: {reason}")]
pub struct PixelReadError {
    /// Byte offset in the buffer.
    pub offset: u64,
    /// Bytes asked for.
    pub len: usize,
    /// Why.
    pub reason: String,
}

/// Readable bytes of a scanout buffer: a host copy, a CPU mapping of a dma-buf, or guest
/// memory read range by range. Display backends read rows through it, never the whole guest.
pub trait PixelSource {
    /// Size of the buffer in bytes.
    fn size(&self) -> u64;
    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), PixelReadError>;
}

impl PixelSource for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), PixelReadError> {
        let err = |reason: &str| PixelReadError {
            offset,
            len: buf.len(),
            reason: reason.to_string(),
        };
        let start = usize::try_from(offset).map_err(|_| err("offset too large"))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| err("overflow"))?;
        let src = self.get(start..end).ok_or_else(|| err("past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl PixelSource for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), PixelReadError> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A blob exported as a host dma-buf. Its pixels are read for CPU consumers through the
/// blob's backing (guest memory, and [`BlobBackingExporter::read_passthrough`] for BAR
/// entries), never through a host mapping of the dma-buf.
#[derive(Debug)]
pub struct ExportedBlob {
    /// What was made.
    pub kind: ExportKind,
    /// The dma-buf; closed (released) on drop, i.e. on UNREF or DETACH_BACKING, or when it
    /// goes stale.
    pub dmabuf: OwnedFd,
    /// Exporter-defined version of the memory behind the dma-buf at export time, checked with
    /// [`BlobBackingExporter::is_current`].
    pub generation: u64,
}

/// Why an export did not happen, classified as the device needs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The host cannot export this kind of memory (no udmabuf, RAM not memfd-backed, no
    /// DMA_BUF feature on the device): the blob stays usable through the CPU path.
    #[error("export not supported: {0}")]
    Unsupported(String),
    /// The guest's entries break a rule (alignment, bounds, region): error response.
    #[error("guest fault: {0}")]
    Guest(String),
    /// The host failed (out of fds, ioctl error not caused by the guest): host error log;
    /// the blob stays usable through the CPU path.
    #[error("host fault: {0}")]
    Host(String),
}

/// Turns a blob's memory into a dma-buf and gives CPU access to passthrough memory.
pub trait BlobBackingExporter: Send {
    /// The passthrough region that wholly contains `[addr, addr + len)`, if any.
    fn locate(&self, addr: u64, len: u64) -> Option<PassthroughRegion>;

    /// Exports `entries` (guest-physical, in guest order) as one dma-buf of kind `kind`.
    fn export(&self, kind: ExportKind, entries: &[MemEntry]) -> Result<ExportedBlob, ExportError>;

    /// Reads passthrough memory at guest-physical `addr` (CPU access to BAR entries). Must
    /// never fault, even if the guest turned the device's memory decoding off: read through
    /// the device (e.g. `pread` on the VFIO device fd), not through a mapping.
    fn read_passthrough(&self, addr: u64, buf: &mut [u8]) -> Result<(), PixelReadError>;

    /// Whether `blob` still shows the memory it was made from. A VFIO dma-buf goes stale
    /// when the guest moves the BAR, turns memory decoding off (the kernel revokes it) or
    /// resets the device; the device then drops it and exports again when it can.
    fn is_current(&self, _blob: &ExportedBlob) -> bool {
        true
    }
}

/// The exporter used when the VMM has none: no passthrough regions, no udmabuf. Every blob
/// takes the CPU path.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoExporter;

impl BlobBackingExporter for NoExporter {
    fn locate(&self, _addr: u64, _len: u64) -> Option<PassthroughRegion> {
        None
    }

    fn export(&self, kind: ExportKind, _: &[MemEntry]) -> Result<ExportedBlob, ExportError> {
        Err(ExportError::Unsupported(format!(
            "no dma-buf exporter configured for {kind}"
        )))
    }

    fn read_passthrough(&self, addr: u64, buf: &mut [u8]) -> Result<(), PixelReadError> {
        Err(PixelReadError {
            offset: addr,
            len: buf.len(),
            reason: "no passthrough memory".to_string(),
        })
    }
}
