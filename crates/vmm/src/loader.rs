//! Puts a bootable guest into memory: kernel, command line, initrd, boot protocol data,
//! ACPI tables, GDT and page tables. Run at boot and again on every reset in place.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::{acpi, boot, layout};
use crate::config::VmConfig;
use crate::memory::GuestMemoryMmap;
use crate::vstate::regs::{self, BootEntry, BootProtocol};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {what} {path}")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("kernel {path} is empty")]
    EmptyKernel { path: PathBuf },
    #[error("kernel {path} is not a loadable ELF vmlinux or bzImage")]
    BadKernel {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("initrd {path}")]
    Initrd {
        path: PathBuf,
        #[source]
        source: boot::BootError,
    },
    #[error("cannot write the reset vector into guest memory")]
    ResetVector(#[source] vm_memory::GuestMemoryError),
    #[error("cannot write the kernel command line into guest memory")]
    Cmdline(#[source] vm_memory::GuestMemoryError),
    #[error(transparent)]
    BootParams(#[from] boot::BootError),
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    #[error(transparent)]
    BootTables(#[from] regs::BootTablesError),
}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
/// The 64-bit entry point sits 0x200 bytes into a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Opens a kernel or initrd, refusing directories and devices with a clear message.
fn open_regular(what: &'static str, path: &Path) -> Result<File, LoadError> {
    let open = |source| LoadError::Open {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open)?;
    if !file.metadata().map_err(open)?.is_file() {
        return Err(LoadError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
) -> Result<(KernelLoaderResult, BootEntry), LoadError> {
    let mut file = open_regular("kernel", path)?;
    let read_error = |source| LoadError::Open {
        what: "kernel",
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0u8; 4];
    let read = file.read(&mut magic).map_err(read_error)?;
    if read == 0 {
        return Err(LoadError::EmptyKernel {
            path: path.to_path_buf(),
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(read_error)?;
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let bad = |source| LoadError::BadKernel {
        path: path.to_path_buf(),
        source,
    };
    if read == 4 && magic == ELF_MAGIC {
        let result = Elf::load(mem, None, &mut file, himem).map_err(bad)?;
        let boot = match result.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(entry) => BootEntry {
                protocol: BootProtocol::Pvh,
                entry,
            },
            _ => BootEntry {
                protocol: BootProtocol::Linux64,
                entry: result.kernel_load,
            },
        };
        Ok((result, boot))
    } else {
        let result = BzImage::load(mem, None, &mut file, himem).map_err(bad)?;
        let entry = GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET);
        Ok((
            result,
            BootEntry {
                protocol: BootProtocol::Linux64,
                entry,
            },
        ))
    }
}

/// The end of the memory the kernel will use while booting: a bzImage decompresses
/// itself into `init_size` bytes from its load address, beyond the compressed image.
fn kernel_end(kernel: &KernelLoaderResult) -> GuestAddress {
    let unpacked = kernel
        .setup_header
        .map(|h| kernel.kernel_load.0 + u64::from(h.init_size))
        .unwrap_or(0);
    GuestAddress(kernel.kernel_end.max(unpacked))
}

/// What a guest finds at the reset vector: we have no firmware, so it does what firmware
/// would end in, a reset: `mov al, 0xfe; out 0x64, al` (i8042 reset line), then
/// `cli; hlt` in a loop should the write be ignored.
const RESET_VECTOR_STUB: [u8; 8] = [0xb0, 0xfe, 0xe6, 0x64, 0xfa, 0xf4, 0xeb, 0xfc];

/// Loads everything the guest needs to boot and returns where its vCPUs start.
pub fn load_guest(mem: &GuestMemoryMmap, config: &VmConfig) -> Result<BootEntry, LoadError> {
    let (kernel, boot_entry) = load_kernel(mem, &config.kernel)?;

    let cmdline = config.cmdline.as_bytes();
    mem.write_slice(cmdline, GuestAddress(layout::CMDLINE_START))
        .and_then(|_| {
            mem.write_obj(
                0u8,
                GuestAddress(layout::CMDLINE_START + cmdline.len() as u64),
            )
        })
        .map_err(LoadError::Cmdline)?;

    let initrd = match &config.initrd {
        None => None,
        Some(path) => {
            let mut file = open_regular("initrd", path)?;
            let header_max = kernel.setup_header.map(|h| h.initrd_addr_max);
            let location = boot::load_initrd(mem, &mut file, header_max, kernel_end(&kernel))
                .map_err(|source| LoadError::Initrd {
                    path: path.clone(),
                    source,
                })?;
            Some(location)
        }
    };

    let rsdp = acpi::create_acpi_tables(mem, config.vcpus)?;
    let cmdline_addr = GuestAddress(layout::CMDLINE_START);
    match boot_entry.protocol {
        BootProtocol::Pvh => boot::configure_pvh_boot(mem, cmdline_addr, initrd, rsdp)?,
        BootProtocol::Linux64 => boot::configure_linux_boot(
            mem,
            kernel.setup_header,
            cmdline_addr,
            cmdline.len() + 1,
            initrd,
            rsdp,
        )?,
    }
    regs::write_boot_tables(mem)?;
    mem.write_slice(&RESET_VECTOR_STUB, GuestAddress(layout::RESET_VECTOR))
        .map_err(LoadError::ResetVector)?;
    Ok(boot_entry)
}
