//! vnc-stress: an RFB (VNC) client load generator (L1 program of the rig, run against a VNC server
//! in L1 that offers RFB 3.8 with security type None).
//!
//! `vnc-stress --connect <HOST:PORT | unix:PATH> --idle <N> --stuck <M> --hold-secs <S>`:
//! 1. makes N + M connections, every connect() before any handshake, so that the server sees them
//!    arrive together;
//! 2. does the RFB 3.8 handshake on all of them at once (a thread each; 30 s socket timeouts):
//!    the server's 12-byte version (3.8 or a later 3.x), `RFB 003.008\n`, the security types
//!    (None must be among them), None, SecurityResult 0, ClientInit shared=1, ServerInit;
//! 3. holds for S seconds: the first N connections (idle clients) neither send nor read; the other
//!    M (stuck clients) send SetEncodings (Raw only) and then, every 100 ms, a non-incremental
//!    FramebufferUpdateRequest of the whole ServerInit size, and never read anything, so that what
//!    the server sends them piles up. Their writes time out after 1 s; a request still not out at
//!    the next tick is finished first instead of queueing another one (the stream stays whole);
//!    With `--readers K`, K more clients behave like a viewer during the hold: SetEncodings (Raw,
//!    DesktopSize), one whole-screen request, then an incremental request after each update they
//!    have read whole (the server's own log says how long its updates took);
//! 4. closes everything.
//!
//! Output, once all handshakes are done (what a scenario waits for):
//!
//! ```text
//! VNC-STRESS-READY connected=<n> handshakes_ok=<n>
//! ```
//!
//! and after the hold:
//!
//! ```text
//! VNC-STRESS connected=<n> handshakes_ok=<n> handshake_failed=<n> width=<w> height=<h> requests_sent=<n> handshake_ms_max=<ms> reader_updates=<n> reader_bytes=<n>
//! RIG-RESULT scenario=vnc-stress status=PASS <the same k=v fields>
//! ```
//!
//! `width`/`height` are those of the first successful ServerInit (0 without one), `requests_sent`
//! counts the FramebufferUpdateRequests written whole by all stuck clients, `handshake_ms_max` is
//! the slowest handshake, failed ones included. PASS means the run happened; the only FAIL
//! (`reason=no-connection`) is not a single connection made. Failures are described on
//! `vnc-stress: ...` lines.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use guest_tools::report::Reporter;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `HOST:PORT`.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl Target {
    fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(Target::Unix(PathBuf::from(p)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Target::Tcp(s.to_string()))
            }
            _ => Err(format!("{s:?} is neither HOST:PORT nor unix:PATH")),
        }
    }
}

#[derive(Parser, Debug, PartialEq)]
#[command(about = "Open many RFB 3.8 connections at once: idle ones and ones that never read")]
struct Args {
    /// The server: `HOST:PORT` (TCP) or `unix:PATH`.
    #[arg(long, value_parser = Target::parse)]
    connect: Target,
    /// Clients that only do the handshake, then neither send nor read.
    #[arg(long, value_name = "N")]
    idle: usize,
    /// Clients that ask for whole-screen updates every 100 ms and never read.
    #[arg(long, value_name = "M")]
    stuck: usize,
    /// Clients that behave like a viewer: one whole-screen request, then an incremental one after
    /// each update they have read whole.
    #[arg(long, value_name = "K", default_value_t = 0)]
    readers: usize,
    /// How long to keep the connections after the handshakes (seconds).
    #[arg(long, value_name = "S")]
    hold_secs: f64,
    /// Scenario name in the result line.
    #[arg(long, default_value = "vnc-stress")]
    scenario: String,
}

/// Limit of connect() and of every handshake read and write.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Write timeout of the stuck clients during the hold.
const STUCK_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a stuck client asks for an update.
const REQUEST_PERIOD: Duration = Duration::from_millis(100);
/// Longest desktop name or failure reason read.
const MAX_TEXT: u32 = 1 << 16;
/// SetEncodings with one encoding, Raw (0).
const SET_ENCODINGS_RAW: [u8; 8] = [2, 0, 0, 1, 0, 0, 0, 0];
/// How many failures of each kind are described on their own line.
const LOGGED_FAILURES: usize = 5;

/// A client connection over TCP or a unix socket.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    /// Ends both directions: a thread blocked reading it returns.
    fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
            Conn::Unix(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

/// The resolved form of a [`Target`], so that the connections do not each resolve the name.
enum Endpoint {
    Tcp(Vec<SocketAddr>),
    Unix(PathBuf),
}

impl Endpoint {
    fn resolve(t: &Target) -> io::Result<Self> {
        Ok(match t {
            Target::Tcp(a) => Endpoint::Tcp(a.to_socket_addrs()?.collect()),
            Target::Unix(p) => Endpoint::Unix(p.clone()),
        })
    }

    fn connect(&self) -> io::Result<Conn> {
        match self {
            Endpoint::Tcp(addrs) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for a in addrs {
                    match TcpStream::connect_timeout(a, HANDSHAKE_TIMEOUT) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Conn::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Endpoint::Unix(p) => UnixStream::connect(p).map(Conn::Unix),
        }
    }
}

/// What the client keeps of ServerInit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerInit {
    width: u16,
    height: u16,
    name: String,
}

/// Why a handshake failed.
#[derive(Debug)]
enum HandshakeError {
    Io(io::Error),
    /// The server's ProtocolVersion is not 3.8 or a later 3.x.
    Version(String),
    /// The server sent no security types (with this reason).
    Refused(String),
    /// None (1) is not among the offered security types.
    NoNone(Vec<u8>),
    /// SecurityResult was not 0 (with this reason).
    SecurityResult(u32, String),
    /// ServerInit announced a desktop name longer than [`MAX_TEXT`].
    NameTooLong(u32),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Version(v) => write!(f, "server version {v:?}"),
            HandshakeError::Refused(r) => write!(f, "no security types: {r:?}"),
            HandshakeError::NoNone(t) => write!(f, "security None not offered (types {t:?})"),
            HandshakeError::SecurityResult(r, why) => write!(f, "SecurityResult {r}: {why:?}"),
            HandshakeError::NameTooLong(n) => write!(f, "desktop name of {n} bytes"),
        }
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// A u32 length and that many bytes of text (at most [`MAX_TEXT`] are kept).
fn read_text(r: &mut impl Read) -> io::Result<String> {
    let len = u32::from_be_bytes(read_array(r)?);
    let mut b = Vec::new();
    r.take(u64::from(len.min(MAX_TEXT))).read_to_end(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Whether a server ProtocolVersion message is RFB 3.8 or a later 3.x (e.g. 3.889).
fn version_ok(v: &[u8; 12]) -> bool {
    let Some(rest) = v.strip_prefix(b"RFB ").and_then(|r| r.strip_suffix(b"\n")) else {
        return false;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return false;
    };
    match rest.split_once('.') {
        Some((major, minor)) => {
            major.parse::<u32>() == Ok(3) && minor.parse::<u32>().is_ok_and(|m| m >= 8)
        }
        None => false,
    }
}

/// The RFB 3.8 client handshake with security type None, up to and including ServerInit.
fn handshake(s: &mut (impl Read + Write)) -> Result<ServerInit, HandshakeError> {
    let v: [u8; 12] = read_array(s)?;
    if !version_ok(&v) {
        return Err(HandshakeError::Version(
            String::from_utf8_lossy(&v).trim_end().to_string(),
        ));
    }
    s.write_all(b"RFB 003.008\n")?;
    let [n]: [u8; 1] = read_array(s)?;
    if n == 0 {
        return Err(HandshakeError::Refused(read_text(s)?));
    }
    let mut types = vec![0u8; usize::from(n)];
    s.read_exact(&mut types)?;
    if !types.contains(&1) {
        return Err(HandshakeError::NoNone(types));
    }
    s.write_all(&[1])?;
    let result = u32::from_be_bytes(read_array(s)?);
    if result != 0 {
        // 3.8 sends a reason; a server that closes instead still counts as this failure.
        return Err(HandshakeError::SecurityResult(
            result,
            read_text(s).unwrap_or_default(),
        ));
    }
    s.write_all(&[1])?; // ClientInit: shared
    let b: [u8; 24] = read_array(s)?;
    let name_len = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
    if name_len > MAX_TEXT {
        return Err(HandshakeError::NameTooLong(name_len));
    }
    let mut name = vec![0u8; name_len as usize];
    s.read_exact(&mut name)?;
    Ok(ServerInit {
        width: u16::from_be_bytes([b[0], b[1]]),
        height: u16::from_be_bytes([b[2], b[3]]),
        name: String::from_utf8_lossy(&name).into_owned(),
    })
}

/// A non-incremental FramebufferUpdateRequest of the whole `width` x `height` screen.
fn update_request(width: u16, height: u16) -> [u8; 10] {
    let [w0, w1] = width.to_be_bytes();
    let [h0, h1] = height.to_be_bytes();
    [3, 0, 0, 0, 0, 0, w0, w1, h0, h1]
}

/// Writes as much of `pending` as the writer takes before it would block (or its write timeout
/// runs out) and removes that from `pending`. An error means the connection is gone.
fn write_some(w: &mut impl Write, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match w.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A stuck client: SetEncodings (Raw), then a whole-screen update request every
/// [`REQUEST_PERIOD`] until `stop`, never reading. Returns the requests written whole and whether
/// the connection went away before `stop`.
fn stuck_client(w: &mut impl Write, init: &ServerInit, stop: &AtomicBool) -> (u64, bool) {
    let request = update_request(init.width, init.height);
    let mut pending = SET_ENCODINGS_RAW.to_vec();
    let mut request_pending = false;
    let mut sent = 0u64;
    let mut next = Instant::now();
    loop {
        if write_some(w, &mut pending).is_err() {
            return (sent, true);
        }
        if request_pending && pending.is_empty() {
            sent += 1;
            request_pending = false;
        }
        if stop.load(Ordering::Relaxed) {
            return (sent, false);
        }
        let now = Instant::now();
        if now >= next {
            next += REQUEST_PERIOD;
            if next <= now {
                next = now + REQUEST_PERIOD;
            }
            // A request still (partly) unwritten is finished first: no second one behind it.
            if pending.is_empty() {
                pending.extend_from_slice(&request);
                request_pending = true;
                continue;
            }
        }
        thread::sleep(next - now);
    }
}

/// SetEncodings Raw (0) and DesktopSize (-223), a reader's.
const SET_ENCODINGS_READER: [u8; 12] = [2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21];

/// An incremental FramebufferUpdateRequest of the whole `width` x `height` screen.
fn incremental_request(width: u16, height: u16) -> [u8; 10] {
    let mut r = update_request(width, height);
    r[1] = 1;
    r
}

/// Reads one FramebufferUpdate of Raw and DesktopSize rectangles (32-bit pixels, the server's
/// format), updating the screen size; returns its bytes.
fn read_update(r: &mut impl Read, size: &mut (u16, u16)) -> io::Result<u64> {
    let head: [u8; 4] = read_array(r)?;
    if head[0] != 0 {
        return Err(io::Error::other(format!("server message type {}", head[0])));
    }
    let rects = u16::from_be_bytes([head[2], head[3]]);
    let mut bytes = 4u64;
    let mut sink = vec![0u8; 64 * 1024];
    for _ in 0..rects {
        let h: [u8; 12] = read_array(r)?;
        bytes += 12;
        let (w, hh) = (
            u16::from_be_bytes([h[4], h[5]]),
            u16::from_be_bytes([h[6], h[7]]),
        );
        match i32::from_be_bytes([h[8], h[9], h[10], h[11]]) {
            0 => {
                let mut left = u64::from(w) * u64::from(hh) * 4;
                bytes += left;
                while left > 0 {
                    let n = left.min(sink.len() as u64) as usize;
                    r.read_exact(&mut sink[..n])?;
                    left -= n as u64;
                }
            }
            -223 => *size = (w, hh),
            e => return Err(io::Error::other(format!("encoding {e}"))),
        }
    }
    Ok(bytes)
}

/// A reader: SetEncodings (Raw, DesktopSize), a whole-screen request, then after each update it
/// read whole an incremental request, until its connection is shut down. Returns the updates and
/// bytes read.
fn reader_client(c: &mut (impl Read + Write), init: &ServerInit) -> (u64, u64) {
    let mut size = (init.width, init.height);
    let (mut updates, mut bytes) = (0u64, 0u64);
    let mut first = SET_ENCODINGS_READER.to_vec();
    first.extend_from_slice(&update_request(size.0, size.1));
    if c.write_all(&first).is_err() {
        return (0, 0);
    }
    while let Ok(n) = read_update(c, &mut size) {
        updates += 1;
        bytes += n;
        if c.write_all(&incremental_request(size.0, size.1)).is_err() {
            break;
        }
    }
    (updates, bytes)
}

/// What the stuck clients (requests written, connection lost) and the readers (updates, bytes)
/// did during the hold.
type HoldOutcome = (Vec<(u64, bool)>, Vec<(u64, u64)>);

/// The numbers of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Stats {
    connected: usize,
    handshakes_ok: usize,
    handshake_failed: usize,
    width: u16,
    height: u16,
    requests_sent: u64,
    handshake_ms_max: u128,
    reader_updates: u64,
    reader_bytes: u64,
}

impl Stats {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("connected", self.connected.to_string()),
            ("handshakes_ok", self.handshakes_ok.to_string()),
            ("handshake_failed", self.handshake_failed.to_string()),
            ("width", self.width.to_string()),
            ("height", self.height.to_string()),
            ("requests_sent", self.requests_sent.to_string()),
            ("handshake_ms_max", self.handshake_ms_max.to_string()),
            ("reader_updates", self.reader_updates.to_string()),
            ("reader_bytes", self.reader_bytes.to_string()),
        ]
    }

    fn line(&self) -> String {
        let kv: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("VNC-STRESS {}", kv.join(" "))
    }

    fn ready_line(&self) -> String {
        format!(
            "VNC-STRESS-READY connected={} handshakes_ok={}",
            self.connected, self.handshakes_ok
        )
    }
}

/// Describes the first [`LOGGED_FAILURES`] failures of a kind on their own lines, then their number.
fn log_failures(rep: &Reporter, what: &str, failures: &[String]) {
    for f in failures.iter().take(LOGGED_FAILURES) {
        rep.log(&format!("{what} failed: {f}"));
    }
    if failures.len() > LOGGED_FAILURES {
        rep.log(&format!("{what} failed {} times in all", failures.len()));
    }
}

/// Connects, handshakes, calls `ready` with the numbers so far, holds and closes.
fn stress(args: &Args, rep: &Reporter, ready: impl FnOnce(&Stats)) -> Stats {
    let mut stats = Stats::default();
    let total = args.idle + args.stuck + args.readers;
    let mut conns = Vec::with_capacity(total);
    let mut connect_failures = Vec::new();
    match Endpoint::resolve(&args.connect) {
        Ok(ep) => {
            for i in 0..total {
                match ep.connect() {
                    Ok(c) => conns.push((i, c)),
                    Err(e) => connect_failures.push(format!("connection {i}: {e}")),
                }
            }
        }
        Err(e) => connect_failures.push(format!("resolve {:?}: {e}", args.connect)),
    }
    log_failures(rep, "connect", &connect_failures);
    stats.connected = conns.len();

    let results: Vec<(usize, Conn, Result<ServerInit, HandshakeError>, Duration)> =
        thread::scope(|s| {
            let handles: Vec<_> = conns
                .into_iter()
                .map(|(i, mut c)| {
                    s.spawn(move || {
                        let t0 = Instant::now();
                        let r = c
                            .set_timeouts(Some(HANDSHAKE_TIMEOUT), Some(HANDSHAKE_TIMEOUT))
                            .map_err(HandshakeError::from)
                            .and_then(|()| handshake(&mut c));
                        (i, c, r, t0.elapsed())
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });

    let mut idle = Vec::new();
    let mut stuck = Vec::new();
    let mut readers = Vec::new();
    let mut handshake_failures = Vec::new();
    for (i, c, r, took) in results {
        stats.handshake_ms_max = stats.handshake_ms_max.max(took.as_millis());
        match r {
            Ok(init) => {
                if stats.handshakes_ok == 0 {
                    stats.width = init.width;
                    stats.height = init.height;
                    rep.log(&format!(
                        "server {}x{} name {:?}",
                        init.width, init.height, init.name
                    ));
                }
                stats.handshakes_ok += 1;
                if i < args.idle {
                    idle.push(c);
                } else if i < args.idle + args.stuck {
                    stuck.push((c, init));
                } else {
                    readers.push((c, init));
                }
            }
            Err(e) => handshake_failures.push(format!("connection {i}: {e}")),
        }
    }
    stats.handshake_failed = stats.connected - stats.handshakes_ok;
    log_failures(rep, "handshake", &handshake_failures);
    ready(&stats);
    if stats.connected == 0 {
        return stats;
    }

    // Idle clients: no timeouts any more, nothing sent or read.
    for c in &idle {
        let _ = c.set_timeouts(None, None);
    }
    let stop = AtomicBool::new(false);
    let hold = Duration::from_secs_f64(args.hold_secs.max(0.0));
    // Readers block in reads; shutting their sockets down at the end of the hold ends them.
    let reader_sockets: Vec<Conn> = readers
        .iter()
        .filter_map(|(c, _)| c.try_clone().ok())
        .collect();
    let (outcomes, read): HoldOutcome = thread::scope(|s| {
        let read_handles: Vec<_> = readers
            .iter_mut()
            .map(|(c, init)| {
                s.spawn(move || {
                    let _ = c.set_timeouts(None, None);
                    reader_client(c, init)
                })
            })
            .collect();
        let handles: Vec<_> = stuck
            .iter_mut()
            .map(|(c, init)| {
                let stop = &stop;
                s.spawn(move || {
                    let _ = c.set_timeouts(None, Some(STUCK_WRITE_TIMEOUT));
                    stuck_client(c, init, stop)
                })
            })
            .collect();
        thread::sleep(hold);
        stop.store(true, Ordering::Relaxed);
        for c in &reader_sockets {
            c.shutdown();
        }
        (
            handles.into_iter().filter_map(|h| h.join().ok()).collect(),
            read_handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .collect(),
        )
    });
    stats.reader_updates = read.iter().map(|(n, _)| n).sum();
    stats.reader_bytes = read.iter().map(|(_, b)| b).sum();
    stats.requests_sent = outcomes.iter().map(|(n, _)| n).sum();
    let closed = outcomes.iter().filter(|(_, closed)| *closed).count();
    if closed > 0 {
        rep.log(&format!(
            "{closed} stuck client(s) lost the connection during the hold"
        ));
    }
    drop(idle);
    drop(stuck);
    stats
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rep = Reporter::new(&args.scenario);
    let stats = stress(&args, &rep, |s| println!("{}", s.ready_line()));
    println!("{}", stats.line());
    let pass = stats.connected > 0;
    let mut fields = stats.fields();
    if !pass {
        fields.insert(0, ("reason", "no-connection".into()));
    }
    rep.result(pass, &fields);
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::AtomicU64;

    /// The server's side of a 3.8 handshake with security None, answering `result`.
    fn serve_handshake(s: &mut (impl Read + Write), result: u32) -> io::Result<()> {
        s.write_all(b"RFB 003.008\n")?;
        let v: [u8; 12] = read_array(s)?;
        assert_eq!(&v, b"RFB 003.008\n");
        s.write_all(&[2, 2, 1])?; // VNC Authentication and None
        let [t]: [u8; 1] = read_array(s)?;
        assert_eq!(t, 1);
        s.write_all(&result.to_be_bytes())?;
        if result != 0 {
            let why = b"go away";
            s.write_all(&(why.len() as u32).to_be_bytes())?;
            return s.write_all(why);
        }
        let [shared]: [u8; 1] = read_array(s)?;
        assert_eq!(shared, 1);
        let mut init = vec![0, 64, 0, 48];
        init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        init.extend_from_slice(&4u32.to_be_bytes());
        init.extend_from_slice(b"test");
        s.write_all(&init)
    }

    /// Reads what a client sends after the handshake until it closes; returns the update
    /// requests in it (after a leading SetEncodings with Raw only, if any).
    fn count_requests(s: &mut impl Read) -> u64 {
        let mut b = Vec::new();
        let _ = s.read_to_end(&mut b);
        if b.is_empty() {
            return 0;
        }
        assert_eq!(&b[..8], &SET_ENCODINGS_RAW);
        let rest = &b[8..];
        assert_eq!(rest.len() % 10, 0);
        for r in rest.chunks_exact(10) {
            assert_eq!(r, update_request(64, 48));
        }
        (rest.len() / 10) as u64
    }

    fn args(v: &[&str]) -> std::result::Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("vnc-stress").chain(v.iter().copied()))
    }

    #[test]
    fn arguments() {
        let a = args(&[
            "--connect",
            "127.0.0.1:5900",
            "--idle",
            "8",
            "--stuck",
            "2",
            "--hold-secs",
            "20",
        ])
        .unwrap();
        assert_eq!(
            a,
            Args {
                connect: Target::Tcp("127.0.0.1:5900".into()),
                idle: 8,
                stuck: 2,
                readers: 0,
                hold_secs: 20.0,
                scenario: "vnc-stress".into(),
            }
        );
        let a = args(&[
            "--connect=unix:/run/vnc.sock",
            "--idle=0",
            "--stuck=1",
            "--hold-secs=0.5",
            "--scenario=vnc-many",
        ])
        .unwrap();
        assert_eq!(a.connect, Target::Unix("/run/vnc.sock".into()));
        assert_eq!((a.idle, a.stuck, a.hold_secs), (0, 1, 0.5));
        assert_eq!(a.scenario, "vnc-many");
        assert_eq!(
            Target::parse("localhost:5901"),
            Ok(Target::Tcp("localhost:5901".into()))
        );
        assert_eq!(
            Target::parse("[::1]:5900"),
            Ok(Target::Tcp("[::1]:5900".into()))
        );
        for bad in ["unix:", "127.0.0.1", ":5900", "host:port", "host:70000", ""] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        // Every option but --scenario is required.
        assert!(args(&["--idle=1", "--stuck=1", "--hold-secs=1"]).is_err());
        assert!(args(&["--connect=unix:/x", "--stuck=1", "--hold-secs=1"]).is_err());
        assert!(args(&["--connect=unix:/x", "--idle=1", "--hold-secs=1"]).is_err());
        assert!(args(&["--connect=unix:/x", "--idle=1", "--stuck=1"]).is_err());
        assert!(args(&["--connect=x", "--idle=1", "--stuck=1", "--hold-secs=1"]).is_err());
        assert!(args(&[
            "--connect=unix:/x",
            "--idle=-1",
            "--stuck=1",
            "--hold-secs=1"
        ])
        .is_err());
    }

    #[test]
    fn server_versions() {
        assert!(version_ok(b"RFB 003.008\n"));
        assert!(version_ok(b"RFB 003.889\n"));
        assert!(!version_ok(b"RFB 003.007\n"));
        assert!(!version_ok(b"RFB 003.003\n"));
        assert!(!version_ok(b"RFB 004.000\n"));
        assert!(!version_ok(b"HTTP/1.1 400"));
    }

    #[test]
    fn handshake_with_security_none() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || serve_handshake(&mut server, 0).map(|()| server));
        let init = handshake(&mut client).unwrap();
        assert_eq!(
            init,
            ServerInit {
                width: 64,
                height: 48,
                name: "test".into()
            }
        );
        let mut server = t.join().unwrap().unwrap();
        // Nothing after ClientInit: the handshake sends no more than it should.
        drop(client);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn security_result_1_fails_the_handshake() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || serve_handshake(&mut server, 1));
        match handshake(&mut client) {
            Err(HandshakeError::SecurityResult(1, why)) => assert_eq!(why, "go away"),
            other => panic!("{other:?}"),
        }
        t.join().unwrap().unwrap();
    }

    #[test]
    fn handshake_failures() {
        // An old server.
        let (mut server, mut client) = UnixStream::pair().unwrap();
        server.write_all(b"RFB 003.003\n").unwrap();
        assert!(matches!(
            handshake(&mut client),
            Err(HandshakeError::Version(v)) if v == "RFB 003.003"
        ));
        // Only VNC Authentication.
        let (mut server, mut client) = UnixStream::pair().unwrap();
        server.write_all(b"RFB 003.008\n\x01\x02").unwrap();
        assert!(matches!(
            handshake(&mut client),
            Err(HandshakeError::NoNone(t)) if t == [2]
        ));
        // No security types and a reason.
        let (mut server, mut client) = UnixStream::pair().unwrap();
        server
            .write_all(b"RFB 003.008\n\x00\0\0\0\x04busy")
            .unwrap();
        assert!(matches!(
            handshake(&mut client),
            Err(HandshakeError::Refused(r)) if r == "busy"
        ));
        // The server closes in the middle.
        let (mut server, mut client) = UnixStream::pair().unwrap();
        server.write_all(b"RFB 003.008\n\x01\x01").unwrap();
        drop(server);
        assert!(matches!(handshake(&mut client), Err(HandshakeError::Io(_))));
    }

    /// A writer that takes `room` bytes, then would block; or fails with `BrokenPipe`.
    struct Tight {
        got: Vec<u8>,
        room: usize,
        broken: bool,
    }

    impl Write for Tight {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.room - self.got.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_stay_pending() {
        let mut w = Tight {
            got: Vec::new(),
            room: 13,
            broken: false,
        };
        let mut pending = SET_ENCODINGS_RAW.to_vec();
        pending.extend_from_slice(&update_request(640, 480));
        write_some(&mut w, &mut pending).unwrap();
        assert_eq!(w.got.len(), 13);
        assert_eq!(pending, update_request(640, 480)[5..]);
        w.room = 100;
        write_some(&mut w, &mut pending).unwrap();
        assert!(pending.is_empty());
        assert_eq!(&w.got[8..], &update_request(640, 480));
        assert_eq!(update_request(640, 480), [3, 0, 0, 0, 0, 0, 2, 128, 1, 224]);
        w.broken = true;
        pending.push(3);
        assert!(write_some(&mut w, &mut pending).is_err());
    }

    fn stuck_for(w: &mut Tight, ms: u64) -> (u64, bool) {
        let stop = AtomicBool::new(false);
        let init = ServerInit {
            width: 64,
            height: 48,
            name: String::new(),
        };
        thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(ms));
                stop.store(true, Ordering::Relaxed);
            });
            stuck_client(w, &init, &stop)
        })
    }

    #[test]
    fn stuck_clients_request_every_100ms_and_skip_while_blocked() {
        let mut w = Tight {
            got: Vec::new(),
            room: usize::MAX,
            broken: false,
        };
        let (sent, closed) = stuck_for(&mut w, 350);
        assert!(!closed);
        // Ticks at 0, 100, 200, 300 ms (a slow machine may miss one).
        assert!((2..=5).contains(&sent), "{sent}");
        assert_eq!(w.got.len() as u64, 8 + 10 * sent);
        // Room for SetEncodings and one and a half requests: one counted, no more queued.
        let mut w = Tight {
            got: Vec::new(),
            room: 23,
            broken: false,
        };
        assert_eq!(stuck_for(&mut w, 350), (1, false));
        assert_eq!(w.got.len(), 23);
        let mut w = Tight {
            got: Vec::new(),
            room: 0,
            broken: true,
        };
        assert_eq!(stuck_for(&mut w, 50), (0, true));
    }

    #[test]
    fn stress_over_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = AtomicU64::new(0);
        let a = args(&[
            "--connect",
            &addr.to_string(),
            "--idle",
            "2",
            "--stuck",
            "2",
            "--hold-secs",
            "0.35",
        ])
        .unwrap();
        let mut ready = None;
        let stats = thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..4 {
                    let (mut c, _) = l.accept().unwrap();
                    let requests = &requests;
                    s.spawn(move || {
                        serve_handshake(&mut c, 0).unwrap();
                        requests.fetch_add(count_requests(&mut c), Ordering::Relaxed);
                    });
                }
            });
            stress(&a, &Reporter::new("test"), |s| ready = Some(s.ready_line()))
        });
        assert_eq!(
            ready.as_deref(),
            Some("VNC-STRESS-READY connected=4 handshakes_ok=4")
        );
        assert_eq!((stats.connected, stats.handshakes_ok), (4, 4));
        assert_eq!(stats.handshake_failed, 0);
        assert_eq!((stats.width, stats.height), (64, 48));
        // Each stuck client asks at once, then every 100 ms.
        assert!(stats.requests_sent >= 2, "{stats:?}");
        assert_eq!(requests.load(Ordering::Relaxed), stats.requests_sent);
        assert!(stats.handshake_ms_max < 30_000);
        assert!(stats.line().starts_with(
            "VNC-STRESS connected=4 handshakes_ok=4 handshake_failed=0 width=64 height=48 requests_sent="
        ));
        assert!(stats.line().contains(" handshake_ms_max="));
    }

    #[test]
    fn a_reader_follows_size_changes_and_asks_again_after_each_update() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let init = ServerInit {
            width: 4,
            height: 3,
            name: String::new(),
        };
        let t = thread::spawn(move || {
            let first: [u8; 22] = read_array(&mut server).unwrap();
            assert_eq!(first[..12], SET_ENCODINGS_READER);
            assert_eq!(first[12..], update_request(4, 3));
            // DesktopSize to 2x1, then the 2x1 picture in Raw.
            let mut m = vec![0, 0, 0, 2];
            m.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0xff, 0xff, 0xff, 0x21]);
            m.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0]);
            m.extend_from_slice(&[1; 8]);
            server.write_all(&m).unwrap();
            let again: [u8; 10] = read_array(&mut server).unwrap();
            assert_eq!(again, incremental_request(2, 1));
            server.write_all(&[0, 0, 0, 0]).unwrap(); // an update with no rectangle
            let _: [u8; 10] = read_array(&mut server).unwrap();
            server.shutdown(std::net::Shutdown::Both).unwrap();
        });
        let (updates, bytes) = reader_client(&mut client, &init);
        t.join().unwrap();
        assert_eq!(updates, 2);
        assert_eq!(bytes, 4 + 12 + 12 + 8 + 4);
    }

    #[test]
    fn stress_counts_refused_handshakes_over_unix() {
        let dir = std::env::temp_dir().join(format!("vnc-stress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vnc.sock");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let a = args(&[
            &format!("--connect=unix:{}", path.display()),
            "--idle=1",
            "--stuck=1",
            "--hold-secs=0.1",
        ])
        .unwrap();
        let stats = thread::scope(|s| {
            s.spawn(|| {
                // The first connection is refused, the second accepted.
                for result in [1, 0] {
                    let (mut c, _) = l.accept().unwrap();
                    s.spawn(move || {
                        serve_handshake(&mut c, result).unwrap();
                        count_requests(&mut c);
                    });
                }
            });
            stress(&a, &Reporter::new("test"), |_| {})
        });
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (stats.connected, stats.handshakes_ok, stats.handshake_failed),
            (2, 1, 1)
        );
        assert_eq!((stats.width, stats.height), (64, 48));
    }

    #[test]
    fn no_server_no_connection() {
        let a = args(&[
            "--connect=unix:/nonexistent/vnc-stress.sock",
            "--idle=2",
            "--stuck=1",
            "--hold-secs=60",
        ])
        .unwrap();
        let t0 = Instant::now();
        let mut ready = None;
        let stats = stress(&a, &Reporter::new("test"), |s| ready = Some(s.ready_line()));
        assert_eq!(stats, Stats::default());
        assert_eq!(
            ready.as_deref(),
            Some("VNC-STRESS-READY connected=0 handshakes_ok=0")
        );
        // No hold without a connection.
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
}
