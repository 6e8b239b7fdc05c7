//! X keysyms (what VNC clients send) to Linux input key codes (what virtio-input delivers),
//! for a US keyboard layout: a shifted symbol maps to the key that carries it (the client
//! sends its Shift key separately), so the guest's own layout decides the character.

/// Linux key codes of the letters `a`..=`z`.
const LETTERS: [u16; 26] = [
    30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, // a..m
    49, 24, 25, 16, 19, 31, 20, 22, 47, 17, 45, 21, 44, // n..z
];

/// `(keysym, key code)`, sorted by keysym: the Latin-1 punctuation and the function keys.
const TABLE: &[(u32, u16)] = &[
    (0x0020, 57), // space -> KEY_SPACE
    (0x0021, 2),  // exclam -> KEY_1
    (0x0022, 40), // quotedbl -> KEY_APOSTROPHE
    (0x0023, 4),  // numbersign -> KEY_3
    (0x0024, 5),  // dollar -> KEY_4
    (0x0025, 6),  // percent -> KEY_5
    (0x0026, 8),  // ampersand -> KEY_7
    (0x0027, 40), // apostrophe -> KEY_APOSTROPHE
    (0x0028, 10), // parenleft -> KEY_9
    (0x0029, 11), // parenright -> KEY_0
    (0x002a, 9),  // asterisk -> KEY_8
    (0x002b, 13), // plus -> KEY_EQUAL
    (0x002c, 51), // comma -> KEY_COMMA
    (0x002d, 12), // minus -> KEY_MINUS
    (0x002e, 52), // period -> KEY_DOT
    (0x002f, 53), // slash -> KEY_SLASH
    (0x0030, 11), // 0 -> KEY_0
    (0x0031, 2),  // 1 -> KEY_1
    (0x0032, 3),
    (0x0033, 4),
    (0x0034, 5),
    (0x0035, 6),
    (0x0036, 7),
    (0x0037, 8),
    (0x0038, 9),
    (0x0039, 10),  // 9 -> KEY_9
    (0x003a, 39),  // colon -> KEY_SEMICOLON
    (0x003b, 39),  // semicolon -> KEY_SEMICOLON
    (0x003c, 51),  // less -> KEY_COMMA
    (0x003d, 13),  // equal -> KEY_EQUAL
    (0x003e, 52),  // greater -> KEY_DOT
    (0x003f, 53),  // question -> KEY_SLASH
    (0x0040, 3),   // at -> KEY_2
    (0x005b, 26),  // bracketleft -> KEY_LEFTBRACE
    (0x005c, 43),  // backslash -> KEY_BACKSLASH
    (0x005d, 27),  // bracketright -> KEY_RIGHTBRACE
    (0x005e, 7),   // asciicircum -> KEY_6
    (0x005f, 12),  // underscore -> KEY_MINUS
    (0x0060, 41),  // grave -> KEY_GRAVE
    (0x007b, 26),  // braceleft -> KEY_LEFTBRACE
    (0x007c, 43),  // bar -> KEY_BACKSLASH
    (0x007d, 27),  // braceright -> KEY_RIGHTBRACE
    (0x007e, 41),  // asciitilde -> KEY_GRAVE
    (0xfe03, 100), // ISO_Level3_Shift (AltGr) -> KEY_RIGHTALT
    (0xff08, 14),  // BackSpace
    (0xff09, 15),  // Tab
    (0xff0d, 28),  // Return -> KEY_ENTER
    (0xff13, 119), // Pause
    (0xff14, 70),  // Scroll_Lock
    (0xff15, 99),  // Sys_Req -> KEY_SYSRQ
    (0xff1b, 1),   // Escape
    (0xff50, 102), // Home
    (0xff51, 105), // Left
    (0xff52, 103), // Up
    (0xff53, 106), // Right
    (0xff54, 108), // Down
    (0xff55, 104), // Page_Up
    (0xff56, 109), // Page_Down
    (0xff57, 107), // End
    (0xff61, 99),  // Print -> KEY_SYSRQ (the PC keyboard's Print Screen)
    (0xff63, 110), // Insert
    (0xff67, 127), // Menu -> KEY_COMPOSE
    (0xff7f, 69),  // Num_Lock
    (0xff8d, 96),  // KP_Enter
    (0xff95, 71),  // KP_Home -> KEY_KP7
    (0xff96, 75),  // KP_Left -> KEY_KP4
    (0xff97, 72),  // KP_Up -> KEY_KP8
    (0xff98, 77),  // KP_Right -> KEY_KP6
    (0xff99, 80),  // KP_Down -> KEY_KP2
    (0xff9a, 73),  // KP_Page_Up -> KEY_KP9
    (0xff9b, 81),  // KP_Page_Down -> KEY_KP3
    (0xff9c, 79),  // KP_End -> KEY_KP1
    (0xff9d, 76),  // KP_Begin -> KEY_KP5
    (0xff9e, 82),  // KP_Insert -> KEY_KP0
    (0xff9f, 83),  // KP_Delete -> KEY_KPDOT
    (0xffaa, 55),  // KP_Multiply -> KEY_KPASTERISK
    (0xffab, 78),  // KP_Add -> KEY_KPPLUS
    (0xffac, 121), // KP_Separator -> KEY_KPCOMMA
    (0xffad, 74),  // KP_Subtract -> KEY_KPMINUS
    (0xffae, 83),  // KP_Decimal -> KEY_KPDOT
    (0xffaf, 98),  // KP_Divide -> KEY_KPSLASH
    (0xffb0, 82),  // KP_0
    (0xffb1, 79),  // KP_1
    (0xffb2, 80),  // KP_2
    (0xffb3, 81),  // KP_3
    (0xffb4, 75),  // KP_4
    (0xffb5, 76),  // KP_5
    (0xffb6, 77),  // KP_6
    (0xffb7, 71),  // KP_7
    (0xffb8, 72),  // KP_8
    (0xffb9, 73),  // KP_9
    (0xffbd, 117), // KP_Equal
    (0xffbe, 59),  // F1
    (0xffbf, 60),  // F2
    (0xffc0, 61),  // F3
    (0xffc1, 62),  // F4
    (0xffc2, 63),  // F5
    (0xffc3, 64),  // F6
    (0xffc4, 65),  // F7
    (0xffc5, 66),  // F8
    (0xffc6, 67),  // F9
    (0xffc7, 68),  // F10
    (0xffc8, 87),  // F11
    (0xffc9, 88),  // F12
    (0xffe1, 42),  // Shift_L
    (0xffe2, 54),  // Shift_R
    (0xffe3, 29),  // Control_L
    (0xffe4, 97),  // Control_R
    (0xffe5, 58),  // Caps_Lock
    (0xffe7, 125), // Meta_L -> KEY_LEFTMETA
    (0xffe8, 126), // Meta_R -> KEY_RIGHTMETA
    (0xffe9, 56),  // Alt_L
    (0xffea, 100), // Alt_R
    (0xffeb, 125), // Super_L -> KEY_LEFTMETA
    (0xffec, 126), // Super_R -> KEY_RIGHTMETA
    (0xffff, 111), // Delete
];

/// The Linux key code for an X keysym, or `None` for keysyms the table does not know.
pub fn linux_key(keysym: u32) -> Option<u16> {
    match keysym {
        0x61..=0x7a => Some(LETTERS[(keysym - 0x61) as usize]),
        0x41..=0x5a => Some(LETTERS[(keysym - 0x41) as usize]),
        _ => TABLE
            .binary_search_by_key(&keysym, |&(k, _)| k)
            .ok()
            .map(|i| TABLE[i].1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_without_duplicates() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn known_keys() {
        // Letters: both cases are the same key; a few well-known codes.
        assert_eq!(linux_key(u32::from(b'a')), Some(30)); // KEY_A
        assert_eq!(linux_key(u32::from(b'A')), Some(30));
        assert_eq!(linux_key(u32::from(b'q')), Some(16)); // KEY_Q
        assert_eq!(linux_key(u32::from(b'z')), Some(44)); // KEY_Z
        assert_eq!(linux_key(u32::from(b'm')), Some(50)); // KEY_M
        assert_eq!(linux_key(u32::from(b'1')), Some(2)); // KEY_1
        assert_eq!(linux_key(u32::from(b'0')), Some(11)); // KEY_0
        assert_eq!(linux_key(u32::from(b'!')), Some(2));
        assert_eq!(linux_key(0xff0d), Some(28)); // Return -> KEY_ENTER
        assert_eq!(linux_key(0xffe1), Some(42)); // Shift_L -> KEY_LEFTSHIFT
        assert_eq!(linux_key(0xffc9), Some(88)); // F12
        assert_eq!(linux_key(0xff52), Some(103)); // Up
        assert_eq!(linux_key(0x20ac), None); // EuroSign: not on a US keyboard
        assert_eq!(linux_key(0), None);
    }

    #[test]
    fn every_letter_has_its_own_key() {
        let mut codes: Vec<u16> = LETTERS.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 26);
    }
}
