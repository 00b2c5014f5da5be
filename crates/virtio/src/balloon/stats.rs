//! The statistics a guest reports: a packed array of `struct virtio_balloon_stat`
//! (`le16 tag; le64 val;`, 10 bytes each). Pure: bytes in, [`BalloonStats`] out.

use std::time::SystemTime;

/// Size of one `struct virtio_balloon_stat`.
pub const STAT_SIZE: usize = 10;

// Tags (virtio 1.2, 5.5.6.3, and Linux's later additions).
pub const VIRTIO_BALLOON_S_SWAP_IN: u16 = 0;
pub const VIRTIO_BALLOON_S_SWAP_OUT: u16 = 1;
pub const VIRTIO_BALLOON_S_MAJFLT: u16 = 2;
pub const VIRTIO_BALLOON_S_MINFLT: u16 = 3;
pub const VIRTIO_BALLOON_S_MEMFREE: u16 = 4;
pub const VIRTIO_BALLOON_S_MEMTOT: u16 = 5;
pub const VIRTIO_BALLOON_S_AVAIL: u16 = 6;
pub const VIRTIO_BALLOON_S_CACHES: u16 = 7;
pub const VIRTIO_BALLOON_S_HTLB_PGALLOC: u16 = 8;
pub const VIRTIO_BALLOON_S_HTLB_PGFAIL: u16 = 9;
pub const VIRTIO_BALLOON_S_OOM_KILL: u16 = 10;
pub const VIRTIO_BALLOON_S_ALLOC_STALL: u16 = 11;
pub const VIRTIO_BALLOON_S_ASYNC_SCAN: u16 = 12;
pub const VIRTIO_BALLOON_S_DIRECT_SCAN: u16 = 13;
pub const VIRTIO_BALLOON_S_ASYNC_RECLAIM: u16 = 14;
pub const VIRTIO_BALLOON_S_DIRECT_RECLAIM: u16 = 15;

/// The last statistics the guest reported; a field the guest did not send is `None`.
/// Memory amounts are in bytes, the rest are counts since the guest booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalloonStats {
    /// When the device received them.
    pub updated_at: SystemTime,
    /// Memory swapped in and out, bytes.
    pub swap_in: Option<u64>,
    pub swap_out: Option<u64>,
    /// Page faults that needed disk I/O, and the others.
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    /// Memory not used at all, bytes.
    pub free_memory: Option<u64>,
    /// Memory the guest has, bytes.
    pub total_memory: Option<u64>,
    /// Memory available for new work without swapping (Linux's MemAvailable), bytes.
    pub available_memory: Option<u64>,
    /// Memory in the page cache that can be dropped, bytes.
    pub disk_caches: Option<u64>,
    /// Huge page allocations and failures.
    pub hugetlb_allocations: Option<u64>,
    pub hugetlb_failures: Option<u64>,
    /// OOM kills, allocation stalls, pages scanned and reclaimed by kswapd (async) and
    /// directly.
    pub oom_kills: Option<u64>,
    pub alloc_stalls: Option<u64>,
    pub async_scans: Option<u64>,
    pub direct_scans: Option<u64>,
    pub async_reclaims: Option<u64>,
    pub direct_reclaims: Option<u64>,
}

impl BalloonStats {
    fn empty(updated_at: SystemTime) -> Self {
        BalloonStats {
            updated_at,
            swap_in: None,
            swap_out: None,
            major_faults: None,
            minor_faults: None,
            free_memory: None,
            total_memory: None,
            available_memory: None,
            disk_caches: None,
            hugetlb_allocations: None,
            hugetlb_failures: None,
            oom_kills: None,
            alloc_stalls: None,
            async_scans: None,
            direct_scans: None,
            async_reclaims: None,
            direct_reclaims: None,
        }
    }

    /// The field of `tag`, `None` for a tag we do not know.
    fn field(&mut self, tag: u16) -> Option<&mut Option<u64>> {
        Some(match tag {
            VIRTIO_BALLOON_S_SWAP_IN => &mut self.swap_in,
            VIRTIO_BALLOON_S_SWAP_OUT => &mut self.swap_out,
            VIRTIO_BALLOON_S_MAJFLT => &mut self.major_faults,
            VIRTIO_BALLOON_S_MINFLT => &mut self.minor_faults,
            VIRTIO_BALLOON_S_MEMFREE => &mut self.free_memory,
            VIRTIO_BALLOON_S_MEMTOT => &mut self.total_memory,
            VIRTIO_BALLOON_S_AVAIL => &mut self.available_memory,
            VIRTIO_BALLOON_S_CACHES => &mut self.disk_caches,
            VIRTIO_BALLOON_S_HTLB_PGALLOC => &mut self.hugetlb_allocations,
            VIRTIO_BALLOON_S_HTLB_PGFAIL => &mut self.hugetlb_failures,
            VIRTIO_BALLOON_S_OOM_KILL => &mut self.oom_kills,
            VIRTIO_BALLOON_S_ALLOC_STALL => &mut self.alloc_stalls,
            VIRTIO_BALLOON_S_ASYNC_SCAN => &mut self.async_scans,
            VIRTIO_BALLOON_S_DIRECT_SCAN => &mut self.direct_scans,
            VIRTIO_BALLOON_S_ASYNC_RECLAIM => &mut self.async_reclaims,
            VIRTIO_BALLOON_S_DIRECT_RECLAIM => &mut self.direct_reclaims,
            _ => return None,
        })
    }

    /// Parses the guest's buffer. Unknown tags are skipped (their number is returned
    /// with the stats), a tag given twice keeps its last value, and trailing bytes that
    /// do not make a whole entry are ignored.
    pub fn parse(bytes: &[u8], updated_at: SystemTime) -> (BalloonStats, usize) {
        let mut stats = BalloonStats::empty(updated_at);
        let mut unknown = 0;
        for entry in bytes.chunks_exact(STAT_SIZE) {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let mut val = [0u8; 8];
            val.copy_from_slice(&entry[2..STAT_SIZE]);
            match stats.field(tag) {
                Some(field) => *field = Some(u64::from_le_bytes(val)),
                None => unknown += 1,
            }
        }
        (stats, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(tag: u16, val: u64) -> Vec<u8> {
        let mut v = tag.to_le_bytes().to_vec();
        v.extend_from_slice(&val.to_le_bytes());
        v
    }

    #[test]
    fn parses_known_tags_and_skips_the_rest() {
        let t = SystemTime::UNIX_EPOCH;
        let mut bytes = Vec::new();
        bytes.extend(entry(VIRTIO_BALLOON_S_MEMFREE, 1 << 30));
        bytes.extend(entry(VIRTIO_BALLOON_S_MEMTOT, 4 << 30));
        bytes.extend(entry(999, 7));
        bytes.extend(entry(VIRTIO_BALLOON_S_MAJFLT, 3));
        bytes.extend(entry(VIRTIO_BALLOON_S_MAJFLT, 5));
        bytes.extend(entry(VIRTIO_BALLOON_S_DIRECT_RECLAIM, u64::MAX));
        bytes.extend([1, 2, 3]);
        let (s, unknown) = BalloonStats::parse(&bytes, t);
        assert_eq!(unknown, 1);
        assert_eq!(s.updated_at, t);
        assert_eq!(s.free_memory, Some(1 << 30));
        assert_eq!(s.total_memory, Some(4 << 30));
        assert_eq!(s.major_faults, Some(5));
        assert_eq!(s.direct_reclaims, Some(u64::MAX));
        assert_eq!(s.swap_in, None);
    }

    #[test]
    fn empty_and_short_buffers_give_no_values() {
        let t = SystemTime::UNIX_EPOCH;
        let (s, unknown) = BalloonStats::parse(&[], t);
        assert_eq!((s, unknown), (BalloonStats::empty(t), 0));
        let (s, _) = BalloonStats::parse(&[4, 0, 1], t);
        assert_eq!(s.free_memory, None);
    }
}
