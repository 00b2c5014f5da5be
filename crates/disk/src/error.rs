//! The crate's one error type, with the context a log line or an API error needs: which file,
//! which operation, which byte range.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What was being done when an error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open,
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Discard => "discard",
            Op::WriteZeroes => "write-zeroes",
        })
    }
}

/// The class of a [`DiskError`], for callers that map errors to API codes (XenAPI's
/// `VDI_MISSING`, `VDI_READONLY`, `VDI_IO_ERROR`...) rather than print them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The image, or a file of its backing chain, does not exist.
    NotFound,
    /// The operating system refused access to a file (permissions, read-only filesystem).
    PermissionDenied,
    /// A write, discard or write-zeroes on a disk opened read-only.
    ReadOnly,
    /// A byte range that does not lie inside the disk, or whose end overflows `u64`.
    OutOfRange,
    /// The file is not in the stated format, or uses a format or feature we do not support
    /// (encryption, external data files, a backing format other than raw or qcow2...).
    BadFormat,
    /// The image's metadata is inconsistent: fields pointing outside the file, impossible sizes,
    /// a backing chain that loops, or a mapping table that makes no sense.
    Corrupt,
    /// Any other I/O failure of the host (EIO, ENOSPC...).
    Io,
}

/// Errors of the disk layer. Every variant names the file; the `#[source]` chain (printed once
/// by whoever reports the error) says what the operating system or imago said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// The file could not be opened or inspected.
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not in the stated format, or needs a feature we do not support.
    #[error("{}: {reason}", path.display())]
    BadFormat { path: PathBuf, reason: String },
    /// The image's metadata is inconsistent or hostile.
    #[error("{}: corrupt image: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<io::Error>,
    },
    /// Opening the backing file of `path` failed; `source` says why.
    #[error("{}: cannot open its backing file {}", path.display(), backing.display())]
    Backing {
        path: PathBuf,
        backing: PathBuf,
        #[source]
        source: Box<DiskError>,
    },
    /// A request for bytes outside the disk (or whose end overflows `u64`); nothing was done.
    #[error(
        "{}: {op} of {len} bytes at offset {offset} lies outside the {size}-byte disk",
        path.display()
    )]
    OutOfRange {
        path: PathBuf,
        op: Op,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// A modification of a disk opened read-only; nothing was done.
    #[error("{}: {op} refused: the disk is open read-only", path.display())]
    ReadOnly { path: PathBuf, op: Op },
    /// The host failed a request.
    #[error("{}: {op} of {len} bytes at offset {offset} failed", path.display())]
    Io {
        path: PathBuf,
        op: Op,
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    /// The host failed to make completed writes durable.
    #[error("{}: flush failed", path.display())]
    Flush {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DiskError {
    /// The class of this error; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            DiskError::Open { source, .. }
            | DiskError::Io { source, .. }
            | DiskError::Flush { source, .. } => io_kind(source),
            DiskError::BadFormat { .. } => ErrorKind::BadFormat,
            DiskError::Corrupt { .. } => ErrorKind::Corrupt,
            DiskError::Backing { source, .. } => source.kind(),
            DiskError::OutOfRange { .. } => ErrorKind::OutOfRange,
            DiskError::ReadOnly { .. } => ErrorKind::ReadOnly,
        }
    }

    /// The image this error is about (for a backing-chain error: the image whose backing file
    /// failed; the backing file's own path is in the source).
    pub fn path(&self) -> &Path {
        match self {
            DiskError::Open { path, .. }
            | DiskError::BadFormat { path, .. }
            | DiskError::Corrupt { path, .. }
            | DiskError::Backing { path, .. }
            | DiskError::OutOfRange { path, .. }
            | DiskError::ReadOnly { path, .. }
            | DiskError::Io { path, .. }
            | DiskError::Flush { path, .. } => path,
        }
    }
}

/// imago reports inconsistent metadata as `InvalidData`; everything else is the host's word.
fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            ErrorKind::PermissionDenied
        }
        io::ErrorKind::InvalidData => ErrorKind::Corrupt,
        _ => ErrorKind::Io,
    }
}

/// Checks that `[offset, offset + len)` lies inside a disk of `size` bytes.
pub(crate) fn check_range(
    path: &Path,
    op: Op,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<(), DiskError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange {
            path: path.to_path_buf(),
            op,
            offset,
            len,
            size,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kinds_follow_the_io_error_or_the_variant() {
        let p = PathBuf::from("/x");
        let open = |k| DiskError::Open {
            path: p.clone(),
            source: io::Error::from(k),
        };
        assert_eq!(open(io::ErrorKind::NotFound).kind(), ErrorKind::NotFound);
        assert_eq!(
            open(io::ErrorKind::PermissionDenied).kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(open(io::ErrorKind::InvalidData).kind(), ErrorKind::Corrupt);
        assert_eq!(open(io::ErrorKind::Other).kind(), ErrorKind::Io);
        let backing = DiskError::Backing {
            path: p.clone(),
            backing: PathBuf::from("/base"),
            source: Box::new(open(io::ErrorKind::NotFound)),
        };
        assert_eq!(backing.kind(), ErrorKind::NotFound);
        assert_eq!(backing.path(), Path::new("/x"));
        assert!(backing.source().is_some());
        assert_eq!(
            backing.to_string(),
            "/x: cannot open its backing file /base"
        );
    }

    #[test]
    fn range_checks_reject_overflow_and_the_end() {
        let p = Path::new("/x");
        assert!(check_range(p, Op::Read, 0, 10, 10).is_ok());
        assert!(check_range(p, Op::Read, 10, 0, 10).is_ok());
        let err = check_range(p, Op::Read, 10, 1, 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfRange);
        assert_eq!(
            err.to_string(),
            "/x: read of 1 bytes at offset 10 lies outside the 10-byte disk"
        );
        assert!(check_range(p, Op::Write, 11, 0, 10).is_err());
        assert!(check_range(p, Op::Write, u64::MAX, 2, u64::MAX).is_err());
        assert!(check_range(p, Op::Write, 1, u64::MAX, u64::MAX).is_err());
    }
}
