//! Virtualised configuration space of a passed-through device.
//!
//! Reads come from the device (VFIO's config region) except for what the VMM owns:
//! - the BARs (a shadow [`PciConfigSpace`] gives guest addresses, sizing and move reports),
//! - the expansion ROM BAR (not exposed: reads 0),
//! - the interrupt line (scratch for the guest),
//! - the MSI capability (emulated in full) and MSI-X message control (enable/mask bits).
//!
//! Writes to those stay here; all other writes (command register, vendor registers) go to the
//! device, which VFIO filters itself.

use log_limit::debug_limit_global;

use super::msi::MsiState;
use super::region_set::{VfioRegionSet, CONFIG_REGION};
use crate::pci::{
    dword_write_parts, find_capability_in, BarKind, BarReprogram, MsixCapInfo, MsixTable,
    PciConfigSpace, PciHeader, CAP_ID_MSI, CAP_ID_MSIX, MIN_IO_BAR_SIZE, MIN_MEM_BAR_SIZE,
    NUM_BARS, REG_BAR0, REG_COMMAND, REG_HEADER, REG_INTERRUPT, REG_ROM,
};
use crate::GUEST_LOG_INTERVAL;

/// What a configuration write changed besides BARs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigWriteEffect {
    /// The BAR move this write completes.
    pub bar_move: Option<BarReprogram>,
    /// MSI or MSI-X configuration changed: re-evaluate interrupts.
    pub interrupts_changed: bool,
}

/// A passed-through device's configuration space as the guest sees it.
pub struct VfioPciConfig {
    shadow: PciConfigSpace,
    msi: Option<MsiState>,
    msix: Option<MsixTable>,
    config_size: u64,
    /// INTx is wired to an irqchip pin; otherwise the interrupt pin reads 0 (no INTx).
    intx_wired: bool,
}

fn dev_read_u32(dev: &dyn VfioRegionSet, offset: u64) -> u32 {
    let mut b = [0xffu8; 4];
    dev.read(CONFIG_REGION, offset, &mut b);
    u32::from_le_bytes(b)
}

/// The device's interrupt pin register: 0 no INTx, 1..=4 INTA..INTD (what the guest will see
/// once INTx is wired).
pub fn interrupt_pin(dev: &dyn VfioRegionSet) -> u8 {
    (dev_read_u32(dev, (REG_INTERRUPT * 4) as u64) >> 8) as u8
}

impl VfioPciConfig {
    /// Builds the virtual config space from the device: BAR kinds from its BAR registers,
    /// BAR sizes from VFIO's region sizes, MSI/MSI-X from its capability list.
    pub fn new(dev: &dyn VfioRegionSet) -> Self {
        let config_size = dev.region(CONFIG_REGION).map_or(0, |r| r.size);
        let mut shadow = PciConfigSpace::new(PciHeader::default());
        let mut index = 0;
        while index < NUM_BARS {
            let size = dev.region(index as u32).map_or(0, |r| r.size);
            let reg = dev_read_u32(dev, (REG_BAR0 + index) as u64 * 4);
            let kind = BarKind::from_register(reg);
            let step = if kind.is_64bit() { 2 } else { 1 };
            if size != 0 && reg != 0xffff_ffff {
                // VFIO reports the real BAR size, a power of two, at least 16 bytes for memory
                // and 4 ports for I/O (an 8-port I/O BAR stays 8 ports).
                let min = if kind.is_mem() {
                    MIN_MEM_BAR_SIZE
                } else {
                    MIN_IO_BAR_SIZE
                };
                if let Err(e) = shadow.add_bar(index, kind, size.next_power_of_two().max(min)) {
                    log::warn!("vfio {}: BAR {index} not exposed: {e}", dev.name());
                }
            }
            index += step;
        }
        let status = (dev_read_u32(dev, REG_COMMAND as u64 * 4) >> 16) as u16;
        let read_byte = |off: usize| {
            let mut b = [0xffu8; 1];
            dev.read(CONFIG_REGION, off as u64, &mut b);
            b[0]
        };
        let msi = find_capability_in(read_byte, status, CAP_ID_MSI).map(|off| {
            let control = (dev_read_u32(dev, off as u64) >> 16) as u16;
            MsiState::new(off, control)
        });
        let msix = find_capability_in(read_byte, status, CAP_ID_MSIX).map(|off| {
            let o = off as u64;
            MsixTable::new(MsixCapInfo::parse(
                off,
                dev_read_u32(dev, o),
                dev_read_u32(dev, o + 4),
                dev_read_u32(dev, o + 8),
            ))
        });
        Self {
            shadow,
            msi,
            msix,
            config_size,
            intx_wired: false,
        }
    }

    /// The shadow holding the BARs.
    pub fn bars(&self) -> Vec<crate::pci::PciBar> {
        self.shadow.bars()
    }

    /// Programs BAR `index` as firmware would.
    pub fn program_bar(&mut self, index: usize, addr: u64) -> Option<BarReprogram> {
        self.shadow.program_bar(index, addr)
    }

    /// Emulated MSI state, if the device has MSI.
    pub fn msi(&self) -> Option<&MsiState> {
        self.msi.as_ref()
    }

    /// Emulated MSI-X state, if the device has MSI-X.
    pub fn msix(&self) -> Option<&MsixTable> {
        self.msix.as_ref()
    }

    /// Mutable MSI-X state (table writes).
    pub fn msix_mut(&mut self) -> Option<&mut MsixTable> {
        self.msix.as_mut()
    }

    /// Wires INTx: sets the interrupt line register (the VMM as firmware) and shows the
    /// device's interrupt pin. Without this the pin reads 0: the guest uses MSI/MSI-X only.
    pub fn set_interrupt_line(&mut self, line: u8) {
        self.shadow.write_reg(REG_INTERRUPT, 0, &[line]);
        self.intx_wired = true;
    }

    /// Is byte `offset` of config space owned by the VMM (not passed to the device)?
    fn virtual_byte(&self, offset: usize) -> bool {
        if self.msi.as_ref().is_some_and(|m| m.covers(offset)) {
            return true;
        }
        self.msix
            .as_ref()
            .is_some_and(|m| offset == m.info().cap_offset + 2 || offset == m.info().cap_offset + 3)
    }

    fn virtual_byte_value(&self, offset: usize, device_byte: u8) -> u8 {
        if let Some(m) = self.msi.as_ref().filter(|m| m.covers(offset)) {
            return m.read_byte(offset);
        }
        if let Some(m) = &self.msix {
            let ctl_hi = m.info().cap_offset + 3;
            if offset == ctl_hi {
                return (device_byte & 0x3f) | (m.control_bits() >> 8) as u8;
            }
        }
        device_byte
    }

    /// Reads dword `reg_idx` as the guest sees it.
    pub fn read(&self, dev: &dyn VfioRegionSet, reg_idx: usize) -> u32 {
        if (REG_BAR0..REG_BAR0 + NUM_BARS).contains(&reg_idx) {
            return self.shadow.read_reg(reg_idx);
        }
        if reg_idx == REG_ROM {
            return 0;
        }
        let offset = (reg_idx as u64).saturating_mul(4);
        if offset.saturating_add(4) > self.config_size {
            return 0xffff_ffff;
        }
        let mut value = dev_read_u32(dev, offset);
        if reg_idx == REG_HEADER {
            // Only function 0 is passed through: never claim to be multi-function.
            value &= !(0x80 << 16);
        }
        if reg_idx == REG_INTERRUPT {
            value = (value & !0xff) | (self.shadow.read_reg(REG_INTERRUPT) & 0xff);
            if !self.intx_wired {
                value &= !0xff00;
            }
        }
        let mut bytes = value.to_le_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            let off = reg_idx * 4 + i;
            if self.virtual_byte(off) {
                *b = self.virtual_byte_value(off, *b);
            }
        }
        u32::from_le_bytes(bytes)
    }

    /// A guest write of `data` at byte `offset` of dword `reg_idx`.
    pub fn write(
        &mut self,
        dev: &dyn VfioRegionSet,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> ConfigWriteEffect {
        let mut effect = ConfigWriteEffect::default();
        if dword_write_parts(offset, data).is_none() {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "vfio config: malformed write of {} bytes at reg {reg_idx}+{offset}",
                data.len()
            );
            return effect;
        }
        if (REG_BAR0..REG_BAR0 + NUM_BARS).contains(&reg_idx) {
            effect.bar_move = self.shadow.write_reg(reg_idx, offset, data);
            return effect;
        }
        if reg_idx == REG_ROM {
            return effect;
        }
        let base = (reg_idx as u64).saturating_mul(4);
        if base.saturating_add(4) > self.config_size {
            return effect;
        }
        if reg_idx == REG_INTERRUPT && offset == 0 {
            self.shadow.write_reg(REG_INTERRUPT, 0, &data[..1]);
            if data.len() == 1 {
                return effect;
            }
        }
        let start = reg_idx * 4 + offset;
        let any_virtual = (start..start + data.len()).any(|o| self.virtual_byte(o));
        if !any_virtual {
            let skip = usize::from(reg_idx == REG_INTERRUPT && offset == 0);
            if skip < data.len() {
                dev.write(CONFIG_REGION, (start + skip) as u64, &data[skip..]);
            }
            return effect;
        }
        for (i, byte) in data.iter().enumerate() {
            let off = start + i;
            if reg_idx == REG_INTERRUPT && off == REG_INTERRUPT * 4 {
                continue;
            }
            if let Some(m) = self.msi.as_mut().filter(|m| m.covers(off)) {
                m.write_byte(off, *byte);
                effect.interrupts_changed = true;
            } else if let Some(m) = self.msix.as_mut() {
                let ctl = m.info().cap_offset + 2;
                if off == ctl + 1 {
                    m.write_control(u16::from(*byte) << 8);
                    effect.interrupts_changed = true;
                } else if off != ctl {
                    dev.write(CONFIG_REGION, off as u64, &[*byte]);
                }
                // The low byte of MSI-X message control is read-only (table size).
            } else {
                dev.write(CONFIG_REGION, off as u64, &[*byte]);
            }
        }
        effect
    }
}
