//! virtio-balloon: the VMM asks the guest to give memory back (a target in pages), the
//! guest hands over page frame numbers (inflate) or takes pages back (deflate), and
//! reports memory statistics on request.
//!
//! - `stats`: the guest's statistics (tag/value pairs), parsed without trusting them.
//! - `device`: the [`Balloon`] device, its configuration space, the three queues.
//! - `events`: the event-loop side (queues, the statistics timer, refresh requests).
//!
//! Releasing a page needs `madvise(MADV_DONTNEED)` on the VMM's mapping of guest RAM,
//! which this crate (no `unsafe`) cannot do: the VMM passes a [`MemoryReclaimer`]. Every
//! page frame number from the guest is checked to lie in guest RAM first; others are
//! skipped and counted.
//!
//! Statistics follow the spec's protocol: the guest puts one buffer of statistics in the
//! stats queue, the device keeps it, and gives it back (used, length 0) to ask for fresh
//! ones; the guest then refills it and makes it available again. The device asks every
//! `stats_interval` (a timerfd) and whenever [`Balloon::request_stats`] is called.

mod device;
mod events;
mod stats;
#[cfg(test)]
mod tests;

use std::io;
use std::time::Duration;

use vm_memory::GuestAddress;

pub use device::{Balloon, BalloonError, BalloonMetrics};
pub use stats::BalloonStats;

/// A sensible `stats_interval` for [`Balloon::new`] when the user gives none.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(5);

/// The balloon's page size, whatever the guest's: page frame numbers count 4 KiB pages.
pub const PAGE_SIZE: u64 = 4096;
/// Page frame numbers are `u32`: the balloon reaches the first 16 TiB of guest memory.
pub const PFN_SHIFT: u32 = 12;

/// Queue indices. The stats queue exists only with `VIRTIO_BALLOON_F_STATS_VQ`.
pub const INFLATE_QUEUE: usize = 0;
pub const DEFLATE_QUEUE: usize = 1;
pub const STATS_QUEUE: usize = 2;
/// The size of every queue.
pub const QUEUE_SIZE: u16 = 256;

/// The most page frame numbers one inflate or deflate chain may carry (Linux sends at
/// most 256); a longer chain is refused whole.
pub const MAX_PFNS_PER_CHAIN: usize = 4096;

/// Feature bits (virtio 1.2, 5.5.3).
pub const VIRTIO_BALLOON_F_MUST_TELL_HOST: u32 = 0;
pub const VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
pub const VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;

/// Gives guest memory back to the host. fv-vmm implements it with
/// `madvise(MADV_DONTNEED)` on its mapping of guest RAM: the host frees the pages, and a
/// guest that touches them again reads zeroes.
pub trait MemoryReclaimer: Send {
    /// Releases guest-physical `[addr, addr + len)`: page-aligned, a whole number of
    /// pages, inside one region of guest RAM (the device checked all three).
    fn release(&self, addr: GuestAddress, len: u64) -> io::Result<()>;
}
