//! The event-loop side of the vsock device.
//!
//! Always registered: the wake eventfd (through `Lifecycle`), the muxer's timer and the
//! `resume` eventfd. While the device runs: the three queue eventfds (through
//! `Lifecycle`; the event queue's kicks are ignored, we never send events), the
//! listening socket, and each host stream for what it waits for (see
//! [`super::muxer::Muxer::sync`], called after every event).

use std::time::Instant;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::Vsock;
use super::muxer::{RESUME_TOKEN, STREAM_TOKEN_BASE, TIMER_TOKEN};
use super::{EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::lifecycle::{QUEUE_TOKEN_BASE, WAKE_TOKEN};

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        self.lifecycle.init(ops);
        let fixed = [
            Events::with_data_raw(self.muxer.timer_fd(), TIMER_TOKEN, EventSet::IN),
            Events::with_data(&self.resume, RESUME_TOKEN, EventSet::IN),
        ];
        for events in fixed {
            if let Err(e) = ops.add(events) {
                log::error!("virtio-vsock: cannot register a timer or eventfd: {e}");
                self.muxer.metrics.event_errors += 1;
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let now = Instant::now();
        match events.data() {
            WAKE_TOKEN => {
                if self.lifecycle.on_wake(ops) {
                    // The driver may have queued packets and buffers before DRIVER_OK.
                    self.pump();
                }
            }
            super::muxer::LISTENER_TOKEN => self.muxer.accept(now),
            TIMER_TOKEN => {
                self.muxer.on_timer(now);
                self.pump();
            }
            RESUME_TOKEN => {
                // Fails only when already drained.
                let _ = self.resume.read();
                self.pump();
            }
            data if data >= STREAM_TOKEN_BASE => {
                self.muxer.on_stream_event(data, events.event_set(), now);
                self.pump();
            }
            data if data >= QUEUE_TOKEN_BASE => match self.lifecycle.queue_event(data) {
                Some(RX_QUEUE) => self.rx_kicked(),
                Some(TX_QUEUE) => self.pump(),
                Some(EVENT_QUEUE) => {}
                _ => log::warn!("virtio-vsock: event for unknown data {data}"),
            },
            data => log::warn!("virtio-vsock: event for unknown data {data}"),
        }
        let running = self.lifecycle.running().is_some();
        self.muxer.sync(ops, running, Instant::now());
    }
}
