//! The balloon through the test driver and a real event loop, with a reclaimer that
//! records what it is asked to release.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::stats::{VIRTIO_BALLOON_S_MEMFREE, VIRTIO_BALLOON_S_MEMTOT};
use super::*;
use crate::testing::{Desc, Driver, Harness, RecordingInterrupt, DEFAULT_MEM_SIZE, F_NEXT};
use crate::{GuestMemoryMmap, VirtioDevice};

/// Records `(addr, len)` of every release; clones share the record.
#[derive(Clone, Default)]
struct Recorder {
    released: Arc<Mutex<Vec<(u64, u64)>>>,
    failing: Arc<AtomicBool>,
}

impl Recorder {
    fn take(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.released.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl MemoryReclaimer for Recorder {
    fn release(&self, addr: GuestAddress, len: u64) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((addr.0, len));
        Ok(())
    }
}

const PAGE: u64 = PAGE_SIZE;

fn pfns(list: &[u32]) -> Vec<u8> {
    list.iter().flat_map(|p| p.to_le_bytes()).collect()
}

fn stat(tag: u16, val: u64) -> Vec<u8> {
    let mut v = tag.to_le_bytes().to_vec();
    v.extend_from_slice(&val.to_le_bytes());
    v
}

fn harness_with(interval: Option<Duration>) -> (Harness<Balloon<Recorder>>, Recorder) {
    let rec = Recorder::default();
    let mut h = Harness::new(Balloon::new(rec.clone(), interval).unwrap());
    h.activate().unwrap();
    (h, rec)
}

fn harness() -> (Harness<Balloon<Recorder>>, Recorder) {
    harness_with(None)
}

/// Inflates with `list` in one chain; returns the chain's used length.
fn inflate(h: &mut Harness<Balloon<Recorder>>, list: &[u32]) -> u32 {
    let bytes = pfns(list);
    let at = h.driver.alloc_bytes(&bytes);
    h.submit(INFLATE_QUEUE, &[Desc::read(at, bytes.len() as u32)]);
    let used = h.driver.take_used(INFLATE_QUEUE);
    assert_eq!(used.len(), 1);
    used[0].len
}

#[test]
fn inflate_releases_pages_in_runs() {
    let (mut h, rec) = harness();
    assert_eq!(inflate(&mut h, &[10, 11, 12, 20, 11]), 0);
    assert_eq!(
        rec.take(),
        vec![(10 * PAGE, 3 * PAGE), (20 * PAGE, PAGE), (11 * PAGE, PAGE)]
    );
    let m = h.device().metrics();
    assert_eq!(m.inflated_pages, 5);
    assert_eq!(m.released_bytes, 5 * PAGE);
    assert_eq!(h.interrupt.queue_signals(INFLATE_QUEUE as u16), 1);
}

#[test]
fn pages_outside_guest_ram_are_skipped() {
    let (mut h, rec) = harness();
    let last = (DEFAULT_MEM_SIZE / PAGE) as u32 - 1;
    inflate(&mut h, &[last, last + 1, 0x8000_0000, u32::MAX, 7]);
    assert_eq!(
        rec.take(),
        vec![(u64::from(last) * PAGE, PAGE), (7 * PAGE, PAGE)]
    );
    let m = h.device().metrics();
    assert_eq!((m.inflated_pages, m.bad_pfns), (2, 3));
    assert!(!h.device().needs_reset());
}

#[test]
fn runs_stop_at_region_boundaries_and_holes() {
    // RAM at [0, 4 MiB) and [4 MiB, 8 MiB) (adjacent), and [16 MiB, 20 MiB).
    let mib = 1usize << 20;
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 4 * mib),
        (GuestAddress(4 << 20), 4 * mib),
        (GuestAddress(16 << 20), 4 * mib),
    ])
    .unwrap();
    let rec = Recorder::default();
    let dev = Balloon::new(rec.clone(), None).unwrap();
    let driver = Driver::with_memory(mem, dev.queue_max_sizes());
    let mut h = Harness::with_driver(dev, driver);
    h.activate().unwrap();
    let boundary = (4 << 20) / PAGE as u32;
    let hole = (8 << 20) / PAGE as u32;
    let high = (16 << 20) / PAGE as u32;
    inflate(&mut h, &[boundary - 1, boundary, hole, high, high + 1]);
    assert_eq!(
        rec.take(),
        vec![
            ((boundary - 1) as u64 * PAGE, PAGE),
            (boundary as u64 * PAGE, PAGE),
            (high as u64 * PAGE, 2 * PAGE),
        ]
    );
    assert_eq!(h.device().metrics().bad_pfns, 1);
}

#[test]
fn malformed_page_lists_are_skipped() {
    let (mut h, rec) = harness();
    let list = pfns(&[1, 2, 3]);
    let at = h.driver.alloc_bytes(&list);
    let big = h.driver.alloc((MAX_PFNS_PER_CHAIN * 4 + 4) as u32);
    // Device-writable, outside RAM, too long, a loop.
    h.driver
        .add_chain(INFLATE_QUEUE, &[Desc::read(at, 4), Desc::write(at, 8)]);
    h.driver
        .add_chain(INFLATE_QUEUE, &[Desc::read(GuestAddress(0x7000_0000), 8)]);
    h.driver.add_chain(
        INFLATE_QUEUE,
        &[Desc::read(big, (MAX_PFNS_PER_CHAIN * 4 + 4) as u32)],
    );
    h.driver.set_desc(INFLATE_QUEUE, 20, at.0, 12, F_NEXT, 20);
    h.driver.push_avail(INFLATE_QUEUE, 20);
    // An empty list and one with trailing bytes (the whole entries count).
    h.driver.add_chain(INFLATE_QUEUE, &[Desc::read(at, 0)]);
    h.driver.add_chain(INFLATE_QUEUE, &[Desc::read(at, 6)]);
    h.kick(INFLATE_QUEUE);
    assert_eq!(h.driver.take_used(INFLATE_QUEUE).len(), 6);
    assert_eq!(rec.take(), vec![(PAGE, PAGE)]);
    let m = h.device().metrics();
    assert_eq!((m.bad_chains, m.inflated_pages), (4, 1));
    assert!(!h.device().needs_reset());
}

#[test]
fn deflate_only_counts_and_reclaimer_errors_are_counted() {
    let (mut h, rec) = harness();
    let bytes = pfns(&[5, 6, 1 << 30]);
    let at = h.driver.alloc_bytes(&bytes);
    h.submit(DEFLATE_QUEUE, &[Desc::read(at, 12)]);
    assert_eq!(h.driver.take_used(DEFLATE_QUEUE).len(), 1);
    assert!(rec.take().is_empty());
    let m = h.device().metrics();
    assert_eq!((m.deflated_pages, m.bad_pfns), (2, 1));

    rec.failing.store(true, Ordering::SeqCst);
    inflate(&mut h, &[5, 9]);
    let m = h.device().metrics();
    assert_eq!(
        (m.release_errors, m.released_bytes, m.inflated_pages),
        (2, 0, 2)
    );
}

#[test]
fn target_and_actual_in_the_config_space() {
    let (mut h, _) = harness();
    let mut cfg = [0u8; 8];
    h.device().read_config(0, &mut cfg);
    assert_eq!(cfg, [0; 8]);
    h.device().set_target_pages(0x1234);
    assert_eq!(h.interrupt.config_signals(), 1);
    h.device().read_config(0, &mut cfg);
    assert_eq!(cfg[..4], 0x1234u32.to_le_bytes());
    // The driver writes actual; num_pages is read-only; partial and stray writes.
    h.device().write_config(4, &0x1000u32.to_le_bytes());
    h.device().write_config(0, &[0xff; 4]);
    h.device().write_config(5, &[0x20]);
    h.device().write_config(u64::MAX, &[1, 2]);
    h.device().write_config(6, &[1, 2, 3, 4]);
    assert_eq!(h.device().target_pages(), 0x1234);
    assert_eq!(h.device().actual_pages(), 0x0201_2000);
    let mut wide = [0xffu8; 16];
    h.device().read_config(4, &mut wide);
    assert_eq!(wide[..4], 0x0201_2000u32.to_le_bytes());
    assert_eq!(wide[4..], [0; 12]);
    // A reset empties the balloon; the target stays.
    h.reset();
    assert_eq!(h.device().actual_pages(), 0);
    assert_eq!(h.device().target_pages(), 0x1234);
}

#[test]
fn statistics_are_kept_and_asked_for_again() {
    let rec = Recorder::default();
    let mut h = Harness::new(Balloon::new(rec, None).unwrap());
    assert!(h.device().stats().is_none());
    // The driver primes the stats queue before DRIVER_OK.
    let mut report = stat(VIRTIO_BALLOON_S_MEMFREE, 100 << 20);
    report.extend(stat(VIRTIO_BALLOON_S_MEMTOT, 512 << 20));
    report.extend(stat(4242, 1));
    let buf = h.driver.alloc_bytes(&report);
    let head = h
        .driver
        .add_chain(STATS_QUEUE, &[Desc::read(buf, report.len() as u32)]);
    h.activate().unwrap();
    let stats = h.device().stats().unwrap();
    assert_eq!(stats.free_memory, Some(100 << 20));
    assert_eq!(stats.total_memory, Some(512 << 20));
    let m = h.device().metrics();
    assert_eq!((m.stats_updates, m.unknown_stat_tags), (1, 1));
    // The buffer is held, not returned.
    assert!(h.driver.take_used(STATS_QUEUE).is_empty());

    h.device().request_stats().unwrap();
    h.run();
    let used = h.driver.take_used(STATS_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].id, used[0].len), (u32::from(head), 0));
    assert_eq!(h.interrupt.queue_signals(STATS_QUEUE as u16), 1);
    // Asking again before the guest answers does nothing.
    h.device().request_stats().unwrap();
    h.run();
    assert!(h.driver.take_used(STATS_QUEUE).is_empty());

    // The guest answers with fresh numbers in the same buffer.
    h.driver
        .write(buf, &stat(VIRTIO_BALLOON_S_MEMFREE, 50 << 20));
    h.submit(STATS_QUEUE, &[Desc::read(buf, 10)]);
    let stats = h.device().stats().unwrap();
    assert_eq!(stats.free_memory, Some(50 << 20));
    assert_eq!(stats.total_memory, None);
}

#[test]
fn the_timer_asks_for_statistics() {
    let (mut h, _) = harness_with(Some(Duration::from_millis(20)));
    let buf = h.driver.alloc_bytes(&stat(VIRTIO_BALLOON_S_MEMFREE, 1));
    h.submit(STATS_QUEUE, &[Desc::read(buf, 10)]);
    assert!(h.driver.take_used(STATS_QUEUE).is_empty());
    h.run_for(Duration::from_millis(100));
    assert_eq!(h.driver.take_used(STATS_QUEUE).len(), 1);
    // No buffer held: further ticks do nothing.
    h.run_for(Duration::from_millis(50));
    assert!(h.driver.take_used(STATS_QUEUE).is_empty());
    // Turning the timer off.
    h.device().set_stats_interval(None).unwrap();
    h.submit(STATS_QUEUE, &[Desc::read(buf, 10)]);
    h.run_for(Duration::from_millis(60));
    assert!(h.driver.take_used(STATS_QUEUE).is_empty());
}

#[test]
fn bad_statistics_buffers_are_held_and_a_second_one_returns_the_first() {
    let (mut h, _) = harness();
    let buf = h.driver.alloc(20);
    // Device-writable: unreadable, counted, but held like any other.
    let first = h.submit(STATS_QUEUE, &[Desc::write(buf, 20)]);
    assert_eq!(h.device().metrics().bad_chains, 1);
    assert!(h.device().stats().is_none());
    assert!(h.driver.take_used(STATS_QUEUE).is_empty());
    h.driver.write(buf, &stat(VIRTIO_BALLOON_S_MEMTOT, 9));
    h.submit(STATS_QUEUE, &[Desc::read(buf, 10)]);
    let used = h.driver.take_used(STATS_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].id, u32::from(first));
    assert_eq!(h.device().stats().unwrap().total_memory, Some(9));
}

#[test]
fn without_the_stats_queue_two_queues_are_enough() {
    let rec = Recorder::default();
    let mut dev = Balloon::new(rec.clone(), Some(Duration::from_millis(1))).unwrap();
    let mut driver = Driver::for_device(&dev, DEFAULT_MEM_SIZE);
    let features = dev.avail_features() & !(1 << VIRTIO_BALLOON_F_STATS_VQ);
    let queues = driver.queues().into_iter().take(2).collect();
    let events = (0..2)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let irq = Arc::new(RecordingInterrupt::default());
    dev.activate(driver.mem.clone(), irq.clone(), queues, events, features)
        .unwrap();
    let list = pfns(&[3]);
    let at = driver.alloc_bytes(&list);
    driver.add_chain(INFLATE_QUEUE, &[Desc::read(at, 4)]);
    dev.process_inflate();
    assert_eq!(rec.take(), vec![(3 * PAGE, PAGE)]);
    // Statistics calls are harmless.
    dev.process_stats();
    dev.refresh_stats();
    dev.request_stats().unwrap();
    assert!(dev.stats().is_none());
    assert!(!dev.needs_reset());
    // Three queues without the feature is a driver error.
    dev.reset();
    let queues = driver.queues();
    let events = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    assert!(dev
        .activate(driver.mem.clone(), irq, queues, events, features)
        .is_err());
}

#[test]
fn a_bad_avail_index_needs_a_reset() {
    let (mut h, _) = harness();
    h.driver.set_avail_idx(INFLATE_QUEUE, 600);
    h.kick(INFLATE_QUEUE);
    assert!(h.device().needs_reset());
    assert_eq!(h.interrupt.config_signals(), 1);
    h.driver.set_avail_idx(STATS_QUEUE, 600);
    h.kick(STATS_QUEUE);
    h.reset();
    h.driver.reset_rings();
    h.activate().unwrap();
    assert_eq!(inflate(&mut h, &[1]), 0);
}

#[test]
fn features_and_device_type() {
    let dev = Balloon::new(Recorder::default(), None).unwrap();
    assert_eq!(dev.device_type(), 5);
    let f = dev.avail_features();
    assert_ne!(f & (1 << VIRTIO_BALLOON_F_STATS_VQ), 0);
    assert_eq!(f & (1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM), 0);
    assert_eq!(f & (1 << VIRTIO_BALLOON_F_MUST_TELL_HOST), 0);
    let dev = dev.with_deflate_on_oom();
    assert_ne!(
        dev.avail_features() & (1 << VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
        0
    );
    assert_eq!(dev.queue_max_sizes().len(), 3);
}
