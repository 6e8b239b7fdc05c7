//! Kernel-in-the-loop rig harness.
//!
//! The rig (see `resources/rig/README.md`) boots a Debian kernel (L1) in
//! QEMU/TCG with nested SVM, an emulated VT-d and an ivshmem device, and runs one scenario
//! script inside it. Scenarios report on the serial console with one line of the form
//! `RIG-RESULT scenario=<name> status=PASS|FAIL [k=v ...]` and any number of
//! `RIG-DATA scenario=<name> k=v ...` lines.
//!
//! A scenario only gathers facts: `status=PASS` says they are complete, `status=FAIL reason=..`
//! that it could not gather them (setup failed, the vmm was killed by a signal, no result line
//! from L2, ...). The test (`tests/rig_<name>.rs`) decides whether the facts are right
//! ([`Outcome::assert_passed`], then assertions on the facts, e.g. [`Outcome::assert_vmm_ran_clean`]).
//!
//! ```no_run
//! use std::time::Duration;
//! let out = rig_tests::Scenario::new("l1-smoke")
//!     .timeout(Duration::from_secs(180))
//!     .shm_fill(|buf: &mut [u8]| buf[..4].copy_from_slice(&[1, 2, 3, 4]))
//!     .run()
//!     .expect("rig run");
//! assert!(out.result.is_pass(), "{}", out.result);
//! ```

mod console_file;
mod dmabuf_log;
mod error;
mod facts;
mod frames;
mod image;
mod paths;
mod relay;
mod result_line;
mod scenario;
#[cfg(test)]
mod script_tests;
mod shm;

pub use console_file::{parse_files, ConsoleFile};
pub use dmabuf_log::{parse_export, parse_exports, DmabufExport, FDINFO_MARKER};
pub use error::RigError;
pub use facts::{l2_problems, vmm_run_problems};
pub use frames::{identify_frame, identify_image, KnownImage, GPU_USER_BLOB_IMAGES};
pub use image::{decode_png, Image};
pub use paths::{logs_dir, rig_dir, workspace_root};
pub use relay::{guest_lines_starting, l2_console, parse_l2_lines, L2_PREFIX};
pub use result_line::{parse_lines, LineKind, ParseError, ResultLine, Status};
pub use scenario::{L1Cpu, L1Kernel, L2Kernel, Outcome, Scenario, DEFAULT_TIMEOUT};
pub use shm::SHM_SIZE;
