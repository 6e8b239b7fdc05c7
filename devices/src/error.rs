//! Errors at the boundaries between the devices and what they take from the VM or the host:
//! KVM memory slots, GSIs and their MSI routes, irqfds and ioeventfds, VFIO interrupt setup,
//! the dma-buf region table, a device following a BAR move, a virtio device's activation.

use thiserror::Error;

/// What can fail where a device uses a VM-wide resource or a host interface (the traits
/// [`MsiRouter`](crate::pci::MsiRouter), [`IoEventRegistrar`](crate::virtio::IoEventRegistrar),
/// [`GuestMemorySlots`](crate::memory_slots::GuestMemorySlots),
/// the `vfio-dmabuf` region table,
/// [`VfioRegionSet`](crate::vfio::VfioRegionSet),
/// [`PciDevice::move_bar`](crate::pci::PciDevice::move_bar) and
/// [`VirtioDevice::activate`](crate::virtio::VirtioDevice::activate)).
#[derive(Debug, Error)]
pub enum Error {
    /// Every KVM memory slot of the VM is taken.
    #[error(
        "no free KVM memory slot: all {count} slots KVM gives this VM (KVM_CAP_NR_MEMSLOTS) are \
         in use by guest RAM and passthrough BARs"
    )]
    NoFreeMemorySlot {
        /// Slots the VM has.
        count: u32,
    },
    /// KVM refused a memory slot (an overlapping slot, a bad host address, ...).
    #[error(
        "KVM_SET_USER_MEMORY_REGION for slot {slot} ({size:#x} bytes at guest address {gpa:#x}) \
         failed: {source}"
    )]
    MemorySlot {
        /// Slot number.
        slot: u32,
        /// Guest-physical address.
        gpa: u64,
        /// Size in bytes.
        size: u64,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// A slot that is not in use was to be removed.
    #[error("KVM memory slot {0} is not in use")]
    SlotNotInUse(u32),
    /// KVM refused to delete a memory slot.
    #[error("deleting KVM memory slot {slot} failed: {source}")]
    RemoveMemorySlot {
        /// Slot number.
        slot: u32,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// Every GSI available for MSI routes is taken.
    #[error(
        "no free GSI for an MSI/MSI-X vector: all {count} GSIs from {first} on are in use \
         (KVM's GSI routing table, KVM_CAP_IRQ_ROUTING, has no room for more)"
    )]
    NoFreeGsi {
        /// First GSI handed out for MSI routes.
        first: u32,
        /// How many there are.
        count: u32,
    },
    /// The routing table could not be built (more entries than KVM accepts).
    #[error("a GSI routing table of {entries} entries cannot be built: {source}")]
    RoutingTable {
        /// Entries in the table.
        entries: usize,
        /// What the table wrapper said.
        source: vmm_sys_util::fam::Error,
    },
    /// KVM refused the routing table.
    #[error("KVM_SET_GSI_ROUTING with {entries} entries failed: {source}")]
    GsiRouting {
        /// Entries in the table.
        entries: usize,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// KVM refused to attach or detach an irqfd.
    #[error("{op} on GSI {gsi} failed: {source}")]
    Irqfd {
        /// `KVM_IRQFD`, its deassign or resample form.
        op: &'static str,
        /// The GSI.
        gsi: u32,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// KVM refused to attach or detach an ioeventfd.
    #[error("{op} at guest address {addr:#x} failed: {source}")]
    IoEventFd {
        /// `KVM_IOEVENTFD` or its deassign form.
        op: &'static str,
        /// Guest-physical MMIO address.
        addr: u64,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// An eventfd could not be created (usually the open file limit).
    #[error("cannot create an eventfd: {0} (is the open file limit, ulimit -n, too low?)")]
    EventFd(#[source] std::io::Error),
    /// The driver activated a virtio device without a queue the device needs.
    #[error("the driver did not enable virtio queue {index} ({name}), which the device needs")]
    QueueNotEnabled {
        /// Queue index.
        index: u16,
        /// What the queue is for.
        name: &'static str,
    },
    /// A device thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// VFIO refused an interrupt setup call.
    #[error("VFIO_DEVICE_SET_IRQS ({op}) of interrupt index {index} failed: {source}")]
    VfioIrq {
        /// What was asked: enable, disable, INTx unmask eventfd.
        op: &'static str,
        /// VFIO interrupt index (0 INTx, 1 MSI, 2 MSI-X).
        index: u32,
        /// What vfio-ioctls said.
        source: vfio_ioctls::VfioError,
    },
    /// Only INTx has an unmask (resample) eventfd.
    #[error("VFIO interrupt index {0} has no unmask eventfd: only INTx (index 0) does")]
    NoResample(u32),
    /// INTx was asked for on a device whose INTx is not wired to an irqchip pin.
    #[error("INTx is not wired to an interrupt controller pin for this device")]
    NoIntxPin,
    /// The dma-buf region table refused a change.
    #[error("dma-buf region table: {0}")]
    RegionTable(#[source] vfio_dmabuf::DmaBufError),
    /// A BAR programmed so high that a part of it would end beyond 2^64.
    #[error(
        "BAR {bar} at {addr:#x}: its area at +{offset:#x} lies beyond the 64-bit address space"
    )]
    BarOverflow {
        /// BAR index.
        bar: usize,
        /// Guest address of the BAR.
        addr: u64,
        /// Offset of the area in the BAR.
        offset: u64,
    },
    /// One mmapped area of a BAR could not be mapped into the guest.
    #[error("BAR {bar} area +{offset:#x} at {gpa:#x}: {source}")]
    BarArea {
        /// BAR index.
        bar: usize,
        /// Offset of the area in the BAR.
        offset: u64,
        /// Guest address of the area.
        gpa: u64,
        /// Why.
        source: Box<Error>,
    },
}
