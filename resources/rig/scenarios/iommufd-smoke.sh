#!/bin/sh
# iommufd-smoke (run.sh --l1-kernel iommufd): L1 runs build-kernel.sh's kernel (IOMMUFD, VFIO device cdev,
# KVM and VFIO built in; no modules loaded). Checks: /dev/iommu is a char device; ivshmem (1af4:1110)
# binds to vfio-pci and gets a device cdev (/sys/bus/pci/devices/<bdf>/vfio-dev/vfioN and the char
# device /dev/vfio/devices/vfioN with the same major:minor); the legacy nodes /dev/vfio/vfio and
# /dev/vfio/<group> exist too; kvm_amd is the KVM backend (nested on) and the vmm boots L2 to
# L2-MARKER (as scenario boot does) with exit 0 and no KVM error.
. /rig/lib.sh

# majmin PATH -> "major:minor" of a device node (hex from stat, printed decimal).
majmin() {
    _mm=$(stat -c '%t:%T' "$1" 2>/dev/null) || return 1
    echo "$((0x${_mm%:*})):$((0x${_mm#*:}))"
}

kernel=$(uname -r)
debian=$(cat /rig/kernel-version)
[ "$kernel" != "$debian" ] || rig_fail wrong-l1-kernel kernel="$kernel" hint=run.sh_--l1-kernel_iommufd
rig_data kernel="$kernel" l1_uptime_at_scenario_s="$(rig_uptime)"

[ -c /dev/iommu ] || rig_fail no-dev-iommu
[ -c /dev/kvm ] || rig_fail no-dev-kvm
nested=$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null) || rig_fail no-kvm-amd
case "$nested" in 1 | Y) ;; *) rig_fail kvm-amd-nested-off nested="$nested" ;; esac

bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node bdf="$bdf" vfio_group="$group"
[ -c /dev/vfio/vfio ] || rig_fail no-vfio-container-node bdf="$bdf"
set -- "/sys/bus/pci/devices/$bdf/vfio-dev"/vfio*
[ -e "$1" ] || rig_fail no-vfio-dev-in-sysfs bdf="$bdf"
cdev_name=${1##*/}
cdev=/dev/vfio/devices/$cdev_name
[ -c "$cdev" ] || rig_fail no-vfio-cdev-node bdf="$bdf" cdev="$cdev"
sys_dev=$(cat "$1/dev")
node_dev=$(majmin "$cdev") || rig_fail cdev-stat-failed cdev="$cdev"
[ "$sys_dev" = "$node_dev" ] || rig_fail cdev-numbers-differ cdev="$cdev" sysfs="$sys_dev" node="$node_dev"
rig_data bdf="$bdf" vfio_group="$group" cdev="$cdev" cdev_dev="$node_dev" iommu_dev="$(majmin /dev/iommu)"

out=/tmp/vmm-iommufd-smoke.out
rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M
marker=0
boot_s=none
if t=$(rig_line_time 'L2-MARKER' "$out"); then
    marker=1
    boot_s=$(rig_sub "$t" "$RIG_VMM_T0")
fi
kvm_error=$(rig_kvm_error "$out")

set -- kernel="$kernel" bdf="$bdf" cdev="$cdev" vfio_group="$group" kvm_amd_nested="$nested" marker="$marker" \
    vmm_exit="$RIG_VMM_RC" kvm_error="$kvm_error" l2_boot_s="$boot_s"
if [ "$marker" = 1 ] && [ "$RIG_VMM_RC" = 0 ] && [ "$kvm_error" = 0 ]; then
    rig_result PASS "$@"
elif [ "$RIG_VMM_RC" = 137 ]; then
    rig_result FAIL reason=vmm-timeout "$@"
elif [ "$marker" = 0 ]; then
    rig_result FAIL reason=no-marker "$@"
elif [ "$kvm_error" = 1 ]; then
    rig_result FAIL reason=kvm-error "$@"
else
    rig_result FAIL reason=vmm-exit-nonzero "$@"
fi
