//! VNC Authentication: a DES challenge-response with the password as the key.
//!
//! Weak by design (at most 8 password characters, DES, no encryption of the session): the
//! server warns about it; SSH tunnels or unix sockets are the safe way.

use std::io::Read;
use std::path::Path;

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};
use des::Des;

/// Bytes of the challenge and of the response.
pub const CHALLENGE_LEN: usize = 16;

/// Reads the password: the first line of `path`, at most 8 bytes of it are used (as every VNC
/// client does). An empty password is refused.
pub fn read_password(path: &Path) -> Result<[u8; 8], String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read the password: {e}"))?;
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = first.strip_suffix(b"\r").unwrap_or(first);
    if line.is_empty() {
        return Err("the first line (the password) is empty".to_string());
    }
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(line) {
        *k = *b;
    }
    Ok(key)
}

/// A fresh random challenge.
pub fn challenge() -> std::io::Result<[u8; CHALLENGE_LEN]> {
    let mut c = [0u8; CHALLENGE_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut c)?;
    Ok(c)
}

/// What a client knowing `password` answers to `challenge`: the challenge's two 8-byte blocks
/// DES-encrypted with the password as key, each key byte's bits in reverse order (the RFB
/// convention).
pub fn expected_response(password: &[u8; 8], challenge: &[u8; CHALLENGE_LEN]) -> [u8; 16] {
    let key: Vec<u8> = password.iter().map(|b| b.reverse_bits()).collect();
    let cipher = Des::new(GenericArray::from_slice(&key));
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

/// Compares without an early exit on the first differing byte.
pub fn response_matches(expected: &[u8; 16], got: &[u8; 16]) -> bool {
    expected
        .iter()
        .zip(got)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn des_matches_the_standard_test_vector() {
        // Key 133457799BBCDFF1, plaintext 0123456789ABCDEF -> 85E813540F0AB405. The password
        // bytes are bit-reversed into the key, so pass the reversed key.
        let key: [u8; 8] = [0x13, 0x34, 0x57, 0x79, 0x9B, 0xBC, 0xDF, 0xF1].map(u8::reverse_bits);
        let mut challenge = [0u8; 16];
        challenge[..8].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]);
        challenge[8..].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]);
        let r = expected_response(&key, &challenge);
        assert_eq!(r[..8], [0x85, 0xE8, 0x13, 0x54, 0x0F, 0x0A, 0xB4, 0x05]);
        assert_eq!(r[..8], r[8..]);
    }

    #[test]
    fn responses_depend_on_the_password() {
        let c = [7u8; 16];
        let a = expected_response(b"secret\0\0", &c);
        let b = expected_response(b"secreT\0\0", &c);
        assert!(response_matches(&a, &a));
        assert!(!response_matches(&a, &b));
    }

    #[test]
    fn password_is_the_first_line_cut_to_eight_bytes() {
        let dir = std::env::temp_dir().join(format!("vnc-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        std::fs::write(&p, "averylongpassword\r\nsecond").unwrap();
        assert_eq!(&read_password(&p).unwrap(), b"averylon");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(&read_password(&p).unwrap(), b"abc\0\0\0\0\0");
        std::fs::write(&p, "\nabc").unwrap();
        assert!(read_password(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_password(&dir.join("gone")).is_err());
    }

    #[test]
    fn challenges_differ() {
        assert_ne!(challenge().unwrap(), challenge().unwrap());
    }
}
