#!/bin/sh
# L1 smoke test: KVM (kvm_amd) is usable and ivshmem (1af4:1110) binds to vfio-pci.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
grep -q '^kvm_amd ' /proc/modules || rig_fail kvm-amd-not-loaded
# Shared-memory round trip through ivshmem BAR2 (before vfio-pci owns it): read the word L0 put at
# offset 0, write 0x52494721 at offset 4 for L0 to check.
ivbdf=$(rig_find_pci 1af4 1110) || rig_fail no-ivshmem
bar2=$(sed -n 3p "/sys/bus/pci/devices/$ivbdf/resource" | cut -d' ' -f1)
word0=$(devmem "$bar2" 32) || rig_fail devmem-read-failed bar2="$bar2"
devmem $((bar2 + 4)) 32 0x52494721 || rig_fail devmem-write-failed bar2="$bar2"
rig_data bar2="$bar2" shm_word0="$word0"

bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node bdf="$bdf" vfio_group="$group"
[ -c /dev/vfio/vfio ] || rig_fail no-vfio-container-node
rig_log "ivshmem $bdf bound to vfio-pci, group $group"
rig_result PASS bdf="$bdf" vfio_group="$group" shm_word0="$word0" uptime_s="$(rig_uptime)"
