#!/bin/sh
# vfio-io-bar (run.sh --e1000e): a passed-through device's I/O-port BAR, which cannot be mapped into the
# guest, is trapped by the vmm and forwarded to VFIO. QEMU's e1000e (8086:10d3; BAR2 = 32 ports holding
# the e1000 IOADDR/IODATA window onto the BAR0 registers) is bound to vfio-pci in L1 and passed to L2
# (`--device vfio=<e1000e>`). L2 runs /bin/io-bar (rig.l2=io-bar): 32-bit in/out through IOADDR/IODATA
# compared with the same registers through BAR0 (CTRL, STATUS, RAL0/RAH0), IOADDR read back, and writes
# crossing over (RDBAL0 written by port I/O and read by MMIO, TDBAL the other way). L2's result lines
# are forwarded as RIG-DATA l2_* lines. The vmm's (RUST_LOG=info) per-BAR line gives vmm_io_bar
# (`<index>:<size>` of the BAR it logged as port I/O, trapped), its exit summary vmm_exits_ioaddr and
# vmm_exits_iodata (user-space exits it handled at those two ports; io-bar's sweep makes them the
# busiest ports after COM1, so the summary lists them); L1's sysfs gives l1_io_bar.
# Facts only (tests/tests/rig_vfio_io_bar.rs judges them, e.g. that the exit counts equal io-bar's
# accesses_ioaddr/accesses_iodata): the vmm's exit, KVM errors and L2 marker (rig_vmm_facts), the
# values above and io-bar's result fields.
# FAIL only when the facts are incomplete: setup (no /dev/kvm, no e1000e, not bound to vfio-pci), the
# vmm killed by a signal, or no result line from io-bar.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
rig_find_pci 8086 10d3 >/dev/null || rig_fail no-e1000e-device hint=run.sh_--e1000e
nic=$(rig_bind_vfio 8086 10d3) || rig_fail vfio-bind-failed device=e1000e
nic_group=$(rig_vfio_group "$nic") || rig_fail no-iommu-group bdf="$nic"
# L1's own view of BAR2 (line 3 of sysfs resource: start end flags).
l1_io_bar=$(sed -n 3p "/sys/bus/pci/devices/$nic/resource" | tr ' ' ',')
rig_data e1000e_bdf="$nic" e1000e_group="$nic_group" l1_io_bar="${l1_io_bar:-none}"
export RUST_LOG="${RIG_RUST_LOG:-info}"

out=/tmp/vmm-vfio-io-bar.out
rig_run_vmm 200 "$out" --device "vfio=$nic" \
    --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
    --cmdline "$(rig_l2_cmdline io-bar)" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
vmm_io_bar=$(sed -n 's/.*vfio [^ ]*: BAR \([0-9]*\) I\/O \(0x[0-9a-f]*\) bytes: port I\/O, trapped.*/\1:\2/p' "$out" | head -n1)
set -- vmm_io_bar="${vmm_io_bar:-none}"
for k in io_base mac ioaddr checks sweep accesses_ioaddr accesses_iodata mismatches; do
    v=$(rig_l2_field "$out" io-bar "$k") || v=none
    set -- "$@" "$k=$v"
done
# The vmm's exit summary (`top ports: 0x3f8=N ...`) counts the exits it handled at IOADDR and IODATA.
io_base=$(rig_l2_field "$out" io-bar io_base) || io_base=""
exits_ioaddr=""
exits_iodata=""
case "$io_base" in
0x[0-9a-f]*)
    summary=$(grep -m1 'user-space exits:.*top ports:' "$out")
    p=$(printf '%#x' $((io_base)))
    exits_ioaddr=$(echo "$summary" | sed -n "s/.* $p=\([0-9]*\).*/\1/p")
    p=$(printf '%#x' $((io_base + 4)))
    exits_iodata=$(echo "$summary" | sed -n "s/.* $p=\([0-9]*\).*/\1/p")
    ;;
esac
rig_report e1000e_bdf="$nic" "$@" vmm_exits_ioaddr="${exits_ioaddr:-none}" \
    vmm_exits_iodata="${exits_iodata:-none}"
