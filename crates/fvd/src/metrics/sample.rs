//! One sampling pass: read the host's and each running VM's figures, feed them to the
//! RRDs, keep `host_metrics` and `VM_metrics` roughly current, and raise the low-memory
//! alarm. Runs on the sampler's own thread; every read is of a file or a socket that may
//! vanish at any moment, and a VM whose process is gone is simply skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fv_rrd::{ds, DsDef, Owner, OwnerKind, RrdSet};
use fv_vmmctl::RunDir;
use fv_xapi::db::Tx;
use fv_xapi::{Api, ApiError, Value};

use super::procfs;

/// How long fv-vmm's `GET /vm` answer (memory, NICs and their taps) is trusted.
const VMM_INFO_TTL: Duration = Duration::from_secs(60);
/// `host_metrics.memory_free` is rewritten when it moves by more than this share of the
/// host's memory.
const MEMORY_FREE_WRITE_STEP: f64 = 0.01;
/// `VM_metrics.VCPUs_utilisation` is rewritten when a vCPU's figure moves by more.
const VCPU_WRITE_STEP: f64 = 0.05;
/// Readings per RRD rate are kept this far under the bound, so that rounding never pushes
/// a fully busy CPU past 1.0 (which the RRD would store as unknown).
const CAP_MARGIN: f64 = 1.0 - 1e-6;

/// A busy-seconds counter as fed to the RRD: grows by the real counter's increments, but
/// never faster than `max_rate` × the time between two readings. The time between reading
/// the clock and reading `/proc` varies by a few milliseconds, which would otherwise make a
/// fully busy CPU look 100.1 % busy now and then.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    map: HashMap<String, Counter>,
    pass: u64,
}

#[derive(Debug)]
struct Counter {
    fed: f64,
    raw: f64,
    at: f64,
    pass: u64,
}

impl Counters {
    /// The value to feed for `key` whose real counter reads `raw` at `t`.
    pub(crate) fn feed(&mut self, key: String, raw: f64, t: f64, max_rate: f64) -> f64 {
        let pass = self.pass;
        match self.map.get_mut(&key) {
            None => {
                self.map.insert(
                    key,
                    Counter {
                        fed: raw,
                        raw,
                        at: t,
                        pass,
                    },
                );
                raw
            }
            Some(c) => {
                // A counter that went back was reset (the VM was restarted): it counted
                // `raw` since.
                let delta = if raw >= c.raw { raw - c.raw } else { raw };
                let cap = (max_rate * (t - c.at)).max(0.0) * CAP_MARGIN;
                c.fed += delta.min(cap);
                c.raw = raw;
                c.at = t;
                c.pass = pass;
                c.fed
            }
        }
    }

    /// Ends a pass: counters not fed in it (a VM gone, a CPU unplugged) are forgotten.
    pub(crate) fn ends_pass(&mut self) {
        let pass = self.pass;
        self.map.retain(|_, c| c.pass == pass);
        self.pass += 1;
    }
}

/// The low-memory alarm: raised once when free memory falls under `low`, and raised
/// again only after it has been back over `rearm`.
#[derive(Debug)]
pub(crate) struct Alarm {
    armed: bool,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm { armed: true }
    }
}

impl Alarm {
    /// Whether to post an alarm now, given `free` and the thresholds.
    pub(crate) fn check(&mut self, free: u64, low: u64, rearm: u64) -> bool {
        if self.armed && free < low {
            self.armed = false;
            return true;
        }
        if !self.armed && free > rearm {
            self.armed = true;
        }
        false
    }
}

/// The alarm's thresholds for a host of `total_kib`: under 5 % free it fires, over 10 %
/// it re-arms.
pub(crate) fn alarm_thresholds(total_kib: u64) -> (u64, u64) {
    (total_kib / 20, total_kib / 10)
}

/// What fv-vmm says about itself, cached per process.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct VmmInfo {
    pub memory_bytes: Option<u64>,
    /// (VIF device, tap) for each NIC.
    pub nics: Vec<(u32, String)>,
}

/// The VIF device number in a tap named `vif<anything>.<digits>`.
fn vif_device(tap: &str) -> Option<u32> {
    let (head, device) = tap.rsplit_once('.')?;
    if !head.starts_with("vif") || device.is_empty() || !device.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    device.parse().ok()
}

/// Reads what the sampler uses of fv-vmm's `GET /vm` body.
pub(crate) fn parse_vmm_info(body: &str) -> Option<VmmInfo> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let memory_bytes = v["memory_mib"]
        .as_u64()
        .and_then(|m| m.checked_mul(1 << 20));
    let mut nics = Vec::new();
    for d in v["devices"].as_array().into_iter().flatten() {
        if d["kind"].as_str() != Some("virtio-net") {
            continue;
        }
        let Some(tap) = d["tap"].as_str() else {
            continue;
        };
        // fvd names a VIF's tap `vif<uuid prefix>.<VIF device>` (as XAPI's
        // `vif<domid>.<device>`); another tap counts by fv-vmm's `net<N>`.
        let n = vif_device(tap).or_else(|| {
            d["id"]
                .as_str()
                .and_then(|id| id.strip_prefix("net"))
                .and_then(|n| n.parse::<u32>().ok())
        });
        if let Some(n) = n {
            nics.push((n, tap.to_owned()));
        }
    }
    Some(VmmInfo { memory_bytes, nics })
}

struct Cached {
    pid: i32,
    at: Instant,
    info: Option<VmmInfo>,
}

/// A running VM as the database lists it.
struct Listed {
    vm: String,
    uuid: String,
    pid: i32,
    metrics: String,
    memory_actual: i64,
}

/// What was last written to a `VM_metrics` record.
#[derive(Default)]
struct Written {
    vcpus: BTreeMap<u32, f64>,
    memory: i64,
}

/// The sampler's state between passes.
pub(crate) struct Sampler {
    api: Api,
    host: String,
    host_uuid: String,
    run_root: PathBuf,
    rrds: Arc<Mutex<RrdSet>>,
    counters: Counters,
    vmm_info: HashMap<String, Cached>,
    alarm: Alarm,
    host_free_written: Option<i64>,
    vm_written: HashMap<String, Written>,
    passes: u64,
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn text(tx: &Tx<'_>, class: &str, r: &str, field: &str) -> Result<String, ApiError> {
    Ok(tx
        .get(class, r, field)?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The pid file fv-vmm's launcher writes in the run directory: `pid start_time`.
fn recorded_process(dir: &RunDir) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(dir.path().join("pid")).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

impl Sampler {
    pub(crate) fn new(
        api: Api,
        host: String,
        host_uuid: String,
        run_root: PathBuf,
        rrds: Arc<Mutex<RrdSet>>,
    ) -> Sampler {
        Sampler {
            api,
            host,
            host_uuid,
            run_root,
            rrds,
            counters: Counters::default(),
            vmm_info: HashMap::new(),
            alarm: Alarm::default(),
            host_free_written: None,
            vm_written: HashMap::new(),
            passes: 0,
        }
    }

    fn update(&self, owner: &Owner, t: f64, samples: &[(DsDef, f64)]) {
        let mut set = self.rrds.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = set.update(owner, t, samples) {
            tracing::debug!("metrics of {} {}: {e}", owner.kind.as_str(), owner.uuid);
        }
    }

    /// One pass.
    pub(crate) fn pass(&mut self) {
        let t = now_seconds();
        let host_memory = self.sample_host(t);
        let listed = match self.list_vms() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("metrics: cannot list the VMs: {e:?}");
                Vec::new()
            }
        };
        let mut vcpu_use = Vec::new();
        for vm in &listed {
            if let Some(u) = self.sample_vm(vm, t) {
                vcpu_use.push(u);
            }
        }
        self.vmm_info
            .retain(|uuid, _| listed.iter().any(|l| &l.uuid == uuid));
        self.write_records(host_memory, &vcpu_use);
        self.counters.ends_pass();
        self.passes += 1;
        if self.passes % 12 == 1 {
            self.forget_destroyed_vms();
        }
    }

    /// Samples the host; returns (free, total) memory in KiB.
    fn sample_host(&mut self, t: f64) -> Option<(u64, u64)> {
        let owner = Owner::host(self.host_uuid.clone());
        let mut samples = Vec::new();
        if let Some(stat) = procfs::host_stat() {
            let n = stat.cpus.len().max(1) as f64;
            for (i, times) in &stat.cpus {
                let fed = self
                    .counters
                    .feed(format!("host/cpu{i}"), times.busy, t, 1.0);
                samples.push((ds::host::cpu(*i), fed));
            }
            if let Some(all) = stat.all {
                let fed = self
                    .counters
                    .feed("host/cpu_avg".into(), all.busy / n, t, 1.0);
                samples.push((ds::host::cpu_avg(), fed));
            }
        }
        let mut memory = None;
        if let Some(meminfo) = procfs::meminfo() {
            let total = procfs::parse_meminfo_kib(&meminfo, "MemTotal");
            let free = procfs::parse_meminfo_kib(&meminfo, "MemAvailable");
            if let Some(total) = total {
                samples.push((ds::host::memory_total_kib(), total as f64));
            }
            if let Some(free) = free {
                samples.push((ds::host::memory_free_kib(), free as f64));
            }
            if let (Some(free), Some(total)) = (free, total) {
                memory = Some((free, total));
            }
        }
        if let Some(load) = procfs::loadavg() {
            samples.push((ds::host::loadavg(), load));
        }
        self.update(&owner, t, &samples);
        memory
    }

    /// The VMs with a running fv-vmm on this host.
    fn list_vms(&self) -> Result<Vec<Listed>, ApiError> {
        self.api.db().read(|tx| {
            let mut refs = tx.find("VM", "power_state", &Value::String("Running".into()))?;
            refs.extend(tx.find("VM", "power_state", &Value::String("Paused".into()))?);
            let mut out = Vec::new();
            for vm in refs {
                // A VM destroyed since the search is skipped.
                let Ok(pid) = tx.get("VM", &vm, "domid") else {
                    continue;
                };
                let Some(pid) = pid.as_int().and_then(|p| i32::try_from(p).ok()) else {
                    continue;
                };
                let resident = text(tx, "VM", &vm, "resident_on")?;
                if pid <= 0 || (resident != self.host && !resident.is_empty()) {
                    continue;
                }
                let metrics = text(tx, "VM", &vm, "metrics")?;
                let memory_actual = tx
                    .get("VM_metrics", &metrics, "memory_actual")
                    .ok()
                    .and_then(|v| v.as_int())
                    .unwrap_or(0);
                out.push(Listed {
                    uuid: text(tx, "VM", &vm, "uuid")?,
                    vm,
                    pid,
                    metrics,
                    memory_actual,
                });
            }
            Ok(out)
        })
    }

    /// fv-vmm's own account of the VM, asked at most once a minute per process.
    fn vmm_info(&mut self, vm: &Listed, dir: &RunDir) -> Option<VmmInfo> {
        let fresh = self
            .vmm_info
            .get(&vm.uuid)
            .is_some_and(|c| c.pid == vm.pid && c.at.elapsed() < VMM_INFO_TTL);
        if !fresh {
            let info = match fv_vmmctl::http_request(&dir.api_socket(), "GET", "/vm", None) {
                Ok((200, body)) => parse_vmm_info(&body),
                Ok((status, _)) => {
                    tracing::debug!("metrics: VM {}: GET /vm answered {status}", vm.uuid);
                    None
                }
                Err(e) => {
                    tracing::debug!("metrics: VM {}: GET /vm: {e}", vm.uuid);
                    None
                }
            };
            self.vmm_info.insert(
                vm.uuid.clone(),
                Cached {
                    pid: vm.pid,
                    at: Instant::now(),
                    info,
                },
            );
        }
        self.vmm_info.get(&vm.uuid).and_then(|c| c.info.clone())
    }

    /// Samples one VM; returns its vCPUs' use over the last interval for `VM_metrics`.
    fn sample_vm(&mut self, vm: &Listed, t: f64) -> Option<(String, String, VmUse)> {
        let dir = RunDir::new(self.run_root.join(&vm.uuid));
        // The process must be the VM's fv-vmm, not a recycled pid.
        let stat = procfs::proc_stat(vm.pid)?;
        match recorded_process(&dir) {
            Some((pid, start)) if pid == vm.pid && start == stat.start_time => {}
            _ => return None,
        }
        let info = self.vmm_info(vm, &dir).unwrap_or_default();
        let key = |ds: &str| format!("{}/{ds}", vm.uuid);
        let mut samples = Vec::new();
        let vcpus = procfs::vcpu_seconds(vm.pid);
        let mut use_now = BTreeMap::new();
        let mut sum = 0.0;
        for (i, seconds) in &vcpus {
            let k = key(&format!("cpu{i}"));
            let before = self.counters.map.get(&k).map(|c| (c.fed, c.at));
            let fed = self.counters.feed(k, *seconds, t, 1.0);
            if let Some((prev, at)) = before {
                if t > at {
                    use_now.insert(*i, ((fed - prev) / (t - at)).clamp(0.0, 1.0));
                }
            }
            samples.push((ds::vm::cpu(*i), fed));
            sum += seconds;
        }
        if !vcpus.is_empty() {
            let fed = self
                .counters
                .feed(key("cpu_usage"), sum / vcpus.len() as f64, t, 1.0);
            samples.push((ds::vm::cpu_usage(), fed));
        }
        samples.push((DsDef::counter("vmm_cpu"), stat.cpu_seconds));
        let memory = info
            .memory_bytes
            .map(|m| m as f64)
            .or_else(|| (vm.memory_actual > 0).then_some(vm.memory_actual as f64));
        if let Some(m) = memory {
            samples.push((ds::vm::memory(), m));
        }
        if let Some(rss) = procfs::rss_bytes(vm.pid) {
            samples.push((DsDef::gauge("vmm_rss"), rss as f64));
        }
        if let Some((read, write)) = procfs::proc_io(vm.pid) {
            samples.push((DsDef::counter("vmm_io_read"), read as f64));
            samples.push((DsDef::counter("vmm_io_write"), write as f64));
        }
        for (n, tap) in &info.nics {
            // The host's side of the tap: what it transmits, the guest receives.
            if let Some((host_rx, host_tx)) = procfs::net_bytes(tap) {
                samples.push((ds::vm::vif_rx(*n), host_tx as f64));
                samples.push((ds::vm::vif_tx(*n), host_rx as f64));
            }
        }
        // Still the same process after all this reading? Otherwise drop the figures.
        if procfs::proc_stat(vm.pid).map(|s| s.start_time) != Some(stat.start_time) {
            return None;
        }
        self.update(&Owner::vm(vm.uuid.clone()), t, &samples);
        Some((
            vm.vm.clone(),
            vm.metrics.clone(),
            VmUse {
                vcpus: use_now,
                // What the record says already needs no write.
                memory: memory.map(|m| m as i64).filter(|m| *m != vm.memory_actual),
            },
        ))
    }

    /// Keeps `host_metrics.memory_free` and each `VM_metrics`' `VCPUs_utilisation` and
    /// `memory_actual` roughly current: one transaction per pass, only when a figure moved
    /// enough to matter, so that event clients are not woken every 5 s for nothing.
    fn write_records(&mut self, host_memory: Option<(u64, u64)>, vms: &[(String, String, VmUse)]) {
        let mut host_free = None;
        if let Some((free_kib, total_kib)) = host_memory {
            let free = i64::try_from(free_kib.saturating_mul(1024)).unwrap_or(i64::MAX);
            let step = total_kib as f64 * 1024.0 * MEMORY_FREE_WRITE_STEP;
            if self
                .host_free_written
                .is_none_or(|w| (w - free).abs() as f64 > step)
            {
                host_free = Some(free);
            }
            let (low, rearm) = alarm_thresholds(total_kib);
            if self.alarm.check(free_kib, low, rearm) {
                self.post_low_memory(free_kib, low);
            }
        }
        let mut vm_changes = Vec::new();
        for (vm, metrics, u) in vms {
            let w = self.vm_written.get(metrics);
            let vcpus_moved = match w {
                None => !u.vcpus.is_empty(),
                Some(w) => {
                    w.vcpus.len() != u.vcpus.len()
                        || u.vcpus.iter().any(|(i, v)| {
                            w.vcpus
                                .get(i)
                                .is_none_or(|old| (old - v).abs() > VCPU_WRITE_STEP)
                        })
                }
            };
            let memory_moved = u.memory.is_some_and(|m| w.is_none_or(|w| w.memory != m));
            if vcpus_moved || memory_moved {
                vm_changes.push((vm, metrics, u, vcpus_moved, memory_moved));
            }
        }
        self.vm_written
            .retain(|m, _| vms.iter().any(|(_, metrics, _)| metrics == m));
        if host_free.is_none() && vm_changes.is_empty() {
            return;
        }
        let host = self.host.clone();
        let result = self.api.db().write(|tx| {
            let now = Value::DateTime(fv_xapi::time::now());
            if let Some(free) = host_free {
                let metrics = text(tx, "host", &host, "metrics")?;
                if tx.exists("host_metrics", &metrics)? {
                    tx.set("host_metrics", &metrics, "memory_free", Value::Int(free))?;
                    tx.set("host_metrics", &metrics, "last_updated", now.clone())?;
                }
            }
            for (vm, metrics, u, vcpus_moved, memory_moved) in &vm_changes {
                // The VM may have halted (and lost its metrics) since it was sampled.
                if !tx.exists("VM", vm)?
                    || text(tx, "VM", vm, "metrics")? != **metrics
                    || !tx.exists("VM_metrics", metrics)?
                {
                    continue;
                }
                if *vcpus_moved {
                    let map = u
                        .vcpus
                        .iter()
                        .map(|(i, v)| (i.to_string(), Value::Float(*v)))
                        .collect();
                    tx.set(
                        "VM_metrics",
                        metrics,
                        "VCPUs_utilisation",
                        Value::Struct(map),
                    )?;
                }
                if let (true, Some(m)) = (*memory_moved, u.memory) {
                    tx.set("VM_metrics", metrics, "memory_actual", Value::Int(m))?;
                }
                tx.set("VM_metrics", metrics, "last_updated", now.clone())?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                if host_free.is_some() {
                    self.host_free_written = host_free;
                }
                for (_, metrics, u, _, _) in vm_changes {
                    let w = self.vm_written.entry(metrics.clone()).or_default();
                    w.vcpus = u.vcpus.clone();
                    if let Some(m) = u.memory {
                        w.memory = m;
                    }
                }
            }
            Err(e) => tracing::warn!("metrics: cannot update the metrics records: {e:?}"),
        }
    }

    /// Posts XAPI's `ALARM` message for the host's `memory_free_kib`, with the body
    /// perfmon writes (`value: ...`, then the alarm's configuration).
    fn post_low_memory(&self, free_kib: u64, level_kib: u64) {
        let body = format!(
            "value: {free_kib}\nconfig:\n<variable>\n\t<name value=\"memory_free_kib\"/>\n\
             \t<alarm_trigger_level value=\"{level_kib}\"/>\n\
             \t<alarm_trigger_period value=\"0\"/>\n</variable>"
        );
        tracing::warn!("host memory is low: {free_kib} KiB available (alarm under {level_kib})");
        let uuid = self.host_uuid.clone();
        let result = self.api.db().write(|tx| {
            tx.create(
                "message",
                BTreeMap::from([
                    ("name".to_owned(), Value::String("ALARM".into())),
                    ("priority".to_owned(), Value::Int(3)),
                    ("cls".to_owned(), Value::String("Host".into())),
                    ("obj_uuid".to_owned(), Value::String(uuid)),
                    (
                        "timestamp".to_owned(),
                        Value::DateTime(fv_xapi::time::now()),
                    ),
                    ("body".to_owned(), Value::String(body)),
                ]),
            )
        });
        if let Err(e) = result {
            tracing::warn!("metrics: cannot post the low-memory alarm: {e:?}");
        }
    }

    /// Drops the RRDs of VMs that no longer exist.
    fn forget_destroyed_vms(&self) {
        let vms: Vec<String> = {
            let set = self.rrds.lock().unwrap_or_else(|e| e.into_inner());
            set.iter()
                .filter(|(o, _)| o.kind == OwnerKind::Vm)
                .map(|(o, _)| o.uuid.clone())
                .collect()
        };
        if vms.is_empty() {
            return;
        }
        let gone = self.api.db().read(|tx| {
            let mut gone = Vec::new();
            for uuid in vms {
                // Any error but "no such VM" fails the whole check: nothing is dropped.
                if tx
                    .find("VM", "uuid", &Value::String(uuid.clone()))?
                    .is_empty()
                {
                    gone.push(uuid);
                }
            }
            Ok(gone)
        });
        if let Ok(gone) = gone {
            let mut set = self.rrds.lock().unwrap_or_else(|e| e.into_inner());
            for uuid in gone {
                set.remove(&Owner::vm(uuid));
            }
        }
    }
}

/// A VM's figures for its `VM_metrics` record.
pub(crate) struct VmUse {
    vcpus: BTreeMap<u32, f64>,
    memory: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_never_outrun_the_clock() {
        let mut c = Counters::default();
        assert_eq!(c.feed("a".into(), 100.0, 10.0, 1.0), 100.0);
        c.ends_pass();
        // 5.01 s of CPU in 5 s: capped just under 5.
        let fed = c.feed("a".into(), 105.01, 15.0, 1.0);
        assert!(fed > 104.99 && fed < 105.0, "{fed}");
        c.ends_pass();
        // Half busy: passed through.
        let fed2 = c.feed("a".into(), 107.51, 20.0, 1.0);
        assert!((fed2 - fed - 2.5).abs() < 1e-9);
        c.ends_pass();
        // A reset counts what the new counter counted.
        let fed3 = c.feed("a".into(), 1.0, 25.0, 1.0);
        assert!((fed3 - fed2 - 1.0).abs() < 1e-9);
        // A key not fed in a pass is forgotten.
        c.ends_pass();
        c.ends_pass();
        assert!(c.map.is_empty());
    }

    #[test]
    fn the_alarm_fires_once_until_memory_recovers() {
        let (low, rearm) = alarm_thresholds(1000);
        assert_eq!((low, rearm), (50, 100));
        let mut a = Alarm::default();
        assert!(!a.check(500, low, rearm));
        assert!(a.check(40, low, rearm));
        assert!(!a.check(30, low, rearm));
        assert!(!a.check(60, low, rearm));
        assert!(!a.check(45, low, rearm));
        assert!(!a.check(101, low, rearm));
        assert!(a.check(49, low, rearm));
    }

    #[test]
    fn vmm_info_gives_memory_and_taps() {
        let body = r#"{"state":"Running","vcpus":1,"memory_mib":64,"uptime_ms":5,
            "exits":{},"devices":[{"id":"blk0","kind":"virtio-blk","pci":"0000:00:01.0"},
            {"id":"net1","kind":"virtio-net","pci":"0000:00:02.0","tap":"fvtap3","mac":"x"},
            {"id":"netx","kind":"virtio-net","pci":"0000:00:03.0","tap":"t"},
            {"id":"net2","kind":"virtio-net","pci":"0000:00:04.0"},
            {"id":"net3","kind":"virtio-net","pci":"0000:00:05.0","tap":"vif0c899d3a.7"}]}"#;
        let info = parse_vmm_info(body).unwrap();
        assert_eq!(info.memory_bytes, Some(64 << 20));
        assert_eq!(
            info.nics,
            vec![(1, "fvtap3".to_owned()), (7, "vif0c899d3a.7".to_owned())]
        );
        assert_eq!(vif_device("vif1.x"), None);
        assert_eq!(vif_device("tap0.1"), None);
        assert_eq!(parse_vmm_info("{}"), Some(VmmInfo::default()));
        assert_eq!(parse_vmm_info("not json"), None);
    }
}
