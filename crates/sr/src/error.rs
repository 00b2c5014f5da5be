//! The crate's one error type, and the [`ErrorKind`] fvd maps to XenAPI error codes.

use std::io;
use std::path::PathBuf;

use fv_disk::DiskError;

/// The class of an [`SrError`], for fvd to map to a XenAPI code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The VDI (or a file of its chain) does not exist: `VDI_MISSING` / `UUID_INVALID`.
    NotFound,
    /// The SR's filesystem is full or over quota: `SR_FULL`.
    SrFull,
    /// Another operation holds the VDI, or the VDI is busy (a base copy with children, a
    /// coalesce racing a write): `VDI_IN_USE` / `OTHER_OPERATION_IN_PROGRESS`.
    InUse,
    /// The request makes no sense for this VDI: a hostile or malformed name, a shrink, a name
    /// already taken, a VDI whose chain leaves the SR: `INVALID_VALUE` / `VDI_NOT_MANAGED`.
    Invalid,
    /// The caller cancelled (its progress callback said stop): `TASK_CANCELLED`.
    Cancelled,
    /// The host failed, or an image is corrupt: `VDI_IO_ERROR` / `SR_BACKEND_FAILURE`.
    Io,
    /// The SR type cannot do this at all (a VDI.create on an ISO library, a snapshot of an
    /// LVM snapshot): `SR_OPERATION_NOT_SUPPORTED`.
    Unsupported,
}

/// Errors of the SR driver. Each names the VDI or file; the `#[source]` chain says what the
/// operating system or the disk layer said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SrError {
    /// A name from a client that is not a VDI file name of this SR.
    #[error("{name:?} is not a VDI of this SR: {reason}")]
    BadName { name: String, reason: String },
    #[error("VDI {name} does not exist in {}", dir.display())]
    NotFound { dir: PathBuf, name: String },
    #[error("VDI {name} already exists in {}", dir.display())]
    Exists { dir: PathBuf, name: String },
    #[error("VDI {name} is in use: {reason}")]
    InUse { name: String, reason: String },
    #[error("VDI {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("cancelled")]
    Cancelled,
    /// A filesystem call failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The SR type cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// An external command (LVM) failed; `stderr` is what it said.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// The disk layer failed on an image.
    #[error("cannot {op} VDI {name}")]
    Disk {
        op: &'static str,
        name: String,
        #[source]
        source: DiskError,
    },
}

impl SrError {
    /// The class of this error; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            SrError::BadName { .. } | SrError::Exists { .. } | SrError::Invalid { .. } => {
                ErrorKind::Invalid
            }
            SrError::NotFound { .. } => ErrorKind::NotFound,
            SrError::InUse { .. } => ErrorKind::InUse,
            SrError::Cancelled => ErrorKind::Cancelled,
            SrError::Unsupported(_) => ErrorKind::Unsupported,
            SrError::Command { .. } => ErrorKind::Io,
            SrError::Io { source, .. } => io_kind(source),
            SrError::Disk { source, .. } => {
                // The disk layer wraps the host's error; a full filesystem is worth telling.
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source);
                while let Some(e) = cur {
                    if let Some(io) = e.downcast_ref::<io::Error>() {
                        if io_kind(io) == ErrorKind::SrFull {
                            return ErrorKind::SrFull;
                        }
                    }
                    cur = e.source();
                }
                match source.kind() {
                    fv_disk::ErrorKind::NotFound => ErrorKind::NotFound,
                    fv_disk::ErrorKind::OutOfRange => ErrorKind::Invalid,
                    _ => ErrorKind::Io,
                }
            }
        }
    }
}

fn io_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::SrFull,
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Io,
    }
}

/// `Err` of a failed `op` on `path`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> SrError {
    let path = path.into();
    move |source| SrError::Io { op, path, source }
}

/// `Err` of a failed disk-layer `op` on VDI `name`.
pub(crate) fn disk_err<'a>(
    op: &'static str,
    name: &'a str,
) -> impl FnOnce(DiskError) -> SrError + 'a {
    move |source| SrError::Disk {
        op,
        name: name.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let full = SrError::Io {
            op: "write",
            path: "/x".into(),
            source: io::Error::from_raw_os_error(28),
        };
        assert_eq!(full.kind(), ErrorKind::SrFull);
        let quota = io_err("write", "/x")(io::Error::from_raw_os_error(122));
        assert_eq!(quota.kind(), ErrorKind::SrFull);
        let disk_full = SrError::Disk {
            op: "copy",
            name: "a".into(),
            source: DiskError::Flush {
                path: "/x".into(),
                source: io::Error::from_raw_os_error(28),
            },
        };
        assert_eq!(disk_full.kind(), ErrorKind::SrFull);
        assert_eq!(
            io_err("open", "/x")(io::ErrorKind::NotFound.into()).kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            io_err("open", "/x")(io::Error::from_raw_os_error(5)).kind(),
            ErrorKind::Io
        );
        assert_eq!(SrError::Cancelled.kind(), ErrorKind::Cancelled);
        assert_eq!(
            SrError::BadName {
                name: "../x".into(),
                reason: "r".into()
            }
            .to_string(),
            "\"../x\" is not a VDI of this SR: r"
        );
    }
}
