//! XAPI's VDI import and export over HTTP, on file SRs (thin qcow2 VDIs):
//!
//! - `PUT /import_raw_vdi?session_id=..&vdi=..[&format=raw|vhd|qcow2][&task_id=..]`: writes
//!   the request body into an existing VDI (`vdi` is a reference or a uuid). `raw` is the
//!   disk's bytes, streamed straight into the VDI; `qcow2` and `vhd` (fixed or dynamic)
//!   images are received into a temporary file in the SR's directory (bounded by the VDI's
//!   size plus metadata, and by the free space), checked, then copied in. A qcow2 image with
//!   a backing file and a differencing VHD are refused (their parent would be a file of the
//!   host). Only non-zero data is written, so the VDI stays thin; where the image reads as
//!   zeroes but the VDI holds data, zeroes are written (as zero clusters). An image smaller
//!   than the VDI leaves the VDI's tail as it was, as XAPI's raw import does.
//! - `GET /export_raw_vdi?session_id=..&vdi=..[&format=raw|vhd|qcow2][&task_id=..]`: the
//!   VDI's data read through its chain: `raw` streamed (zero stretches without reading),
//!   `vhd` as a dynamic VHD streamed (blocks holding data only), `qcow2` as a standalone
//!   thin image laid out ahead (`qcow2_out`) and streamed (clusters holding data only).
//!
//! Each transfer runs under a task (`task_id`, which must be pending, or a new one), named
//! in the response's `task-id` header, with `progress` from 0 to 1; `task.cancel` stops it
//! within a fraction of a second (an export's connection is then cut). A cancelled or
//! failed `qcow2` or `vhd` import leaves the VDI untouched if it stops while the image is
//! uploaded or checked; once the copy into the VDI has begun, and for `raw` (streamed), the
//! VDI keeps what was written (XAPI promises no more).
//!
//! Auth as XAPI's handlers: a `session_id` parameter or HTTP basic auth, on TCP and on the
//! local socket alike; both calls need the vm-admin role (XAPI's `put_import_raw_vdi` and
//! `get_export_raw_vdi` HTTP actions). Errors are short plain text: 401 (no or bad
//! credentials), 403 (role), 400 (bad query or image), 404 (no such VDI; an unknown format,
//! as XAPI answers it), 409 (an import into a disk a running VM has open), 413 (an upload
//! larger than the VDI or than the space for it), 500 (anything else, a cancel included).
//!
//! An import holds its VDI (`vdi_busy`): until it ends, snapshot, clone, resize, destroy,
//! copy and VM.start on it answer `OTHER_OPERATION_IN_PROGRESS`, and an import into a VDI
//! another import or a starting VM holds gets 409.
//!
//! An export of a running VM's disk is allowed, as in XAPI: it reads a moving target (what
//! the guest writes meanwhile may or may not be in it), so it is not a consistent snapshot.

mod qcow2_out;
mod vhd;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use fv_disk::{DiskError, DiskFile, Extent};
use fv_xapi::auth::Caller;
use fv_xapi::db::codec::new_uuid;
use fv_xapi::error::codes;
use fv_xapi::model::Role;
use fv_xapi::{task, Api, ApiError, Value};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::fields::{map_get, refs, text};
use crate::http_auth::{authenticate, credentials, query_pairs};
use vhd::{VhdLayout, VhdReader};

/// Bytes moved at a time.
const CHUNK: usize = 1 << 20;
/// Zero detection granularity: a qcow2 cluster (64 KiB).
const BLOCK: usize = 64 << 10;
/// How often a transfer writes its progress and looks for a cancel.
const TICK: Duration = Duration::from_millis(200);
static ZEROS: [u8; CHUNK] = [0; CHUNK];
static FULL_BITMAP: [u8; 512] = [0xff; 512];

/// The transfer routes, to merge into the API's router.
pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/import_raw_vdi", put(import))
        .route("/export_raw_vdi", get(export))
        .with_state(api)
}

/// Why a transfer was refused or failed; each is an HTTP status and ends the task.
#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the transfer was cancelled (task {0})")]
    Cancelled(String),
    #[error("{0}")]
    Internal(String),
}

impl TransferError {
    fn status(&self) -> StatusCode {
        match self {
            TransferError::BadRequest(_) => StatusCode::BAD_REQUEST,
            TransferError::Forbidden(_) => StatusCode::FORBIDDEN,
            TransferError::NotFound(_) => StatusCode::NOT_FOUND,
            TransferError::InUse(_) => StatusCode::CONFLICT,
            TransferError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            TransferError::Cancelled(_) | TransferError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// What the task's `error_info` says.
    fn api_error(&self) -> ApiError {
        match self {
            TransferError::Cancelled(t) => ApiError::new(&codes::TASK_CANCELLED, [t]),
            TransferError::InUse(why) => ApiError::new(&codes::VDI_IN_USE, ["", why]),
            other => ApiError::internal(other),
        }
    }

    fn internal(what: &'static str) -> impl Fn(DiskError) -> TransferError {
        move |e| TransferError::Internal(format!("{what}: {e}"))
    }

    fn io(what: &'static str) -> impl Fn(std::io::Error) -> TransferError {
        move |e| TransferError::Internal(format!("{what}: {e}"))
    }
}

impl From<ApiError> for TransferError {
    fn from(e: ApiError) -> Self {
        let text = e.description().join(" ");
        match e.code {
            c if c == codes::HANDLE_INVALID.name || c == codes::UUID_INVALID.name => {
                TransferError::NotFound(text)
            }
            c if c == codes::VDI_IN_USE.name || c == codes::OTHER_OPERATION_IN_PROGRESS.name => {
                TransferError::InUse(text)
            }
            c if c == codes::OPERATION_NOT_ALLOWED.name => TransferError::BadRequest(text),
            _ => TransferError::Internal(text),
        }
    }
}

fn plain(status: StatusCode, task: Option<&str>, body: String) -> Response {
    let mut r = crate::http_auth::text(status, body);
    if let Some(v) = task.and_then(|t| HeaderValue::from_str(t).ok()) {
        r.headers_mut()
            .insert(HeaderName::from_static("task-id"), v);
    }
    r
}

/// The formats of `format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Raw,
    Vhd,
    Qcow2,
}

impl Format {
    /// `raw` when absent; an unknown name is a 404, as XAPI answers it.
    fn parse(s: Option<&str>) -> Result<Format, TransferError> {
        match s.map(str::to_ascii_lowercase).as_deref() {
            None | Some("raw") => Ok(Format::Raw),
            Some("vhd") => Ok(Format::Vhd),
            Some("qcow2") => Ok(Format::Qcow2),
            Some("tar") => Err(TransferError::BadRequest(
                "format=tar is not supported: use raw, vhd or qcow2".into(),
            )),
            Some(other) => Err(TransferError::NotFound(format!(
                "Unknown format {other}: use raw, vhd or qcow2"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vhd => "vhd",
            Format::Qcow2 => "qcow2",
        }
    }

    /// XAPI's content types.
    fn content_type(self) -> &'static str {
        match self {
            Format::Raw => "application/octet-stream",
            Format::Vhd => "application/vhd",
            Format::Qcow2 => "application/x-qemu-disk",
        }
    }
}

/// The last value of query parameter `key`.
fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The VDI a transfer works on, and its task.
#[derive(Clone, Debug)]
struct Target {
    vdi: String,
    uuid: String,
    /// The VDI's file.
    file: PathBuf,
    /// The SR's directory, where temporary images go.
    sr_dir: PathBuf,
    task: String,
    /// An import's hold on the VDI: nothing else touches it until the import ends.
    _claim: Option<std::sync::Arc<crate::vdi_busy::Claim>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Import,
    Export,
}

/// Checks the caller's role, finds the VDI and the task (a new one unless `task_id` names a
/// pending one). Once the task is known, a refusal also ends it.
fn prepare(
    api: &Api,
    caller: &Caller,
    pairs: &[(String, String)],
    op: Op,
) -> Result<Target, TransferError> {
    let action = match op {
        Op::Import => "put_import_raw_vdi",
        Op::Export => "get_export_raw_vdi",
    };
    if caller.role < Role::VmAdmin {
        return Err(TransferError::Forbidden(format!(
            "RBAC_PERMISSION_DENIED: {action} needs the {} role; {} has {}",
            Role::VmAdmin.name(),
            caller.user,
            caller.role.name()
        )));
    }
    let db = api.db();
    let task = match param(pairs, "task_id") {
        Some(t) => match task::status(db, t) {
            Ok(task::Status::Pending) => t.to_owned(),
            Ok(s) => {
                return Err(TransferError::BadRequest(format!(
                    "task {t} is {}, not pending",
                    s.name()
                )))
            }
            Err(_) => return Err(TransferError::NotFound(format!("no task {t}"))),
        },
        None => {
            let label = match op {
                Op::Import => "VDI.import_raw_vdi",
                Op::Export => "VDI.export_raw_vdi",
            };
            task::create(db, label, "", None)?
        }
    };
    let found = find_vdi(api, pairs, op, &task);
    if let Err(e) = &found {
        let _ = task::fail(db, &task, &e.api_error());
    }
    found
}

fn find_vdi(
    api: &Api,
    pairs: &[(String, String)],
    op: Op,
    task: &str,
) -> Result<Target, TransferError> {
    let Some(given) = param(pairs, "vdi") else {
        return Err(TransferError::BadRequest(
            "the vdi query parameter (a VDI reference or uuid) is missing".into(),
        ));
    };
    if op == Op::Export && param(pairs, "base").is_some() {
        return Err(TransferError::BadRequest(
            "base= (an export of the differences from another VDI) is not supported yet".into(),
        ));
    }
    let vdi = api.db().read(|tx| {
        if given.starts_with("OpaqueRef:") {
            if !tx.exists("VDI", given)? {
                return Err(ApiError::handle_invalid("VDI", given));
            }
            Ok(given.to_owned())
        } else {
            tx.by_uuid("VDI", given)
        }
    })?;
    // Claimed before the checks below, so that a VM start (which claims its disks too)
    // cannot slip in between them and the writes.
    let claim = match op {
        Op::Import => Some(std::sync::Arc::new(crate::vdi_busy::claim(
            std::slice::from_ref(&vdi),
            "import",
        )?)),
        Op::Export => None,
    };
    let target = api.db().read(|tx| {
        let not_allowed = |why: String| ApiError::new(&codes::OPERATION_NOT_ALLOWED, [why]);
        let format = map_get(&tx.get("VDI", &vdi, "sm_config")?, "type");
        if format.as_deref() != Some("qcow2") {
            return Err(not_allowed(format!(
                "VDI {given} is not a disk of a file SR (its format is {}): only those can be \
                 imported and exported",
                format.as_deref().unwrap_or("unknown")
            )));
        }
        if op == Op::Import {
            if tx.get("VDI", &vdi, "read_only")? == Value::Bool(true) {
                return Err(not_allowed(format!("VDI {given} is read-only")));
            }
            for vbd in refs(tx, "VDI", &vdi, "VBDs")? {
                let vm = text(tx, "VBD", &vbd, "VM")?;
                let state = text(tx, "VM", &vm, "power_state")?;
                if state == "Running" || state == "Paused" {
                    return Err(ApiError::new(
                        &codes::VDI_IN_USE,
                        [
                            vdi.as_str(),
                            &format!("import: VM {vm} is {state} with the VDI attached"),
                        ],
                    ));
                }
            }
        }
        let sr = text(tx, "VDI", &vdi, "SR")?;
        let sr_dir = crate::vm::sr_path(tx, &sr)?;
        let location = text(tx, "VDI", &vdi, "location")?;
        if location.is_empty() || location.contains('/') || location.starts_with('.') {
            return Err(ApiError::internal(format!(
                "VDI {vdi} has a bad location {location:?}"
            )));
        }
        Ok(Target {
            uuid: text(tx, "VDI", &vdi, "uuid")?,
            file: sr_dir.join(&location),
            sr_dir,
            vdi: vdi.clone(),
            task: task.to_owned(),
            _claim: None,
        })
    })?;
    Ok(Target {
        _claim: claim,
        ..target
    })
}

/// Progress on the task, written and checked for a cancel at most every [`TICK`]; the
/// current phase maps 0..1 onto `from..to` of the whole.
struct Progress {
    api: Api,
    task: String,
    last: Instant,
    from: f64,
    to: f64,
}

impl Progress {
    fn new(api: &Api, task: &str) -> Progress {
        Progress {
            api: api.clone(),
            task: task.to_owned(),
            last: Instant::now()
                .checked_sub(TICK)
                .unwrap_or_else(Instant::now),
            from: 0.0,
            to: 1.0,
        }
    }

    fn phase(&mut self, from: f64, to: f64) {
        self.from = from;
        self.to = to;
    }

    /// `done` of `total` of this phase; `Cancelled` once the task is being cancelled.
    fn at(&mut self, done: u64, total: u64) -> Result<(), TransferError> {
        if self.last.elapsed() < TICK {
            return Ok(());
        }
        self.last = Instant::now();
        let f = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let p = (self.from + (self.to - self.from) * f.clamp(0.0, 1.0)).min(0.99);
        let db = self.api.db();
        let _ = task::set_progress(db, &self.task, p);
        if task::cancel_requested(db, &self.task).unwrap_or(false) {
            return Err(TransferError::Cancelled(self.task.clone()));
        }
        Ok(())
    }
}

/// Ends the task as the transfer ended.
fn end_task(api: &Api, t: &Target, result: Result<&Value, &TransferError>) {
    let db = api.db();
    let done = match result {
        Ok(v) => task::succeed(db, &t.task, v),
        Err(e) => task::fail(db, &t.task, &e.api_error()),
    };
    if let Err(e) = done {
        tracing::warn!("ending task {}: {e:?}", t.task);
    }
    match result {
        Ok(_) => tracing::info!("VDI {} transfer done (task {})", t.uuid, t.task),
        Err(e) => tracing::warn!("VDI {} transfer failed (task {}): {e}", t.uuid, t.task),
    }
}

// ---- Writing into a VDI -----------------------------------------------------------------

/// Makes `len` bytes at `at` of `dst` read as zeroes, writing only where it shows data.
fn zero_range(dst: &dyn DiskFile, at: u64, len: u64) -> Result<(), DiskError> {
    let end = at + len;
    let mut cur = at;
    while cur < end {
        let (kind, n) = dst.extent(cur, end - cur, usize::MAX)?;
        if n == 0 {
            break;
        }
        if kind != Extent::Zero {
            dst.write_zeroes(cur, n)?;
        }
        cur += n;
    }
    Ok(())
}

/// Writes `data` at `offset` of `dst`, by 64 KiB blocks: runs of non-zero blocks as data,
/// zero blocks as zeroes only where `dst` shows data (so a fresh VDI stays thin).
fn write_data(dst: &dyn DiskFile, data: &[u8], offset: u64) -> Result<(), DiskError> {
    let mut start = 0;
    while start < data.len() {
        let end = (start + BLOCK).min(data.len());
        if data[start..end].iter().any(|&b| b != 0) {
            let mut run_end = end;
            while run_end < data.len() {
                let next = (run_end + BLOCK).min(data.len());
                if data[run_end..next].iter().all(|&b| b == 0) {
                    break;
                }
                run_end = next;
            }
            dst.write_at(&data[start..run_end], offset + start as u64)?;
            start = run_end;
        } else {
            zero_range(dst, offset + start as u64, (end - start) as u64)?;
            start = end;
        }
    }
    Ok(())
}

/// An image to read from: an uploaded qcow2 or VHD, or a VDI.
trait Source {
    fn size(&self) -> u64;
    /// Whether data may be stored from `at` (else it reads as zeroes), for how many bytes.
    fn extent(&mut self, at: u64, max: u64) -> Result<(bool, u64), TransferError>;
    fn read_at(&mut self, buf: &mut [u8], at: u64) -> Result<(), TransferError>;
}

/// A disk through fv-disk; errors are the client's (`untrusted`: an upload) or ours.
struct DiskSource {
    disk: Box<dyn DiskFile>,
    untrusted: bool,
}

impl DiskSource {
    fn err(&self, e: DiskError) -> TransferError {
        if self.untrusted {
            TransferError::BadRequest(format!("the uploaded image cannot be read: {e}"))
        } else {
            TransferError::Internal(format!("reading the VDI: {e}"))
        }
    }
}

impl Source for DiskSource {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn extent(&mut self, at: u64, max: u64) -> Result<(bool, u64), TransferError> {
        match self.disk.extent(at, max, usize::MAX) {
            Ok((kind, n)) => Ok((kind != Extent::Zero, n)),
            Err(e) => Err(self.err(e)),
        }
    }

    fn read_at(&mut self, buf: &mut [u8], at: u64) -> Result<(), TransferError> {
        self.disk.read_at(buf, at).map_err(|e| self.err(e))
    }
}

impl Source for VhdReader {
    fn size(&self) -> u64 {
        VhdReader::size(self)
    }

    fn extent(&mut self, at: u64, max: u64) -> Result<(bool, u64), TransferError> {
        VhdReader::extent(self, at, max).map_err(bad_vhd)
    }

    fn read_at(&mut self, buf: &mut [u8], at: u64) -> Result<(), TransferError> {
        VhdReader::read_at(self, buf, at).map_err(bad_vhd)
    }
}

fn bad_vhd(why: String) -> TransferError {
    TransferError::BadRequest(format!("not a valid VHD image: {why}"))
}

/// Makes the first `src.size()` bytes of `dst` read as `src` reads.
fn copy(
    src: &mut dyn Source,
    dst: &dyn DiskFile,
    progress: &mut Progress,
) -> Result<(), TransferError> {
    let size = src.size();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < size {
        let (data, n) = src.extent(at, size - at)?;
        if n == 0 {
            break;
        }
        if data {
            let mut pos = at;
            while pos < at + n {
                // Pieces aligned on CHUNK, so zero detection sees whole clusters.
                let len = (at + n - pos).min(CHUNK as u64 - pos % CHUNK as u64) as usize;
                src.read_at(&mut buf[..len], pos)?;
                write_data(dst, &buf[..len], pos)
                    .map_err(TransferError::internal("writing the VDI"))?;
                pos += len as u64;
                progress.at(pos, size)?;
            }
        } else {
            zero_range(dst, at, n).map_err(TransferError::internal("writing the VDI"))?;
        }
        at += n;
        progress.at(at, size)?;
    }
    Ok(())
}

/// What the request handler passes the worker: the body's pieces, or why it broke off.
type Upload = mpsc::Receiver<Result<Bytes, String>>;

fn next_piece(rx: &mut Upload) -> Result<Option<Bytes>, TransferError> {
    match rx.blocking_recv() {
        None => Ok(None),
        Some(Ok(b)) => Ok(Some(b)),
        Some(Err(e)) => Err(TransferError::BadRequest(e)),
    }
}

/// A raw upload, streamed into the VDI by aligned 1 MiB pieces.
fn import_raw(
    dst: &dyn DiskFile,
    rx: &mut Upload,
    expected: u64,
    progress: &mut Progress,
) -> Result<(), TransferError> {
    let size = dst.size();
    let too_large =
        || TransferError::TooLarge(format!("the upload is larger than the VDI ({size} bytes)"));
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut base = 0u64;
    while let Some(mut piece) = next_piece(rx)? {
        if base + (buf.len() + piece.len()) as u64 > size {
            return Err(too_large());
        }
        while !piece.is_empty() {
            let take = (CHUNK - buf.len()).min(piece.len());
            buf.extend_from_slice(&piece[..take]);
            piece = piece.slice(take..);
            if buf.len() == CHUNK {
                write_data(dst, &buf, base).map_err(TransferError::internal("writing the VDI"))?;
                base += CHUNK as u64;
                buf.clear();
                progress.at(base, expected)?;
            }
        }
    }
    if !buf.is_empty() {
        write_data(dst, &buf, base).map_err(TransferError::internal("writing the VDI"))?;
    }
    dst.flush()
        .map_err(TransferError::internal("flushing the VDI"))
}

/// A file of ours in the SR directory, named `.<tag>-<uuid>.tmp` (fv-sr's temporary
/// names), locked while it lives (so fv-sr's recovery leaves it alone), removed on drop.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn path_in(dir: &Path, tag: &str) -> PathBuf {
        dir.join(format!(".{tag}-{}.tmp", new_uuid()))
    }

    /// A new, empty file.
    fn create(dir: &Path, tag: &str) -> Result<TempFile, TransferError> {
        let path = Self::path_in(dir, tag);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(TransferError::io("creating a temporary file in the SR"))?;
        Self::adopt(path, file)
    }

    fn adopt(path: PathBuf, file: File) -> Result<TempFile, TransferError> {
        let t = TempFile { path, file };
        t.file
            .lock()
            .map_err(TransferError::io("locking a temporary file"))?;
        Ok(t)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How many bytes an uploaded image of a VDI of `size` bytes may take: its data plus
/// generous metadata, and no more than the SR's free space (less a margin).
fn upload_limit(sr_dir: &Path, size: u64) -> Result<u64, TransferError> {
    const MARGIN: u64 = 64 << 20;
    let sr = fv_sr::FileSr::open(sr_dir)
        .map_err(|e| TransferError::Internal(format!("opening the SR: {e}")))?;
    let free = match (sr.physical_size(), sr.physical_utilisation()) {
        (Ok(total), Ok(used)) => total.saturating_sub(used),
        (Err(e), _) | (_, Err(e)) => {
            return Err(TransferError::Internal(format!("the SR's free space: {e}")))
        }
    };
    Ok(size
        .saturating_add(size / 16)
        .saturating_add(MARGIN)
        .min(free.saturating_sub(MARGIN)))
}

/// Receives the upload into `file`; returns its length.
fn receive(
    rx: &mut Upload,
    file: &File,
    limit: u64,
    expected: u64,
    progress: &mut Progress,
) -> Result<u64, TransferError> {
    let mut out = BufWriter::with_capacity(CHUNK, file);
    let mut n = 0u64;
    while let Some(piece) = next_piece(rx)? {
        n += piece.len() as u64;
        if n > limit {
            return Err(TransferError::TooLarge(format!(
                "the upload is over {limit} bytes, the most an image for this VDI may take \
                 here (its size plus metadata, within the SR's free space)"
            )));
        }
        out.write_all(&piece)
            .map_err(TransferError::io("writing a temporary file in the SR"))?;
        progress.at(n, expected)?;
    }
    out.flush()
        .map_err(TransferError::io("writing a temporary file in the SR"))?;
    Ok(n)
}

/// The import's work, on a blocking thread.
fn run_import(
    api: &Api,
    t: &Target,
    format: Format,
    declared: Option<u64>,
    mut rx: Upload,
) -> Result<(), TransferError> {
    let mut progress = Progress::new(api, &t.task);
    let dst = fv_disk::open_disk(&t.file, Some(fv_disk::Format::Qcow2), false)
        .map_err(TransferError::internal("opening the VDI"))?;
    let size = dst.size();
    if format == Format::Raw {
        if let Some(n) = declared.filter(|n| *n > size) {
            return Err(TransferError::TooLarge(format!(
                "the upload ({n} bytes) is larger than the VDI ({size} bytes)"
            )));
        }
        return import_raw(&*dst, &mut rx, declared.unwrap_or(size), &mut progress);
    }
    let limit = upload_limit(&t.sr_dir, size)?;
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err(TransferError::TooLarge(format!(
            "the upload ({n} bytes) is over {limit} bytes, the most an image for this VDI \
             may take here (its size plus metadata, within the SR's free space)"
        )));
    }
    let tmp = TempFile::create(&t.sr_dir, "import")?;
    progress.phase(0.0, 0.5);
    let len = receive(
        &mut rx,
        &tmp.file,
        limit,
        declared.unwrap_or(size),
        &mut progress,
    )?;
    drop(rx);
    progress.phase(0.5, 1.0);
    let mut src: Box<dyn Source> = match format {
        Format::Qcow2 => {
            let bad = |e: DiskError| {
                TransferError::BadRequest(format!("not a valid qcow2 image: {}", e.kind_text()))
            };
            let info = fv_disk::qcow2_info(&tmp.path).map_err(bad)?;
            if let Some(b) = info.backing {
                return Err(TransferError::BadRequest(format!(
                    "the qcow2 image has a backing file ({b:?}); upload a standalone image \
                     (qemu-img convert -O qcow2 makes one)"
                )));
            }
            let disk =
                fv_disk::open_disk(&tmp.path, Some(fv_disk::Format::Qcow2), true).map_err(bad)?;
            Box::new(DiskSource {
                disk,
                untrusted: true,
            })
        }
        _ => {
            let file = tmp
                .file
                .try_clone()
                .map_err(TransferError::io("reopening the upload"))?;
            Box::new(VhdReader::open(file, len).map_err(bad_vhd)?)
        }
    };
    if src.size() > size {
        return Err(TransferError::TooLarge(format!(
            "the image's virtual size ({} bytes) is larger than the VDI ({size} bytes)",
            src.size()
        )));
    }
    copy(&mut *src, &*dst, &mut progress)?;
    dst.flush()
        .map_err(TransferError::internal("flushing the VDI"))
}

/// What a client's error message may say of a disk error: not our paths.
trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for DiskError {
    fn kind_text(&self) -> String {
        let full = self.to_string();
        let path = self.path().display().to_string();
        full.replace(&path, "the upload")
    }
}

async fn import(State(api): State<Api>, req: Request) -> Response {
    let pairs = query_pairs(req.uri().query());
    let caller = match authenticate(
        &api,
        credentials(&pairs, req.headers()),
        "fvd-import-raw-vdi",
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let format = match Format::parse(param(&pairs, "format")) {
        Ok(f) => f,
        Err(e) => return plain(e.status(), None, format!("{e}\n")),
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let target = {
        let api = api.clone();
        tokio::task::spawn_blocking(move || prepare(&api, &caller, &pairs, Op::Import)).await
    };
    let target = match target {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return plain(e.status(), None, format!("{e}\n")),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, None, format!("{e}\n")),
    };
    tracing::info!(
        "importing {} data into VDI {} (task {})",
        format.name(),
        target.uuid,
        target.task
    );
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(16);
    let worker = {
        let (api, t) = (api.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            let r =
                run_import(&api, &t, format, declared, rx).map(|()| Value::String(t.vdi.clone()));
            end_task(&api, &t, r.as_ref());
            r
        })
    };
    let mut body = req.into_body();
    loop {
        let item = match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Ok(data),
                Err(_) => continue,
            },
            Some(Err(e)) => Err(format!("the upload broke off: {e}")),
        };
        let broken = item.is_err();
        // The worker gone (it failed or was cancelled): stop reading.
        if tx.send(item).await.is_err() || broken {
            break;
        }
    }
    drop(tx);
    let result = worker
        .await
        .unwrap_or_else(|e| Err(TransferError::Internal(format!("the import failed: {e}"))));
    match result {
        Ok(v) => plain(
            StatusCode::OK,
            Some(&target.task),
            format!("{}\n", v.as_str().unwrap_or_default()),
        ),
        Err(e) => plain(e.status(), Some(&target.task), format!("{e}\n")),
    }
}

// ---- Export -----------------------------------------------------------------------------

/// An export ready to stream.
enum Export {
    Raw(Box<dyn DiskFile>),
    Vhd(Box<dyn DiskFile>, VhdLayout),
    /// A standalone image, laid out ahead and streamed from the VDI.
    Qcow2(Box<dyn DiskFile>, qcow2_out::Qcow2Layout),
}

impl Export {
    fn len(&self) -> Result<u64, TransferError> {
        Ok(match self {
            Export::Raw(d) => d.size(),
            Export::Vhd(_, l) => l.len(),
            Export::Qcow2(_, l) => l.len(),
        })
    }
}

/// Opens the VDI and, for `vhd` and `qcow2`, finds the blocks that hold data (from the
/// chain's allocation, without reading them).
fn prepare_export(t: &Target, format: Format) -> Result<Export, TransferError> {
    let disk = fv_disk::open_disk(&t.file, Some(fv_disk::Format::Qcow2), true)
        .map_err(TransferError::internal("opening the VDI"))?;
    let size = disk.size();
    match format {
        Format::Raw => Ok(Export::Raw(disk)),
        Format::Vhd => {
            if size > vhd::MAX_SIZE {
                return Err(TransferError::BadRequest(format!(
                    "VDI_TOO_LARGE: the VDI ({size} bytes) is over the VHD format's limit of {} \
                     bytes; export it as qcow2 or raw",
                    vhd::MAX_SIZE
                )));
            }
            let blocks = size.div_ceil(vhd::BLOCK);
            let mut allocated = Vec::new();
            for i in 0..blocks {
                let (start, end) = (i * vhd::BLOCK, ((i + 1) * vhd::BLOCK).min(size));
                let mut at = start;
                let mut data = false;
                while at < end && !data {
                    let (kind, n) = disk
                        .extent(at, end - at, usize::MAX)
                        .map_err(TransferError::internal("reading the VDI"))?;
                    if n == 0 {
                        break;
                    }
                    data = kind != Extent::Zero;
                    at += n;
                }
                allocated.push(data);
            }
            Ok(Export::Vhd(disk, VhdLayout { size, allocated }))
        }
        Format::Qcow2 => {
            // The clusters that hold data, from the chain's allocation: nothing is read yet.
            let mut data = Vec::new();
            let mut at = 0;
            while at < size {
                let (kind, n) = disk
                    .extent(at, size - at, usize::MAX)
                    .map_err(TransferError::internal("reading the VDI"))?;
                if n == 0 {
                    break;
                }
                if kind != Extent::Zero {
                    let first = at / qcow2_out::CLUSTER;
                    let last = (at + n).div_ceil(qcow2_out::CLUSTER);
                    let from = data.last().map_or(first, |l: &u64| first.max(l + 1));
                    data.extend(from..last);
                }
                at += n;
            }
            Ok(Export::Qcow2(disk, qcow2_out::Qcow2Layout::new(size, data)))
        }
    }
}

type Sink = mpsc::Sender<Result<Bytes, std::io::Error>>;

fn send(tx: &Sink, b: Bytes) -> Result<(), TransferError> {
    tx.blocking_send(Ok(b))
        .map_err(|_| TransferError::BadRequest("the client went away".into()))
}

/// Sends `from..to` of `disk` (zeroes past its end), reading only what holds data.
fn send_range(
    disk: &dyn DiskFile,
    from: u64,
    to: u64,
    tx: &Sink,
    progress: &mut Progress,
    total: u64,
) -> Result<(), TransferError> {
    let size = disk.size();
    let mut at = from;
    while at < to {
        let (kind, n) = if at >= size {
            (Extent::Zero, to - at)
        } else {
            let (k, n) = disk
                .extent(at, to.min(size) - at, usize::MAX)
                .map_err(TransferError::internal("reading the VDI"))?;
            if n == 0 {
                (Extent::Zero, to - at)
            } else {
                (k, n)
            }
        };
        let end = at + n;
        while at < end {
            let len = (end - at).min(CHUNK as u64 - at % CHUNK as u64) as usize;
            let piece = if kind == Extent::Zero {
                Bytes::from_static(&ZEROS[..len])
            } else {
                let mut buf = vec![0u8; len];
                disk.read_at(&mut buf, at)
                    .map_err(TransferError::internal("reading the VDI"))?;
                Bytes::from(buf)
            };
            send(tx, piece)?;
            at += len as u64;
            progress.at(at, total)?;
        }
    }
    Ok(())
}

/// Streams the export into `tx`.
fn stream(export: Export, tx: &Sink, progress: &mut Progress) -> Result<(), TransferError> {
    match export {
        Export::Raw(disk) => {
            let size = disk.size();
            send_range(&*disk, 0, size, tx, progress, size)
        }
        Export::Vhd(disk, layout) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut id = [0u8; 16];
            getrandom::fill(&mut id)
                .map_err(|e| TransferError::Internal(format!("no randomness: {e}")))?;
            let footer = Bytes::from(layout.footer(now, id));
            let head = Bytes::from(layout.head(&footer));
            let mut at = 0;
            while at < head.len() {
                let n = CHUNK.min(head.len() - at);
                send(tx, head.slice(at..at + n))?;
                at += n;
            }
            let blocks = layout.allocated.len() as u64;
            for (i, _) in layout.allocated.iter().enumerate().filter(|(_, a)| **a) {
                let start = i as u64 * vhd::BLOCK;
                send(tx, Bytes::from_static(&FULL_BITMAP))?;
                // Progress counts blocks, stored or not.
                let total = blocks * vhd::BLOCK;
                send_range(&*disk, start, start + vhd::BLOCK, tx, progress, total)?;
            }
            send(tx, footer)
        }
        Export::Qcow2(disk, layout) => {
            let head = Bytes::from(layout.head());
            let mut at = 0;
            while at < head.len() {
                let n = CHUNK.min(head.len() - at);
                send(tx, head.slice(at..at + n))?;
                at += n;
            }
            // Progress is the position in the disk, as for VHD.
            let size = disk.size();
            let cluster = qcow2_out::CLUSTER;
            for c in layout.data_clusters() {
                send_range(&*disk, c * cluster, (c + 1) * cluster, tx, progress, size)?;
            }
            Ok(())
        }
    }
}

/// A response body fed by the export's worker through a channel; its exact length is
/// known, so hyper sends a `Content-Length` and cuts the connection if the worker stops
/// early (a cancel, an error).
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    len: u64,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

async fn export(State(api): State<Api>, req: Request) -> Response {
    let pairs = query_pairs(req.uri().query());
    let caller = match authenticate(
        &api,
        credentials(&pairs, req.headers()),
        "fvd-export-raw-vdi",
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let format = match Format::parse(param(&pairs, "format")) {
        Ok(f) => f,
        Err(e) => return plain(e.status(), None, format!("{e}\n")),
    };
    let prepared = {
        let api = api.clone();
        tokio::task::spawn_blocking(move || {
            let t = prepare(&api, &caller, &pairs, Op::Export).map_err(|e| (e, None))?;
            let progress = Progress::new(&api, &t.task);
            let export = prepare_export(&t, format).and_then(|e| {
                let len = e.len()?;
                Ok((e, len))
            });
            match export {
                Ok((e, len)) => Ok((t, e, len, progress)),
                Err(e) => {
                    end_task(&api, &t, Err(&e));
                    Err((e, Some(t.task)))
                }
            }
        })
        .await
    };
    let (target, export, len, mut progress) = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err((e, task))) => return plain(e.status(), task.as_deref(), format!("{e}\n")),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, None, format!("{e}\n")),
    };
    tracing::info!(
        "exporting VDI {} as {} ({len} bytes, task {})",
        target.uuid,
        format.name(),
        target.task
    );
    let (tx, rx) = mpsc::channel(4);
    {
        let (api, t) = (api.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            let r = stream(export, &tx, &mut progress).map(|()| Value::String(String::new()));
            if let Err(e) = &r {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
            end_task(&api, &t, r.as_ref());
        });
    }
    let mut r = Body::new(ChannelBody { rx, len }).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{}\"",
        target.uuid,
        format.name()
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&target.task) {
        h.insert(HeaderName::from_static("task-id"), v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_as_xapi_answers_them() {
        assert_eq!(Format::parse(None).unwrap(), Format::Raw);
        assert_eq!(Format::parse(Some("VHD")).unwrap(), Format::Vhd);
        assert_eq!(Format::parse(Some("qcow2")).unwrap(), Format::Qcow2);
        assert_eq!(
            Format::parse(Some("tar")).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Format::parse(Some("vmdk")).unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
    }
}
