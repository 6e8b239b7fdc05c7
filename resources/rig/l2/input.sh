#!/bin/sh
# L2 program rig.l2=input: loads the stock virtio-input driver and evdev (the closure listed in
# /rig/l2-input-modules.list), says "L2-INPUT: loaded=<0|1> virtio_input=<devices bound>", then runs
# evdev-watch in the foreground with the options of rig.evdev=k=v,flag,... on the kernel command line
# (e.g. rig.evdev=secs=30,count=4,no-syn: see resources/guest-tools/src/bin/evdev-watch.rs). It
# prints EVDEV-DEVICE lines and `EVDEV-READY devices=<n>` once its devices are open (what a
# scenario waits for before it sends input), one `EVDEV ...` line per event and its RIG-RESULT line
# (scenario=evdev-watch). Then l2/init reboots.
list=/rig/l2-input-modules.list
loaded=1
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$ko" || loaded=0
done <"$list"
[ -s "$list" ] || loaded=0
bound=0
for d in /sys/bus/virtio/drivers/virtio_input/virtio*; do
    [ -e "$d" ] && bound=$((bound + 1))
done
echo "L2-INPUT: loaded=$loaded virtio_input=$bound"
exec evdev-watch --from-cmdline
