//! The `capture=<dir>[,keep=N]` backend: a PNG per flushed frame, rate-limited, the newest `N`
//! kept.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtio_gpu_blob::display::{DisplayBackend, DisplayError, ScanoutFrame};
use virtio_gpu_blob::format::PixelFormat;
use virtio_gpu_blob::protocol::Rect;

use crate::GUEST_LOG_INTERVAL;

/// Writes `<dir>/frame-<scanout>-<NNNNNN>.png` for flushed frames, at most `max_fps` a second,
/// and deletes its oldest files beyond the newest `keep`.
///
/// The rate limit is checked before any pixel is read: a flush arriving sooner only marks its
/// scanout pending (counted as skipped); the pending frame is written by the scanout's next
/// allowed flush or by [`DisplayBackend::finish`] when the device goes away, so the last
/// picture is not lost. Frames are converted and encoded row by row (no frame-sized buffer).
#[derive(Debug)]
pub struct CaptureDisplay {
    dir: PathBuf,
    min_interval: Duration,
    keep: usize,
    last_write: Option<Instant>,
    written: u64,
    skipped: u64,
    pending: BTreeSet<u32>,
    files: VecDeque<PathBuf>,
}

impl CaptureDisplay {
    /// Writes into `dir`, which must be a writable directory (it is never created). `max_fps`
    /// 0 means no limit; `keep` (at least 1) bounds the files left in `dir`.
    pub fn new(dir: PathBuf, max_fps: u32, keep: usize) -> Result<Self, DisplayError> {
        crate::check_writable_dir(&dir).map_err(|e| DisplayError::Io(e.to_string()))?;
        let min_interval = if max_fps == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / max_fps
        };
        Ok(CaptureDisplay {
            dir,
            min_interval,
            keep: keep.max(1),
            last_write: None,
            written: 0,
            skipped: 0,
            pending: BTreeSet::new(),
            files: VecDeque::new(),
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

    fn write_png(&mut self, scanout_id: u32, frame: &ScanoutFrame<'_>) -> Result<(), DisplayError> {
        let format = PixelFormat::from_fourcc(frame.fourcc)
            .ok_or(DisplayError::UnsupportedFormat(frame.fourcc))?;
        let path = self
            .dir
            .join(format!("frame-{scanout_id}-{:06}.png", self.written));
        let (width, height) = (frame.width, frame.height);
        let result = Self::encode(&path, frame, format);
        // Counted (and rate-limited) even if it failed: a failing disk is not retried per flush.
        self.last_write = Some(Instant::now());
        self.written += 1;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        log_limit::info_limit_global!(
            1,
            GUEST_LOG_INTERVAL,
            "capture: wrote {} ({width}x{height})",
            path.display()
        );
        self.files.push_back(path);
        while self.files.len() > self.keep {
            if let Some(old) = self.files.pop_front() {
                if let Err(e) = std::fs::remove_file(&old) {
                    log_limit::warn_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "capture: removing {}: {e}",
                        old.display()
                    );
                }
            }
        }
        Ok(())
    }

    fn encode(
        path: &Path,
        frame: &ScanoutFrame<'_>,
        format: PixelFormat,
    ) -> Result<(), DisplayError> {
        let io = |e: std::io::Error| DisplayError::Io(format!("{}: {e}", path.display()));
        let png_err = |e: png::EncodingError| DisplayError::Io(format!("{}: {e}", path.display()));
        let file = File::create(path).map_err(io)?;
        let mut enc = png::Encoder::new(BufWriter::new(file), frame.width, frame.height);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        // Encoding runs on the device worker: favour speed over size.
        enc.set_compression(png::Compression::Fast);
        let mut stream = enc
            .write_header()
            .map_err(png_err)?
            .into_stream_writer()
            .map_err(png_err)?;
        let row_len = frame.width as usize * 4;
        let mut row = vec![0u8; row_len];
        let mut rgba = vec![0u8; row_len];
        for y in 0..frame.height {
            frame.read_row(y, &mut row)?;
            for (dst, px) in rgba.chunks_exact_mut(4).zip(row.chunks_exact(4)) {
                dst.copy_from_slice(&format.to_rgba(px));
            }
            stream.write_all(&rgba).map_err(io)?;
        }
        stream.finish().map_err(png_err)
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
        let too_soon = self
            .last_write
            .is_some_and(|last| last.elapsed() < self.min_interval);
        if too_soon {
            self.skipped += 1;
            self.pending.insert(scanout_id);
            return Ok(());
        }
        self.pending.remove(&scanout_id);
        self.write_png(scanout_id, frame)
    }

    fn finish(&mut self, scanout_id: u32, frame: &ScanoutFrame<'_>) -> Result<(), DisplayError> {
        if self.pending.remove(&scanout_id) && frame.width > 0 && frame.height > 0 {
            self.write_png(scanout_id, frame)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_gpu_blob::format::FORMATS;

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
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_decodable_png_with_the_pixels() {
        let dir = tmpdir("png");
        let mut cap = CaptureDisplay::new(dir.clone(), 0, 10).unwrap();
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

    /// Counts the rows read from it, fails past `ok_rows` reads when set.
    struct CountingSource {
        buf: Vec<u8>,
        reads: std::cell::Cell<u64>,
    }

    impl virtio_gpu_blob::exporter::PixelSource for CountingSource {
        fn size(&self) -> u64 {
            self.buf.len() as u64
        }
        fn read_at(
            &self,
            offset: u64,
            buf: &mut [u8],
        ) -> Result<(), virtio_gpu_blob::exporter::PixelReadError> {
            self.reads.set(self.reads.get() + 1);
            self.buf.read_at(offset, buf)
        }
    }

    fn first_pixel(path: &Path) -> [u8; 4] {
        let dec = png::Decoder::new(File::open(path).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut out = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut out).unwrap();
        [out[0], out[1], out[2], out[3]]
    }

    #[test]
    fn rate_limit_reads_no_pixel_and_finish_writes_the_skipped_frame() {
        let dir = tmpdir("rate");
        let mut cap = CaptureDisplay::new(dir.clone(), 1, 10).unwrap();
        let mut reads = Vec::new();
        let empty = Vec::new();
        for i in 0..5u8 {
            let src = CountingSource {
                buf: vec![i; 24],
                reads: std::cell::Cell::new(0),
            };
            let f = ScanoutFrame {
                pixels: &src,
                ..frame(&empty)
            };
            cap.flush(0, &f, Rect::default()).unwrap();
            reads.push(src.reads.get());
            if i == 4 {
                // The device goes away showing the last frame: the skipped flush is written.
                cap.finish(0, &f).unwrap();
                // Nothing is pending any more: a second finish writes nothing.
                cap.finish(0, &f).unwrap();
            }
        }
        // Only the first flush read pixels (2 rows); the skipped ones read nothing.
        assert_eq!(reads, vec![2, 0, 0, 0, 0]);
        assert_eq!((cap.written(), cap.skipped()), (2, 4));
        // Bytes 4,4,4 -> rgba 4,4,4,255.
        assert_eq!(first_pixel(&dir.join("frame-0-000001.png")), [4, 4, 4, 255]);
        assert!(!dir.join("frame-0-000002.png").exists());
        // A scanout that had nothing pending writes nothing at finish.
        cap.finish(1, &frame(&vec![9; 24])).unwrap();
        assert_eq!(cap.written(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_the_newest_keep_files_stay() {
        let dir = tmpdir("keep");
        let mut cap = CaptureDisplay::new(dir.clone(), 0, 3).unwrap();
        for i in 0..10u8 {
            cap.flush(0, &frame(&vec![i; 24]), Rect::default()).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "frame-0-000007.png",
                "frame-0-000008.png",
                "frame-0-000009.png"
            ]
        );
        assert_eq!(first_pixel(&dir.join("frame-0-000009.png")), [9, 9, 9, 255]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn short_source_is_an_error_not_a_panic() {
        let dir = tmpdir("short");
        let mut cap = CaptureDisplay::new(dir.clone(), 0, 10).unwrap();
        let buf = vec![0u8; 10];
        assert!(cap.flush(0, &frame(&buf), Rect::default()).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
