//! The initramfs with its compressed archives unpacked on the host.
//!
//! An initramfs is a sequence of cpio archives (`newc`), each either as it is or compressed, with
//! zero bytes between them (Debian's, for one, is an uncompressed archive of CPU microcode
//! followed by a zstd-compressed one). The kernel unpacks it into its root file system early in
//! its boot; under nested virtualization the decompression is a good part of the kernel's own
//! boot time. The kernel takes uncompressed archives just as well, so the VMM decompresses the
//! gzip and zstd archives itself, following the kernel's own rules for where an archive ends
//! (`unpack_to_rootfs` in init/initramfs.c), and gives the guest the same archives uncompressed.
//! Anything it cannot follow (another format, a damaged archive, an output beyond its bound) is
//! given to the guest as it is, which then reports what it reports today.

use std::io::Read;

use thiserror::Error;

use super::bzimage_payload::Compression;

/// Length of a `newc` cpio header.
const CPIO_HEADER_LEN: usize = 110;
/// Offset and length of the header's c_filesize and c_namesize fields (8 hex digits each).
const CPIO_FILESIZE_AT: usize = 54;
const CPIO_NAMESIZE_AT: usize = 94;
const CPIO_FIELD_LEN: usize = 8;
/// Archives and entries start 4-byte aligned.
const ALIGN: usize = 4;

/// Why an initramfs is given to the guest as it is.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InitramfsError {
    /// A compressed archive in a format the VMM leaves to the guest.
    #[error("{format} archive at offset {offset:#x}")]
    Unsupported {
        /// The format's name.
        format: &'static str,
        /// Where the archive starts in the file.
        offset: usize,
    },
    /// An archive that is not what the kernel would take.
    #[error("no valid cpio archive at offset {offset:#x}: {why}")]
    Malformed {
        /// Where the fault is (in the file, or in a decompressed archive).
        offset: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A compressed archive that does not decompress.
    #[error("{format:?} archive at offset {offset:#x} does not decompress: {detail}")]
    Corrupt {
        /// Its format.
        format: Compression,
        /// Where it starts in the file.
        offset: usize,
        /// The decoder's message.
        detail: String,
    },
    /// The unpacked initramfs would be larger than the bound given.
    #[error("it unpacks to more than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
}

/// The initramfs `image` with each of its gzip and zstd archives decompressed, or `None` when it
/// has none (it is then best given as it is). The output holds at most `limit` bytes.
pub fn unpack(image: &[u8], limit: usize) -> Result<Option<Vec<u8>>, InitramfsError> {
    let mut out = Vec::new();
    let mut compressed = false;
    let mut pos = 0;
    while pos < image.len() {
        let b = image[pos];
        if b == 0 {
            // Padding between archives: the kernel skips it byte by byte.
            pos += 1;
            continue;
        }
        let start = out.len().next_multiple_of(ALIGN);
        if b == b'0' && pos % ALIGN == 0 {
            // An uncompressed entry: copied as it is.
            let end = entry_end(image, pos)?;
            append(&mut out, start, &image[pos..end], limit)?;
            pos = end;
            continue;
        }
        let format = Compression::detect(&image[pos..]);
        out.resize(start, 0);
        let consumed = decompress(format, image, pos, limit, &mut out)?;
        if consumed == 0 {
            // Never the case for a stream that decoded; a guard against going round forever.
            return Err(InitramfsError::Malformed {
                offset: pos,
                why: "an archive of no bytes",
            });
        }
        // The kernel parses a decompressed archive on its own: it must hold whole entries.
        check_archive(&out[start..])?;
        compressed = true;
        pos += consumed;
    }
    Ok(compressed.then_some(out))
}

/// Appends `bytes` to `out` at `start` (past zero padding), within `limit`.
fn append(
    out: &mut Vec<u8>,
    start: usize,
    bytes: &[u8],
    limit: usize,
) -> Result<(), InitramfsError> {
    if start + bytes.len() > limit {
        return Err(InitramfsError::TooLarge { limit });
    }
    out.resize(start, 0);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Where the cpio entry at `pos` of `data` ends (its header, name and data, 4-byte aligned),
/// as the kernel computes it.
fn entry_end(data: &[u8], pos: usize) -> Result<usize, InitramfsError> {
    let malformed = |why| InitramfsError::Malformed { offset: pos, why };
    let header = data
        .get(pos..pos + CPIO_HEADER_LEN)
        .ok_or(malformed("truncated header"))?;
    if &header[..6] != b"070701" && &header[..6] != b"070702" {
        return Err(malformed("no newc cpio magic"));
    }
    // The kernel refuses a header with anything but hex digits in any of its fields.
    if !header[6..].iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("damaged header"));
    }
    let field = |at: usize| {
        header[at..at + CPIO_FIELD_LEN]
            .iter()
            .fold(0usize, |v, &d| {
                v << 4 | char::from(d).to_digit(16).unwrap_or(0) as usize
            })
    };
    let name_len = field(CPIO_NAMESIZE_AT);
    let body_len = field(CPIO_FILESIZE_AT);
    // The kernel's N_ALIGN: the name is padded so that header and name end 4-byte aligned.
    let name_padded = ((name_len + 1) & !3) + 2;
    let end = (pos + CPIO_HEADER_LEN + name_padded + body_len).next_multiple_of(ALIGN);
    if end > data.len() {
        return Err(malformed("entry runs past the end"));
    }
    Ok(end)
}

/// Checks that a decompressed archive is whole entries, with only zero padding between and
/// after them (what the kernel's parser accepts without error).
fn check_archive(data: &[u8]) -> Result<(), InitramfsError> {
    let mut pos = 0;
    while pos < data.len() {
        match data[pos] {
            0 => pos += 1,
            b'0' if pos % ALIGN == 0 => pos = entry_end(data, pos)?,
            _ => {
                return Err(InitramfsError::Malformed {
                    offset: pos,
                    why: "junk within a compressed archive",
                })
            }
        }
    }
    Ok(())
}

/// Decompresses the one archive (a gzip member, a zstd frame, as the kernel's decompressors do)
/// at `offset` of `image` onto `out`, which it must not grow beyond `limit` bytes; returns the
/// compressed bytes used.
fn decompress(
    format: Compression,
    image: &[u8],
    offset: usize,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<usize, InitramfsError> {
    let input = &image[offset..];
    let corrupt = |e: std::io::Error| InitramfsError::Corrupt {
        format,
        offset,
        detail: e.to_string(),
    };
    // One byte more than the room, to see an output that is larger.
    let room = limit.saturating_sub(out.len()) as u64 + 1;
    let rest = match format {
        Compression::Gzip => {
            let mut d = flate2::bufread::GzDecoder::new(input);
            (&mut d).take(room).read_to_end(out).map_err(corrupt)?;
            d.into_inner()
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(corrupt)?
                .single_frame();
            (&mut d).take(room).read_to_end(out).map_err(corrupt)?;
            d.finish()
        }
        Compression::Unsupported(name) => {
            return Err(InitramfsError::Unsupported {
                format: name,
                offset,
            })
        }
    };
    if out.len() > limit {
        return Err(InitramfsError::TooLarge { limit });
    }
    Ok(input.len() - rest.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A `newc` entry: header, name (NUL-terminated, padded) and data (padded).
    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut e = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0o100644,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .into_bytes();
        e.extend_from_slice(name.as_bytes());
        e.push(0);
        e.resize(e.len().next_multiple_of(4), 0);
        e.extend_from_slice(data);
        e.resize(e.len().next_multiple_of(4), 0);
        e
    }

    /// A cpio archive of `files` with its trailer.
    pub(crate) fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut a: Vec<u8> = files.iter().flat_map(|(n, d)| entry(n, d)).collect();
        a.extend(entry("TRAILER!!!", b""));
        a
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    #[test]
    fn entries_are_measured_as_the_kernel_does() {
        // Name "a" (2 bytes with its NUL): 110 + 2 = 112, aligned; 5 data bytes pad to 8.
        let e = entry("a", b"hello");
        assert_eq!(e.len(), 112 + 8);
        assert_eq!(entry_end(&e, 0), Ok(120));
        // Name "ab": 110 + 3 = 113 pads to 116.
        assert_eq!(entry_end(&entry("ab", b""), 0), Ok(116));
        let cut = &e[..e.len() - 4];
        assert!(matches!(
            entry_end(cut, 0),
            Err(InitramfsError::Malformed { .. })
        ));
        // A sign or any other non-hex character in any field: the kernel's "damaged header".
        for at in [
            6,
            CPIO_FILESIZE_AT,
            CPIO_NAMESIZE_AT + 7,
            CPIO_HEADER_LEN - 1,
        ] {
            let mut damaged = e.clone();
            damaged[at] = if at == CPIO_FILESIZE_AT { b'+' } else { b'g' };
            assert_eq!(
                entry_end(&damaged, 0),
                Err(InitramfsError::Malformed {
                    offset: 0,
                    why: "damaged header"
                }),
                "byte {at}"
            );
        }
        let mut odc = e.clone();
        odc[..6].copy_from_slice(b"070707");
        assert!(matches!(
            entry_end(&odc, 0),
            Err(InitramfsError::Malformed { .. })
        ));
    }

    #[test]
    fn an_uncompressed_initramfs_is_left_as_it_is() {
        let a = archive(&[("init", b"#!/bin/sh\n")]);
        assert_eq!(unpack(&a, 1 << 20), Ok(None));
    }

    #[test]
    fn gzip_and_zstd_archives_unpack_to_their_cpio() {
        let a = archive(&[("init", b"#!/bin/sh\n"), ("bin/x", &[7u8; 5000])]);
        for packed in [gzip(&a), zstd(&a)] {
            assert_eq!(unpack(&packed, 1 << 20), Ok(Some(a.clone())));
        }
    }

    #[test]
    fn a_microcode_archive_then_a_compressed_one_keep_their_order_and_alignment() {
        // As Debian's: an uncompressed archive, zero padding, a compressed archive; then a
        // second compressed one right after the first (concatenated files).
        let early = archive(&[("kernel/x86/microcode/AuthenticAMD.bin", b"ucode")]);
        let main = archive(&[("init", b"#!/bin/sh\n")]);
        let extra = archive(&[("etc/extra", b"x")]);
        let mut image = early.clone();
        image.extend_from_slice(&[0; 512]);
        image.extend(zstd(&main));
        image.extend(gzip(&extra));
        let out = unpack(&image, 1 << 20).unwrap().unwrap();
        let mut want = early;
        want.extend_from_slice(&main);
        want.extend_from_slice(&extra);
        assert_eq!(out, want);
    }

    #[test]
    fn a_compressed_archive_ending_off_alignment_is_padded() {
        // A compressed archive whose output ends in a partial entry is refused (the kernel
        // reports junk); one that ends in zeros is padded to the next 4 bytes.
        let a = archive(&[("init", b"x")]);
        let mut odd = a.clone();
        odd.push(0);
        let mut image = gzip(&odd);
        image.extend(gzip(&a));
        let out = unpack(&image, 1 << 20).unwrap().unwrap();
        assert_eq!(&out[..odd.len()], &odd[..]);
        assert_eq!(out.len(), odd.len().next_multiple_of(4) + a.len());
        assert_eq!(&out[odd.len().next_multiple_of(4)..], &a[..]);
        let half = &a[..a.len() - 8];
        assert!(matches!(
            unpack(&gzip(half), 1 << 20),
            Err(InitramfsError::Malformed { .. })
        ));
        let mut junk = a.clone();
        junk.extend_from_slice(b"junk");
        assert!(matches!(
            unpack(&gzip(&junk), 1 << 20),
            Err(InitramfsError::Malformed { .. })
        ));
    }

    #[test]
    fn other_formats_and_damage_leave_it_to_the_guest() {
        let a = archive(&[("init", b"x")]);
        let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
        xz.extend_from_slice(&[1; 64]);
        assert_eq!(
            unpack(&xz, 1 << 20),
            Err(InitramfsError::Unsupported {
                format: "xz",
                offset: 0
            })
        );
        let mut bad = gzip(&a);
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        bad.truncate(bad.len() - 3);
        assert!(matches!(
            unpack(&bad, 1 << 20),
            Err(InitramfsError::Corrupt {
                format: Compression::Gzip,
                ..
            })
        ));
        // Not cpio, not a known magic.
        assert!(matches!(
            unpack(b"hello world", 1 << 20),
            Err(InitramfsError::Unsupported { .. })
        ));
    }

    #[test]
    fn the_output_is_bounded() {
        let a = archive(&[("big", &vec![0u8; 1 << 20])]);
        let packed = zstd(&a);
        assert_eq!(
            unpack(&packed, a.len() - 1),
            Err(InitramfsError::TooLarge { limit: a.len() - 1 })
        );
        assert_eq!(unpack(&packed, a.len()), Ok(Some(a.clone())));
        // An uncompressed archive before it counts too.
        let mut image = archive(&[("early", b"e")]);
        let early_len = image.len();
        image.extend(packed);
        assert_eq!(
            unpack(&image, a.len()),
            Err(InitramfsError::TooLarge { limit: a.len() })
        );
        assert!(unpack(&image, a.len() + early_len).unwrap().is_some());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_handled(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), gz in proptest::bool::ANY) {
            // Never a panic; a result within the bound.
            let image = if gz { gzip(&bytes) } else { bytes };
            if let Ok(Some(out)) = unpack(&image, 8192) {
                proptest::prop_assert!(out.len() <= 8192);
            }
        }
    }
}
