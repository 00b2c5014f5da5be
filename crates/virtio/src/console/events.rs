//! The event-loop side of the console: which fds are registered, and what each wakes.
//!
//! Always registered: the wake eventfd (through `Lifecycle`) and the `resume` eventfd.
//! While active: the two queue eventfds (through `Lifecycle`); the backend's input fd
//! while the device wants input (nothing read is waiting for guest buffers, the input has
//! not ended); the backend's output fd while guest output waits for the backend. When
//! both are the same fd it is registered once, for both.

use std::os::fd::RawFd;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::backend::ConsoleBackend;
use super::device::{Console, ConsoleMetrics};
use super::{RX_QUEUE, TX_QUEUE};
use crate::lifecycle::{DEVICE_TOKEN_BASE, WAKE_TOKEN};

const INPUT_TOKEN: u32 = DEVICE_TOKEN_BASE;
const OUTPUT_TOKEN: u32 = DEVICE_TOKEN_BASE + 1;
const RESUME_TOKEN: u32 = DEVICE_TOKEN_BASE + 2;

/// Events that also wake a reader or writer: the other end went away, or an error; the
/// read or write that follows says which.
const TROUBLE: EventSet = EventSet::HANG_UP.union(EventSet::ERROR);

/// Registers `fd` for `want`, or removes it when `want` is empty; `current` is what it is
/// registered for now.
fn watch(
    ops: &mut EventOps,
    fd: RawFd,
    token: u32,
    current: &mut EventSet,
    want: EventSet,
    metrics: &mut ConsoleMetrics,
) {
    if *current == want {
        return;
    }
    let result = if current.is_empty() {
        ops.add(Events::with_data_raw(fd, token, want))
    } else if want.is_empty() {
        ops.remove(Events::with_data_raw(fd, token, *current))
    } else {
        ops.modify(Events::with_data_raw(fd, token, want))
    };
    match result {
        Ok(()) => *current = want,
        Err(e) => {
            log::error!("virtio-console: cannot (un)register the backend's fd {fd}: {e}");
            metrics.event_errors += 1;
        }
    }
}

impl<B: ConsoleBackend> Console<B> {
    /// Brings the backend's registrations in line with what the device waits for.
    fn sync_backend(&mut self, ops: &mut EventOps) {
        let want_in = if self.wants_input() {
            EventSet::IN
        } else {
            EventSet::empty()
        };
        let active = self.lifecycle.is_active();
        let want_out = match self.output_ready {
            Some((_, events)) if active && self.tx.blocked() => events,
            _ => EventSet::empty(),
        };
        match (self.input_fd, self.output_ready) {
            (Some(input), Some((output, _))) if input == output => {
                watch(
                    ops,
                    input,
                    INPUT_TOKEN,
                    &mut self.input_watch,
                    want_in | want_out,
                    &mut self.metrics,
                );
            }
            (input, output) => {
                if let Some(fd) = input {
                    watch(
                        ops,
                        fd,
                        INPUT_TOKEN,
                        &mut self.input_watch,
                        want_in,
                        &mut self.metrics,
                    );
                }
                if let Some((fd, _)) = output {
                    watch(
                        ops,
                        fd,
                        OUTPUT_TOKEN,
                        &mut self.output_watch,
                        want_out,
                        &mut self.metrics,
                    );
                }
            }
        }
    }

    fn input_event(&mut self, events: EventSet) {
        let shared = matches!(
            (self.input_fd, self.output_ready),
            (Some(i), Some((o, _))) if i == o
        );
        if !shared {
            self.read_input();
            return;
        }
        let out = self.output_ready.map_or(EventSet::empty(), |(_, e)| e);
        if events.intersects(out | TROUBLE) && self.tx.blocked() {
            self.process_tx();
        }
        if events.intersects(EventSet::IN | TROUBLE) {
            self.read_input();
        }
    }
}

impl<B: ConsoleBackend> MutEventSubscriber for Console<B> {
    fn init(&mut self, ops: &mut EventOps) {
        self.lifecycle.init(ops);
        if let Err(e) = ops.add(Events::with_data(&self.resume, RESUME_TOKEN, EventSet::IN)) {
            log::error!("virtio-console: cannot register the resume eventfd: {e}");
            self.metrics.event_errors += 1;
        }
        self.sync_backend(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            WAKE_TOKEN => {
                if self.lifecycle.on_wake(ops) {
                    // The driver may have queued output before DRIVER_OK.
                    self.process_tx();
                }
            }
            INPUT_TOKEN => self.input_event(events.event_set()),
            OUTPUT_TOKEN => self.process_tx(),
            RESUME_TOKEN => {
                // Fails only when already drained.
                let _ = self.resume.read();
                self.process_tx();
                self.process_rx();
            }
            data => match self.lifecycle.queue_event(data) {
                Some(RX_QUEUE) => self.rx_kicked(),
                Some(TX_QUEUE) => self.process_tx(),
                _ => log::warn!("virtio-console: event for unknown data {data}"),
            },
        }
        self.sync_backend(ops);
    }
}
