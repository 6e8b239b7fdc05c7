//! The RFB protocol's messages (versions 3.3, 3.7 and 3.8): the handshake's constants, the
//! client-to-server message parser and the server-to-client message writers.
//!
//! The parser takes whatever bytes have arrived and either returns one whole message with the
//! number of bytes it used, asks for more, or refuses the stream. It never allocates more than
//! the message it returns, and every length it reads is bounded.

/// The version the server offers.
pub const SERVER_VERSION: &[u8; 12] = b"RFB 003.008\n";

/// Security type: none.
pub const SECURITY_NONE: u8 = 1;
/// Security type: VNC Authentication.
pub const SECURITY_VNC_AUTH: u8 = 2;

/// Encoding: raw pixels.
pub const ENCODING_RAW: i32 = 0;
/// Encoding: zlib-compressed run-length tiles.
pub const ENCODING_ZRLE: i32 = 16;
/// Pseudo-encoding: the client accepts framebuffer size changes.
pub const ENCODING_DESKTOP_SIZE: i32 = -223;

/// Longest ClientCutText accepted; a longer one closes the client.
pub const MAX_CUT_TEXT: u32 = 1 << 20;

/// The protocol version a client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// 3.3 (also what 3.4 to 3.6 mean): the server picks the security type.
    V3_3,
    /// 3.7: the client picks; no SecurityResult after None.
    V3_7,
    /// 3.8: the client picks; SecurityResult always, with a reason on failure.
    V3_8,
}

impl Version {
    /// Parses the client's 12-byte `RFB xxx.yyy\n`. Versions above 3.8 speak 3.8; 3.4 to 3.6
    /// speak 3.3; anything else is refused.
    pub fn parse(v: &[u8; 12]) -> Option<Version> {
        if &v[..4] != b"RFB " || v[7] != b'.' || v[11] != b'\n' {
            return None;
        }
        let num = |b: &[u8]| -> Option<u32> {
            std::str::from_utf8(b)
                .ok()
                .filter(|s| s.bytes().all(|c| c.is_ascii_digit()))?
                .parse()
                .ok()
        };
        let (major, minor) = (num(&v[4..7])?, num(&v[8..11])?);
        match (major, minor) {
            (3, 3..=6) => Some(Version::V3_3),
            (3, 7) => Some(Version::V3_7),
            (3, 8..) | (4.., _) => Some(Version::V3_8),
            _ => None,
        }
    }
}

/// How pixels are laid out on the wire (SetPixelFormat / ServerInit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    /// Bits per pixel: 8, 16 or 32.
    pub bits_per_pixel: u8,
    /// Useful bits.
    pub depth: u8,
    /// Multi-byte pixels are big-endian.
    pub big_endian: bool,
    /// True colour (the only kind the server sends).
    pub true_colour: bool,
    /// Largest red value.
    pub red_max: u16,
    /// Largest green value.
    pub green_max: u16,
    /// Largest blue value.
    pub blue_max: u16,
    /// Shift of red.
    pub red_shift: u8,
    /// Shift of green.
    pub green_shift: u8,
    /// Shift of blue.
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The server's own format: 32 bits per pixel, depth 24, little-endian, xRGB.
    pub const SERVER: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// Decodes the 16-byte wire form.
    pub fn from_bytes(b: &[u8; 16]) -> PixelFormat {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16_at(4),
            green_max: u16_at(6),
            blue_max: u16_at(8),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }

    /// The 16-byte wire form.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bits_per_pixel;
        b[1] = self.depth;
        b[2] = u8::from(self.big_endian);
        b[3] = u8::from(self.true_colour);
        b[4..6].copy_from_slice(&self.red_max.to_be_bytes());
        b[6..8].copy_from_slice(&self.green_max.to_be_bytes());
        b[8..10].copy_from_slice(&self.blue_max.to_be_bytes());
        b[10] = self.red_shift;
        b[11] = self.green_shift;
        b[12] = self.blue_shift;
        b
    }

    /// Why the server cannot send pixels in this format, if it cannot.
    pub fn unsupported(&self) -> Option<&'static str> {
        if !matches!(self.bits_per_pixel, 8 | 16 | 32) {
            return Some("bits-per-pixel is not 8, 16 or 32");
        }
        if !self.true_colour {
            return Some("colour-map pixel formats are not supported");
        }
        let bits = u32::from(self.bits_per_pixel);
        for (max, shift) in [
            (self.red_max, self.red_shift),
            (self.green_max, self.green_shift),
            (self.blue_max, self.blue_shift),
        ] {
            let width = 16 - max.leading_zeros();
            if max == 0 || u32::from(shift) + width > bits {
                return Some("a colour's max and shift do not fit the pixel");
            }
        }
        None
    }

    /// Bytes per pixel.
    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }
}

pub use crate::picture::Area;

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Pixels from now on in this format.
    SetPixelFormat(PixelFormat),
    /// The encodings the client accepts, preferred first.
    SetEncodings(Vec<i32>),
    /// Send `area`; `incremental`: only what changed.
    FramebufferUpdateRequest {
        /// Only changes are wanted.
        incremental: bool,
        /// Requested area.
        area: Area,
    },
    /// A key (X keysym) went down or up.
    KeyEvent {
        /// Pressed (true) or released.
        down: bool,
        /// X keysym.
        keysym: u32,
    },
    /// The pointer is at (x, y) with these buttons down (bit 0 left, 1 middle, 2 right, 3 and 4
    /// wheel up and down).
    PointerEvent {
        /// Button mask.
        buttons: u8,
        /// Column.
        x: u16,
        /// Row.
        y: u16,
    },
    /// Clipboard text (ignored by the server; its length is checked).
    ClientCutText {
        /// Bytes of text.
        len: u32,
    },
}

/// Why the client's byte stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A message type the server never announced.
    #[error("unknown client message type {0}")]
    UnknownMessage(u8),
    /// ClientCutText longer than the limit.
    #[error("client cut text of {0} bytes is over the limit")]
    CutTextTooLong(u32),
}

/// Parses one client message from the start of `buf`: `Ok(Some((message, used)))`, `Ok(None)`
/// when more bytes are needed, or an error when the stream is invalid.
pub fn parse_client_message(buf: &[u8]) -> Result<Option<(ClientMessage, usize)>, ProtocolError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let need = |n: usize| buf.len() >= n;
    let u16_at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    Ok(match kind {
        0 => need(20).then(|| {
            let mut pf = [0u8; 16];
            pf.copy_from_slice(&buf[4..20]);
            (
                ClientMessage::SetPixelFormat(PixelFormat::from_bytes(&pf)),
                20,
            )
        }),
        2 => {
            if !need(4) {
                return Ok(None);
            }
            let count = usize::from(u16_at(2));
            let len = 4 + 4 * count;
            need(len).then(|| {
                let encodings = buf[4..len]
                    .chunks_exact(4)
                    .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (ClientMessage::SetEncodings(encodings), len)
            })
        }
        3 => need(10).then(|| {
            (
                ClientMessage::FramebufferUpdateRequest {
                    incremental: buf[1] != 0,
                    area: Area {
                        x: u16_at(2),
                        y: u16_at(4),
                        w: u16_at(6),
                        h: u16_at(8),
                    },
                },
                10,
            )
        }),
        4 => need(8).then(|| {
            (
                ClientMessage::KeyEvent {
                    down: buf[1] != 0,
                    keysym: u32_at(4),
                },
                8,
            )
        }),
        5 => need(6).then(|| {
            (
                ClientMessage::PointerEvent {
                    buttons: buf[1],
                    x: u16_at(2),
                    y: u16_at(4),
                },
                6,
            )
        }),
        6 => {
            if !need(8) {
                return Ok(None);
            }
            let len = u32_at(4);
            if len > MAX_CUT_TEXT {
                return Err(ProtocolError::CutTextTooLong(len));
            }
            let total = 8 + len as usize;
            need(total).then_some((ClientMessage::ClientCutText { len }, total))
        }
        other => return Err(ProtocolError::UnknownMessage(other)),
    })
}

/// Longest client message the parser can ask for (the read buffer's bound).
pub const MAX_CLIENT_MESSAGE: usize = 8 + MAX_CUT_TEXT as usize;

/// The ServerInit message.
pub fn server_init(width: u16, height: u16, name: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + name.len());
    m.extend_from_slice(&width.to_be_bytes());
    m.extend_from_slice(&height.to_be_bytes());
    m.extend_from_slice(&PixelFormat::SERVER.to_bytes());
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m
}

/// The header of a FramebufferUpdate with `rects` rectangles.
pub fn update_header(out: &mut Vec<u8>, rects: u16) {
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&rects.to_be_bytes());
}

/// A rectangle header.
pub fn rect_header(out: &mut Vec<u8>, area: Area, encoding: i32) {
    for v in [area.x, area.y, area.w, area.h] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&encoding.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::parse(b"RFB 003.003\n"), Some(Version::V3_3));
        assert_eq!(Version::parse(b"RFB 003.005\n"), Some(Version::V3_3));
        assert_eq!(Version::parse(b"RFB 003.007\n"), Some(Version::V3_7));
        assert_eq!(Version::parse(b"RFB 003.008\n"), Some(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 003.889\n"), Some(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 004.001\n"), Some(Version::V3_8));
        assert_eq!(Version::parse(b"RFB 003.002\n"), None);
        assert_eq!(Version::parse(b"RFB 002.008\n"), None);
        assert_eq!(Version::parse(b"RFB 0x3.008\n"), None);
        assert_eq!(Version::parse(b"HTTP/1.1 200"), None);
    }

    #[test]
    fn pixel_format_round_trip_and_checks() {
        let pf = PixelFormat::SERVER;
        assert_eq!(PixelFormat::from_bytes(&pf.to_bytes()), pf);
        assert_eq!(pf.unsupported(), None);
        let rgb565 = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            true_colour: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
        };
        assert_eq!(rgb565.unsupported(), None);
        assert!(PixelFormat {
            true_colour: false,
            ..pf
        }
        .unsupported()
        .is_some());
        assert!(PixelFormat {
            bits_per_pixel: 24,
            ..pf
        }
        .unsupported()
        .is_some());
        assert!(PixelFormat {
            red_shift: 28,
            ..pf
        }
        .unsupported()
        .is_some());
        assert!(PixelFormat { red_max: 0, ..pf }.unsupported().is_some());
    }

    #[test]
    fn messages_parse_whole_or_ask_for_more() {
        let mut s = vec![2, 0, 0, 2];
        s.extend_from_slice(&16i32.to_be_bytes());
        s.extend_from_slice(&(-223i32).to_be_bytes());
        s.extend_from_slice(&[3, 1, 0, 1, 0, 2, 0, 3, 0, 4]);
        s.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0, 0x61]);
        s.extend_from_slice(&[5, 5, 1, 0, 0, 9]);
        s.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        let mut pf = vec![0, 0, 0, 0];
        pf.extend_from_slice(&PixelFormat::SERVER.to_bytes());
        s.extend_from_slice(&pf);
        let expected = [
            ClientMessage::SetEncodings(vec![16, -223]),
            ClientMessage::FramebufferUpdateRequest {
                incremental: true,
                area: Area {
                    x: 1,
                    y: 2,
                    w: 3,
                    h: 4,
                },
            },
            ClientMessage::KeyEvent {
                down: true,
                keysym: 0x61,
            },
            ClientMessage::PointerEvent {
                buttons: 5,
                x: 256,
                y: 9,
            },
            ClientMessage::ClientCutText { len: 2 },
            ClientMessage::SetPixelFormat(PixelFormat::SERVER),
        ];
        let mut at = 0;
        for e in &expected {
            // Every strict prefix asks for more.
            let mut end = at;
            let (m, used) = loop {
                match parse_client_message(&s[at..end]).unwrap() {
                    Some(r) => break r,
                    None => end += 1,
                }
            };
            assert_eq!(at + used, end, "used exactly the bytes it needed");
            assert_eq!(&m, e);
            at += used;
        }
        assert_eq!(at, s.len());
    }

    #[test]
    fn bad_streams_are_refused() {
        assert_eq!(
            parse_client_message(&[7]),
            Err(ProtocolError::UnknownMessage(7))
        );
        assert_eq!(
            parse_client_message(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::CutTextTooLong(u32::MAX))
        );
        assert_eq!(parse_client_message(&[]), Ok(None));
    }
}
