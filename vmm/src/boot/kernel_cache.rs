//! A cache of unpacked kernels and initramfs images: decompressing a bzImage's payload is most of
//! what loading it costs (about 0.16 s natively for Debian's kernel, over a second under nested
//! emulation), and a VM host boots the same kernel and initramfs again and again. An entry is
//! the decompressed payload (the ELF kernel and its relocation table, exactly as decompressed)
//! or the initramfs with its archives decompressed, named after what it is and the source file's
//! identity (device, inode, size, modification and change times), so a replaced or rewritten
//! file gets a new entry. Entries are written to a temporary file and renamed into
//! place, so a reader never sees half of one; only the newest [`KEEP`] are kept. A cache that
//! cannot be used never fails a boot: the VMM then decompresses as without it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Entries kept (the newest by modification time); each is a decompressed kernel (about
/// 60 MiB for a distribution kernel) or initramfs.
pub const KEEP: usize = 4;
/// Bumped when the entry format changes, so old entries are never read.
const FORMAT: &str = "v1";

/// A directory of unpacked kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCache {
    dir: PathBuf,
}

/// The cache's directory by the XDG convention: `$XDG_CACHE_HOME/vmm/kernels`, else
/// `$HOME/.cache/vmm/kernels`; `None` without either.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("vmm").join("kernels"))
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A bzImage's decompressed payload.
    Kernel,
    /// An initramfs with its archives decompressed.
    Initramfs,
}

/// The name of the entry of `kind` made from `source`: the file's identity, not its contents
/// (hashing the file would cost a good part of what the cache saves).
pub fn key(source: &File, kind: EntryKind) -> io::Result<String> {
    let m = source.metadata()?;
    let kind = match kind {
        EntryKind::Kernel => "kernel",
        EntryKind::Initramfs => "initramfs",
    };
    Ok(format!(
        "{FORMAT}-{kind}-{:x}-{:x}-{:x}-{:x}.{:x}-{:x}.{:x}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

impl KernelCache {
    /// The cache in `dir`, created (mode 0700) if missing. Refused when the directory is not
    /// owned by this user or others may write to it: its entries are run as the guest's kernel.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let m = fs::metadata(dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if m.uid() != euid || m.permissions().mode() & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not this user's or others may write to it",
                    dir.display()
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The entry `key` and its length, if there is one whose length is in `sizes` (a kernel's:
    /// exactly its payload's announced length; an initramfs's: 1 up to a bound).
    pub fn get(&self, key: &str, sizes: RangeInclusive<u64>) -> Option<(File, u64)> {
        let file = File::open(self.dir.join(key)).ok()?;
        let size = file.metadata().ok()?.len();
        if !sizes.contains(&size) {
            log::debug!("kernel cache: entry {key} has {size} bytes, not {sizes:?}: ignored");
            return None;
        }
        Some((file, size))
    }

    /// A writer of the entry `key`; it appears only on [`EntryWriter::commit`].
    pub fn writer(&self, key: &str) -> io::Result<EntryWriter> {
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(EntryWriter {
            file: io::BufWriter::with_capacity(1 << 20, file),
            tmp,
            dest: self.dir.join(key),
            cache: self.clone(),
            committed: false,
        })
    }

    /// The entries, newest first.
    fn entries(&self) -> Vec<(std::time::SystemTime, PathBuf)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<_> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(FORMAT))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v
    }
}

/// An entry being written.
#[derive(Debug)]
pub struct EntryWriter {
    file: io::BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    /// The cache it belongs to (for the eviction after the commit).
    cache: KernelCache,
    committed: bool,
}

impl EntryWriter {
    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Publishes the entry and drops the oldest beyond [`KEEP`].
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        fs::rename(&self.tmp, &self.dest)?;
        self.committed = true;
        for (_, old) in self.cache.entries().into_iter().skip(KEEP) {
            if let Err(e) = fs::remove_file(&old) {
                log::debug!("kernel cache: cannot remove {}: {e}", old.display());
            }
        }
        Ok(())
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vmm-kcache-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn an_entry_appears_only_when_committed_and_is_read_back() {
        let d = temp_dir("commit");
        let c = KernelCache::open(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut w = c.writer("v1-abc").unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"kernel").unwrap();
        assert!(c.get("v1-abc", 12..=12).is_none(), "not before commit");
        w.commit().unwrap();
        let mut s = String::new();
        c.get("v1-abc", 12..=12)
            .unwrap()
            .0
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello kernel");
        // A length other than the payload's is not an entry for it.
        assert!(c.get("v1-abc", 13..=13).is_none());
        // Where the length is not known: any up to a bound.
        assert_eq!(c.get("v1-abc", 1..=12).unwrap().1, 12);
        assert!(c.get("v1-abc", 1..=11).is_none());
        assert!(c.get("v1-none", 1..=100).is_none());
        // An abandoned writer leaves nothing behind.
        let w = c.writer("v1-def").unwrap();
        drop(w);
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("v1-abc")]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn only_the_newest_entries_are_kept() {
        let d = temp_dir("evict");
        let c = KernelCache::open(&d).unwrap();
        for i in 0..KEEP + 2 {
            let mut w = c.writer(&format!("v1-{i}")).unwrap();
            w.write(&[i as u8]).unwrap();
            w.commit().unwrap();
            // Distinct modification times.
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            File::options()
                .write(true)
                .open(d.join(format!("v1-{i}")))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // The last commit evicted all but KEEP; one more commit settles the order by time.
        c.writer("v1-last").unwrap().commit().unwrap();
        let mut names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), KEEP, "{names:?}");
        assert!(names.contains(&"v1-last".to_string()));
        assert!(!names.contains(&"v1-0".to_string()) && !names.contains(&"v1-1".to_string()));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let d = temp_dir("open");
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            KernelCache::open(&d).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_key_follows_the_file_not_its_name() {
        let d = temp_dir("key");
        fs::create_dir_all(&d).unwrap();
        let p = d.join("vmlinuz");
        fs::write(&p, b"one").unwrap();
        let k1 = key(&File::open(&p).unwrap(), EntryKind::Kernel).unwrap();
        assert_eq!(
            k1,
            key(&File::open(&p).unwrap(), EntryKind::Kernel).unwrap()
        );
        assert!(k1.starts_with("v1-kernel-"));
        // The same file as an initramfs is another entry.
        let i1 = key(&File::open(&p).unwrap(), EntryKind::Initramfs).unwrap();
        assert!(i1.starts_with("v1-initramfs-"));
        assert_ne!(k1, i1);
        // Rewritten with other contents of the same size: a new key (the change time moves).
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&p, b"two").unwrap();
        assert_ne!(
            k1,
            key(&File::open(&p).unwrap(), EntryKind::Kernel).unwrap()
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_default_directory_follows_xdg() {
        // Only reads the environment; the process's variables are left alone.
        if let Some(d) = default_dir() {
            assert!(d.ends_with("vmm/kernels"), "{}", d.display());
        }
    }
}
