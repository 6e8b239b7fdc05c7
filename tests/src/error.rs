//! Errors of the rig harness.

use std::path::PathBuf;
use std::time::Duration;

/// Why a rig run produced no result. A scenario that ran and reported `status=FAIL` is not an
/// error: it comes back as an [`crate::Outcome`] whose result says FAIL.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// QEMU is not installed on this machine.
    #[error("qemu-system-x86_64 not found in PATH: run `resources/rig/setup.sh` (as root) to install the rig's packages")]
    QemuMissing,
    /// `resources/rig/build.sh` (or `build-kernel.sh`) failed.
    #[error(
        "resources/rig/{script} failed ({status}); full log: {log}\n--- last lines ---\n{tail}"
    )]
    Build {
        /// The script (`build.sh`, `build-kernel.sh`).
        script: String,
        /// Its exit status.
        status: String,
        /// Where its output was saved.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// An I/O operation of the harness failed.
    #[error("rig harness: {context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The run ended without a `RIG-RESULT` line for the scenario.
    #[error("scenario {scenario}: no RIG-RESULT line ({why}); console log: {log}\n--- last lines ---\n{tail}")]
    NoResult {
        /// The scenario.
        scenario: String,
        /// Exit status of run.sh, or that the harness killed it.
        why: String,
        /// The console log.
        log: PathBuf,
        /// The last console lines.
        tail: String,
    },
    /// The harness' own watchdog stopped a run that outlived its timeout (run.sh did not).
    #[error("scenario {scenario}: killed by the harness after {after:?}; console log: {log}")]
    Watchdog {
        /// The scenario.
        scenario: String,
        /// How long it ran.
        after: Duration,
        /// The console log.
        log: PathBuf,
    },
}

impl RigError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RigError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
