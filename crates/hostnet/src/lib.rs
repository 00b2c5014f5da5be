//! Host networking for Ferrovisor: tap devices for the VMM's virtio-net, and the bridges,
//! link states and addresses that `fvd` and the tests set up around them.
//!
//! - [`Tap`]: a tap interface through `/dev/net/tun`, non-blocking, with a virtio-net header
//!   before each frame (`IFF_VNET_HDR`). With the default `virtio` feature it is an
//!   `fv_virtio::net::NetBackend`.
//! - [`link`]: bridges, ports, up/down and IPv4 addresses, through the classic interface
//!   ioctls (see that module for why not rtnetlink).
//! - [`netns`]: running code in a fresh network namespace (tests).
//!
//! Every call acts in the calling thread's network namespace. See docs/hostnet.md.
// The one exception, `sys`, holds the ioctls.
#![deny(unsafe_code)]

#[cfg(feature = "virtio")]
mod backend;
mod error;
pub mod link;
mod name;
pub mod netns;
mod sys;
mod tap;

pub use error::{ErrorKind, HostnetError};
pub use tap::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO};

pub type Result<T> = std::result::Result<T, HostnetError>;
