#!/bin/sh
# L2 program of the rig scenario gpu-ram-blob ("guest RAM blob"): load the stock virtio-gpu driver,
# then run gpu-kms-blob, which shows a pattern-painted guest blob with KMS. Run with rig.l2=kms-blob;
# extra arguments for gpu-kms-blob may be given as rig.kms=ARG,ARG,... on the L2 kernel command line.
# On Debian's L2 kernel, needs the module closure in the L2 initramfs, listed in load order in /rig/l2-modules.list
# (build.sh adds it, from the module names in l2/modules).
# drm_kms_helper is loaded with fbdev_emulation=0: no fbcon frames are flushed, so the only scanout
# and flushes the device sees are gpu-kms-blob's (one capture frame, and the driver's rate-limited
# device-error messages are not used up by console flushes). rig.kms_fbdev=1 keeps fbdev on.
# On a kernel without modules (run.sh --l2-kernel rig: virtio-gpu built in, no fbdev emulation) there
# is nothing to load.
if [ ! -e /proc/modules ] && [ -d /sys/bus/virtio/drivers/virtio_gpu ]; then
    echo "RIG-DATA scenario=gpu-kms-blob modules=0 loaded=built-in fbdev=0"
else
    list=/rig/l2-modules.list
    if [ ! -s "$list" ]; then
        echo "RIG-RESULT scenario=gpu-kms-blob status=FAIL reason=no-virtio-gpu-modules list=$list"
        exit 1
    fi
    fbdev=0
    # shellcheck disable=SC2013 # the command line is one line of words
    for a in $(cat /proc/cmdline); do
        case "$a" in
            rig.kms_fbdev=1) fbdev=1 ;;
        esac
    done
    while read -r ko; do
        [ -n "$ko" ] || continue
        params=""
        case "${ko##*/}" in
            drm_kms_helper.ko) [ "$fbdev" = 1 ] || params="fbdev_emulation=0" ;;
        esac
        # shellcheck disable=SC2086
        insmod "$ko" $params || {
            echo "RIG-RESULT scenario=gpu-kms-blob status=FAIL reason=insmod-failed module=$ko"
            exit 1
        }
    done <"$list"
    echo "RIG-DATA scenario=gpu-kms-blob modules=$(wc -l <"$list") loaded=yes fbdev=$fbdev"
fi
extra=""
# shellcheck disable=SC2013 # the command line is one line of words
for a in $(cat /proc/cmdline); do
    case "$a" in
        rig.kms=*) extra=$(echo "${a#rig.kms=}" | tr ',' ' ') ;;
    esac
done
# shellcheck disable=SC2086
/bin/gpu-kms-blob $extra
