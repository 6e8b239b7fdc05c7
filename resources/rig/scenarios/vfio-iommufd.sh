#!/bin/sh
# vfio-iommufd (run.sh --l1-kernel iommufd --edu): on build-kernel.sh's kernel (IOMMUFD, VFIO device cdev)
# QEMU's edu (1234:11e8) and ivshmem (1af4:1110) are bound to vfio-pci and passed to L2; the vmm is to
# open both through their device cdevs (/dev/vfio/devices/vfioN) and one IOAS on /dev/iommu (its log:
# "vfio: passthrough devices use iommufd"). L2 runs rig.l2=edu-bar: edu-dma (RAM -> edu -> RAM: guest
# RAM is mapped in the IOAS) then bar-pattern (ivshmem BAR2 both ways with L0; the test fills and
# checks the file).
# Facts only (tests/tests/rig_vfio_iommufd.rs judges them): the vmm's exit, KVM errors and L2 marker
# (rig_vmm_facts), the VFIO back end the vmm logged, how many devices it opened through a cdev, the
# guest RAM it DMA-mapped, and both L2 programs' status.
# FAIL only when the facts are incomplete: setup (wrong L1 kernel, no /dev/kvm or /dev/iommu, a device
# missing, not bound to vfio-pci or without a cdev), the vmm killed by a signal, or no L2 result line.
. /rig/lib.sh

kernel=$(uname -r)
[ "$kernel" != "$(cat /rig/kernel-version)" ] || rig_fail wrong-l1-kernel kernel="$kernel" hint=run.sh_--l1-kernel_iommufd
[ -c /dev/kvm ] || rig_fail no-dev-kvm
[ -c /dev/iommu ] || rig_fail no-dev-iommu
rig_find_pci 1234 11e8 >/dev/null || rig_fail no-edu-device hint=run.sh_--edu
edu=$(rig_bind_vfio 1234 11e8) || rig_fail vfio-bind-failed device=edu
ivs=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed device=ivshmem
for bdf in "$edu" "$ivs"; do
    set -- "/sys/bus/pci/devices/$bdf/vfio-dev"/vfio*
    [ -e "$1" ] || rig_fail no-vfio-cdev bdf="$bdf"
    [ -c "/dev/vfio/devices/${1##*/}" ] || rig_fail no-vfio-cdev-node bdf="$bdf" cdev="${1##*/}"
done
rig_data kernel="$kernel" edu_bdf="$edu" ivshmem_bdf="$ivs"

out=/tmp/vmm-vfio-iommufd.out
rig_run_vmm 240 "$out" --device "vfio=$edu" --device "vfio=$ivs" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline edu-bar)" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2

# The vmm's own account of its VFIO back end (devices::vfio::open, info level).
backend=$(sed -n 's/^[0-9.]* .*vfio: passthrough devices use \(.*\)$/\1/p' "$out" | head -n1)
backend=$(rig_word "${backend:-none}")
opened_cdev=$(grep -c 'vfio [0-9a-f:.]*: opened through /dev/vfio/devices/vfio[0-9]* (iommufd)' "$out")
mapped=$(sed -n 's/^[0-9.]* .*vfio: DMA-mapped \([0-9]*\) MiB of guest RAM via iommufd.*/\1/p' "$out" | head -n1)
edu_status=$(rig_l2_field "$out" edu-dma status) || edu_status=none
bar_status=$(rig_l2_field "$out" bar-pattern status) || bar_status=none
rig_report kernel="$kernel" edu_bdf="$edu" ivshmem_bdf="$ivs" vfio_backend="$backend" \
    opened_cdev="$opened_cdev" dma_mapped_mib="${mapped:-none}" edu_status="$edu_status" \
    bar_status="$bar_status"
