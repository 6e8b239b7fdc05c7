//! Message-signalled interrupts into the guest: GSI allocation, KVM GSI routing and irqfds.
//!
//! KVM's `KVM_SET_GSI_ROUTING` replaces the whole table, so one [`KvmMsiRouter`] per VM must
//! own it (shared by VFIO and virtio-pci devices): it keeps the in-kernel irqchip's default
//! routes (GSI 0-23 to the PIC/IOAPIC) and adds one MSI route per allocated GSI.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

/// Number of IOAPIC pins (GSIs 0..24 are the irqchip's).
pub const IOAPIC_PINS: u32 = 24;

/// Routes interrupts signalled on eventfds to guest MSIs (or irqchip pins for INTx).
pub trait MsiRouter: Send + Sync {
    /// A fresh GSI for an MSI route.
    fn allocate_gsi(&self) -> Result<u32, String>;
    /// Gives a GSI back (its route is removed).
    fn release_gsi(&self, gsi: u32);
    /// Routes `gsi` to the MSI message `address`/`data`.
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<(), String>;
    /// Injects `gsi` whenever `fd` is signalled.
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), String>;
    /// Stops injecting `gsi` for `fd`.
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), String>;
    /// Level-triggered: injects `gsi` on `fd` and signals `resample` on the guest's EOI.
    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), String>;
}

struct RouterState {
    next_gsi: u32,
    free: Vec<u32>,
    msi: BTreeMap<u32, (u64, u32)>,
}

/// The KVM implementation (in-kernel irqchip).
pub struct KvmMsiRouter {
    vm: Arc<VmFd>,
    max_gsi: u32,
    state: Mutex<RouterState>,
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
    /// A router for `vm` handing out GSIs 24..`max_gsi`.
    pub fn new(vm: Arc<VmFd>, max_gsi: u32) -> Self {
        Self {
            vm,
            max_gsi,
            state: Mutex::new(RouterState {
                next_gsi: IOAPIC_PINS,
                free: Vec::new(),
                msi: BTreeMap::new(),
            }),
        }
    }

    fn commit(&self, state: &RouterState) -> Result<(), String> {
        let mut entries = default_irqchip_routes();
        entries.extend(
            state
                .msi
                .iter()
                .map(|(gsi, (a, d))| msi_entry(*gsi, *a, *d)),
        );
        let routing = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| format!("GSI routing table: {e:?}"))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|e| format!("KVM_SET_GSI_ROUTING: {e}"))
    }
}

impl MsiRouter for KvmMsiRouter {
    fn allocate_gsi(&self) -> Result<u32, String> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = s.free.pop() {
            return Ok(g);
        }
        if s.next_gsi >= self.max_gsi {
            return Err(format!("out of GSIs (max {})", self.max_gsi));
        }
        s.next_gsi += 1;
        Ok(s.next_gsi - 1)
    }

    fn release_gsi(&self, gsi: u32) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.msi.remove(&gsi).is_some() {
            if let Err(e) = self.commit(&s) {
                log::warn!("msi: {e}");
            }
        }
        if gsi >= IOAPIC_PINS && !s.free.contains(&gsi) {
            s.free.push(gsi);
        }
    }

    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<(), String> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.msi.get(&gsi) == Some(&(address, data)) {
            return Ok(());
        }
        s.msi.insert(gsi, (address, data));
        self.commit(&s)
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), String> {
        self.vm
            .register_irqfd(fd, gsi)
            .map_err(|e| format!("KVM_IRQFD gsi {gsi}: {e}"))
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), String> {
        self.vm
            .unregister_irqfd(fd, gsi)
            .map_err(|e| format!("KVM_IRQFD deassign gsi {gsi}: {e}"))
    }

    fn register_irqfd_with_resample(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), String> {
        self.vm
            .register_irqfd_with_resample(fd, resample, gsi)
            .map_err(|e| format!("KVM_IRQFD (resample) gsi {gsi}: {e}"))
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
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = Arc::new(kvm.create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let r = KvmMsiRouter::new(vm, 26);
        let a = r.allocate_gsi().unwrap();
        let b = r.allocate_gsi().unwrap();
        assert_eq!((a, b), (24, 25));
        assert!(r.allocate_gsi().is_err());
        r.set_msi_route(a, 0xfee0_0000, 0x30).unwrap();
        let fd = EventFd::new(0).unwrap();
        r.register_irqfd(&fd, a).unwrap();
        r.unregister_irqfd(&fd, a).unwrap();
        r.release_gsi(a);
        assert_eq!(r.allocate_gsi().unwrap(), 24);
    }
}
