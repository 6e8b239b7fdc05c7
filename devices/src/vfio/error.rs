//! Errors of the VFIO PCI passthrough device.

use std::path::PathBuf;

use thiserror::Error;

use crate::pci::PciError;

/// What can go wrong opening, mapping or running a passed-through PCI device.
#[derive(Debug, Error)]
pub enum VfioPciError {
    /// The device string is neither a BDF nor a sysfs path.
    #[error(
        "invalid VFIO device '{0}': give a PCI address like 0000:00:03.0 (or 00:03.0) or a \
         sysfs path like /sys/bus/pci/devices/0000:00:03.0"
    )]
    InvalidSpec(String),
    /// No such PCI device in sysfs.
    #[error("no PCI device {spec}: {path} does not exist (see `lspci -D` for addresses)")]
    NoSuchDevice {
        /// What the user gave.
        spec: String,
        /// The sysfs path looked at.
        path: PathBuf,
    },
    /// The device is bound to another driver (or none).
    #[error(
        "PCI device {bdf} is not bound to vfio-pci (driver: {driver}); bind it with:\n  \
         modprobe vfio-pci\n  \
         echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override\n  \
         [ -e /sys/bus/pci/devices/{bdf}/driver ] && echo {bdf} > /sys/bus/pci/devices/{bdf}/driver/unbind\n  \
         echo {bdf} > /sys/bus/pci/drivers_probe"
    )]
    NotBoundToVfio {
        /// The device's address.
        bdf: String,
        /// Its current driver, or "none".
        driver: String,
    },
    /// The device has no IOMMU group.
    #[error(
        "PCI device {0} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on \
         on the host kernel command line)"
    )]
    NoIommuGroup(String),
    /// Other devices of the group are bound to host drivers.
    #[error(
        "IOMMU group {group} of {bdf} is not viable: every device in \
         /sys/kernel/iommu_groups/{group}/devices must be bound to vfio-pci or to no driver; \
         bound elsewhere: {others}"
    )]
    GroupNotViable {
        /// The group.
        group: u32,
        /// The device's address.
        bdf: String,
        /// The offending devices and their drivers.
        others: String,
    },
    /// Opening a VFIO node was refused.
    #[error("permission denied opening {0}: run as root or give this user access to it")]
    PermissionDenied(PathBuf),
    /// The VFIO group node is missing.
    #[error("{0} does not exist: is the vfio-pci module loaded and the device bound to it?")]
    NoGroupNode(PathBuf),
    /// Only iommufd (/dev/iommu) is available, no legacy container, and the device has no cdev.
    #[error(
        "this host has /dev/iommu but no /dev/vfio/vfio, and {0} has no VFIO device cdev \
         (no vfio-dev/ in sysfs): enable CONFIG_VFIO_DEVICE_CDEV (iommufd) or the legacy \
         container (CONFIG_VFIO_CONTAINER or CONFIG_IOMMUFD_VFIO_CONTAINER)"
    )]
    IommufdOnly(String),
    /// The group or device is open elsewhere.
    #[error(
        "{0} is busy: another process (another VMM?) already uses this device or its IOMMU group"
    )]
    GroupBusy(PathBuf),
    /// One VM's devices must share one IOMMU back end.
    #[error(
        "{bdf} would be opened through {wanted} but this VM's first passthrough device uses \
         {have}; all passthrough devices of a VM share one IOMMU address space"
    )]
    MixedIommu {
        /// The device.
        bdf: String,
        /// What it needs.
        wanted: &'static str,
        /// What the VM has.
        have: &'static str,
    },
    /// I/O on a VFIO node or sysfs failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A VFIO ioctl failed.
    #[error("VFIO: {what}: {source}")]
    Vfio {
        /// What we were doing.
        what: &'static str,
        /// What vfio-ioctls said.
        source: vfio_ioctls::VfioError,
    },
    /// mmap of a BAR failed.
    #[error("mmap of BAR {bar} ({size:#x} bytes at region offset {offset:#x}) failed: {source}")]
    Mmap {
        /// BAR index.
        bar: u32,
        /// Offset in the region.
        offset: u64,
        /// Length.
        size: u64,
        /// The error.
        source: std::io::Error,
    },
    /// Guest RAM could not be DMA-mapped.
    #[error("DMA-mapping guest RAM into the IOMMU failed: {0}")]
    DmaMap(String),
    /// The region table refused the device.
    #[error("passthrough registry: {0}")]
    Registry(#[source] crate::Error),
    /// A PCI core error.
    #[error(transparent)]
    Pci(#[from] PciError),
}

/// Result type of the VFIO device.
pub type Result<T> = std::result::Result<T, VfioPciError>;
