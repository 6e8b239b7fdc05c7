//! The KVM VM: in-kernel irqchip and PIT, guest RAM slots, the device buses and the vCPUs.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use devices::legacy::{
    Cmos, EventFdTrigger, SerialDevice, CMOS_PORT_BASE, CMOS_PORT_LEN, I8042, I8042_COMMAND_PORT,
    I8042_DATA_PORT, SERIAL_COM1_IRQ, SERIAL_COM1_PORT, SERIAL_PORT_LEN,
};
use devices::pci::{
    BarAllocator, BarWindow, PciBus, PciConfigIo, PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE,
};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::{cpuid, regs};
use crate::layout::{
    pci_mmio64_window, KVM_IDENTITY_MAP_START, KVM_TSS_START, PCI_IO_SIZE, PCI_IO_START,
    PCI_MMIO32_SIZE, PCI_MMIO32_START,
};
use crate::memory::{GuestRam, MemoryError};
use crate::vcpu::{ExitNotifier, Vcpu};

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
    /// The PCI BAR allocator rejected the layout's windows.
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

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Sink of the guest's serial console.
pub type ConsoleOut = Box<dyn Write + Send>;
/// The COM1 UART as shared by the port bus and the stdin handler.
pub type SharedSerial = Arc<Mutex<SerialDevice<ConsoleOut>>>;

/// A VM with RAM and an in-kernel irqchip, before vCPUs run.
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    ram: GuestRam,
    io: IoManager,
}

/// The legacy devices the event loop needs to reach.
pub struct LegacyDevices {
    /// COM1 (stdin goes here).
    pub serial: SharedSerial,
    /// Signalled by the i8042 when the guest resets the CPU.
    pub reset_evt: EventFd,
}

/// PCI state kept for devices added later (virtio-pci, VFIO).
pub struct PciState {
    /// Bus 0.
    pub bus: Arc<Mutex<PciBus>>,
    /// BAR address allocator over the layout's windows.
    pub allocator: Arc<Mutex<BarAllocator>>,
}

impl Vm {
    /// Creates the VM: KVM private pages, irqchip (PIC + IOAPIC + LAPICs), PIT, RAM slots.
    pub fn new(mem_size: u64) -> Result<Self, VmError> {
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

        let ram = GuestRam::new(mem_size)?;
        for (slot, region) in ram.regions().iter().enumerate() {
            let mr = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.range.start,
                memory_size: region.range.len,
                userspace_addr: region.host_addr,
            };
            // SAFETY: the host range is a live mapping owned by `ram`, which the Vm keeps for as
            // long as the VM fd (and so the slot) exists.
            unsafe { fd.set_user_memory_region(mr) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
            ram,
            io: IoManager::new(),
        })
    }

    /// The VM fd.
    pub fn fd(&self) -> &Arc<VmFd> {
        &self.fd
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

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
        let err = |detail: String| VmError::Bus {
            what,
            bus: "port I/O",
            detail,
        };
        let range = PioRange::new(PioAddress(base), len).map_err(|e| err(format!("{e:?}")))?;
        self.io
            .register_pio(range, dev)
            .map_err(|e| err(format!("{e:?}")))
    }

    /// Adds COM1 (IRQ 4 through an irqfd), the i8042 and the CMOS.
    pub fn add_legacy_devices(&mut self, console: ConsoleOut) -> Result<LegacyDevices, VmError> {
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
        Ok(LegacyDevices { serial, reset_evt })
    }

    /// Adds PCI bus 0 (host bridge), type-1 configuration access at 0xCF8 and the BAR router
    /// over the PCI MMIO windows and the PCI I/O port window.
    pub fn add_pci(&mut self) -> Result<PciState, VmError> {
        let mem_size = self.ram.size();
        let (mmio64_base, mmio64_size) = pci_mmio64_window(mem_size);
        let allocator = BarAllocator::new(
            BarWindow::new(PCI_MMIO32_START, PCI_MMIO32_SIZE),
            Some(BarWindow::new(mmio64_base, mmio64_size)),
            Some(BarWindow::new(
                u64::from(PCI_IO_START),
                u64::from(PCI_IO_SIZE),
            )),
        )?;
        let bus = Arc::new(Mutex::new(PciBus::new()));
        let router = bus
            .lock()
            .map(|b| b.router())
            .unwrap_or_else(|p| p.into_inner().router());
        self.register_pio(
            "PCI configuration access",
            PCI_CONFIG_IO_PORT,
            PCI_CONFIG_IO_PORT_SIZE,
            Arc::new(Mutex::new(PciConfigIo::new(bus.clone()))),
        )?;
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
            let err = |detail: String| VmError::Bus {
                what: "PCI MMIO BAR router",
                bus: "MMIO",
                detail,
            };
            let range =
                MmioRange::new(MmioAddress(base), size).map_err(|e| err(format!("{e:?}")))?;
            self.io
                .register_mmio(range, router.clone())
                .map_err(|e| err(format!("{e:?}")))?;
        }
        Ok(PciState {
            bus,
            allocator: Arc::new(Mutex::new(allocator)),
        })
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

    /// Freezes the buses and wraps the vCPU fds for their threads.
    pub fn into_runnable(
        self,
        vcpus: Vec<VcpuFd>,
        exit: Arc<ExitNotifier>,
        stop: Arc<AtomicBool>,
    ) -> (RunningVm, Vec<Vcpu>) {
        let io = Arc::new(self.io);
        let vcpus = vcpus
            .into_iter()
            .enumerate()
            .map(|(id, fd)| Vcpu::new(id as u8, fd, io.clone(), exit.clone(), stop.clone()))
            .collect();
        (
            RunningVm {
                _kvm: self.kvm,
                _fd: self.fd,
                _ram: self.ram,
            },
            vcpus,
        )
    }
}

/// What must stay alive while the vCPUs run.
pub struct RunningVm {
    _kvm: Kvm,
    _fd: Arc<VmFd>,
    _ram: GuestRam,
}
