#!/bin/sh
# boot-thp: how guest RAM's backing and the host's THP settings change the L2 boot. L1 first goes
# back to the stock shmem setting (`shmem_enabled` = never; L1's init sets advise), then boots L2
# three times:
#   anon:       no device: guest RAM is anonymous memory (huge pages with anon THP `madvise`);
#   memfd:      --device gpu=blob: guest RAM is a memfd (udmabuf), shmem THP never: 4 KiB pages;
#   memfd_adv:  the same with shmem_enabled = advise.
# Facts only (tests/tests/rig_boot_thp.rs judges them): per run <case>_exit, <case>_marker,
# <case>_boot_s (vmm start to L2-MARKER), <case>_pf_fixed and <case>_exits (KVM's counters from the
# vmm's exit line); thp_enabled (L1's anon THP setting). RIG-DATA case=<case> lines carry each run's
# rig_vmm_facts.
# FAIL only when the facts are incomplete: no /dev/kvm, or a vmm killed by a signal or timeout.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
shmem=/sys/kernel/mm/transparent_hugepage/shmem_enabled
enabled=$(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled)
fields="thp_enabled=${enabled:-none}"
reason=""
for case in anon memfd memfd_adv; do
    dev=""
    case "$case" in
        anon) echo never >"$shmem" ;;
        memfd) echo never >"$shmem"; dev="--device gpu=blob" ;;
        memfd_adv) echo advise >"$shmem"; dev="--device gpu=blob" ;;
    esac
    out=/tmp/vmm-boot-thp-$case.out
    # shellcheck disable=SC2086 # dev is a list of words
    rig_run_vmm 150 "$out" --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
        --cmdline "console=ttyS0 noxsave reboot=k panic=-1 quiet" --memory 512M $dev
    rig_vmm_facts "$out"
    # shellcheck disable=SC2086 # RIG_FIELDS is a list of k=v words
    rig_data case="$case" shmem="$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$shmem")" $RIG_FIELDS
    [ -n "$reason" ] || reason=$RIG_REASON
    pf=$(sed -n 's/.* pf_fixed=\([0-9]*\).*/\1/p' "$out" | tail -n1)
    exits=$(sed -n 's/.*KVM: exits=\([0-9]*\).*/\1/p' "$out" | tail -n1)
    boot_s=none
    if t=$(rig_line_time 'L2-MARKER' "$out"); then boot_s=$(rig_sub "$t" "$RIG_VMM_T0"); fi
    fields="$fields ${case}_exit=$RIG_VMM_RC ${case}_marker=$(grep -c 'L2-MARKER' "$out")"
    fields="$fields ${case}_boot_s=$boot_s ${case}_pf_fixed=${pf:-none} ${case}_exits=${exits:-none}"
done
echo advise >"$shmem"
RIG_REASON=$reason
RIG_FIELDS=$fields
rig_report
