//! The XenAPI's VDI calls on file SRs (`ext`, the default), through fv-sr: thin qcow2
//! VDIs, copy-on-write clones and snapshots, full copies with progress, growth, and
//! destroy with coalescing of the chain it leaves.
//!
//! A base copy that fv-sr makes (the shared, read-only parent of a snapshot or clone and
//! its VDI) is recorded as XAPI records one: a VDI with `managed = false`, so clients see
//! the space it takes but never use it.

use std::collections::BTreeMap;

use fv_sr::iso::IsoSr;
use fv_sr::lvm::{Lv, LvmSr};
use fv_sr::{ErrorKind, FileSr, SrError, VdiInfo};
use fv_xapi::db::codec::new_uuid;
use fv_xapi::db::{Db, Tx};
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};

use crate::fields::{refs, text};
use crate::vm::sr_path;

/// A fv-sr error as a XenAPI one.
pub fn api_error(e: &SrError) -> ApiError {
    match e.kind() {
        ErrorKind::NotFound => ApiError::new(&codes::HANDLE_INVALID, ["VDI", &e.to_string()]),
        ErrorKind::SrFull => ApiError::new(&codes::SR_FULL, ["", &e.to_string()]),
        ErrorKind::InUse => ApiError::new(&codes::VDI_IN_USE, ["", &e.to_string()]),
        ErrorKind::Invalid | ErrorKind::Cancelled => {
            ApiError::new(&codes::OPERATION_NOT_ALLOWED, [e.to_string()])
        }
        ErrorKind::Unsupported => {
            ApiError::new(&codes::SR_OPERATION_NOT_SUPPORTED, [e.to_string()])
        }
        _ if matches!(e, SrError::Command { .. }) => {
            ApiError::new(&codes::SR_BACKEND_FAILURE, ["", &e.to_string(), ""])
        }
        _ => ApiError::internal(e),
    }
}

/// The storage driver of an SR, by the SR's type.
pub enum Driver {
    /// `ext`, `file`: qcow2 files in a directory.
    File(FileSr),
    /// `iso`: a directory of ISO images, read-only.
    Iso(IsoSr),
    /// `lvm`: a volume group, raw LVs.
    Lvm(LvmSr),
}

/// The driver of SR `sr`, as its type and its PBD on this host say.
pub fn driver(tx: &Tx<'_>, sr: &str) -> Result<Driver, ApiError> {
    match text(tx, "SR", sr, "type")?.as_str() {
        "lvm" => LvmSr::get(&fv_sr::lvm::vg_name(&text(tx, "SR", sr, "uuid")?)).map(Driver::Lvm),
        "iso" => IsoSr::open(&sr_path(tx, sr)?).map(Driver::Iso),
        _ => FileSr::open(&sr_path(tx, sr)?).map(Driver::File),
    }
    .map_err(|e| api_error(&e))
}

/// `SR_OPERATION_NOT_SUPPORTED` for SR `sr`, saying what its type cannot do.
fn unsupported(tx: &Tx<'_>, sr: &str, what: &str) -> ApiError {
    let ty = text(tx, "SR", sr, "type").unwrap_or_default();
    ApiError::new(
        &codes::SR_OPERATION_NOT_SUPPORTED,
        [format!(
            "{sr}: {what} is not supported on an SR of type {ty}"
        )],
    )
}

/// The fv-sr driver of file SR `sr`; `SR_OPERATION_NOT_SUPPORTED` for other types.
pub fn open_sr(tx: &Tx<'_>, sr: &str) -> Result<FileSr, ApiError> {
    match driver(tx, sr)? {
        Driver::File(f) => Ok(f),
        Driver::Iso(_) | Driver::Lvm(_) => Err(unsupported(tx, sr, "this operation")),
    }
}

/// The image a VM's disk opens for VDI `vdi`, and its format (`raw` or `qcow2`).
pub fn vdi_image(tx: &Tx<'_>, vdi: &str) -> Result<(std::path::PathBuf, String), ApiError> {
    let sr = text(tx, "VDI", vdi, "SR")?;
    let location = text(tx, "VDI", vdi, "location")?;
    if location.is_empty() || location.contains('/') {
        return Err(ApiError::new(
            &codes::OPERATION_NOT_ALLOWED,
            [format!("VDI {vdi} has no usable location ({location:?})")],
        ));
    }
    let format = crate::fields::map_get(&tx.get("VDI", vdi, "sm_config")?, "type")
        .unwrap_or_else(|| "raw".to_owned());
    let path = match driver(tx, &sr)? {
        Driver::Lvm(lvm) => {
            return Ok((
                lvm.path(&location).map_err(|e| api_error(&e))?,
                "raw".into(),
            ))
        }
        Driver::Iso(iso) => iso.path(&location).map_err(|e| api_error(&e))?,
        Driver::File(f) => f.dir().join(&location),
    };
    Ok((path, format))
}

/// VDI `location` of SR `sr`, opened read-only to copy what it shows.
fn open_source(
    tx: &Tx<'_>,
    sr: &str,
    location: &str,
) -> Result<Box<dyn fv_disk::DiskFile>, ApiError> {
    match driver(tx, sr)? {
        Driver::File(f) => f.open_vdi(location).map_err(|e| api_error(&e)),
        Driver::Iso(iso) => {
            let path = iso.path(location).map_err(|e| api_error(&e))?;
            fv_disk::open_disk(&path, Some(fv_disk::Format::Raw), true)
                .map_err(|e| ApiError::internal(format!("opening {}: {e}", path.display())))
        }
        Driver::Lvm(lvm) => lvm.open_vdi(location).map_err(|e| api_error(&e)),
    }
}

/// Records what the LVM driver says of an LV, as [`record_file`] does for a file.
fn record_lv(tx: &mut Tx<'_>, vdi: &str, lv: &Lv) -> Result<(), ApiError> {
    record_file(tx, vdi, &lv.info)
}

fn size(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Records what fv-sr says of a file: location, sizes, format.
fn record_file(tx: &mut Tx<'_>, vdi: &str, info: &VdiInfo) -> Result<(), ApiError> {
    tx.set("VDI", vdi, "location", Value::String(info.name.clone()))?;
    tx.set("VDI", vdi, "virtual_size", size(info.virtual_size))?;
    tx.set(
        "VDI",
        vdi,
        "physical_utilisation",
        size(info.physical_utilisation),
    )?;
    tx.set(
        "VDI",
        vdi,
        "sm_config",
        Value::Struct(BTreeMap::from([(
            "type".to_owned(),
            Value::from(info.format),
        )])),
    )
}

/// The fields a client gives `VDI.create` (the others are the storage's to set).
const CREATE_FIELDS: &[&str] = &[
    "name_label",
    "name_description",
    "SR",
    "virtual_size",
    "type",
    "sharable",
    "read_only",
    "other_config",
    "xenstore_data",
    "tags",
];

/// `VDI.create(record)`: the record, and a thin qcow2 in the SR.
pub fn vdi_create(tx: &mut Tx<'_>, record: &Value) -> Result<String, ApiError> {
    let Value::Struct(given) = record else {
        return Err(ApiError::field_type("args"));
    };
    let fields: BTreeMap<String, Value> = given
        .iter()
        .filter(|(k, _)| CREATE_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vdi = tx.create("VDI", fields)?;
    let sr = text(tx, "VDI", &vdi, "SR")?;
    let uuid = text(tx, "VDI", &vdi, "uuid")?;
    let wanted = tx.get("VDI", &vdi, "virtual_size")?.as_int().unwrap_or(0);
    let wanted = u64::try_from(wanted)
        .map_err(|_| ApiError::new(&codes::INVALID_VALUE, ["virtual_size", &wanted.to_string()]))?;
    let info = match driver(tx, &sr)? {
        Driver::Lvm(lvm) => lvm.create(&uuid, wanted).map(|lv| lv.info),
        _ => open_sr(tx, &sr)?.create(&uuid, wanted),
    }
    .map_err(|e| api_error(&e))?;
    record_file(tx, &vdi, &info)?;
    refresh_sr(tx, &sr)?;
    Ok(vdi)
}

/// A new VDI record beside `from` (same SR, name and type), for a file fv-sr made.
fn new_record(
    tx: &mut Tx<'_>,
    from: &str,
    info: &VdiInfo,
    name: &str,
    managed: bool,
) -> Result<String, ApiError> {
    let mut fields = BTreeMap::new();
    for f in ["name_description", "SR", "type", "sharable", "other_config"] {
        fields.insert(f.to_owned(), tx.get("VDI", from, f)?);
    }
    fields.insert("uuid".into(), Value::String(info.uuid.clone()));
    fields.insert("name_label".into(), Value::String(name.to_owned()));
    fields.insert("virtual_size".into(), size(info.virtual_size));
    fields.insert("read_only".into(), Value::Bool(!managed));
    let r = tx.create("VDI", fields)?;
    record_file(tx, &r, info)?;
    tx.set("VDI", &r, "managed", Value::Bool(managed))?;
    Ok(r)
}

/// Refuses when a running or paused VM has `vdi` attached: fv-sr replaces the VDI's file,
/// which a VM that has it open would not see. Callers that hold the VM's disk around the
/// change (`Vms::with_disks_held`) need not.
pub fn require_unattached(tx: &Tx<'_>, vdi: &str, op: &str) -> Result<(), ApiError> {
    for vbd in refs(tx, "VDI", vdi, "VBDs")? {
        let vm = text(tx, "VBD", &vbd, "VM")?;
        let state = text(tx, "VM", &vm, "power_state")?;
        if state == "Running" || state == "Paused" {
            return Err(ApiError::new(&codes::VDI_IN_USE, [vdi, op]));
        }
    }
    Ok(())
}

/// `VDI.snapshot` or `VDI.clone`: a copy-on-write child; returns the new VDI. A running
/// VM with `vdi` attached must have its disk held (see `require_unattached`).
pub fn vdi_fork(tx: &mut Tx<'_>, vdi: &str, snapshot: bool) -> Result<String, ApiError> {
    crate::vdi_busy::check(vdi)?;
    let sr = text(tx, "VDI", vdi, "SR")?;
    let location = text(tx, "VDI", vdi, "location")?;
    if let Driver::Lvm(lvm) = driver(tx, &sr)? {
        let lv = lvm
            .snapshot(&location, &new_uuid(), snapshot)
            .map_err(|e| api_error(&e))?;
        let name = text(tx, "VDI", vdi, "name_label")?;
        let new = new_record(tx, vdi, &lv.info, &name, true)?;
        mark_fork(tx, vdi, &new, snapshot)?;
        refresh_sr(tx, &sr)?;
        return Ok(new);
    }
    let driver = open_sr(tx, &sr)?;
    let fork = if snapshot {
        driver.snapshot(&location, &new_uuid())
    } else {
        driver.clone_vdi(&location, &new_uuid())
    }
    .map_err(|e| api_error(&e))?;
    let name = text(tx, "VDI", vdi, "name_label")?;
    new_record(tx, vdi, &fork.base, &format!("base copy of {name}"), false)?;
    record_file(tx, vdi, &fork.vdi)?;
    let new = new_record(tx, vdi, &fork.new, &name, true)?;
    mark_fork(tx, vdi, &new, snapshot)?;
    refresh_sr(tx, &sr)?;
    Ok(new)
}

/// Marks `new`, made from `vdi`, as its read-only snapshot (`snapshot`) or as a clone.
fn mark_fork(tx: &mut Tx<'_>, vdi: &str, new: &str, snapshot: bool) -> Result<(), ApiError> {
    if snapshot {
        tx.set("VDI", new, "is_a_snapshot", Value::Bool(true))?;
        tx.set("VDI", new, "snapshot_of", Value::String(vdi.to_owned()))?;
        tx.set(
            "VDI",
            new,
            "snapshot_time",
            Value::DateTime(fv_xapi::time::now()),
        )?;
        tx.set("VDI", new, "read_only", Value::Bool(true))?;
    }
    Ok(())
}

/// `VDI.resize`: grows a VDI. A running VM with `vdi` attached must have its disk held
/// (see `require_unattached`); it sees the new size when the disk is reopened.
pub fn vdi_resize(tx: &mut Tx<'_>, vdi: &str, new_size: i64) -> Result<(), ApiError> {
    crate::vdi_busy::check(vdi)?;
    let new_size = u64::try_from(new_size)
        .map_err(|_| ApiError::new(&codes::INVALID_VALUE, ["size", &new_size.to_string()]))?;
    let sr = text(tx, "VDI", vdi, "SR")?;
    let location = text(tx, "VDI", vdi, "location")?;
    let info = match driver(tx, &sr)? {
        Driver::Lvm(lvm) => lvm.resize(&location, new_size).map(|lv| lv.info),
        _ => open_sr(tx, &sr)?.resize(&location, new_size),
    }
    .map_err(|e| api_error(&e))?;
    record_file(tx, vdi, &info)?;
    refresh_sr(tx, &sr)
}

/// `VDI.destroy`: the record and the file; base copies left without children go too
/// (with their records), and a base left with one child is merged into it.
pub fn vdi_destroy(api: &fv_xapi::Api, vdi: &str) -> Result<(), ApiError> {
    let db = api.db();
    let done = db.write(|tx| {
        crate::vdi_busy::check(vdi)?;
        if !refs(tx, "VDI", vdi, "VBDs")?.is_empty() {
            return Err(ApiError::new(&codes::VDI_IN_USE, [vdi, "destroy"]));
        }
        let sr = text(tx, "VDI", vdi, "SR")?;
        let location = text(tx, "VDI", vdi, "location")?;
        if let Driver::Lvm(lvm) = driver(tx, &sr)? {
            lvm.destroy(&location).map_err(|e| api_error(&e))?;
            tx.destroy("VDI", vdi)?;
            refresh_sr(tx, &sr)?;
            return Ok(None);
        }
        let driver = open_sr(tx, &sr)?;
        let destroyed = driver.destroy(&location).map_err(|e| api_error(&e))?;
        tx.destroy("VDI", vdi)?;
        forget_files(tx, &sr, &destroyed.removed)?;
        refresh_sr(tx, &sr)?;
        Ok(Some((driver, destroyed)))
    })?;
    let Some((driver, destroyed)) = done else {
        return Ok(());
    };
    if destroyed.coalesce.is_some() {
        // Chains stay short by themselves: merge what is left, in the background.
        coalesce_in_background(api.clone(), sr_of_driver(&driver));
    }
    Ok(())
}

fn sr_of_driver(driver: &FileSr) -> std::path::PathBuf {
    driver.dir().to_path_buf()
}

/// Runs [`coalesce_sr`] on the SR in `dir` on a thread of its own.
pub fn coalesce_in_background(api: fv_xapi::Api, dir: std::path::PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("fvd coalesce".into())
        .spawn(move || {
            let db = api.db();
            let sr = db.read(|tx| {
                for sr in tx.refs("SR")? {
                    if sr_path(tx, &sr).ok().as_deref() == Some(dir.as_path()) {
                        return Ok(Some(sr));
                    }
                }
                Ok(None)
            });
            if let Ok(Some(sr)) = sr {
                if let Err(e) = coalesce_sr(db, &sr) {
                    tracing::warn!("SR {sr}: coalescing: {e:?}");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start coalescing: {e}");
    }
}

/// Merges every base copy of the SR that has a single child into it, as a visible task
/// ("Coalescing <SR name>") with progress. A chain whose child is a disk a running VM
/// uses waits: it is tried again when that VM halts and when fvd starts. Returns how many
/// base copies were merged away.
pub fn coalesce_sr(db: &Db, sr: &str) -> Result<usize, ApiError> {
    // One coalescing of an SR at a time: the second caller finds nothing left to do.
    static RUNNING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    let (driver, name) = db.read(|tx| Ok((driver(tx, sr)?, text(tx, "SR", sr, "name_label")?)))?;
    // Only file SRs have chains to shorten.
    let Driver::File(driver) = driver else {
        return Ok(0);
    };
    let candidates = driver.coalesce_candidates().map_err(|e| api_error(&e))?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let task = fv_xapi::task::create(db, &format!("Coalescing {name}"), "", None)?;
    let total = candidates.len();
    let mut merged = 0;
    let mut waiting = Vec::new();
    for (i, candidate) in candidates.iter().enumerate() {
        // Progress goes to the task between merges, not from inside one: fv-sr may call
        // back while it holds its SR lock, and a database write then could wait for a
        // call that holds the database and waits for that lock.
        let _ = fv_xapi::task::set_progress(db, &task, i as f64 / total as f64);
        let result = coalesce(db, &driver, candidate, &mut |_| true);
        match result {
            Ok(true) => merged += 1,
            Ok(false) => waiting.push(candidate.child.clone()),
            Err(e) => {
                tracing::warn!("SR {name}: coalescing {}: {e:?}", candidate.base);
                waiting.push(candidate.child.clone());
            }
        }
    }
    if waiting.is_empty() {
        fv_xapi::task::succeed(db, &task, &Value::Int(i64::try_from(merged).unwrap_or(0)))?;
    } else {
        let why = format!(
            "{} chain(s) wait for their disks to be free (a running VM uses them): {}; \
             coalescing resumes when the VM halts",
            waiting.len(),
            waiting.join(", ")
        );
        fv_xapi::task::fail(
            db,
            &task,
            &ApiError::new(&codes::OPERATION_NOT_ALLOWED, [why]),
        )?;
    }
    Ok(merged)
}

/// Removes the records of files fv-sr removed.
fn forget_files(tx: &mut Tx<'_>, sr: &str, files: &[String]) -> Result<(), ApiError> {
    for other in refs(tx, "SR", sr, "VDIs")? {
        if files.contains(&text(tx, "VDI", &other, "location")?) {
            tx.destroy("VDI", &other)?;
        }
    }
    Ok(())
}

/// Merges one base copy into its child; `false` when the child is a disk a running VM
/// uses, which must wait.
fn coalesce(
    db: &Db,
    driver: &FileSr,
    candidate: &fv_sr::CoalesceCandidate,
    progress: &mut dyn FnMut(f64) -> bool,
) -> Result<bool, ApiError> {
    if candidate.child_is_vdi {
        let busy = db.read(|tx| {
            for vdi in tx.refs("VDI")? {
                if text(tx, "VDI", &vdi, "location")? == candidate.child {
                    return Ok(require_unattached(tx, &vdi, "coalesce").is_err());
                }
            }
            Ok(false)
        })?;
        if busy {
            return Ok(false);
        }
    }
    let done = driver
        .coalesce(&candidate.base, progress)
        .map_err(|e| api_error(&e))?;
    db.write(|tx| {
        let mut sr = None;
        for vdi in tx.refs("VDI")? {
            let location = text(tx, "VDI", &vdi, "location")?;
            if location == done.removed {
                sr = Some(text(tx, "VDI", &vdi, "SR")?);
                tx.destroy("VDI", &vdi)?;
            } else if location == done.child.name {
                record_file(tx, &vdi, &done.child)?;
            }
        }
        match sr {
            Some(sr) => refresh_sr(tx, &sr),
            None => Ok(()),
        }
    })?;
    Ok(true)
}

/// `VDI.copy(vdi, sr)`: a full copy into `sr`, progress on `task`; returns the new VDI.
pub fn vdi_copy(db: &Db, vdi: &str, sr: &str, task: Option<&str>) -> Result<String, ApiError> {
    crate::vdi_busy::check(vdi)?;
    let (src, to) = db.read(|tx| {
        let from_sr = text(tx, "VDI", vdi, "SR")?;
        let location = text(tx, "VDI", vdi, "location")?;
        Ok((open_source(tx, &from_sr, &location)?, driver(tx, sr)?))
    })?;
    let uuid = new_uuid();
    let mut progress = |fraction: f64| -> bool {
        let Some(t) = task else { return true };
        let _ = fv_xapi::task::set_progress(db, t, fraction.clamp(0.0, 0.99));
        !fv_xapi::task::cancel_requested(db, t).unwrap_or(false)
    };
    let info = match to {
        Driver::File(f) => f.import(&*src, &uuid, &mut progress),
        Driver::Lvm(lvm) => lvm.import(&*src, &uuid, &mut progress).map(|lv| lv.info),
        Driver::Iso(_) => {
            return Err(db.read(|tx| Ok(unsupported(tx, sr, "VDI.copy into it")))?);
        }
    }
    .map_err(|e| match (e.kind(), task) {
        (ErrorKind::Cancelled, Some(t)) => ApiError::new(&codes::TASK_CANCELLED, [t]),
        _ => api_error(&e),
    })?;
    db.write(|tx| {
        let name = text(tx, "VDI", vdi, "name_label")?;
        let new = new_record(tx, vdi, &info, &name, true)?;
        tx.set("VDI", &new, "SR", Value::String(sr.to_owned()))?;
        refresh_sr(tx, sr)?;
        Ok(new)
    })
}

/// Writes the raw image `raw` (a file) into the qcow2 VDI `vdi`: what the template's root
/// filesystem is made from. Only non-zero data is written, so the VDI stays thin.
pub fn import_raw(tx: &Tx<'_>, vdi: &str, raw: &std::path::Path) -> Result<(), ApiError> {
    use std::io::Read;
    let sr = text(tx, "VDI", vdi, "SR")?;
    let path = sr_path(tx, &sr)?.join(text(tx, "VDI", vdi, "location")?);
    let fail =
        |e: &dyn std::fmt::Display| ApiError::internal(format!("importing {}: {e}", raw.display()));
    let disk =
        fv_disk::open_disk(&path, Some(fv_disk::Format::Qcow2), false).map_err(|e| fail(&e))?;
    let mut file = std::fs::File::open(raw).map_err(|e| fail(&e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| fail(&e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            disk.write_at(&buf[..n], at).map_err(|e| fail(&e))?;
        }
        at += n as u64;
    }
    disk.flush().map_err(|e| fail(&e))
}

// ---- SRs ----

/// Keeps an SR's sizes true: its filesystem's size and use, and the sum of its VDIs'
/// virtual sizes (base copies included, as XAPI counts them).
pub fn refresh_sr(tx: &mut Tx<'_>, sr: &str) -> Result<(), ApiError> {
    let (total, used) = match driver(tx, sr)? {
        Driver::File(f) => (f.physical_size(), f.physical_utilisation()),
        Driver::Iso(iso) => match iso.sizes() {
            Ok((total, used)) => (Ok(total), Ok(used)),
            Err(e) => (Err(e), Ok(0)),
        },
        Driver::Lvm(lvm) => match lvm.sizes() {
            Ok((total, used)) => (Ok(total), Ok(used)),
            Err(e) => (Err(e), Ok(0)),
        },
    };
    let total = total.map_err(|e| api_error(&e))?;
    let used = used.map_err(|e| api_error(&e))?;
    let mut allocated = 0i64;
    for vdi in refs(tx, "SR", sr, "VDIs")? {
        allocated =
            allocated.saturating_add(tx.get("VDI", &vdi, "virtual_size")?.as_int().unwrap_or(0));
    }
    tx.set("SR", sr, "physical_size", size(total))?;
    tx.set("SR", sr, "physical_utilisation", size(used))?;
    tx.set("SR", sr, "virtual_allocation", Value::Int(allocated))
}

/// SR types this host's storage drivers serve.
const SR_TYPES: &[&str] = &["ext", "file", "iso", "lvm", "nfs"];

/// Where fvd mounts NFS exports (`DATA_DIR/sr-mount`), set once at start.
static MOUNT_ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sets where NFS exports are mounted: `<dir>/<sr uuid>`.
pub fn set_mount_root(dir: std::path::PathBuf) {
    let _ = MOUNT_ROOT.set(dir);
}

/// Where the export of NFS SR `uuid` is mounted; the SR is its subdirectory `uuid`.
pub fn nfs_mountpoint(uuid: &str) -> Result<std::path::PathBuf, ApiError> {
    let root = MOUNT_ROOT
        .get()
        .ok_or_else(|| ApiError::internal("no NFS mount directory set"))?;
    if uuid.is_empty() || uuid.contains('/') || uuid.starts_with('.') {
        return Err(ApiError::new(&codes::INVALID_VALUE, ["uuid", uuid]));
    }
    Ok(root.join(uuid))
}

/// `device_config:server`, `serverpath` and `nfsversion` (default 4.1), checked.
fn nfs_settings(device_config: &Value) -> Result<(String, String, String), ApiError> {
    let get = |k: &str| crate::fields::map_get(device_config, k);
    let (Some(server), Some(path)) = (get("server"), get("serverpath")) else {
        return Err(ApiError::new(
            &codes::OPERATION_NOT_ALLOWED,
            ["an nfs SR needs device_config:server and device_config:serverpath"],
        ));
    };
    let version = get("nfsversion").unwrap_or_else(|| "4.1".to_owned());
    fv_sr::nfs::check(&server, &path, &version)
        .map_err(|e| ApiError::new(&codes::INVALID_VALUE, ["device_config", &e.to_string()]))?;
    Ok((server, path, version))
}

/// An NFS mount failure, as XAPI's NFS driver reports it.
fn nfs_mount_error(e: &SrError) -> ApiError {
    ApiError::new(
        &codes::SR_BACKEND_FAILURE_73,
        ["", &format!("NFS mount error [opterr={e}]"), ""],
    )
}

/// Mounts the export of NFS SR `uuid` (unless it is mounted) and checks that the SR's
/// directory is there (`create`: makes it). A failure leaves nothing mounted.
fn nfs_attach(
    uuid: &str,
    server: &str,
    path: &str,
    version: &str,
    create: bool,
) -> Result<(), ApiError> {
    let mountpoint = nfs_mountpoint(uuid)?;
    if fv_sr::nfs::is_mounted(&mountpoint) {
        return Ok(());
    }
    std::fs::create_dir_all(&mountpoint)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", mountpoint.display())))?;
    if let Err(e) = fv_sr::nfs::mount(server, path, version, &mountpoint) {
        let _ = std::fs::remove_dir(&mountpoint);
        return Err(nfs_mount_error(&e));
    }
    let dir = mountpoint.join(uuid);
    let ready = if create {
        std::fs::create_dir(&dir)
    } else if dir.is_dir() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{server}:{path} holds no SR {uuid} (no directory {uuid} there)"
        )))
    };
    if let Err(e) = ready {
        let _ = fv_sr::nfs::unmount(&mountpoint);
        let _ = std::fs::remove_dir(&mountpoint);
        return Err(ApiError::new(
            &codes::SR_BACKEND_FAILURE,
            ["", &format!("NFS SR {uuid}: {e}"), ""],
        ));
    }
    Ok(())
}

/// Unmounts the export of NFS SR `uuid`, if mounted.
fn nfs_detach(uuid: &str) -> Result<(), ApiError> {
    let mountpoint = nfs_mountpoint(uuid)?;
    if fv_sr::nfs::is_mounted(&mountpoint) {
        fv_sr::nfs::unmount(&mountpoint).map_err(|e| api_error(&e))?;
    }
    let _ = std::fs::remove_dir(&mountpoint);
    Ok(())
}

#[allow(clippy::too_many_arguments)] // XenAPI's SR.create has these parameters.
/// `SR.create`: the SR and its PBD on `host`, plugged. A file SR (`ext`) lives in the
/// directory `device_config:path` (made if missing), or in `default_dir` named by the new
/// SR's uuid; an ISO library (`iso`) is the existing directory `device_config:location`,
/// scanned at once.
pub fn sr_create(
    tx: &mut Tx<'_>,
    host: &str,
    device_config: &Value,
    name_label: &str,
    name_description: &str,
    sr_type: &str,
    content_type: &str,
    default_dir: &std::path::Path,
) -> Result<String, ApiError> {
    if !SR_TYPES.contains(&sr_type) {
        return Err(ApiError::new(
            &codes::OPERATION_NOT_ALLOWED,
            [format!(
                "SR type {sr_type:?} is not supported here; types: {}",
                SR_TYPES.join(", ")
            )],
        ));
    }
    let uuid = new_uuid();
    let absolute = |key: &str| -> Result<Option<std::path::PathBuf>, ApiError> {
        match crate::fields::map_get(device_config, key) {
            Some(p) if std::path::Path::new(&p).is_absolute() => Ok(Some(p.into())),
            Some(p) => Err(ApiError::new(
                &codes::INVALID_VALUE,
                [&format!("device_config:{key}"), p.as_str()],
            )),
            None => Ok(None),
        }
    };
    let one = |key: &str, path: std::path::PathBuf| {
        BTreeMap::from([(
            key.to_owned(),
            Value::String(path.to_string_lossy().into_owned()),
        )])
    };
    let pbd_config = if sr_type == "nfs" {
        let (server, serverpath, version) = nfs_settings(device_config)?;
        nfs_attach(&uuid, &server, &serverpath, &version, true)?;
        BTreeMap::from([
            ("server".to_owned(), Value::String(server)),
            ("serverpath".to_owned(), Value::String(serverpath)),
            ("nfsversion".to_owned(), Value::String(version)),
        ])
    } else if sr_type == "lvm" {
        let Some(device) = absolute("device")? else {
            return Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                ["an lvm SR needs device_config:device, the block device to format"],
            ));
        };
        LvmSr::format(&device, &uuid).map_err(|e| api_error(&e))?;
        one("device", device)
    } else if sr_type == "iso" {
        let Some(dir) = absolute("location")? else {
            return Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                ["an iso SR needs device_config:location, the directory of its ISO files"],
            ));
        };
        IsoSr::open(&dir).map_err(|e| api_error(&e))?;
        one("location", dir)
    } else {
        let path = match absolute("path")? {
            Some(p) => p,
            None if crate::fields::map_get(device_config, "device").is_some() => {
                return Err(ApiError::new(
                    &codes::OPERATION_NOT_ALLOWED,
                    ["formatting a block device for an ext SR is not supported yet: give device_config:path, a directory"],
                ))
            }
            None => default_dir.join(&uuid),
        };
        std::fs::create_dir_all(&path)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?;
        FileSr::open(&path).map_err(|e| api_error(&e))?;
        one("path", path)
    };
    let made = sr_records(
        tx,
        host,
        &uuid,
        pbd_config,
        name_label,
        name_description,
        sr_type,
        content_type,
    );
    if made.is_err() && sr_type == "nfs" {
        // Nothing is recorded: nothing stays mounted either.
        if let Ok(mountpoint) = nfs_mountpoint(&uuid) {
            let _ = fv_sr::nfs::unmount(&mountpoint);
            let _ = std::fs::remove_dir(&mountpoint);
        }
    }
    made
}

#[allow(clippy::too_many_arguments)]
/// The records of a new SR and its PBD, plugged.
fn sr_records(
    tx: &mut Tx<'_>,
    host: &str,
    uuid: &str,
    device_config: BTreeMap<String, Value>,
    name_label: &str,
    name_description: &str,
    sr_type: &str,
    content_type: &str,
) -> Result<String, ApiError> {
    let sr = tx.create(
        "SR",
        BTreeMap::from([
            ("uuid".to_owned(), Value::from(uuid)),
            ("name_label".to_owned(), Value::from(name_label)),
            ("name_description".to_owned(), Value::from(name_description)),
            ("type".to_owned(), Value::from(sr_type)),
            ("content_type".to_owned(), Value::from(content_type)),
        ]),
    )?;
    let pbd = tx.create(
        "PBD",
        BTreeMap::from([
            ("host".to_owned(), Value::from(host)),
            ("SR".to_owned(), Value::String(sr.clone())),
            ("device_config".to_owned(), Value::Struct(device_config)),
        ]),
    )?;
    pbd_plug(tx, &pbd, true)?;
    Ok(sr)
}

/// `SR.introduce`: the record of an SR that exists on its storage (an LVM VG, a directory),
/// without a PBD; `PBD.create` and `PBD.plug` then attach it and find its VDIs.
pub fn sr_introduce(
    tx: &mut Tx<'_>,
    uuid: &str,
    name_label: &str,
    name_description: &str,
    sr_type: &str,
    content_type: &str,
) -> Result<String, ApiError> {
    if !SR_TYPES.contains(&sr_type) {
        return Err(ApiError::new(
            &codes::OPERATION_NOT_ALLOWED,
            [format!(
                "SR type {sr_type:?} is not supported here; types: {}",
                SR_TYPES.join(", ")
            )],
        ));
    }
    let canonical = uuid.len() == 36
        && uuid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if !canonical {
        return Err(ApiError::new(&codes::INVALID_VALUE, ["uuid", uuid]));
    }
    tx.create(
        "SR",
        BTreeMap::from([
            ("uuid".to_owned(), Value::from(uuid)),
            ("name_label".to_owned(), Value::from(name_label)),
            ("name_description".to_owned(), Value::from(name_description)),
            ("type".to_owned(), Value::from(sr_type)),
            ("content_type".to_owned(), Value::from(content_type)),
        ]),
    )
}

/// `SR.probe`: the SRs of type `sr_type` that `device_config` leads to, in XAPI's XML
/// (`<SRlist><SR><UUID>..</UUID>..</SR></SRlist>`). For `lvm`, the VGs on
/// `device_config:device` (a VG not made by fvd is listed without a UUID); for `nfs`, the
/// SR directories on the export `server:serverpath` (default `/`).
pub fn sr_probe(device_config: &Value, sr_type: &str) -> Result<String, ApiError> {
    match sr_type {
        "lvm" => {
            let Some(device) = crate::fields::map_get(device_config, "device") else {
                return Err(ApiError::new(
                    &codes::OPERATION_NOT_ALLOWED,
                    ["probing an lvm SR needs device_config:device"],
                ));
            };
            let found =
                fv_sr::lvm::probe(std::path::Path::new(&device)).map_err(|e| api_error(&e))?;
            let mut xml = String::from("<?xml version=\"1.0\" ?>\n<SRlist>\n");
            for f in found {
                xml += "\t<SR>\n";
                if let Some(uuid) = &f.sr_uuid {
                    xml += &format!("\t\t<UUID>{uuid}</UUID>\n");
                }
                xml += &format!(
                    "\t\t<VGname>{}</VGname>\n\t\t<Devlist>{}</Devlist>\n\t\t<size>{}</size>\n\t\t<free_space>{}</free_space>\n\t</SR>\n",
                    xml_escape(&f.vg),
                    xml_escape(&device),
                    f.size,
                    f.free
                );
            }
            Ok(xml + "</SRlist>\n")
        }
        "nfs" => nfs_probe(device_config),
        other => Err(ApiError::new(
            &codes::SR_OPERATION_NOT_SUPPORTED,
            [format!(
                "SR.probe is not supported for SRs of type {other:?}"
            )],
        )),
    }
}

/// `SR.probe` of NFS: the SR directories (named by a uuid) on the export, mounted for the
/// while.
fn nfs_probe(device_config: &Value) -> Result<String, ApiError> {
    let mut config = device_config.clone();
    if let Value::Struct(m) = &mut config {
        m.entry("serverpath".to_owned())
            .or_insert_with(|| Value::from("/"));
    }
    let (server, path, version) = nfs_settings(&config)?;
    let mountpoint = nfs_mountpoint(&format!("probe-{}", new_uuid()))?;
    std::fs::create_dir_all(&mountpoint)
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", mountpoint.display())))?;
    if let Err(e) = fv_sr::nfs::mount(&server, &path, &version, &mountpoint) {
        let _ = std::fs::remove_dir(&mountpoint);
        return Err(nfs_mount_error(&e));
    }
    let mut uuids: Vec<String> = std::fs::read_dir(&mountpoint)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.len() == 36 && n.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
                .collect()
        })
        .unwrap_or_default();
    uuids.sort();
    let unmounted = fv_sr::nfs::unmount(&mountpoint);
    let _ = std::fs::remove_dir(&mountpoint);
    unmounted.map_err(|e| api_error(&e))?;
    let mut xml = String::from("<?xml version=\"1.0\" ?>\n<SRlist>\n");
    for uuid in uuids {
        xml += &format!("\t<SR>\n\t\t<UUID>{uuid}</UUID>\n\t</SR>\n");
    }
    Ok(xml + "</SRlist>\n")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Refuses when a VDI of the SR is attached to a VM (any VBD): the SR is in use.
fn require_sr_unused(tx: &Tx<'_>, sr: &str, op: &str) -> Result<(), ApiError> {
    for vdi in refs(tx, "SR", sr, "VDIs")? {
        if !refs(tx, "VDI", &vdi, "VBDs")?.is_empty() {
            return Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                [format!(
                    "VDI {vdi} of the SR is attached to a VM: detach it before {op}"
                )],
            ));
        }
    }
    Ok(())
}

/// `SR.forget` (the records only) or `SR.destroy` (the files too, and the directory when
/// it was the default one fvd made).
pub fn sr_remove(
    tx: &mut Tx<'_>,
    sr: &str,
    destroy: bool,
    default_dir: &std::path::Path,
) -> Result<(), ApiError> {
    require_sr_unused(
        tx,
        sr,
        if destroy {
            "destroying it"
        } else {
            "forgetting it"
        },
    )?;
    if destroy && text(tx, "SR", sr, "type")? == "iso" {
        return Err(unsupported(
            tx,
            sr,
            "SR.destroy (it would delete the ISO files; SR.forget leaves them)",
        ));
    }
    let lvm = match text(tx, "SR", sr, "type")?.as_str() {
        "lvm" => match driver(tx, sr)? {
            Driver::Lvm(lvm) => Some(lvm),
            _ => None,
        },
        _ => None,
    };
    if let Some(lvm) = lvm {
        let done = if destroy {
            lvm.destroy_vg()
        } else {
            // Forgotten, the VG stays on its device, deactivated, for SR.introduce.
            lvm.deactivate()
        };
        done.map_err(|e| api_error(&e))?;
    } else if destroy {
        let path = sr_path(tx, sr)?;
        let driver = open_sr(tx, sr)?;
        let mut names: Vec<(bool, String)> = Vec::new();
        for vdi in refs(tx, "SR", sr, "VDIs")? {
            let managed = matches!(tx.get("VDI", &vdi, "managed")?, Value::Bool(true));
            names.push((managed, text(tx, "VDI", &vdi, "location")?));
        }
        // The VDIs (leaves) first: their base copies go with the last of their children.
        names.sort();
        names.reverse();
        for (_, name) in names {
            match driver.destroy(&name) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(api_error(&e)),
            }
        }
        if path.starts_with(default_dir) || text(tx, "SR", sr, "type")? == "nfs" {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    if text(tx, "SR", sr, "type")? == "nfs" {
        nfs_detach(&text(tx, "SR", sr, "uuid")?)?;
    }
    for vdi in refs(tx, "SR", sr, "VDIs")? {
        tx.destroy("VDI", &vdi)?;
    }
    for pbd in refs(tx, "SR", sr, "PBDs")? {
        tx.destroy("PBD", &pbd)?;
    }
    for pool in tx.refs("pool")? {
        if text(tx, "pool", &pool, "default_SR")? == sr {
            tx.set("pool", &pool, "default_SR", Value::from("OpaqueRef:NULL"))?;
        }
    }
    tx.destroy("SR", sr)
}

/// `SR.scan`: records for files the SR holds and the database does not know (a base copy
/// unmanaged), `missing` set on records whose file is gone, sizes refreshed.
pub fn sr_scan(tx: &mut Tx<'_>, sr: &str) -> Result<(), ApiError> {
    let driver = match driver(tx, sr)? {
        Driver::Iso(iso) => return iso_scan(tx, sr, &iso),
        Driver::Lvm(lvm) => return lvm_scan(tx, sr, &lvm),
        Driver::File(f) => f,
    };
    driver.recover().map_err(|e| api_error(&e))?;
    let scan = driver.scan().map_err(|e| api_error(&e))?;
    let mut known = BTreeMap::new();
    for vdi in refs(tx, "SR", sr, "VDIs")? {
        known.insert(text(tx, "VDI", &vdi, "location")?, vdi);
    }
    for info in &scan.vdis {
        match known.remove(&info.name) {
            Some(vdi) => {
                record_file(tx, &vdi, info)?;
                tx.set("VDI", &vdi, "missing", Value::Bool(false))?;
            }
            None => {
                let r = tx.create(
                    "VDI",
                    BTreeMap::from([
                        ("uuid".to_owned(), Value::String(info.uuid.clone())),
                        ("name_label".to_owned(), Value::from("")),
                        ("SR".to_owned(), Value::from(sr)),
                        ("virtual_size".to_owned(), size(info.virtual_size)),
                        ("type".to_owned(), Value::from("user")),
                        ("read_only".to_owned(), Value::Bool(info.hidden)),
                    ]),
                )?;
                record_file(tx, &r, info)?;
                tx.set("VDI", &r, "managed", Value::Bool(!info.hidden))?;
            }
        }
    }
    for (name, vdi) in known {
        tracing::warn!("SR {sr}: the file of VDI {vdi} ({name}) is missing");
        tx.set("VDI", &vdi, "missing", Value::Bool(true))?;
    }
    for (name, why) in &scan.ignored {
        tracing::info!("SR {sr}: ignoring {name}: {why}");
    }
    refresh_sr(tx, sr)
}

/// `SR.scan` of an ISO library: a read-only VDI per `*.iso` file, named by it; the records
/// of files gone are forgotten (a CD drive that held one is left empty).
fn iso_scan(tx: &mut Tx<'_>, sr: &str, iso: &IsoSr) -> Result<(), ApiError> {
    let scan = iso.scan().map_err(|e| api_error(&e))?;
    let mut known = BTreeMap::new();
    for vdi in refs(tx, "SR", sr, "VDIs")? {
        known.insert(text(tx, "VDI", &vdi, "location")?, vdi);
    }
    for info in &scan.vdis {
        let vdi = match known.remove(&info.name) {
            Some(vdi) => vdi,
            None => tx.create(
                "VDI",
                BTreeMap::from([
                    ("name_label".to_owned(), Value::from(info.name.as_str())),
                    ("SR".to_owned(), Value::from(sr)),
                    ("virtual_size".to_owned(), size(info.virtual_size)),
                    ("type".to_owned(), Value::from("user")),
                    ("read_only".to_owned(), Value::Bool(true)),
                ]),
            )?,
        };
        record_file(tx, &vdi, info)?;
    }
    for (name, vdi) in known {
        tracing::info!("SR {sr}: {name} is gone: forgetting VDI {vdi}");
        for vbd in refs(tx, "VDI", &vdi, "VBDs")? {
            tx.set("VBD", &vbd, "VDI", Value::from("OpaqueRef:NULL"))?;
            tx.set("VBD", &vbd, "empty", Value::Bool(true))?;
        }
        tx.destroy("VDI", &vdi)?;
    }
    for (name, why) in &scan.ignored {
        tracing::debug!("SR {sr}: ignoring {name}: {why}");
    }
    refresh_sr(tx, sr)
}

/// `SR.scan` of an LVM SR: records for LVs of ours the database does not know (a tagged
/// snapshot as a snapshot of its origin), `missing` on records whose LV is gone.
fn lvm_scan(tx: &mut Tx<'_>, sr: &str, lvm: &LvmSr) -> Result<(), ApiError> {
    let lvs = lvm.scan().map_err(|e| api_error(&e))?;
    let mut known = BTreeMap::new();
    for vdi in refs(tx, "SR", sr, "VDIs")? {
        known.insert(text(tx, "VDI", &vdi, "location")?, vdi);
    }
    let mut by_name = BTreeMap::new();
    let mut found = Vec::new();
    for lv in &lvs {
        let vdi = match known.remove(&lv.info.name) {
            Some(vdi) => vdi,
            None => {
                let r = tx.create(
                    "VDI",
                    BTreeMap::from([
                        ("uuid".to_owned(), Value::String(lv.info.uuid.clone())),
                        ("name_label".to_owned(), Value::from("")),
                        ("SR".to_owned(), Value::from(sr)),
                        ("virtual_size".to_owned(), size(lv.info.virtual_size)),
                        ("type".to_owned(), Value::from("user")),
                        ("read_only".to_owned(), Value::Bool(lv.snapshot)),
                    ]),
                )?;
                found.push((r.clone(), lv));
                r
            }
        };
        record_lv(tx, &vdi, lv)?;
        tx.set("VDI", &vdi, "missing", Value::Bool(false))?;
        by_name.insert(lv.info.name.clone(), vdi);
    }
    for (vdi, lv) in found {
        let origin = lv.info.parent.as_ref().and_then(|o| by_name.get(o));
        if let (true, Some(origin)) = (lv.snapshot, origin) {
            tx.set("VDI", &vdi, "is_a_snapshot", Value::Bool(true))?;
            tx.set("VDI", &vdi, "snapshot_of", Value::String(origin.clone()))?;
        }
    }
    for (name, vdi) in known {
        tracing::warn!("SR {sr}: the LV of VDI {vdi} ({name}) is missing");
        tx.set("VDI", &vdi, "missing", Value::Bool(true))?;
    }
    refresh_sr(tx, sr)
}

/// At fvd's start: attaches again the NFS and LVM SRs whose PBD says attached, since a
/// reboot of the host unmounted or deactivated them (a plug of what is attached changes
/// nothing). Failures are logged: the PBD then says detached.
pub fn replug(db: &Db) {
    let pbds = db.read(|tx| {
        let mut out = Vec::new();
        for pbd in tx.refs("PBD")? {
            let sr = text(tx, "PBD", &pbd, "SR")?;
            let attached = matches!(
                tx.get("PBD", &pbd, "currently_attached")?,
                Value::Bool(true)
            );
            if attached && matches!(text(tx, "SR", &sr, "type")?.as_str(), "nfs" | "lvm") {
                out.push(pbd);
            }
        }
        Ok(out)
    });
    for pbd in pbds.unwrap_or_default() {
        if let Err(e) = db.write(|tx| pbd_plug(tx, &pbd, true)) {
            tracing::warn!("PBD {pbd}: attaching its SR again failed: {e:?}");
            let _ = db.write(|tx| tx.set("PBD", &pbd, "currently_attached", Value::Bool(false)));
        }
    }
}

/// `PBD.plug` (the SR attached: interrupted operations of fv-sr finished or undone; an ISO
/// library scanned) and `PBD.unplug` (refused while a VM uses a disk of the SR).
pub fn pbd_plug(tx: &mut Tx<'_>, pbd: &str, plug: bool) -> Result<(), ApiError> {
    let sr = text(tx, "PBD", pbd, "SR")?;
    let is_nfs = text(tx, "SR", &sr, "type")? == "nfs";
    if plug && is_nfs {
        let (server, path, version) = nfs_settings(&tx.get("PBD", pbd, "device_config")?)?;
        nfs_attach(
            &text(tx, "SR", &sr, "uuid")?,
            &server,
            &path,
            &version,
            false,
        )?;
    }
    if plug {
        match driver(tx, &sr)? {
            Driver::File(f) => {
                f.recover().map_err(|e| api_error(&e))?;
            }
            Driver::Iso(iso) => iso_scan(tx, &sr, &iso)?,
            Driver::Lvm(lvm) => {
                let vg = lvm.vg().to_owned();
                let lvm = LvmSr::open(&vg).map_err(|e| api_error(&e))?;
                lvm_scan(tx, &sr, &lvm)?;
            }
        }
        refresh_sr(tx, &sr)?;
    } else {
        for vdi in refs(tx, "SR", &sr, "VDIs")? {
            require_unattached(tx, &vdi, "unplug")?;
        }
        if text(tx, "SR", &sr, "type")? == "lvm" {
            if let Driver::Lvm(lvm) = driver(tx, &sr)? {
                lvm.deactivate().map_err(|e| api_error(&e))?;
            }
        }
        if is_nfs {
            nfs_detach(&text(tx, "SR", &sr, "uuid")?)?;
        }
    }
    tx.set("PBD", pbd, "currently_attached", Value::Bool(plug))
}
