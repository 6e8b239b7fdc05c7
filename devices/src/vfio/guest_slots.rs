//! Guest memory slots for BAR mappings: the boundary to KVM (`KVM_SET_USER_MEMORY_REGION`),
//! so that BAR handling can be tested with a fake.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

/// Adds and removes guest-physical mappings of host memory.
pub trait GuestMemorySlots: Send + Sync {
    /// Maps `size` bytes of host memory at `host_addr` at guest address `gpa`; returns the
    /// slot to remove it with.
    ///
    /// # Safety
    ///
    /// `host_addr..host_addr + size` must be a mapping of this process that stays valid until
    /// [`GuestMemorySlots::remove`] returns for the slot: the guest reads and writes it.
    unsafe fn add(&self, gpa: u64, size: u64, host_addr: u64) -> Result<u32, crate::Error>;

    /// Removes a slot returned by [`GuestMemorySlots::add`].
    fn remove(&self, slot: u32) -> Result<(), crate::Error>;
}

struct SlotIds {
    first: u32,
    next: u32,
    end: u32,
    free: Vec<u32>,
    used: BTreeMap<u32, (u64, u64)>,
}

/// KVM memory slots from a range of slot numbers the VMM does not use for RAM.
pub struct KvmMemorySlots {
    vm: Arc<VmFd>,
    ids: Mutex<SlotIds>,
}

impl KvmMemorySlots {
    /// Slots `first..first + count` of `vm` (RAM uses the ones below `first`).
    pub fn new(vm: Arc<VmFd>, first: u32, count: u32) -> Self {
        Self {
            vm,
            ids: Mutex::new(SlotIds {
                first,
                next: first,
                end: first.saturating_add(count),
                free: Vec::new(),
                used: BTreeMap::new(),
            }),
        }
    }
}

impl GuestMemorySlots for KvmMemorySlots {
    unsafe fn add(&self, gpa: u64, size: u64, host_addr: u64) -> Result<u32, crate::Error> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match ids.free.pop() {
            Some(s) => s,
            None if ids.next < ids.end => {
                ids.next += 1;
                ids.next - 1
            }
            None => {
                return Err(crate::Error::NoFreeMemorySlot {
                    count: ids.end - ids.first,
                })
            }
        };
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: the caller guarantees the host range stays mapped until the slot is removed.
        if let Err(e) = unsafe { self.vm.set_user_memory_region(region) } {
            ids.free.push(slot);
            return Err(crate::Error::MemorySlot {
                slot,
                gpa,
                size,
                source: e,
            });
        }
        ids.used.insert(slot, (gpa, host_addr));
        Ok(slot)
    }

    fn remove(&self, slot: u32) -> Result<(), crate::Error> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let Some((gpa, host)) = ids.used.remove(&slot) else {
            return Err(crate::Error::SlotNotInUse(slot));
        };
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: 0,
            userspace_addr: host,
        };
        // SAFETY: a zero-sized region deletes the slot; no memory is made accessible.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|source| crate::Error::RemoveMemorySlot { slot, source })?;
        ids.free.push(slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::HostMapping;

    #[test]
    fn kvm_slots_add_remove_and_exhaust() {
        // /dev/kvm is present on the build machines (tiny VMs work there).
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = Arc::new(kvm.create_vm().unwrap());
        let slots = KvmMemorySlots::new(vm, 4, 2);
        let a = HostMapping::anonymous(0x2000).unwrap();
        let b = HostMapping::anonymous(0x1000).unwrap();
        // SAFETY: `a` and `b` outlive the slots, which are removed below.
        let sa = unsafe { slots.add(0xc000_0000, 0x2000, a.host_addr()) }.unwrap();
        // SAFETY: as above.
        let sb = unsafe { slots.add(0xd000_0000, 0x1000, b.host_addr()) }.unwrap();
        assert_eq!((sa, sb), (4, 5));
        // Only two slot numbers were given.
        // SAFETY: as above; the call fails before reaching KVM.
        let err = unsafe { slots.add(0xe000_0000, 0x1000, b.host_addr()) }.unwrap_err();
        assert!(err.to_string().contains("no free KVM memory slot"), "{err}");
        slots.remove(sa).unwrap();
        assert!(slots.remove(sa).is_err(), "removing twice");
        // KVM refuses an overlapping slot; the slot number is given back.
        // SAFETY: as above.
        let err = unsafe { slots.add(0xd000_0000, 0x1000, a.host_addr()) }.unwrap_err();
        assert!(
            err.to_string().contains("KVM_SET_USER_MEMORY_REGION"),
            "{err}"
        );
        // SAFETY: as above.
        let again = unsafe { slots.add(0xc000_0000, 0x1000, a.host_addr()) }.unwrap();
        assert_eq!(again, 4);
        slots.remove(again).unwrap();
        slots.remove(sb).unwrap();
    }
}
