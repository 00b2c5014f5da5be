//! virtio-console: one port (`/dev/hvc0` in a Linux guest) over a [`ConsoleBackend`].
//!
//! - `backend`: the [`ConsoleBackend`] trait (an output sink and an input source polled
//!   for readiness), and two backends: [`FdBackend`] over any pair of fds (pipes, a pty, a
//!   connected socket) and [`SocketBackend`] on a listening Unix socket.
//! - `device`: the [`Console`] device, its configuration space and the rx/tx engines.
//! - `events`: the event-loop side (`MutEventSubscriber`).
//!
//! No `VIRTIO_CONSOLE_F_MULTIPORT`: queue 0 is port 0's receiveq, queue 1 its transmitq.
//! Both directions are bounded: guest output is taken one chain at a time (at most
//! [`MAX_TX_CHAIN`] bytes) and, when the sink would block, kept until it drains while the
//! guest's further chains wait in the ring; host input is read [`RX_CHUNK`] bytes at a
//! time and only when they can go somewhere, so the source stops being polled while the
//! guest has no receive buffers (until it adds some).

mod backend;
mod device;
mod events;
#[cfg(test)]
mod tests;

pub use backend::{set_nonblocking, ConsoleBackend, FdBackend, SocketBackend};
pub use device::{Console, ConsoleError, ConsoleMetrics};

/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// The size of both queues.
pub const QUEUE_SIZE: u16 = 256;
/// The most bytes of one transmit chain; a longer chain is dropped (Linux sends at most a
/// page per chain).
pub const MAX_TX_CHAIN: usize = 64 * 1024;
/// The most input bytes read from the backend at once, and held while the guest has no
/// buffers for them.
pub const RX_CHUNK: usize = 4096;
