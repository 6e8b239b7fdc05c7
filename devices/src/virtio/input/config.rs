//! What an input device reports about itself, and the configuration space the driver reads
//! it through.
//!
//! The configuration space is a window: the driver writes `select` (byte 0) and `subsel`
//! (byte 1), then reads `size` (byte 2) and the first `size` bytes of the 128-byte union at
//! byte 8. A selection the device does not know reads size 0 and a zero union.

/// Linux evdev numbers (event types and codes) the two devices use.
pub(super) mod codes {
    /// Event type: a group of events ends (with code [`SYN_REPORT`]).
    pub const EV_SYN: u16 = 0x00;
    /// Event type: a key or button changed (value 1 pressed, 0 released).
    pub const EV_KEY: u16 = 0x01;
    /// Event type: a relative axis moved.
    pub const EV_REL: u16 = 0x02;
    /// Event type: an absolute axis has a new value.
    pub const EV_ABS: u16 = 0x03;
    /// Event type: an LED changed (driver to device, on the status queue).
    pub const EV_LED: u16 = 0x11;
    /// Event type: the driver may auto-repeat keys.
    pub const EV_REP: u16 = 0x14;

    /// `EV_SYN` code ending a group.
    pub const SYN_REPORT: u16 = 0;
    /// First keyboard key code.
    pub const KEY_ESC: u16 = 1;
    /// Last keyboard key code the keyboard offers.
    pub const KEY_MICMUTE: u16 = 248;
    /// The first button code; keys are below it.
    pub const BTN_MISC: u16 = 0x100;
    /// Pointer buttons.
    pub const BTN_LEFT: u16 = 0x110;
    /// Right button.
    pub const BTN_RIGHT: u16 = 0x111;
    /// Middle button.
    pub const BTN_MIDDLE: u16 = 0x112;
    /// The vertical scroll wheel.
    pub const REL_WHEEL: u16 = 0x08;
    /// Absolute horizontal position.
    pub const ABS_X: u16 = 0x00;
    /// Absolute vertical position.
    pub const ABS_Y: u16 = 0x01;
    /// Keyboard LEDs.
    pub const LED_NUML: u16 = 0x00;
    /// Caps lock LED.
    pub const LED_CAPSL: u16 = 0x01;
    /// Scroll lock LED.
    pub const LED_SCROLLL: u16 = 0x02;
    /// `input_id.bustype` of a virtual device.
    pub const BUS_VIRTUAL: u16 = 0x06;
}

use codes::*;

/// Size of the device configuration space: select, subsel, size, 5 reserved bytes and the
/// 128-byte union.
pub(super) const CONFIG_SIZE: usize = 136;
/// Offset of the union in the configuration space.
const UNION_OFFSET: usize = 8;
/// Size of the union.
const UNION_SIZE: usize = 128;

/// `select`: the device name (a string, subsel 0).
pub(super) const CFG_ID_NAME: u8 = 0x01;
/// `select`: the serial number (a string, subsel 0).
pub(super) const CFG_ID_SERIAL: u8 = 0x02;
/// `select`: bus type, vendor, product and version (subsel 0).
pub(super) const CFG_ID_DEVIDS: u8 = 0x03;
/// `select`: the `INPUT_PROP_*` bitmap (subsel 0).
pub(super) const CFG_PROP_BITS: u8 = 0x10;
/// `select`: the bitmap of codes of event type `subsel`.
pub(super) const CFG_EV_BITS: u8 = 0x11;
/// `select`: range and resolution of absolute axis `subsel`.
pub(super) const CFG_ABS_INFO: u8 = 0x12;

/// The upper end of the tablet's absolute axes (the lower end is 0).
pub const TABLET_ABS_MAX: u32 = 32767;

/// The codes of one event type a device emits (or, for `EV_LED`, accepts).
#[derive(Debug)]
pub(super) enum Codes {
    /// `first..=last`.
    Range(u16, u16),
    /// These codes.
    List(&'static [u16]),
    /// No codes, but the type is supported (`EV_REP`: the driver repeats keys itself).
    Flag,
}

impl Codes {
    fn contains(&self, code: u16) -> bool {
        match self {
            Codes::Range(first, last) => (*first..=*last).contains(&code),
            Codes::List(list) => list.contains(&code),
            Codes::Flag => false,
        }
    }
}

/// Range of an absolute axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AbsInfo {
    pub min: u32,
    pub max: u32,
    pub fuzz: u32,
    pub flat: u32,
    pub res: u32,
}

/// One kind of input device: identity and capabilities.
#[derive(Debug)]
pub(super) struct Profile {
    /// Short name for log lines.
    pub label: &'static str,
    pub name: &'static str,
    pub serial: &'static str,
    /// `virtio_input_devids.product` (bustype, vendor and version are shared).
    pub product: u16,
    /// `INPUT_PROP_*` numbers.
    pub props: &'static [u16],
    /// Event types and their codes.
    pub events: &'static [(u16, Codes)],
    /// Absolute axes and their ranges.
    pub abs: &'static [(u16, AbsInfo)],
}

/// `virtio_input_devids.vendor` (the vendor id QEMU gives its emulated HID devices).
pub(super) const VENDOR: u16 = 0x0627;
/// `virtio_input_devids.version`.
pub(super) const VERSION: u16 = 1;

const TABLET_AXIS: AbsInfo = AbsInfo {
    min: 0,
    max: TABLET_ABS_MAX,
    fuzz: 0,
    flat: 0,
    res: 0,
};

/// A keyboard: every key from `KEY_ESC` to `KEY_MICMUTE` (which makes Linux's input
/// classification call it a full keyboard), auto-repeat by the driver, and the three lock
/// LEDs the driver reports on the status queue.
pub(super) static KEYBOARD: Profile = Profile {
    label: "keyboard",
    name: "vmm virtio keyboard",
    serial: "vmm-keyboard",
    product: 1,
    props: &[],
    events: &[
        (EV_SYN, Codes::List(&[SYN_REPORT])),
        (EV_KEY, Codes::Range(KEY_ESC, KEY_MICMUTE)),
        (EV_REP, Codes::Flag),
        (EV_LED, Codes::List(&[LED_NUML, LED_CAPSL, LED_SCROLLL])),
    ],
    abs: &[],
};

/// An absolute pointer: X and Y in `0..=TABLET_ABS_MAX`, left, right and middle buttons and
/// a scroll wheel. No input properties (in particular not `INPUT_PROP_DIRECT`): with
/// `BTN_LEFT` and absolute X/Y and no pen or touch buttons, Linux userspace classifies it as
/// an absolute mouse (`ID_INPUT_MOUSE`), which is what a pointer following a remote
/// display's cursor is; QEMU's virtio tablet is the same.
pub(super) static TABLET: Profile = Profile {
    label: "tablet",
    name: "vmm virtio tablet",
    serial: "vmm-tablet",
    product: 3,
    props: &[],
    events: &[
        (EV_SYN, Codes::List(&[SYN_REPORT])),
        (EV_KEY, Codes::List(&[BTN_LEFT, BTN_RIGHT, BTN_MIDDLE])),
        (EV_REL, Codes::List(&[REL_WHEEL])),
        (EV_ABS, Codes::List(&[ABS_X, ABS_Y])),
    ],
    abs: &[(ABS_X, TABLET_AXIS), (ABS_Y, TABLET_AXIS)],
};

impl Profile {
    /// Whether the device emits (or accepts) `code` of event type `ev`.
    pub fn supports(&self, ev: u16, code: u16) -> bool {
        self.events
            .iter()
            .any(|(t, codes)| *t == ev && codes.contains(code))
    }

    /// Whether the device has event type `ev`.
    pub fn has_type(&self, ev: u16) -> bool {
        self.events.iter().any(|(t, _)| *t == ev)
    }

    /// `size` and the union for `select`/`subsel` (size 0 for anything unknown).
    fn payload(&self, select: u8, subsel: u8) -> (u8, [u8; UNION_SIZE]) {
        let mut u = [0u8; UNION_SIZE];
        let size = match (select, subsel) {
            (CFG_ID_NAME, 0) => put_str(&mut u, self.name),
            (CFG_ID_SERIAL, 0) => put_str(&mut u, self.serial),
            (CFG_ID_DEVIDS, 0) => {
                for (i, v) in [BUS_VIRTUAL, VENDOR, self.product, VERSION]
                    .into_iter()
                    .enumerate()
                {
                    u[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
                }
                8
            }
            (CFG_PROP_BITS, 0) => put_bits(&mut u, self.props.iter().copied()),
            (CFG_EV_BITS, ev) => match self.events.iter().find(|(t, _)| *t == u16::from(ev)) {
                Some((_, Codes::Range(first, last))) => put_bits(&mut u, *first..=*last),
                Some((_, Codes::List(list))) => put_bits(&mut u, list.iter().copied()),
                // An empty bitmap; a non-zero size says the type is there.
                Some((_, Codes::Flag)) => 1,
                None => 0,
            },
            (CFG_ABS_INFO, axis) => match self.abs.iter().find(|(a, _)| *a == u16::from(axis)) {
                Some((_, info)) => {
                    for (i, v) in [info.min, info.max, info.fuzz, info.flat, info.res]
                        .into_iter()
                        .enumerate()
                    {
                        u[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
                    }
                    20
                }
                None => 0,
            },
            _ => 0,
        };
        (size, u)
    }
}

/// Copies `s` (without a terminating NUL, at most the union's size) and returns its length.
fn put_str(u: &mut [u8; UNION_SIZE], s: &str) -> u8 {
    let n = s.len().min(UNION_SIZE);
    u[..n].copy_from_slice(&s.as_bytes()[..n]);
    n as u8
}

/// Sets bit `code` (byte `code / 8`, bit `code % 8`) for each code that fits the union and
/// returns the number of bytes up to the last non-zero one.
fn put_bits(u: &mut [u8; UNION_SIZE], codes: impl Iterator<Item = u16>) -> u8 {
    for code in codes {
        if let Some(byte) = u.get_mut(usize::from(code / 8)) {
            *byte |= 1 << (code % 8);
        }
    }
    u.iter().rposition(|b| *b != 0).map_or(0, |i| i as u8 + 1)
}

/// The driver-visible configuration space: the selection and the profile it reads from.
#[derive(Debug)]
pub(super) struct ConfigSpace {
    profile: &'static Profile,
    select: u8,
    subsel: u8,
}

impl ConfigSpace {
    pub fn new(profile: &'static Profile) -> Self {
        ConfigSpace {
            profile,
            select: 0,
            subsel: 0,
        }
    }

    /// Back to no selection (device reset).
    pub fn reset(&mut self) {
        self.select = 0;
        self.subsel = 0;
    }

    fn bytes(&self) -> [u8; CONFIG_SIZE] {
        let (size, u) = self.profile.payload(self.select, self.subsel);
        let mut c = [0u8; CONFIG_SIZE];
        c[0] = self.select;
        c[1] = self.subsel;
        c[2] = size;
        c[UNION_OFFSET..].copy_from_slice(&u);
        c
    }

    /// Reads `data.len()` bytes at `offset`; bytes beyond the space read as 0.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let c = self.bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| c.get(o).copied())
                .unwrap_or(0);
        }
    }

    /// Writes `data` at `offset`: only `select` and `subsel` are writable, other bytes are
    /// ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => self.select = *b,
                Some(1) => self.subsel = *b,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Linux's driver does: select, subsel, read size, read the union.
    fn query(c: &mut ConfigSpace, select: u8, subsel: u8) -> Vec<u8> {
        c.write(0, &[select]);
        c.write(1, &[subsel]);
        let mut size = [0u8];
        c.read(2, &mut size);
        let mut u = vec![0u8; usize::from(size[0])];
        c.read(8, &mut u);
        u
    }

    fn bits(u: &[u8]) -> Vec<u16> {
        (0..u.len() * 8)
            .filter(|b| u[b / 8] & (1 << (b % 8)) != 0)
            .map(|b| b as u16)
            .collect()
    }

    fn le16(u: &[u8], i: usize) -> u16 {
        u16::from_le_bytes([u[2 * i], u[2 * i + 1]])
    }

    fn le32(u: &[u8], i: usize) -> u32 {
        u32::from_le_bytes(u[4 * i..4 * i + 4].try_into().unwrap())
    }

    #[test]
    fn keyboard_names_itself_and_reports_its_ids() {
        let mut c = ConfigSpace::new(&KEYBOARD);
        assert_eq!(query(&mut c, CFG_ID_NAME, 0), b"vmm virtio keyboard");
        assert_eq!(query(&mut c, CFG_ID_SERIAL, 0), b"vmm-keyboard");
        let ids = query(&mut c, CFG_ID_DEVIDS, 0);
        assert_eq!(ids.len(), 8);
        assert_eq!(
            [le16(&ids, 0), le16(&ids, 1), le16(&ids, 2), le16(&ids, 3)],
            [0x06, 0x0627, 1, 1]
        );
        assert!(query(&mut c, CFG_PROP_BITS, 0).is_empty());
        // The string selections have no subsel but 0.
        assert!(query(&mut c, CFG_ID_NAME, 1).is_empty());
    }

    #[test]
    fn keyboard_offers_every_key_repeat_and_the_lock_leds() {
        let mut c = ConfigSpace::new(&KEYBOARD);
        let keys = bits(&query(&mut c, CFG_EV_BITS, EV_KEY as u8));
        assert_eq!(keys, (1..=248).collect::<Vec<u16>>());
        // Linux userspace calls a device a keyboard when bits 1..=31 of the key map are set.
        assert!((1..32).all(|k| keys.contains(&k)));
        let rep = query(&mut c, CFG_EV_BITS, EV_REP as u8);
        assert_eq!(rep, [0], "EV_REP: size 1, no codes");
        assert_eq!(bits(&query(&mut c, CFG_EV_BITS, EV_LED as u8)), [0, 1, 2]);
        assert_eq!(bits(&query(&mut c, CFG_EV_BITS, EV_SYN as u8)), [0]);
        for ev in [EV_REL, EV_ABS, 0x04, 0x05, 0x12] {
            assert!(query(&mut c, CFG_EV_BITS, ev as u8).is_empty(), "{ev:#x}");
        }
        assert!(query(&mut c, CFG_ABS_INFO, 0).is_empty());
    }

    #[test]
    fn tablet_offers_buttons_wheel_and_two_absolute_axes() {
        let mut c = ConfigSpace::new(&TABLET);
        assert_eq!(query(&mut c, CFG_ID_NAME, 0), b"vmm virtio tablet");
        let ids = query(&mut c, CFG_ID_DEVIDS, 0);
        assert_eq!([le16(&ids, 0), le16(&ids, 1)], [0x06, 0x0627]);
        assert_eq!(
            bits(&query(&mut c, CFG_EV_BITS, EV_KEY as u8)),
            [0x110, 0x111, 0x112]
        );
        assert_eq!(bits(&query(&mut c, CFG_EV_BITS, EV_REL as u8)), [8]);
        assert_eq!(bits(&query(&mut c, CFG_EV_BITS, EV_ABS as u8)), [0, 1]);
        assert!(query(&mut c, CFG_EV_BITS, EV_REP as u8).is_empty());
        assert!(query(&mut c, CFG_EV_BITS, EV_LED as u8).is_empty());
        assert!(query(&mut c, CFG_PROP_BITS, 0).is_empty(), "no properties");
        for axis in [ABS_X, ABS_Y] {
            let a = query(&mut c, CFG_ABS_INFO, axis as u8);
            assert_eq!(a.len(), 20);
            let got: Vec<u32> = (0..5).map(|i| le32(&a, i)).collect();
            assert_eq!(got, [0, 32767, 0, 0, 0], "min max fuzz flat res");
        }
        assert!(query(&mut c, CFG_ABS_INFO, 2).is_empty());
    }

    #[test]
    fn unknown_selections_read_size_zero_and_a_zero_union() {
        let mut c = ConfigSpace::new(&TABLET);
        c.write(0, &[CFG_ID_NAME]);
        c.write(0, &[0x42, 7]);
        let mut all = [0xffu8; CONFIG_SIZE];
        c.read(0, &mut all);
        assert_eq!(&all[..3], [0x42, 7, 0], "select and subsel read back");
        assert!(all[3..].iter().all(|b| *b == 0));
        for select in [0u8, 0x04, 0x13, 0xff] {
            assert!(query(&mut c, select, 0).is_empty(), "{select:#x}");
        }
    }

    #[test]
    fn only_select_and_subsel_are_writable_and_reads_past_the_end_are_zero() {
        let mut c = ConfigSpace::new(&KEYBOARD);
        // One 4-byte write over select, subsel, size and a reserved byte.
        c.write(0, &[CFG_ID_NAME, 0, 99, 99]);
        c.write(8, b"overwritten?");
        c.write(u64::MAX, &[1, 2]);
        let mut head = [0u8; 12];
        c.read(0, &mut head);
        assert_eq!(head[..3], [CFG_ID_NAME, 0, 19]);
        assert_eq!(&head[8..], b"vmm ");
        let mut tail = [0xffu8; 8];
        c.read(132, &mut tail);
        assert_eq!(tail, [0; 8]);
        c.read(u64::MAX, &mut tail);
        assert_eq!(tail, [0; 8]);
        c.reset();
        c.read(0, &mut head);
        assert_eq!(head, [0; 12]);
    }

    #[test]
    fn profiles_answer_what_they_support() {
        assert!(KEYBOARD.supports(EV_KEY, 30));
        assert!(!KEYBOARD.supports(EV_KEY, 0));
        assert!(!KEYBOARD.supports(EV_KEY, BTN_LEFT));
        assert!(!KEYBOARD.has_type(EV_ABS));
        assert!(TABLET.supports(EV_KEY, BTN_MIDDLE));
        assert!(!TABLET.supports(EV_KEY, 30));
        assert!(TABLET.has_type(EV_ABS));
    }
}
