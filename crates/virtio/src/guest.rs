//! Fast paths into guest memory for a device's hot path.
//!
//! vm-memory's general accessors (`read_slice`, `get_slices`...) walk an iterator that
//! allows a range to span regions; on a 4 KiB request that walk costs as much as the
//! rest of the device model. A range almost always lies in one region, so these look the
//! region up once and fall back to the general path only when the range does not.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileSlice};

use crate::GuestMemoryMmap;

/// `len` bytes of guest memory at `addr` as one slice, if they lie in one region.
pub(crate) fn region_slice(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
) -> Option<VolatileSlice<'_>> {
    let (region, at) = mem.to_region_addr(addr)?;
    region.get_slice(at, len).ok()
}

/// Fills `buf` from guest memory at `addr`; false if the range is not all guest memory.
pub(crate) fn read(mem: &GuestMemoryMmap, addr: GuestAddress, buf: &mut [u8]) -> bool {
    match region_slice(mem, addr, buf.len()) {
        Some(slice) => {
            slice.copy_to(buf);
            true
        }
        None => mem.read_slice(buf, addr).is_ok(),
    }
}

/// Writes `buf` to guest memory at `addr`; false, with nothing written, if the range is
/// not all guest memory (vm-memory alone would write the part that is).
pub(crate) fn write(mem: &GuestMemoryMmap, addr: GuestAddress, buf: &[u8]) -> bool {
    match region_slice(mem, addr, buf.len()) {
        Some(slice) => {
            slice.copy_from(buf);
            true
        }
        None => mem.check_range(addr, buf.len()) && mem.write_slice(buf, addr).is_ok(),
    }
}

/// `len` bytes at `addr` as slices of guest memory, appended to `out`: one slice per
/// region the range touches. False if part of the range is not guest memory.
pub(crate) fn slices<'m>(
    mem: &'m GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
    out: &mut Vec<VolatileSlice<'m>>,
) -> bool {
    if let Some(slice) = region_slice(mem, addr, len) {
        out.push(slice);
        return true;
    }
    for slice in mem.get_slices(addr, len) {
        match slice {
            Ok(s) => out.push(s),
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two adjacent regions, so that a range can span them.
    fn two_regions() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)])
            .unwrap()
    }

    #[test]
    fn ranges_inside_across_and_outside_regions() {
        let mem = two_regions();
        let data: Vec<u8> = (0..=255).collect();
        for at in [0u64, 0x10, 0xf80, 0x1f00] {
            assert!(write(&mem, GuestAddress(at), &data), "{at:#x}");
            let mut back = [0u8; 256];
            assert!(read(&mem, GuestAddress(at), &mut back), "{at:#x}");
            assert_eq!(back[..], data[..]);
        }
        // Across the boundary: two slices that hold what was written.
        let mut out = Vec::new();
        assert!(slices(&mem, GuestAddress(0xf80), 256, &mut out));
        assert_eq!(
            out.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [0x80, 0x80]
        );
        let mut joined = vec![0u8; 256];
        out[0].copy_to(&mut joined[..0x80]);
        out[1].copy_to(&mut joined[0x80..]);
        assert_eq!(joined, data);
        // Past the end, or at an address that overflows: refused, nothing written.
        let mut out = Vec::new();
        assert!(!slices(&mem, GuestAddress(0x1f80), 256, &mut out));
        assert!(!write(&mem, GuestAddress(0x1f80), &data));
        assert!(!read(&mem, GuestAddress(u64::MAX), &mut [0u8; 2]));
        let mut tail = [0u8; 0x80];
        assert!(read(&mem, GuestAddress(0x1f80), &mut tail));
        assert_eq!(
            tail[..],
            data[0x80..],
            "the refused write left the tail alone"
        );
    }
}
