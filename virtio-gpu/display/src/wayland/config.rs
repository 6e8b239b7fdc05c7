//! `wayland[=<socket>]`: which compositor the Wayland display connects to.

use std::path::{Path, PathBuf};

/// The compositor's socket as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WaylandConfig {
    /// `None`: `$WAYLAND_DISPLAY`; a name is looked up in `$XDG_RUNTIME_DIR`, an absolute path
    /// is used as it is (the rules of libwayland's `wl_display_connect`).
    pub socket: Option<String>,
}

/// Socket name libwayland uses when `$WAYLAND_DISPLAY` is not set.
const DEFAULT_SOCKET: &str = "wayland-0";

impl WaylandConfig {
    /// Parses what follows `wayland` in `--display wayland[=<socket>]` (`""` or `=<socket>`).
    pub fn parse(rest: &str) -> Option<Self> {
        match rest {
            "" => Some(WaylandConfig { socket: None }),
            _ => {
                let socket = rest.strip_prefix('=')?;
                (!socket.is_empty()).then(|| WaylandConfig {
                    socket: Some(socket.to_string()),
                })
            }
        }
    }

    /// The socket's path, from the environment variables `wayland_display` and
    /// `xdg_runtime_dir` (their values, if set); an error names what is missing.
    pub fn socket_path(
        &self,
        wayland_display: Option<&str>,
        xdg_runtime_dir: Option<&str>,
    ) -> Result<PathBuf, String> {
        let name = match (&self.socket, wayland_display) {
            (Some(s), _) => s.as_str(),
            (None, Some(env)) if !env.is_empty() => env,
            (None, _) => DEFAULT_SOCKET,
        };
        if Path::new(name).is_absolute() {
            return Ok(PathBuf::from(name));
        }
        match xdg_runtime_dir {
            Some(dir) if !dir.is_empty() => Ok(Path::new(dir).join(name)),
            _ => Err(format!(
                "socket '{name}' is a name in $XDG_RUNTIME_DIR, which is not set \
                 (set it, or give an absolute path: --display wayland=/run/user/UID/{name})"
            )),
        }
    }

    /// [`socket_path`](Self::socket_path) from this process's environment.
    pub fn socket_path_from_env(&self) -> Result<PathBuf, String> {
        let env = |k: &str| std::env::var(k).ok();
        self.socket_path(
            env("WAYLAND_DISPLAY").as_deref(),
            env("XDG_RUNTIME_DIR").as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve_like_libwayland() {
        let default = WaylandConfig::parse("").unwrap();
        assert_eq!(default.socket, None);
        assert_eq!(WaylandConfig::parse("="), None);
        assert_eq!(WaylandConfig::parse("x"), None);
        let named = WaylandConfig::parse("=wayland-1").unwrap();
        let abs = WaylandConfig::parse("=/tmp/w.sock").unwrap();
        let run = Some("/run/user/1000");
        assert_eq!(
            default.socket_path(Some("wayland-7"), run).unwrap(),
            PathBuf::from("/run/user/1000/wayland-7")
        );
        assert_eq!(
            default.socket_path(None, run).unwrap(),
            PathBuf::from("/run/user/1000/wayland-0")
        );
        assert_eq!(
            named.socket_path(Some("wayland-7"), run).unwrap(),
            PathBuf::from("/run/user/1000/wayland-1")
        );
        assert_eq!(
            abs.socket_path(None, None).unwrap(),
            PathBuf::from("/tmp/w.sock")
        );
        let err = named.socket_path(None, None).unwrap_err();
        assert!(
            err.contains("wayland-1") && err.contains("XDG_RUNTIME_DIR"),
            "{err}"
        );
    }
}
