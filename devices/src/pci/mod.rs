//! PCI: host bridge, configuration space, BAR allocation and routing.
//!
//! - [`PciConfigSpace`]: a type-0 header with write masks, BAR sizing and capabilities.
//! - [`PciDevice`]: what a device on the bus implements (virtio-pci, VFIO, the host bridge).
//! - [`PciBus`]: bus 0 with the host bridge at slot 0 and, when the VMM adds it, a
//!   [`PciToPciBridge`] with bus 1 behind it; devices get free slots and their BARs guest
//!   addresses from a [`BarAllocator`].
//! - [`PciConfigIo`]: configuration mechanism #1 at ports 0xCF8-0xCFF.
//! - [`PciConfigMmio`]: the PCI Express memory-mapped configuration window (ECAM).
//! - [`PciBarRouter`]: one MMIO (and port I/O) handler over the PCI windows that dispatches
//!   to BARs by their current address.
//! - [`MsixTable`] and [`MsiVectors`]: MSI-X as the guest programs it and the vectors' GSIs,
//!   irqfds and routes, for every device that has MSI-X (virtio-pci, VFIO).

mod bar;
mod bar_allocator;
mod bar_router;
mod bridge;
mod bus;
mod config_io;
mod config_mmio;
mod config_space;
mod device;
mod error;
mod host_bridge;
mod msi_routing;
mod msix;
#[cfg(test)]
mod tests;

pub use bar::{
    BarKind, BarReprogram, BarSpace, PciBar, MIN_IO_BAR_SIZE, MIN_MEM_BAR_SIZE, NUM_BARS,
};
pub use bar_allocator::{BarAllocator, BarWindow, MIN_MMIO_ALLOCATION};
pub use bar_router::{lock_device, PciBarRouter, SharedPciDevice};
pub use bridge::{BridgeWindows, PciToPciBridge, PCI_BRIDGE_DEVICE_ID, PCI_BRIDGE_VENDOR_ID};
pub use bus::{PciBus, PciSlot, BRIDGE_BUS, NUM_SLOTS, ROOT_BUS};
pub use config_io::{PciConfigIo, PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE};
pub use config_mmio::{PciConfigMmio, ECAM_BUS_SIZE};
pub use config_space::*;
pub use device::PciDevice;
pub use error::{PciError, Result};
pub use host_bridge::{PciHostBridge, HOST_BRIDGE_DEVICE_ID, HOST_BRIDGE_VENDOR_ID};
pub use msi_routing::{default_irqchip_routes, KvmMsiRouter, MsiRouter, IOAPIC_PINS};
pub use msix::{
    MsiVectors, MsixCapInfo, MsixEntry, MsixTable, TableWrite, MAX_MSIX_VECTORS, MSIX_ENABLE,
    MSIX_ENTRY_SIZE, MSIX_FUNCTION_MASK,
};
