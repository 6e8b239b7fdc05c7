//! Intel MultiProcessor Specification 1.4 tables, so that Linux finds the CPUs, the IOAPIC and
//! the ISA and PCI interrupt routing without ACPI.
//!
//! Layout at `base`: the 16-byte MP floating pointer, then the configuration table (header and
//! entries sorted by type: processors, buses, IOAPIC, I/O interrupts, local interrupts). The
//! interrupt routing mirrors KVM's default GSI routing: ISA IRQ n -> IOAPIC pin n for n < 16;
//! every INTx pin of PCI bus 0 slot s -> IOAPIC pin [`pci_intx_gsi`]`(s)` (16..24), level-triggered.
//! Linux looks PCI interrupts up by MP bus id = PCI bus number, so PCI bus 0 is MP bus 0 and the
//! ISA bus is MP bus 1.

use thiserror::Error;

use crate::layout::{pci_intx_gsi, IOAPIC_START, LAPIC_START, PCI_INTX_FIRST_GSI};

const FLOATING_POINTER_SIGNATURE: &[u8; 4] = b"_MP_";
const CONFIG_TABLE_SIGNATURE: &[u8; 4] = b"PCMP";
const SPEC_REVISION: u8 = 4;
const FLOATING_POINTER_LEN: usize = 16;
const CONFIG_HEADER_LEN: usize = 44;
const PROCESSOR_ENTRY_LEN: usize = 20;
const SHORT_ENTRY_LEN: usize = 8;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
const IOAPIC_ENABLED: u8 = 1;
/// Local APIC version reported for each processor (integrated APIC).
const LAPIC_VERSION: u8 = 0x14;
/// IOAPIC version (KVM's IOAPIC is an 82093AA-style 0x11).
const IOAPIC_VERSION: u8 = 0x11;
/// Family 6 signature and the FPU + APIC feature bits, as the MP spec's example tables use.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Polarity and trigger "conforming to the bus" (ISA: active high, edge).
const INT_FLAGS_CONFORMING: u16 = 0;
/// PCI INTx: active high (KVM's IOAPIC ignores polarity; the irqfd asserts logical level 1) and
/// level-triggered (bits 0..2 polarity = 01, bits 2..4 trigger = 11).
const INT_FLAGS_PCI: u16 = 0b11_01;

const PCI_BUS_ID: u8 = 0;
const ISA_BUS_ID: u8 = 1;
/// ISA IRQs 0..16.
const ISA_IRQS: u8 = 16;
/// Device slots on PCI bus 0 (slot 0, the host bridge, has no interrupt).
const PCI_SLOTS: u8 = 32;
/// INTA..INTD.
const PCI_PINS: u8 = 4;
/// Number of IOAPIC input pins (KVM's IOAPIC has 24).
pub const IOAPIC_PINS: u8 = 24;
/// "All local APICs" as a destination.
const ALL_LAPICS: u8 = 0xff;

/// Errors building the MP table.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MpTableError {
    /// The number of CPUs cannot be described (APIC ids are 8 bits, one is the IOAPIC's).
    #[error("{0} vCPUs cannot be described in an MP table (1..=254)")]
    TooManyCpus(u8),
}

/// The IOAPIC id used in the table: the first id after the CPUs' APIC ids.
pub fn ioapic_id(nr_cpus: u8) -> u8 {
    nr_cpus
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP floating pointer plus configuration table for `nr_cpus` CPUs with APIC ids
/// `0..nr_cpus`, to be written at guest-physical `base`.
pub fn build(base: u64, nr_cpus: u8) -> Result<Vec<u8>, MpTableError> {
    if nr_cpus == 0 || nr_cpus == u8::MAX {
        return Err(MpTableError::TooManyCpus(nr_cpus));
    }
    let ioapic = ioapic_id(nr_cpus);

    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..nr_cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOT_PROCESSOR } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, PCI_BUS_ID]);
    entries.extend_from_slice(b"PCI   ");
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    count += 2;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, IOAPIC_ENABLED]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..ISA_IRQS {
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT]);
        entries.extend_from_slice(&INT_FLAGS_CONFORMING.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, irq, ioapic, irq]);
        count += 1;
    }
    for slot in 1..PCI_SLOTS {
        // pci_intx_gsi is 16..24, below IOAPIC_PINS, so it fits a u8.
        let pin_of_ioapic = pci_intx_gsi(slot) as u8;
        for pin in 0..PCI_PINS {
            entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT]);
            entries.extend_from_slice(&INT_FLAGS_PCI.to_le_bytes());
            // Source bus IRQ of a PCI interrupt: device number in bits 2..7, pin (0 = INTA) in 0..2.
            entries.extend_from_slice(&[PCI_BUS_ID, (slot << 2) | pin, ioapic, pin_of_ioapic]);
            count += 1;
        }
    }
    debug_assert!(PCI_INTX_FIRST_GSI >= u32::from(ISA_IRQS));
    // LINT0 of the BSP is the 8259's ExtINT input; LINT1 of every CPU is NMI.
    for (int_type, dest, lint) in [(INT_TYPE_EXTINT, 0, 0), (INT_TYPE_NMI, ALL_LAPICS, 1)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, int_type]);
        entries.extend_from_slice(&INT_FLAGS_CONFORMING.to_le_bytes());
        entries.extend_from_slice(&[ISA_BUS_ID, 0, dest, lint]);
        count += 1;
    }

    debug_assert_eq!(
        entries.len(),
        usize::from(nr_cpus) * PROCESSOR_ENTRY_LEN
            + usize::from(count - u16::from(nr_cpus)) * SHORT_ENTRY_LEN
    );
    let table_len = CONFIG_HEADER_LEN + entries.len();
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(CONFIG_TABLE_SIGNATURE);
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.push(SPEC_REVISION);
    table.push(0); // checksum, filled below
    table.extend_from_slice(b"RUST-VMM");
    table.extend_from_slice(b"vmm         ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    debug_assert_eq!(table.len(), CONFIG_HEADER_LEN);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let config_addr = base + FLOATING_POINTER_LEN as u64;
    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + table.len());
    out.extend_from_slice(FLOATING_POINTER_SIGNATURE);
    out.extend_from_slice(&(config_addr as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(SPEC_REVISION);
    out.push(0); // checksum, filled below
    out.extend_from_slice(&[0u8; 5]); // feature bytes: 0 = a configuration table is present
    out[10] = checksum(&out[..FLOATING_POINTER_LEN]);
    out.extend_from_slice(&table);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xf_0000;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Parses the configuration table entries into (type, bytes) pairs.
    fn entries(table: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        let mut at = CONFIG_HEADER_LEN;
        while at < table.len() {
            let len = if table[at] == ENTRY_PROCESSOR {
                PROCESSOR_ENTRY_LEN
            } else {
                SHORT_ENTRY_LEN
            };
            out.push((table[at], &table[at..at + len]));
            at += len;
        }
        assert_eq!(at, table.len());
        out
    }

    #[test]
    fn signatures_lengths_and_checksums() {
        for cpus in [1u8, 2, 4, 64, 254] {
            let t = build(BASE, cpus).unwrap();
            let fp = &t[..FLOATING_POINTER_LEN];
            assert_eq!(&fp[..4], b"_MP_");
            assert_eq!(u32_at(fp, 4) as u64, BASE + 16);
            assert_eq!(fp[8], 1);
            assert_eq!(fp[9], 4);
            assert_eq!(sum(fp), 0, "floating pointer checksum");
            let table = &t[FLOATING_POINTER_LEN..];
            assert_eq!(&table[..4], b"PCMP");
            assert_eq!(u16_at(table, 4) as usize, table.len());
            assert_eq!(sum(table), 0, "configuration table checksum");
            assert_eq!(u32_at(table, 36) as u64, LAPIC_START);
            let e = entries(table);
            assert_eq!(u16_at(table, 34) as usize, e.len());
            // Sorted by entry type, as the spec requires.
            assert!(e.windows(2).all(|w| w[0].0 <= w[1].0));
        }
    }

    #[test]
    fn describes_cpus_ioapic_and_interrupts() {
        let t = build(BASE, 3).unwrap();
        let e = entries(&t[FLOATING_POINTER_LEN..]);
        let cpus: Vec<_> = e.iter().filter(|x| x.0 == ENTRY_PROCESSOR).collect();
        assert_eq!(cpus.len(), 3);
        for (i, (_, c)) in cpus.iter().enumerate() {
            assert_eq!(c[1] as usize, i, "APIC id");
            assert_eq!(c[3] & CPU_ENABLED, CPU_ENABLED);
            assert_eq!(
                c[3] & CPU_BOOT_PROCESSOR != 0,
                i == 0,
                "only CPU 0 is the BSP"
            );
        }
        let bus: Vec<_> = e.iter().filter(|x| x.0 == ENTRY_BUS).collect();
        assert_eq!(bus.len(), 2);
        // Linux finds PCI interrupts by MP bus id = PCI bus number: PCI bus 0 must be MP bus 0.
        assert_eq!((bus[0].1[1], &bus[0].1[2..8]), (0, &b"PCI   "[..]));
        assert_eq!((bus[1].1[1], &bus[1].1[2..8]), (ISA_BUS_ID, &b"ISA   "[..]));
        let ioapic: Vec<_> = e.iter().filter(|x| x.0 == ENTRY_IOAPIC).collect();
        assert_eq!(ioapic.len(), 1);
        assert_eq!(ioapic[0].1[1], 3, "IOAPIC id follows the CPUs");
        assert_eq!(ioapic[0].1[3], IOAPIC_ENABLED);
        assert_eq!(u32_at(ioapic[0].1, 4) as u64, IOAPIC_START);
        let ints: Vec<_> = e.iter().filter(|x| x.0 == ENTRY_IO_INTERRUPT).collect();
        let (isa, pci): (Vec<_>, Vec<_>) = ints.into_iter().partition(|(_, i)| i[4] == ISA_BUS_ID);
        assert_eq!(isa.len(), 16);
        for (irq, (_, i)) in isa.iter().enumerate() {
            // ISA IRQ n on IOAPIC pin n, like KVM's default routing; COM1 is IRQ 4 -> pin 4.
            assert_eq!(
                (i[1], u16_at(i, 2)),
                (INT_TYPE_INT, 0),
                "edge, bus-conforming"
            );
            assert_eq!((i[5], i[6], i[7]), (irq as u8, 3, irq as u8));
        }
        // 31 slots x INTA..INTD, each on the pin the VMM wires that slot's INTx to.
        assert_eq!(pci.len(), 31 * 4);
        let mut seen = std::collections::BTreeSet::new();
        for (_, i) in &pci {
            assert_eq!(i[4], PCI_BUS_ID);
            let (slot, pin) = (i[5] >> 2, i[5] & 3);
            assert!((1..32).contains(&slot), "slot {slot}");
            assert!(
                seen.insert((slot, pin)),
                "slot {slot} pin {pin} listed twice"
            );
            assert_eq!(u16_at(i, 2), 0b1101, "PCI INTx: level, active high");
            assert_eq!(i[6], 3, "IOAPIC id");
            assert_eq!(u32::from(i[7]), pci_intx_gsi(slot));
            assert!((16..IOAPIC_PINS).contains(&i[7]), "never an ISA pin");
        }
        let locals: Vec<_> = e.iter().filter(|x| x.0 == ENTRY_LOCAL_INTERRUPT).collect();
        assert_eq!(locals.len(), 2);
        assert_eq!((locals[0].1[1], locals[0].1[7]), (INT_TYPE_EXTINT, 0));
        assert_eq!(
            (locals[1].1[1], locals[1].1[6], locals[1].1[7]),
            (INT_TYPE_NMI, 0xff, 1)
        );
    }

    #[test]
    fn rejects_impossible_cpu_counts() {
        assert_eq!(build(BASE, 0), Err(MpTableError::TooManyCpus(0)));
        assert_eq!(build(BASE, 255), Err(MpTableError::TooManyCpus(255)));
    }
}
