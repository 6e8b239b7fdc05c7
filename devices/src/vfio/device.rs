//! The VFIO PCI passthrough device on our PCI bus.

use std::sync::Arc;

use log::{info, warn};
use log_limit::{debug_limit_global, warn_limit_global};

use super::config::VfioPciConfig;
use super::host_mapping::HostMapping;
use super::interrupts::VfioInterrupts;
use super::mmap_areas::{mappable_areas, Area};
use super::region_set::{RegionDesc, VfioRegionSet};
use crate::memory_slots::GuestMemorySlots;
use crate::pci::{
    command_decodes, BarReprogram, BarSpace, PciBar, PciDevice, NUM_BARS, REG_COMMAND,
};
use crate::GUEST_LOG_INTERVAL;
use vfio_dmabuf::{DeviceId, MmapPiece, RegionInfo, SharedRegistry};

/// One BAR: its region, the mmapped areas and the KVM slots they currently occupy.
struct BarState {
    region: RegionDesc,
    /// (area, host mapping) pairs, mapped once at creation.
    mapped: Vec<(Area, HostMapping)>,
    /// KVM slots at the current guest address.
    slots: Vec<u32>,
    /// Guest address of the current slots (None: not mapped into the guest).
    guest_base: Option<u64>,
    /// Guest address the BAR is programmed to (0: none).
    addr: u64,
}

/// First config-space register (dword index) after the type-0 header: capabilities live there.
const FIRST_CAPABILITY_REG: usize = 0x40 / 4;

/// What the device is plugged into.
pub struct VfioPciDeviceEnv {
    /// KVM memory slots for the mmapped parts of BARs.
    pub slots: Arc<dyn GuestMemorySlots>,
    /// Interrupt routing; `None` leaves the device without interrupts.
    pub irq_router: Option<Arc<dyn crate::pci::MsiRouter>>,
    /// The irqchip pin for INTx (`None`: no INTx).
    pub intx_gsi: Option<u32>,
    /// The dma-buf region table to register in.
    pub registry: Option<SharedRegistry>,
    /// Host page size.
    pub page_size: u64,
}

/// A passed-through PCI device.
pub struct VfioPciDevice {
    dev: Arc<dyn VfioRegionSet>,
    config: VfioPciConfig,
    bars: Vec<Option<BarState>>,
    slots: Arc<dyn GuestMemorySlots>,
    interrupts: Option<VfioInterrupts>,
    registry: Option<(SharedRegistry, DeviceId)>,
    /// Memory space decoding (command register bit 1) as the device has it. Off: no KVM slots
    /// (VFIO revokes the mmaps then; a guest access through a slot would fault in KVM), and the
    /// router does not pass trapped accesses to memory BARs on (all-ones, writes dropped).
    mem_decode: bool,
    /// I/O space decoding (command register bit 0) as the device has it; off, the router does
    /// not pass accesses to I/O BARs on.
    io_decode: bool,
}

impl VfioPciDevice {
    /// Builds the device over an opened VFIO device: virtualises its config space, mmaps the
    /// mappable parts of its BARs (MSI-X table and PBA carved out) and registers it in the
    /// region table. The BARs get guest addresses when the bus programs them.
    pub fn new(dev: Arc<dyn VfioRegionSet>, env: VfioPciDeviceEnv) -> super::Result<Self> {
        let mut config = VfioPciConfig::new(&*dev);
        if let Some(gsi) = env.intx_gsi {
            config.set_interrupt_line(gsi as u8);
        }
        let mut bars: Vec<Option<BarState>> = (0..NUM_BARS).map(|_| None).collect();
        for bar in config.bars() {
            let index = bar.index as u32;
            let Some(region) = dev.region(index) else {
                continue;
            };
            let mut holes = Vec::new();
            if let Some(m) = config.msix() {
                let i = m.info();
                if i.table_bar == index {
                    holes.push((i.table_offset, i.table_size()));
                }
                if i.pba_bar == index {
                    holes.push((i.pba_offset, i.pba_size()));
                }
            }
            let areas = if bar.kind.is_mem() {
                mappable_areas(
                    region.size,
                    region.mappable(),
                    region.sparse_areas.as_deref(),
                    &holes,
                    env.page_size,
                )
            } else {
                Vec::new()
            };
            let mut mapped = Vec::with_capacity(areas.len());
            for (off, size) in areas {
                match dev.map(index, off, size) {
                    Ok(m) => mapped.push(((off, size), m)),
                    Err(e) => {
                        // Trapped access still works, just slower.
                        warn!("vfio {}: BAR {index} +{off:#x} ({size:#x} bytes) not mmapped, trapped instead: {e}", dev.name());
                    }
                }
            }
            // One line per BAR: how guest accesses to it will be served.
            let served = if bar.kind.is_mem() {
                let bytes: u64 = mapped.iter().map(|((_, size), _)| size).sum();
                format!(
                    "{} mmapped area(s), {bytes:#x} bytes direct, the rest trapped",
                    mapped.len()
                )
            } else {
                format!("port I/O, trapped: every access forwarded to VFIO region {index}")
            };
            info!(
                "vfio {}: BAR {index} {} {:#x} bytes: {served}",
                dev.name(),
                bar.kind,
                region.size,
            );
            bars[bar.index] = Some(BarState {
                region,
                mapped,
                slots: Vec::new(),
                guest_base: None,
                addr: 0,
            });
        }

        let registry = match (env.registry, dev.device_fd()) {
            (Some(r), Some(fd)) => {
                let id = r
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .register_device(dev.name(), fd)
                    .map_err(|e| super::VfioPciError::Registry(crate::Error::RegionTable(e)))?;
                Some((r, id))
            }
            _ => None,
        };
        let command = config.read(&*dev, REG_COMMAND) as u16;
        let mut device = Self {
            mem_decode: command_decodes(command, BarSpace::Mmio),
            io_decode: command_decodes(command, BarSpace::Io),
            interrupts: env.irq_router.map(|r| VfioInterrupts::new(r, env.intx_gsi)),
            dev,
            config,
            bars,
            slots: env.slots,
            registry,
        };
        // INTx is live from the start if the device has it (MSI/MSI-X when the guest enables them).
        device.update_interrupts();
        info!(
            "vfio {}: ready, BARs {:x?}",
            device.dev.name(),
            device.config.bars()
        );
        Ok(device)
    }

    /// The interrupt state (for tests and logs).
    pub fn interrupts(&self) -> Option<&VfioInterrupts> {
        self.interrupts.as_ref()
    }

    fn update_interrupts(&mut self) {
        if let Some(irq) = &mut self.interrupts {
            irq.update(&*self.dev, &self.config);
        }
    }

    /// KVM slots of BAR `index` (for tests).
    pub fn bar_slots(&self, index: usize) -> Vec<u32> {
        self.bars
            .get(index)
            .and_then(|b| b.as_ref())
            .map_or(Vec::new(), |b| b.slots.clone())
    }

    fn unmap_bar(slots: &dyn GuestMemorySlots, state: &mut BarState) {
        for slot in state.slots.drain(..) {
            if let Err(e) = slots.remove(slot) {
                warn_limit_global!(1, GUEST_LOG_INTERVAL, "vfio: removing slot {slot}: {e}");
            }
        }
        state.guest_base = None;
    }

    /// Places BAR `index` at guest address `gpa` (0: nowhere): KVM slots for its mmapped areas
    /// while memory decoding is on, and its region-table record. The record only describes
    /// where the BAR really is: when its slots cannot be created at `gpa` (the move failed) or
    /// the table refuses the new record, the BAR is taken out of the table.
    fn map_bar(&mut self, index: usize, gpa: u64) -> Result<(), crate::Error> {
        let slots = self.slots.clone();
        let Some(state) = self.bars.get_mut(index).and_then(|b| b.as_mut()) else {
            return Ok(());
        };
        Self::unmap_bar(&*slots, state);
        state.addr = gpa;
        let mut result = Ok(());
        if gpa != 0 && self.mem_decode {
            for ((off, size), m) in &state.mapped {
                let Some(at) = gpa.checked_add(*off) else {
                    result = Err(crate::Error::BarOverflow {
                        bar: index,
                        addr: gpa,
                        offset: *off,
                    });
                    break;
                };
                // SAFETY: `m` is a live mapping of `size` bytes owned by this BAR state; the slot
                // is removed (unmap_bar) before the mapping is dropped (see Drop).
                match unsafe { slots.add(at, *size, m.host_addr()) } {
                    Ok(slot) => state.slots.push(slot),
                    Err(e) => {
                        result = Err(crate::Error::BarArea {
                            bar: index,
                            offset: *off,
                            gpa: at,
                            source: Box::new(e),
                        });
                        break;
                    }
                }
            }
            if result.is_err() {
                // All or nothing: the trapped path serves the BAR.
                Self::unmap_bar(&*slots, state);
            } else {
                state.guest_base = Some(gpa);
            }
        }
        let Some((registry, id)) = &self.registry else {
            return result;
        };
        let mut table = registry.write().unwrap_or_else(|p| p.into_inner());
        let index = index as u32;
        let remove = |table: &mut vfio_dmabuf::DeviceRegistry| {
            if table.region(*id, index).is_some() {
                if let Err(e) = table.remove_region(*id, index) {
                    warn_limit_global!(
                        1,
                        GUEST_LOG_INTERVAL,
                        "vfio {}: region table: removing BAR {index}: {e}",
                        self.dev.name()
                    );
                }
            }
        };
        if gpa == 0 || result.is_err() {
            // Not programmed, or not mapped at its address (the move failed): no record may
            // claim an address for it, neither the new one nor the one it left.
            remove(&mut table);
            return result;
        }
        let mut record = RegionInfo::new(
            index,
            gpa,
            state.region.size,
            state.region.fd_offset,
            state.region.flags,
        )
        .with_decoding(self.mem_decode);
        if state.guest_base.is_some() {
            for ((off, size), m) in &state.mapped {
                record = record.with_mmap_piece(MmapPiece {
                    region_offset: *off,
                    size: *size,
                    host_addr: m.host_addr(),
                });
            }
        }
        if let Err(e) = table.set_region(*id, record) {
            // The table kept the BAR's previous record, which describes where the BAR no
            // longer is: take it out.
            warn_limit_global!(
                1,
                GUEST_LOG_INTERVAL,
                "vfio {}: region table refused BAR {index} at {gpa:#x}, BAR left out of it: {e}",
                self.dev.name()
            );
            remove(&mut table);
        }
        result
    }

    /// Follows the guest turning memory decoding on or off: slots come and go with it.
    fn set_mem_decode(&mut self, on: bool) {
        if on == self.mem_decode {
            return;
        }
        self.mem_decode = on;
        debug_limit_global!(
            1,
            GUEST_LOG_INTERVAL,
            "vfio {}: memory decoding {}",
            self.dev.name(),
            if on { "on" } else { "off" }
        );
        for index in 0..self.bars.len() {
            let Some(addr) = self.bars[index]
                .as_ref()
                .map(|b| b.addr)
                .filter(|a| *a != 0)
            else {
                continue;
            };
            if let Err(e) = self.map_bar(index, addr) {
                warn_limit_global!(1, GUEST_LOG_INTERVAL, "vfio {}: {e}", self.dev.name());
            }
        }
    }

    /// Memory decoding as last seen (for tests).
    pub fn mem_decode(&self) -> bool {
        self.mem_decode
    }

    fn region_access_ok(&self, bar: usize, offset: u64, len: usize) -> bool {
        self.bars
            .get(bar)
            .and_then(|b| b.as_ref())
            .is_some_and(|b| {
                offset
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= b.region.size)
            })
    }
}

impl PciDevice for VfioPciDevice {
    fn name(&self) -> String {
        format!("vfio {}", self.dev.name())
    }

    fn read_config_register(&mut self, reg_idx: usize) -> u32 {
        self.config.read(&*self.dev, reg_idx)
    }

    fn write_config_register(
        &mut self,
        reg_idx: usize,
        offset: usize,
        data: &[u8],
    ) -> Option<BarReprogram> {
        let effect = self.config.write(&*self.dev, reg_idx, offset, data);
        if effect.interrupts_changed {
            self.update_interrupts();
        }
        // Read the command register back after writing it, and after any write into the
        // capabilities: VFIO decides what the device really has, and a capability write can
        // reset the device (PCIe function-level reset, a power-state change), which clears its
        // decode bits and revokes its BAR mappings and dma-bufs without a command write.
        if (reg_idx == REG_COMMAND && offset < 2) || reg_idx >= FIRST_CAPABILITY_REG {
            let command = self.config.read(&*self.dev, REG_COMMAND) as u16;
            self.io_decode = command_decodes(command, BarSpace::Io);
            self.set_mem_decode(command_decodes(command, BarSpace::Mmio));
        }
        effect.bar_move
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn program_bar(&mut self, index: usize, addr: u64) -> Option<BarReprogram> {
        self.config.program_bar(index, addr)
    }

    fn decodes(&self, space: BarSpace) -> bool {
        match space {
            BarSpace::Mmio => self.mem_decode,
            BarSpace::Io => self.io_decode,
        }
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if let Some(m) = self.config.msix() {
            if m.in_table(bar as u32, offset, data.len()) {
                m.read_table(offset, data);
                return;
            }
            if m.in_pba(bar as u32, offset, data.len()) {
                m.read_pba(offset, data);
                return;
            }
        }
        if self.region_access_ok(bar, offset, data.len()) {
            self.dev.read(bar as u32, offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if let Some(m) = self.config.msix_mut() {
            if m.in_table(bar as u32, offset, data.len()) {
                let changed = m
                    .write_table(offset, data)
                    .filter(|w| w.route_changed || w.mask_changed);
                if let (Some(w), Some(irq)) = (changed, &mut self.interrupts) {
                    irq.update_msix_vectors(&self.config, &[w.vector]);
                }
                return;
            }
            if m.in_pba(bar as u32, offset, data.len()) {
                return;
            }
        }
        if self.region_access_ok(bar, offset, data.len()) {
            self.dev.write(bar as u32, offset, data);
        }
    }

    fn move_bar(&mut self, reprogram: &BarReprogram) -> Result<(), crate::Error> {
        self.map_bar(reprogram.bar, reprogram.new_addr)
    }
}

impl Drop for VfioPciDevice {
    fn drop(&mut self) {
        if let Some(irq) = &mut self.interrupts {
            irq.shutdown(&*self.dev);
        }
        // Leave the region table first: nobody may look up host addresses about to go away.
        if let Some((r, id)) = self.registry.take() {
            let mut table = r.write().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = table.unregister_device(id) {
                log::warn!("vfio {}: leaving the region table: {e}", self.dev.name());
            }
        }
        // Slots go before the host mappings they point into.
        for state in self.bars.iter_mut().flatten() {
            Self::unmap_bar(&*self.slots, state);
        }
        // The mappings go before the VFIO device: an mmap keeps the device file open, and VFIO
        // refuses to detach the group from the container (EBUSY) while it is.
        self.bars.clear();
    }
}
