//! The boundary to the dma-buf region table (the `vfio-dmabuf` crate's device list): the
//! passthrough device registers its fd and, at every BAR mapping or move, each BAR's guest
//! range and host mmap pieces.

use std::os::fd::BorrowedFd;

/// One host mmap piece of a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarPiece {
    /// Offset of the piece from the start of the region.
    pub region_offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host virtual address of the piece.
    pub host_addr: u64,
}

/// One BAR of a passthrough device as the region table records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughBar {
    /// VFIO region index (= BAR index).
    pub index: u32,
    /// Guest-physical base.
    pub guest_base: u64,
    /// Region size.
    pub size: u64,
    /// Offset of the region in the device fd.
    pub fd_offset: u64,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Host mmap pieces (empty: trapped only).
    pub pieces: Vec<BarPiece>,
    /// Whether the device decodes the BAR (command register). While it does not, dma-bufs of
    /// the BAR are revoked by the kernel and reads of it fail.
    pub decoding: bool,
}

/// The device list / region table the device fills.
pub trait PassthroughRegistry: Send + Sync {
    /// Registers a device by its VFIO device fd; returns its id.
    fn register_device(&self, name: &str, device_fd: BorrowedFd<'_>) -> Result<u32, crate::Error>;
    /// Inserts or replaces the record of one BAR. On error the table keeps what it had.
    fn set_region(&self, device: u32, bar: PassthroughBar) -> Result<(), crate::Error>;
    /// Removes the record of BAR `index` (no record is not an error).
    fn remove_region(&self, device: u32, index: u32) -> Result<(), crate::Error>;
    /// Removes the device and all its regions.
    fn unregister_device(&self, device: u32);
}
