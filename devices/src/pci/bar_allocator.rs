//! Guest address allocation for BARs: a 32-bit MMIO window, an optional 64-bit MMIO window
//! and an optional I/O port window, on vm-allocator's `AddressAllocator`.

use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

use super::bar::{BarKind, MIN_IO_BAR_SIZE};
use super::bridge::BridgeWindows;
use super::error::{PciError, Result};

/// Smallest MMIO allocation: one page, so that no two BARs share a page (a VFIO BAR is
/// mapped into the guest with page granularity).
pub const MIN_MMIO_ALLOCATION: u64 = 0x1000;

/// A window of guest addresses: `base` and `size` in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarWindow {
    /// First address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl BarWindow {
    /// A window of `size` bytes at `base`.
    pub fn new(base: u64, size: u64) -> Self {
        Self { base, size }
    }
}

struct Window {
    name: &'static str,
    alloc: AddressAllocator,
}

impl Window {
    fn new(name: &'static str, w: BarWindow) -> Result<Self> {
        let alloc =
            AddressAllocator::new(w.base, w.size).map_err(|source| PciError::InvalidWindow {
                window: name,
                base: w.base,
                size: w.size,
                source,
            })?;
        Ok(Self { name, alloc })
    }

    fn range(&self) -> (u64, u64) {
        (self.alloc.base(), self.alloc.end())
    }

    fn contains(&self, addr: u64) -> bool {
        (self.alloc.base()..=self.alloc.end()).contains(&addr)
    }

    fn allocate(&mut self, size: u64) -> Result<u64> {
        self.alloc
            .allocate(size, size, AllocPolicy::FirstMatch)
            .map(|r| r.start())
            .map_err(|_| PciError::WindowExhausted {
                window: self.name,
                size,
                align: size,
                base: self.alloc.base(),
                end: self.alloc.end(),
            })
    }

    fn free(&mut self, addr: u64, size: u64) -> Result<()> {
        let err = |source| PciError::Free { addr, size, source };
        let end = addr
            .checked_add(size - 1)
            .ok_or(err(vm_allocator::Error::Overflow))?;
        let range = RangeInclusive::new(addr, end).map_err(err)?;
        self.alloc.free(&range).map_err(err)
    }
}

/// Allocates naturally aligned guest addresses for BARs.
///
/// Memory BARs get at least [`MIN_MMIO_ALLOCATION`] bytes, aligned to their (rounded) size;
/// I/O BARs are aligned to their size. Prefetchable 64-bit memory BARs go to the 64-bit window
/// and fall back to the 32-bit window when there is none or it is full; non-prefetchable ones
/// go to the 32-bit window (the windows of a PCI-to-PCI bridge in front of the device allow
/// no other place).
pub struct BarAllocator {
    mmio32: Window,
    mmio64: Option<Window>,
    io: Option<Window>,
}

impl BarAllocator {
    /// An allocator over the given windows (from the VMM's memory layout).
    pub fn new(
        mmio32: BarWindow,
        mmio64: Option<BarWindow>,
        io: Option<BarWindow>,
    ) -> Result<Self> {
        Ok(Self {
            mmio32: Window::new("32-bit MMIO", mmio32)?,
            mmio64: mmio64.map(|w| Window::new("64-bit MMIO", w)).transpose()?,
            io: io.map(|w| Window::new("I/O port", w)).transpose()?,
        })
    }

    /// The number of bytes reserved for a BAR of `kind` and `size`, or an error if the size
    /// is not a power of two.
    pub fn allocation_size(kind: BarKind, size: u64) -> Result<u64> {
        let min = if kind.is_mem() {
            MIN_MMIO_ALLOCATION
        } else {
            MIN_IO_BAR_SIZE
        };
        if !size.is_power_of_two() {
            return Err(PciError::InvalidBarSize { size, kind, min });
        }
        Ok(size.max(min))
    }

    /// Allocates a guest address for a BAR of `kind` and `size`.
    pub fn allocate(&mut self, kind: BarKind, size: u64) -> Result<u64> {
        let alloc_size = Self::allocation_size(kind, size)?;
        match kind {
            BarKind::Io => self
                .io
                .as_mut()
                .ok_or(PciError::NoWindow("I/O port"))?
                .allocate(alloc_size),
            BarKind::Mem32 { .. } => self.mmio32.allocate(alloc_size),
            // A PCI-to-PCI bridge forwards 64-bit addresses only through its prefetchable
            // window: a non-prefetchable BAR stays below 4 GiB, in the memory window.
            BarKind::Mem64 {
                prefetchable: false,
            } => self.mmio32.allocate(alloc_size),
            BarKind::Mem64 { prefetchable: true } => {
                match self.mmio64.as_mut().map(|w| w.allocate(alloc_size)) {
                    Some(Ok(addr)) => Ok(addr),
                    Some(Err(e64)) => self.mmio32.allocate(alloc_size).map_err(|_| e64),
                    None => self.mmio32.allocate(alloc_size),
                }
            }
        }
    }

    /// The windows a PCI-to-PCI bridge must open so that it forwards every BAR this
    /// allocator places: the I/O window, the 32-bit window as its memory window and the
    /// 64-bit window as its prefetchable one.
    pub fn bridge_windows(&self) -> BridgeWindows {
        BridgeWindows {
            io: self.io.as_ref().map(Window::range),
            mem: self.mmio32.range(),
            prefetchable: self.mmio64.as_ref().map(Window::range),
        }
    }

    /// Frees a range returned by [`BarAllocator::allocate`] for the same `kind` and `size`.
    pub fn free(&mut self, kind: BarKind, addr: u64, size: u64) -> Result<()> {
        let alloc_size = Self::allocation_size(kind, size)?;
        let window = match kind {
            BarKind::Io => self.io.as_mut().ok_or(PciError::NoWindow("I/O port"))?,
            _ => match self.mmio64.as_mut() {
                Some(w) if w.contains(addr) => w,
                _ => &mut self.mmio32,
            },
        };
        window.free(addr, alloc_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M32: BarKind = BarKind::Mem32 {
        prefetchable: false,
    };
    const M64: BarKind = BarKind::Mem64 { prefetchable: true };

    fn allocator() -> BarAllocator {
        BarAllocator::new(
            BarWindow::new(0xc000_0000, 0x3ec0_0000),
            Some(BarWindow::new(0x1_0000_0000, 0x1_0000_0000)),
            Some(BarWindow::new(0x1000, 0xf000)),
        )
        .unwrap()
    }

    #[test]
    fn natural_alignment_and_min_page() {
        let mut a = allocator();
        let small = a.allocate(M32, 0x100).unwrap();
        assert_eq!(small, 0xc000_0000);
        let big = a.allocate(M32, 0x100_0000).unwrap();
        assert_eq!(big % 0x100_0000, 0);
        let next = a.allocate(M32, 0x10).unwrap();
        assert_eq!(next % 0x1000, 0);
        assert_ne!(next, small, "a page per BAR");
        let io = a.allocate(BarKind::Io, 0x20).unwrap();
        assert_eq!(io % 0x20, 0);
        assert!((0x1000..0x10000).contains(&io));
    }

    #[test]
    fn sixty_four_bit_window_and_fallback() {
        let mut a = allocator();
        assert_eq!(a.allocate(M64, 0x1000_0000).unwrap(), 0x1_0000_0000);
        let mut no64 =
            BarAllocator::new(BarWindow::new(0xc000_0000, 0x1000_0000), None, None).unwrap();
        assert_eq!(no64.allocate(M64, 0x1000).unwrap(), 0xc000_0000);
        // 64-bit window full -> 32-bit window.
        let mut small64 = BarAllocator::new(
            BarWindow::new(0xc000_0000, 0x1000_0000),
            Some(BarWindow::new(0x1_0000_0000, 0x1000)),
            None,
        )
        .unwrap();
        assert_eq!(small64.allocate(M64, 0x2000).unwrap(), 0xc000_0000);
    }

    /// A bridge's only 64-bit window is its prefetchable one: non-prefetchable 64-bit BARs
    /// stay below 4 GiB, and the bridge windows cover every window the allocator uses.
    #[test]
    fn non_prefetchable_64_bit_bars_stay_below_4_gib() {
        let mut a = allocator();
        let np64 = BarKind::Mem64 {
            prefetchable: false,
        };
        assert_eq!(a.allocate(np64, 0x4000).unwrap(), 0xc000_0000);
        assert_eq!(a.allocate(M64, 0x4000).unwrap(), 0x1_0000_0000);
        let mut full32 = BarAllocator::new(
            BarWindow::new(0xc000_0000, 0x1000),
            Some(BarWindow::new(0x1_0000_0000, 0x1_0000_0000)),
            None,
        )
        .unwrap();
        assert!(matches!(
            full32.allocate(np64, 0x2000),
            Err(PciError::WindowExhausted {
                window: "32-bit MMIO",
                ..
            })
        ));
        assert_eq!(
            a.bridge_windows(),
            BridgeWindows {
                io: Some((0x1000, 0xffff)),
                mem: (0xc000_0000, 0xfebf_ffff),
                prefetchable: Some((0x1_0000_0000, 0x1_ffff_ffff)),
            }
        );
    }

    #[test]
    fn exhaustion_is_a_clear_error() {
        let mut a = BarAllocator::new(BarWindow::new(0xc000_0000, 0x2000), None, None).unwrap();
        a.allocate(M32, 0x1000).unwrap();
        a.allocate(M32, 0x1000).unwrap();
        let err = a.allocate(M32, 0x1000).unwrap_err();
        assert!(matches!(
            err,
            PciError::WindowExhausted {
                window: "32-bit MMIO",
                ..
            }
        ));
        assert!(err.to_string().contains("exhausted"));
        assert!(matches!(
            a.allocate(BarKind::Io, 4),
            Err(PciError::NoWindow("I/O port"))
        ));
        assert!(matches!(
            a.allocate(M32, 0x3000),
            Err(PciError::InvalidBarSize { .. })
        ));
    }

    #[test]
    fn free_and_reuse() {
        let mut a = BarAllocator::new(BarWindow::new(0xc000_0000, 0x1000), None, None).unwrap();
        let addr = a.allocate(M32, 0x100).unwrap();
        assert!(a.allocate(M32, 0x100).is_err());
        a.free(M32, addr, 0x100).unwrap();
        assert_eq!(a.allocate(M32, 0x100).unwrap(), addr);
        assert!(a.free(M32, 0xd000_0000, 0x1000).is_err());
    }

    #[test]
    fn invalid_window() {
        assert!(matches!(
            BarAllocator::new(BarWindow::new(0, 0), None, None),
            Err(PciError::InvalidWindow { .. })
        ));
    }
}
