//! The byte patterns the rig checks, defined once here so that L0 (the `rig-tests` harness can call
//! these functions on the ivshmem backing file or a decoded PNG) and the L2 programs agree.
//!
//! # ivshmem words (bar-pattern)
//!
//! For page `p` (4 KiB pages of BAR2 = the ivshmem backing file), `page_word(tag, p) =
//! (tag << 24) | (p & 0xFF_FFFF)`, little-endian:
//! - L0 writes `page_word(IVSHMEM_L0_TAG, p)` at byte `p * 4096 + L0_WORD_OFFSET` for `p < pages`
//!   before the run ([`fill_words`]);
//! - the guest checks those, then writes `page_word(IVSHMEM_GUEST_TAG, p)` at byte
//!   `p * 4096 + GUEST_WORD_OFFSET` for `p < pages`; L0 checks them afterwards ([`first_bad_word`]).
//!
//! # Pixels (gpu-kms-blob, gpu-user-blob)
//!
//! XRGB8888 (DRM_FORMAT_XRGB8888 = virtio-gpu B8G8R8X8_UNORM; in memory the bytes are B, G, R, X),
//! stride = width * 4, offset 0: see [`pixel_xrgb8888`]. The blob of a scanout is the concatenation
//! of its entries in entry order, so "pixel at blob byte `off`" is [`blob_word`].

use crate::mapping::Mapping;

/// Tag of the words L0 writes before the run.
pub const IVSHMEM_L0_TAG: u8 = 0xA5;
/// Tag of the words the guest writes.
pub const IVSHMEM_GUEST_TAG: u8 = 0x5A;
/// Byte offset in each page of L0's word.
pub const L0_WORD_OFFSET: usize = 0;
/// Byte offset in each page of the guest's word.
pub const GUEST_WORD_OFFSET: usize = 4;
/// Pages checked/written by default (the first 1 MiB of BAR2).
pub const DEFAULT_PAGES: usize = 256;
/// Page size the word pattern is laid out on.
pub const PATTERN_PAGE: usize = 4096;

/// Pattern variant of the "guest RAM blob" KMS scenario (gpu-kms-blob).
pub const VARIANT_KMS: u8 = 0;
/// Pattern variant of the first "BAR blob" (entries all in BAR2).
pub const VARIANT_BAR_BLOB: u8 = 1;
/// Pattern variant of the second "BAR blob" (entries in guest RAM and BAR2).
pub const VARIANT_MIXED_BLOB: u8 = 2;
/// Pattern variant of the image gpu-hostile shows last (a new blob in BAR2 after the attacks).
pub const VARIANT_HOSTILE_FRESH: u8 = 3;

/// The word of page `page` with `tag`: `(tag << 24) | (page & 0xFF_FFFF)`.
pub fn page_word(tag: u8, page: usize) -> u32 {
    (u32::from(tag) << 24) | (page as u32 & 0x00FF_FFFF)
}

/// Writes `page_word(tag, p)` (little-endian) at `p * 4096 + word_offset` for `p < pages`
/// (pages that do not fit in `buf` are skipped).
pub fn fill_words(buf: &mut [u8], tag: u8, pages: usize, word_offset: usize) {
    for p in 0..pages {
        let at = p * PATTERN_PAGE + word_offset;
        if let Some(dst) = buf.get_mut(at..at + 4) {
            dst.copy_from_slice(&page_word(tag, p).to_le_bytes());
        }
    }
}

/// The first page `p < pages` whose word at `p * 4096 + word_offset` is not `page_word(tag, p)`,
/// with the word found (None if all match). A page past the end of `buf` counts as bad with 0.
pub fn first_bad_word(
    buf: &[u8],
    tag: u8,
    pages: usize,
    word_offset: usize,
) -> Option<(usize, u32)> {
    (0..pages).find_map(|p| {
        let at = p * PATTERN_PAGE + word_offset;
        let got = buf
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        (got != page_word(tag, p) || buf.len() < at + 4).then_some((p, got))
    })
}

/// XRGB8888 pixel of pattern `variant` at (x, y): X = 0xFF, R = x mod 256, G = y mod 256,
/// B = (x / 256 + 16 * (y / 256) + 0x40 * variant) mod 256.
pub fn pixel_xrgb8888(variant: u8, x: u32, y: u32) -> u32 {
    let r = x & 0xff;
    let g = y & 0xff;
    let b = ((x >> 8) + ((y >> 8) << 4) + 0x40 * u32::from(variant)) & 0xff;
    0xff00_0000 | (r << 16) | (g << 8) | b
}

/// (R, G, B) of an XRGB8888 pixel, as a PNG decoder returns them.
pub fn rgb(pixel: u32) -> [u8; 3] {
    [(pixel >> 16) as u8, (pixel >> 8) as u8, pixel as u8]
}

/// The pattern word at blob byte `off` (4-aligned) of a `width`-pixel-wide image (stride width * 4).
pub fn blob_word(variant: u8, width: u32, off: u64) -> u32 {
    let i = off / 4;
    let w = u64::from(width.max(1));
    pixel_xrgb8888(variant, (i % w) as u32, (i / w) as u32)
}

/// The word at blob byte `off` of a blob holding a `width`-pixel image of `image` bytes followed
/// by zeros: [`blob_word`] inside the image, 0 past it.
pub fn image_word(variant: u8, width: u32, image: u64, off: u64) -> u32 {
    if off < image {
        blob_word(variant, width, off)
    } else {
        0
    }
}

/// Writes a blob's bytes into `m`: `ranges` are (offset in `m`, length) in entry order, holding
/// blob bytes from `blob_start` on, with [`image_word`]s of pattern `variant`. The writer's side
/// of [`first_bad_blob_word`].
pub fn paint_blob(
    m: &Mapping,
    ranges: &[(u64, u64)],
    blob_start: u64,
    variant: u8,
    width: u32,
    image: u64,
) {
    let mut blob_off = blob_start;
    for &(off, len) in ranges {
        for j in (0..len).step_by(4) {
            m.write_u32(
                (off + j) as usize,
                image_word(variant, width, image, blob_off + j),
            );
        }
        blob_off += len;
    }
}

/// Fills an image buffer (stride `width * 4`, little-endian XRGB8888) with pattern `variant`.
pub fn fill_image(buf: &mut [u8], variant: u8, width: u32) {
    for (i, px) in buf.chunks_exact_mut(4).enumerate() {
        px.copy_from_slice(&blob_word(variant, width, i as u64 * 4).to_le_bytes());
    }
}

/// Entries of the all-BAR blob of gpu-user-blob: `size` bytes split into `n` entries; entries
/// `0..n-1` have `chunk = max(page, round_down(size / n, page))` bytes and the last one the rest
/// (`last`). Entry `i` (blob bytes `i * chunk ..`) lies at BAR offset
/// `base + (n - 1 - i) * spacing` with `spacing = max(chunk, last) + chunk`: in reverse order, each
/// followed by a hole of at least one chunk, so the ranges are out of order and not contiguous.
/// Returns (BAR offset, length) per entry, or None if `n == 0`, `page == 0` or `size < n * page`.
pub fn bar_blob_entries(base: u64, size: u64, n: usize, page: u64) -> Option<Vec<(u64, u64)>> {
    let n64 = n as u64;
    if n == 0 || page == 0 || size < n64.checked_mul(page)? {
        return None;
    }
    let chunk = (size / n64 / page * page).max(page);
    let last = size - (n64 - 1) * chunk;
    let spacing = chunk.max(last) + chunk;
    Some(
        (0..n64)
            .map(|i| {
                let len = if i == n64 - 1 { last } else { chunk };
                (base + (n64 - 1 - i) * spacing, len)
            })
            .collect(),
    )
}

/// Splits an image of `size` bytes into `n` out-of-order page ranges of a BAR from `base`
/// ([`bar_blob_entries`]), checks they fit in the `bar` mapping, and paints pattern `variant`
/// into them. Returns the ranges as (offset in the BAR, length).
pub fn paint_bar_blob(
    bar: &Mapping,
    base: u64,
    size: u64,
    n: usize,
    variant: u8,
    width: u32,
    image: u64,
) -> crate::error::Result<Vec<(u64, u64)>> {
    let page = crate::pagemap::PAGE_SIZE as u64;
    let ents = bar_blob_entries(base, size, n, page).ok_or_else(|| {
        crate::error::Error::Unsupported(format!("{size} bytes cannot be split into {n} pages"))
    })?;
    if base + bar_blob_span(&ents, base) > bar.len() as u64 {
        return Err(crate::error::Error::Unsupported(format!(
            "blob ranges end past the {:#x}-byte BAR",
            bar.len()
        )));
    }
    paint_blob(bar, &ents, 0, variant, width, image);
    Ok(ents)
}

/// Bytes of BAR needed by [`bar_blob_entries`] from `base` (end of the highest range).
pub fn bar_blob_span(entries: &[(u64, u64)], base: u64) -> u64 {
    entries.iter().map(|(o, l)| o + l - base).max().unwrap_or(0)
}

/// Pattern of stock-p2p's first framebuffer (front).
pub const VARIANT_P2P_FRONT: u8 = VARIANT_BAR_BLOB;
/// Pattern of stock-p2p's second framebuffer (back).
pub const VARIANT_P2P_BACK: u8 = VARIANT_MIXED_BLOB;
/// Pattern of stock-p2p's front framebuffer painted again after the revoke and shown through a
/// new import.
pub const VARIANT_P2P_AGAIN: u8 = VARIANT_HOSTILE_FRESH;
/// BAR2 offset of stock-p2p's framebuffer `fb` (0 or 1): 0 and 8 MiB.
pub const P2P_FB_BASE: [u64; 2] = [0, 8 << 20];

/// The 4 KiB pages of stock-p2p's framebuffer of `bytes` bytes (rounded up to pages) at BAR
/// offset `base`, in framebuffer order: page `i` lies at `base + 2 * (n - 1 - i) * 4096`
/// (`n` pages) - backwards, one page each, every other page of the BAR left out, so no two
/// neighbouring entries are contiguous. Returns (BAR offset, 4096) per page.
pub fn p2p_fb_pages(base: u64, bytes: u64) -> Vec<(u64, u64)> {
    let page = PATTERN_PAGE as u64;
    let n = bytes.div_ceil(page);
    (0..n)
        .map(|i| (base + 2 * (n - 1 - i) * page, page))
        .collect()
}

/// Byte `i` of the buffer edu-dma sends through QEMU's edu device: `(i * 31 + 7) ^ (i >> 8)`
/// (mod 256), so that every byte of a 4 KiB page differs from its neighbours and a shifted or
/// truncated copy does not match.
pub fn dma_byte(i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) ^ (i >> 8)) as u8
}

/// Formats (offset or address, length) pairs as `0x150000+0x8000,0x140000+0x8000,...` (one
/// result-line value; [`parse_entries`] reads it back).
pub fn format_entries(entries: &[(u64, u64)]) -> String {
    entries
        .iter()
        .map(|(a, l)| format!("{a:#x}+{l:#x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses the `bar_entries=`/`entries=` value of gpu-user-blob's RIG-DATA lines
/// (`0x150000+0x8000,0x140000+0x8000,...`) into (offset or address, length) pairs.
pub fn parse_entries(text: &str) -> Option<Vec<(u64, u64)>> {
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    text.split(',')
        .map(|e| {
            let (a, l) = e.split_once('+')?;
            Some((hex(a)?, hex(l)?))
        })
        .collect()
}

/// Checks, in a copy of the BAR (e.g. the ivshmem backing file read by L0), that the ranges
/// `entries` (BAR offset, length), read in entry order starting at blob byte `blob_start`, hold
/// pattern `variant` of a `width`-pixel image of `image` bytes (bytes past the image: zero words).
/// Returns the first bad (blob offset, word found), or None if all match.
pub fn first_bad_blob_word(
    bar: &[u8],
    entries: &[(u64, u64)],
    blob_start: u64,
    variant: u8,
    width: u32,
    image: u64,
) -> Option<(u64, u32)> {
    let mut blob_off = blob_start;
    for &(off, len) in entries {
        for j in (0..len).step_by(4) {
            let b = blob_off + j;
            let want = image_word(variant, width, image, b);
            let at = (off + j) as usize;
            let got = bar
                .get(at..at + 4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            if got != Some(want) {
                return Some((b, got.unwrap_or(0)));
            }
        }
        blob_off += len;
    }
    None
}

/// Checks decoded image pixels (`channels` = 3 for RGB, 4 for RGBA; row-major, no padding)
/// against pattern `variant`. Returns the first bad (x, y), or None if every pixel matches.
pub fn first_bad_pixel(
    pixels: &[u8],
    channels: usize,
    width: u32,
    height: u32,
    variant: u8,
) -> Option<(u32, u32)> {
    for y in 0..height {
        for x in 0..width {
            let i = (y as usize * width as usize + x as usize) * channels;
            let want = rgb(pixel_xrgb8888(variant, x, y));
            if pixels.get(i..i + 3) != Some(&want[..]) {
                return Some((x, y));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2p_pages_are_backwards_apart_and_fit_the_bar() {
        let fb = 1280 * 800 * 4;
        for base in P2P_FB_BASE {
            let p = p2p_fb_pages(base, fb);
            assert_eq!(p.len(), 1000);
            assert_eq!(p[0], (base + 2 * 999 * 4096, 4096));
            assert_eq!(p[999], (base, 4096));
            assert!(p.windows(2).all(|w| w[0].0 == w[1].0 + 8192));
            assert!(bar_blob_span(&p, 0) <= 16 << 20);
        }
        // The two framebuffers do not overlap.
        assert!(bar_blob_span(&p2p_fb_pages(0, fb), 0) <= P2P_FB_BASE[1]);
        assert_eq!(p2p_fb_pages(0, 4097).len(), 2);
    }

    #[test]
    fn page_words_carry_tag_and_page() {
        assert_eq!(page_word(0xA5, 0), 0xA500_0000);
        assert_eq!(page_word(0xA5, 0x123), 0xA500_0123);
        assert_eq!(page_word(0x5A, 0x1FF_FFFF), 0x5AFF_FFFF);
    }

    #[test]
    fn filled_words_check_and_a_changed_word_is_found() {
        let mut buf = vec![0u8; 8 * PATTERN_PAGE];
        fill_words(&mut buf, IVSHMEM_L0_TAG, 8, L0_WORD_OFFSET);
        fill_words(&mut buf, IVSHMEM_GUEST_TAG, 8, GUEST_WORD_OFFSET);
        assert_eq!(
            first_bad_word(&buf, IVSHMEM_L0_TAG, 8, L0_WORD_OFFSET),
            None
        );
        assert_eq!(
            first_bad_word(&buf, IVSHMEM_GUEST_TAG, 8, GUEST_WORD_OFFSET),
            None
        );
        assert_eq!(
            &buf[3 * PATTERN_PAGE..3 * PATTERN_PAGE + 4],
            &[3, 0, 0, 0xA5]
        );
        buf[5 * PATTERN_PAGE + 4] ^= 1;
        assert_eq!(
            first_bad_word(&buf, IVSHMEM_GUEST_TAG, 8, GUEST_WORD_OFFSET),
            Some((5, 0x5A00_0004))
        );
        // Asking for more pages than the buffer has is a failure, not a pass.
        assert!(first_bad_word(&buf, IVSHMEM_L0_TAG, 9, L0_WORD_OFFSET).is_some());
    }

    #[test]
    fn l0_checks_find_the_pattern_in_entry_order_and_flag_a_bad_word() {
        let (w, h) = (64u32, 128u32);
        let image = u64::from(w * h * 4);
        let ents = bar_blob_entries(0x1000, image, 4, 4096).unwrap();
        let text = format_entries(&ents);
        assert!(
            text.starts_with(&format!("{:#x}+0x2000,", ents[0].0)),
            "{text}"
        );
        assert_eq!(parse_entries(&text).unwrap(), ents);
        assert!(parse_entries("0x10+zz").is_none());
        let len = 0x1000 + bar_blob_span(&ents, 0x1000) as usize;
        let m = Mapping::new(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, "bar").unwrap();
        paint_blob(&m, &ents, 0, VARIANT_BAR_BLOB, w, image);
        let mut bar = vec![0u8; len];
        m.read_bytes(0, &mut bar);
        assert_eq!(
            first_bad_blob_word(&bar, &ents, 0, VARIANT_BAR_BLOB, w, image),
            None
        );
        assert!(first_bad_blob_word(&bar, &ents, 0, VARIANT_MIXED_BLOB, w, image).is_some());
        bar[ents[1].0 as usize + 8] ^= 0xff;
        assert_eq!(
            first_bad_blob_word(&bar, &ents, 0, VARIANT_BAR_BLOB, w, image).map(|b| b.0),
            Some(ents[0].1 + 8)
        );
    }

    #[test]
    fn pixel_check_accepts_the_pattern_and_finds_a_wrong_pixel() {
        let (w, h) = (300u32, 20u32);
        let mut rgba = Vec::new();
        for y in 0..h {
            for x in 0..w {
                rgba.extend_from_slice(&rgb(pixel_xrgb8888(VARIANT_KMS, x, y)));
                rgba.push(0xff);
            }
        }
        assert_eq!(first_bad_pixel(&rgba, 4, w, h, VARIANT_KMS), None);
        assert_eq!(
            first_bad_pixel(&rgba, 4, w, h, VARIANT_BAR_BLOB),
            Some((0, 0))
        );
        rgba[(5 * 300 + 299) * 4 + 1] ^= 1;
        assert_eq!(first_bad_pixel(&rgba, 4, w, h, VARIANT_KMS), Some((299, 5)));
        assert_eq!(
            first_bad_pixel(&rgba[..100], 4, w, h, VARIANT_KMS),
            Some((25, 0))
        );
    }

    #[test]
    fn dma_bytes_differ_from_their_neighbours() {
        let v: Vec<u8> = (0..4096).map(dma_byte).collect();
        assert_eq!(v[0], 7);
        assert_eq!(v[1], 38);
        assert!(v.windows(2).all(|w| w[0] != w[1]));
        assert_ne!(&v[0..256], &v[256..512]);
    }

    #[test]
    fn pixels_encode_coordinates_and_variant() {
        assert_eq!(pixel_xrgb8888(0, 0, 0), 0xff00_0000);
        assert_eq!(pixel_xrgb8888(0, 0x12, 0x34), 0xff12_3400);
        assert_eq!(pixel_xrgb8888(0, 0x112, 0x234), 0xff12_3421);
        assert_eq!(pixel_xrgb8888(1, 0, 0), 0xff00_0040);
        assert_eq!(rgb(0xff12_3456), [0x12, 0x34, 0x56]);
        let mut img = vec![0u8; 300 * 2 * 4];
        fill_image(&mut img, 2, 300);
        // Pixel (299, 1): byte (300 + 299) * 4, stored B, G, R, X.
        let o = (300 + 299) * 4;
        assert_eq!(&img[o..o + 4], &[0x81, 1, 43, 0xff]);
        assert_eq!(blob_word(2, 300, o as u64), pixel_xrgb8888(2, 299, 1));
    }

    #[test]
    fn bar_blob_entries_are_reversed_disjoint_and_cover_the_blob() {
        let e = bar_blob_entries(0x10_0000, 256 * 192 * 4, 6, 4096).unwrap();
        assert_eq!(e.len(), 6);
        assert_eq!(e.iter().map(|x| x.1).sum::<u64>(), 256 * 192 * 4);
        assert_eq!(e[0], (0x10_0000 + 5 * 2 * 0x8000, 0x8000));
        assert_eq!(e[5], (0x10_0000, 0x8000));
        for w in e.windows(2) {
            assert!(
                w[1].0 + w[1].1 < w[0].0,
                "not out of order with a hole: {w:?}"
            );
        }
        // Uneven split: the last entry gets the rest and the holes stay.
        let e = bar_blob_entries(0, 5 * 4096, 4, 4096).unwrap();
        assert_eq!(
            e,
            vec![
                (3 * 12288, 4096),
                (2 * 12288, 4096),
                (12288, 4096),
                (0, 8192)
            ]
        );
        assert_eq!(bar_blob_span(&e, 0), 3 * 12288 + 4096);
        for w in e.windows(2) {
            assert!(
                w[1].0 + w[1].1 < w[0].0,
                "not out of order with a hole: {w:?}"
            );
        }
        assert!(bar_blob_entries(0, 3 * 4096, 4, 4096).is_none());
    }
}
