//! The seat's keyboard and pointer, as the guest's input devices see them: Wayland key codes are
//! Linux key codes; the pointer is absolute within the window, scaled by the input sink to the
//! scanout; keys and buttons still down when the window loses focus are released.

use std::collections::HashSet;
use std::sync::Arc;

use crate::input::InputSink;

/// Linux `BTN_LEFT`, `BTN_RIGHT`, `BTN_MIDDLE`.
const BTN_LEFT: u32 = 0x110;
const BTN_RIGHT: u32 = 0x111;
const BTN_MIDDLE: u32 = 0x112;

/// Keyboard and pointer state of the seat, fed by the Wayland events, feeding an [`InputSink`].
pub struct SeatInput {
    sink: Arc<dyn InputSink>,
    keys_down: HashSet<u16>,
    /// The window under the pointer: its size, and the pointer's place in it.
    at: Option<Pointer>,
    buttons: u8,
}

#[derive(Debug, Clone, Copy)]
struct Pointer {
    width: u32,
    height: u32,
    x: f64,
    y: f64,
}

impl SeatInput {
    /// A seat feeding `sink`.
    pub fn new(sink: Arc<dyn InputSink>) -> Self {
        SeatInput {
            sink,
            keys_down: HashSet::new(),
            at: None,
            buttons: 0,
        }
    }

    /// `wl_keyboard.key`: `key` (a Linux key code) went down or up.
    pub fn key(&mut self, key: u32, pressed: bool) {
        let Ok(code) = u16::try_from(key) else {
            return;
        };
        if pressed {
            self.keys_down.insert(code);
        } else if !self.keys_down.remove(&code) {
            // Released without a press seen here (it went down before the focus came).
            return;
        }
        self.sink.key(code, pressed);
    }

    /// `wl_keyboard.leave`: what is held is released in the guest.
    pub fn keyboard_leave(&mut self) {
        for code in self.keys_down.drain() {
            self.sink.key(code, false);
        }
    }

    /// `wl_pointer.enter` on a window of `width` x `height` at (`x`, `y`).
    pub fn enter(&mut self, width: u32, height: u32, x: f64, y: f64) {
        self.at = Some(Pointer {
            width,
            height,
            x,
            y,
        });
        self.send(0);
    }

    /// `wl_pointer.motion` to (`x`, `y`) of the window entered, now `width` x `height` (a mode
    /// change resizes it under the pointer).
    pub fn motion(&mut self, width: u32, height: u32, x: f64, y: f64) {
        if let Some(p) = self.at.as_mut() {
            *p = Pointer {
                width,
                height,
                x,
                y,
            };
            self.send(0);
        }
    }

    /// `wl_pointer.button`: a Linux button code went down or up (others than left, middle and
    /// right are ignored).
    pub fn button(&mut self, button: u32, pressed: bool) {
        let bit = match button {
            BTN_LEFT => 1,
            BTN_MIDDLE => 2,
            BTN_RIGHT => 4,
            _ => return,
        };
        if pressed {
            self.buttons |= bit;
        } else {
            self.buttons &= !bit;
        }
        self.send(0);
    }

    /// `wl_pointer.axis` (vertical): `value` > 0 scrolls down, which is the wheel turning
    /// towards the user (negative for the guest).
    pub fn scroll(&mut self, value: f64) {
        if value != 0.0 {
            self.send(if value > 0.0 { -1 } else { 1 });
        }
    }

    /// `wl_pointer.leave`: buttons still down are released.
    pub fn pointer_leave(&mut self) {
        if self.buttons != 0 {
            self.buttons = 0;
            self.send(0);
        }
        self.at = None;
    }

    fn send(&self, wheel: i32) {
        let Some(p) = self.at else {
            return;
        };
        if p.width == 0 || p.height == 0 {
            return;
        }
        let x = p.x.clamp(0.0, f64::from(p.width - 1)) as u32;
        let y = p.y.clamp(0.0, f64::from(p.height - 1)) as u32;
        self.sink
            .pointer(x, y, p.width, p.height, self.buttons, wheel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl InputSink for Recorder {
        fn key(&self, code: u16, pressed: bool) {
            self.0.lock().unwrap().push(format!("key {code} {pressed}"));
        }
        fn pointer(&self, x: u32, y: u32, w: u32, h: u32, buttons: u8, wheel: i32) {
            self.0
                .lock()
                .unwrap()
                .push(format!("ptr {x},{y} of {w}x{h} b={buttons} w={wheel}"));
        }
    }

    fn seat() -> (SeatInput, Arc<Recorder>) {
        let r = Arc::new(Recorder::default());
        (SeatInput::new(r.clone()), r)
    }

    fn take(r: &Recorder) -> Vec<String> {
        std::mem::take(&mut *r.0.lock().unwrap())
    }

    #[test]
    fn keys_are_linux_codes_and_held_keys_are_released_on_leave() {
        let (mut s, r) = seat();
        s.key(30, true); // KEY_A
        s.key(30, false);
        s.key(42, true); // KEY_LEFTSHIFT, held
        s.key(57, false); // a release without its press: not passed on
        s.key(70_000, true); // not a key code
        assert_eq!(take(&r), ["key 30 true", "key 30 false", "key 42 true"]);
        s.keyboard_leave();
        assert_eq!(take(&r), ["key 42 false"]);
        s.keyboard_leave();
        assert!(take(&r).is_empty());
    }

    #[test]
    fn the_pointer_is_absolute_in_the_window_with_buttons_and_wheel() {
        let (mut s, r) = seat();
        s.motion(1280, 800, 1.0, 1.0); // no window entered yet
        s.enter(1280, 800, 100.6, 200.2);
        s.motion(1280, 800, -5.0, 900.0); // clamped to the window
        s.button(0x110, true);
        s.button(0x111, true);
        s.button(0x113, true); // BTN_SIDE: ignored
        s.scroll(10.0);
        s.scroll(-10.0);
        s.button(0x110, false);
        s.pointer_leave();
        s.motion(1280, 800, 3.0, 3.0);
        assert_eq!(
            take(&r),
            [
                "ptr 100,200 of 1280x800 b=0 w=0",
                "ptr 0,799 of 1280x800 b=0 w=0",
                "ptr 0,799 of 1280x800 b=1 w=0",
                "ptr 0,799 of 1280x800 b=5 w=0",
                "ptr 0,799 of 1280x800 b=5 w=-1",
                "ptr 0,799 of 1280x800 b=5 w=1",
                "ptr 0,799 of 1280x800 b=4 w=0",
                "ptr 0,799 of 1280x800 b=0 w=0",
            ]
        );
    }
}
