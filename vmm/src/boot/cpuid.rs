//! Per-vCPU CPUID: KVM's supported list with the topology fields filled in for this vCPU.
//!
//! Nothing is hidden: in particular XSAVE stays visible (the rig works around its nested-SVM
//! XSAVE problem with `noxsave` on the guest command line, not here).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

/// Leaf 1 EDX: HTT (more than one logical processor per package).
const EDX_HTT: u32 = 1 << 28;
/// Leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;

/// Topology level types of leaves 0xB/0x1F.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to hold `n - 1` (the APIC id shift for a level with `n` members).
fn id_bits(n: u8) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - u32::from(n - 1).leading_zeros()
    }
}

fn fix_entry(e: &mut kvm_cpuid_entry2, apic_id: u8, nr_vcpus: u8) {
    let apic_id32 = u32::from(apic_id);
    match e.function {
        LEAF_FEATURES => {
            // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package.
            e.ebx = (e.ebx & 0x0000_ffff) | (apic_id32 << 24) | (u32::from(nr_vcpus) << 16);
            if nr_vcpus > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
            e.ecx |= ECX_HYPERVISOR;
        }
        LEAF_AMD_SIZE_IDS => {
            // ECX[7:0] NC = cores per package - 1; ECX[15:12] ApicIdSize (0 = derive from NC).
            e.ecx = (e.ecx & !0xf0ff) | (u32::from(nr_vcpus) - 1);
        }
        LEAF_AMD_EXT_APIC_ID => {
            e.eax = apic_id32;
            // EBX[7:0] core id, EBX[15:8] threads per core - 1 (= 0).
            e.ebx = (e.ebx & !0xffff) | apic_id32;
            // ECX[7:0] node id 0, ECX[10:8] nodes per processor - 1 (= 0).
            e.ecx &= !0x7ff;
        }
        _ => {}
    }
}

/// Leaves 0xB/0x1F for one package of `nr_vcpus` single-thread cores: subleaf 0 (SMT),
/// subleaf 1 (core) and the terminating invalid subleaf 2. Both levels are always given:
/// with only an SMT level, Linux would take every vCPU for its own package.
fn topology_leaf(function: u32, apic_id: u8, nr_vcpus: u8) -> [kvm_cpuid_entry2; 3] {
    let entry = |index: u32, eax: u32, ebx: u32, level_type: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: u32::from(apic_id),
        ..Default::default()
    };
    [
        entry(0, 0, 1, LEVEL_TYPE_SMT),
        entry(1, id_bits(nr_vcpus), u32::from(nr_vcpus), LEVEL_TYPE_CORE),
        entry(2, 0, 0, 0),
    ]
}

/// The CPUID table for the vCPU with APIC id `apic_id` out of `nr_vcpus`, derived from
/// `supported` (KVM_GET_SUPPORTED_CPUID).
pub fn vcpu_cpuid(supported: &CpuId, apic_id: u8, nr_vcpus: u8) -> CpuId {
    let max_basic = supported
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| e.function != LEAF_EXT_TOPOLOGY && e.function != LEAF_V2_EXT_TOPOLOGY)
        .copied()
        .collect();
    for e in &mut entries {
        fix_entry(e, apic_id, nr_vcpus);
    }
    for leaf in [LEAF_EXT_TOPOLOGY, LEAF_V2_EXT_TOPOLOGY] {
        if max_basic >= leaf {
            entries.extend(topology_leaf(leaf, apic_id, nr_vcpus));
        }
    }
    // The list only shrinks or grows by at most 6 entries from KVM's own, far below the
    // 256-entry limit of KVM_SET_CPUID2; fall back to the supported list if it does not fit.
    CpuId::from_entries(&entries).unwrap_or_else(|_| supported.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// Leaf 1 ECX bits 26 (XSAVE) and 28 (AVX), leaf 0xD present.
    const XSAVE_AVX: u32 = (1 << 26) | (1 << 28);

    fn supported() -> CpuId {
        CpuId::from_entries(&[
            entry(0x0, 0, 0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            entry(0x1, 0, 0x00a0_0f11, 0x0000_0800, XSAVE_AVX, 0x0789_fbff),
            // Only subleaf 0, and invalid: what KVM reports when the host has no 0xB.
            entry(0xb, 0, 0, 0, 0, 0),
            entry(0xd, 0, 7, 0x340, 0x340, 0),
            entry(0x8000_0008, 0, 0x3030, 0, 0xf003, 0),
            entry(0x8000_001e, 0, 0, 0x100, 0x0302, 0),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn leaf1_carries_the_apic_id_and_count() {
        let c = vcpu_cpuid(&supported(), 5, 8);
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 5);
        assert_eq!((l1.ebx >> 16) & 0xff, 8);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        let single = vcpu_cpuid(&supported(), 0, 1);
        assert_eq!(find(&single, 1, 0).edx & EDX_HTT, 0);
    }

    #[test]
    fn xsave_is_not_hidden() {
        let c = vcpu_cpuid(&supported(), 0, 1);
        assert_eq!(find(&c, 1, 0).ecx & XSAVE_AVX, XSAVE_AVX);
        assert_eq!(find(&c, 0xd, 0), find(&supported(), 0xd, 0));
    }

    #[test]
    fn extended_topology_describes_one_package() {
        let c = vcpu_cpuid(&supported(), 3, 6);
        let smt = find(&c, 0xb, 0);
        let core = find(&c, 0xb, 1);
        let end = find(&c, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 3));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 3));
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0), "terminating subleaf");
        assert_eq!(core.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        assert_eq!(
            c.as_slice().iter().filter(|e| e.function == 0xb).count(),
            3,
            "KVM's subleaf replaced, not duplicated"
        );
        // Leaf 0x1F is only added when the maximum basic leaf reaches it.
        assert!(c.as_slice().iter().all(|e| e.function != 0x1f));
        let amd = find(&c, 0x8000_0008, 0);
        assert_eq!(amd.ecx & 0xff, 5);
        assert_eq!(amd.ecx & 0xf000, 0);
        let ext = find(&c, 0x8000_001e, 0);
        assert_eq!((ext.eax, ext.ebx & 0xffff, ext.ecx & 0x7ff), (3, 3, 0));
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(
            [1u8, 2, 3, 4, 5, 8, 9, 64].map(id_bits),
            [0, 1, 2, 2, 3, 3, 4, 6]
        );
    }
}
