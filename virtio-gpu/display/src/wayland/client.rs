//! The Wayland thread: the connection to the compositor, a toplevel per scanout, dma-buf and
//! `wl_shm` buffers, frame callbacks and releases, and the seat's keyboard and pointer.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wayland_client::backend::WaylandError;
use wayland_client::protocol::wl_buffer::{self, WlBuffer};
use wayland_client::protocol::wl_callback::{self, WlCallback};
use wayland_client::protocol::wl_compositor::WlCompositor;
use wayland_client::protocol::wl_keyboard::{self, WlKeyboard};
use wayland_client::protocol::wl_pointer::{self, WlPointer};
use wayland_client::protocol::wl_registry::{self, WlRegistry};
use wayland_client::protocol::wl_seat::{self, WlSeat};
use wayland_client::protocol::wl_shm::{self, WlShm};
use wayland_client::protocol::wl_shm_pool::WlShmPool;
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_client::{
    event_created_child, Connection, Dispatch, EventQueue, Proxy, QueueHandle, WEnum,
};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_buffer_params_v1::{
    self, ZwpLinuxBufferParamsV1,
};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_feedback_v1::{
    self, ZwpLinuxDmabufFeedbackV1,
};
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::{
    self, ZwpLinuxDmabufV1,
};
use wayland_protocols::xdg::shell::client::xdg_surface::{self, XdgSurface};
use wayland_protocols::xdg::shell::client::xdg_toplevel::{self, XdgToplevel};
use wayland_protocols::xdg::shell::client::xdg_wm_base::{self, XdgWmBase};

use super::seat::SeatInput;
use super::shared::{Path, Shared};
use super::shm::ShmMemory;
use crate::input::InputSink;
use crate::picture::{union, Area};

/// Buffers per scanout: one the compositor shows, one to fill meanwhile.
const BUFFERS: usize = 2;

/// How long the thread waits in poll before it looks at the quit flag again.
const POLL: Duration = Duration::from_secs(1);

/// The compositor's globals this display uses.
struct Globals {
    compositor: Option<WlCompositor>,
    shm: Option<WlShm>,
    wm_base: Option<XdgWmBase>,
    dmabuf: Option<ZwpLinuxDmabufV1>,
    seat: Option<WlSeat>,
}

/// Which buffer a `wl_buffer` is (set when it is created, or when the compositor creates it).
#[derive(Debug, Default)]
pub struct BufferData(OnceLock<BufferSlot>);

#[derive(Debug, Clone, Copy)]
struct BufferSlot {
    scanout: u32,
    generation: u64,
    index: usize,
    dmabuf: bool,
}

/// Which dma-buf import a `zwp_linux_buffer_params_v1` is.
#[derive(Debug, Clone, Copy)]
pub struct ParamsData {
    scanout: u32,
    generation: u64,
}

struct Slot {
    buffer: WlBuffer,
    busy: bool,
}

struct ShmSlot {
    buffer: WlBuffer,
    busy: bool,
    memory: ShmMemory,
    /// What changed since this buffer was last filled.
    stale: Option<Area>,
}

/// A scanout's toplevel.
struct Window {
    surface: WlSurface,
    xdg: XdgSurface,
    toplevel: XdgToplevel,
    configured: bool,
    /// A frame callback is outstanding: the next commit waits for it.
    frame_pending: bool,
    /// The scanout generation the buffers belong to.
    generation: u64,
    /// Buffer size.
    size: (u32, u32),
    dmabufs: Vec<Slot>,
    shms: Vec<ShmSlot>,
    /// The path and size last logged.
    logged: Option<(Path, u32, u32)>,
    closed: bool,
}

/// The Wayland thread's state (the event queue's dispatch data).
pub struct State {
    shared: Arc<Shared>,
    globals: Globals,
    windows: BTreeMap<u32, Window>,
    /// The seat's keyboard and pointer for the guest (`None`: input is ignored).
    seat: Option<SeatInput>,
    /// The scanout whose window the pointer is in.
    pointer_window: Option<u32>,
    keyboard: Option<WlKeyboard>,
    pointer: Option<WlPointer>,
    name: String,
    socket: PathBuf,
    /// The last format table of the dma-buf feedback.
    format_table: Vec<(u32, u64)>,
}

/// A live connection, its queue and state, before the thread runs it.
pub struct Client {
    conn: Connection,
    queue: EventQueue<State>,
    state: State,
}

impl Client {
    /// Connects to the compositor at `socket` and learns its globals and dma-buf formats;
    /// fails, naming the socket, when it cannot connect or a needed global is missing.
    pub fn connect(
        socket: PathBuf,
        shared: Arc<Shared>,
        input: Option<Arc<dyn InputSink>>,
        name: &str,
    ) -> Result<Self, String> {
        let at = socket.display().to_string();
        let stream = std::os::unix::net::UnixStream::connect(&socket)
            .map_err(|e| format!("cannot connect to the compositor at {at}: {e}"))?;
        let conn =
            Connection::from_socket(stream).map_err(|e| format!("compositor at {at}: {e}"))?;
        let mut queue = conn.new_event_queue();
        let qh = queue.handle();
        conn.display().get_registry(&qh, ());
        let mut state = State {
            shared,
            globals: Globals {
                compositor: None,
                shm: None,
                wm_base: None,
                dmabuf: None,
                seat: None,
            },
            windows: BTreeMap::new(),
            seat: input.map(SeatInput::new),
            pointer_window: None,
            keyboard: None,
            pointer: None,
            name: name.to_string(),
            socket,
            format_table: Vec::new(),
        };
        // Globals, then what they announce on binding (formats, feedback, seat capabilities).
        for _ in 0..3 {
            queue
                .roundtrip(&mut state)
                .map_err(|e| format!("compositor at {at}: {e}"))?;
        }
        let g = &state.globals;
        for (missing, what) in [
            (g.compositor.is_none(), "wl_compositor (version 4 or later)"),
            (g.shm.is_none(), "wl_shm"),
            (g.wm_base.is_none(), "xdg_wm_base"),
        ] {
            if missing {
                return Err(format!("the compositor at {at} offers no {what}"));
            }
        }
        Ok(Client { conn, queue, state })
    }

    /// The version of `zwp_linux_dmabuf_v1` bound, if the compositor offers it.
    pub fn dmabuf_version(&self) -> Option<u32> {
        self.state.globals.dmabuf.as_ref().map(|d| d.version())
    }

    /// Runs until the display is dropped or the compositor goes away.
    pub fn run(mut self) {
        let shared = self.state.shared.clone();
        let qh = self.queue.handle();
        let why = loop {
            if shared.quit.load(std::sync::atomic::Ordering::Relaxed) {
                break None;
            }
            if let Err(e) = self.queue.dispatch_pending(&mut self.state) {
                break Some(e.to_string());
            }
            self.state.update(&qh);
            match self.conn.flush() {
                Ok(()) => {}
                Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => break Some(e.to_string()),
            }
            let Some(guard) = self.queue.prepare_read() else {
                continue;
            };
            let (conn_ready, wake_ready) = {
                use rustix::event::{PollFd, PollFlags, Timespec};
                let mut fds = [
                    PollFd::from_borrowed_fd(guard.connection_fd(), PollFlags::IN),
                    PollFd::from_borrowed_fd(shared.wake_fd(), PollFlags::IN),
                ];
                let timeout = Timespec {
                    tv_sec: POLL.as_secs() as i64,
                    tv_nsec: 0,
                };
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => break Some(format!("poll: {e}")),
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if conn_ready {
                match guard.read() {
                    Ok(_) => {}
                    Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => break Some(e.to_string()),
                }
            } else {
                drop(guard);
            }
            if wake_ready {
                shared.drain_wake();
            }
        };
        shared
            .gone
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(why) = why {
            log::warn!(
                "wayland: the compositor at {} went away ({why}): its windows are gone, the VM goes on",
                self.state.socket.display()
            );
        }
    }
}

impl State {
    /// Brings every window up to date with its scanout and commits what is due.
    fn update(&mut self, qh: &QueueHandle<State>) {
        let ids: Vec<u32> = self.shared.scanouts().keys().copied().collect();
        for id in ids {
            self.sync(id, qh);
            self.present(id, qh);
        }
    }

    /// Rebuilds the window's buffers when the scanout's frame changed.
    fn sync(&mut self, id: u32, qh: &QueueHandle<State>) {
        let shared = self.shared.clone();
        let scanouts = shared.scanouts();
        let Some(sc) = scanouts.get(&id) else {
            return;
        };
        let known = self.windows.get(&id).map(|w| w.generation);
        if known == Some(sc.generation) {
            return;
        }
        if known.is_none() && sc.frame.is_none() {
            return;
        }
        let (Some(compositor), Some(wm_base)) = (&self.globals.compositor, &self.globals.wm_base)
        else {
            return;
        };
        let window = self.windows.entry(id).or_insert_with(|| {
            let surface = compositor.create_surface(qh, id);
            let xdg = wm_base.get_xdg_surface(&surface, qh, id);
            let toplevel = xdg.get_toplevel(qh, id);
            toplevel.set_title(format!("{}: scanout {id}", self.name));
            toplevel.set_app_id("vmm".to_string());
            surface.commit();
            Window {
                surface,
                xdg,
                toplevel,
                configured: false,
                frame_pending: false,
                generation: 0,
                size: (0, 0),
                dmabufs: Vec::new(),
                shms: Vec::new(),
                logged: None,
                closed: false,
            }
        });
        if !window.configured && sc.frame.is_some() {
            // Buffers once the compositor has configured the window.
            return;
        }
        window.generation = sc.generation;
        for s in window.dmabufs.drain(..) {
            s.buffer.destroy();
        }
        for s in window.shms.drain(..) {
            s.buffer.destroy();
        }
        let Some(frame) = &sc.frame else {
            // The scanout shows nothing (a guest's mode set passes through this): the window
            // keeps its last picture until the next frame.
            return;
        };
        window.size = (frame.width, frame.height);
        match (sc.path, &frame.dmabuf, &self.globals.dmabuf) {
            (Path::Offered, Some(fd), Some(dmabuf)) => {
                for _ in 0..BUFFERS {
                    let params = dmabuf.create_params(
                        qh,
                        ParamsData {
                            scanout: id,
                            generation: sc.generation,
                        },
                    );
                    params.add(
                        fd.as_fd(),
                        0,
                        frame.offset,
                        frame.stride,
                        (frame.modifier >> 32) as u32,
                        frame.modifier as u32,
                    );
                    params.create(
                        frame.width as i32,
                        frame.height as i32,
                        frame.fourcc,
                        zwp_linux_buffer_params_v1::Flags::empty(),
                    );
                }
            }
            _ => {
                let size = sc.picture.size();
                drop(scanouts);
                self.make_shm(id, size, qh);
            }
        }
    }

    /// Creates the window's `wl_shm` buffers (`size`: the picture's) and counts the frame.
    fn make_shm(&mut self, id: u32, size: (u16, u16), qh: &QueueHandle<State>) {
        let Some(shm) = &self.globals.shm else {
            return;
        };
        let Some(window) = self.windows.get_mut(&id) else {
            return;
        };
        window.size = (u32::from(size.0), u32::from(size.1));
        for index in 0..BUFFERS {
            let memory = match ShmMemory::new(size.0, size.1) {
                Ok(m) => m,
                Err(e) => {
                    log::warn!("wayland: scanout {id}: no memory for a wl_shm buffer: {e}");
                    return;
                }
            };
            let pool = shm.create_pool(memory.fd(), memory.len() as i32, qh, ());
            let data = BufferData::default();
            let _ = data.0.set(BufferSlot {
                scanout: id,
                generation: window.generation,
                index,
                dmabuf: false,
            });
            let buffer = pool.create_buffer(
                0,
                i32::from(size.0),
                i32::from(size.1),
                memory.stride() as i32,
                wl_shm::Format::Xrgb8888,
                qh,
                data,
            );
            pool.destroy();
            window.shms.push(ShmSlot {
                buffer,
                busy: false,
                memory,
                stale: Some(Area {
                    x: 0,
                    y: 0,
                    w: size.0,
                    h: size.1,
                }),
            });
        }
        self.shared
            .counters
            .shm_frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.log_path(id, Path::Shm);
    }

    /// Logs the path of a scanout's frame when it or the frame's size differs from what was
    /// logged last (a guest changing modes in a loop is held to a few lines per interval).
    fn log_path(&mut self, id: u32, path: Path) {
        let shared = self.shared.clone();
        let scanouts = shared.scanouts();
        let Some(sc) = scanouts.get(&id) else {
            return;
        };
        let Some(window) = self.windows.get_mut(&id) else {
            return;
        };
        let (w, h) = window.size;
        if window.logged == Some((path, w, h)) {
            return;
        }
        window.logged = Some((path, w, h));
        let fourcc = sc.frame.as_ref().map_or(0, |f| f.fourcc);
        let fourcc = String::from_utf8_lossy(&fourcc.to_le_bytes()).into_owned();
        match path {
            Path::DmaBuf => log_limit::info_limit_global!(
                4,
                crate::GUEST_LOG_INTERVAL,
                "wayland: scanout {id} ({w}x{h} {fourcc}): dma-buf, imported by the compositor (no copy)"
            ),
            _ => log_limit::info_limit_global!(
                4,
                crate::GUEST_LOG_INTERVAL,
                "wayland: scanout {id} ({w}x{h} {fourcc}): wl_shm (a copy per frame): {}",
                sc.shm_reason
            ),
        }
    }

    /// Commits the scanout's damage if the window can take a frame now.
    fn present(&mut self, id: u32, qh: &QueueHandle<State>) {
        let shared = self.shared.clone();
        let mut scanouts = shared.scanouts();
        let Some(sc) = scanouts.get_mut(&id) else {
            return;
        };
        let Some(window) = self.windows.get_mut(&id) else {
            return;
        };
        if !window.configured
            || window.frame_pending
            || window.closed
            || window.generation != sc.generation
            || sc.frame.is_none()
            || sc.damage.is_empty()
        {
            return;
        }
        let (w, h) = window.size;
        let (cw, ch) = (
            w.min(u32::from(u16::MAX)) as u16,
            h.min(u32::from(u16::MAX)) as u16,
        );
        let dmabuf = match sc.path {
            Path::Offered => return,
            Path::DmaBuf => true,
            Path::Shm => false,
        };
        let free = if dmabuf {
            window.dmabufs.iter().position(|s| !s.busy)
        } else {
            window.shms.iter().position(|s| !s.busy)
        };
        let Some(i) = free else {
            return;
        };
        let areas = sc.damage.take(cw, ch);
        let buffer = if dmabuf {
            let slot = &mut window.dmabufs[i];
            slot.busy = true;
            slot.buffer.clone()
        } else {
            // This buffer gets what changed since it was last filled; the others owe this too.
            let changed = areas.iter().copied().reduce(union);
            let slot = &mut window.shms[i];
            if let Some(area) = union_of(slot.stale, changed) {
                match slot.memory.fill(&sc.picture, area) {
                    Ok(n) => {
                        shared
                            .counters
                            .bytes_to_shm
                            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        log::warn!("wayland: scanout {id}: filling a wl_shm buffer: {e}");
                        // Nothing is lost: the damage waits for the next try.
                        for a in areas {
                            sc.add_damage(a);
                        }
                        return;
                    }
                }
            }
            slot.stale = None;
            slot.busy = true;
            let buffer = slot.buffer.clone();
            for (j, s) in window.shms.iter_mut().enumerate() {
                if j != i {
                    s.stale = union_of(s.stale, changed);
                }
            }
            buffer
        };
        let since = sc.damage_since.take();
        drop(scanouts);
        window.surface.attach(Some(&buffer), 0, 0);
        for a in areas {
            window.surface.damage_buffer(
                i32::from(a.x),
                i32::from(a.y),
                i32::from(a.w),
                i32::from(a.h),
            );
        }
        window.surface.frame(qh, id);
        window.frame_pending = true;
        window.surface.commit();
        shared.counters.commit(dmabuf, since);
    }

    /// The compositor answered a dma-buf import of `data`'s frame with `buffer` (`None`: it
    /// refused).
    fn imported(&mut self, data: ParamsData, buffer: Option<WlBuffer>, qh: &QueueHandle<State>) {
        let id = data.scanout;
        let current = self
            .windows
            .get(&id)
            .is_some_and(|w| w.generation == data.generation);
        let Some(buffer) = buffer else {
            if !current {
                return;
            }
            let size = {
                let mut scanouts = self.shared.scanouts();
                let Some(sc) = scanouts.get_mut(&id) else {
                    return;
                };
                if sc.generation != data.generation || sc.path != Path::Offered {
                    return;
                }
                sc.path = Path::Shm;
                sc.shm_reason =
                    "the compositor refused the dma-buf (zwp_linux_buffer_params_v1.failed)";
                sc.picture.size()
            };
            if let Some(w) = self.windows.get_mut(&id) {
                for s in w.dmabufs.drain(..) {
                    s.buffer.destroy();
                }
            }
            self.make_shm(id, size, qh);
            self.present(id, qh);
            return;
        };
        let Some(window) = self.windows.get_mut(&id).filter(|_| current) else {
            buffer.destroy();
            return;
        };
        if let Some(d) = buffer.data::<BufferData>() {
            let _ = d.0.set(BufferSlot {
                scanout: id,
                generation: data.generation,
                index: window.dmabufs.len(),
                dmabuf: true,
            });
        }
        window.dmabufs.push(Slot {
            buffer,
            busy: false,
        });
        if window.dmabufs.len() < BUFFERS {
            return;
        }
        {
            let mut scanouts = self.shared.scanouts();
            let Some(sc) = scanouts.get_mut(&id) else {
                return;
            };
            if sc.generation != data.generation || sc.path != Path::Offered {
                return;
            }
            sc.path = Path::DmaBuf;
        }
        self.shared
            .counters
            .dmabuf_frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.log_path(id, Path::DmaBuf);
        self.present(id, qh);
    }
}

/// The smallest area holding both, when there are any.
fn union_of(a: Option<Area>, b: Option<Area>) -> Option<Area> {
    match (a, b) {
        (Some(a), Some(b)) => Some(union(a, b)),
        (a, b) => a.or(b),
    }
}

impl Dispatch<WlRegistry, ()> for State {
    fn event(
        state: &mut Self,
        registry: &WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        else {
            return;
        };
        let g = &mut state.globals;
        match interface.as_str() {
            "wl_compositor" if version >= 4 => {
                g.compositor = Some(registry.bind(name, version.min(4), qh, ()));
            }
            "wl_shm" => g.shm = Some(registry.bind(name, 1, qh, ())),
            "xdg_wm_base" => g.wm_base = Some(registry.bind(name, version.min(2), qh, ())),
            // Version 3: formats and modifiers as events; 4: the default feedback (a format
            // table and the compositor's main device, if it renders on one).
            "zwp_linux_dmabuf_v1" if version >= 3 => {
                let dmabuf: ZwpLinuxDmabufV1 = registry.bind(name, version.min(4), qh, ());
                if dmabuf.version() >= 4 {
                    dmabuf.get_default_feedback(qh, ());
                }
                g.dmabuf = Some(dmabuf);
            }
            "wl_seat" if g.seat.is_none() => {
                g.seat = Some(registry.bind(name, version.min(5), qh, ()));
            }
            _ => {}
        }
    }
}

impl Dispatch<ZwpLinuxDmabufV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &ZwpLinuxDmabufV1,
        event: zwp_linux_dmabuf_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let zwp_linux_dmabuf_v1::Event::Modifier {
            format,
            modifier_hi,
            modifier_lo,
        } = event
        {
            let modifier = u64::from(modifier_hi) << 32 | u64::from(modifier_lo);
            state
                .shared
                .dmabuf_formats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((format, modifier));
        }
    }
}

impl Dispatch<ZwpLinuxDmabufFeedbackV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &ZwpLinuxDmabufFeedbackV1,
        event: zwp_linux_dmabuf_feedback_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            zwp_linux_dmabuf_feedback_v1::Event::FormatTable { fd, size } => {
                state.format_table = read_format_table(&std::fs::File::from(fd), size);
            }
            zwp_linux_dmabuf_feedback_v1::Event::MainDevice { device } => {
                state
                    .shared
                    .main_device
                    .store(!device.is_empty(), std::sync::atomic::Ordering::Relaxed);
            }
            zwp_linux_dmabuf_feedback_v1::Event::TrancheFormats { indices } => {
                let mut formats = state
                    .shared
                    .dmabuf_formats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for i in indices.chunks_exact(2) {
                    let i = usize::from(u16::from_ne_bytes([i[0], i[1]]));
                    if let Some(f) = state.format_table.get(i) {
                        formats.insert(*f);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Most entries of a format table read (each is 16 bytes: format, padding, modifier).
const MAX_FORMAT_TABLE: u32 = 1 << 16;

/// Reads a linux-dmabuf format table (`size` bytes, at most [`MAX_FORMAT_TABLE`] entries) with
/// `pread`: (fourcc, modifier) pairs, empty if it cannot be read.
fn read_format_table(file: &std::fs::File, size: u32) -> Vec<(u32, u64)> {
    use std::os::unix::fs::FileExt;
    let entries = (size / 16).min(MAX_FORMAT_TABLE) as usize;
    let mut bytes = vec![0u8; entries * 16];
    if file.read_exact_at(&mut bytes, 0).is_err() {
        log::warn!("wayland: cannot read the compositor's dma-buf format table");
        return Vec::new();
    }
    bytes
        .chunks_exact(16)
        .map(|e| {
            let format = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            let mut m = [0u8; 8];
            m.copy_from_slice(&e[8..16]);
            (format, u64::from_ne_bytes(m))
        })
        .collect()
}

impl Dispatch<ZwpLinuxBufferParamsV1, ParamsData> for State {
    fn event(
        state: &mut Self,
        params: &ZwpLinuxBufferParamsV1,
        event: zwp_linux_buffer_params_v1::Event,
        data: &ParamsData,
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        match event {
            zwp_linux_buffer_params_v1::Event::Created { buffer } => {
                params.destroy();
                state.imported(*data, Some(buffer), qh);
            }
            zwp_linux_buffer_params_v1::Event::Failed => {
                params.destroy();
                state.imported(*data, None, qh);
            }
            _ => {}
        }
    }

    event_created_child!(State, ZwpLinuxBufferParamsV1, [
        zwp_linux_buffer_params_v1::EVT_CREATED_OPCODE => (WlBuffer, BufferData::default()),
    ]);
}

impl Dispatch<WlBuffer, BufferData> for State {
    fn event(
        state: &mut Self,
        _: &WlBuffer,
        event: wl_buffer::Event,
        data: &BufferData,
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        let wl_buffer::Event::Release = event else {
            return;
        };
        let Some(slot) = data.0.get() else {
            return;
        };
        let Some(w) = state.windows.get_mut(&slot.scanout) else {
            return;
        };
        if w.generation != slot.generation {
            return;
        }
        let busy = if slot.dmabuf {
            w.dmabufs.get_mut(slot.index).map(|s| &mut s.busy)
        } else {
            w.shms.get_mut(slot.index).map(|s| &mut s.busy)
        };
        if let Some(b) = busy {
            *b = false;
        }
        state.present(slot.scanout, qh);
    }
}

impl Dispatch<WlCallback, u32> for State {
    fn event(
        state: &mut Self,
        _: &WlCallback,
        event: wl_callback::Event,
        id: &u32,
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            if let Some(w) = state.windows.get_mut(id) {
                w.frame_pending = false;
            }
            state.present(*id, qh);
        }
    }
}

impl Dispatch<XdgWmBase, ()> for State {
    fn event(
        _: &mut Self,
        wm_base: &XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm_base.pong(serial);
        }
    }
}

impl Dispatch<XdgSurface, u32> for State {
    fn event(
        state: &mut Self,
        xdg: &XdgSurface,
        event: xdg_surface::Event,
        id: &u32,
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = event {
            xdg.ack_configure(serial);
            if let Some(w) = state.windows.get_mut(id) {
                w.configured = true;
            }
            state.sync(*id, qh);
            // The first buffer after a configure shows everything.
            if let Some(sc) = state.shared.scanouts().get_mut(id) {
                let (w, h) = sc.picture.size();
                sc.add_damage(Area { x: 0, y: 0, w, h });
            }
            state.present(*id, qh);
        }
    }
}

impl Dispatch<XdgToplevel, u32> for State {
    fn event(
        state: &mut Self,
        _: &XdgToplevel,
        event: xdg_toplevel::Event,
        id: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_toplevel::Event::Close = event {
            if let Some(w) = state.windows.get_mut(id) {
                if !w.closed {
                    log::info!("wayland: the window of scanout {id} was closed: it shows nothing more, the VM goes on");
                }
                w.closed = true;
                w.toplevel.destroy();
                w.xdg.destroy();
                w.surface.attach(None, 0, 0);
                w.surface.commit();
            }
        }
    }
}

impl Dispatch<WlSeat, ()> for State {
    fn event(
        state: &mut Self,
        seat: &WlSeat,
        event: wl_seat::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        let wl_seat::Event::Capabilities {
            capabilities: WEnum::Value(caps),
        } = event
        else {
            return;
        };
        if state.seat.is_none() {
            return;
        }
        if caps.contains(wl_seat::Capability::Keyboard) && state.keyboard.is_none() {
            state.keyboard = Some(seat.get_keyboard(qh, ()));
        }
        if caps.contains(wl_seat::Capability::Pointer) && state.pointer.is_none() {
            state.pointer = Some(seat.get_pointer(qh, ()));
        }
    }
}

impl Dispatch<WlKeyboard, ()> for State {
    fn event(
        state: &mut Self,
        _: &WlKeyboard,
        event: wl_keyboard::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(seat) = state.seat.as_mut() else {
            return;
        };
        match event {
            wl_keyboard::Event::Key {
                key,
                state: WEnum::Value(k),
                ..
            } => seat.key(key, k == wl_keyboard::KeyState::Pressed),
            wl_keyboard::Event::Leave { .. } => seat.keyboard_leave(),
            // The keymap's descriptor is closed when the event is dropped.
            _ => {}
        }
    }
}

impl Dispatch<WlPointer, ()> for State {
    fn event(
        state: &mut Self,
        _: &WlPointer,
        event: wl_pointer::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(seat) = state.seat.as_mut() else {
            return;
        };
        match event {
            wl_pointer::Event::Enter {
                surface,
                surface_x,
                surface_y,
                ..
            } => {
                let id = surface.data::<u32>().copied();
                state.pointer_window = id;
                if let Some((w, h)) = id.and_then(|id| state.windows.get(&id)).map(|w| w.size) {
                    seat.enter(w, h, surface_x, surface_y);
                }
            }
            wl_pointer::Event::Leave { .. } => {
                state.pointer_window = None;
                seat.pointer_leave();
            }
            wl_pointer::Event::Motion {
                surface_x,
                surface_y,
                ..
            } => {
                let size = state
                    .pointer_window
                    .and_then(|id| state.windows.get(&id))
                    .map(|w| w.size);
                if let Some((w, h)) = size {
                    seat.motion(w, h, surface_x, surface_y);
                }
            }
            wl_pointer::Event::Button {
                button,
                state: WEnum::Value(b),
                ..
            } => seat.button(button, b == wl_pointer::ButtonState::Pressed),
            wl_pointer::Event::Axis {
                axis: WEnum::Value(wl_pointer::Axis::VerticalScroll),
                value,
                ..
            } => seat.scroll(value),
            _ => {}
        }
    }
}

/// Requests without events this display cares about.
macro_rules! no_events {
    ($($iface:ty => $data:ty),* $(,)?) => {$(
        impl Dispatch<$iface, $data> for State {
            fn event(
                _: &mut Self,
                _: &$iface,
                _: <$iface as Proxy>::Event,
                _: &$data,
                _: &Connection,
                _: &QueueHandle<Self>,
            ) {
            }
        }
    )*};
}

no_events!(
    WlCompositor => (),
    WlShm => (),
    WlShmPool => (),
    WlSurface => u32,
);
