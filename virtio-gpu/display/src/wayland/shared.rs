//! What the GPU thread and the Wayland thread share: per scanout, the frame the guest shows, the
//! path it takes to the compositor, the picture for `wl_shm` and the damage not committed yet;
//! the counters of the exit summary; the eventfd that wakes the Wayland thread.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::picture::{Area, Damage, Picture};

/// DRM_FORMAT_MOD_LINEAR.
pub const MOD_LINEAR: u64 = 0;
/// DRM_FORMAT_MOD_INVALID: the buffer's layout is implicit (driver-defined).
pub const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// How a scanout reaches the compositor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The dma-buf was offered; the compositor has not answered yet (the picture is kept, in
    /// case it refuses).
    Offered,
    /// The compositor imported the dma-buf: no copies.
    DmaBuf,
    /// Copies through the picture into `wl_shm` buffers.
    Shm,
}

/// The guest's frame as the Wayland thread needs it (the pixels stay with the GPU thread).
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// The dma-buf (a duplicate of the device's), when one is offered.
    pub dmabuf: Option<Arc<OwnedFd>>,
    /// DRM fourcc.
    pub fourcc: u32,
    /// Modifier to offer with the dma-buf.
    pub modifier: u64,
    /// Visible size.
    pub width: u32,
    /// Visible size.
    pub height: u32,
    /// Bytes between rows.
    pub stride: u32,
    /// Offset of the first pixel in the dma-buf.
    pub offset: u32,
}

/// One scanout.
#[derive(Debug)]
pub struct Scanout {
    /// What the guest shows (`None`: nothing, the window is unmapped).
    pub frame: Option<FrameSpec>,
    /// Bumped on every `set_scanout`: the Wayland thread rebuilds its buffers when it changes.
    pub generation: u64,
    /// Where the frame goes.
    pub path: Path,
    /// The frame's pixels, kept up to date unless the path is [`Path::DmaBuf`].
    pub picture: Picture,
    /// Areas flushed since the last commit.
    pub damage: Damage,
    /// When the oldest uncommitted flush came.
    pub damage_since: Option<Instant>,
    /// Why the last change to [`Path::Shm`] happened (logged once by the Wayland thread).
    pub shm_reason: &'static str,
}

impl Default for Scanout {
    fn default() -> Self {
        Scanout {
            frame: None,
            generation: 0,
            path: Path::Shm,
            picture: Picture::default(),
            damage: Damage::default(),
            damage_since: None,
            shm_reason: "",
        }
    }
}

impl Scanout {
    /// Adds `area` to the damage to commit.
    pub fn add_damage(&mut self, area: Area) {
        self.damage.add(area);
        self.damage_since.get_or_insert_with(Instant::now);
    }
}

/// Counters for the exit summary and the benchmark.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames (set_scanout with a frame) whose dma-buf the compositor imported.
    pub dmabuf_frames: AtomicU64,
    /// Frames shown through `wl_shm`.
    pub shm_frames: AtomicU64,
    /// Commits with a buffer.
    pub commits_dmabuf: AtomicU64,
    /// Commits with a buffer.
    pub commits_shm: AtomicU64,
    /// Bytes the GPU thread copied into pictures.
    pub bytes_to_picture: AtomicU64,
    /// Bytes copied from pictures into `wl_shm` buffers.
    pub bytes_to_shm: AtomicU64,
    /// Sum and maximum of the time from a flush to the commit that carries it, microseconds.
    pub latency_sum_us: AtomicU64,
    /// Maximum, microseconds.
    pub latency_max_us: AtomicU64,
    /// Flushes the GPU thread handled on the dma-buf path (damage recorded, nothing copied).
    pub flushes_dmabuf: AtomicU64,
    /// Their total time on the GPU thread, nanoseconds.
    pub flush_ns_dmabuf: AtomicU64,
    /// Flushes the GPU thread copied into the picture (`wl_shm`, or a dma-buf not yet taken).
    pub flushes_copy: AtomicU64,
    /// Their total time on the GPU thread, nanoseconds.
    pub flush_ns_copy: AtomicU64,
}

impl Counters {
    /// Records a commit that carried damage first flushed at `since`.
    pub fn commit(&self, dmabuf: bool, since: Option<Instant>) {
        let c = if dmabuf {
            &self.commits_dmabuf
        } else {
            &self.commits_shm
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = since {
            let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
            self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// Records a flush the GPU thread handled in `took`.
    pub fn flush(&self, dmabuf: bool, took: Duration) {
        let (n, ns) = if dmabuf {
            (&self.flushes_dmabuf, &self.flush_ns_dmabuf)
        } else {
            (&self.flushes_copy, &self.flush_ns_copy)
        };
        n.fetch_add(1, Ordering::Relaxed);
        ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// One line for the exit summary.
    pub fn summary(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mean_us =
            |ns: &AtomicU64, n: &AtomicU64| get(ns).checked_div(get(n)).unwrap_or(0) as f64 / 1e3;
        let commits = get(&self.commits_dmabuf) + get(&self.commits_shm);
        let mean = get(&self.latency_sum_us)
            .checked_div(commits)
            .map(|us| Duration::from_micros(us).as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        format!(
            "wayland: frames dma-buf={} wl_shm={}; commits dma-buf={} wl_shm={}; \
             bytes copied to the picture={} to wl_shm={}; flush to commit {:.2} ms mean, {:.2} ms max; \
             GPU-thread flushes dma-buf={} ({:.1} us mean) copied={} ({:.1} us mean)",
            get(&self.dmabuf_frames),
            get(&self.shm_frames),
            get(&self.commits_dmabuf),
            get(&self.commits_shm),
            get(&self.bytes_to_picture),
            get(&self.bytes_to_shm),
            mean,
            get(&self.latency_max_us) as f64 / 1e3,
            get(&self.flushes_dmabuf),
            mean_us(&self.flush_ns_dmabuf, &self.flushes_dmabuf),
            get(&self.flushes_copy),
            mean_us(&self.flush_ns_copy, &self.flushes_copy),
        )
    }
}

/// State shared by the GPU thread and the Wayland thread.
#[derive(Debug)]
pub struct Shared {
    scanouts: Mutex<BTreeMap<u32, Scanout>>,
    /// The formats (fourcc, modifier) the compositor imports as dma-bufs.
    pub dmabuf_formats: Mutex<HashSet<(u32, u64)>>,
    /// The compositor named its main device (dma-buf feedback, version 4): it renders on a GPU.
    /// Without one it reads dma-bufs with the CPU, through a mapping.
    pub main_device: AtomicBool,
    /// Set when the compositor is gone (or the Wayland thread ended): nothing more is sent.
    pub gone: AtomicBool,
    /// Set when the display is dropped: the Wayland thread ends.
    pub quit: AtomicBool,
    /// Wakes the Wayland thread (an eventfd).
    wake: OwnedFd,
    /// Figures.
    pub counters: Counters,
}

impl Shared {
    /// Shared state, no scanouts, no dma-buf formats known yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Shared {
            scanouts: Mutex::new(BTreeMap::new()),
            dmabuf_formats: Mutex::new(HashSet::new()),
            main_device: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            wake: rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
            )?,
            counters: Counters::default(),
        })
    }

    /// The scanouts.
    pub fn scanouts(&self) -> MutexGuard<'_, BTreeMap<u32, Scanout>> {
        self.scanouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The modifier to offer for `fourcc`, if the compositor imports it: linear first, else the
    /// implicit one (the guest's buffers are linear).
    pub fn dmabuf_modifier(&self, fourcc: u32) -> Option<u64> {
        let formats = self
            .dmabuf_formats
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        [MOD_LINEAR, MOD_INVALID]
            .into_iter()
            .find(|m| formats.contains(&(fourcc, *m)))
    }

    /// Wakes the Wayland thread.
    pub fn wake(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Consumes the wake-ups (the Wayland thread, when the eventfd is readable).
    pub fn drain_wake(&self) {
        let mut n = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut n);
    }

    /// The eventfd to poll.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}
