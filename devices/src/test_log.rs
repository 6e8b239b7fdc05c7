//! Test support: a `log::Log` that hands each test thread the lines it logged, to check that
//! guest-triggered lines are rate-limited. A process has one logger: it is installed by the
//! first test that asks for it and shared by all tests of this binary, each of which only
//! sees the lines of its own thread.

use std::cell::RefCell;
use std::sync::Once;

/// One captured line: level and text.
pub(crate) type Line = (log::Level, String);

thread_local! {
    static CAPTURED: RefCell<Option<Vec<Line>>> = const { RefCell::new(None) };
}

struct ThreadCapture;

impl log::Log for ThreadCapture {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = (record.level(), record.args().to_string());
        CAPTURED.with(|c| {
            if let Some(lines) = c.borrow_mut().as_mut() {
                lines.push(line);
            }
        });
    }

    fn flush(&self) {}
}

static LOGGER: ThreadCapture = ThreadCapture;

/// Runs `f` with every level enabled and returns the lines it logged on this thread.
pub(crate) fn lines_logged_by(f: impl FnOnce()) -> Vec<Line> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger in the devices unit tests");
        log::set_max_level(log::LevelFilter::Trace);
    });
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    f();
    CAPTURED.with(|c| c.borrow_mut().take().unwrap_or_default())
}

#[test]
fn captures_this_threads_lines_only() {
    let lines = lines_logged_by(|| {
        log::warn!("mine");
        std::thread::spawn(|| log::warn!("another thread's"))
            .join()
            .unwrap();
        log::debug!("mine too");
    });
    assert_eq!(
        lines,
        vec![
            (log::Level::Warn, "mine".to_string()),
            (log::Level::Debug, "mine too".to_string())
        ]
    );
}
