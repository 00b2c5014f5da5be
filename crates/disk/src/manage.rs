//! Making and changing qcow2 images, for storage repositories: create (thin, optionally on a
//! backing file), grow, and read what a header says.
//!
//! Images are made by imago (`Qcow2::create_builder`, which works in the `sync` build: version
//! 3, 64 KiB clusters, 16-bit refcounts, the backing format in a header extension) and grown
//! by imago's `resize_grow` (a larger L1 table written and switched to first, the size field
//! last). Both are then flushed and fsynced, so a caller may rename the file into place.

use crate::error::DiskError;
use crate::open_file;
use crate::qcow2::{check_header, open_chain};
use imago::file::File as ImagoFile;
use imago::format::PreallocateMode;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatCreateBuilder, StorageOpenOptions};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// What a qcow2 header says, as [`qcow2_info`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2Info {
    /// Virtual size in bytes.
    pub size: u64,
    /// The backing file's name as the header spells it (relative to the image's directory
    /// unless absolute), if any.
    pub backing: Option<String>,
    /// The backing file's format as the header names it, if it does.
    pub backing_format: Option<String>,
    pub cluster_size: u64,
}

fn open_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the header of the qcow2 image at `path`, checked as [`crate::open_disk`] checks it,
/// without opening its backing file.
pub fn qcow2_info(path: &Path) -> Result<Qcow2Info, DiskError> {
    let (file, len) = open_file(path, true)?;
    let geometry = check_header(path, &file, len)?;
    let opts = StorageOpenOptions::new().filename(path).write(false);
    let storage = ImagoFile::from_open_file(file, opts).map_err(open_err(path))?;
    let qcow2 = Qcow2::<ImagoFile>::open_image(storage, false).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidData {
            DiskError::Corrupt {
                path: path.to_path_buf(),
                reason: "imago refused the metadata".into(),
                source: Some(e),
            }
        } else {
            DiskError::Open {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    let backing = qcow2.implicit_backing_file().cloned();
    let backing_format = qcow2.implicit_backing_format().cloned();
    let access = FormatAccess::new(qcow2);
    Ok(Qcow2Info {
        size: access.size(),
        backing,
        backing_format,
        cluster_size: geometry.cluster_size(),
    })
}

/// Creates a thin qcow2 image of `size` bytes at `path`, which must not exist yet; with
/// `backing`, on that qcow2 image (named relative to `path`'s directory; it is not opened).
/// The image is durable (fsynced) when this returns; on failure, the file may be left behind
/// for the caller to remove.
pub fn create_qcow2(path: &Path, size: u64, backing: Option<&str>) -> Result<(), DiskError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(open_err(path))?;
    let sync = file.try_clone().map_err(open_err(path))?;
    let opts = StorageOpenOptions::new().filename(path).write(true);
    let storage = ImagoFile::from_open_file(file, opts).map_err(open_err(path))?;
    let mut builder = Qcow2::<ImagoFile>::create_builder(storage).size(size);
    if let Some(name) = backing {
        builder = builder.backing(name.to_owned(), "qcow2".to_owned());
    }
    builder.create().map_err(|source| DiskError::Io {
        path: path.to_path_buf(),
        op: crate::Op::Write,
        offset: 0,
        len: 0,
        source,
    })?;
    sync.sync_all().map_err(|source| DiskError::Flush {
        path: path.to_path_buf(),
        source,
    })
}

/// Grows the qcow2 image at `path` to `new_size` bytes (new space reads as zeroes; past the
/// end of a shorter backing file, qcow2 reads zeroes too). A `new_size` not above the current
/// size changes nothing. The image is durable when this returns.
pub fn grow_qcow2(path: &Path, new_size: u64) -> Result<(), DiskError> {
    let (file, len) = open_file(path, false)?;
    let (image, _) = open_chain(path, file, len, true)?;
    let io_err = |source| DiskError::Io {
        path: path.to_path_buf(),
        op: crate::Op::Write,
        offset: new_size,
        len: 0,
        source,
    };
    image
        .resize_grow(new_size, PreallocateMode::None)
        .map_err(io_err)?;
    image
        .flush()
        .and_then(|()| image.sync())
        .map_err(|source| DiskError::Flush {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check, compare, create_qcow2 as qemu_create, pattern, TempDir};
    use crate::{open_disk, ErrorKind, Extent, Format};
    use std::fs;

    const MIB: u64 = 1 << 20;

    #[test]
    fn created_images_pass_qemu_img_and_read_back() {
        let dir = TempDir::new("m-create");
        let img = dir.join("a.qcow2");
        create_qcow2(&img, 5 * MIB, None).unwrap();
        check(&img);
        let info = qcow2_info(&img).unwrap();
        assert_eq!(info.size, 5 * MIB);
        assert_eq!(info.backing, None);
        assert_eq!(info.cluster_size, 65536);
        let disk = open_disk(&img, Some(Format::Qcow2), false).unwrap();
        let mut model = vec![0u8; (5 * MIB) as usize];
        disk.write_at(&pattern(100_000, 1), 3 * MIB + 7).unwrap();
        model[(3 * MIB + 7) as usize..][..100_000].copy_from_slice(&pattern(100_000, 1));
        drop(disk);
        check(&img);
        let m = dir.join("model.raw");
        fs::write(&m, &model).unwrap();
        compare(&m, &img);

        // An existing file is not overwritten.
        let err = create_qcow2(&img, MIB, None).unwrap_err();
        assert!(err.to_string().contains("a.qcow2"), "{err}");
        check(&img);
    }

    #[test]
    fn children_see_their_backing_file_and_grow_past_it() {
        let dir = TempDir::new("m-child");
        let base = dir.join("base.qcow2");
        qemu_create(&base, 2 * MIB, &[]);
        let disk = open_disk(&base, None, false).unwrap();
        disk.write_at(&pattern(2 * MIB as usize, 2), 0).unwrap();
        drop(disk);
        let top = dir.join("top.qcow2");
        create_qcow2(&top, 2 * MIB, Some("base.qcow2")).unwrap();
        check(&top);
        let info = qcow2_info(&top).unwrap();
        assert_eq!(info.backing.as_deref(), Some("base.qcow2"));
        assert_eq!(info.backing_format.as_deref(), Some("qcow2"));

        grow_qcow2(&top, 3 * MIB).unwrap();
        grow_qcow2(&top, MIB).unwrap(); // not a shrink: nothing changes
        check(&top);
        assert_eq!(qcow2_info(&top).unwrap().size, 3 * MIB);
        let mut model = pattern(2 * MIB as usize, 2);
        model.resize((3 * MIB) as usize, 0);
        let m = dir.join("model.raw");
        fs::write(&m, &model).unwrap();
        compare(&m, &top);

        let disk = open_disk(&top, None, true).unwrap();
        assert_eq!(disk.size(), 3 * MIB);
        let mut buf = vec![1u8; MIB as usize];
        disk.read_at(&mut buf, 2 * MIB).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        // Everything comes from below the top layer: the base's data, then zeroes past its end.
        assert_eq!(
            disk.extent(0, 3 * MIB, 1).unwrap(),
            (Extent::Below, 3 * MIB)
        );
        assert_eq!(disk.extent(0, 3 * MIB, 2).unwrap(), (Extent::Data, 2 * MIB));
        let (kind, _) = disk.extent(2 * MIB, MIB, 2).unwrap();
        assert_eq!(kind, Extent::Zero);
        assert_eq!(disk.extent(3 * MIB, 5, 2).unwrap().1, 0);
        assert_eq!(
            disk.extent(3 * MIB + 1, 5, 2).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
    }

    #[test]
    fn extents_of_a_sparse_image() {
        let dir = TempDir::new("m-extent");
        let img = dir.join("s.qcow2");
        create_qcow2(&img, 4 * MIB, None).unwrap();
        let disk = open_disk(&img, None, false).unwrap();
        disk.write_at(&[7; 10], MIB + 5).unwrap();
        disk.write_at(&pattern(65536, 3), 2 * MIB).unwrap();
        disk.discard(2 * MIB, 65536).unwrap();
        let mut at = 0;
        let mut seen = Vec::new();
        while at < 4 * MIB {
            let (kind, n) = disk.extent(at, u64::MAX, usize::MAX).unwrap();
            assert!(n > 0);
            seen.push((kind, at, n));
            at += n;
        }
        assert!(seen.contains(&(Extent::Data, MIB, 65536)), "{seen:?}");
        assert!(
            seen.iter()
                .filter(|(k, ..)| *k == Extent::Data)
                .map(|(_, _, n)| n)
                .sum::<u64>()
                == 65536,
            "{seen:?}"
        );
        // A raw disk is all data.
        let raw = dir.join("r.raw");
        fs::write(&raw, vec![0u8; 4096]).unwrap();
        let disk = open_disk(&raw, None, true).unwrap();
        assert_eq!(disk.extent(100, 1 << 40, 1).unwrap(), (Extent::Data, 3996));
    }

    #[test]
    fn sixteen_tib_is_thin() {
        let dir = TempDir::new("m-16t");
        let img = dir.join("big.qcow2");
        let size = 16u64 << 40;
        create_qcow2(&img, size, None).unwrap();
        let disk = open_disk(&img, None, false).unwrap();
        disk.write_at(&pattern(4096, 9), size - 4096).unwrap();
        let mut back = vec![0; 4096];
        disk.read_at(&mut back, size - 4096).unwrap();
        assert_eq!(back, pattern(4096, 9));
        drop(disk);
        check(&img);
        assert!(fs::metadata(&img).unwrap().len() < 4 * MIB);
    }
}
