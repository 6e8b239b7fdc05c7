//! `--display wayland[=<socket>]`: a Wayland client showing each scanout in an xdg-shell
//! toplevel. A scanout with a dma-buf is offered to the compositor through
//! `zwp_linux_dmabuf_v1` (only formats and modifiers it advertised) and, once it imports it,
//! shown with no copy at all; otherwise (no such protocol, the compositor answers `failed`, or
//! no dma-buf: 2D resources and blobs the CPU reads) the frame is copied, through the safe pixel
//! reads, into the display's picture and from there into `wl_shm` buffers. Damage comes from the
//! guest's flushes, frame callbacks pace the commits, buffers are reused only after the
//! compositor released them. A compositor that goes away ends the windows, not the VM. With
//! input devices, the window's keyboard and pointer focus feed them.
//!
//! The GPU thread only records frames and damage (and copies for `wl_shm`); a thread of its own
//! talks to the compositor, so a slow compositor never holds up the device.

mod client;
mod config;
mod seat;
mod shared;
mod shm;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_gpu_blob::display::{DisplayBackend, DisplayError, ScanoutFrame};
use virtio_gpu_blob::protocol::Rect;

pub use self::config::WaylandConfig;
use self::shared::{FrameSpec, Path, Shared};
use crate::input::InputSink;
use crate::picture::{clip, Area, MAX_EDGE};

/// The Wayland display backend.
pub struct WaylandDisplay {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    row: Vec<u8>,
}

/// The figures of a [`WaylandDisplay`] (for the VMM's exit summary), readable after it is gone.
#[derive(Clone)]
pub struct WaylandSummary(Arc<Shared>);

impl WaylandSummary {
    /// One line: frames per path, commits, bytes copied, flush-to-commit latency.
    pub fn line(&self) -> String {
        self.0.counters.summary()
    }
}

impl WaylandDisplay {
    /// Connects to the compositor `config` names and starts the display's thread. `input`
    /// receives the window's keys and pointer (ignored when `None`); `name` titles the windows.
    pub fn connect(
        config: &WaylandConfig,
        input: Option<Arc<dyn InputSink>>,
        name: &str,
    ) -> Result<Self, DisplayError> {
        let err = |e: String| DisplayError::Io(format!("wayland: {e}"));
        let socket = config.socket_path_from_env().map_err(err)?;
        let shared = Arc::new(Shared::new().map_err(|e| err(e.to_string()))?);
        let client =
            client::Client::connect(socket.clone(), shared.clone(), input, name).map_err(err)?;
        let formats = shared
            .dmabuf_formats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let gpu = if shared.main_device.load(Ordering::Relaxed) {
            "it renders on a GPU (main device)"
        } else {
            "no main device: only dma-bufs that can be mapped are offered"
        };
        log::info!(
            "wayland: connected to {}; zwp_linux_dmabuf_v1: {}",
            socket.display(),
            match client.dmabuf_version() {
                Some(v) => format!("version {v}, {formats} format/modifier pairs, {gpu}"),
                None => "not offered (every scanout goes through wl_shm)".to_string(),
            }
        );
        let thread = std::thread::Builder::new()
            .name("wayland".into())
            .spawn(move || client.run())
            .map_err(|e| err(format!("cannot start the display thread: {e}")))?;
        Ok(WaylandDisplay {
            shared,
            thread: Some(thread),
            row: Vec::new(),
        })
    }

    /// Whether the compositor is still there (false once it went away: nothing is shown any
    /// more, the calls still succeed).
    pub fn connected(&self) -> bool {
        !self.shared.gone.load(Ordering::Relaxed)
    }

    /// The display's figures, for after it is gone.
    pub fn summary(&self) -> WaylandSummary {
        WaylandSummary(self.shared.clone())
    }

    fn dmabuf_of(
        &self,
        frame: &ScanoutFrame<'_>,
    ) -> Result<(Arc<OwnedFd>, u64, u32), &'static str> {
        let fd = frame
            .dmabuf
            .ok_or("no dma-buf (a 2D resource, or a blob the CPU reads)")?;
        let modifier = self
            .shared
            .dmabuf_modifier(frame.fourcc)
            .ok_or("the compositor does not import this format as a linear dma-buf")?;
        let offset = u32::try_from(frame.offset).map_err(|_| "the frame's offset exceeds 4 GiB")?;
        if !self.shared.main_device.load(Ordering::Relaxed) && !mappable(fd) {
            return Err(
                "the compositor names no GPU (no main device in its dma-buf feedback), so \
                 it maps dma-bufs, and this one cannot be mapped (a passthrough BAR)",
            );
        }
        let fd = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|_| "the dma-buf descriptor cannot be duplicated")?;
        Ok((Arc::new(fd), modifier, offset))
    }
}

/// Whether `fd` can be mapped (what a compositor without a GPU does to read a dma-buf): one page
/// is mapped read-only and unmapped again. A dma-buf of a VFIO BAR cannot be.
fn mappable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let len = 4096;
    // SAFETY: a new read-only shared mapping of one page of `fd` at an address the kernel
    // chooses; nothing is read through it and it is unmapped at once.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: `p` is the mapping of `len` bytes made above, used by nothing else.
    unsafe { libc::munmap(p, len) };
    true
}

fn whole(frame: &ScanoutFrame<'_>) -> Rect {
    Rect {
        x: 0,
        y: 0,
        width: frame.width,
        height: frame.height,
    }
}

impl DisplayBackend for WaylandDisplay {
    fn set_scanout(
        &mut self,
        scanout_id: u32,
        frame: Option<&ScanoutFrame<'_>>,
    ) -> Result<(), DisplayError> {
        if self.shared.gone.load(Ordering::Relaxed) {
            return Ok(());
        }
        let offer = frame.map(|f| self.dmabuf_of(f));
        let shared = self.shared.clone();
        let mut scanouts = shared.scanouts();
        let sc = scanouts.entry(scanout_id).or_default();
        sc.generation += 1;
        sc.damage = Default::default();
        sc.damage_since = None;
        match (frame, offer) {
            (Some(f), Some(offer)) => {
                let (dmabuf, modifier, offset) = match offer {
                    Ok((fd, m, o)) => {
                        sc.path = Path::Offered;
                        (Some(fd), m, o)
                    }
                    Err(why) => {
                        sc.path = Path::Shm;
                        sc.shm_reason = why;
                        (None, 0, 0)
                    }
                };
                sc.frame = Some(FrameSpec {
                    dmabuf,
                    fourcc: f.fourcc,
                    modifier,
                    width: f.width,
                    height: f.height,
                    stride: f.stride,
                    offset,
                });
                sc.picture.resize(f.width, f.height).map_err(|e| {
                    DisplayError::Io(format!("wayland: picture of {}x{}: {e}", f.width, f.height))
                })?;
                // Until the compositor takes the dma-buf, the picture is kept too (it may refuse).
                if let Some(area) = sc.picture.copy_in(f, whole(f), &mut self.row)? {
                    count_copy(&shared, area);
                    sc.add_damage(area);
                }
            }
            _ => sc.frame = None,
        }
        drop(scanouts);
        shared.wake();
        Ok(())
    }

    fn flush(
        &mut self,
        scanout_id: u32,
        frame: &ScanoutFrame<'_>,
        rect: Rect,
    ) -> Result<(), DisplayError> {
        if self.shared.gone.load(Ordering::Relaxed) {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let shared = self.shared.clone();
        let mut scanouts = shared.scanouts();
        let Some(sc) = scanouts.get_mut(&scanout_id).filter(|s| s.frame.is_some()) else {
            return Ok(());
        };
        let dmabuf = sc.path == Path::DmaBuf;
        let area = if dmabuf {
            // The compositor reads the guest's buffer itself: only the damage is passed on.
            let edge = |v: u32| v.min(MAX_EDGE) as u16;
            let full = |v: u32| v.min(u32::from(u16::MAX)) as u16;
            clip(
                Area {
                    x: edge(rect.x),
                    y: edge(rect.y),
                    w: full(rect.width),
                    h: full(rect.height),
                },
                edge(frame.width),
                edge(frame.height),
            )
        } else {
            let copied = sc.picture.copy_in(frame, rect, &mut self.row)?;
            if let Some(a) = copied {
                count_copy(&shared, a);
            }
            copied
        };
        if let Some(a) = area {
            sc.add_damage(a);
            drop(scanouts);
            shared.wake();
        }
        shared.counters.flush(dmabuf, t.elapsed());
        Ok(())
    }
}

fn count_copy(shared: &Shared, a: Area) {
    let bytes = u64::from(a.w) * u64::from(a.h) * 4;
    shared
        .counters
        .bytes_to_picture
        .fetch_add(bytes, Ordering::Relaxed);
}

impl Drop for WaylandDisplay {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Relaxed);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        log::debug!("{}", self.shared.counters.summary());
    }
}
