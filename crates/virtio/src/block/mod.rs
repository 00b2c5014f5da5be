//! virtio-blk: a [`fv_disk::DiskFile`] served to the guest through one request queue.
//!
//! - `request.rs`: pure parsing of a descriptor chain into a [`Request`].
//! - `device.rs`: [`BlockDevice`], its configuration space and `VirtioDevice`.
//! - `io.rs`: carrying out a request between guest memory and the disk.
//! - `events.rs`: the event loop side (queue, wake and rate-limit timer fds).

mod device;
mod events;
mod io;
mod request;
#[cfg(test)]
mod tests;

pub use device::BlockDevice;
pub use request::{Range, Request, RequestError, RequestErrorKind, RequestKind, Segment};

use crate::rate_limiter::RateLimit;

/// The sector size of the virtio-blk protocol (sector numbers in requests are in 512-byte
/// units whatever the disk's block size).
pub const SECTOR_SIZE: u64 = 512;
/// Length of a request header: type, reserved, sector.
pub const HEADER_SIZE: u32 = 16;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES as usize;
/// Largest number of data descriptors in a request (`seg_max`). With indirect
/// descriptors a chain has at most this plus header and status.
pub const SEG_MAX: u32 = 254;
/// Largest number of segments in one discard or write-zeroes request.
pub const MAX_DISCARD_SEG: u32 = 32;
pub const MAX_WRITE_ZEROES_SEG: u32 = 32;
/// Largest number of sectors in one discard or write-zeroes segment (1 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 21;
/// Discards are aligned to this many sectors (4 KiB).
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;
/// Size of one discard/write-zeroes segment descriptor in guest memory.
pub const DISCARD_SEGMENT_SIZE: u32 = 16;
/// Default and largest queue size.
pub const QUEUE_SIZE: u16 = 256;

/// How a block device is set up (the disk itself is passed separately).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    /// What GET_ID answers, at most 20 bytes (the guest's `/sys/block/vdX/serial`).
    pub serial: String,
    /// Size of the request queue: a power of two, at most 32768.
    pub queue_size: u16,
    /// Throughput and IOPS limits; `Default` is unlimited.
    pub rate_limit: RateLimit,
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            serial: String::new(),
            queue_size: QUEUE_SIZE,
            rate_limit: RateLimit::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("the serial {0:?} is longer than 20 bytes")]
    SerialTooLong(String),
    #[error("queue size {0} is not a power of two between 2 and 32768")]
    QueueSize(u16),
    #[error("cannot create the device's eventfd or timerfd")]
    Fd(#[source] std::io::Error),
    #[error("the new image must be read-only exactly when the old one was (the guest was told at start)")]
    ReadOnlyChanged,
}
