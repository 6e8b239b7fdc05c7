#!/bin/sh
# dmabuf: vfio-dmabuf against the real kernel in L1.
# ivshmem (1af4:1110) is bound to vfio-pci; /bin/dmabuf-rigtest exports multi-range dma-bufs from
# its BAR2, maps them for the CPU, provokes each error class, and exports a udmabuf.
# Needs the test's shm_fill pattern in the ivshmem backing file (tests/tests/rig_dmabuf.rs).
# Facts only (tests/tests/rig_dmabuf.rs judges them): dmabuf-rigtest's DATA lines become RIG-DATA
# lines; its RESULT line (its own checks' outcome) becomes rigtest_status=PASS|FAIL and rigtest_* fields
# of the RIG-RESULT line, with its exit code (rc).
# FAIL only when the facts are incomplete: setup (no dmabuf-rigtest, ivshmem not bound to vfio-pci,
# no group node) or no RESULT line from dmabuf-rigtest.
. /rig/lib.sh

[ -x /bin/dmabuf-rigtest ] || rig_fail no-dmabuf-rigtest
[ -c /dev/udmabuf ] || rig_log "warning: no /dev/udmabuf"
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
group=$(rig_vfio_group "$bdf") || rig_fail no-iommu-group bdf="$bdf"
[ -c "$group" ] || rig_fail no-vfio-group-node vfio_group="$group"
rig_log "ivshmem $bdf on vfio-pci, group $group"

out=/tmp/dmabuf-rigtest.out
t0=$(rig_uptime)
timeout -s KILL 120 /bin/dmabuf-rigtest --bdf "$bdf" --group "$group" >"$out" 2>&1
rc=$?
t1=$(rig_uptime)
while IFS= read -r line; do
    case "$line" in
        "DATA "*) rig_data ${line#DATA } ;;
        "RESULT "*) ;;
        *) echo "dmabuf-rigtest| $line" ;;
    esac
done <"$out"
res=$(grep '^RESULT ' "$out" | tail -n1)
[ -n "$res" ] || rig_fail no-result rc="$rc"
# "RESULT PASS|FAIL k=v ..." -> rigtest_status=PASS|FAIL rigtest_k=v ...
set -f # values are words: no globbing of e.g. '*'
# shellcheck disable=SC2086 # the words of the RESULT line
set -- ${res#RESULT }
st=$1
shift
fields=""
for w in "$@"; do
    fields="$fields rigtest_$w"
done
# shellcheck disable=SC2086 # k=v words
rig_result PASS rigtest_status="$st" $fields rc="$rc" bdf="$bdf" run_s="$(rig_sub "$t1" "$t0")"
