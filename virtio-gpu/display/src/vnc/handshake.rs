//! The RFB handshake up to ClientInit: version, security (None or VNC Authentication) and the
//! security result, in the forms versions 3.3, 3.7 and 3.8 use.

use std::io::{self, Read, Write};

use super::auth;
use super::protocol::{Version, SECURITY_NONE, SECURITY_VNC_AUTH, SERVER_VERSION};

/// Why a handshake ended without a session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or the client went away (a timeout included).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The client's version line is not RFB 3.3 or later.
    #[error("not an RFB 3.3 to 3.8 client (version line {0:?})")]
    Version(String),
    /// The client picked a security type the server did not offer.
    #[error("security type {0} was not offered")]
    SecurityType(u8),
    /// Wrong password.
    #[error("VNC authentication failed")]
    AuthFailed,
}

/// Runs the handshake on `s`; with `password`, VNC Authentication is the only security type,
/// otherwise None. Returns the client's version after its ClientInit was read.
pub fn handshake<S: Read + Write>(
    s: &mut S,
    password: Option<&[u8; 8]>,
) -> Result<Version, HandshakeError> {
    s.write_all(SERVER_VERSION)?;
    let mut v = [0u8; 12];
    s.read_exact(&mut v)?;
    let version = Version::parse(&v)
        .ok_or_else(|| HandshakeError::Version(String::from_utf8_lossy(&v).into_owned()))?;
    let offered = if password.is_some() {
        SECURITY_VNC_AUTH
    } else {
        SECURITY_NONE
    };
    if version == Version::V3_3 {
        s.write_all(&u32::from(offered).to_be_bytes())?;
    } else {
        s.write_all(&[1, offered])?;
        let mut chosen = [0u8; 1];
        s.read_exact(&mut chosen)?;
        if chosen[0] != offered {
            if version == Version::V3_8 {
                // Best effort: the client may already be gone.
                let _ = failure(s, "security type not offered");
            }
            return Err(HandshakeError::SecurityType(chosen[0]));
        }
    }
    if let Some(password) = password {
        let challenge = auth::challenge()?;
        s.write_all(&challenge)?;
        let mut response = [0u8; 16];
        s.read_exact(&mut response)?;
        if !auth::response_matches(&auth::expected_response(password, &challenge), &response) {
            // Best effort: the client may already be gone.
            let _ = if version == Version::V3_8 {
                failure(s, "authentication failed")
            } else {
                s.write_all(&1u32.to_be_bytes())
            };
            return Err(HandshakeError::AuthFailed);
        }
        s.write_all(&0u32.to_be_bytes())?;
    } else if version == Version::V3_8 {
        s.write_all(&0u32.to_be_bytes())?;
    }
    // ClientInit: the shared flag (every client shares the one screen).
    let mut shared = [0u8; 1];
    s.read_exact(&mut shared)?;
    Ok(version)
}

/// A failed SecurityResult with its reason (3.8).
fn failure<S: Write>(s: &mut S, reason: &str) -> io::Result<()> {
    s.write_all(&1u32.to_be_bytes())?;
    s.write_all(&(reason.len() as u32).to_be_bytes())?;
    s.write_all(reason.as_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// Runs the client's side of a handshake (`version`, optionally answering the challenge
    /// with `password`) and returns what it read after ClientInit was sent, or the result.
    fn client(
        mut c: UnixStream,
        version: &[u8; 12],
        password: Option<&[u8; 8]>,
    ) -> io::Result<u32> {
        let mut v = [0u8; 12];
        c.read_exact(&mut v)?;
        assert_eq!(&v, SERVER_VERSION);
        c.write_all(version)?;
        let ty = if version == b"RFB 003.003\n" {
            let mut t = [0u8; 4];
            c.read_exact(&mut t)?;
            u32::from_be_bytes(t) as u8
        } else {
            let mut n = [0u8; 2];
            c.read_exact(&mut n)?;
            assert_eq!(n[0], 1);
            c.write_all(&[n[1]])?;
            n[1]
        };
        let mut result = 0;
        if ty == SECURITY_VNC_AUTH {
            let mut ch = [0u8; 16];
            c.read_exact(&mut ch)?;
            let r = auth::expected_response(password.unwrap_or(b"wrong\0\0\0"), &ch);
            c.write_all(&r)?;
            let mut res = [0u8; 4];
            c.read_exact(&mut res)?;
            result = u32::from_be_bytes(res);
        } else if version == b"RFB 003.008\n" {
            let mut res = [0u8; 4];
            c.read_exact(&mut res)?;
            result = u32::from_be_bytes(res);
        }
        if result == 0 {
            c.write_all(&[1])?;
        }
        Ok(result)
    }

    fn run(
        version: &'static [u8; 12],
        server_pw: Option<[u8; 8]>,
        client_pw: Option<[u8; 8]>,
    ) -> (Result<Version, HandshakeError>, io::Result<u32>) {
        let (mut s, c) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || client(c, version, client_pw.as_ref()));
        let r = handshake(&mut s, server_pw.as_ref());
        drop(s);
        (r, t.join().unwrap())
    }

    #[test]
    fn every_version_with_none() {
        for (v, expected) in [
            (b"RFB 003.003\n", Version::V3_3),
            (b"RFB 003.007\n", Version::V3_7),
            (b"RFB 003.008\n", Version::V3_8),
        ] {
            let (r, c) = run(v, None, None);
            assert_eq!(r.unwrap(), expected);
            assert_eq!(c.unwrap(), 0);
        }
    }

    #[test]
    fn vnc_authentication_right_and_wrong() {
        for v in [b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"] {
            let pw = *b"secret\0\0";
            let (r, c) = run(v, Some(pw), Some(pw));
            assert!(r.is_ok(), "{v:?}");
            assert_eq!(c.unwrap(), 0);
            let (r, c) = run(v, Some(pw), Some(*b"guess\0\0\0"));
            assert!(matches!(r, Err(HandshakeError::AuthFailed)), "{v:?}");
            assert_eq!(c.unwrap(), 1);
        }
    }

    #[test]
    fn garbage_and_wrong_type_are_refused() {
        let (mut s, mut c) = UnixStream::pair().unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert!(matches!(
            handshake(&mut s, None),
            Err(HandshakeError::Version(_))
        ));
        let (mut s, mut c) = UnixStream::pair().unwrap();
        c.write_all(b"RFB 003.008\n\x02").unwrap();
        assert!(matches!(
            handshake(&mut s, None),
            Err(HandshakeError::SecurityType(2))
        ));
        // A client that goes away mid-handshake.
        let (mut s, mut c) = UnixStream::pair().unwrap();
        c.write_all(b"RFB 003.008\n").unwrap();
        drop(c);
        assert!(matches!(
            handshake(&mut s, None),
            Err(HandshakeError::Io(_))
        ));
    }
}
