//! The open-file limit: the VMM holds an eventfd per MSI/MSI-X vector and queue, irqfds, VFIO
//! and dma-buf fds, so at start-up it raises its soft `RLIMIT_NOFILE` as far as the hard
//! limit allows.

use std::io;

/// Where the kernel caps `RLIMIT_NOFILE` when the hard limit is unlimited.
const NR_OPEN_PATH: &str = "/proc/sys/fs/nr_open";
/// The kernel's default for `fs.nr_open`, used when it cannot be read.
const DEFAULT_NR_OPEN: u64 = 1 << 20;

/// The soft open-file limit to set, given the current `soft` and `hard` limits and the
/// kernel's `nr_open` cap: the hard limit (`nr_open` when the hard limit is unlimited), or
/// `None` when the soft limit is already there or above.
pub fn raised_nofile_limit(soft: u64, hard: u64, nr_open: u64) -> Option<u64> {
    let target = if hard == libc::RLIM_INFINITY {
        nr_open
    } else {
        hard
    };
    (soft < target).then_some(target)
}

fn nofile() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the (old, new) soft limit when
/// it was raised, `None` when it already was at the hard limit.
pub fn raise_open_file_limit() -> io::Result<Option<(u64, u64)>> {
    let lim = nofile()?;
    let nr_open = std::fs::read_to_string(NR_OPEN_PATH)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_NR_OPEN);
    let Some(target) = raised_nofile_limit(lim.rlim_cur, lim.rlim_max, nr_open) else {
        return Ok(None);
    };
    let new = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((lim.rlim_cur, target)))
}

/// [`raise_open_file_limit`] for start-up: the new limit is logged (info), a failure is a
/// warning (the VMM runs with the limit it has).
pub fn raise_open_file_limit_or_warn() {
    match raise_open_file_limit() {
        Ok(Some((old, new))) => log::info!("vmm: open file limit raised from {old} to {new}"),
        Ok(None) => log::debug!("vmm: open file limit already at its hard limit"),
        Err(e) => log::warn!("vmm: cannot raise the open file limit (RLIMIT_NOFILE): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_goes_to_the_hard_limit() {
        assert_eq!(raised_nofile_limit(1024, 524_288, 1 << 20), Some(524_288));
        assert_eq!(raised_nofile_limit(0, 1, 1 << 20), Some(1));
        // Already there (or above, which the kernel does not allow anyway): nothing to do.
        assert_eq!(raised_nofile_limit(4096, 4096, 1 << 20), None);
        assert_eq!(raised_nofile_limit(8192, 4096, 1 << 20), None);
        // An unlimited hard limit: as far as the kernel's nr_open goes.
        let inf = libc::RLIM_INFINITY;
        assert_eq!(raised_nofile_limit(1024, inf, 1 << 20), Some(1 << 20));
        assert_eq!(raised_nofile_limit(1 << 20, inf, 1 << 20), None);
        assert_eq!(raised_nofile_limit(inf, inf, 1 << 20), None);
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_limit() {
        let result = raise_open_file_limit().unwrap();
        let lim = nofile().unwrap();
        if let Some((old, new)) = result {
            assert!(old < new);
            assert_eq!(lim.rlim_cur, new);
        }
        if lim.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(lim.rlim_cur, lim.rlim_max);
        }
        // A second call has nothing left to do.
        assert_eq!(raise_open_file_limit().unwrap(), None);
    }
}
