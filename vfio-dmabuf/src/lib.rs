//! vfio-dmabuf: a virtio-gpu blob's guest ranges become one host dma-buf.
//!
//! * [`DeviceRegistry`]: the device list and per-device region tables (filled
//!   by the VFIO PCI device, updated on BAR moves), with O(log n) lookup by
//!   guest-physical and host-virtual address.
//! * [`DeviceRegistry::translate`]: blob entries -> one region's coalesced
//!   `(offset, len)` ranges, every rule checked before any ioctl.
//! * [`DeviceRegistry::export`]: `VFIO_DEVICE_FEATURE(GET | DMA_BUF)` on the
//!   device fd, probed once per device, through [`DeviceFeatureIoctl`].
//! * [`CpuMapping`]: the same ranges mapped, in order, into one host range;
//!   [`DeviceRegistry::read_blob`] reads them through the device fd instead
//!   (never faults if the guest turns its device memory off).
//! * [`UdmabufExporter`]: blobs in memfd-backed guest RAM.
//! * [`DmaBufExporter`]: the one trait virtio-gpu uses ([`VfioExporter`],
//!   [`UdmabufExporter`], and [`BlobExporter`] which picks between them).
//!
//! Errors are [`DmaBufError`]; [`DmaBufError::is_guest_fault`] separates
//! guest mistakes from host failures.

mod cpu_map;
mod device_read;
mod error;
mod exporter;
pub mod fake_kernel;
pub mod memfd;
mod region;
mod registry;
mod translate;
pub mod udmabuf;
mod vfio_export;

pub use cpu_map::CpuMapping;
pub use error::{DmaBufError, Errno, KernelOp, Result};
pub use exporter::{BlobExporter, DmaBuf, DmaBufExporter, DmaBufSource, VfioExporter};
pub use region::{MmapPiece, RegionInfo, PCI_NUM_BARS, REGION_FLAG_MMAP};
pub use registry::{
    host_page_size, DeviceId, DeviceRegistry, RegionKey, SharedRegistry, DEFAULT_MAX_ENTRIES,
};
pub use translate::{push_coalesced, BlobEntry, DmaRange, Translation};
pub use udmabuf::{GuestRam, UdmabufExporter, UdmabufIoctl, UdmabufLimits};
pub use vfio_export::{
    encode_dma_buf_request, encode_probe, DeviceFeatureIoctl, SysDeviceFeature, VFIO_DEVICE_FEATURE,
};
