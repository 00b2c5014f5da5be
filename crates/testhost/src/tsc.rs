//! The host's TSC frequency, which the emulated host's kernel is given (`tsc_early_khz=`).
//!
//! Under TCG the guest's TSC is the host's TSC (QEMU's `rdtsc` helper reads the host counter),
//! so the host can tell the guest its frequency exactly. Without it the kernel calibrates the
//! TSC by polling the PIT, which fails when the vCPU thread is descheduled (a busy machine),
//! and on `-M microvm` (hardware-reduced ACPI: no PIT tick, no HPET, no PM timer) a failed
//! calibration leaves `calibrate_delay()` waiting forever for a jiffy. See docs/testhost.md.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> Option<u64> {
    // SAFETY: RDTSC only reads the time-stamp counter: no memory is touched, and every x86-64
    // CPU has the instruction.
    Some(unsafe { core::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> Option<u64> {
    None
}

/// A TSC reading and the time, taken together: the middle of two TSC reads around the clock
/// read, from the narrowest of a few tries (a try the scheduler interrupted is wide).
fn tsc_and_time() -> Option<(u64, Instant)> {
    let mut best: Option<(u64, Instant, u64)> = None;
    for _ in 0..8 {
        let a = rdtsc()?;
        let t = Instant::now();
        let b = rdtsc()?;
        let width = b.checked_sub(a)?;
        if best.is_none_or(|(_, _, w)| width < w) {
            best = Some((a + width / 2, t, width));
        }
    }
    best.map(|(tsc, t, _)| (tsc, t))
}

/// TSC ticks per millisecond over `span`.
fn measure_khz(span: Duration) -> Option<u64> {
    let (c0, t0) = tsc_and_time()?;
    std::thread::sleep(span);
    let (c1, t1) = tsc_and_time()?;
    let ns = t1.duration_since(t0).as_nanos();
    let ticks = u128::from(c1.checked_sub(c0)?);
    u64::try_from(ticks * 1_000_000 / ns.max(1)).ok()
}

/// Whether two measurements agree within 0.1% and are a plausible frequency (100 MHz-20 GHz).
fn plausible(a: u64, b: u64) -> bool {
    (100_000..=20_000_000).contains(&a) && a.abs_diff(b) * 1000 <= a
}

/// The host's TSC frequency in kHz, measured once per process (about 20 ms; accurate to a few
/// ppm on the development VM even with every core busy). None off x86-64 or when two
/// measurements keep disagreeing (an unstable TSC).
pub(crate) fn host_tsc_khz() -> Option<u64> {
    static KHZ: OnceLock<Option<u64>> = OnceLock::new();
    *KHZ.get_or_init(|| {
        for _ in 0..5 {
            let a = measure_khz(Duration::from_millis(10))?;
            let b = measure_khz(Duration::from_millis(10))?;
            if plausible(a, b) {
                return Some(a / 2 + b / 2);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausibility() {
        assert!(plausible(2_596_130, 2_596_135));
        assert!(!plausible(2_596_130, 2_700_000));
        assert!(!plausible(50, 50));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn measures_the_host_frequency() {
        let khz = host_tsc_khz().expect("TSC frequency");
        assert!((100_000..=20_000_000).contains(&khz), "{khz} kHz");
    }
}
