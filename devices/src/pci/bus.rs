//! PCI bus 0: the host bridge at slot 0, devices at free slots, configuration accesses and
//! BAR routing.

use std::sync::{Arc, Mutex};

use log::{debug, warn};
use log_limit::{debug_limit_global, warn_limit_global};

use super::bar::{BarReprogram, PciBar};
use super::bar_allocator::BarAllocator;
use super::bar_router::{lock_device, PciBarRouter, SharedPciDevice};
use super::error::{PciError, Result};
use super::host_bridge::PciHostBridge;
use crate::GUEST_LOG_INTERVAL;

/// Device slots on a PCI bus.
pub const NUM_SLOTS: usize = 32;

/// PCI bus 0.
pub struct PciBus {
    slots: Vec<Option<SharedPciDevice>>,
    router: Arc<PciBarRouter>,
}

impl PciBus {
    /// A bus with the host bridge at slot 0.
    pub fn new() -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; NUM_SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(PciHostBridge::new())));
        Self {
            slots,
            router: Arc::new(PciBarRouter::new()),
        }
    }

    /// The router to register over the PCI MMIO window (and I/O port window).
    pub fn router(&self) -> Arc<PciBarRouter> {
        self.router.clone()
    }

    /// The device in `slot`, if any.
    pub fn device(&self, slot: u8) -> Option<SharedPciDevice> {
        self.slots.get(usize::from(slot)).cloned().flatten()
    }

    /// The slot [`PciBus::add_device`] would use next (the first free one).
    pub fn free_slot(&self) -> Result<u8> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::BusFull)?;
        // NUM_SLOTS is 32, so the index fits a u8.
        Ok(slot as u8)
    }

    /// Adds `device` at the first free slot; see [`PciBus::add_device_at`].
    pub fn add_device(
        &mut self,
        device: SharedPciDevice,
        allocator: &mut BarAllocator,
    ) -> Result<u8> {
        let slot = self.free_slot()?;
        self.add_device_at(slot, device, allocator)?;
        Ok(slot)
    }

    /// Adds `device` at `slot`: allocates a guest address for each of its BARs, programs the
    /// BARs as firmware would, routes them and lets the device follow (`move_bar`).
    /// On error nothing stays allocated or routed.
    pub fn add_device_at(
        &mut self,
        slot: u8,
        device: SharedPciDevice,
        allocator: &mut BarAllocator,
    ) -> Result<()> {
        if usize::from(slot) >= NUM_SLOTS || self.slots[usize::from(slot)].is_some() {
            return Err(PciError::SlotUnavailable(slot));
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
            self.router.add_bar(slot, &bar, device.clone());
        }
        debug!("pci: {} at slot {slot}, BARs {:x?}", dev.name(), dev.bars());
        drop(dev);
        self.slots[usize::from(slot)] = Some(device);
        Ok(())
    }

    /// Takes every device but the host bridge off the bus: their BARs are no longer routed and
    /// the bus lets go of them, so the references returned may be the last ones.
    pub fn remove_devices(&mut self) -> Vec<SharedPciDevice> {
        let mut removed = Vec::new();
        for (slot, entry) in self.slots.iter_mut().enumerate().skip(1) {
            let Some(device) = entry.take() else {
                continue;
            };
            for bar in lock_device(&device).bars() {
                // NUM_SLOTS is 32, so the index fits a u8.
                self.router.remove_bar(slot as u8, &bar);
            }
            removed.push(device);
        }
        removed
    }

    fn free_all(allocator: &mut BarAllocator, allocated: &[(PciBar, u64)]) {
        for (bar, addr) in allocated {
            if let Err(e) = allocator.free(bar.kind, *addr, bar.size) {
                warn!("pci: {e}");
            }
        }
    }

    /// Reads configuration dword `reg_idx` of `slot`/`function`; empty slots and functions
    /// other than 0 read all-ones.
    pub fn read_config(&self, slot: u8, function: u8, reg_idx: usize) -> u32 {
        if function != 0 {
            return 0xffff_ffff;
        }
        match self.device(slot) {
            Some(device) => lock_device(&device).read_config_register(reg_idx),
            None => 0xffff_ffff,
        }
    }

    /// Writes configuration space of `slot`/`function`; a BAR move is routed and the device
    /// told to follow it. Writes to empty slots are dropped.
    pub fn write_config(&self, slot: u8, function: u8, reg_idx: usize, offset: usize, data: &[u8]) {
        if function != 0 {
            return;
        }
        let Some(device) = self.device(slot) else {
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
            self.router.move_bar(slot, &mv, device.clone());
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

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}
