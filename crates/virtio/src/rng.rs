//! virtio-rng (entropy device): one queue of device-writable buffers, filled from the
//! host's `/dev/urandom` (opened once) straight into guest memory.
//!
//! Each request is served at most [`MAX_BYTES_PER_REQUEST`] bytes; the used length says
//! how many the guest got. An optional rate limit bounds the bytes and requests per
//! second.

use std::fs::File;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions, ReadVolatile};

use crate::device::{ActivateError, Interrupt, QueueEvents, VirtioDevice};
use crate::lifecycle::{Lifecycle, DEVICE_TOKEN_BASE, WAKE_TOKEN};
use crate::queue::{self, Chain, Outcome};
use crate::rate_limiter::{RateLimit, Throttle};
use crate::GuestMemoryMmap;

pub const QUEUE_SIZE: u16 = 256;
/// The most bytes one request gets.
pub const MAX_BYTES_PER_REQUEST: u32 = 64 * 1024;

/// Event data of the rate limiter's timerfd.
const THROTTLE_TOKEN: u32 = DEVICE_TOKEN_BASE;

#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("cannot open /dev/urandom")]
    Open(#[source] std::io::Error),
    #[error("cannot create the device's eventfd or timerfd")]
    Fd(#[source] std::io::Error),
}

/// A virtio-rng device reading from `S` (`/dev/urandom` unless a test gives another).
pub struct RngDevice<S = File> {
    source: S,
    queue_sizes: [u16; 1],
    lifecycle: Lifecycle,
    throttle: Throttle,
}

impl RngDevice<File> {
    /// A device serving `/dev/urandom`, within `rate_limit`.
    pub fn new(rate_limit: RateLimit) -> Result<Self, RngError> {
        let source = File::open("/dev/urandom").map_err(RngError::Open)?;
        Self::with_source(source, rate_limit)
    }
}

impl<S: ReadVolatile + Send> RngDevice<S> {
    pub fn with_source(source: S, rate_limit: RateLimit) -> Result<Self, RngError> {
        Ok(RngDevice {
            source,
            queue_sizes: [QUEUE_SIZE],
            lifecycle: Lifecycle::new().map_err(RngError::Fd)?,
            throttle: Throttle::new(rate_limit).map_err(RngError::Fd)?,
        })
    }

    /// Serves every available request (until a rate limit stops it) and interrupts the
    /// driver if it wants. Called by the event loop; tests may call it directly.
    pub fn process_queue(&mut self) {
        if self.throttle.is_blocked() {
            return;
        }
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let Some(queue) = active.queues.first_mut() else {
            return;
        };
        let mem = &active.mem;
        let source = &mut self.source;
        let throttle = &mut self.throttle;
        let drained = queue::drain(queue, mem, |chain| fill(chain, mem, source, throttle));
        let mut error = drained.error;
        if drained.used > 0 {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, 0) {
                error.get_or_insert(e);
            }
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-rng", &e);
        }
    }
}

/// Fills the chain's device-writable buffers, up to [`MAX_BYTES_PER_REQUEST`].
fn fill<S: ReadVolatile>(
    chain: Chain<'_>,
    mem: &GuestMemoryMmap,
    source: &mut S,
    throttle: &mut Throttle,
) -> Outcome {
    // Plan first (to know what the rate limiter should count), bounded by the cap.
    let mut plan: Vec<(GuestAddress, usize)> = Vec::new();
    let mut planned = 0u32;
    for desc in chain {
        if planned == MAX_BYTES_PER_REQUEST {
            break;
        }
        // Device-readable buffers have nothing for us.
        if !desc.is_write_only() || desc.len() == 0 {
            continue;
        }
        let n = desc.len().min(MAX_BYTES_PER_REQUEST - planned);
        plan.push((desc.addr(), n as usize));
        planned += n;
    }
    if !throttle.try_take(1, u64::from(planned)) {
        return Outcome::Later;
    }
    let mut written = 0u32;
    for (addr, n) in plan {
        if !mem.check_range(addr, n, Permissions::Write) {
            return Outcome::Broken {
                len: written,
                why: format!("buffer {:#x} (+{n}) lies outside guest memory", addr.0),
            };
        }
        if let Err(e) = mem.read_exact_volatile_from(addr, source, n) {
            // The host's fault, not the guest's: it gets what was written so far.
            log::error!("virtio-rng: cannot read the entropy source: {e}");
            return Outcome::Used(written);
        }
        // n <= MAX_BYTES_PER_REQUEST - written.
        written += n as u32;
    }
    Outcome::Used(written)
}

impl<S: ReadVolatile + Send> MutEventSubscriber for RngDevice<S> {
    fn init(&mut self, ops: &mut EventOps) {
        self.lifecycle.init(ops);
        let timer = Events::with_data(&self.throttle, THROTTLE_TOKEN, EventSet::IN);
        if let Err(e) = ops.add(timer) {
            log::error!("virtio-rng: cannot register the rate limiter's timer: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            WAKE_TOKEN => {
                if self.lifecycle.on_wake(ops) {
                    self.process_queue();
                }
            }
            THROTTLE_TOKEN => {
                self.throttle.on_timer();
                self.process_queue();
            }
            data => {
                if self.lifecycle.queue_event(data).is_some() {
                    self.process_queue();
                } else {
                    log::warn!("virtio-rng: event for unknown data {data}");
                }
            }
        }
    }
}

impl<S: ReadVolatile + Send> VirtioDevice for RngDevice<S> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_RING_F_INDIRECT_DESC
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
        queue_events: QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        self.lifecycle
            .activate(1, mem, interrupt, queues, queue_events, acked_features)
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
        self.throttle.unblock();
    }

    fn needs_reset(&self) -> bool {
        self.lifecycle.needs_reset()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rate_limiter::BucketConfig;
    use crate::testing::{Desc, Harness, F_NEXT, F_WRITE};
    use vm_memory::bitmap::BitmapSlice;
    use vm_memory::{Address, VolatileMemoryError, VolatileSlice};

    /// Bytes 1, 2, 3, ... (wrapping, never 0), so filled bytes are told from untouched.
    struct Counter(u8);

    impl ReadVolatile for Counter {
        fn read_volatile<B: BitmapSlice>(
            &mut self,
            buf: &mut VolatileSlice<B>,
        ) -> Result<usize, VolatileMemoryError> {
            let bytes: Vec<u8> = (0..buf.len())
                .map(|_| {
                    self.0 = self.0 % 255 + 1;
                    self.0
                })
                .collect();
            buf.copy_from(&bytes);
            Ok(bytes.len())
        }
    }

    struct Broken;

    impl ReadVolatile for Broken {
        fn read_volatile<B: BitmapSlice>(
            &mut self,
            _buf: &mut VolatileSlice<B>,
        ) -> Result<usize, VolatileMemoryError> {
            Err(VolatileMemoryError::IOError(
                std::io::Error::from_raw_os_error(libc::EIO),
            ))
        }
    }

    fn harness() -> Harness<RngDevice<Counter>> {
        let dev = RngDevice::with_source(Counter(0), RateLimit::default()).unwrap();
        let mut h = Harness::new(dev);
        h.activate().unwrap();
        h
    }

    #[test]
    fn fills_writable_buffers_and_reports_the_length() {
        let mut h = harness();
        let a = h.driver.alloc(100);
        let b = h.driver.alloc(28);
        let head = h.submit(0, &[Desc::write(a, 100), Desc::write(b, 28)]);
        let used = h.driver.take_used(0);
        assert_eq!(used.len(), 1);
        assert_eq!((used[0].id, used[0].len), (u32::from(head), 128));
        let got = h.driver.read(a, 100);
        assert_eq!(got[0], 1);
        assert_eq!(got[99], 100);
        assert_eq!(h.driver.read(b, 28)[0], 101);
        assert_eq!(h.interrupt.queue_signals(0), 1);
    }

    #[test]
    fn the_real_device_reads_urandom() {
        let mut h = Harness::new(RngDevice::new(RateLimit::default()).unwrap());
        h.activate().unwrap();
        let a = h.driver.alloc(64);
        h.submit(0, &[Desc::write(a, 64)]);
        assert_eq!(h.driver.take_used(0)[0].len, 64);
        assert_ne!(h.driver.read(a, 64), vec![0; 64]);
    }

    #[test]
    fn caps_bytes_per_request() {
        let mut h = harness();
        let a = h.driver.alloc(MAX_BYTES_PER_REQUEST + 4096);
        let b = h.driver.alloc(16);
        h.submit(
            0,
            &[
                Desc::write(a, MAX_BYTES_PER_REQUEST + 4096),
                Desc::write(b, 16),
            ],
        );
        assert_eq!(h.driver.take_used(0)[0].len, MAX_BYTES_PER_REQUEST);
        let tail = h
            .driver
            .read(a.unchecked_add(u64::from(MAX_BYTES_PER_REQUEST)), 4096);
        assert_eq!(tail, vec![0; 4096]);
        assert_eq!(h.driver.read(b, 16), vec![0; 16]);
    }

    #[test]
    fn readable_and_empty_descriptors_are_skipped() {
        let mut h = harness();
        let a = h.driver.alloc(16);
        let b = h.driver.alloc(16);
        h.driver.write(a, &[0xee; 16]);
        h.submit(
            0,
            &[Desc::read(a, 16), Desc::write(b, 0), Desc::write(b, 16)],
        );
        assert_eq!(h.driver.take_used(0)[0].len, 16);
        assert_eq!(h.driver.read(a, 16), vec![0xee; 16]);
        assert!(!h.device().needs_reset());
    }

    #[test]
    fn a_buffer_outside_guest_memory_needs_a_reset() {
        let mut h = harness();
        let a = h.driver.alloc(16);
        let head = h.submit(
            0,
            &[
                Desc::write(a, 16),
                Desc::write(GuestAddress(0x4000_0000), 16),
            ],
        );
        let used = h.driver.take_used(0);
        // The chain comes back with what was written, then the device stops.
        assert_eq!((used[0].id, used[0].len), (u32::from(head), 16));
        assert!(h.device().needs_reset());
        assert_eq!(h.interrupt.config_signals(), 1);
        h.submit(0, &[Desc::write(a, 16)]);
        assert!(h.driver.take_used(0).is_empty());
        // A reset and a new activation bring it back.
        h.reset();
        assert!(!h.device().needs_reset());
        h.driver.reset_rings();
        h.activate().unwrap();
        let a = h.driver.alloc(16);
        h.submit(0, &[Desc::write(a, 16)]);
        assert_eq!(h.driver.take_used(0)[0].len, 16);
    }

    #[test]
    fn a_failing_source_returns_what_it_has() {
        let mut h = Harness::new(RngDevice::with_source(Broken, RateLimit::default()).unwrap());
        h.activate().unwrap();
        let a = h.driver.alloc(16);
        h.submit(0, &[Desc::write(a, 16)]);
        assert_eq!(h.driver.take_used(0)[0].len, 0);
        assert!(!h.device().needs_reset());
    }

    #[test]
    fn a_descriptor_loop_is_bounded() {
        let mut h = harness();
        let a = h.driver.alloc(4096);
        h.driver.set_desc(0, 0, a.0, 4096, F_NEXT | F_WRITE, 0);
        h.driver.push_avail(0, 0);
        h.kick(0);
        // 256 walks of the same descriptor would be 1 MiB; the cap stops it at 64 KiB.
        assert_eq!(h.driver.take_used(0)[0].len, MAX_BYTES_PER_REQUEST);
    }

    #[test]
    fn a_bad_avail_index_needs_a_reset() {
        let mut h = harness();
        h.driver.set_avail_idx(0, 1000);
        h.kick(0);
        assert!(h.device().needs_reset());
        assert_eq!(h.interrupt.config_signals(), 1);
    }

    #[test]
    fn rate_limited_requests_wait_for_the_timer() {
        let limit = RateLimit {
            bytes: BucketConfig::default(),
            ops: BucketConfig { rate: 50, burst: 1 },
        };
        let mut h = Harness::new(RngDevice::with_source(Counter(0), limit).unwrap());
        h.activate().unwrap();
        let a = h.driver.alloc(8);
        h.driver.add_chain(0, &[Desc::write(a, 8)]);
        h.driver.add_chain(0, &[Desc::write(a, 8)]);
        h.kick(0);
        assert_eq!(h.driver.take_used(0).len(), 1);
        // One op per 20 ms: the second comes once the timer fires.
        h.run_for(Duration::from_millis(100));
        assert_eq!(h.driver.take_used(0).len(), 1);
    }

    #[test]
    fn config_space_is_empty_and_features_are_modern() {
        let dev = RngDevice::with_source(Counter(0), RateLimit::default()).unwrap();
        let mut buf = [0xffu8; 8];
        dev.read_config(0, &mut buf);
        assert_eq!(buf, [0; 8]);
        assert_eq!(dev.device_type(), VIRTIO_ID_RNG);
        assert_ne!(dev.avail_features() & (1 << VIRTIO_F_VERSION_1), 0);
    }
}
