//! The event-loop side of the balloon: its wake eventfd, the queues' eventfds, the
//! statistics timer, the refresh eventfd ([`Balloon::request_stats`]) and the resume
//! eventfd (a budget ran out). The timer and the eventfds are registered for the device's
//! whole life; the timer fires only while armed.

use std::os::fd::{AsFd, AsRawFd};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::device::Balloon;
use super::{MemoryReclaimer, DEFLATE_QUEUE, INFLATE_QUEUE, STATS_QUEUE};
use crate::lifecycle::{DEVICE_TOKEN_BASE, WAKE_TOKEN};

const TIMER_TOKEN: u32 = DEVICE_TOKEN_BASE;
const REFRESH_TOKEN: u32 = DEVICE_TOKEN_BASE + 1;
const RESUME_TOKEN: u32 = DEVICE_TOKEN_BASE + 2;

impl<R: MemoryReclaimer> Balloon<R> {
    /// Everything the driver may have queued.
    fn process_all(&mut self) {
        self.process_inflate();
        self.process_deflate();
        self.process_stats();
    }
}

impl<R: MemoryReclaimer> MutEventSubscriber for Balloon<R> {
    fn init(&mut self, ops: &mut EventOps) {
        self.lifecycle.init(ops);
        let timer = self.stats_timer.as_fd().as_raw_fd();
        let fixed = [
            Events::with_data_raw(timer, TIMER_TOKEN, EventSet::IN),
            Events::with_data(&self.refresh, REFRESH_TOKEN, EventSet::IN),
            Events::with_data(&self.resume, RESUME_TOKEN, EventSet::IN),
        ];
        for events in fixed {
            if let Err(e) = ops.add(events) {
                log::error!("virtio-balloon: cannot register a timer or eventfd: {e}");
                self.metrics.event_errors += 1;
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            WAKE_TOKEN => {
                if self.lifecycle.on_wake(ops) {
                    // The driver queued its first statistics (and maybe pages) before
                    // DRIVER_OK.
                    self.process_all();
                }
            }
            TIMER_TOKEN => self.on_timer(),
            REFRESH_TOKEN => {
                // Fails only when already drained.
                let _ = self.refresh.read();
                self.refresh_stats();
            }
            RESUME_TOKEN => {
                let _ = self.resume.read();
                self.process_inflate();
                self.process_deflate();
            }
            data => match self.lifecycle.queue_event(data) {
                Some(INFLATE_QUEUE) => self.process_inflate(),
                Some(DEFLATE_QUEUE) => self.process_deflate(),
                Some(STATS_QUEUE) => self.process_stats(),
                _ => log::warn!("virtio-balloon: event for unknown data {data}"),
            },
        }
    }
}
