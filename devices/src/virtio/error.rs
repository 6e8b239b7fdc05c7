//! Errors of the virtio-pci transport.

/// Setting up a virtio-pci device failed (host side).
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// Building the PCI configuration space failed.
    #[error("virtio-pci configuration space: {0}")]
    Pci(#[from] crate::pci::PciError),
    /// Creating an eventfd failed.
    #[error("creating an eventfd: {0}")]
    EventFd(std::io::Error),
    /// The MSI router refused (GSI allocation, irqfd registration).
    #[error("MSI-X setup: {0}")]
    Msi(#[source] crate::Error),
    /// A queue could not be created.
    #[error("virtqueue {index} with max size {size}: {source}")]
    Queue {
        /// Queue index.
        index: usize,
        /// Its maximum size.
        size: u16,
        /// What virtio-queue said.
        source: virtio_queue::Error,
    },
}
