//! Guest memory slots: the boundary to KVM's `KVM_SET_USER_MEMORY_REGION` for everything that
//! maps host memory into the guest (guest RAM, passthrough BARs), so that BAR handling can be
//! tested with a fake.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_allocator::IdAllocator;

use crate::Error;

/// Adds and removes guest-physical mappings of host memory.
pub trait GuestMemorySlots: Send + Sync {
    /// Maps `size` bytes of host memory at `host_addr` at guest address `gpa`; returns the
    /// slot to remove it with.
    ///
    /// # Safety
    ///
    /// `host_addr..host_addr + size` must be a mapping of this process that stays valid until
    /// [`GuestMemorySlots::remove`] returns for the slot: the guest reads and writes it.
    unsafe fn add(&self, gpa: u64, size: u64, host_addr: u64) -> Result<u32, Error>;

    /// Removes a slot returned by [`GuestMemorySlots::add`].
    fn remove(&self, slot: u32) -> Result<(), Error>;
}

struct SlotIds {
    /// Slot numbers; `None` when the VM has no slots at all.
    ids: Option<IdAllocator>,
    /// Slots in use: guest address and host address.
    used: BTreeMap<u32, (u64, u64)>,
}

/// All the KVM memory slots of a VM, handed out from one allocator to guest RAM and
/// passthrough BARs alike.
pub struct KvmMemorySlots {
    vm: Arc<VmFd>,
    count: u32,
    state: Mutex<SlotIds>,
}

impl KvmMemorySlots {
    /// Slots `0..count` of `vm` (`count`: what KVM gives a VM, `KVM_CAP_NR_MEMSLOTS`).
    pub fn new(vm: Arc<VmFd>, count: u32) -> Self {
        let ids = count
            .checked_sub(1)
            .and_then(|last| IdAllocator::new(0, last).ok());
        Self {
            vm,
            count,
            state: Mutex::new(SlotIds {
                ids,
                used: BTreeMap::new(),
            }),
        }
    }

    /// The slots in use, in ascending order.
    pub fn in_use(&self) -> Vec<u32> {
        self.lock().used.keys().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, SlotIds> {
        // Plain data: consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or, with `size` 0, deletes) slot `slot`.
    ///
    /// # Safety
    ///
    /// With a non-zero `size`, as for [`GuestMemorySlots::add`].
    unsafe fn set_region(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<(), kvm_ioctls::Error> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: a non-empty region is a mapping our caller keeps valid until the slot is
        // deleted; a zero-sized one deletes the slot and makes no memory accessible.
        unsafe { self.vm.set_user_memory_region(region) }
    }
}

impl GuestMemorySlots for KvmMemorySlots {
    unsafe fn add(&self, gpa: u64, size: u64, host_addr: u64) -> Result<u32, Error> {
        let mut st = self.lock();
        let slot = st
            .ids
            .as_mut()
            .and_then(|ids| ids.allocate_id().ok())
            .ok_or(Error::NoFreeMemorySlot { count: self.count })?;
        // SAFETY: our caller keeps the host range mapped until the slot is removed.
        if let Err(source) = unsafe { self.set_region(slot, gpa, size, host_addr) } {
            if let Some(ids) = st.ids.as_mut() {
                // Just allocated, so it can be given back.
                let _ = ids.free_id(slot);
            }
            return Err(Error::MemorySlot {
                slot,
                gpa,
                size,
                source,
            });
        }
        st.used.insert(slot, (gpa, host_addr));
        Ok(slot)
    }

    fn remove(&self, slot: u32) -> Result<(), Error> {
        let mut st = self.lock();
        let Some(&(gpa, host)) = st.used.get(&slot) else {
            return Err(Error::SlotNotInUse(slot));
        };
        // SAFETY: a zero size deletes the slot; no memory is made accessible.
        unsafe { self.set_region(slot, gpa, 0, host) }
            .map_err(|source| Error::RemoveMemorySlot { slot, source })?;
        st.used.remove(&slot);
        if let Some(ids) = st.ids.as_mut() {
            // In use until now, so it was allocated.
            let _ = ids.free_id(slot);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::HostMapping;

    #[test]
    fn kvm_slots_add_remove_and_exhaust() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm: not exercised");
            return;
        };
        let vm = Arc::new(kvm.create_vm().unwrap());
        let slots = KvmMemorySlots::new(vm, 2);
        let a = HostMapping::anonymous(0x2000).unwrap();
        let b = HostMapping::anonymous(0x1000).unwrap();
        // SAFETY: `a` and `b` outlive the slots, which are removed below.
        let sa = unsafe { slots.add(0xc000_0000, 0x2000, a.host_addr()) }.unwrap();
        // SAFETY: as above.
        let sb = unsafe { slots.add(0xd000_0000, 0x1000, b.host_addr()) }.unwrap();
        assert_eq!((sa, sb), (0, 1));
        assert_eq!(slots.in_use(), vec![0, 1]);
        // Only two slots exist.
        // SAFETY: as above; the call fails before reaching KVM.
        let err = unsafe { slots.add(0xe000_0000, 0x1000, b.host_addr()) }.unwrap_err();
        assert!(err.to_string().contains("no free KVM memory slot"), "{err}");
        assert!(err.to_string().contains("all 2 slots"), "{err}");
        slots.remove(sa).unwrap();
        assert!(
            matches!(slots.remove(sa), Err(Error::SlotNotInUse(0))),
            "removing twice"
        );
        // KVM refuses an overlapping slot; the slot number is given back.
        // SAFETY: as above.
        let err = unsafe { slots.add(0xd000_0000, 0x1000, a.host_addr()) }.unwrap_err();
        assert!(
            err.to_string().contains("KVM_SET_USER_MEMORY_REGION"),
            "{err}"
        );
        // SAFETY: as above.
        let again = unsafe { slots.add(0xc000_0000, 0x1000, a.host_addr()) }.unwrap();
        assert_eq!(again, 0);
        slots.remove(again).unwrap();
        slots.remove(sb).unwrap();
        assert!(slots.in_use().is_empty());
        // A VM without slots refuses every mapping.
        let kvm_vm = Arc::new(kvm.create_vm().unwrap());
        let none = KvmMemorySlots::new(kvm_vm, 0);
        // SAFETY: as above; the call fails before reaching KVM.
        let err = unsafe { none.add(0xc000_0000, 0x1000, a.host_addr()) }.unwrap_err();
        assert!(matches!(err, Error::NoFreeMemorySlot { count: 0 }), "{err}");
    }
}
