//! The virtio-balloon device: features, configuration space, activation, the inflate,
//! deflate and stats queues, and what the VMM calls (target, statistics).

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::stats::{BalloonStats, STAT_SIZE};
use super::{
    MemoryReclaimer, DEFLATE_QUEUE, INFLATE_QUEUE, MAX_PFNS_PER_CHAIN, PAGE_SIZE, PFN_SHIFT,
    QUEUE_SIZE, STATS_QUEUE, VIRTIO_BALLOON_F_DEFLATE_ON_OOM, VIRTIO_BALLOON_F_STATS_VQ,
};
use crate::buffers;
use crate::device::{ActivateError, Interrupt, QueueEvents, VirtioDevice};
use crate::lifecycle::Lifecycle;
use crate::queue::{self, Outcome, QueueError};
use crate::GuestMemoryMmap;

const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Inflate or deflate chains handled per wake-up; past it the device wakes itself
/// (`resume`), so that a long inflation does not hold up statistics requests.
const BUDGET: usize = QUEUE_SIZE as usize / 2;

/// The largest statistics buffer we read: far more than the 16 tags the spec knows.
const MAX_STATS_BYTES: usize = 64 * STAT_SIZE;

/// Counters, for the VMM's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonMetrics {
    /// Pages the guest gave (inflate) and took back (deflate), valid ones only.
    pub inflated_pages: u64,
    pub deflated_pages: u64,
    /// Bytes handed to the reclaimer successfully.
    pub released_bytes: u64,
    /// Page frame numbers outside guest RAM, skipped.
    pub bad_pfns: u64,
    /// Malformed chains (wrong direction, outside RAM, too long, broken), skipped.
    pub bad_chains: u64,
    /// Reclaimer failures.
    pub release_errors: u64,
    /// Statistics buffers received, and the unknown tags in them (skipped).
    pub stats_updates: u64,
    pub unknown_stat_tags: u64,
    /// Event-loop and timer errors.
    pub event_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    #[error("cannot create the device's eventfds or timerfd")]
    Fd(#[source] io::Error),
    #[error("cannot arm the statistics timer")]
    Timer(#[source] io::Error),
    #[error("cannot wake the device's event loop")]
    Wake(#[source] io::Error),
}

/// A virtio-balloon device; `R` gives released memory back to the host.
pub struct Balloon<R: MemoryReclaimer> {
    reclaimer: R,
    avail_features: u64,
    /// Configuration space: the target the VMM set, and what the guest says it gave.
    num_pages: u32,
    actual: u32,
    pub(super) lifecycle: Lifecycle,
    /// Fires every `stats_interval` while the driver uses the stats queue.
    pub(super) stats_timer: TimerFd,
    stats_interval: Option<Duration>,
    /// Written by [`Balloon::request_stats`].
    pub(super) refresh: EventFd,
    /// Written when a budget ran out, so the loop comes back for the rest.
    pub(super) resume: EventFd,
    /// The driver acked `VIRTIO_BALLOON_F_STATS_VQ` at the current activation.
    acked_stats: bool,
    /// The statistics buffer the device holds, to give back when it wants fresh ones.
    stats_head: Option<u16>,
    stats: Option<BalloonStats>,
    buf: Vec<u8>,
    pub(super) metrics: BalloonMetrics,
}

fn has(features: u64, bit: u32) -> bool {
    features & (1u64 << bit) != 0
}

fn bits(list: &[u32]) -> u64 {
    list.iter().fold(0, |acc, bit| acc | (1u64 << bit))
}

impl<R: MemoryReclaimer> Balloon<R> {
    /// A balloon with a target of 0 pages that asks for statistics every
    /// `stats_interval` (`None` or zero: only on [`Balloon::request_stats`]).
    pub fn new(reclaimer: R, stats_interval: Option<Duration>) -> Result<Self, BalloonError> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| BalloonError::Fd(e.into()))?;
        Ok(Balloon {
            reclaimer,
            avail_features: bits(&[
                VIRTIO_F_VERSION_1,
                VIRTIO_RING_F_EVENT_IDX,
                VIRTIO_RING_F_INDIRECT_DESC,
                VIRTIO_BALLOON_F_STATS_VQ,
            ]),
            num_pages: 0,
            actual: 0,
            lifecycle: Lifecycle::new().map_err(BalloonError::Fd)?,
            stats_timer: timer,
            stats_interval: stats_interval.filter(|d| !d.is_zero()),
            refresh: EventFd::new(EFD_NONBLOCK).map_err(BalloonError::Fd)?,
            resume: EventFd::new(EFD_NONBLOCK).map_err(BalloonError::Fd)?,
            acked_stats: false,
            stats_head: None,
            stats: None,
            buf: Vec::new(),
            metrics: BalloonMetrics::default(),
        })
    }

    /// Also offers `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the guest may take pages back from
    /// the balloon when it runs out of memory rather than kill a process.
    pub fn with_deflate_on_oom(mut self) -> Self {
        self.avail_features |= 1u64 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
        self
    }

    /// Asks the guest to hold `pages` 4 KiB pages in the balloon, and tells it.
    pub fn set_target_pages(&mut self, pages: u32) {
        self.num_pages = pages;
        if let Some(active) = self.lifecycle.running() {
            active.interrupt.signal_config();
        }
    }

    /// The target set by [`Balloon::set_target_pages`].
    pub fn target_pages(&self) -> u32 {
        self.num_pages
    }

    /// The pages the guest says the balloon holds (its `actual` field).
    pub fn actual_pages(&self) -> u32 {
        self.actual
    }

    /// The last statistics the guest reported, if any.
    pub fn stats(&self) -> Option<BalloonStats> {
        self.stats
    }

    /// Asks the guest for fresh statistics now (on the event loop; they arrive when the
    /// guest answers).
    pub fn request_stats(&self) -> Result<(), BalloonError> {
        self.refresh.write(1).map_err(BalloonError::Wake)
    }

    /// Changes how often statistics are asked for (`None` or zero: never by itself).
    pub fn set_stats_interval(&mut self, interval: Option<Duration>) -> Result<(), BalloonError> {
        self.stats_interval = interval.filter(|d| !d.is_zero());
        self.arm_timer()
    }

    pub fn stats_interval(&self) -> Option<Duration> {
        self.stats_interval
    }

    pub fn metrics(&self) -> BalloonMetrics {
        self.metrics
    }

    /// Whether the driver set up the stats queue.
    fn stats_queue_in_use(&self) -> bool {
        self.lifecycle.is_active() && self.acked_stats
    }

    /// Arms the statistics timer when the driver uses the stats queue and an interval is
    /// set, disarms it otherwise.
    fn arm_timer(&mut self) -> Result<(), BalloonError> {
        let result = match self.stats_interval {
            Some(every) if self.stats_queue_in_use() => self.stats_timer.set(
                Expiration::Interval(TimeSpec::from_duration(every)),
                TimerSetTimeFlags::empty(),
            ),
            _ => self.stats_timer.unset(),
        };
        result.map_err(|e| BalloonError::Timer(e.into()))
    }

    /// The statistics timer fired.
    pub(super) fn on_timer(&mut self) {
        // Non-blocking: nothing to read means the timer was re-armed meanwhile.
        let _ = self.stats_timer.wait();
        self.refresh_stats();
    }

    /// Gives the held statistics buffer back to the guest, which answers with fresh
    /// statistics. Nothing happens while the device holds no buffer (the guest has not
    /// answered the last request yet, or has no stats queue).
    pub fn refresh_stats(&mut self) {
        let Some(head) = self.stats_head else {
            return;
        };
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(STATS_QUEUE) else {
            return;
        };
        let result = queue
            .add_used(mem, head, 0)
            .map_err(QueueError::Ring)
            .and_then(|()| queue::notify(queue, mem, &*active.interrupt, STATS_QUEUE as u16));
        self.stats_head = None;
        if let Err(e) = result {
            self.lifecycle.fail("virtio-balloon stats", &e);
        }
    }

    /// Takes the statistics buffers the guest made available: reads each, keeps the
    /// newest one (giving back an older one it replaces). The event loop calls this;
    /// tests may call it directly.
    pub fn process_stats(&mut self) {
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(STATS_QUEUE) else {
            return;
        };
        let mut returned = false;
        let mut error = None;
        'ring: loop {
            loop {
                let chain = match queue::pop_chain(queue, mem) {
                    Ok(Some(chain)) => chain,
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break 'ring;
                    }
                };
                let head = chain.head_index();
                match buffers::read_chain(mem, chain, MAX_STATS_BYTES, &mut self.buf) {
                    Ok(()) => {
                        let (stats, unknown) = BalloonStats::parse(&self.buf, SystemTime::now());
                        self.stats = Some(stats);
                        self.metrics.stats_updates += 1;
                        self.metrics.unknown_stat_tags += unknown as u64;
                    }
                    Err(e) => {
                        log::debug!("virtio-balloon: unreadable statistics buffer: {e}");
                        self.metrics.bad_chains += 1;
                    }
                }
                // One buffer is held; a driver that sends another gets the old one back.
                if let Some(old) = self.stats_head.replace(head) {
                    if let Err(e) = queue.add_used(mem, old, 0) {
                        error = Some(QueueError::Ring(e));
                        break 'ring;
                    }
                    returned = true;
                }
            }
            // With EVENT_IDX this also tells the driver where to notify us next.
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    error = Some(QueueError::Ring(e));
                    break;
                }
            }
        }
        if returned {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, STATS_QUEUE as u16) {
                error.get_or_insert(e);
            }
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-balloon stats", &e);
        }
    }

    /// Inflate: releases every valid page the guest gives. The event loop calls this;
    /// tests may call it directly.
    pub fn process_inflate(&mut self) {
        self.process_pfns(INFLATE_QUEUE);
    }

    /// Deflate: the guest takes pages back; only counted (they fault back in as zeroes).
    pub fn process_deflate(&mut self) {
        self.process_pfns(DEFLATE_QUEUE);
    }

    fn process_pfns(&mut self, index: usize) {
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(index) else {
            return;
        };
        let inflate = index == INFLATE_QUEUE;
        let buf = &mut self.buf;
        let metrics = &mut self.metrics;
        let reclaimer = &self.reclaimer;
        let mut budget = BUDGET;
        let mut out_of_budget = false;
        let drained = queue::drain(queue, mem, |chain| {
            if budget == 0 {
                out_of_budget = true;
                return Outcome::Later;
            }
            budget -= 1;
            match buffers::read_chain(mem, chain, MAX_PFNS_PER_CHAIN * 4, buf) {
                Ok(()) => {
                    let reclaim = inflate.then_some(reclaimer as &dyn MemoryReclaimer);
                    handle_pfns(mem, buf, reclaim, metrics);
                }
                Err(e) => {
                    log::debug!("virtio-balloon: dropped a page list: {e}");
                    metrics.bad_chains += 1;
                }
            }
            Outcome::Used(0)
        });
        let mut error = drained.error;
        if drained.used > 0 {
            // The queue's position is its index here: inflate 0, deflate 1.
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, index as u16) {
                error.get_or_insert(e);
            }
        }
        if out_of_budget && self.resume.write(1).is_err() {
            self.metrics.event_errors += 1;
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-balloon", &e);
        }
    }
}

/// The end of the guest RAM region holding page `addr`, if the whole page is in it.
fn page_region_end(mem: &GuestMemoryMmap, addr: u64) -> Option<u64> {
    let region = mem.find_region(GuestAddress(addr))?;
    let end = region.start_addr().0.checked_add(region.len())?;
    (addr.checked_add(PAGE_SIZE)? <= end).then_some(end)
}

/// Goes through a list of page frame numbers: counts the valid ones and, for inflate
/// (`reclaim`), releases them, consecutive pages of one region in one call.
fn handle_pfns(
    mem: &GuestMemoryMmap,
    bytes: &[u8],
    reclaim: Option<&dyn MemoryReclaimer>,
    metrics: &mut BalloonMetrics,
) {
    // (start, length, end of its region)
    let mut run: Option<(u64, u64, u64)> = None;
    let release = |run: (u64, u64, u64), metrics: &mut BalloonMetrics| {
        let Some(reclaimer) = reclaim else { return };
        match reclaimer.release(GuestAddress(run.0), run.1) {
            Ok(()) => metrics.released_bytes += run.1,
            Err(e) => {
                log::warn!(
                    "virtio-balloon: cannot release {:#x}+{:#x}: {e}",
                    run.0,
                    run.1
                );
                metrics.release_errors += 1;
            }
        }
    };
    for raw in bytes.chunks_exact(4) {
        let pfn = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        // Below 2^44: no overflow.
        let addr = u64::from(pfn) << PFN_SHIFT;
        let Some(region_end) = page_region_end(mem, addr) else {
            metrics.bad_pfns += 1;
            continue;
        };
        if reclaim.is_some() {
            metrics.inflated_pages += 1;
        } else {
            metrics.deflated_pages += 1;
        }
        match &mut run {
            Some((start, len, end)) if *start + *len == addr && addr + PAGE_SIZE <= *end => {
                *len += PAGE_SIZE;
            }
            _ => {
                if let Some(done) = run.replace((addr, PAGE_SIZE, region_end)) {
                    release(done, metrics);
                }
            }
        }
    }
    if let Some(done) = run {
        release(done, metrics);
    }
}

impl<R: MemoryReclaimer> VirtioDevice for Balloon<R> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    /// `struct virtio_balloon_config`: num_pages, actual (le32 each).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[0..4].copy_from_slice(&self.num_pages.to_le_bytes());
        config[4..8].copy_from_slice(&self.actual.to_le_bytes());
        crate::device::read_config_window(&config, offset, data);
    }

    /// Only `actual` (bytes 4..8) is the driver's to write.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut actual = self.actual.to_le_bytes();
        for (i, &byte) in data.iter().enumerate() {
            let Some(pos) = offset.checked_add(i as u64) else {
                break;
            };
            if (4..8).contains(&pos) {
                // pos - 4 < 4.
                actual[(pos - 4) as usize] = byte;
            }
        }
        self.actual = u32::from_le_bytes(actual);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
        queue_events: QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let features = acked_features & self.avail_features;
        let stats = has(features, VIRTIO_BALLOON_F_STATS_VQ);
        let num_queues = if stats { 3 } else { 2 };
        self.lifecycle
            .activate(num_queues, mem, interrupt, queues, queue_events, features)?;
        self.stats_head = None;
        self.acked_stats = stats;
        if let Err(e) = self.arm_timer() {
            log::error!("virtio-balloon: {e}");
            self.metrics.event_errors += 1;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
        self.stats_head = None;
        self.acked_stats = false;
        // A driver starting over has an empty balloon.
        self.actual = 0;
        if let Err(e) = self.arm_timer() {
            log::error!("virtio-balloon: {e}");
            self.metrics.event_errors += 1;
        }
    }

    fn needs_reset(&self) -> bool {
        self.lifecycle.needs_reset()
    }
}
