//! virtio-gpu device with blob resources shown zero-copy from guest RAM (udmabuf) or from a
//! passthrough BAR (VFIO dma-buf).
//!
//! - [`protocol`]: decode a request's bytes once into a typed [`protocol::Request`]; encode
//!   responses.
//! - [`device`]: the device model ([`GpuDevice`]): resources, scanouts, cursor, checks.
//! - [`queue`]: virtqueue processing (control and cursor queues).
//! - [`backing`]: backing entries checked against guest memory and placed (RAM / BAR).
//! - [`exporter`]: pixel sources, and the boundary to the memory behind blobs
//!   ([`BlobMemory`], from the `vfio-dmabuf` crate).
//! - [`display`]: the display trait backends implement (in the `virtio-gpu-display` crate) and
//!   a headless one.

pub mod backing;
pub mod device;
pub mod display;
pub mod edid;
pub mod error;
pub mod exporter;
pub mod format;
pub mod protocol;
pub mod queue;
pub mod resource;

#[cfg(test)]
mod device_tests;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_util;

pub use device::{GpuConfig, GpuDevice};
pub use display::{DisplayBackend, ScanoutFrame};
pub use error::GpuError;
pub use exporter::{BlobExporter, BlobMemory, DmaBuf, ExportKind};
pub use queue::QueueKind;

/// Interval of the rate limit on log lines a guest can trigger: the first line of a kind is
/// logged, then at most one per interval with the count of those suppressed.
pub(crate) const GUEST_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Feature bits offered by the device (`VIRTIO_GPU_F_*`, plus the transport's own).
pub const DEVICE_FEATURES: u64 = (1 << virtio_bindings::virtio_gpu::VIRTIO_GPU_F_EDID)
    | (1 << virtio_bindings::virtio_gpu::VIRTIO_GPU_F_RESOURCE_BLOB);
