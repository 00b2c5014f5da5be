//! The register state a vCPU starts in: long mode for the Linux 64-bit boot protocol,
//! flat 32-bit protected mode for PVH, plus the GDT and page tables those modes need.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::layout;
use crate::memory::GuestMemoryMmap;

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// 64-bit boot protocol: long mode, RSI = zero page.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, EBX = hvm_start_info.
    Pvh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub protocol: BootProtocol,
    pub entry: GuestAddress,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the boot {0} into guest memory")]
pub struct BootTablesError(&'static str, #[source] vm_memory::GuestMemoryError);

// GDT: null, 64-bit code, data, TSS, 32-bit code.
const GDT: [u64; 5] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
    gdt_entry(0xc09b, 0, 0xfffff),
];
const CODE64: usize = 1;
const DATA: usize = 2;
const TSS: usize = 3;
const CODE32: usize = 4;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Page-table entry bits: present, writable, 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_2M_PAGE: u64 = 0x83;

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
        | ((limit & 0xf_0000) << 32)
        | ((flags & 0xf0ff) << 40)
}

/// Decodes GDT entry `index` into the segment register form KVM wants.
fn segment(index: usize) -> kvm_segment {
    let e = GDT[index];
    let g = ((e >> 55) & 1) as u8;
    let raw_limit = ((e & 0xffff) | ((e >> 32) & 0xf_0000)) as u32;
    kvm_segment {
        base: ((e >> 16) & 0xff_ffff) | ((e >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: (index * 8) as u16,
        type_: ((e >> 40) & 0xf) as u8,
        present: ((e >> 47) & 1) as u8,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Writes the GDT, an empty IDT and an identity map of the first 4 GiB (2 MiB pages).
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), BootTablesError> {
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT_START + 8 * i as u64))
            .map_err(|e| BootTablesError("GDT", e))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT_START))
        .map_err(|e| BootTablesError("IDT", e))?;

    let pt = |e| BootTablesError("page tables", e);
    mem.write_obj(
        layout::PDPTE_START | PTE_PRESENT_RW,
        GuestAddress(layout::PML4_START),
    )
    .map_err(pt)?;
    for gib in 0..4u64 {
        let pd = layout::PDE_START + gib * 0x1000;
        mem.write_obj(
            pd | PTE_PRESENT_RW,
            GuestAddress(layout::PDPTE_START + gib * 8),
        )
        .map_err(pt)?;
        for i in 0..512u64 {
            let page = (gib << 30) | (i << 21);
            mem.write_obj(page | PDE_2M_PAGE, GuestAddress(pd + i * 8))
                .map_err(pt)?;
        }
    }
    Ok(())
}

pub fn boot_regs(boot: BootEntry) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2, // bit 1 is reserved and must be set
        rip: boot.entry.0,
        ..Default::default()
    };
    match boot.protocol {
        BootProtocol::Linux64 => {
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = layout::ZERO_PAGE_START;
        }
        BootProtocol::Pvh => regs.rbx = layout::PVH_INFO_START,
    }
    regs
}

/// `base` is the vCPU's current sregs (it keeps KVM's APIC base and the like).
pub fn boot_sregs(mut base: kvm_sregs, protocol: BootProtocol) -> kvm_sregs {
    base.gdt.base = layout::GDT_START;
    base.gdt.limit = (GDT.len() * 8 - 1) as u16;
    base.idt.base = layout::IDT_START;
    base.idt.limit = 7;
    let data = segment(DATA);
    base.ds = data;
    base.es = data;
    base.fs = data;
    base.gs = data;
    base.ss = data;
    base.tr = segment(TSS);
    match protocol {
        BootProtocol::Linux64 => {
            base.cs = segment(CODE64);
            base.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            base.cr3 = layout::PML4_START;
            base.cr4 = X86_CR4_PAE;
            base.efer = EFER_LME | EFER_LMA;
        }
        BootProtocol::Pvh => {
            base.cs = segment(CODE32);
            base.cr0 = X86_CR0_PE | X86_CR0_ET;
            base.cr3 = 0;
            base.cr4 = 0;
            base.efer = 0;
        }
    }
    base
}

pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSRs a freshly reset CPU has; the guest fills in the rest itself. `bsp` marks the
/// bootstrap processor in the APIC base.
pub fn boot_msrs(bsp: bool) -> Vec<kvm_msr_entry> {
    const MSR_IA32_APICBASE: u32 = 0x1b;
    // xAPIC at its default address, enabled: a kernel that switched to x2APIC before a
    // reset in place finds the mode it had at power-on.
    const APICBASE_ENABLED: u64 = 0xfee0_0000 | (1 << 11);
    const APICBASE_BSP: u64 = 1 << 8;
    // KVM's paravirtual MSRs. Each one a kernel enables names a guest page that KVM goes
    // on writing (the clock, steal time, the EOI bit) or an event it injects (async page
    // faults), until the MSR is cleared: after a reset in place, inside the next kernel.
    const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
    const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
    const MSR_KVM_ASYNC_PF_EN: u32 = 0x4b56_4d02;
    const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
    const MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;
    const MSR_KVM_ASYNC_PF_INT: u32 = 0x4b56_4d06;
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    // MTRRs enabled, default memory type write-back.
    const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
        (
            MSR_IA32_APICBASE,
            APICBASE_ENABLED | if bsp { APICBASE_BSP } else { 0 },
        ),
        (MSR_KVM_SYSTEM_TIME, 0),
        (MSR_KVM_SYSTEM_TIME_NEW, 0),
        (MSR_KVM_ASYNC_PF_EN, 0),
        (MSR_KVM_ASYNC_PF_INT, 0),
        (MSR_KVM_STEAL_TIME, 0),
        (MSR_KVM_PV_EOI_EN, 0),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Wires LINT0 as ExtINT (the 8259 behind the LAPIC) and LINT1 as NMI, as firmware does.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_EXTINT: u32 = 0x7;
    const APIC_MODE_NMI: u32 = 0x4;
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let reg = &mut lapic.regs[offset..offset + 4];
        let old = u32::from_le_bytes([reg[0] as u8, reg[1] as u8, reg[2] as u8, reg[3] as u8]);
        // Delivery mode lives in bits 10:8.
        let new = (old & !0x700) | (mode << 8);
        for (dst, b) in reg.iter_mut().zip(new.to_le_bytes()) {
            *dst = b as _;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn segments_decode_as_flat() {
        let cs = segment(CODE64);
        assert_eq!(
            (cs.base, cs.limit, cs.l, cs.db, cs.selector),
            (0, 0xffff_ffff, 1, 0, 8)
        );
        let cs32 = segment(CODE32);
        assert_eq!((cs32.l, cs32.db, cs32.type_), (0, 1, 0xb));
        let ds = segment(DATA);
        assert_eq!((ds.type_, ds.present, ds.s), (3, 1, 1));
    }

    #[test]
    fn identity_map_covers_4_gib() {
        let mem = create_guest_memory(64).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4 & !0xfff, layout::PDPTE_START);
        let pdpte3: u64 = mem
            .read_obj(GuestAddress(layout::PDPTE_START + 24))
            .unwrap();
        let last_pd = pdpte3 & !0xfff;
        let lapic_pde: u64 = mem
            .read_obj(GuestAddress(
                last_pd + ((layout::LAPIC_START >> 21) & 511) * 8,
            ))
            .unwrap();
        assert_eq!(lapic_pde & !0x1f_ffff, layout::LAPIC_START & !0x1f_ffff);
        assert_eq!(lapic_pde & 0xff, PDE_2M_PAGE);
    }

    #[test]
    fn lint_modes() {
        let mut lapic = kvm_lapic_state::default();
        set_lint(&mut lapic);
        assert_eq!(lapic.regs[0x351] as u8 & 7, 7);
        assert_eq!(lapic.regs[0x361] as u8 & 7, 4);
    }
}
