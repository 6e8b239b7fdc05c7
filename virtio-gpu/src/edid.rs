//! A minimal EDID 1.4 base block announcing one preferred mode and the common VESA modes a guest
//! may switch to.

/// Length of an EDID base block.
pub const EDID_BLOCK_LEN: usize = 128;

/// Established timings (bytes 35 and 36): 640x480, 800x600 and 1024x768 at 60 Hz.
const ESTABLISHED_TIMINGS: [u8; 2] = [0x21, 0x08];

/// Builds a 128-byte EDID whose preferred detailed timing is `width` x `height` at 60 Hz, with
/// the established timings 640x480, 800x600 and 1024x768 at 60 Hz as further modes.
/// Sizes beyond the 12-bit fields of a detailed timing are clamped to 4095.
pub fn generate(width: u32, height: u32) -> [u8; EDID_BLOCK_LEN] {
    let mut e = [0u8; EDID_BLOCK_LEN];
    // Header.
    e[0..8].copy_from_slice(&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]);
    // Manufacturer "RVM" packed as three 5-bit letters, big-endian.
    let m = |c: u8| u16::from(c - b'A' + 1);
    let id = (m(b'R') << 10) | (m(b'V') << 5) | m(b'M');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&1u16.to_le_bytes()); // product code
    e[16] = 1; // week
    e[17] = 34; // year 2024 - 1990
    e[18] = 1; // EDID 1.4
    e[19] = 4;
    e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
    e[21] = 53; // cm
    e[22] = 30;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // RGB, preferred timing is native
    e[35..37].copy_from_slice(&ESTABLISHED_TIMINGS);
    // Standard timings: none (0x01 0x01 marks an unused slot).
    e[38..54].fill(0x01);
    // Detailed timing descriptor 1 at byte 54.
    let h = width.clamp(1, 4095);
    let v = height.clamp(1, 4095);
    let (hblank, vblank) = (160u32, 35u32);
    let clock_10khz = ((h + hblank) * (v + vblank) * 60)
        .div_ceil(10_000)
        .min(0xffff);
    let d = &mut e[54..72];
    d[0..2].copy_from_slice(&(clock_10khz as u16).to_le_bytes());
    d[2] = (h & 0xff) as u8;
    d[3] = (hblank & 0xff) as u8;
    d[4] = (((h >> 8) & 0xf) << 4 | ((hblank >> 8) & 0xf)) as u8;
    d[5] = (v & 0xff) as u8;
    d[6] = (vblank & 0xff) as u8;
    d[7] = (((v >> 8) & 0xf) << 4 | ((vblank >> 8) & 0xf)) as u8;
    d[8] = 48; // h front porch
    d[9] = 32; // h sync width
    d[10] = (3 << 4) | 5; // v front porch 3, v sync 5
    d[11] = 0;
    d[17] = 0x1e; // digital separate sync, +h +v
                  // Descriptor 2: monitor name.
    let n = &mut e[72..90];
    n[3] = 0xfc;
    n[5..18].copy_from_slice(b"rvmm-gpu\n    ");
    // Descriptors 3 and 4: dummy.
    e[93] = 0x10;
    e[111] = 0x10;
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_header_and_mode() {
        let e = generate(1280, 800);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(&e[0..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
        let h = u32::from(e[56]) | (u32::from(e[58] >> 4) << 8);
        let v = u32::from(e[59]) | (u32::from(e[61] >> 4) << 8);
        assert_eq!((h, v), (1280, 800));
        // 640x480@60 and 800x600@60 (byte 35, bits 5 and 0), 1024x768@60 (byte 36, bit 3).
        assert_eq!((e[35], e[36]), (1 << 5 | 1, 1 << 3));
        assert!(e[38..54].iter().all(|&b| b == 1));
    }

    #[test]
    fn huge_sizes_are_clamped() {
        let e = generate(u32::MAX, u32::MAX);
        let h = u32::from(e[56]) | (u32::from(e[58] >> 4) << 8);
        assert_eq!(h, 4095);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
}
