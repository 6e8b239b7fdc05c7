#!/bin/sh
# boot: vmm boots the L2 kernel (Debian's bzImage) to its init (L2-MARKER), which prints how it was
# started (rig.l2=boot-facts: _text, the e820 map, the command line's checksum, the initramfs size,
# its root file system's checksum, the extra archives' marker files) and reboots. Then six more boots: the same again (the vmm's kernel cache was filled by the
# first), one with nokaslr, one with --decompress guest (the kernel's own decompressors), one
# with --pci-config io (the configuration ports instead of the ECAM window), and two with an
# initramfs of three archives (uncompressed, gzip, zstd; unpacked by the vmm, then by the guest).
# Facts only (tests/tests/rig_boot.rs judges them: exit 0, marker seen, no KVM error, a random
# placement, the same map, command line and root file system either way): the first boot's vmm exit, KVM
# errors, L2 marker and boot time (rig_vmm_facts), its number of output lines, and per boot N (1..7)
# textN (L2's _text), e820N, cmdlineN, initrdN, rootfsN, layersN, pcicfgN, pcidevsN, loadN (host: the vmm
# decompressed the bzImage, cache: it took it from its kernel cache, guest: the guest's
# decompressor ran), initramfsN (host: the vmm decompressed the initramfs's archives, cache: it
# took them from its cache, given: the guest got the file as it is) and exitN.
# FAIL only when the facts are incomplete: no /dev/kvm, or the vmm killed by a signal.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
base="console=ttyS0 noxsave reboot=k panic=-1 quiet rig.l2=boot-facts"
facts=""
n=0
# An initramfs of three archives: uncompressed, gzip (the L2 initramfs), zstd.
multi=/tmp/initramfs-multi.img
cat /rig/l2/early.cpio /rig/l2/initramfs.cpio.gz /rig/l2/extra.cpio.zst >"$multi"
for how in host host nokaslr guest pciio multi multiguest; do
    n=$((n + 1))
    out=/tmp/vmm-boot-$n.out
    cmdline=$base decompress=host pcicfg=ecam initramfs=/rig/l2/initramfs.cpio.gz
    [ "$how" = nokaslr ] && cmdline="$base nokaslr"
    [ "$how" = guest ] && decompress=guest
    [ "$how" = pciio ] && pcicfg=io
    [ "$how" = multi ] && initramfs=$multi
    [ "$how" = multiguest ] && initramfs=$multi decompress=guest
    RUST_LOG=warn,vmm::boot=debug rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz \
        --initramfs "$initramfs" --cmdline "$cmdline" --memory 512M \
        --decompress "$decompress" --pci-config "$pcicfg"
    f=$(grep -m1 'L2-BOOT-FACTS:' "$out" | tr -d '\r')
    for k in text e820 cmdline initrd rootfs layers pcicfg pcidevs; do
        v=$(echo "$f" | tr ' ' '\n' | sed -n "s/^$k=//p")
        facts="$facts $k$n=${v:-none}"
    done
    load=guest
    grep -q 'payload decompressed on the host' "$out" && load=host
    grep -q 'payload unpacked from the kernel cache' "$out" && load=cache
    initramfs=given
    grep -q 'initramfs .*: archives decompressed on the host' "$out" && initramfs=host
    grep -q 'initramfs .*: archives unpacked, from the kernel cache' "$out" && initramfs=cache
    facts="$facts load$n=$load initramfs$n=$initramfs exit$n=$RIG_VMM_RC"
    if [ "$n" = 1 ]; then
        rig_vmm_facts "$out"
        first_fields=$RIG_FIELDS first_reason=$RIG_REASON
        lines=$(grep -c . "$out")
    fi
done
RIG_FIELDS="$first_fields$facts" RIG_REASON=$first_reason
rig_report lines="$lines"
