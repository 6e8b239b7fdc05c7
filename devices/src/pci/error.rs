//! Errors of the PCI core.

use thiserror::Error;

use super::bar::BarKind;

/// Errors reported by the PCI configuration space, bus and BAR allocator.
#[derive(Debug, Error)]
pub enum PciError {
    /// A BAR index outside 0..=5, or a 64-bit BAR at index 5 (it needs two registers).
    #[error("invalid BAR index {0}: a type-0 header has BARs 0..=5 and a 64-bit BAR needs two")]
    InvalidBarIndex(usize),
    /// The BAR register (or its upper half) is already in use.
    #[error("BAR {0} is already defined")]
    BarInUse(usize),
    /// BAR sizes must be powers of two, at least 16 bytes for memory and 4 for I/O.
    #[error("invalid BAR size {size:#x} for a {kind} BAR: must be a power of two (min {min:#x})")]
    InvalidBarSize {
        /// The requested size.
        size: u64,
        /// The BAR kind.
        kind: BarKind,
        /// The smallest size allowed for that kind.
        min: u64,
    },
    /// A 32-bit memory or I/O BAR cannot be larger than its address space.
    #[error("a {kind} BAR cannot be {size:#x} bytes")]
    BarTooLarge {
        /// The requested size.
        size: u64,
        /// The BAR kind.
        kind: BarKind,
    },
    /// No room left in configuration space for a capability.
    #[error("no room in configuration space for a capability of {0} bytes")]
    CapabilitySpaceFull(usize),
    /// A capability body must fit the space and carry a write mask of the same length.
    #[error("capability body of {body} bytes with a write mask of {mask} bytes")]
    CapabilityMaskLength {
        /// Length of the capability body.
        body: usize,
        /// Length of the write mask.
        mask: usize,
    },
    /// All 32 device slots of the bus are taken.
    #[error("PCI bus {0} is full: all 32 device slots are in use")]
    BusFull(u8),
    /// The requested slot is already in use or outside 0..32.
    #[error("PCI slot {0} is not free (slots are 0..32, 00:00.0 is the host bridge)")]
    SlotUnavailable(String),
    /// The VM has no such bus (bus 1 exists once the PCI-to-PCI bridge is added).
    #[error("there is no PCI bus {0}")]
    NoSuchBus(u8),
    /// A VM has one PCI-to-PCI bridge.
    #[error("the VM already has its PCI-to-PCI bridge")]
    SecondBridge,
    /// A PCI-to-PCI bridge window must be aligned to its granularity and within its space.
    #[error(
        "PCI bridge {window} window {first:#x}..={last:#x} is not aligned to {granule:#x} or \
         outside its address space"
    )]
    BridgeWindow {
        /// Which window.
        window: &'static str,
        /// First address.
        first: u64,
        /// Last address.
        last: u64,
        /// The window's granularity.
        granule: u64,
    },
    /// The BAR window for the kind of BAR requested has no room left.
    #[error(
        "{window} window exhausted: no free {size:#x}-byte range aligned to {align:#x} \
         (window {base:#x}..={end:#x})"
    )]
    WindowExhausted {
        /// The window's name.
        window: &'static str,
        /// Requested size.
        size: u64,
        /// Required alignment.
        align: u64,
        /// First address of the window.
        base: u64,
        /// Last address of the window.
        end: u64,
    },
    /// The window the BAR needs was not configured.
    #[error("no {0} window configured for BAR allocation")]
    NoWindow(&'static str),
    /// A window could not be created (empty or overflowing range).
    #[error("invalid {window} window {base:#x} size {size:#x}: {source}")]
    InvalidWindow {
        /// The window's name.
        window: &'static str,
        /// Requested base.
        base: u64,
        /// Requested size.
        size: u64,
        /// What vm-allocator said.
        source: vm_allocator::Error,
    },
    /// Freeing a range that was not allocated.
    #[error("cannot free BAR range {addr:#x} size {size:#x}: {source}")]
    Free {
        /// Start of the range.
        addr: u64,
        /// Size of the range.
        size: u64,
        /// What vm-allocator said.
        source: vm_allocator::Error,
    },
    /// A device failed to follow a BAR move.
    #[error("device could not move BAR {bar} from {old:#x} to {new:#x}: {source}")]
    MoveBar {
        /// BAR index.
        bar: usize,
        /// Old address.
        old: u64,
        /// New address.
        new: u64,
        /// Why.
        source: crate::Error,
    },
}

/// Result type of the PCI core.
pub type Result<T> = std::result::Result<T, PciError>;
