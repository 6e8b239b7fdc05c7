//! The `headless` backend: accepts everything, shows nothing, counts what it saw.

use super::{DisplayBackend, DisplayError, ScanoutFrame};
use crate::protocol::Rect;

/// A display with no output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadlessDisplay {
    /// Scanout changes seen.
    pub scanouts: u64,
    /// Flushes seen.
    pub flushes: u64,
}

impl DisplayBackend for HeadlessDisplay {
    fn set_scanout(&mut self, _: u32, _: Option<&ScanoutFrame<'_>>) -> Result<(), DisplayError> {
        self.scanouts += 1;
        Ok(())
    }

    fn flush(&mut self, _: u32, _: &ScanoutFrame<'_>, _: Rect) -> Result<(), DisplayError> {
        self.flushes += 1;
        Ok(())
    }
}
