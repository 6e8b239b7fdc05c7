//! A minimal RFB 3.8 client for tests and benches (feature `test-utils`): security None, the
//! server's pixel format, Raw, ZRLE (raw and solid tiles, what the server sends) and
//! DesktopSize. It panics on anything unexpected.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use flate2::{Decompress, FlushDecompress};

use super::protocol::{ENCODING_DESKTOP_SIZE, ENCODING_RAW, ENCODING_ZRLE};

/// A minimal RFB 3.8 client: None security, 32-bit server format, Raw/ZRLE/DesktopSize.
pub struct TestClient {
    /// The connection.
    pub s: TcpStream,
    /// Framebuffer width it knows.
    pub width: usize,
    /// Framebuffer height it knows.
    pub height: usize,
    /// The pixels received (`0x00RRGGBB`).
    pub fb: Vec<u32>,
    /// Bytes of pixel data received (rectangle headers and payloads).
    pub bytes: u64,
    /// The desktop name ServerInit gave.
    pub name: Vec<u8>,
    z: Decompress,
}

impl TestClient {
    /// Connects to `addr` and asks for `encodings`; panics on any deviation from the protocol.
    pub fn connect(addr: &str, encodings: &[i32]) -> TestClient {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).unwrap();
        assert_eq!(&v, b"RFB 003.008\n");
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut types = [0u8; 2];
        s.read_exact(&mut types).unwrap();
        assert_eq!(types, [1, 1], "one type, None");
        s.write_all(&[1]).unwrap();
        let mut result = [0u8; 4];
        s.read_exact(&mut result).unwrap();
        assert_eq!(result, [0; 4]);
        s.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        let width = usize::from(u16::from_be_bytes([init[0], init[1]]));
        let height = usize::from(u16::from_be_bytes([init[2], init[3]]));
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let mut name = vec![0u8; name_len];
        s.read_exact(&mut name).unwrap();
        let mut m = vec![2, 0];
        m.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            m.extend_from_slice(&e.to_be_bytes());
        }
        s.write_all(&m).unwrap();
        TestClient {
            s,
            width,
            height,
            fb: vec![0; width * height],
            bytes: 0,
            name,
            z: Decompress::new(true),
        }
    }

    /// Asks for the whole framebuffer.
    pub fn request(&mut self, incremental: bool) {
        let mut m = vec![3, u8::from(incremental), 0, 0, 0, 0];
        m.extend_from_slice(&(self.width as u16).to_be_bytes());
        m.extend_from_slice(&(self.height as u16).to_be_bytes());
        self.s.write_all(&m).unwrap();
    }

    fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        self.s.read_exact(&mut b).unwrap();
        u16::from_be_bytes(b)
    }

    /// Reads one FramebufferUpdate into `fb`; returns the encodings of its rectangles.
    pub fn read_update(&mut self) -> Vec<i32> {
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(h[0], 0, "FramebufferUpdate");
        let n = u16::from_be_bytes([h[2], h[3]]);
        let mut seen = Vec::new();
        for _ in 0..n {
            let (x, y, w, hh) = (
                usize::from(self.u16()),
                usize::from(self.u16()),
                usize::from(self.u16()),
                usize::from(self.u16()),
            );
            let mut e = [0u8; 4];
            self.s.read_exact(&mut e).unwrap();
            let enc = i32::from_be_bytes(e);
            seen.push(enc);
            self.bytes += 12;
            let pixels: Vec<u32> = match enc {
                ENCODING_DESKTOP_SIZE => {
                    self.width = w;
                    self.height = hh;
                    self.fb = vec![0; w * hh];
                    continue;
                }
                ENCODING_RAW => {
                    let mut d = vec![0u8; w * hh * 4];
                    self.s.read_exact(&mut d).unwrap();
                    self.bytes += d.len() as u64;
                    d.chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                }
                ENCODING_ZRLE => {
                    let mut l = [0u8; 4];
                    self.s.read_exact(&mut l).unwrap();
                    let mut d = vec![0u8; u32::from_be_bytes(l) as usize];
                    self.s.read_exact(&mut d).unwrap();
                    self.bytes += 4 + d.len() as u64;
                    let mut tiles = Vec::with_capacity(w * hh * 4 + 4096);
                    self.z
                        .decompress_vec(&d, &mut tiles, FlushDecompress::Sync)
                        .unwrap();
                    let mut px = vec![0u32; w * hh];
                    let mut at = 0;
                    for ty in (0..hh).step_by(64) {
                        for tx in (0..w).step_by(64) {
                            let sub = tiles[at];
                            at += 1;
                            for yy in ty..(ty + 64).min(hh) {
                                for xx in tx..(tx + 64).min(w) {
                                    let b = &tiles[at..at + 3];
                                    px[yy * w + xx] = u32::from(b[0])
                                        | u32::from(b[1]) << 8
                                        | u32::from(b[2]) << 16;
                                    if sub == 0 {
                                        at += 3;
                                    }
                                }
                            }
                            if sub == 1 {
                                at += 3;
                            }
                        }
                    }
                    px
                }
                other => panic!("encoding {other}"),
            };
            for row in 0..hh {
                self.fb[(y + row) * self.width + x..][..w]
                    .copy_from_slice(&pixels[row * w..(row + 1) * w]);
            }
        }
        seen
    }
}
