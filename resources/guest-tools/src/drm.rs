//! The few DRM ioctls gpu-kms-blob and stock-p2p need, with structs laid out as in Linux
//! `include/uapi/drm/{drm.h,drm_mode.h,virtgpu_drm.h}` (plain `#[repr(C)]`, sizes checked in tests).
//! No libdrm: the program stays a static binary.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

const DRM_IOCTL_BASE: u32 = b'd' as u32;
const DRM_COMMAND_BASE: u32 = 0x40;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, 'd', nr, size)` as Linux encodes it on x86.
pub const fn drm_ioc(dir: u32, nr: u32, size: usize) -> u64 {
    ((dir << 30) | ((size as u32) << 16) | (DRM_IOCTL_BASE << 8) | nr) as u64
}
const fn iowr<T>(nr: u32) -> u64 {
    drm_ioc(IOC_READ | IOC_WRITE, nr, std::mem::size_of::<T>())
}

/// `struct drm_version`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct DrmVersion {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub name_len: usize,
    pub name: u64,
    pub date_len: usize,
    pub date: u64,
    pub desc_len: usize,
    pub desc: u64,
}

/// `struct drm_virtgpu_getparam`: `value` points to an int the kernel writes.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VirtgpuGetparam {
    pub param: u64,
    pub value: u64,
}

/// `struct drm_virtgpu_map`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VirtgpuMap {
    pub offset: u64,
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_virtgpu_resource_create_blob`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VirtgpuResourceCreateBlob {
    pub blob_mem: u32,
    pub blob_flags: u32,
    pub bo_handle: u32,
    pub res_handle: u32,
    pub size: u64,
    pub pad: u32,
    pub cmd_size: u32,
    pub cmd: u64,
    pub blob_id: u64,
}

/// `struct drm_mode_card_res`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ModeCardRes {
    pub fb_id_ptr: u64,
    pub crtc_id_ptr: u64,
    pub connector_id_ptr: u64,
    pub encoder_id_ptr: u64,
    pub count_fbs: u32,
    pub count_crtcs: u32,
    pub count_connectors: u32,
    pub count_encoders: u32,
    pub min_width: u32,
    pub max_width: u32,
    pub min_height: u32,
    pub max_height: u32,
}

/// `struct drm_mode_modeinfo`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ModeInfo {
    pub clock: u32,
    pub hdisplay: u16,
    pub hsync_start: u16,
    pub hsync_end: u16,
    pub htotal: u16,
    pub hskew: u16,
    pub vdisplay: u16,
    pub vsync_start: u16,
    pub vsync_end: u16,
    pub vtotal: u16,
    pub vscan: u16,
    pub vrefresh: u32,
    pub flags: u32,
    pub type_: u32,
    pub name: [u8; 32],
}

/// `struct drm_mode_get_connector`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ModeGetConnector {
    pub encoders_ptr: u64,
    pub modes_ptr: u64,
    pub props_ptr: u64,
    pub prop_values_ptr: u64,
    pub count_modes: u32,
    pub count_props: u32,
    pub count_encoders: u32,
    pub encoder_id: u32,
    pub connector_id: u32,
    pub connector_type: u32,
    pub connector_type_id: u32,
    pub connection: u32,
    pub mm_width: u32,
    pub mm_height: u32,
    pub subpixel: u32,
    pub pad: u32,
}

/// `struct drm_mode_get_encoder`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ModeGetEncoder {
    pub encoder_id: u32,
    pub encoder_type: u32,
    pub crtc_id: u32,
    pub possible_crtcs: u32,
    pub possible_clones: u32,
}

/// `struct drm_mode_crtc`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ModeCrtc {
    pub set_connectors_ptr: u64,
    pub count_connectors: u32,
    pub crtc_id: u32,
    pub fb_id: u32,
    pub x: u32,
    pub y: u32,
    pub gamma_size: u32,
    pub mode_valid: u32,
    pub mode: ModeInfo,
}

/// `struct drm_mode_fb_cmd2`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ModeFbCmd2 {
    pub fb_id: u32,
    pub width: u32,
    pub height: u32,
    pub pixel_format: u32,
    pub flags: u32,
    pub handles: [u32; 4],
    pub pitches: [u32; 4],
    pub offsets: [u32; 4],
    pub modifier: [u64; 4],
}

/// `struct drm_mode_fb_dirty_cmd`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ModeFbDirtyCmd {
    pub fb_id: u32,
    pub flags: u32,
    pub color: u32,
    pub num_clips: u32,
    pub clips_ptr: u64,
}

/// `struct drm_clip_rect` (x2/y2 exclusive).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ClipRect {
    pub x1: u16,
    pub y1: u16,
    pub x2: u16,
    pub y2: u16,
}

/// `struct drm_prime_handle`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PrimeHandle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
}

/// `struct drm_gem_close`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GemClose {
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_mode_crtc_page_flip`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ModeCrtcPageFlip {
    pub crtc_id: u32,
    pub fb_id: u32,
    pub flags: u32,
    pub reserved: u32,
    pub user_data: u64,
}

/// `struct drm_event_vblank` (with its `struct drm_event` header), as read from the card fd.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EventVblank {
    pub kind: u32,
    pub length: u32,
    pub user_data: u64,
    pub tv_sec: u32,
    pub tv_usec: u32,
    pub sequence: u32,
    pub crtc_id: u32,
}

/// DRM_IOCTL_VERSION.
pub const DRM_IOCTL_VERSION: u64 = iowr::<DrmVersion>(0x00);
/// DRM_IOCTL_GEM_CLOSE (`_IOW`).
pub const DRM_IOCTL_GEM_CLOSE: u64 = drm_ioc(IOC_WRITE, 0x09, std::mem::size_of::<GemClose>());
/// DRM_IOCTL_PRIME_FD_TO_HANDLE.
pub const DRM_IOCTL_PRIME_FD_TO_HANDLE: u64 = iowr::<PrimeHandle>(0x2E);
/// DRM_IOCTL_MODE_PAGE_FLIP.
pub const DRM_IOCTL_MODE_PAGE_FLIP: u64 = iowr::<ModeCrtcPageFlip>(0xB0);
/// DRM_MODE_PAGE_FLIP_EVENT: send a DRM_EVENT_FLIP_COMPLETE event when the flip is done.
pub const DRM_MODE_PAGE_FLIP_EVENT: u32 = 0x01;
/// DRM_EVENT_FLIP_COMPLETE.
pub const DRM_EVENT_FLIP_COMPLETE: u32 = 0x02;
/// DRM_IOCTL_MODE_GETRESOURCES.
pub const DRM_IOCTL_MODE_GETRESOURCES: u64 = iowr::<ModeCardRes>(0xA0);
/// DRM_IOCTL_MODE_SETCRTC.
pub const DRM_IOCTL_MODE_SETCRTC: u64 = iowr::<ModeCrtc>(0xA2);
/// DRM_IOCTL_MODE_GETENCODER.
pub const DRM_IOCTL_MODE_GETENCODER: u64 = iowr::<ModeGetEncoder>(0xA6);
/// DRM_IOCTL_MODE_GETCONNECTOR.
pub const DRM_IOCTL_MODE_GETCONNECTOR: u64 = iowr::<ModeGetConnector>(0xA7);
/// DRM_IOCTL_MODE_RMFB (`unsigned int`).
pub const DRM_IOCTL_MODE_RMFB: u64 = iowr::<u32>(0xAF);
/// DRM_IOCTL_MODE_DIRTYFB.
pub const DRM_IOCTL_MODE_DIRTYFB: u64 = iowr::<ModeFbDirtyCmd>(0xB1);
/// DRM_IOCTL_MODE_ADDFB2.
pub const DRM_IOCTL_MODE_ADDFB2: u64 = iowr::<ModeFbCmd2>(0xB8);
/// DRM_IOCTL_VIRTGPU_MAP.
pub const DRM_IOCTL_VIRTGPU_MAP: u64 = iowr::<VirtgpuMap>(DRM_COMMAND_BASE + 0x01);
/// DRM_IOCTL_VIRTGPU_GETPARAM.
pub const DRM_IOCTL_VIRTGPU_GETPARAM: u64 = iowr::<VirtgpuGetparam>(DRM_COMMAND_BASE + 0x03);
/// DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB.
pub const DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB: u64 =
    iowr::<VirtgpuResourceCreateBlob>(DRM_COMMAND_BASE + 0x0a);

/// VIRTGPU_PARAM_RESOURCE_BLOB.
pub const VIRTGPU_PARAM_RESOURCE_BLOB: u64 = 3;
/// VIRTGPU_BLOB_MEM_GUEST.
pub const VIRTGPU_BLOB_MEM_GUEST: u32 = 1;
/// VIRTGPU_BLOB_FLAG_USE_MAPPABLE.
pub const VIRTGPU_BLOB_FLAG_USE_MAPPABLE: u32 = 1;
/// VIRTGPU_BLOB_FLAG_USE_SHAREABLE.
pub const VIRTGPU_BLOB_FLAG_USE_SHAREABLE: u32 = 2;
/// DRM_FORMAT_XRGB8888 = fourcc('X', 'R', '2', '4').
pub const DRM_FORMAT_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
/// DRM_MODE_CONNECTED.
pub const DRM_MODE_CONNECTED: u32 = 1;

/// An open DRM card node.
#[derive(Debug)]
pub struct Card {
    file: File,
}

impl Card {
    /// Opens `/dev/dri/cardN` read-write.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        Ok(Card { file })
    }

    /// Raw fd.
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Issues ioctl `req` with `arg` (which must be the struct `req` encodes).
    ///
    /// # Safety
    /// `T` must be the exact argument type of `req`, and every pointer inside `arg` must point to
    /// memory valid for what the kernel reads or writes through it for this request.
    pub unsafe fn ioctl<T>(&self, req: u64, arg: &mut T, what: &str) -> Result<()> {
        loop {
            // SAFETY: the caller guarantees `arg` matches `req` and its pointers are valid.
            let r = unsafe { libc::ioctl(self.fd(), req as _, arg as *mut T) };
            if r == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
                continue;
            }
            return Err(Error::Io {
                what: what.to_string(),
                source: e,
            });
        }
    }

    /// The driver name (DRM_IOCTL_VERSION).
    pub fn driver_name(&self) -> Result<String> {
        let mut name = [0u8; 64];
        let mut v = DrmVersion {
            name_len: name.len(),
            name: name.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: DrmVersion is the argument of DRM_IOCTL_VERSION; `name` is valid for name_len
        // bytes, date/desc are null with length 0.
        unsafe { self.ioctl(DRM_IOCTL_VERSION, &mut v, "DRM_IOCTL_VERSION")? };
        let n = v.name_len.min(name.len());
        Ok(String::from_utf8_lossy(&name[..n]).into_owned())
    }

    /// DRM_IOCTL_VIRTGPU_GETPARAM.
    pub fn virtgpu_getparam(&self, param: u64) -> Result<i32> {
        let mut value: i32 = 0;
        let mut g = VirtgpuGetparam {
            param,
            value: &mut value as *mut i32 as u64,
        };
        // SAFETY: matching struct; `value` points to a live i32 the kernel writes.
        unsafe {
            self.ioctl(
                DRM_IOCTL_VIRTGPU_GETPARAM,
                &mut g,
                "DRM_IOCTL_VIRTGPU_GETPARAM",
            )?
        };
        Ok(value)
    }

    /// DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB; returns (GEM handle, resource id).
    pub fn virtgpu_create_blob(
        &self,
        blob_mem: u32,
        blob_flags: u32,
        size: u64,
    ) -> Result<(u32, u32)> {
        let mut c = VirtgpuResourceCreateBlob {
            blob_mem,
            blob_flags,
            size,
            ..Default::default()
        };
        // SAFETY: matching struct; cmd is null with cmd_size 0.
        unsafe {
            self.ioctl(
                DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB,
                &mut c,
                "DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB",
            )?
        };
        Ok((c.bo_handle, c.res_handle))
    }

    /// DRM_IOCTL_VIRTGPU_MAP; returns the fake offset to mmap the card fd at.
    pub fn virtgpu_map(&self, handle: u32) -> Result<u64> {
        let mut m = VirtgpuMap {
            handle,
            ..Default::default()
        };
        // SAFETY: matching struct without pointers.
        unsafe { self.ioctl(DRM_IOCTL_VIRTGPU_MAP, &mut m, "DRM_IOCTL_VIRTGPU_MAP")? };
        Ok(m.offset)
    }

    /// DRM_IOCTL_MODE_GETRESOURCES: (crtcs, connectors).
    pub fn resources(&self) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut r = ModeCardRes::default();
        // SAFETY: matching struct, all array pointers null with counts 0 (a count query).
        unsafe {
            self.ioctl(
                DRM_IOCTL_MODE_GETRESOURCES,
                &mut r,
                "DRM_IOCTL_MODE_GETRESOURCES",
            )?
        };
        let mut crtcs = vec![0u32; r.count_crtcs as usize];
        let mut conns = vec![0u32; r.count_connectors as usize];
        let mut r2 = ModeCardRes {
            crtc_id_ptr: crtcs.as_mut_ptr() as u64,
            count_crtcs: r.count_crtcs,
            connector_id_ptr: conns.as_mut_ptr() as u64,
            count_connectors: r.count_connectors,
            ..Default::default()
        };
        // SAFETY: the arrays hold exactly the counts given; fbs/encoders are not asked for.
        unsafe {
            self.ioctl(
                DRM_IOCTL_MODE_GETRESOURCES,
                &mut r2,
                "DRM_IOCTL_MODE_GETRESOURCES",
            )?
        };
        crtcs.truncate(r2.count_crtcs.min(r.count_crtcs) as usize);
        conns.truncate(r2.count_connectors.min(r.count_connectors) as usize);
        Ok((crtcs, conns))
    }

    /// DRM_IOCTL_MODE_GETCONNECTOR: the connector and its modes and encoders.
    pub fn connector(&self, id: u32) -> Result<(ModeGetConnector, Vec<ModeInfo>, Vec<u32>)> {
        let mut c = ModeGetConnector {
            connector_id: id,
            ..Default::default()
        };
        // SAFETY: matching struct, null arrays with zero counts (a count query).
        unsafe {
            self.ioctl(
                DRM_IOCTL_MODE_GETCONNECTOR,
                &mut c,
                "DRM_IOCTL_MODE_GETCONNECTOR",
            )?
        };
        let mut modes = vec![ModeInfo::default(); c.count_modes as usize];
        let mut encs = vec![0u32; c.count_encoders as usize];
        let mut c2 = ModeGetConnector {
            connector_id: id,
            modes_ptr: modes.as_mut_ptr() as u64,
            count_modes: c.count_modes,
            encoders_ptr: encs.as_mut_ptr() as u64,
            count_encoders: c.count_encoders,
            ..Default::default()
        };
        // SAFETY: arrays sized to the counts given; props are not asked for (count 0).
        unsafe {
            self.ioctl(
                DRM_IOCTL_MODE_GETCONNECTOR,
                &mut c2,
                "DRM_IOCTL_MODE_GETCONNECTOR",
            )?
        };
        modes.truncate(c2.count_modes.min(c.count_modes) as usize);
        encs.truncate(c2.count_encoders.min(c.count_encoders) as usize);
        Ok((c2, modes, encs))
    }

    /// DRM_IOCTL_MODE_GETENCODER.
    pub fn encoder(&self, id: u32) -> Result<ModeGetEncoder> {
        let mut e = ModeGetEncoder {
            encoder_id: id,
            ..Default::default()
        };
        // SAFETY: matching struct without pointers.
        unsafe {
            self.ioctl(
                DRM_IOCTL_MODE_GETENCODER,
                &mut e,
                "DRM_IOCTL_MODE_GETENCODER",
            )?
        };
        Ok(e)
    }

    /// DRM_IOCTL_MODE_ADDFB2 of a single-plane XRGB8888 buffer; returns the fb id.
    pub fn add_fb2(&self, width: u32, height: u32, handle: u32, pitch: u32) -> Result<u32> {
        let mut f = ModeFbCmd2 {
            width,
            height,
            pixel_format: DRM_FORMAT_XRGB8888,
            handles: [handle, 0, 0, 0],
            pitches: [pitch, 0, 0, 0],
            ..Default::default()
        };
        // SAFETY: matching struct without pointers.
        unsafe { self.ioctl(DRM_IOCTL_MODE_ADDFB2, &mut f, "DRM_IOCTL_MODE_ADDFB2")? };
        Ok(f.fb_id)
    }

    /// DRM_IOCTL_MODE_SETCRTC: shows `fb_id` on `crtc_id` through `connector_id` with `mode`.
    pub fn set_crtc(
        &self,
        crtc_id: u32,
        fb_id: u32,
        connector_id: u32,
        mode: &ModeInfo,
    ) -> Result<()> {
        let mut conns = [connector_id];
        let mut c = ModeCrtc {
            set_connectors_ptr: conns.as_mut_ptr() as u64,
            count_connectors: 1,
            crtc_id,
            fb_id,
            mode_valid: 1,
            mode: *mode,
            ..Default::default()
        };
        // SAFETY: matching struct; the connector array holds count_connectors entries.
        unsafe { self.ioctl(DRM_IOCTL_MODE_SETCRTC, &mut c, "DRM_IOCTL_MODE_SETCRTC") }
    }

    /// DRM_IOCTL_PRIME_FD_TO_HANDLE: imports a dma-buf, returns the GEM handle.
    pub fn prime_fd_to_handle(&self, fd: std::os::fd::BorrowedFd<'_>) -> Result<u32> {
        let mut p = PrimeHandle {
            fd: fd.as_raw_fd(),
            ..Default::default()
        };
        // SAFETY: matching struct without pointers; the fd is borrowed for the call.
        unsafe {
            self.ioctl(
                DRM_IOCTL_PRIME_FD_TO_HANDLE,
                &mut p,
                "DRM_IOCTL_PRIME_FD_TO_HANDLE",
            )?
        };
        Ok(p.handle)
    }

    /// DRM_IOCTL_GEM_CLOSE.
    pub fn gem_close(&self, handle: u32) -> Result<()> {
        let mut c = GemClose { handle, pad: 0 };
        // SAFETY: matching struct without pointers.
        unsafe { self.ioctl(DRM_IOCTL_GEM_CLOSE, &mut c, "DRM_IOCTL_GEM_CLOSE") }
    }

    /// DRM_IOCTL_MODE_RMFB.
    pub fn rm_fb(&self, fb_id: u32) -> Result<()> {
        let mut id = fb_id;
        // SAFETY: the argument of DRM_IOCTL_MODE_RMFB is one u32.
        unsafe { self.ioctl(DRM_IOCTL_MODE_RMFB, &mut id, "DRM_IOCTL_MODE_RMFB") }
    }

    /// DRM_IOCTL_MODE_PAGE_FLIP of `crtc_id` to `fb_id`, asking for a flip-complete event
    /// carrying `user_data`.
    pub fn page_flip(&self, crtc_id: u32, fb_id: u32, user_data: u64) -> Result<()> {
        let mut f = ModeCrtcPageFlip {
            crtc_id,
            fb_id,
            flags: DRM_MODE_PAGE_FLIP_EVENT,
            reserved: 0,
            user_data,
        };
        // SAFETY: matching struct without pointers.
        unsafe { self.ioctl(DRM_IOCTL_MODE_PAGE_FLIP, &mut f, "DRM_IOCTL_MODE_PAGE_FLIP") }
    }

    /// Waits up to `timeout` for the card fd to have an event to read; false if none came.
    pub fn wait_event(&self, timeout: std::time::Duration) -> Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        loop {
            // SAFETY: `p` is one live pollfd, the count passed is 1.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r >= 0 {
                return Ok(r > 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Io {
                    what: "poll the DRM card for an event".into(),
                    source: e,
                });
            }
        }
    }

    /// Blocks until the card fd has an event and reads it; returns the first flip-complete
    /// event of the read (other events are skipped), or `None` if the read held none.
    pub fn read_flip_event(&self) -> Result<Option<EventVblank>> {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        let n = loop {
            match (&self.file).read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Io {
                        what: "read a DRM event".into(),
                        source: e,
                    })
                }
            }
        };
        let mut at = 0;
        while at + std::mem::size_of::<EventVblank>() <= n {
            let word = |o: usize| u32::from_ne_bytes(buf[at + o..at + o + 4].try_into().unwrap());
            let (kind, len) = (word(0), word(4) as usize);
            if len < 8 {
                break;
            }
            if kind == DRM_EVENT_FLIP_COMPLETE {
                let ud = u64::from(word(8)) | (u64::from(word(12)) << 32);
                return Ok(Some(EventVblank {
                    kind,
                    length: len as u32,
                    user_data: ud,
                    tv_sec: word(16),
                    tv_usec: word(20),
                    sequence: word(24),
                    crtc_id: word(28),
                }));
            }
            at += len;
        }
        Ok(None)
    }

    /// DRM_IOCTL_MODE_DIRTYFB with the given clip rectangles.
    pub fn dirty_fb(&self, fb_id: u32, clips: &[ClipRect]) -> Result<()> {
        let mut d = ModeFbDirtyCmd {
            fb_id,
            num_clips: clips.len() as u32,
            clips_ptr: clips.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: matching struct; clips_ptr points to num_clips rectangles the kernel only reads.
        unsafe { self.ioctl(DRM_IOCTL_MODE_DIRTYFB, &mut d, "DRM_IOCTL_MODE_DIRTYFB") }
    }
}

/// The first `/dev/dri/cardN` (N < 8) whose driver is `virtio_gpu`, waiting up to `wait` for it.
pub fn find_virtio_gpu_card(wait: std::time::Duration) -> Result<(std::path::PathBuf, Card)> {
    let t0 = std::time::Instant::now();
    loop {
        for n in 0..8 {
            let p = std::path::PathBuf::from(format!("/dev/dri/card{n}"));
            if let Ok(c) = Card::open(&p) {
                if c.driver_name().is_ok_and(|d| d == "virtio_gpu") {
                    return Ok((p, c));
                }
            }
        }
        if t0.elapsed() > wait {
            return Err(Error::Timeout {
                what: "a /dev/dri/cardN of driver virtio_gpu".into(),
                ms: wait.as_millis() as u64,
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A connected connector, the mode to use and a CRTC that can drive it.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub connector: u32,
    pub crtc: u32,
    pub mode: ModeInfo,
    /// How many modes the connector offers.
    pub modes: usize,
}

impl Card {
    /// The first connected connector with modes, its mode `want` (width, height) or else its
    /// first mode, and its encoder's CRTC (or the first CRTC the encoder can use).
    pub fn first_output(&self, want: Option<(u16, u16)>) -> Result<Output> {
        let (crtcs, conns) = self.resources()?;
        let mut chosen = None;
        for id in &conns {
            let (c, modes, encs) = self.connector(*id)?;
            if c.connection == DRM_MODE_CONNECTED && !modes.is_empty() {
                chosen = Some((c, modes, encs));
                break;
            }
        }
        let (conn, modes, encs) = chosen
            .ok_or_else(|| Error::Unsupported(format!("no connected connector among {conns:?}")))?;
        let mode = match want {
            None => modes[0],
            Some((w, h)) => *modes
                .iter()
                .find(|m| m.hdisplay == w && m.vdisplay == h)
                .ok_or_else(|| Error::Unsupported(format!("no mode {w}x{h} on the connector")))?,
        };
        let mut crtc = 0;
        if conn.encoder_id != 0 {
            crtc = self.encoder(conn.encoder_id)?.crtc_id;
        }
        if crtc == 0 {
            let enc = encs
                .first()
                .ok_or_else(|| Error::Unsupported("connector has no encoder".into()))?;
            let possible = self.encoder(*enc)?.possible_crtcs;
            crtc = crtcs
                .iter()
                .enumerate()
                .find(|(i, _)| possible & (1 << i) != 0)
                .map(|(_, c)| *c)
                .ok_or_else(|| Error::Unsupported("no CRTC for the encoder".into()))?;
        }
        Ok(Output {
            connector: conn.connector_id,
            crtc,
            mode,
            modes: modes.len(),
        })
    }
}

/// Name of a mode (NUL-terminated in the struct).
pub fn mode_name(m: &ModeInfo) -> String {
    let end = m.name.iter().position(|&b| b == 0).unwrap_or(m.name.len());
    String::from_utf8_lossy(&m.name[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn structs_have_the_uapi_sizes() {
        assert_eq!(size_of::<DrmVersion>(), 64);
        assert_eq!(size_of::<VirtgpuGetparam>(), 16);
        assert_eq!(size_of::<VirtgpuMap>(), 16);
        assert_eq!(size_of::<VirtgpuResourceCreateBlob>(), 48);
        assert_eq!(size_of::<ModeCardRes>(), 64);
        assert_eq!(size_of::<ModeInfo>(), 68);
        assert_eq!(size_of::<ModeGetConnector>(), 80);
        assert_eq!(size_of::<ModeGetEncoder>(), 20);
        assert_eq!(size_of::<ModeCrtc>(), 104);
        assert_eq!(size_of::<ModeFbCmd2>(), 104);
        assert_eq!(size_of::<ModeFbDirtyCmd>(), 24);
        assert_eq!(size_of::<ClipRect>(), 8);
        assert_eq!(size_of::<PrimeHandle>(), 12);
        assert_eq!(size_of::<GemClose>(), 8);
        assert_eq!(size_of::<ModeCrtcPageFlip>(), 24);
        assert_eq!(size_of::<EventVblank>(), 32);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // Values as computed by the kernel's _IOWR on x86-64 (and listed by strace).
        assert_eq!(DRM_IOCTL_VERSION, 0xc040_6400);
        assert_eq!(DRM_IOCTL_MODE_GETRESOURCES, 0xc040_64a0);
        assert_eq!(DRM_IOCTL_MODE_SETCRTC, 0xc068_64a2);
        assert_eq!(DRM_IOCTL_MODE_GETENCODER, 0xc014_64a6);
        assert_eq!(DRM_IOCTL_MODE_GETCONNECTOR, 0xc050_64a7);
        assert_eq!(DRM_IOCTL_MODE_RMFB, 0xc004_64af);
        assert_eq!(DRM_IOCTL_MODE_DIRTYFB, 0xc018_64b1);
        assert_eq!(DRM_IOCTL_MODE_ADDFB2, 0xc068_64b8);
        assert_eq!(DRM_IOCTL_VIRTGPU_MAP, 0xc010_6441);
        assert_eq!(DRM_IOCTL_VIRTGPU_GETPARAM, 0xc010_6443);
        assert_eq!(DRM_IOCTL_VIRTGPU_RESOURCE_CREATE_BLOB, 0xc030_644a);
        assert_eq!(DRM_FORMAT_XRGB8888, 0x3432_5258);
        assert_eq!(DRM_IOCTL_GEM_CLOSE, 0x4008_6409);
        assert_eq!(DRM_IOCTL_PRIME_FD_TO_HANDLE, 0xc00c_642e);
        assert_eq!(DRM_IOCTL_MODE_PAGE_FLIP, 0xc018_64b0);
    }
}
