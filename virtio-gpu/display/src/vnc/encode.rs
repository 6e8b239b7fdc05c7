//! Pixel encodings: Raw and ZRLE, from the server's `0x00RRGGBB` pixels into a client's pixel
//! format. Both are lossless.

use flate2::{Compress, Compression, FlushCompress, Status};

use super::protocol::{PixelFormat, ENCODING_RAW, ENCODING_ZRLE};

/// ZRLE's tile edge.
pub const ZRLE_TILE: usize = 64;

/// The encodings the server sends pixels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Uncompressed pixels.
    Raw,
    /// zlib-compressed tiles (raw or solid).
    Zrle,
}

impl Encoding {
    /// The first encoding of the client's list the server supports (Raw when none is).
    pub fn choose(client_list: &[i32]) -> Encoding {
        client_list
            .iter()
            .find_map(|&e| match e {
                ENCODING_RAW => Some(Encoding::Raw),
                ENCODING_ZRLE => Some(Encoding::Zrle),
                _ => None,
            })
            .unwrap_or(Encoding::Raw)
    }

    /// Its number on the wire.
    pub fn number(self) -> i32 {
        match self {
            Encoding::Raw => ENCODING_RAW,
            Encoding::Zrle => ENCODING_ZRLE,
        }
    }
}

/// Converts `0x00RRGGBB` pixels into a client's format.
#[derive(Debug, Clone, Copy)]
pub struct PixelWriter {
    pf: PixelFormat,
    /// ZRLE's compact pixel: which 3 of the 4 bytes (`Some(start)`) or all of them.
    cpixel_start: Option<usize>,
}

impl PixelWriter {
    /// For a format [`PixelFormat::unsupported`] accepted.
    pub fn new(pf: PixelFormat) -> Self {
        let mask = (u32::from(pf.red_max) << pf.red_shift)
            | (u32::from(pf.green_max) << pf.green_shift)
            | (u32::from(pf.blue_max) << pf.blue_shift);
        // A 32-bit true-colour pixel of depth <= 24 whose colour bits all lie in its three
        // least (or most) significant bytes goes as those three bytes.
        let cpixel_start = if pf.bits_per_pixel == 32 && pf.depth <= 24 {
            match (mask & 0xff00_0000 == 0, mask & 0xff == 0, pf.big_endian) {
                (true, _, false) => Some(0),
                (true, _, true) => Some(1),
                (false, true, false) => Some(1),
                (false, true, true) => Some(0),
                _ => None,
            }
        } else {
            None
        };
        PixelWriter { pf, cpixel_start }
    }

    fn value(&self, rgb: u32) -> u32 {
        let pf = &self.pf;
        if pf.red_max == 255
            && pf.green_max == 255
            && pf.blue_max == 255
            && (pf.red_shift, pf.green_shift, pf.blue_shift) == (16, 8, 0)
        {
            return rgb & 0x00ff_ffff;
        }
        let scale = |c: u32, max: u16| (c * u32::from(max) + 127) / 255;
        (scale((rgb >> 16) & 0xff, pf.red_max) << pf.red_shift)
            | (scale((rgb >> 8) & 0xff, pf.green_max) << pf.green_shift)
            | (scale(rgb & 0xff, pf.blue_max) << pf.blue_shift)
    }

    fn bytes(&self, rgb: u32) -> ([u8; 4], usize) {
        let v = self.value(rgb);
        match (self.pf.bits_per_pixel, self.pf.big_endian) {
            (8, _) => ([v as u8, 0, 0, 0], 1),
            (16, false) => {
                let b = (v as u16).to_le_bytes();
                ([b[0], b[1], 0, 0], 2)
            }
            (16, true) => {
                let b = (v as u16).to_be_bytes();
                ([b[0], b[1], 0, 0], 2)
            }
            (_, false) => (v.to_le_bytes(), 4),
            (_, true) => (v.to_be_bytes(), 4),
        }
    }

    /// Appends one pixel in the client's format.
    pub fn put(&self, rgb: u32, out: &mut Vec<u8>) {
        let (b, n) = self.bytes(rgb);
        out.extend_from_slice(&b[..n]);
    }

    /// Appends one ZRLE compact pixel.
    pub fn put_compact(&self, rgb: u32, out: &mut Vec<u8>) {
        let (b, n) = self.bytes(rgb);
        match self.cpixel_start {
            Some(s) => out.extend_from_slice(&b[s..s + 3]),
            None => out.extend_from_slice(&b[..n]),
        }
    }
}

/// Appends `pixels` (`width` per row) as Raw data.
pub fn raw(writer: &PixelWriter, pixels: &[u32], out: &mut Vec<u8>) {
    if writer.pf == PixelFormat::SERVER {
        // The server's own format: the pixels' little-endian bytes (one pass the compiler
        // vectorizes).
        let start = out.len();
        out.resize(start + pixels.len() * 4, 0);
        for (d, p) in out[start..].chunks_exact_mut(4).zip(pixels) {
            d.copy_from_slice(&(p & 0x00ff_ffff).to_le_bytes());
        }
        return;
    }
    out.reserve(pixels.len() * writer.pf.bytes_per_pixel());
    for &p in pixels {
        writer.put(p, out);
    }
}

/// A client's ZRLE state: one zlib stream for the whole connection, as the encoding requires.
pub struct Zrle {
    z: Compress,
    tiles: Vec<u8>,
}

impl Default for Zrle {
    fn default() -> Self {
        Zrle {
            z: Compress::new(Compression::fast(), true),
            tiles: Vec::new(),
        }
    }
}

impl Zrle {
    /// Appends `pixels` (`width` per row) as ZRLE data: the zlib length and the compressed
    /// tiles, each raw or (one colour) solid.
    pub fn encode(
        &mut self,
        writer: &PixelWriter,
        pixels: &[u32],
        width: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), flate2::CompressError> {
        let height = pixels.len().checked_div(width).unwrap_or(0);
        self.tiles.clear();
        for ty in (0..height).step_by(ZRLE_TILE) {
            let th = ZRLE_TILE.min(height - ty);
            for tx in (0..width).step_by(ZRLE_TILE) {
                let tw = ZRLE_TILE.min(width - tx);
                let rows = (ty..ty + th).map(|y| &pixels[y * width + tx..y * width + tx + tw]);
                let first = pixels[ty * width + tx];
                if rows.clone().all(|r| r.iter().all(|&p| p == first)) {
                    self.tiles.push(1);
                    writer.put_compact(first, &mut self.tiles);
                } else if writer.pf == PixelFormat::SERVER {
                    // Compact pixels of the server's format: the 3 low bytes, little-endian.
                    self.tiles.push(0);
                    for row in rows {
                        let start = self.tiles.len();
                        self.tiles.resize(start + row.len() * 3, 0);
                        for (d, p) in self.tiles[start..].chunks_exact_mut(3).zip(row) {
                            d.copy_from_slice(&p.to_le_bytes()[..3]);
                        }
                    }
                } else {
                    self.tiles.push(0);
                    for row in rows {
                        for &p in row {
                            writer.put_compact(p, &mut self.tiles);
                        }
                    }
                }
            }
        }
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        let mut input = &self.tiles[..];
        loop {
            out.reserve(input.len() / 2 + 64);
            let before = self.z.total_in();
            let status = self.z.compress_vec(input, out, FlushCompress::Sync)?;
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            // Done when all input is taken and the sync flush fit (spare room left over).
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if status == Status::BufError && used == 0 && out.len() < out.capacity() {
                break;
            }
        }
        let len = (out.len() - start) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn bgr233() -> PixelFormat {
        PixelFormat {
            bits_per_pixel: 8,
            depth: 8,
            big_endian: false,
            true_colour: true,
            red_max: 7,
            green_max: 7,
            blue_max: 3,
            red_shift: 0,
            green_shift: 3,
            blue_shift: 6,
        }
    }

    #[test]
    fn pixel_formats() {
        let w = PixelWriter::new(PixelFormat::SERVER);
        let mut out = Vec::new();
        w.put(0x0012_3456, &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12, 0]);
        out.clear();
        w.put_compact(0x0012_3456, &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12]);
        let be = PixelWriter::new(PixelFormat {
            big_endian: true,
            ..PixelFormat::SERVER
        });
        out.clear();
        be.put(0x0012_3456, &mut out);
        assert_eq!(out, [0, 0x12, 0x34, 0x56]);
        out.clear();
        be.put_compact(0x0012_3456, &mut out);
        assert_eq!(out, [0x12, 0x34, 0x56]);
        // Colours in the high bytes: shifts 24/16/8.
        let high = PixelWriter::new(PixelFormat {
            red_shift: 24,
            green_shift: 16,
            blue_shift: 8,
            ..PixelFormat::SERVER
        });
        out.clear();
        high.put_compact(0x0012_3456, &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12]);
        let small = PixelWriter::new(bgr233());
        out.clear();
        small.put(0x00ff_0000, &mut out);
        small.put(0x0000_00ff, &mut out);
        small.put(0x00ff_ffff, &mut out);
        assert_eq!(out, [7, 3 << 6, 0xff]);
        let rgb565 = PixelWriter::new(PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: false,
            true_colour: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
        });
        out.clear();
        rgb565.put(0x0000_ff00, &mut out);
        assert_eq!(out, (63u16 << 5).to_le_bytes());
    }

    #[test]
    fn raw_in_the_server_format_is_the_little_endian_pixels() {
        let pixels = [0x0012_3456, 0xff65_4321, 0];
        let mut out = Vec::new();
        raw(&PixelWriter::new(PixelFormat::SERVER), &pixels, &mut out);
        assert_eq!(out, [0x56, 0x34, 0x12, 0, 0x21, 0x43, 0x65, 0, 0, 0, 0, 0]);
        // The same as pixel by pixel.
        let mut one = Vec::new();
        for p in pixels {
            PixelWriter::new(PixelFormat::SERVER).put(p, &mut one);
        }
        assert_eq!(out, one);
    }

    #[test]
    fn encoding_choice_follows_the_client() {
        assert_eq!(Encoding::choose(&[-223, 16, 0]), Encoding::Zrle);
        assert_eq!(Encoding::choose(&[5, 0, 16]), Encoding::Raw);
        assert_eq!(Encoding::choose(&[7]), Encoding::Raw);
    }

    /// Decodes ZRLE data with 3-byte compact pixels back into pixels (the test's own decoder).
    fn decode(z: &mut Decompress, data: &[u8], width: usize, height: usize) -> Vec<u32> {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert_eq!(len, data.len() - 4);
        let mut tiles = Vec::with_capacity(width * height * 4 + 1024);
        z.decompress_vec(&data[4..], &mut tiles, FlushDecompress::Sync)
            .unwrap();
        let mut out = vec![0u32; width * height];
        let mut at = 0;
        let px = |b: &[u8]| u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
        for ty in (0..height).step_by(ZRLE_TILE) {
            for tx in (0..width).step_by(ZRLE_TILE) {
                let (tw, th) = (ZRLE_TILE.min(width - tx), ZRLE_TILE.min(height - ty));
                let sub = tiles[at];
                at += 1;
                for y in ty..ty + th {
                    for x in tx..tx + tw {
                        out[y * width + x] = px(&tiles[at..at + 3]);
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
        assert_eq!(at, tiles.len());
        out
    }

    #[test]
    fn zrle_round_trips_over_one_stream() {
        let w = PixelWriter::new(PixelFormat::SERVER);
        let mut zrle = Zrle::default();
        let mut z = Decompress::new(true);
        let (width, height) = (150, 70);
        for frame in 0..3u32 {
            let pixels: Vec<u32> = (0..width * height)
                .map(|i| {
                    let (x, y) = ((i % width) as u32, (i / width) as u32);
                    // A solid band, then a pattern.
                    if y < 64 && x < 64 {
                        0x0010_2030 + frame
                    } else {
                        x.wrapping_mul(2654435761) ^ (y << 8) ^ frame
                    }
                })
                .map(|p| p & 0x00ff_ffff)
                .collect();
            let mut out = Vec::new();
            zrle.encode(&w, &pixels, width, &mut out).unwrap();
            assert_eq!(decode(&mut z, &out, width, height), pixels, "frame {frame}");
        }
        // A big solid area compresses far below Raw.
        let flat = vec![0x0044_5566u32; 640 * 128];
        let mut out = Vec::new();
        zrle.encode(&w, &flat, 640, &mut out).unwrap();
        assert!(out.len() < 200, "{} bytes", out.len());
    }
}
