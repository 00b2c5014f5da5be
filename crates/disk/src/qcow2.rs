//! qcow2 images through imago, with their backing chains.
//!
//! imago is built with its `sync` feature: a natively synchronous build of the same code (no
//! tokio, no runtime, plain `fn`s), whose `FormatAccess` is `Send + Sync` and takes `&self` for
//! positioned reads, writes, write-zeroes and flushes, with imago's own locks (parking_lot)
//! inside. The other choice, `sync-wrappers`, runs imago's async code in a tokio
//! current-thread runtime per image: every request from every thread then queues on that one
//! runtime, and `block_on` panics when called from inside another runtime (as `fvd` has).
//!
//! imago validates much of an image, but not everything a hostile file can say, so
//! [`check_header`] first checks the header against the file (tables inside it, sizes that fit,
//! no encryption or unsupported features). We open the backing chain ourselves rather than
//! through imago's implicit opening, so that we can refuse loops (by device and inode, which
//! also catches an image that names itself or a hard link to itself) and over-long chains.

use crate::error::{check_range, DiskError, Op};
use crate::{in_iov_groups, open_file, total_len, DiskFile, Extent, MemSlice};
use imago::file::File as ImagoFile;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{FormatAccess, ShallowMapping, StorageOpenOptions};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// "QFI\xfb", the first four bytes of every qcow2 image.
const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Bytes of a version 2 header; version 3 adds 32 more (`V3_HEADER_LEN`).
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;
/// QEMU's (and imago's) limit on the L1 table: 32 MiB, 4 Mi entries.
const MAX_L1_ENTRIES: u64 = 4 << 20;
/// QEMU's limit on the refcount table is 8 MiB; imago's is 32 MiB. We take imago's, so that
/// anything imago could open we open too, and nothing larger is ever allocated.
const MAX_REFTABLE_BYTES: u64 = 32 << 20;
/// QEMU's limit on internal snapshots.
const MAX_SNAPSHOTS: u32 = 65536;
/// Images in one chain, the top included. QEMU has no limit; XenServer stops VHD chains at 30.
pub(crate) const MAX_CHAIN_LEN: usize = 64;

/// Whether `file` starts with the qcow2 magic (a file shorter than the magic does not).
pub(crate) fn has_magic(file: &File) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(magic == MAGIC),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

fn be32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_be_bytes(b)
}

fn be64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

/// What [`check_refcounts_for_writing`] needs from a checked header.
pub(crate) struct Geometry {
    cluster_bits: u32,
    refcount_order: u32,
    reftable_offset: u64,
}

impl Geometry {
    pub(crate) fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// Checks a qcow2 header against the file it is in (`file_len` bytes), before imago reads
/// anything it points to: a header that passes points only inside the file, at tables of
/// bounded size, and asks for no feature we do not support.
pub(crate) fn check_header(path: &Path, file: &File, file_len: u64) -> Result<Geometry, DiskError> {
    let corrupt = |reason: String| DiskError::Corrupt {
        path: path.to_path_buf(),
        reason,
        source: None,
    };
    let bad_format = |reason: String| DiskError::BadFormat {
        path: path.to_path_buf(),
        reason,
    };

    let mut buf = [0u8; V3_HEADER_LEN];
    // Bounded by the array's length, so the cast cannot truncate.
    let have = file_len.min(V3_HEADER_LEN as u64) as usize;
    file.read_exact_at(&mut buf[..have], 0)
        .map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if have < MAGIC.len() || buf[..4] != MAGIC {
        return Err(bad_format("not a qcow2 image (no QFI\\xfb magic)".into()));
    }
    let version = be32(&buf, 4);
    if version != 2 && version != 3 {
        return Err(bad_format(format!(
            "qcow2 version {version} is not supported (only 2 and 3)"
        )));
    }
    let header_len = if version == 2 {
        V2_HEADER_LEN
    } else {
        V3_HEADER_LEN
    };
    if have < header_len {
        return Err(corrupt(format!(
            "truncated header: the file has {file_len} bytes, a version {version} header {header_len}"
        )));
    }

    let backing_offset = be64(&buf, 8);
    let backing_len = u64::from(be32(&buf, 16));
    let cluster_bits = be32(&buf, 20);
    let size = be64(&buf, 24);
    let crypt_method = be32(&buf, 32);
    let l1_entries = u64::from(be32(&buf, 36));
    let l1_offset = be64(&buf, 40);
    let reftable_offset = be64(&buf, 48);
    let reftable_clusters = u64::from(be32(&buf, 56));
    let snapshots = be32(&buf, 60);
    let snapshots_offset = be64(&buf, 64);

    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(format!(
            "cluster_bits {cluster_bits} is outside 9..=21 (512 B to 2 MiB clusters)"
        )));
    }
    let cluster_size = 1u64 << cluster_bits;
    if crypt_method != 0 {
        return Err(bad_format(format!(
            "encrypted qcow2 images (method {crypt_method}) are not supported"
        )));
    }

    // Version 2 images have 16-bit refcounts.
    let mut refcount_order = 4;
    if version == 3 {
        let incompatible = be64(&buf, 72);
        refcount_order = be32(&buf, 96);
        let v3_len = u64::from(be32(&buf, 100));
        if v3_len < V3_HEADER_LEN as u64 || v3_len > cluster_size || v3_len > file_len {
            return Err(corrupt(format!(
                "header_length {v3_len} is outside {V3_HEADER_LEN}..=min(cluster size {cluster_size}, file length {file_len})"
            )));
        }
        if incompatible & 1 != 0 {
            return Err(corrupt(
                "the image is marked dirty (lazy refcounts, not closed cleanly); \
                 repair it with `qemu-img check -r all`"
                    .into(),
            ));
        }
        if incompatible & 2 != 0 {
            return Err(corrupt(
                "the image is marked corrupt by QEMU; repair it with `qemu-img check -r all`"
                    .into(),
            ));
        }
        for (bit, what) in [
            (4, "external data files"),
            (8, "compression types other than zlib"),
            (16, "extended L2 entries (subclusters)"),
        ] {
            if incompatible & bit != 0 {
                return Err(bad_format(format!("{what} are not supported")));
            }
        }
        if incompatible & !31 != 0 {
            return Err(bad_format(format!(
                "unknown incompatible features {incompatible:#x}"
            )));
        }
        if refcount_order > 6 {
            return Err(corrupt(format!(
                "refcount_order {refcount_order} is above 6 (64-bit refcounts)"
            )));
        }
    }

    // A table is aligned to a cluster, is not the header's cluster, and lies inside the file.
    let table_in_file = |name: &str, offset: u64, bytes: u64| -> Result<(), DiskError> {
        let end = offset.checked_add(bytes);
        if offset == 0 || offset & (cluster_size - 1) != 0 || end.is_none_or(|end| end > file_len) {
            return Err(corrupt(format!(
                "{name} of {bytes} bytes at offset {offset:#x} is unaligned or outside the \
                 {file_len}-byte file"
            )));
        }
        Ok(())
    };

    if l1_entries > MAX_L1_ENTRIES {
        return Err(corrupt(format!(
            "L1 table of {l1_entries} entries is above the limit of {MAX_L1_ENTRIES}"
        )));
    }
    // Each L1 entry maps an L2 table of cluster_size / 8 entries, each one cluster: at most
    // 2^21 * 2^18 bytes, so this cannot overflow.
    let bytes_per_l1_entry = cluster_size * (cluster_size / 8);
    let l1_needed = size.div_ceil(bytes_per_l1_entry);
    if l1_entries < l1_needed {
        return Err(corrupt(format!(
            "L1 table of {l1_entries} entries is too small for a {size}-byte disk \
             ({l1_needed} needed)"
        )));
    }
    if l1_entries > 0 {
        table_in_file("L1 table", l1_offset, l1_entries * 8)?;
    }

    let reftable_bytes = reftable_clusters.saturating_mul(cluster_size);
    if reftable_clusters == 0 || reftable_bytes > MAX_REFTABLE_BYTES {
        return Err(corrupt(format!(
            "refcount table of {reftable_clusters} clusters is empty or above \
             {MAX_REFTABLE_BYTES} bytes"
        )));
    }
    // Only the table's first cluster must be in the file: QEMU may place a grown table at the
    // end of the file without writing all of its (zero) tail.
    table_in_file(
        "refcount table",
        reftable_offset,
        cluster_size.min(reftable_bytes),
    )?;

    if snapshots > MAX_SNAPSHOTS {
        return Err(corrupt(format!(
            "{snapshots} internal snapshots is above the limit of {MAX_SNAPSHOTS}"
        )));
    }
    if snapshots > 0 {
        table_in_file("snapshot table", snapshots_offset, 1)?;
    }

    if backing_offset != 0 {
        let end = backing_offset.checked_add(backing_len);
        if backing_len == 0
            || backing_len > 1023
            || end.is_none_or(|end| end > cluster_size.min(file_len))
        {
            return Err(corrupt(format!(
                "backing file name of {backing_len} bytes at offset {backing_offset} is empty, \
                 longer than 1023 bytes or outside the header cluster"
            )));
        }
    }
    Ok(Geometry {
        cluster_bits,
        refcount_order,
        reftable_offset,
    })
}

/// Before an image is opened for writing: the refcount block covering the first clusters
/// must exist (inside the file, not on the header) and count the header cluster as used.
///
/// Every valid image has it. Without it, imago's allocator would place a new refcount block
/// on cluster 0, the header, which a refcount table cannot point to (0 means "none"), and then
/// recurse until the stack overflows (found by the fuzzer); with the header counted free, it
/// would allocate the header as data.
pub(crate) fn check_refcounts_for_writing(
    path: &Path,
    file: &File,
    file_len: u64,
    geometry: &Geometry,
) -> Result<(), DiskError> {
    let corrupt = |reason: String| DiskError::Corrupt {
        path: path.to_path_buf(),
        reason,
        source: None,
    };
    let read_err = |source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    };
    let cluster_size = 1u64 << geometry.cluster_bits;
    let mut entry = [0u8; 8];
    // check_header saw the table's first cluster inside the file.
    file.read_exact_at(&mut entry, geometry.reftable_offset)
        .map_err(read_err)?;
    // Bits 0-8 of a refcount table entry are reserved; the rest is the block's offset.
    let block = u64::from_be_bytes(entry) & !511;
    if block == 0
        || block & (cluster_size - 1) != 0
        || block
            .checked_add(cluster_size)
            .is_none_or(|end| end > file_len)
    {
        return Err(corrupt(format!(
            "the first refcount block ({block:#x}) is missing, unaligned or outside the \
             {file_len}-byte file"
        )));
    }
    // Entry 0 of the block: the refcount of the header cluster. Entries of 1, 2 or 4 bits are
    // packed from the low bits of each byte; wider ones are big-endian.
    let mut first = [0u8; 8];
    file.read_exact_at(&mut first, block).map_err(read_err)?;
    let header_refcount = match geometry.refcount_order {
        // refcount_order <= 6 (check_header), so these shifts cannot overflow.
        0..=2 => u64::from(first[0] & ((1u8 << (1 << geometry.refcount_order)) - 1)),
        order => first[..1 << (order - 3)]
            .iter()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b)),
    };
    if header_refcount == 0 {
        return Err(corrupt(
            "the refcount of the header cluster is 0: the refcounts are broken; \
             repair them with `qemu-img check -r all`"
                .into(),
        ));
    }
    Ok(())
}

/// Converts an error imago gave while opening `path`.
fn imago_open_err(path: &Path, err: io::Error) -> DiskError {
    if err.kind() == io::ErrorKind::InvalidData {
        DiskError::Corrupt {
            path: path.to_path_buf(),
            reason: "imago refused the metadata".into(),
            source: Some(err),
        }
    } else {
        DiskError::Open {
            path: path.to_path_buf(),
            source: err,
        }
    }
}

/// The images of a chain opened so far, by (device, inode).
struct Chain(Vec<(u64, u64)>);

impl Chain {
    /// Adds `file` to the chain, refusing a file already in it and a chain too long.
    fn enter(&mut self, path: &Path, file: &File) -> Result<(), DiskError> {
        let meta = file.metadata().map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let id = (meta.dev(), meta.ino());
        let reason = if self.0.contains(&id) {
            "the backing chain loops: this file is already in it"
        } else if self.0.len() >= MAX_CHAIN_LEN {
            "the backing chain is longer than 64 images"
        } else {
            self.0.push(id);
            return Ok(());
        };
        Err(DiskError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
            source: None,
        })
    }
}

/// Opens one qcow2 layer from its open `file` and, recursively, its backing chain (always
/// read-only). Returns it with its cluster size.
fn open_layer(
    path: &Path,
    file: File,
    file_len: u64,
    writable: bool,
    chain: &mut Chain,
) -> Result<(FormatAccess<ImagoFile>, u64), DiskError> {
    chain.enter(path, &file)?;
    let geometry = check_header(path, &file, file_len)?;
    if writable {
        check_refcounts_for_writing(path, &file, file_len, &geometry)?;
    }
    let opts = StorageOpenOptions::new().filename(path).write(writable);
    let storage = ImagoFile::from_open_file(file, opts).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut qcow2 =
        Qcow2::<ImagoFile>::open_image(storage, writable).map_err(|e| imago_open_err(path, e))?;

    let backing = match qcow2.implicit_backing_file().cloned() {
        None => None,
        Some(name) => {
            let format = qcow2.implicit_backing_format().cloned();
            Some(open_backing(path, &name, format.as_deref(), chain)?)
        }
    };
    qcow2.set_backing(backing);
    // check_header refused external data files: the data lives in the image file itself.
    qcow2.set_data_file(None);
    Ok((FormatAccess::new(qcow2), 1 << geometry.cluster_bits))
}

/// Opens the backing image `name` of the image at `path` (relative names are relative to the
/// directory of `path`, as in QEMU), read-only, with `format` as its header names it (probed
/// when absent, as QEMU does).
fn open_backing(
    path: &Path,
    name: &str,
    format: Option<&str>,
    chain: &mut Chain,
) -> Result<FormatAccess<ImagoFile>, DiskError> {
    if name.starts_with("json:") {
        return Err(DiskError::BadFormat {
            path: path.to_path_buf(),
            reason: format!("backing file {name:?}: json: specifications are not supported"),
        });
    }
    let backing = path.parent().unwrap_or(Path::new("")).join(name);
    let wrap = |source: DiskError| DiskError::Backing {
        path: path.to_path_buf(),
        backing: backing.clone(),
        source: Box::new(source),
    };
    let (file, len) = open_file(&backing, true).map_err(wrap)?;
    let is_qcow2 = match format {
        Some("qcow2") => true,
        Some("raw") | Some("file") => false,
        None => has_magic(&file).map_err(|source| {
            wrap(DiskError::Open {
                path: backing.clone(),
                source,
            })
        })?,
        Some(other) => {
            return Err(DiskError::BadFormat {
                path: path.to_path_buf(),
                reason: format!("backing format {other:?} is not supported (only raw and qcow2)"),
            })
        }
    };
    if is_qcow2 {
        return open_layer(&backing, file, len, false, chain)
            .map(|(layer, _)| layer)
            .map_err(wrap);
    }
    chain.enter(&backing, &file).map_err(wrap)?;
    let opts = StorageOpenOptions::new().filename(&backing).write(false);
    let storage = ImagoFile::from_open_file(file, opts).map_err(|source| {
        wrap(DiskError::Open {
            path: backing.clone(),
            source,
        })
    })?;
    let raw = Raw::open_image(storage, false).map_err(|source| {
        wrap(DiskError::Open {
            path: backing.clone(),
            source,
        })
    })?;
    Ok(FormatAccess::new(raw))
}

/// Opens the qcow2 image in `file` and its backing chain, checked as [`Qcow2Disk::open`]
/// does; returns imago's image with its cluster size.
pub(crate) fn open_chain(
    path: &Path,
    file: File,
    file_len: u64,
    writable: bool,
) -> Result<(FormatAccess<ImagoFile>, u64), DiskError> {
    open_layer(path, file, file_len, writable, &mut Chain(Vec::new()))
}

/// A qcow2 image and its backing chain.
pub(crate) struct Qcow2Disk {
    path: PathBuf,
    /// Reads, writes, write-zeroes and flushes share this lock: imago serialises internally
    /// what must be serialised (allocation, L2 updates), so they run in parallel. Discard takes
    /// it exclusively: imago's safe discard needs `&mut`, because freeing a cluster would pull
    /// it from under a request that has it mapped.
    image: RwLock<FormatAccess<ImagoFile>>,
    size: u64,
    read_only: bool,
    /// Whether imago may zero ranges itself. Not on a disk smaller than one cluster: there
    /// imago 0.2.6's `soft_ensure_zero` computes `min(end aligned up, size) - cluster_size`,
    /// which underflows (a panic with overflow checks, found by the fuzzer).
    imago_zeroes: bool,
}

/// Writes zero buffers at most this long, when imago cannot zero a range any other way.
const ZERO_CHUNK: u64 = 1 << 20;

impl Qcow2Disk {
    /// Opens the qcow2 image in `file` (`file_len` bytes), opened read-only or read-write as
    /// `read_only` says, and its backing chain.
    pub(crate) fn open(
        path: &Path,
        file: File,
        file_len: u64,
        read_only: bool,
    ) -> Result<Self, DiskError> {
        let mut chain = Chain(Vec::new());
        let (image, cluster_size) = open_layer(path, file, file_len, !read_only, &mut chain)?;
        Ok(Qcow2Disk {
            path: path.to_path_buf(),
            size: image.size(),
            imago_zeroes: image.size() >= cluster_size,
            image: RwLock::new(image),
            read_only,
        })
    }

    /// The error for a failed `op`. It borrows the path and clones it only on failure: this
    /// is built for every request, which otherwise pays an allocation for nothing.
    fn io_err(&self, op: Op, offset: u64, len: u64) -> impl FnOnce(io::Error) -> DiskError + '_ {
        move |source| DiskError::Io {
            path: self.path.clone(),
            op,
            offset,
            len,
            source,
        }
    }

    fn poisoned(&self, op: Op, offset: u64, len: u64) -> DiskError {
        (self.io_err(op, offset, len))(io::Error::other(
            "an earlier request panicked while it held the image",
        ))
    }

    /// Checks the request and takes the image for a request that may run beside others.
    fn shared(
        &self,
        op: Op,
        offset: u64,
        len: u64,
    ) -> Result<RwLockReadGuard<'_, FormatAccess<ImagoFile>>, DiskError> {
        self.check(op, offset, len)?;
        self.image
            .read()
            .map_err(|_| self.poisoned(op, offset, len))
    }

    fn exclusive(
        &self,
        op: Op,
        offset: u64,
        len: u64,
    ) -> Result<RwLockWriteGuard<'_, FormatAccess<ImagoFile>>, DiskError> {
        self.check(op, offset, len)?;
        self.image
            .write()
            .map_err(|_| self.poisoned(op, offset, len))
    }

    fn check(&self, op: Op, offset: u64, len: u64) -> Result<(), DiskError> {
        if op != Op::Read && self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.path.clone(),
                op,
            });
        }
        check_range(&self.path, op, offset, len, self.size)
    }
}

/// Makes `[offset, offset + len)` read as zeroes on `image`: efficiently where imago can (zero
/// clusters, qcow2 v3) and `efficient` allows, else by writing zero buffers.
fn zero_range(
    image: &FormatAccess<ImagoFile>,
    offset: u64,
    len: u64,
    efficient: bool,
) -> io::Result<()> {
    if efficient {
        match image.write_zeroes(offset, len) {
            Err(err) if err.kind() == io::ErrorKind::Unsupported => {}
            other => return other,
        }
    }
    let zeroes = vec![0u8; len.min(ZERO_CHUNK) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK);
        // n <= ZERO_CHUNK = zeroes.len(), so the cast cannot truncate.
        image.write(&zeroes[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

impl DiskFile for Qcow2Disk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let len = buf.len() as u64;
        let image = self.shared(Op::Read, offset, len)?;
        image
            .read(buf, offset)
            .map_err(self.io_err(Op::Read, offset, len))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let len = buf.len() as u64;
        let image = self.shared(Op::Write, offset, len)?;
        image
            .write(buf, offset)
            .map_err(self.io_err(Op::Write, offset, len))
    }

    fn read_vectored_at<'a>(&self, bufs: &'a [MemSlice<'a>], offset: u64) -> Result<(), DiskError> {
        let len = total_len(bufs);
        let image = self.shared(Op::Read, offset, len)?;
        in_iov_groups(bufs, offset, |group, at| {
            // The guard keeps the guest memory mapped while imago's iovecs point into it.
            let (iov, _mapped) = IoVectorMut::from_volatile_slice(group);
            image.readv(iov, at)
        })
        .map_err(self.io_err(Op::Read, offset, len))
    }

    fn write_vectored_at<'a>(
        &self,
        bufs: &'a [MemSlice<'a>],
        offset: u64,
    ) -> Result<(), DiskError> {
        let len = total_len(bufs);
        let image = self.shared(Op::Write, offset, len)?;
        in_iov_groups(bufs, offset, |group, at| {
            let (iov, _mapped) = IoVector::from_volatile_slice(group);
            image.writev(iov, at)
        })
        .map_err(self.io_err(Op::Write, offset, len))
    }

    fn flush(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Ok(());
        }
        let image = self
            .image
            .read()
            .map_err(|_| self.poisoned(Op::Flush, 0, 0))?;
        // flush() writes imago's cached metadata (L2 tables, refcounts) to the file; sync()
        // then makes the file durable.
        image
            .flush()
            .and_then(|()| image.sync())
            .map_err(|source| DiskError::Flush {
                path: self.path.clone(),
                source,
            })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let mut image = self.exclusive(Op::Discard, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // Zero clusters that free their data where imago can (v3); on v2 images imago refuses
        // before changing anything, and we write zeroes instead.
        if !self.imago_zeroes {
            return zero_range(&image, offset, len, false).map_err(self.io_err(
                Op::Discard,
                offset,
                len,
            ));
        }
        match image.discard_to_zero(offset, len) {
            Err(err) if err.kind() == io::ErrorKind::Unsupported => {
                zero_range(&image, offset, len, true)
            }
            other => other,
        }
        .map_err(self.io_err(Op::Discard, offset, len))
    }

    fn extent(&self, offset: u64, max_len: u64, layers: usize) -> Result<(Extent, u64), DiskError> {
        let len = max_len.min(self.size.saturating_sub(offset));
        let image = self.shared(Op::Read, offset, len)?;
        if len == 0 {
            return Ok((Extent::Zero, 0));
        }
        let mut layer: &FormatAccess<ImagoFile> = &image;
        let (mut at, mut want, mut depth) = (offset, len, 1);
        loop {
            let (mapping, n) =
                layer
                    .get_shallow_mapping(at, want)
                    .map_err(self.io_err(Op::Read, offset, len))?;
            if n == 0 && !matches!(mapping, ShallowMapping::Eof { .. }) {
                return Err((self.io_err(Op::Read, offset, len))(io::Error::other(
                    "imago mapped an empty range",
                )));
            }
            return Ok(match mapping {
                ShallowMapping::Zero { .. } => (Extent::Zero, n),
                // Only a backing file can end before the range does (the top layer is
                // `self.size` long): past its end, qcow2 reads zeroes.
                ShallowMapping::Eof { .. } => (Extent::Zero, want),
                ShallowMapping::Indirect {
                    layer: below,
                    offset: below_at,
                    ..
                } => {
                    if depth >= layers {
                        (Extent::Below, n)
                    } else {
                        layer = below;
                        at = below_at;
                        want = n;
                        depth += 1;
                        continue;
                    }
                }
                // Raw data, or data imago must decode (compressed): data either way.
                _ => (Extent::Data, n),
            });
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let image = self.shared(Op::WriteZeroes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        zero_range(&image, offset, len, self.imago_zeroes).map_err(self.io_err(
            Op::WriteZeroes,
            offset,
            len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{
        check, compare, create_qcow2, pattern, qemu_img, vectored_round_trip, TempDir,
    };
    use crate::{open_disk, DiskError, DiskFile, ErrorKind, Format};
    use std::fs;
    use std::path::Path;

    const MIB: u64 = 1 << 20;

    /// A small deterministic generator for request shapes.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// Applies `rounds` random writes, discards and write-zeroes of unaligned offsets and
    /// lengths to `disk` and to `model`, reading back a range around each one.
    fn exercise(disk: &dyn DiskFile, model: &mut [u8], seed: u64, rounds: u64) {
        let mut rng = Rng(seed | 1);
        let size = model.len() as u64;
        for round in 0..rounds {
            let offset = rng.below(size);
            let max_len = if rng.below(4) == 0 { 300_000 } else { 9000 };
            let len = rng.below(max_len.min(size - offset) + 1);
            let (o, l) = (offset as usize, len as usize);
            match rng.below(4) {
                0 => {
                    disk.discard(offset, len).unwrap();
                    model[o..o + l].fill(0);
                }
                1 => {
                    disk.write_zeroes(offset, len).unwrap();
                    model[o..o + l].fill(0);
                }
                2 if l > 0 => {
                    // A vectored write from guest memory, cut into uneven pieces.
                    let cut = [l / 3, 1, l - l / 3 - 1];
                    vectored_round_trip(disk, model, offset, &cut, seed * 1000 + round);
                }
                _ => {
                    let data = pattern(l, seed * 1000 + round);
                    disk.write_at(&data, offset).unwrap();
                    model[o..o + l].copy_from_slice(&data);
                }
            }
            let from = offset.saturating_sub(70_000);
            let to = (offset + len + 70_000).min(size);
            let mut back = vec![0xa5; (to - from) as usize];
            disk.read_at(&mut back, from).unwrap();
            assert!(
                back == model[from as usize..to as usize],
                "round {round}: mismatch around {offset}+{len}"
            );
        }
    }

    fn read_all(disk: &dyn DiskFile) -> Vec<u8> {
        let mut buf = vec![0xa5; disk.size() as usize];
        disk.read_at(&mut buf, 0).unwrap();
        buf
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// Writes, discards and zeroes through an image, then has qemu-img check it and compare
    /// it with the model.
    fn round_trip(extra: &[&str], seed: u64) {
        let dir = TempDir::new("q-rt");
        let img = dir.join("disk.qcow2");
        let size = 3 * MIB + 1536; // qemu-img rounds sizes up to 512 bytes
        create_qcow2(&img, size, extra);
        let disk = open_disk(&img, None, false).unwrap();
        assert_eq!(disk.size(), size);
        let mut model = vec![0u8; size as usize];
        assert!(read_all(&*disk) == model);
        exercise(&*disk, &mut model, seed, 60);
        disk.flush().unwrap();
        assert!(read_all(&*disk) == model);
        drop(disk);
        check(&img);
        let model_path = dir.join("model.raw");
        fs::write(&model_path, &model).unwrap();
        compare(&model_path, &img);
        // And it reads back the same after a fresh open.
        let disk = open_disk(&img, Some(Format::Qcow2), true).unwrap();
        assert!(read_all(&*disk) == model);
    }

    #[test]
    fn round_trips_at_unaligned_offsets_v3() {
        round_trip(&[], 1);
    }

    #[test]
    fn round_trips_at_unaligned_offsets_v3_small_clusters() {
        round_trip(&["-o", "cluster_size=4096"], 2);
    }

    #[test]
    fn round_trips_at_unaligned_offsets_v2() {
        // Version 2 has no zero clusters: discard and write-zeroes write zero data.
        round_trip(&["-o", "compat=0.10,cluster_size=512"], 3);
    }

    /// An overlay (optionally `v2`) on a raw base smaller than the overlay: reads come from
    /// the base, zeroes past its end; writes, discards and zeroes go to the overlay only.
    fn overlay_on_raw(compat: &str, seed: u64) {
        let dir = TempDir::new("q-raw-base");
        let base = dir.join("base.raw");
        let base_bytes = pattern((2 * MIB + 517) as usize, 11);
        fs::write(&base, &base_bytes).unwrap();
        let top = dir.join("top.qcow2");
        let size = 3 * MIB;
        let opts = format!("compat={compat}");
        create_qcow2(&top, size, &["-o", &opts, "-b", "base.raw", "-F", "raw"]);

        let disk = open_disk(&top, None, false).unwrap();
        let mut model = base_bytes.clone();
        model.resize(size as usize, 0);
        assert!(read_all(&*disk) == model, "reads through the base");
        exercise(&*disk, &mut model, seed, 60);
        // A discard and a write-zeroes over data that only the base holds.
        disk.discard(100_000, 200_001).unwrap();
        disk.write_zeroes(400_003, 99_999).unwrap();
        model[100_000..300_001].fill(0);
        model[400_003..500_002].fill(0);
        assert!(read_all(&*disk) == model);
        disk.flush().unwrap();
        drop(disk);

        assert_eq!(
            fs::read(&base).unwrap(),
            base_bytes,
            "the base is untouched"
        );
        check(&top);
        let model_path = dir.join("model.raw");
        fs::write(&model_path, &model).unwrap();
        compare(&model_path, &top);
    }

    #[test]
    fn overlay_on_raw_base() {
        overlay_on_raw("1.1", 4);
    }

    #[test]
    fn overlay_on_raw_base_v2() {
        overlay_on_raw("0.10", 5);
    }

    #[test]
    fn qcow2_on_qcow2_on_raw() {
        let dir = TempDir::new("q-chain");
        let base = dir.join("base.raw");
        let base_bytes = pattern((2 * MIB) as usize, 21);
        fs::write(&base, &base_bytes).unwrap();
        let mid = dir.join("mid.qcow2");
        create_qcow2(&mid, 2 * MIB, &["-b", "base.raw", "-F", "raw"]);
        let mut model = base_bytes.clone();
        {
            let disk = open_disk(&mid, None, false).unwrap();
            exercise(&*disk, &mut model, 22, 20);
        }
        check(&mid);
        let mid_bytes = fs::read(&mid).unwrap();

        // The top names its backing file without a format: it is probed. (qemu-img no longer
        // writes such images: rename the backing-format header extension to an unknown one.)
        let top = dir.join("top.qcow2");
        create_qcow2(&top, 2 * MIB, &["-b", "mid.qcow2", "-F", "qcow2"]);
        let mut header = fs::read(&top).unwrap();
        let ext = header[..4096]
            .windows(4)
            .position(|w| w == 0xe279_2acau32.to_be_bytes())
            .expect("a backing format extension");
        header[ext..ext + 4].copy_from_slice(&0x0fd0_0fd0u32.to_be_bytes());
        fs::write(&top, &header).unwrap();
        assert!(!qemu_img(&["info", s(&top)]).contains("backing file format"));
        let disk = open_disk(&top, Some(Format::Qcow2), false).unwrap();
        assert!(read_all(&*disk) == model, "reads through two layers");
        exercise(&*disk, &mut model, 23, 40);
        disk.flush().unwrap();
        drop(disk);

        assert_eq!(fs::read(&base).unwrap(), base_bytes, "base untouched");
        assert_eq!(fs::read(&mid).unwrap(), mid_bytes, "middle layer untouched");
        check(&top);
        let model_path = dir.join("model.raw");
        fs::write(&model_path, &model).unwrap();
        compare(&model_path, &top);
    }

    #[test]
    fn compressed_clusters_read_and_rewrite() {
        let dir = TempDir::new("q-compressed");
        let src = dir.join("src.raw");
        let mut model = pattern((MIB / 2) as usize, 31);
        model.extend(std::iter::repeat_n(7u8, (MIB / 2) as usize)); // compresses well
        fs::write(&src, &model).unwrap();
        let img = dir.join("c.qcow2");
        qemu_img(&[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&src),
            s(&img),
        ]);
        let disk = open_disk(&img, None, false).unwrap();
        assert!(read_all(&*disk) == model);
        exercise(&*disk, &mut model, 32, 30);
        drop(disk);
        check(&img);
        fs::write(&src, &model).unwrap();
        compare(&src, &img);
    }

    #[test]
    fn requests_from_many_threads_at_once() {
        let dir = TempDir::new("q-threads");
        let base = dir.join("base.raw");
        fs::write(&base, pattern((4 * MIB) as usize, 41)).unwrap();
        let img = dir.join("t.qcow2");
        create_qcow2(
            &img,
            4 * MIB,
            &["-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw"],
        );
        let disk = open_disk(&img, None, false).unwrap();
        let chunk = MIB as usize;
        let model = std::sync::Mutex::new(pattern((4 * MIB) as usize, 41));
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let disk = &*disk;
                let model = &model;
                scope.spawn(move || {
                    // Each thread owns one MiB of the disk.
                    let mut mine = model.lock().unwrap()[t as usize * chunk..][..chunk].to_vec();
                    let mut rng = Rng(t + 100);
                    for round in 0..40 {
                        let o = rng.below(chunk as u64 - 1) as usize;
                        let l = rng.below((chunk - o) as u64).min(20_000) as usize;
                        let at = t * MIB + o as u64;
                        match round % 5 {
                            0 => {
                                disk.discard(at, l as u64).unwrap();
                                mine[o..o + l].fill(0);
                            }
                            1 => {
                                disk.write_zeroes(at, l as u64).unwrap();
                                mine[o..o + l].fill(0);
                            }
                            _ => {
                                let data = pattern(l, t * 1000 + round);
                                disk.write_at(&data, at).unwrap();
                                mine[o..o + l].copy_from_slice(&data);
                            }
                        }
                        if round % 10 == 0 {
                            disk.flush().unwrap();
                        }
                        let mut back = vec![0; chunk];
                        disk.read_at(&mut back, t * MIB).unwrap();
                        assert!(back == mine, "thread {t} round {round}");
                    }
                    model.lock().unwrap()[t as usize * chunk..][..chunk].copy_from_slice(&mine);
                });
            }
        });
        let model = model.into_inner().unwrap();
        assert!(read_all(&*disk) == model);
        drop(disk);
        check(&img);
        let model_path = dir.join("model.raw");
        fs::write(&model_path, &model).unwrap();
        compare(&model_path, &img);
    }

    #[test]
    fn read_only_opens_refuse_changes_and_change_nothing() {
        let dir = TempDir::new("q-ro");
        let base = dir.join("base.raw");
        fs::write(&base, pattern((MIB) as usize, 51)).unwrap();
        let img = dir.join("ro.qcow2");
        create_qcow2(&img, MIB, &["-b", "base.raw", "-F", "raw"]);
        let before = fs::read(&img).unwrap();
        let disk = open_disk(&img, None, true).unwrap();
        assert!(disk.read_only());
        for err in [
            disk.write_at(&[1], 0).unwrap_err(),
            disk.discard(0, 65536).unwrap_err(),
            disk.write_zeroes(5, 5).unwrap_err(),
            disk.write_at(&[], 0).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
            assert!(err.to_string().contains("ro.qcow2"), "{err}");
        }
        assert!(read_all(&*disk) == pattern((MIB) as usize, 51));
        disk.flush().unwrap();
        drop(disk);
        assert_eq!(fs::read(&img).unwrap(), before);
    }

    #[test]
    fn out_of_range_requests_touch_nothing() {
        let dir = TempDir::new("q-oor");
        let img = dir.join("oor.qcow2");
        let size = MIB + 512;
        create_qcow2(&img, size, &[]);
        let before = fs::read(&img).unwrap();
        let disk = open_disk(&img, None, false).unwrap();
        let mut two = [0u8; 2];
        for err in [
            disk.read_at(&mut two, size - 1).unwrap_err(),
            disk.read_at(&mut two, u64::MAX - 1).unwrap_err(),
            disk.write_at(&[1, 2], size - 1).unwrap_err(),
            disk.write_at(&[1], u64::MAX).unwrap_err(),
            disk.discard(0, size + 1).unwrap_err(),
            disk.discard(2, u64::MAX - 1).unwrap_err(),
            disk.write_zeroes(size + 1, 0).unwrap_err(),
            disk.write_zeroes(u64::MAX, 1).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
        }
        disk.read_at(&mut [], size).unwrap();
        drop(disk);
        assert_eq!(fs::read(&img).unwrap(), before);
    }

    #[test]
    fn dropping_without_flush_leaves_a_valid_image() {
        let dir = TempDir::new("q-drop");
        let img = dir.join("d.qcow2");
        create_qcow2(&img, 2 * MIB, &[]);
        let mut model = vec![0u8; (2 * MIB) as usize];
        {
            let disk = open_disk(&img, None, false).unwrap();
            exercise(&*disk, &mut model, 61, 30);
        }
        check(&img);
        let model_path = dir.join("model.raw");
        fs::write(&model_path, &model).unwrap();
        compare(&model_path, &img);
    }

    fn open_err(path: &Path, format: Option<Format>, read_only: bool) -> DiskError {
        match open_disk(path, format, read_only) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(err) => err,
        }
    }

    #[test]
    fn backing_chain_loops_are_refused() {
        let dir = TempDir::new("q-loop");
        // An image that is its own backing file.
        let me = dir.join("me.qcow2");
        create_qcow2(&me, MIB, &[]);
        qemu_img(&["rebase", "-u", "-b", "me.qcow2", "-F", "qcow2", s(&me)]);
        // Two images backing each other.
        let a = dir.join("a.qcow2");
        let b = dir.join("b.qcow2");
        create_qcow2(&a, MIB, &[]);
        create_qcow2(&b, MIB, &["-b", "a.qcow2", "-F", "qcow2"]);
        qemu_img(&["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", s(&a)]);
        // An image backed by a hard link to itself, named as raw.
        let c = dir.join("c.qcow2");
        create_qcow2(&c, MIB, &[]);
        fs::hard_link(&c, dir.join("link")).unwrap();
        qemu_img(&["rebase", "-u", "-b", "link", "-F", "raw", s(&c)]);

        for img in [&me, &a, &b, &c] {
            for read_only in [true, false] {
                let err = open_err(img, None, read_only);
                assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
                let mut chain = String::new();
                let mut e: Option<&dyn std::error::Error> = Some(&err);
                while let Some(cur) = e {
                    chain += &format!("{cur}: ");
                    e = cur.source();
                }
                assert!(chain.contains("loops"), "{chain}");
            }
        }
    }

    #[test]
    fn chains_longer_than_the_limit_are_refused() {
        let dir = TempDir::new("q-long");
        let name = |i: usize| format!("l{i}.qcow2");
        let n = super::MAX_CHAIN_LEN;
        for i in 0..=n {
            create_qcow2(&dir.join(&name(i)), 65536, &["-o", "cluster_size=512"]);
            if i > 0 {
                let prev = name(i - 1);
                let path = dir.join(&name(i));
                qemu_img(&["rebase", "-u", "-b", &prev, "-F", "qcow2", s(&path)]);
            }
        }
        // n images: the limit. n + 1: one too many.
        open_disk(&dir.join(&name(n - 1)), None, false).unwrap();
        let err = open_err(&dir.join(&name(n)), None, true);
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }

    #[test]
    fn missing_and_unsupported_backing_files() {
        let dir = TempDir::new("q-backing");
        let img = dir.join("top.qcow2");
        create_qcow2(&img, MIB, &[]);

        qemu_img(&["rebase", "-u", "-b", "gone.raw", "-F", "raw", s(&img)]);
        let err = open_err(&img, None, false);
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(matches!(err, DiskError::Backing { .. }), "{err:?}");
        assert_eq!(err.path(), img);
        assert!(err.to_string().contains("gone.raw"), "{err}");

        fs::write(dir.join("base.vmdk"), vec![0u8; 65536]).unwrap();
        qemu_img(&["rebase", "-u", "-b", "base.vmdk", "-F", "vmdk", s(&img)]);
        let err = open_err(&img, None, true);
        assert_eq!(err.kind(), ErrorKind::BadFormat, "{err}");

        // A backing file named qcow2 that is not one.
        fs::write(dir.join("fake.qcow2"), vec![0u8; 65536]).unwrap();
        qemu_img(&["rebase", "-u", "-b", "fake.qcow2", "-F", "qcow2", s(&img)]);
        let err = open_err(&img, None, true);
        assert_eq!(err.kind(), ErrorKind::BadFormat, "{err}");

        qemu_img(&["rebase", "-u", "-b", "json:{}", "-F", "raw", s(&img)]);
        let err = open_err(&img, None, true);
        assert_eq!(err.kind(), ErrorKind::BadFormat, "{err}");

        // A directory is no backing file.
        fs::create_dir(dir.join("d")).unwrap();
        qemu_img(&["rebase", "-u", "-b", "d", "-F", "raw", s(&img)]);
        let err = open_err(&img, None, true);
        assert_eq!(err.kind(), ErrorKind::BadFormat, "{err}");
    }

    /// A 1 GiB qcow2 image of 64 KiB clusters whose header the tests damage.
    fn header_victim(dir: &TempDir) -> (std::path::PathBuf, Vec<u8>) {
        let img = dir.join("victim.qcow2");
        create_qcow2(&img, 1 << 30, &[]);
        let disk = open_disk(&img, None, false).unwrap();
        disk.write_at(&pattern(100_000, 71), 12345).unwrap();
        drop(disk);
        let bytes = fs::read(&img).unwrap();
        (img, bytes)
    }

    fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
        bytes[at..at + value.len()].copy_from_slice(value);
    }

    #[test]
    fn damaged_headers_give_clear_errors() {
        let dir = TempDir::new("q-hdr");
        let (img, good) = header_victim(&dir);
        let b32 = |v: u32| v.to_be_bytes().to_vec();
        let b64 = |v: u64| v.to_be_bytes().to_vec();
        use ErrorKind::{BadFormat, Corrupt};
        let cases: Vec<(&str, usize, Vec<u8>, ErrorKind)> = vec![
            ("version 1", 4, b32(1), BadFormat),
            ("version 4", 4, b32(4), BadFormat),
            (
                "backing name past the cluster",
                8,
                [b64(65530), b32(10)].concat(),
                Corrupt,
            ),
            (
                "backing name too long",
                8,
                [b64(0x200), b32(5000)].concat(),
                Corrupt,
            ),
            (
                "empty backing name",
                8,
                [b64(0x200), b32(0)].concat(),
                Corrupt,
            ),
            ("cluster_bits 8", 20, b32(8), Corrupt),
            ("cluster_bits 22", 20, b32(22), Corrupt),
            ("cluster_bits huge", 20, b32(u32::MAX), Corrupt),
            (
                "disk larger than the L1 table maps",
                24,
                b64(1 << 50),
                Corrupt,
            ),
            ("disk of 2^64-1 bytes", 24, b64(u64::MAX), Corrupt),
            ("AES encryption", 32, b32(1), BadFormat),
            ("LUKS encryption", 32, b32(2), BadFormat),
            ("huge L1 table", 36, b32(u32::MAX), Corrupt),
            ("L1 table past the end", 36, b32(1 << 20), Corrupt),
            ("L1 table at offset 0", 40, b64(0), Corrupt),
            ("unaligned L1 table", 40, b64(0x30008), Corrupt),
            ("L1 table outside the file", 40, b64(1 << 40), Corrupt),
            ("L1 table at 2^64 - 64K", 40, b64(u64::MAX - 65535), Corrupt),
            ("refcount table outside the file", 48, b64(1 << 40), Corrupt),
            ("unaligned refcount table", 48, b64(0x10001), Corrupt),
            ("no refcount table", 56, b32(0), Corrupt),
            ("huge refcount table", 56, b32(u32::MAX), Corrupt),
            ("too many snapshots", 60, b32(u32::MAX), Corrupt),
            ("snapshot table outside the file", 60, b32(1), Corrupt),
            ("dirty", 72, b64(1), Corrupt),
            ("marked corrupt", 72, b64(2), Corrupt),
            ("external data file", 72, b64(4), BadFormat),
            ("zstd", 72, b64(8), BadFormat),
            ("subclusters", 72, b64(16), BadFormat),
            ("unknown incompatible feature", 72, b64(1 << 40), BadFormat),
            ("refcount_order 7", 96, b32(7), Corrupt),
            ("header_length too small", 100, b32(50), Corrupt),
            ("header_length above the cluster", 100, b32(70000), Corrupt),
        ];
        for (what, at, value, kind) in cases {
            let mut bytes = good.clone();
            put(&mut bytes, at, &value);
            fs::write(&img, &bytes).unwrap();
            for format in [None, Some(Format::Qcow2)] {
                for read_only in [true, false] {
                    let Err(err) = open_disk(&img, format, read_only) else {
                        panic!("{what}: opened");
                    };
                    assert_eq!(err.kind(), kind, "{what}: {err}");
                    assert_eq!(err.path(), img, "{what}");
                }
            }
        }

        // Without its magic, the image is no qcow2 image: raw when probed, an error if stated.
        let mut bytes = good.clone();
        put(&mut bytes, 0, b"QFI\0");
        fs::write(&img, &bytes).unwrap();
        let disk = open_disk(&img, None, true).unwrap();
        assert_eq!(disk.size(), bytes.len() as u64);
        let err = open_err(&img, Some(Format::Qcow2), true);
        assert_eq!(err.kind(), BadFormat);
    }

    #[test]
    fn broken_refcounts_refuse_writing_but_not_reading() {
        let dir = TempDir::new("q-refcount");
        let (img, good) = header_victim(&dir);
        // No first refcount block (this made imago recurse until the stack overflowed), one
        // on the header, one outside the file, and a header cluster counted free.
        let cases: [(&str, usize, &[u8]); 4] = [
            ("no refcount block", 0x10000, &[0; 8]),
            (
                "refcount block on the header",
                0x10000,
                &[0, 0, 0, 0, 0, 0, 0, 1],
            ),
            ("refcount block outside", 0x10000, &[0, 0, 0, 1, 0, 0, 0, 0]),
            ("header counted free", 0x20000, &[0, 0]),
        ];
        for (what, at, value) in cases {
            let mut bytes = good.clone();
            put(&mut bytes, at, value);
            fs::write(&img, &bytes).unwrap();
            let err = open_err(&img, None, false);
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
            let disk = open_disk(&img, None, true).unwrap();
            let mut buf = vec![0; 100_000];
            disk.read_at(&mut buf, 12345).unwrap();
            assert!(buf == pattern(100_000, 71), "{what}");
        }
    }

    #[test]
    fn disks_smaller_than_a_cluster() {
        // imago 0.2.6 underflows when it zeroes part of such a disk itself (the fuzzer found
        // it); we write zeroes instead.
        for (compat, seed) in [("1.1", 91), ("0.10", 92)] {
            let dir = TempDir::new("q-tiny");
            let img = dir.join("tiny.qcow2");
            let opts = format!("compat={compat},cluster_size=4096");
            create_qcow2(&img, 1536, &["-o", &opts]);
            let disk = open_disk(&img, None, false).unwrap();
            let mut model = pattern(1536, seed);
            disk.write_at(&model, 0).unwrap();
            for (offset, len) in [(10, 20), (0, 1536), (1000, 536), (3, 0)] {
                disk.write_at(&pattern(1536, seed + 1), 0).unwrap();
                model = pattern(1536, seed + 1);
                disk.write_zeroes(offset, len).unwrap();
                model[offset as usize..][..len as usize].fill(0);
                assert!(read_all(&*disk) == model);
                disk.discard(offset / 2, len / 2).unwrap();
                model[(offset / 2) as usize..][..(len / 2) as usize].fill(0);
                assert!(read_all(&*disk) == model);
            }
            drop(disk);
            check(&img);
            let model_path = dir.join("model.raw");
            fs::write(&model_path, &model).unwrap();
            compare(&model_path, &img);
        }
    }

    #[test]
    fn refcount_widths_of_1_and_64_bits() {
        round_trip(&["-o", "refcount_bits=1,cluster_size=4096"], 8);
        round_trip(&["-o", "refcount_bits=64,cluster_size=4096"], 9);
    }

    #[test]
    fn images_with_internal_snapshots() {
        let dir = TempDir::new("q-snap");
        let img = dir.join("s.qcow2");
        create_qcow2(&img, MIB, &[]);
        let mut model = vec![0u8; MIB as usize];
        exercise(&*open_disk(&img, None, false).unwrap(), &mut model, 81, 10);
        qemu_img(&["snapshot", "-c", "before", s(&img)]);
        // Writes after a snapshot copy the shared clusters (refcount 2) first.
        exercise(&*open_disk(&img, None, false).unwrap(), &mut model, 82, 20);
        check(&img);
        let model_path = dir.join("model.raw");
        fs::write(&model_path, &model).unwrap();
        compare(&model_path, &img);
    }

    #[test]
    fn truncated_images_give_errors_not_panics() {
        let dir = TempDir::new("q-trunc");
        let (img, good) = header_victim(&dir);
        for len in [
            4, 5, 71, 72, 100, 103, 104, 4096, 65536, 65537, 131072, 196608,
        ] {
            fs::write(&img, &good[..len]).unwrap();
            for read_only in [true, false] {
                let err = open_err(&img, Some(Format::Qcow2), read_only);
                assert!(
                    matches!(err.kind(), ErrorKind::Corrupt | ErrorKind::BadFormat),
                    "{len}: {err}"
                );
            }
        }
    }

    /// Random damage to a real image's first cluster and tables: opening and using the image
    /// may fail, but never panics. (The fuzz target in `fuzz/` does this at length.)
    #[test]
    fn garbled_metadata_never_panics() {
        let dir = TempDir::new("q-garble");
        let (img, good) = header_victim(&dir);
        let mut rng = Rng(0x5eed);
        let mut opened = 0;
        for round in 0..300 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.below(8) {
                // Mostly the header, sometimes the refcount table, refcount block, L1, L2.
                let region = [0u64, 0x10000, 0x20000, 0x30000, 0x40000][rng.below(5) as usize];
                let at = (region + rng.below(if region == 0 { 120 } else { 64 })) as usize;
                if at < bytes.len() {
                    bytes[at] = rng.below(256) as u8;
                }
            }
            fs::write(&img, &bytes).unwrap();
            let read_only = round % 2 == 0;
            let Ok(disk) = open_disk(&img, Some(Format::Qcow2), read_only) else {
                continue;
            };
            opened += 1;
            let size = disk.size();
            let mut buf = vec![0; 70_000];
            for offset in [0, 12345, size / 2, size.saturating_sub(70_000)] {
                if offset + 70_000 <= size {
                    let _ = disk.read_at(&mut buf, offset);
                }
            }
            if !read_only && size >= 200_000 {
                let _ = disk.write_at(&buf, 100_000);
                let _ = disk.discard(0, 70_000);
                let _ = disk.write_zeroes(130_000, 65536);
                let _ = disk.flush();
            }
        }
        assert!(opened > 0, "some damage is harmless");
    }
}
