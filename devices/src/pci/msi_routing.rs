//! Message-signalled interrupts into the guest: GSI allocation, KVM GSI routing and irqfds.
//!
//! KVM's `KVM_SET_GSI_ROUTING` replaces the whole table, so one [`KvmMsiRouter`] per VM must
//! own it (shared by VFIO and virtio-pci devices): it keeps the in-kernel irqchip's default
//! routes (GSI 0-23 to the PIC/IOAPIC, reserved for legacy and INTx lines) and adds one MSI
//! route per GSI it hands out. It also owns those GSIs: from 24 up to what KVM's routing table
//! can hold next to the irqchip routes ([`KvmMsiRouter::gsi_end_for_routes`]).
//!
//! Each table update costs a rewrite of the whole table in KVM, so callers that change many
//! vectors at once (MSI-X enable, function mask) hand them over in one batch
//! ([`MsiRouter::set_msi_routes`], [`MsiRouter::release_gsis`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vm_allocator::IdAllocator;
use vmm_sys_util::eventfd::EventFd;

use crate::Error;

/// Number of IOAPIC pins (GSIs 0..24 are the irqchip's).
pub const IOAPIC_PINS: u32 = 24;

/// Routes interrupts signalled on eventfds to guest MSIs (or irqchip pins for INTx).
pub trait MsiRouter: Send + Sync {
    /// A fresh GSI for an MSI route.
    fn allocate_gsi(&self) -> Result<u32, Error>;
    /// Gives a GSI back (its route is removed).
    fn release_gsi(&self, gsi: u32);
    /// Routes `gsi` to the MSI message `address`/`data`.
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<(), Error>;
    /// Routes each `(gsi, address, data)` as [`MsiRouter::set_msi_route`] does, in one update
    /// of the routing table.
    fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> Result<(), Error> {
        routes
            .iter()
            .try_for_each(|&(gsi, address, data)| self.set_msi_route(gsi, address, data))
    }
    /// Gives several GSIs back as [`MsiRouter::release_gsi`] does, in one update of the routing
    /// table at most.
    fn release_gsis(&self, gsis: &[u32]) {
        for &gsi in gsis {
            self.release_gsi(gsi);
        }
    }
    /// Injects `gsi` whenever `fd` is signalled.
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), Error>;
    /// Stops injecting `gsi` for `fd`.
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), Error>;
    /// Level-triggered: injects `gsi` on `fd` and signals `resample` on the guest's EOI.
    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), Error>;
}

struct RouterState {
    /// GSIs for MSI routes; `None` when there are none (KVM's table has no room).
    gsis: Option<IdAllocator>,
    /// GSIs handed out and not released.
    allocated: BTreeSet<u32>,
    msi: BTreeMap<u32, (u64, u32)>,
    /// Released GSIs whose route KVM still has: dropped at the next table update. Nothing
    /// injects on them meanwhile (their irqfds went before they were released), and an irqfd
    /// registered on one of them first brings the table up to date.
    stale: BTreeSet<u32>,
    /// The last table update failed: KVM's table may differ from `msi`.
    dirty: bool,
}

/// The KVM implementation (in-kernel irqchip).
pub struct KvmMsiRouter {
    vm: Arc<VmFd>,
    gsi_end: u32,
    state: Mutex<RouterState>,
    /// `KVM_SET_GSI_ROUTING` calls made.
    updates: AtomicU64,
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

fn msi_entry(gsi: u32, address: u64, data: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = address as u32;
    e.u.msi.address_hi = (address >> 32) as u32;
    e.u.msi.data = data;
    e
}

/// The default routes KVM installs with `KVM_CREATE_IRQCHIP` on x86.
pub fn default_irqchip_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            v.push(irqchip_entry(gsi, chip, gsi % 8));
        }
        v.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

impl KvmMsiRouter {
    /// A router for `vm` handing out GSIs 24..`gsi_end` for MSI routes.
    pub fn new(vm: Arc<VmFd>, gsi_end: u32) -> Self {
        let gsis = (gsi_end > IOAPIC_PINS)
            .then(|| IdAllocator::new(IOAPIC_PINS, gsi_end - 1).ok())
            .flatten();
        Self {
            vm,
            gsi_end,
            state: Mutex::new(RouterState {
                gsis,
                allocated: BTreeSet::new(),
                msi: BTreeMap::new(),
                stale: BTreeSet::new(),
                dirty: false,
            }),
            updates: AtomicU64::new(0),
        }
    }

    /// The end (exclusive) of the GSIs for MSI routes when KVM's routing table holds at most
    /// `max_routes` entries (`KVM_CAP_IRQ_ROUTING`): the irqchip's default routes take some,
    /// each MSI GSI takes one more, and every GSI stays below `max_routes` as KVM requires.
    pub fn gsi_end_for_routes(max_routes: u32) -> u32 {
        let irqchip = default_irqchip_routes().len() as u32;
        IOAPIC_PINS + max_routes.saturating_sub(irqchip)
    }

    /// GSIs handed out and not given back yet, in ascending order.
    pub fn gsis_in_use(&self) -> Vec<u32> {
        self.lock().allocated.iter().copied().collect()
    }

    /// Takes every GSI back and drops every MSI route from KVM's table (one update, none if
    /// the table has only the irqchip routes already). Returns the GSIs that were still handed
    /// out: after the devices are gone, those are GSIs a device did not give back.
    pub fn clear(&self) -> Result<Vec<u32>, Error> {
        let mut s = self.lock();
        let leftover: Vec<u32> = std::mem::take(&mut s.allocated).into_iter().collect();
        if let Some(ids) = s.gsis.as_mut() {
            for &gsi in &leftover {
                let _ = ids.free_id(gsi);
            }
        }
        if !s.msi.is_empty() || !s.stale.is_empty() || s.dirty {
            s.msi.clear();
            self.commit(&mut s)?;
        }
        Ok(leftover)
    }

    /// Number of routing table updates (`KVM_SET_GSI_ROUTING`) so far.
    pub fn routing_updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        // Plain data: consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure KVM has no leftover route for `gsi` before an irqfd is attached to it.
    fn drop_stale_route(&self, gsi: u32) -> Result<(), Error> {
        let mut s = self.lock();
        if s.stale.contains(&gsi) {
            self.commit(&mut s)?;
        }
        Ok(())
    }

    /// Writes the whole table to KVM: the irqchip routes and the MSI routes in `state`.
    fn commit(&self, state: &mut RouterState) -> Result<(), Error> {
        state.dirty = true;
        let mut entries = default_irqchip_routes();
        entries.extend(
            state
                .msi
                .iter()
                .map(|(gsi, (a, d))| msi_entry(*gsi, *a, *d)),
        );
        let routing =
            KvmIrqRouting::from_entries(&entries).map_err(|source| Error::RoutingTable {
                entries: entries.len(),
                source,
            })?;
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|source| Error::GsiRouting {
                entries: entries.len(),
                source,
            })?;
        state.stale.clear();
        state.dirty = false;
        Ok(())
    }
}

impl MsiRouter for KvmMsiRouter {
    fn allocate_gsi(&self) -> Result<u32, Error> {
        let mut s = self.lock();
        let gsi = s
            .gsis
            .as_mut()
            .and_then(|ids| ids.allocate_id().ok())
            .ok_or(Error::NoFreeGsi {
                first: IOAPIC_PINS,
                count: self.gsi_end.saturating_sub(IOAPIC_PINS),
            })?;
        s.allocated.insert(gsi);
        Ok(gsi)
    }

    fn release_gsi(&self, gsi: u32) {
        self.release_gsis(&[gsi]);
    }

    /// Frees the GSIs without touching KVM: their routes go with the next table update.
    fn release_gsis(&self, gsis: &[u32]) {
        let mut s = self.lock();
        for &gsi in gsis {
            if s.msi.remove(&gsi).is_some() {
                s.stale.insert(gsi);
            }
            if s.allocated.remove(&gsi) {
                if let Some(ids) = s.gsis.as_mut() {
                    // Handed out and not released yet, so the allocator takes it back.
                    let _ = ids.free_id(gsi);
                }
            }
        }
    }

    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<(), Error> {
        self.set_msi_routes(&[(gsi, address, data)])
    }

    /// One `KVM_SET_GSI_ROUTING` for all of `routes`, none if KVM already has them all.
    fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> Result<(), Error> {
        let mut s = self.lock();
        let mut changed = false;
        for &(gsi, address, data) in routes {
            changed |= s.msi.insert(gsi, (address, data)) != Some((address, data));
        }
        if changed || s.dirty {
            self.commit(&mut s)?;
        }
        Ok(())
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), Error> {
        self.drop_stale_route(gsi)?;
        self.vm
            .register_irqfd(fd, gsi)
            .map_err(|source| Error::Irqfd {
                op: "KVM_IRQFD",
                gsi,
                source,
            })
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), Error> {
        self.vm
            .unregister_irqfd(fd, gsi)
            .map_err(|source| Error::Irqfd {
                op: "KVM_IRQFD deassign",
                gsi,
                source,
            })
    }

    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), Error> {
        self.drop_stale_route(gsi)?;
        self.vm
            .register_irqfd_with_resample(fd, resample, gsi)
            .map_err(|source| Error::Irqfd {
                op: "KVM_IRQFD with resample",
                gsi,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_match_kvm() {
        let r = default_irqchip_routes();
        assert_eq!(r.len(), 16 * 2 + 8);
        // GSI 9: PIC slave pin 1 and IOAPIC pin 9.
        let g9: Vec<_> = r.iter().filter(|e| e.gsi == 9).collect();
        assert_eq!(g9.len(), 2);
        // SAFETY: irqchip entries are built with the irqchip union member.
        let (c0, p0) = unsafe { (g9[0].u.irqchip.irqchip, g9[0].u.irqchip.pin) };
        assert_eq!((c0, p0), (KVM_IRQCHIP_PIC_SLAVE, 1));
        let e = msi_entry(30, 0x1_fee0_0000, 0x41);
        // SAFETY: built with the msi union member.
        let (lo, hi, d) = unsafe { (e.u.msi.address_lo, e.u.msi.address_hi, e.u.msi.data) };
        assert_eq!(
            (lo, hi, d, e.type_),
            (0xfee0_0000, 1, 0x41, KVM_IRQ_ROUTING_MSI)
        );
    }

    #[test]
    fn gsi_allocation_on_a_real_vm() {
        // Needs /dev/kvm (present on the build machines; tiny VMs work there).
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm: not exercised");
            return;
        };
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let r = KvmMsiRouter::new(vm, 26);
        let a = r.allocate_gsi().unwrap();
        let b = r.allocate_gsi().unwrap();
        assert_eq!((a, b), (24, 25));
        let err = r.allocate_gsi().unwrap_err();
        assert!(
            matches!(
                err,
                Error::NoFreeGsi {
                    first: 24,
                    count: 2
                }
            ),
            "{err}"
        );
        assert_eq!(r.gsis_in_use(), vec![24, 25]);
        r.set_msi_route(a, 0xfee0_0000, 0x30).unwrap();
        assert_eq!(r.routing_updates(), 1);
        r.set_msi_route(a, 0xfee0_0000, 0x30).unwrap();
        assert_eq!(r.routing_updates(), 1, "unchanged route: no update");
        let fd = EventFd::new(0).unwrap();
        r.register_irqfd(&fd, a).unwrap();
        r.unregister_irqfd(&fd, a).unwrap();
        r.release_gsi(a);
        assert_eq!(
            r.routing_updates(),
            1,
            "a release waits for the next update"
        );
        assert_eq!(r.allocate_gsi().unwrap(), 24);
        // An irqfd on the reused GSI first drops the old route from KVM, once.
        r.register_irqfd(&fd, a).unwrap();
        assert_eq!(r.routing_updates(), 2);
        r.unregister_irqfd(&fd, a).unwrap();
        r.register_irqfd(&fd, a).unwrap();
        assert_eq!(r.routing_updates(), 2);
        // A batch is one update.
        r.set_msi_routes(&[(a, 0xfee0_0000, 0x31), (b, 0xfee0_1000, 0x32)])
            .unwrap();
        assert_eq!(r.routing_updates(), 3);
        r.release_gsis(&[a, b]);
        r.set_msi_routes(&[]).unwrap();
        assert_eq!(r.routing_updates(), 3);
        // Releasing twice, or a GSI never handed out, changes nothing.
        r.release_gsis(&[a, a, 3, 1000]);
        assert!(r.gsis_in_use().is_empty());
        assert_eq!(r.allocate_gsi().unwrap(), 24);
        // Clearing takes back what is still out and drops the stale routes in one update.
        assert_eq!(r.clear().unwrap(), vec![24]);
        assert_eq!(r.routing_updates(), 4);
        assert_eq!(r.clear().unwrap(), Vec::<u32>::new());
        assert_eq!(r.routing_updates(), 4, "nothing left to drop");
    }

    /// The GSIs come from what KVM's routing table holds: every one of them can be routed at
    /// once, in one table, and there is none more.
    #[test]
    fn gsis_are_bounded_by_kvms_routing_table() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm: not exercised");
            return;
        };
        let max_routes = kvm.check_extension_int(kvm_ioctls::Cap::IrqRouting);
        assert!(max_routes > 40, "KVM_CAP_IRQ_ROUTING: {max_routes}");
        let end = KvmMsiRouter::gsi_end_for_routes(max_routes as u32);
        assert_eq!(end, max_routes as u32 - 16);
        assert_eq!(KvmMsiRouter::gsi_end_for_routes(0), IOAPIC_PINS);
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let r = KvmMsiRouter::new(vm, end);
        let mut routes = Vec::new();
        while let Ok(gsi) = r.allocate_gsi() {
            routes.push((gsi, 0xfee0_0000, 0x30));
        }
        assert_eq!(
            routes.len() + default_irqchip_routes().len(),
            max_routes as usize
        );
        r.set_msi_routes(&routes).unwrap();
        assert_eq!(r.routing_updates(), 1);
        // A router without room for MSI routes refuses at once.
        let vm = Arc::new(kvm.create_vm().unwrap());
        let none = KvmMsiRouter::new(vm, KvmMsiRouter::gsi_end_for_routes(40));
        assert!(matches!(
            none.allocate_gsi(),
            Err(Error::NoFreeGsi { count: 0, .. })
        ));
    }
}
