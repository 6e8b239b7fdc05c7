//! Shared helpers for the rig guest programs.

pub mod drm;
pub mod error;
pub mod gpu_ctl;
pub mod hold;
#[cfg(target_arch = "x86_64")]
pub mod ioport;
pub mod kmsg;
pub mod mapping;
pub mod pagemap;
pub mod pattern;
pub mod pci;
pub mod report;
pub mod vfio;
pub mod virtio_gpu_cmd;
pub mod virtio_pci;
pub mod virtqueue;
