//! One connected client: a reader thread (its messages) and a writer thread (its updates).
//!
//! The GPU's thread only merges damage into [`ClientState`] and wakes the writer; it never
//! waits for a client. A slow client's writer blocks on its own socket while its damage keeps
//! merging (bounded), and other clients are not affected.

use std::io::{Read, Write};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::encode::{raw, Encoding, PixelWriter, Zrle};
use super::keysym::linux_key;
use super::protocol::{
    self, parse_client_message, rect_header, update_header, Area, ClientMessage, PixelFormat,
    ENCODING_DESKTOP_SIZE, MAX_CLIENT_MESSAGE,
};
use super::server::Shared;
use super::stream::Stream;
use crate::picture::Damage;
use crate::GUEST_LOG_INTERVAL;

/// Rows per rectangle sent: whole ZRLE tile rows, so a band's pixels are all a writer holds.
const ZRLE_BAND: usize = super::encode::ZRLE_TILE;

/// What the writer needs to know about a client, shared with the reader and the GPU thread.
#[derive(Debug)]
pub struct ClientState {
    /// Changed areas not sent yet.
    pub damage: Damage,
    /// The client asked for an update that was not sent yet.
    pub requested: bool,
    /// The screen changed to this size since the client was told.
    pub resized: Option<(u16, u16)>,
    /// The screen size the client knows.
    pub size: (u16, u16),
    /// Its pixel format.
    pub pf: PixelFormat,
    /// Its preferred encoding.
    pub encoding: Encoding,
    /// It accepts DesktopSize.
    pub desktop_size: bool,
    /// The connection is over.
    pub closed: bool,
    /// When the oldest damage not sent yet arrived.
    pub pending_since: Option<Instant>,
    /// What was sent.
    pub sent: SentStats,
}

/// Updates sent to a client: how many, their bytes, and the time from the damage they carry
/// (the oldest flush in it) to the last byte handed to the socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SentStats {
    /// Updates with pixels.
    pub updates: u64,
    /// Bytes of those updates.
    pub bytes: u64,
    /// Updates that carried a flush (the others answered a request for the whole screen).
    pub timed: u64,
    /// Sum of the damage-to-sent times.
    pub latency_total: Duration,
    /// The longest damage-to-sent time.
    pub latency_max: Duration,
}

impl std::fmt::Display for SentStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} updates, {} bytes", self.updates, self.bytes)?;
        if self.timed == 0 {
            return Ok(());
        }
        let mean = self.latency_total / u32::try_from(self.timed).unwrap_or(u32::MAX);
        write!(
            f,
            ", flush to sent {:.1} ms mean, {:.1} ms max over {}",
            mean.as_secs_f64() * 1e3,
            self.latency_max.as_secs_f64() * 1e3,
            self.timed
        )
    }
}

/// A connected client.
#[derive(Debug)]
pub struct Client {
    /// Number for log lines.
    pub id: u64,
    state: Mutex<ClientState>,
    wake: Condvar,
    socket: Stream,
}

impl Client {
    /// A client that knows a screen of `size`, talking over `socket`.
    pub fn new(id: u64, size: (u16, u16), socket: Stream) -> Client {
        Client {
            id,
            state: Mutex::new(ClientState {
                damage: Damage::default(),
                requested: false,
                resized: None,
                size,
                pf: PixelFormat::SERVER,
                encoding: Encoding::Raw,
                desktop_size: false,
                closed: false,
                pending_since: None,
                sent: SentStats::default(),
            }),
            wake: Condvar::new(),
            socket,
        }
    }

    /// Locks the state.
    pub fn state(&self) -> MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `area` of the screen changed.
    pub fn damage(&self, area: Area) {
        let mut st = self.state();
        st.damage.add(area);
        st.pending_since.get_or_insert_with(Instant::now);
        drop(st);
        self.wake.notify_one();
    }

    /// The screen is now `size` and all of it changed.
    pub fn resize(&self, size: (u16, u16)) {
        let mut st = self.state();
        st.resized = Some(size);
        st.pending_since.get_or_insert_with(Instant::now);
        st.damage.add(Area {
            x: 0,
            y: 0,
            w: size.0,
            h: size.1,
        });
        drop(st);
        self.wake.notify_one();
    }

    /// Ends the connection (both threads stop).
    pub fn close(&self) {
        self.state().closed = true;
        self.wake.notify_one();
        self.socket.shutdown();
    }
}

/// Why a client's session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    /// The socket failed or was closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A message the protocol does not allow.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    /// A pixel format the server cannot send.
    #[error("pixel format refused: {0}")]
    PixelFormat(&'static str),
    /// The server is stopping.
    #[error("the server stopped")]
    Stopped,
}

/// The reader: parses the client's messages until it leaves or sends something invalid.
pub fn read_messages(
    shared: &Shared,
    client: &Client,
    mut socket: Stream,
) -> Result<(), SessionEnd> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut buttons = 0u8;
    loop {
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Some((msg, len)) = parse_client_message(&buf[used..])? {
            used += len;
            handle(shared, client, msg, &mut buttons)?;
        }
        buf.drain(..used);
        // The parser bounds every message it waits for.
        debug_assert!(buf.len() <= MAX_CLIENT_MESSAGE);
    }
}

fn handle(
    shared: &Shared,
    client: &Client,
    msg: ClientMessage,
    buttons: &mut u8,
) -> Result<(), SessionEnd> {
    match msg {
        ClientMessage::SetPixelFormat(pf) => {
            if let Some(why) = pf.unsupported() {
                return Err(SessionEnd::PixelFormat(why));
            }
            client.state().pf = pf;
        }
        ClientMessage::SetEncodings(list) => {
            let mut st = client.state();
            st.encoding = Encoding::choose(&list);
            st.desktop_size = list.contains(&ENCODING_DESKTOP_SIZE);
        }
        ClientMessage::FramebufferUpdateRequest { incremental, area } => {
            let mut st = client.state();
            if !incremental {
                st.damage.add(area);
            }
            st.requested = true;
            drop(st);
            client.wake.notify_one();
        }
        ClientMessage::KeyEvent { down, keysym } => {
            if let Some(input) = &shared.input {
                match linux_key(keysym) {
                    Some(code) => input.key(code, down),
                    None => log_limit::debug_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "vnc: client {}: keysym {keysym:#x} has no key, ignored",
                        client.id
                    ),
                }
            }
        }
        ClientMessage::PointerEvent { buttons: b, x, y } => {
            // Wheel notches are presses of buttons 4 (up) and 5 (down).
            let pressed = b & !*buttons;
            let wheel = i32::from(pressed & 0x08 != 0) - i32::from(pressed & 0x10 != 0);
            *buttons = b;
            if let Some(input) = &shared.input {
                let (w, h) = client.state().size;
                input.pointer(
                    u32::from(x),
                    u32::from(y),
                    u32::from(w),
                    u32::from(h),
                    b & 0x07,
                    wheel,
                );
            }
        }
        ClientMessage::ClientCutText { .. } => {}
    }
    Ok(())
}

/// What one update sends.
enum Job {
    Resize((u16, u16)),
    Rects {
        rects: Vec<Area>,
        pf: PixelFormat,
        encoding: Encoding,
        since: Option<Instant>,
    },
}

/// The writer: sends an update for each request once there is something to send.
pub fn write_updates(
    shared: &Shared,
    client: &Client,
    mut socket: Stream,
) -> Result<(), SessionEnd> {
    let mut zrle = Zrle::default();
    let mut band = Vec::new();
    let mut out = Vec::new();
    loop {
        let job = {
            let mut st = client.state();
            loop {
                if st.closed {
                    return Err(SessionEnd::Stopped);
                }
                if st.requested {
                    if let Some(size) = st.resized.take() {
                        if st.desktop_size {
                            st.size = size;
                            st.requested = false;
                            break Job::Resize(size);
                        }
                        log_limit::info_limit_global!(
                            1,
                            GUEST_LOG_INTERVAL,
                            "vnc: client {} cannot change size (no DesktopSize): it sees the \
                             top-left {}x{} of the {}x{} screen",
                            client.id,
                            st.size.0,
                            st.size.1,
                            size.0,
                            size.1
                        );
                    }
                    let (w, h) = st.size;
                    let rects = st.damage.take(w, h);
                    if !rects.is_empty() {
                        st.requested = false;
                        break Job::Rects {
                            rects,
                            pf: st.pf,
                            encoding: st.encoding,
                            since: st.pending_since.take(),
                        };
                    }
                }
                st = client.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        out.clear();
        match job {
            Job::Resize((w, h)) => {
                update_header(&mut out, 1);
                rect_header(&mut out, Area { x: 0, y: 0, w, h }, ENCODING_DESKTOP_SIZE);
                socket.write_all(&out)?;
            }
            Job::Rects {
                rects,
                pf,
                encoding,
                since,
            } => {
                let mut bytes = 0u64;
                let writer = PixelWriter::new(pf);
                let bands: usize = rects
                    .iter()
                    .map(|r| usize::from(r.h).div_ceil(ZRLE_BAND))
                    .sum();
                // At most MAX_DAMAGE_RECTS rectangles of at most MAX_EDGE rows.
                update_header(&mut out, bands as u16);
                for r in rects {
                    for y in (0..r.h).step_by(ZRLE_BAND) {
                        let area = Area {
                            x: r.x,
                            y: r.y + y,
                            w: r.w,
                            h: (ZRLE_BAND as u16).min(r.h - y),
                        };
                        shared.screen().copy_area(area, &mut band);
                        rect_header(&mut out, area, encoding.number());
                        match encoding {
                            Encoding::Raw => raw(&writer, &band, &mut out),
                            Encoding::Zrle => zrle
                                .encode(&writer, &band, usize::from(area.w), &mut out)
                                .map_err(|e| std::io::Error::other(e.to_string()))?,
                        }
                        socket.write_all(&out)?;
                        bytes += out.len() as u64;
                        out.clear();
                    }
                }
                let mut st = client.state();
                st.sent.updates += 1;
                st.sent.bytes += bytes;
                if let Some(t) = since {
                    let latency = t.elapsed();
                    st.sent.timed += 1;
                    st.sent.latency_total += latency;
                    st.sent.latency_max = st.sent.latency_max.max(latency);
                }
            }
        }
        shared.count_update();
    }
}
