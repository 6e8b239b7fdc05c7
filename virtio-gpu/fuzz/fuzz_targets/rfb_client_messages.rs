//! The VNC server's client-message parser on arbitrary bytes, fed whole and in chunks of a
//! fuzzer-chosen size (as a socket delivers them): never panics, uses at least one and at most
//! the available bytes per message, and both ways give the same messages and the same error.
//! Every accepted pixel format then encodes a few pixels as Raw (exact size) and ZRLE.
//!
//! From `virtio-gpu/fuzz`:
//! `cargo +nightly fuzz run -O -a -s none rfb_client_messages <dir> corpus/rfb_client_messages -- -runs=10000000`
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use virtio_gpu_display::vnc::encode::{raw, PixelWriter, Zrle};
use virtio_gpu_display::vnc::protocol::{
    parse_client_message, ClientMessage, ProtocolError, MAX_CLIENT_MESSAGE,
};

type Parsed = (Vec<ClientMessage>, Option<ProtocolError>);

/// One ZRLE stream for every run, as a connection has (building zlib's state per run would
/// cost more than the rest of the run).
static ZRLE: Mutex<Option<Zrle>> = Mutex::new(None);

fn whole(stream: &[u8]) -> Parsed {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match parse_client_message(&stream[at..]) {
            Ok(Some((m, used))) => {
                assert!(used > 0 && used <= stream.len() - at);
                assert!(used <= MAX_CLIENT_MESSAGE);
                out.push(m);
                at += used;
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn chunked(stream: &[u8], step: usize) -> Parsed {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in stream.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match parse_client_message(&buf) {
                Ok(Some((m, used))) => {
                    assert!(used > 0 && used <= buf.len());
                    out.push(m);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        assert!(buf.len() <= MAX_CLIENT_MESSAGE);
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let a = whole(stream);
    assert_eq!(a, chunked(stream, step));
    let pixels: Vec<u32> = stream
        .chunks(4)
        .take(6)
        .map(|c| c.iter().fold(0u32, |v, &b| v << 8 | u32::from(b)) & 0x00ff_ffff)
        .chain(std::iter::repeat(0x0012_3456))
        .take(6)
        .collect();
    for m in &a.0 {
        if let ClientMessage::SetPixelFormat(pf) = m {
            if pf.unsupported().is_some() {
                continue;
            }
            let w = PixelWriter::new(*pf);
            let mut out = Vec::new();
            raw(&w, &pixels, &mut out);
            assert_eq!(out.len(), 6 * pf.bytes_per_pixel());
            out.clear();
            let mut zrle = ZRLE.lock().unwrap();
            zrle.get_or_insert_with(Zrle::default)
                .encode(&w, &pixels, 3, &mut out)
                .unwrap();
            assert!(out.len() > 4);
        }
    }
});
