//! Queue processing shared by the device models: popping chains without trusting the
//! driver's indices, returning them, and interrupt suppression (EVENT_IDX).
//!
//! Every error here is the guest's doing (a ring index or address it wrote); devices
//! answer it with [`crate::lifecycle::Lifecycle::fail`], never with a panic.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use crate::device::Interrupt;
use crate::GuestMemoryMmap;

/// A descriptor chain borrowed from guest memory.
pub type Chain<'m> = DescriptorChain<&'m GuestMemoryMmap>;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the driver's available index {avail} is more than the queue size {size} ahead of the device's {next}")]
    AvailIndex { avail: u16, next: u16, size: u16 },
    #[error("cannot read available ring entry {0}")]
    AvailEntry(u16),
    #[error("cannot access the queue's rings")]
    Ring(#[source] virtio_queue::Error),
    #[error("descriptor chain at head {head} is unusable: {why}")]
    Chain { head: u16, why: String },
}

/// Pops the next chain the driver made available; `Ok(None)` when there is none.
pub fn pop_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
) -> Result<Option<Chain<'m>>, QueueError> {
    let avail = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(QueueError::Ring)?;
    let next = Wrapping(queue.next_avail());
    if avail == next {
        return Ok(None);
    }
    if (avail - next).0 > queue.size() {
        return Err(QueueError::AvailIndex {
            avail: avail.0,
            next: next.0,
            size: queue.size(),
        });
    }
    let mut iter = queue.iter(mem).map_err(|e| match e {
        virtio_queue::Error::InvalidAvailRingIndex => QueueError::AvailIndex {
            avail: avail.0,
            next: next.0,
            size: 0,
        },
        e => QueueError::Ring(e),
    })?;
    // `iter` re-read an index that only moves forward, so it still has an entry for us;
    // `None` means the entry itself could not be read.
    iter.next().map(Some).ok_or(QueueError::AvailEntry(next.0))
}

/// What a device did with one chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return the chain to the driver, with `len` bytes written into its buffers.
    Used(u32),
    /// Leave the chain in the ring and stop for now (e.g. a rate limit); it is popped
    /// again on the next call.
    Later,
    /// The chain cannot be answered properly: return it with `len` bytes written, then
    /// stop the queue; the device needs a reset.
    Broken { len: u32, why: String },
}

/// The result of [`drain`].
#[derive(Debug, Default)]
pub struct Drained {
    /// Chains put in the used ring.
    pub used: u32,
    /// A chain was left in the ring ([`Outcome::Later`]).
    pub deferred: bool,
    /// Processing stopped on this error; the device needs a reset.
    pub error: Option<QueueError>,
}

/// Hands every available chain to `handle` and returns it to the used ring, with the
/// driver's notifications disabled meanwhile (re-enabled, and the ring checked once more,
/// before returning). Does not interrupt the driver: call [`notify`] afterwards if
/// `used > 0`, even when `error` is set, so it sees the chains that were completed.
pub fn drain<F>(queue: &mut Queue, mem: &GuestMemoryMmap, mut handle: F) -> Drained
where
    F: FnMut(Chain<'_>) -> Outcome,
{
    let mut out = Drained::default();
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            out.error = Some(QueueError::Ring(e));
            return out;
        }
        loop {
            let chain = match pop_chain(queue, mem) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            };
            let head = chain.head_index();
            let (len, broken) = match handle(chain) {
                Outcome::Used(len) => (len, None),
                Outcome::Later => {
                    queue.go_to_previous_position();
                    out.deferred = true;
                    return out;
                }
                Outcome::Broken { len, why } => (len, Some(why)),
            };
            if let Err(e) = queue.add_used(mem, head, len) {
                out.error = Some(QueueError::Ring(e));
                return out;
            }
            out.used += 1;
            if let Some(why) = broken {
                out.error = Some(QueueError::Chain { head, why });
                return out;
            }
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => return out,
            Err(e) => {
                out.error = Some(QueueError::Ring(e));
                return out;
            }
        }
    }
}

/// Interrupts the driver for queue `index` unless it asked not to be (EVENT_IDX).
pub fn notify(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    index: u16,
) -> Result<(), QueueError> {
    if queue.needs_notification(mem).map_err(QueueError::Ring)? {
        interrupt.signal_queue(index);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Desc, Driver, F_NEXT, F_WRITE};
    use vm_memory::GuestAddress;

    fn driver() -> (Driver, Queue) {
        let d = Driver::new(0x10_0000, &[16]);
        let q = d.queue(0);
        (d, q)
    }

    #[test]
    fn pops_chains_in_order_and_returns_them() {
        let (mut d, mut q) = driver();
        let a = d.alloc(64);
        let h1 = d.add_chain(0, &[Desc::read(a, 16), Desc::write(a, 1)]);
        let h2 = d.add_chain(0, &[Desc::write(a, 8)]);
        let mut seen = Vec::new();
        let r = drain(&mut q, &d.mem, |c| {
            seen.push((c.head_index(), c.count()));
            Outcome::Used(3)
        });
        assert!(r.error.is_none());
        assert_eq!(r.used, 2);
        assert_eq!(seen, vec![(h1, 2), (h2, 1)]);
        let used = d.take_used(0);
        assert_eq!(used.len(), 2);
        assert_eq!((used[0].id, used[0].len), (u32::from(h1), 3));
        assert_eq!((used[1].id, used[1].len), (u32::from(h2), 3));
    }

    #[test]
    fn later_leaves_the_chain_for_the_next_call() {
        let (mut d, mut q) = driver();
        let a = d.alloc(64);
        let h = d.add_chain(0, &[Desc::write(a, 8)]);
        let r = drain(&mut q, &d.mem, |_| Outcome::Later);
        assert!(r.deferred);
        assert_eq!(r.used, 0);
        let r = drain(&mut q, &d.mem, |c| {
            assert_eq!(c.head_index(), h);
            Outcome::Used(0)
        });
        assert_eq!(r.used, 1);
    }

    #[test]
    fn avail_index_too_far_ahead_is_an_error_not_a_loop() {
        let (d, mut q) = driver();
        d.set_avail_idx(0, 17);
        let mut calls = 0;
        let r = drain(&mut q, &d.mem, |_| {
            calls += 1;
            Outcome::Used(0)
        });
        assert!(matches!(r.error, Some(QueueError::AvailIndex { .. })));
        assert_eq!(calls, 0);
    }

    #[test]
    fn head_index_out_of_range_yields_an_empty_chain() {
        let (mut d, mut q) = driver();
        d.push_avail(0, 200);
        let r = drain(&mut q, &d.mem, |c| Outcome::Used(c.count() as u32));
        // The chain walks no descriptor; returning it fails since its head is invalid.
        assert!(matches!(r.error, Some(QueueError::Ring(_))));
    }

    #[test]
    fn a_descriptor_loop_ends_after_queue_size_descriptors() {
        let (mut d, mut q) = driver();
        let a = d.alloc(64);
        d.set_desc(0, 0, a.0, 8, F_NEXT, 1);
        d.set_desc(0, 1, a.0, 8, F_NEXT | F_WRITE, 0);
        d.push_avail(0, 0);
        let r = drain(&mut q, &d.mem, |c| Outcome::Used(c.count() as u32));
        assert!(r.error.is_none());
        assert_eq!(d.take_used(0)[0].len, 16);
    }

    #[test]
    fn notify_honours_event_idx() {
        let (mut d, mut q) = driver();
        q.set_event_idx(true);
        let irq = crate::testing::RecordingInterrupt::default();
        let a = d.alloc(8);
        d.add_chain(0, &[Desc::write(a, 8)]);
        d.add_chain(0, &[Desc::write(a, 8)]);
        // The driver wants an interrupt only once the used index passes 5.
        d.set_used_event(0, 5);
        let r = drain(&mut q, &d.mem, |_| Outcome::Used(0));
        assert_eq!(r.used, 2);
        notify(&mut q, &d.mem, &irq, 0).unwrap();
        assert_eq!(irq.queue_signals(0), 0);
        d.set_used_event(0, 2);
        d.add_chain(0, &[Desc::write(a, 8)]);
        drain(&mut q, &d.mem, |_| Outcome::Used(0));
        notify(&mut q, &d.mem, &irq, 0).unwrap();
        assert_eq!(irq.queue_signals(0), 1);
        // And the device asked to be notified at its next available index.
        assert_eq!(d.avail_event(0), 3);
    }

    #[test]
    fn memory_outside_guest_ram_in_a_chain_is_not_fatal_for_the_walk() {
        let (mut d, mut q) = driver();
        d.add_chain(0, &[Desc::write(GuestAddress(u64::MAX - 3), 8)]);
        let r = drain(&mut q, &d.mem, |c| Outcome::Used(c.count() as u32));
        assert!(r.error.is_none());
        assert_eq!(d.take_used(0)[0].len, 1);
    }
}
