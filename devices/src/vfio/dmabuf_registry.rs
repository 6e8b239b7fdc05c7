//! [`PassthroughRegistry`] over the `vfio-dmabuf` crate's shared device registry, so that
//! virtio-gpu can export dma-bufs from the BARs of our passthrough devices.

use std::os::fd::BorrowedFd;

use vfio_dmabuf::{DeviceId, MmapPiece, RegionInfo, SharedRegistry};

use super::registry::{PassthroughBar, PassthroughRegistry};

/// The `vfio-dmabuf` device list seen through [`PassthroughRegistry`].
#[derive(Clone)]
pub struct DmaBufRegistry(pub SharedRegistry);

impl PassthroughRegistry for DmaBufRegistry {
    fn register_device(&self, name: &str, device_fd: BorrowedFd<'_>) -> Result<u32, crate::Error> {
        let mut reg = self.0.write().unwrap_or_else(|p| p.into_inner());
        reg.register_device(name, device_fd)
            .map(|id| id.0)
            .map_err(crate::Error::RegionTable)
    }

    fn set_region(&self, device: u32, bar: PassthroughBar) -> Result<(), crate::Error> {
        if bar.guest_base == 0 {
            // Unprogrammed (or parked at 0 by the guest): not reachable, not in the table.
            return self.remove_region(device, bar.index);
        }
        let mut reg = self.0.write().unwrap_or_else(|p| p.into_inner());
        let id = DeviceId(device);
        let mut info = RegionInfo::new(
            bar.index,
            bar.guest_base,
            bar.size,
            bar.fd_offset,
            bar.flags,
        )
        .with_decoding(bar.decoding);
        for p in bar.pieces {
            info = info.with_mmap_piece(MmapPiece {
                region_offset: p.region_offset,
                size: p.size,
                host_addr: p.host_addr,
            });
        }
        reg.set_region(id, info).map_err(crate::Error::RegionTable)
    }

    fn remove_region(&self, device: u32, index: u32) -> Result<(), crate::Error> {
        let mut reg = self.0.write().unwrap_or_else(|p| p.into_inner());
        let id = DeviceId(device);
        if reg.region(id, index).is_some() {
            reg.remove_region(id, index)
                .map_err(crate::Error::RegionTable)?;
        }
        Ok(())
    }

    fn unregister_device(&self, device: u32) {
        let mut reg = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = reg.unregister_device(DeviceId(device)) {
            log::warn!("vfio: leaving the region table: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use vfio_dmabuf::DeviceRegistry;

    use super::*;
    use crate::vfio::BarPiece;

    #[test]
    fn fills_and_updates_the_vfio_dmabuf_table() {
        let shared = DeviceRegistry::shared();
        let r = DmaBufRegistry(shared.clone());
        let file = std::fs::File::open("/dev/null").unwrap();
        let id = r.register_device("0000:00:04.0", file.as_fd()).unwrap();
        let bar = PassthroughBar {
            index: 2,
            guest_base: 0x1_0000_0000,
            size: 0x100_0000,
            fd_offset: 2 << 40,
            flags: 7,
            pieces: vec![BarPiece {
                region_offset: 0,
                size: 0x100_0000,
                host_addr: 0x7f00_0000_0000,
            }],
            decoding: true,
        };
        r.set_region(id, bar.clone()).unwrap();
        let generation = {
            let reg = shared.read().unwrap();
            let (key, info) = reg.lookup_gpa(0x1_0000_1000).unwrap();
            assert_eq!(
                (key.device, key.index, info.mmap_pieces.len(), info.decoding),
                (DeviceId(id), 2, 1, true)
            );
            reg.region_generation(DeviceId(id), 2).unwrap()
        };
        // Memory decoding off: the record says so and exports of the old one are stale.
        r.set_region(
            id,
            PassthroughBar {
                decoding: false,
                pieces: Vec::new(),
                ..bar.clone()
            },
        )
        .unwrap();
        {
            let reg = shared.read().unwrap();
            assert!(!reg.region(DeviceId(id), 2).unwrap().decoding);
            assert!(!reg.is_current(DeviceId(id), 2, generation));
        }
        r.set_region(id, bar.clone()).unwrap();
        // The guest moves the BAR.
        r.set_region(
            id,
            PassthroughBar {
                guest_base: 0xd000_0000,
                ..bar.clone()
            },
        )
        .unwrap();
        assert!(shared.read().unwrap().lookup_gpa(0x1_0000_1000).is_none());
        assert!(shared.read().unwrap().lookup_gpa(0xd000_1000).is_some());
        // Parked at 0: removed.
        r.set_region(
            id,
            PassthroughBar {
                guest_base: 0,
                ..bar.clone()
            },
        )
        .unwrap();
        assert!(shared.read().unwrap().region(DeviceId(id), 2).is_none());
        // Removed explicitly, and again (nothing to remove is fine).
        r.set_region(id, bar).unwrap();
        r.remove_region(id, 2).unwrap();
        assert!(shared.read().unwrap().region(DeviceId(id), 2).is_none());
        r.remove_region(id, 2).unwrap();
        r.unregister_device(id);
        assert!(shared.read().unwrap().device_ids().is_empty());
    }
}
