//! The virtio-gpu device model: resources, scanouts, cursor, and one handler per command.
//!
//! Every guest field is checked here; a refused command returns a [`GpuError`] that the queue
//! handler turns into the matching error response and a guest-error log line.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::AsFd;

use virtio_bindings::virtio_gpu as vg;

use vm_memory::GuestAddressSpace;

use crate::backing::{Backing, BackingPixels, BlobPath};
use crate::display::{CursorState, DisplayBackend, DisplayError, ScanoutFrame};
use crate::edid;
use crate::error::{GpuError, GpuResult};
use crate::exporter::{BlobMemory, DmaBuf, ExportKind, Fault};
use crate::format::{PixelFormat, BYTES_PER_PIXEL};
use crate::protocol::{
    BlobEntry, GpuCommand, GpuResponse, Rect, Request, ScanoutBlob, MAX_MEM_ENTRIES, NUM_SCANOUTS,
};
use crate::resource::{BlobResource, HostBuffer, Resource, Resource2d};
use crate::GUEST_LOG_INTERVAL;

/// Largest width or height of a resource or framebuffer (KMS drivers cap at 16384 too).
pub const MAX_DIMENSION: u32 = 16384;

/// Device configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuConfig {
    /// Width of the display mode offered to the guest.
    pub width: u32,
    /// Height of the display mode offered to the guest.
    pub height: u32,
    /// Host memory all 2D resources together may use.
    pub max_hostmem: u64,
    /// Largest single 2D resource in bytes.
    pub max_resource_bytes: u64,
    /// Most resources alive at once.
    pub max_resources: usize,
    /// Most blobs exported as host dma-bufs at once (each holds one host fd).
    pub max_dmabufs: usize,
    /// Most ranges (runs of contiguous guest pages) in one exported dma-buf.
    pub max_dmabuf_ranges: usize,
    /// Most ranges in all exported dma-bufs together (kernel memory the guest pins).
    pub max_total_dmabuf_ranges: usize,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            width: 1280,
            height: 800,
            max_hostmem: 512 << 20,
            // 8K (7680x4320) XRGB fits.
            max_resource_bytes: 7680 * 4320 * 4,
            max_resources: 4096,
            max_dmabufs: 256,
            max_dmabuf_ranges: MAX_MEM_ENTRIES as usize,
            max_total_dmabuf_ranges: 65536,
        }
    }
}

/// What a scanout shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scanout {
    Disabled,
    TwoD {
        resource_id: u32,
        rect: Rect,
    },
    Blob {
        resource_id: u32,
        fourcc: u32,
        width: u32,
        height: u32,
        stride: u32,
        offset: u64,
    },
}

impl Scanout {
    fn resource_id(&self) -> Option<u32> {
        match self {
            Scanout::Disabled => None,
            Scanout::TwoD { resource_id, .. } | Scanout::Blob { resource_id, .. } => {
                Some(*resource_id)
            }
        }
    }
}

/// The virtio-gpu device state, over guest memory `M` (any `vm_memory::GuestAddressSpace`:
/// `Arc<GuestMemoryMmap>`, `GuestMemoryAtomic<GuestMemoryMmap<AtomicBitmap>>`, ...), which it
/// is given at activation.
pub struct GpuDevice<M: GuestAddressSpace> {
    mem: Option<M>,
    config: GpuConfig,
    resources: BTreeMap<u32, Resource>,
    scanouts: [Scanout; NUM_SCANOUTS as usize],
    cursor: CursorState,
    display: Box<dyn DisplayBackend>,
    exporter: Box<dyn BlobMemory>,
    hostmem_used: u64,
    logged_once: HashSet<String>,
}

impl<M: GuestAddressSpace> GpuDevice<M> {
    /// A device showing scanouts on `display` and exporting blobs with `exporter` (use
    /// `vfio_dmabuf::BlobExporter::new()` for no dma-bufs at all). It serves requests once it has guest memory
    /// ([`GpuDevice::activate`]).
    pub fn new(
        config: GpuConfig,
        display: Box<dyn DisplayBackend>,
        exporter: Box<dyn BlobMemory>,
    ) -> Self {
        GpuDevice {
            mem: None,
            config,
            resources: BTreeMap::new(),
            scanouts: [Scanout::Disabled; NUM_SCANOUTS as usize],
            cursor: CursorState::default(),
            display,
            exporter,
            hostmem_used: 0,
            logged_once: HashSet::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GpuConfig {
        &self.config
    }

    /// Gives the device the guest memory its requests point into (at activation by the
    /// driver; again after a reset).
    pub fn activate(&mut self, mem: M) {
        self.mem = Some(mem);
    }

    /// A snapshot of guest memory, once activated.
    pub fn memory(&self) -> Option<M::T> {
        self.mem.as_ref().map(|m| m.memory())
    }

    fn guest_memory(&self) -> GpuResult<M::T> {
        self.memory().ok_or(GpuError::NotActivated)
    }

    /// Host memory used by 2D resources and backing entry tables.
    pub fn hostmem_used(&self) -> u64 {
        self.hostmem_used
    }

    /// Blobs holding an exported dma-buf, and the ranges of those dma-bufs.
    pub fn dmabuf_usage(&self) -> (usize, usize) {
        self.resources
            .values()
            .filter_map(|r| match r {
                Resource::Blob(b) if b.export.is_some() => Some(b.ranges),
                _ => None,
            })
            .fold((0, 0), |(n, total), ranges| (n + 1, total + ranges))
    }

    /// Number of live resources.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// For a blob: how it is shown (export kind or CPU path) and whether a dma-buf is held.
    pub fn blob_state(&self, id: u32) -> Option<(BlobPath, bool)> {
        match self.resources.get(&id) {
            Some(Resource::Blob(b)) => Some((b.path.clone(), b.export.is_some())),
            _ => None,
        }
    }

    /// The cursor state.
    pub fn cursor(&self) -> CursorState {
        self.cursor
    }

    /// Drops all resources and scanouts (device reset).
    pub fn reset(&mut self) {
        for id in 0..NUM_SCANOUTS {
            self.disable_scanout(id);
        }
        self.resources.clear();
        self.hostmem_used = 0;
        self.cursor = CursorState::default();
    }

    /// Executes one decoded request and returns its response.
    pub fn handle(&mut self, req: &Request) -> GpuResponse {
        match self.execute(&req.cmd) {
            Ok(resp) => resp,
            Err(e) => {
                log_limit::warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: guest error: {e}"
                );
                GpuResponse::Err(e.response_type())
            }
        }
    }

    fn execute(&mut self, cmd: &GpuCommand) -> GpuResult<GpuResponse> {
        match cmd {
            GpuCommand::GetDisplayInfo => Ok(self.display_info()),
            GpuCommand::GetEdid { scanout } => self.get_edid(*scanout),
            GpuCommand::ResourceCreate2d {
                resource_id,
                format,
                width,
                height,
            } => self.create_2d(*resource_id, *format, *width, *height),
            GpuCommand::ResourceUnref { resource_id } => self.unref(*resource_id),
            GpuCommand::ResourceAttachBacking {
                resource_id,
                entries,
            } => self.attach_backing(*resource_id, entries),
            GpuCommand::ResourceDetachBacking { resource_id } => self.detach_backing(*resource_id),
            GpuCommand::TransferToHost2d {
                rect,
                offset,
                resource_id,
            } => self.transfer_to_host_2d(*resource_id, *rect, *offset),
            GpuCommand::SetScanout {
                rect,
                scanout_id,
                resource_id,
            } => self.set_scanout(*scanout_id, *resource_id, *rect),
            GpuCommand::ResourceFlush { rect, resource_id } => {
                self.resource_flush(*resource_id, *rect)
            }
            GpuCommand::UpdateCursor {
                pos,
                resource_id,
                hot_x,
                hot_y,
            } => {
                self.check_scanout(pos.scanout_id)?;
                if *resource_id != 0 {
                    self.resource_2d(*resource_id)?;
                }
                self.cursor = CursorState {
                    resource_id: *resource_id,
                    x: pos.x,
                    y: pos.y,
                    hot_x: *hot_x,
                    hot_y: *hot_y,
                };
                self.display.cursor(pos.scanout_id, self.cursor);
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::MoveCursor { pos } => {
                self.check_scanout(pos.scanout_id)?;
                self.cursor.x = pos.x;
                self.cursor.y = pos.y;
                self.display.cursor(pos.scanout_id, self.cursor);
                Ok(GpuResponse::OkNoData)
            }
            GpuCommand::ResourceCreateBlob {
                resource_id,
                blob_mem,
                blob_flags,
                blob_id,
                size,
                entries,
            } => self.create_blob(
                *resource_id,
                *blob_mem,
                *blob_flags,
                *blob_id,
                *size,
                entries,
            ),
            GpuCommand::SetScanoutBlob(b) => self.set_scanout_blob(b),
        }
    }

    fn display_info(&self) -> GpuResponse {
        let r = Rect {
            x: 0,
            y: 0,
            width: self.config.width,
            height: self.config.height,
        };
        GpuResponse::OkDisplayInfo(vec![(r, true); NUM_SCANOUTS as usize])
    }

    fn get_edid(&self, scanout: u32) -> GpuResult<GpuResponse> {
        if scanout >= NUM_SCANOUTS {
            // QEMU answers a bad EDID scanout with INVALID_PARAMETER.
            return Err(GpuError::InvalidParameter(format!(
                "GET_EDID for scanout {scanout}, only {NUM_SCANOUTS} exist"
            )));
        }
        Ok(GpuResponse::OkEdid(
            edid::generate(self.config.width, self.config.height).to_vec(),
        ))
    }

    fn check_scanout(&self, id: u32) -> GpuResult<()> {
        if id >= NUM_SCANOUTS {
            return Err(GpuError::InvalidScanout(id));
        }
        Ok(())
    }

    fn check_new_id(&self, id: u32) -> GpuResult<()> {
        if id == 0 {
            return Err(GpuError::InvalidResource(0));
        }
        if self.resources.contains_key(&id) {
            return Err(GpuError::ResourceExists(id));
        }
        if self.resources.len() >= self.config.max_resources {
            return Err(GpuError::OutOfMemory(format!(
                "{} resources already exist",
                self.resources.len()
            )));
        }
        Ok(())
    }

    fn resource_2d(&self, id: u32) -> GpuResult<&Resource2d> {
        match self.resources.get(&id) {
            Some(Resource::TwoD(r)) => Ok(r),
            Some(Resource::Blob(_)) => Err(GpuError::WrongResourceKind { id, expected: "2D" }),
            None => Err(GpuError::InvalidResource(id)),
        }
    }

    fn create_2d(
        &mut self,
        id: u32,
        format: u32,
        width: u32,
        height: u32,
    ) -> GpuResult<GpuResponse> {
        self.check_new_id(id)?;
        let format = PixelFormat::from_virtio(format).ok_or(GpuError::InvalidFormat(format))?;
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(GpuError::InvalidParameter(format!(
                "2D resource {id} has size {width}x{height} (each side 1..={MAX_DIMENSION})"
            )));
        }
        // u32 x u32 x 4 can exceed u64: checked, and an overflow is simply "too big".
        let bytes = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|px| px.checked_mul(u64::from(BYTES_PER_PIXEL)))
            .unwrap_or(u64::MAX);
        if bytes > self.config.max_resource_bytes {
            return Err(GpuError::OutOfMemory(format!(
                "2D resource {id} of {width}x{height} needs {bytes} bytes, the limit is {}",
                self.config.max_resource_bytes
            )));
        }
        self.charge_hostmem(bytes, || format!("2D resource {id}"))?;
        let Some(data) = HostBuffer::new(bytes as usize) else {
            self.release_hostmem(bytes);
            return Err(GpuError::OutOfMemory(format!(
                "2D resource {id}: allocating {bytes} bytes failed"
            )));
        };
        self.resources.insert(
            id,
            Resource::TwoD(Resource2d {
                format,
                width,
                height,
                data,
                backing: None,
            }),
        );
        Ok(GpuResponse::OkNoData)
    }

    fn unref(&mut self, id: u32) -> GpuResult<GpuResponse> {
        let res = self
            .resources
            .remove(&id)
            .ok_or(GpuError::InvalidResource(id))?;
        for s in 0..NUM_SCANOUTS {
            if self.scanouts[s as usize].resource_id() == Some(id) {
                self.disable_scanout(s);
            }
        }
        if self.cursor.resource_id == id {
            self.cursor.resource_id = 0;
        }
        let (data, backing) = match &res {
            Resource::TwoD(r) => (r.data.len() as u64, r.backing.as_ref()),
            Resource::Blob(b) => (0, b.backing.as_ref()),
        };
        self.release_hostmem(data + backing.map_or(0, Backing::host_bytes));
        // Dropping `res` closes a blob's dma-buf.
        drop(res);
        Ok(GpuResponse::OkNoData)
    }

    /// Takes `bytes` from the host-memory budget (`max_hostmem`) for `what`, or refuses.
    fn charge_hostmem(&mut self, bytes: u64, what: impl FnOnce() -> String) -> GpuResult<()> {
        let used = self.hostmem_used.saturating_add(bytes);
        if used > self.config.max_hostmem {
            return Err(GpuError::OutOfMemory(format!(
                "{} needs {bytes} bytes of host memory, {} of {} are in use",
                what(),
                self.hostmem_used,
                self.config.max_hostmem
            )));
        }
        self.hostmem_used = used;
        Ok(())
    }

    /// Gives `bytes` back to the host-memory budget.
    fn release_hostmem(&mut self, bytes: u64) {
        self.hostmem_used = self.hostmem_used.saturating_sub(bytes);
    }

    fn attach_backing(&mut self, id: u32, entries: &[BlobEntry]) -> GpuResult<GpuResponse> {
        match self.resources.get(&id) {
            None => return Err(GpuError::InvalidResource(id)),
            Some(Resource::TwoD(r)) if r.backing.is_some() => {
                return Err(GpuError::BackingAttached(id))
            }
            Some(Resource::Blob(b)) if b.backing.is_some() => {
                return Err(GpuError::BackingAttached(id))
            }
            Some(_) => {}
        }
        if entries.is_empty() {
            return Err(GpuError::InvalidParameter(format!(
                "ATTACH_BACKING for resource {id} without entries"
            )));
        }
        let is_blob = matches!(self.resources.get(&id), Some(Resource::Blob(_)));
        if is_blob {
            let size = match self.resources.get(&id) {
                Some(Resource::Blob(b)) => b.size,
                _ => return Err(GpuError::InvalidResource(id)),
            };
            // Re-attach of a blob: check and export again (a new dma-buf).
            let prepared = self.prepare_blob(id, size, entries)?;
            if let Some(Resource::Blob(b)) = self.resources.get_mut(&id) {
                b.backing = Some(prepared.backing);
                b.path = prepared.path;
                b.ranges = prepared.ranges;
                b.export = prepared.export;
            }
            self.refresh_scanouts_of(id);
        } else {
            let bytes = Backing::host_bytes_for(entries.len());
            self.charge_hostmem(bytes, || {
                format!("the {} backing entries of resource {id}", entries.len())
            })?;
            let mem = match self.guest_memory() {
                Ok(m) => m,
                Err(e) => {
                    self.release_hostmem(bytes);
                    return Err(e);
                }
            };
            let backing = match Backing::guest_ram(&*mem, entries) {
                Ok(b) => b,
                Err(e) => {
                    self.release_hostmem(bytes);
                    return Err(e);
                }
            };
            if let Some(Resource::TwoD(r)) = self.resources.get_mut(&id) {
                r.backing = Some(backing);
            }
        }
        Ok(GpuResponse::OkNoData)
    }

    fn detach_backing(&mut self, id: u32) -> GpuResult<GpuResponse> {
        let backing = match self.resources.get_mut(&id) {
            None => return Err(GpuError::InvalidResource(id)),
            Some(Resource::TwoD(r)) => r.backing.take().ok_or(GpuError::NoBacking(id))?,
            Some(Resource::Blob(b)) => {
                let backing = b.backing.take().ok_or(GpuError::NoBacking(id))?;
                // Release the dma-buf now; a later ATTACH_BACKING makes a new one.
                b.export = None;
                backing
            }
        };
        self.release_hostmem(backing.host_bytes());
        Ok(GpuResponse::OkNoData)
    }

    fn transfer_to_host_2d(&mut self, id: u32, rect: Rect, offset: u64) -> GpuResult<GpuResponse> {
        let mem = self.guest_memory()?;
        let res = match self.resources.get_mut(&id) {
            Some(Resource::TwoD(r)) => r,
            Some(Resource::Blob(_)) => {
                return Err(GpuError::WrongResourceKind { id, expected: "2D" })
            }
            None => return Err(GpuError::InvalidResource(id)),
        };
        let backing = res.backing.as_ref().ok_or(GpuError::NoBacking(id))?;
        if !rect.is_inside(res.width, res.height) {
            return Err(GpuError::InvalidParameter(format!(
                "transfer rectangle {rect:?} outside resource {id} ({}x{})",
                res.width, res.height
            )));
        }
        if rect.is_empty() {
            return Ok(GpuResponse::OkNoData);
        }
        let stride = u64::from(res.stride());
        let row_len = u64::from(rect.width) * u64::from(BYTES_PER_PIXEL);
        // Source of row h: offset + h * stride (as QEMU and the Linux driver lay it out).
        let fits = stride
            .checked_mul(u64::from(rect.height - 1))
            .and_then(|v| v.checked_add(offset))
            .and_then(|v| v.checked_add(row_len))
            .is_some_and(|end| end <= backing.len());
        if !fits {
            return Err(GpuError::InvalidParameter(format!(
                    "transfer of {rect:?} at offset {offset} reads past the {}-byte backing of resource {id}",
                    backing.len()
            )));
        }
        let exporter = self.exporter.as_ref();
        let read = |off: u64, dst: &mut [u8]| {
            backing
                .read_at(&*mem, exporter, off, dst)
                .map_err(|e| GpuError::GuestMemory(e.to_string()))
        };
        let dst_start = (u64::from(rect.y) * stride + u64::from(rect.x) * 4) as usize;
        if rect.x == 0 && rect.width == res.width {
            // Whole rows: one read.
            let len = (stride * u64::from(rect.height)) as usize;
            read(
                offset,
                &mut res.data.as_mut_slice()[dst_start..dst_start + len],
            )?;
        } else {
            for h in 0..u64::from(rect.height) {
                let dst = dst_start + (h * stride) as usize;
                read(
                    offset + h * stride,
                    &mut res.data.as_mut_slice()[dst..dst + row_len as usize],
                )?;
            }
        }
        Ok(GpuResponse::OkNoData)
    }

    fn set_scanout(&mut self, scanout_id: u32, id: u32, rect: Rect) -> GpuResult<GpuResponse> {
        self.check_scanout(scanout_id)?;
        if id == 0 {
            self.disable_scanout(scanout_id);
            return Ok(GpuResponse::OkNoData);
        }
        let res = self.resource_2d(id)?;
        if rect.is_empty() || !rect.is_inside(res.width, res.height) {
            return Err(GpuError::InvalidParameter(format!(
                "scanout rectangle {rect:?} outside resource {id} ({}x{})",
                res.width, res.height
            )));
        }
        self.scanouts[scanout_id as usize] = Scanout::TwoD {
            resource_id: id,
            rect,
        };
        self.show(scanout_id, None);
        Ok(GpuResponse::OkNoData)
    }

    fn set_scanout_blob(&mut self, b: &ScanoutBlob) -> GpuResult<GpuResponse> {
        self.check_scanout(b.scanout_id)?;
        if b.resource_id == 0 {
            self.disable_scanout(b.scanout_id);
            return Ok(GpuResponse::OkNoData);
        }
        let id = b.resource_id;
        let blob = match self.resources.get(&id) {
            Some(Resource::Blob(blob)) => blob,
            Some(Resource::TwoD(_)) => {
                return Err(GpuError::WrongResourceKind {
                    id,
                    expected: "blob",
                })
            }
            None => return Err(GpuError::InvalidResource(id)),
        };
        if blob.backing.is_none() {
            return Err(GpuError::NoBacking(id));
        }
        let format = PixelFormat::from_virtio(b.format).ok_or(GpuError::InvalidFormat(b.format))?;
        let bad = |what: String| Err(GpuError::InvalidParameter(what));
        if b.width == 0 || b.height == 0 || b.width > MAX_DIMENSION || b.height > MAX_DIMENSION {
            return bad(format!(
                "blob framebuffer size {}x{} (each side 1..={MAX_DIMENSION})",
                b.width, b.height
            ));
        }
        if b.rect.is_empty() || !b.rect.is_inside(b.width, b.height) {
            return bad(format!(
                "scanout rectangle {:?} outside the {}x{} framebuffer",
                b.rect, b.width, b.height
            ));
        }
        let stride = b.strides[0];
        let row = u64::from(b.width) * u64::from(BYTES_PER_PIXEL);
        if u64::from(stride) < row {
            return bad(format!("stride {stride} below {row} bytes per row"));
        }
        // The framebuffer (plane 0) must lie within the blob.
        let fb_end = u64::from(stride)
            .checked_mul(u64::from(b.height - 1))
            .and_then(|v| v.checked_add(u64::from(b.offsets[0])))
            .and_then(|v| v.checked_add(row))
            .unwrap_or(u64::MAX);
        if fb_end > blob.size {
            return bad(format!(
                "framebuffer (offset {}, stride {stride}, {}x{}) ends at {fb_end}, past the {}-byte blob {id}",
                b.offsets[0], b.width, b.height, blob.size
            ));
        }
        let offset = u64::from(b.offsets[0])
            + u64::from(b.rect.y) * u64::from(stride)
            + u64::from(b.rect.x) * u64::from(BYTES_PER_PIXEL);
        self.scanouts[b.scanout_id as usize] = Scanout::Blob {
            resource_id: id,
            fourcc: format.fourcc,
            width: b.rect.width,
            height: b.rect.height,
            stride,
            offset,
        };
        self.show(b.scanout_id, None);
        Ok(GpuResponse::OkNoData)
    }

    fn resource_flush(&mut self, id: u32, rect: Rect) -> GpuResult<GpuResponse> {
        let (w, h) = match self.resources.get(&id) {
            None => return Err(GpuError::InvalidResource(id)),
            Some(Resource::TwoD(r)) => (r.width, r.height),
            Some(Resource::Blob(b)) => {
                if b.backing.is_none() {
                    return Err(GpuError::NoBacking(id));
                }
                // A blob has no size of its own: check against the framebuffer it shows.
                let fb = self.scanouts.iter().find_map(|s| match s {
                    Scanout::Blob {
                        resource_id,
                        width,
                        height,
                        ..
                    } if *resource_id == id => Some((*width, *height)),
                    _ => None,
                });
                fb.unwrap_or((u32::MAX, u32::MAX))
            }
        };
        if !rect.is_inside(w, h) {
            return Err(GpuError::InvalidParameter(format!(
                "flush rectangle {rect:?} outside resource {id} ({w}x{h})"
            )));
        }
        for s in 0..NUM_SCANOUTS {
            if self.scanouts[s as usize].resource_id() == Some(id) {
                self.show(s, Some(rect));
            }
        }
        Ok(GpuResponse::OkNoData)
    }

    fn create_blob(
        &mut self,
        id: u32,
        blob_mem: u32,
        blob_flags: u32,
        blob_id: u64,
        size: u64,
        entries: &[BlobEntry],
    ) -> GpuResult<GpuResponse> {
        self.check_new_id(id)?;
        if blob_mem != vg::VIRTIO_GPU_BLOB_MEM_GUEST {
            return Err(GpuError::InvalidParameter(format!(
                "blob_mem {blob_mem}: only GUEST (1) is supported without 3D"
            )));
        }
        let known = vg::VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE
            | vg::VIRTIO_GPU_BLOB_FLAG_USE_SHAREABLE
            | vg::VIRTIO_GPU_BLOB_FLAG_USE_CROSS_DEVICE;
        if blob_flags & !known != 0 {
            return Err(GpuError::InvalidParameter(format!(
                "unknown blob flags {blob_flags:#x}"
            )));
        }
        if blob_id != 0 {
            return Err(GpuError::InvalidParameter(format!(
                "blob_id {blob_id} given for a guest blob"
            )));
        }
        if size == 0 || entries.is_empty() {
            return Err(GpuError::InvalidParameter(format!(
                "blob {id} with size {size} and {} entries",
                entries.len()
            )));
        }
        let prepared = self.prepare_blob(id, size, entries)?;
        self.resources.insert(
            id,
            Resource::Blob(BlobResource {
                size,
                flags: blob_flags,
                backing: Some(prepared.backing),
                path: prepared.path,
                ranges: prepared.ranges,
                export: prepared.export,
            }),
        );
        Ok(GpuResponse::OkNoData)
    }

    /// Checks a blob's entries (charging their table to the host-memory budget), decides its
    /// path and exports it when possible.
    fn prepare_blob(
        &mut self,
        id: u32,
        size: u64,
        entries: &[BlobEntry],
    ) -> GpuResult<PreparedBlob> {
        let bytes = Backing::host_bytes_for(entries.len());
        self.charge_hostmem(bytes, || {
            format!("the {} backing entries of blob {id}", entries.len())
        })?;
        let prepared = self.check_and_export(id, size, entries);
        if prepared.is_err() {
            self.release_hostmem(bytes);
        }
        prepared
    }

    fn check_and_export(
        &mut self,
        id: u32,
        size: u64,
        entries: &[BlobEntry],
    ) -> GpuResult<PreparedBlob> {
        let mem = self.guest_memory()?;
        let backing = Backing::blob(&*mem, self.exporter.as_ref(), entries)?;
        if backing.len() < size {
            return Err(GpuError::InvalidParameter(format!(
                "blob {id}: entries cover {} bytes, less than its size {size}",
                backing.len()
            )));
        }
        let path = backing.blob_path();
        let ranges = backing.ranges_up_to(size);
        let kind = match &path {
            BlobPath::Export(kind) => *kind,
            BlobPath::Cpu(why) => {
                self.log_once(why.clone(), format!("blob {id} uses the CPU path: {why}"));
                return Ok(PreparedBlob {
                    backing,
                    path,
                    ranges,
                    export: None,
                });
            }
        };
        match self.export(id, size, &backing, ranges, kind) {
            Ok(export) => Ok(PreparedBlob {
                backing,
                path,
                ranges,
                export: Some(export),
            }),
            Err(ExportFailure::Refused(e)) => Err(e),
            Err(ExportFailure::Unsupported(why)) => {
                self.log_once(
                    format!("{kind} unsupported"),
                    format!("blob {id}: {kind} export unsupported, using the CPU path: {why}"),
                );
                Ok(PreparedBlob {
                    backing,
                    path: BlobPath::Cpu(why),
                    ranges,
                    export: None,
                })
            }
            Err(ExportFailure::Host(why)) => {
                log_limit::error_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: host error exporting blob {id} as {kind}: {why}; using the CPU path"
                );
                Ok(PreparedBlob {
                    backing,
                    path: BlobPath::Cpu(why),
                    ranges,
                    export: None,
                })
            }
        }
    }

    /// Exports the first `size` bytes of a blob's backing as one dma-buf of `kind`, within the
    /// dma-buf budgets (`max_dmabufs`, `max_dmabuf_ranges`, `max_total_dmabuf_ranges`).
    fn export(
        &self,
        id: u32,
        size: u64,
        backing: &Backing,
        ranges: usize,
        kind: ExportKind,
    ) -> Result<DmaBuf, ExportFailure> {
        let (live, live_ranges) = self.dmabuf_usage();
        let refuse = |why: String| Err(ExportFailure::Refused(GpuError::OutOfMemory(why)));
        if ranges > self.config.max_dmabuf_ranges {
            return refuse(format!(
                "blob {id} would be a dma-buf of {ranges} ranges, the limit is {}",
                self.config.max_dmabuf_ranges
            ));
        }
        if live >= self.config.max_dmabufs {
            return refuse(format!(
                "blob {id}: {live} blobs already hold a dma-buf, the limit is {}",
                self.config.max_dmabufs
            ));
        }
        if live_ranges + ranges > self.config.max_total_dmabuf_ranges {
            return refuse(format!(
                "blob {id}: its {ranges} dma-buf ranges and the {live_ranges} of the exported \
                 blobs exceed the limit of {}",
                self.config.max_total_dmabuf_ranges
            ));
        }
        // The dma-buf is exactly `size` bytes: entries past it are dropped, the last one cut.
        let export_entries = entries_up_to(backing.entries(), size);
        match self.exporter.export(kind, &export_entries) {
            Ok(exported) => {
                log_limit::info_limit_global!(
                    16,
                    GUEST_LOG_INTERVAL,
                    "virtio-gpu: blob {id} ({size} bytes) exported as {kind}; dma-buf fdinfo: {}",
                    dmabuf_fdinfo(&exported.fd)
                );
                Ok(exported)
            }
            Err(e) => match e.fault(kind) {
                Fault::Guest => Err(ExportFailure::Refused(GpuError::InvalidParameter(format!(
                    "blob {id} cannot be exported as {kind}: {e}"
                )))),
                Fault::Unsupported => Err(ExportFailure::Unsupported(e.to_string())),
                Fault::Host => Err(ExportFailure::Host(e.to_string())),
            },
        }
    }

    /// Drops the dma-buf of blob `id` if it went stale (the guest moved its BAR, turned the
    /// device's memory decoding off or reset it: the kernel revoked it) and exports the blob
    /// again when it can. Until then the scanout is read through the CPU path, which fails
    /// cleanly while the memory is off, so the display keeps its last frame.
    fn refresh_export(&mut self, id: u32) {
        let Some(Resource::Blob(b)) = self.resources.get_mut(&id) else {
            return;
        };
        let BlobPath::Export(kind) = b.path else {
            return;
        };
        if b.backing.is_none() {
            return;
        }
        if let Some(e) = &b.export {
            if self.exporter.is_current(e) {
                return;
            }
            b.export = None;
            log_limit::warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-gpu: blob {id}: its {kind} dma-buf went stale (the guest moved, disabled \
                 or reset the memory behind it) and was released; exporting again when possible"
            );
        }
        let Some(Resource::Blob(b)) = self.resources.get(&id) else {
            return;
        };
        let Some(backing) = b.backing.as_ref() else {
            return;
        };
        let exported = self.export(id, b.size, backing, b.ranges, kind);
        match exported {
            Ok(e) => {
                if let Some(Resource::Blob(b)) = self.resources.get_mut(&id) {
                    b.export = Some(e);
                }
            }
            Err(e) => log_limit::warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-gpu: blob {id} stays on the CPU path for now: {e}"
            ),
        }
    }

    /// Logs `msg` the first time `reason` comes up (later blobs with the same reason are quiet).
    fn log_once(&mut self, reason: String, msg: String) {
        if self.logged_once.insert(reason) {
            log::warn!("virtio-gpu: {msg} (logged once per reason)");
        }
    }

    fn disable_scanout(&mut self, scanout_id: u32) {
        if let Some(s) = self.scanouts.get_mut(scanout_id as usize) {
            if *s != Scanout::Disabled {
                *s = Scanout::Disabled;
                if let Err(e) = self.display.set_scanout(scanout_id, None) {
                    log_limit::error_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "virtio-gpu: display: {e}"
                    );
                }
            }
        }
    }

    fn refresh_scanouts_of(&mut self, id: u32) {
        for s in 0..NUM_SCANOUTS {
            if self.scanouts[s as usize].resource_id() == Some(id) {
                self.show(s, None);
            }
        }
    }

    /// Hands scanout `scanout_id` to the display: `set_scanout` when `flush` is `None`,
    /// else a flush of that rectangle. Display errors are host errors: logged.
    fn show(&mut self, scanout_id: u32, flush: Option<Rect>) {
        if let Scanout::Blob { resource_id, .. } = self.scanouts[scanout_id as usize] {
            self.refresh_export(resource_id);
        }
        let result = self.present(scanout_id, |display, frame| match flush {
            None => display.set_scanout(scanout_id, Some(frame)),
            Some(rect) => display.flush(scanout_id, frame, rect),
        });
        if let Err(e) = result {
            log_limit::error_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-gpu: display (scanout {scanout_id}): {e}"
            );
        }
    }

    /// Builds the frame scanout `scanout_id` shows and hands it to `f` with the display
    /// (nothing for a disabled scanout).
    fn present(
        &mut self,
        scanout_id: u32,
        f: impl FnOnce(&mut dyn DisplayBackend, &ScanoutFrame<'_>) -> Result<(), DisplayError>,
    ) -> Result<(), DisplayError> {
        let scanout = self.scanouts[scanout_id as usize];
        let Some(mem) = self.memory() else {
            return Ok(());
        };
        let mem = &*mem;
        let exporter = self.exporter.as_ref();
        let display = self.display.as_mut();
        match scanout {
            Scanout::Disabled => Ok(()),
            Scanout::TwoD { resource_id, rect } => {
                let Some(Resource::TwoD(r)) = self.resources.get(&resource_id) else {
                    return Ok(());
                };
                let stride = r.stride();
                let frame = ScanoutFrame {
                    dmabuf: None,
                    pixels: &r.data,
                    fourcc: r.format.fourcc,
                    width: rect.width,
                    height: rect.height,
                    stride,
                    offset: u64::from(rect.y) * u64::from(stride) + u64::from(rect.x) * 4,
                };
                f(display, &frame)
            }
            Scanout::Blob {
                resource_id,
                fourcc,
                width,
                height,
                stride,
                offset,
            } => {
                let Some(Resource::Blob(b)) = self.resources.get(&resource_id) else {
                    return Ok(());
                };
                let Some(backing) = b.backing.as_ref() else {
                    return Ok(());
                };
                // CPU consumers read the backing: guest RAM through guest memory, BAR entries
                // through the exporter's fault-free reads.
                let pixels = BackingPixels {
                    backing,
                    mem,
                    exporter,
                };
                let frame = ScanoutFrame {
                    dmabuf: b.export.as_ref().map(|e| e.fd.as_fd()),
                    pixels: &pixels,
                    fourcc,
                    width,
                    height,
                    stride,
                    offset,
                };
                f(display, &frame)
            }
        }
    }
}

impl<M: GuestAddressSpace> Drop for GpuDevice<M> {
    /// The VM is going away: each enabled scanout's frame is offered to the display one last
    /// time (a rate-limited backend writes the flush it skipped).
    fn drop(&mut self) {
        for s in 0..NUM_SCANOUTS {
            if let Err(e) = self.present(s, |display, frame| display.finish(s, frame)) {
                log::error!("virtio-gpu: display (scanout {s}) at shutdown: {e}");
            }
        }
    }
}

/// A blob's checked backing, its path, its range count and its dma-buf if it was exported.
struct PreparedBlob {
    backing: Backing,
    path: BlobPath,
    ranges: usize,
    export: Option<DmaBuf>,
}

/// Why a blob was not exported.
#[derive(Debug, thiserror::Error)]
enum ExportFailure {
    /// The guest's fault or a budget: the command fails with this error.
    #[error(transparent)]
    Refused(GpuError),
    /// This host cannot export this memory: the CPU path serves the blob.
    #[error("export unsupported: {0}")]
    Unsupported(String),
    /// A host failure: the CPU path serves the blob.
    #[error("host error: {0}")]
    Host(String),
}

/// The kernel's fdinfo of a dma-buf (`size`, `exp_name`, ...) on one line, its lines joined
/// by " | ": shows which exporter made it (`udmabuf`, `vfio_pci_core`).
fn dmabuf_fdinfo(fd: &impl AsFd) -> String {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | "),
        Err(e) => format!("unavailable ({path}: {e})"),
    }
}

/// The first entries covering exactly `size` bytes (the last one shortened if needed).
fn entries_up_to(entries: impl Iterator<Item = BlobEntry>, size: u64) -> Vec<BlobEntry> {
    let mut out = Vec::new();
    let mut left = size;
    for e in entries {
        if left == 0 {
            break;
        }
        let len = e.len.min(left);
        out.push(BlobEntry::new(e.addr, len));
        left -= len;
    }
    out
}

#[cfg(test)]
mod fdinfo_tests {
    use super::dmabuf_fdinfo;

    #[test]
    fn fdinfo_is_one_line_of_the_kernels_fields() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let info = dmabuf_fdinfo(&f);
        assert!(!info.contains('\n'), "{info}");
        assert!(info.starts_with("pos: 0 | flags: "), "{info}");
    }
}
