//! The contract between a virtio device model and its transport.
//!
//! Threading: the transport calls `read_config`/`write_config`/`activate`/`reset` from a
//! vCPU thread, so they must be quick and never block on I/O. All queue processing happens
//! in the device's `MutEventSubscriber::process`, on an event-loop thread that the VMM
//! chooses (its own thread per device, built before the guest runs). `activate` therefore
//! only stores what it is given and wakes that loop through the device's own eventfd; the
//! loop then registers the queue eventfds (and backend fds: tap, socket, timer) with
//! `EventOps`. `reset` stops all processing at once and the loop unregisters the fds on
//! its next wake-up.

use std::sync::Arc;

use event_manager::MutEventSubscriber;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemoryMmap;

/// How a device tells the driver something happened. The transport maps a queue to its
/// MSI-X vector (or to the legacy interrupt) as the driver configured it.
pub trait Interrupt: Send + Sync {
    /// The device put buffers in the used ring of queue `queue` (its index).
    fn signal_queue(&self, queue: u16);
    /// The device configuration space changed (e.g. the balloon's target, a disk resize).
    fn signal_config(&self);
}

/// The per-queue notification eventfds, in queue order. The transport owns them (they are
/// registered as ioeventfds once, at build time); the device gets clones at activation.
pub type QueueEvents = Vec<EventFd>;

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver set up {got} queues; the device needs {want}")]
    QueueCount { got: usize, want: usize },
    #[error("queue {0} is not valid (size, alignment or rings outside guest memory)")]
    InvalidQueue(usize),
    #[error("the driver did not accept VIRTIO_F_VERSION_1")]
    NotModern,
    #[error("cannot wake the device's event loop")]
    Wake(#[source] std::io::Error),
    #[error("the device's backend failed: {0}")]
    Backend(String),
}

/// A virtio device model (virtio 1.x, split virtqueues).
pub trait VirtioDevice: MutEventSubscriber + Send {
    /// The virtio device ID (`VIRTIO_ID_BLOCK`, `VIRTIO_ID_NET`, ...).
    fn device_type(&self) -> u32;
    /// The largest size of each of the device's queues; its length is the queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (including `VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64;
    /// Reads the device-specific configuration space at `offset`. Bytes past its end read
    /// as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space; writes to read-only fields are
    /// ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK. `queues` are the enabled queues in index order, already
    /// configured by the driver; `acked_features` are the features it accepted.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
        queue_events: QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError>;
    /// The driver wrote 0 to the device status: stop using the queues and go back to the
    /// state before `activate`. Idempotent.
    fn reset(&mut self);
    /// The device met an error it cannot report through its queues (a broken ring, a chain
    /// it cannot answer) and stopped: the transport shows `DEVICE_NEEDS_RESET` in the
    /// device status. The device has already sent a configuration-change interrupt.
    /// Cleared by `reset`.
    fn needs_reset(&self) -> bool {
        false
    }
}

/// Serves a read of `data.len()` bytes at `offset` from a device's configuration space
/// `config`: the bytes that lie inside it, zeroes past its end (what `read_config` promises).
pub fn read_config_window(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Some(start) = usize::try_from(offset).ok().filter(|&o| o < config.len()) else {
        return;
    };
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
