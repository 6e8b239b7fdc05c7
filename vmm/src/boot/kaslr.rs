//! Kernel address space layout randomisation for a kernel the VMM unpacked: the random physical
//! and virtual placement the kernel's own decompressor would choose, so that unpacking on the
//! host does not take it away from the guest.

use std::io::{self, Read};

/// Virtual room of an x86-64 kernel built with CONFIG_RANDOMIZE_BASE (`KERNEL_IMAGE_SIZE`):
/// the kernel's image must end within it, counted from `__START_KERNEL_map`.
const KERNEL_IMAGE_SIZE: u64 = 1 << 30;
/// The kernel's early page tables map itself with 2 MiB pages: placements are multiples of it.
const MIN_ALIGN: u64 = 2 << 20;

/// Where the kernel goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Physical address of the kernel's first load segment.
    pub phys: u64,
    /// Offset added to the kernel's virtual addresses (0: where it was linked).
    pub virt_offset: u64,
}

/// Whether the command line turns randomisation off (the word `nokaslr` before any `--`).
pub fn disabled_by(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .any(|w| w == "nokaslr")
}

/// 64 random bits from the host.
pub fn host_random() -> io::Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Picks slot `random % slots` of `align`-sized slots from `min` such that `size` bytes fit
/// below `limit`; `min` when none does.
fn slot(random: u64, min: u64, limit: u64, size: u64, align: u64) -> u64 {
    let room = limit.saturating_sub(min).saturating_sub(size);
    let slots = room / align + 1;
    min + (random % slots) * align
}

/// A random placement for a kernel linked at `link_base` (2 MiB aligned) whose image spans
/// `span` bytes: physically anywhere from `link_base` to `phys_limit` (exclusive: where the
/// initramfs or the end of low RAM starts), virtually within `KERNEL_IMAGE_SIZE`. `align`
/// is the kernel's `kernel_alignment`. `random` supplies the entropy (two halves).
pub fn place(random: u64, link_base: u64, span: u64, phys_limit: u64, align: u64) -> Placement {
    let align = align.max(MIN_ALIGN).next_power_of_two();
    let size = span.next_multiple_of(MIN_ALIGN);
    let phys = slot(random & 0xffff_ffff, link_base, phys_limit, size, align);
    let virt = slot(random >> 32, link_base, KERNEL_IMAGE_SIZE, size, align);
    Placement {
        phys,
        virt_offset: virt - link_base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x100_0000;
    const SPAN: u64 = 0x3a0_0000;

    #[test]
    fn every_placement_is_aligned_and_inside_its_room() {
        let limit = 0x1f00_0000;
        let mut phys_seen = std::collections::BTreeSet::new();
        let mut virt_seen = std::collections::BTreeSet::new();
        // Low half: the physical slot, high half: the virtual one.
        for i in 0..1000u64 {
            let r = i | (i << 32);
            let p = place(r, BASE, SPAN, limit, 0x20_0000);
            assert_eq!(p.phys % MIN_ALIGN, 0);
            assert_eq!(p.virt_offset % MIN_ALIGN, 0);
            assert!(p.phys >= BASE && p.phys + SPAN <= limit, "{p:x?}");
            assert!(BASE + p.virt_offset + SPAN <= KERNEL_IMAGE_SIZE, "{p:x?}");
            phys_seen.insert(p.phys);
            virt_seen.insert(p.virt_offset);
        }
        // (limit - BASE - SPAN rounded) / 2 MiB + 1 physical slots; all of them are reached.
        assert_eq!(
            phys_seen.len() as u64,
            (limit - BASE - SPAN) / MIN_ALIGN + 1
        );
        assert_eq!(
            virt_seen.len() as u64,
            (KERNEL_IMAGE_SIZE - BASE - SPAN) / MIN_ALIGN + 1
        );
    }

    #[test]
    fn no_room_means_the_link_address() {
        let p = place(u64::MAX, BASE, SPAN, BASE + SPAN - 1, 0x20_0000);
        assert_eq!(p.phys, BASE);
        let p = place(12345, BASE, SPAN, 0, 0x20_0000);
        assert_eq!(p.phys, BASE);
    }

    #[test]
    fn a_larger_kernel_alignment_is_kept() {
        for i in 0..100u64 {
            let p = place(i * 7919, BASE, SPAN, 0x4000_0000, 0x100_0000);
            assert_eq!(p.phys % 0x100_0000, 0);
            assert_eq!(p.virt_offset % 0x100_0000, 0);
        }
    }

    #[test]
    fn nokaslr_is_a_whole_word_before_init_arguments() {
        assert!(disabled_by("console=ttyS0 nokaslr quiet"));
        assert!(!disabled_by("console=ttyS0 nokaslrx"));
        assert!(!disabled_by("console=ttyS0 -- nokaslr"));
        assert!(!disabled_by(""));
    }

    #[test]
    fn the_host_gives_entropy() {
        let a = host_random().unwrap();
        let b = host_random().unwrap();
        assert_ne!(a, b);
    }
}
