//! virtio-gpu
