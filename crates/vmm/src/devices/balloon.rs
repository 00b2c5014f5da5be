//! The balloon as the controller sees it: set a target (`PUT /vm/balloon`), read the
//! device's state and the guest's statistics (`GET /vm/balloon`). The device itself
//! (`fv_virtio::balloon`) runs on its own thread; this only takes its lock briefly.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fv_virtio::balloon::{Balloon, BalloonStats, PAGE_SIZE};

use crate::api::{ActionError, BalloonInfo, BalloonStatistics};
use crate::config::BalloonConfig;
use crate::devices::bus::lock;
use crate::vstate::reclaim::GuestRamReclaimer;

/// The balloon device fv-vmm builds: released pages go back through `madvise`.
pub type BalloonDevice = Balloon<GuestRamReclaimer>;

const PAGES_PER_MIB: u64 = (1 << 20) / PAGE_SIZE;

/// The controller's handle on the VM's balloon.
pub struct BalloonControl {
    device: Arc<Mutex<BalloonDevice>>,
    memory_mib: u64,
    config: BalloonConfig,
}

impl BalloonControl {
    pub fn new(device: Arc<Mutex<BalloonDevice>>, memory_mib: u64, config: BalloonConfig) -> Self {
        BalloonControl {
            device,
            memory_mib,
            config,
        }
    }

    /// Asks the guest to hold `mib` MiB in the balloon (0 gives everything back). The
    /// guest's driver gets a configuration interrupt and moves towards it at its own pace.
    pub fn set_target_mib(&self, mib: u64) -> Result<(), ActionError> {
        if mib > self.memory_mib {
            return Err(ActionError::BadRequest(format!(
                "target_mib {mib} is more than the VM's memory ({} MiB)",
                self.memory_mib
            )));
        }
        // memory_mib <= 1 TiB (config), so at most 2^28 pages.
        let pages = u32::try_from(mib * PAGES_PER_MIB).map_err(|_| {
            ActionError::BadRequest(format!("target_mib {mib} is too large for a balloon"))
        })?;
        lock(&self.device).set_target_pages(pages);
        Ok(())
    }

    /// The target, what the guest holds, and its last statistics with their age. Also asks
    /// the guest for fresh statistics, which the next call shows.
    pub fn info(&self) -> BalloonInfo {
        let device = lock(&self.device);
        // Only fails if the device's eventfd is broken; the last statistics still stand.
        let _ = device.request_stats();
        let (target, actual) = (device.target_pages(), device.actual_pages());
        BalloonInfo {
            target_mib: u64::from(target) / PAGES_PER_MIB,
            target_pages: target,
            actual_mib: u64::from(actual) / PAGES_PER_MIB,
            actual_pages: actual,
            deflate_on_oom: self.config.deflate_on_oom,
            stats_interval_s: self.config.stats_interval,
            stats: device.stats().map(|s| statistics(&s, SystemTime::now())),
        }
    }
}

fn statistics(s: &BalloonStats, now: SystemTime) -> BalloonStatistics {
    let age = now.duration_since(s.updated_at).unwrap_or_default();
    BalloonStatistics {
        age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        free_memory: s.free_memory,
        total_memory: s.total_memory,
        available_memory: s.available_memory,
        disk_caches: s.disk_caches,
        swap_in: s.swap_in,
        swap_out: s.swap_out,
        major_faults: s.major_faults,
        minor_faults: s.minor_faults,
        hugetlb_allocations: s.hugetlb_allocations,
        hugetlb_failures: s.hugetlb_failures,
        oom_kills: s.oom_kills,
        alloc_stalls: s.alloc_stalls,
        async_scans: s.async_scans,
        direct_scans: s.direct_scans,
        async_reclaims: s.async_reclaims,
        direct_reclaims: s.direct_reclaims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use fv_virtio::VirtioDevice;

    #[test]
    fn targets_are_checked_and_reported_in_mib_and_pages() {
        let mem = create_guest_memory(64).unwrap();
        let device = Balloon::new(GuestRamReclaimer::new(mem), None).unwrap();
        let device = Arc::new(Mutex::new(device));
        let control = BalloonControl::new(device.clone(), 64, BalloonConfig::default());
        let info = control.info();
        assert_eq!((info.target_mib, info.actual_mib, info.stats), (0, 0, None));
        assert_eq!(info.stats_interval_s, 5);

        control.set_target_mib(48).unwrap();
        // The guest reports what it holds through the configuration space.
        lock(&device).write_config(4, &(1000u32).to_le_bytes());
        let info = control.info();
        assert_eq!((info.target_mib, info.target_pages), (48, 48 * 256));
        assert_eq!((info.actual_mib, info.actual_pages), (3, 1000));

        control.set_target_mib(64).unwrap();
        let e = control.set_target_mib(65).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("64 MiB"), "{e}");
        assert_eq!(lock(&device).target_pages(), 64 * 256);
        control.set_target_mib(u64::MAX).unwrap_err();
        control.set_target_mib(0).unwrap();
        assert_eq!(control.info().target_pages, 0);
    }

    #[test]
    fn statistics_carry_their_age() {
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let mut bytes = Vec::new();
        for (tag, val) in [(4u16, 1u64 << 20), (5, 2 << 20), (6, 3 << 20)] {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(val.to_le_bytes());
        }
        let (stats, _) = BalloonStats::parse(&bytes, t0);
        let s = statistics(&stats, t0 + std::time::Duration::from_millis(1500));
        assert_eq!(s.age_ms, 1500);
        assert_eq!(
            (s.free_memory, s.total_memory, s.available_memory, s.swap_in),
            (Some(1 << 20), Some(2 << 20), Some(3 << 20), None)
        );
        // A clock that went backwards gives age 0, not a panic.
        assert_eq!(statistics(&stats, SystemTime::UNIX_EPOCH).age_ms, 0);
    }
}
