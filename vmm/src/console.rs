//! The guest console's output: COM1's bytes to the VMM's stdout.

use std::io::{IsTerminal, Write};

/// Longest line held back (a guest line without a newline is written once this long).
const MAX_LINE: usize = 4096;

/// Writes guest console bytes to `out`. On a terminal, or when a person types into stdin, every
/// byte goes out at once (each already cost a VM exit, and a prompt must show before its
/// newline). Into a pipe or a file with no one typing, where the VMM's log lines (stderr) may go
/// too, the bytes go out a whole line per write, so a log line never lands inside a guest line: a
/// partial line is written when it grows past `MAX_LINE` bytes and on drop, not on `flush` (the
/// serial device flushes after every byte).
pub struct GuestConsole<W: Write> {
    out: W,
    line: Option<Vec<u8>>,
}

impl GuestConsole<std::io::Stdout> {
    /// The console on this process's stdout: whole lines unless stdout or stdin is a terminal.
    pub fn stdout() -> Self {
        let out = std::io::stdout();
        let whole_lines = !out.is_terminal() && !std::io::stdin().is_terminal();
        Self::new(out, whole_lines)
    }
}

impl<W: Write> GuestConsole<W> {
    /// A console writing to `out`, a whole line per write if `whole_lines`.
    pub fn new(out: W, whole_lines: bool) -> Self {
        GuestConsole {
            out,
            line: whole_lines.then(Vec::new),
        }
    }

    fn write_out(out: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        out.write_all(bytes)?;
        out.flush()
    }
}

impl<W: Write> Write for GuestConsole<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(line) = self.line.as_mut() else {
            Self::write_out(&mut self.out, buf)?;
            return Ok(buf.len());
        };
        for &b in buf {
            line.push(b);
            if b == b'\n' || line.len() >= MAX_LINE {
                Self::write_out(&mut self.out, line)?;
                line.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // A partial line stays until its newline (see the type's doc).
        self.out.flush()
    }
}

impl<W: Write> Drop for GuestConsole<W> {
    fn drop(&mut self) {
        // The guest's last words, if they had no newline.
        if let Some(line) = self.line.take().filter(|l| !l.is_empty()) {
            let _ = Self::write_out(&mut self.out, &line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records each write as one item.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn feed(console: &mut GuestConsole<Writes>, text: &[u8]) {
        // One byte per write, each flushed, as the serial device hands them over.
        for b in text {
            console.write_all(std::slice::from_ref(b)).unwrap();
            console.flush().unwrap();
        }
    }

    #[test]
    fn into_a_pipe_a_line_is_one_write() {
        let w = Writes::default();
        let mut c = GuestConsole::new(w.clone(), true);
        feed(&mut c, b"RIG-DATA a=1\nno newline");
        assert_eq!(*w.0.lock().unwrap(), vec![b"RIG-DATA a=1\n".to_vec()]);
        drop(c);
        assert_eq!(w.0.lock().unwrap()[1], b"no newline".to_vec());
    }

    #[test]
    fn long_lines_are_written_in_bounded_pieces() {
        let w = Writes::default();
        let mut c = GuestConsole::new(w.clone(), true);
        feed(&mut c, &vec![b'x'; MAX_LINE * 2 + 10]);
        let writes = w.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 2);
        assert!(writes.iter().all(|l| l.len() == MAX_LINE));
    }

    #[test]
    fn on_a_terminal_every_byte_goes_out_at_once() {
        let w = Writes::default();
        let mut c = GuestConsole::new(w.clone(), false);
        feed(&mut c, b"# ");
        assert_eq!(*w.0.lock().unwrap(), vec![b"#".to_vec(), b" ".to_vec()]);
    }
}
