//! In-process fakes of the device crate's host boundaries (KVM, VFIO, the region table) and of
//! small devices, shared by the unit tests and the fuzz targets (`devices/fuzz`).
//!
//! Built for `cfg(test)` and with the `test-utils` feature. Every fake records what it was
//! asked in plain fields so a test or a fuzz target can check it; what it records grows only
//! with the number of calls it gets.

mod pci;
mod vfio;
mod virtio;

pub use pci::{FakeMsiRouter, FakePciDevice};
pub use vfio::{FakeSlots, FakeVfio};
pub use virtio::{DriverBuffer, DriverQueue, FakeIoEvents, FakeVirtioDevice, FakeVirtioState};

/// Locks a fake's record, whether or not an earlier panic poisoned it.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
