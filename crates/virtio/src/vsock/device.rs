//! The virtio-vsock device: features, configuration space (the guest's CID), activation,
//! and the rx/tx engines between the queues and the [`Muxer`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::muxer::{Muxer, VsockMetrics};
use super::packet::{self, HDR_LEN};
use super::{MAX_PAYLOAD, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::buffers::{self, Segment};
use crate::device::{ActivateError, Interrupt, QueueEvents, VirtioDevice};
use crate::lifecycle::Lifecycle;
use crate::queue::{self, Outcome, QueueError};
use crate::GuestMemoryMmap;

const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Chains handled per wake-up in each direction; past it the device wakes itself
/// (`resume`), so that a busy guest does not starve the host sockets.
const BUDGET: usize = QUEUE_SIZE as usize / 2;

/// The default cap on open connections (each may hold up to `CONN_BUF_SIZE` bytes of
/// guest data the host has not read).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How a vsock device is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's address: 3 ..= 0xffff_fffe (0-2 and `u32::MAX` are reserved).
    pub guest_cid: u64,
    /// The Unix socket host processes connect to; guest connections to host port `P`
    /// go to `<uds_path>_P`. Must not exist.
    pub uds_path: PathBuf,
    /// Open connections at most; more are refused (RST, or the host stream closed).
    pub max_connections: usize,
}

impl VsockConfig {
    pub fn new(guest_cid: u64, uds_path: impl Into<PathBuf>) -> Self {
        VsockConfig {
            guest_cid,
            uds_path: uds_path.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved or out of range (3..=4294967294)")]
    InvalidCid(u64),
    #[error("the connection cap must be at least 1")]
    NoConnections,
    #[error("cannot listen on {path:?}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the device's eventfds")]
    Fd(#[source] io::Error),
}

/// A virtio-vsock device bridging guest stream sockets to host Unix sockets.
pub struct Vsock {
    guest_cid: u64,
    avail_features: u64,
    pub(super) lifecycle: Lifecycle,
    pub(super) muxer: Muxer,
    /// Written when a budget ran out, so the loop comes back for the rest.
    pub(super) resume: EventFd,
    /// The guest had no receive buffers for a pending packet: wait for its kick.
    pub(super) rx_waiting_for_buffers: bool,
    /// Transmit chains wait until the guest took the queued RSTs.
    pub(super) tx_blocked: bool,
    tx_buf: Vec<u8>,
    rx_buf: Box<[u8]>,
    segs: Vec<Segment>,
}

fn bits(list: &[u32]) -> u64 {
    list.iter().fold(0, |acc, bit| acc | (1u64 << bit))
}

impl Vsock {
    /// A device for guest `guest_cid`, listening on `uds_path`, with the default cap.
    pub fn new(guest_cid: u64, uds_path: impl Into<PathBuf>) -> Result<Self, VsockError> {
        Self::with_config(VsockConfig::new(guest_cid, uds_path))
    }

    pub fn with_config(config: VsockConfig) -> Result<Self, VsockError> {
        if !(3..=u64::from(u32::MAX - 1)).contains(&config.guest_cid) {
            return Err(VsockError::InvalidCid(config.guest_cid));
        }
        if config.max_connections == 0 {
            return Err(VsockError::NoConnections);
        }
        let muxer = Muxer::new(
            config.guest_cid,
            config.uds_path.clone(),
            config.max_connections,
        )
        .map_err(|source| VsockError::Bind {
            path: config.uds_path,
            source,
        })?;
        Ok(Vsock {
            guest_cid: config.guest_cid,
            avail_features: bits(&[
                VIRTIO_F_VERSION_1,
                VIRTIO_RING_F_EVENT_IDX,
                VIRTIO_RING_F_INDIRECT_DESC,
            ]),
            lifecycle: Lifecycle::new().map_err(VsockError::Fd)?,
            muxer,
            resume: EventFd::new(EFD_NONBLOCK).map_err(VsockError::Fd)?,
            rx_waiting_for_buffers: false,
            tx_blocked: false,
            tx_buf: Vec::new(),
            rx_buf: vec![0u8; HDR_LEN + MAX_PAYLOAD].into_boxed_slice(),
            segs: Vec::new(),
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The socket host processes connect to (the VMM removes it when the VM is gone).
    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.muxer.connections()
    }

    pub fn metrics(&self) -> VsockMetrics {
        self.muxer.metrics
    }

    /// Moves packets between the queues and the host until neither side has more (or a
    /// budget ran out: then the loop comes back through `resume`).
    pub(super) fn pump(&mut self) {
        for _ in 0..4 {
            self.process_tx();
            self.process_rx();
            if !self.tx_blocked || self.muxer.rst_backlog_full() {
                return;
            }
        }
        if self.resume.write(1).is_err() {
            self.muxer.metrics.event_errors += 1;
        }
    }

    /// The guest added receive buffers.
    pub(super) fn rx_kicked(&mut self) {
        self.rx_waiting_for_buffers = false;
        self.pump();
    }

    /// Takes the guest's packets from the transmit queue and hands them to the muxer.
    /// The event loop calls this; tests may call it directly.
    pub fn process_tx(&mut self) {
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(TX_QUEUE) else {
            return;
        };
        let cid = self.guest_cid;
        let muxer = &mut self.muxer;
        let buf = &mut self.tx_buf;
        let blocked = &mut self.tx_blocked;
        *blocked = false;
        let now = Instant::now();
        let mut budget = BUDGET;
        let mut out_of_budget = false;
        let drained = queue::drain(queue, mem, |chain| {
            if muxer.rst_backlog_full() {
                *blocked = true;
                return Outcome::Later;
            }
            if budget == 0 {
                out_of_budget = true;
                return Outcome::Later;
            }
            budget -= 1;
            match packet::read_tx_packet(mem, chain, cid, buf) {
                Ok((hdr, op)) => {
                    muxer.metrics.tx_packets += 1;
                    muxer.metrics.tx_bytes += u64::from(hdr.len);
                    let payload = buf.get(HDR_LEN..).unwrap_or_default();
                    muxer.on_guest_packet(&hdr, op, payload, now);
                }
                Err(refused) => {
                    log::debug!("virtio-vsock: refused a packet: {refused}");
                    muxer.metrics.bad_packets += 1;
                    if let Some(hdr) = refused.hdr.filter(|_| refused.deserves_rst(cid)) {
                        muxer.on_bad_guest_packet(&hdr);
                    }
                }
            }
            // The driver reads nothing back from a transmit buffer.
            Outcome::Used(0)
        });
        let mut error = drained.error;
        if drained.used > 0 {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, TX_QUEUE as u16) {
                error.get_or_insert(e);
            }
        }
        if out_of_budget && self.resume.write(1).is_err() {
            self.muxer.metrics.event_errors += 1;
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-vsock tx", &e);
        }
    }

    /// Fills the guest's receive buffers with what the muxer has for it, until it has
    /// nothing more, the guest has no buffers (then wait for its kick), or the budget is
    /// spent. The event loop calls this; tests may call it directly.
    pub fn process_rx(&mut self) {
        if self.rx_waiting_for_buffers || !self.muxer.has_rx_work() {
            return;
        }
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(RX_QUEUE) else {
            return;
        };
        let now = Instant::now();
        let mut used = false;
        let mut error = None;
        let mut budget = BUDGET;
        while self.muxer.has_rx_work() {
            if budget == 0 {
                if self.resume.write(1).is_err() {
                    self.muxer.metrics.event_errors += 1;
                }
                break;
            }
            budget -= 1;
            let chain = match queue::pop_chain(queue, mem) {
                Ok(Some(chain)) => chain,
                Ok(None) => match queue.enable_notification(mem) {
                    // Buffers came in meanwhile.
                    Ok(true) => continue,
                    Ok(false) => {
                        self.rx_waiting_for_buffers = true;
                        break;
                    }
                    Err(e) => {
                        error = Some(QueueError::Ring(e));
                        break;
                    }
                },
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            let head = chain.head_index();
            let capacity = match buffers::writable_segments(mem, chain, &mut self.segs) {
                Ok(c) if c >= HDR_LEN as u64 => c,
                result => {
                    log::debug!("virtio-vsock: unusable receive chain: {result:?}");
                    self.muxer.metrics.bad_rx_chains += 1;
                    if let Err(e) = queue.add_used(mem, head, 0) {
                        error = Some(QueueError::Ring(e));
                        break;
                    }
                    used = true;
                    continue;
                }
            };
            let room = usize::try_from(capacity - HDR_LEN as u64)
                .unwrap_or(usize::MAX)
                .min(MAX_PAYLOAD);
            let (hdr_buf, payload_buf) = self.rx_buf.split_at_mut(HDR_LEN);
            let Some(hdr) = self.muxer.next_rx(room, payload_buf, now) else {
                // Nothing after all: the chain stays for the next packet.
                queue.go_to_previous_position();
                break;
            };
            hdr_buf.copy_from_slice(&hdr.to_bytes());
            // hdr.len <= room <= MAX_PAYLOAD.
            let len = HDR_LEN + hdr.len as usize;
            let written = buffers::write_segments(mem, &self.segs, 0, &self.rx_buf[..len]);
            self.muxer.metrics.rx_packets += 1;
            self.muxer.metrics.rx_bytes += u64::from(hdr.len);
            // written <= HDR_LEN + MAX_PAYLOAD.
            if let Err(e) = queue.add_used(mem, head, written as u32) {
                error = Some(QueueError::Ring(e));
                break;
            }
            used = true;
        }
        if used {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, RX_QUEUE as u16) {
                error.get_or_insert(e);
            }
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-vsock rx", &e);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    /// `struct virtio_vsock_config`: guest_cid (le64).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.guest_cid.to_le_bytes();
        crate::device::read_config_window(&config, offset, data);
    }

    /// The configuration space is read-only.
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
        self.rx_waiting_for_buffers = false;
        self.tx_blocked = false;
        Ok(())
    }

    /// Every connection is closed (on the event loop, which the reset wakes).
    fn reset(&mut self) {
        self.lifecycle.reset();
        self.muxer.close_all();
        self.rx_waiting_for_buffers = false;
        self.tx_blocked = false;
    }

    fn needs_reset(&self) -> bool {
        self.lifecycle.needs_reset()
    }
}
