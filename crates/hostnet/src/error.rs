use std::io;

/// What went wrong, for callers that map errors (fvd maps them to XenAPI codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bad name, prefix length or argument the kernel refused (EINVAL).
    InvalidInput,
    /// No such interface (ENODEV, ENXIO).
    NotFound,
    /// The interface already exists (EEXIST).
    AlreadyExists,
    /// Not allowed (EPERM, EACCES): no CAP_NET_ADMIN, or a tap owned by another user.
    PermissionDenied,
    /// In use (EBUSY): a tap attached elsewhere, a bridge still up or with ports.
    Busy,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostnetError {
    #[error("invalid interface name {0:?} (1 to 15 bytes; no '/', ':', whitespace or NUL)")]
    InvalidName(String),
    #[error("invalid IPv4 prefix length /{0}")]
    InvalidPrefix(u8),
    #[error("invalid MTU {0}")]
    InvalidMtu(u32),
    #[error("invalid VLAN id {0}: 1 to 4094")]
    InvalidVlan(u16),

    #[error("invalid virtio-net header size {0} (the kernel takes 10 or more)")]
    InvalidHeaderSize(usize),
    #[error("interface {0} already exists")]
    AlreadyExists(String),
    #[error("no interface named {0}")]
    NotFound(String),
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error("cannot create a control socket for interface ioctls")]
    Socket(#[source] io::Error),
    #[error("{op} on {name} failed")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter a new network namespace")]
    Unshare(#[source] io::Error),
}

impl HostnetError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            HostnetError::InvalidName(_)
            | HostnetError::InvalidPrefix(_)
            | HostnetError::InvalidMtu(_)
            | HostnetError::InvalidVlan(_)
            | HostnetError::InvalidHeaderSize(_) => ErrorKind::InvalidInput,
            HostnetError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            HostnetError::NotFound(_) => ErrorKind::NotFound,
            HostnetError::OpenTun(e) | HostnetError::Socket(e) | HostnetError::Unshare(e) => {
                errno_kind(e)
            }
            HostnetError::Ioctl { source, .. } => errno_kind(source),
        }
    }

    pub(crate) fn ioctl(op: &'static str, name: &str, source: io::Error) -> HostnetError {
        HostnetError::Ioctl {
            op,
            name: name.to_owned(),
            source,
        }
    }
}

fn errno_kind(e: &io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::EINVAL) => ErrorKind::InvalidInput,
        Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::EEXIST) => ErrorKind::AlreadyExists,
        Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::EBUSY) => ErrorKind::Busy,
        _ => ErrorKind::Other,
    }
}
