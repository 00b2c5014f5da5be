//! virtio-vsock: stream sockets between the guest and host processes, over Unix sockets
//! on the host (Firecracker's scheme, which users know; see `muxer`).
//!
//! - `packet`: the 44-byte header and the checks on every packet the guest sends (pure).
//! - `connection`: one stream's state machine and credit-based flow control.
//! - `muxer`: the host side: the listening socket, the `CONNECT` handshake, connections
//!   to `PATH_<port>`, which stream has something for the guest, timeouts, RSTs.
//! - `device`: the [`Vsock`] device, its configuration space, the rx/tx engines.
//! - `events`: the event-loop side (`MutEventSubscriber`).
//!
//! The guest is never trusted: a packet with the wrong CIDs is dropped; one with a bad
//! type, op or length, or for no connection, gets an RST (unless it is one); a guest that
//! sends past the credit we gave it is reset. Memory is bounded: at most
//! [`CONN_BUF_SIZE`] bytes held per connection for a slow host reader (nothing for the
//! other direction: the host socket is read only when the guest can take the bytes),
//! at most `max_connections` connections, and at most 16 host processes that connected
//! but have not sent their `CONNECT` line yet (each gets 2 s).

mod connection;
mod device;
mod events;
mod muxer;
mod packet;
#[cfg(test)]
mod tests;

pub use device::{Vsock, VsockConfig, VsockError, DEFAULT_MAX_CONNECTIONS};
pub use muxer::VsockMetrics;
pub use packet::{Header, HDR_LEN};

/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;
/// The size of every queue.
pub const QUEUE_SIZE: u16 = 256;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// The largest payload of one packet (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The receive buffer we advertise per connection (`buf_alloc`): guest bytes the host has
/// not read yet, at most.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
