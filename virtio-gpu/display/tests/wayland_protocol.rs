//! The Wayland display against a small compositor of our own (wayland-server), which follows the
//! protocols' rules (a configure before the first buffer, `created` or `failed` for each dma-buf
//! import, a buffer released when the next one is committed, frame callbacks done when it says)
//! and lets a test choose what a real compositor decides: refuse a dma-buf, hold frame callbacks
//! back, send seat input. What real compositors do is checked elsewhere (tests `host_weston` and
//! the rig's `wayland` scenario with Weston); this checks the paths they do not take.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_gpu_blob::display::ScanoutFrame;
use virtio_gpu_blob::protocol::Rect;
use virtio_gpu_blob::DisplayBackend;
use virtio_gpu_display::{InputSink, WaylandConfig, WaylandDisplay};
use wayland_protocols::wp::linux_dmabuf::zv1::server::zwp_linux_buffer_params_v1::{
    self, ZwpLinuxBufferParamsV1,
};
use wayland_protocols::wp::linux_dmabuf::zv1::server::zwp_linux_dmabuf_v1::{
    self, ZwpLinuxDmabufV1,
};
use wayland_protocols::xdg::shell::server::xdg_surface::{self, XdgSurface};
use wayland_protocols::xdg::shell::server::xdg_toplevel::{self, XdgToplevel};
use wayland_protocols::xdg::shell::server::xdg_wm_base::{self, XdgWmBase};
use wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use wayland_server::protocol::wl_buffer::{self, WlBuffer};
use wayland_server::protocol::wl_callback::WlCallback;
use wayland_server::protocol::wl_compositor::{self, WlCompositor};
use wayland_server::protocol::wl_keyboard::{self, WlKeyboard};
use wayland_server::protocol::wl_pointer::{self, WlPointer};
use wayland_server::protocol::wl_seat::{self, WlSeat};
use wayland_server::protocol::wl_shm::{self, WlShm};
use wayland_server::protocol::wl_shm_pool::{self, WlShmPool};
use wayland_server::protocol::wl_surface::{self, WlSurface};
use wayland_server::{
    Client, DataInit, Dispatch, Display, DisplayHandle, GlobalDispatch, New, Resource,
};

const XR24: u32 = u32::from_le_bytes(*b"XR24");

/// What the compositor saw of a committed buffer.
#[derive(Debug, Clone, PartialEq)]
enum Shown {
    /// A dma-buf import, by its number (0, 1, ... in creation order).
    DmaBuf(usize),
    /// A wl_shm buffer's pixels at commit time (`width * height * 4` bytes, xrgb8888).
    Shm(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Commit {
    shown: Shown,
    damage: Vec<[i32; 4]>,
}

#[derive(Default)]
struct Knobs {
    refuse_dmabuf: bool,
    hold_frames: bool,
}

#[derive(Default)]
struct Compositor {
    knobs: Knobs,
    commits: Vec<Commit>,
    imports: usize,
    /// (fd, offset, stride, modifier) of each `add`.
    planes: Vec<(OwnedFd, u32, u32, u64)>,
    frames: Vec<WlCallback>,
    toplevel: Option<(XdgSurface, XdgToplevel)>,
    surface: Option<WlSurface>,
    configured: bool,
    shown_buffer: Option<WlBuffer>,
    titles: Vec<String>,
    keyboard: Option<WlKeyboard>,
    pointer: Option<WlPointer>,
    serial: u32,
}

enum BufferKind {
    Shm {
        pool: Arc<OwnedFd>,
        offset: i32,
        width: i32,
        height: i32,
        stride: i32,
    },
    DmaBuf(usize),
}

#[derive(Default)]
struct SurfaceState {
    buffer: Option<Option<WlBuffer>>,
    damage: Vec<[i32; 4]>,
}

struct ParamsState(Mutex<Vec<(OwnedFd, u32, u32, u64)>>);

struct NoData;
impl ClientData for NoData {
    fn disconnected(&self, _: ClientId, _: DisconnectReason) {}
}

type Job = Box<dyn FnOnce(&mut Compositor, &DisplayHandle) + Send>;

/// The compositor on its own thread, listening on a socket in a directory of its own.
struct Server {
    socket: String,
    jobs: mpsc::Sender<Job>,
    dir: std::path::PathBuf,
}

impl Server {
    fn start(name: &str, knobs: Knobs) -> Server {
        let dir = std::env::temp_dir().join(format!("wl-proto-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wayland-test");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let mut display = Display::<Compositor>::new().unwrap();
            let dh = display.handle();
            dh.create_global::<Compositor, WlCompositor, ()>(4, ());
            dh.create_global::<Compositor, WlShm, ()>(1, ());
            dh.create_global::<Compositor, XdgWmBase, ()>(2, ());
            dh.create_global::<Compositor, ZwpLinuxDmabufV1, ()>(3, ());
            dh.create_global::<Compositor, WlSeat, ()>(5, ());
            let mut state = Compositor {
                knobs,
                ..Default::default()
            };
            loop {
                if let Ok((stream, _)) = listener.accept() {
                    display
                        .handle()
                        .insert_client(stream, Arc::new(NoData))
                        .unwrap();
                }
                if display.dispatch_clients(&mut state).is_err() {
                    break;
                }
                loop {
                    match rx.try_recv() {
                        Ok(job) => job(&mut state, &display.handle()),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                let _ = display.flush_clients();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Server {
            socket: path.display().to_string(),
            jobs,
            dir,
        }
    }

    /// Runs `f` on the compositor's thread and returns its result.
    fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Compositor, &DisplayHandle) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Box::new(move |c, dh| {
                let _ = tx.send(f(c, dh));
            }))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("compositor thread")
    }

    /// Waits until `check` holds on the compositor (at most 10 s).
    fn wait_for(&self, what: &str, check: impl Fn(&Compositor) -> bool + Send + Sync + 'static) {
        let check = Arc::new(check);
        let t = Instant::now();
        loop {
            let c = check.clone();
            if self.with(move |s, _| c(s)) {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn commits(&self) -> Vec<Commit> {
        self.with(|s, _| s.commits.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- the compositor's side of the protocols ------------------------------------------------

impl GlobalDispatch<WlCompositor, ()> for Compositor {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        r: New<WlCompositor>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        init.init(r, ());
    }
}

impl Dispatch<WlCompositor, ()> for Compositor {
    fn request(
        state: &mut Self,
        _: &Client,
        _: &WlCompositor,
        request: wl_compositor::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let wl_compositor::Request::CreateSurface { id } = request {
            let s = init.init(id, Mutex::new(SurfaceState::default()));
            state.surface = Some(s);
        }
    }
}

impl Dispatch<WlSurface, Mutex<SurfaceState>> for Compositor {
    fn request(
        state: &mut Self,
        _: &Client,
        _: &WlSurface,
        request: wl_surface::Request,
        data: &Mutex<SurfaceState>,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        let mut pending = data.lock().unwrap();
        match request {
            wl_surface::Request::Attach { buffer, .. } => pending.buffer = Some(buffer),
            wl_surface::Request::DamageBuffer {
                x,
                y,
                width,
                height,
            } => pending.damage.push([x, y, width, height]),
            wl_surface::Request::Frame { callback } => {
                state.frames.push(init.init(callback, ()));
            }
            wl_surface::Request::Commit => {
                let damage = std::mem::take(&mut pending.damage);
                match pending.buffer.take() {
                    None if !state.configured => {
                        // The initial commit of an xdg toplevel: configure it.
                        if let Some((xdg, top)) = &state.toplevel {
                            state.serial += 1;
                            top.configure(0, 0, Vec::new());
                            xdg.configure(state.serial);
                        }
                    }
                    None => {}
                    Some(buffer) => {
                        assert!(state.configured, "a buffer before the configure was acked");
                        let buffer = buffer.expect("this test never unmaps");
                        let shown = match buffer.data::<BufferKind>().unwrap() {
                            BufferKind::DmaBuf(n) => Shown::DmaBuf(*n),
                            BufferKind::Shm {
                                pool,
                                offset,
                                width,
                                height,
                                stride,
                            } => {
                                let file = std::fs::File::from(pool.try_clone().unwrap());
                                let mut px = vec![0u8; (*width * *height * 4) as usize];
                                for y in 0..*height {
                                    let row = &mut px[(y * *width * 4) as usize
                                        ..((y + 1) * *width * 4) as usize];
                                    file.read_exact_at(row, (*offset + y * *stride) as u64)
                                        .unwrap();
                                }
                                Shown::Shm(px)
                            }
                        };
                        if let Some(old) = state.shown_buffer.replace(buffer.clone()) {
                            if old != buffer {
                                old.release();
                            }
                        }
                        state.commits.push(Commit { shown, damage });
                        if !state.knobs.hold_frames {
                            for f in state.frames.drain(..) {
                                f.done(0);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

impl Dispatch<WlCallback, ()> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &WlCallback,
        _: <WlCallback as Resource>::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
    }
}

impl GlobalDispatch<WlShm, ()> for Compositor {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        r: New<WlShm>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let shm = init.init(r, ());
        shm.format(wl_shm::Format::Argb8888);
        shm.format(wl_shm::Format::Xrgb8888);
    }
}

impl Dispatch<WlShm, ()> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &WlShm,
        request: wl_shm::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let wl_shm::Request::CreatePool { id, fd, .. } = request {
            init.init(id, Arc::new(fd));
        }
    }
}

impl Dispatch<WlShmPool, Arc<OwnedFd>> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &WlShmPool,
        request: wl_shm_pool::Request,
        pool: &Arc<OwnedFd>,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let wl_shm_pool::Request::CreateBuffer {
            id,
            offset,
            width,
            height,
            stride,
            format,
        } = request
        {
            assert_eq!(format.into_result().ok(), Some(wl_shm::Format::Xrgb8888));
            init.init(
                id,
                BufferKind::Shm {
                    pool: pool.clone(),
                    offset,
                    width,
                    height,
                    stride,
                },
            );
        }
    }
}

impl Dispatch<WlBuffer, BufferKind> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &WlBuffer,
        _: wl_buffer::Request,
        _: &BufferKind,
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
    }
}

impl GlobalDispatch<XdgWmBase, ()> for Compositor {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        r: New<XdgWmBase>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        init.init(r, ());
    }
}

impl Dispatch<XdgWmBase, ()> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &XdgWmBase,
        request: xdg_wm_base::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let xdg_wm_base::Request::GetXdgSurface { id, .. } = request {
            init.init(id, ());
        }
    }
}

impl Dispatch<XdgSurface, ()> for Compositor {
    fn request(
        state: &mut Self,
        _: &Client,
        xdg: &XdgSurface,
        request: xdg_surface::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        match request {
            xdg_surface::Request::GetToplevel { id } => {
                let top = init.init(id, ());
                state.toplevel = Some((xdg.clone(), top));
            }
            xdg_surface::Request::AckConfigure { serial } => {
                assert_eq!(serial, state.serial);
                state.configured = true;
            }
            _ => {}
        }
    }
}

impl Dispatch<XdgToplevel, ()> for Compositor {
    fn request(
        state: &mut Self,
        _: &Client,
        _: &XdgToplevel,
        request: xdg_toplevel::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
        if let xdg_toplevel::Request::SetTitle { title } = request {
            state.titles.push(title);
        }
    }
}

impl GlobalDispatch<ZwpLinuxDmabufV1, ()> for Compositor {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        r: New<ZwpLinuxDmabufV1>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let d = init.init(r, ());
        d.format(XR24);
        d.modifier(XR24, 0, 0); // LINEAR
    }
}

impl Dispatch<ZwpLinuxDmabufV1, ()> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &ZwpLinuxDmabufV1,
        request: zwp_linux_dmabuf_v1::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let zwp_linux_dmabuf_v1::Request::CreateParams { params_id } = request {
            init.init(params_id, ParamsState(Mutex::new(Vec::new())));
        }
    }
}

impl Dispatch<ZwpLinuxBufferParamsV1, ParamsState> for Compositor {
    fn request(
        state: &mut Self,
        client: &Client,
        params: &ZwpLinuxBufferParamsV1,
        request: zwp_linux_buffer_params_v1::Request,
        data: &ParamsState,
        dh: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
        match request {
            zwp_linux_buffer_params_v1::Request::Add {
                fd,
                plane_idx,
                offset,
                stride,
                modifier_hi,
                modifier_lo,
            } => {
                assert_eq!(plane_idx, 0);
                let m = u64::from(modifier_hi) << 32 | u64::from(modifier_lo);
                data.0.lock().unwrap().push((fd, offset, stride, m));
            }
            zwp_linux_buffer_params_v1::Request::Create { format, .. } => {
                assert_eq!(format, XR24);
                state.planes.extend(data.0.lock().unwrap().drain(..));
                if state.knobs.refuse_dmabuf {
                    params.failed();
                } else {
                    let n = state.imports;
                    state.imports += 1;
                    let buffer = client
                        .create_resource::<WlBuffer, BufferKind, Compositor>(
                            dh,
                            1,
                            BufferKind::DmaBuf(n),
                        )
                        .unwrap();
                    params.created(&buffer);
                }
            }
            _ => {}
        }
    }
}

impl GlobalDispatch<WlSeat, ()> for Compositor {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        r: New<WlSeat>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let seat = init.init(r, ());
        seat.capabilities(wl_seat::Capability::Keyboard | wl_seat::Capability::Pointer);
    }
}

impl Dispatch<WlSeat, ()> for Compositor {
    fn request(
        state: &mut Self,
        _: &Client,
        _: &WlSeat,
        request: wl_seat::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        match request {
            wl_seat::Request::GetKeyboard { id } => state.keyboard = Some(init.init(id, ())),
            wl_seat::Request::GetPointer { id } => state.pointer = Some(init.init(id, ())),
            _ => {}
        }
    }
}

impl Dispatch<WlKeyboard, ()> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &WlKeyboard,
        _: wl_keyboard::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
    }
}

impl Dispatch<WlPointer, ()> for Compositor {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &WlPointer,
        _: wl_pointer::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
    }
}

// ---- the VMM's side --------------------------------------------------------------------------

/// A 64x32 XRGB8888 frame (X = 0, as guests write it) of pattern `v` in a memfd: the pixels and
/// the dma-buf stand-in (any descriptor will do for the protocol; a memfd can be mapped).
fn frame_pixels(v: u8) -> (Vec<u8>, OwnedFd) {
    let mut px = Vec::new();
    for y in 0..32u32 {
        for x in 0..64u32 {
            px.extend_from_slice(&[x as u8, y as u8, v, 0]);
        }
    }
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"wl-proto".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` is new and owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone().unwrap())
        .write_all_at(&px, 0)
        .unwrap();
    (px, fd)
}

fn frame<'a>(px: &'a Vec<u8>, fd: Option<&'a OwnedFd>) -> ScanoutFrame<'a> {
    ScanoutFrame {
        dmabuf: fd.map(|f| f.as_fd()),
        pixels: px,
        fourcc: XR24,
        width: 64,
        height: 32,
        stride: 256,
        offset: 0,
    }
}

fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
    Rect {
        x,
        y,
        width,
        height,
    }
}

#[test]
fn a_refused_dmabuf_is_shown_through_wl_shm() {
    let server = Server::start(
        "refuse",
        Knobs {
            refuse_dmabuf: true,
            ..Default::default()
        },
    );
    let config = WaylandConfig {
        socket: Some(server.socket.clone()),
    };
    let mut display = WaylandDisplay::connect(&config, None, "test").unwrap();
    let (px, fd) = frame_pixels(7);
    display
        .set_scanout(0, Some(&frame(&px, Some(&fd))))
        .unwrap();
    server.wait_for("a commit", |s| !s.commits.is_empty());
    let commits = server.commits();
    // The offer was made (linear, the frame's stride and offset) and refused: wl_shm shows the
    // frame, with the unused byte 0xff.
    let planes = server.with(|s, _| s.planes.iter().map(|p| (p.1, p.2, p.3)).collect::<Vec<_>>());
    assert_eq!(planes, [(0, 256, 0), (0, 256, 0)], "two imports offered");
    let want: Vec<u8> = px
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2], 0xff])
        .collect();
    assert_eq!(commits[0].shown, Shown::Shm(want));
    assert_eq!(commits[0].damage, [[0, 0, 64, 32]]);
    assert_eq!(server.with(|s, _| s.titles.clone()), ["test: scanout 0"]);
    // A flush of a part: the next commit carries that part.
    let (mut px2, _) = frame_pixels(7);
    px2[(5 * 64 + 3) * 4..(5 * 64 + 3) * 4 + 4].copy_from_slice(&[1, 2, 3, 0]);
    display
        .flush(0, &frame(&px2, Some(&fd)), rect(3, 5, 1, 1))
        .unwrap();
    server.wait_for("a second commit", |s| s.commits.len() >= 2);
    let c = &server.commits()[1];
    assert_eq!(c.damage, [[3, 5, 1, 1]]);
    let Shown::Shm(shown) = &c.shown else {
        panic!("{c:?}")
    };
    assert_eq!(
        &shown[(5 * 64 + 3) * 4..(5 * 64 + 3) * 4 + 4],
        [1, 2, 3, 0xff]
    );
    let line = display.summary().line();
    assert!(line.contains("frames dma-buf=0 wl_shm=1;"), "{line}");
}

#[test]
fn an_imported_dmabuf_is_committed_without_copies_paced_by_frames_and_releases() {
    let server = Server::start(
        "import",
        Knobs {
            hold_frames: true,
            ..Default::default()
        },
    );
    let config = WaylandConfig {
        socket: Some(server.socket.clone()),
    };
    let mut display = WaylandDisplay::connect(&config, None, "test").unwrap();
    let (px, fd) = frame_pixels(9);
    display
        .set_scanout(0, Some(&frame(&px, Some(&fd))))
        .unwrap();
    server.wait_for("the first commit", |s| !s.commits.is_empty());
    // Flushes while the frame callback is held back: no commit, the damage merges.
    for x in [0u32, 10, 20] {
        display
            .flush(0, &frame(&px, Some(&fd)), rect(x, 0, 2, 2))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.commits().len(),
        1,
        "a commit without the frame callback"
    );
    server.with(|s, _| {
        for f in s.frames.drain(..) {
            f.done(1);
        }
    });
    server.wait_for("the second commit", |s| s.commits.len() >= 2);
    let commits = server.commits();
    assert_eq!(commits[0].shown, Shown::DmaBuf(0));
    // The other buffer (the first is still shown, not released), the three damages merged.
    assert_eq!(commits[1].shown, Shown::DmaBuf(1));
    let mut damage = commits[1].damage.clone();
    damage.sort();
    assert_eq!(damage, [[0, 0, 2, 2], [10, 0, 2, 2], [20, 0, 2, 2]]);
    // The first buffer was released by that commit; the next commit reuses it.
    display
        .flush(0, &frame(&px, Some(&fd)), rect(1, 1, 1, 1))
        .unwrap();
    server.with(|s, _| {
        for f in s.frames.drain(..) {
            f.done(2);
        }
    });
    server.wait_for("the third commit", |s| s.commits.len() >= 3);
    assert_eq!(server.commits()[2].shown, Shown::DmaBuf(0));
    let line = display.summary().line();
    assert!(
        line.contains("frames dma-buf=1 wl_shm=0;")
            && line.contains("commits dma-buf=3 ")
            && line.contains("to wl_shm=0;"),
        "{line}"
    );
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl InputSink for Recorder {
    fn key(&self, code: u16, pressed: bool) {
        self.0.lock().unwrap().push(format!("key {code} {pressed}"));
    }
    fn pointer(&self, x: u32, y: u32, w: u32, h: u32, buttons: u8, wheel: i32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("ptr {x},{y} {w}x{h} {buttons} {wheel}"));
    }
}

#[test]
fn the_seat_feeds_the_guests_input() {
    let server = Server::start("seat", Knobs::default());
    let config = WaylandConfig {
        socket: Some(server.socket.clone()),
    };
    let sink = Arc::new(Recorder::default());
    let mut display = WaylandDisplay::connect(&config, Some(sink.clone()), "test").unwrap();
    let (px, _) = frame_pixels(1);
    display.set_scanout(0, Some(&frame(&px, None))).unwrap();
    server.wait_for("a commit and the seat's devices", |s| {
        !s.commits.is_empty() && s.keyboard.is_some() && s.pointer.is_some()
    });
    server.with(|s, _| {
        let surface = s.surface.clone().unwrap();
        let kbd = s.keyboard.as_ref().unwrap();
        kbd.enter(1, &surface, Vec::new());
        kbd.key(2, 0, 30, wl_keyboard::KeyState::Pressed);
        kbd.key(3, 0, 30, wl_keyboard::KeyState::Released);
        kbd.key(4, 0, 88, wl_keyboard::KeyState::Pressed);
        kbd.leave(5, &surface);
        let ptr = s.pointer.as_ref().unwrap();
        ptr.enter(6, &surface, 10.5, 20.25);
        ptr.motion(7, 63.9, 40.0);
        ptr.button(8, 9, 0x110, wl_pointer::ButtonState::Pressed);
        ptr.axis(10, wl_pointer::Axis::VerticalScroll, 15.0);
        ptr.leave(11, &surface);
    });
    let t = Instant::now();
    while sink.0.lock().unwrap().len() < 9 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        *sink.0.lock().unwrap(),
        [
            "key 30 true",
            "key 30 false",
            "key 88 true",
            "key 88 false",
            "ptr 10,20 64x32 0 0",
            "ptr 63,31 64x32 0 0",
            "ptr 63,31 64x32 1 0",
            "ptr 63,31 64x32 1 -1",
            "ptr 63,31 64x32 0 0",
        ]
    );
}
