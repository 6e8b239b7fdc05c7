//! [`VfioRegionSet`] over a real `vfio_ioctls::VfioDevice`.

use std::os::fd::{AsRawFd, BorrowedFd};

use log_limit::warn_limit_global;
use vfio_ioctls::{VfioDevice, VfioRegionInfoCap};
use vmm_sys_util::eventfd::EventFd;

use super::host_mapping::HostMapping;
use super::region_set::{RegionDesc, VfioRegionSet, CONFIG_REGION, IRQ_INTX};
use crate::GUEST_LOG_INTERVAL;

/// A VFIO device opened through a container/group (or cdev).
pub struct VfioDeviceRegions {
    bdf: String,
    device: VfioDevice,
}

impl VfioDeviceRegions {
    /// Wraps an opened device named `bdf`.
    pub fn new(bdf: String, device: VfioDevice) -> Self {
        Self { bdf, device }
    }

    /// The underlying device.
    pub fn device(&self) -> &VfioDevice {
        &self.device
    }

    fn in_bounds(&self, index: u32, offset: u64, len: usize) -> bool {
        index <= CONFIG_REGION
            && offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.device.get_region_size(index))
    }
}

impl VfioRegionSet for VfioDeviceRegions {
    fn name(&self) -> String {
        self.bdf.clone()
    }

    fn region(&self, index: u32) -> Option<RegionDesc> {
        if index > CONFIG_REGION {
            return None;
        }
        let size = self.device.get_region_size(index);
        if size == 0 {
            return None;
        }
        let sparse_areas = self
            .device
            .get_region_caps(index)
            .into_iter()
            .find_map(|c| match c {
                VfioRegionInfoCap::SparseMmap(s) => {
                    Some(s.areas.iter().map(|a| (a.offset, a.size)).collect())
                }
                _ => None,
            });
        Some(RegionDesc {
            size,
            flags: self.device.get_region_flags(index),
            fd_offset: self.device.get_region_offset(index),
            sparse_areas,
        })
    }

    fn read(&self, index: u32, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if self.in_bounds(index, offset, data.len()) {
            self.device.region_read(index, data, offset);
        } else {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "vfio {}: read of region {index} +{offset:#x} ({} bytes) out of bounds",
                self.bdf,
                data.len()
            );
        }
    }

    fn write(&self, index: u32, offset: u64, data: &[u8]) {
        if self.in_bounds(index, offset, data.len()) {
            self.device.region_write(index, data, offset);
        } else {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "vfio {}: write of region {index} +{offset:#x} ({} bytes) out of bounds",
                self.bdf,
                data.len()
            );
        }
    }

    fn map(&self, index: u32, offset: u64, size: u64) -> std::io::Result<HostMapping> {
        let fd_offset = self
            .device
            .get_region_offset(index)
            .checked_add(offset)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the device fd is open for the lifetime of `self`; the borrow ends with this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.device.as_raw_fd()) };
        // 2 MiB-aligned host addresses let KVM use huge pages for BARs of 2 MiB and more (the
        // guest address is size-aligned by the BAR allocator).
        let align = if size >= 0x20_0000 { 0x20_0000 } else { 0x1000 };
        HostMapping::from_fd_aligned(fd, fd_offset, size, align)
    }

    fn device_fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the device fd stays open as long as `self` (and so the borrow) lives.
        Some(unsafe { BorrowedFd::borrow_raw(self.device.as_raw_fd()) })
    }

    fn irq_count(&self, index: u32) -> u32 {
        self.device.get_irq_info(index).map_or(0, |i| i.count)
    }

    fn enable_irq(&self, index: u32, fds: &[&EventFd]) -> Result<(), crate::Error> {
        self.device
            .enable_irq(index, fds.to_vec())
            .map_err(|source| crate::Error::VfioIrq {
                op: "enable",
                index,
                source,
            })
    }

    fn disable_irq(&self, index: u32) -> Result<(), crate::Error> {
        self.device
            .disable_irq(index)
            .map_err(|source| crate::Error::VfioIrq {
                op: "disable",
                index,
                source,
            })
    }

    fn set_irq_resample(&self, index: u32, resample: &EventFd) -> Result<(), crate::Error> {
        if index != IRQ_INTX {
            return Err(crate::Error::NoResample(index));
        }
        self.device
            .set_irq_resample_fd(index, vec![resample])
            .map_err(|source| crate::Error::VfioIrq {
                op: "INTx unmask eventfd",
                index,
                source,
            })
    }
}
