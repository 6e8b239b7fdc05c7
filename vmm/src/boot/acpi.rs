//! ACPI tables for a hardware-reduced platform, built with rust-vmm's `acpi_tables` and placed in
//! the reserved BIOS area where Linux looks for the RSDP (0xE0000..0x100000, 16-byte steps).
//!
//! - RSDP -> XSDT -> FADT, MADT and (with ECAM) MCFG; the FADT points at the DSDT.
//! - FADT: hardware-reduced (no PM1 blocks, no SCI), the sleep control/status registers and the
//!   reset register of [`devices::legacy::AcpiPm`], no i8042 (Linux still resets through port
//!   0x64 with `reboot=k`), no VGA.
//! - MADT: one local APIC per vCPU and the IOAPIC; ISA IRQs are identity-mapped (ACPI's default,
//!   as KVM's routing has them), so there is no interrupt source override.
//! - MCFG: the PCI Express configuration window (ECAM) of the host bridge's buses, when the VM
//!   has it (the e820 map reserves it, as Linux wants).
//! - DSDT: the PCI host bridge (buses 0 and 1: bus 0 and the bus behind its PCI-to-PCI bridge;
//!   the configuration ports 0xCF8 when the VM has them instead of ECAM, the PCI port and MMIO
//!   windows) with `_PRT` giving each bus-0 slot's
//!   INTx pins their IOAPIC pin ([`pci_intx_gsi`]), COM1, the
//!   CMOS RTC, the power button (PNP0C0C) and the Generic Event Device (ACPI0013) whose edge-triggered
//!   interrupt [`POWER_BUTTON_GSI`] notifies the power button, and `_S5` for power-off.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, EISAName, Interrupt, Method, Name, Notify, Package,
    Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use devices::legacy::{
    ACPI_PM_PORT, CMOS_PORT_BASE, CMOS_PORT_LEN, RESET_OFFSET, RESET_VALUE, SERIAL_COM1_IRQ,
    SERIAL_COM1_PORT, SLEEP_CONTROL_OFFSET, SLEEP_STATUS_OFFSET, SLEEP_TYPE_S5,
};
use devices::pci::{PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT_SIZE};
use thiserror::Error;

use crate::layout::{
    pci_intx_gsi, ACPI_END, ACPI_START, IOAPIC_START, LAPIC_START, PCI_ECAM_BUSES, PCI_ECAM_START,
    PCI_IO_SIZE, PCI_IO_START, PCI_MMIO32_SIZE, PCI_MMIO32_START, POWER_BUTTON_GSI,
};
use crate::vm::PciConfigAccess;

/// OEM id of every table.
const OEM_ID: [u8; 6] = *b"RVMMGP";
/// OEM table id of every table.
const OEM_TABLE_ID: [u8; 8] = *b"VMMTABLE";
const OEM_REVISION: u32 = 1;
/// MADT: 8259 PICs present (KVM's irqchip has them).
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT revision of ACPI 6.5.
const MADT_REVISION: u8 = 6;
/// DSDT revision 2: integers are 64 bits.
const DSDT_REVISION: u8 = 2;
/// FADT IA-PC boot architecture flag: VGA not present.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// Device slots on PCI bus 0 (slot 0, the host bridge, has no interrupt).
const PCI_SLOTS: u32 = 32;
/// INTA..INTD.
const PCI_PINS: u8 = 4;
/// ISA IRQ of the CMOS RTC.
const RTC_IRQ: u32 = 8;

/// Errors building the ACPI tables.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AcpiError {
    /// The tables do not fit their area.
    #[error("the ACPI tables take {0} bytes, more than the {ACPI_SIZE} bytes reserved for them")]
    TooBig(usize),
}

const ACPI_SIZE: u64 = ACPI_END - ACPI_START;

/// The tables, laid out for [`ACPI_START`]: the RSDP there, the others after it.
#[derive(Debug, Clone)]
pub struct AcpiTables {
    /// The bytes from [`ACPI_START`] on.
    pub bytes: Vec<u8>,
    /// Guest addresses of the DSDT, FADT, MADT and XSDT, in that order.
    pub tables: [u64; 4],
    /// Guest address of the MCFG, if the VM has the ECAM window.
    pub mcfg: Option<u64>,
}

/// Appends `table` at the next 16-byte boundary of `out` (placed at [`ACPI_START`]) and returns
/// its guest address.
fn place(out: &mut Vec<u8>, table: &[u8]) -> u64 {
    out.resize(out.len().next_multiple_of(16), 0);
    let addr = ACPI_START + out.len() as u64;
    out.extend_from_slice(table);
    addr
}

/// AML already serialized (a device whose parts were temporaries).
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn aml_bytes(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

/// The system I/O register of one byte at `port`.
fn io_register(port: u16) -> GAS {
    GAS::new(
        GasSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}

/// The DSDT's AML body (everything after the table header).
fn dsdt_body(mmio64: (u64, u64), pci_config: PciConfigAccess) -> Vec<u8> {
    // PCI host bridge: bus 0 and the buses behind its PCI-to-PCI bridge (the guest may
    // renumber them, within the ECAM window's buses), its configuration ports if it has them
    // and its windows.
    let bus = AddressSpace::<u16>::new_bus_number(0, (PCI_ECAM_BUSES - 1) as u16);
    let config = IO::new(
        PCI_CONFIG_IO_PORT,
        PCI_CONFIG_IO_PORT,
        1,
        PCI_CONFIG_IO_PORT_SIZE as u8,
    );
    let io = AddressSpace::<u16>::new_io(PCI_IO_START, PCI_IO_START + (PCI_IO_SIZE - 1), None);
    let mem32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_START + PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let mem64 = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::PreFetchable,
        true,
        mmio64.0,
        mmio64.0 + mmio64.1 - 1,
        None,
    );
    let crs = match pci_config {
        PciConfigAccess::Io => ResourceTemplate::new(vec![&bus, &config, &io, &mem32, &mem64]),
        PciConfigAccess::Ecam => ResourceTemplate::new(vec![&bus, &io, &mem32, &mem64]),
    };
    // _PRT of bus 0: INTx pin p of slot s goes to IOAPIC pin pci_intx_gsi(s, p) (source 0: a
    // GSI). The bus behind the PCI-to-PCI bridge has no _PRT: the guest swizzles its pins to
    // the bridge's (layout::bridge_swizzle), as the VMM does when it wires them.
    let routes: Vec<(u32, u8, u32)> = (1..PCI_SLOTS)
        .flat_map(|slot| {
            (0..PCI_PINS).map(move |pin| (slot << 16 | 0xffff, pin, pci_intx_gsi(slot as u8, pin)))
        })
        .collect();
    let entries: Vec<Package> = routes
        .iter()
        .map(|(addr, pin, gsi)| Package::new(vec![addr, pin, &aml::ZERO, gsi]))
        .collect();
    let prt = Package::new(entries.iter().map(|p| p as &dyn Aml).collect());
    let pci0 = Raw(aml_bytes(&aml::Device::new(
        "PCI0".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0A08")),
            &Name::new("_CID".into(), &EISAName::new("PNP0A03")),
            &Name::new("_ADR".into(), &aml::ZERO),
            &Name::new("_SEG".into(), &aml::ZERO),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_BBN".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &crs),
            &Name::new("_PRT".into(), &prt),
        ],
    )));

    let com1_io = IO::new(SERIAL_COM1_PORT, SERIAL_COM1_PORT, 1, 8);
    let com1_irq = Interrupt::new(true, true, false, false, SERIAL_COM1_IRQ);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1 = Raw(aml_bytes(&aml::Device::new(
        "COM1".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &com1_crs),
        ],
    )));

    // The CMOS RTC: in hardware-reduced mode Linux sets no legacy IRQs up, so rtc_cmos gets its
    // IRQ from here (without it, its platform device fails to probe, EINVAL on IRQ 8).
    let rtc_io = IO::new(CMOS_PORT_BASE, CMOS_PORT_BASE, 1, CMOS_PORT_LEN as u8);
    let rtc_irq = Interrupt::new(true, true, false, false, RTC_IRQ);
    let rtc_crs = ResourceTemplate::new(vec![&rtc_io, &rtc_irq]);
    let rtc = Raw(aml_bytes(&aml::Device::new(
        "RTC_".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0B00")),
            &Name::new("_CRS".into(), &rtc_crs),
        ],
    )));

    let pwrb = Raw(aml_bytes(&aml::Device::new(
        "PWRB".into(),
        vec![
            &Name::new("_HID".into(), &EISAName::new("PNP0C0C")),
            &Name::new("_UID".into(), &aml::ZERO),
        ],
    )));
    // The GED: its one interrupt means "power button pressed" (Notify 0x80, Linux's button driver
    // turns that into KEY_POWER). Edge-triggered: the VMM pulses it through an irqfd.
    let ged_irq = Interrupt::new(true, true, false, false, POWER_BUTTON_GSI);
    let ged_crs = ResourceTemplate::new(vec![&ged_irq]);
    let pwrb_path: Path = "\\_SB_.PWRB".into();
    let notify = Notify::new(&pwrb_path, &0x80u8);
    let evt = Method::new("_EVT".into(), 1, true, vec![&notify]);
    let ged = Raw(aml_bytes(&aml::Device::new(
        "GED_".into(),
        vec![
            &Name::new("_HID".into(), &"ACPI0013"),
            &Name::new("_UID".into(), &aml::ZERO),
            &Name::new("_CRS".into(), &ged_crs),
            &evt,
        ],
    )));
    let sb = Scope::new("\\_SB_".into(), vec![&pci0, &com1, &rtc, &pwrb, &ged]);
    // _S5: SLP_TYPa (and b) of soft-off.
    let s5 = Name::new(
        "_S5_".into(),
        &Package::new(vec![&SLEEP_TYPE_S5, &SLEEP_TYPE_S5, &aml::ZERO, &aml::ZERO]),
    );
    let mut body = aml_bytes(&sb);
    s5.to_aml_bytes(&mut body);
    body
}

/// Builds the tables for `nr_vcpus` vCPUs, the 64-bit PCI window `mmio64` (base, size) and PCI
/// configuration access `pci_config`.
pub fn build(
    nr_vcpus: u8,
    mmio64: (u64, u64),
    pci_config: PciConfigAccess,
) -> Result<AcpiTables, AcpiError> {
    // The RSDP comes first, at ACPI_START; it is written last, once the XSDT's address is known.
    let mut out = vec![0u8; Rsdp::len()];

    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&dsdt_body(mmio64, pci_config));
    let dsdt_addr = place(&mut out, dsdt.as_slice());

    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .dsdt_64(dsdt_addr);
    fadt.iapc_boot_arch = IAPC_VGA_NOT_PRESENT.into();
    fadt.sleep_control_reg = io_register(ACPI_PM_PORT + SLEEP_CONTROL_OFFSET);
    fadt.sleep_status_reg = io_register(ACPI_PM_PORT + SLEEP_STATUS_OFFSET);
    fadt.reset_reg = io_register(ACPI_PM_PORT + RESET_OFFSET);
    fadt.reset_value = RESET_VALUE;
    let fadt_addr = place(&mut out, &aml_bytes(&fadt.finalize()));

    let mut madt = Sdt::new(
        *b"APIC",
        44,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_bytes(36, &(LAPIC_START as u32).to_le_bytes());
    madt.write_bytes(40, &MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..nr_vcpus {
        madt.append_slice(&aml_bytes(&ProcessorLocalApic::new(
            id,
            id,
            EnabledStatus::Enabled,
        )));
    }
    // The IOAPIC's id follows the local APICs'.
    madt.append_slice(&aml_bytes(&IoApic::new(nr_vcpus, IOAPIC_START as u32, 0)));
    let madt_addr = place(&mut out, madt.as_slice());

    let mcfg_addr = (pci_config == PciConfigAccess::Ecam).then(|| {
        let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
        mcfg.add_ecam(PCI_ECAM_START, 0, 0, (PCI_ECAM_BUSES - 1) as u8);
        place(&mut out, &aml_bytes(&mcfg))
    });

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    if let Some(addr) = mcfg_addr {
        xsdt.add_entry(addr);
    }
    let xsdt_addr = place(&mut out, &aml_bytes(&xsdt));

    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    out[..rsdp.len()].copy_from_slice(&rsdp);
    if out.len() as u64 > ACPI_SIZE {
        return Err(AcpiError::TooBig(out.len()));
    }
    Ok(AcpiTables {
        bytes: out,
        tables: [dsdt_addr, fadt_addr, madt_addr, xsdt_addr],
        mcfg: mcfg_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> AcpiTables {
        build(2, (0x2_0000_0000, 64 << 30), PciConfigAccess::Ecam).unwrap()
    }

    /// The table at guest address `addr`.
    fn table(t: &AcpiTables, addr: u64) -> &[u8] {
        let off = (addr - ACPI_START) as usize;
        let len = u32::from_le_bytes(t.bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        &t.bytes[off..off + len]
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn the_rsdp_leads_through_the_xsdt_to_valid_tables() {
        let t = tables();
        let rsdp = &t.bytes[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        assert_eq!(rsdp[15], 2, "revision 2: XSDT");
        let xsdt = table(&t, u64_at(rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(sum(xsdt), 0);
        let entries: Vec<u64> = (36..xsdt.len())
            .step_by(8)
            .map(|o| u64_at(xsdt, o))
            .collect();
        let sigs: Vec<&[u8]> = entries.iter().map(|&a| &table(&t, a)[..4]).collect();
        assert_eq!(sigs, [b"FACP", b"APIC", b"MCFG"]);
        for &a in &entries {
            assert_eq!(sum(table(&t, a)), 0, "checksum of the table at {a:#x}");
            assert_eq!(a % 8, 0);
        }
        let fadt = table(&t, entries[0]);
        let dsdt = table(&t, u64_at(fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(sum(dsdt), 0);
        assert!(ACPI_START + t.bytes.len() as u64 <= ACPI_END);
    }

    #[test]
    fn the_fadt_is_hardware_reduced_with_the_pm_registers() {
        let t = tables();
        let fadt = table(&t, t.tables[1]);
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // Generic address structures: space id 1 (system I/O), 8 bits, the port at offset 4.
        let gas = |off: usize| (fadt[off], fadt[off + 1], u64_at(fadt, off + 4));
        let port = |p: u16| (1u8, 8u8, u64::from(p));
        assert_eq!(gas(116), port(ACPI_PM_PORT + RESET_OFFSET), "RESET_REG");
        assert_eq!(fadt[128], RESET_VALUE);
        assert_eq!(gas(244), port(ACPI_PM_PORT + SLEEP_CONTROL_OFFSET));
        assert_eq!(gas(256), port(ACPI_PM_PORT + SLEEP_STATUS_OFFSET));
        assert_eq!(
            u16::from_le_bytes([fadt[109], fadt[110]]),
            IAPC_VGA_NOT_PRESENT
        );
    }

    #[test]
    fn the_madt_has_every_cpu_and_the_ioapic() {
        for n in [1u8, 2, 8] {
            let t = build(n, (0x2_0000_0000, 1 << 30), PciConfigAccess::Ecam).unwrap();
            let madt = table(&t, t.tables[2]);
            assert_eq!(
                u32::from_le_bytes(madt[36..40].try_into().unwrap()),
                0xfee0_0000
            );
            let mut off = 44;
            let mut lapics = Vec::new();
            let mut ioapics = Vec::new();
            while off < madt.len() {
                let (kind, len) = (madt[off], madt[off + 1] as usize);
                match kind {
                    0 => lapics.push((madt[off + 2], madt[off + 3], madt[off + 4] & 1)),
                    1 => ioapics.push((
                        madt[off + 2],
                        u32::from_le_bytes(madt[off + 4..off + 8].try_into().unwrap()),
                    )),
                    k => panic!("unexpected MADT entry type {k}"),
                }
                off += len;
            }
            assert_eq!(off, madt.len());
            let want: Vec<_> = (0..n).map(|i| (i, i, 1)).collect();
            assert_eq!(lapics, want);
            assert_eq!(ioapics, [(n, IOAPIC_START as u32)]);
        }
    }

    /// Finds `needle` in `hay`.
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn the_dsdt_names_the_devices_routes_and_s5() {
        let t = tables();
        let dsdt = table(&t, t.tables[0]);
        for name in [
            &b"PCI0"[..],
            b"_PRT",
            b"COM1",
            b"PWRB",
            b"GED_",
            b"_EVT",
            b"_S5_",
        ] {
            assert!(
                find(dsdt, name).is_some(),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(find(dsdt, b"ACPI0013\0").is_some(), "GED _HID string");
        // The GED's interrupt: extended IRQ descriptor, consumer + edge, one GSI.
        let mut ged_irq = vec![0x89, 6, 0, 0b11, 1];
        ged_irq.extend_from_slice(&POWER_BUTTON_GSI.to_le_bytes());
        assert!(find(dsdt, &ged_irq).is_some(), "GED interrupt");
        // One _PRT entry: slot 3 INTC -> its GSI. Package of 4: DWord address, pin, Zero, GSI.
        let mut entry = vec![0x12, 0x0c, 4, 0x0c];
        entry.extend_from_slice(&(3u32 << 16 | 0xffff).to_le_bytes());
        entry.extend_from_slice(&[0x0a, 2, 0x00, 0x0a, pci_intx_gsi(3, 2) as u8]);
        assert!(find(dsdt, &entry).is_some(), "slot 3 INTC route");
    }

    /// With ECAM the MCFG names the window and its buses (0..=1, segment 0) and the host
    /// bridge claims no configuration ports; with the ports there is no MCFG and the bridge
    /// claims 0xCF8..0xCFF.
    #[test]
    fn the_mcfg_or_the_ports_tell_the_guest_how_to_reach_pci_configuration() {
        let ports_descriptor = [0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08];
        let t = tables();
        let mcfg = table(&t, t.mcfg.unwrap());
        assert_eq!(&mcfg[..4], b"MCFG");
        assert_eq!(
            mcfg.len(),
            44 + 16,
            "header, 8 reserved bytes, one allocation"
        );
        assert_eq!(u64_at(mcfg, 44), PCI_ECAM_START);
        assert_eq!(&mcfg[52..56], &[0, 0, 0, 1], "segment 0, buses 0..=1");
        let dsdt = table(&t, t.tables[0]);
        assert_eq!(find(dsdt, &ports_descriptor), None);

        let t = build(1, (0x2_0000_0000, 1 << 30), PciConfigAccess::Io).unwrap();
        assert_eq!(t.mcfg, None);
        let xsdt = table(&t, t.tables[3]);
        assert_eq!(xsdt.len(), 36 + 2 * 8, "FADT and MADT only");
        assert!(find(table(&t, t.tables[0]), &ports_descriptor).is_some());
    }
}
