#!/bin/sh
# L1 smoke test: KVM (kvm_amd) is usable and ivshmem (1af4:1110) binds to vfio-pci.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
grep -q '^kvm_amd ' /proc/modules || rig_fail kvm-amd-not-loaded
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node bdf="$bdf" vfio_group="$group"
[ -c /dev/vfio/vfio ] || rig_fail no-vfio-container-node
rig_log "ivshmem $bdf bound to vfio-pci, group $group"
rig_result PASS bdf="$bdf" vfio_group="$group" uptime_s="$(rig_uptime)"
