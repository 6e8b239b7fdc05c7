//! Errors of the virtio-gpu device and the response code each one sends to the guest.

use virtio_bindings::virtio_gpu::{
    virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID as RESP_ERR_INVALID_CONTEXT_ID,
    virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER as RESP_ERR_INVALID_PARAMETER,
    virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID as RESP_ERR_INVALID_RESOURCE_ID,
    virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID as RESP_ERR_INVALID_SCANOUT_ID,
    virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY as RESP_ERR_OUT_OF_MEMORY,
    virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC as RESP_ERR_UNSPEC,
};

/// A guest request the device refuses. Each variant maps to one virtio-gpu error response
/// ([`GpuError::response_type`]); the message is logged as a guest error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// A request arrived before the device was given guest memory.
    #[error("the device has no guest memory yet (not activated)")]
    NotActivated,
    /// The request is shorter than its command needs.
    #[error("request truncated: {what} needs {need} bytes, the guest supplied {got}")]
    Truncated {
        /// Which command (or the header) was cut short.
        what: &'static str,
        /// Bytes the command needs.
        need: usize,
        /// Bytes the guest supplied.
        got: usize,
    },
    /// The command type is not one this device knows.
    #[error("unknown command type {0:#x}")]
    UnknownCommand(u32),
    /// A 3D/context command: this device has no rendering contexts.
    #[error("command {0:#x} needs a 3D context; this device has none")]
    NoContext(u32),
    /// Scanout id out of range.
    #[error("invalid scanout id {0}")]
    InvalidScanout(u32),
    /// Resource id 0 or unknown.
    #[error("invalid resource id {0}")]
    InvalidResource(u32),
    /// Resource id already in use on create.
    #[error("resource id {0} already exists")]
    ResourceExists(u32),
    /// The command does not apply to this kind of resource (2D vs blob).
    #[error("resource {id} is not a {expected} resource")]
    WrongResourceKind {
        /// The resource id.
        id: u32,
        /// What the command needs ("2D" or "blob").
        expected: &'static str,
    },
    /// Unknown pixel format.
    #[error("unsupported pixel format {0}")]
    InvalidFormat(u32),
    /// Any other field that is out of range; the text says which.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// Too many memory entries.
    #[error("{got} memory entries exceed the limit of {max}")]
    TooManyEntries {
        /// Entries the guest asked for.
        got: u32,
        /// The device's limit.
        max: u32,
    },
    /// A backing entry is not inside guest memory (or a passthrough region for blobs).
    #[error("memory entry {index} ({addr:#x}+{len:#x}) is not in guest memory")]
    BadEntry {
        /// Index of the entry in the guest's list.
        index: usize,
        /// Guest-physical address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The resource already has backing attached.
    #[error("resource {0} already has backing attached")]
    BackingAttached(u32),
    /// The resource has no backing.
    #[error("resource {0} has no backing attached")]
    NoBacking(u32),
    /// The resource would exceed the host memory budget.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// Reading guest memory failed although the entries were checked.
    #[error("guest memory access failed: {0}")]
    GuestMemory(String),
}

impl GpuError {
    /// The `VIRTIO_GPU_RESP_ERR_*` type this error answers with.
    pub fn response_type(&self) -> u32 {
        match self {
            GpuError::Truncated { .. }
            | GpuError::UnknownCommand(_)
            | GpuError::BackingAttached(_)
            | GpuError::NoBacking(_)
            | GpuError::BadEntry { .. }
            | GpuError::GuestMemory(_)
            | GpuError::NotActivated => RESP_ERR_UNSPEC,
            GpuError::NoContext(_) => RESP_ERR_INVALID_CONTEXT_ID,
            GpuError::InvalidScanout(_) => RESP_ERR_INVALID_SCANOUT_ID,
            GpuError::InvalidResource(_)
            | GpuError::ResourceExists(_)
            | GpuError::WrongResourceKind { .. } => RESP_ERR_INVALID_RESOURCE_ID,
            GpuError::InvalidFormat(_)
            | GpuError::InvalidParameter(_)
            | GpuError::TooManyEntries { .. } => RESP_ERR_INVALID_PARAMETER,
            GpuError::OutOfMemory(_) => RESP_ERR_OUT_OF_MEMORY,
        }
    }
}

/// Shorthand for results of request handlers.
pub type GpuResult<T> = std::result::Result<T, GpuError>;
