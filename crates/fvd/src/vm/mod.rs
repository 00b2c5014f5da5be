//! VM lifecycle: the custom VM messages (`VM.start`, `clean_shutdown`, ...) carried out
//! with one fv-vmm per running VM, and what happens when a VMM ends.
//!
//! Every change of power state goes through the database in one transaction with the
//! operation lock (`ops`); the fv-vmm process is the truth about whether a VM runs, and
//! its end (seen through its pidfd) moves the VM on as `actions_after_*` say.

mod clone;
mod config;
mod devices;
mod locking;
mod ops;

pub use devices::{random_mac, sr_path};
pub use ops::refresh as refresh_allowed;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fv_vmmctl::{Exit, RunDir, Vmm};
use fv_xapi::db::codec::new_ref;
use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::model::{Class, Message};
use fv_xapi::{Actions, Api, ApiError, CallContext, Value};

/// How long `VM.clean_shutdown` and `clean_reboot` wait for the guest (XAPI's default).
pub const CLEAN_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1200);
/// How long `VM.shutdown` waits for a clean shutdown before forcing it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// How long a hard stop may take before the VMM is killed.
const HARD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the daemon meant when it ended a VM; the guest's own ends are `Guest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Guest,
    Halt,
    Reboot,
}

/// One running fv-vmm.
struct Running {
    vm: String,
    vmm: Mutex<Vmm>,
    intent: Mutex<Intent>,
    /// Set once the VMM has ended and the VM has moved on (halted or restarted).
    ended: Mutex<bool>,
    ended_cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Running {
    /// The devices fv-vmm reports in `GET /vm`: disks with their `id`, `path` and
    /// `paused`; NICs with their `tap` and `removing`.
    fn devices(&self) -> Result<Vec<serde_json::Value>, ApiError> {
        let mut info = lock(&self.vmm)
            .info()
            .map_err(|e| internal(format!("VM {}: {e}", self.vm)))?;
        Ok(match info["devices"].take() {
            serde_json::Value::Array(devices) => devices,
            _ => Vec::new(),
        })
    }

    /// The id of the disk (or drive) fv-vmm has open on `path`, if any.
    fn disk_id(&self, path: &Path) -> Result<Option<String>, ApiError> {
        Ok(self
            .devices()?
            .iter()
            .find(|d| d["path"].as_str() == path.to_str())
            .and_then(|d| d["id"].as_str())
            .map(str::to_owned))
    }

    fn set_intent(&self, intent: Intent) {
        *lock(&self.intent) = intent;
    }

    /// Waits until the VM has moved on after its VMM ended; false on timeout.
    fn wait_ended(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut ended = lock(&self.ended);
        while !*ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            ended = self
                .ended_cv
                .wait_timeout(ended, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

struct Inner {
    fv_vmm: PathBuf,
    run_root: PathBuf,
    runtime: tokio::runtime::Handle,
    host: OnceLock<String>,
    api: OnceLock<Api>,
    running: Mutex<HashMap<String, Arc<Running>>>,
    clean_shutdown_timeout: Duration,
    /// The nftables chains of running VMs' VIFs.
    firewall: locking::Firewall,
    /// The DHCP servers of managed networks.
    dhcp: crate::dhcp::Dhcp,
}

/// The VM messages, for `fv_xapi::Api`. Cheap to clone.
#[derive(Clone)]
pub struct Vms {
    inner: Arc<Inner>,
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e)
}

use crate::fields::text as get_str;

/// `VM_BAD_POWER_STATE` unless the VM is in one of `expected`.
fn require_state(tx: &Tx<'_>, vm: &str, expected: &[&str]) -> Result<String, ApiError> {
    let actual = get_str(tx, "VM", vm, "power_state")?;
    if expected.contains(&actual.as_str()) {
        return Ok(actual);
    }
    Err(ApiError::new(
        &codes::VM_BAD_POWER_STATE,
        [
            vm.to_owned(),
            expected[0].to_lowercase(),
            actual.to_lowercase(),
        ],
    ))
}

/// How long `VIF.unplug` waits for the guest to let go of the NIC.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// Halted, running and paused VMs can be snapshotted (a running VM's disks are held for
/// the moment it takes); a suspended one cannot.
fn require_snapshot_state(tx: &Tx<'_>, vm: &str) -> Result<(), ApiError> {
    require_state(tx, vm, &["Halted", "Running", "Paused"]).map(drop)
}

fn require_not_template(tx: &Tx<'_>, vm: &str) -> Result<(), ApiError> {
    if matches!(tx.get("VM", vm, "is_a_template")?, Value::Bool(true)) {
        return Err(ApiError::new(&codes::VM_IS_TEMPLATE, [vm]));
    }
    Ok(())
}

fn arg_ref(args: &[Value], i: usize) -> String {
    args.get(i)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn arg_bool(args: &[Value], i: usize) -> bool {
    matches!(args.get(i), Some(Value::Bool(true)))
}

impl Vms {
    pub fn new(
        data_dir: &Path,
        fv_vmm: PathBuf,
        run_root: PathBuf,
        runtime: tokio::runtime::Handle,
        clean_shutdown_timeout: Duration,
    ) -> Vms {
        Vms {
            inner: Arc::new(Inner {
                fv_vmm,
                run_root,
                runtime,
                host: OnceLock::new(),
                api: OnceLock::new(),
                running: Mutex::new(HashMap::new()),
                clean_shutdown_timeout,
                firewall: locking::Firewall::default(),
                dhcp: crate::dhcp::Dhcp::new(data_dir),
            }),
        }
    }

    /// Completes the set-up once the API and this host's record exist.
    pub fn attach(&self, api: Api, host: String) {
        let _ = self.inner.api.set(api);
        let _ = self.inner.host.set(host);
    }

    fn api(&self) -> Result<&Api, ApiError> {
        self.inner
            .api
            .get()
            .ok_or_else(|| internal("the daemon is still starting"))
    }

    fn running(&self, vm: &str) -> Option<Arc<Running>> {
        lock(&self.inner.running).get(vm).cloned()
    }

    fn run_dir(&self, uuid: &str) -> RunDir {
        RunDir::new(self.inner.run_root.join(uuid))
    }

    /// Runs `f` holding the operation lock for `op` on `vm`, taken after `check` passed in
    /// the same transaction.
    fn with_op<T>(
        &self,
        ctx: &CallContext,
        vm: &str,
        op: &str,
        check: impl FnOnce(&Tx<'_>) -> Result<(), ApiError>,
        f: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let db = self.api()?.db();
        let key = ctx.task.clone().unwrap_or_else(new_ref);
        db.write(|tx| {
            check(tx)?;
            ops::begin(tx, vm, &key, op)
        })?;
        let result = f();
        if let Err(e) = db.write(|tx| ops::end(tx, vm, &key)) {
            tracing::error!("VM {vm}: cannot release the {op} lock: {e:?}");
        }
        result
    }

    // ---- starting ----

    fn start(&self, ctx: &CallContext, vm: &str, paused: bool) -> Result<(), ApiError> {
        self.with_op(
            ctx,
            vm,
            "start",
            |tx| {
                require_not_template(tx, vm)?;
                require_state(tx, vm, &["Halted"]).map(drop)
            },
            || self.launch(vm, paused),
        )
    }

    /// Starts fv-vmm for `vm` and records it running (or paused).
    fn launch(&self, vm: &str, paused: bool) -> Result<(), ApiError> {
        let db = self.api()?.db();
        // No import may write the disks from now on (one in progress refuses the start).
        let vdis = db.read(|tx| clone::disks(tx, vm))?;
        let _claim = crate::vdi_busy::claim(&vdis, "start")?;
        let (record, uuid, disks, nics) = db.read(|tx| {
            Ok((
                tx.record("VM", vm)?,
                get_str(tx, "VM", vm, "uuid")?,
                devices::disks(tx, vm, &self.media_dir())?,
                devices::nics(tx, vm)?,
            ))
        })?;
        let mut config = config::vmm_config(vm, &record)?;
        config["disks"] = serde_json::Value::Array(disks);
        // The VIFs' chains go in before their taps exist: no frame passes unfiltered.
        // (In a write transaction, so that a change of a VIF's lock cannot slip between.)
        db.write(|tx| self.inner.firewall.start(&vif_locks(tx, vm)?))?;
        let taps: Vec<String> = nics.iter().map(|n| n.tap.clone()).collect();
        let undo = |e: ApiError| {
            for tap in &taps {
                let _ = fv_hostnet::Tap::remove_persistent(tap);
            }
            let _ = db.write(|_| {
                self.inner.firewall.stop(&taps);
                Ok(())
            });
            e
        };
        config["nets"] = serde_json::Value::Array(devices::plug(&nics).map_err(undo)?);
        let launched = Vmm::launch(self.run_dir(&uuid), &self.inner.fv_vmm, &config, paused);
        let vmm = match launched {
            Ok(vmm) => vmm,
            Err(e) => return Err(undo(internal(format!("VM {uuid}: {e}")))),
        };
        let pid = vmm.pid();
        let host = self.inner.host.get().cloned().unwrap_or_default();
        let vcpus = config["vcpus"].as_i64().unwrap_or(1);
        let memory = config["memory_mib"].as_i64().unwrap_or(0) << 20;
        db.write(|tx| {
            ops::set_power_state(tx, vm, if paused { "Paused" } else { "Running" })?;
            tx.set("VM", vm, "resident_on", s(&host))?;
            tx.set("VM", vm, "domid", Value::Int(i64::from(pid)))?;
            let metrics = metrics_of(tx, vm)?;
            tx.set(
                "VM_metrics",
                &metrics,
                "start_time",
                Value::DateTime(fv_xapi::time::now()),
            )?;
            tx.set("VM_metrics", &metrics, "VCPUs_number", Value::Int(vcpus))?;
            tx.set("VM_metrics", &metrics, "memory_actual", Value::Int(memory))?;
            Ok(())
        })?;
        self.watch(vm, vmm);
        Ok(())
    }

    /// Keeps `vmm` as the running instance of `vm` and acts when it ends.
    fn watch(&self, vm: &str, vmm: Vmm) {
        let pidfd = vmm.pidfd().try_clone_to_owned();
        let running = Arc::new(Running {
            vm: vm.to_owned(),
            vmm: Mutex::new(vmm),
            intent: Mutex::new(Intent::Guest),
            ended: Mutex::new(false),
            ended_cv: Condvar::new(),
        });
        lock(&self.inner.running).insert(vm.to_owned(), running.clone());
        let vms = self.clone();
        self.inner.runtime.spawn(async move {
            // Deprecated because a raw fd could be closed behind tokio's back; ours is an
            // OwnedFd that AsyncFd owns from here on, which is the sound use.
            #[allow(deprecated)]
            let watched = pidfd.and_then(|fd| {
                tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
            });
            match watched {
                Ok(fd) => {
                    let _ = fd.readable().await;
                }
                Err(e) => {
                    tracing::warn!("VM {}: cannot watch its pidfd ({e}); waiting", running.vm);
                }
            }
            let _ = tokio::task::spawn_blocking(move || vms.on_exit(running)).await;
        });
    }

    // ---- when a VMM ends ----

    fn on_exit(&self, running: Arc<Running>) {
        // Normally the pidfd said it ended and this returns at once; without the pidfd
        // watch, the lock is let go between waits so that commands still get through.
        let exit = loop {
            match lock(&running.vmm).wait(Some(Duration::from_millis(500))) {
                Ok(Some(exit)) => break exit,
                Ok(None) => continue,
                Err(e) => break Exit::Killed(format!("cannot wait for fv-vmm: {e}")),
            }
        };
        let vm = running.vm.clone();
        {
            let mut map = lock(&self.inner.running);
            if map.get(&vm).is_some_and(|r| Arc::ptr_eq(r, &running)) {
                map.remove(&vm);
            }
        }
        let intent = *lock(&running.intent);
        if let Err(e) = self.after_exit(&vm, intent, &exit) {
            tracing::error!("VM {vm}: after {exit:?}: {e:?}");
        }
        *lock(&running.ended) = true;
        running.ended_cv.notify_all();
    }

    /// Moves the VM on after its VMM ended: halted, or started again.
    fn after_exit(&self, vm: &str, intent: Intent, exit: &Exit) -> Result<(), ApiError> {
        let api = self.api()?;
        let db = api.db();
        if !db.read(|tx| tx.exists("VM", vm))? {
            return Ok(());
        }
        tracing::info!("VM {vm}: fv-vmm ended: {exit:?} (intent {intent:?})");
        let (after_shutdown, after_reboot, after_crash, uuid) = db.read(|tx| {
            Ok((
                get_str(tx, "VM", vm, "actions_after_shutdown")?,
                get_str(tx, "VM", vm, "actions_after_reboot")?,
                get_str(tx, "VM", vm, "actions_after_crash")?,
                get_str(tx, "VM", vm, "uuid")?,
            ))
        })?;
        let restart = match (intent, exit) {
            (Intent::Halt, _) => false,
            (Intent::Reboot, Exit::PowerOff | Exit::Reboot) => true,
            (Intent::Guest, Exit::PowerOff) => after_shutdown == "restart",
            (Intent::Guest, Exit::Reboot) => after_reboot == "restart",
            (_, Exit::Crash(why)) => {
                self.alert(
                    db,
                    &uuid,
                    "VM_CRASHED",
                    2,
                    &format!("the guest crashed: {why}"),
                );
                after_crash.contains("restart")
            }
            (_, Exit::VmmError(why) | Exit::Killed(why)) => {
                self.alert(db, &uuid, "VM_CRASHED", 2, &format!("fv-vmm failed: {why}"));
                false
            }
        };
        if matches!(exit, Exit::Killed(_)) {
            // Before the VM is halted, so that no start can open a disk still being mended.
            self.repair_disks_after_kill(db, vm, &uuid)?;
        }
        // The taps go first, then their chains with the record's change: whoever sees
        // the VM halted sees neither.
        let devices = db.read(|tx| devices::vif_devices(tx, vm))?;
        devices::unplug(&uuid, &devices);
        db.write(|tx| {
            ops::set_power_state(tx, vm, "Halted")?;
            tx.set("VM", vm, "resident_on", s("OpaqueRef:NULL"))?;
            tx.set("VM", vm, "domid", Value::Int(-1))?;
            let taps: Vec<String> = devices::vif_devices(tx, vm)?
                .iter()
                .map(|d| devices::tap_name(&uuid, d))
                .collect();
            self.inner.firewall.stop(&taps);
            Ok(())
        })?;
        // Chains that waited for this VM's disks to be free can be shortened now.
        let sr_dirs = db.read(|tx| {
            let mut dirs = Vec::new();
            for vdi in clone::disks(tx, vm)? {
                let sr = get_str(tx, "VDI", &vdi, "SR")?;
                if let Ok(dir) = sr_path(tx, &sr) {
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
            Ok(dirs)
        })?;
        for dir in sr_dirs {
            crate::storage::coalesce_in_background(api.clone(), dir);
        }
        if restart {
            if let Err(e) = self.launch(vm, false) {
                self.alert(db, &uuid, "VM_RESTART_FAILED", 2, &format!("{e:?}"));
                return Err(e);
            }
        }
        Ok(())
    }

    /// A killed fv-vmm could not write the qcow2 metadata imago caches, and imago writes
    /// a new L2 table's L1 entry before the refcount that allocates it (docs/vmm.md,
    /// "Disks at exit"): such an image may point at clusters its refcounts call free, which
    /// a later write would reuse. `qemu-img check -r all` (Debian qemu-utils) sets each of
    /// the VM's writable qcow2 images right; one it cannot mend is reported in a message.
    fn repair_disks_after_kill(
        &self,
        db: &fv_xapi::db::Db,
        vm: &str,
        uuid: &str,
    ) -> Result<(), ApiError> {
        let images = db.read(|tx| {
            let mut images = Vec::new();
            for vbd in crate::fields::refs(tx, "VM", vm, "VBDs")? {
                let vdi = get_str(tx, "VBD", &vbd, "VDI")?;
                if get_str(tx, "VBD", &vbd, "mode")? != "RW" || !tx.exists("VDI", &vdi)? {
                    continue;
                }
                // A sharable disk another VM still runs on is not this VM's to mend.
                let mut in_use = false;
                for other in crate::fields::refs(tx, "VDI", &vdi, "VBDs")? {
                    let other_vm = get_str(tx, "VBD", &other, "VM")?;
                    if other_vm != vm
                        && tx.exists("VM", &other_vm)?
                        && get_str(tx, "VM", &other_vm, "power_state")? != "Halted"
                    {
                        in_use = true;
                    }
                }
                let (path, format) = crate::storage::vdi_image(tx, &vdi)?;
                if format == "qcow2" && !in_use {
                    images.push(path);
                }
            }
            Ok(images)
        })?;
        for path in images {
            let repaired = std::process::Command::new("qemu-img")
                .args(["check", "-r", "all", "-f", "qcow2"])
                .arg(&path)
                .output();
            let why = match repaired {
                Ok(out) if out.status.success() => {
                    tracing::info!(
                        "VM {vm}: {} checked after fv-vmm was killed: {}",
                        path.display(),
                        String::from_utf8_lossy(&out.stdout).trim()
                    );
                    continue;
                }
                Ok(out) => format!(
                    "qemu-img check -r all could not mend it: {} {}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => format!("qemu-img (Debian qemu-utils) could not run: {e}"),
            };
            let body = format!(
                "{} may be damaged (fv-vmm was killed); {why}",
                path.display()
            );
            self.alert(db, uuid, "VDI_NOT_REPAIRED", 2, &body);
        }
        Ok(())
    }

    /// A `message` record for the administrator.
    fn alert(&self, db: &fv_xapi::db::Db, uuid: &str, name: &str, priority: i64, body: &str) {
        let result = db.write(|tx| {
            tx.create(
                "message",
                BTreeMap::from([
                    ("name".into(), s(name)),
                    ("priority".into(), Value::Int(priority)),
                    ("cls".into(), s("VM")),
                    ("obj_uuid".into(), s(uuid)),
                    ("timestamp".into(), Value::DateTime(fv_xapi::time::now())),
                    ("body".into(), s(body)),
                ]),
            )
        });
        if let Err(e) = result {
            tracing::error!("cannot record message {name} for VM {uuid}: {e:?}");
        }
    }

    // ---- commands to a running VM ----

    /// The running instance, or `VM_BAD_POWER_STATE` when the database and the process
    /// disagree (the VMM ended a moment ago).
    fn instance(&self, vm: &str) -> Result<Arc<Running>, ApiError> {
        self.running(vm)
            .ok_or_else(|| ApiError::new(&codes::VM_BAD_POWER_STATE, [vm, "running", "halted"]))
    }

    fn vmm_call(
        &self,
        running: &Running,
        f: impl FnOnce(&Vmm) -> Result<(), fv_vmmctl::Error>,
    ) -> Result<(), ApiError> {
        f(&lock(&running.vmm)).map_err(|e| internal(format!("VM {}: {e}", running.vm)))
    }

    fn pause(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        self.with_op(
            ctx,
            vm,
            "pause",
            |tx| require_state(tx, vm, &["Running"]).map(drop),
            || {
                let r = self.instance(vm)?;
                self.vmm_call(&r, Vmm::pause)?;
                self.api()?
                    .db()
                    .write(|tx| ops::set_power_state(tx, vm, "Paused"))
            },
        )
    }

    fn unpause(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        self.with_op(
            ctx,
            vm,
            "unpause",
            |tx| require_state(tx, vm, &["Paused"]).map(drop),
            || {
                let r = self.instance(vm)?;
                self.vmm_call(&r, Vmm::resume)?;
                self.api()?
                    .db()
                    .write(|tx| ops::set_power_state(tx, vm, "Running"))
            },
        )
    }

    /// Presses the power button and waits up to `timeout` for the VM to move on.
    /// The wait can be cancelled through the call's task (`task.cancel`).
    fn clean_stop(
        &self,
        ctx: &CallContext,
        vm: &str,
        intent: Intent,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let Some(r) = self.running(vm) else {
            // A hard operation that pre-empted this one has already ended the VMM: what
            // was asked for is done.
            return Ok(());
        };
        r.set_intent(intent);
        if let Err(e) = self.vmm_call(&r, Vmm::power_button) {
            // A VMM that a hard operation is stopping may drop the request: then it ends.
            return if r.wait_ended(Duration::from_secs(2)) {
                Ok(())
            } else {
                Err(e)
            };
        }
        let deadline = Instant::now() + timeout;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            if r.wait_ended(slice) {
                return Ok(());
            }
            let cancel = match &ctx.task {
                Some(t) => fv_xapi::task::cancel_requested(self.api()?.db(), t)?,
                None => false,
            };
            // The guest did not listen (in time, or before the caller gave up): what it
            // does later is its own business again.
            if cancel || Instant::now() >= deadline {
                r.set_intent(Intent::Guest);
                return Err(match (cancel, &ctx.task) {
                    (true, Some(t)) => ApiError::new(&codes::TASK_CANCELLED, [t.as_str()]),
                    _ => ApiError::new(
                        &codes::VM_SHUTDOWN_TIMEOUT,
                        [vm.to_owned(), timeout.as_secs().to_string()],
                    ),
                });
            }
        }
    }

    /// Stops the VMM at once (killing it if it does not answer) and waits for the end.
    fn hard_stop(&self, vm: &str, intent: Intent) -> Result<(), ApiError> {
        let Some(r) = self.running(vm) else {
            // Ended meanwhile: it is halted, or being restarted by its own end.
            return Ok(());
        };
        r.set_intent(intent);
        if self.vmm_call(&r, Vmm::stop).is_err() || !r.wait_ended(HARD_STOP_TIMEOUT) {
            self.vmm_call(&r, Vmm::kill)?;
            if !r.wait_ended(HARD_STOP_TIMEOUT) {
                return Err(internal(format!(
                    "VM {vm}: fv-vmm did not end after SIGKILL"
                )));
            }
        }
        Ok(())
    }

    fn clean_shutdown(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        let timeout = self.inner.clean_shutdown_timeout;
        self.with_op(
            ctx,
            vm,
            "clean_shutdown",
            |tx| require_state(tx, vm, &["Running"]).map(drop),
            || self.clean_stop(ctx, vm, Intent::Halt, timeout),
        )
    }

    fn clean_reboot(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        let timeout = self.inner.clean_shutdown_timeout;
        self.with_op(
            ctx,
            vm,
            "clean_reboot",
            |tx| require_state(tx, vm, &["Running"]).map(drop),
            || self.clean_stop(ctx, vm, Intent::Reboot, timeout),
        )
    }

    /// XAPI's `VM.shutdown`: clean first, hard when the guest does not answer in time.
    fn shutdown(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        let grace = SHUTDOWN_GRACE.min(self.inner.clean_shutdown_timeout);
        let state = self
            .api()?
            .db()
            .read(|tx| require_state(tx, vm, &["Running", "Paused"]))?;
        if state == "Running" {
            match self.with_op(
                ctx,
                vm,
                "clean_shutdown",
                |_| Ok(()),
                || self.clean_stop(ctx, vm, Intent::Halt, grace),
            ) {
                Ok(()) => return Ok(()),
                Err(e) if e.code == codes::VM_SHUTDOWN_TIMEOUT.name => {}
                Err(e) => return Err(e),
            }
        }
        self.hard_shutdown(ctx, vm)
    }

    fn hard_shutdown(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        self.with_op(
            ctx,
            vm,
            "hard_shutdown",
            |tx| require_state(tx, vm, &["Running", "Paused"]).map(drop),
            || self.hard_stop(vm, Intent::Halt),
        )
    }

    fn hard_reboot(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        self.with_op(
            ctx,
            vm,
            "hard_reboot",
            |tx| require_state(tx, vm, &["Running", "Paused"]).map(drop),
            || self.hard_stop(vm, Intent::Reboot),
        )
    }

    /// Marks the VM halted. If its VMM still runs, it is stopped first: the database
    /// must not say halted while a guest runs.
    fn power_state_reset(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        self.with_op(
            ctx,
            vm,
            "power_state_reset",
            |_| Ok(()),
            || {
                self.hard_stop(vm, Intent::Halt)?;
                self.api()?.db().write(|tx| {
                    ops::set_power_state(tx, vm, "Halted")?;
                    tx.set("VM", vm, "resident_on", s("OpaqueRef:NULL"))?;
                    tx.set("VM", vm, "domid", Value::Int(-1))
                })
            },
        )
    }

    /// Removes a halted VM with its VBDs, VIFs, consoles and metrics (not its VDIs).
    fn destroy(&self, ctx: &CallContext, vm: &str) -> Result<(), ApiError> {
        let db = self.api()?.db();
        let key = ctx.task.clone().unwrap_or_else(new_ref);
        db.write(|tx| {
            require_state(tx, vm, &["Halted"])?;
            ops::begin(tx, vm, &key, "destroy")?;
            for (class, field) in [("VBD", "VBDs"), ("VIF", "VIFs"), ("console", "consoles")] {
                if let Value::Array(refs) = tx.get("VM", vm, field)? {
                    for r in refs.iter().filter_map(Value::as_str) {
                        tx.destroy(class, r)?;
                    }
                }
            }
            let metrics = get_str(tx, "VM", vm, "metrics")?;
            tx.destroy("VM", vm)?;
            if tx.exists("VM_metrics", &metrics)? {
                tx.destroy("VM_metrics", &metrics)?;
            }
            Ok(())
        })
    }

    // ---- disks ----

    /// The VDI messages, on file SRs through fv-sr (`crate::storage`).
    fn vdi_call(
        &self,
        ctx: &CallContext,
        msg: &'static Message,
        args: &[Value],
    ) -> Result<Value, ApiError> {
        use crate::storage;
        let db = self.api()?.db();
        let vdi = arg_ref(args, 0);
        match msg.name {
            "create" => {
                let record = args.first().cloned().unwrap_or_else(Value::void);
                db.write(|tx| storage::vdi_create(tx, &record))
                    .map(Value::String)
            }
            "destroy" => storage::vdi_destroy(self.api()?, &vdi).map(|()| Value::void()),
            "snapshot" | "clone" => self
                .with_disks_held(std::slice::from_ref(&vdi), || {
                    db.write(|tx| storage::vdi_fork(tx, &vdi, msg.name == "snapshot"))
                })
                .map(Value::String),
            "copy" => storage::vdi_copy(db, &vdi, &arg_ref(args, 1), ctx.task.as_deref())
                .map(Value::String),
            "resize" => {
                let size = args.get(1).and_then(Value::as_int).unwrap_or(-1);
                self.with_disks_held(std::slice::from_ref(&vdi), || {
                    db.write(|tx| storage::vdi_resize(tx, &vdi, size))
                })
                .map(|()| Value::void())
            }
            _ => Err(ApiError::new(
                &codes::NOT_IMPLEMENTED,
                [format!("VDI.{}: not in this version", msg.name)],
            )),
        }
    }

    /// `VM.clone` (disks cloned copy-on-write) or `VM.copy` (disks copied in full, into
    /// `to_sr` or each disk's own SR).
    fn copy_vm(
        &self,
        ctx: &CallContext,
        vm: &str,
        new_name: &str,
        full: bool,
        to_sr: Option<&str>,
    ) -> Result<Value, ApiError> {
        use crate::storage;
        let db = self.api()?.db();
        let disks = db.read(|tx| clone::disks(tx, vm))?;
        if !full {
            return db
                .write(|tx| {
                    let mut map = std::collections::HashMap::new();
                    for vdi in &disks {
                        storage::require_unattached(tx, vdi, "clone")?;
                        map.insert(vdi.clone(), storage::vdi_fork(tx, vdi, false)?);
                    }
                    clone::copy_vm(tx, vm, new_name, &map)
                })
                .map(Value::String);
        }
        let mut map = std::collections::HashMap::new();
        for vdi in &disks {
            let sr = match to_sr {
                Some(sr) => sr.to_owned(),
                None => db.read(|tx| get_str(tx, "VDI", vdi, "SR"))?,
            };
            match storage::vdi_copy(db, vdi, &sr, ctx.task.as_deref()) {
                Ok(new) => {
                    map.insert(vdi.clone(), new);
                }
                Err(e) => {
                    // Leave nothing half-made behind.
                    for new in map.values() {
                        let _ = storage::vdi_destroy(self.api()?, new);
                    }
                    return Err(e);
                }
            }
        }
        db.write(|tx| clone::copy_vm(tx, vm, new_name, &map))
            .map(Value::String)
    }

    /// Runs `change`, which replaces or grows the files of `vdis`, with each of those disks
    /// that a running or paused VM has open held in its fv-vmm: flushed and its requests
    /// waiting before, reopened after (the guest then sees a new size), or resumed on the
    /// same file if `change` failed (fv-sr leaves the files as they were then). The guest
    /// sees a slow disk for the moment, never an error.
    fn with_disks_held<T>(
        &self,
        vdis: &[String],
        change: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let db = self.api()?.db();
        let users = db.read(|tx| {
            let mut users = Vec::new();
            for vdi in vdis {
                for vbd in crate::fields::refs(tx, "VDI", vdi, "VBDs")? {
                    let vm = get_str(tx, "VBD", &vbd, "VM")?;
                    let state = get_str(tx, "VM", &vm, "power_state")?;
                    if state == "Running" || state == "Paused" {
                        users.push((vm, devices::vdi_path(tx, vdi)?));
                    }
                }
            }
            Ok(users)
        })?;
        let mut held = Vec::new();
        let release = |held: &[(Arc<Running>, String)], reopen: bool| {
            let verb = if reopen { "reopen" } else { "resume" };
            let mut failed = None;
            for (r, id) in held {
                let path = format!("/vm/disks/{id}/{verb}");
                if let Err(e) = lock(&r.vmm).request("PUT", &path, None) {
                    tracing::error!("VM {}: disk {id} stays paused: {e}", r.vm);
                    failed.get_or_insert(internal(format!(
                        "VM {}: the disk {id} could not be reopened and stays paused: {e}",
                        r.vm
                    )));
                }
            }
            failed.map_or(Ok(()), Err)
        };
        for (vm, path) in users {
            let hold = || -> Result<(Arc<Running>, String), ApiError> {
                let r = self.instance(&vm)?;
                let id = r.disk_id(&path)?.ok_or_else(|| {
                    internal(format!("VM {vm} has no disk open on {}", path.display()))
                })?;
                lock(&r.vmm)
                    .request("PUT", &format!("/vm/disks/{id}/pause"), None)
                    .map_err(|e| internal(format!("VM {vm}: pausing disk {id}: {e}")))?;
                Ok((r, id))
            };
            match hold() {
                Ok(h) => held.push(h),
                Err(e) => {
                    release(&held, false)?;
                    return Err(e);
                }
            }
        }
        match change() {
            Ok(v) => release(&held, true).map(|()| v),
            Err(e) => {
                release(&held, false)?;
                Err(e)
            }
        }
    }

    /// `VM.snapshot`: a snapshot VM (a template, as XAPI makes them) whose disks are
    /// snapshots of the VM's disks. A running VM's disks are all held for the moment the
    /// snapshot takes, so they are consistent with each other (crash-consistent, as a disk
    /// snapshot of a running VM is in XAPI).
    fn snapshot(&self, vm: &str, new_name: &str) -> Result<Value, ApiError> {
        let db = self.api()?.db();
        let disks = db.read(|tx| clone::disks(tx, vm))?;
        self.with_disks_held(&disks, || self.snapshot_now(vm, new_name))
    }

    fn snapshot_now(&self, vm: &str, new_name: &str) -> Result<Value, ApiError> {
        let db = self.api()?.db();
        db.write(|tx| {
            let mut map = std::collections::HashMap::new();
            for vdi in clone::disks(tx, vm)? {
                let snap = crate::storage::vdi_fork(tx, &vdi, true)?;
                map.insert(vdi, snap);
            }
            let snap = clone::copy_vm(tx, vm, new_name, &map)?;
            tx.set("VM", &snap, "is_a_snapshot", Value::Bool(true))?;
            tx.set("VM", &snap, "is_a_template", Value::Bool(true))?;
            tx.set("VM", &snap, "snapshot_of", s(vm))?;
            tx.set(
                "VM",
                &snap,
                "snapshot_time",
                Value::DateTime(fv_xapi::time::now()),
            )?;
            tx.set("VM", &snap, "parent", s("OpaqueRef:NULL"))?;
            ops::refresh(tx, &snap)?;
            Ok(Value::String(snap))
        })
    }

    /// `VM.revert`: each of the VM's disks is replaced by a clone of the snapshot's disk on
    /// the same device (the replaced disks are destroyed), and its settings are the
    /// snapshot's again.
    fn revert(&self, vm: &str, snapshot: &str) -> Result<(), ApiError> {
        let db = self.api()?.db();
        let replaced = db.write(|tx| clone::revert(tx, vm, snapshot))?;
        for vdi in replaced {
            if let Err(e) = crate::storage::vdi_destroy(self.api()?, &vdi) {
                tracing::warn!("VM {vm}: the disk {vdi} the revert replaced stays: {e:?}");
            }
        }
        Ok(())
    }

    /// `VBD.insert` (`vdi` given) or `VBD.eject` on a CD drive. On a running or paused VM
    /// fv-vmm reopens the drive on the ISO, or on the drive's empty file (see
    /// `devices::disks`); the guest sees the medium's size change.
    fn change_media(&self, vbd: &str, vdi: Option<&str>) -> Result<(), ApiError> {
        let db = self.api()?.db();
        let media_dir = self.media_dir();
        let (vm, state, from, to) = db.read(|tx| {
            devices::check_media_change(tx, vbd, vdi)?;
            let vm = get_str(tx, "VBD", vbd, "VM")?;
            let state = get_str(tx, "VM", &vm, "power_state")?;
            let from = devices::media_path(tx, vbd, &media_dir)?;
            let to = match vdi {
                Some(vdi) => crate::storage::vdi_image(tx, vdi)?,
                None => (devices::empty_media(tx, vbd, &media_dir)?, "raw".to_owned()),
            };
            Ok((vm, state, from, to))
        })?;
        if state == "Running" || state == "Paused" {
            let r = self.instance(&vm)?;
            let id = r.disk_id(&from)?.ok_or_else(|| {
                ApiError::new(
                    &codes::OPERATION_NOT_ALLOWED,
                    [format!(
                        "VM {vm} has no drive for VBD {vbd} (it was made after the VM \
                             started): restart the VM"
                    )],
                )
            })?;
            let body = serde_json::json!({ "path": to.0, "format": to.1 });
            lock(&r.vmm)
                .request("PUT", &format!("/vm/disks/{id}/reopen"), Some(&body))
                .map_err(|e| internal(format!("VM {vm}: changing the medium of {id}: {e}")))?;
        } else if state != "Halted" {
            return Err(ApiError::new(
                &codes::VM_BAD_POWER_STATE,
                [vm.as_str(), "halted", &state.to_lowercase()],
            ));
        }
        db.write(|tx| devices::set_media(tx, vbd, vdi))
    }

    /// Where empty CD drives' files live: DATA_DIR/media.
    fn media_dir(&self) -> PathBuf {
        self.inner
            .run_root
            .parent()
            .map_or_else(|| self.inner.run_root.join("media"), |d| d.join("media"))
    }

    /// Where the SRs fvd makes without a `device_config:path` live: DATA_DIR/sr.
    fn sr_root(&self) -> PathBuf {
        self.inner
            .run_root
            .parent()
            .map_or_else(|| self.inner.run_root.join("sr"), |d| d.join("sr"))
    }

    /// The SR and PBD messages for file SRs.
    fn sr_call(
        &self,
        class: &'static Class,
        msg: &'static Message,
        args: &[Value],
    ) -> Result<Value, ApiError> {
        use crate::storage;
        let db = self.api()?.db();
        let first = arg_ref(args, 0);
        let text = |i: usize| {
            args.get(i)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let root = self.sr_root();
        let void = |r: Result<(), ApiError>| r.map(|()| Value::void());
        match (class.name, msg.name) {
            ("SR", "create") => {
                let config = args.get(1).cloned().unwrap_or_else(Value::void);
                db.write(|tx| {
                    let sr = storage::sr_create(
                        tx,
                        &first,
                        &config,
                        &text(3),
                        &text(4),
                        &text(5),
                        &text(6),
                        &root,
                    )?;
                    tx.set("SR", &sr, "shared", Value::Bool(arg_bool(args, 7)))?;
                    Ok(sr)
                })
                .map(Value::String)
            }
            ("SR", "destroy") => void(db.write(|tx| storage::sr_remove(tx, &first, true, &root))),
            ("SR", "forget") => void(db.write(|tx| storage::sr_remove(tx, &first, false, &root))),
            ("SR", "scan") => void(db.write(|tx| storage::sr_scan(tx, &first))),
            ("SR", "introduce") => db
                .write(|tx| {
                    let sr =
                        storage::sr_introduce(tx, &first, &text(1), &text(2), &text(3), &text(4))?;
                    tx.set("SR", &sr, "shared", Value::Bool(arg_bool(args, 5)))?;
                    Ok(sr)
                })
                .map(Value::String),
            ("SR", "probe") => {
                let config = args.get(1).cloned().unwrap_or_else(Value::void);
                storage::sr_probe(&config, &text(2)).map(Value::String)
            }
            ("PBD", "plug") => void(db.write(|tx| storage::pbd_plug(tx, &first, true))),
            ("PBD", "unplug") => void(db.write(|tx| storage::pbd_plug(tx, &first, false))),
            _ => Err(not_implemented(class, msg, "not in this version")),
        }
    }

    /// The PIF and VLAN messages.
    fn network_call(
        &self,
        class: &'static Class,
        msg: &'static Message,
        args: &[Value],
    ) -> Result<Value, ApiError> {
        use crate::network;
        let db = self.api()?.db();
        let first = arg_ref(args, 0);
        let text = |i: usize| {
            args.get(i)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let void = |r: Result<(), ApiError>| r.map(|()| Value::void());
        match (class.name, msg.name) {
            ("PIF", "introduce") => db
                .write(|tx| {
                    network::pif_introduce(tx, &first, &text(1), &text(2), arg_bool(args, 3))
                })
                .map(Value::String),
            ("PIF", "forget") => void(db.write(|tx| network::pif_forget(tx, &first))),
            ("PIF", "plug") => void(db.write(|tx| network::pif_plug(tx, &first, true))),
            ("PIF", "unplug") => void(db.write(|tx| network::pif_plug(tx, &first, false))),
            ("VLAN", "create") => {
                let tag = args.get(1).and_then(Value::as_int).unwrap_or(-1);
                let net = arg_ref(args, 2);
                db.write(|tx| network::vlan_create(tx, &first, tag, &net))
                    .map(Value::String)
            }
            ("VLAN", "destroy") => void(db.write(|tx| network::vlan_destroy(tx, &first))),
            _ => Err(not_implemented(class, msg, "not in this version")),
        }
    }

    // ---- devices of running VMs ----

    /// `VIF.plug`/`unplug`, `VBD.plug`/`unplug` on a running VM (a halted VM's devices
    /// join it when it starts). `VIF.plug` hot-plugs the NIC (fv-vmm's ACPI PCI hot-plug);
    /// the rest is not supported yet, and the error says what to do instead.
    fn hotplug(&self, class: &str, op: &str, device: &str) -> Result<Value, ApiError> {
        let (vm, state) = self.api()?.db().read(|tx| {
            let vm = get_str(tx, class, device, "VM")?;
            let state = get_str(tx, "VM", &vm, "power_state")?;
            Ok((vm, state))
        })?;
        if state != "Running" && state != "Paused" {
            return Err(ApiError::new(
                &codes::VM_BAD_POWER_STATE,
                [vm.as_str(), "running", &state.to_lowercase()],
            ));
        }
        match (class, op) {
            ("VIF", "plug") => self.plug_vif(&vm, device).map(|()| Value::void()),
            ("VIF", "unplug" | "unplug_force") => {
                self.unplug_vif(&vm, device).map(|()| Value::void())
            }
            _ => Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                [format!(
                    "{class}.{op} on a running VM is not supported yet (VIFs are): \
                     shut VM {vm} down, change its devices, and start it again"
                )],
            )),
        }
    }

    /// Hot-unplugs VIF `vif` from running VM `vm`: fv-vmm asks the guest to let go of the
    /// NIC (an ACPI eject request), fvd waits until it has, then removes the tap. A guest
    /// that does not answer within `UNPLUG_TIMEOUT` keeps the NIC: `DEVICE_DETACH_REJECTED`
    /// (it may still let go later; the tap goes when the VM halts).
    fn unplug_vif(&self, vm: &str, vif: &str) -> Result<(), ApiError> {
        let tap = self.api()?.db().read(|tx| {
            let uuid = get_str(tx, "VM", vm, "uuid")?;
            Ok(devices::tap_name(
                &uuid,
                &get_str(tx, "VIF", vif, "device")?,
            ))
        })?;
        let r = self.instance(vm)?;
        let nic_id = |r: &Running| -> Result<Option<(String, bool)>, ApiError> {
            Ok(r.devices()?
                .iter()
                .find(|d| d["tap"].as_str() == Some(tap.as_str()))
                .map(|d| {
                    let id = d["id"].as_str().unwrap_or_default().to_owned();
                    (id, d["removing"] == serde_json::Value::Bool(true))
                }))
        };
        let Some((id, removing)) = nic_id(&r)? else {
            return Err(ApiError::new(&codes::DEVICE_ALREADY_DETACHED, [vif]));
        };
        if !removing {
            lock(&r.vmm)
                .request("PUT", &format!("/vm/nets/{id}/remove"), None)
                .map_err(|e| internal(format!("VM {vm}: unplugging VIF {vif}: {e}")))?;
        }
        let deadline = Instant::now() + UNPLUG_TIMEOUT;
        while nic_id(&r)?.is_some() {
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    &codes::DEVICE_DETACH_REJECTED,
                    [
                        "VIF",
                        vif,
                        "the guest did not let go of the NIC (is it still booting, or without \
                         ACPI hot-plug support?)",
                    ],
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        devices::unplug_taps(std::slice::from_ref(&tap));
        self.inner.firewall.stop(std::slice::from_ref(&tap));
        self.api()?
            .db()
            .write(|tx| tx.set("VIF", vif, "currently_attached", Value::Bool(false)))
    }

    /// Hot-plugs VIF `vif` into running VM `vm`: its tap is made and put on its network's
    /// bridge, then fv-vmm adds the NIC and tells the guest.
    fn plug_vif(&self, vm: &str, vif: &str) -> Result<(), ApiError> {
        let nic = self.api()?.db().read(|tx| {
            let uuid = get_str(tx, "VM", vm, "uuid")?;
            let tap = devices::tap_name(&uuid, &get_str(tx, "VIF", vif, "device")?);
            devices::nics(tx, vm)?
                .into_iter()
                .find(|n| n.tap == tap)
                .ok_or_else(|| ApiError::internal(format!("VIF {vif} has no NIC")))
        })?;
        let r = self.instance(vm)?;
        let attached = r
            .devices()?
            .iter()
            .any(|d| d["tap"].as_str() == Some(nic.tap.as_str()));
        if attached {
            return Err(ApiError::new(&codes::DEVICE_ALREADY_ATTACHED, [vif]));
        }
        let db = self.api()?.db();
        // Its chain goes in before its tap exists, as at start: no frame passes unfiltered.
        db.write(|tx| self.inner.firewall.start(&[vif_lock(tx, vif)?]))?;
        let taps = std::slice::from_ref(&nic.tap);
        let undo = || {
            devices::unplug_taps(taps);
            self.inner.firewall.stop(taps);
        };
        let net = devices::plug(std::slice::from_ref(&nic)).inspect_err(|_| undo())?;
        let added = lock(&r.vmm).request("PUT", "/vm/nets", net.first());
        if let Err(e) = added {
            undo();
            return Err(internal(format!("VM {vm}: plugging VIF {vif}: {e}")));
        }
        db.write(|tx| tx.set("VIF", vif, "currently_attached", Value::Bool(true)))
    }

    // ---- settings ----

    /// The device numbers (`userdevice`) not yet taken by the VM's VBDs or VIFs.
    fn free_devices(&self, vm: &str, vbds: bool) -> Result<Value, ApiError> {
        let (class, field, count) = if vbds {
            ("VBD", "VBDs", 16)
        } else {
            ("VIF", "VIFs", 7)
        };
        let key = if vbds { "userdevice" } else { "device" };
        let taken: Vec<String> = self.api()?.db().read(|tx| {
            let mut out = Vec::new();
            if let Value::Array(refs) = tx.get("VM", vm, field)? {
                for r in refs.iter().filter_map(Value::as_str) {
                    out.push(get_str(tx, class, r, key)?);
                }
            }
            Ok(out)
        })?;
        Ok(Value::Array(
            (0..count)
                .map(|i| i.to_string())
                .filter(|d| !taken.contains(d))
                .map(Value::String)
                .collect(),
        ))
    }

    /// Sets `fields` of `vm` together, after `check` on the record as it would become.
    fn set_fields(
        &self,
        vm: &str,
        halted_only: bool,
        fields: Vec<(&str, Value)>,
    ) -> Result<(), ApiError> {
        self.api()?.db().write(|tx| {
            if halted_only {
                require_state(tx, vm, &["Halted"])?;
            }
            for (f, v) in &fields {
                tx.set("VM", vm, f, v.clone())?;
            }
            check_limits(tx, vm)
        })
    }

    fn setting(&self, msg: &str, vm: &str, args: &[Value]) -> Option<Result<(), ApiError>> {
        let int = |i: usize| Value::Int(args.get(i).and_then(Value::as_int).unwrap_or(-1));
        let arg = |i: usize| args.get(i).cloned().unwrap_or_else(Value::void);
        Some(match msg {
            "set_VCPUs_max" => self.set_fields(vm, true, vec![("VCPUs_max", int(1))]),
            "set_VCPUs_at_startup" => self.set_fields(vm, true, vec![("VCPUs_at_startup", int(1))]),
            "set_memory_static_max" => {
                self.set_fields(vm, true, vec![("memory_static_max", int(1))])
            }
            "set_memory_dynamic_range" => self.set_fields(
                vm,
                false,
                vec![
                    ("memory_dynamic_min", int(1)),
                    ("memory_dynamic_max", int(2)),
                ],
            ),
            "set_memory_limits" => self.set_fields(
                vm,
                true,
                vec![
                    ("memory_static_min", int(1)),
                    ("memory_static_max", int(2)),
                    ("memory_dynamic_min", int(3)),
                    ("memory_dynamic_max", int(4)),
                ],
            ),
            "set_memory" => self.set_fields(
                vm,
                true,
                vec![
                    ("memory_static_max", int(1)),
                    ("memory_dynamic_min", int(1)),
                    ("memory_dynamic_max", int(1)),
                    ("memory_target", int(1)),
                ],
            ),
            "set_actions_after_crash" => {
                self.set_fields(vm, false, vec![("actions_after_crash", arg(1))])
            }
            "set_HVM_boot_policy" => self.set_fields(vm, false, vec![("HVM_boot_policy", arg(1))]),
            "set_domain_type" => self.set_fields(vm, false, vec![("domain_type", arg(1))]),
            _ => return None,
        })
    }

    // ---- after a restart of the daemon ----

    /// Makes the database agree with the fv-vmm processes after a restart of the daemon:
    /// VMs whose VMM runs are adopted (also a VM recorded halted whose start was cut
    /// short after fv-vmm began), VMs whose VMM ended meanwhile move on as their
    /// `actions_after_*` say. Operations and tasks no daemon carries on are cleared.
    /// Reopens every disk a running VM's fv-vmm holds: a previous fvd stopped between
    /// holding a disk and reopening it (`with_disks_held`). The VDI's path is what the
    /// guest must write now, whether the snapshot or resize was finished (by fv-sr's
    /// recovery, run before this) or undone; resuming on the open file could write into a
    /// snapshot's frozen data.
    pub fn reopen_held_disks(&self) {
        let running: Vec<Arc<Running>> = lock(&self.inner.running).values().cloned().collect();
        for r in running {
            let devices = match r.devices() {
                Ok(devices) => devices,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            let held = devices
                .iter()
                .filter(|d| d["paused"] == serde_json::Value::Bool(true))
                .filter_map(|d| d["id"].as_str().map(str::to_owned));
            for id in held {
                let path = format!("/vm/disks/{id}/reopen");
                match lock(&r.vmm).request("PUT", &path, None) {
                    Ok(_) => tracing::info!("VM {}: disk {id}, left held, reopened", r.vm),
                    Err(e) => tracing::error!("VM {}: disk {id} stays held: {e}", r.vm),
                }
            }
        }
    }

    pub fn reconcile(&self) -> Result<(), ApiError> {
        let db = self.api()?.db();
        db.write(ops::clear_all)?;
        let interrupted = ApiError::internal("fvd restarted while the task ran");
        for t in db.read(|tx| tx.refs("task"))? {
            if fv_xapi::task::status(db, &t)? == fv_xapi::task::Status::Pending {
                fv_xapi::task::fail(db, &t, &interrupted)?;
            }
        }
        let vms = db.read(|tx| {
            let mut out = Vec::new();
            for vm in tx.refs("VM")? {
                let state = get_str(tx, "VM", &vm, "power_state")?;
                out.push((vm.clone(), get_str(tx, "VM", &vm, "uuid")?, state));
            }
            Ok(out)
        })?;
        for (vm, uuid, recorded) in vms {
            let dir = self.run_dir(&uuid);
            match Vmm::adopt(dir.clone()) {
                Ok(Some(mut vmm)) => {
                    let state = match settled_state(&mut vmm) {
                        Ok(state) => state,
                        // It was ending (a stop the last daemon sent) and has now ended.
                        Err(exit) => {
                            tracing::info!("VM {uuid}: its fv-vmm ended as fvd came: {exit:?}");
                            if let Err(e) = self.after_exit(&vm, Intent::Guest, &exit) {
                                tracing::error!("VM {uuid}: {e:?}");
                            }
                            continue;
                        }
                    };
                    let pid = vmm.pid();
                    let host = self.inner.host.get().cloned().unwrap_or_default();
                    db.write(|tx| {
                        ops::set_power_state(tx, &vm, state)?;
                        tx.set("VM", &vm, "domid", Value::Int(i64::from(pid)))?;
                        tx.set("VM", &vm, "resident_on", s(&host))
                    })?;
                    tracing::info!("VM {uuid}: adopted fv-vmm {pid} ({state})");
                    self.watch(&vm, vmm);
                }
                Ok(None) if recorded == "Running" || recorded == "Paused" => {
                    let exit = dir.last_exit();
                    tracing::info!("VM {uuid}: ended while fvd was away: {exit:?}");
                    if let Err(e) = self.after_exit(&vm, Intent::Guest, &exit) {
                        tracing::error!("VM {uuid}: {e:?}");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!("VM {uuid}: cannot adopt its fv-vmm: {e}"),
            }
        }
        // The VIF chains as the database says, whatever the table held before.
        let rebuilt = db.write(|tx| {
            let mut all = Vec::new();
            for vm in tx.refs("VM")? {
                if matches!(
                    get_str(tx, "VM", &vm, "power_state")?.as_str(),
                    "Running" | "Paused"
                ) {
                    all.extend(vif_locks_or_disabled(tx, &vm)?);
                }
            }
            self.inner.firewall.rebuild(&all)
        });
        if let Err(e) = rebuilt {
            tracing::error!("VIF locking: cannot restore the nftables table: {e:?}");
        }
        Ok(())
    }

    // ---- VIF locking ----

    /// `VIF.set_locking_mode`, `set_/add_/remove_ipv4_allowed` and their IPv6 twins: the
    /// record changes and, if the VIF's VM runs, its chain with it, in one transaction.
    fn vif_locking(&self, msg: &str, vif: &str, args: &[Value]) -> Result<(), ApiError> {
        let value = args.get(1).cloned().unwrap_or_else(Value::void);
        self.api()?.db().write(|tx| {
            if msg == "set_locking_mode" {
                tx.set("VIF", vif, "locking_mode", value.clone())?;
            } else {
                let (verb, field) = msg.split_once('_').unwrap_or_default();
                let canonical = |a: &str| -> Result<String, ApiError> {
                    Ok(if field == "ipv4_allowed" {
                        locking::ipv4(a)?.to_string()
                    } else {
                        locking::ipv6(a)?.to_string()
                    })
                };
                let mut now: Vec<String> = match tx.get("VIF", vif, field)? {
                    Value::Array(a) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                    _ => Vec::new(),
                };
                match (verb, &value) {
                    ("set", Value::Array(new)) => {
                        now.clear();
                        for a in new.iter().filter_map(Value::as_str) {
                            let a = canonical(a)?;
                            if !now.contains(&a) {
                                now.push(a);
                            }
                        }
                    }
                    ("add", Value::String(a)) => {
                        let a = canonical(a)?;
                        if !now.contains(&a) {
                            now.push(a);
                        }
                    }
                    ("remove", Value::String(a)) => {
                        let a = canonical(a).unwrap_or_else(|_| a.clone());
                        now.retain(|x| *x != a);
                    }
                    _ => return Err(ApiError::new(&codes::INVALID_VALUE, [field, "?"])),
                }
                let now = now.into_iter().map(Value::String).collect();
                tx.set("VIF", vif, field, Value::Array(now))?;
            }
            let locks = self.running_locks(tx, &[vif.to_owned()])?;
            self.inner.firewall.update(locks)
        })
    }

    /// `network.set_default_locking_mode`: the VIFs on the network that follow it change
    /// with it.
    fn set_default_locking_mode(&self, network: &str, args: &[Value]) -> Result<(), ApiError> {
        let value = args.get(1).cloned().unwrap_or_else(Value::void);
        self.api()?.db().write(|tx| {
            tx.set("network", network, "default_locking_mode", value.clone())?;
            let mut following = Vec::new();
            for vif in crate::fields::refs(tx, "network", network, "VIFs")? {
                if get_str(tx, "VIF", &vif, "locking_mode")? == "network_default" {
                    following.push(vif);
                }
            }
            let locks = self.running_locks(tx, &following)?;
            self.inner.firewall.update(locks)
        })
    }

    /// The locks of those of `vifs` whose chains are in place (their VM runs).
    fn running_locks(
        &self,
        tx: &Tx<'_>,
        vifs: &[String],
    ) -> Result<Vec<locking::VifLock>, ApiError> {
        let mut out = Vec::new();
        for vif in vifs {
            let vm = get_str(tx, "VIF", vif, "VM")?;
            let uuid = get_str(tx, "VM", &vm, "uuid")?;
            let tap = devices::tap_name(&uuid, &get_str(tx, "VIF", vif, "device")?);
            if self.inner.firewall.is_active(&tap) {
                out.push(vif_lock(tx, vif)?);
            }
        }
        Ok(out)
    }
}

/// The lock of a VIF, by its tap.
fn vif_lock(tx: &Tx<'_>, vif: &str) -> Result<locking::VifLock, ApiError> {
    let vm = get_str(tx, "VIF", vif, "VM")?;
    let uuid = get_str(tx, "VM", &vm, "uuid")?;
    Ok(locking::VifLock {
        tap: devices::tap_name(&uuid, &get_str(tx, "VIF", vif, "device")?),
        lock: locking::vif_lock(tx, vif)?,
    })
}

/// The locks of the VM's VIFs.
fn vif_locks(tx: &Tx<'_>, vm: &str) -> Result<Vec<locking::VifLock>, ApiError> {
    crate::fields::refs(tx, "VM", vm, "VIFs")?
        .iter()
        .map(|vif| vif_lock(tx, vif))
        .collect()
}

/// As [`vif_locks`], a VIF whose lock cannot be made (a locked VIF with a bad MAC) being
/// disabled rather than left open.
fn vif_locks_or_disabled(tx: &Tx<'_>, vm: &str) -> Result<Vec<locking::VifLock>, ApiError> {
    let uuid = get_str(tx, "VM", vm, "uuid")?;
    let mut out = Vec::new();
    for vif in crate::fields::refs(tx, "VM", vm, "VIFs")? {
        let tap = devices::tap_name(&uuid, &get_str(tx, "VIF", &vif, "device")?);
        let lock = locking::vif_lock(tx, &vif).unwrap_or_else(|e| {
            tracing::warn!("VIF {vif}: {e:?}; its traffic is dropped");
            locking::Lock::Disabled
        });
        out.push(locking::VifLock { tap, lock });
    }
    Ok(out)
}

/// How long an adopted fv-vmm may take to answer (it may still be building its VM, or
/// ending) before it is taken as running.
const ADOPT_SETTLE: Duration = Duration::from_secs(5);

/// The power state an adopted fv-vmm reports, once it answers; or how it ended, if it
/// ends first (it was stopping when the last daemon died).
fn settled_state(vmm: &mut Vmm) -> Result<&'static str, Exit> {
    let deadline = Instant::now() + ADOPT_SETTLE;
    loop {
        if let Ok(info) = vmm.info() {
            return Ok(if info["state"] == "Paused" {
                "Paused"
            } else {
                "Running"
            });
        }
        match vmm.wait(Some(Duration::from_millis(50))) {
            Ok(Some(exit)) => return Err(exit),
            Ok(None) | Err(_) if Instant::now() < deadline => {}
            _ => {
                tracing::warn!("fv-vmm {} does not answer; taken as running", vmm.pid());
                return Ok("Running");
            }
        }
    }
}

/// XenAPI's limits on a VM's vCPUs and memory.
fn check_limits(tx: &Tx<'_>, vm: &str) -> Result<(), ApiError> {
    let int = |f: &str| -> Result<i64, ApiError> { Ok(tx.get("VM", vm, f)?.as_int().unwrap_or(0)) };
    let (max, at_startup) = (int("VCPUs_max")?, int("VCPUs_at_startup")?);
    if !(1..=32).contains(&max) || !(1..=max).contains(&at_startup) {
        return Err(ApiError::new(
            &codes::INVALID_VALUE,
            [
                "VCPUs_at_startup".to_owned(),
                format!("{at_startup} (VCPUs_max {max}; 1 <= VCPUs_at_startup <= VCPUs_max <= 32)"),
            ],
        ));
    }
    let m = [
        int("memory_static_min")?,
        int("memory_dynamic_min")?,
        int("memory_dynamic_max")?,
        int("memory_static_max")?,
    ];
    if m[0] < 0 || m.windows(2).any(|w| w[0] > w[1]) {
        return Err(ApiError::new(
            &codes::MEMORY_CONSTRAINT_VIOLATION,
            ["0 <= static_min <= dynamic_min <= dynamic_max <= static_max"],
        ));
    }
    Ok(())
}

/// The VM's `VM_metrics` record, made if it has none.
fn metrics_of(tx: &mut Tx<'_>, vm: &str) -> Result<String, ApiError> {
    let current = get_str(tx, "VM", vm, "metrics")?;
    if tx.exists("VM_metrics", &current)? {
        return Ok(current);
    }
    let metrics = tx.create("VM_metrics", BTreeMap::new())?;
    tx.set("VM", vm, "metrics", s(&metrics))?;
    Ok(metrics)
}

fn not_implemented(class: &Class, msg: &Message, why: &str) -> ApiError {
    ApiError::new(
        &codes::NOT_IMPLEMENTED,
        [format!("{}.{}: {why}", class.name, msg.name)],
    )
}

impl Actions for Vms {
    /// Completes objects made through the generic `create`: a VM is allowed what a
    /// halted VM is; a VIF without a MAC gets one; a network without a bridge gets one.
    fn created(&self, tx: &mut Tx<'_>, class: &'static Class, r: &str) -> Result<(), ApiError> {
        match class.name {
            "VM" => {
                ops::refresh(tx, r)?;
                check_limits(tx, r)
            }
            "VIF" => {
                if get_str(tx, "VIF", r, "MAC")?.is_empty() {
                    tx.set("VIF", r, "MAC", s(&devices::random_mac()?))?;
                    tx.set("VIF", r, "MAC_autogenerated", Value::Bool(true))?;
                }
                locking::check_allowed(tx, r)
            }
            "network" => {
                crate::objects::network_created(tx, r)?;
                self.inner.dhcp.network_changed(tx, r)
            }
            _ => Ok(()),
        }
    }

    /// A managed network's DHCP server follows its `other_config`.
    fn changed(
        &self,
        tx: &mut Tx<'_>,
        class: &'static Class,
        r: &str,
        field: &'static fv_xapi::model::Field,
    ) -> Result<(), ApiError> {
        if (class.name, field.name) == ("network", "other_config") {
            self.inner.dhcp.network_changed(tx, r)?;
        }
        // A template allows only clone/copy/destroy; a VM made of one may start.
        if (class.name, field.name) == ("VM", "is_a_template") {
            ops::refresh(tx, r)?;
        }
        Ok(())
    }

    /// A VIF of a running VM stays while it is attached (its tap and chain exist):
    /// `VIF.unplug` it first. A network stays while VIFs use it (`NETWORK_CONTAINS_VIF`,
    /// as XAPI), rather than leaving them on no network.
    fn destroying(&self, tx: &mut Tx<'_>, class: &'static Class, r: &str) -> Result<(), ApiError> {
        if class.name == "network" {
            let vifs = crate::fields::refs(tx, "network", r, "VIFs")?;
            if !vifs.is_empty() {
                return Err(ApiError::new(
                    &codes::NETWORK_CONTAINS_VIF,
                    [vifs.join(",")],
                ));
            }
            self.inner.dhcp.network_destroyed(tx, r)?;
        }
        if class.name == "VIF" {
            let vm = get_str(tx, "VIF", r, "VM")?;
            let attached = matches!(tx.get("VIF", r, "currently_attached")?, Value::Bool(true));
            if tx.exists("VM", &vm)?
                && get_str(tx, "VM", &vm, "power_state")? != "Halted"
                && attached
            {
                return Err(ApiError::new(
                    &codes::OPERATION_NOT_ALLOWED,
                    [format!(
                        "the VIF is attached to running VM {vm}: unplug it (VIF.unplug) or shut the VM down first"
                    )],
                ));
            }
        }
        Ok(())
    }

    fn call(
        &self,
        ctx: &CallContext,
        class: &'static Class,
        msg: &'static Message,
        args: Vec<Value>,
    ) -> Result<Value, ApiError> {
        if class.name == "VDI" {
            return self.vdi_call(ctx, msg, &args);
        }
        if matches!(class.name, "SR" | "PBD") {
            return self.sr_call(class, msg, &args);
        }
        if matches!(class.name, "PIF" | "VLAN") {
            return self.network_call(class, msg, &args);
        }
        if matches!(class.name, "VIF" | "VBD")
            && matches!(msg.name, "plug" | "unplug" | "unplug_force")
        {
            return self.hotplug(class.name, msg.name, &arg_ref(&args, 0));
        }
        if class.name == "VBD" && matches!(msg.name, "insert" | "eject") {
            let vdi = (msg.name == "insert").then(|| arg_ref(&args, 1));
            let vbd = arg_ref(&args, 0);
            return self
                .change_media(&vbd, vdi.as_deref())
                .map(|()| Value::void());
        }
        if class.name == "VIF" {
            return self
                .vif_locking(msg.name, &arg_ref(&args, 0), &args)
                .map(|()| Value::void());
        }
        if (class.name, msg.name) == ("network", "set_default_locking_mode") {
            return self
                .set_default_locking_mode(&arg_ref(&args, 0), &args)
                .map(|()| Value::void());
        }
        if class.name != "VM" {
            return Err(not_implemented(class, msg, "not in this version"));
        }
        let vm = arg_ref(&args, 0);
        let done = |r: Result<(), ApiError>| r.map(|()| Value::void());
        match msg.name {
            "start" => done(self.start(ctx, &vm, arg_bool(&args, 1))),
            "pause" => done(self.pause(ctx, &vm)),
            "unpause" => done(self.unpause(ctx, &vm)),
            "clean_shutdown" => done(self.clean_shutdown(ctx, &vm)),
            "clean_reboot" => done(self.clean_reboot(ctx, &vm)),
            "shutdown" => done(self.shutdown(ctx, &vm)),
            "hard_shutdown" => done(self.hard_shutdown(ctx, &vm)),
            "hard_reboot" => done(self.hard_reboot(ctx, &vm)),
            "power_state_reset" => done(self.power_state_reset(ctx, &vm)),
            "destroy" => done(self.destroy(ctx, &vm)),
            "clone" | "copy" => {
                let new_name = args
                    .get(1)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let sr = arg_ref(&args, 2);
                let to_sr =
                    (msg.name == "copy" && !sr.is_empty() && sr != "OpaqueRef:NULL").then_some(sr);
                self.with_op(
                    ctx,
                    &vm,
                    msg.name,
                    |tx| require_state(tx, &vm, &["Halted"]).map(drop),
                    || self.copy_vm(ctx, &vm, &new_name, msg.name == "copy", to_sr.as_deref()),
                )
            }
            "snapshot" => {
                let new_name = args
                    .get(1)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.with_op(
                    ctx,
                    &vm,
                    "snapshot",
                    |tx| require_snapshot_state(tx, &vm),
                    || self.snapshot(&vm, &new_name),
                )
            }
            "revert" => {
                // The parameter is the snapshot; the VM is the one it was taken of.
                let snapshot = vm.clone();
                let target = self.api()?.db().read(|tx| {
                    if !matches!(tx.get("VM", &snapshot, "is_a_snapshot")?, Value::Bool(true)) {
                        return Err(ApiError::new(
                            &codes::OPERATION_NOT_ALLOWED,
                            [format!("{snapshot} is not a snapshot")],
                        ));
                    }
                    get_str(tx, "VM", &snapshot, "snapshot_of")
                })?;
                done(self.with_op(
                    ctx,
                    &target,
                    "revert",
                    |tx| require_state(tx, &target, &["Halted"]).map(drop),
                    || self.revert(&target, &snapshot),
                ))
            }
            "provision" => done(self.with_op(
                ctx,
                &vm,
                "provision",
                |tx| require_state(tx, &vm, &["Halted"]).map(drop),
                || self.api()?.db().write(|tx| clone::provision(tx, &vm)),
            )),
            "get_allowed_VBD_devices" | "get_allowed_VIF_devices" => {
                self.free_devices(&vm, msg.name == "get_allowed_VBD_devices")
            }
            other => match self.setting(other, &vm, &args) {
                Some(r) => done(r),
                None => Err(not_implemented(class, msg, "not in this version")),
            },
        }
    }
}
