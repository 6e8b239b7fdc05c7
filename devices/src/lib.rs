//! Emulated and passed-through devices of the VMM.
//!
//! - [`legacy`]: the PC devices a Linux guest expects (16550 serial, i8042 reset, CMOS).
//! - [`pci`]: the PCI host bridge, type-1 configuration access, configuration space and
//!   BAR allocation that virtio-pci and VFIO devices plug into.

pub mod legacy;
pub mod pci;
pub mod vfio;
pub mod virtio;
