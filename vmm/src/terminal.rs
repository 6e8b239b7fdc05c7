//! The host terminal as the guest's console: raw mode while the VM runs (so every key,
//! Ctrl-C included, reaches the guest) and the escape sequence `Ctrl-A x` that quits the VMM.
//!
//! [`RawTerminal`] puts stdin's terminal in raw mode and restores the saved settings when
//! dropped; a panic hook restores them too (a panic may unwind past the guard or abort).
//! [`EscapeFilter`] splits the input stream into guest bytes and the quit request.

use std::io::IsTerminal;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, Once};

/// The escape key: Ctrl-A.
pub const ESCAPE: u8 = 0x01;
/// After [`ESCAPE`]: quit the VMM.
pub const QUIT: u8 = b'x';

/// What the input stream asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes for the guest, in order.
    pub guest: Vec<u8>,
    /// `Ctrl-A x` was typed: quit.
    pub quit: bool,
}

/// Finds `Ctrl-A x` in the bytes typed on the console. `Ctrl-A Ctrl-A` sends one Ctrl-A to the
/// guest; `Ctrl-A` before any other byte sends both bytes. An escape at the end of one read
/// waits for the next.
#[derive(Debug, Default, Clone)]
pub struct EscapeFilter {
    pending_escape: bool,
}

impl EscapeFilter {
    /// A filter with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Filters one read. Bytes after a quit request are dropped.
    pub fn feed(&mut self, input: &[u8]) -> Filtered {
        let mut out = Filtered {
            guest: Vec::with_capacity(input.len()),
            quit: false,
        };
        for &b in input {
            if self.pending_escape {
                self.pending_escape = false;
                match b {
                    QUIT => {
                        out.quit = true;
                        return out;
                    }
                    ESCAPE => out.guest.push(ESCAPE),
                    other => out.guest.extend_from_slice(&[ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.pending_escape = true;
            } else {
                out.guest.push(b);
            }
        }
        out
    }
}

/// The terminal settings to put back, for the panic hook.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);

fn restore_saved() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((fd, termios)) = saved {
        // SAFETY: tcsetattr reads the termios we own; a bad fd only makes it fail.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &termios) };
    }
}

/// Stdin's terminal in raw mode until dropped.
#[derive(Debug)]
pub struct RawTerminal {
    _private: (),
}

impl RawTerminal {
    /// Puts stdin in raw mode if it is a terminal: no line editing, no echo, no signals from
    /// keys (Ctrl-C goes to the guest). Output processing stays on, so the VMM's own log lines
    /// still start at the left margin. `None` when stdin is not a terminal or its settings
    /// cannot be changed (then it stays as it is; logged).
    pub fn enter_if_tty() -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        Self::enter(stdin.as_raw_fd())
    }

    /// Puts the terminal `fd` in raw mode (see [`RawTerminal::enter_if_tty`]); `fd` must stay
    /// open while the guard lives.
    fn enter(fd: RawFd) -> Option<Self> {
        // SAFETY: an all-zero termios is a valid value of this plain C struct; tcgetattr
        // overwrites it.
        let mut orig: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes into the termios we own.
        if unsafe { libc::tcgetattr(fd, &mut orig) } != 0 {
            log::warn!(
                "console: cannot read the terminal settings ({}); keys stay line-buffered",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let mut raw = orig;
        raw.c_iflag &= !(libc::IGNBRK
            | libc::BRKINT
            | libc::PARMRK
            | libc::ISTRIP
            | libc::INLCR
            | libc::IGNCR
            | libc::ICRNL
            | libc::IXON);
        raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
        raw.c_cflag &= !(libc::CSIZE | libc::PARENB);
        raw.c_cflag |= libc::CS8;
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, orig));
        install_panic_hook();
        // SAFETY: tcsetattr reads the termios we own.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            log::warn!(
                "console: cannot set raw mode ({}); keys stay line-buffered",
                std::io::Error::last_os_error()
            );
            SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
            return None;
        }
        Some(RawTerminal { _private: () })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore_saved();
    }
}

/// Once per process: a panic restores the terminal before the default report is printed.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_saved();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut f = EscapeFilter::new();
        let mut guest = Vec::new();
        for c in chunks {
            let out = f.feed(c);
            guest.extend_from_slice(&out.guest);
            if out.quit {
                return (guest, true);
            }
        }
        (guest, false)
    }

    #[test]
    fn plain_keys_and_ctrl_c_pass_through() {
        assert_eq!(
            feed_all(&[b"ls -l\r", &[0x03]]),
            (b"ls -l\r\x03".to_vec(), false)
        );
    }

    #[test]
    fn ctrl_a_x_quits_and_drops_what_follows() {
        assert_eq!(feed_all(&[b"ab\x01xcd"]), (b"ab".to_vec(), true));
    }

    #[test]
    fn escape_split_across_reads_still_quits() {
        assert_eq!(feed_all(&[b"a\x01", b"x"]), (b"a".to_vec(), true));
        let mut f = EscapeFilter::new();
        assert_eq!(f.feed(b"\x01"), Filtered::default(), "held back");
        assert!(f.feed(b"x").quit);
    }

    #[test]
    fn ctrl_a_ctrl_a_sends_one_ctrl_a_and_other_keys_send_both() {
        assert_eq!(feed_all(&[b"\x01\x01x"]), (b"\x01x".to_vec(), false));
        assert_eq!(feed_all(&[b"\x01y"]), (b"\x01y".to_vec(), false));
        // Upper-case X is not the quit key.
        assert_eq!(feed_all(&[b"\x01X"]), (b"\x01X".to_vec(), false));
        // An x without the escape is a plain key.
        assert_eq!(
            feed_all(&[b"x", b"\x01", b"\x01", b"x"]),
            (b"x\x01x".to_vec(), false)
        );
    }

    fn lflag(fd: RawFd) -> libc::tcflag_t {
        // SAFETY: an all-zero termios is a valid value of this plain C struct.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes into the termios we own.
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
        t.c_lflag
    }

    #[test]
    fn raw_mode_on_a_pty_is_restored_on_drop_and_when_a_panic_unwinds() {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two fds into the integers we own; the other arguments may be
        // null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            eprintln!("no pty: raw mode not tested");
            return;
        }
        let keys = libc::ICANON | libc::ECHO | libc::ISIG;
        let before = lflag(slave);
        assert_eq!(before & keys, keys, "a new pty is in canonical mode");
        let guard = RawTerminal::enter(slave).expect("raw mode on a pty");
        assert_eq!(
            lflag(slave) & keys,
            0,
            "raw: no line editing, echo or signals"
        );
        drop(guard);
        assert_eq!(lflag(slave), before, "restored on drop");
        // A panic while the guard lives: the hook restores the terminal before the report is
        // printed, and the unwinding guard finds nothing left to restore.
        let result = std::panic::catch_unwind(|| {
            let _guard = RawTerminal::enter(slave).unwrap();
            assert_eq!(lflag(slave) & keys, 0);
            panic!("on purpose");
        });
        assert!(result.is_err());
        assert_eq!(lflag(slave), before, "restored after a panic");
        // SAFETY: both fds came from openpty and are closed once.
        unsafe {
            libc::close(slave);
            libc::close(master);
        }
    }

    #[test]
    fn no_raw_mode_on_a_file() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(RawTerminal::enter(f.as_raw_fd()).is_none());
    }
}
