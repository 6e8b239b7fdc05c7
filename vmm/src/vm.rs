//! The KVM VM: in-kernel irqchip and PIT, guest RAM, the VM-wide resources devices take
//! (memory slots, GSIs and routes, ioeventfds, address windows, the passthrough IOMMU space),
//! the device buses and the vCPUs, and the order in which it is all torn down.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use devices::legacy::{
    AcpiPm, AcpiPmHandler, Cmos, EventFdTrigger, SerialDevice, ACPI_PM_PORT, ACPI_PM_PORT_LEN,
    CMOS_PORT_BASE, CMOS_PORT_LEN, I8042, I8042_COMMAND_PORT, I8042_DATA_PORT, SERIAL_COM1_IRQ,
    SERIAL_COM1_PORT, SERIAL_PORT_LEN,
};
use devices::memory_slots::{GuestMemorySlots, KvmMemorySlots};
use devices::pci::{
    lock_device, BarAllocator, BarWindow, KvmMsiRouter, PciBus, PciConfigIo, PciConfigMmio,
    PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE,
};
use devices::vfio::VfioPassthrough;
use devices::virtio::KvmIoEvents;
use kvm_bindings::{kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::{cpuid, regs};
use crate::layout::{
    pci_mmio64_window, KVM_IDENTITY_MAP_START, KVM_TSS_START, PCI_ECAM_SIZE, PCI_ECAM_START,
    PCI_IO_SIZE, PCI_IO_START, PCI_MMIO32_SIZE, PCI_MMIO32_START, POWER_BUTTON_GSI,
};
use crate::memory::{GuestRam, MemoryError, RamBacking};
use crate::vcpu::{ExitNotifier, Vcpu};

/// How the guest reaches PCI configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PciConfigAccess {
    /// The memory-mapped PCI Express window (ECAM), announced in the ACPI MCFG table: one exit
    /// per access. The configuration ports are absent, so Linux uses the window for everything.
    #[default]
    Ecam,
    /// The legacy ports 0xCF8/0xCFC (configuration mechanism #1): two exits per access, for
    /// guests without ACPI or without MMCONFIG support.
    Io,
}

/// Errors creating the VM.
#[derive(Debug, Error)]
pub enum VmError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM available and accessible?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which operation.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Guest RAM could not be put in KVM memory slots.
    #[error("cannot map guest RAM into the VM: {0}")]
    Ram(#[source] devices::Error),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// A device could not be registered on a bus.
    #[error("cannot register {what} on the {bus} bus: {detail}")]
    Bus {
        /// The device.
        what: &'static str,
        /// PIO or MMIO.
        bus: &'static str,
        /// Error text.
        detail: String,
    },
    /// The address window allocator rejected the layout's windows.
    #[error("PCI BAR allocator: {0}")]
    Pci(#[from] devices::pci::PciError),
    /// vCPU setup failed.
    #[error("vCPU {id}: {source}")]
    Vcpu {
        /// vCPU index.
        id: u8,
        /// The error.
        source: regs::RegsError,
    },
}

/// The error of registering `what` on `bus`, from the bus's own error.
fn bus_error<E: std::fmt::Debug>(what: &'static str, bus: &'static str) -> impl Fn(E) -> VmError {
    move |e| VmError::Bus {
        what,
        bus,
        detail: format!("{e:?}"),
    }
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Sink of the guest's serial console.
pub type ConsoleOut = Box<dyn Write + Send>;
/// The COM1 UART as shared by the port bus and the stdin handler.
pub type SharedSerial = Arc<Mutex<SerialDevice<ConsoleOut>>>;

/// The VM-wide resources devices take from the VM. The VM creates them all with itself, so a
/// device (a second virtio device, a passthrough device, ACPI tables) takes what it needs from
/// here and nothing is created per device kind. Clones share the same resources.
#[derive(Clone)]
pub struct VmResources {
    /// Every KVM memory slot of the VM (`KVM_CAP_NR_MEMSLOTS`): guest RAM's, then passthrough
    /// BARs'.
    pub slots: Arc<KvmMemorySlots>,
    /// GSIs from 24 on (0-23 are the irqchip's: ISA IRQs and PCI INTx) as far as KVM's routing
    /// table (`KVM_CAP_IRQ_ROUTING`) holds, and that table's MSI routes.
    pub msi: Arc<KvmMsiRouter>,
    /// ioeventfds on guest MMIO addresses.
    pub ioevents: Arc<KvmIoEvents>,
    /// Guest address windows for BARs and other device ranges: the 32-bit MMIO hole below the
    /// IOAPIC, the 64-bit MMIO window above RAM and the PCI port window.
    pub windows: Arc<Mutex<BarAllocator>>,
    /// The IOMMU address space of passthrough devices (opened with the first one).
    pub passthrough: Arc<VfioPassthrough>,
}

/// A VM with RAM, an in-kernel irqchip, its resources and PCI bus 0.
///
/// Dropping it (or [`Vm::shutdown`]) tears it down in a fixed order, see there.
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    resources: VmResources,
    ram: GuestRam,
    /// KVM slots of `ram`'s regions.
    ram_slots: Vec<u32>,
    pci: Arc<Mutex<PciBus>>,
    /// The port and MMIO buses; shared with the vCPU threads once they run.
    io: Arc<IoManager>,
    shut_down: bool,
}

/// The legacy devices the event loop needs to reach.
pub struct LegacyDevices {
    /// COM1 (stdin goes here).
    pub serial: SharedSerial,
    /// Signalled by the i8042 when the guest resets the CPU.
    pub reset_evt: EventFd,
    /// The ACPI power button: a write pulses the Generic Event Device's interrupt.
    pub power_button: EventFd,
}

impl Vm {
    /// Creates the VM: KVM private pages, irqchip (PIC + IOAPIC + LAPICs), PIT, its resources
    /// (memory slots, GSIs and routing table, ioeventfds, address windows, the passthrough
    /// IOMMU space), guest RAM in its slots, and the PCI buses (host bridge, the PCI-to-PCI bridge
    /// the devices go behind, configuration access as `pci_config` says, the BAR router over the
    /// PCI MMIO windows and the PCI port window). Guest RAM is
    /// `mem_size` bytes backed as `backing` says (a memfd if a device exports guest pages with
    /// udmabuf).
    pub fn new(
        mem_size: u64,
        backing: RamBacking,
        pci_config: PciConfigAccess,
    ) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        fd.set_tss_address(KVM_TSS_START as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        let fd = Arc::new(fd);

        let slot_count = u32::try_from(kvm.get_nr_memslots()).unwrap_or(u32::MAX);
        let max_routes = u32::try_from(fd.check_extension_int(Cap::IrqRouting)).unwrap_or(0);
        let (mmio64_base, mmio64_size) = pci_mmio64_window(mem_size);
        let windows = BarAllocator::new(
            BarWindow::new(PCI_MMIO32_START, PCI_MMIO32_SIZE),
            Some(BarWindow::new(mmio64_base, mmio64_size)),
            Some(BarWindow::new(
                u64::from(PCI_IO_START),
                u64::from(PCI_IO_SIZE),
            )),
        )?;
        // The PCI-to-PCI bridge at 00:01.0, its windows over all of the VM's: every device
        // goes behind it, so guests allow peer-to-peer DMA between them by topology.
        let mut pci = PciBus::new();
        pci.add_bridge(&windows)?;
        let resources = VmResources {
            slots: Arc::new(KvmMemorySlots::new(fd.clone(), slot_count)),
            msi: Arc::new(KvmMsiRouter::new(
                fd.clone(),
                KvmMsiRouter::gsi_end_for_routes(max_routes),
            )),
            ioevents: Arc::new(KvmIoEvents(fd.clone())),
            windows: Arc::new(Mutex::new(windows)),
            passthrough: Arc::new(VfioPassthrough::new(fd.clone())),
        };
        let mut vm = Vm {
            kvm,
            fd,
            resources,
            ram: GuestRam::new(mem_size, backing)?,
            ram_slots: Vec::new(),
            pci: Arc::new(Mutex::new(pci)),
            io: Arc::new(IoManager::new()),
            shut_down: false,
        };
        // From here on, an error drops `vm`, which undoes what was done.
        for region in vm.ram.regions() {
            // SAFETY: the host range is a live mapping owned by `vm.ram`, which the Vm keeps
            // until shutdown has removed this slot.
            let slot = unsafe {
                vm.resources
                    .slots
                    .add(region.range.start, region.range.len, region.host_addr)
            }
            .map_err(VmError::Ram)?;
            vm.ram_slots.push(slot);
        }
        vm.add_pci(pci_config)?;
        Ok(vm)
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// The resources devices take from the VM.
    pub fn resources(&self) -> &VmResources {
        &self.resources
    }

    /// PCI bus 0.
    pub fn pci_bus(&self) -> &Arc<Mutex<PciBus>> {
        &self.pci
    }

    /// The KVM memory slots of guest RAM.
    pub fn ram_slots(&self) -> &[u32] {
        &self.ram_slots
    }

    fn io_mut(&mut self, what: &'static str, bus: &'static str) -> Result<&mut IoManager, VmError> {
        Arc::get_mut(&mut self.io).ok_or_else(|| VmError::Bus {
            what,
            bus,
            detail: "the buses are fixed once the vCPUs run".into(),
        })
    }

    /// Registers `dev` on the port I/O bus over `len` ports from `base`.
    fn register_pio<T>(
        &mut self,
        what: &'static str,
        base: u16,
        len: u16,
        dev: Arc<T>,
    ) -> Result<(), VmError>
    where
        T: vm_device::DevicePio + Send + Sync + 'static,
    {
        let err = bus_error(what, "port I/O");
        let range = PioRange::new(PioAddress(base), len).map_err(&err)?;
        self.io_mut(what, "port I/O")?
            .register_pio(range, dev)
            .map_err(&err)
    }

    /// Registers `dev` on the MMIO bus over `size` bytes at `base`.
    fn register_mmio<T>(
        &mut self,
        what: &'static str,
        base: u64,
        size: u64,
        dev: Arc<T>,
    ) -> Result<(), VmError>
    where
        T: vm_device::DeviceMmio + Send + Sync + 'static,
    {
        let err = bus_error(what, "MMIO");
        let range = MmioRange::new(MmioAddress(base), size).map_err(&err)?;
        self.io_mut(what, "MMIO")?
            .register_mmio(range, dev)
            .map_err(&err)
    }

    /// Adds COM1 (IRQ 4 through an irqfd), the i8042, the CMOS, the ACPI power management
    /// registers (their power-off and reset requests go to `acpi_pm`) and the ACPI power
    /// button's interrupt (GSI [`POWER_BUTTON_GSI`] through an irqfd).
    pub fn add_legacy_devices(
        &mut self,
        console: ConsoleOut,
        acpi_pm: AcpiPmHandler,
    ) -> Result<LegacyDevices, VmError> {
        let irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        self.fd
            .register_irqfd(&irq, SERIAL_COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD (COM1)"))?;
        let serial: SharedSerial = Arc::new(Mutex::new(SerialDevice::new(
            EventFdTrigger::new(irq),
            console,
        )));
        self.register_pio("COM1", SERIAL_COM1_PORT, SERIAL_PORT_LEN, serial.clone())?;

        let reset_evt = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        let i8042 = Arc::new(Mutex::new(I8042::new(EventFdTrigger::new(
            reset_evt.try_clone().map_err(VmError::EventFd)?,
        ))));
        self.register_pio("i8042", I8042_DATA_PORT, 1, i8042.clone())?;
        self.register_pio("i8042", I8042_COMMAND_PORT, 1, i8042)?;

        self.register_pio(
            "CMOS",
            CMOS_PORT_BASE,
            CMOS_PORT_LEN,
            Arc::new(Mutex::new(Cmos::new())),
        )?;
        self.register_pio(
            "ACPI power management",
            ACPI_PM_PORT,
            ACPI_PM_PORT_LEN,
            Arc::new(Mutex::new(AcpiPm::new(acpi_pm))),
        )?;
        let power_button = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        self.fd
            .register_irqfd(&power_button, POWER_BUTTON_GSI)
            .map_err(kvm_err("KVM_IRQFD (ACPI power button)"))?;
        Ok(LegacyDevices {
            serial,
            reset_evt,
            power_button,
        })
    }

    /// Registers PCI bus 0: configuration access (the ECAM window or the ports 0xCF8-0xCFF) and
    /// the BAR router over the PCI MMIO windows and the PCI I/O port window.
    fn add_pci(&mut self, pci_config: PciConfigAccess) -> Result<(), VmError> {
        let (mmio64_base, mmio64_size) = pci_mmio64_window(self.ram.size());
        let router = lock(&self.pci).router();
        match pci_config {
            PciConfigAccess::Ecam => self.register_mmio(
                "PCI configuration window (ECAM)",
                PCI_ECAM_START,
                PCI_ECAM_SIZE,
                Arc::new(Mutex::new(PciConfigMmio::new(self.pci.clone()))),
            )?,
            PciConfigAccess::Io => self.register_pio(
                "PCI configuration access",
                PCI_CONFIG_IO_PORT,
                PCI_CONFIG_IO_PORT_SIZE,
                Arc::new(Mutex::new(PciConfigIo::new(self.pci.clone()))),
            )?,
        }
        self.register_pio(
            "PCI I/O BAR router",
            PCI_IO_START,
            PCI_IO_SIZE,
            router.clone(),
        )?;
        for (base, size) in [
            (PCI_MMIO32_START, PCI_MMIO32_SIZE),
            (mmio64_base, mmio64_size),
        ] {
            self.register_mmio("PCI MMIO BAR router", base, size, router.clone())?;
        }
        Ok(())
    }

    /// Creates and configures `nr_vcpus` vCPUs; vCPU 0 starts at `entry` in 64-bit mode, the
    /// others wait for the INIT/SIPI sequence from the guest.
    pub fn create_vcpus(&self, nr_vcpus: u8, entry: Option<u64>) -> Result<Vec<VcpuFd>, VmError> {
        let supported: CpuId = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(nr_vcpus.into());
        for id in 0..nr_vcpus {
            let fd = self
                .fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            fd.set_cpuid2(&cpuid::vcpu_cpuid(&supported, id, nr_vcpus))
                .map_err(kvm_err("KVM_SET_CPUID2"))?;
            regs::setup_common(&fd).map_err(|source| VmError::Vcpu { id, source })?;
            if let (0, Some(entry)) = (id, entry) {
                regs::setup_boot_cpu(&fd, entry).map_err(|source| VmError::Vcpu { id, source })?;
            }
            vcpus.push(fd);
        }
        Ok(vcpus)
    }

    /// Maps `ranges` of guest RAM into KVM's stage-2 tables through `vcpu` before it runs
    /// ([`crate::boot::prefault`]); the bytes mapped, `None` if KVM cannot.
    pub fn prefault(&self, vcpu: &VcpuFd, ranges: &[(u64, u64)]) -> Option<u64> {
        crate::boot::prefault::prefault(&self.fd, vcpu, ranges)
    }

    /// Wraps the vCPU fds for their threads, which share the VM's port and MMIO buses (no
    /// device is added to them from then on).
    pub fn runnable_vcpus(
        &self,
        vcpus: Vec<VcpuFd>,
        exit: Arc<ExitNotifier>,
        stop: Arc<AtomicBool>,
    ) -> Vec<Vcpu> {
        vcpus
            .into_iter()
            .enumerate()
            .map(|(id, fd)| Vcpu::new(id as u8, fd, self.io.clone(), exit.clone(), stop.clone()))
            .collect()
    }

    /// Tears the VM down, once, after its vCPU threads have stopped. In this order, each step
    /// once nothing uses what it removes:
    ///
    /// 1. The devices: the port and MMIO buses and PCI bus 0 let go of them, the last added
    ///    first (a device may use one added before it: the GPU exports dma-bufs from
    ///    passthrough BARs), and each one, as it goes, stops and gives back what it took
    ///    (irqfds, ioeventfds, BAR slots, region table entries, GSIs; the GPU's display writes
    ///    its last frame).
    /// 2. Their slots and routes: BAR slots still in KVM are removed and the routing table goes
    ///    back to the irqchip's routes (anything a device left behind is named in a warning).
    /// 3. The VFIO container (or iommufd IOAS): guest RAM is unmapped from the IOMMU.
    /// 4. Guest memory: RAM's slots are removed from KVM; the mapping goes with the `Vm`.
    ///
    /// Returns what it found; a second call does nothing.
    pub fn shutdown(&mut self) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        if std::mem::replace(&mut self.shut_down, true) {
            return report;
        }
        // 1. Devices.
        self.io = Arc::new(IoManager::new());
        let devices = lock(&self.pci).remove_devices();
        for device in devices.into_iter().rev() {
            if Arc::strong_count(&device) > 1 {
                log::warn!(
                    "vmm: {} is still referenced at shutdown: it stops when its last user lets go",
                    lock_device(&device).name()
                );
            }
            drop(device);
            report.devices += 1;
        }
        // 2. Their slots and routes.
        for slot in self.resources.slots.in_use() {
            if self.ram_slots.contains(&slot) {
                continue;
            }
            log::warn!("vmm: KVM memory slot {slot} was left mapped by a device: removing it");
            if let Err(e) = self.resources.slots.remove(slot) {
                log::warn!("vmm: {e}");
            }
            report.left_slots.push(slot);
        }
        match self.resources.msi.clear() {
            Ok(left) => {
                if !left.is_empty() {
                    log::warn!("vmm: GSIs {left:?} were not given back by their devices");
                }
                report.left_gsis = left;
            }
            Err(e) => log::warn!("vmm: clearing the GSI routing table: {e}"),
        }
        // 3. The VFIO container.
        self.resources.passthrough.close();
        // 4. Guest memory.
        for slot in std::mem::take(&mut self.ram_slots) {
            if let Err(e) = self.resources.slots.remove(slot) {
                log::warn!("vmm: guest RAM: {e}");
            }
        }
        report
    }
}

/// What [`Vm::shutdown`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Devices taken off PCI bus 0.
    pub devices: usize,
    /// BAR slots the devices left in KVM (removed by the shutdown).
    pub left_slots: Vec<u32>,
    /// GSIs the devices did not give back (taken back by the shutdown).
    pub left_gsis: Vec<u32>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Locks the bus or the address windows, also after a panic elsewhere (both stay consistent:
/// they change only while devices are added or removed).
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use devices::pci::{BarKind, MsiRouter, PciSlot};
    use devices::vfio::HostMapping;
    use devices::virtio::IoEventRegistrar;
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::cli::{parse_device, DisplayConfig};
    use crate::layout::MMIO_HOLE_END;

    /// A VM with the virtio-gpu the VMM builds for `--device gpu=blob`.
    fn vm_with_gpu() -> Option<Vm> {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm: VM resources not tested");
            return None;
        }
        let vm = Vm::new(64 << 20, RamBacking::Memfd, PciConfigAccess::Ecam).unwrap();
        let spec = parse_device("gpu=blob").unwrap();
        crate::pci_devices::build(&vm, &[spec], &[DisplayConfig::Headless]).unwrap();
        Some(vm)
    }

    /// Guest address and size of BAR 0 of the device in `slot` behind the bridge.
    fn bar0(vm: &Vm, slot: u8) -> (u64, u64) {
        let dev = lock(vm.pci_bus())
            .device(PciSlot::behind_bridge(slot))
            .unwrap();
        let bar = lock_device(&dev).bars()[0];
        (bar.addr, bar.size)
    }

    fn disjoint(a: (u64, u64), b: (u64, u64)) -> bool {
        a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0
    }

    /// The guest reaches configuration space through the ECAM window or through the ports,
    /// never both: Linux prefers the ports whenever they answer.
    #[test]
    fn pci_configuration_is_reached_one_way_or_the_other() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm: PCI configuration access not tested");
            return;
        }
        let host_bridge_id = 0x0d57_8086u32.to_le_bytes();
        let ports = |vm: &Vm| {
            let mut id = [0u8; 4];
            let latch = vm.io.pio_write(
                PioAddress(PCI_CONFIG_IO_PORT),
                &0x8000_0000u32.to_le_bytes(),
            );
            let data = vm.io.pio_read(PioAddress(PCI_CONFIG_IO_PORT + 4), &mut id);
            (latch.is_ok() && data.is_ok()).then_some(id)
        };
        let ecam = |vm: &Vm, at: u64| {
            let mut id = [0u8; 4];
            vm.io.mmio_read(MmioAddress(at), &mut id).ok().map(|_| id)
        };
        let vm = Vm::new(64 << 20, RamBacking::Anonymous, PciConfigAccess::Ecam).unwrap();
        assert_eq!(ecam(&vm, PCI_ECAM_START), Some(host_bridge_id));
        // 00:01.0, the PCI-to-PCI bridge (1b36:0001), and the window's last dword.
        assert_eq!(
            ecam(&vm, PCI_ECAM_START + (1 << 15)),
            Some(0x0001_1b36u32.to_le_bytes())
        );
        assert_eq!(
            ecam(&vm, PCI_ECAM_START + PCI_ECAM_SIZE - 4),
            Some([0xff; 4])
        );
        assert_eq!(ports(&vm), None);
        let vm = Vm::new(64 << 20, RamBacking::Anonymous, PciConfigAccess::Io).unwrap();
        assert_eq!(ports(&vm), Some(host_bridge_id));
        assert_eq!(ecam(&vm, PCI_ECAM_START), None);
    }

    /// `KVM_PRE_FAULT_MEMORY` maps guest RAM ahead where KVM has it; a range past RAM stops
    /// short instead of failing.
    #[test]
    fn prefault_maps_guest_ram_and_stops_at_its_end() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("no /dev/kvm: pre-faulting not tested");
            return;
        }
        let vm = Vm::new(64 << 20, RamBacking::Memfd, PciConfigAccess::Ecam).unwrap();
        let vcpus = vm.create_vcpus(1, Some(0x10_0000)).unwrap();
        let cap = vm
            .fd
            .check_extension_raw(kvm_bindings::KVM_CAP_PRE_FAULT_MEMORY.into());
        let mapped = vm.prefault(&vcpus[0], &[(0x20_0000, 0x10_0000)]);
        if cap <= 0 {
            assert_eq!(mapped, None, "no capability, nothing done");
            eprintln!("KVM here has no KVM_CAP_PRE_FAULT_MEMORY");
            return;
        }
        assert_eq!(mapped, Some(0x10_0000));
        // The last MiB of RAM and one MiB past it: only the RAM part is mapped.
        let end = 64 << 20;
        assert_eq!(
            vm.prefault(&vcpus[0], &[(end - 0x10_0000, 0x20_0000)]),
            Some(0x10_0000)
        );
    }

    /// Another device (a second virtio device, ACPI tables) takes a memory slot, GSIs with a
    /// route, an ioeventfd and MMIO and port ranges from the VM's resources, next to the GPU
    /// and guest RAM, without going through the GPU's code, and gives them back.
    #[test]
    fn a_second_device_takes_slots_gsis_and_windows_from_the_vm() {
        let Some(mut vm) = vm_with_gpu() else { return };
        let r = vm.resources().clone();
        let gpu_bar = bar0(&vm, 0);
        let gpu_gsis = r.msi.gsis_in_use();
        assert_eq!(gpu_gsis.len(), 3, "the GPU's vectors");

        let (mmio64, mmio32, ports) = {
            let mut w = lock(&r.windows);
            let m64 = BarKind::Mem64 { prefetchable: true };
            let m32 = BarKind::Mem32 {
                prefetchable: false,
            };
            (
                w.allocate(m64, 0x10_0000).unwrap(),
                w.allocate(m32, 0x1000).unwrap(),
                w.allocate(BarKind::Io, 0x20).unwrap(),
            )
        };
        let (mmio64_start, _) = pci_mmio64_window(vm.ram().size());
        assert!(mmio64 >= mmio64_start && mmio64_start >= MMIO_HOLE_END);
        assert!((PCI_MMIO32_START..PCI_MMIO32_START + PCI_MMIO32_SIZE).contains(&mmio32));
        assert!((u64::from(PCI_IO_START)..0x1_0000).contains(&ports));
        assert!(disjoint((mmio64, 0x10_0000), gpu_bar));
        assert!(disjoint((mmio32, 0x1000), gpu_bar));

        let host = HostMapping::anonymous(0x10_0000).unwrap();
        // SAFETY: `host` stays mapped until the slot is removed below.
        let slot = unsafe { r.slots.add(mmio64, 0x10_0000, host.host_addr()) }.unwrap();
        assert!(
            !vm.ram_slots().contains(&slot),
            "one allocator for RAM and BARs"
        );
        let gsi = r.msi.allocate_gsi().unwrap();
        assert!(gsi >= 24 && !gpu_gsis.contains(&gsi));
        r.msi.set_msi_route(gsi, 0xfee0_0000, 0x31).unwrap();
        let fd = EventFd::new(0).unwrap();
        r.msi.register_irqfd(&fd, gsi).unwrap();
        r.ioevents.register(&fd, mmio32).unwrap();

        r.ioevents.unregister(&fd, mmio32).unwrap();
        r.msi.unregister_irqfd(&fd, gsi).unwrap();
        r.msi.release_gsi(gsi);
        r.slots.remove(slot).unwrap();
        let report = vm.shutdown();
        assert_eq!(
            report,
            ShutdownReport {
                devices: 1,
                ..Default::default()
            },
            "the GPU and the second device gave everything back"
        );
    }

    /// Shutdown takes the devices off first (the GPU gives its GSIs back as it goes), then
    /// removes what a device left (a slot, a GSI), closes the VFIO container and removes
    /// guest RAM's slots last.
    #[test]
    fn shutdown_goes_devices_then_their_slots_and_routes_then_memory() {
        let Some(mut vm) = vm_with_gpu() else { return };
        let r = vm.resources().clone();
        // A device that forgets to give back a slot and a GSI.
        let host = HostMapping::anonymous(0x1000).unwrap();
        let addr = lock(&r.windows)
            .allocate(
                BarKind::Mem32 {
                    prefetchable: false,
                },
                0x1000,
            )
            .unwrap();
        // SAFETY: `host` outlives the VM's shutdown, which removes the slot.
        let slot = unsafe { r.slots.add(addr, 0x1000, host.host_addr()) }.unwrap();
        let gsi = r.msi.allocate_gsi().unwrap();
        let report = vm.shutdown();
        assert_eq!(
            report,
            ShutdownReport {
                devices: 1,
                left_slots: vec![slot],
                left_gsis: vec![gsi],
            }
        );
        assert!(r.slots.in_use().is_empty(), "RAM slots removed last");
        assert!(r.msi.gsis_in_use().is_empty());
        assert!(!r.passthrough.is_open());
        assert!(lock(vm.pci_bus())
            .device(PciSlot::behind_bridge(0))
            .is_none());
        assert_eq!(vm.shutdown(), ShutdownReport::default(), "once");
    }
}
