//! rfb-fixture: a tiny RFB (VNC) server whose only job is to prove the rig's path from L0's VNC
//! clients, run inside L1 through `rig_l0` (L0's root over virtio-9p), to a server in L1. It is a
//! test fixture of the rig, not a VNC server of the project: the vmm's own server is what the
//! clients are meant to test; this one only shows that the clients start, connect over TCP or a
//! unix socket, and that what they send and receive is what the rig sees.
//!
//! Protocol: RFB 3.8 offered; a client answering 3.3, 3.7 or 3.8 gets that version's handshake with
//! security type None only. ServerInit: 64x48 ([`RFB_FIXTURE_WIDTH`] x [`RFB_FIXTURE_HEIGHT`]),
//! 32 bpp, depth 24, true colour, little-endian, red shift 16, green 8, blue 0, name
//! `rfb-fixture`. A FramebufferUpdateRequest gets one Raw rectangle of the whole screen
//! ([`rfb_fixture_rgb`], in the client's pixel format if it sent SetPixelFormat with true colour);
//! an incremental request is answered only while the connection has had no frame yet (the screen
//! never changes). Other encodings the client asks for are ignored (Raw is always allowed).
//!
//! One line per event on stdout, `k=v` fields:
//! `RFB-LISTEN addr=<addr>`, `RFB-CLIENT conn=<n> version=3.<m>`, `RFB-SECURITY conn=<n> type=1`,
//! `RFB-INIT conn=<n> shared=<0|1>`, `RFB-PIXEL-FORMAT conn=<n> bpp=.. depth=.. big_endian=..
//! true_colour=.. max=r,g,b shift=r,g,b`, `RFB-ENCODINGS conn=<n> list=<i32,..>`,
//! `RFB-UPDATE-REQUEST conn=<n> incremental=<0|1> x=.. y=.. w=.. h=.. answered=<0|1>`,
//! `RFB-KEY down=<0|1> keysym=0x<hex> conn=<n>`, `RFB-POINTER x=.. y=.. buttons=.. conn=<n>`,
//! `RFB-CUT-TEXT conn=<n> len=..`, `RFB-CLOSE conn=<n> reason=<word>`.
//!
//! Usage: `rfb-fixture --listen 127.0.0.1:5900 --listen unix:/tmp/rfb.sock` (until killed).

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;

use clap::Parser;
use guest_tools::pattern::{rfb_fixture_rgb, RFB_FIXTURE_HEIGHT, RFB_FIXTURE_WIDTH};

#[derive(Parser, Debug)]
#[command(about = "A tiny RFB server proving the rig's VNC client path (a test fixture)")]
struct Args {
    /// Where to listen: `HOST:PORT` (TCP) or `unix:PATH`; repeatable.
    #[arg(long, required = true)]
    listen: Vec<String>,
    /// Desktop name in ServerInit.
    #[arg(long, default_value = "rfb-fixture")]
    name: String,
}

/// A client's (or the server's) pixel format, as in SetPixelFormat / ServerInit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PixelFormat {
    bpp: u8,
    depth: u8,
    big_endian: bool,
    true_colour: bool,
    max: [u16; 3],
    shift: [u8; 3],
}

/// The server's own format: 32 bpp, depth 24, little-endian true colour, R<<16 | G<<8 | B.
const SERVER_FORMAT: PixelFormat = PixelFormat {
    bpp: 32,
    depth: 24,
    big_endian: false,
    true_colour: true,
    max: [255, 255, 255],
    shift: [16, 8, 0],
};

impl PixelFormat {
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bpp;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = u8::from(self.true_colour);
        b[4..6].copy_from_slice(&self.max[0].to_be_bytes());
        b[6..8].copy_from_slice(&self.max[1].to_be_bytes());
        b[8..10].copy_from_slice(&self.max[2].to_be_bytes());
        b[10..13].copy_from_slice(&self.shift);
        b
    }

    fn from_bytes(b: &[u8; 16]) -> Self {
        PixelFormat {
            bpp: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            max: [
                u16::from_be_bytes([b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]]),
                u16::from_be_bytes([b[8], b[9]]),
            ],
            shift: [b[10], b[11], b[12]],
        }
    }

    /// Whether the fixture can encode pixels in this format (true colour, 8/16/32 bpp).
    fn supported(&self) -> bool {
        self.true_colour && matches!(self.bpp, 8 | 16 | 32)
    }

    /// Appends one pixel of colour `rgb` in this format.
    fn push_pixel(&self, rgb: [u8; 3], out: &mut Vec<u8>) {
        let mut v: u32 = 0;
        for (i, c) in rgb.iter().enumerate() {
            let max = u32::from(self.max[i]);
            let scaled = (u32::from(*c) * max + 127) / 255;
            v |= scaled.checked_shl(u32::from(self.shift[i])).unwrap_or(0);
        }
        match (self.bpp, self.big_endian) {
            (8, _) => out.push(v as u8),
            (16, false) => out.extend_from_slice(&(v as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(v as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&v.to_le_bytes()),
            (_, true) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }

    fn describe(&self) -> String {
        format!(
            "bpp={} depth={} big_endian={} true_colour={} max={},{},{} shift={},{},{}",
            self.bpp,
            self.depth,
            u8::from(self.big_endian),
            u8::from(self.true_colour),
            self.max[0],
            self.max[1],
            self.max[2],
            self.shift[0],
            self.shift[1],
            self.shift[2]
        )
    }
}

/// The FramebufferUpdate message: one Raw rectangle of the whole screen in format `pf`.
fn frame(pf: &PixelFormat) -> Vec<u8> {
    let (w, h) = (RFB_FIXTURE_WIDTH, RFB_FIXTURE_HEIGHT);
    let mut m = Vec::with_capacity(16 + (w * h * 4) as usize);
    m.extend_from_slice(&[0, 0]); // FramebufferUpdate, padding
    m.extend_from_slice(&1u16.to_be_bytes());
    for v in [0u16, 0, w as u16, h as u16] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(&0i32.to_be_bytes()); // Raw
    for y in 0..h {
        for x in 0..w {
            pf.push_pixel(rfb_fixture_rgb(x, y), &mut m);
        }
    }
    m
}

/// ServerInit: size, pixel format, name.
fn server_init(name: &str) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&(RFB_FIXTURE_WIDTH as u16).to_be_bytes());
    m.extend_from_slice(&(RFB_FIXTURE_HEIGHT as u16).to_be_bytes());
    m.extend_from_slice(&SERVER_FORMAT.to_bytes());
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m
}

/// The minor version of a client's ProtocolVersion message (`RFB 003.00m\n`), if it is one the
/// fixture speaks (3, 7, 8; other 3.x minors such as Apple's 3.889 count as 3.8, below 7 as 3.3).
fn parse_version(msg: &[u8; 12]) -> Option<u32> {
    let s = std::str::from_utf8(msg).ok()?;
    let rest = s.strip_prefix("RFB ")?.strip_suffix('\n')?;
    let (major, minor) = rest.split_once('.')?;
    if major.parse::<u32>().ok()? != 3 {
        return None;
    }
    let minor: u32 = minor.parse().ok()?;
    Some(match minor {
        0..=6 => 3,
        7 => 7,
        _ => 8,
    })
}

/// Where a session's lines go (stdout, shared by the connection threads).
trait Sink: Send + Sync {
    fn line(&self, line: &str);
}

struct Stdout;

impl Sink for Stdout {
    fn line(&self, line: &str) {
        let mut out = io::stdout().lock();
        // Console/log output: nothing useful can be done if it fails.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Why a session ended, as a word for `RFB-CLOSE`.
fn close_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "eof".to_string(),
        io::ErrorKind::ConnectionReset => "reset".to_string(),
        io::ErrorKind::BrokenPipe => "broken-pipe".to_string(),
        _ => e.to_string().replace(char::is_whitespace, "_"),
    }
}

/// Serves one connection until the client closes it or sends something the fixture cannot parse.
fn session(stream: &mut (impl Read + Write), conn: u32, name: &str, sink: &dyn Sink) {
    let reason = match serve(stream, conn, name, sink) {
        Ok(why) => why,
        Err(e) => close_reason(&e),
    };
    sink.line(&format!("RFB-CLOSE conn={conn} reason={reason}"));
}

fn serve(
    s: &mut (impl Read + Write),
    conn: u32,
    name: &str,
    sink: &dyn Sink,
) -> io::Result<String> {
    s.write_all(b"RFB 003.008\n")?;
    let v: [u8; 12] = read_array(s)?;
    let Some(minor) = parse_version(&v) else {
        return Ok("bad-version".to_string());
    };
    sink.line(&format!("RFB-CLIENT conn={conn} version=3.{minor}"));
    if minor == 3 {
        // 3.3: the server picks the security type; None has no SecurityResult.
        s.write_all(&1u32.to_be_bytes())?;
        sink.line(&format!("RFB-SECURITY conn={conn} type=1"));
    } else {
        s.write_all(&[1, 1])?; // one type: None
        let [t]: [u8; 1] = read_array(s)?;
        sink.line(&format!("RFB-SECURITY conn={conn} type={t}"));
        if t != 1 {
            if minor == 8 {
                let msg = b"only security type None";
                s.write_all(&1u32.to_be_bytes())?;
                s.write_all(&(msg.len() as u32).to_be_bytes())?;
                s.write_all(msg)?;
            }
            return Ok("bad-security-type".to_string());
        }
        if minor == 8 {
            s.write_all(&0u32.to_be_bytes())?; // SecurityResult OK
        }
    }
    let [shared]: [u8; 1] = read_array(s)?;
    sink.line(&format!(
        "RFB-INIT conn={conn} shared={}",
        u8::from(shared != 0)
    ));
    s.write_all(&server_init(name))?;
    s.flush()?;

    let mut pf = SERVER_FORMAT;
    let mut frames = 0u32;
    loop {
        let [kind]: [u8; 1] = read_array(s)?;
        match kind {
            0 => {
                let b: [u8; 19] = read_array(s)?;
                let mut f = [0u8; 16];
                f.copy_from_slice(&b[3..]);
                let new = PixelFormat::from_bytes(&f);
                sink.line(&format!("RFB-PIXEL-FORMAT conn={conn} {}", new.describe()));
                if !new.supported() {
                    return Ok("unsupported-pixel-format".to_string());
                }
                pf = new;
            }
            2 => {
                let b: [u8; 3] = read_array(s)?;
                let n = be16(&b[1..]);
                let mut list = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let e: [u8; 4] = read_array(s)?;
                    list.push(i32::from_be_bytes(e).to_string());
                }
                sink.line(&format!(
                    "RFB-ENCODINGS conn={conn} list={}",
                    if list.is_empty() {
                        "-".to_string()
                    } else {
                        list.join(",")
                    }
                ));
            }
            3 => {
                let b: [u8; 9] = read_array(s)?;
                let incremental = b[0] != 0;
                let answer = !incremental || frames == 0;
                sink.line(&format!(
                    "RFB-UPDATE-REQUEST conn={conn} incremental={} x={} y={} w={} h={} answered={}",
                    u8::from(incremental),
                    be16(&b[1..]),
                    be16(&b[3..]),
                    be16(&b[5..]),
                    be16(&b[7..]),
                    u8::from(answer)
                ));
                if answer {
                    s.write_all(&frame(&pf))?;
                    s.flush()?;
                    frames += 1;
                }
            }
            4 => {
                let b: [u8; 7] = read_array(s)?;
                sink.line(&format!(
                    "RFB-KEY down={} keysym={:#x} conn={conn}",
                    u8::from(b[0] != 0),
                    be32(&b[3..])
                ));
            }
            5 => {
                let b: [u8; 5] = read_array(s)?;
                sink.line(&format!(
                    "RFB-POINTER x={} y={} buttons={} conn={conn}",
                    be16(&b[1..]),
                    be16(&b[3..]),
                    b[0]
                ));
            }
            6 => {
                let b: [u8; 7] = read_array(s)?;
                let len = be32(&b[3..]);
                io::copy(&mut Read::by_ref(s).take(u64::from(len)), &mut io::sink())?;
                sink.line(&format!("RFB-CUT-TEXT conn={conn} len={len}"));
            }
            other => return Ok(format!("unknown-message-{other}")),
        }
    }
}

static CONNECTIONS: AtomicU32 = AtomicU32::new(0);

fn spawn_session<S: Read + Write + Send + 'static>(mut stream: S, name: Arc<str>) {
    let conn = CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
    thread::spawn(move || session(&mut stream, conn, &name, &Stdout));
}

fn main() -> ExitCode {
    let args = Args::parse();
    let name: Arc<str> = Arc::from(args.name.as_str());
    let mut threads = Vec::new();
    for addr in &args.listen {
        let name = name.clone();
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let l = match UnixListener::bind(path) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("rfb-fixture: bind {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            Stdout.line(&format!("RFB-LISTEN addr={addr}"));
            threads.push(thread::spawn(move || {
                for s in l.incoming().map_while(Result::ok) {
                    spawn_session(s, name.clone());
                }
            }));
        } else {
            let l = match TcpListener::bind(addr.as_str()) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("rfb-fixture: bind {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            Stdout.line(&format!("RFB-LISTEN addr={addr}"));
            threads.push(thread::spawn(move || {
                for s in l.incoming().map_while(Result::ok) {
                    let _ = s.set_nodelay(true);
                    spawn_session(s, name.clone());
                }
            }));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    fn lines_of(buf: &[u8]) -> Vec<String> {
        buf.lines().map_while(Result::ok).collect()
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<u8>>);

    impl Sink for Lines {
        fn line(&self, line: &str) {
            let mut b = self.0.lock().unwrap();
            b.extend_from_slice(line.as_bytes());
            b.push(b'\n');
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version(b"RFB 003.008\n"), Some(8));
        assert_eq!(parse_version(b"RFB 003.007\n"), Some(7));
        assert_eq!(parse_version(b"RFB 003.003\n"), Some(3));
        assert_eq!(parse_version(b"RFB 003.889\n"), Some(8));
        assert_eq!(parse_version(b"RFB 004.001\n"), None);
        assert_eq!(parse_version(b"GET / HTTP/1"), None);
    }

    #[test]
    fn pixel_formats() {
        let mut v = Vec::new();
        SERVER_FORMAT.push_pixel([0x12, 0x34, 0x56], &mut v);
        assert_eq!(v, [0x56, 0x34, 0x12, 0]);
        // vncdotool's format: R at bit 0, B at bit 16.
        let bgr = PixelFormat {
            shift: [0, 8, 16],
            ..SERVER_FORMAT
        };
        v.clear();
        bgr.push_pixel([0x12, 0x34, 0x56], &mut v);
        assert_eq!(v, [0x12, 0x34, 0x56, 0]);
        // RGB565 big-endian: full white and full red.
        let rgb565 = PixelFormat {
            bpp: 16,
            depth: 16,
            big_endian: true,
            true_colour: true,
            max: [31, 63, 31],
            shift: [11, 5, 0],
        };
        v.clear();
        rgb565.push_pixel([255, 255, 255], &mut v);
        rgb565.push_pixel([255, 0, 0], &mut v);
        assert_eq!(v, [0xff, 0xff, 0xf8, 0x00]);
        assert_eq!(PixelFormat::from_bytes(&rgb565.to_bytes()), rgb565);
        assert!(!PixelFormat {
            true_colour: false,
            ..SERVER_FORMAT
        }
        .supported());
    }

    #[test]
    fn server_init_is_64x48_32bpp_depth24_le_truecolour() {
        let m = server_init("rfb-fixture");
        assert_eq!(&m[..4], &[0, 64, 0, 48]);
        assert_eq!(
            &m[4..20],
            &[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]
        );
        assert_eq!(&m[20..24], &11u32.to_be_bytes());
        assert_eq!(&m[24..], b"rfb-fixture");
    }

    /// A 3.8 client: handshake, a pointer and key event, an update request, then EOF.
    #[test]
    fn session_3_8_logs_events_and_sends_the_pattern() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        let t = thread::spawn(move || session(&mut server, 7, "rfb-fixture", &*sink));
        let v: [u8; 12] = read_array(&mut client).unwrap();
        assert_eq!(&v, b"RFB 003.008\n");
        client.write_all(b"RFB 003.008\n").unwrap();
        let sec: [u8; 2] = read_array(&mut client).unwrap();
        assert_eq!(sec, [1, 1]);
        client.write_all(&[1]).unwrap();
        let res: [u8; 4] = read_array(&mut client).unwrap();
        assert_eq!(res, [0; 4]);
        client.write_all(&[1]).unwrap(); // shared
        let init: [u8; 35] = read_array(&mut client).unwrap();
        assert_eq!(&init[..4], &[0, 64, 0, 48]);
        client.write_all(&[5, 1, 0, 10, 0, 20]).unwrap();
        client.write_all(&[4, 1, 0, 0, 0, 0, 0, 0x61]).unwrap();
        client
            .write_all(&[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21])
            .unwrap();
        client.write_all(&[3, 0, 0, 0, 0, 0, 0, 64, 0, 48]).unwrap();
        let head: [u8; 16] = read_array(&mut client).unwrap();
        assert_eq!(&head[..4], &[0, 0, 0, 1]);
        assert_eq!(&head[8..12], &[0, 64, 0, 48]);
        let mut px = vec![0u8; 64 * 48 * 4];
        client.read_exact(&mut px).unwrap();
        let at = |x: usize, y: usize| {
            let i = (y * 64 + x) * 4;
            [px[i + 2], px[i + 1], px[i]]
        };
        assert_eq!(at(0, 0), rfb_fixture_rgb(0, 0));
        assert_eq!(at(63, 0), rfb_fixture_rgb(63, 0));
        assert_eq!(at(40, 30), rfb_fixture_rgb(40, 30));
        // An incremental request after a frame is not answered.
        client.write_all(&[3, 1, 0, 0, 0, 0, 0, 64, 0, 48]).unwrap();
        drop(client);
        t.join().unwrap();
        let got = lines_of(&lines.0.lock().unwrap());
        assert_eq!(
            got,
            [
                "RFB-CLIENT conn=7 version=3.8",
                "RFB-SECURITY conn=7 type=1",
                "RFB-INIT conn=7 shared=1",
                "RFB-POINTER x=10 y=20 buttons=1 conn=7",
                "RFB-KEY down=1 keysym=0x61 conn=7",
                "RFB-ENCODINGS conn=7 list=0,-223",
                "RFB-UPDATE-REQUEST conn=7 incremental=0 x=0 y=0 w=64 h=48 answered=1",
                "RFB-UPDATE-REQUEST conn=7 incremental=1 x=0 y=0 w=64 h=48 answered=0",
                "RFB-CLOSE conn=7 reason=eof",
            ]
        );
    }

    /// A 3.3 client gets the server-chosen security type and no SecurityResult.
    #[test]
    fn session_3_3() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        let t = thread::spawn(move || session(&mut server, 1, "x", &*sink));
        let _: [u8; 12] = read_array(&mut client).unwrap();
        client.write_all(b"RFB 003.003\n").unwrap();
        let sec: [u8; 4] = read_array(&mut client).unwrap();
        assert_eq!(sec, [0, 0, 0, 1]);
        client.write_all(&[0]).unwrap();
        let init: [u8; 25] = read_array(&mut client).unwrap();
        assert_eq!(&init[24..], b"x");
        drop(client);
        t.join().unwrap();
        let got = lines_of(&lines.0.lock().unwrap());
        assert_eq!(got[0], "RFB-CLIENT conn=1 version=3.3");
        assert_eq!(got[2], "RFB-INIT conn=1 shared=0");
    }
}
