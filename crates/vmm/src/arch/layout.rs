//! The guest-physical memory map and I/O port map of an x86-64 Ferrovisor VM.
//!
//! ```text
//! 0x0000_0500  GDT, then IDT                     0x0000_6000  PVH hvm_start_info + memmap
//! 0x0000_7000  Linux zero page (boot_params)    0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four PDs (identity map of 4 GiB, 2 MiB pages)
//! 0x0002_0000  kernel command line              0x0009_fc00  EBDA (reserved)
//! 0x000e_0000  ACPI: RSDP then XSDT, FADT, MADT, DSDT (up to 0x000f_0000)
//! 0x000f_fff0  the x86 reset vector: a stub that asks for a reset through the i8042
//! 0x0010_0000  RAM for the kernel (bzImage protected-mode code, initrd at the top of low RAM)
//! 0xc000_0000  32-bit MMIO hole up to 4 GiB: PCI BARs 0xc000_0000-0xcfff_ffff,
//!              PCI ECAM 0xe000_0000 (1 MiB, bus 0), IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000
//! 4 GiB        the rest of RAM
//! ```

pub const GDT_START: u64 = 0x500;
pub const IDT_START: u64 = 0x520;
pub const PVH_INFO_START: u64 = 0x6000;
/// hvm_memmap_table_entry array, right after hvm_start_info (which is 0x38 bytes).
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// 106 entries (24 bytes each) end at 0x6a30, well before the module list; we write at most 4.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = 106;
/// The PVH module list (one entry: the initrd), the last 32 bytes before the zero page.
pub const PVH_MODLIST_START: u64 = 0x6fe0;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
pub const CMDLINE_START: u64 = 0x2_0000;
/// Linux's x86 COMMAND_LINE_SIZE, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 2048;
pub const EBDA_START: u64 = 0x9_fc00;
pub const ACPI_START: u64 = 0xe_0000;
pub const ACPI_END: u64 = 0xf_0000;
/// Where a CPU starts after reset (F000:FFF0). Linux jumps here to reboot "through the
/// BIOS", which it does by default on hardware-reduced ACPI machines without EFI.
pub const RESET_VECTOR: u64 = 0xf_fff0;
pub const HIMEM_START: u64 = 0x10_0000;

pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// The host bridge's memory window: PCI BARs are placed here (and may be moved here by the
/// guest), 256 MiB from the start of the hole.
pub const PCI_MMIO_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO_SIZE: u64 = 0x1000_0000;
/// ECAM (PCI Express enhanced configuration access) for bus 0 only: 4 KiB per function,
/// 32 devices x 8 functions. Described by the MCFG table, reserved in the e820 map.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_SIZE: u64 = 1 << 20;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM_SET_TSS_ADDR wants three pages inside the hole that no device uses.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

// I/O ports.
pub const COM1_PORT: u64 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
/// i8042 spans 0x60 (data) to 0x64 (command/status).
pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;
pub const CMOS_PORT: u64 = 0x70;
pub const CMOS_PORT_LEN: u64 = 2;
/// ACPI hardware-reduced sleep control/status and reset registers.
pub const ACPI_PM_PORT: u64 = 0x600;
pub const ACPI_PM_PORT_LEN: u64 = 8;
pub const ACPI_SLEEP_CONTROL_PORT: u64 = ACPI_PM_PORT;
pub const ACPI_SLEEP_STATUS_PORT: u64 = ACPI_PM_PORT + 1;
pub const ACPI_RESET_PORT: u64 = ACPI_PM_PORT + 4;
/// Value the guest writes to the reset register to reboot.
pub const ACPI_RESET_VALUE: u8 = 0x0f;
/// SLP_TYP value for S5 (soft off) that the DSDT's `_S5_` package announces.
pub const ACPI_S5_SLP_TYP: u8 = 5;
/// The ACPI Generic Event Device's event register (one byte, read to clear), right after
/// the sleep and reset registers.
pub const ACPI_GED_PORT: u64 = ACPI_PM_PORT + ACPI_PM_PORT_LEN;
pub const ACPI_GED_PORT_LEN: u64 = 1;
/// The GED's interrupt: ISA IRQ 5 (an IOAPIC pin no other device uses), edge, active high.
pub const ACPI_GED_IRQ: u32 = 5;
/// PCI configuration mechanism #1: address at 0xCF8, data at 0xCFC-0xCFF.
pub const PCI_CONFIG_IO_PORT: u64 = 0xcf8;
pub const PCI_CONFIG_IO_PORT_LEN: u64 = 8;
/// pvpanic ISA port (QEMU's default), described in the DSDT as QEMU0001.
pub const PVPANIC_PORT: u64 = 0x505;
/// The PCI hot-plug controller's registers (`devices::pci_hotplug`; QEMU's port).
pub const PCI_HOTPLUG_PORT: u64 = 0xae00;

/// Largest guest we accept: memory in MiB and vCPUs.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
pub const MIN_MEMORY_MIB: u64 = 32;
pub const MAX_VCPUS: u8 = 32;

/// Guest RAM as (start, length) ranges for `mem_bytes` of memory: low RAM up to the
/// MMIO hole, the rest from 4 GiB.
pub fn ram_regions(mem_bytes: u64) -> Vec<(u64, u64)> {
    if mem_bytes <= MMIO_HOLE_START {
        vec![(0, mem_bytes)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (MMIO_HOLE_END, mem_bytes - MMIO_HOLE_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_hole() {
        assert_eq!(ram_regions(512 << 20), vec![(0, 512 << 20)]);
        assert_eq!(ram_regions(MMIO_HOLE_START), vec![(0, MMIO_HOLE_START)]);
        assert_eq!(
            ram_regions(4 << 30),
            vec![(0, MMIO_HOLE_START), (MMIO_HOLE_END, 1 << 30)]
        );
    }
}
