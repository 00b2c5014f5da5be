//! Giving guest RAM back to the host: the balloon's [`MemoryReclaimer`].
//!
//! Guest RAM is private anonymous memory (`vstate::memory`), so `madvise(MADV_DONTNEED)` on
//! the VMM's mapping frees the pages at once; the next guest access faults in a zeroed page,
//! which is what a page taken back from the balloon must read as.
//!
//! Huge pages: guest RAM is advised for transparent huge pages (`MADV_HUGEPAGE`). Releasing
//! a whole 2 MiB-aligned huge page frees it at once. Releasing part of one (the balloon
//! works in 4 KiB pages, and Linux inflates one page at a time) splits its mapping: the
//! process's RSS drops by the released pages right away, but the huge page itself is only
//! split, and its released 4 KiB pages handed back to the host's allocator, later, by the
//! kernel's deferred-split shrinker under memory pressure. khugepaged may also collapse a
//! partly released range into a huge page again (when `max_ptes_none` allows), filling the
//! released pages with zeroes, i.e. taking the memory back. Ballooning with THP therefore
//! frees the host's memory reliably only in whole, aligned 2 MiB units; that is the price of
//! the faster nested boot that THP buys (docs/vmm.md).

use std::io;

use fv_virtio::balloon::{MemoryReclaimer, PAGE_SIZE};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::GuestMemoryMmap;

/// Releases guest RAM with `madvise(MADV_DONTNEED)` on our mapping of it.
pub struct GuestRamReclaimer {
    mem: GuestMemoryMmap,
}

impl GuestRamReclaimer {
    pub fn new(mem: GuestMemoryMmap) -> Self {
        GuestRamReclaimer { mem }
    }

    /// The host address of guest-physical `[addr, addr + len)`, if it is page-aligned, not
    /// empty and inside one region of guest RAM.
    fn host_range(&self, addr: GuestAddress, len: u64) -> Option<(*mut u8, usize)> {
        if len == 0 || !addr.0.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let region = self.mem.find_region(addr)?;
        let offset = addr.0.checked_sub(region.start_addr().0)?;
        let end = offset.checked_add(len)?;
        if end > region.len() {
            return None;
        }
        let offset = usize::try_from(offset).ok()?;
        let len = usize::try_from(len).ok()?;
        // `offset < region.len()`, the length of the live mapping at `as_ptr()`, so this
        // stays inside it (wrapping_add: no unsafe needed to compute an address).
        Some((region.as_ptr().wrapping_add(offset), len))
    }
}

impl MemoryReclaimer for GuestRamReclaimer {
    fn release(&self, addr: GuestAddress, len: u64) -> io::Result<()> {
        let (host, len) = self
            .host_range(addr, len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `host..host + len` lies inside one region of guest RAM (checked just
        // above), a private anonymous mapping that `vstate::memory` made and never unmaps
        // while `self.mem` (a clone of the VM's memory) lives; the address is page-aligned
        // because both the region's start (2 MiB-aligned) and the offset are. MADV_DONTNEED
        // on such a mapping only replaces pages with zero-fill-on-demand ones; nothing in
        // the VMM holds a Rust reference into guest RAM (it is accessed through volatile
        // slices only), so no reference sees its memory change under it. The guest, which
        // asked for this by inflating the balloon, gets zeroes if it touches the pages.
        let ret = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use vm_memory::Bytes;

    #[test]
    fn released_pages_read_as_zero_and_bad_ranges_are_refused() {
        let mem = create_guest_memory(32).unwrap();
        let reclaimer = GuestRamReclaimer::new(mem.clone());
        for page in 0..4u64 {
            mem.write_obj(
                0xfeed_u64 + page,
                GuestAddress(0x10_0000 + page * PAGE_SIZE),
            )
            .unwrap();
        }
        reclaimer
            .release(GuestAddress(0x10_1000), 2 * PAGE_SIZE)
            .unwrap();
        let read = |page: u64| {
            mem.read_obj::<u64>(GuestAddress(0x10_0000 + page * PAGE_SIZE))
                .unwrap()
        };
        assert_eq!(
            [read(0), read(1), read(2), read(3)],
            [0xfeed, 0, 0, 0xfeed + 3]
        );

        let end = 32u64 << 20;
        for (addr, len) in [
            (0x10_0800, PAGE_SIZE),
            (0x10_0000, 100),
            (0x10_0000, 0),
            (end - PAGE_SIZE, 2 * PAGE_SIZE),
            (end, PAGE_SIZE),
            (u64::MAX - 4095, PAGE_SIZE),
            (0, u64::MAX - 4095),
        ] {
            let e = reclaimer.release(GuestAddress(addr), len).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{addr:#x}+{len:#x}");
        }
        reclaimer
            .release(GuestAddress(end - PAGE_SIZE), PAGE_SIZE)
            .unwrap();
    }
}
