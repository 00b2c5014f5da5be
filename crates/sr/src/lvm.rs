//! LVM SRs (`lvm`): a volume group on a block device, one thick raw logical volume per VDI,
//! through the `lvm` command (Debian `lvm2`).
//!
//! - The VG is `VG_Ferrovisor_<sr uuid>`; a VDI is the LV `LV-<vdi uuid>`, seen by VMs as
//!   `/dev/<vg>/<lv>` (raw). Names carry the uuids, so a VG found again on its device
//!   (`SR.introduce`, `PBD.plug`) gives back its VDIs.
//! - **Snapshots and clones are classic LVM snapshots** (`lvcreate -s`): a copy-on-write
//!   store beside the origin, sized to hold a full copy (`-l 100%ORIGIN`, which LVM rounds up
//!   with its metadata), so it can never overflow and be invalidated. A read-only snapshot is
//!   an LV with permission `r` and the tag `fv_snapshot`; a clone is writable. Limits, all
//!   LVM's: each snapshot takes as much space as its origin; every write to an origin first
//!   copies the old chunk to each of its snapshots (slower with each); a snapshot of a
//!   snapshot does not exist (refused: `Unsupported`); an origin with snapshots can neither
//!   grow (LVM allows it only deactivated) nor be removed before them (refused: `InUse`).
//!   Thin pools would lift these limits; they are not used yet.
//! - LVM is run without udev (`udev_sync = 0`, `udev_rules = 0`: LVM makes the device
//!   nodes itself) and without metadata backups or a devices file (both live under
//!   `/etc/lvm`, which may be read-only): fvd's database and the names on the disk are the
//!   record.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::disk_err;
use crate::names::is_uuid;
use crate::{transfer, SrError, VdiInfo};

/// The configuration every `lvm` call gets, so that it needs neither udev nor a writable
/// `/etc/lvm`.
const CONFIG: &str = "devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 \
                      hints = \"none\" } activation { udev_sync = 0 udev_rules = 0 \
                      monitoring = 0 } backup { backup = 0 archive = 0 }";
/// A VG of ours is named this, then the SR's uuid.
const VG_PREFIX: &str = "VG_Ferrovisor_";
/// An LV of ours is named this, then the VDI's uuid.
const LV_PREFIX: &str = "LV-";
/// The tag of read-only snapshots (as opposed to clones).
const SNAPSHOT_TAG: &str = "fv_snapshot";

/// Runs `lvm <args>` and returns its stdout; the error holds its stderr.
fn lvm(args: &[&str]) -> Result<String, SrError> {
    let mut cmd = Command::new(lvm_binary());
    cmd.arg(args[0])
        .arg("--config")
        .arg(CONFIG)
        .args(&args[1..])
        // LVM talks to udev unless told not to; fvd's descriptors are not its business.
        .env("DM_DISABLE_UDEV", "1")
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .env("LC_ALL", "C");
    let command = format!("lvm {}", args.join(" "));
    let out = cmd.output().map_err(|e| SrError::Command {
        command: command.clone(),
        status: "not started".into(),
        stderr: format!("{e} (is Debian's lvm2 installed?)"),
    })?;
    if !out.status.success() {
        return Err(SrError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `lvm` on `PATH`, else where Debian installs it (fvd may run with a short `PATH`).
fn lvm_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("lvm"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/sbin/lvm"))
}

/// The rows of an `lvm` report (`--noheadings --separator |`), fields trimmed.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().split('|').map(|f| f.trim().to_owned()).collect())
        .collect()
}

fn number(s: &str) -> u64 {
    s.parse().unwrap_or(0)
}

/// The VG name of the SR with `sr_uuid`.
pub fn vg_name(sr_uuid: &str) -> String {
    format!("{VG_PREFIX}{sr_uuid}")
}

/// An LV of the SR as fvd records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lv {
    /// `name` is the LV's name (`VDI.location`), `parent` the origin of a snapshot or clone.
    pub info: VdiInfo,
    /// A read-only snapshot (tagged), not a clone.
    pub snapshot: bool,
    /// Other LVs are snapshots of it.
    pub has_snapshots: bool,
}

/// A VG found on a device by [`probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub vg: String,
    /// The SR's uuid, for a VG of ours.
    pub sr_uuid: Option<String>,
    pub size: u64,
    pub free: u64,
}

/// The VGs on `device` (none when it is not an LVM physical volume).
pub fn probe(device: &Path) -> Result<Vec<Found>, SrError> {
    require_block_device(device)?;
    let dev = device.to_string_lossy();
    let out = match lvm(&[
        "pvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "--separator",
        "|",
        "-o",
        "vg_name,vg_size,vg_free",
        &dev,
    ]) {
        Ok(out) => out,
        // Not a PV: nothing there.
        Err(SrError::Command { stderr, .. }) if stderr.contains("Failed to find") => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    Ok(rows(&out)
        .into_iter()
        .filter(|r| r.len() == 3 && !r[0].is_empty())
        .map(|r| Found {
            sr_uuid: r[0]
                .strip_prefix(VG_PREFIX)
                .filter(|u| is_uuid(u))
                .map(str::to_owned),
            vg: r[0].clone(),
            size: number(&r[1]),
            free: number(&r[2]),
        })
        .collect())
}

fn require_block_device(device: &Path) -> Result<(), SrError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(device) {
        Ok(m) if m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(SrError::Invalid {
            name: device.display().to_string(),
            reason: "not a block device".into(),
        }),
        Err(e) => Err(SrError::Io {
            op: "inspect",
            path: device.to_path_buf(),
            source: e,
        }),
    }
}

/// An SR whose VDIs are the LVs of one volume group.
#[derive(Debug)]
pub struct LvmSr {
    vg: String,
}

impl LvmSr {
    /// `SR.create`: makes `device` a physical volume holding the new VG of the SR with
    /// `sr_uuid`. A device that is already a PV of a VG is refused (LVM says so), so no SR
    /// is formatted over by mistake; other signatures (a filesystem) are wiped.
    pub fn format(device: &Path, sr_uuid: &str) -> Result<LvmSr, SrError> {
        require_block_device(device)?;
        if !is_uuid(sr_uuid) {
            return Err(SrError::BadName {
                name: sr_uuid.to_owned(),
                reason: "not a lower-case uuid".into(),
            });
        }
        let dev = device.to_string_lossy();
        let vg = vg_name(sr_uuid);
        lvm(&["pvcreate", "-y", &dev])?;
        if let Err(e) = lvm(&["vgcreate", &vg, &dev]) {
            let _ = lvm(&["pvremove", "-y", &dev]);
            return Err(e);
        }
        Ok(LvmSr { vg })
    }

    /// The SR in VG `vg`, activated (`PBD.plug`): its LVs get their device nodes.
    pub fn open(vg: &str) -> Result<LvmSr, SrError> {
        let sr = LvmSr::get(vg)?;
        lvm(&["vgchange", "-ay", vg])?;
        Ok(sr)
    }

    /// The SR in VG `vg`, as it is (not activated).
    pub fn get(vg: &str) -> Result<LvmSr, SrError> {
        if vg.is_empty()
            || !vg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
            || vg.starts_with('-')
        {
            return Err(SrError::BadName {
                name: vg.to_owned(),
                reason: "not a volume group name".into(),
            });
        }
        Ok(LvmSr { vg: vg.to_owned() })
    }

    pub fn vg(&self) -> &str {
        &self.vg
    }

    /// `PBD.unplug`: deactivates the VG's LVs (their device nodes go).
    pub fn deactivate(&self) -> Result<(), SrError> {
        lvm(&["vgchange", "-an", &self.vg]).map(drop)
    }

    /// `SR.destroy`: removes the VG with every LV, and the PV labels of its devices.
    pub fn destroy_vg(self) -> Result<(), SrError> {
        let pvs = lvm(&[
            "pvs",
            "--noheadings",
            "-o",
            "pv_name",
            "-S",
            &format!("vg_name={}", self.vg),
        ])?;
        lvm(&["vgremove", "-y", "-f", &self.vg])?;
        for pv in rows(&pvs) {
            if let Some(pv) = pv.first().filter(|p| !p.is_empty()) {
                lvm(&["pvremove", "-y", pv])?;
            }
        }
        Ok(())
    }

    /// `SR.physical_size` and `physical_utilisation`: the VG's size and what its LVs take.
    pub fn sizes(&self) -> Result<(u64, u64), SrError> {
        let out = lvm(&[
            "vgs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            "|",
            "-o",
            "vg_size,vg_free",
            &self.vg,
        ])?;
        let r = rows(&out);
        let row = r
            .first()
            .filter(|r| r.len() == 2)
            .ok_or_else(|| SrError::Command {
                command: format!("lvm vgs {}", self.vg),
                status: "0".into(),
                stderr: format!("unexpected output {out:?}"),
            })?;
        let (size, free) = (number(&row[0]), number(&row[1]));
        Ok((size, size.saturating_sub(free)))
    }

    /// The device node of LV `lv` (which must be one of our LV names).
    pub fn path(&self, lv: &str) -> Result<PathBuf, SrError> {
        lv_uuid(lv)?;
        Ok(Path::new("/dev").join(&self.vg).join(lv))
    }

    /// `SR.scan`: every LV of ours in the VG; other LVs are left alone and not listed.
    pub fn scan(&self) -> Result<Vec<Lv>, SrError> {
        let out = lvm(&[
            "lvs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            "|",
            "-o",
            "lv_name,lv_size,origin,origin_size,lv_tags,lv_attr",
            &self.vg,
        ])?;
        let mut lvs = Vec::new();
        for r in rows(&out) {
            let [name, size, origin, origin_size, tags, attr] = &r[..] else {
                continue;
            };
            let Ok(uuid) = lv_uuid(name) else { continue };
            let size = number(size);
            let parent = (!origin.is_empty()).then(|| origin.clone());
            lvs.push(Lv {
                info: VdiInfo {
                    name: name.clone(),
                    uuid: uuid.to_owned(),
                    hidden: false,
                    // A snapshot shows its origin's size; its own LV is the COW store.
                    virtual_size: if parent.is_some() {
                        number(origin_size)
                    } else {
                        size
                    },
                    physical_utilisation: size,
                    parent,
                    format: "raw",
                },
                snapshot: tags.split(',').any(|t| t == SNAPSHOT_TAG),
                has_snapshots: attr.starts_with('o'),
            });
        }
        lvs.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        Ok(lvs)
    }

    /// LV `lv` as [`LvmSr::scan`] describes it.
    pub fn lv(&self, lv: &str) -> Result<Lv, SrError> {
        lv_uuid(lv)?;
        self.scan()?
            .into_iter()
            .find(|l| l.info.name == lv)
            .ok_or_else(|| SrError::NotFound {
                dir: Path::new("/dev").join(&self.vg),
                name: lv.to_owned(),
            })
    }

    /// `VDI.create`: a thick LV `LV-<uuid>` of at least `size` bytes (LVM rounds up to its
    /// extent size, 4 MiB by default).
    pub fn create(&self, uuid: &str, size: u64) -> Result<Lv, SrError> {
        let name = lv_name(uuid)?;
        let size = size.max(512).to_string() + "b";
        lvm(&[
            "lvcreate", "-y", "-W", "y", "-n", &name, "-L", &size, &self.vg,
        ])?;
        self.lv(&name)
    }

    /// `VDI.snapshot` (read-only) or `VDI.clone` (writable): an LVM snapshot `LV-<new_uuid>`
    /// of `lv`, sized to a full copy. See the module's documentation for the limits.
    pub fn snapshot(&self, lv: &str, new_uuid: &str, read_only: bool) -> Result<Lv, SrError> {
        let name = lv_name(new_uuid)?;
        let from = self.lv(lv)?;
        if let Some(origin) = &from.info.parent {
            return Err(SrError::Unsupported(format!(
                "{lv} is an LVM snapshot of {origin}: LVM has no snapshots of snapshots \
                 (copy it with VDI.copy instead)"
            )));
        }
        let origin = format!("{}/{lv}", self.vg);
        let mut args = vec!["lvcreate", "-y", "-s", "-l", "100%ORIGIN", "-n", &name];
        if read_only {
            args.extend(["-p", "r", "--addtag", SNAPSHOT_TAG]);
        }
        args.push(&origin);
        lvm(&args)?;
        self.lv(&name)
    }

    /// `VDI.resize`: grows `lv` to at least `size` bytes; shrinking is refused, and so is
    /// growing an origin with snapshots or a snapshot.
    pub fn resize(&self, lv: &str, size: u64) -> Result<Lv, SrError> {
        let cur = self.lv(lv)?;
        if cur.info.parent.is_some() {
            return Err(SrError::Unsupported(format!(
                "{lv} is an LVM snapshot: its size is its origin's"
            )));
        }
        if size < cur.info.virtual_size {
            return Err(SrError::Invalid {
                name: lv.to_owned(),
                reason: format!(
                    "cannot shrink from {} to {size} bytes: VDIs only grow",
                    cur.info.virtual_size
                ),
            });
        }
        if size == cur.info.virtual_size {
            return Ok(cur);
        }
        if cur.has_snapshots {
            return Err(SrError::InUse {
                name: lv.to_owned(),
                reason: "it has LVM snapshots: LVM grows an origin only while it is \
                         deactivated; destroy its snapshots first"
                    .into(),
            });
        }
        let path = format!("{}/{lv}", self.vg);
        lvm(&["lvextend", "-L", &(size.to_string() + "b"), &path])?;
        self.lv(lv)
    }

    /// `VDI.destroy`: removes `lv`; refused while it has snapshots (LVM would remove them
    /// with it).
    pub fn destroy(&self, lv: &str) -> Result<(), SrError> {
        let cur = self.lv(lv)?;
        if cur.has_snapshots {
            return Err(SrError::InUse {
                name: lv.to_owned(),
                reason: "its LVM snapshots depend on it: destroy them first".into(),
            });
        }
        lvm(&["lvremove", "-y", &format!("{}/{lv}", self.vg)]).map(drop)
    }

    /// Opens `lv` read-only, to copy what it holds elsewhere.
    pub fn open_vdi(&self, lv: &str) -> Result<Box<dyn fv_disk::DiskFile>, SrError> {
        self.lv(lv)?;
        fv_disk::open_disk(&self.path(lv)?, Some(fv_disk::Format::Raw), true)
            .map_err(disk_err("open", lv))
    }

    /// `VDI.copy` into this SR: a new LV `LV-<new_uuid>` holding what `src` shows (zeroes
    /// written too: a new LV holds whatever the disk held). `progress` gets the fraction
    /// done and returns `false` to cancel; a cancelled or failed copy removes the LV.
    pub fn import(
        &self,
        src: &dyn fv_disk::DiskFile,
        new_uuid: &str,
        progress: &mut dyn FnMut(f64) -> bool,
    ) -> Result<Lv, SrError> {
        let lv = self.create(new_uuid, src.size())?;
        let name = lv.info.name.clone();
        let mut fill = || -> Result<bool, SrError> {
            let dst = fv_disk::open_disk(&self.path(&name)?, Some(fv_disk::Format::Raw), false)
                .map_err(disk_err("open", &name))?;
            let size = src.size();
            if !transfer::transfer(src, &*dst, usize::MAX, size, progress)
                .map_err(disk_err("copy into", &name))?
            {
                return Ok(false);
            }
            // The LV may be larger (extent rounding): its tail reads as zeroes too.
            if dst.size() > size {
                dst.write_zeroes(size, dst.size() - size)
                    .map_err(disk_err("copy into", &name))?;
            }
            dst.flush().map_err(disk_err("copy into", &name))?;
            Ok(true)
        };
        match fill() {
            Ok(true) => {
                progress(1.0);
                Ok(lv)
            }
            Ok(false) => {
                let _ = self.destroy(&name);
                Err(SrError::Cancelled)
            }
            Err(e) => {
                let _ = self.destroy(&name);
                Err(e)
            }
        }
    }
}

/// The LV name of the VDI with `uuid`.
fn lv_name(uuid: &str) -> Result<String, SrError> {
    if !is_uuid(uuid) {
        return Err(SrError::BadName {
            name: uuid.to_owned(),
            reason: "not a lower-case uuid".into(),
        });
    }
    Ok(format!("{LV_PREFIX}{uuid}"))
}

/// The VDI uuid LV `name` carries, or why it is not one of ours.
fn lv_uuid(name: &str) -> Result<&str, SrError> {
    name.strip_prefix(LV_PREFIX)
        .filter(|u| is_uuid(u))
        .ok_or_else(|| SrError::BadName {
            name: name.to_owned(),
            reason: "VDI LVs are named LV-<uuid>".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_reports() {
        let u = "0f0f0f0f-1111-4222-8333-444455556666";
        assert_eq!(lv_uuid(&lv_name(u).unwrap()).unwrap(), u);
        assert!(lv_uuid("LV-../../etc").is_err());
        assert!(lv_name("x/y").is_err());
        assert!(LvmSr::get("VG_a;rm").is_err());
        assert!(LvmSr::get("-x").is_err());
        let sr = LvmSr::get(&vg_name(u)).unwrap();
        assert!(sr.path("../x").is_err());
        assert_eq!(
            rows("  LV-a|12582912||12582912||owi-a-s---\n\n"),
            [["LV-a", "12582912", "", "12582912", "", "owi-a-s---"]]
        );
    }

    #[test]
    fn not_a_block_device_is_refused() {
        let e = LvmSr::format(
            Path::new("/proc/version"),
            "0f0f0f0f-1111-4222-8333-444455556666",
        )
        .unwrap_err();
        assert!(matches!(e, SrError::Invalid { .. }), "{e}");
    }
}
