//! The kernel's log as records appear (`/dev/kmsg`): a reader positioned at the end, so a
//! program sees only what the kernel says while it runs (driver errors, refusals).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

use crate::error::{Error, Result};

/// Most records one [`KernelLog::new_records`] call reads.
const MAX_RECORDS: usize = 8192;

/// A non-blocking reader of `/dev/kmsg`.
pub struct KernelLog(File);

impl KernelLog {
    /// Opens `/dev/kmsg` and skips what is already there.
    pub fn open_at_end() -> Result<Self> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(Error::io("open /dev/kmsg"))?;
        f.seek(SeekFrom::End(0))
            .map_err(Error::io("seek /dev/kmsg"))?;
        Ok(Self(f))
    }

    /// The message text of each record since the last call (or the open), first line only.
    /// Each read returns one record; EAGAIN ends the list; EPIPE means records were overwritten
    /// before they were read, and reading goes on.
    pub fn new_records(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        for _ in 0..MAX_RECORDS {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.push(message(&buf[..n])),
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// The text of one record (`prio,seq,time,flags;message\n[continuation]`), first line only.
fn message(record: &[u8]) -> String {
    let rec = String::from_utf8_lossy(record);
    let msg = rec.split_once(';').map_or(rec.as_ref(), |(_, m)| m);
    msg.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_gives_its_message_line() {
        assert_eq!(
            message(b"4,123,456789,-;virtio_gpu virtio0: response 0x1200\n SUBSYSTEM=virtio\n"),
            "virtio_gpu virtio0: response 0x1200"
        );
        assert_eq!(message(b"no header"), "no header");
        assert_eq!(message(b""), "");
    }
}
