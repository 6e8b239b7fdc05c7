#!/bin/sh
# shellcheck shell=dash
# L2 interrupt modes (rig.l2=irq-modes; L1 scenario vfio-irq): stock drivers of passed-through devices
# must receive interrupts in each mode:
#   msix   e1000e IntMode=2   (QEMU e1000e)                 on PCI-MSIX
#   msi    xhci-pci           (QEMU nec-usb-xhci, msix=off) on PCI-MSI
#   intx   e1000e IntMode=0   (legacy INTx)                 on IO-APIC
# e1000e is not used for MSI: QEMU's e1000e never raises the RXSEQ cause (RXSEQ is not in its IMS mask),
# so the driver's MSI self-test (ICS RXSEQ, 100 ms) fails and it falls back to INTx ("MSI interrupt test
# failed, using legacy interrupt."), natively in L1 as well.
# e1000e: its interface (/sys/bus/pci/drivers/e1000e/<bdf>/net/<if>) is set up; link-up and the driver's
# watchdog (an ICS every 2 s) raise interrupts on `<if>`, `<if>-rx-0`, `<if>-tx-0`.
# xhci: enumerating the USB keyboard behind the controller completes commands and transfers with
# interrupts on `xhci_hcd`.
# Per mode: the counts of the /proc/interrupts lines with those names and their irq chip (PCI-MSIX-<bdf>,
# PCI-MSI-<bdf>, IO-APIC). A mode passes iff interrupts arrived (count > 0) on the chip of that mode, the
# driver did not fall back to another mode and the kernel did not disable the line ("nobody cared").
# Then the driver is unloaded. A missing device fails its mode.
# Output: one `RIG-DATA scenario=irq-modes mode=<m> ...` line per mode, then
#   RIG-RESULT scenario=irq-modes status=PASS|FAIL [reason=<m>-<why>] <m>_irqs=N <m>_type=T <m>_vectors=N ...
S=irq-modes
list=/rig/l2-irq-modules.list
WAIT_CARRIER=${WAIT_CARRIER:-15}
WAIT_IRQS=${WAIT_IRQS:-20}
SETTLE=${SETTLE:-3}

result() { # STATUS FIELDS...
    echo "RIG-RESULT scenario=$S status=$*"
}

[ -s "$list" ] || {
    result "FAIL reason=no-module-list list=$list"
    exit 1
}
# Dependencies (usb-common, usbcore, xhci-hcd), loaded once; the drivers themselves per mode.
while read -r m; do
    case "${m##*/}" in
        '' | e1000e.ko | xhci-pci.ko) continue ;;
    esac
    insmod "$m" || {
        result "FAIL reason=insmod-failed module=$m"
        exit 1
    }
done <"$list"

ncpu=$(grep -c '^processor' /proc/cpuinfo)

# irq_lines NAME -> the /proc/interrupts lines whose action names are NAME or NAME-<queue>, as
# "<count> <chip> <hwirq-type>" (count summed over the CPUs).
irq_lines() {
    awk -v n="$ncpu" -v name="$1" '
        $1 ~ /^[0-9]+:$/ {
            hit = 0
            for (i = n + 4; i <= NF; i++) {
                a = $i; sub(/,$/, "", a)
                if (a == name || index(a, name "-") == 1) hit = 1
            }
            if (!hit) next
            c = 0
            for (i = 2; i <= n + 1; i++) c += $i
            print c, $(n + 2), $(n + 3)
        }' /proc/interrupts
}

# chip_type CHIP -> the chip name without the device suffix (PCI-MSIX-0000:00:03.0 -> PCI-MSIX).
chip_type() {
    case "$1" in
        *PCI-MSIX-*) echo "${1%%PCI-MSIX-*}PCI-MSIX" ;;
        *PCI-MSI-*) echo "${1%%PCI-MSI-*}PCI-MSI" ;;
        *) echo "$1" ;;
    esac
}

status=PASS
reason=""
fields=""

# irq_count NAME -> total of the counts on NAME's /proc/interrupts lines.
irq_count() {
    irq_lines "$1" | awk '{ c += $1 } END { print c + 0 }'
}

# run_mode LABEL KO MODULE PCI-DRIVER IRQ-NAME WANT-TYPE [PARAM...]: loads KO (module MODULE, PCI driver
# PCI-DRIVER) with PARAMs, waits for interrupts on IRQ-NAME (`net`: the NIC's interface, brought up) and
# judges them (see the header).
run_mode() {
    local m="$1" file="$2" mod="$3" drv="$4" name="$5" want="$6" ko why="" bdf=none irqs=0 vectors=0
    local type=none
    local hw=none carrier=none fallback=0 nobody=0 i d c chip h t
    shift 6
    ko=$(grep "/$file\$" "$list")
    dmesg -c >/dev/null 2>&1
    if [ -z "$ko" ]; then
        why=no-module
    elif ! insmod "$ko" "$@"; then
        why=insmod-failed
    else
        for d in /sys/bus/pci/drivers/"$drv"/0000:*; do
            [ -e "$d" ] && bdf=${d##*/} && break
        done
        if [ "$bdf" = none ]; then
            why=no-device
        elif [ "$name" = net ]; then
            name=none
            for d in /sys/bus/pci/drivers/"$drv"/"$bdf"/net/*; do
                [ -e "$d" ] && name=${d##*/} && break
            done
            if [ "$name" = none ]; then
                why=no-interface
            elif ! ip link set "$name" up; then
                why=link-up-failed
            else
                i=0
                while [ "$i" -lt "$WAIT_CARRIER" ]; do
                    [ "$(cat "/sys/class/net/$name/carrier" 2>/dev/null)" = 1 ] && break
                    sleep 1
                    i=$((i + 1))
                done
                carrier=$(cat "/sys/class/net/$name/carrier" 2>/dev/null || echo 0)
            fi
        fi
        if [ -z "$why" ]; then
            i=0
            while [ "$i" -lt "$WAIT_IRQS" ] && [ "$(irq_count "$name")" = 0 ]; do
                sleep 1
                i=$((i + 1))
            done
            sleep "$SETTLE"
            irq_lines "$name" >/tmp/irq-lines
            while read -r c chip h; do
                irqs=$((irqs + c))
                vectors=$((vectors + 1))
                t=$(chip_type "$chip")
                if [ "$type" = none ]; then
                    type=$t
                    hw=$h
                elif [ "$type" != "$t" ]; then
                    type=mixed
                fi
            done </tmp/irq-lines
            sed "s/^/$S: $m: interrupts: /" /tmp/irq-lines
        fi
    fi
    dmesg >/tmp/irq-dmesg 2>/dev/null
    grep -i -E "$drv|$mod|irq|msi|intx|usb" /tmp/irq-dmesg | head -n 25 | sed "s/^/$S: $m: dmesg: /"
    fallback=$(grep -c -E 'Falling back to|MSI interrupt test failed' /tmp/irq-dmesg)
    nobody=$(grep -c -E 'nobody cared|Disabling IRQ' /tmp/irq-dmesg)
    if [ -z "$why" ]; then
        if [ "$fallback" != 0 ]; then
            why=fallback
        elif [ "$nobody" != 0 ]; then
            why=irq-disabled
        elif [ "$irqs" = 0 ]; then
            why=no-irqs
        elif [ "$type" != "$want" ]; then
            why=wrong-type
        fi
    fi
    echo "RIG-DATA scenario=$S mode=$m driver=$mod params=$(echo "${*:-none}" | tr ' ' ',') bdf=$bdf name=$name carrier=$carrier irqs=$irqs vectors=$vectors type=$type hw=$hw fallback=$fallback nobody_cared=$nobody ok=$([ -z "$why" ] && echo 1 || echo 0)${why:+ why=$why}"
    fields="$fields ${m}_irqs=$irqs ${m}_type=$type ${m}_vectors=$vectors"
    if [ -n "$why" ]; then
        status=FAIL
        [ -n "$reason" ] || reason=$m-$why
    fi
    [ "$carrier" = none ] || ip link set "$name" down 2>/dev/null
    if grep -q "^$mod " /proc/modules && ! rmmod "$mod"; then
        status=FAIL
        [ -n "$reason" ] || reason=$m-rmmod-failed
    fi
}

run_mode msix e1000e.ko e1000e e1000e net PCI-MSIX IntMode=2
run_mode msi xhci-pci.ko xhci_pci xhci_hcd xhci_hcd PCI-MSI
run_mode intx e1000e.ko e1000e e1000e net IO-APIC IntMode=0

result "$status${reason:+ reason=$reason}$fields"
[ "$status" = PASS ]
