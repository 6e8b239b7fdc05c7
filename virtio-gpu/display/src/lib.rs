//! Display backends for the `virtio-gpu-blob` device, behind its
//! [`virtio_gpu_blob::DisplayBackend`] trait, and the `--display` argument that picks
//! them:
//!
//! - `headless`: [`virtio_gpu_blob::display::HeadlessDisplay`], nothing shown;
//! - `capture=<dir>[,keep=N]`: [`CaptureDisplay`], a PNG per flushed frame;
//! - `vnc=<listen>[,password-file=<path>][,input=on|off]`: [`vnc::VncDisplay`], an RFB server
//!   whose clients' keys and pointer reach the guest through an [`InputSink`];
//! - `wayland[=<socket>]`: [`wayland::WaylandDisplay`], a window per scanout on a Wayland
//!   compositor, handed the scanout's dma-buf when the compositor imports it.
//!
//! Several may be given: [`DisplayFanout`] hands every frame to each. New backends live here
//! (or in a crate of their own) and never touch the device.

mod capture;
mod fanout;
mod input;
mod picture;
pub mod vnc;
pub mod wayland;

use std::path::PathBuf;
use std::sync::Arc;

pub use capture::CaptureDisplay;
pub use fanout::DisplayFanout;
pub use input::InputSink;
use virtio_gpu_blob::display::{DisplayError, HeadlessDisplay};
use virtio_gpu_blob::DisplayBackend;
pub use vnc::{VncConfig, VncDisplay, VncListen};
pub use wayland::{WaylandConfig, WaylandDisplay};

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
    /// An RFB (VNC) server.
    Vnc(VncConfig),
    /// A Wayland client.
    Wayland(WaylandConfig),
}

/// A display's figures for the VMM's exit summary (one line), readable after it is gone.
pub type SummaryLine = Box<dyn Fn() -> String + Send + Sync>;

/// A display backend as [`DisplayConfig::build`] makes it.
pub struct BuiltDisplay {
    /// The backend, for the device.
    pub backend: Box<dyn DisplayBackend>,
    /// Its exit-summary line, if it has figures worth one.
    pub summary: Option<SummaryLine>,
}

impl DisplayConfig {
    /// Frames per second written by `capture=<dir>` unless told otherwise.
    pub const DEFAULT_CAPTURE_FPS: u32 = 10;
    /// Files `capture=<dir>` keeps unless `keep=N` says otherwise.
    pub const DEFAULT_CAPTURE_KEEP: usize = 100;

    /// Parses `headless`, `capture=<dir>[,keep=N]`,
    /// `vnc=<listen>[,password-file=<path>][,input=on|off]` or `wayland[=<socket>]` (the
    /// `--display` argument).
    pub fn parse(s: &str) -> Result<Self, DisplayConfigError> {
        if s == "headless" {
            return Ok(DisplayConfig::Headless);
        }
        if let Some(rest) = s.strip_prefix("wayland") {
            return WaylandConfig::parse(rest)
                .map(DisplayConfig::Wayland)
                .ok_or_else(|| DisplayConfigError::Unknown(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("vnc=") {
            return VncConfig::parse(rest).map(DisplayConfig::Vnc);
        }
        let Some(rest) = s.strip_prefix("capture=") else {
            return Err(DisplayConfigError::Unknown(s.to_string()));
        };
        let (dir, keep) = match rest.rsplit_once(",keep=") {
            Some((dir, n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => (dir, n),
                _ => return Err(DisplayConfigError::BadKeep(n.to_string())),
            },
            None => (rest, Self::DEFAULT_CAPTURE_KEEP),
        };
        if dir.is_empty() {
            return Err(DisplayConfigError::NoDirectory);
        }
        let dir = PathBuf::from(dir);
        check_writable_dir(&dir)?;
        Ok(DisplayConfig::Capture {
            dir,
            max_fps: Self::DEFAULT_CAPTURE_FPS,
            keep,
        })
    }

    /// Whether the display feeds keys and pointer to the guest (it wants input devices).
    pub fn wants_input(&self) -> bool {
        matches!(self, DisplayConfig::Vnc(v) if v.input)
    }

    /// Builds the backend; `input` is where a display that [`wants_input`](Self::wants_input)
    /// sends keys and pointer (a Wayland window uses it when there is one).
    pub fn build(&self, input: Option<Arc<dyn InputSink>>) -> Result<BuiltDisplay, DisplayError> {
        let plain = |backend: Box<dyn DisplayBackend>| BuiltDisplay {
            backend,
            summary: None,
        };
        Ok(match self {
            DisplayConfig::Headless => plain(Box::<HeadlessDisplay>::default()),
            DisplayConfig::Capture { dir, max_fps, keep } => {
                plain(Box::new(CaptureDisplay::new(dir.clone(), *max_fps, *keep)?))
            }
            DisplayConfig::Vnc(v) => {
                let input = if v.input { input } else { None };
                plain(Box::new(VncDisplay::start(v, input, "vmm")?))
            }
            DisplayConfig::Wayland(w) => {
                let display = WaylandDisplay::connect(w, input, "vmm")?;
                let summary = display.summary();
                BuiltDisplay {
                    backend: Box::new(display),
                    summary: Some(Box::new(move || summary.line())),
                }
            }
        })
    }
}

/// Why a `--display` argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisplayConfigError {
    /// Neither `headless`, `capture=...`, `vnc=...` nor `wayland[=...]`.
    #[error(
        "unknown display '{0}': expected 'headless', 'capture=<dir>[,keep=N]', \
         'vnc=<listen>[,password-file=<path>][,input=on|off]' or 'wayland[=<socket>]'"
    )]
    Unknown(String),
    /// The `vnc=` address is not usable.
    #[error("vnc={listen}: {reason}")]
    VncListen {
        /// What was given.
        listen: String,
        /// Why it is refused.
        reason: String,
    },
    /// An option of `vnc=` that does not exist or has a bad value.
    #[error("vnc: unknown option '{0}': expected password-file=<path> or input=on|off")]
    VncOption(String),
    /// The password file cannot be used.
    #[error("vnc password-file {}: {reason}", path.display())]
    VncPassword {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `keep=` is not a positive number.
    #[error("capture: keep={0} is not a number of files (1 or more)")]
    BadKeep(String),
    /// `capture=` without a directory.
    #[error("capture= needs a directory: capture=<dir>[,keep=N]")]
    NoDirectory,
    /// The directory does not exist or cannot be inspected.
    #[error("capture directory {}: {reason} (create it first; it is never created for you)", dir.display())]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The path is not a directory.
    #[error("capture directory {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// No file can be created in the directory.
    #[error("capture directory {} is not writable: {reason}", dir.display())]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// What the system said.
        reason: String,
    },
}

/// Checks that `dir` is an existing directory this process can create files in (by creating
/// and removing a probe file).
pub fn check_writable_dir(dir: &std::path::Path) -> Result<(), DisplayConfigError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(DisplayConfigError::NotADirectory(dir.to_path_buf())),
        Err(e) => {
            return Err(DisplayConfigError::Missing {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }
    let not_writable = |e: std::io::Error| DisplayConfigError::NotWritable {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let probe = dir.join(format!(".capture-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)
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
        let err = DisplayConfig::parse(&format!("capture={}", missing.display()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains("never created"),
            "{err}"
        );
        assert!(!missing.exists(), "a missing directory is not created");
        let file = base.join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = DisplayConfig::parse(&format!("capture={}", file.display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert!(
            DisplayConfig::parse("capture=/proc/self").is_err(),
            "/proc/self is not writable"
        );
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(
            DisplayConfig::parse("wayland"),
            Ok(DisplayConfig::Wayland(WaylandConfig { socket: None }))
        );
        assert_eq!(
            DisplayConfig::parse("wayland=/run/w.sock"),
            Ok(DisplayConfig::Wayland(WaylandConfig {
                socket: Some("/run/w.sock".into())
            }))
        );
        for bad in [
            "capture=",
            "capture=,keep=3",
            "capture=/x,keep=0",
            "capture=/x,keep=lots",
            "sdl",
            "wayland=",
            "waylandx",
        ] {
            assert!(DisplayConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
