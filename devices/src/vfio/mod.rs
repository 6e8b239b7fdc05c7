//! VFIO PCI passthrough: hands a host PCI device bound to vfio-pci to the guest.
//!
//! - [`sysfs`]: find the device (BDF or sysfs path) and check it is bound, viable, openable.
//! - [`VfioPciDevice`]: the device on our PCI bus: virtualised config space (BARs, ROM,
//!   MSI/MSI-X), BARs mmapped into the guest as KVM slots with the MSI-X table/PBA trapped,
//!   slots re-created when the guest moves a BAR, interrupts through irqfds.
//! - [`VfioRegionSet`]: the device operations it needs (real: [`VfioDeviceRegions`]; a fake
//!   in the tests) and [`GuestMemorySlots`](crate::memory_slots::GuestMemorySlots) are its
//!   other boundaries; it writes its BARs' records straight into the `vfio-dmabuf` region table
//!   ([`vfio_dmabuf::SharedRegistry`]) at every map, move and decode change.

mod config;
mod device;
mod error;
mod host_mapping;
mod interrupts;
mod mmap_areas;
mod msi;
mod open;
mod region_set;
pub mod sysfs;
#[cfg(test)]
mod tests;
mod vfio_regions;

pub use config::{interrupt_pin, ConfigWriteEffect, VfioPciConfig};
pub use device::{VfioPciDevice, VfioPciDeviceEnv};
pub use error::{Result, VfioPciError};
pub use host_mapping::HostMapping;
pub use interrupts::{IrqModeKind, VfioInterrupts};
pub use mmap_areas::{mappable_areas, Area};
pub use msi::{MsiConfig, MsiState};
pub use open::VfioPassthrough;
pub use region_set::*;
pub use vfio_regions::VfioDeviceRegions;
