//! The device list: every passthrough device, its region table, and O(log n)
//! lookup of the owning region by guest-physical or host-virtual address.
//!
//! The VFIO PCI device fills it when it maps BARs (and updates it when the
//! guest moves a BAR); virtio-gpu reads it through [`crate::VfioExporter`].
//! Share it as a [`SharedRegistry`].

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock, RwLock};

use crate::error::{DmaBufError, Errno, KernelOp, Result};
use crate::region::{MmapPiece, RegionInfo};

/// Identifies one registered passthrough device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A (device, region index) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionKey {
    /// The device.
    pub device: DeviceId,
    /// The VFIO region index.
    pub index: u32,
}

/// Default bound on a blob's number of entries (32768 pages = 128 MiB of
/// 4 KiB pages, 512 KiB of ranges at most).
pub const DEFAULT_MAX_ENTRIES: usize = 32768;

/// A registry shared between the VFIO device (writer) and virtio-gpu (reader).
pub type SharedRegistry = Arc<RwLock<DeviceRegistry>>;

pub(crate) struct DeviceEntry {
    pub(crate) name: String,
    pub(crate) fd: OwnedFd,
    pub(crate) regions: BTreeMap<u32, RegionInfo>,
    /// Generation of each region record: the registry's counter when it was last set.
    pub(crate) generations: BTreeMap<u32, u64>,
    /// Result of the one-time `PROBE`: `Ok` if the device exports dma-bufs.
    pub(crate) probe: OnceLock<std::result::Result<(), Errno>>,
}

/// Host page size, from `sysconf(_SC_PAGESIZE)`; 4096 if unavailable.
pub fn host_page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v)
        .ok()
        .filter(|v| v.is_power_of_two())
        .unwrap_or(4096)
}

/// Registry of passthrough devices and their region tables.
pub struct DeviceRegistry {
    pub(crate) devices: BTreeMap<DeviceId, DeviceEntry>,
    /// Guest base -> region; regions never overlap in guest-physical space.
    pub(crate) by_gpa: BTreeMap<u64, RegionKey>,
    /// Host address of each mmap piece -> (region, piece's region offset, piece size).
    pub(crate) by_hva: BTreeMap<u64, (RegionKey, u64, u64)>,
    next_id: u32,
    /// Bumped by every region change; each record keeps the value of its last change.
    generation: u64,
    pub(crate) page_size: u64,
    pub(crate) max_entries: usize,
}

impl Default for DeviceRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DeviceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (id, d) in &self.devices {
            m.entry(&(id, &d.name), &d.regions.values().collect::<Vec<_>>());
        }
        m.finish()
    }
}

impl DeviceRegistry {
    /// An empty registry with the host page size and [`DEFAULT_MAX_ENTRIES`].
    pub fn new() -> Self {
        Self::with_limits(host_page_size(), DEFAULT_MAX_ENTRIES)
    }

    /// An empty registry with an explicit page size (a power of two) and entry bound.
    pub fn with_limits(page_size: u64, max_entries: usize) -> Self {
        let page_size = if page_size.is_power_of_two() {
            page_size
        } else {
            4096
        };
        DeviceRegistry {
            devices: BTreeMap::new(),
            by_gpa: BTreeMap::new(),
            by_hva: BTreeMap::new(),
            next_id: 0,
            generation: 0,
            page_size,
            max_entries,
        }
    }

    /// A new, empty [`SharedRegistry`].
    pub fn shared() -> SharedRegistry {
        Arc::new(RwLock::new(Self::new()))
    }

    /// Page size used for alignment checks.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Bound on a blob's number of entries.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Registers a device. The fd (a VFIO device fd, from a group or a cdev)
    /// is duplicated, so the registry's copy stays valid on its own; it is
    /// closed by [`DeviceRegistry::unregister_device`].
    pub fn register_device(
        &mut self,
        name: impl Into<String>,
        device_fd: BorrowedFd<'_>,
    ) -> Result<DeviceId> {
        let fd = device_fd
            .try_clone_to_owned()
            .map_err(|e| DmaBufError::Kernel {
                op: KernelOp::Dup,
                errno: Errno(e.raw_os_error().unwrap_or(libc::EBADF)),
            })?;
        let id = DeviceId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.devices.insert(
            id,
            DeviceEntry {
                name: name.into(),
                fd,
                regions: BTreeMap::new(),
                generations: BTreeMap::new(),
                probe: OnceLock::new(),
            },
        );
        Ok(id)
    }

    /// Removes a device and all its regions.
    pub fn unregister_device(&mut self, id: DeviceId) -> Result<()> {
        let dev = self
            .devices
            .remove(&id)
            .ok_or(DmaBufError::UnknownDevice(id))?;
        for r in dev.regions.values() {
            Self::unindex(&mut self.by_gpa, &mut self.by_hva, r);
        }
        Ok(())
    }

    /// The device's fd (as registered).
    pub fn device_fd(&self, id: DeviceId) -> Option<BorrowedFd<'_>> {
        self.devices.get(&id).map(|d| d.fd.as_fd())
    }

    /// The device's name.
    pub fn device_name(&self, id: DeviceId) -> Option<&str> {
        self.devices.get(&id).map(|d| d.name.as_str())
    }

    /// Ids of all registered devices.
    pub fn device_ids(&self) -> Vec<DeviceId> {
        self.devices.keys().copied().collect()
    }

    /// One region record.
    pub fn region(&self, id: DeviceId, index: u32) -> Option<&RegionInfo> {
        self.devices.get(&id)?.regions.get(&index)
    }

    /// Inserts or replaces region `region.index` of a device. Rejected (and the
    /// table left unchanged) if the record is invalid or overlaps another
    /// region in guest-physical space or another mmap piece in host space.
    pub fn set_region(&mut self, id: DeviceId, region: RegionInfo) -> Result<()> {
        region.validate()?;
        if !self.devices.contains_key(&id) {
            return Err(DmaBufError::UnknownDevice(id));
        }
        let key = RegionKey {
            device: id,
            index: region.index,
        };
        if let Some(other) = self.gpa_overlap(region.guest_base, region.size, key) {
            return Err(DmaBufError::InvalidRegion(format!(
                "region {} of device {id} at {:#x}+{:#x} overlaps region {} of device {}",
                region.index, region.guest_base, region.size, other.index, other.device
            )));
        }
        for p in &region.mmap_pieces {
            if let Some(other) = self.hva_overlap(p.host_addr, p.size, key) {
                return Err(DmaBufError::InvalidRegion(format!(
                    "mmap piece at host {:#x}+{:#x} overlaps a piece of region {} of device {}",
                    p.host_addr, p.size, other.index, other.device
                )));
            }
        }
        let dev = self
            .devices
            .get_mut(&id)
            .ok_or(DmaBufError::UnknownDevice(id))?;
        if let Some(old) = dev.regions.remove(&region.index) {
            Self::unindex(&mut self.by_gpa, &mut self.by_hva, &old);
        }
        self.by_gpa.insert(region.guest_base, key);
        for p in &region.mmap_pieces {
            self.by_hva
                .insert(p.host_addr, (key, p.region_offset, p.size));
        }
        self.generation += 1;
        dev.generations.insert(region.index, self.generation);
        dev.regions.insert(region.index, region);
        Ok(())
    }

    /// The generation of a region's record: it changes whenever the record is set again
    /// (BAR moved, mapped or unmapped, decoding turned on or off).
    pub fn region_generation(&self, id: DeviceId, index: u32) -> Option<u64> {
        self.devices.get(&id)?.generations.get(&index).copied()
    }

    /// Whether an export or read made at `generation` of region `index` of device `id` is
    /// still valid: the region is still registered, unchanged since, and decoded. A stale
    /// dma-buf must be dropped (the kernel revoked it, or it describes memory the guest moved).
    pub fn is_current(&self, id: DeviceId, index: u32, generation: u64) -> bool {
        self.region(id, index).is_some_and(|r| r.decoding)
            && self.region_generation(id, index) == Some(generation)
    }

    /// Removes one region (e.g. when the guest disables memory decoding).
    pub fn remove_region(&mut self, id: DeviceId, index: u32) -> Result<RegionInfo> {
        let dev = self
            .devices
            .get_mut(&id)
            .ok_or(DmaBufError::UnknownDevice(id))?;
        let old = dev
            .regions
            .remove(&index)
            .ok_or(DmaBufError::UnknownRegion { device: id, index })?;
        dev.generations.remove(&index);
        Self::unindex(&mut self.by_gpa, &mut self.by_hva, &old);
        Ok(old)
    }

    /// The guest moved a BAR: only the guest base changes.
    pub fn move_region(&mut self, id: DeviceId, index: u32, new_guest_base: u64) -> Result<()> {
        let mut r = self
            .region(id, index)
            .cloned()
            .ok_or(DmaBufError::UnknownRegion { device: id, index })?;
        r.guest_base = new_guest_base;
        self.set_region(id, r)
    }

    /// Replaces the host mmap pieces of a region (mapped, remapped or unmapped).
    pub fn set_region_mmap(
        &mut self,
        id: DeviceId,
        index: u32,
        pieces: Vec<MmapPiece>,
    ) -> Result<()> {
        let mut r = self
            .region(id, index)
            .cloned()
            .ok_or(DmaBufError::UnknownRegion { device: id, index })?;
        r.mmap_pieces = pieces;
        self.set_region(id, r)
    }

    /// The region containing guest-physical address `gpa`. O(log n).
    pub fn lookup_gpa(&self, gpa: u64) -> Option<(RegionKey, &RegionInfo)> {
        let (_, key) = self.by_gpa.range(..=gpa).next_back()?;
        let r = self.region(key.device, key.index)?;
        r.contains(gpa).then_some((*key, r))
    }

    /// The region whose host mmap contains `hva`, and the offset of `hva`
    /// from the start of the region (not from the start of the mmap piece).
    /// O(log n).
    pub fn lookup_hva(&self, hva: u64) -> Option<(RegionKey, &RegionInfo, u64)> {
        let (start, (key, region_offset, size)) = self.by_hva.range(..=hva).next_back()?;
        let delta = hva - start;
        if delta >= *size {
            return None;
        }
        let r = self.region(key.device, key.index)?;
        Some((*key, r, region_offset + delta))
    }

    /// Regions are disjoint, so only the nearest region starting below `end`
    /// (other than the one being replaced) can overlap `[base, end)`.
    fn gpa_overlap(&self, base: u64, size: u64, except: RegionKey) -> Option<RegionKey> {
        let end = base.saturating_add(size);
        let (_, k) = self
            .by_gpa
            .range(..end)
            .rev()
            .find(|(_, k)| **k != except)?;
        let r = self.region(k.device, k.index)?;
        (r.guest_end() > base).then_some(*k)
    }

    fn hva_overlap(&self, base: u64, size: u64, except: RegionKey) -> Option<RegionKey> {
        let end = base.saturating_add(size);
        let (start, (k, _, sz)) = self
            .by_hva
            .range(..end)
            .rev()
            .find(|(_, (k, _, _))| *k != except)?;
        (start.saturating_add(*sz) > base).then_some(*k)
    }

    fn unindex(
        by_gpa: &mut BTreeMap<u64, RegionKey>,
        by_hva: &mut BTreeMap<u64, (RegionKey, u64, u64)>,
        r: &RegionInfo,
    ) {
        by_gpa.remove(&r.guest_base);
        for p in &r.mmap_pieces {
            by_hva.remove(&p.host_addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::REGION_FLAG_MMAP;

    fn devfd() -> std::fs::File {
        std::fs::File::open("/dev/null").unwrap()
    }

    fn bar(index: u32, base: u64, size: u64) -> RegionInfo {
        RegionInfo::new(index, base, size, u64::from(index) << 40, 7)
    }

    #[test]
    fn register_dups_the_fd_and_unregister_clears_lookups() {
        let f = devfd();
        let mut reg = DeviceRegistry::with_limits(4096, 16);
        let id = reg.register_device("ivshmem", f.as_fd()).unwrap();
        drop(f); // the registry's copy stays valid
        assert!(reg.device_fd(id).is_some());
        assert_eq!(reg.device_name(id), Some("ivshmem"));
        reg.set_region(id, bar(2, 0x1000_0000, 0x10_0000)).unwrap();
        assert!(reg.lookup_gpa(0x1000_0000).is_some());
        reg.unregister_device(id).unwrap();
        assert!(reg.lookup_gpa(0x1000_0000).is_none());
        assert_eq!(
            reg.unregister_device(id),
            Err(DmaBufError::UnknownDevice(id))
        );
        assert!(reg.device_ids().is_empty());
    }

    #[test]
    fn lookup_gpa_respects_region_boundaries_across_devices() {
        let f = devfd();
        let mut reg = DeviceRegistry::with_limits(4096, 16);
        let a = reg.register_device("a", f.as_fd()).unwrap();
        let b = reg.register_device("b", f.as_fd()).unwrap();
        reg.set_region(a, bar(0, 0x2000_0000, 0x1000)).unwrap();
        reg.set_region(a, bar(2, 0x3000_0000, 0x10_0000)).unwrap();
        reg.set_region(b, bar(2, 0x3010_0000, 0x10_0000)).unwrap();
        assert_eq!(reg.lookup_gpa(0x1fff_ffff).map(|x| x.0), None);
        assert_eq!(
            reg.lookup_gpa(0x2000_0000).map(|x| x.0),
            Some(RegionKey {
                device: a,
                index: 0
            })
        );
        assert_eq!(
            reg.lookup_gpa(0x2000_0fff).map(|x| x.0),
            Some(RegionKey {
                device: a,
                index: 0
            })
        );
        assert_eq!(reg.lookup_gpa(0x2000_1000).map(|x| x.0), None);
        assert_eq!(
            reg.lookup_gpa(0x300f_ffff).map(|x| x.0),
            Some(RegionKey {
                device: a,
                index: 2
            })
        );
        assert_eq!(
            reg.lookup_gpa(0x3010_0000).map(|x| x.0),
            Some(RegionKey {
                device: b,
                index: 2
            })
        );
        assert_eq!(reg.lookup_gpa(0x3020_0000).map(|x| x.0), None);
    }

    #[test]
    fn overlapping_regions_are_rejected_and_table_unchanged() {
        let f = devfd();
        let mut reg = DeviceRegistry::with_limits(4096, 16);
        let a = reg.register_device("a", f.as_fd()).unwrap();
        let b = reg.register_device("b", f.as_fd()).unwrap();
        reg.set_region(a, bar(2, 0x3000_0000, 0x10_0000)).unwrap();
        let err = reg.set_region(b, bar(0, 0x300f_f000, 0x2000)).unwrap_err();
        assert!(matches!(err, DmaBufError::InvalidRegion(_)), "{err}");
        assert!(!err.is_guest_fault());
        assert!(reg.region(b, 0).is_none());
        let err = reg.set_region(b, bar(0, 0x2fff_f000, 0x2000)).unwrap_err();
        assert!(matches!(err, DmaBufError::InvalidRegion(_)));
        // Replacing the same region at an overlapping address is fine.
        reg.set_region(a, bar(2, 0x3008_0000, 0x10_0000)).unwrap();
        assert!(reg.lookup_gpa(0x3000_0000).is_none());
        assert!(reg.lookup_gpa(0x3008_0000).is_some());
        assert_eq!(
            reg.set_region(DeviceId(99), bar(0, 0, 0x1000)),
            Err(DmaBufError::UnknownDevice(DeviceId(99)))
        );
    }

    #[test]
    fn bar_move_updates_lookups_and_keeps_mmaps() {
        let f = devfd();
        let mut reg = DeviceRegistry::with_limits(4096, 16);
        let a = reg.register_device("a", f.as_fd()).unwrap();
        let r = bar(2, 0x3000_0000, 0x10_0000).with_mmap_piece(MmapPiece {
            region_offset: 0,
            size: 0x10_0000,
            host_addr: 0x7f00_0000_0000,
        });
        reg.set_region(a, r).unwrap();
        reg.move_region(a, 2, 0x5000_0000).unwrap();
        assert!(reg.lookup_gpa(0x3000_0000).is_none());
        let (k, r) = reg.lookup_gpa(0x5000_1000).unwrap();
        assert_eq!(k.index, 2);
        assert_eq!(r.guest_base, 0x5000_0000);
        assert_eq!(reg.lookup_hva(0x7f00_0000_2000).map(|x| x.2), Some(0x2000));
        assert_eq!(
            reg.move_region(a, 4, 0),
            Err(DmaBufError::UnknownRegion {
                device: a,
                index: 4
            })
        );
        let old = reg.remove_region(a, 2).unwrap();
        assert_eq!(old.guest_base, 0x5000_0000);
        assert!(reg.lookup_gpa(0x5000_1000).is_none());
        assert!(reg.lookup_hva(0x7f00_0000_2000).is_none());
    }

    #[test]
    fn sparse_mmap_hva_lookup_gives_region_offsets() {
        // BAR of 64 KiB with an MSI-X table at 0x8000..0x9000 left unmapped:
        // two pieces at unrelated host addresses.
        let f = devfd();
        let mut reg = DeviceRegistry::with_limits(4096, 16);
        let a = reg.register_device("a", f.as_fd()).unwrap();
        let r = RegionInfo::new(4, 0x4000_0000, 0x1_0000, 4 << 40, REGION_FLAG_MMAP | 3)
            .with_mmap_piece(MmapPiece {
                region_offset: 0,
                size: 0x8000,
                host_addr: 0x7f00_0010_0000,
            })
            .with_mmap_piece(MmapPiece {
                region_offset: 0x9000,
                size: 0x7000,
                host_addr: 0x7f00_0000_0000,
            });
        reg.set_region(a, r).unwrap();
        assert_eq!(reg.lookup_hva(0x7f00_0010_1000).map(|x| x.2), Some(0x1000));
        // Offset inside the second piece is 0x1000, but inside the region it is 0xa000.
        assert_eq!(reg.lookup_hva(0x7f00_0000_1000).map(|x| x.2), Some(0xa000));
        assert!(reg.lookup_hva(0x7f00_0000_7000).is_none());
        assert!(reg.lookup_hva(0x7f00_0010_8000).is_none());
        reg.set_region_mmap(a, 4, Vec::new()).unwrap();
        assert!(reg.lookup_hva(0x7f00_0010_1000).is_none());
    }

    #[test]
    fn overlapping_host_mappings_are_rejected() {
        let f = devfd();
        let mut reg = DeviceRegistry::with_limits(4096, 16);
        let a = reg.register_device("a", f.as_fd()).unwrap();
        let p = MmapPiece {
            region_offset: 0,
            size: 0x1000,
            host_addr: 0x7f00_0000_0000,
        };
        reg.set_region(a, bar(0, 0x1000_0000, 0x1000).with_mmap_piece(p))
            .unwrap();
        let err = reg
            .set_region(a, bar(2, 0x2000_0000, 0x1000).with_mmap_piece(p))
            .unwrap_err();
        assert!(matches!(err, DmaBufError::InvalidRegion(_)));
    }
}
