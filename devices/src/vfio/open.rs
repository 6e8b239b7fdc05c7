//! Opening passthrough devices: one IOMMU address space per VM holding all of them, guest RAM
//! DMA-mapped into it once (IOVA = guest-physical address), unmapped on drop.
//!
//! Two kernel interfaces give that address space: iommufd (one IOAS on /dev/iommu, each device
//! through its cdev /dev/vfio/devices/vfioN) when the host has /dev/iommu and the device a
//! cdev, else the legacy VFIO container (/dev/vfio/vfio) holding each device's group. The first
//! device decides; [`super::sysfs::locate`] picks the access per device.

use std::path::Path;
use std::sync::{Arc, Mutex};

use iommufd_ioctls::{IommuFd, IommufdError};
use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use log::{info, warn};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError, VfioIommufd, VfioOps};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::error::{Result, VfioPciError};
use super::sysfs::{locate, open_error, VfioAccess, VfioDeviceLocation};
use super::vfio_regions::VfioDeviceRegions;

const CONTAINER: &str = "the legacy VFIO container";
const IOMMUFD: &str = "iommufd";

/// The IOMMU address space shared by a VM's passthrough devices.
#[derive(Clone)]
enum Iommu {
    /// Legacy: a VFIO container holding the devices' groups.
    Container(Arc<VfioContainer>),
    /// iommufd: one IOAS the devices' cdevs are attached to.
    Iommufd(Arc<VfioIommufd>),
}

impl Iommu {
    fn ops(&self) -> Arc<dyn VfioOps> {
        match self {
            Iommu::Container(c) => c.clone(),
            Iommu::Iommufd(i) => i.clone(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Iommu::Container(_) => CONTAINER,
            Iommu::Iommufd(_) => IOMMUFD,
        }
    }
}

struct IommuState {
    iommu: Iommu,
    /// IOVA ranges mapped (guest RAM, identity: IOVA = guest physical address).
    dma: Vec<(u64, u64)>,
}

/// The VFIO side of a VM: creates the IOMMU address space on the first device and DMA-maps
/// guest RAM into it.
pub struct VfioPassthrough {
    vm: Arc<VmFd>,
    state: Mutex<Option<IommuState>>,
}

impl VfioPassthrough {
    /// Passthrough for `vm` (nothing is opened until [`VfioPassthrough::open`]).
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            state: Mutex::new(None),
        }
    }

    /// The KVM-VFIO pseudo device tells KVM about the devices (non-coherent DMA); optional.
    fn kvm_vfio_device(&self) -> Option<Arc<VfioDeviceFd>> {
        let mut cd = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        match self.vm.create_device(&mut cd) {
            Ok(fd) => Some(Arc::new(VfioDeviceFd::new_from_kvm(fd))),
            Err(e) => {
                warn!("vfio: KVM VFIO device unavailable ({e}), continuing without it");
                None
            }
        }
    }

    fn new_container(&self, bdf: &str) -> Result<Iommu> {
        let container = VfioContainer::new(self.kvm_vfio_device()).map_err(|e| match e {
            VfioError::OpenContainer(io)
                if io.raw_os_error() == Some(libc::ENOENT) && Path::new("/dev/iommu").exists() =>
            {
                VfioPciError::IommufdOnly(bdf.to_owned())
            }
            VfioError::OpenContainer(io) => open_error(io, Path::new("/dev/vfio/vfio")),
            other => VfioPciError::Vfio {
                what: "creating the container",
                source: other,
            },
        })?;
        Ok(Iommu::Container(Arc::new(container)))
    }

    fn new_iommufd(&self) -> Result<Iommu> {
        let fd = IommuFd::new().map_err(|e| match e {
            IommufdError::OpenIommufd(io) => open_error(io, Path::new("/dev/iommu")),
            other => VfioPciError::Vfio {
                what: "opening /dev/iommu",
                source: VfioError::NewVfioIommufd(other),
            },
        })?;
        let iommufd =
            VfioIommufd::new(Arc::new(fd), None, self.kvm_vfio_device()).map_err(|source| {
                VfioPciError::Vfio {
                    what: "allocating an iommufd I/O address space (IOAS)",
                    source,
                }
            })?;
        Ok(Iommu::Iommufd(Arc::new(iommufd)))
    }

    /// The VM's address space, created for `loc` on the first device.
    fn iommu(&self, state: &mut Option<IommuState>, loc: &VfioDeviceLocation) -> Result<Iommu> {
        if let Some(s) = state {
            let have = s.iommu.name();
            let wanted = if loc.access.is_iommufd() {
                IOMMUFD
            } else {
                CONTAINER
            };
            if have != wanted {
                return Err(VfioPciError::MixedIommu {
                    bdf: loc.bdf.clone(),
                    wanted,
                    have,
                });
            }
            return Ok(s.iommu.clone());
        }
        let iommu = match &loc.access {
            VfioAccess::Group(_) => self.new_container(&loc.bdf)?,
            VfioAccess::Cdev(_) => self.new_iommufd()?,
        };
        info!("vfio: passthrough devices use {}", iommu.name());
        *state = Some(IommuState {
            iommu: iommu.clone(),
            dma: Vec::new(),
        });
        Ok(iommu)
    }

    /// Opens `spec` (a BDF or sysfs path) and, on the first device, DMA-maps all of `mem` so
    /// the device can reach guest RAM at guest-physical addresses.
    pub fn open<M: GuestMemoryBackend>(
        &self,
        spec: &str,
        mem: &M,
    ) -> Result<Arc<VfioDeviceRegions>> {
        let loc = locate(spec, Path::new("/sys"), Path::new("/dev"))?;
        self.open_located(&loc, mem)
    }

    fn open_located<M: GuestMemoryBackend>(
        &self,
        loc: &VfioDeviceLocation,
        mem: &M,
    ) -> Result<Arc<VfioDeviceRegions>> {
        let mut state = self.lock();
        let iommu = self.iommu(&mut state, loc)?;
        let node = loc.access.node();
        // With iommufd the device's cdev is bound to /dev/iommu and attached to the IOAS.
        let device = VfioDevice::new(&loc.sysfs_path, iommu.ops(), true).map_err(|e| match e {
            VfioError::GroupViable => VfioPciError::GroupNotViable {
                group: loc.group,
                bdf: loc.bdf.clone(),
                others: "(the kernel says so; check the group's devices)".into(),
            },
            VfioError::OpenGroup(io, _) | VfioError::OpenDeviceCdev(io) => open_error(io, node),
            VfioError::VfioDeviceBindIommufd(errno) if errno.errno() == libc::EBUSY => {
                VfioPciError::GroupBusy(node.to_path_buf())
            }
            other => VfioPciError::Vfio {
                what: "opening the device",
                source: other,
            },
        })?;
        let st = state
            .as_mut()
            .ok_or_else(|| VfioPciError::DmaMap("IOMMU state vanished".into()))?;
        if st.dma.is_empty() {
            let start = std::time::Instant::now();
            let ops = iommu.ops();
            for region in mem.iter() {
                let host = region
                    .get_host_address(MemoryRegionAddress(0))
                    .map_err(|e| VfioPciError::DmaMap(format!("guest RAM host address: {e}")))?;
                let (iova, size) = (region.start_addr().0, region.len());
                let len = usize::try_from(size)
                    .map_err(|_| VfioPciError::DmaMap(format!("region of {size:#x} bytes")))?;
                // SAFETY: `host..host+len` is a guest RAM mapping that is shared with the guest
                // already and only accessed through vm-memory's volatile accessors; it stays
                // mapped for the VM's life, longer than these DMA mappings, which are removed
                // in Drop (or with the container/IOAS).
                unsafe { ops.vfio_dma_map(iova, len, host) }.map_err(|e| {
                    VfioPciError::DmaMap(format!("{iova:#x}+{size:#x} via {}: {e}", iommu.name()))
                })?;
                st.dma.push((iova, size));
            }
            info!(
                "vfio: DMA-mapped {} MiB of guest RAM via {} in {} ms",
                st.dma.iter().map(|r| r.1).sum::<u64>() >> 20,
                iommu.name(),
                start.elapsed().as_millis()
            );
        }
        info!(
            "vfio {}: opened through {} ({})",
            loc.bdf,
            node.display(),
            iommu.name()
        );
        Ok(Arc::new(VfioDeviceRegions::new(loc.bdf.clone(), device)))
    }
}

impl VfioPassthrough {
    /// Whether the IOMMU address space exists (a device was opened and it is not closed).
    pub fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// Unmaps guest RAM from the IOMMU and lets go of the container or IOAS. Call it after
    /// the devices opened through it are gone (each holds the address space too); a later
    /// [`VfioPassthrough::open`] starts a new one.
    pub fn close(&self) {
        let state = self.lock().take();
        if let Some(s) = state {
            let ops = s.iommu.ops();
            for (iova, size) in s.dma {
                let Ok(len) = usize::try_from(size) else {
                    continue;
                };
                // When the last device (group) has already left the container, the kernel has
                // released the IOMMU domain with all its mappings and this fails with EINVAL.
                if let Err(e) = ops.vfio_dma_unmap(iova, len) {
                    log::debug!(
                        "vfio: DMA unmap of {iova:#x}+{size:#x}: {e} (domain already released)"
                    );
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<IommuState>> {
        // Plain data: consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for VfioPassthrough {
    fn drop(&mut self) {
        self.close();
    }
}
