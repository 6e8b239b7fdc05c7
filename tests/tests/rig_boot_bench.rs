//! Scenario `boot-bench`: the boot benchmark. QEMU `-M microvm` with KVM and our vmm (anonymous
//! guest RAM; `vmmbz`: the same with the guest decompressing the bzImage; with a virtio-gpu: memfd
//! guest RAM; `vmmio`, in the `never` setting: the PCI configuration ports instead of the ECAM
//! window) boot the same L2 alternately in one L1, with L1's shmem THP at Debian's default
//! (`never`), at `advise`, and at `never` with 2 MiB hugetlb pages reserved (`hugetlb`: QEMU and
//! the memfd-backed vmms only), and, with a passthrough device (`vmmvfio`: the rig's ivshmem and a
//! virtio-gpu), the time to DMA-map guest RAM; the medians, the vmm/QEMU ratio and
//! the phases are printed; a first boot that fills the vmm's kernel cache is reported apart, and
//! one more boot of QEMU and of our vmm gives their exits by reason. A
//! benchmark, not a timed test: it asserts only that every run booted.
//! Alone: `cargo test -p rig-tests --features rig --test rig_boot_bench -- --nocapture`
//! (`RIG_L1_APPEND=rig.bench_runs=N` for N runs of each instead of 3).

// Rig scenarios need QEMU and run only with the `rig` feature (resources/test-all.sh).
#![cfg(feature = "rig")]

use std::time::Duration;

use rig_tests::Scenario;

/// Runs of each VMM and setting: `rig.bench_runs=N` in `RIG_L1_APPEND` (L1's command line), else
/// the scenario's 3.
fn bench_runs() -> u64 {
    std::env::var("RIG_L1_APPEND")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("rig.bench_runs="))
        .filter_map(|n| n.parse().ok())
        .next_back()
        .unwrap_or(3)
}

#[test]
fn boot_benchmark_against_qemu_microvm() {
    // About 70 s a run of every VMM and 70 s besides in the rig here; twice that, so that an L1
    // that hangs costs a few minutes rather than twenty.
    let timeout = Duration::from_secs(bench_runs().saturating_mul(140).saturating_add(150));
    let out = Scenario::new("boot-bench")
        .bench(true)
        .timeout(timeout)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    out.assert_passed();
    let r = &out.result;
    let f = |k: &str| r.get(k).unwrap_or("-").to_string();
    println!(
        "First boot of our vmm (it fills the kernel cache; in no median): {} s to L2's init, set-up {} ms, kernel and initramfs load {} ms (kernel: {}, initramfs: {} in the cache)",
        f("first_boot_s"),
        f("first_setup_ms"),
        f("first_load_ms"),
        f("first_kernel_cache"),
        f("first_initramfs_cache")
    );
    println!("| L1 setting | VMM | boot s | kernel s | before kernel s | guest RAM | vmm set-up ms | kernel load ms | DMA map ms | exits | pf_fixed | io | mmio | insn_emulation | halt | vs QEMU |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for thp in ["never", "advise", "hugetlb"] {
        for vmm in ["qemu", "vmm", "vmmio", "vmmbz", "vmmgpu", "vmmvfio"] {
            if (thp == "hugetlb" && (vmm == "vmm" || vmm == "vmmbz"))
                || (thp != "never" && vmm == "vmmio")
            {
                continue;
            }
            let g = |k: &str| {
                r.get(&format!("{thp}_{vmm}_{k}"))
                    .unwrap_or("-")
                    .to_string()
            };
            let ratio = match vmm {
                "vmm" => r.get(&format!("{thp}_ratio")).unwrap_or("-"),
                "vmmio" => r.get(&format!("{thp}_ratio_io")).unwrap_or("-"),
                "vmmbz" => r.get(&format!("{thp}_ratio_bz")).unwrap_or("-"),
                "vmmgpu" => r.get(&format!("{thp}_ratio_gpu")).unwrap_or("-"),
                "vmmvfio" => r.get(&format!("{thp}_ratio_vfio")).unwrap_or("-"),
                _ => "1.00",
            };
            println!(
                "| {thp} | {vmm} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio} |",
                g("boot_s"),
                g("kern_s"),
                g("pre_s"),
                g("ram"),
                g("setup_ms"),
                g("load_ms"),
                g("dma_ms"),
                g("exits"),
                g("pf_fixed"),
                g("io_exits"),
                g("mmio_exits"),
                g("insn_emulation"),
                g("halt_exits")
            );
        }
    }
    for vmm in ["qemu", "vmm"] {
        println!(
            "Exits of one more {vmm} boot by reason (L1's kvm_exit event, shmem THP never; in no median): {}",
            f(&format!("exits_{vmm}"))
        );
    }
}
