//! The VM's PCI buses: bus 0 with the host bridge at slot 0, and, when the VMM adds one, a
//! PCI-to-PCI bridge on bus 0 with a secondary bus behind it. Devices get free slots, their
//! BARs guest addresses; configuration accesses reach a device by the bus numbers the guest
//! sees (the bridge's registers), BAR accesses through one router.

use std::fmt;
use std::sync::{Arc, Mutex};

use log::{debug, warn};
use log_limit::{debug_limit_global, warn_limit_global};

use super::bar::{BarReprogram, PciBar};
use super::bar_allocator::BarAllocator;
use super::bar_router::{lock_device, PciBarRouter, SharedPciDevice};
use super::bridge::PciToPciBridge;
use super::error::{PciError, Result};
use super::host_bridge::PciHostBridge;
use crate::GUEST_LOG_INTERVAL;

/// Device slots on a PCI bus.
pub const NUM_SLOTS: usize = 32;
/// The bus of the host bridge.
pub const ROOT_BUS: u8 = 0;
/// The bus behind the PCI-to-PCI bridge, as the VMM numbers it (the guest may renumber it).
pub const BRIDGE_BUS: u8 = 1;

/// Where a device sits: the bus as the VMM numbered it ([`ROOT_BUS`] or [`BRIDGE_BUS`]) and
/// the slot on it. Shown as the guest sees it before any renumbering: `01:00.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciSlot {
    /// The bus.
    pub bus: u8,
    /// The slot (device number) on it, 0..32.
    pub slot: u8,
}

impl PciSlot {
    /// `slot` on the root bus.
    pub fn root(slot: u8) -> Self {
        Self {
            bus: ROOT_BUS,
            slot,
        }
    }

    /// `slot` on the bus behind the bridge.
    pub fn behind_bridge(slot: u8) -> Self {
        Self {
            bus: BRIDGE_BUS,
            slot,
        }
    }
}

impl fmt::Display for PciSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.0", self.bus, self.slot)
    }
}

type Slots = Vec<Option<SharedPciDevice>>;

/// The PCI-to-PCI bridge on bus 0 and the bus behind it.
struct Bridge {
    at: PciSlot,
    device: Arc<Mutex<PciToPciBridge>>,
    slots: Slots,
}

/// The VM's PCI buses.
pub struct PciBus {
    root: Slots,
    bridge: Option<Bridge>,
    router: Arc<PciBarRouter>,
}

impl PciBus {
    /// Bus 0 with the host bridge at slot 0.
    pub fn new() -> Self {
        let mut root: Slots = vec![None; NUM_SLOTS];
        root[0] = Some(Arc::new(Mutex::new(PciHostBridge::new())));
        Self {
            root,
            bridge: None,
            router: Arc::new(PciBarRouter::new()),
        }
    }

    /// The router to register over the PCI MMIO window (and I/O port window).
    pub fn router(&self) -> Arc<PciBarRouter> {
        self.router.clone()
    }

    /// Puts a PCI-to-PCI bridge at the first free slot of bus 0, with bus [`BRIDGE_BUS`] behind
    /// it and its windows open over every window of `allocator` (so every BAR the allocator
    /// places is forwarded). One bridge per VM.
    pub fn add_bridge(&mut self, allocator: &BarAllocator) -> Result<PciSlot> {
        if self.bridge.is_some() {
            return Err(PciError::SecondBridge);
        }
        let at = self.free_slot(ROOT_BUS)?;
        let device = Arc::new(Mutex::new(PciToPciBridge::new(
            ROOT_BUS,
            BRIDGE_BUS,
            allocator.bridge_windows(),
        )?));
        self.root[usize::from(at.slot)] = Some(device.clone());
        self.bridge = Some(Bridge {
            at,
            device,
            slots: vec![None; NUM_SLOTS],
        });
        debug!("pci: PCI-to-PCI bridge at {at}, bus {BRIDGE_BUS:02x} behind it");
        Ok(at)
    }

    /// Where the PCI-to-PCI bridge sits on bus 0, if there is one.
    pub fn bridge_slot(&self) -> Option<PciSlot> {
        self.bridge.as_ref().map(|b| b.at)
    }

    fn slots(&self, bus: u8) -> Option<&Slots> {
        match bus {
            ROOT_BUS => Some(&self.root),
            BRIDGE_BUS => self.bridge.as_ref().map(|b| &b.slots),
            _ => None,
        }
    }

    fn slots_mut(&mut self, bus: u8) -> Option<&mut Slots> {
        match bus {
            ROOT_BUS => Some(&mut self.root),
            BRIDGE_BUS => self.bridge.as_mut().map(|b| &mut b.slots),
            _ => None,
        }
    }

    /// The device at `at`, if any.
    pub fn device(&self, at: PciSlot) -> Option<SharedPciDevice> {
        self.slots(at.bus)?
            .get(usize::from(at.slot))
            .cloned()
            .flatten()
    }

    /// The slot of `bus` [`PciBus::add_device`] would use next (the first free one).
    pub fn free_slot(&self, bus: u8) -> Result<PciSlot> {
        let slot = self
            .slots(bus)
            .ok_or(PciError::NoSuchBus(bus))?
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::BusFull(bus))?;
        // NUM_SLOTS is 32, so the index fits a u8.
        Ok(PciSlot {
            bus,
            slot: slot as u8,
        })
    }

    /// Adds `device` at the first free slot of `bus`; see [`PciBus::add_device_at`].
    pub fn add_device(
        &mut self,
        bus: u8,
        device: SharedPciDevice,
        allocator: &mut BarAllocator,
    ) -> Result<PciSlot> {
        let at = self.free_slot(bus)?;
        self.add_device_at(at, device, allocator)?;
        Ok(at)
    }

    /// Adds `device` at `at`: allocates a guest address for each of its BARs, programs the
    /// BARs as firmware would, routes them and lets the device follow (`move_bar`).
    /// On error nothing stays allocated or routed.
    pub fn add_device_at(
        &mut self,
        at: PciSlot,
        device: SharedPciDevice,
        allocator: &mut BarAllocator,
    ) -> Result<()> {
        let free = self
            .slots(at.bus)
            .ok_or(PciError::NoSuchBus(at.bus))?
            .get(usize::from(at.slot))
            .is_some_and(Option::is_none);
        if !free {
            return Err(PciError::SlotUnavailable(at.to_string()));
        }
        let mut dev = lock_device(&device);
        let bars = dev.bars();
        let mut allocated = Vec::with_capacity(bars.len());
        for bar in &bars {
            match allocator.allocate(bar.kind, bar.size) {
                Ok(addr) => allocated.push((*bar, addr)),
                Err(e) => {
                    Self::free_all(allocator, &allocated);
                    return Err(e);
                }
            }
        }
        let mut moved: Vec<BarReprogram> = Vec::new();
        for (bar, addr) in &allocated {
            let Some(mv) = dev.program_bar(bar.index, *addr) else {
                continue;
            };
            if let Err(source) = dev.move_bar(&mv) {
                // Undo the BARs this device already follows.
                for done in &moved {
                    let back = BarReprogram {
                        old_addr: done.new_addr,
                        new_addr: done.old_addr,
                        ..*done
                    };
                    let _ = dev.move_bar(&back);
                }
                Self::free_all(allocator, &allocated);
                return Err(PciError::MoveBar {
                    bar: mv.bar,
                    old: mv.old_addr,
                    new: mv.new_addr,
                    source,
                });
            }
            moved.push(mv);
        }
        for bar in dev.bars() {
            self.router.add_bar(at, &bar, device.clone());
        }
        debug!("pci: {} at {at}, BARs {:x?}", dev.name(), dev.bars());
        drop(dev);
        if let Some(entry) = self
            .slots_mut(at.bus)
            .and_then(|s| s.get_mut(usize::from(at.slot)))
        {
            *entry = Some(device);
        }
        Ok(())
    }

    /// Takes every device but the two bridges off the buses, those behind the PCI-to-PCI
    /// bridge first: their BARs are no longer routed and the bus lets go of them, so the
    /// references returned may be the last ones.
    pub fn remove_devices(&mut self) -> Vec<SharedPciDevice> {
        let mut removed = Vec::new();
        let bridge = self
            .bridge
            .as_ref()
            .map(|b| b.device.clone() as SharedPciDevice);
        if let Some(b) = self.bridge.as_mut() {
            take_devices(
                &self.router,
                BRIDGE_BUS,
                &mut b.slots,
                |_, _| false,
                &mut removed,
            );
        }
        let keep = |slot: usize, d: &SharedPciDevice| {
            slot == 0 || bridge.as_ref().is_some_and(|b| Arc::ptr_eq(b, d))
        };
        take_devices(&self.router, ROOT_BUS, &mut self.root, keep, &mut removed);
        removed
    }

    fn free_all(allocator: &mut BarAllocator, allocated: &[(PciBar, u64)]) {
        for (bar, addr) in allocated {
            if let Err(e) = allocator.free(bar.kind, *addr, bar.size) {
                warn!("pci: {e}");
            }
        }
    }

    /// The device a configuration access to `bus` (as the guest numbers buses), `slot` and
    /// `function` reaches, and where it sits in the VMM's numbering: bus 0 directly; the
    /// bridge's secondary bus through the bridge (a type-1 access it turns into a type-0 one).
    /// Other buses, empty slots and functions other than 0 reach nothing.
    fn config_target(&self, bus: u8, slot: u8, function: u8) -> Option<(PciSlot, SharedPciDevice)> {
        if function != 0 {
            return None;
        }
        let (vmm_bus, slots) = if bus == ROOT_BUS {
            (ROOT_BUS, &self.root)
        } else {
            let bridge = self.bridge.as_ref()?;
            let secondary = bridge
                .device
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .secondary_bus();
            if secondary == ROOT_BUS || bus != secondary {
                return None;
            }
            (BRIDGE_BUS, &bridge.slots)
        };
        let device = slots.get(usize::from(slot)).cloned().flatten()?;
        // The VMM's numbering (the route key), which a guest renumbering does not change.
        Some((PciSlot { bus: vmm_bus, slot }, device))
    }

    /// Reads configuration dword `reg_idx` of `slot`/`function` on `bus` (as the guest
    /// numbers buses); anything no device answers reads all-ones.
    pub fn read_config(&self, bus: u8, slot: u8, function: u8, reg_idx: usize) -> u32 {
        match self.config_target(bus, slot, function) {
            Some((_, device)) => lock_device(&device).read_config_register(reg_idx),
            None => 0xffff_ffff,
        }
    }

    /// Writes configuration space of `slot`/`function` on `bus` (as the guest numbers
    /// buses); a BAR move is routed and the device told to follow it. Writes no device
    /// answers are dropped.
    pub fn write_config(
        &self,
        bus: u8,
        slot: u8,
        function: u8,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) {
        let Some((at, device)) = self.config_target(bus, slot, function) else {
            return;
        };
        let mut dev = lock_device(&device);
        if let Some(mv) = dev.write_config_register(reg_idx, offset, data) {
            debug_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "pci: {} BAR {} moved {:#x} -> {:#x} ({:#x} bytes)",
                dev.name(),
                mv.bar,
                mv.old_addr,
                mv.new_addr,
                mv.size
            );
            self.router.move_bar(at, &mv, device.clone());
            if let Err(reason) = dev.move_bar(&mv) {
                warn_limit_global!(
                    1,
                    GUEST_LOG_INTERVAL,
                    "pci: {} could not follow the move of BAR {}: {reason}",
                    dev.name(),
                    mv.bar
                );
            }
        }
    }
}

/// Takes the devices of `slots` that `keep` does not keep off `bus` and out of `router` into
/// `out`.
fn take_devices(
    router: &PciBarRouter,
    bus: u8,
    slots: &mut Slots,
    keep: impl Fn(usize, &SharedPciDevice) -> bool,
    out: &mut Vec<SharedPciDevice>,
) {
    for (slot, entry) in slots.iter_mut().enumerate() {
        let Some(device) = entry.take_if(|d| !keep(slot, d)) else {
            continue;
        };
        // NUM_SLOTS is 32, so the index fits a u8.
        let at = PciSlot {
            bus,
            slot: slot as u8,
        };
        for bar in lock_device(&device).bars() {
            router.remove_bar(at, &bar);
        }
        out.push(device);
    }
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}
