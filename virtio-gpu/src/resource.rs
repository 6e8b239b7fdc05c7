//! Resources: 2D resources with a host copy, and blobs that live in guest memory.

use crate::backing::{Backing, BlobPath};
use crate::exporter::{DmaBuf, PixelReadError, PixelSource};
use crate::format::PixelFormat;

/// Alignment of host copies: guest pages are page-aligned, and copies between buffers with the
/// same alignment run at memcpy speed (a 16-byte skew halves `rep movsb` throughput).
pub const HOST_BUFFER_ALIGN: usize = 4096;

/// A zeroed, page-aligned byte buffer (a `Vec` over-allocated by one page, used from the first
/// aligned byte; the `Vec` is never resized, so the start stays put).
#[derive(Debug)]
pub struct HostBuffer {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl HostBuffer {
    /// Allocates `len` zeroed bytes; `None` if the allocation fails.
    pub fn new(len: usize) -> Option<HostBuffer> {
        let total = len.checked_add(HOST_BUFFER_ALIGN)?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(total).ok()?;
        buf.resize(total, 0);
        let start = buf.as_ptr().align_offset(HOST_BUFFER_ALIGN);
        if start > HOST_BUFFER_ALIGN {
            return None;
        }
        Some(HostBuffer { buf, start, len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl PixelSource for HostBuffer {
    fn size(&self) -> u64 {
        self.len as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), PixelReadError> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A 2D resource: pixels copied to the host by TRANSFER_TO_HOST_2D.
#[derive(Debug)]
pub struct Resource2d {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Host copy, `width * height * 4` bytes, rows packed, page-aligned.
    pub data: HostBuffer,
    /// Guest backing, when attached.
    pub backing: Option<Backing>,
}

impl Resource2d {
    /// Bytes per row of the host copy.
    pub fn stride(&self) -> u32 {
        self.width * 4
    }
}

/// A blob resource (`VIRTIO_GPU_BLOB_MEM_GUEST`): its pixels stay in guest memory.
#[derive(Debug)]
pub struct BlobResource {
    /// Size announced at creation.
    pub size: u64,
    /// `VIRTIO_GPU_BLOB_FLAG_*`.
    pub flags: u32,
    /// Backing, `None` after DETACH_BACKING.
    pub backing: Option<Backing>,
    /// How it is shown (export kind or CPU path and why).
    pub path: BlobPath,
    /// Ranges (runs of contiguous guest memory) of its dma-buf, counted against the budgets.
    pub ranges: usize,
    /// The dma-buf, when exported; dropped (released) on detach and unref.
    pub export: Option<DmaBuf>,
}

/// Any resource.
#[derive(Debug)]
pub enum Resource {
    /// 2D resource.
    TwoD(Resource2d),
    /// Blob resource.
    Blob(BlobResource),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_buffers_are_page_aligned_and_zeroed() {
        for len in [1usize, 4096, 12345] {
            let mut b = HostBuffer::new(len).unwrap();
            assert_eq!(b.as_slice().as_ptr() as usize % HOST_BUFFER_ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.as_slice().iter().all(|x| *x == 0));
            b.as_mut_slice()[len - 1] = 7;
            assert_eq!(b.as_slice()[len - 1], 7);
        }
        assert!(HostBuffer::new(usize::MAX).is_none());
    }
}
