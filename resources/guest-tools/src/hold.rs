//! Holding a picture on screen until the rig scenario says it is done with it: `--hold-until
//! PATH` of the display programs (the L2 script creates PATH when its step ends).

use std::path::Path;
use std::time::{Duration, Instant};

/// How often `--hold-until` looks for its path.
pub const HOLD_POLL: Duration = Duration::from_millis(50);

/// Why a hold ended: its path appeared, or the time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEnd {
    /// The path appeared.
    Path,
    /// The time ran out.
    Time,
}

impl HoldEnd {
    /// `path` or `time`, for result lines.
    pub fn word(self) -> &'static str {
        match self {
            HoldEnd::Path => "path",
            HoldEnd::Time => "time",
        }
    }
}

/// Waits until `path` exists, looking every `poll`, for at most `max`; returns how long it waited
/// and why it stopped. A path that exists already ends the wait at once.
pub fn hold_until(path: &Path, max: Duration, poll: Duration) -> (Duration, HoldEnd) {
    let t0 = Instant::now();
    loop {
        if path.exists() {
            return (t0.elapsed(), HoldEnd::Path);
        }
        let waited = t0.elapsed();
        if waited >= max {
            return (waited, HoldEnd::Time);
        }
        std::thread::sleep(poll.min(max - waited));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ends_when_the_path_appears_or_the_time_runs_out() {
        let dir = std::env::temp_dir().join(format!("guest-tools-hold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Already there: no wait.
        let (held, end) = hold_until(&dir, Duration::from_secs(10), HOLD_POLL);
        assert_eq!(end, HoldEnd::Path);
        assert!(held < Duration::from_secs(1));
        // Never there: the whole maximum.
        let missing = dir.join("never");
        let (held, end) = hold_until(&missing, Duration::from_millis(120), HOLD_POLL);
        assert_eq!(end, HoldEnd::Time);
        assert!(held >= Duration::from_millis(120));
        assert!(held < Duration::from_secs(5));
        // Created meanwhile: found by a later poll.
        let later = dir.join("later");
        let p = later.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            std::fs::write(p, b"").unwrap();
        });
        let (held, end) = hold_until(&later, Duration::from_secs(20), HOLD_POLL);
        t.join().unwrap();
        assert_eq!(end, HoldEnd::Path);
        assert!(held >= Duration::from_millis(150));
        assert!(held < Duration::from_secs(10));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(HoldEnd::Path.word(), "path");
        assert_eq!(HoldEnd::Time.word(), "time");
    }
}
