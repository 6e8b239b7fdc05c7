//! The `capture=<dir>` backend: a PNG per flushed frame, rate-limited.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{DisplayBackend, DisplayError, ScanoutFrame};
use crate::protocol::Rect;

/// Writes `<dir>/frame-<scanout>-<NNNNNN>.png` for flushed frames, at most `max_fps` a second
/// (flushes arriving sooner are skipped and counted).
#[derive(Debug)]
pub struct CaptureDisplay {
    dir: PathBuf,
    min_interval: Duration,
    last_write: Option<Instant>,
    written: u64,
    skipped: u64,
}

impl CaptureDisplay {
    /// Creates the directory if needed. `max_fps` 0 means no limit.
    pub fn new(dir: PathBuf, max_fps: u32) -> Result<Self, DisplayError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| DisplayError::Io(format!("creating {}: {e}", dir.display())))?;
        let min_interval = if max_fps == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / max_fps
        };
        Ok(CaptureDisplay {
            dir,
            min_interval,
            last_write: None,
            written: 0,
            skipped: 0,
        })
    }

    /// PNG files written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes skipped by the rate limit.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_png(&self, path: &Path, frame: &ScanoutFrame<'_>) -> Result<(), DisplayError> {
        let rgba = frame.to_rgba()?;
        let io = |e: std::io::Error| DisplayError::Io(format!("{}: {e}", path.display()));
        let file = File::create(path).map_err(io)?;
        let mut enc = png::Encoder::new(BufWriter::new(file), frame.width, frame.height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| DisplayError::Io(format!("{}: {e}", path.display()));
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(&rgba).map_err(png_err)?;
        w.finish().map_err(png_err)
    }
}

impl DisplayBackend for CaptureDisplay {
    fn set_scanout(&mut self, _: u32, _: Option<&ScanoutFrame<'_>>) -> Result<(), DisplayError> {
        Ok(())
    }

    fn flush(
        &mut self,
        scanout_id: u32,
        frame: &ScanoutFrame<'_>,
        _rect: Rect,
    ) -> Result<(), DisplayError> {
        let now = Instant::now();
        if let Some(last) = self.last_write {
            if now.duration_since(last) < self.min_interval {
                self.skipped += 1;
                return Ok(());
            }
        }
        if frame.width == 0 || frame.height == 0 {
            return Ok(());
        }
        let path = self
            .dir
            .join(format!("frame-{scanout_id}-{:06}.png", self.written));
        self.write_png(&path, frame)?;
        log::info!(
            "capture: wrote {} ({}x{})",
            path.display(),
            frame.width,
            frame.height
        );
        self.last_write = Some(now);
        self.written += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FORMATS;

    fn frame(buf: &Vec<u8>) -> ScanoutFrame<'_> {
        ScanoutFrame {
            dmabuf: None,
            pixels: buf,
            fourcc: FORMATS[1].fourcc,
            width: 3,
            height: 2,
            stride: 12,
            offset: 0,
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vgpu-capture-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn writes_decodable_png_with_the_pixels() {
        let dir = tmpdir("png");
        let mut cap = CaptureDisplay::new(dir.clone(), 0).unwrap();
        let buf: Vec<u8> = (0..24u8).collect();
        cap.flush(0, &frame(&buf), Rect::default()).unwrap();
        assert_eq!(cap.written(), 1);
        let dec = png::Decoder::new(File::open(dir.join("frame-0-000000.png")).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut out = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut out).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        // XRGB bytes b,g,r,x = 0,1,2,3 -> rgba 2,1,0,255.
        assert_eq!(&out[0..4], &[2, 1, 0, 255]);
        assert_eq!(&out[20..24], &[22, 21, 20, 255]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rate_limit_skips_fast_flushes() {
        let dir = tmpdir("rate");
        let mut cap = CaptureDisplay::new(dir.clone(), 1).unwrap();
        let buf = vec![0u8; 24];
        for _ in 0..5 {
            cap.flush(0, &frame(&buf), Rect::default()).unwrap();
        }
        assert_eq!((cap.written(), cap.skipped()), (1, 4));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn short_source_is_an_error_not_a_panic() {
        let dir = tmpdir("short");
        let mut cap = CaptureDisplay::new(dir.clone(), 0).unwrap();
        let buf = vec![0u8; 10];
        assert!(cap.flush(0, &frame(&buf), Rect::default()).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
