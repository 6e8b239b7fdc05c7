//! `vnc=<listen>[,password-file=<path>][,input=on|off]`: where the VNC server listens, whether
//! it asks for a password and whether clients' keys and pointer reach the guest.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::DisplayConfigError;

/// Where the VNC server accepts clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncListen {
    /// A TCP address (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A unix stream socket at this path (created by the server, removed when it stops).
    Unix(PathBuf),
}

impl VncListen {
    /// Whether only this host can reach the address (loopback or a unix socket).
    pub fn is_local(&self) -> bool {
        match self {
            VncListen::Tcp(a) => a.ip().is_loopback(),
            VncListen::Unix(_) => true,
        }
    }

    /// Parses `HOST:PORT` (`HOST` an IPv4 address, `[IPv6]` or `localhost`) or `unix:<path>`.
    pub fn parse(s: &str) -> Result<Self, DisplayConfigError> {
        let bad = |why: &str| DisplayConfigError::VncListen {
            listen: s.to_string(),
            reason: why.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a socket path"));
            }
            return Ok(VncListen::Unix(PathBuf::from(path)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT, [IPv6]:PORT or unix:<path>"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        let ip =
            if host == "localhost" {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                IpAddr::V6(
                    v6.parse()
                        .map_err(|_| bad("the part in [] is not an IPv6 address"))?,
                )
            } else {
                IpAddr::V4(host.parse().map_err(|_| {
                    bad("the host is not an IPv4 address, [IPv6 address] or localhost")
                })?)
            };
        Ok(VncListen::Tcp(SocketAddr::new(ip, port)))
    }
}

impl fmt::Display for VncListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VncListen::Tcp(a) => write!(f, "{a}"),
            VncListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The `vnc=` display's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VncConfig {
    /// Listening address.
    pub listen: VncListen,
    /// File whose first line is the VNC password (VNC Authentication); `None`: no password
    /// (then only local addresses are accepted).
    pub password_file: Option<PathBuf>,
    /// Whether the VM gets a virtio-input keyboard and tablet fed by the clients.
    pub input: bool,
}

impl VncConfig {
    /// Parses what follows `vnc=`.
    pub fn parse(s: &str) -> Result<Self, DisplayConfigError> {
        let mut parts = s.split(',');
        let listen = VncListen::parse(parts.next().unwrap_or_default())?;
        let mut password_file = None;
        let mut input = true;
        for opt in parts {
            match opt.split_once('=') {
                Some(("password-file", p)) if !p.is_empty() => {
                    password_file = Some(PathBuf::from(p));
                }
                Some(("input", "on")) => input = true,
                Some(("input", "off")) => input = false,
                _ => return Err(DisplayConfigError::VncOption(opt.to_string())),
            }
        }
        if password_file.is_none() && !listen.is_local() {
            return Err(DisplayConfigError::VncListen {
                listen: listen.to_string(),
                reason: "without password-file=<path> only loopback addresses \
                         (127.0.0.1:PORT, [::1]:PORT) and unix:<path> are accepted, because \
                         anyone who reaches the port would control the guest's console"
                    .to_string(),
            });
        }
        if let Some(p) = &password_file {
            super::auth::read_password(p).map_err(|reason| DisplayConfigError::VncPassword {
                path: p.clone(),
                reason,
            })?;
        }
        Ok(VncConfig {
            listen,
            password_file,
            input,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            VncListen::parse("127.0.0.1:5900").unwrap(),
            VncListen::Tcp("127.0.0.1:5900".parse().unwrap())
        );
        assert_eq!(
            VncListen::parse("[::1]:5901").unwrap(),
            VncListen::Tcp("[::1]:5901".parse().unwrap())
        );
        assert_eq!(
            VncListen::parse("localhost:0").unwrap(),
            VncListen::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            VncListen::parse("unix:/tmp/v.sock").unwrap(),
            VncListen::Unix("/tmp/v.sock".into())
        );
        for bad in [
            "",
            "5900",
            "unix:",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "::1:5900",
            "[nope]:1",
            "example.org:5900",
        ] {
            assert!(VncListen::parse(bad).is_err(), "{bad}");
        }
        assert!(VncListen::parse("127.0.0.1:1").unwrap().is_local());
        assert!(!VncListen::parse("0.0.0.0:1").unwrap().is_local());
        assert!(!VncListen::parse("[::]:1").unwrap().is_local());
    }

    #[test]
    fn options_and_the_loopback_rule() {
        let c = VncConfig::parse("127.0.0.1:5900").unwrap();
        assert!(c.input && c.password_file.is_none());
        assert!(!VncConfig::parse("unix:/x,input=off").unwrap().input);
        let e = VncConfig::parse("0.0.0.0:5900").unwrap_err().to_string();
        assert!(e.contains("password-file") && e.contains("loopback"), "{e}");
        assert!(VncConfig::parse("127.0.0.1:5900,input=maybe").is_err());
        assert!(VncConfig::parse("127.0.0.1:5900,colour=blue").is_err());
        let e = VncConfig::parse("0.0.0.0:5900,password-file=/nonexistent/pw")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/pw"), "{e}");
        let dir = std::env::temp_dir().join(format!("vnc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let c = VncConfig::parse(&format!("0.0.0.0:5900,password-file={}", pw.display())).unwrap();
        assert_eq!(c.password_file.as_deref(), Some(pw.as_path()));
        std::fs::write(&pw, "\n").unwrap();
        assert!(VncConfig::parse(&format!("0.0.0.0:5900,password-file={}", pw.display())).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
