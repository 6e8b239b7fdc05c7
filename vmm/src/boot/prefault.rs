//! `KVM_PRE_FAULT_MEMORY` (Linux 6.10+): maps guest ranges into KVM's stage-2 page tables before
//! the guest runs, so that its first touches of them cost no exit. Worth it for guest RAM without
//! huge pages (a memfd on a host whose shmem THP is off: one exit per 4 KiB page otherwise) and for
//! ranges the guest is sure to touch at once: the kernel's boot footprint and the initramfs, which
//! the VMM has just written (so no new host memory is used for most of them).

use kvm_bindings::{kvm_pre_fault_memory, KVMIO, KVM_CAP_PRE_FAULT_MEMORY};
use kvm_ioctls::{VcpuFd, VmFd};
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::ioctl_iowr_nr;

ioctl_iowr_nr!(KVM_PRE_FAULT_MEMORY, KVMIO, 0xd5, kvm_pre_fault_memory);

/// Pre-faults `ranges` (guest-physical start, length) through `vcpu` if `vm`'s KVM can. Returns
/// the bytes mapped, `None` when KVM lacks `KVM_CAP_PRE_FAULT_MEMORY`. A range KVM refuses (not
/// RAM, say) stops that range only: this is an optimisation, never an error.
pub fn prefault(vm: &VmFd, vcpu: &VcpuFd, ranges: &[(u64, u64)]) -> Option<u64> {
    if vm.check_extension_raw(KVM_CAP_PRE_FAULT_MEMORY.into()) <= 0 {
        return None;
    }
    let mut done = 0;
    for &(start, len) in ranges {
        let mut req = kvm_pre_fault_memory {
            gpa: start & !0xfff,
            size: (start + len).next_multiple_of(0x1000) - (start & !0xfff),
            ..Default::default()
        };
        let before = req.size;
        while req.size > 0 {
            // SAFETY: KVM_PRE_FAULT_MEMORY reads and updates the `kvm_pre_fault_memory` it is
            // given (gpa and size advance over what was mapped); `req` is a live, correctly sized
            // struct for the whole call, and `vcpu` is a valid vCPU fd.
            let ret = unsafe { ioctl_with_mut_ref(vcpu, KVM_PRE_FAULT_MEMORY(), &mut req) };
            if ret < 0 {
                let e = errno::Error::last();
                if matches!(e.errno(), libc::EINTR | libc::EAGAIN) {
                    continue;
                }
                log::debug!(
                    "KVM_PRE_FAULT_MEMORY at {:#x} ({} bytes left): {e}",
                    req.gpa,
                    req.size
                );
                break;
            }
        }
        done += before - req.size;
    }
    Some(done)
}
