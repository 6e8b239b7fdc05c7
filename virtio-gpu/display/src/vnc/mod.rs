//! The `vnc=<listen>[,password-file=<path>][,input=on|off]` backend: an RFB server (RFC 6143,
//! versions 3.3, 3.7 and 3.8) showing scanout 0 to any number of clients, with their keys and
//! pointer going to the guest through an [`InputSink`].
//!
//! - Security: None (loopback and unix sockets only, checked when parsing) or VNC
//!   Authentication (`password-file`).
//! - Encodings: Raw and ZRLE (lossless), the DesktopSize pseudo-encoding for mode changes. The
//!   guest's cursor is drawn by the guest into the frame or not shown (no Cursor
//!   pseudo-encoding: the device hands backends the cursor's position, not its image).
//! - The GPU's thread copies each flushed rectangle, read through the frame's pixel source
//!   (for passthrough memory the fault-free read path), into the server's copy of the screen
//!   and merges it into every client's damage; client threads encode and send. A slow or
//!   stuck client only delays itself, and its damage stays a few rectangles.
//!
//! Written here on `flate2` and `des` rather than taken from a published RFB server crate:
//! those (`rustvncserver`, `rfb`) run on Tokio, own the framebuffer as whole-frame copies pushed
//! by the application, and `rustvncserver` needs a newer Rust than this workspace; the
//! server side of RFB that a VMM needs is small (handshake, six client messages, two
//! encodings) and this keeps it threads-only with bounded memory per client.

mod auth;
mod client;
mod config;
pub mod encode;
mod handshake;
mod keysym;
pub mod protocol;
mod server;
mod stream;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_client;

use std::sync::Arc;

pub use config::{VncConfig, VncListen};
pub use keysym::linux_key;
pub use server::{HANDSHAKE_TIMEOUT, MAX_CONNECTIONS};
use virtio_gpu_blob::display::{DisplayBackend, DisplayError, ScanoutFrame};
use virtio_gpu_blob::protocol::Rect;

use self::server::Server;
use crate::input::InputSink;
use crate::picture::Area;

/// The VNC display backend.
pub struct VncDisplay {
    server: Server,
    row: Vec<u8>,
    copies: CopyStats,
}

/// The GPU thread's work for this display: flushed rectangles copied into the server.
#[derive(Debug, Default, Clone, Copy)]
struct CopyStats {
    count: u64,
    total: std::time::Duration,
    max: std::time::Duration,
}

impl VncDisplay {
    /// Starts the server (listening at once). `input` receives the clients' keys and pointer
    /// (when `config.input` is off, pass `None`).
    pub fn start(
        config: &VncConfig,
        input: Option<Arc<dyn InputSink>>,
        name: &str,
    ) -> Result<Self, DisplayError> {
        let password = match &config.password_file {
            Some(p) => {
                log::warn!(
                    "vnc: VNC Authentication is weak (DES, at most 8 characters, no encryption): \
                     reach the server through an SSH tunnel or a unix socket"
                );
                Some(auth::read_password(p).map_err(|e| {
                    DisplayError::Io(format!("vnc password-file {}: {e}", p.display()))
                })?)
            }
            None => None,
        };
        let server = Server::start(&config.listen, password, input, name.to_string())
            .map_err(|e| DisplayError::Io(format!("vnc: listening on {}: {e}", config.listen)))?;
        log::info!("vnc: listening on {}", server.address());
        Ok(VncDisplay {
            server,
            row: Vec::new(),
            copies: CopyStats::default(),
        })
    }

    /// Where the server listens.
    pub fn address(&self) -> &str {
        self.server.address()
    }

    /// Updates sent to all clients so far.
    pub fn updates_sent(&self) -> u64 {
        self.server.shared().updates()
    }

    /// Copies `rect` of `frame` into the server's screen and returns the area that changed.
    fn copy_in(
        &mut self,
        frame: &ScanoutFrame<'_>,
        rect: Rect,
    ) -> Result<Option<Area>, DisplayError> {
        let shared = self.server.shared().clone();
        let mut screen = shared.screen();
        screen.copy_in(frame, rect, &mut self.row)
    }
}

impl DisplayBackend for VncDisplay {
    fn set_scanout(
        &mut self,
        scanout_id: u32,
        frame: Option<&ScanoutFrame<'_>>,
    ) -> Result<(), DisplayError> {
        if scanout_id != 0 {
            return Ok(());
        }
        let shared = self.server.shared().clone();
        let (size, changed) = {
            let mut screen = shared.screen();
            let (w, h) = match frame {
                Some(f) => (f.width, f.height),
                None => {
                    let (w, h) = screen.size();
                    (u32::from(w), u32::from(h))
                }
            };
            let changed = screen
                .resize(w, h)
                .map_err(|e| DisplayError::Io(format!("vnc: screen of {w}x{h}: {e}")))?;
            (screen.size(), changed)
        };
        for c in shared.clients() {
            if changed {
                c.resize(size);
            } else {
                c.damage(Area {
                    x: 0,
                    y: 0,
                    w: size.0,
                    h: size.1,
                });
            }
        }
        if let Some(frame) = frame {
            self.flush(
                scanout_id,
                frame,
                Rect {
                    x: 0,
                    y: 0,
                    width: frame.width,
                    height: frame.height,
                },
            )?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        scanout_id: u32,
        frame: &ScanoutFrame<'_>,
        rect: Rect,
    ) -> Result<(), DisplayError> {
        if scanout_id != 0 {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let copied = self.copy_in(frame, rect)?;
        let took = t.elapsed();
        self.copies.count += 1;
        self.copies.total += took;
        self.copies.max = self.copies.max.max(took);
        if let Some(area) = copied {
            for c in self.server.shared().clients() {
                c.damage(area);
            }
        }
        Ok(())
    }
}

impl Drop for VncDisplay {
    fn drop(&mut self) {
        let c = self.copies;
        if c.count > 0 {
            log::info!(
                "vnc: {}: {} flushes copied in, {:.2} ms mean, {:.2} ms max; {} updates sent",
                self.server.address(),
                c.count,
                c.total.as_secs_f64() * 1e3 / c.count as f64,
                c.max.as_secs_f64() * 1e3,
                self.updates_sent()
            );
        }
    }
}

#[cfg(test)]
mod tests;
