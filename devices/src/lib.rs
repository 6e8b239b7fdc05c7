//! Emulated and passed-through devices of the VMM.
//!
//! - [`legacy`]: the PC devices a Linux guest expects (16550 serial, i8042 reset, CMOS).
//! - [`pci`]: the PCI host bridge, type-1 configuration access, configuration space and
//!   BAR allocation that virtio-pci and VFIO devices plug into.
//! - `test_utils` (with the `test-utils` feature): fakes of KVM, VFIO and small devices for
//!   tests and the fuzz targets in `devices/fuzz`.

pub mod legacy;
pub mod pci;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod vfio;
pub mod virtio;

/// Period of the rate limit on log lines a guest can trigger: the first line of a call site,
/// then one line per period with the count of the suppressed ones.
pub(crate) const GUEST_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
