#!/bin/sh
# event-delivery: KVM's event-delivery error on emulated MMIO. The vmm with ivshmem (1af4:1110)
# passed through and a virtio-gpu; L2 runs /bin/mmio-after-fault (rig.l2=mmio-after-fault): page
# faults each followed at once by a read of the next page of the virtio-gpu's BAR0 (its driver
# unbound), which the vmm traps and L1's KVM emulates. L0's TCG reports the page fault's type in such an
# exit; on an MMIO page not yet in L1's nested page tables L1's KVM then refuses to emulate
# (KVM_INTERNAL_ERROR_DELIVERY_EV) and the vmm runs the vCPU again.
# Facts (tests/tests/rig_event_delivery.rs judges them): rig_vmm_facts with L2's result,
# retries=<n> from the vmm's exit line ("event-delivery retries: <n>", 0 when absent) and
# retry_lines=<n>, its warnings (rate-limited: at most one in 10 s).
. /rig/lib.sh

[ -c /dev/kvm ] || rig_fail no-dev-kvm
bdf=$(rig_bind_vfio 1af4 1110) || rig_fail vfio-bind-failed
rig_data bdf="$bdf"

out=/tmp/vmm-event-delivery.out
RUST_LOG=info rig_run_vmm 280 "$out" --device "vfio=$bdf,gpu=blob" --kernel /rig/l2/vmlinuz \
    --initramfs /rig/l2/initramfs.cpio.gz --cmdline "$(rig_l2_cmdline mmio-after-fault)" --memory 512M
rig_l2_forward "$out"
rig_vmm_facts "$out" l2
retries=$(sed -n 's/.*event-delivery retries: \([0-9]*\).*/\1/p' "$out" | tail -n1)
retry_lines=$(grep -c 'running the vCPU again' "$out")
rig_report bdf="$bdf" retries="${retries:-0}" retry_lines="$retry_lines"
