#!/bin/sh
# boot-bench: the boot benchmark (run.sh --bench: L1 has this machine's QEMU under /opt/qemu). For
# each L1 shmem THP setting (never, Debian's default; advise) it boots the same L2 kernel, initramfs
# and command line RUNS times each (3, or N with rig.bench_runs=N on L1's command line, e.g.
# RIG_L1_APPEND=rig.bench_runs=7), alternating: QEMU `-M microvm` with KVM, our vmm (no device:
# anonymous guest RAM; it decompresses the bzImage and the initramfs itself), the same with
# `--decompress guest` (vmmbz: the guest's decompressors) and our vmm with `--device gpu=blob` (memfd guest RAM);
# 512 MiB, 1 vCPU. In the never setting also vmmio: our vmm with `--pci-config io` (the
# configuration ports instead of the ECAM window).
# With the rig's ivshmem bound to vfio-pci, also vmmvfio: `--device vfio=<ivshmem>,gpu=blob` (memfd
# guest RAM, DMA-mapped before the guest runs; dma_ms is that mapping). A third setting, hugetlb
# (shmem THP never, 264 2 MiB hugetlb pages reserved), boots QEMU and the memfd-backed vmms only. Per VMM and setting: the median of the runs of
#   boot_s   VMM start to L2's init marker (L1 clock);
#   kern_s   the L2 kernel's own clock at that marker (it starts after the decompressor);
#   pre_s    boot_s - kern_s: VMM set-up, kernel load, the decompressor and early boot;
# for our vmm also setup_ms (its own set-up, from its debug line), load_ms (the kernel and
# initramfs load in it, decompression included; per run kernel_cache and initramfs_cache say
# whether the unpacked kernel and initramfs came from the vmm's kernel cache), ram (how guest RAM
# was backed) and the KVM counters of its exit line (exits pf_fixed io_exits mmio_exits
# insn_emulation halt_exits, last run). ratio = vmm / qemu.
# One boot of our vmm comes first and is in no median: it fills the kernel cache, so that every
# timed run of a host-decompressing vmm loads the kernel and the initramfs from it, as every boot
# after a user's first does (first_boot_s, first_setup_ms, first_load_ms, first_kernel_cache and
# first_initramfs_cache report that boot).
# Facts only (tests/tests/rig_boot_bench.rs prints them); RIG-DATA lines carry every run.
# FAIL only when the facts are incomplete: no /dev/kvm, no QEMU in L1, or a run without its marker.
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
[ -x /opt/qemu/qemu ] || rig_fail no-qemu-in-l1 hint=run.sh_--bench
RUNS=3
for a in $(cat /proc/cmdline); do
    case "$a" in
        rig.bench_runs=*) RUNS=${a#rig.bench_runs=} ;;
    esac
done
case "$RUNS" in '' | *[!0-9]* | 0*) rig_fail bad-bench-runs runs="$RUNS" ;; esac
shmem=/sys/kernel/mm/transparent_hugepage/shmem_enabled
base="console=ttyS0 noxsave panic=-1 quiet"
fields="runs=$RUNS qemu=$(rig_word "$(/opt/qemu/qemu --version | head -n1)")"
reason=""

# median of the words given (numbers)
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "none") }'; }
# ratio A B -> A / B with two decimals, or none unless both are numbers above 0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a > 0 && b > 0) printf "%.2f", a / b; else print "none" }'; }
# stat NAME OUT -> KVM counter NAME from the vmm's exit line in OUT
kvm_stat() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" "$2" | tail -n1; }

# run_facts OUT NAME -> sets boot kern pre setup load kcache icache from a run's output OUT (none or
# empty where a fact is missing); a run without L2's marker sets `reason` (no-marker-NAME) unless
# it is set.
run_facts() {
    boot=none kern=none pre=none
    if t=$(rig_line_time 'L2-MARKER' "$1"); then
        boot=$(rig_sub "$t" "$RIG_VMM_T0")
        kern=$(sed -n 's/.*L2-MARKER: .* uptime=\([0-9.]*\).*/\1/p' "$1" | head -n1)
        [ -n "$kern" ] && pre=$(rig_sub "$boot" "$kern") || kern=none
    else
        [ -n "$reason" ] || reason=no-marker-$2
    fi
    setup=$(sed -n 's/.*vmm: set up in \([0-9.]*\) ms.*/\1/p' "$1" | head -n1)
    load=$(sed -n 's/.*vmm: set up in .*, kernel \([0-9.]*\) ms,.*/\1/p' "$1" | head -n1)
    kcache=none icache=none
    grep -q 'payload decompressed on the host' "$1" && kcache=miss
    grep -q 'payload unpacked from the kernel cache' "$1" && kcache=hit
    grep -q 'initramfs .*: archives decompressed on the host' "$1" && icache=miss
    grep -q 'initramfs .*: archives unpacked, from the kernel cache' "$1" && icache=hit
    return 0
}

# bench_boot VMM OUT -> one boot of VMM (qemu vmm vmmio vmmbz vmmgpu vmmvfio), output in OUT.
bench_boot() {
    case "$1" in
        qemu)
            RIG_VMM=/opt/qemu/qemu rig_run_vmm 150 "$2" -M microvm,accel=kvm -cpu host -smp 1 \
                -m 512M -nodefaults -no-user-config -display none -serial stdio -monitor none \
                -no-reboot -kernel /rig/l2/vmlinuz -initrd /rig/l2/initramfs.cpio.gz \
                -append "$base reboot=t"
            ;;
        vmm)
            RUST_LOG=warn,vmm=debug rig_run_vmm 150 "$2" --kernel /rig/l2/vmlinuz \
                --initramfs /rig/l2/initramfs.cpio.gz --cmdline "$base reboot=k" --memory 512M
            ;;
        vmmio)
            RUST_LOG=warn,vmm=debug rig_run_vmm 150 "$2" --kernel /rig/l2/vmlinuz \
                --initramfs /rig/l2/initramfs.cpio.gz --cmdline "$base reboot=k" --memory 512M \
                --pci-config io
            ;;
        vmmbz)
            RUST_LOG=warn,vmm=debug rig_run_vmm 150 "$2" --kernel /rig/l2/vmlinuz \
                --initramfs /rig/l2/initramfs.cpio.gz --cmdline "$base reboot=k" --memory 512M \
                --decompress guest
            ;;
        vmmgpu)
            RUST_LOG=warn,vmm=debug rig_run_vmm 150 "$2" --kernel /rig/l2/vmlinuz \
                --initramfs /rig/l2/initramfs.cpio.gz --cmdline "$base reboot=k" --memory 512M \
                --device gpu=blob
            ;;
        vmmvfio)
            RUST_LOG=warn,vmm=debug,devices::vfio::open=info rig_run_vmm 150 "$2" \
                --kernel /rig/l2/vmlinuz --initramfs /rig/l2/initramfs.cpio.gz \
                --cmdline "$base reboot=k" --memory 512M --device "vfio=$ivshmem,gpu=blob"
            ;;
    esac
}

# The cache-filling boot.
out=/tmp/bench-first.out
bench_boot vmm "$out"
run_facts "$out" vmm-first
fields="$fields first_boot_s=$boot first_setup_ms=${setup:-none} first_load_ms=${load:-none}"
fields="$fields first_kernel_cache=$kcache first_initramfs_cache=$icache"

hugepages=/proc/sys/vm/nr_hugepages
# The rig's ivshmem, bound to vfio-pci, for the vmmvfio row (a passthrough device: guest RAM is
# DMA-mapped before the guest runs).
vfio=""
if ivshmem=$(rig_bind_vfio 1af4 1110); then
    vfio=vmmvfio
    fields="$fields vfio_device=$ivshmem"
else
    fields="$fields vfio_device=none"
fi
for thp in never advise hugetlb; do
    vmms="qemu vmm vmmbz vmmgpu $vfio"
    [ "$thp" = never ] && vmms="qemu vmm vmmio vmmbz vmmgpu $vfio"
    if [ "$thp" = hugetlb ]; then
        # shmem THP off, 2 MiB hugetlb pages reserved for guest RAM (512 MiB + slack): only the
        # memfd-backed vmm (vmmgpu) uses them.
        echo never >"$shmem"
        echo 264 >"$hugepages"
        fields="$fields hugetlb_reserved=$(cat "$hugepages")"
        vmms="qemu vmmgpu $vfio"
    else
        echo "$thp" >"$shmem"
        echo 0 >"$hugepages"
    fi
    for vmm in qemu vmm vmmio vmmbz vmmgpu vmmvfio; do
        eval "boots_$vmm=''; kerns_$vmm=''; pres_$vmm=''; setups_$vmm=''; loads_$vmm=''; dmas_$vmm=''"
    done
    i=0
    while [ "$i" -lt "$RUNS" ]; do
        i=$((i + 1))
        for vmm in $vmms; do
            out=/tmp/bench-$thp-$vmm-$i.out
            bench_boot "$vmm" "$out"
            run_facts "$out" "$vmm-$thp"
            rig_data thp="$thp" vmm="$vmm" run="$i" boot_s="$boot" kern_s="$kern" pre_s="$pre" \
                setup_ms="${setup:-none}" load_ms="${load:-none}" kernel_cache="$kcache" \
                initramfs_cache="$icache" exit="$RIG_VMM_RC"
            eval "boots_$vmm=\"\$boots_$vmm $boot\"; kerns_$vmm=\"\$kerns_$vmm $kern\""
            eval "pres_$vmm=\"\$pres_$vmm $pre\"; setups_$vmm=\"\$setups_$vmm ${setup:-}\""
            eval "loads_$vmm=\"\$loads_$vmm ${load:-}\""
            dma=$(sed -n 's/.*DMA-mapped .* in \([0-9]*\) ms.*/\1/p' "$out" | head -n1)
            eval "dmas_$vmm=\"\$dmas_$vmm ${dma:-}\""
            [ "$vmm" = qemu ] || eval "last_$vmm=\$out"
        done
    done
    for vmm in $vmms; do
        eval "b=\$boots_$vmm; k=\$kerns_$vmm; p=\$pres_$vmm; s=\$setups_$vmm; l=\$loads_$vmm; d=\$dmas_$vmm"
        # shellcheck disable=SC2086 # lists of words
        fields="$fields ${thp}_${vmm}_boot_s=$(median $b) ${thp}_${vmm}_kern_s=$(median $k) ${thp}_${vmm}_pre_s=$(median $p)"
        if [ "$vmm" != qemu ]; then
            eval "o=\$last_$vmm"
            # shellcheck disable=SC2086 # a list of words
            fields="$fields ${thp}_${vmm}_setup_ms=$(median $s)"
            # shellcheck disable=SC2086 # a list of words
            fields="$fields ${thp}_${vmm}_load_ms=$(median $l)"
            # shellcheck disable=SC2086 # a list of words
            [ "$vmm" != vmmvfio ] || fields="$fields ${thp}_${vmm}_dma_ms=$(median $d)"
            # shellcheck disable=SC2154 # set by the eval above
            ram=$(sed -n 's/.*guest RAM: \(Anonymous\).*/\1/p; s/.*guest RAM: \(Memfd\).*/\1/p' "$o" | head -n1)
            grep -q 'guest RAM: Memfd (hugetlb' "$o" && ram="$ram+hugetlb"
            fields="$fields ${thp}_${vmm}_ram=${ram:-none}"
            for st in exits pf_fixed io_exits mmio_exits insn_emulation halt_exits; do
                fields="$fields ${thp}_${vmm}_${st}=$(kvm_stat "$st" "$o")"
            done
        fi
    done
    # shellcheck disable=SC2086 # lists of words
    q=$(median $boots_qemu)
    # shellcheck disable=SC2086
    v=$(median $boots_vmm)
    # shellcheck disable=SC2086
    g=$(median $boots_vmmgpu)
    # shellcheck disable=SC2086
    z=$(median $boots_vmmbz)
    fields="$fields ${thp}_ratio=$(ratio "$v" "$q") ${thp}_ratio_bz=$(ratio "$z" "$q")"
    fields="$fields ${thp}_ratio_gpu=$(ratio "$g" "$q")"
    # shellcheck disable=SC2086
    o=$(median $boots_vmmio)
    fields="$fields ${thp}_ratio_io=$(ratio "$o" "$q")"
    # shellcheck disable=SC2086
    f=$(median $boots_vmmvfio)
    fields="$fields ${thp}_ratio_vfio=$(ratio "$f" "$q")"
done

# Exits by reason, for QEMU as for our vmm: one more boot of each (shmem THP never), in no median,
# with a hist trigger on L1's kvm_exit event counting the reasons in L1's kernel (the counting
# costs time, most for the VMM with the most exits). exits_<vmm>=name:count,... gives the 8 most
# frequent, named as the event's format names them for L1's CPU (SVM or VMX), rN for a reason it
# does not name; none without the event.
tracing=/sys/kernel/tracing
[ -d "$tracing/events" ] || mount -t tracefs tracefs "$tracing" 2>/dev/null
kvm_exit=$tracing/events/kvm/kvm_exit
vendor=vmx
grep -qw svm /proc/cpuinfo && vendor=svm
# exit_reasons -> the kvm_exit hist's reasons as name:count,..., most frequent first (8 at most)
exit_reasons() {
    awk -v vendor="$vendor" '
        function num(s,    v, i) {
            if (s !~ /^0x/) return s + 0
            v = 0
            for (i = 3; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(tolower(s), i, 1)) - 1
            return v
        }
        # The format file: { code, "name" } pairs of both tables (VMX names upper case, SVM lower).
        FNR == NR {
            line = $0
            while (match(line, /\{ *(0x[0-9a-fA-F]+|[0-9]+), *"[A-Za-z0-9_]+" *\}/)) {
                pair = substr(line, RSTART + 1, RLENGTH - 2)
                line = substr(line, RSTART + RLENGTH)
                split(pair, f, ",")
                code = f[1]; gsub(/ /, "", code)
                n = f[2]; gsub(/[ "]/, "", n)
                if ((vendor == "svm") == (n ~ /^[a-z0-9_]+$/)) name[num(code)] = n
            }
            next
        }
        /exit_reason:/ {
            c = $3 + 0
            print $6, ((c in name) ? name[c] : "r" c)
        }
    ' "$kvm_exit/format" "$kvm_exit/hist" | sort -rn | head -n 8 | awk '{ printf "%s%s:%s", (NR > 1 ? "," : ""), $2, $1 }'
}
echo never >"$shmem"
echo 0 >"$hugepages"
for vmm in qemu vmm; do
    if [ -f "$kvm_exit/trigger" ] && echo 'hist:keys=exit_reason:size=512' >"$kvm_exit/trigger"; then
        out=/tmp/bench-exits-$vmm.out
        bench_boot "$vmm" "$out"
        run_facts "$out" "$vmm-exits"
        reasons=$(exit_reasons)
        echo '!hist:keys=exit_reason:size=512' >"$kvm_exit/trigger"
        fields="$fields exits_${vmm}=${reasons:-none}"
    else
        fields="$fields exits_${vmm}=none"
    fi
done

echo advise >"$shmem"
echo 0 >"$hugepages"
RIG_REASON=$reason
RIG_FIELDS=$fields
rig_report
