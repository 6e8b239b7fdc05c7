//! Guest physical memory layout: every fixed address the VMM uses, the RAM ranges around the
//! 32-bit MMIO hole, the e820 map that describes them, and the PCI MMIO windows.
//!
//! ```text
//! 0x0000_0000  real-mode IVT/BDA (RAM)
//! 0x0000_0500  boot GDT, 0x520 boot IDT
//! 0x0000_7000  boot_params ("zero page")
//! 0x0000_8000  boot stack (grows down from 0x8ff0)
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four PDs (identity map of 4 GiB, 2 MiB pages)
//! 0x0002_0000  kernel command line
//! 0x000a_0000  reserved (VGA/BIOS area): ACPI tables at 0xe_0000 (RSDP first)
//! 0x0010_0000  kernel (bzImage protected-mode part or vmlinux), then RAM; initramfs at the top
//! 0xc000_0000  32-bit MMIO hole: PCI BARs, the PCI ECAM window 0xfe00_0000 (2 MiB, reserved
//!              in the e820 map), IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000,
//!              KVM identity-map page 0xfffb_c000, KVM TSS 0xfffb_d000
//! 0x1_0000_0000 RAM above 4 GiB (whatever did not fit below the hole)
//! then          the 64-bit PCI MMIO window
//! ```

use devices::pci::ECAM_BUS_SIZE;
use linux_loader::loader::bootparam::boot_e820_entry;

/// Boot GDT (four 8-byte entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (empty; interrupts stay off until the kernel installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux boot_params (the "zero page"); RSI points here at the 64-bit entry.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page table.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_START: u64 = 0xa000;
/// First page directory; [`IDENTITY_MAP_GIB`] consecutive ones follow.
pub const PD_START: u64 = 0xb000;
/// Size of the boot identity map, in GiB (one page directory of 2 MiB pages each).
pub const IDENTITY_MAP_GIB: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Largest command line (including the NUL) the VMM places; the kernel may accept less.
pub const CMDLINE_MAX_SIZE: usize = 0x1_0000;
/// Start of the reserved legacy area (VGA window, option ROMs, BIOS).
pub const LEGACY_RESERVED_START: u64 = 0xa_0000;
/// End (exclusive) of the reserved legacy area.
pub const LEGACY_RESERVED_END: u64 = 0x10_0000;
/// ACPI tables, the RSDP first (inside the BIOS area Linux scans for it).
pub const ACPI_START: u64 = 0xe_0000;
/// End (exclusive) of the ACPI tables' area.
pub const ACPI_END: u64 = LEGACY_RESERVED_END;
/// Where "high memory" starts: the kernel is loaded here.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole; RAM below 4 GiB ends here.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM's identity-map page (KVM_SET_IDENTITY_MAP_ADDR), one page.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// KVM's TSS (KVM_SET_TSS_ADDR), three pages.
pub const KVM_TSS_START: u64 = 0xfffb_d000;

/// The PCI Express configuration window (ECAM): 1 MiB per bus.
pub const PCI_ECAM_START: u64 = 0xfe00_0000;
/// Buses the ECAM window covers, which is also the host bridge's bus range: bus 0 and the bus
/// behind the PCI-to-PCI bridge, no more. Linux looks for peer host bridges on every bus up to
/// the MCFG's last one it does not know (32 reads each: 8160 exits for buses 0..=255).
pub const PCI_ECAM_BUSES: u64 = 2;
/// Size of the ECAM window.
pub const PCI_ECAM_SIZE: u64 = PCI_ECAM_BUSES * ECAM_BUS_SIZE;

/// 32-bit PCI MMIO window for BARs: the part of the hole below the ECAM window.
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
/// Size of the 32-bit PCI MMIO window.
pub const PCI_MMIO32_SIZE: u64 = PCI_ECAM_START - MMIO_HOLE_START;
/// Size of the 64-bit PCI MMIO window placed above RAM.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;
/// Alignment of the 64-bit PCI MMIO window.
pub const PCI_MMIO64_ALIGN: u64 = 1 << 30;

/// PCI I/O port window for I/O BARs (above all legacy ports).
pub const PCI_IO_START: u16 = 0x1000;
/// Size of the PCI I/O port window (to the end of the 64 KiB port space).
pub const PCI_IO_SIZE: u16 = 0xf000;

/// First IOAPIC pin of PCI INTx: ISA IRQs keep pins 0..16, PCI slots share pins 16..24.
pub const PCI_INTX_FIRST_GSI: u32 = 16;
/// Number of IOAPIC pins PCI INTx lines are spread over.
pub const PCI_INTX_GSIS: u32 = 8;

/// The IOAPIC pin (= GSI) that INTx pin `pin` (0..4 = INTA..INTD) of PCI bus 0 `slot` is wired
/// to: pins and slots spread over the 8 PCI pins. The DSDT's `_PRT` tells the guest the same
/// wiring; lines are level-triggered and may be shared.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    PCI_INTX_FIRST_GSI + (u32::from(slot) + u32::from(pin)) % PCI_INTX_GSIS
}

/// The INTx pin (0..4) of the PCI-to-PCI bridge at which INTx pin `pin` (0..4) of the device in
/// `slot` behind it arrives: the bridge swizzle of the PCI-to-PCI bridge specification, which a
/// guest applies when no `_PRT` describes the bus behind the bridge.
pub fn bridge_swizzle(slot: u8, pin: u8) -> u8 {
    ((u32::from(slot) + u32::from(pin)) % 4) as u8
}

/// The GSI of the ACPI Generic Event Device's interrupt (the power button): ISA IRQ 5, which no
/// emulated legacy device uses; edge-triggered, active high (ISA's default).
pub const POWER_BUTTON_GSI: u32 = 5;

/// Start of RAM above 4 GiB.
pub const HIGH_RAM_START: u64 = MMIO_HOLE_END;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

// The PCI window, the ECAM window, the APICs and KVM's private pages are all inside the hole,
// disjoint.
const _: () = assert!(PCI_MMIO32_START + PCI_MMIO32_SIZE <= PCI_ECAM_START);
const _: () = assert!(PCI_ECAM_START + PCI_ECAM_SIZE <= IOAPIC_START);
const _: () = assert!(IOAPIC_START < LAPIC_START && LAPIC_START < KVM_IDENTITY_MAP_START);
const _: () = assert!(KVM_IDENTITY_MAP_START + 0x1000 == KVM_TSS_START);
const _: () = assert!(KVM_TSS_START + 0x3000 <= MMIO_HOLE_END);
// The boot structures stay below the reserved legacy area.
const _: () = assert!(PD_START + IDENTITY_MAP_GIB * 0x1000 <= CMDLINE_START);
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= LEGACY_RESERVED_START);
// The ACPI tables sit in the reserved BIOS area.
const _: () = assert!(LEGACY_RESERVED_START <= ACPI_START && ACPI_END <= LEGACY_RESERVED_END);
const _: () = assert!(POWER_BUTTON_GSI < PCI_INTX_FIRST_GSI);

/// A guest RAM range: guest-physical start and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// Guest-physical start.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl RamRange {
    /// End (exclusive).
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Splits `mem_size` bytes of RAM around the MMIO hole: first below it, the rest from 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<RamRange> {
    let low = mem_size.min(MMIO_HOLE_START);
    let mut ranges = vec![RamRange { start: 0, len: low }];
    if mem_size > low {
        ranges.push(RamRange {
            start: HIGH_RAM_START,
            len: mem_size - low,
        });
    }
    ranges
}

/// End (exclusive) of RAM below the MMIO hole.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_HOLE_START)
}

/// Guest-physical end (exclusive) of all RAM.
pub fn ram_top(mem_size: u64) -> u64 {
    ram_ranges(mem_size).last().map_or(0, RamRange::end)
}

/// The 64-bit PCI MMIO window: `(start, size)`, 1 GiB-aligned above RAM (and above 4 GiB).
pub fn pci_mmio64_window(mem_size: u64) -> (u64, u64) {
    let top = ram_top(mem_size).max(MMIO_HOLE_END);
    let start = top.div_ceil(PCI_MMIO64_ALIGN) * PCI_MMIO64_ALIGN;
    (start, PCI_MMIO64_SIZE)
}

fn e820(addr: u64, size: u64, type_: u32) -> boot_e820_entry {
    boot_e820_entry {
        addr,
        size,
        r#type: type_,
    }
}

/// The e820 map for `mem_size` bytes of RAM (at least [`HIMEM_START`] bytes): conventional
/// memory, the reserved legacy area holding the ACPI tables, RAM up to the hole, the reserved
/// ECAM window (Linux uses an ACPI MCFG window only where the firmware reserves it), RAM above
/// 4 GiB.
pub fn e820_entries(mem_size: u64) -> Vec<boot_e820_entry> {
    let mut entries = vec![
        e820(0, LEGACY_RESERVED_START, E820_RAM),
        e820(
            LEGACY_RESERVED_START,
            LEGACY_RESERVED_END - LEGACY_RESERVED_START,
            E820_RESERVED,
        ),
    ];
    let low_end = low_ram_end(mem_size);
    if low_end > HIMEM_START {
        entries.push(e820(HIMEM_START, low_end - HIMEM_START, E820_RAM));
    }
    entries.push(e820(PCI_ECAM_START, PCI_ECAM_SIZE, E820_RESERVED));
    if mem_size > low_end {
        entries.push(e820(HIGH_RAM_START, mem_size - low_end, E820_RAM));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// The bridge swizzle (device number + pin, modulo 4) and the bus-0 wiring the `_PRT`
    /// describes: the 4 pins of the bridge's slot reach 4 different IOAPIC pins.
    #[test]
    fn intx_behind_the_bridge_swizzles_to_distinct_lines() {
        assert_eq!(bridge_swizzle(0, 0), 0, "device 0 INTA -> INTA");
        assert_eq!(bridge_swizzle(1, 0), 1, "device 1 INTA -> INTB");
        assert_eq!(bridge_swizzle(3, 1), 0, "device 3 INTB -> INTA");
        assert_eq!(bridge_swizzle(31, 3), 2);
        let bridge: Vec<u32> = (0..4).map(|pin| pci_intx_gsi(1, pin)).collect();
        assert_eq!(bridge, vec![17, 18, 19, 20]);
        assert_eq!(pci_intx_gsi(7, 3), PCI_INTX_FIRST_GSI + 2);
        for slot in 0..32 {
            for pin in 0..4 {
                let gsi = pci_intx_gsi(slot, pin);
                assert!((PCI_INTX_FIRST_GSI..PCI_INTX_FIRST_GSI + PCI_INTX_GSIS).contains(&gsi));
            }
        }
    }

    #[test]
    fn small_ram_is_one_range() {
        assert_eq!(
            ram_ranges(512 * MIB),
            vec![RamRange {
                start: 0,
                len: 512 * MIB
            }]
        );
        assert_eq!(ram_top(512 * MIB), 512 * MIB);
    }

    #[test]
    fn large_ram_skips_the_hole() {
        let r = ram_ranges(4 * GIB);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].end(), MMIO_HOLE_START);
        assert_eq!(r[1].start, 4 * GIB);
        assert_eq!(r[0].len + r[1].len, 4 * GIB);
        assert_eq!(ram_top(4 * GIB), 5 * GIB);
    }

    #[test]
    fn e820_covers_ram_and_reserves_the_legacy_area() {
        for mem in [128 * MIB, 3 * GIB, 6 * GIB] {
            let e = e820_entries(mem);
            let ram: u64 = e
                .iter()
                .filter(|x| x.r#type == E820_RAM)
                .map(|x| x.size)
                .sum();
            // Everything except the reserved 384 KiB legacy area is usable RAM.
            assert_eq!(ram, mem - (LEGACY_RESERVED_END - LEGACY_RESERVED_START));
            // Sorted, non-overlapping, no RAM inside the MMIO hole.
            for w in e.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr);
            }
            for x in e.iter().filter(|x| x.r#type == E820_RAM) {
                let end = x.addr + x.size;
                assert!(end <= MMIO_HOLE_START || x.addr >= MMIO_HOLE_END);
            }
            let reserved: Vec<_> = e.iter().filter(|x| x.r#type == E820_RESERVED).collect();
            assert_eq!(reserved.len(), 2);
            assert!(reserved[0].addr <= ACPI_START);
            assert!(ACPI_END <= reserved[0].addr + reserved[0].size);
            assert_eq!(
                (reserved[1].addr, reserved[1].size),
                (PCI_ECAM_START, PCI_ECAM_SIZE),
                "the ECAM window"
            );
        }
    }

    #[test]
    fn fixed_addresses_do_not_collide() {
        // Boot structures stay in conventional memory below the reserved area.
        let pd_end = PD_START + IDENTITY_MAP_GIB * 0x1000;
        let areas = [
            (BOOT_GDT_START, BOOT_IDT_START),
            (BOOT_IDT_START, BOOT_IDT_START + 8),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (0x8000, BOOT_STACK_POINTER + 0x10),
            (PML4_START, PML4_START + 0x1000),
            (PDPT_START, PDPT_START + 0x1000),
            (PD_START, pd_end),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE as u64),
        ];
        for (i, a) in areas.iter().enumerate() {
            assert!(a.1 <= LEGACY_RESERVED_START);
            for b in &areas[i + 1..] {
                assert!(a.1 <= b.0 || b.1 <= a.0, "{a:x?} overlaps {b:x?}");
            }
        }
    }

    #[test]
    fn mmio64_window_is_aligned_and_above_ram() {
        for mem in [512 * MIB, 3 * GIB, 5 * GIB + 3 * MIB] {
            let (start, size) = pci_mmio64_window(mem);
            assert_eq!(start % PCI_MMIO64_ALIGN, 0);
            assert!(start >= ram_top(mem) && start >= MMIO_HOLE_END);
            assert_eq!(size, PCI_MMIO64_SIZE);
        }
        assert_eq!(pci_mmio64_window(5 * GIB + 3 * MIB).0, 7 * GIB);
    }
}
