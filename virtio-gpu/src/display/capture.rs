//! The `capture=<dir>` backend: a PNG per flushed frame, rate-limited.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{DisplayBackend, DisplayError, ScanoutFrame};
use crate::protocol::Rect;

/// A frame skipped by the rate limit, kept (one frame's RGBA, not guest memory) so that the
/// last picture is never lost: written by the next allowed flush or when the backend is dropped.
#[derive(Debug)]
struct Deferred {
    scanout_id: u32,
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

/// Writes `<dir>/frame-<scanout>-<NNNNNN>.png` for flushed frames, at most `max_fps` a second.
/// A flush arriving sooner is deferred (replacing an older deferred one) and counted as skipped.
#[derive(Debug)]
pub struct CaptureDisplay {
    dir: PathBuf,
    min_interval: Duration,
    last_write: Option<Instant>,
    written: u64,
    skipped: u64,
    deferred: Option<Deferred>,
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
            deferred: None,
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

    /// Writes the deferred frame, if any.
    pub fn write_deferred(&mut self) -> Result<(), DisplayError> {
        if let Some(d) = self.deferred.take() {
            self.write_rgba(d.scanout_id, d.width, d.height, &d.rgba)?;
        }
        Ok(())
    }

    fn write_rgba(
        &mut self,
        scanout_id: u32,
        width: u32,
        height: u32,
        rgba: &[u8],
    ) -> Result<(), DisplayError> {
        let path = self
            .dir
            .join(format!("frame-{scanout_id}-{:06}.png", self.written));
        let io = |e: std::io::Error| DisplayError::Io(format!("{}: {e}", path.display()));
        let file = File::create(&path).map_err(io)?;
        let mut enc = png::Encoder::new(BufWriter::new(file), width, height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        // Encoding runs on the device worker: favour speed over size.
        enc.set_compression(png::Compression::Fast);
        let png_err = |e: png::EncodingError| DisplayError::Io(format!("{}: {e}", path.display()));
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(rgba).map_err(png_err)?;
        w.finish().map_err(png_err)?;
        log::info!("capture: wrote {} ({width}x{height})", path.display());
        self.last_write = Some(Instant::now());
        self.written += 1;
        Ok(())
    }
}

impl Drop for CaptureDisplay {
    fn drop(&mut self) {
        if let Err(e) = self.write_deferred() {
            log::error!("capture: last frame: {e}");
        }
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
        if frame.width == 0 || frame.height == 0 {
            return Ok(());
        }
        let rgba = frame.to_rgba()?;
        let too_soon = self
            .last_write
            .is_some_and(|last| last.elapsed() < self.min_interval);
        if too_soon {
            self.skipped += 1;
            self.deferred = Some(Deferred {
                scanout_id,
                width: frame.width,
                height: frame.height,
                rgba,
            });
            return Ok(());
        }
        // This frame is newer than any deferred one.
        self.deferred = None;
        self.write_rgba(scanout_id, frame.width, frame.height, &rgba)
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
    fn rate_limit_skips_fast_flushes_but_keeps_the_last_frame() {
        let dir = tmpdir("rate");
        let mut cap = CaptureDisplay::new(dir.clone(), 1).unwrap();
        for i in 0..5u8 {
            let buf = vec![i; 24];
            cap.flush(0, &frame(&buf), Rect::default()).unwrap();
        }
        assert_eq!((cap.written(), cap.skipped()), (1, 4));
        drop(cap);
        // The last (deferred) frame is written on drop: bytes 4,4,4 -> rgba 4,4,4,255.
        let dec = png::Decoder::new(File::open(dir.join("frame-0-000001.png")).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut out = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut out).unwrap();
        assert_eq!(&out[0..4], &[4, 4, 4, 255]);
        assert!(!dir.join("frame-0-000002.png").exists());
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
