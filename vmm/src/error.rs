//! Errors of the VMM as a whole.

use thiserror::Error;

/// Everything that can stop the VMM before or while the guest runs.
#[derive(Debug, Error)]
pub enum VmmError {
    /// A `--device` device could not be created.
    #[error(transparent)]
    Devices(#[from] crate::pci_devices::PciDevicesError),
    /// Creating the VM, its memory or devices failed.
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    /// Loading the kernel or writing boot structures failed.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
    /// The event loop failed.
    #[error(transparent)]
    EventLoop(#[from] crate::event_loop::EventLoopError),
    /// The vCPU kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}
