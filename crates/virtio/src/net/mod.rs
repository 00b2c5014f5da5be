//! virtio-net: one receive and one transmit queue over a [`NetBackend`] (a tap in fv-vmm).
//!
//! - `backend`: the [`NetBackend`] trait the device reads and writes frames through, and the
//!   offloads it is told to accept.
//! - `header`: the 12-byte `virtio_net_hdr_v1` every frame carries, checked on transmit.
//! - `chain`: pure descriptor-chain handling (memory and a chain in, a frame or a checked
//!   list of receive buffers out).
//! - `device`: the [`Net`] device, its configuration space and the rx/tx engines.
//! - `events`: the event-loop side (`MutEventSubscriber`).
//!
//! Frames cross guest memory by copy through one host buffer per direction; the device
//! validates each chain before touching the backend. Design notes: docs/hostnet.md.

mod backend;
mod chain;
mod device;
mod events;
mod header;

pub use backend::{NetBackend, Offloads};
pub use device::{Net, NetConfig, NetError, NetMetrics};

/// The virtio-net header length in both directions: `virtio_net_hdr_v1` (VERSION_1 always
/// uses it, with or without mergeable rx buffers).
pub const VNET_HDR_LEN: usize = 12;
/// Ethernet header length; a frame shorter than header + this is malformed.
pub const ETH_HLEN: usize = 14;
/// The longest frame in either direction, header included: a 64 KiB IP packet (GSO) with an
/// Ethernet header and one VLAN tag.
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + ETH_HLEN + 4 + 65_535;

/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// The size of both queues.
pub const QUEUE_SIZE: u16 = 256;
