//! A VFIO device with a configuration space and small BARs in memory, and KVM memory slots
//! that refuse overlaps. The region table is the real one (`vfio_dmabuf::DeviceRegistry`).

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::lock;
use crate::memory_slots::GuestMemorySlots;
use crate::vfio::{
    HostMapping, RegionDesc, VfioRegionSet, CONFIG_REGION, IRQ_INTX, IRQ_MSI, IRQ_MSIX,
    REGION_MMAP, REGION_READ, REGION_WRITE,
};
use crate::Error;

/// A VFIO device in memory. Regions of at most 4 KiB are backed by bytes; larger ones read
/// all-ones and drop writes (their guest accesses go through mmapped slots in real life).
/// Accesses outside a region are refused as VFIO refuses them, and counted.
pub struct FakeVfio {
    /// The regions by index (configuration space at [`CONFIG_REGION`]).
    pub regions: BTreeMap<u32, RegionDesc>,
    /// Configuration space bytes.
    pub config: Mutex<Vec<u8>>,
    /// Bytes of the regions that have them.
    pub bars: Mutex<BTreeMap<u32, Vec<u8>>>,
    /// One line per write and per map call: "write INDEX OFFSET BYTES", "map INDEX OFFSET SIZE".
    pub log: Mutex<Vec<String>>,
    /// Enabled interrupt index -> number of eventfds.
    pub irq: Mutex<BTreeMap<u32, usize>>,
    /// Vectors of INTx, MSI and MSI-X the device reports.
    pub irq_counts: [u32; 3],
    /// Reads and writes outside a region (or of a region the device does not have).
    pub out_of_bounds: Mutex<u64>,
}

impl FakeVfio {
    /// Readable, writable, mappable.
    pub const RW_MMAP: u32 = REGION_READ | REGION_WRITE | REGION_MMAP;
    /// Size of BAR 2 of [`FakeVfio::new`].
    pub const BAR2_SIZE: u64 = 0x100_0000;
    /// Largest region backed by bytes.
    pub const MAX_BACKED: u64 = 0x1000;

    /// A device like QEMU's ivshmem-doorbell: BAR0 256-byte registers, BAR1 4 KiB with the
    /// MSI-X table (4 vectors at 0) and PBA (at 0x800), BAR2 16 MiB 64-bit prefetchable shared
    /// memory; an MSI capability (64-bit, 1 vector) too, so both paths can be tested.
    pub fn new() -> Arc<Self> {
        let mut c = vec![0u8; 256];
        c[0..4].copy_from_slice(&0x1110_1af4u32.to_le_bytes());
        c[4..8].copy_from_slice(&0x0010_0103u32.to_le_bytes()); // cap list; cmd as vfio leaves it
        c[8..12].copy_from_slice(&0x0500_0001u32.to_le_bytes());
        c[0x0e] = 0x80; // multi-function on the host
        c[0x10..0x14].copy_from_slice(&0u32.to_le_bytes()); // BAR0 mem32
        c[0x14..0x18].copy_from_slice(&0u32.to_le_bytes()); // BAR1 mem32
        c[0x18..0x1c].copy_from_slice(&0xcu32.to_le_bytes()); // BAR2 mem64 prefetchable
        c[0x30..0x34].copy_from_slice(&0xfffe_0000u32.to_le_bytes()); // a ROM the guest must not see
        c[0x34] = 0x40;
        c[0x3d] = 1; // INTA
                     // MSI-X at 0x40: 4 vectors, table BAR1+0, PBA BAR1+0x800.
        c[0x40..0x44].copy_from_slice(&0x0003_5011u32.to_le_bytes());
        c[0x44..0x48].copy_from_slice(&0x0000_0001u32.to_le_bytes());
        c[0x48..0x4c].copy_from_slice(&0x0000_0801u32.to_le_bytes());
        // MSI at 0x50: 64-bit, 1 vector; end of list.
        c[0x50..0x54].copy_from_slice(&0x0080_0005u32.to_le_bytes());
        let regions = [
            (0, 0x100, Self::RW_MMAP),
            (1, 0x1000, Self::RW_MMAP),
            (2, Self::BAR2_SIZE, Self::RW_MMAP),
        ];
        Self::custom(c, &regions, None)
    }

    /// A device with config space `c` and regions (index, size, flags), and optionally sparse
    /// mmap areas for one region; region 7 (`c`) is added. Interrupts: 1 INTx, 1 MSI and 4
    /// MSI-X vectors.
    pub fn custom(
        c: Vec<u8>,
        regions: &[(u32, u64, u32)],
        sparse: Option<(u32, Vec<(u64, u64)>)>,
    ) -> Arc<Self> {
        Self::custom_with_irqs(c, regions, sparse, [1, 1, 4])
    }

    /// [`FakeVfio::custom`] with `irq_counts` INTx, MSI and MSI-X vectors.
    pub fn custom_with_irqs(
        c: Vec<u8>,
        regions: &[(u32, u64, u32)],
        sparse: Option<(u32, Vec<(u64, u64)>)>,
        irq_counts: [u32; 3],
    ) -> Arc<Self> {
        let mut map = BTreeMap::new();
        let mut bars = BTreeMap::new();
        for &(index, size, flags) in regions {
            let sparse_areas = sparse
                .as_ref()
                .filter(|(i, _)| *i == index)
                .map(|(_, a)| a.clone());
            map.insert(
                index,
                RegionDesc {
                    size,
                    flags,
                    fd_offset: u64::from(index) << 40,
                    sparse_areas,
                },
            );
            if size <= Self::MAX_BACKED {
                bars.insert(index, vec![0u8; size as usize]);
            }
        }
        map.insert(
            CONFIG_REGION,
            RegionDesc {
                size: c.len() as u64,
                flags: REGION_READ | REGION_WRITE,
                fd_offset: 7 << 40,
                sparse_areas: None,
            },
        );
        Arc::new(Self {
            regions: map,
            config: Mutex::new(c),
            bars: Mutex::new(bars),
            log: Mutex::new(Vec::new()),
            irq: Mutex::new(BTreeMap::new()),
            irq_counts,
            out_of_bounds: Mutex::new(0),
        })
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// Number of accesses outside a region so far.
    pub fn out_of_bounds(&self) -> u64 {
        *lock(&self.out_of_bounds)
    }

    /// The byte range of an access to region `index`, or `None` (counted) outside it.
    fn range(&self, index: u32, offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let inside = self.regions.get(&index).is_some_and(|r| {
            offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= r.size)
        });
        if !inside {
            *lock(&self.out_of_bounds) += 1;
            return None;
        }
        // Inside a region of at most MAX_BACKED bytes when it has bytes.
        let start = usize::try_from(offset).ok()?;
        Some(start..start + len)
    }
}

impl VfioRegionSet for FakeVfio {
    fn name(&self) -> String {
        "0000:00:04.0".into()
    }
    fn region(&self, index: u32) -> Option<RegionDesc> {
        self.regions.get(&index).cloned()
    }
    fn read(&self, index: u32, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some(range) = self.range(index, offset, data.len()) else {
            return;
        };
        if index == CONFIG_REGION {
            data.copy_from_slice(&lock(&self.config)[range]);
        } else if let Some(bytes) = lock(&self.bars).get(&index) {
            data.copy_from_slice(&bytes[range]);
        }
    }
    fn write(&self, index: u32, offset: u64, data: &[u8]) {
        let Some(range) = self.range(index, offset, data.len()) else {
            return;
        };
        lock(&self.log).push(format!("write {index} {offset:#x} {data:02x?}"));
        if index == CONFIG_REGION {
            lock(&self.config)[range].copy_from_slice(data);
        } else if let Some(bytes) = lock(&self.bars).get_mut(&index) {
            bytes[range].copy_from_slice(data);
        }
    }
    fn map(&self, index: u32, offset: u64, size: u64) -> std::io::Result<HostMapping> {
        lock(&self.log).push(format!("map {index} {offset:#x} {size:#x}"));
        HostMapping::anonymous(size)
    }
    fn device_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: stdin stays open for the process's life; it stands in for a device fd in the
        // region table, which only exports dma-bufs through it (nothing here asks for one).
        Some(unsafe { BorrowedFd::borrow_raw(0) })
    }
    fn irq_count(&self, index: u32) -> u32 {
        match index {
            IRQ_INTX => self.irq_counts[0],
            IRQ_MSI => self.irq_counts[1],
            IRQ_MSIX => self.irq_counts[2],
            _ => 0,
        }
    }
    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> Result<(), Error> {
        let mut irq = lock(&self.irq);
        // VFIO refuses to switch modes without disabling first.
        if irq.keys().any(|k| *k != index) {
            return Err(Error::VfioIrq {
                op: "enable",
                index,
                source: vfio_ioctls::VfioError::VfioDeviceEnableIrq,
            });
        }
        irq.insert(index, fds.len());
        Ok(())
    }
    fn disable_irq(&self, index: u32) -> Result<(), Error> {
        lock(&self.irq).remove(&index);
        Ok(())
    }
    fn set_irq_resample(&self, _index: u32, _resample: &EventFd) -> Result<(), Error> {
        Ok(())
    }
}

/// KVM memory slots: numbered from 1, overlapping or overflowing ranges refused as KVM
/// refuses them.
#[derive(Default)]
pub struct FakeSlots {
    next: Mutex<u32>,
    /// Slot -> (guest address, size, host address).
    pub live: Mutex<BTreeMap<u32, (u64, u64, u64)>>,
    /// A guest address where slots are refused (as KVM refuses one overlapping a RAM slot).
    pub refuse_at: Mutex<Option<u64>>,
}

impl FakeSlots {
    /// (guest address, size) of the live slots, by slot number.
    pub fn live(&self) -> Vec<(u64, u64)> {
        lock(&self.live)
            .values()
            .map(|(g, s, _)| (*g, *s))
            .collect()
    }
}

impl GuestMemorySlots for FakeSlots {
    unsafe fn add(&self, gpa: u64, size: u64, host_addr: u64) -> Result<u32, Error> {
        let refused = |errno| Error::MemorySlot {
            slot: 0,
            gpa,
            size,
            source: vmm_sys_util::errno::Error::new(errno),
        };
        let Some(end) = gpa.checked_add(size).filter(|_| size != 0) else {
            return Err(refused(libc::EINVAL));
        };
        if *lock(&self.refuse_at) == Some(gpa) {
            return Err(refused(libc::EEXIST));
        }
        let mut live = lock(&self.live);
        if live.values().any(|(g, s, _)| gpa < g + s && *g < end) {
            return Err(refused(libc::EEXIST));
        }
        let mut n = lock(&self.next);
        *n += 1;
        live.insert(*n, (gpa, size, host_addr));
        Ok(*n)
    }
    fn remove(&self, slot: u32) -> Result<(), Error> {
        lock(&self.live)
            .remove(&slot)
            .map(|_| ())
            .ok_or(Error::SlotNotInUse(slot))
    }
}
