//! VHD (Microsoft's Virtual Hard Disk, XenServer's VDI format) for `format=vhd`: reading a
//! fixed or dynamic image a client uploaded, and laying out a dynamic one to stream.
//!
//! An uploaded image is untrusted: every field is checked before it is used, every offset
//! and length with checked arithmetic against the file's length, and nothing is allocated
//! in proportion to what a header claims (the block allocation table is read a page at a
//! time). A differencing VHD (one that names a parent) is refused, as a qcow2 image with a
//! backing file is.
//!
//! Layout (big-endian fields): a 512-byte footer at the end of the file (`conectix`); for a
//! dynamic disk, a copy of it at 0, a 1024-byte dynamic header (`cxsparse`) that the footer's
//! data offset points to, a block allocation table (BAT, one `u32` sector number per
//! block, `0xffffffff` for a block never written) and the blocks, each a sector bitmap
//! followed by the block's data. As QEMU does, reads ignore the bitmaps: an allocated
//! block's data is read as it is.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The largest VHD: 2040 GiB (the format's CHS geometry limit, which QEMU enforces too).
pub const MAX_SIZE: u64 = 0xff00_0000 * 512;
/// The block size of the images we write: 2 MiB, the format's default.
pub const BLOCK: u64 = 2 << 20;
const SECTOR: u64 = 512;
const FOOTER_LEN: u64 = 512;
const HEADER_LEN: u64 = 1024;
const UNUSED: u32 = 0xffff_ffff;
/// BAT entries read (and cached) at a time.
const BAT_PAGE: u64 = 1024;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;

/// Why an upload is not a VHD we can read.
pub type Invalid = String;

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// The one's complement of the sum of the bytes, the checksum field (at `at`) counted as 0.
fn checksum(b: &[u8], at: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(at..at + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)));
    !sum
}

enum Kind {
    /// The data is the file's first `size` bytes.
    Fixed,
    Dynamic {
        block_size: u64,
        bat_offset: u64,
        /// BAT entries that cover the disk (the header may declare more; they are unused).
        blocks: u64,
        /// Bytes of sector bitmap before each block's data.
        bitmap_len: u64,
    },
}

/// A VHD image in a file, checked.
pub struct VhdReader {
    file: File,
    len: u64,
    size: u64,
    kind: Kind,
    /// The last page of the BAT read: its first entry's index and the entries.
    page: Option<(u64, Vec<u32>)>,
}

impl VhdReader {
    /// Checks the image in `file` (of `len` bytes).
    pub fn open(file: File, len: u64) -> Result<VhdReader, Invalid> {
        if len < FOOTER_LEN {
            return Err(format!(
                "the upload is {len} bytes, too short for a VHD footer"
            ));
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut footer, len - FOOTER_LEN)
            .map_err(|e| format!("reading the VHD footer: {e}"))?;
        if &footer[..8] != b"conectix" {
            return Err("no VHD footer (the last 512 bytes lack the \"conectix\" cookie)".into());
        }
        if be32(&footer, 64) != checksum(&footer, 64) {
            return Err("the VHD footer's checksum is wrong".into());
        }
        let data_offset = be64(&footer, 16);
        let size = be64(&footer, 48);
        if !size.is_multiple_of(SECTOR) {
            return Err(format!(
                "the VHD's size ({size} bytes) is not a multiple of 512"
            ));
        }
        if size > MAX_SIZE {
            return Err(format!(
                "the VHD's size ({size} bytes) is above the format's limit of {MAX_SIZE}"
            ));
        }
        let end = len - FOOTER_LEN;
        let kind = match be32(&footer, 60) {
            2 => {
                if size > end {
                    return Err(format!(
                        "a fixed VHD of {size} bytes, but only {end} bytes of data before its footer"
                    ));
                }
                Kind::Fixed
            }
            3 => dynamic_header(&file, data_offset, size, end)?,
            4 => {
                return Err(
                    "a differencing VHD (it names a parent disk): upload a standalone image".into(),
                )
            }
            t => return Err(format!("unknown VHD disk type {t}")),
        };
        Ok(VhdReader {
            file,
            len,
            size,
            kind,
            page: None,
        })
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where block `i`'s data starts in the file, or `None` if it was never written.
    fn block_data(&mut self, i: u64) -> Result<Option<u64>, Invalid> {
        let Kind::Dynamic {
            block_size,
            bat_offset,
            blocks,
            bitmap_len,
        } = self.kind
        else {
            return Ok(Some(i * SECTOR));
        };
        if i >= blocks {
            return Ok(None);
        }
        let first = i - i % BAT_PAGE;
        let cached = matches!(&self.page, Some((f, _)) if *f == first);
        if !cached {
            let n = BAT_PAGE.min(blocks - first);
            let mut raw = vec![0u8; (n * 4) as usize];
            // blocks * 4 + bat_offset was checked against the file's length.
            self.file
                .read_exact_at(&mut raw, bat_offset + first * 4)
                .map_err(|e| format!("reading the VHD's block table: {e}"))?;
            let entries = raw.chunks_exact(4).map(|c| be32(c, 0)).collect();
            self.page = Some((first, entries));
        }
        let entry = match &self.page {
            Some((_, entries)) => entries[(i - first) as usize],
            None => UNUSED,
        };
        if entry == UNUSED {
            return Ok(None);
        }
        let start = u64::from(entry) * SECTOR + bitmap_len;
        match start.checked_add(block_size) {
            Some(e) if e <= self.len => Ok(Some(start)),
            _ => Err(format!(
                "block {i} of the VHD lies past the end of the file (sector {entry})"
            )),
        }
    }

    fn block_size(&self) -> u64 {
        match self.kind {
            Kind::Fixed => u64::MAX,
            Kind::Dynamic { block_size, .. } => block_size,
        }
    }

    /// Whether data is stored from `offset` on, and for how many bytes (at most `max`, at
    /// least 1 unless at the end).
    pub fn extent(&mut self, offset: u64, max: u64) -> Result<(bool, u64), Invalid> {
        let left = self.size.saturating_sub(offset).min(max);
        if let Kind::Fixed = self.kind {
            return Ok((true, left));
        }
        let bs = self.block_size();
        let mut n = (bs - offset % bs).min(left);
        let stored = self.block_data(offset / bs)?.is_some();
        // Whole blocks of the same kind after it, a page of the table at most (so images
        // with tiny blocks are not walked one block per call).
        let mut next = offset / bs + 1;
        while n < left && !next.is_multiple_of(BAT_PAGE) {
            if self.block_data(next)?.is_some() != stored {
                break;
            }
            n = (n + bs).min(left);
            next += 1;
        }
        Ok((stored, n))
    }

    /// Fills `buf` from the disk at `offset` (within the disk).
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), Invalid> {
        let io = |e: std::io::Error| format!("reading the VHD: {e}");
        if let Kind::Fixed = self.kind {
            return self.file.read_exact_at(buf, offset).map_err(io);
        }
        let bs = self.block_size();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let n = ((bs - at % bs) as usize).min(buf.len() - done);
            let piece = &mut buf[done..done + n];
            match self.block_data(at / bs)? {
                Some(start) => self
                    .file
                    .read_exact_at(piece, start + at % bs)
                    .map_err(io)?,
                None => piece.fill(0),
            }
            done += n;
        }
        Ok(())
    }
}

/// Checks the dynamic header at `offset` of a disk of `size` bytes whose structures must
/// end by `end`.
fn dynamic_header(file: &File, offset: u64, size: u64, end: u64) -> Result<Kind, Invalid> {
    match offset.checked_add(HEADER_LEN) {
        Some(e) if e <= end => {}
        _ => {
            return Err(format!(
                "the VHD's dynamic header offset ({offset}) lies outside the file"
            ))
        }
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, offset)
        .map_err(|e| format!("reading the VHD's dynamic header: {e}"))?;
    if &h[..8] != b"cxsparse" {
        return Err("the VHD's dynamic header lacks the \"cxsparse\" cookie".into());
    }
    if be32(&h, 36) != checksum(&h, 36) {
        return Err("the VHD's dynamic header checksum is wrong".into());
    }
    let bat_offset = be64(&h, 16);
    let entries = u64::from(be32(&h, 28));
    let block_size = u64::from(be32(&h, 32));
    if !block_size.is_power_of_two() || !(SECTOR..=1 << 28).contains(&block_size) {
        return Err(format!(
            "the VHD's block size ({block_size}) is not a power of two from 512 bytes to 256 MiB"
        ));
    }
    let blocks = size.div_ceil(block_size);
    if entries < blocks {
        return Err(format!(
            "the VHD's block table has {entries} entries, too few for {size} bytes"
        ));
    }
    match blocks
        .checked_mul(4)
        .and_then(|b| b.checked_add(bat_offset))
    {
        Some(e) if e <= end => {}
        _ => return Err("the VHD's block table lies outside the file".into()),
    }
    let bitmap_len = (block_size / SECTOR / 8).next_multiple_of(SECTOR);
    Ok(Kind::Dynamic {
        block_size,
        bat_offset,
        blocks,
        bitmap_len,
    })
}

/// A dynamic VHD to stream, with the blocks (of [`BLOCK`] bytes) that hold data.
pub struct VhdLayout {
    pub size: u64,
    /// Which blocks are stored, in order.
    pub allocated: Vec<bool>,
}

impl VhdLayout {
    fn bat_len(&self) -> u64 {
        (self.allocated.len() as u64 * 4).next_multiple_of(SECTOR)
    }

    fn first_block(&self) -> u64 {
        FOOTER_LEN + HEADER_LEN + self.bat_len()
    }

    /// Bytes a stored block takes: its bitmap sector, then its data.
    pub const fn block_len() -> u64 {
        SECTOR + BLOCK
    }

    /// The whole image's length.
    pub fn len(&self) -> u64 {
        let stored = self.allocated.iter().filter(|a| **a).count() as u64;
        self.first_block() + stored * Self::block_len() + FOOTER_LEN
    }

    /// The footer (also the image's first 512 bytes).
    pub fn footer(&self, unix_time: u64, id: [u8; 16]) -> Vec<u8> {
        let mut f = vec![0u8; FOOTER_LEN as usize];
        f[..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&FOOTER_LEN.to_be_bytes());
        let stamp = u32::try_from(unix_time.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
        f[24..28].copy_from_slice(&stamp.to_be_bytes());
        // XenServer's creator: readers (QEMU included) then take the size from the footer's
        // current size, not from the CHS geometry.
        f[28..32].copy_from_slice(b"tap\0");
        f[32..36].copy_from_slice(&0x0001_0003u32.to_be_bytes());
        f[36..40].copy_from_slice(b"Wi2k");
        f[40..48].copy_from_slice(&self.size.to_be_bytes());
        f[48..56].copy_from_slice(&self.size.to_be_bytes());
        let (c, h, s) = geometry(self.size / SECTOR);
        f[56..58].copy_from_slice(&c.to_be_bytes());
        f[58] = h;
        f[59] = s;
        f[60..64].copy_from_slice(&3u32.to_be_bytes());
        f[68..84].copy_from_slice(&id);
        let sum = checksum(&f, 64);
        f[64..68].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// The image's head: footer copy, dynamic header and block allocation table.
    pub fn head(&self, footer: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.first_block() as usize);
        out.extend_from_slice(footer);
        let mut h = vec![0u8; HEADER_LEN as usize];
        h[..8].copy_from_slice(b"cxsparse");
        h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        h[16..24].copy_from_slice(&(FOOTER_LEN + HEADER_LEN).to_be_bytes());
        h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        let entries = u32::try_from(self.allocated.len()).unwrap_or(u32::MAX);
        h[28..32].copy_from_slice(&entries.to_be_bytes());
        h[32..36].copy_from_slice(&(BLOCK as u32).to_be_bytes());
        let sum = checksum(&h, 36);
        h[36..40].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&h);
        let mut next = self.first_block() / SECTOR;
        for &a in &self.allocated {
            let entry = if a {
                let e = u32::try_from(next).unwrap_or(UNUSED);
                next += Self::block_len() / SECTOR;
                e
            } else {
                UNUSED
            };
            out.extend_from_slice(&entry.to_be_bytes());
        }
        out.resize(self.first_block() as usize, 0xff);
        out
    }
}

/// The VHD specification's CHS geometry for `sectors`.
fn geometry(sectors: u64) -> (u16, u8, u8) {
    let total = sectors.min(65535 * 16 * 255);
    let (spt, heads, cth) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    (
        u16::try_from(cth / heads).unwrap_or(u16::MAX),
        heads as u8,
        spt as u8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(bytes: &[u8]) -> (std::path::PathBuf, File, u64) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("fvd-vhd-{}-{n}", std::process::id()));
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        (p.clone(), File::open(&p).unwrap(), bytes.len() as u64)
    }

    /// A dynamic image of 5 MiB with data in block 1, written by [`VhdLayout`], read back.
    #[test]
    fn a_written_image_reads_back() {
        let size = 5 << 20;
        let layout = VhdLayout {
            size,
            allocated: vec![false, true, false],
        };
        let footer = layout.footer(VHD_EPOCH + 10, [7; 16]);
        let mut img = layout.head(&footer);
        img.extend_from_slice(&[0xff; 512]);
        let data: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
        img.extend_from_slice(&data);
        img.extend_from_slice(&footer);
        assert_eq!(img.len() as u64, layout.len());
        let (p, f, len) = temp(&img);
        let mut r = VhdReader::open(f, len).unwrap();
        assert_eq!(r.size(), size);
        assert_eq!(r.extent(0, u64::MAX).unwrap(), (false, BLOCK));
        assert_eq!(r.extent(BLOCK + 5, u64::MAX).unwrap(), (true, BLOCK - 5));
        assert_eq!(r.extent(4 << 20, u64::MAX).unwrap(), (false, 1 << 20));
        let mut buf = vec![1u8; 4096];
        r.read_at(&mut buf, BLOCK - 2048).unwrap();
        assert!(buf[..2048].iter().all(|b| *b == 0));
        assert_eq!(&buf[2048..], &data[..2048]);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn hostile_images_are_refused_cleanly() {
        let layout = VhdLayout {
            size: 4 << 20,
            allocated: vec![true, false],
        };
        let footer = layout.footer(VHD_EPOCH, [1; 16]);
        let mut good = layout.head(&footer);
        good.extend_from_slice(&footer);
        // The block is missing from the file: found when read, not before.
        let (p, f, len) = temp(&good);
        let mut r = VhdReader::open(f, len).unwrap();
        assert!(r
            .read_at(&mut [0; 16], 0)
            .unwrap_err()
            .contains("past the end"));
        std::fs::remove_file(p).unwrap();

        let mut cases: Vec<(Vec<u8>, &str)> =
            vec![(vec![0; 100], "too short"), (vec![0; 4096], "conectix")];
        let mut bad_sum = good.clone();
        let n = bad_sum.len();
        bad_sum[n - 512 + 40] ^= 1;
        cases.push((bad_sum, "checksum"));
        // A footer whose fields are hostile, with a correct checksum.
        let patch = |f: &mut Vec<u8>, at: usize, v: &[u8]| {
            let n = f.len() - 512;
            f[n + at..n + at + v.len()].copy_from_slice(v);
            let sum = checksum(&f[n..], 64);
            f[n + 64..n + 68].copy_from_slice(&sum.to_be_bytes());
        };
        let mut huge = good.clone();
        patch(&mut huge, 48, &(u64::MAX / 512 * 512).to_be_bytes());
        cases.push((huge, "limit"));
        let mut far = good.clone();
        patch(&mut far, 16, &(u64::MAX - 10).to_be_bytes());
        cases.push((far, "outside"));
        let mut diff = good.clone();
        patch(&mut diff, 60, &4u32.to_be_bytes());
        cases.push((diff, "differencing"));
        let mut fixed = good.clone();
        patch(&mut fixed, 60, &2u32.to_be_bytes());
        cases.push((fixed, "fixed VHD"));
        for (img, want) in cases {
            let (p, f, len) = temp(&img);
            let err = VhdReader::open(f, len).err().unwrap();
            assert!(err.contains(want), "{err} (wanted {want})");
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn geometry_follows_the_specification() {
        // 64 MiB: 17 sectors per track, 8 heads.
        assert_eq!(geometry(131_072), (963, 8, 17));
        assert_eq!(geometry(u64::MAX), (65535, 16, 255));
    }
}
