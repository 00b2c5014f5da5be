//! The event-loop side of the block device: its wake eventfd, the queue's eventfd and the
//! rate limiter's timer.

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::BlockDevice;
use crate::lifecycle::{DEVICE_TOKEN_BASE, WAKE_TOKEN};

/// Event data of the rate limiter's timerfd.
const THROTTLE_TOKEN: u32 = DEVICE_TOKEN_BASE;

impl MutEventSubscriber for BlockDevice {
    fn init(&mut self, ops: &mut EventOps) {
        self.lifecycle.init(ops);
        // Registered for the device's whole life; it fires only when armed.
        let timer = Events::with_data(&self.throttle, THROTTLE_TOKEN, EventSet::IN);
        if let Err(e) = ops.add(timer) {
            log::error!("virtio-blk: cannot register the rate limiter's timer: {e}");
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
                    log::warn!("virtio-blk: event for unknown data {data}");
                }
            }
        }
    }
}
