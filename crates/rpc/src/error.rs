//! Why a document was refused.

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, coarsely: what fvd matches on to pick its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Over a limit: the document's size or its nesting. Refused before or while reading,
    /// whatever the rest holds.
    Limit,
    /// Not well-formed: not UTF-8, not XML or not JSON.
    Syntax,
    /// Well-formed, but not a call or response this codec accepts: a wrong or missing tag
    /// or field, a scalar whose text is not of its type, a duplicate struct member, a type
    /// XenAPI does not use (`base64`).
    Structure,
}

/// A document the codec refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("document is {len} bytes, over the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("values nest deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("document is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// Malformed XML or JSON; `at` says where the parser gave up ("byte 17",
    /// "line 1 column 5").
    #[error("malformed document at {at}")]
    Syntax {
        at: String,
        #[source]
        source: BoxError,
    },
    #[error("{0}")]
    Structure(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TooLong { .. } | Error::TooDeep { .. } => ErrorKind::Limit,
            Error::NotUtf8(_) | Error::Syntax { .. } => ErrorKind::Syntax,
            Error::Structure(_) => ErrorKind::Structure,
        }
    }

    pub(crate) fn structure(msg: impl Into<String>) -> Self {
        Error::Structure(msg.into())
    }

    pub(crate) fn syntax(at: String, source: impl Into<BoxError>) -> Self {
        Error::Syntax {
            at,
            source: source.into(),
        }
    }

    /// Refuses a body over `limit` before any parsing, and one that is not UTF-8.
    pub(crate) fn check_body(body: &[u8], limit: usize) -> Result<&str, Error> {
        if body.len() > limit {
            return Err(Error::TooLong {
                len: body.len(),
                limit,
            });
        }
        let text = std::str::from_utf8(body).map_err(Error::NotUtf8)?;
        // A UTF-8 byte-order mark is legal before an XML or JSON document.
        Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
    }
}
