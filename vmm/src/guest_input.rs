//! The guest's keyboard and tablet as a display's [`InputSink`]: keys go to the virtio-input
//! keyboard, the pointer to the virtio-input tablet.

use devices::virtio::InputHandle;
use virtio_gpu_display::InputSink;

/// Feeds a display's input to the VM's virtio-input devices.
#[derive(Debug, Clone)]
pub struct GuestInput {
    /// The keyboard's handle.
    pub keyboard: InputHandle,
    /// The tablet's handle.
    pub tablet: InputHandle,
}

impl InputSink for GuestInput {
    fn key(&self, linux_code: u16, pressed: bool) {
        self.keyboard.key(linux_code, pressed);
    }

    fn pointer(&self, x: u32, y: u32, width: u32, height: u32, buttons: u8, wheel: i32) {
        self.tablet.pointer(x, y, width, height, buttons, wheel);
    }
}
