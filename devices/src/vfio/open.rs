//! Opening passthrough devices: one VFIO container (IOMMU domain) per VM holding all their
//! groups, guest RAM DMA-mapped into it once, unmapped on drop.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use log::{info, warn};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioError};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::error::{Result, VfioPciError};
use super::sysfs::{locate, VfioDeviceLocation};
use super::vfio_regions::VfioDeviceRegions;

struct ContainerState {
    container: Arc<VfioContainer>,
    /// IOVA ranges mapped (guest RAM, identity: IOVA = guest physical address).
    dma: Vec<(u64, u64)>,
}

/// The VFIO side of a VM: creates the container on the first device and DMA-maps guest RAM.
pub struct VfioPassthrough {
    vm: Arc<VmFd>,
    state: Mutex<Option<ContainerState>>,
}

impl VfioPassthrough {
    /// Passthrough for `vm` (nothing is opened until [`VfioPassthrough::open`]).
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            state: Mutex::new(None),
        }
    }

    fn container(&self, state: &mut Option<ContainerState>) -> Result<Arc<VfioContainer>> {
        if let Some(s) = state {
            return Ok(s.container.clone());
        }
        // The KVM-VFIO pseudo device tells KVM about non-coherent DMA; optional.
        let mut cd = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let kvm_vfio = match self.vm.create_device(&mut cd) {
            Ok(fd) => Some(Arc::new(VfioDeviceFd::new_from_kvm(fd))),
            Err(e) => {
                warn!("vfio: KVM VFIO device unavailable ({e}), continuing without it");
                None
            }
        };
        let container = VfioContainer::new(kvm_vfio).map_err(|e| match e {
            VfioError::OpenContainer(io) => match io.raw_os_error() {
                Some(libc::ENOENT) if Path::new("/dev/iommu").exists() => VfioPciError::IommufdOnly,
                Some(libc::ENOENT) => VfioPciError::NoGroupNode("/dev/vfio/vfio".into()),
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    VfioPciError::PermissionDenied("/dev/vfio/vfio".into())
                }
                _ => VfioPciError::Io {
                    what: "opening",
                    path: "/dev/vfio/vfio".into(),
                    source: io,
                },
            },
            other => VfioPciError::Vfio {
                what: "creating the container",
                source: other,
            },
        })?;
        let container = Arc::new(container);
        *state = Some(ContainerState {
            container: container.clone(),
            dma: Vec::new(),
        });
        Ok(container)
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
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let container = self.container(&mut state)?;
        let device =
            VfioDevice::new(&loc.sysfs_path, container.clone(), false).map_err(|e| match e {
                VfioError::GroupViable => VfioPciError::GroupNotViable {
                    group: loc.group,
                    bdf: loc.bdf.clone(),
                    others: "(the kernel says so; check the group's devices)".into(),
                },
                VfioError::OpenGroup(io, _)
                    if matches!(io.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) =>
                {
                    VfioPciError::PermissionDenied(loc.group_node.clone())
                }
                VfioError::OpenGroup(io, _) if io.raw_os_error() == Some(libc::EBUSY) => {
                    VfioPciError::GroupBusy(loc.group_node.clone())
                }
                other => VfioPciError::Vfio {
                    what: "opening the device",
                    source: other,
                },
            })?;
        let st = state
            .as_mut()
            .ok_or_else(|| VfioPciError::DmaMap("container vanished".into()))?;
        if st.dma.is_empty() {
            let start = std::time::Instant::now();
            // SAFETY: guest RAM is shared with the guest already and only accessed through
            // vm-memory's volatile accessors; it stays mapped for the VM's life, longer than
            // this container's DMA mappings, which are removed in Drop (or with the container).
            unsafe { container.vfio_map_guest_memory(mem) }
                .map_err(|e| VfioPciError::DmaMap(e.to_string()))?;
            st.dma = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
            info!(
                "vfio: DMA-mapped {} MiB of guest RAM in {} ms",
                st.dma.iter().map(|r| r.1).sum::<u64>() >> 20,
                start.elapsed().as_millis()
            );
        }
        Ok(Arc::new(VfioDeviceRegions::new(loc.bdf.clone(), device)))
    }
}

impl Drop for VfioPassthrough {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = state.take() {
            for (iova, size) in s.dma {
                let Ok(len) = usize::try_from(size) else {
                    continue;
                };
                // When the last device (group) has already left the container, the kernel has
                // released the IOMMU domain with all its mappings and this fails with EINVAL.
                if let Err(e) = s.container.vfio_dma_unmap(iova, len) {
                    log::debug!(
                        "vfio: DMA unmap of {iova:#x}+{size:#x}: {e} (domain already released)"
                    );
                }
            }
        }
    }
}
