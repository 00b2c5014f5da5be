//! Counters the vCPU threads bump on every exit, read by the API.

use std::sync::atomic::{AtomicU64, Ordering};

/// VM exits seen since boot, summed over all vCPUs.
#[derive(Default)]
pub struct ExitCounters {
    pub io_in: AtomicU64,
    pub io_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    /// Port or MMIO accesses that no device owns.
    pub unhandled: AtomicU64,
    pub hlt: AtomicU64,
    pub other: AtomicU64,
}

/// A point-in-time copy of `ExitCounters`, as the API returns it.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitCountersSnapshot {
    pub io_in: u64,
    pub io_out: u64,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub unhandled: u64,
    pub hlt: u64,
    pub other: u64,
}

impl ExitCounters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ExitCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExitCountersSnapshot {
            io_in: get(&self.io_in),
            io_out: get(&self.io_out),
            mmio_read: get(&self.mmio_read),
            mmio_write: get(&self.mmio_write),
            unhandled: get(&self.unhandled),
            hlt: get(&self.hlt),
            other: get(&self.other),
        }
    }
}

impl ExitCounters {
    /// Back to zero, as after power-on (used by a reset in place).
    pub fn reset(&self) {
        for c in [
            &self.io_in,
            &self.io_out,
            &self.mmio_read,
            &self.mmio_write,
            &self.unhandled,
            &self.hlt,
            &self.other,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
