//! Decoding the PNG frames a scenario sends back (the vmm's capture display).

/// A decoded 8-bit image, rows without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per pixel: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    pub channels: usize,
    /// `width * height * channels` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes a PNG to 8-bit samples (palette and low bit depths expanded, 16-bit stripped).
pub fn decode_png(bytes: &[u8]) -> Result<Image, String> {
    let mut dec = png::Decoder::new(bytes);
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| format!("PNG header: {e}"))?;
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut pixels)
        .map_err(|e| format!("PNG data: {e}"))?;
    pixels.truncate(frame.buffer_size());
    let channels = frame.color_type.samples();
    if frame.bit_depth != png::BitDepth::Eight || frame.line_size != frame.width as usize * channels
    {
        return Err(format!(
            "unexpected PNG layout: {:?} {:?}, {} bytes a row",
            frame.color_type, frame.bit_depth, frame.line_size
        ));
    }
    Ok(Image {
        width: frame.width,
        height: frame.height,
        channels,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(w: u32, h: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
        out
    }

    #[test]
    fn rgba_and_rgb_pngs_decode_to_their_samples() {
        let rgba: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let img = decode_png(&encode(2, 3, png::ColorType::Rgba, &rgba)).unwrap();
        assert_eq!((img.width, img.height, img.channels), (2, 3, 4));
        assert_eq!(img.pixels, rgba);
        let rgb: Vec<u8> = (0..3 * 3).map(|i| (i * 20) as u8).collect();
        let img = decode_png(&encode(3, 1, png::ColorType::Rgb, &rgb)).unwrap();
        assert_eq!(img.channels, 3);
        assert_eq!(img.pixels, rgb);
    }

    #[test]
    fn a_corrupted_png_is_an_error() {
        let mut bytes = encode(4, 4, png::ColorType::Rgb, &[7; 48]);
        let n = bytes.len();
        bytes[n - 20] ^= 0xff; // inside IDAT / its CRC
        assert!(decode_png(&bytes).is_err());
        assert!(decode_png(b"not a png").is_err());
    }
}
