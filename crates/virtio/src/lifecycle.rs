//! What every device does the same way: activation, reset, DEVICE_NEEDS_RESET, and keeping
//! the event loop's registrations in step with them.
//!
//! `activate` and `reset` run on a vCPU thread; they only store state and write the
//! device's own wake eventfd. The event loop wakes on it ([`Lifecycle::on_wake`]) and
//! registers the queue eventfds of the current activation, or removes those of a
//! finished one. An eventfd stays owned here until it has left the epoll set, so the
//! loop never gets an event for a file descriptor the device already closed.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::{ActivateError, Interrupt, QueueEvents};
use crate::GuestMemoryMmap;

/// Event data of the wake eventfd.
pub const WAKE_TOKEN: u32 = 0;
/// Event data of queue `i`'s eventfd is `QUEUE_TOKEN_BASE + i`.
pub const QUEUE_TOKEN_BASE: u32 = 1;
/// Device-specific fds (a rate limiter's timer, a tap, a socket) use data from here on.
pub const DEVICE_TOKEN_BASE: u32 = 0x1000;

/// What the driver handed over at activation.
pub struct Active {
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<dyn Interrupt>,
    pub queues: Vec<Queue>,
    pub acked_features: u64,
}

/// Activation state and event registrations shared by all device models.
pub struct Lifecycle {
    wake: EventFd,
    active: Option<Active>,
    /// Queue eventfds of the current activation, not yet in the epoll set.
    pending: Option<QueueEvents>,
    /// Queue eventfds in the epoll set, in queue order.
    registered: QueueEvents,
    needs_reset: bool,
}

impl Lifecycle {
    pub fn new() -> std::io::Result<Self> {
        Ok(Lifecycle {
            wake: EventFd::new(EFD_NONBLOCK)?,
            active: None,
            pending: None,
            registered: Vec::new(),
            needs_reset: false,
        })
    }

    /// Checks what the transport hands over and stores it, then wakes the event loop.
    /// `num_queues` is the number of queues the device needs.
    pub fn activate(
        &mut self,
        num_queues: usize,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        mut queues: Vec<Queue>,
        queue_events: QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        if queues.len() != num_queues {
            return Err(ActivateError::QueueCount {
                got: queues.len(),
                want: num_queues,
            });
        }
        if queue_events.len() != num_queues {
            return Err(ActivateError::QueueCount {
                got: queue_events.len(),
                want: num_queues,
            });
        }
        if acked_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(ActivateError::NotModern);
        }
        let event_idx = acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        for (i, queue) in queues.iter_mut().enumerate() {
            if !queue.is_valid(&mem) {
                return Err(ActivateError::InvalidQueue(i));
            }
            queue.set_event_idx(event_idx);
        }
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
            acked_features,
        });
        self.pending = Some(queue_events);
        self.needs_reset = false;
        self.wake.write(1).map_err(ActivateError::Wake)
    }

    /// Drops the activation; the event loop unregisters the queue eventfds when it wakes.
    pub fn reset(&mut self) {
        self.active = None;
        self.pending = None;
        self.needs_reset = false;
        if let Err(e) = self.wake.write(1) {
            log::error!("virtio: cannot wake the device's event loop after a reset: {e}");
        }
    }

    /// Registers the wake eventfd; call from `MutEventSubscriber::init`.
    pub fn init(&self, ops: &mut EventOps) {
        let events = Events::with_data(&self.wake, WAKE_TOKEN, EventSet::IN);
        if let Err(e) = ops.add(events) {
            log::error!("virtio: cannot register the device's wake eventfd: {e}");
        }
    }

    /// Handles the wake eventfd: brings the registered queue eventfds in line with the
    /// current activation. Returns true when a new activation was registered, so the
    /// device should look at its queues once (the driver may have made buffers available
    /// before DRIVER_OK).
    pub fn on_wake(&mut self, ops: &mut EventOps) -> bool {
        // A failed read means the counter was already zero (a spurious wake-up).
        let _ = self.wake.read();
        let Some(new) = self.pending.take() else {
            if self.active.is_none() {
                self.unregister(ops);
            }
            return false;
        };
        self.unregister(ops);
        for (i, fd) in new.iter().enumerate() {
            let token = QUEUE_TOKEN_BASE.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            if let Err(e) = ops.add(Events::with_data(fd, token, EventSet::IN)) {
                log::error!("virtio: cannot register the eventfd of queue {i}: {e}");
            }
        }
        self.registered = new;
        true
    }

    fn unregister(&mut self, ops: &mut EventOps) {
        for (i, fd) in self.registered.drain(..).enumerate() {
            let token = QUEUE_TOKEN_BASE.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            if let Err(e) = ops.remove(Events::with_data(&fd, token, EventSet::IN)) {
                log::error!(
                    "virtio: cannot unregister the eventfd {} of queue {i}: {e}",
                    fd.as_raw_fd()
                );
            }
        }
    }

    /// If `data` is a queue's event data, drains that queue's eventfd and returns the
    /// queue's index.
    pub fn queue_event(&self, data: u32) -> Option<usize> {
        let index = usize::try_from(data.checked_sub(QUEUE_TOKEN_BASE)?).ok()?;
        let fd = self.registered.get(index)?;
        // Nothing to read means another wake-up already consumed the notification.
        let _ = fd.read();
        Some(index)
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The activation, unless the device is reset or needs a reset.
    pub fn running(&mut self) -> Option<&mut Active> {
        if self.needs_reset {
            return None;
        }
        self.active.as_mut()
    }

    /// The device hit an error it cannot report through a queue: stop all processing
    /// until the driver resets the device, and tell the driver (virtio 1.2, 2.1.2: a
    /// configuration change notification after setting DEVICE_NEEDS_RESET).
    pub fn fail(&mut self, device: &str, why: &dyn std::fmt::Display) {
        if self.needs_reset {
            return;
        }
        log::warn!("{device}: stopped until the driver resets the device: {why}");
        self.needs_reset = true;
        if let Some(active) = &self.active {
            active.interrupt.signal_config();
        }
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset
    }
}
