//! Dispatch of guest MMIO and port I/O to the BAR that currently decodes the address.
//!
//! The VMM registers one [`PciBarRouter`] over the whole PCI MMIO window (and the PCI I/O
//! port window) of its `vm-device` `IoManager`. The router keeps an ordered map from BAR
//! start address to device, updated by the bus whenever a BAR moves, so guest BAR moves need
//! no re-registration and a lookup is O(log n).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use log_limit::{debug_limit_global, warn_limit_global};
use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{DeviceMmio, DevicePio, MutDeviceMmio, MutDevicePio};

use super::bar::{BarReprogram, BarSpace, PciBar};
use super::bus::PciSlot;
use super::device::PciDevice;
use crate::GUEST_LOG_INTERVAL;

/// A device shared between the bus, the router and the VMM.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Locks a device, recovering from a poisoned lock (a previous panic must not turn every
/// later guest access into another panic).
pub fn lock_device(device: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Key of a route: BAR start, then slot and BAR index so that two BARs a guest programmed to
/// the same address do not replace each other.
/// The largest [`PciSlot`], for range ends.
const LAST_SLOT: PciSlot = PciSlot {
    bus: u8::MAX,
    slot: u8::MAX,
};

type RouteKey = (u64, PciSlot, usize);

#[derive(Clone)]
struct Route {
    size: u64,
    device: SharedPciDevice,
}

#[derive(Default)]
struct RouteMap {
    map: BTreeMap<RouteKey, Route>,
}

impl RouteMap {
    fn insert(&mut self, slot: PciSlot, bar: usize, addr: u64, size: u64, device: SharedPciDevice) {
        let end = addr.saturating_add(size);
        if let Some(((other, s, b), _)) = self
            .map
            .range(..(end, PciSlot::root(0), 0))
            .next_back()
            .filter(|(k, r)| k.0.saturating_add(r.size) > addr)
        {
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci: BAR {bar} of {slot} at {addr:#x} overlaps BAR {b} of {s} at {other:#x}"
            );
        }
        self.map.insert((addr, slot, bar), Route { size, device });
    }

    fn remove(&mut self, slot: PciSlot, bar: usize, addr: u64) {
        self.map.remove(&(addr, slot, bar));
    }

    /// The route decoding `addr` and the offset of `addr` in it.
    fn lookup(&self, addr: u64) -> Option<(usize, u64, Route)> {
        let ((start, _, bar), route) = self
            .map
            .range(..=(addr, LAST_SLOT, usize::MAX))
            .next_back()?;
        let offset = addr - start;
        (offset < route.size).then(|| (*bar, offset, route.clone()))
    }
}

/// Routes guest MMIO and port I/O accesses to PCI BARs by their current address.
///
/// It implements `vm_device::DeviceMmio`/`DevicePio` (shared, internally locked), so an
/// `Arc<PciBarRouter>` can be registered directly; `MutDeviceMmio`/`MutDevicePio` are
/// implemented as well for callers that prefer a `Mutex`.
#[derive(Default)]
pub struct PciBarRouter {
    mmio: RwLock<RouteMap>,
    pio: RwLock<RouteMap>,
}

impl PciBarRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self, space: BarSpace) -> &RwLock<RouteMap> {
        match space {
            BarSpace::Mmio => &self.mmio,
            BarSpace::Io => &self.pio,
        }
    }

    /// Routes BAR `bar` of the device in `slot` at its current address.
    pub fn add_bar(&self, slot: PciSlot, bar: &PciBar, device: SharedPciDevice) {
        let mut map = self
            .map(bar.kind.space())
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(slot, bar.index, bar.addr, bar.size, device);
    }

    /// Follows a BAR move of the device in `slot`.
    pub fn move_bar(&self, slot: PciSlot, mv: &BarReprogram, device: SharedPciDevice) {
        let mut map = self
            .map(mv.kind.space())
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(slot, mv.bar, mv.old_addr);
        map.insert(slot, mv.bar, mv.new_addr, mv.size, device);
    }

    /// Stops routing BAR `bar` of the device in `slot` (device removal).
    pub fn remove_bar(&self, slot: PciSlot, bar: &PciBar) {
        let mut map = self
            .map(bar.kind.space())
            .write()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(slot, bar.index, bar.addr);
    }

    /// Number of routed BARs (MMIO, I/O).
    pub fn route_count(&self) -> (usize, usize) {
        let count = |m: &RwLock<RouteMap>| m.read().unwrap_or_else(|p| p.into_inner()).map.len();
        (count(&self.mmio), count(&self.pio))
    }

    fn find(&self, space: BarSpace, addr: u64, len: usize) -> Option<(usize, u64, Route)> {
        // The read lock is released before the device lock is taken.
        let found = self
            .map(space)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(addr);
        match found {
            Some((bar, offset, route))
                if offset
                    .checked_add(len as u64)
                    .is_some_and(|e| e <= route.size) =>
            {
                Some((bar, offset, route))
            }
            Some(_) => {
                debug_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "pci: {space:?} access of {len} bytes at {addr:#x} crosses the end of a BAR"
                );
                None
            }
            None => {
                debug_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "pci: {space:?} access at {addr:#x} hits no BAR"
                );
                None
            }
        }
    }

    /// Reads `data.len()` bytes at guest address `addr` of `space`; unclaimed addresses, and
    /// BARs of a device that does not decode `space` now, read as all-ones.
    pub fn read(&self, space: BarSpace, addr: u64, data: &mut [u8]) {
        if let Some((bar, offset, route)) = self.find(space, addr, data.len()) {
            let mut dev = lock_device(&route.device);
            if dev.decodes(space) {
                dev.read_bar(bar, offset, data);
                return;
            }
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci: {space:?} read at {addr:#x}: {} does not decode {space:?} (command register)",
                dev.name()
            );
        }
        data.fill(0xff);
    }

    /// Writes `data` at guest address `addr` of `space`; unclaimed addresses, and BARs of a
    /// device that does not decode `space` now, drop the write.
    pub fn write(&self, space: BarSpace, addr: u64, data: &[u8]) {
        if let Some((bar, offset, route)) = self.find(space, addr, data.len()) {
            let mut dev = lock_device(&route.device);
            if dev.decodes(space) {
                dev.write_bar(bar, offset, data);
            } else {
                debug_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "pci: {space:?} write at {addr:#x} dropped: {} does not decode {space:?} (command register)",
                    dev.name()
                );
            }
        }
    }
}

impl DeviceMmio for PciBarRouter {
    fn mmio_read(&self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(BarSpace::Mmio, base.0.wrapping_add(offset), data);
    }

    fn mmio_write(&self, base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(BarSpace::Mmio, base.0.wrapping_add(offset), data);
    }
}

impl DevicePio for PciBarRouter {
    fn pio_read(&self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(
            BarSpace::Io,
            u64::from(base.0).wrapping_add(u64::from(offset)),
            data,
        );
    }

    fn pio_write(&self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(
            BarSpace::Io,
            u64::from(base.0).wrapping_add(u64::from(offset)),
            data,
        );
    }
}

impl MutDeviceMmio for PciBarRouter {
    fn mmio_read(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        DeviceMmio::mmio_read(self, base, offset, data);
    }

    fn mmio_write(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        DeviceMmio::mmio_write(self, base, offset, data);
    }
}

impl MutDevicePio for PciBarRouter {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        DevicePio::pio_read(self, base, offset, data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        DevicePio::pio_write(self, base, offset, data);
    }
}
