//! The boot GDT: flat 64-bit code, flat data and a TSS descriptor, plus their KVM segment
//! descriptions (which must match what is in guest memory).

use kvm_bindings::kvm_segment;

/// Selector index of the 64-bit code segment.
pub const CODE_INDEX: u8 = 1;
/// Selector index of the data segment.
pub const DATA_INDEX: u8 = 2;
/// Selector index of the TSS.
pub const TSS_INDEX: u8 = 3;

/// Access/flags of a present, readable, accessed, ring-0 code segment with L=1 (64-bit), G=1.
pub const CODE_FLAGS: u16 = 0xa09b;
/// Access/flags of a present, writable, accessed, ring-0 data segment with D/B=1, G=1.
pub const DATA_FLAGS: u16 = 0xc093;
/// Access/flags of a present, busy 32-bit TSS.
pub const TSS_FLAGS: u16 = 0x808b;

/// Encodes a segment descriptor. `flags` holds the access byte in bits 0-7 and the
/// G/D/L/AVL nibble in bits 12-15 (the layout of descriptor bits 40-55).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The boot GDT: null, code, data, TSS (all flat, 4 GiB limit).
pub fn boot_gdt() -> [u64; 4] {
    [
        0,
        gdt_entry(CODE_FLAGS, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// The KVM segment register value for descriptor `entry` at GDT index `index`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // The classic flat 64-bit code and data descriptors.
        assert_eq!(gdt_entry(CODE_FLAGS, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA_FLAGS, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(
            gdt_entry(0x0093, 0x1234_5678, 0xabcde),
            0x120a_9334_5678_bcde
        );
    }

    #[test]
    fn segments_decode_what_was_encoded() {
        let gdt = boot_gdt();
        let cs = kvm_segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
        assert_eq!(
            (cs.selector, cs.type_, cs.l, cs.db, cs.s),
            (8, 0xb, 1, 0, 1)
        );
        assert_eq!((cs.present, cs.dpl, cs.g, cs.unusable), (1, 0, 1, 0));
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        let ds = kvm_segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
        assert_eq!(
            (ds.selector, ds.type_, ds.l, ds.db, ds.s),
            (0x10, 3, 0, 1, 1)
        );
        let tr = kvm_segment_from_gdt(gdt[TSS_INDEX as usize], TSS_INDEX);
        assert_eq!((tr.selector, tr.type_, tr.s, tr.present), (0x18, 0xb, 0, 1));
        let null = kvm_segment_from_gdt(gdt[0], 0);
        assert_eq!(null.unusable, 1);
        let odd = kvm_segment_from_gdt(gdt_entry(0x0093, 0x1234_5678, 0xabcde), 5);
        assert_eq!((odd.base, odd.limit, odd.g), (0x1234_5678, 0xabcde, 0));
    }
}
