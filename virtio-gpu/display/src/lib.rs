//! Display backends for the `virtio-gpu-blob` device, behind its
//! [`DisplayBackend`](virtio_gpu_blob::DisplayBackend) trait, and the `--display` argument that picks
//! them:
//!
//! - `headless`: [`virtio_gpu_blob::display::HeadlessDisplay`], nothing shown;
//! - `capture=<dir>[,keep=N]`: [`CaptureDisplay`], a PNG per flushed frame.
//!
//! New backends live here (or in a crate of their own) and never touch the device.

mod capture;

use std::path::PathBuf;

pub use capture::CaptureDisplay;
use virtio_gpu_blob::display::{DisplayError, HeadlessDisplay};
use virtio_gpu_blob::DisplayBackend;

/// Interval of the rate limit on log lines a guest can trigger (through its flushes): the
/// first line of a kind is logged, then at most one per interval with the count suppressed.
pub(crate) const GUEST_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The `--display` choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayConfig {
    /// No output.
    Headless,
    /// A PNG per flushed frame in this directory, at most `max_fps` per second, the newest
    /// `keep` files kept.
    Capture {
        /// Output directory.
        dir: PathBuf,
        /// Rate limit.
        max_fps: u32,
        /// Files kept (older ones are deleted).
        keep: usize,
    },
}

impl DisplayConfig {
    /// Frames per second written by `capture=<dir>` unless told otherwise.
    pub const DEFAULT_CAPTURE_FPS: u32 = 10;
    /// Files `capture=<dir>` keeps unless `keep=N` says otherwise.
    pub const DEFAULT_CAPTURE_KEEP: usize = 100;

    /// Parses `headless` or `capture=<dir>[,keep=N]` (the `--display` argument).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "headless" {
            return Ok(DisplayConfig::Headless);
        }
        let Some(rest) = s.strip_prefix("capture=") else {
            return Err(format!(
                "unknown display '{s}': expected 'headless' or 'capture=<dir>[,keep=N]'"
            ));
        };
        let (dir, keep) = match rest.rsplit_once(",keep=") {
            Some((dir, n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => (dir, n),
                _ => {
                    return Err(format!(
                        "capture: keep={n} is not a number of files (1 or more)"
                    ))
                }
            },
            None => (rest, Self::DEFAULT_CAPTURE_KEEP),
        };
        if dir.is_empty() {
            return Err("capture= needs a directory: capture=<dir>[,keep=N]".to_string());
        }
        let dir = PathBuf::from(dir);
        check_writable_dir(&dir)?;
        Ok(DisplayConfig::Capture {
            dir,
            max_fps: Self::DEFAULT_CAPTURE_FPS,
            keep,
        })
    }

    /// Builds the backend (creates the capture directory).
    pub fn build(&self) -> Result<Box<dyn DisplayBackend>, DisplayError> {
        Ok(match self {
            DisplayConfig::Headless => Box::new(HeadlessDisplay::default()),
            DisplayConfig::Capture { dir, max_fps, keep } => {
                Box::new(CaptureDisplay::new(dir.clone(), *max_fps, *keep)?)
            }
        })
    }
}

/// Checks that `dir` is an existing directory this process can create files in (by creating
/// and removing a probe file). The message names the directory and what is wrong.
pub fn check_writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("capture directory {shown} is not a directory")),
        Err(e) => {
            return Err(format!(
                "capture directory {shown}: {e} (create it first; it is never created for you)"
            ))
        }
    }
    let probe = dir.join(format!(".capture-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("capture directory {shown} is not writable: {e}"))?;
    std::fs::remove_file(&probe).map_err(|e| {
        format!(
            "capture directory {shown}: removing {}: {e}",
            probe.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_argument() {
        assert_eq!(
            DisplayConfig::parse("headless"),
            Ok(DisplayConfig::Headless)
        );
        let base = std::env::temp_dir().join(format!("vgpu-display-{}", std::process::id()));
        let with_comma = base.join("a,b");
        std::fs::create_dir_all(&with_comma).unwrap();
        assert_eq!(
            DisplayConfig::parse(&format!("capture={}", base.display())),
            Ok(DisplayConfig::Capture {
                dir: base.clone(),
                max_fps: DisplayConfig::DEFAULT_CAPTURE_FPS,
                keep: DisplayConfig::DEFAULT_CAPTURE_KEEP,
            })
        );
        assert_eq!(
            DisplayConfig::parse(&format!("capture={},keep=16", with_comma.display())),
            Ok(DisplayConfig::Capture {
                dir: with_comma,
                max_fps: DisplayConfig::DEFAULT_CAPTURE_FPS,
                keep: 16,
            })
        );
        // Missing, not a directory, not writable: refused with a message naming it.
        let missing = base.join("missing");
        let err = DisplayConfig::parse(&format!("capture={}", missing.display())).unwrap_err();
        assert!(
            err.contains("missing") && err.contains("never created"),
            "{err}"
        );
        assert!(!missing.exists(), "a missing directory is not created");
        let file = base.join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = DisplayConfig::parse(&format!("capture={}", file.display())).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert!(
            DisplayConfig::parse("capture=/proc/self").is_err(),
            "/proc/self is not writable"
        );
        std::fs::remove_dir_all(&base).unwrap();
        for bad in [
            "capture=",
            "capture=,keep=3",
            "capture=/x,keep=0",
            "capture=/x,keep=lots",
            "sdl",
        ] {
            assert!(DisplayConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
