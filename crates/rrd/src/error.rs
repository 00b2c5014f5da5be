//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// What went wrong, coarsely, for callers that map errors to API codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something unusable (a timestamp, a name, a query).
    InvalidInput,
    /// Nothing matched the request (no archive, no RRD).
    NotFound,
    /// The file system failed.
    Io,
    /// A saved file is damaged, truncated or of another format version.
    Corrupt,
}

/// Errors of `fv-rrd`. Every failing call leaves the data unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A timestamp was NaN, infinite, negative or beyond [`crate::MAX_TIMESTAMP`].
    #[error("timestamp {0} is not a time between 0 and {max} seconds", max = crate::MAX_TIMESTAMP)]
    BadTimestamp(f64),
    /// An update came at or before the last one (the clock went backwards).
    #[error("timestamp {got} is not after the last update at {last}")]
    TimeNotIncreasing {
        /// Time of the last accepted update.
        last: f64,
        /// The refused timestamp.
        got: f64,
    },
    /// A data-source name is empty, too long or has a character XAPI's legend cannot carry.
    #[error("data source name {name:?} is invalid: {reason}")]
    BadDsName {
        /// The refused name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A data source appears twice in one update.
    #[error("data source {0:?} appears twice in one update")]
    DuplicateDs(String),
    /// An RRD would hold more data sources than [`crate::MAX_DS`].
    #[error("an RRD may hold at most {max} data sources; this update needs {0}", max = crate::MAX_DS)]
    TooManyDs(usize),
    /// An owner UUID is empty, too long or holds characters other than `[0-9A-Za-z_.-]`.
    #[error("owner id {0:?} is invalid")]
    BadOwner(String),
    /// An archive layout is unusable (zero rows, zero PDPs per row, bad xff...).
    #[error("invalid archive layout: {0}")]
    BadArchive(&'static str),
    /// No RRD or no archive with the requested consolidation function exists.
    #[error("no round-robin archive is available for this query")]
    NoRraAvailable,
    /// A `/rrd_updates` query parameter could not be parsed.
    #[error("bad rrd_updates parameter {name}={value:?}")]
    BadQuery {
        /// Parameter name.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// Reading or writing a metrics file failed.
    #[error("{op} {path}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A metrics file (or buffer) is not a valid saved RRD set.
    #[error("corrupt metrics data: {0}")]
    Corrupt(String),
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoRraAvailable => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
