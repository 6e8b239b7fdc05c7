#!/bin/sh
# rig.l2=boot-facts: how this kernel was started. text: _text, the kernel's first address
# (0xffffffff81000000, its link address, unless it was placed at random); e820: the memory map it
# was given (/sys/firmware/memmap, start-end-type per entry); cmdline: its command line's checksum;
# initrd: the initramfs size it freed (from its log); rootfs: a checksum of the root file system
# unpacked from the initramfs (every entry's type, mode, owner and name, the size and modification
# time of all but directories, whose times change as the kernel fills them, and every regular
# file's contents; without the mount points /proc, /sys, /dev and /tmp); layers: the marker files
# of boot's extra archives found (early, extra, joined by +, or none); pcicfg: how it reaches PCI configuration
# space (ecam: it claimed an MCFG window, /proc/iomem "PCI ECAM"; conf1: it claimed the ports
# 0xCF8, /proc/ioports "PCI conf1"; both joined by +, or none); pcidevs: the PCI functions it
# found (address=vendor:device, comma-separated). grep -m1 stops early in /proc/kallsyms.
text=$(grep -m1 ' _text$' /proc/kallsyms | cut -d' ' -f1)
e820=""
for d in $(ls -d /sys/firmware/memmap/* 2>/dev/null | sort -t/ -k5 -n); do
    e820="$e820$(cat "$d/start")-$(cat "$d/end")-$(tr ' ' _ <"$d/type"),"
done
sum=$(md5sum </proc/cmdline | cut -d' ' -f1)
initrd=$(dmesg | sed -n 's/.*Freeing initrd memory: \([0-9]*K\).*/\1/p' | head -n1)
mounts='( -path /proc -o -path /sys -o -path /dev -o -path /tmp ) -prune -o'
# shellcheck disable=SC2086 # $mounts is a list of words
rootfs=$({
    find / -xdev $mounts -type d -print | sort | xargs stat -c '%F %a %u %g %N'
    find / -xdev $mounts ! -type d -print | sort | xargs stat -c '%F %a %u %g %s %Y %N'
    find / -xdev -type f | sort | xargs md5sum
} | md5sum | cut -d' ' -f1)
pcicfg=""
grep -q 'PCI ECAM' /proc/iomem && pcicfg=ecam
grep -q 'PCI conf1' /proc/ioports && pcicfg="${pcicfg:+$pcicfg+}conf1"
pcidevs=""
for d in /sys/bus/pci/devices/*; do
    [ -e "$d/vendor" ] || continue
    v=$(cat "$d/vendor") i=$(cat "$d/device")
    pcidevs="$pcidevs${pcidevs:+,}${d##*/}=${v#0x}:${i#0x}"
done
layers=""
[ -f /rig-early/marker ] && layers=early
[ -f /rig-extra/marker ] && layers="${layers:+$layers+}extra"
echo "L2-BOOT-FACTS: text=${text:-none} e820=${e820:-none} cmdline=$sum initrd=${initrd:-none} rootfs=$rootfs layers=${layers:-none} pcicfg=${pcicfg:-none} pcidevs=${pcidevs:-none}"
