//! One call from VMM options to a virtio-gpu PCI function: display backend, dma-buf exporters
//! (VFIO for passthrough BARs, udmabuf for memfd RAM, each optional), the device, its virtio
//! wrapper and the virtio-pci transport.

use std::sync::Arc;

use devices::pci::MsiRouter;
use devices::virtio::{IoEventRegistrar, VirtioPciDevice, VirtioPciError};
use vfio_dmabuf::{DmaBufExporter, GuestRam, SharedRegistry, UdmabufExporter, VfioExporter};
use vm_memory::GuestMemoryMmap;

use crate::display::{DisplayConfig, DisplayError};
use crate::{DmaBufBlobExporter, GpuConfig, GpuDevice, VirtioGpu};

/// Setting up the GPU failed (host side).
#[derive(Debug, thiserror::Error)]
pub enum GpuSetupError {
    /// The display backend could not be created (e.g. the capture directory).
    #[error("display: {0}")]
    Display(#[from] DisplayError),
    /// The virtio-pci transport could not be created.
    #[error("virtio-pci: {0}")]
    Transport(#[from] VirtioPciError),
}

/// Everything the VMM knows that the GPU needs.
pub struct GpuPciSetup {
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// Mode and limits (`--device gpu=blob,width=W,height=H`).
    pub config: GpuConfig,
    /// `--display headless|capture=<dir>`.
    pub display: DisplayConfig,
    /// Passthrough devices' regions (`--device vfio=...,gpu=blob`): blobs in their BARs are
    /// exported as VFIO dma-bufs. `None`: no passthrough device.
    pub registry: Option<SharedRegistry>,
    /// The memfds behind guest RAM: blobs in RAM are exported as udmabufs (when
    /// `/dev/udmabuf` opens). `None`: RAM blobs take the CPU path.
    pub guest_ram: Option<GuestRam>,
    /// The VM's MSI router (GSIs, routes, irqfds).
    pub msi_router: Arc<dyn MsiRouter>,
    /// ioeventfd registration (`devices::virtio::KvmIoEvents`).
    pub ioevents: Arc<dyn IoEventRegistrar>,
}

impl GpuPciSetup {
    /// Builds the PCI function; add it to the bus with `PciBus::add_device`.
    pub fn build(self) -> Result<VirtioPciDevice, GpuSetupError> {
        let display = self.display.build()?;
        let vfio: Option<Box<dyn DmaBufExporter>> = self
            .registry
            .as_ref()
            .map(|r| Box::new(VfioExporter::new(r.clone())) as Box<dyn DmaBufExporter>);
        let udmabuf: Option<Box<dyn DmaBufExporter>> = match self.guest_ram {
            Some(ram) => match UdmabufExporter::open(ram) {
                Ok(u) => Some(Box::new(u)),
                Err(e) => {
                    log::warn!(
                        "virtio-gpu: udmabuf unavailable ({e}); blobs in RAM use the CPU path"
                    );
                    None
                }
            },
            None => None,
        };
        let exporter = DmaBufBlobExporter::new(self.registry, vfio, udmabuf);
        let gpu = GpuDevice::new(self.mem.clone(), self.config, display, Box::new(exporter));
        Ok(VirtioPciDevice::new(
            Box::new(VirtioGpu::new(gpu)),
            self.mem,
            self.msi_router,
            self.ioevents,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use devices::pci::PciDevice;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    #[derive(Default)]
    struct Router(Mutex<u32>);

    impl MsiRouter for Router {
        fn allocate_gsi(&self) -> Result<u32, String> {
            let mut n = self.0.lock().unwrap();
            *n += 1;
            Ok(40 + *n)
        }
        fn release_gsi(&self, _: u32) {}
        fn set_msi_route(&self, _: u32, _: u64, _: u32) -> Result<(), String> {
            Ok(())
        }
        fn register_irqfd(&self, _: &EventFd, _: u32) -> Result<(), String> {
            Ok(())
        }
        fn unregister_irqfd(&self, _: &EventFd, _: u32) -> Result<(), String> {
            Ok(())
        }
        fn register_irqfd_with_resample(
            &self,
            _: &EventFd,
            _: &EventFd,
            _: u32,
        ) -> Result<(), String> {
            Ok(())
        }
    }

    struct Io;

    impl IoEventRegistrar for Io {
        fn register(&self, _: &EventFd, _: u64) -> Result<(), String> {
            Ok(())
        }
        fn unregister(&self, _: &EventFd, _: u64) -> Result<(), String> {
            Ok(())
        }
    }

    fn setup(display: DisplayConfig, guest_ram: Option<GuestRam>) -> GpuPciSetup {
        GpuPciSetup {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap(),
            config: GpuConfig::default(),
            display,
            registry: Some(vfio_dmabuf::DeviceRegistry::shared()),
            guest_ram,
            msi_router: Arc::new(Router::default()),
            ioevents: Arc::new(Io),
        }
    }

    #[test]
    fn builds_a_virtio_gpu_pci_function() {
        // Guest RAM given: without /dev/udmabuf (as here) the build still succeeds.
        let mut dev = setup(DisplayConfig::Headless, Some(GuestRam::new()))
            .build()
            .unwrap();
        assert_eq!(dev.read_config_register(0), 0x1050_1af4);
    }

    #[test]
    fn a_capture_directory_that_cannot_be_created_is_an_error() {
        let display = DisplayConfig::Capture {
            dir: "/proc/no-such-dir/x".into(),
            max_fps: 10,
        };
        assert!(matches!(
            setup(display, None).build(),
            Err(GpuSetupError::Display(_))
        ));
    }
}
