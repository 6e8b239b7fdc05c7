//! MSI emulation: a shadow of the MSI capability that the guest programs. VFIO signals an
//! eventfd per vector; the VMM routes it to the guest's address/data through KVM.

/// Message control: MSI enable.
pub const MSI_ENABLE: u16 = 1 << 0;
/// Message control: 64-bit address capable.
pub const MSI_64BIT: u16 = 1 << 7;
/// Message control: per-vector masking capable.
pub const MSI_PER_VECTOR_MASK: u16 = 1 << 8;

/// The emulated MSI capability (everything after the ID and next-pointer bytes).
#[derive(Clone, Debug)]
pub struct MsiState {
    cap_offset: usize,
    /// Bytes of the capability from offset 2 (message control) to its end.
    bytes: Vec<u8>,
    /// Writable bits of `bytes`.
    mask: Vec<u8>,
}

/// What the guest programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiConfig {
    /// MSI enabled.
    pub enabled: bool,
    /// Number of vectors enabled (1, 2, 4, ... 32), limited by what the device can do.
    pub vectors: u32,
    /// Message address.
    pub address: u64,
    /// Message data of vector 0 (vector i uses data | i).
    pub data: u32,
    /// Per-vector mask bits (0 when not supported).
    pub mask_bits: u32,
}

impl MsiState {
    /// A shadow of the MSI capability at `cap_offset` whose message control the device
    /// reports as `control`. Starts disabled.
    pub fn new(cap_offset: usize, control: u16) -> Self {
        let is64 = control & MSI_64BIT != 0;
        let pvm = control & MSI_PER_VECTOR_MASK != 0;
        // Layout after the 2-byte header: control(2) addr_lo(4) [addr_hi(4)] data(2) [pad(2) mask(4) pending(4)]
        let len = 2 + 4 + if is64 { 4 } else { 0 } + 2 + if pvm { 2 + 8 } else { 0 };
        let mut bytes = vec![0u8; len];
        let mut mask = vec![0u8; len];
        let ro_control = control & (MSI_64BIT | MSI_PER_VECTOR_MASK | 0x000e);
        bytes[0..2].copy_from_slice(&ro_control.to_le_bytes());
        // Enable and multiple message enable are writable.
        mask[0..2].copy_from_slice(&0x0071u16.to_le_bytes());
        mask[2..6].copy_from_slice(&[0xfc, 0xff, 0xff, 0xff]);
        let mut pos = 6;
        if is64 {
            mask[pos..pos + 4].fill(0xff);
            pos += 4;
        }
        mask[pos..pos + 2].fill(0xff);
        pos += 2;
        if pvm {
            pos += 2;
            mask[pos..pos + 4].fill(0xff);
        }
        Self {
            cap_offset,
            bytes,
            mask,
        }
    }

    /// Config-space byte range the shadow covers (control to the end of the capability).
    pub fn covers(&self, offset: usize) -> bool {
        offset >= self.cap_offset + 2 && offset < self.cap_offset + 2 + self.bytes.len()
    }

    /// Reads the shadow byte at config offset `offset` (must be covered).
    pub fn read_byte(&self, offset: usize) -> u8 {
        offset
            .checked_sub(self.cap_offset + 2)
            .and_then(|i| self.bytes.get(i))
            .copied()
            .unwrap_or(0xff)
    }

    /// Writes the shadow byte at config offset `offset` through the write mask.
    pub fn write_byte(&mut self, offset: usize, value: u8) {
        if let Some(i) = offset
            .checked_sub(self.cap_offset + 2)
            .filter(|i| *i < self.bytes.len())
        {
            self.bytes[i] = (self.bytes[i] & !self.mask[i]) | (value & self.mask[i]);
        }
    }

    fn u16_at(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.bytes[i], self.bytes[i + 1]])
    }

    fn u32_at(&self, i: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[i],
            self.bytes[i + 1],
            self.bytes[i + 2],
            self.bytes[i + 3],
        ])
    }

    /// What the guest programmed.
    pub fn config(&self) -> MsiConfig {
        let control = self.u16_at(0);
        let is64 = control & MSI_64BIT != 0;
        let capable = 1u32 << ((control >> 1) & 0x7).min(5);
        let enabled_log2 = u32::from((control >> 4) & 0x7).min(5);
        let vectors = (1u32 << enabled_log2).min(capable);
        let mut address = u64::from(self.u32_at(2));
        let mut pos = 6;
        if is64 {
            address |= u64::from(self.u32_at(6)) << 32;
            pos += 4;
        }
        let data = u32::from(self.u16_at(pos));
        let mask_bits = if control & MSI_PER_VECTOR_MASK != 0 {
            self.u32_at(pos + 4)
        } else {
            0
        };
        MsiConfig {
            enabled: control & MSI_ENABLE != 0,
            vectors,
            address,
            data,
            mask_bits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_64bit_msi() {
        // 64-bit, capable of 4 vectors (MMC = 2), no per-vector mask.
        let mut m = MsiState::new(0x50, MSI_64BIT | (2 << 1));
        assert!(m.covers(0x52) && m.covers(0x5d) && !m.covers(0x5e) && !m.covers(0x51));
        for (i, b) in 0xfee0_1003u32.to_le_bytes().iter().enumerate() {
            m.write_byte(0x54 + i, *b);
        }
        m.write_byte(0x58, 0x01);
        m.write_byte(0x5c, 0x41);
        m.write_byte(0x5d, 0x40);
        // Enable with MME = 3 (8 vectors): limited to the 4 the device can do.
        m.write_byte(0x52, 0x31);
        m.write_byte(0x53, 0xff); // read-only bits
        let c = m.config();
        assert_eq!(
            c,
            MsiConfig {
                enabled: true,
                vectors: 4,
                address: 0x1_fee0_1000,
                data: 0x4041,
                mask_bits: 0
            }
        );
        assert_eq!(m.read_byte(0x53), 0x00);
        assert_eq!(m.read_byte(0x52), 0xb5, "64-bit and MMC read back");
    }

    #[test]
    fn per_vector_mask_32bit() {
        let mut m = MsiState::new(0x40, MSI_PER_VECTOR_MASK);
        // control(2) addr(4) data(2) pad(2) mask(4) pending(4) = 18 bytes after the header.
        assert!(m.covers(0x40 + 2 + 17) && !m.covers(0x40 + 2 + 18));
        m.write_byte(0x4c, 0x01);
        assert_eq!(m.config().mask_bits, 1);
        m.write_byte(0x50, 0xff); // pending: read-only
        assert_eq!(m.read_byte(0x50), 0);
        m.write_byte(usize::MAX, 1);
        assert_eq!(m.read_byte(usize::MAX), 0xff);
    }
}
