#!/bin/sh
# L2 program of the rig scenario vnc (rig.l2=vnc): the stock virtio-gpu driver shows a KMS blob
# framebuffer in guest RAM, twice in two modes, while the stock virtio-input driver delivers the
# VNC clients' keys and pointer to evdev. Steps, each ended by the key F12 (code 88) released:
#   1. gpu-kms-blob --mode 1280x800 (scenario vnc-kms-1) shows pattern variant 0 and holds it;
#      evdev-watch (scenario vnc-evdev-1) prints every event of the keyboard and the tablet;
#   2. gpu-kms-blob --mode 1024x768 (scenario vnc-kms-2): a mode change, then 200 flushes of the
#      whole screen; evdev-watch (scenario vnc-evdev-2) until F12 again;
#   3. the same as 2 with a new framebuffer (scenario vnc-kms-3, vnc-evdev-3): the scenario has
#      opened its load of VNC connections meanwhile.
# Each gpu-kms-blob holds its framebuffer until the step's F12 (--hold-until a file this script
# creates when evdev-watch stopped), at most 900 s. Lines: the programs' RIG-DATA/RIG-RESULT lines
# and EVDEV lines; `RIG-DATA scenario=vnc-l2 step=<n> ...` between the steps.
# Needs the module closures in /rig/l2-modules.list (virtio-gpu) and /rig/l2-input-modules.list.
say() { echo "RIG-DATA scenario=vnc-l2 $*"; }
load() {
    while read -r ko; do
        [ -n "$ko" ] || continue
        name=$(basename "$ko" .ko | tr '-' '_')
        grep -q "^$name " /proc/modules && continue
        params=""
        [ "$name" = drm_kms_helper ] && params="fbdev_emulation=0"
        # shellcheck disable=SC2086
        insmod "$ko" $params || {
            echo "RIG-RESULT scenario=vnc-l2 status=FAIL reason=insmod-failed module=$ko"
            exit 1
        }
    done <"$1"
}
for list in /rig/l2-modules.list /rig/l2-input-modules.list; do
    [ -s "$list" ] || {
        echo "RIG-RESULT scenario=vnc-l2 status=FAIL reason=no-module-list list=$list"
        exit 1
    }
    load "$list"
done
say modules=loaded

step() {
    n=$1 mode=$2 extra=$3
    rm -f "/tmp/step$n"
    evdev-watch --secs 900 --devices 2 --until-key 88 --scenario "vnc-evdev-$n" &
    ev=$!
    # shellcheck disable=SC2086
    gpu-kms-blob --mode "$mode" --hold-ms 900000 --hold-until "/tmp/step$n" \
        --scenario "vnc-kms-$n" $extra &
    kms=$!
    wait "$ev"
    : >"/tmp/step$n"
    wait "$kms"
    say step="$n" done=1
}
step 1 1280x800 ""
step 2 1024x768 "--flushes 200"
step 3 1024x768 "--flushes 200"
echo "RIG-RESULT scenario=vnc-l2 status=PASS steps=3"
