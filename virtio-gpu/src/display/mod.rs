//! Display backends: where scanouts go.
//!
//! A backend receives each scanout as a [`ScanoutFrame`] (a dma-buf when there is one, always
//! a CPU-readable [`PixelSource`], the fourcc, size, stride and offset) and each flush as a
//! rectangle. It reads rows through the pixel source on demand; it never copies guest memory
//! wholesale.

mod headless;

use std::os::fd::BorrowedFd;

pub use headless::HeadlessDisplay;

use crate::exporter::{PixelReadError, PixelSource};
use crate::format::PixelFormat;
use crate::protocol::Rect;

/// A scanout's buffer as the backend sees it.
pub struct ScanoutFrame<'a> {
    /// The dma-buf behind the scanout, when the blob was exported (zero-copy consumers
    /// import it; 2D resources and CPU-path blobs have none).
    pub dmabuf: Option<BorrowedFd<'a>>,
    /// CPU-readable bytes of the buffer (dma-buf CPU mapping, guest memory, or host copy).
    pub pixels: &'a dyn PixelSource,
    /// DRM fourcc.
    pub fourcc: u32,
    /// Visible width in pixels.
    pub width: u32,
    /// Visible height in pixels.
    pub height: u32,
    /// Bytes between rows.
    pub stride: u32,
    /// Byte offset of the first visible pixel in `pixels`.
    pub offset: u64,
}

impl ScanoutFrame<'_> {
    /// Reads row `y` (visible pixels only) into `row` (`width * 4` bytes).
    pub fn read_row(&self, y: u32, row: &mut [u8]) -> Result<(), PixelReadError> {
        let at = self.offset + u64::from(y) * u64::from(self.stride);
        self.pixels.read_at(at, row)
    }

    /// The frame as tightly packed RGBA rows (one frame's worth of pixels, for encoders).
    pub fn to_rgba(&self) -> Result<Vec<u8>, DisplayError> {
        let format = PixelFormat::from_fourcc(self.fourcc)
            .ok_or(DisplayError::UnsupportedFormat(self.fourcc))?;
        let row_len = self.width as usize * 4;
        let total = row_len
            .checked_mul(self.height as usize)
            .ok_or_else(|| DisplayError::Io("frame size overflows".into()))?;
        let mut row = Vec::new();
        row.try_reserve_exact(row_len)
            .map_err(|e| DisplayError::Io(e.to_string()))?;
        row.resize(row_len, 0);
        let mut out = Vec::new();
        out.try_reserve_exact(total)
            .map_err(|e| DisplayError::Io(e.to_string()))?;
        for y in 0..self.height {
            self.read_row(y, &mut row)?;
            for px in row.chunks_exact(4) {
                out.extend_from_slice(&format.to_rgba(px));
            }
        }
        Ok(out)
    }
}

/// Errors of display backends (host-side: logged, never sent to the guest).
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// Reading pixels failed.
    #[error(transparent)]
    Pixels(#[from] PixelReadError),
    /// The fourcc has no converter.
    #[error("unsupported fourcc {0:#x}")]
    UnsupportedFormat(u32),
    /// Writing output failed.
    #[error("display output: {0}")]
    Io(String),
}

/// A cursor image and position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CursorState {
    /// Cursor resource (0: hidden).
    pub resource_id: u32,
    /// Position x.
    pub x: u32,
    /// Position y.
    pub y: u32,
    /// Hot spot x.
    pub hot_x: u32,
    /// Hot spot y.
    pub hot_y: u32,
}

/// Where scanouts go.
pub trait DisplayBackend: Send {
    /// A scanout now shows `frame`, or nothing (`None`).
    fn set_scanout(
        &mut self,
        scanout_id: u32,
        frame: Option<&ScanoutFrame<'_>>,
    ) -> Result<(), DisplayError>;

    /// `rect` of the scanout's frame changed.
    fn flush(
        &mut self,
        scanout_id: u32,
        frame: &ScanoutFrame<'_>,
        rect: Rect,
    ) -> Result<(), DisplayError>;

    /// The cursor changed (image or position). Default: ignored.
    fn cursor(&mut self, _scanout_id: u32, _cursor: CursorState) {}

    /// The device is going away and `frame` is what the scanout shows last: a backend that
    /// skipped flushes (rate limit) presents it now. Default: nothing to do.
    fn finish(&mut self, _scanout_id: u32, _frame: &ScanoutFrame<'_>) -> Result<(), DisplayError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rows_respect_stride_and_offset() {
        // 2x2 XRGB frame at offset 4 with stride 12 (one padding pixel per row).
        let mut buf = vec![0u8; 4 + 12 * 2];
        buf[4..8].copy_from_slice(&0x00ff_0000u32.to_le_bytes()); // red
        buf[8..12].copy_from_slice(&0x0000_ff00u32.to_le_bytes()); // green
        buf[16..20].copy_from_slice(&0x0000_00ffu32.to_le_bytes()); // blue
        buf[20..24].copy_from_slice(&0x00ff_ffffu32.to_le_bytes()); // white
        let frame = ScanoutFrame {
            dmabuf: None,
            pixels: &buf,
            fourcc: crate::format::FORMATS[1].fourcc,
            width: 2,
            height: 2,
            stride: 12,
            offset: 4,
        };
        assert_eq!(
            frame.to_rgba().unwrap(),
            vec![255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255, 255, 255, 255, 255]
        );
    }
}
