//! The storage driver for file-based SRs (`ext`: a local directory; `nfs`: the same driver on
//! a mount, see [`nfs`]): qcow2 VDIs, thin, with snapshots, clones, copies, growth and
//! coalescing. ISO libraries ([`iso`]) and LVM SRs ([`lvm`]) have modules of their own.
//!
//! It knows nothing of the XenAPI database: it works on a directory and file names, and
//! returns what fvd must record ([`VdiInfo`]: the file name for `VDI.location`, sizes, the
//! parent for `sm_config`).
//!
//! # On-disk layout
//!
//! - `<uuid>.qcow2`: a VDI (`VDI.location`), always a leaf: no file has it as backing file.
//! - `<uuid>.base.qcow2`: a hidden, read-only *base copy* (XenServer's "base copy" VHD),
//!   backing file of one or more files of the SR, itself possibly on another base. Never
//!   written in place once it has children.
//! - Names starting with `.`: the driver's own (`.fv-sr.lock`, and `.<name>.tmp` files being
//!   built); everything else is ignored by [`FileSr::scan`], with the reason.
//!
//! Backing file names are stored bare (relative to the SR directory), so an NFS SR can be
//! mounted anywhere; a chain that names anything but a base copy of this SR is refused.
//!
//! **Snapshot and clone** (the same operation here; fvd's record says which is read-only):
//! two thin children of a new base name `B.base.qcow2` are built under `.tmp` names; the
//! VDI's file gets `B` as a second name (a hard link: its data, not a copy); one child is
//! linked in as the new VDI, the other replaces the VDI's name (atomic rename). The VDI keeps its file name and carries on from the data
//! as it was; the new VDI holds the same data, frozen in `B`. Instant whatever the size.
//!
//! ```text
//!   before:  A.qcow2 -> P.base.qcow2          after:  A.qcow2 (new, empty) --.
//!                                                      S.qcow2 (new, empty) --+-> B.base.qcow2 (A's old data) -> P.base.qcow2
//! ```
//!
//! **Destroy** removes the VDI's file, then each base copy left without children. A base left
//! with one child is a *coalesce candidate* ([`FileSr::coalesce`]): its data is merged into the
//! child, so snapshot chains stay short by themselves.
//!
//! # Crash safety
//!
//! Files are never rewritten in place except a VDI's own data (the guest's writes) and its
//! size (a grow); everything else is a new file built under a `.tmp` name, fsynced, then
//! linked or renamed into place (atomic), with the directory fsynced after each step. A crash
//! leaves at worst a `.tmp` file, a base copy without children, or a VDI still sharing its
//! file with a new base (a snapshot stopped between its steps); [`FileSr::recover`], run when
//! the SR is plugged, tidies all three. See [`FileSr::coalesce`] for its argument step by step.
//!
//! # Concurrency
//!
//! Metadata operations hold an exclusive `flock` on `.fv-sr.lock` (across processes and
//! across `FileSr` values); long data transfers (copy, coalesce) run outside it and re-check
//! before their final rename. A snapshot, clone or coalesce replaces a VDI's file: fvd must
//! not run them on a VDI a running VM has open for writing, unless it pauses the VM's disk and
//! reopens it afterwards (as XAPI does with tapdisk).

#![forbid(unsafe_code)]

mod error;
pub mod iso;
pub mod lvm;
mod names;
pub mod nfs;
mod transfer;

pub use error::{ErrorKind, SrError};

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use error::{disk_err, io_err};
use fv_disk::Format;
use names::Role;

/// A chain may be at most this long before a snapshot or clone adds to it (fv-disk opens
/// chains of up to 64 images).
const MAX_CHAIN: usize = 60;

/// A VDI file or base copy as fvd records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdiInfo {
    /// The file name in the SR directory: `VDI.location`.
    pub name: String,
    pub uuid: String,
    /// A base copy (hidden; XAPI's `managed = false` "base copy"), not a VDI of a client.
    pub hidden: bool,
    /// `VDI.virtual_size`, in bytes.
    pub virtual_size: u64,
    /// `VDI.physical_utilisation`: bytes the file occupies on the filesystem.
    pub physical_utilisation: u64,
    /// The base copy this file is a child of (`sm_config:vhd-parent` in XAPI), by file name.
    pub parent: Option<String>,
    /// `sm_config:type`: always `qcow2` here.
    pub format: &'static str,
}

/// What [`FileSr::snapshot`] and [`FileSr::clone_vdi`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// The VDI forked from: same name, now a fresh child of `base`.
    pub vdi: VdiInfo,
    /// The new VDI (the snapshot or clone), a child of `base`.
    pub new: VdiInfo,
    /// The new base copy, holding the data both share.
    pub base: VdiInfo,
}

/// What [`FileSr::destroy`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destroyed {
    /// File names removed: the VDI's, then base copies left without children.
    pub removed: Vec<String>,
    /// A base copy left with one child: run [`FileSr::coalesce`] on it (in the background;
    /// if the child is a VDI, only while no VM has it open for writing).
    pub coalesce: Option<CoalesceCandidate>,
}

/// A base copy with one child, which [`FileSr::coalesce`] can merge away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoalesceCandidate {
    pub base: String,
    pub child: String,
    /// The child is a VDI (a leaf, which a VM may have open) rather than another base copy
    /// (read-only, safe to coalesce at any time).
    pub child_is_vdi: bool,
}

/// What [`FileSr::coalesce`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coalesced {
    /// The child, now holding the base's data, on the base's parent.
    pub child: VdiInfo,
    /// The base copy removed.
    pub removed: String,
}

/// What [`FileSr::scan`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// VDIs and base copies (`hidden`), by name.
    pub vdis: Vec<VdiInfo>,
    /// Files that are not (usable) VDIs, with why: names that are not VDI names, symlinks,
    /// unreadable images, chains that leave the SR. The driver's own dot-files are not listed.
    pub ignored: Vec<(String, String)>,
}

/// What [`FileSr::recover`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Files removed: `.tmp` files of interrupted operations, base copies without children.
    pub removed: Vec<String>,
    /// VDIs whose interrupted snapshot or clone was completed.
    pub completed: Vec<String>,
}

/// An SR whose VDIs are qcow2 files in one directory.
#[derive(Debug)]
pub struct FileSr {
    dir: PathBuf,
}

/// The SR's metadata lock, held until dropped.
struct SrLock(#[allow(dead_code)] File);

/// A file being built under a `.tmp` name, locked so that [`FileSr::recover`] leaves it alone
/// while it lives; removed when dropped unless committed.
struct Tmp {
    path: PathBuf,
    lock: Option<File>,
}

impl Tmp {
    /// The file is in place under its final name (or must stay, as after a crash).
    fn keep(mut self) {
        self.lock = None;
        self.path = PathBuf::new();
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Files left out of a listing, with why.
type Ignored = Vec<(String, String)>;

/// A file of the SR as the directory and its header say.
struct Entry {
    name: String,
    role: Role,
    dev_ino: (u64, u64),
    blocks: u64,
    /// The header, or why it cannot be read.
    info: Result<fv_disk::Qcow2Info, String>,
}

impl Entry {
    fn backing(&self) -> Option<&str> {
        self.info.as_ref().ok().and_then(|i| i.backing.as_deref())
    }
}

/// Where a test stops an operation, as if the process died there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Crash(pub(crate) u32);

impl FileSr {
    /// The SR in directory `dir` (which must exist). Run [`FileSr::recover`] once when the SR
    /// is plugged, before anything else.
    pub fn open(dir: &Path) -> Result<FileSr, SrError> {
        let dir = fs::canonicalize(dir).map_err(io_err("open the SR directory", dir))?;
        let meta = fs::metadata(&dir).map_err(io_err("open the SR directory", &dir))?;
        if !meta.is_dir() {
            return Err(SrError::Io {
                op: "open the SR directory",
                path: dir,
                source: io::Error::other("not a directory"),
            });
        }
        Ok(FileSr { dir })
    }

    /// The SR's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `SR.physical_size`: the filesystem's size, in bytes.
    pub fn physical_size(&self) -> Result<u64, SrError> {
        let st =
            rustix::fs::statvfs(&self.dir).map_err(|e| io_err("statvfs", &self.dir)(e.into()))?;
        Ok(st.f_blocks.saturating_mul(st.f_frsize))
    }

    /// `SR.physical_utilisation`: bytes in use on the filesystem (by anything).
    pub fn physical_utilisation(&self) -> Result<u64, SrError> {
        let st =
            rustix::fs::statvfs(&self.dir).map_err(|e| io_err("statvfs", &self.dir)(e.into()))?;
        Ok(st
            .f_blocks
            .saturating_sub(st.f_bfree)
            .saturating_mul(st.f_frsize))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn lock(&self) -> Result<SrLock, SrError> {
        let path = self.path(names::LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open the SR lock", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("lock", &path)(e.into()))?;
        Ok(SrLock(file))
    }

    fn sync_dir(&self) -> Result<(), SrError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync the SR directory", &self.dir))
    }

    /// Builds a qcow2 image under `.<target>.tmp`: thin, `size` bytes, on `backing`.
    fn tmp_image(&self, target: &str, size: u64, backing: Option<&str>) -> Result<Tmp, SrError> {
        let path = self.path(&names::tmp(target));
        fv_disk::create_qcow2(&path, size, backing).map_err(|e| {
            if let fv_disk::DiskError::Open { source, .. } = &e {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    return SrError::InUse {
                        name: target.to_owned(),
                        reason: "another operation is building it".into(),
                    };
                }
            }
            let _ = fs::remove_file(&path);
            disk_err("create", target)(e)
        })?;
        let mut tmp = Tmp {
            lock: None,
            path: path.clone(),
        };
        // Read-write: on NFS, flock is a POSIX write lock, which needs a writable file.
        let file = open_rw(&path).map_err(io_err("open", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("lock", &path)(e.into()))?;
        tmp.lock = Some(file);
        Ok(tmp)
    }

    /// Gives `tmp` the name `target`, which must not exist (link, then unlink the tmp name).
    fn publish(&self, tmp: Tmp, target: &str) -> Result<(), SrError> {
        let to = self.path(target);
        fs::hard_link(&tmp.path, &to).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                SrError::Exists {
                    dir: self.dir.clone(),
                    name: target.to_owned(),
                }
            } else {
                io_err("link", &to)(e)
            }
        })?;
        // From here the file is in place; the tmp name goes (and, after a crash, recover
        // removes it: a second name of a published file).
        let _ = fs::remove_file(&tmp.path);
        tmp.keep();
        self.sync_dir()
    }

    /// Checks that `name` is an existing regular file (not a symlink) of role `want`.
    fn existing(&self, name: &str, want: Role) -> Result<fs::Metadata, SrError> {
        let (_, role) = names::parse(name)?;
        if role != want {
            return Err(SrError::BadName {
                name: name.to_owned(),
                reason: match want {
                    Role::Vdi => "a base copy, not a VDI".into(),
                    Role::Base => "a VDI, not a base copy".into(),
                },
            });
        }
        let path = self.path(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => Ok(meta),
            Ok(_) => Err(SrError::Invalid {
                name: name.to_owned(),
                reason: "not a regular file (symlinks are not followed)".into(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SrError::NotFound {
                dir: self.dir.clone(),
                name: name.to_owned(),
            }),
            Err(e) => Err(io_err("inspect", &path)(e)),
        }
    }

    /// Checks that `name` does not exist yet.
    fn absent(&self, name: &str) -> Result<(), SrError> {
        match fs::symlink_metadata(self.path(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("inspect", self.path(name))(e)),
            Ok(_) => Err(SrError::Exists {
                dir: self.dir.clone(),
                name: name.to_owned(),
            }),
        }
    }

    /// The chain of `name` (itself first), every backing file checked to be a base copy of
    /// this SR, a regular file, the chain not too long.
    fn chain(&self, name: &str) -> Result<Vec<(String, fv_disk::Qcow2Info)>, SrError> {
        let mut out: Vec<(String, fv_disk::Qcow2Info)> = Vec::new();
        let mut cur = name.to_owned();
        loop {
            let info = fv_disk::qcow2_info(&self.path(&cur)).map_err(disk_err("read", &cur))?;
            let backing = info.backing.clone();
            out.push((cur.clone(), info));
            let Some(b) = backing else {
                return Ok(out);
            };
            let bad = |reason: String| SrError::Invalid {
                name: name.to_owned(),
                reason,
            };
            match names::parse(&b) {
                Ok((_, Role::Base)) => {}
                _ => {
                    return Err(bad(format!(
                        "its chain names {b:?}, which is not a base copy of this SR"
                    )))
                }
            }
            if out.iter().any(|(n, _)| *n == b) || out.len() > 64 {
                return Err(bad("its chain loops or is too long".into()));
            }
            self.existing(&b, Role::Base).map_err(|e| match e {
                SrError::NotFound { .. } => bad(format!("its base copy {b} is missing")),
                other => other,
            })?;
            cur = b;
        }
    }

    fn info(&self, name: &str) -> Result<VdiInfo, SrError> {
        let (uuid, role) = names::parse(name)?;
        let path = self.path(name);
        let meta = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
        let header = fv_disk::qcow2_info(&path).map_err(disk_err("read", name))?;
        Ok(VdiInfo {
            name: name.to_owned(),
            uuid: uuid.to_owned(),
            hidden: role == Role::Base,
            virtual_size: header.size,
            physical_utilisation: meta.blocks().saturating_mul(512),
            parent: header.backing,
            format: "qcow2",
        })
    }

    /// Every VDI and base copy of the SR, with what its header says.
    fn entries(&self) -> Result<(Vec<Entry>, Ignored), SrError> {
        let mut entries = Vec::new();
        let mut ignored = Vec::new();
        let rd = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        for de in rd {
            let de = de.map_err(io_err("list", &self.dir))?;
            let Some(name) = de.file_name().to_str().map(str::to_owned) else {
                ignored.push((
                    de.file_name().to_string_lossy().into_owned(),
                    "not a VDI file name".to_owned(),
                ));
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let role = match names::parse(&name) {
                Ok((_, role)) => role,
                Err(_) => {
                    ignored.push((name, "not a VDI file name".into()));
                    continue;
                }
            };
            let meta = match fs::symlink_metadata(de.path()) {
                Ok(m) if m.file_type().is_file() => m,
                Ok(_) => {
                    ignored.push((name, "not a regular file (symlinks are ignored)".into()));
                    continue;
                }
                Err(e) => {
                    ignored.push((name, format!("cannot inspect: {e}")));
                    continue;
                }
            };
            let info = fv_disk::qcow2_info(&de.path()).map_err(|e| error_chain(&e));
            entries.push(Entry {
                name,
                role,
                dev_ino: (meta.dev(), meta.ino()),
                blocks: meta.blocks(),
                info,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((entries, ignored))
    }

    /// `SR.scan`: the VDIs and base copies, with sizes and parents; and what was ignored.
    ///
    /// The rule: a name starting with `.` is the driver's own and not listed; `<uuid>.qcow2`
    /// is a VDI and `<uuid>.base.qcow2` a base copy (lower-case uuid), if it is a regular file
    /// whose qcow2 header reads and whose backing file, if any, is a base copy present in the
    /// SR; anything else is listed in `ignored` with the reason.
    pub fn scan(&self) -> Result<Scan, SrError> {
        let (entries, mut ignored) = self.entries()?;
        let present: HashMap<&str, Role> =
            entries.iter().map(|e| (e.name.as_str(), e.role)).collect();
        let mut vdis = Vec::new();
        for e in &entries {
            let info = match &e.info {
                Ok(info) => info,
                Err(why) => {
                    ignored.push((e.name.clone(), format!("unreadable qcow2 image: {why}")));
                    continue;
                }
            };
            if let Some(b) = &info.backing {
                if present.get(b.as_str()) != Some(&Role::Base) {
                    ignored.push((
                        e.name.clone(),
                        format!("its backing file {b:?} is not a base copy in this SR"),
                    ));
                    continue;
                }
            }
            // names::parse accepted the name when listing.
            let uuid = e.name.split('.').next().unwrap_or_default().to_owned();
            vdis.push(VdiInfo {
                name: e.name.clone(),
                uuid,
                hidden: e.role == Role::Base,
                virtual_size: info.size,
                physical_utilisation: e.blocks.saturating_mul(512),
                parent: info.backing.clone(),
                format: "qcow2",
            });
        }
        ignored.sort();
        Ok(Scan { vdis, ignored })
    }

    /// `VDI.create`: a thin qcow2 VDI `<uuid>.qcow2` of `virtual_size` bytes (rounded up to a
    /// multiple of 512, as qemu-img does).
    pub fn create(&self, uuid: &str, virtual_size: u64) -> Result<VdiInfo, SrError> {
        let name = names::vdi_name(uuid)?;
        let size = round_size(&name, virtual_size)?;
        let _lock = self.lock()?;
        self.absent(&name)?;
        let tmp = self.tmp_image(&name, size, None)?;
        self.publish(tmp, &name)?;
        self.info(&name)
    }

    /// `VDI.snapshot`: VDI `<new_uuid>.qcow2` holds `vdi`'s data as it is now; `vdi` carries
    /// on under its name. See the crate's documentation for the layout. The snapshot is
    /// read-only by convention (fvd records `read_only`); the driver does not enforce it.
    pub fn snapshot(&self, vdi: &str, new_uuid: &str) -> Result<Fork, SrError> {
        self.fork(vdi, new_uuid, None)
    }

    /// `VDI.clone`: a copy-on-write copy `<new_uuid>.qcow2` of `vdi`, instant whatever the
    /// size; the same mechanism as [`FileSr::snapshot`].
    pub fn clone_vdi(&self, vdi: &str, new_uuid: &str) -> Result<Fork, SrError> {
        self.fork(vdi, new_uuid, None)
    }

    /// Snapshot and clone. Steps, each durable before the next:
    /// 1. build `.vdi.tmp` and `.N.tmp`, thin children of `B` (a base name not yet in use:
    ///    the backing file is not opened); if another operation holds either name, stop
    ///    here, nothing changed;
    /// 2. link `vdi`'s file as `B.base.qcow2` (same data, two names);
    /// 3. link `.N.tmp` as `N` (the new VDI);
    /// 4. rename `.vdi.tmp` over `vdi` (atomic).
    ///
    /// After 1, a crash leaves `.tmp` files; after 2, `B` without children: recover removes
    /// both. After 3, `vdi` still shares its file with `B`, on which `N` depends: recover
    /// completes step 4. A failure (not a crash) in 3 or 4 is undone: `vdi` is untouched
    /// until the rename.
    fn fork(&self, vdi: &str, new_uuid: &str, crash: Option<Crash>) -> Result<Fork, SrError> {
        let new = names::vdi_name(new_uuid)?;
        let _lock = self.lock()?;
        self.existing(vdi, Role::Vdi)?;
        self.absent(&new)?;
        let chain = self.chain(vdi)?;
        if chain.len() >= MAX_CHAIN {
            return Err(SrError::InUse {
                name: vdi.to_owned(),
                reason: format!(
                    "its chain is {} images long: wait for the coalesce of deleted snapshots",
                    chain.len()
                ),
            });
        }
        let size = chain[0].1.size;
        let base = names::base_name(&names::random_uuid()?);
        self.absent(&base)?;
        let vdi_tmp = self.tmp_image(vdi, size, Some(&base))?;
        let new_tmp = self.tmp_image(&new, size, Some(&base))?;
        if crash == Some(Crash(1)) {
            vdi_tmp.keep();
            new_tmp.keep();
            return Err(SrError::Cancelled);
        }

        let from = self.path(vdi);
        let to = self.path(&base);
        fs::hard_link(&from, &to).map_err(io_err("link", &to))?;
        let undo = |published: bool| {
            if published {
                let _ = fs::remove_file(self.path(&new));
            }
            let _ = fs::remove_file(&to);
            let _ = self.sync_dir();
        };
        if let Err(e) = self.sync_dir() {
            undo(false);
            return Err(e);
        }
        if crash == Some(Crash(2)) {
            vdi_tmp.keep();
            new_tmp.keep();
            return Err(SrError::Cancelled);
        }

        if let Err(e) = self.publish(new_tmp, &new) {
            undo(false);
            return Err(e);
        }
        if crash == Some(Crash(3)) {
            vdi_tmp.keep();
            return Err(SrError::Cancelled);
        }

        if let Err(e) = fs::rename(&vdi_tmp.path, &from) {
            undo(true);
            return Err(io_err("rename into", &from)(e));
        }
        vdi_tmp.keep();
        self.sync_dir()?;
        Ok(Fork {
            vdi: self.info(vdi)?,
            new: self.info(&new)?,
            base: self.info(&base)?,
        })
    }

    /// Replaces `vdi` by a fresh thin child of `base` of `size` bytes (rename: atomic).
    fn replace_with_child(&self, vdi: &str, base: &str, size: u64) -> Result<(), SrError> {
        let tmp = self.tmp_image(vdi, size, Some(base))?;
        let to = self.path(vdi);
        fs::rename(&tmp.path, &to).map_err(io_err("rename into", &to))?;
        tmp.keep();
        self.sync_dir()
    }

    /// `VDI.resize`: grows `vdi` to `new_size` bytes (rounded up to 512); shrinking is refused.
    /// The header is updated in place by imago: a larger L1 table is written and switched to
    /// first, the size field last, so a crash leaves the old or the new size.
    pub fn resize(&self, vdi: &str, new_size: u64) -> Result<VdiInfo, SrError> {
        let _lock = self.lock()?;
        self.existing(vdi, Role::Vdi)?;
        self.chain(vdi)?;
        let size = round_size(vdi, new_size)?;
        let cur = fv_disk::qcow2_info(&self.path(vdi))
            .map_err(disk_err("read", vdi))?
            .size;
        if size < cur {
            return Err(SrError::Invalid {
                name: vdi.to_owned(),
                reason: format!(
                    "cannot shrink from {cur} to {size} bytes: VDIs only grow (data past the \
                     new end would be lost)"
                ),
            });
        }
        if size > cur {
            fv_disk::grow_qcow2(&self.path(vdi), size).map_err(disk_err("resize", vdi))?;
        }
        self.info(vdi)
    }

    /// `VDI.destroy`: removes `vdi`, then every base copy left without children. A base copy
    /// left with one child is returned, for [`FileSr::coalesce`].
    pub fn destroy(&self, vdi: &str) -> Result<Destroyed, SrError> {
        let _lock = self.lock()?;
        self.existing(vdi, Role::Vdi)?;
        let (entries, _) = self.entries()?;
        if let Some(child) = entries.iter().find(|e| e.backing() == Some(vdi)) {
            return Err(SrError::InUse {
                name: vdi.to_owned(),
                reason: format!("{} is built on it", child.name),
            });
        }
        let parent = entries
            .iter()
            .find(|e| e.name == vdi)
            .and_then(|e| e.backing().map(str::to_owned));
        let path = self.path(vdi);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        self.sync_dir()?;
        let mut removed = vec![vdi.to_owned()];
        let coalesce = match parent {
            Some(p) => match self.prune(&p, &mut removed)? {
                Some(base) => self
                    .coalesce_candidates()?
                    .into_iter()
                    .find(|c| c.base == base),
                None => None,
            },
            None => None,
        };
        Ok(Destroyed { removed, coalesce })
    }

    /// Removes base copy `base` and its ancestors while they have no children; returns the
    /// first one left with exactly one child.
    fn prune(&self, base: &str, removed: &mut Vec<String>) -> Result<Option<String>, SrError> {
        let mut cur = base.to_owned();
        loop {
            if !matches!(names::parse(&cur), Ok((_, Role::Base))) {
                return Ok(None);
            }
            let (entries, _) = self.entries()?;
            if entries.iter().any(|e| e.info.is_err()) {
                // A file whose backing we cannot read may depend on it: keep everything.
                return Ok(None);
            }
            let Some(me) = entries.iter().find(|e| e.name == cur) else {
                return Ok(None);
            };
            let children = entries
                .iter()
                .filter(|e| e.backing() == Some(cur.as_str()))
                .count();
            let shares_file = entries
                .iter()
                .any(|e| e.role == Role::Vdi && e.dev_ino == me.dev_ino);
            match children {
                0 => {
                    let next = me.backing().map(str::to_owned);
                    let path = self.path(&cur);
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                    self.sync_dir()?;
                    removed.push(cur);
                    match next {
                        Some(n) => cur = n,
                        None => return Ok(None),
                    }
                }
                1 if !shares_file => return Ok(Some(cur)),
                _ => return Ok(None),
            }
        }
    }

    /// Base copies with exactly one child: what [`FileSr::coalesce`] can merge away.
    pub fn coalesce_candidates(&self) -> Result<Vec<CoalesceCandidate>, SrError> {
        let (entries, _) = self.entries()?;
        let mut out = Vec::new();
        for base in entries.iter().filter(|e| e.role == Role::Base) {
            let children: Vec<&Entry> = entries
                .iter()
                .filter(|e| e.backing() == Some(base.name.as_str()))
                .collect();
            let shares_file = entries
                .iter()
                .any(|e| e.role == Role::Vdi && e.dev_ino == base.dev_ino);
            if let [child] = children[..] {
                if !shares_file {
                    out.push(CoalesceCandidate {
                        base: base.name.clone(),
                        child: child.name.clone(),
                        child_is_vdi: child.role == Role::Vdi,
                    });
                }
            }
        }
        Ok(out)
    }

    /// One coalesce: merges base copy `base` (which must have exactly one child `C`) into
    /// `C`, which then sits on `base`'s parent `PP`; `base` is removed. `progress` gets the
    /// fraction done and returns `false` to cancel (nothing is changed then).
    ///
    /// Steps, and why a crash (kill -9, power cut) after any of them is safe:
    /// 1. Under the SR lock: check `base` has the one child `C`, sizes shrink down the chain
    ///    (`C >= base >= PP`); note `C`'s inode, size and mtime; create `.C.tmp`, an empty
    ///    qcow2 of `C`'s size on `PP`. *Crash:* `C` and `base` are untouched; recover
    ///    removes the `.tmp`.
    /// 2. Without the lock: copy into `.C.tmp` what `C` shows from its own layer or `base`'s
    ///    (extents from the top two layers; zero clusters where the top two read zeroes over
    ///    `PP`'s data; what comes from `PP` is left to `PP`), then flush and fsync it.
    ///    *Crash:* as 1: the `.tmp` is not yet anybody's image.
    /// 3. Under the lock: check `C` is the same file, unchanged (inode, size, mtime), still
    ///    on `base` and `base` still has only `C`; rename `.C.tmp` over `C` (atomic) and fsync
    ///    the directory. `.C.tmp` shows what `C` showed (step 2), so the guest-visible data
    ///    is the same before and after. *Crash:* `C` is the old or the new file, both
    ///    complete; `base` may be left without children: recover removes it.
    /// 4. Remove `base`, fsync the directory.
    ///
    /// `C` must not be written during the copy: a VDI child must not be open for writing by a
    /// VM (fvd pauses it, or waits until it halts); the check in 3 refuses, rather than lose
    /// data, if it was.
    pub fn coalesce(
        &self,
        base: &str,
        progress: &mut dyn FnMut(f64) -> bool,
    ) -> Result<Coalesced, SrError> {
        self.coalesce_at(base, progress, None)
    }

    fn coalesce_at(
        &self,
        base: &str,
        progress: &mut dyn FnMut(f64) -> bool,
        crash: Option<Crash>,
    ) -> Result<Coalesced, SrError> {
        // Step 1.
        let lock = self.lock()?;
        self.existing(base, Role::Base)?;
        let (child, stamp, tmp, below) = {
            let candidates = self.coalesce_candidates()?;
            let Some(cand) = candidates.into_iter().find(|c| c.base == base) else {
                return Err(SrError::InUse {
                    name: base.to_owned(),
                    reason: "it does not have exactly one child".into(),
                });
            };
            let child = cand.child;
            let chain = self.chain(&child)?;
            // chain[0] is the child, chain[1] the base (the child's backing file).
            let sizes: Vec<u64> = chain.iter().map(|(_, i)| i.size).collect();
            if sizes.windows(2).take(2).any(|w| w[0] < w[1]) {
                return Err(SrError::Invalid {
                    name: child,
                    reason: "a file of its chain is larger than the one above it".into(),
                });
            }
            let parent = chain[1].1.backing.clone();
            let below = chain.get(2).map_or(0, |(_, i)| i.size);
            let stamp = self.stamp(&child)?;
            let tmp = self.tmp_image(&child, sizes[0], parent.as_deref())?;
            (child, stamp, tmp, below)
        };
        drop(lock);
        if crash == Some(Crash(1)) {
            tmp.keep();
            return Err(SrError::Cancelled);
        }

        // Step 2.
        {
            let src = fv_disk::open_disk(&self.path(&child), Some(Format::Qcow2), true)
                .map_err(disk_err("open", &child))?;
            let dst = fv_disk::open_disk(&tmp.path, Some(Format::Qcow2), false)
                .map_err(disk_err("open", &child))?;
            let mut stop_half = crash == Some(Crash(2));
            let mut report = |f: f64| {
                if stop_half && f >= 0.5 {
                    stop_half = false;
                    return false;
                }
                progress(f)
            };
            let done = transfer::transfer(&*src, &*dst, 2, below, &mut report)
                .map_err(disk_err("coalesce into", &child))?;
            if !done {
                if crash == Some(Crash(2)) {
                    drop(dst);
                    tmp.keep();
                }
                return Err(SrError::Cancelled);
            }
            dst.flush().map_err(disk_err("coalesce into", &child))?;
        }
        if crash == Some(Crash(3)) {
            tmp.keep();
            return Err(SrError::Cancelled);
        }

        // Step 3.
        let _lock = self.lock()?;
        let still = self.chain(&child)?;
        if self.stamp(&child)? != stamp || still.get(1).map(|(n, _)| n.as_str()) != Some(base) {
            return Err(SrError::InUse {
                name: child,
                reason: "it changed while its base copy was merged into it; try again".into(),
            });
        }
        if !self
            .coalesce_candidates()?
            .iter()
            .any(|c| c.base == base && c.child == child)
        {
            return Err(SrError::InUse {
                name: base.to_owned(),
                reason: "it gained a child while it was merged; try again".into(),
            });
        }
        let to = self.path(&child);
        fs::rename(&tmp.path, &to).map_err(io_err("rename into", &to))?;
        tmp.keep();
        self.sync_dir()?;
        if crash == Some(Crash(4)) {
            return Err(SrError::Cancelled);
        }

        // Step 4.
        let path = self.path(base);
        fs::remove_file(&path).map_err(io_err("remove", &path))?;
        self.sync_dir()?;
        let child = self.info(&child)?;
        // Outside the lock: a caller's progress may wait for something that waits for it.
        drop(_lock);
        progress(1.0);
        Ok(Coalesced {
            child,
            removed: base.to_owned(),
        })
    }

    /// What must not change under a coalesce: the file (inode), its length and mtime.
    fn stamp(&self, name: &str) -> Result<(u64, u64, u64, i64, i64), SrError> {
        let path = self.path(name);
        let m = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
        Ok((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    }

    /// `VDI.copy`: a full, flattened copy of `vdi` as `<new_uuid>.qcow2` in `dest` (which may
    /// be this SR): the data read through the chain, only non-zero data written. `progress`
    /// gets the fraction done and returns `false` to cancel; a cancelled or failed copy
    /// leaves nothing behind.
    pub fn copy(
        &self,
        vdi: &str,
        dest: &FileSr,
        new_uuid: &str,
        progress: &mut dyn FnMut(f64) -> bool,
    ) -> Result<VdiInfo, SrError> {
        let src = self.open_vdi(vdi)?;
        dest.import(&*src, new_uuid, progress)
    }

    /// Opens VDI `vdi` (its chain checked) read-only, to copy what it shows elsewhere.
    pub fn open_vdi(&self, vdi: &str) -> Result<Box<dyn fv_disk::DiskFile>, SrError> {
        let _lock = self.lock()?;
        self.existing(vdi, Role::Vdi)?;
        self.chain(vdi)?;
        fv_disk::open_disk(&self.path(vdi), Some(Format::Qcow2), true)
            .map_err(disk_err("open", vdi))
    }

    /// A new VDI `<new_uuid>.qcow2` showing what `src` shows (a disk of any SR type), only
    /// non-zero data written. `progress` as for [`FileSr::copy`]; a cancelled or failed
    /// import leaves nothing behind.
    pub fn import(
        &self,
        src: &dyn fv_disk::DiskFile,
        new_uuid: &str,
        progress: &mut dyn FnMut(f64) -> bool,
    ) -> Result<VdiInfo, SrError> {
        let new = names::vdi_name(new_uuid)?;
        let size = round_size(&new, src.size())?;
        let tmp = {
            let _lock = self.lock()?;
            self.absent(&new)?;
            self.tmp_image(&new, size, None)?
        };
        {
            let dst = fv_disk::open_disk(&tmp.path, Some(Format::Qcow2), false)
                .map_err(disk_err("open", &new))?;
            if !transfer::transfer(src, &*dst, usize::MAX, 0, progress)
                .map_err(disk_err("copy into", &new))?
            {
                return Err(SrError::Cancelled);
            }
            dst.flush().map_err(disk_err("copy into", &new))?;
        }
        {
            let _lock = self.lock()?;
            self.publish(tmp, &new)?;
        }
        // Outside the lock: a caller's progress may wait for something that waits for it.
        progress(1.0);
        self.info(&new)
    }

    /// Tidies what interrupted operations left (run when the SR is plugged): removes `.tmp`
    /// files no live operation holds, completes snapshots and clones stopped after their
    /// second step, and removes base copies without children (unless some file's header is
    /// unreadable: then no base copy is removed, since it might depend on it).
    pub fn recover(&self) -> Result<Recovery, SrError> {
        let _lock = self.lock()?;
        let mut out = Recovery::default();
        let rd = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        for de in rd {
            let de = de.map_err(io_err("list", &self.dir))?;
            let name = de.file_name().to_string_lossy().into_owned();
            if !names::is_tmp(&name) {
                continue;
            }
            let path = de.path();
            let Ok(file) = open_rw(&path) else {
                continue;
            };
            let free =
                rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
            if free.is_ok() {
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                out.removed.push(name);
            }
        }

        // Snapshots and clones stopped between their steps: a VDI sharing its file with a
        // base copy.
        let (entries, _) = self.entries()?;
        for base in entries.iter().filter(|e| e.role == Role::Base) {
            let Some(vdi) = entries
                .iter()
                .find(|e| e.role == Role::Vdi && e.dev_ino == base.dev_ino)
            else {
                continue;
            };
            let has_children = entries
                .iter()
                .any(|e| e.backing() == Some(base.name.as_str()));
            if has_children {
                let size = base.info.as_ref().map_err(|why| SrError::Invalid {
                    name: base.name.clone(),
                    reason: why.clone(),
                })?;
                self.replace_with_child(&vdi.name, &base.name, size.size)?;
                out.completed.push(vdi.name.clone());
            } else {
                // Step 1 only: the base is a second name of the VDI's file.
                let path = self.path(&base.name);
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                self.sync_dir()?;
                out.removed.push(base.name.clone());
            }
        }

        // Base copies without children (a destroy or coalesce stopped before removing them).
        loop {
            let (entries, _) = self.entries()?;
            if entries.iter().any(|e| e.info.is_err()) {
                break;
            }
            let orphans: Vec<&Entry> = entries
                .iter()
                .filter(|b| {
                    b.role == Role::Base
                        && !entries.iter().any(|e| e.backing() == Some(b.name.as_str()))
                })
                .collect();
            if orphans.is_empty() {
                break;
            }
            for b in orphans {
                let path = self.path(&b.name);
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                out.removed.push(b.name.clone());
            }
            self.sync_dir()?;
        }
        Ok(out)
    }

    /// The VDI `name` as [`FileSr::scan`] would describe it.
    pub fn vdi_info(&self, name: &str) -> Result<VdiInfo, SrError> {
        let (_, role) = names::parse(name)?;
        self.existing(name, role)?;
        self.chain(name)?;
        self.info(name)
    }
}

/// Opens `path` for reading and writing (not creating it).
fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// `size` rounded up to 512 bytes; refused above qcow2's practical limit here (256 TiB).
fn round_size(name: &str, size: u64) -> Result<u64, SrError> {
    const MAX: u64 = 256 << 40;
    match size.checked_next_multiple_of(512) {
        Some(s) if s <= MAX => Ok(s),
        _ => Err(SrError::Invalid {
            name: name.to_owned(),
            reason: format!("a size of {size} bytes is above the limit of {MAX} (256 TiB)"),
        }),
    }
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s += &format!(": {e}");
        cur = e.source();
    }
    s
}

#[cfg(test)]
mod tests;
