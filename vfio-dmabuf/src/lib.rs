//! vfio-dmabuf
