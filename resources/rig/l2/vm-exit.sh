#!/bin/sh
# L2 program of the rig scenario vm-exit: loads the stock pvpanic-pci driver (the closure listed in
# /rig/l2-pvpanic-modules.list), prints whether it bound to a device, and with rig.vmexit=panic on
# the kernel command line panics the kernel (sysrq c). Without rig.vmexit=panic it returns and
# l2/init reboots as usual.
list=/rig/l2-pvpanic-modules.list
loaded=1
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$ko" || loaded=0
done <"$list"
[ -s "$list" ] || loaded=0
bound=0
for d in /sys/bus/pci/drivers/pvpanic-pci/0000:*; do
    [ -e "$d" ] && bound=1
done
echo "L2-PVPANIC: loaded=$loaded bound=$bound"
# shellcheck disable=SC2013 # the command line is one line of words
for a in $(cat /proc/cmdline); do
    case "$a" in
        rig.vmexit=panic)
            echo "L2-PVPANIC: panicking"
            echo c >/proc/sysrq-trigger
            ;;
    esac
done
