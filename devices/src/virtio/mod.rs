//! virtio over PCI (modern, virtio 1.x): the transport and the device trait it drives.
//!
//! - [`VirtioGpu`]: the `virtio-gpu` crate's device model as a [`VirtioDevice`].
//! - [`VirtioInput`]: a virtio-input keyboard or absolute pointer (tablet), fed from host
//!   threads through [`InputHandle`]s.
//! - [`VirtioDevice`]: what a virtio device (virtio-gpu, ...) implements: features, config
//!   space, activation with its queues, reset.
//! - [`VirtioPciDevice`]: the transport, a [`PciDevice`](crate::pci::PciDevice) with the
//!   virtio vendor capabilities (common cfg, notify, ISR, device cfg) in BAR 0, queue
//!   notifications through ioeventfds and interrupts through MSI-X vectors backed by irqfds.

mod common_cfg;
mod device;
mod error;
mod gpu;
mod input;
mod pci_transport;
mod worker_thread;

pub use common_cfg::NO_VECTOR;
pub use device::{ActivatedQueue, InterruptSource, VirtioDevice, VirtioInterrupt};
pub use error::VirtioPciError;
pub use gpu::{GpuModel, VirtioGpu, CONTROL_QUEUE_SIZE, CURSOR_QUEUE_SIZE};
pub use input::{
    InputHandle, InputKind, VirtioInput, EVENT_QUEUE_SIZE, PENDING_EVENTS, STATUS_QUEUE_SIZE,
    TABLET_ABS_MAX,
};
pub use pci_transport::{
    IoEventRegistrar, KvmIoEvents, VirtioPciDevice, BAR0_SIZE, COMMON_CFG_OFFSET,
    DEVICE_CFG_OFFSET, ISR_OFFSET, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, NOTIFY_OFFSET,
    NOTIFY_OFF_MULTIPLIER, VIRTIO_PCI_DEVICE_ID_BASE, VIRTIO_PCI_VENDOR_ID,
};
#[cfg(test)]
mod gpu_transport_tests;
#[cfg(test)]
mod tests;
