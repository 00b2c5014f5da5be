//! The virtio-net device: features, configuration space, activation, and the rx/tx engines
//! the event loop (`events.rs`) drives.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::{NetBackend, Offloads};
use super::chain::{self, Segment};
use super::header;
use super::{ETH_HLEN, MAX_FRAME_LEN, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, VNET_HDR_LEN};
use crate::buffers;
use crate::device::{ActivateError, Interrupt, QueueEvents, VirtioDevice};
use crate::lifecycle::Lifecycle;
use crate::queue::{self, Chain, Outcome, QueueError};
use crate::rate_limiter::{RateLimit, Throttle};
use crate::GuestMemoryMmap;

const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];

/// Frames read from the backend per wake-up; the backend's fd is level-triggered, so the
/// loop comes back for the rest after serving its other fds.
const RX_BUDGET: usize = 256;
/// Transmit chains handled per wake-up (half a ring); past it the device wakes itself
/// (`resume`), so that a guest that keeps the ring full does not starve receiving.
const TX_BUDGET: usize = QUEUE_SIZE as usize / 2;

/// The smallest MTU the spec lets a device offer (IPv4's minimum).
const MIN_MTU: u16 = 68;

/// How a network device is set up (the backend is passed separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub mac: [u8; 6],
    /// Offered with `VIRTIO_NET_F_MTU` when set; at least 68.
    pub mtu: Option<u16>,
    /// Limits on frames the guest receives (ops are frames); `Default` is unlimited.
    pub rx_rate_limit: RateLimit,
    /// Limits on frames the guest sends.
    pub tx_rate_limit: RateLimit,
}

impl NetConfig {
    /// A device with this MAC, no MTU offered, no rate limits.
    pub fn new(mac: [u8; 6]) -> Self {
        NetConfig {
            mac,
            mtu: None,
            rx_rate_limit: RateLimit::default(),
            tx_rate_limit: RateLimit::default(),
        }
    }
}

/// Counters, for the VMM's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetMetrics {
    /// Frames (and their bytes, headers excluded) put in the guest's receive buffers.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames from the backend that did not reach the guest: too big for its buffers, a
    /// malformed receive chain, too short.
    pub rx_dropped: u64,
    /// Frames (and bytes, headers excluded) the guest sent that the backend took.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Transmit chains not written: malformed, a refused header, a backend error.
    pub tx_dropped: u64,
    /// Malformed descriptor chains in either queue.
    pub bad_chains: u64,
    /// Backend read or write errors.
    pub backend_errors: u64,
    /// Event-loop registration errors (epoll).
    pub event_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot create the device's eventfds or timerfds")]
    Fd(#[source] io::Error),
    #[error("MTU {0} is below the minimum of 68")]
    InvalidMtu(u16),
}

/// One receive chain taken for the frame being delivered.
struct RxChain {
    head: u16,
    /// Its buffers in `RxState::segs`.
    segs: Range<usize>,
    /// The bytes of the frame it gets.
    len: usize,
}

/// The receive side: one frame read from the backend and not yet delivered, and scratch
/// space for the chains it goes to.
struct RxState {
    frame: Box<[u8]>,
    /// Length of the frame in `frame`; 0 when none is pending.
    pending: usize,
    /// The pending frame's tokens were taken from the rate limiter.
    paid: bool,
    /// The guest had no buffers for `pending`; the backend is not polled until it kicks.
    waiting_for_buffers: bool,
    segs: Vec<Segment>,
    chains: Vec<RxChain>,
}

impl RxState {
    fn clear(&mut self) {
        self.pending = 0;
        self.paid = false;
        self.waiting_for_buffers = false;
    }
}

enum Delivery {
    Delivered,
    /// The frame was dropped; `consumed` says whether chains went to the used ring.
    Dropped {
        consumed: bool,
    },
    /// Not enough buffers now; the chains taken were put back.
    NoBuffers,
    /// The queue itself is broken (available index out of range, used ring unwritable).
    Broken(QueueError),
}

/// A virtio-net device with one queue pair, over a [`NetBackend`].
pub struct Net<B: NetBackend> {
    config: NetConfig,
    avail_features: u64,
    pub(super) backend: B,
    pub(super) lifecycle: Lifecycle,
    pub(super) rx_throttle: Throttle,
    pub(super) tx_throttle: Throttle,
    /// Written when the transmit budget ran out, so the loop comes back for the rest.
    pub(super) resume: EventFd,
    /// Whether the backend's fd is in the epoll set.
    pub(super) backend_registered: bool,
    rx: RxState,
    tx_frame: Vec<u8>,
    /// The backend failed in a way that is not "no frame now": receiving stops until reset.
    backend_failed: bool,
    pub(super) metrics: NetMetrics,
}

fn has(features: u64, bit: u32) -> bool {
    features & (1u64 << bit) != 0
}

fn bits(list: &[u32]) -> u64 {
    list.iter().fold(0, |acc, bit| acc | (1u64 << bit))
}

impl<B: NetBackend> Net<B> {
    pub fn new(config: NetConfig, backend: B) -> Result<Self, NetError> {
        if let Some(mtu) = config.mtu.filter(|&m| m < MIN_MTU) {
            return Err(NetError::InvalidMtu(mtu));
        }
        let mut avail_features = bits(&[
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_RING_F_INDIRECT_DESC,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
        ]);
        if config.mtu.is_some() {
            avail_features |= 1u64 << VIRTIO_NET_F_MTU;
        }
        Ok(Net {
            config,
            avail_features,
            backend,
            lifecycle: Lifecycle::new().map_err(NetError::Fd)?,
            rx_throttle: Throttle::new(config.rx_rate_limit).map_err(NetError::Fd)?,
            tx_throttle: Throttle::new(config.tx_rate_limit).map_err(NetError::Fd)?,
            resume: EventFd::new(EFD_NONBLOCK).map_err(NetError::Fd)?,
            backend_registered: false,
            rx: RxState {
                frame: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
                pending: 0,
                paid: false,
                waiting_for_buffers: false,
                segs: Vec::new(),
                chains: Vec::new(),
            },
            tx_frame: Vec::with_capacity(MAX_FRAME_LEN),
            backend_failed: false,
            metrics: NetMetrics::default(),
        })
    }

    pub fn metrics(&self) -> NetMetrics {
        self.metrics
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// `struct virtio_net_config` up to `mtu`: mac, status, max_virtqueue_pairs, mtu.
    fn config_space(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[0..6].copy_from_slice(&self.config.mac);
        // VIRTIO_NET_S_LINK_UP is 1; the field is 16 bits.
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&self.config.mtu.unwrap_or(0).to_le_bytes());
        c
    }

    /// Whether the event loop should poll the backend now: active, receiving not stopped
    /// for want of buffers or tokens, and the backend still working.
    pub(super) fn wants_backend(&self) -> bool {
        self.lifecycle.is_active()
            && !self.lifecycle.needs_reset()
            && !self.rx.waiting_for_buffers
            && !self.rx_throttle.is_blocked()
            && !self.backend_failed
    }

    /// The guest added receive buffers.
    pub(super) fn rx_kicked(&mut self) {
        self.rx.waiting_for_buffers = false;
        self.process_rx();
    }

    /// Moves frames from the backend to the guest's receive buffers until the backend has
    /// none, the guest has no buffers for the next one (then it waits for the rx queue's
    /// kick), the rate limit stops it (then its timer), or the budget is spent. The event
    /// loop calls this; tests may call it directly on an activated device.
    pub fn process_rx(&mut self) {
        if self.rx.waiting_for_buffers || self.rx_throttle.is_blocked() {
            return;
        }
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let features = active.acked_features;
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(RX_QUEUE) else {
            return;
        };
        let mut used = false;
        let mut reads = 0usize;
        let mut error = None;
        // Bounds the retries when buffers arrive while we enable notifications.
        let mut retries = usize::from(QUEUE_SIZE);
        loop {
            if self.rx.pending == 0 {
                if reads == RX_BUDGET || self.backend_failed {
                    break;
                }
                match self.backend.read_frame(&mut self.rx.frame) {
                    Ok(n) => {
                        reads += 1;
                        if n < VNET_HDR_LEN + ETH_HLEN || n > self.rx.frame.len() {
                            self.metrics.rx_dropped += 1;
                            continue;
                        }
                        self.rx.pending = n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("virtio-net: the backend failed, receiving stops: {e}");
                        self.metrics.backend_errors += 1;
                        self.backend_failed = true;
                        break;
                    }
                }
            }
            if !self.rx.paid {
                if !self.rx_throttle.try_take(1, self.rx.pending as u64) {
                    // The timer brings us back; the frame waits.
                    break;
                }
                self.rx.paid = true;
            }
            match deliver(queue, mem, features, &mut self.rx, &mut self.metrics) {
                Delivery::Delivered => {
                    used = true;
                    self.metrics.rx_frames += 1;
                    self.metrics.rx_bytes += (self.rx.pending - VNET_HDR_LEN) as u64;
                    self.rx.clear();
                }
                Delivery::Dropped { consumed } => {
                    used |= consumed;
                    self.metrics.rx_dropped += 1;
                    self.rx.clear();
                }
                Delivery::NoBuffers => match queue.enable_notification(mem) {
                    Ok(true) if retries > 0 => retries -= 1,
                    Ok(_) => {
                        self.rx.waiting_for_buffers = true;
                        break;
                    }
                    Err(e) => {
                        error = Some(QueueError::Ring(e));
                        break;
                    }
                },
                Delivery::Broken(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if used {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, RX_QUEUE as u16) {
                error.get_or_insert(e);
            }
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-net rx", &e);
        }
    }

    /// Sends the guest's transmit chains to the backend, up to the budget or the rate
    /// limit. The event loop calls this; tests may call it directly.
    pub fn process_tx(&mut self) {
        if self.tx_throttle.is_blocked() {
            return;
        }
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let features = active.acked_features;
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let mut budget = TX_BUDGET;
        let mut out_of_budget = false;
        let mut tx = Tx {
            mem,
            features,
            backend: &mut self.backend,
            frame: &mut self.tx_frame,
            throttle: &mut self.tx_throttle,
            metrics: &mut self.metrics,
        };
        let drained = queue::drain(queue, mem, |chain| {
            if budget == 0 {
                out_of_budget = true;
                return Outcome::Later;
            }
            budget -= 1;
            tx.send(chain)
        });
        let mut error = drained.error;
        if drained.used > 0 {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, TX_QUEUE as u16) {
                error.get_or_insert(e);
            }
        }
        if out_of_budget && self.resume.write(1).is_err() {
            self.metrics.event_errors += 1;
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-net tx", &e);
        }
    }
}

/// What sending one chain needs, borrowed from the device.
struct Tx<'a, B> {
    mem: &'a GuestMemoryMmap,
    features: u64,
    backend: &'a mut B,
    frame: &'a mut Vec<u8>,
    throttle: &'a mut Throttle,
    metrics: &'a mut NetMetrics,
}

impl<B: NetBackend> Tx<'_, B> {
    /// Gathers, checks and writes one frame. A bad chain or header drops the frame and
    /// returns the chain (the driver only reclaims transmit buffers, it reads nothing).
    fn send(&mut self, chain: Chain<'_>) -> Outcome {
        // The chain's length before copying it, for the rate limiter (walked only when bytes
        // are limited); a malformed chain still costs an operation, so a guest cannot flood
        // past its limit with them.
        let bytes: u64 = if self.throttle.limits_bytes() {
            chain.clone().map(|d| u64::from(d.len())).sum()
        } else {
            0
        };
        if !self.throttle.try_take(1, bytes) {
            return Outcome::Later;
        }
        let len = match chain::read_tx_frame(self.mem, chain, MAX_FRAME_LEN, self.frame) {
            Ok(len) => len,
            Err(e) => {
                log::debug!("virtio-net: dropped a transmit chain: {e}");
                self.metrics.bad_chains += 1;
                self.metrics.tx_dropped += 1;
                return Outcome::Used(0);
            }
        };
        let frame = &mut self.frame[..len];
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr.copy_from_slice(&frame[..VNET_HDR_LEN]);
        if let Err(e) = header::check_tx(&mut hdr, self.features) {
            log::debug!("virtio-net: dropped a transmitted frame: {e}");
            self.metrics.tx_dropped += 1;
            return Outcome::Used(0);
        }
        frame[..VNET_HDR_LEN].copy_from_slice(&hdr);
        match self.backend.write_frame(frame) {
            Ok(()) => {
                self.metrics.tx_frames += 1;
                self.metrics.tx_bytes += (len - VNET_HDR_LEN) as u64;
            }
            Err(e) => {
                log::debug!("virtio-net: the backend refused a frame: {e}");
                self.metrics.backend_errors += 1;
                self.metrics.tx_dropped += 1;
            }
        }
        Outcome::Used(0)
    }
}

/// Puts the pending frame in the guest's receive chains: one chain without MRG_RXBUF, as
/// many as it takes with it (`num_buffers`). Chains are checked before any byte is written;
/// used entries are added only once the whole frame has its chains, so running out of
/// buffers half-way puts every chain back.
fn deliver(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    features: u64,
    rx: &mut RxState,
    metrics: &mut NetMetrics,
) -> Delivery {
    let mergeable = has(features, VIRTIO_NET_F_MRG_RXBUF);
    let frame_len = rx.pending;
    let start = queue.next_avail();
    rx.segs.clear();
    rx.chains.clear();
    let mut placed = 0usize;
    while placed < frame_len {
        let chain = match queue::pop_chain(queue, mem) {
            Ok(Some(chain)) => chain,
            Ok(None) => {
                queue.set_next_avail(start);
                // Every entry of the ring is available and the frame still does not fit:
                // it never will, so drop it rather than wait forever.
                if rx.chains.len() >= usize::from(queue.size()) {
                    return Delivery::Dropped { consumed: false };
                }
                return Delivery::NoBuffers;
            }
            Err(e) => return Delivery::Broken(e),
        };
        let head = chain.head_index();
        let first_seg = rx.segs.len();
        let need = frame_len - placed;
        match chain::collect_rx_buffers(mem, chain, &mut rx.segs, need) {
            Ok(capacity) => {
                let fits = capacity >= need as u64;
                if !mergeable && !fits {
                    // One chain per frame and this one is too small (the driver should post
                    // 65562-byte buffers with GUEST_TSO, 1526 without). Keep the chain for
                    // a smaller frame.
                    queue.set_next_avail(start);
                    return Delivery::Dropped { consumed: false };
                }
                // When it does not fit, `capacity < need`, so it fits in usize.
                let len = if fits { need } else { capacity as usize };
                rx.chains.push(RxChain {
                    head,
                    segs: first_seg..rx.segs.len(),
                    len,
                });
                placed += len;
            }
            Err(e) => {
                // A malformed chain goes back unused, and so do the chains this frame had:
                // the frame is dropped.
                log::debug!("virtio-net: dropped a receive chain: {e}");
                metrics.bad_chains += 1;
                rx.chains.push(RxChain {
                    head,
                    segs: 0..0,
                    len: 0,
                });
                for c in &rx.chains {
                    if let Err(e) = queue.add_used(mem, c.head, 0) {
                        return Delivery::Broken(QueueError::Ring(e));
                    }
                }
                return Delivery::Dropped { consumed: true };
            }
        }
    }
    // At most the queue size (256) chains.
    let num_buffers = u16::try_from(rx.chains.len()).unwrap_or(u16::MAX);
    header::fill_rx(
        &mut rx.frame[..VNET_HDR_LEN],
        num_buffers,
        has(features, VIRTIO_NET_F_GUEST_CSUM),
    );
    let mut offset = 0usize;
    for c in &rx.chains {
        let data = &rx.frame[offset..offset + c.len];
        // The ranges were checked; a failure (memory changed under us) stops the copy, and
        // the guest gets what was written.
        let written = buffers::write_segments(mem, &rx.segs[c.segs.clone()], 0, data);
        // A frame is at most MAX_FRAME_LEN bytes.
        let written = u32::try_from(written).unwrap_or(0);
        if let Err(e) = queue.add_used(mem, c.head, written) {
            return Delivery::Broken(QueueError::Ring(e));
        }
        offset += c.len;
    }
    Delivery::Delivered
}

impl<B: NetBackend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_space();
        crate::device::read_config_window(&config, offset, data);
    }

    /// Every field is read-only for a 1.x driver (the MAC is writable only through the
    /// control queue, which we do not offer).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
        queue_events: QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let features = acked_features & self.avail_features;
        self.lifecycle.activate(
            QUEUE_SIZES.len(),
            mem,
            interrupt,
            queues,
            queue_events,
            features,
        )?;
        self.rx.clear();
        self.backend_failed = false;
        let offloads = Offloads::from_guest_features(features);
        let configured = self
            .backend
            .set_vnet_hdr_len(VNET_HDR_LEN)
            .map_err(|e| format!("cannot set the vnet header length: {e}"))
            .and_then(|()| {
                self.backend
                    .set_offloads(offloads)
                    .map_err(|e| format!("cannot set offloads {offloads:?}: {e}"))
            });
        configured.map_err(|why| {
            self.lifecycle.reset();
            ActivateError::Backend(why)
        })
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
        self.rx.clear();
        self.backend_failed = false;
        self.rx_throttle.unblock();
        self.tx_throttle.unblock();
    }

    fn needs_reset(&self) -> bool {
        self.lifecycle.needs_reset()
    }
}

#[cfg(test)]
mod tests;
