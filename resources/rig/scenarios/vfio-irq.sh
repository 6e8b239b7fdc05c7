#!/bin/sh
# vfio-irq (run.sh --e1000e --xhci): interrupts of passed-through PCI devices reach L2 in every mode.
# QEMU's e1000e NIC (8086:10d3; MSI-X with 5 vectors, MSI, INTx) and a nec-usb-xhci USB controller
# (1033:0194; MSI only, a USB keyboard behind it) are bound to vfio-pci in L1 and passed to L2
# (`--device vfio=<e1000e> --device vfio=<xhci>`). L2 runs rig.l2=irq-modes: stock drivers count the
# interrupts that reach them in /proc/interrupts, per mode: MSI-X (e1000e IntMode=2), MSI (xhci-pci),
# legacy INTx (e1000e IntMode=0), checking the irq chip and that the driver did not fall back (e1000e
# cannot show MSI on QEMU: see l2/irq-modes.sh). L2's result lines are forwarded as RIG-DATA l2_* lines;
# the vmm's (RUST_LOG=info) `interrupts A -> B` lines give vmm_msix/vmm_msi/vmm_intx (how often it
# switched a device to that mode).
# Facts only (tests/tests/rig_vfio_irq.rs judges them): the vmm's exit, KVM errors and L2 marker
# (rig_vmm_facts), those counts, and irq-modes' per-mode interrupt counts and irq chips.
# FAIL only when the facts are incomplete: setup (no /dev/kvm, a device missing or not bound to
# vfio-pci), the vmm killed by a signal, or no result line from irq-modes.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
rig_find_pci 8086 10d3 >/dev/null || rig_fail no-e1000e-device hint=run.sh_--e1000e
rig_find_pci 1033 0194 >/dev/null || rig_fail no-xhci-device hint=run.sh_--xhci
nic=$(rig_bind_vfio 8086 10d3) || rig_fail vfio-bind-failed device=e1000e
xhci=$(rig_bind_vfio 1033 0194) || rig_fail vfio-bind-failed device=xhci
nic_group=$(rig_vfio_group "$nic") || rig_fail no-iommu-group bdf="$nic"
xhci_group=$(rig_vfio_group "$xhci") || rig_fail no-iommu-group bdf="$xhci"
rig_data e1000e_bdf="$nic" e1000e_group="$nic_group" xhci_bdf="$xhci" xhci_group="$xhci_group"
export RUST_LOG="${RIG_RUST_LOG:-info}"

out=/tmp/vmm-vfio-irq.out
rig_run_vmm 300 "$out" --device "vfio=$nic" --device "vfio=$xhci" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline irq-modes)" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
vmm_msix=$(grep -c 'interrupts [A-Za-z0-9()]* -> Msix(' "$out")
vmm_msi=$(grep -c 'interrupts [A-Za-z0-9()]* -> Msi(' "$out")
vmm_intx=$(grep -c 'interrupts [A-Za-z0-9()]* -> Intx,' "$out")
set -- vmm_msix="$vmm_msix" vmm_msi="$vmm_msi" vmm_intx="$vmm_intx"
for m in msix msi intx; do
    for k in irqs type; do
        v=$(rig_l2_field "$out" irq-modes "${m}_$k") || v=none
        set -- "$@" "${m}_$k=$v"
    done
done
rig_report "$@"
