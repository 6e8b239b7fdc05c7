//! A display's own copy of a scanout (what VNC clients are sent, what a `wl_shm` buffer is filled
//! from), the damage a consumer has not seen yet, and the copy of a flushed rectangle into it.

use virtio_gpu_blob::display::{DisplayError, ScanoutFrame};
use virtio_gpu_blob::format::PixelFormat;
use virtio_gpu_blob::protocol::Rect;

/// A rectangle in framebuffer coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Area {
    /// Left.
    pub x: u16,
    /// Top.
    pub y: u16,
    /// Width.
    pub w: u16,
    /// Height.
    pub h: u16,
}

/// Largest framebuffer edge a picture keeps; a larger scanout is shown clipped to it (a picture
/// is bounded to 8192 x 8192 pixels, 256 MiB).
pub const MAX_EDGE: u32 = 8192;

/// Pixels `0x00RRGGBB` (in memory: DRM `XRGB8888`, `wl_shm` `xrgb8888`), row after row.
#[derive(Debug)]
pub struct Picture {
    width: u16,
    height: u16,
    pixels: Vec<u32>,
}

impl Default for Picture {
    fn default() -> Self {
        // Clients need some size before the guest sets a scanout.
        Picture::blank(640, 480)
    }
}

impl Picture {
    fn blank(width: u16, height: u16) -> Picture {
        Picture {
            width,
            height,
            pixels: vec![0; usize::from(width) * usize::from(height)],
        }
    }

    /// Width and height.
    pub fn size(&self) -> (u16, u16) {
        (self.width, self.height)
    }

    /// Resizes (clipping to [`MAX_EDGE`]) and blanks the picture; returns whether the size
    /// changed. Fails, keeping the old picture, when the memory cannot be had.
    pub fn resize(
        &mut self,
        width: u32,
        height: u32,
    ) -> Result<bool, std::collections::TryReserveError> {
        let w = width.clamp(1, MAX_EDGE) as u16;
        let h = height.clamp(1, MAX_EDGE) as u16;
        if (w, h) == (self.width, self.height) {
            // Same size (a guest may set its scanout again and again): no new allocation.
            self.pixels.fill(0);
            return Ok(false);
        }
        let len = usize::from(w) * usize::from(h);
        let mut pixels = Vec::new();
        pixels.try_reserve_exact(len)?;
        pixels.resize(len, 0);
        *self = Picture {
            width: w,
            height: h,
            pixels,
        };
        Ok(true)
    }

    /// Row `y` from column `x` on, `len` pixels (clipped to the screen), to write into.
    pub fn row_mut(&mut self, x: u16, y: u16, len: usize) -> &mut [u32] {
        if y >= self.height || x >= self.width {
            return &mut [];
        }
        let start = usize::from(y) * usize::from(self.width) + usize::from(x);
        let len = len.min(usize::from(self.width - x));
        &mut self.pixels[start..start + len]
    }

    /// Row `y` from column `x` on, `len` pixels (clipped to the screen), to read.
    pub fn row(&self, x: u16, y: u16, len: usize) -> &[u32] {
        if y >= self.height || x >= self.width {
            return &[];
        }
        let start = usize::from(y) * usize::from(self.width) + usize::from(x);
        let len = len.min(usize::from(self.width - x));
        &self.pixels[start..start + len]
    }

    /// Copies `rect` of `frame` into the picture (converted to `0x00RRGGBB`, clipped to both)
    /// and returns the area that changed. `row` is scratch space for one row of the frame.
    pub fn copy_in(
        &mut self,
        frame: &ScanoutFrame<'_>,
        rect: Rect,
        row: &mut Vec<u8>,
    ) -> Result<Option<Area>, DisplayError> {
        let format = PixelFormat::from_fourcc(frame.fourcc)
            .ok_or(DisplayError::UnsupportedFormat(frame.fourcc))?;
        let (sw, sh) = (u32::from(self.width), u32::from(self.height));
        // The rectangle within the frame and the picture.
        let x0 = rect.x.min(frame.width).min(sw);
        let y0 = rect.y.min(frame.height).min(sh);
        let x1 = rect.x.saturating_add(rect.width).min(frame.width).min(sw);
        let y1 = rect.y.saturating_add(rect.height).min(frame.height).min(sh);
        if x0 >= x1 || y0 >= y1 {
            return Ok(None);
        }
        let w = (x1 - x0) as usize;
        row.resize(w * 4, 0);
        let [r, g, b] = format.rgb;
        for y in y0..y1 {
            let at = frame.offset + u64::from(y) * u64::from(frame.stride) + u64::from(x0) * 4;
            frame.pixels.read_at(at, row)?;
            // x0, y < MAX_EDGE: they fit u16.
            let dst = self.row_mut(x0 as u16, y as u16, w);
            for (d, px) in dst.iter_mut().zip(row.chunks_exact(4)) {
                *d = u32::from(px[r]) << 16 | u32::from(px[g]) << 8 | u32::from(px[b]);
            }
        }
        Ok(Some(Area {
            x: x0 as u16,
            y: y0 as u16,
            w: w as u16,
            h: (y1 - y0) as u16,
        }))
    }

    /// Copies `area` into `out` (`area.w` per row); parts outside the screen read black.
    pub fn copy_area(&self, area: Area, out: &mut Vec<u32>) {
        out.clear();
        for y in area.y..area.y.saturating_add(area.h) {
            let before = out.len();
            if y < self.height && area.x < self.width {
                let start = usize::from(y) * usize::from(self.width) + usize::from(area.x);
                let n = usize::from(area.w).min(usize::from(self.width - area.x));
                out.extend_from_slice(&self.pixels[start..start + n]);
            }
            out.resize(before + usize::from(area.w), 0);
        }
    }
}

/// Most rectangles a client's damage keeps apart; beyond, they merge into their bounding box.
pub const MAX_DAMAGE_RECTS: usize = 8;

/// Areas changed since a client's last update: at most [`MAX_DAMAGE_RECTS`] rectangles, however
/// many flushes arrive while the client is slow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Damage {
    rects: Vec<Area>,
}

/// The smallest area holding `a` and `b`.
pub fn union(a: Area, b: Area) -> Area {
    let x0 = a.x.min(b.x);
    let y0 = a.y.min(b.y);
    let x1 = (u32::from(a.x) + u32::from(a.w)).max(u32::from(b.x) + u32::from(b.w));
    let y1 = (u32::from(a.y) + u32::from(a.h)).max(u32::from(b.y) + u32::from(b.h));
    Area {
        x: x0,
        y: y0,
        w: (x1 - u32::from(x0)).min(u32::from(u16::MAX)) as u16,
        h: (y1 - u32::from(y0)).min(u32::from(u16::MAX)) as u16,
    }
}

fn touches(a: Area, b: Area) -> bool {
    u32::from(a.x) <= u32::from(b.x) + u32::from(b.w)
        && u32::from(b.x) <= u32::from(a.x) + u32::from(a.w)
        && u32::from(a.y) <= u32::from(b.y) + u32::from(b.h)
        && u32::from(b.y) <= u32::from(a.y) + u32::from(a.h)
}

/// `area` clipped to a `width` x `height` screen (`None` when nothing is left).
pub fn clip(area: Area, width: u16, height: u16) -> Option<Area> {
    if area.x >= width || area.y >= height || area.w == 0 || area.h == 0 {
        return None;
    }
    Some(Area {
        x: area.x,
        y: area.y,
        w: area.w.min(width - area.x),
        h: area.h.min(height - area.y),
    })
}

impl Damage {
    /// Adds `area`, merging it into a rectangle it touches, or everything into one when there
    /// are too many.
    pub fn add(&mut self, area: Area) {
        if area.w == 0 || area.h == 0 {
            return;
        }
        let mut area = area;
        // Merge with every rectangle it touches (repeat: the union may touch more).
        while let Some(i) = self.rects.iter().position(|&r| touches(r, area)) {
            area = union(self.rects.swap_remove(i), area);
        }
        self.rects.push(area);
        if self.rects.len() > MAX_DAMAGE_RECTS {
            let all = self.rects.drain(..).reduce(union);
            self.rects.extend(all);
        }
    }

    /// Whether nothing is damaged.
    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    /// Takes the rectangles, clipped to a `width` x `height` screen.
    pub fn take(&mut self, width: u16, height: u16) -> Vec<Area> {
        self.rects
            .drain(..)
            .filter_map(|r| clip(r, width, height))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(x: u16, y: u16, w: u16, h: u16) -> Area {
        Area { x, y, w, h }
    }

    #[test]
    fn damage_merges_and_stays_bounded() {
        let mut d = Damage::default();
        d.add(a(0, 0, 10, 10));
        d.add(a(5, 5, 10, 10));
        assert_eq!(d.clone().take(100, 100), vec![a(0, 0, 15, 15)]);
        d.add(a(50, 50, 1, 1));
        assert_eq!(d.rects.len(), 2);
        // Thousands of disjoint flushes: never more than the bound, and their union covered.
        for i in 0..1000u16 {
            d.add(a((i % 30) * 3, (i / 30) * 3, 1, 1));
        }
        assert!(d.rects.len() <= MAX_DAMAGE_RECTS);
        let rects = d.take(1000, 1000);
        for i in 0..1000u16 {
            let (x, y) = ((i % 30) * 3, (i / 30) * 3);
            assert!(
                rects
                    .iter()
                    .any(|r| x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h),
                "({x},{y}) lost"
            );
        }
        assert!(d.rects.is_empty());
        d.add(a(0, 0, 0, 5));
        assert!(d.rects.is_empty(), "empty areas are not damage");
    }

    #[test]
    fn clipping() {
        assert_eq!(clip(a(90, 90, 20, 20), 100, 100), Some(a(90, 90, 10, 10)));
        assert_eq!(clip(a(100, 0, 5, 5), 100, 100), None);
        let mut d = Damage::default();
        d.add(a(60000, 60000, 65535, 65535));
        assert_eq!(d.take(100, 100), vec![]);
    }

    #[test]
    fn screen_copies_and_resizes() {
        let mut s = Picture::default();
        assert_eq!(s.size(), (640, 480));
        assert!(s.resize(4, 3).unwrap());
        s.row_mut(0, 0, 1)[0] = 9;
        assert!(!s.resize(4, 3).unwrap());
        let mut out = Vec::new();
        s.copy_area(
            Area {
                x: 0,
                y: 0,
                w: 1,
                h: 1,
            },
            &mut out,
        );
        assert_eq!(out, [0], "the same size blanks the picture too");
        s.row_mut(1, 1, 10).copy_from_slice(&[1, 2, 3]);
        assert!(s.row_mut(4, 0, 1).is_empty());
        s.copy_area(a(0, 1, 6, 2), &mut out);
        assert_eq!(out, vec![0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        s.resize(100_000, 0).unwrap();
        assert_eq!(s.size(), (MAX_EDGE as u16, 1));
    }
}
