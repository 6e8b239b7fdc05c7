#!/bin/sh
# boot: vmm boots the L2 kernel (Debian's bzImage) to its init (L2-MARKER), which prints where the
# kernel runs (rig.l2=kaslr: its _text address) and reboots. Then two more boots: the same again (the
# vmm's kernel cache was filled by the first) and one with nokaslr.
# Facts only (tests/tests/rig_boot.rs judges them: exit 0, marker seen, no KVM error, a random
# placement): the first boot's vmm exit, KVM errors, L2 marker and boot time (rig_vmm_facts), its
# number of output lines, and per boot N (1..3) textN (L2's _text), loadN (host: the vmm decompressed
# the bzImage, cache: it took it from its kernel cache, guest: the guest's decompressor ran) and exitN.
# FAIL only when the facts are incomplete: no /dev/kvm, or the vmm killed by a signal.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
base="console=ttyS0 noxsave reboot=k panic=-1 quiet rig.l2=kaslr"
facts=""
n=0
for extra in "" "" nokaslr; do
    n=$((n + 1))
    out=/tmp/vmm-boot-$n.out
    RUST_LOG=warn,vmm::boot=debug rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz \
        --initramfs /rig/l2/initramfs.cpio.gz --cmdline "$base $extra" --memory 512M
    text=$(sed -n 's/.*L2-KASLR: text=\([0-9a-f]*\).*/\1/p' "$out" | head -n1)
    load=guest
    grep -q 'decompressed on the host' "$out" && load=host
    grep -q 'unpacked from the kernel cache' "$out" && load=cache
    facts="$facts text$n=${text:-none} load$n=$load exit$n=$RIG_VMM_RC"
    if [ "$n" = 1 ]; then
        rig_vmm_facts "$out"
        first_fields=$RIG_FIELDS first_reason=$RIG_REASON
        lines=$(grep -c . "$out")
    fi
done
RIG_FIELDS="$first_fields$facts" RIG_REASON=$first_reason
rig_report lines="$lines"
