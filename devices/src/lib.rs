//! Emulated and passed-through devices of the VMM.
//!
//! - [`legacy`]: the PC devices a Linux guest expects (16550 serial, i8042 reset, CMOS).
//! - [`pci`]: the PCI host bridge, type-1 configuration access, configuration space and
//!   BAR allocation that virtio-pci and VFIO devices plug into.
//! - [`pvpanic`]: the pvpanic PCI function a guest reports its panics to.
//! - [`memory_slots`]: the VM's KVM memory slots (guest RAM, passthrough BARs).
//! - `test_utils` (with the `test-utils` feature): fakes of KVM, VFIO and small devices for
//!   tests and the fuzz targets in `devices/fuzz`.

/// Rate limit of log lines a guest can trigger at will (bad register writes, refused
/// configurations, ...): per call site, the first occurrence is logged, then at most one line
/// per interval, preceded by the number of suppressed ones (`log_limit`'s `*_limit_global!`).
pub(crate) const GUEST_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

mod error;
pub mod legacy;
pub mod memory_slots;
pub mod pci;
pub mod pvpanic;
#[cfg(test)]
mod test_log;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod vfio;
pub mod virtio;

pub use error::Error;
