//! One VFIO region (a PCI BAR) as the guest sees it and as the host maps it.

use crate::error::{DmaBufError, Result};

/// Number of PCI BARs; the kernel exports dma-bufs from region indexes `0..6` only.
pub const PCI_NUM_BARS: u32 = 6;

/// `VFIO_REGION_INFO_FLAG_MMAP`: the region may be mmapped from the device fd.
pub const REGION_FLAG_MMAP: u32 = vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_MMAP;

/// One host mmap of part of a region. A BAR holding an MSI-X table is mapped
/// in several pieces around the table (sparse mmap); each piece remembers
/// where it starts inside the region so that offsets sent to the kernel are
/// always `address - region base`, never an offset inside one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmapPiece {
    /// Offset of the piece from the start of the region.
    pub region_offset: u64,
    /// Size of the piece in bytes.
    pub size: u64,
    /// Host virtual address where the piece is mapped.
    pub host_addr: u64,
}

/// One region of a passthrough device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// VFIO region index (the BAR number for PCI BARs).
    pub index: u32,
    /// Guest-physical base address (where the guest programmed the BAR).
    pub guest_base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Offset of the region in the device fd (`vfio_region_info.offset`).
    pub fd_offset: u64,
    /// `vfio_region_info.flags` (`VFIO_REGION_INFO_FLAG_*`).
    pub flags: u32,
    /// Host mmaps of the region, empty when it is not mapped.
    pub mmap_pieces: Vec<MmapPiece>,
    /// Whether the device decodes the region (PCI command register: Memory Space for memory
    /// BARs). While it does not, vfio-pci revokes the region's dma-bufs and mmaps and refuses
    /// reads (`EIO`): the registry then refuses exports and reads of it.
    pub decoding: bool,
}

impl RegionInfo {
    /// A region with no host mapping yet.
    pub fn new(index: u32, guest_base: u64, size: u64, fd_offset: u64, flags: u32) -> Self {
        RegionInfo {
            index,
            guest_base,
            size,
            fd_offset,
            flags,
            mmap_pieces: Vec::new(),
            decoding: true,
        }
    }

    /// Sets whether the device decodes the region (builder style).
    pub fn with_decoding(mut self, decoding: bool) -> Self {
        self.decoding = decoding;
        self
    }

    /// Adds one host mmap piece (builder style).
    pub fn with_mmap_piece(mut self, piece: MmapPiece) -> Self {
        self.mmap_pieces.push(piece);
        self
    }

    /// Exclusive guest-physical end. Valid regions never overflow.
    pub fn guest_end(&self) -> u64 {
        self.guest_base.saturating_add(self.size)
    }

    /// True if `gpa` lies inside the region.
    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.guest_base && gpa - self.guest_base < self.size
    }

    /// True if the region can be mmapped from the device fd.
    pub fn mappable(&self) -> bool {
        self.flags & REGION_FLAG_MMAP != 0
    }

    /// Checks the record is self-consistent: non-empty, no overflow, pieces
    /// inside the region and not overlapping each other.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DmaBufError::InvalidRegion(m));
        if self.size == 0 {
            return bad(format!("region {} has size 0", self.index));
        }
        if self.guest_base.checked_add(self.size).is_none() {
            return bad(format!("region {} guest range overflows", self.index));
        }
        if self.fd_offset.checked_add(self.size).is_none() {
            return bad(format!("region {} fd offset overflows", self.index));
        }
        let mut pieces: Vec<&MmapPiece> = self.mmap_pieces.iter().collect();
        pieces.sort_by_key(|p| p.region_offset);
        let mut prev_end = 0u64;
        for p in pieces {
            let end = match p.region_offset.checked_add(p.size) {
                Some(e) if p.size > 0 && e <= self.size => e,
                _ => {
                    return bad(format!(
                        "region {}: mmap piece {p:?} outside the region",
                        self.index
                    ))
                }
            };
            if p.host_addr.checked_add(p.size).is_none() {
                return bad(format!(
                    "region {}: mmap piece {p:?} host range overflows",
                    self.index
                ));
            }
            if p.region_offset < prev_end {
                return bad(format!("region {}: mmap pieces overlap", self.index));
            }
            prev_end = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_and_end() {
        let r = RegionInfo::new(2, 0x1000_0000, 0x100_0000, 2 << 40, 7);
        assert!(r.contains(0x1000_0000));
        assert!(r.contains(0x10ff_ffff));
        assert!(!r.contains(0x1100_0000));
        assert!(!r.contains(0x0fff_ffff));
        assert_eq!(r.guest_end(), 0x1100_0000);
        assert!(r.mappable());
        assert!(r.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_records() {
        assert!(RegionInfo::new(0, 0, 0, 0, 0).validate().is_err());
        assert!(RegionInfo::new(0, u64::MAX - 10, 0x1000, 0, 0)
            .validate()
            .is_err());
        let outside = RegionInfo::new(0, 0, 0x2000, 0, 7).with_mmap_piece(MmapPiece {
            region_offset: 0x1000,
            size: 0x2000,
            host_addr: 0x7000_0000,
        });
        assert!(outside.validate().is_err());
        let overlap = RegionInfo::new(0, 0, 0x4000, 0, 7)
            .with_mmap_piece(MmapPiece {
                region_offset: 0,
                size: 0x2000,
                host_addr: 0x7000_0000,
            })
            .with_mmap_piece(MmapPiece {
                region_offset: 0x1000,
                size: 0x1000,
                host_addr: 0x8000_0000,
            });
        assert!(overlap.validate().is_err());
        let sparse = RegionInfo::new(0, 0, 0x4000, 0, 7)
            .with_mmap_piece(MmapPiece {
                region_offset: 0x3000,
                size: 0x1000,
                host_addr: 0x9000_0000,
            })
            .with_mmap_piece(MmapPiece {
                region_offset: 0,
                size: 0x2000,
                host_addr: 0x8000_0000,
            });
        assert!(sparse.validate().is_ok());
    }
}
