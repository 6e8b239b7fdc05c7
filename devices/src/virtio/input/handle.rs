//! The injection side: what a VNC server (or any other host thread) calls to make the guest
//! see key presses and pointer moves, and the state it shares with the device.

use std::sync::{Arc, Mutex, MutexGuard};

use log_limit::{debug_limit_global, warn_limit_global};
use vmm_sys_util::eventfd::EventFd;

use super::config::codes::{
    ABS_X, ABS_Y, BTN_LEFT, BTN_MIDDLE, BTN_MISC, BTN_RIGHT, EV_ABS, EV_KEY, EV_REL, REL_WHEEL,
};
use super::config::{Profile, TABLET_ABS_MAX};
use super::events::{Event, Group, Pending, PENDING_EVENTS};
use crate::GUEST_LOG_INTERVAL;

/// `pointer`'s button bits and the codes they stand for.
const BUTTONS: [(u8, u16); 3] = [(1, BTN_LEFT), (2, BTN_MIDDLE), (4, BTN_RIGHT)];
/// The button bits `pointer` looks at.
const BUTTON_BITS: u8 = 0b111;

/// What the device and its handles share.
pub(super) struct Shared {
    pub profile: &'static Profile,
    /// Written (non-blocking) by a handle that queued events; the worker waits on it.
    pub wake: EventFd,
    pub state: Mutex<State>,
}

/// Mutable part of [`Shared`].
pub(super) struct State {
    /// A driver is attached (DRIVER_OK until reset): events are queued only then.
    pub active: bool,
    pub pending: Pending,
    /// Button bits of the last `pointer` call.
    pub buttons: u8,
    /// Groups dropped because the guest took no events, since the device was created.
    pub dropped: u64,
}

impl Shared {
    pub fn new(profile: &'static Profile, wake: EventFd) -> Self {
        Shared {
            profile,
            wake,
            state: Mutex::new(State {
                active: false,
                pending: Pending::new(PENDING_EVENTS),
                buttons: 0,
                dropped: 0,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; the state stays usable either way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new driver (activation) or none (reset): nothing pending, every button up.
    pub fn set_active(&self, active: bool) {
        let mut st = self.lock();
        st.active = active;
        st.pending.clear();
        st.buttons = 0;
    }

    /// Queues a finished group if a driver is attached, and wakes the worker.
    fn send(&self, group: Group) {
        let (dropped, total) = {
            let mut st = self.lock();
            if !st.active {
                return;
            }
            let dropped = st.pending.push_group(group.events());
            st.dropped += dropped as u64;
            (dropped, st.dropped)
        };
        if dropped > 0 {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {}: the guest takes no events; dropped the {dropped} oldest \
                 event group(s) ({total} so far)",
                self.profile.label
            );
        }
        // Non-blocking: a full counter (EAGAIN) already means a pending wakeup.
        let _ = self.wake.write(1);
    }
}

/// Scales `v` in `0..extent` to `0..=TABLET_ABS_MAX` (the last pixel maps to the maximum),
/// clamping `v` to the frame; a frame of 0 or 1 pixels maps to 0.
pub(super) fn scale(v: u32, extent: u32) -> u32 {
    let Some(last) = extent.checked_sub(1).filter(|l| *l > 0) else {
        return 0;
    };
    let last = u64::from(last);
    let v = u64::from(v).min(last);
    // At most TABLET_ABS_MAX because v <= last; rounded to the nearest value.
    ((v * u64::from(TABLET_ABS_MAX) + last / 2) / last) as u32
}

/// A cloneable, thread-safe way to inject input into a [`VirtioInput`](super::VirtioInput)
/// from any thread. It never waits for the guest: events go into a bounded queue the device
/// drains into the guest's buffers. It stays valid across device resets and
/// re-activations; while no driver is attached (before activation, after a reset) what it
/// is given is dropped, so a driver never gets stale input from before it started.
#[derive(Clone)]
pub struct InputHandle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for InputHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputHandle")
            .field("device", &self.shared.profile.label)
            .finish()
    }
}

impl InputHandle {
    /// Key `linux_code` (a Linux `KEY_*` number, 1 = `KEY_ESC` ... 248 = `KEY_MICMUTE`) was
    /// pressed or released. Only a keyboard takes keys; other codes and other devices
    /// ignore the call.
    pub fn key(&self, linux_code: u16, pressed: bool) {
        // Buttons (codes from BTN_MISC on) belong to `pointer`.
        if linux_code >= BTN_MISC || !self.shared.profile.supports(EV_KEY, linux_code) {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {}: key {linux_code} is not offered; ignored",
                self.shared.profile.label
            );
            return;
        }
        let mut g = Group::new();
        g.push(Event::new(EV_KEY, linux_code, u32::from(pressed)));
        self.shared.send(g.finish());
    }

    /// The pointer is at (`x`, `y`) in a `width` x `height` frame (scaled to
    /// `0..=32767`, clamped to the frame), with `buttons` held (bit 0 left, bit 1 middle,
    /// bit 2 right; other bits are ignored) and the wheel turned by `wheel` notches
    /// (positive: up, away from the user, as Linux's `REL_WHEEL`). Sends the position,
    /// the buttons that changed since the last call and the wheel if it moved. Only a
    /// tablet takes pointer input; a keyboard ignores the call.
    pub fn pointer(&self, x: u32, y: u32, width: u32, height: u32, buttons: u8, wheel: i32) {
        if !self.shared.profile.has_type(EV_ABS) {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "virtio-input {}: no pointer; pointer input ignored",
                self.shared.profile.label
            );
            return;
        }
        let mut g = Group::new();
        g.push(Event::new(EV_ABS, ABS_X, scale(x, width)));
        g.push(Event::new(EV_ABS, ABS_Y, scale(y, height)));
        {
            // Compare and update under the lock so that concurrent callers agree on what
            // changed; the group is queued after it is released.
            let mut st = self.shared.lock();
            let changed = st.buttons ^ buttons;
            for (bit, code) in BUTTONS {
                if changed & bit != 0 {
                    g.push(Event::new(EV_KEY, code, u32::from(buttons & bit != 0)));
                }
            }
            st.buttons = buttons & BUTTON_BITS;
        }
        if wheel != 0 {
            g.push(Event::new(EV_REL, REL_WHEEL, wheel as u32));
        }
        self.shared.send(g.finish());
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::virtio::input::config::{KEYBOARD, TABLET};

    fn handle(profile: &'static Profile) -> InputHandle {
        let shared = Arc::new(Shared::new(profile, EventFd::new(EFD_NONBLOCK).unwrap()));
        shared.set_active(true);
        InputHandle { shared }
    }

    fn pending(h: &InputHandle) -> Vec<(u16, u16, u32)> {
        let st = h.shared.lock();
        st.pending
            .iter()
            .map(|e| (e.kind, e.code, e.value))
            .collect()
    }

    fn clear(h: &InputHandle) {
        h.shared.lock().pending.clear();
    }

    #[test]
    fn scaling_maps_the_frame_onto_the_axis_with_clamping() {
        assert_eq!(scale(0, 1024), 0);
        assert_eq!(scale(1023, 1024), 32767);
        assert_eq!(scale(1024, 1024), 32767, "clamped to the last pixel");
        assert_eq!(scale(u32::MAX, 1024), 32767);
        assert_eq!(scale(512, 1025), 16384, "the middle pixel of an odd frame");
        assert_eq!(scale(1, 3), 16384, "rounded to nearest");
        assert_eq!(scale(1, 2), 32767);
        // Degenerate frames do not divide by zero.
        assert_eq!(scale(0, 0), 0);
        assert_eq!(scale(5, 0), 0);
        assert_eq!(scale(5, 1), 0);
        // A huge frame does not overflow.
        assert_eq!(scale(u32::MAX - 1, u32::MAX), 32767);
        assert_eq!(scale(u32::MAX / 2, u32::MAX), 16384);
        // Monotonic over a real width.
        let mut last = 0;
        for x in 0..1920 {
            let s = scale(x, 1920);
            assert!(s >= last && s <= 32767);
            last = s;
        }
    }

    #[test]
    fn a_key_is_one_event_and_a_syn() {
        let h = handle(&KEYBOARD);
        h.key(30, true);
        h.key(30, false);
        assert_eq!(pending(&h), [(1, 30, 1), (0, 0, 0), (1, 30, 0), (0, 0, 0)]);
        assert_eq!(h.shared.wake.read().unwrap(), 2, "one wakeup per group");
    }

    #[test]
    fn keys_the_device_does_not_offer_are_ignored() {
        let kbd = handle(&KEYBOARD);
        kbd.key(0, true);
        kbd.key(249, true);
        kbd.key(BTN_LEFT, true);
        kbd.pointer(1, 1, 10, 10, 1, 1);
        assert!(pending(&kbd).is_empty());
        assert!(kbd.shared.wake.read().is_err(), "no wakeup");
        let tablet = handle(&TABLET);
        tablet.key(30, true);
        tablet.key(BTN_LEFT, true);
        assert!(pending(&tablet).is_empty());
    }

    #[test]
    fn pointer_sends_the_position_changed_buttons_and_the_wheel() {
        let h = handle(&TABLET);
        h.pointer(0, 599, 800, 600, 0, 0);
        assert_eq!(pending(&h), [(3, 0, 0), (3, 1, 32767), (0, 0, 0)]);
        clear(&h);
        // Left down, then left still down and right down, then both up with a wheel notch.
        h.pointer(799, 0, 800, 600, 0b001, 0);
        assert_eq!(
            pending(&h),
            [(3, 0, 32767), (3, 1, 0), (1, 0x110, 1), (0, 0, 0)]
        );
        clear(&h);
        h.pointer(10, 10, 800, 600, 0b101, 0);
        assert_eq!(pending(&h)[2..], [(1, 0x111, 1), (0, 0, 0)]);
        clear(&h);
        h.pointer(10, 10, 800, 600, 0b000, -2);
        assert_eq!(
            pending(&h)[2..],
            [
                (1, 0x110, 0),
                (1, 0x111, 0),
                (2, 8, (-2i32) as u32),
                (0, 0, 0)
            ]
        );
        clear(&h);
        // Middle, all three at once; bits above 2 are ignored and never reported.
        h.pointer(10, 10, 800, 600, 0b1111_1010, 1);
        assert_eq!(pending(&h)[2..], [(1, 0x112, 1), (2, 8, 1), (0, 0, 0)]);
        clear(&h);
        h.pointer(10, 10, 800, 600, 0b111, 0);
        assert_eq!(pending(&h)[2..], [(1, 0x110, 1), (1, 0x111, 1), (0, 0, 0)]);
        clear(&h);
        h.pointer(10, 10, 800, 600, 0b111, 0);
        assert_eq!(pending(&h).len(), 3, "no change: position and SYN only");
    }

    #[test]
    fn nothing_is_queued_without_a_driver_and_a_new_driver_starts_with_buttons_up() {
        let h = handle(&TABLET);
        h.shared.set_active(false);
        h.pointer(1, 1, 10, 10, 1, 0);
        assert!(pending(&h).is_empty());
        assert!(h.shared.wake.read().is_err(), "no wakeup");
        h.shared.set_active(true);
        // Left is still held: the new driver is told.
        h.pointer(1, 1, 10, 10, 1, 0);
        assert_eq!(pending(&h)[2..], [(1, 0x110, 1), (0, 0, 0)]);
    }

    /// A guest that never takes events: the queue stays bounded, the newest groups are
    /// kept, and the drops are logged a handful of times, not once per group.
    #[test]
    fn a_stalled_guest_bounds_the_queue_and_the_log() {
        use crate::test_log::lines_logged_by;
        let h = handle(&KEYBOARD);
        let lines = lines_logged_by(|| {
            for i in 0..5000u32 {
                h.key(1 + (i % 200) as u16, i % 2 == 0);
            }
        });
        let st = h.shared.lock();
        assert_eq!(st.pending.len(), PENDING_EVENTS);
        assert_eq!(st.dropped, 5000 - PENDING_EVENTS as u64 / 2);
        let last = st.pending.iter().nth(PENDING_EVENTS - 2).unwrap();
        assert_eq!(last.code, 1 + (4999 % 200) as u16);
        let drops: Vec<_> = lines
            .iter()
            .filter(|(_, l)| l.contains("dropped"))
            .collect();
        assert!(!drops.is_empty(), "{lines:#?}");
        assert!(lines.len() <= 3, "{lines:#?}");
    }

    #[test]
    fn handles_are_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<InputHandle>();
        let h = handle(&TABLET);
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        h.pointer(i, i, 10, 10, 0, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 200 groups of X, Y, wheel, SYN.
        assert_eq!(pending(&h).len(), 800);
    }
}
