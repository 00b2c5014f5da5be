//! Per-vCPU CPUID: what KVM supports, plus the topology and identity each vCPU must report.
//!
//! Linux takes the CPU list from the ACPI MADT; CPUID must agree with it (APIC IDs,
//! logical processor counts) or the scheduler's topology and TSC checks get confused.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZE: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// Topology level types in leaf 0xB/0x1F ECX[15:8].
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Smallest `s` with `1 << s >= n`: the APIC-ID bits a level of `n` items needs.
fn id_bits(n: u32) -> u32 {
    n.next_power_of_two().trailing_zeros()
}

/// One socket of `vcpus` single-threaded cores; vCPU `index` has APIC ID `index`.
pub fn vcpu_cpuid(supported: &CpuId, index: u8, vcpus: u8) -> CpuId {
    let mut cpuid = supported.clone();
    let apic_id = u32::from(index);
    let count = u32::from(vcpus);
    for entry in cpuid.as_mut_slice() {
        patch_entry(entry, apic_id, count);
    }
    cpuid
}

fn patch_entry(e: &mut kvm_cpuid_entry2, apic_id: u32, count: u32) {
    match e.function {
        LEAF_FEATURES => {
            // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
            e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count.min(255) << 16);
            e.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
            // Only L3 (level 3) is shared by the whole socket.
            let level = (e.eax >> 5) & 0x7;
            let sharing = if level == 3 { count - 1 } else { 0 };
            e.eax = (e.eax & 0x3fff) | ((count - 1) << 26) | (sharing << 14);
        }
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
            let (shift, level_count, level_type) = match e.index {
                0 => (0, 1, LEVEL_SMT),
                1 => (id_bits(count), count, LEVEL_CORE),
                _ => (0, 0, 0),
            };
            e.eax = shift;
            e.ebx = level_count;
            e.ecx = (level_type << 8) | (e.index & 0xff);
            e.edx = apic_id;
        }
        LEAF_AMD_SIZE => {
            // ECX[15:12] APIC ID size, ECX[7:0] number of threads - 1.
            e.ecx = (e.ecx & !0xf0ff) | (id_bits(count) << 12) | (count - 1);
        }
        LEAF_AMD_EXT_APIC => {
            // EAX extended APIC ID; EBX[7:0] compute unit (core) ID, one thread per core.
            e.eax = apic_id;
            e.ebx = (e.ebx & !0xff00) | (apic_id & 0xff);
            e.ecx &= !0x7ff;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn apic_ids_and_counts() {
        let base = CpuId::from_entries(&[
            entry(LEAF_FEATURES, 0),
            entry(LEAF_TOPOLOGY, 0),
            entry(LEAF_TOPOLOGY, 1),
            entry(LEAF_AMD_SIZE, 0),
        ])
        .unwrap();
        let c = vcpu_cpuid(&base, 3, 4);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!((e[1].ebx, e[1].edx, e[1].ecx >> 8), (1, 3, LEVEL_SMT));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx >> 8), (2, 4, LEVEL_CORE));
        assert_eq!(e[3].ecx & 0xff, 3);
        let single = vcpu_cpuid(&base, 0, 1);
        assert_eq!(single.as_slice()[0].edx & EDX_HTT, 0);
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(5), 3);
        assert_eq!(id_bits(32), 5);
    }
}
