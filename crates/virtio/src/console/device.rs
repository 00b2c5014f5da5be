//! The virtio-console device: features, configuration space, activation, and the rx/tx
//! engines the event loop (`events.rs`) drives.

use std::io::{self, ErrorKind};
use std::os::fd::RawFd;
use std::sync::Arc;

use event_manager::EventSet;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::ConsoleBackend;
use super::{MAX_TX_CHAIN, QUEUE_SIZE, RX_CHUNK, RX_QUEUE, TX_QUEUE};
use crate::buffers::{self, Segment};
use crate::device::{ActivateError, Interrupt, QueueEvents, VirtioDevice};
use crate::lifecycle::Lifecycle;
use crate::queue::{self, Outcome};
use crate::GuestMemoryMmap;

/// `VIRTIO_CONSOLE_F_SIZE`: the configuration space has the console's size.
pub const VIRTIO_CONSOLE_F_SIZE: u32 = 0;

const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];

/// Chains handled per wake-up in each direction; past it the device wakes itself
/// (`resume`), so that a guest that keeps a ring busy does not starve the other fds.
const BUDGET: usize = QUEUE_SIZE as usize / 2;

/// Counters, for the VMM's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleMetrics {
    /// Input bytes put in the guest's receive buffers.
    pub rx_bytes: u64,
    /// Output bytes the backend took.
    pub tx_bytes: u64,
    /// Output bytes lost to a backend error or a malformed chain.
    pub tx_dropped: u64,
    /// Malformed descriptor chains in either queue (returned unused).
    pub bad_chains: u64,
    /// Backend read or write errors.
    pub backend_errors: u64,
    /// Event-loop registration errors (epoll).
    pub event_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot create the device's eventfds")]
    Fd(#[source] io::Error),
}

/// Input read from the backend and not yet in the guest's buffers.
pub(super) struct Rx {
    buf: Box<[u8]>,
    len: usize,
    off: usize,
    /// The guest had no buffers for pending input: stop polling the source until the
    /// receive queue's kick.
    pub(super) waiting_for_buffers: bool,
    /// The source ended (or failed): not polled until the device is reset.
    pub(super) closed: bool,
    segs: Vec<Segment>,
}

impl Rx {
    fn pending(&self) -> &[u8] {
        &self.buf[self.off..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
        self.off = 0;
        self.waiting_for_buffers = false;
    }
}

/// Output taken from the guest that the backend has not taken yet (non-empty only while
/// the backend would block).
pub(super) struct Tx {
    buf: Vec<u8>,
    off: usize,
}

impl Tx {
    pub(super) fn blocked(&self) -> bool {
        self.off < self.buf.len()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.off = 0;
    }
}

/// A virtio-console device with one port, over a [`ConsoleBackend`].
pub struct Console<B: ConsoleBackend> {
    backend: B,
    /// `(cols, rows)`, offered with `VIRTIO_CONSOLE_F_SIZE` when set.
    size: Option<(u16, u16)>,
    avail_features: u64,
    pub(super) lifecycle: Lifecycle,
    /// Written when a budget ran out, so the loop comes back for the rest.
    pub(super) resume: EventFd,
    /// The backend's fds, fixed for its life.
    pub(super) input_fd: Option<RawFd>,
    pub(super) output_ready: Option<(RawFd, EventSet)>,
    /// What each of them is registered for now (empty: not in the epoll set).
    pub(super) input_watch: EventSet,
    pub(super) output_watch: EventSet,
    pub(super) rx: Rx,
    pub(super) tx: Tx,
    pub(super) metrics: ConsoleMetrics,
}

fn bits(list: &[u32]) -> u64 {
    list.iter().fold(0, |acc, bit| acc | (1u64 << bit))
}

impl<B: ConsoleBackend> Console<B> {
    pub fn new(backend: B) -> Result<Self, ConsoleError> {
        let input_fd = backend.input_fd();
        let output_ready = backend.output_ready();
        Ok(Console {
            backend,
            size: None,
            avail_features: bits(&[
                VIRTIO_F_VERSION_1,
                VIRTIO_RING_F_EVENT_IDX,
                VIRTIO_RING_F_INDIRECT_DESC,
            ]),
            lifecycle: Lifecycle::new().map_err(ConsoleError::Fd)?,
            resume: EventFd::new(EFD_NONBLOCK).map_err(ConsoleError::Fd)?,
            input_fd,
            output_ready,
            input_watch: EventSet::empty(),
            output_watch: EventSet::empty(),
            rx: Rx {
                buf: vec![0u8; RX_CHUNK].into_boxed_slice(),
                len: 0,
                off: 0,
                waiting_for_buffers: false,
                closed: false,
                segs: Vec::new(),
            },
            tx: Tx {
                buf: Vec::new(),
                off: 0,
            },
            metrics: ConsoleMetrics::default(),
        })
    }

    /// Offers the console's size (`VIRTIO_CONSOLE_F_SIZE`), for the guest's `hvc0`.
    pub fn with_size(mut self, cols: u16, rows: u16) -> Self {
        self.size = Some((cols, rows));
        self.avail_features |= 1u64 << VIRTIO_CONSOLE_F_SIZE;
        self
    }

    /// Changes the console's size and tells the driver. Does nothing unless the device
    /// was built [`Console::with_size`].
    pub fn set_size(&mut self, cols: u16, rows: u16) {
        if self.size.is_none() {
            return;
        }
        self.size = Some((cols, rows));
        if let Some(active) = self.lifecycle.running() {
            if active.acked_features & (1u64 << VIRTIO_CONSOLE_F_SIZE) != 0 {
                active.interrupt.signal_config();
            }
        }
    }

    pub fn metrics(&self) -> ConsoleMetrics {
        self.metrics
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// `struct virtio_console_config`: cols, rows, max_nr_ports, emerg_wr.
    fn config_space(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        let (cols, rows) = self.size.unwrap_or((0, 0));
        c[0..2].copy_from_slice(&cols.to_le_bytes());
        c[2..4].copy_from_slice(&rows.to_le_bytes());
        c[4..8].copy_from_slice(&1u32.to_le_bytes());
        c
    }

    /// Whether the event loop should poll the input source now: active, nothing read and
    /// still undelivered, and the source still open.
    pub(super) fn wants_input(&self) -> bool {
        self.lifecycle.is_active()
            && !self.lifecycle.needs_reset()
            && !self.rx.closed
            && self.rx.pending().is_empty()
    }

    /// The guest added receive buffers.
    pub(super) fn rx_kicked(&mut self) {
        self.rx.waiting_for_buffers = false;
        self.process_rx();
    }

    /// The input source is readable: reads one chunk (when the last one was delivered)
    /// and delivers it. One read per wake-up: the fd is level-triggered.
    pub fn read_input(&mut self) {
        if !self.wants_input() {
            return;
        }
        match self.backend.read(&mut self.rx.buf) {
            Ok(0) => {
                log::debug!("virtio-console: the input ended");
                self.rx.closed = true;
            }
            Ok(n) => {
                self.rx.len = n.min(self.rx.buf.len());
                self.rx.off = 0;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => {
                log::warn!("virtio-console: the input failed, reading stops: {e}");
                self.metrics.backend_errors += 1;
                self.rx.closed = true;
            }
        }
        self.process_rx();
    }

    /// Moves pending input into the guest's receive buffers, as far as they go. The
    /// event loop calls this; tests may call it directly.
    pub fn process_rx(&mut self) {
        if self.rx.waiting_for_buffers || self.rx.pending().is_empty() {
            return;
        }
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(RX_QUEUE) else {
            return;
        };
        let rx = &mut self.rx;
        let metrics = &mut self.metrics;
        let mut budget = BUDGET;
        let mut out_of_budget = false;
        let drained = queue::drain(queue, mem, |chain| {
            if rx.pending().is_empty() {
                return Outcome::Later;
            }
            if budget == 0 {
                out_of_budget = true;
                return Outcome::Later;
            }
            budget -= 1;
            if let Err(e) = buffers::writable_segments(mem, chain, &mut rx.segs) {
                log::debug!("virtio-console: dropped a receive chain: {e}");
                metrics.bad_chains += 1;
                return Outcome::Used(0);
            }
            let n = buffers::write_segments(mem, &rx.segs, 0, rx.pending());
            rx.off += n;
            metrics.rx_bytes += n as u64;
            // n <= RX_CHUNK.
            Outcome::Used(n as u32)
        });
        if !self.rx.pending().is_empty() && !drained.deferred && drained.error.is_none() {
            // The ring is empty (and notifications are on again): wait for the kick.
            self.rx.waiting_for_buffers = true;
        }
        if self.rx.pending().is_empty() {
            self.rx.clear();
        }
        let mut error = drained.error;
        if drained.used > 0 {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, RX_QUEUE as u16) {
                error.get_or_insert(e);
            }
        }
        if out_of_budget && self.resume.write(1).is_err() {
            self.metrics.event_errors += 1;
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-console rx", &e);
        }
    }

    /// Writes the guest's output to the backend: first what an earlier write left, then
    /// the transmit chains, one at a time, until the backend would block (the rest of the
    /// chains wait in the ring) or the budget is spent. The event loop calls this; tests
    /// may call it directly.
    pub fn process_tx(&mut self) {
        write_pending(&mut self.backend, &mut self.tx, &mut self.metrics);
        if self.tx.blocked() {
            return;
        }
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let tx = &mut self.tx;
        let backend = &mut self.backend;
        let metrics = &mut self.metrics;
        let mut budget = BUDGET;
        let mut out_of_budget = false;
        let drained = queue::drain(queue, mem, |chain| {
            if tx.blocked() {
                return Outcome::Later;
            }
            if budget == 0 {
                out_of_budget = true;
                return Outcome::Later;
            }
            budget -= 1;
            tx.off = 0;
            match buffers::read_chain(mem, chain, MAX_TX_CHAIN, &mut tx.buf) {
                Ok(()) => write_pending(backend, tx, metrics),
                Err(e) => {
                    log::debug!("virtio-console: dropped a transmit chain: {e}");
                    metrics.bad_chains += 1;
                    tx.clear();
                }
            }
            // The driver reads nothing back; the bytes are ours now.
            Outcome::Used(0)
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
            self.lifecycle.fail("virtio-console tx", &e);
        }
    }

    /// Forgets pending bytes in both directions (the driver reset the device).
    fn clear(&mut self) {
        self.rx.clear();
        self.rx.closed = false;
        self.tx.clear();
    }
}

/// Writes what `tx` holds until done, the backend would block, or fails (the rest is
/// dropped).
fn write_pending<B: ConsoleBackend>(backend: &mut B, tx: &mut Tx, metrics: &mut ConsoleMetrics) {
    while tx.blocked() {
        match backend.write(&tx.buf[tx.off..]) {
            Ok(0) => {
                // A sink that takes nothing without saying why: the bytes are lost.
                metrics.backend_errors += 1;
                metrics.tx_dropped += (tx.buf.len() - tx.off) as u64;
                tx.clear();
            }
            Ok(n) => {
                let n = n.min(tx.buf.len() - tx.off);
                tx.off += n;
                metrics.tx_bytes += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("virtio-console: the backend refused output: {e}");
                metrics.backend_errors += 1;
                metrics.tx_dropped += (tx.buf.len() - tx.off) as u64;
                tx.clear();
            }
        }
    }
    tx.clear();
}

impl<B: ConsoleBackend> VirtioDevice for Console<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
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

    /// `emerg_wr` is offered only with `VIRTIO_CONSOLE_F_EMERG_WRITE`, which we do not
    /// offer; every other field is read-only.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
        queue_events: QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        self.lifecycle.activate(
            QUEUE_SIZES.len(),
            mem,
            interrupt,
            queues,
            queue_events,
            acked_features & self.avail_features,
        )?;
        self.clear();
        Ok(())
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
        self.clear();
    }

    fn needs_reset(&self) -> bool {
        self.lifecycle.needs_reset()
    }
}
