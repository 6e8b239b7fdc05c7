//! The server end to end over real sockets, with a small client of the test's own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_gpu_blob::display::{DisplayBackend, ScanoutFrame};
use virtio_gpu_blob::format::FORMATS;
use virtio_gpu_blob::protocol::Rect;

use super::protocol::{ENCODING_DESKTOP_SIZE, ENCODING_RAW, ENCODING_ZRLE};
use super::test_client::TestClient;
use super::*;

/// Records what reaches the guest.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl InputSink for Recorder {
    fn key(&self, code: u16, pressed: bool) {
        self.0.lock().unwrap().push(format!("key {code} {pressed}"));
    }
    fn pointer(&self, x: u32, y: u32, w: u32, h: u32, buttons: u8, wheel: i32) {
        self.0.lock().unwrap().push(format!(
            "pointer {x},{y} of {w}x{h} buttons {buttons} wheel {wheel}"
        ));
    }
}

fn start(input: Option<Arc<dyn InputSink>>) -> VncDisplay {
    let config = VncConfig::parse("127.0.0.1:0").unwrap();
    VncDisplay::start(&config, input, "test").unwrap()
}

/// An XRGB8888 frame whose pixel (x, y) is `pattern(x, y, seed)`.
fn pattern(x: usize, y: usize, seed: u32) -> u32 {
    ((x as u32).wrapping_mul(0x9E37_79B9) ^ (y as u32).wrapping_mul(0x85EB_CA6B) ^ seed)
        & 0x00ff_ffff
}

fn frame_bytes(w: usize, h: usize, seed: u32) -> Vec<u8> {
    (0..w * h)
        .flat_map(|i| pattern(i % w, i / w, seed).to_le_bytes())
        .collect()
}

fn xrgb() -> u32 {
    FORMATS
        .iter()
        .find(|f| f.fourcc == u32::from_le_bytes(*b"XR24"))
        .unwrap()
        .fourcc
}

fn frame(buf: &Vec<u8>, w: u32, h: u32) -> ScanoutFrame<'_> {
    ScanoutFrame {
        dmabuf: None,
        pixels: buf,
        fourcc: xrgb(),
        width: w,
        height: h,
        stride: w * 4,
        offset: 0,
    }
}

fn expected(w: usize, h: usize, seed: u32) -> Vec<u32> {
    (0..w * h).map(|i| pattern(i % w, i / w, seed)).collect()
}

#[test]
fn clients_get_exact_frames_and_mode_changes() {
    let mut vnc = start(None);
    for encodings in [
        &[ENCODING_ZRLE, ENCODING_DESKTOP_SIZE][..],
        &[ENCODING_RAW, ENCODING_DESKTOP_SIZE][..],
    ] {
        let mut c = TestClient::connect(vnc.address(), encodings);
        assert_eq!(c.name, b"test");
        let (w, h) = (200, 130);
        let buf = frame_bytes(w, h, 1);
        vnc.set_scanout(0, Some(&frame(&buf, w as u32, h as u32)))
            .unwrap();
        // The size change first, then the pixels.
        c.request(true);
        let mut tries = 0;
        while c.width != w {
            c.read_update();
            c.request(false);
            tries += 1;
            assert!(tries < 5);
        }
        let got = c.read_update();
        assert!(got.iter().all(|e| encodings.contains(e)), "{got:?}");
        assert_eq!(c.fb, expected(w, h, 1));
        // A flush of a small rectangle sends only that rectangle.
        let buf2 = frame_bytes(w, h, 2);
        vnc.flush(
            0,
            &frame(&buf2, w as u32, h as u32),
            Rect {
                x: 10,
                y: 20,
                width: 30,
                height: 40,
            },
        )
        .unwrap();
        c.request(true);
        assert_eq!(c.read_update().len(), 1);
        let mut want = expected(w, h, 1);
        for y in 20..60 {
            for x in 10..40 {
                want[y * w + x] = pattern(x, y, 2);
            }
        }
        assert_eq!(c.fb, want);
        // The server counted what it sent this client (right after the last byte went out).
        let sent = (0..500)
            .find_map(|_| {
                let clients = vnc.server.shared().clients();
                let sent = clients.last().map(|cl| cl.state().sent)?;
                if sent.updates >= 2 {
                    return Some(sent);
                }
                std::thread::sleep(Duration::from_millis(10));
                None
            })
            .expect("updates counted");
        assert!(
            sent.bytes > 30 * 40 && sent.latency_max > Duration::ZERO,
            "{sent}"
        );
    }
}

#[test]
fn a_stuck_client_delays_nobody() {
    let mut vnc = start(None);
    let (w, h) = (640usize, 400usize);
    let buf = frame_bytes(w, h, 3);
    vnc.set_scanout(0, Some(&frame(&buf, w as u32, h as u32)))
        .unwrap();
    // Connects, asks for updates forever and never reads a byte.
    let mut stuck = TestClient::connect(vnc.address(), &[ENCODING_RAW]);
    for _ in 0..50 {
        stuck.request(false);
    }
    let mut good = TestClient::connect(vnc.address(), &[ENCODING_ZRLE, ENCODING_DESKTOP_SIZE]);
    // Many full-frame flushes: far more than the stuck client's socket buffers hold.
    let (done_tx, done_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        for i in 0..200u32 {
            let b = frame_bytes(w, h, 100 + i);
            vnc.flush(
                0,
                &frame(&b, w as u32, h as u32),
                Rect {
                    x: 0,
                    y: 0,
                    width: w as u32,
                    height: h as u32,
                },
            )
            .unwrap();
        }
        done_tx.send(()).unwrap();
        vnc
    });
    // A generous bound only to turn a hang into a failure.
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("flushes blocked by a client that does not read");
    let vnc = t.join().unwrap();
    good.request(false);
    while good.width != w {
        good.read_update();
        good.request(false);
    }
    good.read_update();
    assert_eq!(good.fb, expected(w, h, 299));
    drop(stuck);
    drop(vnc);
}

#[test]
fn keys_and_pointer_reach_the_input_sink() {
    let rec = Arc::new(Recorder::default());
    let mut vnc = start(Some(rec.clone()));
    let buf = frame_bytes(100, 50, 0);
    vnc.set_scanout(0, Some(&frame(&buf, 100, 50))).unwrap();
    let mut c = TestClient::connect(vnc.address(), &[ENCODING_RAW, ENCODING_DESKTOP_SIZE]);
    let mut m = Vec::new();
    m.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0, b'a']); // 'a' down
    m.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0xff, 0x0d]); // Return up
    m.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0x20, 0xac]); // EuroSign: no key
    m.extend_from_slice(&[5, 0x01, 0, 10, 0, 20]); // left button at (10, 20)
    m.extend_from_slice(&[5, 0x09, 0, 10, 0, 20]); // + wheel up
    m.extend_from_slice(&[5, 0x00, 0, 99, 0, 49]); // all up, bottom-right
    c.s.write_all(&m).unwrap();
    // The screen size the client knows (it saw DesktopSize or was told at connect).
    let want = |size: &str| {
        vec![
            "key 30 true".to_string(),
            "key 28 false".to_string(),
            format!("pointer 10,20 of {size} buttons 1 wheel 0"),
            format!("pointer 10,20 of {size} buttons 1 wheel 1"),
            format!("pointer 99,49 of {size} buttons 0 wheel 0"),
        ]
    };
    for _ in 0..500 {
        if rec.0.lock().unwrap().len() >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*rec.0.lock().unwrap(), want("100x50"));
}

#[test]
fn malformed_messages_close_only_that_client() {
    let mut vnc = start(None);
    let mut bad = TestClient::connect(vnc.address(), &[ENCODING_RAW]);
    let mut good = TestClient::connect(vnc.address(), &[ENCODING_RAW, ENCODING_DESKTOP_SIZE]);
    bad.s.write_all(&[200, 1, 2, 3]).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        bad.s.read(&mut b).unwrap_or(0),
        0,
        "the bad client is closed"
    );
    let buf = frame_bytes(64, 64, 9);
    vnc.set_scanout(0, Some(&frame(&buf, 64, 64))).unwrap();
    good.request(false);
    while good.width != 64 {
        good.read_update();
        good.request(false);
    }
    good.read_update();
    assert_eq!(good.fb, expected(64, 64, 9));
}

#[test]
fn connections_beyond_the_limit_are_closed_and_handshakes_time_out() {
    let vnc = start(None);
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(vnc.address()).unwrap())
        .collect();
    // Each accepted connection got the version line; the one too many gets nothing.
    for s in &mut idle {
        let mut v = [0u8; 12];
        s.read_exact(&mut v).unwrap();
    }
    let mut extra = TcpStream::connect(vnc.address()).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut v = [0u8; 12];
    assert_eq!(extra.read(&mut v).unwrap_or(0), 0, "closed without a byte");
    // Silent clients are dropped after the handshake timeout; then new ones get in.
    std::thread::sleep(HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    let c = TestClient::connect(vnc.address(), &[ENCODING_RAW]);
    drop(c);
    drop(idle);
}

#[test]
fn unix_socket_listener() {
    let dir = std::env::temp_dir().join(format!("vnc-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vnc.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let config = VncConfig::parse(&format!("unix:{}", path.display())).unwrap();
    let vnc = VncDisplay::start(&config, None, "test").unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let mut v = [0u8; 12];
    s.read_exact(&mut v).unwrap();
    assert_eq!(&v, b"RFB 003.008\n");
    drop(vnc);
    assert!(
        !path.exists(),
        "the socket is removed when the server stops"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
