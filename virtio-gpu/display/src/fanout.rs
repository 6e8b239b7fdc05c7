//! Several displays at once: every scanout change, flush and cursor goes to each.

use virtio_gpu_blob::display::{CursorState, DisplayBackend, DisplayError, ScanoutFrame};
use virtio_gpu_blob::protocol::Rect;

/// Hands everything to each of its displays; one display's error does not keep the others
/// from their frame (the first error is returned).
pub struct DisplayFanout {
    displays: Vec<Box<dyn DisplayBackend>>,
}

impl DisplayFanout {
    /// Over `displays`, in order.
    pub fn new(displays: Vec<Box<dyn DisplayBackend>>) -> Self {
        DisplayFanout { displays }
    }

    fn each(
        &mut self,
        mut f: impl FnMut(&mut dyn DisplayBackend) -> Result<(), DisplayError>,
    ) -> Result<(), DisplayError> {
        let mut first = Ok(());
        for d in &mut self.displays {
            let r = f(d.as_mut());
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl DisplayBackend for DisplayFanout {
    fn set_scanout(
        &mut self,
        scanout_id: u32,
        frame: Option<&ScanoutFrame<'_>>,
    ) -> Result<(), DisplayError> {
        self.each(|d| d.set_scanout(scanout_id, frame))
    }

    fn flush(
        &mut self,
        scanout_id: u32,
        frame: &ScanoutFrame<'_>,
        rect: Rect,
    ) -> Result<(), DisplayError> {
        self.each(|d| d.flush(scanout_id, frame, rect))
    }

    fn cursor(&mut self, scanout_id: u32, cursor: CursorState) {
        for d in &mut self.displays {
            d.cursor(scanout_id, cursor);
        }
    }

    fn finish(&mut self, scanout_id: u32, frame: &ScanoutFrame<'_>) -> Result<(), DisplayError> {
        self.each(|d| d.finish(scanout_id, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records calls; fails its flushes when told to.
    struct Probe {
        log: Arc<Mutex<Vec<String>>>,
        name: &'static str,
        fail: bool,
    }

    impl DisplayBackend for Probe {
        fn set_scanout(
            &mut self,
            id: u32,
            frame: Option<&ScanoutFrame<'_>>,
        ) -> Result<(), DisplayError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} set {id} {}", self.name, frame.is_some()));
            Ok(())
        }

        fn flush(
            &mut self,
            id: u32,
            _frame: &ScanoutFrame<'_>,
            rect: Rect,
        ) -> Result<(), DisplayError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} flush {id} {}", self.name, rect.width));
            if self.fail {
                Err(DisplayError::Io(self.name.into()))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn every_display_sees_every_call_even_after_an_error() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let probe = |name, fail| -> Box<dyn DisplayBackend> {
            Box::new(Probe {
                log: log.clone(),
                name,
                fail,
            })
        };
        let mut f = DisplayFanout::new(vec![probe("a", true), probe("b", false)]);
        let buf = vec![0u8; 16];
        let frame = ScanoutFrame {
            dmabuf: None,
            pixels: &buf,
            fourcc: virtio_gpu_blob::format::FORMATS[0].fourcc,
            width: 2,
            height: 2,
            stride: 8,
            offset: 0,
        };
        f.set_scanout(0, Some(&frame)).unwrap();
        let e = f
            .flush(
                0,
                &frame,
                Rect {
                    x: 0,
                    y: 0,
                    width: 2,
                    height: 2,
                },
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "display output: a");
        assert_eq!(
            *log.lock().unwrap(),
            ["a set 0 true", "b set 0 true", "a flush 0 2", "b flush 0 2"]
        );
    }
}
