//! The VFIO device as the passthrough device sees it: regions to read, write and map, and
//! interrupts to wire. A trait so that configuration virtualisation and BAR handling can be
//! tested against a fake region set.

use std::os::fd::BorrowedFd;

use vmm_sys_util::eventfd::EventFd;

use super::host_mapping::HostMapping;

/// VFIO region index of BAR 0 (BARs are 0..=5).
pub const BAR0_REGION: u32 = 0;
/// VFIO region index of the expansion ROM.
pub const ROM_REGION: u32 = 6;
/// VFIO region index of PCI configuration space.
pub const CONFIG_REGION: u32 = 7;

/// VFIO interrupt index of INTx.
pub const IRQ_INTX: u32 = 0;
/// VFIO interrupt index of MSI.
pub const IRQ_MSI: u32 = 1;
/// VFIO interrupt index of MSI-X.
pub const IRQ_MSIX: u32 = 2;

/// `VFIO_REGION_INFO_FLAG_READ`.
pub const REGION_READ: u32 = 1 << 0;
/// `VFIO_REGION_INFO_FLAG_WRITE`.
pub const REGION_WRITE: u32 = 1 << 1;
/// `VFIO_REGION_INFO_FLAG_MMAP`.
pub const REGION_MMAP: u32 = 1 << 2;

/// What VFIO reports about one region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionDesc {
    /// Region size in bytes (0: absent).
    pub size: u64,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Offset of the region in the device fd.
    pub fd_offset: u64,
    /// Sparse mmap areas (offset, size) if the kernel restricts mmap to them.
    pub sparse_areas: Option<Vec<(u64, u64)>>,
}

impl RegionDesc {
    /// True if (parts of) the region may be mmapped.
    pub fn mappable(&self) -> bool {
        self.flags & REGION_MMAP != 0
    }
}

/// Operations on a VFIO device (the real one wraps `vfio_ioctls::VfioDevice`).
///
/// Reads and writes are bounds-checked by the caller against [`RegionDesc::size`]; an
/// implementation must still not panic on any input.
pub trait VfioRegionSet: Send + Sync {
    /// A name for logs (the BDF).
    fn name(&self) -> String;
    /// Region `index`, if the device has it.
    fn region(&self, index: u32) -> Option<RegionDesc>;
    /// Reads `data.len()` bytes at `offset` of region `index`; failures leave all-ones.
    fn read(&self, index: u32, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` of region `index`; failures are logged.
    fn write(&self, index: u32, offset: u64, data: &[u8]);
    /// Maps `size` bytes at `offset` of region `index` into this process.
    fn map(&self, index: u32, offset: u64, size: u64) -> std::io::Result<HostMapping>;
    /// The device fd (for the dma-buf registry); `None` for fakes.
    fn device_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Number of vectors of interrupt `index` (0: unsupported).
    fn irq_count(&self, index: u32) -> u32;
    /// Signals `fds` for the vectors of interrupt `index`.
    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> Result<(), crate::Error>;
    /// Stops interrupt `index`.
    fn disable_irq(&self, index: u32) -> Result<(), crate::Error>;
    /// For INTx: unmask when `resample` is signalled.
    fn set_irq_resample(&self, index: u32, resample: &EventFd) -> Result<(), crate::Error>;
}
