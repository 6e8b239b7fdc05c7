//! The PCI devices asked for with `--device`: VFIO passthrough devices and at most one
//! virtio-gpu, built behind the VM's PCI-to-PCI bridge (bus 1) before the vCPUs run; and the
//! pvpanic device every VM gets ([`add_pvpanic`]). Behind one bridge without ACS, a guest lets
//! the GPU import a buffer that lives in a passthrough BAR on any CPU.
//!
//! [`plan`] checks the parsed specs; [`build`] turns the plan into devices, each taking what it
//! needs from the VM's [`VmResources`](crate::vm::VmResources) (memory slots, GSIs and routes,
//! ioeventfds, BAR windows, the passthrough IOMMU space). One `vfio-dmabuf` region table is
//! shared by every passthrough device and the GPU's dma-buf exporter (so a blob in a
//! passthrough BAR is exported from that BAR).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use devices::pci::{MsiRouter, PciError, PciSlot, SharedPciDevice, BRIDGE_BUS};
use devices::pvpanic::{PvpanicDevice, PvpanicHandler};
use devices::vfio::{interrupt_pin, VfioPciDevice, VfioPciDeviceEnv, VfioPciError};
use devices::virtio::{VirtioDevice, VirtioGpu, VirtioInput, VirtioPciDevice, VirtioPciError};
use thiserror::Error;
use vfio_dmabuf::{
    BlobExporter, DeviceRegistry, SharedRegistry, SysDeviceFeature, UdmabufExporter,
};
use virtio_gpu_blob::display::DisplayError;
use virtio_gpu_blob::{DisplayBackend, GpuConfig, GpuDevice};
use virtio_gpu_display::{DisplayConfig, DisplayFanout, InputSink, SummaryLine};

use crate::cli::{DeviceSpec, GpuSpec};
use crate::guest_input::GuestInput;
use crate::layout::{bridge_swizzle, pci_intx_gsi};
use crate::memory::GuestRam;
use crate::vm::{lock, Vm};

/// Errors creating the `--device` devices (printed to the user as they are).
#[derive(Debug, Error)]
pub enum PciDevicesError {
    /// Two `--device` arguments ask for a virtio-gpu.
    #[error(
        "only one virtio-gpu is supported: --device {first} and --device {second} both ask for \
         one (use gpu=blob once)"
    )]
    TwoGpus {
        /// The first device asking for a GPU.
        first: String,
        /// The second one.
        second: String,
    },
    /// The same host device is named twice.
    #[error("--device vfio={0} is given twice: a host device can be passed through once")]
    DuplicateVfio(String),
    /// A sysfs path that is not valid UTF-8.
    #[error("--device vfio={0}: the path is not valid UTF-8")]
    BadPath(String),
    /// Opening or setting up a passthrough device failed (the message says how to fix it).
    #[error("--device vfio={spec}: {source}")]
    Vfio {
        /// The device as given.
        spec: String,
        /// What went wrong.
        source: VfioPciError,
    },
    /// The display backend could not be created.
    #[error("--display: {0}")]
    Display(#[source] DisplayError),
    /// The virtio-pci transport of a device could not be created.
    #[error("{what}: {source}")]
    Virtio {
        /// The device.
        what: &'static str,
        /// Why.
        source: VirtioPciError,
    },
    /// A virtio-input device could not be created.
    #[error("virtio-input: {0}")]
    Input(#[source] devices::Error),
    /// The bus refused a device (no free slot, BAR window full).
    #[error("cannot add {what} to PCI bus 0: {source}")]
    Bus {
        /// The device.
        what: String,
        /// Why.
        source: PciError,
    },
}

/// One passthrough device to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioPlan {
    /// As shown to the user (BDF or sysfs path).
    pub name: String,
    /// Sysfs directory of the device.
    pub sysfs_path: PathBuf,
}

/// What the `--device` arguments ask for, checked before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevicePlan {
    /// Passthrough devices, in command-line order.
    pub vfio: Vec<VfioPlan>,
    /// The virtio-gpu, if any.
    pub gpu: Option<GpuSpec>,
}

fn describe(d: &DeviceSpec) -> String {
    match (&d.vfio, &d.gpu) {
        (Some(v), Some(_)) => format!("vfio={},gpu=blob", vfio_name(v)),
        (Some(v), None) => format!("vfio={}", vfio_name(v)),
        (None, _) => "gpu=blob".to_string(),
    }
}

fn vfio_name(v: &crate::cli::VfioHost) -> String {
    match v {
        crate::cli::VfioHost::Bdf(bdf) => bdf.to_string(),
        crate::cli::VfioHost::SysfsPath(p) => p.display().to_string(),
    }
}

/// Checks the specs: at most one GPU (`gpu=blob` alone or on a vfio device), no host device
/// twice.
pub fn plan(specs: &[DeviceSpec]) -> Result<DevicePlan, PciDevicesError> {
    let mut plan = DevicePlan::default();
    let mut gpu_from: Option<String> = None;
    for d in specs {
        if let Some(v) = &d.vfio {
            let sysfs_path = v.sysfs_path();
            if plan.vfio.iter().any(|p| p.sysfs_path == sysfs_path) {
                return Err(PciDevicesError::DuplicateVfio(vfio_name(v)));
            }
            plan.vfio.push(VfioPlan {
                name: vfio_name(v),
                sysfs_path,
            });
        }
        if let Some(g) = d.gpu {
            if let Some(first) = &gpu_from {
                return Err(PciDevicesError::TwoGpus {
                    first: first.clone(),
                    second: describe(d),
                });
            }
            gpu_from = Some(describe(d));
            plan.gpu = Some(g);
        }
    }
    Ok(plan)
}

/// The GPU's settings from `gpu=blob[,width=W,height=H]`.
pub fn gpu_config(spec: &GpuSpec) -> GpuConfig {
    let d = GpuConfig::default();
    GpuConfig {
        width: spec.width.unwrap_or(d.width),
        height: spec.height.unwrap_or(d.height),
        ..d
    }
}

/// The `vfio-dmabuf` view of guest RAM (which memfd range backs which guest range); `None`
/// when guest RAM is anonymous memory (nothing udmabuf can export).
pub fn udmabuf_ram(
    ram: &GuestRam,
) -> Option<Result<vfio_dmabuf::GuestRam, vfio_dmabuf::DmaBufError>> {
    let memfd = ram.memfd()?;
    let mut out = vfio_dmabuf::GuestRam::new();
    for r in ram.regions() {
        let added = out.add_region(
            r.range.start,
            r.range.len,
            std::os::fd::AsFd::as_fd(&**memfd),
            r.memfd_offset.unwrap_or(0),
        );
        if let Err(e) = added {
            return Some(Err(e));
        }
    }
    Some(Ok(out))
}

/// What [`build`] put on the VM's PCI bus. The devices themselves belong to the VM (its bus
/// holds them and its shutdown tears them down): this only says where they are.
#[derive(Default)]
pub struct PciDevices {
    gpu: Option<PciSlot>,
    vfio: Vec<PciSlot>,
    input: Vec<PciSlot>,
    registry: Option<SharedRegistry>,
    display_summaries: Vec<SummaryLine>,
}

impl PciDevices {
    /// The displays' lines for the exit summary (their figures so far).
    pub fn display_summaries(&self) -> Vec<String> {
        self.display_summaries.iter().map(|f| f()).collect()
    }

    /// Passthrough devices created.
    pub fn vfio_count(&self) -> usize {
        self.vfio.len()
    }

    /// virtio-input devices created (a keyboard and a tablet, or none).
    pub fn input_count(&self) -> usize {
        self.input.len()
    }

    /// Whether a virtio-gpu was created.
    pub fn has_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// The region table shared by the passthrough devices and the GPU.
    pub fn registry(&self) -> Option<&SharedRegistry> {
        self.registry.as_ref()
    }
}

/// The virtio-input keyboard and tablet a display with input feeds.
struct InputDevices {
    keyboard: VirtioInput,
    tablet: VirtioInput,
}

impl InputDevices {
    fn new() -> Result<Self, PciDevicesError> {
        Ok(InputDevices {
            keyboard: VirtioInput::keyboard().map_err(PciDevicesError::Input)?,
            tablet: VirtioInput::tablet().map_err(PciDevicesError::Input)?,
        })
    }

    fn sink(&self) -> GuestInput {
        GuestInput {
            keyboard: self.keyboard.handle(),
            tablet: self.tablet.handle(),
        }
    }
}

/// Builds the devices of a plan on the VM's PCI bus, each from the VM's resources.
struct Builder<'a> {
    vm: &'a Vm,
    registry: SharedRegistry,
    out: PciDevices,
}

impl Builder<'_> {
    /// Adds `dev` at `at` (the first free slot behind the bridge if `None`); its BARs get
    /// addresses from the VM's windows. Returns where it went.
    fn add_to_bus(
        &self,
        at: Option<PciSlot>,
        what: String,
        dev: SharedPciDevice,
    ) -> Result<PciSlot, PciDevicesError> {
        let mut bus = lock(self.vm.pci_bus());
        let mut windows = lock(&self.vm.resources().windows);
        match at {
            Some(at) => bus.add_device_at(at, dev, &mut windows).map(|()| at),
            None => bus.add_device(BRIDGE_BUS, dev, &mut windows),
        }
        .map_err(|source| PciDevicesError::Bus { what, source })
    }

    /// The GSI INTx pin `pin` (1..=4; 0: none) of the device at `at` behind the bridge reaches:
    /// through the bridge swizzle to the bridge's pin, and from there as the `_PRT` says.
    fn intx_gsi(&self, at: PciSlot, pin: u8) -> Option<u32> {
        let bridge = lock(self.vm.pci_bus()).bridge_slot()?;
        let pin = pin.checked_sub(1).filter(|p| *p < 4)?;
        Some(pci_intx_gsi(bridge.slot, bridge_swizzle(at.slot, pin)))
    }

    /// Opens the host device of `v` through the VM's passthrough address space and puts it
    /// behind the bridge, wired to the VM's memory slots, MSI routes and the region table.
    fn vfio(&mut self, v: &VfioPlan) -> Result<(), PciDevicesError> {
        let resources = self.vm.resources();
        let spec = v
            .sysfs_path
            .to_str()
            .ok_or_else(|| PciDevicesError::BadPath(v.name.clone()))?;
        let vfio_err = |source| PciDevicesError::Vfio {
            spec: v.name.clone(),
            source,
        };
        let what = format!("vfio={}", v.name);
        // The slot the device will get: its INTx wiring depends on it.
        let at = lock(self.vm.pci_bus())
            .free_slot(BRIDGE_BUS)
            .map_err(|source| PciDevicesError::Bus {
                what: what.clone(),
                source,
            })?;
        let regions = resources
            .passthrough
            .open(spec, self.vm.ram().memory())
            .map_err(vfio_err)?;
        let intx_gsi = self.intx_gsi(at, interrupt_pin(&*regions));
        let dev = VfioPciDevice::new(
            regions,
            VfioPciDeviceEnv {
                slots: resources.slots.clone(),
                irq_router: Some(resources.msi.clone() as Arc<dyn MsiRouter>),
                intx_gsi,
                registry: Some(self.registry.clone()),
                page_size: vfio_dmabuf::host_page_size(),
            },
        )
        .map_err(vfio_err)?;
        self.add_to_bus(Some(at), what, Arc::new(Mutex::new(dev)))?;
        match intx_gsi {
            Some(gsi) => log::info!(
                "vmm: PCI {at}: passthrough of {}, INTx on GSI {gsi}",
                v.name
            ),
            None => log::info!("vmm: PCI {at}: passthrough of {}, no INTx pin", v.name),
        }
        self.out.vfio.push(at);
        Ok(())
    }

    /// Puts a virtio device behind a virtio-pci transport on the bus (the first free slot).
    fn virtio(
        &mut self,
        what: &'static str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<PciSlot, PciDevicesError> {
        let resources = self.vm.resources();
        let dev = VirtioPciDevice::new(
            device,
            self.vm.ram().memory().clone(),
            resources.msi.clone(),
            resources.ioevents.clone(),
        )
        .map_err(|source| PciDevicesError::Virtio { what, source })?;
        self.add_to_bus(None, what.into(), Arc::new(Mutex::new(dev)))
    }

    /// Puts the virtio-input keyboard and tablet of `input` on the bus.
    fn input(&mut self, input: InputDevices) -> Result<(), PciDevicesError> {
        for (what, dev) in [
            ("virtio-input keyboard", input.keyboard),
            ("virtio-input tablet", input.tablet),
        ] {
            let slot = self.virtio(what, Box::new(dev))?;
            log::info!("vmm: PCI {slot}: {what}");
            self.out.input.push(slot);
        }
        Ok(())
    }

    /// Puts a virtio-gpu on the bus, displaying on every one of `displays` (with virtio-input
    /// devices when one of them feeds input), exporting blobs through udmabuf (guest RAM) and,
    /// with passthrough devices, from their BARs.
    fn gpu(
        &mut self,
        spec: &GpuSpec,
        displays: &[DisplayConfig],
        with_vfio: bool,
    ) -> Result<(), PciDevicesError> {
        // Built first (the displays need their handles), put on the bus after the GPU.
        let input = if displays.iter().any(|d| d.wants_input()) {
            Some(InputDevices::new()?)
        } else {
            None
        };
        let sink = input
            .as_ref()
            .map(|i| Arc::new(i.sink()) as Arc<dyn InputSink>);
        let mut backends = Vec::new();
        for d in displays {
            let built = d.build(sink.clone()).map_err(PciDevicesError::Display)?;
            backends.push(built.backend);
            self.out.display_summaries.extend(built.summary);
        }
        let backend: Box<dyn DisplayBackend> = match backends.len() {
            1 => backends.remove(0),
            _ => Box::new(DisplayFanout::new(backends)),
        };
        let ram = self.vm.ram();
        let mut exporter = BlobExporter::new();
        match udmabuf_ram(ram).map(|r| r.and_then(UdmabufExporter::open)) {
            Some(Ok(u)) => exporter = exporter.with_udmabuf(u),
            Some(Err(e)) => {
                log::info!("vmm: no udmabuf export ({e}): blobs in guest RAM use the CPU path")
            }
            None => log::info!(
                "vmm: guest RAM is anonymous memory: blobs in guest RAM use the CPU path"
            ),
        }
        if with_vfio {
            exporter = exporter.with_vfio(self.registry.clone(), SysDeviceFeature);
        }
        let cfg = gpu_config(spec);
        let (width, height) = (cfg.width, cfg.height);
        let gpu = GpuDevice::new(cfg, backend, Box::new(exporter));
        let slot = self.virtio("virtio-gpu", Box::new(VirtioGpu::new(gpu)))?;
        log::info!("vmm: PCI {slot}: virtio-gpu {width}x{height}, display {displays:?}");
        self.out.gpu = Some(slot);
        if let Some(input) = input {
            self.input(input)?;
        }
        Ok(())
    }
}

/// Builds the devices `specs` ask for on the VM's PCI bus 0, from the VM's resources: every
/// `vfio=` a passthrough device, one virtio-gpu for `gpu=blob` (displaying on `display`). Call
/// before the vCPUs run. On an error the devices built so far stay on the bus; the VM's
/// shutdown removes them with the rest.
pub fn build(
    vm: &Vm,
    specs: &[DeviceSpec],
    displays: &[DisplayConfig],
) -> Result<PciDevices, PciDevicesError> {
    let plan = plan(specs)?;
    if plan.gpu.is_none() && displays.iter().any(|d| *d != DisplayConfig::Headless) {
        log::warn!("--display: no gpu device (--device gpu=blob), nothing will be displayed");
    }
    if plan.vfio.is_empty() && plan.gpu.is_none() {
        return Ok(PciDevices::default());
    }
    let registry = DeviceRegistry::shared();
    let mut builder = Builder {
        vm,
        registry: registry.clone(),
        out: PciDevices {
            registry: Some(registry),
            ..PciDevices::default()
        },
    };
    for v in &plan.vfio {
        builder.vfio(v)?;
    }
    if let Some(spec) = &plan.gpu {
        builder.gpu(spec, displays, !plan.vfio.is_empty())?;
    }
    Ok(builder.out)
}

/// Puts the pvpanic device behind the VM's PCI-to-PCI bridge (the first free slot), reporting
/// the guest's events to `handler`. Call after [`build`], so the `--device` devices keep their
/// slots.
pub fn add_pvpanic(vm: &Vm, handler: PvpanicHandler) -> Result<PciSlot, PciDevicesError> {
    let bus_err = |source| PciDevicesError::Bus {
        what: "pvpanic".into(),
        source,
    };
    let dev = PvpanicDevice::new(handler).map_err(bus_err)?;
    let mut bus = lock(vm.pci_bus());
    let mut windows = lock(&vm.resources().windows);
    let slot = bus
        .add_device(BRIDGE_BUS, Arc::new(Mutex::new(dev)), &mut windows)
        .map_err(bus_err)?;
    log::debug!("vmm: PCI {slot}: pvpanic");
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_device;
    use crate::memory::RamBacking;
    use devices::pci::{lock_device, BarSpace};
    use devices::pvpanic::PvpanicEvent;

    fn specs(args: &[&str]) -> Vec<DeviceSpec> {
        args.iter().map(|a| parse_device(a).unwrap()).collect()
    }

    #[test]
    fn plan_collects_vfio_devices_and_one_gpu() {
        let p = plan(&specs(&[
            "vfio=00:03.0",
            "vfio=/sys/bus/pci/devices/0000:00:04.0,gpu=blob,width=640,height=480",
        ]))
        .unwrap();
        assert_eq!(p.vfio.len(), 2);
        assert_eq!(p.vfio[0].name, "0000:00:03.0");
        assert_eq!(
            p.vfio[0].sysfs_path,
            PathBuf::from("/sys/bus/pci/devices/0000:00:03.0")
        );
        assert_eq!(p.vfio[1].name, "/sys/bus/pci/devices/0000:00:04.0");
        let g = p.gpu.unwrap();
        assert_eq!((g.width, g.height), (Some(640), Some(480)));

        let p = plan(&specs(&["gpu=blob"])).unwrap();
        assert!(p.vfio.is_empty() && p.gpu.is_some());
        assert_eq!(plan(&[]).unwrap(), DevicePlan::default());
    }

    #[test]
    fn two_gpus_are_refused_naming_both() {
        let e = plan(&specs(&["vfio=00:03.0,gpu=blob", "gpu=blob,width=800"])).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, PciDevicesError::TwoGpus { .. }), "{msg}");
        assert!(msg.contains("vfio=0000:00:03.0,gpu=blob"), "{msg}");
        assert!(msg.contains("--device gpu=blob"), "{msg}");
        assert!(plan(&specs(&["gpu=blob", "gpu=blob"])).is_err());
    }

    #[test]
    fn the_same_host_device_twice_is_refused() {
        let e = plan(&specs(&[
            "vfio=00:03.0",
            "vfio=/sys/bus/pci/devices/0000:00:03.0",
        ]))
        .unwrap_err();
        assert!(matches!(e, PciDevicesError::DuplicateVfio(_)), "{e}");
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn gpu_size_defaults_and_overrides() {
        let d = GpuConfig::default();
        let spec = |w, h| GpuSpec {
            mode: crate::cli::GpuMode::Blob,
            width: w,
            height: h,
        };
        let c = gpu_config(&spec(None, None));
        assert_eq!((c.width, c.height), (d.width, d.height));
        let c = gpu_config(&spec(Some(640), None));
        assert_eq!((c.width, c.height), (640, d.height));
        assert_eq!(c.max_hostmem, d.max_hostmem);
    }

    fn kvm_vm() -> Option<crate::vm::Vm> {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm: device creation not tested");
            return None;
        }
        Some(
            crate::vm::Vm::new(
                64 << 20,
                RamBacking::Memfd,
                crate::vm::PciConfigAccess::Ecam,
            )
            .unwrap(),
        )
    }

    #[test]
    fn gpu_blob_becomes_a_virtio_gpu_behind_the_bridge_with_a_64bit_bar() {
        let Some(vm) = kvm_vm() else { return };
        let devs = build(
            &vm,
            &specs(&["gpu=blob,width=640,height=480"]),
            &[DisplayConfig::Headless],
        )
        .unwrap();
        assert!(devs.has_gpu() && devs.vfio_count() == 0);
        assert!(devs.registry().is_some());
        assert!(
            !vm.resources().passthrough.is_open(),
            "no passthrough device"
        );
        // The transport took its three vectors' GSIs from the VM.
        assert_eq!(vm.resources().msi.gsis_in_use(), vec![24, 25, 26]);
        let bus = vm.pci_bus().lock().unwrap();
        assert_eq!(bus.bridge_slot(), Some(PciSlot::root(1)));
        assert_eq!(
            bus.read_config(0, 1, 0, 0),
            0x0001_1b36,
            "the PCI-to-PCI bridge"
        );
        let dev = bus
            .device(PciSlot::behind_bridge(0))
            .expect("GPU at 01:00.0");
        let mut d = dev.lock().unwrap();
        let id = d.read_config_register(0);
        assert_eq!(id & 0xffff, 0x1af4, "virtio vendor");
        assert_eq!(id >> 16, 0x1040 + 16, "virtio-gpu device id");
        // BAR0 is a 64-bit memory BAR the allocator programmed (non-zero address).
        let bar0 = d.read_config_register(4);
        assert_eq!(bar0 & 0x7, 0x4, "64-bit memory BAR");
        let bar_hi = d.read_config_register(5);
        assert_ne!(u64::from(bar_hi) << 32 | u64::from(bar0 & !0xf), 0);
        drop(d);
        assert!(bus.device(PciSlot::behind_bridge(1)).is_none());
        assert_eq!(
            bus.read_config(1, 0, 0, 0),
            id,
            "config access through the bridge"
        );
    }

    #[test]
    fn a_vnc_display_with_input_adds_a_keyboard_and_a_tablet_after_the_gpu() {
        let Some(vm) = kvm_vm() else { return };
        let displays = [
            DisplayConfig::Headless,
            DisplayConfig::parse("vnc=127.0.0.1:0").unwrap(),
        ];
        let devs = build(&vm, &specs(&["gpu=blob"]), &displays).unwrap();
        assert!(devs.has_gpu());
        assert_eq!(devs.input_count(), 2);
        let bus = vm.pci_bus().lock().unwrap();
        for (slot, device_id) in [(0, 0x1040 + 16), (1, 0x1040 + 18), (2, 0x1040 + 18)] {
            let dev = bus.device(PciSlot::behind_bridge(slot)).expect("device");
            let id = dev.lock().unwrap().read_config_register(0);
            assert_eq!(id >> 16, device_id, "slot {slot}");
        }
        drop(bus);
        let Some(vm) = kvm_vm() else { return };
        let off = [DisplayConfig::parse("vnc=127.0.0.1:0,input=off").unwrap()];
        let devs = build(&vm, &specs(&["gpu=blob"]), &off).unwrap();
        assert_eq!(devs.input_count(), 0);
    }

    #[test]
    fn no_devices_no_state() {
        let Some(vm) = kvm_vm() else { return };
        let devs = build(&vm, &[], &[DisplayConfig::Headless]).unwrap();
        assert!(!devs.has_gpu() && devs.registry().is_none());
        assert!(vm.resources().msi.gsis_in_use().is_empty());
        assert_eq!(vm.resources().slots.in_use(), vm.ram_slots());
        assert!(vm
            .pci_bus()
            .lock()
            .unwrap()
            .device(PciSlot::behind_bridge(0))
            .is_none());
    }

    #[test]
    fn missing_host_device_is_a_clear_error_naming_it() {
        let Some(vm) = kvm_vm() else { return };
        let e = build(
            &vm,
            &specs(&["vfio=0000:7f:1f.7,gpu=blob"]),
            &[DisplayConfig::Headless],
        )
        .err()
        .expect("no such device");
        let msg = e.to_string();
        assert!(matches!(e, PciDevicesError::Vfio { .. }), "{msg}");
        assert!(msg.starts_with("--device vfio=0000:7f:1f.7: "), "{msg}");
        assert!(msg.contains("no PCI device"), "{msg}");
        assert!(
            vm.pci_bus()
                .lock()
                .unwrap()
                .device(PciSlot::behind_bridge(0))
                .is_none(),
            "no GPU either"
        );
    }

    #[test]
    fn pvpanic_takes_the_next_free_slot_and_reports_a_guest_write() {
        let Some(vm) = kvm_vm() else { return };
        build(&vm, &specs(&["gpu=blob"]), &[DisplayConfig::Headless]).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let slot = add_pvpanic(&vm, Box::new(move |e| seen.lock().unwrap().push(e))).unwrap();
        assert_eq!(
            slot,
            PciSlot::behind_bridge(1),
            "behind the bridge, after the GPU"
        );
        let bus = lock(vm.pci_bus());
        assert_eq!(bus.read_config(1, 1, 0, 0), 0x0011_1b36);
        assert_eq!(bus.read_config(1, 1, 0, 2) >> 8, 0x08_8000);
        let bar = lock_device(&bus.device(slot).unwrap()).bars()[0];
        assert!(bar.addr != 0 && bar.size == 16, "{bar:?}");
        // Memory decoding on, as the guest's driver does, then the event register.
        bus.write_config(1, 1, 0, 1, 0, &[0x02]);
        let router = bus.router();
        let mut b = [0u8; 1];
        router.read(BarSpace::Mmio, bar.addr, &mut b);
        assert_eq!(b, [0x03]);
        router.write(BarSpace::Mmio, bar.addr, &[0x01]);
        assert_eq!(*events.lock().unwrap(), vec![PvpanicEvent::Panicked]);
    }

    #[test]
    fn anonymous_ram_has_no_udmabuf_view() {
        let ram = GuestRam::new(64 << 20, RamBacking::Anonymous).unwrap();
        assert!(udmabuf_ram(&ram).is_none());
    }

    #[test]
    fn udmabuf_view_covers_guest_ram_at_memfd_offsets() {
        let size = crate::layout::MMIO_HOLE_START + (64 << 20);
        let ram = GuestRam::new(size, RamBacking::Memfd).unwrap();
        let view = udmabuf_ram(&ram).unwrap().unwrap();
        let low = view.lookup(0x1000).unwrap();
        assert_eq!((low.guest_base, low.fd_offset), (0, 0));
        let high = view.lookup(crate::layout::HIGH_RAM_START + 4096).unwrap();
        assert_eq!(high.guest_base, crate::layout::HIGH_RAM_START);
        assert_eq!(high.fd_offset, crate::layout::MMIO_HOLE_START);
        assert_eq!(high.size, 64 << 20);
        assert!(view.lookup(crate::layout::MMIO_HOLE_START).is_none());
    }
}
