//! Boot-protocol data the kernel reads at entry: the e820 memory map, the Linux zero page
//! (64-bit boot protocol), the PVH `hvm_start_info`, and the initrd.
//!
//! The kernel image and the command line themselves are loaded by the builder with
//! linux-loader; this module only writes what points at them.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use linux_loader::loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, E820_MAX_ENTRIES_ZEROPAGE,
};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::layout;
use crate::memory::GuestMemoryMmap;

use layout::PVH_MODLIST_START;

// The module list must sit past the largest memmap `layout` allows, before the zero page.
const _: () = assert!(
    layout::PVH_MEMMAP_START
        + (layout::PVH_MEMMAP_MAX_ENTRIES * std::mem::size_of::<hvm_memmap_table_entry>()) as u64
        <= PVH_MODLIST_START
);
const _: () = assert!(
    PVH_MODLIST_START + std::mem::size_of::<hvm_modlist_entry>() as u64 <= layout::ZERO_PAGE_START
);

/// `hvm_start_info.magic` ("xEn3" with the top bit set).
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Zero-page `setup_header` defaults for a kernel that brought no header (ELF vmlinux).
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;
/// "Undefined" boot loader id: we are not one of the loaders Linux knows by number.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const PAGE_SIZE: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot write the {what} at {addr:#x} into guest memory")]
    WriteGuest {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("{what} at {addr:#x} does not fit the 32-bit field of the Linux boot protocol")]
    Above4G { what: &'static str, addr: u64 },
    #[error("kernel command line of {size} bytes exceeds the {max}-byte limit")]
    CmdlineTooLong { size: usize, max: usize },
    #[error("memory map has {entries} entries; the {protocol} boot protocol holds at most {max}")]
    TooManyE820Entries {
        protocol: &'static str,
        entries: usize,
        max: usize,
    },
    #[error("guest has no RAM below the 32-bit MMIO hole for the initrd")]
    NoLowMemory,
    #[error("cannot read the initrd file")]
    InitrdRead(#[source] std::io::Error),
    #[error("initrd file is empty")]
    InitrdEmpty,
    #[error(
        "initrd of {size} bytes does not fit in low RAM between the kernel end {kernel_end:#x} \
         and {top:#x}"
    )]
    InitrdTooBig {
        size: u64,
        kernel_end: u64,
        top: u64,
    },
    #[error("cannot load the initrd ({size} bytes) into guest memory at {addr:#x}")]
    InitrdLoad {
        addr: u64,
        size: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// The e820 type of a memory-map entry (shared by the zero page and PVH, which use the same
/// numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Type,
}

/// Where `load_initrd` put the initrd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdLocation {
    pub addr: GuestAddress,
    pub size: usize,
}

/// The memory map both boot protocols hand the guest, derived from the RAM regions of `mem`.
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<E820Entry> {
    let ram: Vec<(u64, u64)> = mem
        .iter()
        .map(|r| (r.start_addr().raw_value(), r.len()))
        .collect();
    e820_from_ram(&ram)
}

/// RAM ranges minus the legacy hole EBDA..1 MiB, which is reported reserved because it holds
/// the EBDA and our ACPI tables (0xe0000), whatever RAM backs it; plus the PCI ECAM window,
/// reserved as Linux wants it before it trusts the MCFG table.
fn e820_from_ram(ram: &[(u64, u64)]) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: layout::EBDA_START,
            size: layout::HIMEM_START - layout::EBDA_START,
            kind: E820Type::Reserved,
        },
        E820Entry {
            addr: layout::PCI_ECAM_START,
            size: layout::PCI_ECAM_SIZE,
            kind: E820Type::Reserved,
        },
    ];
    let mut push_ram = |start: u64, end: u64| {
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820Type::Ram,
            });
        }
    };
    for &(start, len) in ram {
        let end = start.saturating_add(len);
        push_ram(start, end.min(layout::EBDA_START));
        push_ram(start.max(layout::HIMEM_START), end);
    }
    map.sort_by_key(|e| e.addr);
    map
}

fn u32_field(what: &'static str, addr: u64) -> Result<u32, BootError> {
    u32::try_from(addr).map_err(|_| BootError::Above4G { what, addr })
}

fn write_obj<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    val: T,
    addr: u64,
) -> Result<(), BootError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|source| BootError::WriteGuest { what, addr, source })
}

/// Writes the Linux zero page (`boot_params`) at `ZERO_PAGE_START` for the 64-bit boot
/// protocol. `header` is the bzImage's setup header when the kernel is a bzImage; an ELF
/// vmlinux has none and gets a minimal valid one.
pub fn configure_linux_boot(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    cmdline_addr: GuestAddress,
    cmdline_size: usize,
    initrd: Option<InitrdLocation>,
    rsdp_addr: GuestAddress,
) -> Result<(), BootError> {
    if cmdline_size > layout::CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            size: cmdline_size,
            max: layout::CMDLINE_MAX_SIZE,
        });
    }
    let mut params = boot_params {
        hdr: header.unwrap_or(setup_header {
            boot_flag: BOOT_FLAG_MAGIC,
            header: HDRS_MAGIC,
            kernel_alignment: KERNEL_ALIGNMENT,
            ..Default::default()
        }),
        acpi_rsdp_addr: rsdp_addr.raw_value(),
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = u32_field("kernel command line", cmdline_addr.raw_value())?;
    // Bounded by CMDLINE_MAX_SIZE above, so it fits.
    params.hdr.cmdline_size = cmdline_size as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = u32_field("initrd", initrd.addr.raw_value())?;
        params.hdr.ramdisk_size = u32::try_from(initrd.size).map_err(|_| BootError::Above4G {
            what: "initrd end",
            addr: initrd.addr.raw_value().saturating_add(initrd.size as u64),
        })?;
    }

    let map = e820_map(mem);
    if map.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootError::TooManyE820Entries {
            protocol: "Linux",
            entries: map.len(),
            max: E820_MAX_ENTRIES_ZEROPAGE,
        });
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    // At most E820_MAX_ENTRIES_ZEROPAGE (128), checked above.
    params.e820_entries = map.len() as u8;

    write_obj(mem, "Linux zero page", params, layout::ZERO_PAGE_START)
}

/// Writes `hvm_start_info` at `PVH_INFO_START`, its memory map at `PVH_MEMMAP_START` and,
/// with an initrd, one module entry at `PVH_MODLIST_START`.
pub fn configure_pvh_boot(
    mem: &GuestMemoryMmap,
    cmdline_addr: GuestAddress,
    initrd: Option<InitrdLocation>,
    rsdp_addr: GuestAddress,
) -> Result<(), BootError> {
    let map = e820_map(mem);
    if map.len() > layout::PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::TooManyE820Entries {
            protocol: "PVH",
            entries: map.len(),
            max: layout::PVH_MEMMAP_MAX_ENTRIES,
        });
    }
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (i, e) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        };
        write_obj(
            mem,
            "PVH memory map entry",
            entry,
            layout::PVH_MEMMAP_START + i as u64 * entry_size,
        )?;
    }

    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: cmdline_addr.raw_value(),
        rsdp_paddr: rsdp_addr.raw_value(),
        memmap_paddr: layout::PVH_MEMMAP_START,
        // Bounded by PVH_MEMMAP_MAX_ENTRIES above.
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = initrd {
        let module = hvm_modlist_entry {
            paddr: initrd.addr.raw_value(),
            size: initrd.size as u64,
            ..Default::default()
        };
        write_obj(mem, "PVH initrd module entry", module, PVH_MODLIST_START)?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
    }
    write_obj(mem, "PVH start info", info, layout::PVH_INFO_START)
}

/// End (exclusive) of the RAM below the 32-bit MMIO hole.
fn low_ram_end(mem: &GuestMemoryMmap) -> Option<u64> {
    mem.iter()
        .filter(|r| r.start_addr().raw_value() < layout::MMIO_HOLE_START)
        .map(|r| {
            r.start_addr()
                .raw_value()
                .saturating_add(r.len())
                .min(layout::MMIO_HOLE_START)
        })
        .max()
}

/// Loads the whole of `file` page-aligned at the top of low RAM, at or below the kernel's
/// `initrd_addr_max` (the highest address its last byte may occupy) when the setup header gives
/// one, and above `kernel_end`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    file: &mut File,
    header_max: Option<u32>,
    kernel_end: GuestAddress,
) -> Result<InitrdLocation, BootError> {
    let size = file.seek(SeekFrom::End(0)).map_err(BootError::InitrdRead)?;
    file.seek(SeekFrom::Start(0))
        .map_err(BootError::InitrdRead)?;
    if size == 0 {
        return Err(BootError::InitrdEmpty);
    }
    let mut top = low_ram_end(mem).ok_or(BootError::NoLowMemory)?;
    if let Some(max) = header_max {
        top = top.min(u64::from(max) + 1);
    }
    let floor = kernel_end
        .raw_value()
        .max(layout::HIMEM_START)
        .checked_next_multiple_of(PAGE_SIZE)
        .unwrap_or(u64::MAX);
    let too_big = BootError::InitrdTooBig {
        size,
        kernel_end: kernel_end.raw_value(),
        top,
    };
    let addr = match top.checked_sub(size) {
        Some(a) if a & !(PAGE_SIZE - 1) >= floor => a & !(PAGE_SIZE - 1),
        _ => return Err(too_big),
    };
    // Below the 4 GiB hole here, so it fits a usize on x86-64.
    let size = usize::try_from(size).map_err(|_| too_big)?;
    mem.read_exact_volatile_from(GuestAddress(addr), file, size)
        .map_err(|source| BootError::InitrdLoad { addr, size, source })?;
    Ok(InitrdLocation {
        addr: GuestAddress(addr),
        size,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use vmm_sys_util::tempfile::TempFile;

    use super::*;
    use crate::memory::create_guest_memory;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ram(addr: u64, size: u64) -> E820Entry {
        E820Entry {
            addr,
            size,
            kind: E820Type::Ram,
        }
    }
    const LEGACY_HOLE: E820Entry = E820Entry {
        addr: layout::EBDA_START,
        size: layout::HIMEM_START - layout::EBDA_START,
        kind: E820Type::Reserved,
    };
    const ECAM: E820Entry = E820Entry {
        addr: layout::PCI_ECAM_START,
        size: layout::PCI_ECAM_SIZE,
        kind: E820Type::Reserved,
    };

    #[test]
    fn e820_for_small_guest_from_memory() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(
            e820_map(&mem),
            vec![
                ram(0, layout::EBDA_START),
                LEGACY_HOLE,
                ram(MIB, 63 * MIB),
                ECAM
            ]
        );
    }

    #[test]
    fn e820_for_3g_and_5g_guests() {
        assert_eq!(
            e820_from_ram(&layout::ram_regions(3 * GIB)),
            vec![
                ram(0, layout::EBDA_START),
                LEGACY_HOLE,
                ram(MIB, 3 * GIB - MIB),
                ECAM
            ]
        );
        assert_eq!(
            e820_from_ram(&layout::ram_regions(5 * GIB)),
            vec![
                ram(0, layout::EBDA_START),
                LEGACY_HOLE,
                ram(MIB, 3 * GIB - MIB),
                ECAM,
                ram(4 * GIB, 2 * GIB)
            ]
        );
    }

    #[test]
    fn zero_page_fields_read_back() {
        let mem = create_guest_memory(64).unwrap();
        let initrd = InitrdLocation {
            addr: GuestAddress(0x300_0000),
            size: 0x1234,
        };
        configure_linux_boot(
            &mem,
            None,
            GuestAddress(layout::CMDLINE_START),
            12,
            Some(initrd),
            GuestAddress(layout::ACPI_START),
        )
        .unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.kernel_alignment }, 0x0100_0000);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 12);
        assert_eq!({ p.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!({ p.acpi_rsdp_addr }, layout::ACPI_START);
        assert_eq!(p.e820_entries, 4);
        let last = p.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (MIB, 63 * MIB, 1)
        );
        let hole = p.e820_table[1];
        assert_eq!(({ hole.addr }, { hole.r#type }), (layout::EBDA_START, 2));
    }

    #[test]
    fn zero_page_keeps_the_bzimage_header() {
        let mem = create_guest_memory(64).unwrap();
        let hdr = setup_header {
            boot_flag: 0xaa55,
            header: HDRS_MAGIC,
            version: 0x020f,
            type_of_loader: 0,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        configure_linux_boot(
            &mem,
            Some(hdr),
            GuestAddress(layout::CMDLINE_START),
            1,
            None,
            GuestAddress(layout::ACPI_START),
        )
        .unwrap();
        let p: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.initrd_addr_max }, 0x7fff_ffff);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn zero_page_rejects_bad_input() {
        let mem = create_guest_memory(64).unwrap();
        let rsdp = GuestAddress(layout::ACPI_START);
        let cmdline = GuestAddress(layout::CMDLINE_START);
        assert!(matches!(
            configure_linux_boot(&mem, None, cmdline, 4096, None, rsdp),
            Err(BootError::CmdlineTooLong { .. })
        ));
        assert!(matches!(
            configure_linux_boot(&mem, None, GuestAddress(5 * GIB), 1, None, rsdp),
            Err(BootError::Above4G { .. })
        ));
    }

    #[test]
    fn pvh_start_info_reads_back() {
        let mem = create_guest_memory(64).unwrap();
        let initrd = InitrdLocation {
            addr: GuestAddress(0x300_0000),
            size: 0x1234,
        };
        configure_pvh_boot(
            &mem,
            GuestAddress(layout::CMDLINE_START),
            Some(initrd),
            GuestAddress(layout::ACPI_START),
        )
        .unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, layout::CMDLINE_START);
        assert_eq!(info.rsdp_paddr, layout::ACPI_START);
        assert_eq!(info.memmap_paddr, layout::PVH_MEMMAP_START);
        assert_eq!(info.memmap_entries, 4);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, PVH_MODLIST_START);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((module.paddr, module.size), (0x300_0000, 0x1234));
        let hole: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(layout::PVH_MEMMAP_START + 24))
            .unwrap();
        assert_eq!((hole.addr, hole.type_), (layout::EBDA_START, 2));
        let high: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(layout::PVH_MEMMAP_START + 48))
            .unwrap();
        assert_eq!((high.addr, high.size, high.type_), (MIB, 63 * MIB, 1));

        configure_pvh_boot(&mem, GuestAddress(0), None, GuestAddress(0)).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
    }

    fn initrd_file(len: usize) -> (TempFile, File) {
        let tmp = TempFile::new().unwrap();
        let mut f = File::options()
            .read(true)
            .write(true)
            .open(tmp.as_path())
            .unwrap();
        f.write_all(&vec![0xa5; len]).unwrap();
        (tmp, f)
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram() {
        let mem = create_guest_memory(64).unwrap();
        let (_tmp, mut f) = initrd_file(5000);
        let loc = load_initrd(&mem, &mut f, None, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(loc.size, 5000);
        assert_eq!(loc.addr, GuestAddress(64 * MIB - 0x2000));
        let first: u8 = mem.read_obj(loc.addr).unwrap();
        let last: u8 = mem.read_obj(GuestAddress(loc.addr.0 + 4999)).unwrap();
        assert_eq!((first, last), (0xa5, 0xa5));
    }

    #[test]
    fn initrd_respects_the_header_limit() {
        let mem = create_guest_memory(64).unwrap();
        let (_tmp, mut f) = initrd_file(4096);
        let limit = (16 * MIB - 1) as u32;
        let loc = load_initrd(&mem, &mut f, Some(limit), GuestAddress(0x20_0000)).unwrap();
        assert_eq!(loc.addr, GuestAddress(16 * MIB - 4096));
    }

    #[test]
    fn initrd_too_big_or_empty_is_refused() {
        let mem = create_guest_memory(64).unwrap();
        let (_tmp, mut f) = initrd_file(8 * MIB as usize);
        let err = load_initrd(&mem, &mut f, None, GuestAddress(60 * MIB)).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooBig { .. }), "{err}");
        // The header limit can leave no room above the kernel either.
        let err = load_initrd(&mem, &mut f, Some(0x90_0000), GuestAddress(0x20_0000)).unwrap_err();
        assert!(matches!(err, BootError::InitrdTooBig { .. }), "{err}");
        let (_tmp, mut empty) = initrd_file(0);
        assert!(matches!(
            load_initrd(&mem, &mut empty, None, GuestAddress(0)),
            Err(BootError::InitrdEmpty)
        ));
    }
}
