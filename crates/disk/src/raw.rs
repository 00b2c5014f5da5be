//! Raw images: the file (or block device) is the disk, byte for byte.

use crate::error::{check_range, DiskError, Op};
use crate::{in_iov_groups, total_len, DiskFile, MemSlice};
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::{StorageExt, StorageOpenOptions};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A raw image. Reads and writes of host buffers are `pread`/`pwrite` on the file. Vectored
/// reads and writes of guest memory, discard and write-zeroes go through imago's storage
/// driver for the same open file, which wraps `preadv`/`pwritev` and `fallocate(2)` safely,
/// so this crate needs no `unsafe` of its own.
pub(crate) struct RawDisk {
    path: PathBuf,
    file: File,
    /// A duplicate of `file`'s descriptor as an imago storage object.
    ///
    /// Write-zeroes uses its `write_allocated_zeroes` (`FALLOC_FL_ZERO_RANGE`: the range stays
    /// allocated, like QEMU's write-zeroes without MAY_UNMAP). Discard uses its `write_zeroes`
    /// (`FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` on the filesystem-block-aligned middle,
    /// zero buffers on the unaligned head and tail). When the filesystem refuses either call
    /// (`EOPNOTSUPP`...), imago falls back to writing zero buffers, so both always read back
    /// as zeroes.
    storage: imago::file::File,
    read_only: bool,
    size: u64,
}

impl RawDisk {
    /// Wraps `file`, already opened read-only or read-write as `read_only` says; `len` is its
    /// length (a block device's size included).
    pub(crate) fn new(
        path: &Path,
        file: File,
        len: u64,
        read_only: bool,
    ) -> Result<Self, DiskError> {
        let open_err = |source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        };
        let dup = file.try_clone().map_err(open_err)?;
        let opts = StorageOpenOptions::new().filename(path).write(!read_only);
        let storage = imago::file::File::from_open_file(dup, opts).map_err(open_err)?;
        Ok(RawDisk {
            path: path.to_path_buf(),
            file,
            storage,
            read_only,
            size: len,
        })
    }

    /// The error for a failed `op`. It borrows the path and clones it only on failure: this
    /// is built for every request, which otherwise pays an allocation for nothing.
    fn io_err(
        &self,
        op: Op,
        offset: u64,
        len: u64,
    ) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
        move |source| DiskError::Io {
            path: self.path.clone(),
            op,
            offset,
            len,
            source,
        }
    }

    /// Checks the range and that the disk is writable; returns the storage for zeroing.
    fn writable(&self, op: Op, offset: u64, len: u64) -> Result<&imago::file::File, DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.path.clone(),
                op,
            });
        }
        check_range(&self.path, op, offset, len, self.size)?;
        Ok(&self.storage)
    }
}

impl DiskFile for RawDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let len = buf.len() as u64;
        check_range(&self.path, Op::Read, offset, len, self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(self.io_err(Op::Read, offset, len))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let len = buf.len() as u64;
        self.writable(Op::Write, offset, len)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(self.io_err(Op::Write, offset, len))
    }

    fn read_vectored_at<'a>(&self, bufs: &'a [MemSlice<'a>], offset: u64) -> Result<(), DiskError> {
        let len = total_len(bufs);
        check_range(&self.path, Op::Read, offset, len, self.size)?;
        in_iov_groups(bufs, offset, |group, at| {
            // The guard keeps the guest memory mapped while the iovecs point into it.
            let (iov, _mapped) = IoVectorMut::from_volatile_slice(group);
            self.storage.readv(iov, at)
        })
        .map_err(self.io_err(Op::Read, offset, len))
    }

    fn write_vectored_at<'a>(
        &self,
        bufs: &'a [MemSlice<'a>],
        offset: u64,
    ) -> Result<(), DiskError> {
        let len = total_len(bufs);
        let storage = self.writable(Op::Write, offset, len)?;
        in_iov_groups(bufs, offset, |group, at| {
            let (iov, _mapped) = IoVector::from_volatile_slice(group);
            storage.writev(iov, at)
        })
        .map_err(self.io_err(Op::Write, offset, len))
    }

    fn flush(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| DiskError::Flush {
            path: self.path.clone(),
            source,
        })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let storage = self.writable(Op::Discard, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        storage
            .write_zeroes(offset, len)
            .map_err(self.io_err(Op::Discard, offset, len))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let storage = self.writable(Op::WriteZeroes, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        storage
            .write_allocated_zeroes(offset, len)
            .map_err(self.io_err(Op::WriteZeroes, offset, len))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{gather, guest_memory, pattern, scattered, vectored_round_trip, TempDir};
    use crate::{open_disk, DiskFile, ErrorKind, Format};
    use std::fs;

    const SIZE: usize = (1 << 20) + 4099;

    fn raw_disk(dir: &TempDir, read_only: bool) -> (std::path::PathBuf, Box<dyn DiskFile>) {
        let path = dir.join("disk.raw");
        if !path.exists() {
            fs::write(&path, pattern(SIZE, 7)).unwrap();
        }
        let disk = open_disk(&path, Some(Format::Raw), read_only).unwrap();
        (path, disk)
    }

    #[test]
    fn round_trips_at_unaligned_offsets() {
        let dir = TempDir::new("raw-rt");
        let (path, disk) = raw_disk(&dir, false);
        assert_eq!(disk.size(), SIZE as u64);
        let mut model = pattern(SIZE, 7);
        for (i, &(offset, len)) in [
            (0, 1),
            (1, 511),
            (513, 4097),
            (65535, 70000),
            (SIZE - 3, 3),
            (300_001, 0),
        ]
        .iter()
        .enumerate()
        {
            let data = pattern(len, 100 + i as u64);
            disk.write_at(&data, offset as u64).unwrap();
            model[offset..offset + len].copy_from_slice(&data);
            let mut back = vec![0; len + 2];
            let at = offset.saturating_sub(1).min(SIZE - back.len());
            disk.read_at(&mut back, at as u64).unwrap();
            assert_eq!(back, model[at..at + back.len()]);
        }
        disk.flush().unwrap();
        drop(disk);
        assert_eq!(fs::read(&path).unwrap(), model);
    }

    #[test]
    fn vectored_requests_go_straight_to_guest_memory() {
        let dir = TempDir::new("raw-vec");
        let (path, disk) = raw_disk(&dir, false);
        let mut model = pattern(SIZE, 7);
        vectored_round_trip(&*disk, &mut model, 513, &[1, 4096, 0, 70_000, 511], 1);
        vectored_round_trip(&*disk, &mut model, 0, &[512; 8], 2);
        // More slices than one preadv takes.
        vectored_round_trip(&*disk, &mut model, 9, &[7; 1500], 3);
        vectored_round_trip(&*disk, &mut model, (SIZE - 4099) as u64, &[4000, 99], 4);
        drop(disk);
        assert_eq!(fs::read(&path).unwrap(), model);

        // Read-only: reads work, writes are refused and change nothing.
        let disk = open_disk(&path, Some(Format::Raw), true).unwrap();
        let mem = guest_memory(8192);
        let bufs = scattered(&mem, 0, &[100, 200]);
        disk.read_vectored_at(&bufs, 1000).unwrap();
        assert_eq!(gather(&bufs), model[1000..1300]);
        let err = disk.write_vectored_at(&bufs, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
        // Past the end: an error, and no byte of guest memory or disk touched.
        let before = gather(&bufs);
        let err = disk.read_vectored_at(&bufs, SIZE as u64 - 299).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
        assert_eq!(gather(&bufs), before);
        drop(disk);
        assert_eq!(fs::read(&path).unwrap(), model);
    }

    #[test]
    fn discard_and_write_zeroes_read_back_as_zeroes() {
        let dir = TempDir::new("raw-zero");
        let (path, disk) = raw_disk(&dir, false);
        let mut model = pattern(SIZE, 7);
        let ranges = [
            (3usize, 5usize),     // inside one block
            (4095, 2),            // across a block boundary
            (8191, 3 * 4096 + 2), // unaligned head and tail around whole blocks
            (200_000, 300_000),   // large
            (SIZE - 5000, 5000),  // up to the end
            (77, 0),
        ];
        for (i, &(offset, len)) in ranges.iter().enumerate() {
            if i % 2 == 0 {
                disk.discard(offset as u64, len as u64).unwrap();
            } else {
                disk.write_zeroes(offset as u64, len as u64).unwrap();
            }
            model[offset..offset + len].fill(0);
            let mut back = vec![0xa5; SIZE];
            disk.read_at(&mut back, 0).unwrap();
            assert!(back == model, "range {i} ({offset}, {len})");
        }
        disk.flush().unwrap();
        drop(disk);
        assert_eq!(fs::read(&path).unwrap(), model, "size and content kept");
    }

    #[test]
    fn read_only_refuses_every_change() {
        let dir = TempDir::new("raw-ro");
        let (path, disk) = raw_disk(&dir, true);
        assert!(disk.read_only());
        let errs = [
            disk.write_at(&[1, 2, 3], 10).unwrap_err(),
            disk.discard(0, 4096).unwrap_err(),
            disk.write_zeroes(0, 4096).unwrap_err(),
            disk.write_at(&[], 0).unwrap_err(),
        ];
        for err in errs {
            assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
        }
        disk.flush().unwrap();
        let mut buf = [0; 16];
        disk.read_at(&mut buf, 100).unwrap();
        assert_eq!(fs::read(&path).unwrap(), pattern(SIZE, 7));
    }

    #[test]
    fn out_of_range_requests_touch_nothing() {
        let dir = TempDir::new("raw-oor");
        let (path, disk) = raw_disk(&dir, false);
        let size = SIZE as u64;
        let mut buf = [0u8; 2];
        let errs = [
            disk.read_at(&mut buf, size - 1).unwrap_err(),
            disk.read_at(&mut buf, u64::MAX).unwrap_err(),
            disk.read_at(&mut [], size + 1).unwrap_err(),
            disk.write_at(&[1, 2], size - 1).unwrap_err(),
            disk.write_at(&[1], u64::MAX).unwrap_err(),
            disk.discard(size - 10, 11).unwrap_err(),
            disk.discard(1, u64::MAX).unwrap_err(),
            disk.write_zeroes(size, 1).unwrap_err(),
            disk.write_zeroes(u64::MAX, u64::MAX).unwrap_err(),
        ];
        for err in errs {
            assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
            assert!(err.to_string().contains("disk.raw"), "{err}");
        }
        // The end itself is fine for empty requests.
        disk.read_at(&mut [], size).unwrap();
        disk.write_zeroes(size, 0).unwrap();
        drop(disk);
        assert_eq!(fs::read(&path).unwrap(), pattern(SIZE, 7));
    }
}
