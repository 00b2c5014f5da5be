//! A standalone qcow2 image laid out ahead and streamed, so that an export sends the VDI's
//! data once, straight from the VDI, with its exact length known before the first byte.
//!
//! Layout (qcow2 version 3, 64 KiB clusters, 16-bit refcounts), host cluster by cluster:
//! the header; the refcount table; the refcount blocks; the L1 table; one L2 table per L1
//! entry that maps data; then the data clusters in guest order. Every cluster is used once
//! (refcount 1); clusters of the VDI that hold no data are left out (they read as zeroes).

/// Cluster size: 64 KiB, qemu-img's default.
pub const CLUSTER: u64 = 1 << CLUSTER_BITS;
const CLUSTER_BITS: u32 = 16;
/// L2 entries per table (8 bytes each).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcounts per refcount block (16 bits each).
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// Set on L1 and L2 entries of clusters whose refcount is exactly 1.
const COPIED: u64 = 1 << 63;
const HEADER_LEN: u32 = 104;

/// Where everything goes, computed from the disk's size and the clusters holding data.
#[derive(Debug)]
pub struct Qcow2Layout {
    size: u64,
    /// Guest cluster numbers holding data, ascending.
    data: Vec<u64>,
    refcount_table_clusters: u64,
    refcount_blocks: u64,
    l1_entries: u64,
    l1_clusters: u64,
    /// L1 indices that get an L2 table, ascending.
    l2_tables: Vec<u64>,
}

impl Qcow2Layout {
    /// `data`: the guest cluster numbers (offset / [`CLUSTER`]) to store, ascending.
    pub fn new(size: u64, data: Vec<u64>) -> Qcow2Layout {
        let l1_entries = size.div_ceil(CLUSTER * L2_ENTRIES);
        let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
        let mut l2_tables: Vec<u64> = data.iter().map(|c| c / L2_ENTRIES).collect();
        l2_tables.dedup();
        // The refcount structures count themselves: grow them until they cover everything.
        let fixed = 1 + l1_clusters + l2_tables.len() as u64 + data.len() as u64;
        let (mut table, mut blocks) = (1u64, 1u64);
        loop {
            let total = fixed + table + blocks;
            let need_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
            let need_table = (need_blocks * 8).div_ceil(CLUSTER);
            if need_blocks <= blocks && need_table <= table {
                break;
            }
            blocks = blocks.max(need_blocks);
            table = table.max(need_table);
        }
        Qcow2Layout {
            size,
            data,
            refcount_table_clusters: table,
            refcount_blocks: blocks,
            l1_entries,
            l1_clusters,
            l2_tables,
        }
    }

    fn refcount_table_at(&self) -> u64 {
        1
    }
    fn refcount_blocks_at(&self) -> u64 {
        self.refcount_table_at() + self.refcount_table_clusters
    }
    fn l1_at(&self) -> u64 {
        self.refcount_blocks_at() + self.refcount_blocks
    }
    fn l2_at(&self) -> u64 {
        self.l1_at() + self.l1_clusters
    }
    fn data_at(&self) -> u64 {
        self.l2_at() + self.l2_tables.len() as u64
    }
    fn clusters(&self) -> u64 {
        self.data_at() + self.data.len() as u64
    }

    /// The image's length in bytes.
    pub fn len(&self) -> u64 {
        self.clusters() * CLUSTER
    }

    /// Everything before the data clusters.
    pub fn head(&self) -> Vec<u8> {
        let mut out = vec![0u8; (self.data_at() * CLUSTER) as usize];
        let mut put = |at: u64, bytes: &[u8]| {
            let at = at as usize;
            out[at..at + bytes.len()].copy_from_slice(bytes);
        };
        // Header (big-endian), then the end of header extensions (zeroes).
        put(0, b"QFI\xfb");
        put(4, &3u32.to_be_bytes());
        // backing file offset and size (8..20) stay 0.
        put(20, &CLUSTER_BITS.to_be_bytes());
        put(24, &self.size.to_be_bytes());
        // crypt method (32) stays 0.
        put(36, &(self.l1_entries as u32).to_be_bytes());
        put(40, &(self.l1_at() * CLUSTER).to_be_bytes());
        put(48, &(self.refcount_table_at() * CLUSTER).to_be_bytes());
        put(56, &(self.refcount_table_clusters as u32).to_be_bytes());
        // snapshots (60..72), feature bits (72..96) stay 0.
        put(96, &4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
        put(100, &HEADER_LEN.to_be_bytes());

        for b in 0..self.refcount_blocks {
            let entry = (self.refcount_blocks_at() + b) * CLUSTER;
            put(
                self.refcount_table_at() * CLUSTER + b * 8,
                &entry.to_be_bytes(),
            );
        }
        let refcounts = self.refcount_blocks_at() * CLUSTER;
        for c in 0..self.clusters() {
            put(refcounts + c * 2, &1u16.to_be_bytes());
        }
        for (i, l1_index) in self.l2_tables.iter().enumerate() {
            let table = (self.l2_at() + i as u64) * CLUSTER;
            put(
                self.l1_at() * CLUSTER + l1_index * 8,
                &(table | COPIED).to_be_bytes(),
            );
        }
        let mut tables = self.l2_tables.iter().enumerate().peekable();
        for (i, guest) in self.data.iter().enumerate() {
            let l1_index = guest / L2_ENTRIES;
            while tables.peek().is_some_and(|(_, l)| **l < l1_index) {
                tables.next();
            }
            let Some((t, _)) = tables.peek() else { break };
            let table = (self.l2_at() + *t as u64) * CLUSTER;
            let host = (self.data_at() + i as u64) * CLUSTER;
            put(
                table + (guest % L2_ENTRIES) * 8,
                &(host | COPIED).to_be_bytes(),
            );
        }
        out
    }

    /// The guest clusters whose data follows the head, in order.
    pub fn data_clusters(&self) -> &[u64] {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with_qemu(path: &std::path::Path) {
        let out = std::process::Command::new("qemu-img")
            .args(["check", "-q"])
            .arg(path)
            .output()
            .expect("qemu-img (Debian qemu-utils)");
        assert!(out.status.success(), "qemu-img check: {out:?}");
    }

    /// Writes the image the layout describes, `fill(cluster)` in the first and last data
    /// clusters; the others are left sparse (they read as zeroes: enough for the metadata
    /// checks of a large case).
    fn write(layout: &Qcow2Layout, path: &std::path::Path, fill: impl Fn(u64) -> u8) {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::create(path).unwrap();
        let head = layout.head();
        file.write_all_at(&head, 0).unwrap();
        let data = layout.data_clusters();
        for (i, c) in data.iter().enumerate() {
            if i < 50 || i + 1 == data.len() {
                let at = head.len() as u64 + i as u64 * CLUSTER;
                file.write_all_at(&vec![fill(*c); CLUSTER as usize], at)
                    .unwrap();
            }
        }
        file.set_len(layout.len()).unwrap();
    }

    #[test]
    fn images_pass_qemu_img_check_and_read_back() {
        let dir = std::env::temp_dir().join(format!("fv-qcow2-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Empty; a few clusters; clusters under several L2 tables of a 16 TiB disk; a size
        // that is not a whole number of clusters; enough clusters for two refcount blocks.
        let many: Vec<u64> = (0..40_000).collect();
        let cases: Vec<(u64, Vec<u64>)> = vec![
            (1 << 20, vec![]),
            (1 << 20, vec![0, 3, 15]),
            (16 << 40, vec![0, 8191, 8192, (16 << 40) / CLUSTER - 1]),
            (CLUSTER * 3 + 512, vec![3]),
            (4 << 30, many),
        ];
        for (i, (size, data)) in cases.into_iter().enumerate() {
            let path = dir.join(format!("{i}.qcow2"));
            let layout = Qcow2Layout::new(size, data.clone());
            let fill = |c: u64| (c % 251) as u8 + 1;
            write(&layout, &path, fill);
            check_with_qemu(&path);
            let disk = fv_disk::open_disk(&path, Some(fv_disk::Format::Qcow2), true).unwrap();
            assert_eq!(disk.size(), size);
            for c in data.iter().take(50).chain(data.last()) {
                let mut buf = vec![0u8; 512];
                disk.read_at(&mut buf, c * CLUSTER).unwrap();
                assert_eq!(buf, vec![fill(*c); 512], "case {i} cluster {c}");
            }
            // A cluster that holds no data reads as zeroes.
            if !data.contains(&1) && size > 2 * CLUSTER {
                let mut buf = vec![0xffu8; 512];
                disk.read_at(&mut buf, CLUSTER).unwrap();
                assert_eq!(buf, vec![0; 512]);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
