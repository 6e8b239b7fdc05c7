//! Which known image a captured frame shows, pixel for pixel: the patterns of
//! `guest_tools::pattern` that L2's programs paint, checked on the PNGs the vmm's capture display
//! wrote (the rig tests, and `check-frames` for the demo).

use guest_tools::pattern::{
    first_bad_pixel, pixel_xrgb8888, rgb, VARIANT_BAR_BLOB, VARIANT_MIXED_BLOB,
};

use crate::image::{decode_png, Image};

/// An image an L2 program shows: pattern `variant` (`guest_tools::pattern::pixel_xrgb8888`) at
/// `width` x `height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownImage {
    /// Its name in messages, e.g. `blob 1`.
    pub name: &'static str,
    /// How it reaches the display.
    pub about: &'static str,
    /// Its pattern variant.
    pub variant: u8,
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

/// The images L2's gpu-user-blob shows, in this order (scenario gpu-bar-blob, the demo).
pub const GPU_USER_BLOB_IMAGES: [KnownImage; 2] = [
    KnownImage {
        name: "blob 1",
        about: "six out-of-order ranges of the passed-through BAR, exported as ONE VFIO dma-buf",
        variant: VARIANT_BAR_BLOB,
        width: 256,
        height: 192,
    },
    KnownImage {
        name: "blob 2",
        about: "guest RAM + the passed-through BAR, copied by the CPU",
        variant: VARIANT_MIXED_BLOB,
        width: 256,
        height: 192,
    },
];

impl KnownImage {
    /// (R, G, B) of its pixel (x, y).
    pub fn rgb_at(&self, x: u32, y: u32) -> [u8; 3] {
        rgb(pixel_xrgb8888(self.variant, x, y))
    }

    /// What it looks like: its size and the colours of its four corners.
    pub fn describe(&self) -> String {
        let (r, b) = (self.width.saturating_sub(1), self.height.saturating_sub(1));
        format!(
            "a {}x{} gradient, red growing left to right and green top to bottom: \
             RGB {:?} top left, {:?} top right, {:?} bottom left, {:?} bottom right",
            self.width,
            self.height,
            self.rgb_at(0, 0),
            self.rgb_at(r, 0),
            self.rgb_at(0, b),
            self.rgb_at(r, b)
        )
    }
}

/// Which of `known` the decoded image `img` is, pixel for pixel; otherwise, for each of `known`,
/// why it is not that one (its size, or its first wrong pixel with the colours found and wanted).
pub fn identify_image<'a>(img: &Image, known: &'a [KnownImage]) -> Result<&'a KnownImage, String> {
    let mut why = Vec::new();
    for k in known {
        if (img.width, img.height) != (k.width, k.height) {
            why.push(format!(
                "not {} ({}x{}, this is {}x{})",
                k.name, k.width, k.height, img.width, img.height
            ));
            continue;
        }
        match first_bad_pixel(&img.pixels, img.channels, k.width, k.height, k.variant) {
            None => return Ok(k),
            Some((x, y)) => {
                let i = (y as usize * img.width as usize + x as usize) * img.channels;
                let found = img
                    .pixels
                    .get(i..i + img.channels.min(3))
                    .unwrap_or_default();
                why.push(format!(
                    "not {}: pixel ({x}, {y}) is {found:?}, not {:?}",
                    k.name,
                    k.rgb_at(x, y)
                ));
            }
        }
    }
    if why.is_empty() {
        why.push("no image to compare with".into());
    }
    Err(why.join("; "))
}

/// [`identify_image`] of a PNG file's bytes (a decoding error is the reason too).
pub fn identify_frame<'a>(png: &[u8], known: &'a [KnownImage]) -> Result<&'a KnownImage, String> {
    identify_image(&decode_png(png)?, known)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Image `k` as RGB (3 channels) or RGBA (4).
    fn image_of(k: &KnownImage, channels: usize) -> Image {
        let mut pixels = Vec::new();
        for y in 0..k.height {
            for x in 0..k.width {
                pixels.extend_from_slice(&k.rgb_at(x, y));
                if channels == 4 {
                    pixels.push(0xff);
                }
            }
        }
        Image {
            width: k.width,
            height: k.height,
            channels,
            pixels,
        }
    }

    fn png_of(img: &Image) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, img.width, img.height);
        enc.set_color(match img.channels {
            3 => png::ColorType::Rgb,
            _ => png::ColorType::Rgba,
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&img.pixels).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn each_known_image_is_recognised_as_itself() {
        for k in &GPU_USER_BLOB_IMAGES {
            for channels in [3, 4] {
                let img = image_of(k, channels);
                assert_eq!(identify_image(&img, &GPU_USER_BLOB_IMAGES), Ok(k));
                assert_eq!(identify_frame(&png_of(&img), &GPU_USER_BLOB_IMAGES), Ok(k));
            }
        }
    }

    #[test]
    fn one_wrong_pixel_makes_a_frame_wrong() {
        let k = &GPU_USER_BLOB_IMAGES[0];
        let mut img = image_of(k, 4);
        let i = (7 * k.width as usize + 5) * 4;
        img.pixels[i] ^= 1;
        let why = identify_image(&img, &GPU_USER_BLOB_IMAGES).unwrap_err();
        assert!(why.contains("not blob 1: pixel (5, 7)"), "{why}");
        // Blob 2 differs from blob 1 in every pixel's blue.
        assert!(why.contains("not blob 2: pixel (0, 0)"), "{why}");
    }

    #[test]
    fn a_frame_of_another_size_is_wrong() {
        let k = KnownImage {
            width: 64,
            ..GPU_USER_BLOB_IMAGES[0]
        };
        let why = identify_frame(&png_of(&image_of(&k, 3)), &GPU_USER_BLOB_IMAGES).unwrap_err();
        assert!(
            why.contains("not blob 1 (256x192, this is 64x192)"),
            "{why}"
        );
        assert!(identify_frame(b"not a png", &GPU_USER_BLOB_IMAGES).is_err());
    }

    #[test]
    fn the_description_gives_the_corner_colours() {
        let d = GPU_USER_BLOB_IMAGES[0].describe();
        assert!(d.starts_with("a 256x192 gradient"), "{d}");
        assert!(d.contains("[0, 0, 64] top left"), "{d}");
        assert!(d.contains("[255, 191, 64] bottom right"), "{d}");
        assert!(GPU_USER_BLOB_IMAGES[1]
            .describe()
            .contains("[0, 0, 128] top left"));
    }
}
