//! The error type of the guest programs' shared modules.

use std::io;

/// Everything that can go wrong in the shared guest-program helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed; `what` says which one and on what.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// No PCI device with these ids is present.
    #[error("no PCI device {vendor:04x}:{device:04x} in /sys/bus/pci/devices")]
    NoDevice { vendor: u16, device: u16 },
    /// Text or bytes from the kernel or a device did not have the expected form.
    #[error("cannot parse {what}: {detail}")]
    Parse { what: String, detail: String },
    /// A device or kernel answered in a way the program cannot work with.
    #[error("{0}")]
    Unsupported(String),
    /// A bounded wait ran out.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout { what: String, ms: u64 },
}

/// Result alias of the shared modules.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] from the last OS error (errno), naming the failed operation.
    pub fn last_os(what: impl Into<String>) -> Self {
        Error::Io {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// A closure turning an `io::Error` into [`Error::Io`] with context, for `map_err`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// A parse error.
    pub fn parse(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Parse {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
