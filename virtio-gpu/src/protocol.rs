//! The virtio-gpu wire protocol: one decoder turning a request's bytes into a typed
//! [`Request`], and the encoder of responses.
//!
//! Layouts and numbers are those of Linux `include/uapi/linux/virtio_gpu.h`, taken from
//! `virtio_bindings::virtio_gpu`. Everything is little-endian. The decoder is a pure function of
//! the bytes (it is the fuzz target): it never panics and never allocates more than
//! [`MAX_MEM_ENTRIES`] entries.

use std::mem::size_of;

use virtio_bindings::virtio_gpu as vg;

use crate::error::{GpuError, GpuResult};

/// Most memory entries accepted in one ATTACH_BACKING or RESOURCE_CREATE_BLOB (QEMU's limit too).
pub const MAX_MEM_ENTRIES: u32 = 16384;
/// Number of scanouts this device offers.
pub const NUM_SCANOUTS: u32 = 1;
/// Size of the control header.
pub const HDR_SIZE: usize = size_of::<vg::virtio_gpu_ctrl_hdr>();
/// Size of one memory entry.
pub const MEM_ENTRY_SIZE: usize = size_of::<vg::virtio_gpu_mem_entry>();
/// Largest request the device reads from a chain: a blob create with the most entries.
pub const MAX_REQUEST_SIZE: usize =
    size_of::<vg::virtio_gpu_resource_create_blob>() + MAX_MEM_ENTRIES as usize * MEM_ENTRY_SIZE;
/// Size of a display-info response (the largest fixed response but EDID).
pub const DISPLAY_INFO_SIZE: usize = size_of::<vg::virtio_gpu_resp_display_info>();
/// Size of an EDID response.
pub const EDID_RESP_SIZE: usize = size_of::<vg::virtio_gpu_resp_edid>();

/// Command types (`VIRTIO_GPU_CMD_*`), short names.
pub mod cmd {
    use virtio_bindings::virtio_gpu as vg;
    /// GET_DISPLAY_INFO
    pub const GET_DISPLAY_INFO: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_DISPLAY_INFO;
    /// RESOURCE_CREATE_2D
    pub const RESOURCE_CREATE_2D: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_2D;
    /// RESOURCE_UNREF
    pub const RESOURCE_UNREF: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNREF;
    /// SET_SCANOUT
    pub const SET_SCANOUT: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT;
    /// RESOURCE_FLUSH
    pub const RESOURCE_FLUSH: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_FLUSH;
    /// TRANSFER_TO_HOST_2D
    pub const TRANSFER_TO_HOST_2D: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D;
    /// RESOURCE_ATTACH_BACKING
    pub const RESOURCE_ATTACH_BACKING: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING;
    /// RESOURCE_DETACH_BACKING
    pub const RESOURCE_DETACH_BACKING: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING;
    /// GET_EDID
    pub const GET_EDID: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_EDID;
    /// RESOURCE_CREATE_BLOB
    pub const RESOURCE_CREATE_BLOB: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB;
    /// SET_SCANOUT_BLOB
    pub const SET_SCANOUT_BLOB: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_SET_SCANOUT_BLOB;
    /// UPDATE_CURSOR
    pub const UPDATE_CURSOR: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_UPDATE_CURSOR;
    /// MOVE_CURSOR
    pub const MOVE_CURSOR: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_MOVE_CURSOR;
    /// First 3D command (CTX_CREATE).
    pub const FIRST_3D: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_CTX_CREATE;
    /// Last 3D command (RESOURCE_UNMAP_BLOB).
    pub const LAST_3D: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB;
    /// GET_CAPSET_INFO (no capsets here).
    pub const GET_CAPSET_INFO: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET_INFO;
    /// GET_CAPSET
    pub const GET_CAPSET: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_GET_CAPSET;
    /// RESOURCE_ASSIGN_UUID
    pub const RESOURCE_ASSIGN_UUID: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID;
}

/// Response types (`VIRTIO_GPU_RESP_*`), short names.
pub mod resp {
    use virtio_bindings::virtio_gpu as vg;
    /// OK_NODATA
    pub const OK_NODATA: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_NODATA;
    /// OK_DISPLAY_INFO
    pub const OK_DISPLAY_INFO: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_DISPLAY_INFO;
    /// OK_EDID
    pub const OK_EDID: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_OK_EDID;
    /// ERR_UNSPEC
    pub const ERR_UNSPEC: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_UNSPEC;
    /// ERR_OUT_OF_MEMORY
    pub const ERR_OUT_OF_MEMORY: u32 = vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
    /// ERR_INVALID_SCANOUT_ID
    pub const ERR_INVALID_SCANOUT_ID: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
    /// ERR_INVALID_RESOURCE_ID
    pub const ERR_INVALID_RESOURCE_ID: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
    /// ERR_INVALID_CONTEXT_ID
    pub const ERR_INVALID_CONTEXT_ID: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
    /// ERR_INVALID_PARAMETER
    pub const ERR_INVALID_PARAMETER: u32 =
        vg::virtio_gpu_ctrl_type_VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
}

/// The control header of every request and response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtrlHeader {
    /// Command or response type.
    pub type_: u32,
    /// `VIRTIO_GPU_FLAG_*`.
    pub flags: u32,
    /// Fence id, meaningful with `VIRTIO_GPU_FLAG_FENCE`.
    pub fence_id: u64,
    /// Rendering context (always 0 without 3D).
    pub ctx_id: u32,
    /// Ring index, meaningful with `VIRTIO_GPU_FLAG_INFO_RING_IDX`.
    pub ring_idx: u8,
}

impl CtrlHeader {
    /// Whether the guest asked for a fence.
    pub fn fenced(&self) -> bool {
        self.flags & vg::VIRTIO_GPU_FLAG_FENCE != 0
    }
}

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// Whether the rectangle lies inside a `width` x `height` area (without overflow).
    pub fn is_inside(&self, width: u32, height: u32) -> bool {
        let right = u64::from(self.x) + u64::from(self.width);
        let bottom = u64::from(self.y) + u64::from(self.height);
        right <= u64::from(width) && bottom <= u64::from(height)
    }

    /// Whether the rectangle covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }
}

/// One guest memory range of a resource's backing (`virtio_gpu_mem_entry`; its 32-bit length
/// widened).
pub use vfio_dmabuf::BlobEntry;

/// Cursor position (UPDATE_CURSOR, MOVE_CURSOR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CursorPos {
    /// Scanout the cursor is on.
    pub scanout_id: u32,
    /// X in pixels.
    pub x: u32,
    /// Y in pixels.
    pub y: u32,
}

/// SET_SCANOUT_BLOB's fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanoutBlob {
    /// Shown part of the framebuffer.
    pub rect: Rect,
    /// Scanout id.
    pub scanout_id: u32,
    /// Blob resource (0 disables the scanout).
    pub resource_id: u32,
    /// Framebuffer width.
    pub width: u32,
    /// Framebuffer height.
    pub height: u32,
    /// `VIRTIO_GPU_FORMAT_*`.
    pub format: u32,
    /// Plane strides (only plane 0 is used by the supported formats).
    pub strides: [u32; 4],
    /// Plane offsets.
    pub offsets: [u32; 4],
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuCommand {
    /// GET_DISPLAY_INFO
    GetDisplayInfo,
    /// GET_EDID
    GetEdid {
        /// Scanout id.
        scanout: u32,
    },
    /// RESOURCE_CREATE_2D
    ResourceCreate2d {
        /// New id.
        resource_id: u32,
        /// `VIRTIO_GPU_FORMAT_*`.
        format: u32,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// RESOURCE_UNREF
    ResourceUnref {
        /// Resource id.
        resource_id: u32,
    },
    /// RESOURCE_ATTACH_BACKING
    ResourceAttachBacking {
        /// Resource id.
        resource_id: u32,
        /// Backing entries in guest order.
        entries: Vec<BlobEntry>,
    },
    /// RESOURCE_DETACH_BACKING
    ResourceDetachBacking {
        /// Resource id.
        resource_id: u32,
    },
    /// TRANSFER_TO_HOST_2D
    TransferToHost2d {
        /// Rectangle of the resource to update.
        rect: Rect,
        /// Offset of the rectangle's first pixel in the backing.
        offset: u64,
        /// Resource id.
        resource_id: u32,
    },
    /// SET_SCANOUT
    SetScanout {
        /// Shown part of the resource.
        rect: Rect,
        /// Scanout id.
        scanout_id: u32,
        /// Resource id (0 disables).
        resource_id: u32,
    },
    /// RESOURCE_FLUSH
    ResourceFlush {
        /// Dirty rectangle.
        rect: Rect,
        /// Resource id.
        resource_id: u32,
    },
    /// UPDATE_CURSOR
    UpdateCursor {
        /// Position.
        pos: CursorPos,
        /// Cursor image resource (0 hides the cursor).
        resource_id: u32,
        /// Hot spot x.
        hot_x: u32,
        /// Hot spot y.
        hot_y: u32,
    },
    /// MOVE_CURSOR
    MoveCursor {
        /// Position.
        pos: CursorPos,
    },
    /// RESOURCE_CREATE_BLOB
    ResourceCreateBlob {
        /// New id.
        resource_id: u32,
        /// `VIRTIO_GPU_BLOB_MEM_*`.
        blob_mem: u32,
        /// `VIRTIO_GPU_BLOB_FLAG_*`.
        blob_flags: u32,
        /// Blob id (host blobs only; must be 0 for guest blobs).
        blob_id: u64,
        /// Size in bytes.
        size: u64,
        /// Backing entries in guest order.
        entries: Vec<BlobEntry>,
    },
    /// SET_SCANOUT_BLOB
    SetScanoutBlob(ScanoutBlob),
}

/// A decoded request: its header and command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Header (echoed in the response's fence fields).
    pub hdr: CtrlHeader,
    /// Command.
    pub cmd: GpuCommand,
}

/// Little-endian reader over a request's bytes that reports truncation instead of panicking.
struct WireReader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
    need: usize,
}

impl<'a> WireReader<'a> {
    fn new(buf: &'a [u8], what: &'static str, need: usize) -> GpuResult<Self> {
        if buf.len() < need {
            return Err(GpuError::Truncated {
                what,
                need,
                got: buf.len(),
            });
        }
        Ok(WireReader {
            buf,
            pos: 0,
            what,
            need,
        })
    }

    fn bytes<const N: usize>(&mut self) -> GpuResult<[u8; N]> {
        let end = self.pos.checked_add(N).ok_or(GpuError::Truncated {
            what: self.what,
            need: self.need,
            got: self.buf.len(),
        })?;
        let slice = self.buf.get(self.pos..end).ok_or(GpuError::Truncated {
            what: self.what,
            need: self.need,
            got: self.buf.len(),
        })?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> GpuResult<u8> {
        Ok(self.bytes::<1>()?[0])
    }

    fn u32(&mut self) -> GpuResult<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> GpuResult<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, n: usize) -> GpuResult<()> {
        for _ in 0..n {
            self.u8()?;
        }
        Ok(())
    }

    fn rect(&mut self) -> GpuResult<Rect> {
        Ok(Rect {
            x: self.u32()?,
            y: self.u32()?,
            width: self.u32()?,
            height: self.u32()?,
        })
    }

    fn cursor_pos(&mut self) -> GpuResult<CursorPos> {
        let pos = CursorPos {
            scanout_id: self.u32()?,
            x: self.u32()?,
            y: self.u32()?,
        };
        self.skip(4)?;
        Ok(pos)
    }

    /// Reads `nr` entries after the fixed part; `nr` is checked against [`MAX_MEM_ENTRIES`]
    /// and against the bytes present before anything is allocated.
    fn entries(&mut self, nr: u32) -> GpuResult<Vec<BlobEntry>> {
        if nr > MAX_MEM_ENTRIES {
            return Err(GpuError::TooManyEntries {
                got: nr,
                max: MAX_MEM_ENTRIES,
            });
        }
        let need = self.pos + nr as usize * MEM_ENTRY_SIZE;
        if self.buf.len() < need {
            return Err(GpuError::Truncated {
                what: self.what,
                need,
                got: self.buf.len(),
            });
        }
        let mut entries = Vec::with_capacity(nr as usize);
        for _ in 0..nr {
            let addr = self.u64()?;
            let len = self.u32()?;
            self.skip(4)?;
            entries.push(BlobEntry::new(addr, u64::from(len)));
        }
        Ok(entries)
    }
}

/// Decodes the header alone (used to echo a fence even when the body is bad).
pub fn decode_header(buf: &[u8]) -> GpuResult<CtrlHeader> {
    let mut r = WireReader::new(buf, "control header", HDR_SIZE)?;
    let hdr = CtrlHeader {
        type_: r.u32()?,
        flags: r.u32()?,
        fence_id: r.u64()?,
        ctx_id: r.u32()?,
        ring_idx: r.u8()?,
    };
    Ok(hdr)
}

/// Decodes one request. The body after the header is checked against the command's size.
pub fn decode_request(buf: &[u8]) -> GpuResult<Request> {
    let hdr = decode_header(buf)?;
    let cmd = decode_command(hdr.type_, buf)?;
    Ok(Request { hdr, cmd })
}

fn body<'a>(buf: &'a [u8], what: &'static str, size: usize) -> GpuResult<WireReader<'a>> {
    let mut r = WireReader::new(buf, what, size)?;
    r.skip(HDR_SIZE)?;
    Ok(r)
}

fn decode_command(type_: u32, buf: &[u8]) -> GpuResult<GpuCommand> {
    Ok(match type_ {
        cmd::GET_DISPLAY_INFO => GpuCommand::GetDisplayInfo,
        cmd::GET_EDID => {
            let mut r = body(buf, "GET_EDID", size_of::<vg::virtio_gpu_cmd_get_edid>())?;
            GpuCommand::GetEdid { scanout: r.u32()? }
        }
        cmd::RESOURCE_CREATE_2D => {
            let mut r = body(
                buf,
                "RESOURCE_CREATE_2D",
                size_of::<vg::virtio_gpu_resource_create_2d>(),
            )?;
            GpuCommand::ResourceCreate2d {
                resource_id: r.u32()?,
                format: r.u32()?,
                width: r.u32()?,
                height: r.u32()?,
            }
        }
        cmd::RESOURCE_UNREF => {
            let mut r = body(
                buf,
                "RESOURCE_UNREF",
                size_of::<vg::virtio_gpu_resource_unref>(),
            )?;
            GpuCommand::ResourceUnref {
                resource_id: r.u32()?,
            }
        }
        cmd::RESOURCE_ATTACH_BACKING => {
            let mut r = body(
                buf,
                "RESOURCE_ATTACH_BACKING",
                size_of::<vg::virtio_gpu_resource_attach_backing>(),
            )?;
            let resource_id = r.u32()?;
            let nr = r.u32()?;
            GpuCommand::ResourceAttachBacking {
                resource_id,
                entries: r.entries(nr)?,
            }
        }
        cmd::RESOURCE_DETACH_BACKING => {
            let mut r = body(
                buf,
                "RESOURCE_DETACH_BACKING",
                size_of::<vg::virtio_gpu_resource_detach_backing>(),
            )?;
            GpuCommand::ResourceDetachBacking {
                resource_id: r.u32()?,
            }
        }
        cmd::TRANSFER_TO_HOST_2D => {
            let mut r = body(
                buf,
                "TRANSFER_TO_HOST_2D",
                size_of::<vg::virtio_gpu_transfer_to_host_2d>(),
            )?;
            let rect = r.rect()?;
            let offset = r.u64()?;
            GpuCommand::TransferToHost2d {
                rect,
                offset,
                resource_id: r.u32()?,
            }
        }
        cmd::SET_SCANOUT => {
            let mut r = body(buf, "SET_SCANOUT", size_of::<vg::virtio_gpu_set_scanout>())?;
            let rect = r.rect()?;
            GpuCommand::SetScanout {
                rect,
                scanout_id: r.u32()?,
                resource_id: r.u32()?,
            }
        }
        cmd::RESOURCE_FLUSH => {
            let mut r = body(
                buf,
                "RESOURCE_FLUSH",
                size_of::<vg::virtio_gpu_resource_flush>(),
            )?;
            let rect = r.rect()?;
            GpuCommand::ResourceFlush {
                rect,
                resource_id: r.u32()?,
            }
        }
        cmd::UPDATE_CURSOR => {
            let mut r = body(
                buf,
                "UPDATE_CURSOR",
                size_of::<vg::virtio_gpu_update_cursor>(),
            )?;
            let pos = r.cursor_pos()?;
            GpuCommand::UpdateCursor {
                pos,
                resource_id: r.u32()?,
                hot_x: r.u32()?,
                hot_y: r.u32()?,
            }
        }
        cmd::MOVE_CURSOR => {
            let mut r = body(
                buf,
                "MOVE_CURSOR",
                size_of::<vg::virtio_gpu_update_cursor>(),
            )?;
            GpuCommand::MoveCursor {
                pos: r.cursor_pos()?,
            }
        }
        cmd::RESOURCE_CREATE_BLOB => {
            let mut r = body(
                buf,
                "RESOURCE_CREATE_BLOB",
                size_of::<vg::virtio_gpu_resource_create_blob>(),
            )?;
            let resource_id = r.u32()?;
            let blob_mem = r.u32()?;
            let blob_flags = r.u32()?;
            let nr = r.u32()?;
            let blob_id = r.u64()?;
            let size = r.u64()?;
            GpuCommand::ResourceCreateBlob {
                resource_id,
                blob_mem,
                blob_flags,
                blob_id,
                size,
                entries: r.entries(nr)?,
            }
        }
        cmd::SET_SCANOUT_BLOB => {
            let mut r = body(
                buf,
                "SET_SCANOUT_BLOB",
                size_of::<vg::virtio_gpu_set_scanout_blob>(),
            )?;
            let rect = r.rect()?;
            let scanout_id = r.u32()?;
            let resource_id = r.u32()?;
            let width = r.u32()?;
            let height = r.u32()?;
            let format = r.u32()?;
            r.skip(4)?;
            let mut strides = [0u32; 4];
            for s in strides.iter_mut() {
                *s = r.u32()?;
            }
            let mut offsets = [0u32; 4];
            for o in offsets.iter_mut() {
                *o = r.u32()?;
            }
            GpuCommand::SetScanoutBlob(ScanoutBlob {
                rect,
                scanout_id,
                resource_id,
                width,
                height,
                format,
                strides,
                offsets,
            })
        }
        t if (cmd::FIRST_3D..=cmd::LAST_3D).contains(&t) => return Err(GpuError::NoContext(t)),
        t => return Err(GpuError::UnknownCommand(t)),
    })
}

/// A response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuResponse {
    /// OK_NODATA
    OkNoData,
    /// OK_DISPLAY_INFO: one `(rect, enabled)` per scanout.
    OkDisplayInfo(Vec<(Rect, bool)>),
    /// OK_EDID with the EDID bytes (at most 1024).
    OkEdid(Vec<u8>),
    /// An error response.
    Err(u32),
}

impl GpuResponse {
    /// The response type it encodes to.
    pub fn response_type(&self) -> u32 {
        match self {
            GpuResponse::OkNoData => resp::OK_NODATA,
            GpuResponse::OkDisplayInfo(_) => resp::OK_DISPLAY_INFO,
            GpuResponse::OkEdid(_) => resp::OK_EDID,
            GpuResponse::Err(t) => *t,
        }
    }

    /// Encodes the response; the fence flag, fence id, context and ring index of `req` are
    /// echoed (virtio spec 5.7.6.7: the response to a fenced request carries the fence).
    pub fn encode(&self, req: &CtrlHeader) -> Vec<u8> {
        let flags = req.flags & (vg::VIRTIO_GPU_FLAG_FENCE | vg::VIRTIO_GPU_FLAG_INFO_RING_IDX);
        let fenced = flags & vg::VIRTIO_GPU_FLAG_FENCE != 0;
        let mut out = Vec::with_capacity(HDR_SIZE);
        out.extend_from_slice(&self.response_type().to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&(if fenced { req.fence_id } else { 0 }).to_le_bytes());
        out.extend_from_slice(&req.ctx_id.to_le_bytes());
        let ring_idx = if flags & vg::VIRTIO_GPU_FLAG_INFO_RING_IDX != 0 {
            req.ring_idx
        } else {
            0
        };
        out.extend_from_slice(&[ring_idx, 0, 0, 0]);
        match self {
            GpuResponse::OkDisplayInfo(modes) => {
                for i in 0..vg::VIRTIO_GPU_MAX_SCANOUTS as usize {
                    let (r, enabled) = modes.get(i).copied().unwrap_or_default();
                    for v in [r.x, r.y, r.width, r.height, u32::from(enabled), 0] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            GpuResponse::OkEdid(edid) => {
                let mut block = [0u8; 1024];
                let n = edid.len().min(block.len());
                block[..n].copy_from_slice(&edid[..n]);
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&block);
            }
            GpuResponse::OkNoData | GpuResponse::Err(_) => {}
        }
        out
    }
}

/// Builders of request bytes, for tests, benches and the fuzz corpus.
pub mod encode {
    use super::*;

    /// Header bytes.
    pub fn header(type_: u32, flags: u32, fence_id: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(HDR_SIZE);
        v.extend_from_slice(&type_.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&fence_id.to_le_bytes());
        v.extend_from_slice(&[0u8; 8]);
        v
    }

    fn words(type_: u32, w: &[u32]) -> Vec<u8> {
        let mut v = header(type_, 0, 0);
        for x in w {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    }

    fn push_entries(v: &mut Vec<u8>, entries: &[BlobEntry]) {
        for e in entries {
            v.extend_from_slice(&e.addr.to_le_bytes());
            // Encodes the wire's 32-bit length (tests build entries below 4 GiB).
            v.extend_from_slice(&(e.len as u32).to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
        }
    }

    /// A request with the FENCE flag set on `bytes`.
    pub fn fenced(mut bytes: Vec<u8>, fence_id: u64) -> Vec<u8> {
        if bytes.len() >= HDR_SIZE {
            bytes[4..8].copy_from_slice(&vg::VIRTIO_GPU_FLAG_FENCE.to_le_bytes());
            bytes[8..16].copy_from_slice(&fence_id.to_le_bytes());
        }
        bytes
    }

    /// GET_DISPLAY_INFO
    pub fn get_display_info() -> Vec<u8> {
        header(cmd::GET_DISPLAY_INFO, 0, 0)
    }
    /// GET_EDID
    pub fn get_edid(scanout: u32) -> Vec<u8> {
        words(cmd::GET_EDID, &[scanout, 0])
    }
    /// RESOURCE_CREATE_2D
    pub fn create_2d(id: u32, format: u32, w: u32, h: u32) -> Vec<u8> {
        words(cmd::RESOURCE_CREATE_2D, &[id, format, w, h])
    }
    /// RESOURCE_UNREF
    pub fn unref(id: u32) -> Vec<u8> {
        words(cmd::RESOURCE_UNREF, &[id, 0])
    }
    /// RESOURCE_ATTACH_BACKING
    pub fn attach_backing(id: u32, entries: &[BlobEntry]) -> Vec<u8> {
        let mut v = words(cmd::RESOURCE_ATTACH_BACKING, &[id, entries.len() as u32]);
        push_entries(&mut v, entries);
        v
    }
    /// RESOURCE_DETACH_BACKING
    pub fn detach_backing(id: u32) -> Vec<u8> {
        words(cmd::RESOURCE_DETACH_BACKING, &[id, 0])
    }
    /// TRANSFER_TO_HOST_2D
    pub fn transfer_to_host_2d(id: u32, r: Rect, offset: u64) -> Vec<u8> {
        let mut v = words(cmd::TRANSFER_TO_HOST_2D, &[r.x, r.y, r.width, r.height]);
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }
    /// SET_SCANOUT
    pub fn set_scanout(scanout: u32, id: u32, r: Rect) -> Vec<u8> {
        words(
            cmd::SET_SCANOUT,
            &[r.x, r.y, r.width, r.height, scanout, id],
        )
    }
    /// RESOURCE_FLUSH
    pub fn flush(id: u32, r: Rect) -> Vec<u8> {
        words(cmd::RESOURCE_FLUSH, &[r.x, r.y, r.width, r.height, id, 0])
    }
    /// UPDATE_CURSOR
    pub fn update_cursor(pos: CursorPos, id: u32, hot_x: u32, hot_y: u32) -> Vec<u8> {
        words(
            cmd::UPDATE_CURSOR,
            &[pos.scanout_id, pos.x, pos.y, 0, id, hot_x, hot_y, 0],
        )
    }
    /// MOVE_CURSOR
    pub fn move_cursor(pos: CursorPos) -> Vec<u8> {
        words(
            cmd::MOVE_CURSOR,
            &[pos.scanout_id, pos.x, pos.y, 0, 0, 0, 0, 0],
        )
    }
    /// RESOURCE_CREATE_BLOB with `blob_mem`, flags and entries.
    pub fn create_blob(
        id: u32,
        blob_mem: u32,
        blob_flags: u32,
        size: u64,
        entries: &[BlobEntry],
    ) -> Vec<u8> {
        let mut v = words(
            cmd::RESOURCE_CREATE_BLOB,
            &[id, blob_mem, blob_flags, entries.len() as u32],
        );
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        push_entries(&mut v, entries);
        v
    }
    /// SET_SCANOUT_BLOB
    pub fn set_scanout_blob(b: &ScanoutBlob) -> Vec<u8> {
        let r = b.rect;
        let mut w = vec![
            r.x,
            r.y,
            r.width,
            r.height,
            b.scanout_id,
            b.resource_id,
            b.width,
            b.height,
            b.format,
            0,
        ];
        w.extend_from_slice(&b.strides);
        w.extend_from_slice(&b.offsets);
        words(cmd::SET_SCANOUT_BLOB, &w)
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    #[test]
    fn builders_match_binding_sizes() {
        assert_eq!(get_display_info().len(), HDR_SIZE);
        assert_eq!(get_edid(0).len(), size_of::<vg::virtio_gpu_cmd_get_edid>());
        assert_eq!(
            create_2d(1, 1, 1, 1).len(),
            size_of::<vg::virtio_gpu_resource_create_2d>()
        );
        assert_eq!(unref(1).len(), size_of::<vg::virtio_gpu_resource_unref>());
        assert_eq!(
            attach_backing(1, &[]).len(),
            size_of::<vg::virtio_gpu_resource_attach_backing>()
        );
        assert_eq!(
            transfer_to_host_2d(1, Rect::default(), 0).len(),
            size_of::<vg::virtio_gpu_transfer_to_host_2d>()
        );
        assert_eq!(
            set_scanout(0, 1, Rect::default()).len(),
            size_of::<vg::virtio_gpu_set_scanout>()
        );
        assert_eq!(
            flush(1, Rect::default()).len(),
            size_of::<vg::virtio_gpu_resource_flush>()
        );
        assert_eq!(
            update_cursor(CursorPos::default(), 0, 0, 0).len(),
            size_of::<vg::virtio_gpu_update_cursor>()
        );
        assert_eq!(
            create_blob(1, 1, 0, 0, &[]).len(),
            size_of::<vg::virtio_gpu_resource_create_blob>()
        );
        assert_eq!(
            set_scanout_blob(&ScanoutBlob::default()).len(),
            size_of::<vg::virtio_gpu_set_scanout_blob>()
        );
    }

    #[test]
    fn decodes_every_command_round_trip() {
        let r = Rect {
            x: 1,
            y: 2,
            width: 3,
            height: 4,
        };
        let e = [
            BlobEntry {
                addr: 0x1000,
                len: 4096,
            },
            BlobEntry {
                addr: 0x9000,
                len: 8192,
            },
        ];
        let pos = CursorPos {
            scanout_id: 0,
            x: 5,
            y: 6,
        };
        let blob = ScanoutBlob {
            rect: r,
            scanout_id: 0,
            resource_id: 7,
            width: 64,
            height: 32,
            format: 2,
            strides: [256, 0, 0, 0],
            offsets: [4096, 0, 0, 0],
        };
        let cases = vec![
            (get_display_info(), GpuCommand::GetDisplayInfo),
            (get_edid(0), GpuCommand::GetEdid { scanout: 0 }),
            (
                create_2d(9, 2, 640, 480),
                GpuCommand::ResourceCreate2d {
                    resource_id: 9,
                    format: 2,
                    width: 640,
                    height: 480,
                },
            ),
            (unref(9), GpuCommand::ResourceUnref { resource_id: 9 }),
            (
                attach_backing(9, &e),
                GpuCommand::ResourceAttachBacking {
                    resource_id: 9,
                    entries: e.to_vec(),
                },
            ),
            (
                detach_backing(9),
                GpuCommand::ResourceDetachBacking { resource_id: 9 },
            ),
            (
                transfer_to_host_2d(9, r, 77),
                GpuCommand::TransferToHost2d {
                    rect: r,
                    offset: 77,
                    resource_id: 9,
                },
            ),
            (
                set_scanout(0, 9, r),
                GpuCommand::SetScanout {
                    rect: r,
                    scanout_id: 0,
                    resource_id: 9,
                },
            ),
            (
                flush(9, r),
                GpuCommand::ResourceFlush {
                    rect: r,
                    resource_id: 9,
                },
            ),
            (
                update_cursor(pos, 9, 1, 2),
                GpuCommand::UpdateCursor {
                    pos,
                    resource_id: 9,
                    hot_x: 1,
                    hot_y: 2,
                },
            ),
            (move_cursor(pos), GpuCommand::MoveCursor { pos }),
            (
                create_blob(7, 1, 3, 12288, &e),
                GpuCommand::ResourceCreateBlob {
                    resource_id: 7,
                    blob_mem: 1,
                    blob_flags: 3,
                    blob_id: 0,
                    size: 12288,
                    entries: e.to_vec(),
                },
            ),
            (set_scanout_blob(&blob), GpuCommand::SetScanoutBlob(blob)),
        ];
        for (bytes, want) in cases {
            let req = decode_request(&bytes).unwrap();
            assert_eq!(req.cmd, want);
            // Every strict prefix of a fixed-size command is refused as truncated.
            for cut in 0..bytes.len() {
                let err = decode_request(&bytes[..cut]);
                if cut < bytes.len() && !(cut >= HDR_SIZE && want == GpuCommand::GetDisplayInfo) {
                    assert!(
                        matches!(err, Err(GpuError::Truncated { .. })),
                        "{want:?} cut at {cut}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn entry_count_is_bounded_before_allocation() {
        let mut bytes = attach_backing(1, &[]);
        bytes[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_request(&bytes),
            Err(GpuError::TooManyEntries {
                got: u32::MAX,
                max: MAX_MEM_ENTRIES
            })
        );
        // A count within the limit but larger than the bytes present is truncation.
        bytes[28..32].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(
            decode_request(&bytes),
            Err(GpuError::Truncated { .. })
        ));
        let mut blob = create_blob(1, 1, 0, 4096, &[]);
        blob[36..40].copy_from_slice(&(MAX_MEM_ENTRIES + 1).to_le_bytes());
        assert!(matches!(
            decode_request(&blob),
            Err(GpuError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn unknown_and_3d_commands() {
        assert_eq!(
            decode_request(&header(0x9999, 0, 0)),
            Err(GpuError::UnknownCommand(0x9999))
        );
        assert_eq!(
            decode_request(&header(cmd::FIRST_3D, 0, 0)),
            Err(GpuError::NoContext(cmd::FIRST_3D))
        );
        assert_eq!(
            decode_request(&header(cmd::GET_CAPSET, 0, 0)),
            Err(GpuError::UnknownCommand(cmd::GET_CAPSET))
        );
    }

    #[test]
    fn response_echoes_fence_and_sizes_match_bindings() {
        let hdr = decode_header(&fenced(get_display_info(), 0xabcdef)).unwrap();
        assert!(hdr.fenced());
        let out = GpuResponse::OkNoData.encode(&hdr);
        assert_eq!(out.len(), HDR_SIZE);
        assert_eq!(
            u32::from_le_bytes(out[0..4].try_into().unwrap()),
            resp::OK_NODATA
        );
        assert_eq!(
            u32::from_le_bytes(out[4..8].try_into().unwrap()),
            vg::VIRTIO_GPU_FLAG_FENCE
        );
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), 0xabcdef);
        let unfenced = decode_header(&get_display_info()).unwrap();
        let out = GpuResponse::Err(resp::ERR_UNSPEC).encode(&unfenced);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 0);
        assert_eq!(
            GpuResponse::OkDisplayInfo(vec![]).encode(&hdr).len(),
            DISPLAY_INFO_SIZE
        );
        assert_eq!(
            GpuResponse::OkEdid(vec![1; 128]).encode(&hdr).len(),
            EDID_RESP_SIZE
        );
    }
}
