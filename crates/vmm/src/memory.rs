//! Guest memory: anonymous private mappings laid out by `arch::layout::ram_regions`.

use crate::arch::layout;
use crate::vstate::memory::{ram_region, GuestRamError};

/// The guest memory type used across the VMM (no dirty-page bitmap yet).
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;
pub use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {mib} MiB of guest memory")]
    Mmap {
        mib: u64,
        #[source]
        source: GuestRamError,
    },
    #[error("guest memory regions overlap")]
    Layout(#[source] vm_memory::GuestRegionCollectionError),
}

pub fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let regions = layout::ram_regions(mib << 20)
        .into_iter()
        .map(|(start, len)| ram_region(start, len as usize))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| MemoryError::Mmap { mib, source })?;
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_low_ram_only_for_small_guests() {
        use vm_memory::GuestAddress;
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
        assert!(mem.write_obj(7u32, GuestAddress(0x7000)).is_ok());
        assert!(mem.write_obj(7u32, GuestAddress(64 << 20)).is_err());
    }
}
