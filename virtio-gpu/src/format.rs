//! Pixel formats: virtio-gpu format numbers, their DRM fourcc codes and byte layouts.

use virtio_bindings::virtio_gpu as vg;

/// Bytes per pixel of every supported format (all are 32-bit).
pub const BYTES_PER_PIXEL: u32 = 4;

/// A supported 32-bit pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    /// `VIRTIO_GPU_FORMAT_*`.
    pub virtio: u32,
    /// DRM fourcc (`include/uapi/drm/drm_fourcc.h`).
    pub fourcc: u32,
    /// Byte index of red, green, blue in a pixel as it lies in memory.
    pub rgb: [usize; 3],
    /// Byte index of alpha, if the format has one.
    pub alpha: Option<usize>,
}

const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

/// The supported formats. virtio names give the byte order in memory (B8G8R8A8: B first);
/// DRM names give the order in a little-endian 32-bit word (ARGB8888: B first), hence the
/// apparent swap.
pub const FORMATS: [PixelFormat; 8] = [
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM,
        fourcc: fourcc(b"AR24"),
        rgb: [2, 1, 0],
        alpha: Some(3),
    },
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
        fourcc: fourcc(b"XR24"),
        rgb: [2, 1, 0],
        alpha: None,
    },
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM,
        fourcc: fourcc(b"BA24"),
        rgb: [1, 2, 3],
        alpha: Some(0),
    },
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM,
        fourcc: fourcc(b"BX24"),
        rgb: [1, 2, 3],
        alpha: None,
    },
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM,
        fourcc: fourcc(b"AB24"),
        rgb: [0, 1, 2],
        alpha: Some(3),
    },
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM,
        fourcc: fourcc(b"RX24"),
        rgb: [3, 2, 1],
        alpha: None,
    },
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM,
        fourcc: fourcc(b"RA24"),
        rgb: [3, 2, 1],
        alpha: Some(0),
    },
    PixelFormat {
        virtio: vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
        fourcc: fourcc(b"XB24"),
        rgb: [0, 1, 2],
        alpha: None,
    },
];

impl PixelFormat {
    /// Looks up a virtio format number.
    pub fn from_virtio(format: u32) -> Option<PixelFormat> {
        FORMATS.iter().copied().find(|f| f.virtio == format)
    }

    /// Looks up a DRM fourcc.
    pub fn from_fourcc(fourcc: u32) -> Option<PixelFormat> {
        FORMATS.iter().copied().find(|f| f.fourcc == fourcc)
    }

    /// Converts one pixel as it lies in memory to RGBA (opaque when the format has no alpha).
    pub fn to_rgba(&self, px: &[u8]) -> [u8; 4] {
        let get = |i: usize| px.get(i).copied().unwrap_or(0);
        [
            get(self.rgb[0]),
            get(self.rgb[1]),
            get(self.rgb[2]),
            self.alpha.map_or(0xff, get),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xrgb_is_bgrx_in_memory() {
        let f = PixelFormat::from_virtio(vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM)
            .unwrap();
        assert_eq!(f.fourcc, 0x3432_5258); // 'XR24'
                                           // 0x00112233 as XRGB8888 little-endian: bytes 33 22 11 00 -> r=0x11 g=0x22 b=0x33.
        assert_eq!(
            f.to_rgba(&0x0011_2233u32.to_le_bytes()),
            [0x11, 0x22, 0x33, 0xff]
        );
        assert_eq!(PixelFormat::from_fourcc(f.fourcc), Some(f));
    }

    #[test]
    fn abgr_keeps_alpha_and_unknown_formats_are_refused() {
        let f = PixelFormat::from_virtio(vg::virtio_gpu_formats_VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM)
            .unwrap();
        assert_eq!(f.to_rgba(&[1, 2, 3, 4]), [1, 2, 3, 4]);
        assert!(PixelFormat::from_virtio(0).is_none());
        assert!(PixelFormat::from_virtio(999).is_none());
    }
}
