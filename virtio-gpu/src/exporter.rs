//! CPU access to a scanout's pixels ([`PixelSource`]) and the device's view of the boundary to
//! the memory behind blobs: [`vfio_dmabuf::BlobMemory`] (where entries live, one dma-buf per
//! blob, fault-free reads of passthrough memory, staleness), implemented by
//! [`vfio_dmabuf::BlobExporter`].

pub use vfio_dmabuf::{BlobExporter, BlobMemory, DmaBuf, ExportKind, Fault, RegionKey};

/// Error reading pixels of guest memory, passthrough memory or a host copy.
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
