#!/usr/bin/env bash
# The demo: the "BAR blob" case (rig scenario gpu-bar-blob) in the nested rig (QEMU/TCG -> Linux L1
# with KVM and VFIO -> our vmm -> Linux L2). L1 passes the ivshmem device through to L2 with
# `vmm --device vfio=<BDF>,gpu=blob --display capture=...`; L2's user-space virtio-gpu driver paints a
# blob into six out-of-order ranges of the passed-through BAR and shows it (exported zero-copy as one
# VFIO dma-buf), then a blob spanning guest RAM and the BAR (CPU path).
# Installs what it needs first (Debian packages, as root); downloads are cached under target/.
# Shows the console (without the base64 of the PNGs that L1 sends back: the console log keeps it),
# saves the captured PNGs in target/rig/demo/ and checks each one pixel for pixel against the image L2
# painted (rig-tests' check-frames). Exit status 0 iff the scenario reported its facts and every frame
# is correct. (The full set of checks, including the dma-buf export and the ivshmem file:
# cargo test -p rig-tests --features rig --test rig_gpu_bar_blob.)
set -euo pipefail
cd "$(dirname "$0")/.."

# QEMU's time limit: the one tests/tests/rig_gpu_bar_blob.rs gives the scenario (tests/tests/demo.rs
# checks that they agree).
timeout=480
log=target/rig/logs/gpu-bar-blob.log
demo=target/rig/demo
start=$(date +%s)
step() { printf '\n== %s (+%ss)\n' "$*" "$(($(date +%s) - start))"; }

# The console, readable, line by line as it comes: each file's base64 becomes one line, terminal
# control sequences go (SeaBIOS resets the terminal and turns line wrapping off), and so do QEMU's
# warnings about the CPU features that TCG does not emulate. The log keeps everything.
show_console() {
    local line file=0 n=0
    shopt -s extglob
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line//$'\r'/}
        line=${line//$'\e'\[*([0-9;?])[A-Za-z]/}
        line=${line//$'\e'?/}
        case "$line" in
            "qemu-system-x86_64: warning: TCG doesn't support requested feature"*) continue ;;
            "RIG-FILE-BEGIN "*) file=1 n=0 ;;
            "RIG-FILE-END "*) file=0 && echo "($n lines of base64)" ;;
            *) [ "$file" = 0 ] || { n=$((n + 1)) && continue; } ;;
        esac
        printf '%s\n' "$line"
    done
}

step "installing the rig's packages"
bash resources/rig/setup.sh
step "building the vmm, the guest programs and the rig images"
bash resources/rig/build.sh
cargo build -q --locked -p rig-tests --bin check-frames

step "running scenario gpu-bar-blob (QEMU/TCG, at most ${timeout}s)"
status=0
bash resources/rig/run.sh gpu-bar-blob --timeout "$timeout" 2>&1 | show_console || status=$?

step "frames the vmm captured, saved in $demo/"
rm -f "$demo"/*.png
frames=ok
bash resources/rig/extract-files.sh "$log" "$demo" >/dev/null || frames=incomplete
set -- "$demo"/frame-*.png
if [ -e "$1" ]; then
    cargo run -q --locked -p rig-tests --bin check-frames -- "$@" || frames=wrong
else
    echo "no frame reached L0"
    frames=missing
fi
echo "console log (all of it, with the PNGs' base64): $log"

took=$(($(date +%s) - start))
if [ "$status" = 0 ] && [ "$frames" = ok ]; then
    echo "demo: PASS in ${took}s: $# frame(s) in $demo/, each pixel for pixel the image L2 painted"
    exit 0
fi
echo "demo: FAIL in ${took}s: scenario exit $status (run.sh: 1 FAIL, 3 no result), frames $frames"
exit 1
