#!/bin/sh
# L2 program of the rig scenario vnc, second run (rig.l2=vnc-bar): gpu-user-blob (a user-space
# virtio-gpu driver) shows blob 1, painted into six out-of-order ranges of the passed-through
# ivshmem BAR2 (pattern variant 1), and holds it until the key F12 (code 88) is released on the
# virtio keyboard (the stock virtio_input driver and evdev; evdev-watch, scenario vnc-bar-evdev).
# Needs /rig/l2-input-modules.list.
list=/rig/l2-input-modules.list
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$ko" || {
        echo "RIG-RESULT scenario=vnc-bar status=FAIL reason=insmod-failed module=$ko"
        exit 1
    }
done <"$list"
rm -f /tmp/bar-done
evdev-watch --secs 900 --devices 2 --until-key 88 --scenario vnc-bar-evdev &
ev=$!
gpu-user-blob --no-mixed --hold-ms 900000 --hold-until /tmp/bar-done &
gpu=$!
wait "$ev"
: >/tmp/bar-done
wait "$gpu"
echo "RIG-RESULT scenario=vnc-bar status=PASS"
