//! The event-loop side of the device: which fds are registered, and what each wakes.
//!
//! Always registered: the wake eventfd (through `Lifecycle`), the two rate limiters' timers
//! and the `resume` eventfd. While active: the two queue eventfds (through `Lifecycle`),
//! and the backend's fd unless receiving is stopped: the guest has no buffers for the
//! pending frame (the rx queue's kick resumes it), the rx rate limit (its timer), the
//! backend failed, or the device needs a reset.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::backend::NetBackend;
use super::device::Net;
use super::{RX_QUEUE, TX_QUEUE};
use crate::lifecycle::{DEVICE_TOKEN_BASE, WAKE_TOKEN};

const BACKEND_TOKEN: u32 = DEVICE_TOKEN_BASE;
const RX_THROTTLE_TOKEN: u32 = DEVICE_TOKEN_BASE + 1;
const TX_THROTTLE_TOKEN: u32 = DEVICE_TOKEN_BASE + 2;
const RESUME_TOKEN: u32 = DEVICE_TOKEN_BASE + 3;

impl<B: NetBackend> Net<B> {
    /// Adds or removes the backend's fd as the device's state asks.
    fn sync_backend(&mut self, ops: &mut EventOps) {
        let want = self.wants_backend();
        if want == self.backend_registered {
            return;
        }
        let events = Events::with_data(&self.backend, BACKEND_TOKEN, EventSet::IN);
        let result = if want {
            ops.add(events)
        } else {
            ops.remove(events)
        };
        match result {
            Ok(()) => self.backend_registered = want,
            Err(e) => {
                log::error!("virtio-net: cannot (un)register the backend's fd: {e}");
                self.metrics.event_errors += 1;
            }
        }
    }
}

impl<B: NetBackend> MutEventSubscriber for Net<B> {
    fn init(&mut self, ops: &mut EventOps) {
        self.lifecycle.init(ops);
        // Registered for the device's whole life; the timers fire only when armed.
        let fixed = [
            Events::with_data(&self.rx_throttle, RX_THROTTLE_TOKEN, EventSet::IN),
            Events::with_data(&self.tx_throttle, TX_THROTTLE_TOKEN, EventSet::IN),
            Events::with_data(&self.resume, RESUME_TOKEN, EventSet::IN),
        ];
        for events in fixed {
            if let Err(e) = ops.add(events) {
                log::error!("virtio-net: cannot register a timer or eventfd: {e}");
                self.metrics.event_errors += 1;
            }
        }
        self.sync_backend(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            WAKE_TOKEN => {
                if self.lifecycle.on_wake(ops) {
                    // The driver may have queued buffers before DRIVER_OK.
                    self.process_tx();
                    self.process_rx();
                }
            }
            BACKEND_TOKEN => self.process_rx(),
            RX_THROTTLE_TOKEN => {
                self.rx_throttle.on_timer();
                self.process_rx();
            }
            TX_THROTTLE_TOKEN => {
                self.tx_throttle.on_timer();
                self.process_tx();
            }
            RESUME_TOKEN => {
                // Fails only when already drained.
                let _ = self.resume.read();
                self.process_tx();
            }
            data => match self.lifecycle.queue_event(data) {
                Some(RX_QUEUE) => self.rx_kicked(),
                Some(TX_QUEUE) => self.process_tx(),
                _ => log::warn!("virtio-net: event for unknown data {data}"),
            },
        }
        self.sync_backend(ops);
    }
}
