//! The compressed kernel inside a bzImage, decompressed by the VMM.
//!
//! A bzImage is real-mode setup code, a small decompressor and a compressed payload: the kernel
//! proper (`vmlinux`, an ELF file) followed by its relocation table, plus the payload's
//! uncompressed length in the last four bytes. Under nested virtualization the guest's
//! decompressor is slow (it runs in the guest, where every first touch of a page can be an
//! exit), so the VMM decompresses the payload itself when it knows the format and enters the
//! kernel proper directly. Anything else (other formats, an old boot protocol, a payload that
//! does not decompress to what the header says) is left to the guest's decompressor.

use std::io::Read;

use linux_loader::loader::bootparam::setup_header;
use thiserror::Error;
use vm_memory::ByteValued;

/// Offset of the setup header in a bzImage.
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// Setup sectors of a kernel whose header says 0.
const DEFAULT_SETUP_SECTS: usize = 4;
const SECTOR_SIZE: usize = 512;
/// "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Boot protocol 2.08 introduced payload_offset and payload_length.
const BOOT_PROTOCOL_PAYLOAD: u16 = 0x0208;
/// Length of the uncompressed-size trailer the kernel build appends to the payload.
const SIZE_TRAILER: usize = 4;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
const LZ4_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const BZIP2_MAGIC: [u8; 3] = [b'B', b'Z', b'h'];
const LZO_MAGIC: [u8; 4] = [0x89, b'L', b'Z', b'O'];
const LZMA_MAGIC: [u8; 3] = [0x5d, 0, 0];

/// How a bzImage's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Zstandard (Debian's and most current distributions' kernels).
    Zstd,
    /// gzip.
    Gzip,
    /// A format the VMM leaves to the guest's decompressor.
    Unsupported(&'static str),
}

impl Compression {
    /// The format of the compressed stream that starts `payload`.
    pub(crate) fn detect(payload: &[u8]) -> Self {
        if payload.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else if payload.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else if payload.starts_with(&XZ_MAGIC) {
            Self::Unsupported("xz")
        } else if payload.starts_with(&LZ4_MAGIC) {
            Self::Unsupported("lz4")
        } else if payload.starts_with(&BZIP2_MAGIC) {
            Self::Unsupported("bzip2")
        } else if payload.starts_with(&LZO_MAGIC) {
            Self::Unsupported("lzo")
        } else if payload.starts_with(&LZMA_MAGIC) {
            Self::Unsupported("lzma")
        } else {
            Self::Unsupported("unknown")
        }
    }
}

/// Why a bzImage's payload is left to the guest's decompressor.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    /// Not a bzImage with boot protocol 2.08 or later.
    #[error("no boot protocol 2.08+ setup header")]
    NoPayloadHeader,
    /// payload_offset/payload_length point outside the file.
    #[error("payload at {offset:#x}+{length:#x} lies outside the {file_len}-byte image")]
    OutOfBounds {
        /// Offset from the file's start.
        offset: usize,
        /// Length.
        length: usize,
        /// The file's length.
        file_len: usize,
    },
    /// The payload's format is one the VMM does not decompress.
    #[error("{0} payload")]
    Unsupported(&'static str),
    /// The trailer announces more than the kernel's own memory footprint or guest RAM.
    #[error("payload announces {announced} uncompressed bytes, more than the {limit} allowed")]
    TooLarge {
        /// The trailer's length.
        announced: u64,
        /// min(init_size, guest RAM).
        limit: u64,
    },
    /// The stream is corrupt.
    #[error("{format:?} payload does not decompress: {detail}")]
    Corrupt {
        /// The format.
        format: Compression,
        /// The decoder's message.
        detail: String,
    },
    /// The stream decompressed to another length than the trailer says.
    #[error("payload decompressed to {got} bytes, its trailer says {announced}")]
    LengthMismatch {
        /// Bytes produced (at most announced + 1).
        got: u64,
        /// The trailer's length.
        announced: u64,
    },
}

/// A bzImage's setup header and compressed payload.
#[derive(Debug)]
pub struct Payload<'a> {
    /// The bzImage's setup header: the kernel proper gets it in boot_params, as from the
    /// guest's decompressor.
    pub header: setup_header,
    /// The payload's format.
    pub compression: Compression,
    /// The whole payload. Its last four bytes are the uncompressed size: appended by the kernel
    /// build for zstd, but gzip's own ISIZE field (the end of the gzip stream), so the decoder
    /// gets all of it and stops at its stream's end either way.
    stream: &'a [u8],
    /// The uncompressed length from the trailer.
    announced: u64,
}

/// Finds the payload of the bzImage `image`.
pub fn find(image: &[u8]) -> Result<Payload<'_>, PayloadError> {
    let header_bytes = image
        .get(SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>())
        .ok_or(PayloadError::NoPayloadHeader)?;
    let header = *setup_header::from_slice(header_bytes).ok_or(PayloadError::NoPayloadHeader)?;
    let (magic, version) = (header.header, header.version);
    if magic != HDRS_MAGIC || version < BOOT_PROTOCOL_PAYLOAD {
        return Err(PayloadError::NoPayloadHeader);
    }
    let setup_sects = match header.setup_sects as usize {
        0 => DEFAULT_SETUP_SECTS,
        n => n,
    };
    let offset = (setup_sects + 1) * SECTOR_SIZE + header.payload_offset as usize;
    let length = header.payload_length as usize;
    let out_of_bounds = PayloadError::OutOfBounds {
        offset,
        length,
        file_len: image.len(),
    };
    let payload = offset
        .checked_add(length)
        .and_then(|end| image.get(offset..end))
        .ok_or(out_of_bounds)?;
    let split = payload
        .len()
        .checked_sub(SIZE_TRAILER)
        .ok_or(PayloadError::NoPayloadHeader)?;
    let trailer = &payload[split..];
    let announced = u64::from(u32::from_le_bytes(
        trailer.try_into().expect("4-byte trailer"),
    ));
    Ok(Payload {
        header,
        compression: Compression::detect(payload),
        stream: payload,
        announced,
    })
}

/// Bytes handed to the sink at a time.
const CHUNK: usize = 256 << 10;

impl Payload<'_> {
    /// Decompresses the payload and hands it to `sink` piece by piece, in order. `ram` bounds
    /// the output with the kernel's own `init_size` (the memory its decompressor would use),
    /// so a file cannot make the VMM produce more than the kernel needs.
    pub fn decompress_with<E: From<PayloadError>>(
        &self,
        ram: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let init_size = u64::from(self.header.init_size);
        let limit = if init_size == 0 {
            ram
        } else {
            init_size.min(ram)
        };
        if self.announced > limit || self.announced == 0 {
            return Err(PayloadError::TooLarge {
                announced: self.announced,
                limit,
            }
            .into());
        }
        let corrupt = |e: std::io::Error| PayloadError::Corrupt {
            format: self.compression,
            detail: e.to_string(),
        };
        let decoder: Box<dyn Read + '_> = match self.compression {
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(self.stream)
                    .map_err(corrupt)?
                    .single_frame(),
            ),
            Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(self.stream)),
            Compression::Unsupported(name) => return Err(PayloadError::Unsupported(name).into()),
        };
        // One byte more than announced, to see a stream that is longer.
        let mut decoder = decoder.take(self.announced + 1);
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(e).into()),
            };
            total += n as u64;
            if total > self.announced {
                break;
            }
            sink(&buf[..n])?;
        }
        if total != self.announced {
            return Err(PayloadError::LengthMismatch {
                got: total,
                announced: self.announced,
            }
            .into());
        }
        Ok(())
    }

    /// The uncompressed length the payload's trailer announces.
    pub fn announced_len(&self) -> u64 {
        self.announced
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A bzImage with a protocol 2.15 header around `stream` (a compressed payload) and the
    /// size trailer `announced` appended, as the kernel build does for zstd.
    pub(crate) fn bzimage(stream: &[u8], announced: u32, init_size: u32) -> Vec<u8> {
        let mut payload = stream.to_vec();
        payload.extend_from_slice(&announced.to_le_bytes());
        bzimage_around(&payload, init_size)
    }

    /// A bzImage with a protocol 2.15 header around `payload`, which ends in its size.
    pub(crate) fn bzimage_around(payload: &[u8], init_size: u32) -> Vec<u8> {
        let setup_sects = 1usize;
        let mut img = vec![0u8; SECTOR_SIZE * (1 + setup_sects)];
        img[0x1f1] = setup_sects as u8;
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x211] = 0x01; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        img[0x234] = 1; // relocatable_kernel
        img[0x236..0x238].copy_from_slice(&0x3u16.to_le_bytes()); // xloadflags
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        let payload_offset = 0x100u32;
        let payload_len = payload.len() as u32;
        img[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&payload_len.to_le_bytes());
        img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
        img[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        img.extend_from_slice(&[0x90; 0x100]); // the decompressor
        img.extend_from_slice(payload);
        img
    }

    pub(crate) fn zstd_bytes(data: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(data, 3).unwrap()
    }

    fn gzip_bytes(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    impl Payload<'_> {
        fn decompress(&self, ram: u64) -> Result<Vec<u8>, PayloadError> {
            let mut out = Vec::new();
            self.decompress_with(ram, |c| {
                out.extend_from_slice(c);
                Ok::<_, PayloadError>(())
            })?;
            Ok(out)
        }
    }

    fn data() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn zstd_and_gzip_payloads_decompress_to_the_announced_bytes() {
        let d = data();
        let mut zstd = zstd_bytes(&d);
        zstd.extend_from_slice(&(d.len() as u32).to_le_bytes());
        // The kernel build appends no size to gzip: the stream's ISIZE field is the trailer.
        let gzip = gzip_bytes(&d);
        assert_eq!(gzip[gzip.len() - 4..], (d.len() as u32).to_le_bytes());
        for payload in [zstd, gzip] {
            let img = bzimage_around(&payload, 1 << 20);
            let p = find(&img).unwrap();
            assert_eq!(p.announced_len(), d.len() as u64);
            let init_size = p.header.init_size;
            assert_eq!(init_size, 1 << 20);
            assert_eq!(p.decompress(64 << 20).unwrap(), d);
        }
    }

    #[test]
    fn formats_are_told_apart_and_unsupported_ones_named() {
        let cases: [(&[u8], Compression); 4] = [
            (&ZSTD_MAGIC, Compression::Zstd),
            (&GZIP_MAGIC, Compression::Gzip),
            (&XZ_MAGIC, Compression::Unsupported("xz")),
            (b"junk", Compression::Unsupported("unknown")),
        ];
        for (stream, want) in cases {
            let img = bzimage(stream, 10, 1 << 20);
            let p = find(&img).unwrap();
            assert_eq!(p.compression, want);
        }
        let img = bzimage(&XZ_MAGIC, 10, 1 << 20);
        assert_eq!(
            find(&img).unwrap().decompress(1 << 30),
            Err(PayloadError::Unsupported("xz"))
        );
    }

    #[test]
    fn a_trailer_that_lies_is_caught() {
        let d = data();
        let stream = zstd_bytes(&d);
        // Shorter than the stream: the decoder is stopped one byte past it.
        let img = bzimage(&stream, d.len() as u32 - 1, 1 << 20);
        assert_eq!(
            find(&img).unwrap().decompress(1 << 30),
            Err(PayloadError::LengthMismatch {
                got: d.len() as u64,
                announced: d.len() as u64 - 1
            })
        );
        // A sink's error stops the stream.
        let img = bzimage(&stream, d.len() as u32, 1 << 20);
        let mut calls = 0;
        let r = find(&img).unwrap().decompress_with(1 << 30, |_| {
            calls += 1;
            Err(PayloadError::Unsupported("sink"))
        });
        assert_eq!((r, calls), (Err(PayloadError::Unsupported("sink")), 1));
        // Longer than the stream.
        let img = bzimage(&stream, d.len() as u32 + 8, 1 << 20);
        assert!(matches!(
            find(&img).unwrap().decompress(1 << 30),
            Err(PayloadError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn the_output_is_bounded_by_init_size_and_ram() {
        let d = data();
        let stream = zstd_bytes(&d);
        let img = bzimage(&stream, d.len() as u32, 4096);
        assert!(matches!(
            find(&img).unwrap().decompress(1 << 30),
            Err(PayloadError::TooLarge { limit: 4096, .. })
        ));
        let img = bzimage(&stream, u32::MAX, 0);
        assert!(matches!(
            find(&img).unwrap().decompress(1 << 20),
            Err(PayloadError::TooLarge {
                limit: 0x10_0000,
                ..
            })
        ));
    }

    proptest::proptest! {
        /// A bzImage whose header fields and payload bytes are anything: a payload or an error,
        /// never a panic, and never more output than the limit.
        #[test]
        fn any_header_and_payload_is_handled(
            fields in proptest::collection::vec((0x1f1usize..0x270, proptest::prelude::any::<u8>()), 0..12),
            stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            zstd_head in proptest::prelude::any::<bool>(),
            announced in 0u32..100_000,
        ) {
            let mut stream = stream;
            if zstd_head {
                stream.splice(0..0, ZSTD_MAGIC);
            }
            let mut img = bzimage(&stream, announced, 1 << 16);
            for (at, v) in fields {
                img[at] = v;
            }
            if let Ok(p) = find(&img) {
                let mut total = 0u64;
                let r = p.decompress_with(1 << 20, |c| {
                    total += c.len() as u64;
                    Ok::<_, PayloadError>(())
                });
                let init_size = u64::from(p.header.init_size);
                let limit = if init_size == 0 { 1 << 20 } else { init_size.min(1 << 20) };
                proptest::prop_assert!(total <= limit.min(p.announced_len()));
                if r.is_ok() {
                    proptest::prop_assert_eq!(total, p.announced_len());
                }
            }
        }
    }

    #[test]
    fn corrupt_streams_and_bad_headers_are_errors() {
        let mut stream = zstd_bytes(&data());
        stream.truncate(stream.len() / 2);
        let img = bzimage(&stream, 400_000, 1 << 20);
        assert!(matches!(
            find(&img).unwrap().decompress(1 << 30),
            Err(PayloadError::Corrupt { .. }) | Err(PayloadError::LengthMismatch { .. })
        ));

        let mut img = bzimage(&stream, 10, 1 << 20);
        img[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(find(&img), Err(PayloadError::OutOfBounds { .. })));
        img[0x206..0x208].copy_from_slice(&0x0207u16.to_le_bytes());
        assert_eq!(find(&img).unwrap_err(), PayloadError::NoPayloadHeader);
        assert_eq!(
            find(&[0u8; 100]).unwrap_err(),
            PayloadError::NoPayloadHeader
        );
    }
}
