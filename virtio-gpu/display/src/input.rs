//! Where a display's keyboard and pointer events go: the guest's input devices, implemented by
//! whoever builds the VM (e.g. over virtio-input). Display backends translate their clients'
//! events into these calls; they must never block.

/// Receives a display's input for the guest.
pub trait InputSink: Send + Sync {
    /// A key (a Linux input key code, `KEY_*`) went down or up.
    fn key(&self, linux_code: u16, pressed: bool);

    /// The absolute pointer is at (`x`, `y`) of a `width` x `height` frame with `buttons` down
    /// (bit 0 left, 1 middle, 2 right); `wheel` is the wheel's movement (positive: up).
    fn pointer(&self, x: u32, y: u32, width: u32, height: u32, buttons: u8, wheel: i32);
}
