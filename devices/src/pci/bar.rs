//! Base address registers: their kinds, the BAR list a device reports and the record of a
//! guest BAR move.

use std::fmt;

/// Number of base address registers in a type-0 header.
pub const NUM_BARS: usize = 6;

/// Smallest memory BAR the PCI spec allows (the low 4 bits are flags).
pub const MIN_MEM_BAR_SIZE: u64 = 16;
/// Smallest I/O BAR the PCI spec allows (the low 2 bits are flags).
pub const MIN_IO_BAR_SIZE: u64 = 4;

/// The kind of a BAR: its address space and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// An I/O port BAR.
    Io,
    /// A 32-bit memory BAR.
    Mem32 {
        /// The prefetchable bit (bit 3).
        prefetchable: bool,
    },
    /// A 64-bit memory BAR: it uses this register and the next one.
    Mem64 {
        /// The prefetchable bit (bit 3).
        prefetchable: bool,
    },
}

impl BarKind {
    /// True for memory BARs.
    pub fn is_mem(self) -> bool {
        !matches!(self, BarKind::Io)
    }

    /// True for 64-bit memory BARs.
    pub fn is_64bit(self) -> bool {
        matches!(self, BarKind::Mem64 { .. })
    }

    /// The read-only flag bits in the low dword of the BAR register.
    pub fn flag_bits(self) -> u32 {
        match self {
            BarKind::Io => 0x1,
            BarKind::Mem32 { prefetchable } => {
                if prefetchable {
                    0x8
                } else {
                    0x0
                }
            }
            BarKind::Mem64 { prefetchable } => {
                if prefetchable {
                    0xc
                } else {
                    0x4
                }
            }
        }
    }

    /// Decodes the kind from the low dword of a BAR register, as a device reports it.
    pub fn from_register(value: u32) -> Self {
        if value & 0x1 != 0 {
            BarKind::Io
        } else {
            let prefetchable = value & 0x8 != 0;
            if (value >> 1) & 0x3 == 0x2 {
                BarKind::Mem64 { prefetchable }
            } else {
                BarKind::Mem32 { prefetchable }
            }
        }
    }

    /// The address space a BAR of this kind lives in.
    pub fn space(self) -> BarSpace {
        match self {
            BarKind::Io => BarSpace::Io,
            _ => BarSpace::Mmio,
        }
    }
}

impl fmt::Display for BarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BarKind::Io => write!(f, "I/O"),
            BarKind::Mem32 { prefetchable } => {
                write!(
                    f,
                    "32-bit memory{}",
                    if *prefetchable { " (prefetchable)" } else { "" }
                )
            }
            BarKind::Mem64 { prefetchable } => {
                write!(
                    f,
                    "64-bit memory{}",
                    if *prefetchable { " (prefetchable)" } else { "" }
                )
            }
        }
    }
}

/// The address space of a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BarSpace {
    /// Memory-mapped I/O.
    Mmio,
    /// I/O ports.
    Io,
}

/// One BAR as a device reports it: index, kind, size and current guest address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBar {
    /// BAR index 0..=5 (a 64-bit BAR reports its lower register).
    pub index: usize,
    /// Kind of BAR.
    pub kind: BarKind,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Current guest address (as last programmed and reported).
    pub addr: u64,
}

/// A BAR that the guest (or the VMM acting as firmware) moved to a new address.
///
/// Returned by [`PciDevice::write_config_register`](super::PciDevice::write_config_register);
/// the bus updates its routing and then calls
/// [`PciDevice::move_bar`](super::PciDevice::move_bar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarReprogram {
    /// BAR index (a 64-bit BAR reports its lower register).
    pub bar: usize,
    /// Kind of BAR.
    pub kind: BarKind,
    /// Address before the move.
    pub old_addr: u64,
    /// Address after the move.
    pub new_addr: u64,
    /// Size of the BAR.
    pub size: u64,
}
