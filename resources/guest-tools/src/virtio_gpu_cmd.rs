//! virtio-gpu control commands encoded as little-endian bytes (layouts of Linux
//! `include/uapi/linux/virtio_gpu.h`; the numbers come from `virtio-bindings`), and response decoding.

use virtio_bindings::virtio_gpu as g;

/// Size of `struct virtio_gpu_ctrl_hdr`.
pub const HDR_SIZE: usize = 24;
/// Size of `struct virtio_gpu_resp_display_info`.
pub const DISPLAY_INFO_SIZE: usize = HDR_SIZE + 16 * 24;

/// GET_DISPLAY_INFO (0x0100).
pub const CMD_GET_DISPLAY_INFO: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO;
/// RESOURCE_UNREF (0x0102).
pub const CMD_RESOURCE_UNREF: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF;
/// SET_SCANOUT (0x0103).
pub const CMD_SET_SCANOUT: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT;
/// RESOURCE_FLUSH (0x0104).
pub const CMD_RESOURCE_FLUSH: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH;
/// RESOURCE_CREATE_BLOB (0x010c).
pub const CMD_RESOURCE_CREATE_BLOB: u32 =
    g::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB;
/// SET_SCANOUT_BLOB (0x010d).
pub const CMD_SET_SCANOUT_BLOB: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT_BLOB;
/// OK_NODATA (0x1100).
pub const RESP_OK_NODATA: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA;
/// OK_DISPLAY_INFO (0x1101).
pub const RESP_OK_DISPLAY_INFO: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO;
/// ERR_UNSPEC (0x1200).
pub const RESP_ERR_UNSPEC: u32 = g::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC;
/// B8G8R8X8_UNORM: DRM_FORMAT_XRGB8888 on a little-endian guest.
pub const FORMAT_B8G8R8X8_UNORM: u32 = g::virtio_gpu_formats_VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM;
/// blob_mem GUEST.
pub const BLOB_MEM_GUEST: u32 = g::VIRTIO_GPU_BLOB_MEM_GUEST;
/// blob_flags USE_MAPPABLE.
pub const BLOB_FLAG_USE_MAPPABLE: u32 = g::VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE;
/// blob_flags USE_SHAREABLE.
pub const BLOB_FLAG_USE_SHAREABLE: u32 = g::VIRTIO_GPU_BLOB_FLAG_USE_SHAREABLE;
/// Feature bit RESOURCE_BLOB.
pub const F_RESOURCE_BLOB: u32 = g::VIRTIO_GPU_F_RESOURCE_BLOB;
/// Feature bit EDID.
pub const F_EDID: u32 = g::VIRTIO_GPU_F_EDID;

/// A rectangle (`struct virtio_gpu_rect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// x
    pub x: u32,
    /// y
    pub y: u32,
    /// width
    pub width: u32,
    /// height
    pub height: u32,
}

impl Rect {
    /// The rectangle (0, 0, w, h).
    pub fn sized(width: u32, height: u32) -> Self {
        Rect {
            x: 0,
            y: 0,
            width,
            height,
        }
    }
}

struct Enc(Vec<u8>);

impl Enc {
    fn new(cmd: u32) -> Self {
        let mut e = Enc(Vec::with_capacity(128));
        e.u32(cmd); // type
        e.u32(0); // flags
        e.u64(0); // fence_id
        e.u32(0); // ctx_id
        e.u32(0); // ring_idx, padding[3]
        e
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn rect(&mut self, r: Rect) -> &mut Self {
        self.u32(r.x).u32(r.y).u32(r.width).u32(r.height)
    }
}

/// GET_DISPLAY_INFO: a bare header.
pub fn get_display_info() -> Vec<u8> {
    Enc::new(CMD_GET_DISPLAY_INFO).0
}

/// RESOURCE_CREATE_BLOB with `entries` (guest-physical address, length) following the struct.
pub fn resource_create_blob(
    resource_id: u32,
    blob_mem: u32,
    blob_flags: u32,
    blob_id: u64,
    size: u64,
    entries: &[(u64, u32)],
) -> Vec<u8> {
    let mut e = Enc::new(CMD_RESOURCE_CREATE_BLOB);
    e.u32(resource_id)
        .u32(blob_mem)
        .u32(blob_flags)
        .u32(entries.len() as u32)
        .u64(blob_id)
        .u64(size);
    for (addr, len) in entries {
        e.u64(*addr).u32(*len).u32(0);
    }
    e.0
}

/// Parameters of a single-plane SET_SCANOUT_BLOB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanoutBlob {
    /// Scanout (display) index.
    pub scanout_id: u32,
    /// Blob resource id.
    pub resource_id: u32,
    /// Part of the image shown.
    pub rect: Rect,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// VIRTIO_GPU_FORMAT_*.
    pub format: u32,
    /// Bytes per row (`strides[0]`).
    pub stride: u32,
    /// Byte offset of the image in the blob (`offsets[0]`).
    pub offset: u32,
}

/// SET_SCANOUT_BLOB of a single-plane image.
pub fn set_scanout_blob(s: &ScanoutBlob) -> Vec<u8> {
    let mut e = Enc::new(CMD_SET_SCANOUT_BLOB);
    e.rect(s.rect)
        .u32(s.scanout_id)
        .u32(s.resource_id)
        .u32(s.width)
        .u32(s.height)
        .u32(s.format)
        .u32(0)
        .u32(s.stride)
        .u32(0)
        .u32(0)
        .u32(0)
        .u32(s.offset)
        .u32(0)
        .u32(0)
        .u32(0);
    e.0
}

/// SET_SCANOUT (resource 0 disables the scanout).
pub fn set_scanout(scanout_id: u32, resource_id: u32, r: Rect) -> Vec<u8> {
    let mut e = Enc::new(CMD_SET_SCANOUT);
    e.rect(r).u32(scanout_id).u32(resource_id);
    e.0
}

/// RESOURCE_FLUSH of rectangle `r`.
pub fn resource_flush(resource_id: u32, r: Rect) -> Vec<u8> {
    let mut e = Enc::new(CMD_RESOURCE_FLUSH);
    e.rect(r).u32(resource_id).u32(0);
    e.0
}

/// RESOURCE_UNREF.
pub fn resource_unref(resource_id: u32) -> Vec<u8> {
    let mut e = Enc::new(CMD_RESOURCE_UNREF);
    e.u32(resource_id).u32(0);
    e.0
}

/// The `type` of a response header (0 if too short).
pub fn resp_type(resp: &[u8]) -> u32 {
    resp.get(0..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// Name of a response type, for logs.
pub fn resp_name(t: u32) -> &'static str {
    match t {
        0x1100 => "OK_NODATA",
        0x1101 => "OK_DISPLAY_INFO",
        0x1102 => "OK_CAPSET_INFO",
        0x1103 => "OK_CAPSET",
        0x1104 => "OK_EDID",
        0x1105 => "OK_RESOURCE_UUID",
        0x1106 => "OK_MAP_INFO",
        0x1200 => "ERR_UNSPEC",
        0x1201 => "ERR_OUT_OF_MEMORY",
        0x1202 => "ERR_INVALID_SCANOUT_ID",
        0x1203 => "ERR_INVALID_RESOURCE_ID",
        0x1204 => "ERR_INVALID_CONTEXT_ID",
        0x1205 => "ERR_INVALID_PARAMETER",
        _ => "UNKNOWN",
    }
}

/// One scanout of a display-info response: (rect, enabled, flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayOne {
    /// Preferred position and size.
    pub rect: Rect,
    /// Enabled.
    pub enabled: bool,
    /// Flags.
    pub flags: u32,
}

/// Decodes the 16 scanouts of an OK_DISPLAY_INFO response (None if it is too short).
pub fn parse_display_info(resp: &[u8]) -> Option<Vec<DisplayOne>> {
    if resp.len() < DISPLAY_INFO_SIZE {
        return None;
    }
    let w = |at: usize| u32::from_le_bytes([resp[at], resp[at + 1], resp[at + 2], resp[at + 3]]);
    Some(
        (0..16)
            .map(|i| {
                let b = HDR_SIZE + i * 24;
                DisplayOne {
                    rect: Rect {
                        x: w(b),
                        y: w(b + 4),
                        width: w(b + 8),
                        height: w(b + 12),
                    },
                    enabled: w(b + 16) != 0,
                    flags: w(b + 20),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn encodings_have_the_kernel_struct_sizes() {
        assert_eq!(size_of::<g::virtio_gpu_ctrl_hdr>(), HDR_SIZE);
        assert_eq!(get_display_info().len(), HDR_SIZE);
        assert_eq!(
            resource_create_blob(1, 1, 3, 0, 8192, &[]).len(),
            size_of::<g::virtio_gpu_resource_create_blob>()
        );
        assert_eq!(
            resource_create_blob(1, 1, 3, 0, 8192, &[(0, 4096), (0, 4096)]).len(),
            size_of::<g::virtio_gpu_resource_create_blob>()
                + 2 * size_of::<g::virtio_gpu_mem_entry>()
        );
        assert_eq!(
            set_scanout_blob(&ScanoutBlob {
                scanout_id: 0,
                resource_id: 1,
                rect: Rect::sized(64, 64),
                width: 64,
                height: 64,
                format: 2,
                stride: 256,
                offset: 0
            })
            .len(),
            size_of::<g::virtio_gpu_set_scanout_blob>()
        );
        assert_eq!(
            set_scanout(0, 0, Rect::default()).len(),
            size_of::<g::virtio_gpu_set_scanout>()
        );
        assert_eq!(
            resource_flush(1, Rect::default()).len(),
            size_of::<g::virtio_gpu_resource_flush>()
        );
        assert_eq!(
            resource_unref(1).len(),
            size_of::<g::virtio_gpu_resource_unref>()
        );
        assert_eq!(
            DISPLAY_INFO_SIZE,
            size_of::<g::virtio_gpu_resp_display_info>()
        );
    }

    #[test]
    fn create_blob_fields_are_where_the_device_reads_them() {
        let b = resource_create_blob(
            7,
            BLOB_MEM_GUEST,
            3,
            0,
            0x3000,
            &[(0xfe00_1000, 0x2000), (0x5000, 0x1000)],
        );
        assert_eq!(resp_type(&b), 0x010c);
        assert_eq!(&b[24..28], &7u32.to_le_bytes()); // resource_id
        assert_eq!(&b[28..32], &1u32.to_le_bytes()); // blob_mem
        assert_eq!(&b[32..36], &3u32.to_le_bytes()); // blob_flags
        assert_eq!(&b[36..40], &2u32.to_le_bytes()); // nr_entries
        assert_eq!(&b[48..56], &0x3000u64.to_le_bytes()); // size
        assert_eq!(&b[56..64], &0xfe00_1000u64.to_le_bytes()); // entry 0 addr
        assert_eq!(&b[64..68], &0x2000u32.to_le_bytes()); // entry 0 length
        assert_eq!(&b[72..80], &0x5000u64.to_le_bytes()); // entry 1 addr
    }

    #[test]
    fn scanout_blob_fields_are_where_the_device_reads_them() {
        let b = set_scanout_blob(&ScanoutBlob {
            scanout_id: 0,
            resource_id: 9,
            rect: Rect::sized(256, 192),
            width: 256,
            height: 192,
            format: FORMAT_B8G8R8X8_UNORM,
            stride: 1024,
            offset: 0,
        });
        assert_eq!(&b[32..36], &256u32.to_le_bytes()); // r.width
        assert_eq!(&b[40..44], &0u32.to_le_bytes()); // scanout_id
        assert_eq!(&b[44..48], &9u32.to_le_bytes()); // resource_id
        assert_eq!(&b[56..60], &2u32.to_le_bytes()); // format
        assert_eq!(&b[64..68], &1024u32.to_le_bytes()); // strides[0]
        assert_eq!(&b[80..84], &0u32.to_le_bytes()); // offsets[0]
    }

    #[test]
    fn display_info_decodes_and_short_responses_are_rejected() {
        let mut r = vec![0u8; DISPLAY_INFO_SIZE];
        r[0..4].copy_from_slice(&RESP_OK_DISPLAY_INFO.to_le_bytes());
        r[32..36].copy_from_slice(&1280u32.to_le_bytes());
        r[36..40].copy_from_slice(&800u32.to_le_bytes());
        r[40..44].copy_from_slice(&1u32.to_le_bytes());
        let d = parse_display_info(&r).unwrap();
        assert_eq!(d[0].rect, Rect::sized(1280, 800));
        assert!(d[0].enabled);
        assert!(!d[1].enabled);
        assert!(parse_display_info(&r[..100]).is_none());
        assert_eq!(resp_name(resp_type(&r)), "OK_DISPLAY_INFO");
        assert_eq!(resp_name(0x1200), "ERR_UNSPEC");
    }
}
