//! A PCI-to-PCI bridge (type-1 header) on bus 0 with the VM's devices on its secondary bus.
//!
//! Why a bridge: a guest decides whether two of its devices may do peer-to-peer DMA (a
//! virtio-gpu importing a dma-buf that lives in a passed-through BAR) by their topology. Two
//! devices that meet only at the host bridge are refused unless the guest knows the host bridge
//! or the CPU (Linux: `drivers/pci/p2pdma.c`, which allows AMD Zen CPUs and a list of host
//! bridges); two devices below one bridge without ACS are allowed on any CPU, with bus addresses
//! used directly. This bridge has no ACS capability, so the guest maps peer addresses directly.
//!
//! Like firmware, the VMM numbers the buses (primary 0, secondary and subordinate 1) and opens
//! the windows over the VM's whole PCI windows before the guest runs; the guest may reprogram
//! every register. The bridge forwards every access: the devices' own BARs and command
//! registers decide what they decode (the VMM places every BAR inside the windows it programs).

use super::bar::{BarReprogram, BarSpace, PciBar};
use super::config_space::{PciConfigSpace, PciHeader, COMMAND_IO, COMMAND_MEMORY, REG_HEADER};
use super::device::PciDevice;
use super::error::{PciError, Result};
use super::host_bridge::CLASS_BRIDGE;

/// Vendor ID of the bridge: Red Hat, as QEMU's `pci-bridge`, which guests already know.
pub const PCI_BRIDGE_VENDOR_ID: u16 = 0x1b36;
/// Device ID of QEMU's `pci-bridge` (a plain PCI-to-PCI bridge; no driver binds to it).
pub const PCI_BRIDGE_DEVICE_ID: u16 = 0x0001;
/// Subclass: PCI-to-PCI bridge.
pub const SUBCLASS_PCI_BRIDGE: u8 = 0x04;

/// Dword of the primary, secondary and subordinate bus numbers and the secondary latency timer.
pub const REG_BUS_NUMBERS: usize = 6;
/// Dword of the I/O base and limit (bits 15:12 of the addresses; 16-bit decode, so the upper
/// halves in dword 12 stay 0) and the secondary status.
pub const REG_IO_WINDOW: usize = 7;
/// Dword of the memory base and limit (bits 31:20 of the addresses).
pub const REG_MEM_WINDOW: usize = 8;
/// Dword of the prefetchable memory base and limit (bits 31:20; 64-bit capable).
pub const REG_PREF_WINDOW: usize = 9;
/// Upper 32 bits of the prefetchable base.
pub const REG_PREF_BASE_UPPER: usize = 10;
/// Upper 32 bits of the prefetchable limit.
pub const REG_PREF_LIMIT_UPPER: usize = 11;
/// Dword of the interrupt line and pin and the bridge control register.
pub const REG_BRIDGE_CONTROL: usize = 15;

/// Granularity of the memory windows.
pub const MEM_WINDOW_GRANULE: u64 = 1 << 20;
/// Granularity of the I/O window.
pub const IO_WINDOW_GRANULE: u64 = 1 << 12;

/// Bridge control bits the guest may change: parity error response, SERR#, ISA and VGA
/// enable. Secondary bus reset (bit 6) stays 0: the VMM cannot reset the devices behind the
/// bridge as one bus, and a guest must not believe it did.
const BRIDGE_CONTROL_WRITABLE: u32 = 0x000f;
/// The prefetchable window's type field: 64-bit addressing.
const PREF_64BIT: u32 = 0x1;

/// The guest address windows the bridge forwards, as firmware opens them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeWindows {
    /// I/O ports `(first, last)`, 4 KiB aligned.
    pub io: Option<(u64, u64)>,
    /// Non-prefetchable memory below 4 GiB `(first, last)`, 1 MiB aligned.
    pub mem: (u64, u64),
    /// Prefetchable memory, 64-bit `(first, last)`, 1 MiB aligned.
    pub prefetchable: Option<(u64, u64)>,
}

/// A PCI-to-PCI bridge without BARs or capabilities.
#[derive(Debug)]
pub struct PciToPciBridge {
    config: PciConfigSpace,
}

fn check_window(
    what: &'static str,
    (first, last): (u64, u64),
    granule: u64,
    max: u64,
) -> Result<()> {
    let aligned = first % granule == 0 && last.wrapping_add(1) % granule == 0;
    if first > last || !aligned || last > max {
        return Err(PciError::BridgeWindow {
            window: what,
            first,
            last,
            granule,
        });
    }
    Ok(())
}

impl PciToPciBridge {
    /// A bridge from bus `primary` to bus `secondary` (the only bus below it), forwarding
    /// `windows`.
    pub fn new(primary: u8, secondary: u8, windows: BridgeWindows) -> Result<Self> {
        let mut config = PciConfigSpace::new(PciHeader {
            vendor_id: PCI_BRIDGE_VENDOR_ID,
            device_id: PCI_BRIDGE_DEVICE_ID,
            class: CLASS_BRIDGE,
            subclass: SUBCLASS_PCI_BRIDGE,
            ..Default::default()
        });
        // Header type 1; cache line size and latency timer stay read/write.
        config.set_reg(REG_HEADER, 0x0001_0000);
        config.set_reg(
            REG_BUS_NUMBERS,
            u32::from(primary) | u32::from(secondary) << 8 | u32::from(secondary) << 16,
        );
        config.set_write_mask(REG_BUS_NUMBERS, 0xffff_ffff);

        let (io, io_mask) = match windows.io {
            Some(w) => {
                check_window("I/O", w, IO_WINDOW_GRANULE, 0xffff)?;
                ((w.0 >> 8) as u32 & 0xf0 | ((w.1 as u32) & 0xf000), 0xf0f0)
            }
            // Base above limit: closed.
            None => (0x00f0, 0xf0f0),
        };
        config.set_reg(REG_IO_WINDOW, io);
        config.set_write_mask(REG_IO_WINDOW, io_mask);

        check_window(
            "memory",
            windows.mem,
            MEM_WINDOW_GRANULE,
            u64::from(u32::MAX),
        )?;
        let (first, last) = windows.mem;
        config.set_reg(
            REG_MEM_WINDOW,
            ((first >> 16) as u32 & 0xfff0) | ((last >> 16) as u32 & 0xfff0) << 16,
        );
        config.set_write_mask(REG_MEM_WINDOW, 0xfff0_fff0);

        let (first, last) = match windows.prefetchable {
            Some(w) => {
                check_window("prefetchable memory", w, MEM_WINDOW_GRANULE, u64::MAX)?;
                w
            }
            // Base above limit: closed.
            None => (MEM_WINDOW_GRANULE, MEM_WINDOW_GRANULE - 1),
        };
        config.set_reg(
            REG_PREF_WINDOW,
            ((first >> 16) as u32 & 0xfff0 | PREF_64BIT)
                | ((last >> 16) as u32 & 0xfff0 | PREF_64BIT) << 16,
        );
        config.set_write_mask(REG_PREF_WINDOW, 0xfff0_fff0);
        config.set_reg(REG_PREF_BASE_UPPER, (first >> 32) as u32);
        config.set_write_mask(REG_PREF_BASE_UPPER, 0xffff_ffff);
        config.set_reg(REG_PREF_LIMIT_UPPER, (last >> 32) as u32);
        config.set_write_mask(REG_PREF_LIMIT_UPPER, 0xffff_ffff);

        // Interrupt line (scratch) and the writable bridge control bits; no interrupt pin.
        config.set_write_mask(REG_BRIDGE_CONTROL, 0xff | BRIDGE_CONTROL_WRITABLE << 16);
        Ok(Self { config })
    }

    /// The bus directly below the bridge, as the guest numbered it (0: not configured).
    pub fn secondary_bus(&self) -> u8 {
        (self.config.read_reg(REG_BUS_NUMBERS) >> 8) as u8
    }

    /// The highest bus number below the bridge, as the guest numbered it.
    pub fn subordinate_bus(&self) -> u8 {
        (self.config.read_reg(REG_BUS_NUMBERS) >> 16) as u8
    }

    /// Whether the bridge forwards `space` (its command register).
    pub fn forwards(&self, space: BarSpace) -> bool {
        let bit = match space {
            BarSpace::Mmio => COMMAND_MEMORY,
            BarSpace::Io => COMMAND_IO,
        };
        self.config.command() & bit != 0
    }
}

impl PciDevice for PciToPciBridge {
    fn name(&self) -> String {
        "pci-bridge".to_string()
    }

    fn read_config_register(&mut self, reg_idx: usize) -> u32 {
        self.config.read_reg(reg_idx)
    }

    fn write_config_register(
        &mut self,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<BarReprogram> {
        // No BARs: a write never moves one.
        let _ = self.config.write_reg(reg_idx, offset, data);
        None
    }

    fn bars(&self) -> Vec<PciBar> {
        Vec::new()
    }

    fn program_bar(&mut self, _index: usize, _addr: u64) -> Option<BarReprogram> {
        None
    }

    fn decodes(&self, space: BarSpace) -> bool {
        self.forwards(space)
    }

    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config_space::REG_COMMAND;

    const WINDOWS: BridgeWindows = BridgeWindows {
        io: Some((0x1000, 0xffff)),
        mem: (0xc000_0000, 0xfebf_ffff),
        prefetchable: Some((0x1_4000_0000, 0x11_3fff_ffff)),
    };

    fn bridge() -> PciToPciBridge {
        PciToPciBridge::new(0, 1, WINDOWS).unwrap()
    }

    #[test]
    fn identity_and_header_type_1() {
        let mut b = bridge();
        assert_eq!(b.read_config_register(0), 0x0001_1b36);
        assert_eq!(b.read_config_register(2) >> 8, 0x06_04_00);
        assert_eq!((b.read_config_register(REG_HEADER) >> 16) & 0x7f, 1);
        // No BARs, no capabilities, no interrupt pin.
        for reg in [4, 5] {
            b.write_config_register(reg, 0, &[0xff; 4]);
            assert_eq!(b.read_config_register(reg), 0);
        }
        assert_eq!(b.read_config_register(13), 0);
        assert_eq!((b.read_config_register(15) >> 8) & 0xff, 0);
    }

    #[test]
    fn windows_are_programmed_as_firmware_would() {
        let mut b = bridge();
        assert_eq!(
            b.read_config_register(REG_BUS_NUMBERS) & 0xff_ffff,
            0x01_01_00
        );
        assert_eq!((b.secondary_bus(), b.subordinate_bus()), (1, 1));
        // I/O 0x1000..=0xffff: base 0x10, limit 0xf0 (16-bit decode).
        assert_eq!(b.read_config_register(REG_IO_WINDOW) & 0xffff, 0xf010);
        // Memory 0xc0000000..=0xfebfffff.
        assert_eq!(b.read_config_register(REG_MEM_WINDOW), 0xfeb0_c000);
        // Prefetchable 0x1_40000000..=0x11_3fffffff, 64-bit.
        assert_eq!(b.read_config_register(REG_PREF_WINDOW), 0x3ff1_4001);
        assert_eq!(b.read_config_register(REG_PREF_BASE_UPPER), 0x1);
        assert_eq!(b.read_config_register(REG_PREF_LIMIT_UPPER), 0x11);
    }

    #[test]
    fn the_guest_can_renumber_and_reprogram_but_not_the_read_only_bits() {
        let mut b = bridge();
        b.write_config_register(REG_BUS_NUMBERS, 0, &[0, 5, 7, 0]);
        assert_eq!((b.secondary_bus(), b.subordinate_bus()), (5, 7));
        // Window type bits stay: 16-bit I/O, 64-bit prefetchable.
        b.write_config_register(REG_IO_WINDOW, 0, &[0xff, 0xff]);
        assert_eq!(b.read_config_register(REG_IO_WINDOW) & 0xffff, 0xf0f0);
        b.write_config_register(REG_PREF_WINDOW, 0, &[0; 4]);
        assert_eq!(b.read_config_register(REG_PREF_WINDOW), 0x0001_0001);
        b.write_config_register(REG_MEM_WINDOW, 0, &[0xff; 4]);
        assert_eq!(b.read_config_register(REG_MEM_WINDOW), 0xfff0_fff0);
        // Secondary bus reset cannot be set; SERR# can.
        b.write_config_register(REG_BRIDGE_CONTROL, 2, &[0x42, 0]);
        assert_eq!(b.read_config_register(REG_BRIDGE_CONTROL) >> 16, 0x02);
        // Forwarding follows the command register.
        assert!(!b.forwards(BarSpace::Mmio));
        b.write_config_register(REG_COMMAND, 0, &[0x03, 0]);
        assert!(b.forwards(BarSpace::Mmio) && b.forwards(BarSpace::Io));
        assert!(b.write_config_register(4, 0, &[0, 0, 0, 0xc0]).is_none());
    }

    #[test]
    fn closed_windows_and_bad_windows() {
        let mut b = PciToPciBridge::new(
            0,
            1,
            BridgeWindows {
                io: None,
                prefetchable: None,
                ..WINDOWS
            },
        )
        .unwrap();
        // Closed: base above limit.
        let io = b.read_config_register(REG_IO_WINDOW);
        assert!(io & 0xf0 > (io >> 8) & 0xf0);
        let pref = b.read_config_register(REG_PREF_WINDOW);
        assert!(pref & 0xfff0 > (pref >> 16) & 0xfff0);

        for windows in [
            BridgeWindows {
                mem: (0xc000_1000, 0xfebf_ffff),
                ..WINDOWS
            },
            BridgeWindows {
                mem: (0xc000_0000, 0x1_000f_ffff),
                ..WINDOWS
            },
            BridgeWindows {
                io: Some((0x1000, 0x17ff)),
                ..WINDOWS
            },
            BridgeWindows {
                prefetchable: Some((0x2_0000_0000, 0x1_ffff_ffff)),
                ..WINDOWS
            },
        ] {
            assert!(matches!(
                PciToPciBridge::new(0, 1, windows),
                Err(PciError::BridgeWindow { .. })
            ));
        }
    }
}
