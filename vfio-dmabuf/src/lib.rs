//! vfio-dmabuf: a virtio-gpu blob's guest ranges become one host dma-buf.
//!
//! * [`DeviceRegistry`]: the device list and per-device region tables (filled
//!   by the VFIO PCI device, updated on BAR moves), with O(log n) lookup by
//!   guest-physical and host-virtual address.
//! * [`DeviceRegistry::translate`]: blob entries -> one region's coalesced
//!   `(offset, len)` ranges, every rule checked before any ioctl.
//! * [`DeviceRegistry::export`]: `VFIO_DEVICE_FEATURE(GET | DMA_BUF)` on the
//!   device fd, probed once per device, through [`DeviceFeatureIoctl`].
//! * [`DeviceRegistry::read_blob`] / [`DeviceRegistry::read_region`]: CPU reads
//!   of the same bytes through the device fd (`pread`). There is deliberately
//!   no host mapping of passthrough memory: VFIO mappings never merge (one VMA
//!   per range would let a guest exhaust `vm.max_map_count`), and a mapping
//!   faults (`SIGBUS`) when the guest turns its device's memory decoding off,
//!   where `pread` fails with `EIO`.
//! * Every region change (set again, moved, decoding on/off, removed) gives
//!   the region a new generation; [`DeviceRegistry::is_current`] tells a
//!   holder of an export whether it is stale.
//! * [`UdmabufExporter`]: blobs in memfd-backed guest RAM.
//! * [`BlobMemory`]: the one boundary a GPU device calls (locate, export, read,
//!   is_current); [`BlobExporter`] implements it over all of the above.
//!
//! Errors are [`DmaBufError`]; [`DmaBufError::is_guest_fault`] separates
//! guest mistakes from host failures.

mod device_read;
mod error;
mod exporter;
#[cfg(any(test, feature = "test-utils"))]
pub mod fake_kernel;
pub mod memfd;
mod region;
mod registry;
mod translate;
pub mod udmabuf;
mod vfio_export;

pub use error::{DmaBufError, Errno, KernelOp, Result};
pub use exporter::{BlobExporter, BlobMemory, DmaBuf, ExportKind, Fault};
pub use region::{MmapPiece, RegionInfo, PCI_NUM_BARS, REGION_FLAG_MMAP};
pub use registry::{
    host_page_size, DeviceId, DeviceRegistry, RegionKey, SharedRegistry, DEFAULT_MAX_ENTRIES,
};
pub use translate::{push_coalesced, BlobEntry, DmaRange, Translation};
pub use udmabuf::{GuestRam, UdmabufExporter, UdmabufIoctl, UdmabufLimits};
pub use vfio_export::{
    encode_dma_buf_request, encode_probe, DeviceFeatureIoctl, SysDeviceFeature, VFIO_DEVICE_FEATURE,
};
