//! Metrics: a sampler thread records the host's and each running VM's figures every 5 s
//! into round-robin archives (`fv-rrd`, laid out as XAPI's), saved to `DATA_DIR/rrds.bin`
//! every few minutes and at shutdown; `/rrd_updates` serves them as XAPI does and
//! `/metrics` as Prometheus text (see [`http`] and `docs/fvd.md`).
//!
//! The sampler runs on its own thread: it reads `/proc`, fv-vmm's API socket and the
//! database, none of which may block the async runtime.

mod http;
mod procfs;
mod sample;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fv_rrd::{ErrorKind, RrdSet};
use fv_xapi::Api;

pub use http::{routes, LocalSocket};

/// Seconds between samples, as xcp-rrdd.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the archives are saved (besides at shutdown).
const SAVE_INTERVAL: Duration = Duration::from_secs(300);
/// For tests only: the sampling period in milliseconds, instead of 5 s. The archives
/// keep their 5-s step; faster samples are consolidated into it.
const SAMPLE_INTERVAL_ENV: &str = "FVD_SAMPLE_INTERVAL_MS";

/// The metrics of this host. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    rrds: Arc<Mutex<RrdSet>>,
    path: PathBuf,
    /// Held while saving: two saves at once would share a temporary file.
    saving: Mutex<()>,
    sampler: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

fn sample_interval() -> Duration {
    std::env::var(SAMPLE_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| (10..=60_000).contains(ms))
        .map_or(SAMPLE_INTERVAL, Duration::from_millis)
}

/// The saved archives, or an empty set if there are none or they cannot be read.
fn load(path: &Path) -> RrdSet {
    match RrdSet::load(path) {
        Ok(set) => {
            tracing::info!("metrics: loaded {} RRDs from {}", set.len(), path.display());
            set
        }
        Err(e) if e.kind() == ErrorKind::Io && !path.exists() => RrdSet::new(),
        Err(e) => {
            tracing::warn!(
                "metrics: cannot load {}, starting with empty archives: {}",
                path.display(),
                error_chain(&e)
            );
            RrdSet::new()
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

impl Metrics {
    /// Loads the saved archives and starts sampling. `host` is this host's ref; VM run
    /// directories are under `run_root`. Never fails: without a host record or a
    /// thread, fvd runs on without metrics (and says so).
    pub fn start(api: &Api, host: &str, data_dir: &Path, run_root: PathBuf) -> Metrics {
        let path = data_dir.join("rrds.bin");
        let rrds = Arc::new(Mutex::new(load(&path)));
        let metrics = Metrics {
            inner: Arc::new(Inner {
                rrds: rrds.clone(),
                path,
                saving: Mutex::new(()),
                sampler: Mutex::new(None),
            }),
        };
        let host_uuid = match api.db().read(|tx| tx.get("host", host, "uuid")) {
            Ok(v) => v.as_str().unwrap_or_default().to_owned(),
            Err(e) => {
                tracing::error!("metrics: no host record ({e:?}); not sampling");
                return metrics;
            }
        };
        let interval = sample_interval();
        let mut sampler =
            sample::Sampler::new(api.clone(), host.to_owned(), host_uuid, run_root, rrds);
        let (stop, stopped) = mpsc::channel::<()>();
        let saver = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("fvd-metrics".into())
            .spawn(move || {
                let mut next = Instant::now();
                let mut saved = Instant::now();
                loop {
                    sampler.pass();
                    if saved.elapsed() >= SAVE_INTERVAL {
                        saver.save();
                        saved = Instant::now();
                    }
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        // A pass took longer than the period: skip the missed ones.
                        next = now + interval;
                    }
                    match stopped.recv_timeout(next - now) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            });
        match thread {
            Ok(t) => {
                *metrics.lock_sampler() = Some((stop, t));
                tracing::info!("metrics: sampling every {} ms", interval.as_millis());
            }
            Err(e) => tracing::error!("metrics: cannot start the sampler: {e}"),
        }
        metrics
    }

    fn lock_sampler(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(mpsc::Sender<()>, JoinHandle<()>)>> {
        self.inner.sampler.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn rrds(&self) -> std::sync::MutexGuard<'_, RrdSet> {
        self.inner.rrds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the archives (best effort: a failure is logged).
    pub fn save(&self) {
        let _saving = self.inner.saving.lock().unwrap_or_else(|e| e.into_inner());
        // Copied under the lock, written without it.
        let set = self.rrds().clone();
        match set.save(&self.inner.path) {
            Ok(()) => tracing::debug!("metrics: saved {}", self.inner.path.display()),
            Err(e) => tracing::warn!("metrics: cannot save: {}", error_chain(&e)),
        }
    }

    /// Stops sampling and saves the archives. Does not wait for a pass under way (one
    /// stuck on an unanswering fv-vmm could take its 30-s timeout): its figures, if any,
    /// are simply not saved.
    pub fn stop(&self) {
        if let Some((stop, _thread)) = self.lock_sampler().take() {
            let _ = stop.send(());
        }
        self.save();
    }
}
