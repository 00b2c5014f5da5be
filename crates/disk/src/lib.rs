//! Disk images behind one trait: raw files and qcow2 (through imago), with backing chains.
//!
//! The virtio-blk device model sees only [`DiskFile`]; [`open_disk`] is the one
//! constructor that detects or checks the format and opens the backing chain.
//!
//! Every request is checked against the disk's size before anything is touched: a range past
//! the end, or whose end overflows `u64`, is an [`ErrorKind::OutOfRange`] error. A corrupt or
//! hostile image gives an error, never a panic or an unbounded allocation.

#![forbid(unsafe_code)]

mod error;
mod manage;
mod qcow2;
mod raw;

pub use error::{DiskError, ErrorKind, Op};
pub use manage::{create_qcow2, grow_qcow2, qcow2_info, Qcow2Info};

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The image formats `open_disk` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        })
    }
}

/// A virtual disk as the guest sees it: a byte-addressed array of `size()` bytes.
/// Positioned I/O only, so one open image can serve several requests at once.
pub trait DiskFile: Send + Sync {
    /// Virtual size in bytes (what the guest sees), not the file's size.
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Fills `buf` from `offset`; reads past the end of the disk are an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError>;
    /// Writes `buf` at `offset`; an error on a read-only disk or past the end.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError>;
    /// Makes every completed write durable (fdatasync of the image and its metadata).
    fn flush(&self) -> Result<(), DiskError>;
    /// The guest no longer needs `len` bytes at `offset`; they may read back as anything
    /// until written again (we make them read as zeroes where the format allows).
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError>;
    /// `len` bytes at `offset` read back as zeroes afterwards.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError>;

    /// What the disk holds from `offset` on, looking only at the top `layers` images of its
    /// backing chain (`usize::MAX`: all of them): the kind of the first stretch and its length,
    /// at most `max_len` and at least 1 unless `offset` is the end of the disk (or `max_len`
    /// is 0). For copies that skip what need not be copied.
    ///
    /// This default, for formats without allocation metadata, says "data" for everything.
    fn extent(&self, offset: u64, max_len: u64, layers: usize) -> Result<(Extent, u64), DiskError> {
        let _ = layers;
        Ok((
            Extent::Data,
            max_len.min(self.size().saturating_sub(offset)),
        ))
    }

    /// Fills `bufs` in order from the disk at `offset`, as one request.
    ///
    /// Formats read straight into guest memory (one `preadv` for a raw image); this default
    /// goes through a host buffer, for formats that cannot.
    fn read_vectored_at<'a>(&self, bufs: &'a [MemSlice<'a>], offset: u64) -> Result<(), DiskError> {
        let mut at = offset;
        let mut bounce = Vec::new();
        for b in bufs {
            bounce.resize(b.len(), 0);
            self.read_at(&mut bounce, at)?;
            b.copy_from(&bounce);
            at = at.saturating_add(b.len() as u64);
        }
        Ok(())
    }

    /// Writes `bufs` in order to the disk at `offset`, as one request. Like
    /// [`read_vectored_at`](Self::read_vectored_at), straight from guest memory where the
    /// format allows.
    fn write_vectored_at<'a>(
        &self,
        bufs: &'a [MemSlice<'a>],
        offset: u64,
    ) -> Result<(), DiskError> {
        let mut at = offset;
        let mut bounce = Vec::new();
        for b in bufs {
            bounce.resize(b.len(), 0);
            b.copy_to(&mut bounce[..]);
            self.write_at(&bounce, at)?;
            at = at.saturating_add(b.len() as u64);
        }
        Ok(())
    }
}

/// What a stretch of a disk holds, as [`DiskFile::extent`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// Data stored in one of the layers looked at (it may still be zeroes).
    Data,
    /// Reads as zeroes, as one of the layers looked at says (a zero cluster, or nothing
    /// allocated down to the bottom of the chain or past a backing file's end).
    Zero,
    /// Comes from an image below the layers looked at.
    Below,
}

/// A piece of guest memory a vectored request reads into or writes from.
pub type MemSlice<'a> = vm_memory::VolatileSlice<'a, ()>;

/// The bytes `bufs` hold together.
pub(crate) fn total_len(bufs: &[MemSlice<'_>]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

/// Most iovecs one `preadv`/`pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Runs `io` on `bufs` in groups small enough for one `preadv`/`pwritev`, each group with
/// its offset on the disk.
pub(crate) fn in_iov_groups<'a>(
    bufs: &'a [MemSlice<'a>],
    offset: u64,
    mut io: impl FnMut(&'a [MemSlice<'a>], u64) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut at = offset;
    for group in bufs.chunks(IOV_MAX) {
        io(group, at)?;
        at += total_len(group);
    }
    Ok(())
}

/// Opens the image at `path`. With `format: None` the format is probed (a qcow2 magic,
/// else raw). A qcow2 image's backing chain is opened read-only.
///
/// `Some(Format::Raw)` opens any file as raw, a qcow2 image included (the guest then sees its
/// metadata), as QEMU does; `Some(Format::Qcow2)` on a file without the qcow2 magic is a
/// [`ErrorKind::BadFormat`] error.
///
/// Probing is for images whose origin is trusted: a guest that can write a raw image can write
/// a qcow2 header into it, and a later probe would then follow the backing file that header
/// names to any file on the host. Callers that know the format (a VDI's record) must pass it.
pub fn open_disk(
    path: &Path,
    format: Option<Format>,
    read_only: bool,
) -> Result<Box<dyn DiskFile>, DiskError> {
    let (file, len) = open_file(path, read_only)?;
    let is_qcow2 = match format {
        Some(Format::Raw) => false,
        None | Some(Format::Qcow2) => {
            qcow2::has_magic(&file).map_err(|source| DiskError::Open {
                path: path.to_path_buf(),
                source,
            })?
        }
    };
    if format == Some(Format::Qcow2) && !is_qcow2 {
        return Err(DiskError::BadFormat {
            path: path.to_path_buf(),
            reason: "opened as qcow2, but the file is not a qcow2 image (no QFI\\xfb magic)".into(),
        });
    }
    if is_qcow2 {
        Ok(Box::new(qcow2::Qcow2Disk::open(
            path, file, len, read_only,
        )?))
    } else {
        Ok(Box::new(raw::RawDisk::new(path, file, len, read_only)?))
    }
}

/// Opens `path` read-only or read-write, and returns it with its length. Only regular files
/// and block devices are images: anything else is refused before it is opened (opening a FIFO
/// would block) and checked again after.
pub(crate) fn open_file(path: &Path, read_only: bool) -> Result<(File, u64), DiskError> {
    let open_err = |source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    };
    let not_an_image = || DiskError::BadFormat {
        path: path.to_path_buf(),
        reason: "not a regular file or block device".into(),
    };
    let is_image = |t: fs::FileType| t.is_file() || t.is_block_device();
    if !is_image(fs::metadata(path).map_err(open_err)?.file_type()) {
        return Err(not_an_image());
    }
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(open_err)?;
    if !is_image(file.metadata().map_err(open_err)?.file_type()) {
        return Err(not_an_image());
    }
    // Seeking to the end gives a block device's size too; positioned I/O ignores the offset.
    let len = (&file).seek(SeekFrom::End(0)).map_err(open_err)?;
    Ok((file, len))
}

/// Helpers for this crate's tests: temporary directories, the real `qemu-img`, test data.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system's temporary directory, removed when dropped.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("fv-disk-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a temporary directory");
            TempDir(dir)
        }

        pub fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `qemu-img` with `args`; panics with its output when it fails.
    pub fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run qemu-img ({e}): install qemu-utils (scripts/install-deps.sh)")
            });
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "qemu-img {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("test paths are UTF-8")
    }

    /// `qemu-img check` must find no errors and no leaks.
    pub fn check(img: &Path) {
        let out = qemu_img(&["check", "-f", "qcow2", s(img)]);
        assert!(out.contains("No errors were found"), "{out}");
    }

    /// `qemu-img compare` must find the guest-visible content of `img` (qcow2) equal to the
    /// raw file `model`.
    pub fn compare(model: &Path, img: &Path) {
        qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(model), s(img)]);
    }

    /// `qemu-img create -f qcow2` with extra arguments before the path, then the size.
    pub fn create_qcow2(img: &Path, size: u64, extra: &[&str]) {
        let size = size.to_string();
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        args.extend_from_slice(extra);
        args.push(s(img));
        args.push(&size);
        qemu_img(&args);
    }

    /// Guest memory for vectored requests: one region of `len` bytes at guest address 0.
    pub fn guest_memory(len: usize) -> vm_memory::GuestMemoryMmap<()> {
        vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), len)])
            .expect("map guest memory")
    }

    /// Slices of `mem` from guest address `start`, one per length in `lens`, each starting
    /// 3 bytes after the previous one ends (so neither memory nor lengths are aligned).
    pub fn scattered<'m>(
        mem: &'m vm_memory::GuestMemoryMmap<()>,
        start: u64,
        lens: &[usize],
    ) -> Vec<crate::MemSlice<'m>> {
        use vm_memory::GuestMemoryBackend;
        let mut at = start;
        lens.iter()
            .map(|&len| {
                let slice = mem
                    .get_slice(vm_memory::GuestAddress(at), len)
                    .expect("slice inside guest memory");
                at += len as u64 + 3;
                slice
            })
            .collect()
    }

    /// The bytes of `slices`, concatenated.
    pub fn gather(slices: &[crate::MemSlice<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in slices {
            let mut piece = vec![0; s.len()];
            s.copy_to(&mut piece[..]);
            out.extend_from_slice(&piece);
        }
        out
    }

    /// Writes pattern data from scattered guest memory at `offset` with one vectored write,
    /// reads it back with one vectored read into other scattered memory and with `read_at`,
    /// and keeps `model` in step.
    pub fn vectored_round_trip(
        disk: &dyn crate::DiskFile,
        model: &mut [u8],
        offset: u64,
        lens: &[usize],
        seed: u64,
    ) {
        let total: usize = lens.iter().sum();
        let span = total + 3 * lens.len();
        let mem = guest_memory(2 * span + 4096);
        let src = scattered(&mem, 1, lens);
        for (i, s) in src.iter().enumerate() {
            s.copy_from(&pattern(s.len(), seed + i as u64));
        }
        let data = gather(&src);
        disk.write_vectored_at(&src, offset)
            .expect("vectored write");
        let o = offset as usize;
        model[o..o + total].copy_from_slice(&data);

        let mut back_lens = lens.to_vec();
        back_lens.reverse();
        let dst = scattered(&mem, span as u64 + 7, &back_lens);
        disk.read_vectored_at(&dst, offset).expect("vectored read");
        assert!(gather(&dst) == data, "vectored read-back at {offset}");
        let mut plain = vec![0; total];
        disk.read_at(&mut plain, offset).expect("read");
        assert!(plain == data, "plain read-back at {offset}");
    }

    /// Deterministic pseudo-random bytes (xorshift64), different for each `seed`.
    pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{create_qcow2, pattern, TempDir};
    use super::*;

    #[test]
    fn probing_finds_raw_and_qcow2() {
        let dir = TempDir::new("probe");
        let raw = dir.join("disk.raw");
        fs::write(&raw, pattern(4096 + 7, 1)).unwrap();
        let disk = open_disk(&raw, None, true).unwrap();
        assert_eq!(disk.size(), 4096 + 7);
        let mut buf = vec![0; 4096 + 7];
        disk.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, pattern(4096 + 7, 1));

        let qcow2 = dir.join("disk.qcow2");
        create_qcow2(&qcow2, 3 << 20, &[]);
        let disk = open_disk(&qcow2, None, true).unwrap();
        assert_eq!(disk.size(), 3 << 20);
        assert!(disk.read_only());
        let disk = open_disk(&qcow2, Some(Format::Qcow2), false).unwrap();
        assert_eq!(disk.size(), 3 << 20);
        assert!(!disk.read_only());
    }

    #[test]
    fn a_stated_format_wins_over_probing() {
        let dir = TempDir::new("stated");
        let qcow2 = dir.join("disk.qcow2");
        create_qcow2(&qcow2, 1 << 20, &[]);
        let file_len = fs::metadata(&qcow2).unwrap().len();
        // Raw on a qcow2 image is allowed, as in QEMU: the guest sees the file.
        let disk = open_disk(&qcow2, Some(Format::Raw), true).unwrap();
        assert_eq!(disk.size(), file_len);
        let mut magic = [0; 4];
        disk.read_at(&mut magic, 0).unwrap();
        assert_eq!(&magic, b"QFI\xfb");

        // Qcow2 on a file that is not one is refused.
        let raw = dir.join("disk.raw");
        fs::write(&raw, vec![0u8; 65536]).unwrap();
        for read_only in [true, false] {
            let err = open_disk(&raw, Some(Format::Qcow2), read_only)
                .err()
                .unwrap();
            assert_eq!(err.kind(), ErrorKind::BadFormat, "{err}");
            assert!(err.to_string().contains("not a qcow2 image"), "{err}");
        }
        // Nor is an empty file (too short for a magic) a qcow2 image; probed, it is raw.
        let empty = dir.join("empty");
        fs::write(&empty, b"").unwrap();
        let err = open_disk(&empty, Some(Format::Qcow2), true).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::BadFormat);
        let disk = open_disk(&empty, None, false).unwrap();
        assert_eq!(disk.size(), 0);
        disk.read_at(&mut [], 0).unwrap();
        assert_eq!(
            disk.read_at(&mut [0], 0).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
    }

    #[test]
    fn open_errors_name_the_file_and_their_kind() {
        let dir = TempDir::new("openerr");
        let missing = dir.join("missing.raw");
        for format in [None, Some(Format::Raw), Some(Format::Qcow2)] {
            let err = open_disk(&missing, format, false).err().unwrap();
            assert_eq!(err.kind(), ErrorKind::NotFound);
            assert_eq!(err.path(), missing);
            assert!(err.to_string().contains("missing.raw"), "{err}");
        }
        let err = open_disk(&dir.join(""), None, true).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::BadFormat, "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn disks_are_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn DiskFile>();
        assert_send_sync::<DiskError>();
    }
}
