#!/bin/sh
# L2 program of the rig scenario vm-power; what it does comes from rig.power=<mode> on the kernel
# command line:
#   poweroff  powers off at once (`poweroff -f`: the kernel's ACPI S5);
#   acpid     loads the ACPI button driver and evdev (/rig/l2-power-modules.list), has busybox's
#             acpid run /etc/acpi/PWRF/00000080 on the power button (which powers off), says
#             "L2-POWER: ready" and waits;
#   ignore    says "L2-POWER: ready" and waits, with no driver for the power button.
# A guest that waits sleeps 300 s, then returns (l2/init reboots): the scenario's vmm timeout ends
# it long before that.
mode=none
# shellcheck disable=SC2013 # the command line is one line of words
for a in $(cat /proc/cmdline); do
    case "$a" in
        rig.power=*) mode=${a#rig.power=} ;;
    esac
done
case "$mode" in
    poweroff)
        echo "L2-POWER: powering off"
        poweroff -f
        ;;
    acpid)
        loaded=1
        while read -r ko; do
            [ -n "$ko" ] || continue
            insmod "$ko" || loaded=0
        done </rig/l2-power-modules.list
        button=0
        grep -qx 'Power Button' /sys/class/input/input*/name 2>/dev/null && button=1
        mkdir -p /etc/acpi/PWRF
        cat >/etc/acpi/PWRF/00000080 <<'EOT'
#!/bin/sh
echo "L2-POWER: acpid: power button pressed, powering off"
poweroff -f
EOT
        chmod 755 /etc/acpi/PWRF/00000080
        acpid -d -c /etc/acpi &
        # acpid opens the event devices as it starts.
        sleep 1
        echo "L2-POWER: ready mode=acpid loaded=$loaded button=$button"
        sleep 300
        ;;
    ignore)
        echo "L2-POWER: ready mode=ignore"
        sleep 300
        ;;
    *)
        echo "L2-POWER: unknown mode $mode"
        ;;
esac
