#!/bin/sh
# iommufd-smoke (run.sh --l1-kernel iommufd): L1 runs build-kernel.sh's kernel (IOMMUFD, VFIO device cdev,
# KVM and VFIO built in; no modules loaded). Reports: whether /dev/iommu is a char device
# (dev_iommu=0|1); ivshmem (1af4:1110) bound to vfio-pci, its device cdev (cdev=<the sysfs
# /sys/bus/pci/devices/<bdf>/vfio-dev/vfioN as /dev/vfio/devices/vfioN, or none>, cdev_node=0|1: that
# path is a char device, cdev_sysfs_dev and cdev_dev: major:minor in sysfs and of the node); whether the
# legacy nodes /dev/vfio/vfio and /dev/vfio/<group> are char devices (vfio_container_node,
# vfio_group_node); kvm_amd's nested parameter (kvm_amd_nested, none without kvm_amd); and the facts of
# a vmm boot of L2 (rig_vmm_facts: exit, KVM errors, L2-MARKER, as scenario boot does).
# Facts only (tests/tests/rig_iommufd_smoke.rs judges them).
# FAIL only when the facts are incomplete: L1 runs Debian's kernel, no /dev/kvm, ivshmem did not bind
# to vfio-pci or has no IOMMU group, or the vmm was killed by a signal.
. /rig/lib.sh

# majmin PATH -> "major:minor" of a device node (hex from stat, printed decimal).
majmin() {
    _mm=$(stat -c '%t:%T' "$1" 2>/dev/null) || return 1
    echo "$((0x${_mm%:*})):$((0x${_mm#*:}))"
}

# is_chr PATH -> 1 if PATH is a character device, else 0.
is_chr() {
    if [ -c "$1" ]; then echo 1; else echo 0; fi
}

kernel=$(uname -r)
debian=$(cat /rig/kernel-version)
[ "$kernel" != "$debian" ] || rig_fail wrong-l1-kernel kernel="$kernel" hint=run.sh_--l1-kernel_iommufd
rig_data kernel="$kernel" l1_uptime_at_scenario_s="$(rig_uptime)"

[ -c /dev/kvm ] || rig_fail no-dev-kvm
dev_iommu=$(is_chr /dev/iommu)
nested=$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null) || nested=none

bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
group_node=$(is_chr "$group")
container_node=$(is_chr /dev/vfio/vfio)
cdev=none
cdev_node=0
sys_dev=none
node_dev=none
set -- "/sys/bus/pci/devices/$bdf/vfio-dev"/vfio*
if [ -e "$1" ]; then
    cdev=/dev/vfio/devices/${1##*/}
    cdev_node=$(is_chr "$cdev")
    sys_dev=$(cat "$1/dev" 2>/dev/null) || sys_dev=none
    node_dev=$(majmin "$cdev") || node_dev=none
fi
iommu_dev=$(majmin /dev/iommu) || iommu_dev=none
rig_data bdf="$bdf" vfio_group="$group" cdev="$cdev" cdev_dev="$node_dev" iommu_dev="$iommu_dev"

out=/tmp/vmm-iommufd-smoke.out
rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M
rig_vmm_facts "$out"
rig_report kernel="$kernel" dev_iommu="$dev_iommu" bdf="$bdf" vfio_group="$group" \
    vfio_group_node="$group_node" vfio_container_node="$container_node" cdev="$cdev" \
    cdev_node="$cdev_node" cdev_sysfs_dev="$sys_dev" cdev_dev="$node_dev" kvm_amd_nested="$nested"
