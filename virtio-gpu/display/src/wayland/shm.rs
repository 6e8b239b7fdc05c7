//! `wl_shm` buffers: a memfd per buffer, filled from the display's picture with `pwrite` (no
//! mapping in this process), `xrgb8888` with the unused byte 0xff.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use crate::picture::{Area, Picture};

/// The memory behind one `wl_shm` buffer.
#[derive(Debug)]
pub struct ShmMemory {
    file: File,
    width: u16,
    height: u16,
    row: Vec<u8>,
}

impl ShmMemory {
    /// A zeroed buffer of `width` x `height` `xrgb8888` pixels.
    pub fn new(width: u16, height: u16) -> std::io::Result<Self> {
        let file = File::from(rustix::fs::memfd_create(
            "vmm-wl-shm",
            rustix::fs::MemfdFlags::CLOEXEC,
        )?);
        file.set_len(Self::len_of(width, height))?;
        Ok(ShmMemory {
            file,
            width,
            height,
            row: Vec::new(),
        })
    }

    fn len_of(width: u16, height: u16) -> u64 {
        u64::from(width) * u64::from(height) * 4
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        Self::len_of(self.width, self.height)
    }

    /// Bytes between rows.
    pub fn stride(&self) -> u32 {
        u32::from(self.width) * 4
    }

    /// The descriptor to hand to `wl_shm.create_pool`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Copies `area` of `picture` (clipped to both) into the buffer; returns the bytes copied.
    pub fn fill(&mut self, picture: &Picture, area: Area) -> std::io::Result<u64> {
        let (pw, ph) = picture.size();
        let w = self.width.min(pw);
        let h = self.height.min(ph);
        if area.x >= w || area.y >= h {
            return Ok(0);
        }
        let cols = usize::from(area.w.min(w - area.x));
        let rows = area.h.min(h - area.y);
        let mut copied = 0;
        for y in area.y..area.y + rows {
            let src = picture.row(area.x, y, cols);
            self.row.clear();
            // The X byte is 0xff: Weston's pixman renderer (10.x) shows xrgb8888 pixels whose
            // unused byte is 0 as black.
            self.row
                .extend(src.iter().flat_map(|p| (p | 0xff00_0000).to_le_bytes()));
            let at = u64::from(y) * u64::from(self.stride()) + u64::from(area.x) * 4;
            self.file.write_all_at(&self.row, at)?;
            copied += self.row.len() as u64;
        }
        Ok(copied)
    }

    /// Reads the buffer back (tests).
    #[cfg(test)]
    pub fn contents(&self) -> Vec<u8> {
        let mut v = vec![0; self.len() as usize];
        self.file.read_exact_at(&mut v, 0).unwrap();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_gpu_blob::display::ScanoutFrame;
    use virtio_gpu_blob::protocol::Rect;

    #[test]
    fn fills_the_area_from_the_picture_as_xrgb8888() {
        // A 3x2 BGRX frame: the picture is 0x00RRGGBB, the buffer little-endian xrgb8888.
        let fourcc = virtio_gpu_blob::format::FORMATS[1].fourcc; // XR24: bytes B, G, R, X
        let mut px = Vec::new();
        for i in 0..6u8 {
            px.extend_from_slice(&[i, 10 + i, 20 + i, 0]);
        }
        let frame = ScanoutFrame {
            dmabuf: None,
            pixels: &px,
            fourcc,
            width: 3,
            height: 2,
            stride: 12,
            offset: 0,
        };
        let mut picture = Picture::default();
        picture.resize(3, 2).unwrap();
        let all = Rect {
            x: 0,
            y: 0,
            width: 3,
            height: 2,
        };
        picture.copy_in(&frame, all, &mut Vec::new()).unwrap();
        let mut shm = ShmMemory::new(3, 2).unwrap();
        let area = Area {
            x: 1,
            y: 1,
            w: 5,
            h: 5,
        };
        assert_eq!(shm.fill(&picture, area).unwrap(), 8, "clipped to 2x1");
        let got = shm.contents();
        assert_eq!(&got[..16], &[0; 16], "outside the area: untouched");
        assert_eq!(&got[16..24], &[4, 14, 24, 0xff, 5, 15, 25, 0xff]);
        assert_eq!(shm.stride(), 12);
    }
}
