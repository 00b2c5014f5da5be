//! Guest RAM mappings, aligned to 2 MiB in the host's address space.
//!
//! KVM maps guest memory with 2 MiB (nested) page-table entries only where a guest 2 MiB
//! page sits on a host 2 MiB huge page, which needs the host address to be 2 MiB-aligned
//! like the guest one. A plain mmap is only 4 KiB-aligned; QEMU aligns its RAM the same way.

use std::io;
use std::ptr;

use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{GuestAddress, GuestRegionMmap};

const HUGE_PAGE: usize = 2 << 20;
const PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

#[derive(Debug, thiserror::Error)]
pub enum GuestRamError {
    #[error("cannot map {len} bytes of guest RAM")]
    Mmap {
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot describe guest RAM to vm-memory")]
    Region(#[source] MmapRegionError),
    #[error("guest RAM at {0:#x} does not fit the guest address space")]
    Address(u64),
}

/// Maps `len` bytes of anonymous RAM at a 2 MiB-aligned host address. The mapping lives
/// until the process exits (one VM per process; a reset reuses it).
fn map_aligned(len: usize) -> Result<*mut u8, GuestRamError> {
    let mmap_error = |source| GuestRamError::Mmap { len, source };
    let total = len
        .checked_add(HUGE_PAGE)
        .ok_or_else(|| mmap_error(io::Error::from(io::ErrorKind::OutOfMemory)))?;
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing cannot alias
    // anything we own; the result is checked before use.
    let base = unsafe { libc::mmap(ptr::null_mut(), total, PROT, FLAGS, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(mmap_error(io::Error::last_os_error()));
    }
    let base = base as usize;
    let aligned = (base + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    let head = aligned - base;
    let tail = total - head - len;
    // SAFETY: both ranges lie inside the mapping made above, outside [aligned, aligned+len),
    // and nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    Ok(aligned as *mut u8)
}

/// One guest RAM region of `len` bytes at guest address `start`.
pub fn ram_region(start: u64, len: usize) -> Result<GuestRegionMmap<()>, GuestRamError> {
    let ptr = map_aligned(len)?;
    // SAFETY: `ptr..ptr+len` is a live private anonymous mapping made by `map_aligned`,
    // never unmapped, and handed to nothing else.
    let mapping = unsafe { MmapRegionBuilder::new(len).with_raw_mmap_pointer(ptr) }
        .with_mmap_prot(PROT)
        .with_mmap_flags(FLAGS)
        .build()
        .map_err(GuestRamError::Region)?;
    GuestRegionMmap::new(mapping, GuestAddress(start)).ok_or(GuestRamError::Address(start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryRegion, MemoryRegionAddress};

    #[test]
    fn regions_are_2mib_aligned_and_usable() {
        for len in [HUGE_PAGE, 3 * HUGE_PAGE + 4096] {
            let r = ram_region(0, len).unwrap();
            assert_eq!(r.as_ptr() as usize % HUGE_PAGE, 0);
            assert_eq!(r.len(), len as u64);
            let last = MemoryRegionAddress(len as u64 - 4);
            r.write_obj(0xdead_beef_u32, last).unwrap();
            assert_eq!(r.read_obj::<u32>(last).unwrap(), 0xdead_beef);
        }
    }
}
