//! Resources: 2D resources with a host copy, and blobs that live in guest memory.

use crate::backing::{Backing, BlobPath};
use crate::exporter::ExportedBlob;
use crate::format::PixelFormat;

/// A 2D resource: pixels copied to the host by TRANSFER_TO_HOST_2D.
#[derive(Debug)]
pub struct Resource2d {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Host copy, `width * height * 4` bytes, rows packed.
    pub data: Vec<u8>,
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
    /// The dma-buf, when exported; dropped (released) on detach and unref.
    pub export: Option<ExportedBlob>,
}

/// Any resource.
#[derive(Debug)]
pub enum Resource {
    /// 2D resource.
    TwoD(Resource2d),
    /// Blob resource.
    Blob(BlobResource),
}
