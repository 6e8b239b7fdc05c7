#!/bin/sh
# vfio-notbound (the error a user sees): `vmm --device vfio=<BDF>` for ivshmem left WITHOUT vfio-pci
# (no driver). The vmm's error message is reported as RIG-DATA vmm_error=<message, spaces as _>.
# Facts only (tests/tests/rig_vfio_notbound.rs judges them: the vmm is to refuse to start, with a
# message that names the BDF and says what is wrong): the device's driver, the vmm's exit code, its
# error message, whether L2 reached its init (marker) and KVM errors (rig_vmm_facts).
# FAIL only when the facts are incomplete: setup (no /dev/kvm, no ivshmem, ivshmem already on
# vfio-pci) or the vmm killed by a signal (e.g. at the timeout).
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
bdf=$(rig_find_pci 1af4 1110) || rig_fail no-ivshmem
drv=none
[ -e "/sys/bus/pci/devices/$bdf/driver" ] && drv=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")
[ "$drv" != vfio-pci ] || rig_fail already-bound bdf="$bdf"
rig_data bdf="$bdf" driver="$drv"

out=/tmp/vmm-vfio-notbound.out
rig_run_vmm 60 "$out" --device "vfio=$bdf" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M
err=$(rig_vmm_error "$out") || err=none
rig_data vmm_exit="$RIG_VMM_RC" vmm_error="$err"
rig_vmm_facts "$out"
rig_report bdf="$bdf" driver="$drv"
