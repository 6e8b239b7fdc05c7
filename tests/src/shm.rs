//! The /dev/shm file behind the rig's ivshmem device (BAR2 in L1).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::RigError;

/// Size of the ivshmem backing file (and so of ivshmem's BAR2): 16 MiB.
pub const SHM_SIZE: usize = 16 << 20;

/// Fills the shm buffer before a run.
pub(crate) type Fill = Box<dyn FnOnce(&mut [u8]) + Send>;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A uniquely named 16 MiB file in /dev/shm, removed on drop.
pub(crate) struct ShmFile {
    path: PathBuf,
}

impl ShmFile {
    /// The `SHM_SIZE` bytes a run starts with: zeros, then whatever `fill` writes.
    pub(crate) fn contents(fill: Option<Fill>) -> Vec<u8> {
        let mut buf = vec![0u8; SHM_SIZE];
        if let Some(fill) = fill {
            fill(&mut buf);
        }
        buf
    }

    /// Creates `/dev/shm/rig-tests-<pid>-<seq>-<scenario>` holding `buf` (see [`Self::contents`]).
    pub(crate) fn create(scenario: &str, buf: &[u8]) -> Result<Self, RigError> {
        let name = format!(
            "rig-tests-{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            scenario
        );
        let path = Path::new("/dev/shm").join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| RigError::io(format!("create {}", path.display()), e))?;
        let shm = ShmFile { path };
        file.write_all(buf)
            .map_err(|e| RigError::io(format!("write {}", shm.path.display()), e))?;
        Ok(shm)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes now (after the run: what L1/L2 left in BAR2).
    pub(crate) fn read(&self) -> Result<Vec<u8>, RigError> {
        fs::read(&self.path).map_err(|e| RigError::io(format!("read {}", self.path.display()), e))
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_filled_unique_files_and_removes_them() {
        let a = ShmFile::create(
            "unit",
            &ShmFile::contents(Some(Box::new(|b: &mut [u8]| b[..2].copy_from_slice(b"hi")))),
        )
        .unwrap();
        let b = ShmFile::create("unit", &ShmFile::contents(None)).unwrap();
        assert_ne!(a.path(), b.path());
        let bytes = a.read().unwrap();
        assert_eq!(bytes.len(), SHM_SIZE);
        assert_eq!(&bytes[..3], b"hi\0");
        assert!(b.read().unwrap().iter().all(|&x| x == 0));
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
    }
}
