//! A VM's VBDs and VIFs as fv-vmm disks and NICs.
//!
//! A VBD's VDI is a file in its SR's directory (the SR's PBD on this host names it in
//! `device_config:path`); its format is the VDI's `sm_config:type`, never probed (a guest
//! that can write a raw image could make it look like qcow2). A VIF gets a persistent tap,
//! named after the VM and the VIF's device, on its network's bridge; fv-vmm attaches to
//! it, and fvd removes it when the VM halts.

use std::path::{Path, PathBuf};

use crate::fields::{map_get, refs, text};
use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};
use serde_json::json;

fn not_allowed(why: String) -> ApiError {
    ApiError::new(&codes::OPERATION_NOT_ALLOWED, [why])
}

/// The directory of SR `sr` on this host, from its PBD's `device_config`: `path` for a file
/// SR, `location` for an ISO library; for an NFS SR, its directory on the mounted export.
pub fn sr_path(tx: &Tx<'_>, sr: &str) -> Result<PathBuf, ApiError> {
    let key = match text(tx, "SR", sr, "type")?.as_str() {
        "iso" => "location",
        "nfs" => {
            // The export is mounted on <mount root>/<uuid>; the SR is its directory <uuid>.
            let uuid = text(tx, "SR", sr, "uuid")?;
            return Ok(crate::storage::nfs_mountpoint(&uuid)?.join(uuid));
        }
        _ => "path",
    };
    for pbd in refs(tx, "SR", sr, "PBDs")? {
        if let Some(path) = map_get(&tx.get("PBD", &pbd, "device_config")?, key) {
            return Ok(PathBuf::from(path));
        }
    }
    let name = text(tx, "SR", sr, "name_label")?;
    Err(not_allowed(format!(
        "SR {name} has no PBD with a device_config:{key} on this host"
    )))
}

/// The image of VDI `vdi` on this host (a file, or an LVM volume), as fv-vmm opens it.
pub fn vdi_path(tx: &Tx<'_>, vdi: &str) -> Result<PathBuf, ApiError> {
    crate::storage::vdi_image(tx, vdi).map(|(path, _)| path)
}

/// The VM's disks, in `userdevice` order, as fv-vmm's `disks` config.
///
/// An empty CD drive is a read-only disk of no size on a file of its own in `media_dir`
/// (see [`empty_media`]), so that media can be inserted while the VM runs: fv-vmm reopens
/// the drive on the ISO, and the guest sees its size change.
pub fn disks(tx: &Tx<'_>, vm: &str, media_dir: &Path) -> Result<Vec<serde_json::Value>, ApiError> {
    let mut vbds = Vec::new();
    for vbd in refs(tx, "VM", vm, "VBDs")? {
        let vdi = text(tx, "VBD", &vbd, "VDI")?;
        let empty = matches!(tx.get("VBD", &vbd, "empty")?, Value::Bool(true));
        let cd = text(tx, "VBD", &vbd, "type")? == "CD";
        if (empty || !tx.exists("VDI", &vdi)?) && !cd {
            continue;
        }
        let userdevice = text(tx, "VBD", &vbd, "userdevice")?;
        vbds.push((userdevice.parse::<u32>().unwrap_or(u32::MAX), vbd, vdi));
    }
    vbds.sort();
    let mut out = Vec::new();
    for (_, vbd, vdi) in vbds {
        if !tx.exists("VDI", &vdi)? || matches!(tx.get("VBD", &vbd, "empty")?, Value::Bool(true)) {
            out.push(json!({
                "path": empty_media(tx, &vbd, media_dir)?,
                "format": "raw",
                "readonly": true,
            }));
            continue;
        }
        let (path, format) = crate::storage::vdi_image(tx, &vdi)?;
        if format != "raw" && format != "qcow2" {
            return Err(not_allowed(format!(
                "VDI {vdi} is {format}; disks are raw or qcow2"
            )));
        }
        let readonly = text(tx, "VBD", &vbd, "mode")? == "RO"
            || text(tx, "VBD", &vbd, "type")? == "CD"
            || matches!(tx.get("VDI", &vdi, "read_only")?, Value::Bool(true));
        // virtio-blk's serial holds 20 bytes: the start of the VDI's uuid names it.
        let uuid = text(tx, "VDI", &vdi, "uuid")?;
        out.push(json!({
            "path": path,
            "format": format,
            "readonly": readonly,
            "serial": uuid.chars().take(20).collect::<String>(),
        }));
    }
    Ok(out)
}

/// The file an empty CD drive `vbd` shows: no bytes, `media_dir/<VBD uuid>.empty`, made if
/// missing (one per drive, so that fv-vmm's disks are told apart by their paths).
pub fn empty_media(tx: &Tx<'_>, vbd: &str, media_dir: &Path) -> Result<PathBuf, ApiError> {
    let uuid = text(tx, "VBD", vbd, "uuid")?;
    let path = media_dir.join(format!("{uuid}.empty"));
    if !path.exists() {
        std::fs::create_dir_all(media_dir)
            .and_then(|()| std::fs::File::create(&path).map(drop))
            .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    }
    Ok(path)
}

/// What CD drive `vbd` shows now: its VDI's image, or its empty file.
pub fn media_path(tx: &Tx<'_>, vbd: &str, media_dir: &Path) -> Result<PathBuf, ApiError> {
    let vdi = text(tx, "VBD", vbd, "VDI")?;
    if matches!(tx.get("VBD", vbd, "empty")?, Value::Bool(true)) || !tx.exists("VDI", &vdi)? {
        return empty_media(tx, vbd, media_dir);
    }
    crate::storage::vdi_image(tx, &vdi).map(|(path, _)| path)
}

/// Checks a media change (`VBD.insert` with `vdi`, `VBD.eject` without): the drive is a
/// CD, holds media exactly when ejecting, and the VDI exists.
pub fn check_media_change(tx: &Tx<'_>, vbd: &str, vdi: Option<&str>) -> Result<(), ApiError> {
    if text(tx, "VBD", vbd, "type")? != "CD" {
        return Err(ApiError::new(&codes::VBD_NOT_REMOVABLE_MEDIA, [vbd]));
    }
    let empty = matches!(tx.get("VBD", vbd, "empty")?, Value::Bool(true));
    match vdi {
        Some(_) if !empty => return Err(ApiError::new(&codes::VBD_NOT_EMPTY, [vbd])),
        None if empty => return Err(ApiError::new(&codes::VBD_IS_EMPTY, [vbd])),
        _ => {}
    }
    if let Some(vdi) = vdi {
        if !tx.exists("VDI", vdi)? {
            return Err(ApiError::new(&codes::HANDLE_INVALID, ["VDI", vdi]));
        }
    }
    Ok(())
}

/// Records a media change in the database (the running VM's drive, if any, already swapped).
pub fn set_media(tx: &mut Tx<'_>, vbd: &str, vdi: Option<&str>) -> Result<(), ApiError> {
    check_media_change(tx, vbd, vdi)?;
    match vdi {
        Some(vdi) => {
            tx.set("VBD", vbd, "VDI", Value::from(vdi))?;
            tx.set("VBD", vbd, "empty", Value::Bool(false))
        }
        None => {
            tx.set("VBD", vbd, "VDI", Value::from("OpaqueRef:NULL"))?;
            tx.set("VBD", vbd, "empty", Value::Bool(true))
        }
    }
}

/// A VIF of a VM about to start: its tap's name, its bridge and its MAC.
pub struct Nic {
    pub tap: String,
    pub bridge: String,
    pub mac: String,
    /// The network's MTU.
    pub mtu: u32,
}

/// The tap of the VIF with `device` on the VM with `vm_uuid`: `vif` + the uuid's first 8
/// characters + `.` + the device, at most 15 characters as Linux requires.
pub fn tap_name(vm_uuid: &str, device: &str) -> String {
    let short: String = vm_uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    let device: String = device
        .chars()
        .filter(char::is_ascii_digit)
        .take(2)
        .collect();
    format!("vif{short}.{device}")
}

/// The VM's VIFs, in `device` order.
pub fn nics(tx: &Tx<'_>, vm: &str) -> Result<Vec<Nic>, ApiError> {
    let uuid = text(tx, "VM", vm, "uuid")?;
    let mut vifs = Vec::new();
    for vif in refs(tx, "VM", vm, "VIFs")? {
        let device = text(tx, "VIF", &vif, "device")?;
        vifs.push((device.parse::<u32>().unwrap_or(u32::MAX), device, vif));
    }
    vifs.sort();
    let mut out = Vec::new();
    for (_, device, vif) in vifs {
        let network = text(tx, "VIF", &vif, "network")?;
        let bridge = text(tx, "network", &network, "bridge")?;
        if bridge.is_empty() {
            return Err(not_allowed(format!("network {network} has no bridge")));
        }
        out.push(Nic {
            tap: tap_name(&uuid, &device),
            bridge,
            mac: text(tx, "VIF", &vif, "MAC")?,
            mtu: crate::objects::network_mtu(tx, &network)?,
        });
    }
    Ok(out)
}

/// Makes the NICs' taps and puts them on their bridges; returns fv-vmm's `nets` config.
/// A tap left by an earlier run of the VM is replaced.
pub fn plug(nics: &[Nic]) -> Result<Vec<serde_json::Value>, ApiError> {
    let fail = |what: &str, e: fv_hostnet::HostnetError| ApiError::internal(format!("{what}: {e}"));
    let mut out = Vec::new();
    for nic in nics {
        fv_hostnet::Tap::remove_persistent(&nic.tap)
            .map_err(|e| fail("removing a stale tap", e))?;
        fv_hostnet::Tap::create_persistent(&nic.tap).map_err(|e| fail("creating a tap", e))?;
        // The bridge takes its ports' smallest MTU: the tap gets the network's first.
        fv_hostnet::link::set_mtu(&nic.tap, nic.mtu).map_err(|e| fail("setting a tap's MTU", e))?;
        fv_hostnet::link::add_to_bridge(&nic.bridge, &nic.tap)
            .map_err(|e| fail(&format!("putting {} on {}", nic.tap, nic.bridge), e))?;
        fv_hostnet::link::set_up(&nic.tap).map_err(|e| fail("bringing a tap up", e))?;
        let mut net = json!({ "tap": nic.tap });
        if !nic.mac.is_empty() {
            net["mac"] = json!(nic.mac);
        }
        out.push(net);
    }
    Ok(out)
}

/// Removes the VM's taps (after it halted), best effort.
pub fn unplug(vm_uuid: &str, devices: &[String]) {
    let taps: Vec<String> = devices.iter().map(|d| tap_name(vm_uuid, d)).collect();
    unplug_taps(&taps);
}

/// Removes these taps, best effort.
pub fn unplug_taps(taps: &[String]) {
    for tap in taps {
        if let Err(e) = fv_hostnet::Tap::remove_persistent(tap) {
            tracing::warn!("cannot remove tap {tap}: {e}");
        }
    }
}

/// The `device`s of the VM's VIFs.
pub fn vif_devices(tx: &Tx<'_>, vm: &str) -> Result<Vec<String>, ApiError> {
    refs(tx, "VM", vm, "VIFs")?
        .iter()
        .map(|vif| text(tx, "VIF", vif, "device"))
        .collect()
}

/// A random locally administered, unicast MAC, as XAPI makes for a VIF without one.
pub fn random_mac() -> Result<String, ApiError> {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    b[0] = (b[0] & 0xfc) | 0x02;
    Ok(b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_linux() {
        let name = tap_name("0c899d3a-48af-4fb7-b8dc-c63329a9d6b0", "3");
        assert_eq!(name, "vif0c899d3a.3");
        assert!(tap_name("x", "123456789").len() <= 15);
        // Only hex digits of the uuid and digits of the device get through.
        assert_eq!(tap_name("../../etc", "a/b"), "vifec.");
    }

    #[test]
    fn random_macs_are_local_unicast() {
        let mac = random_mac().unwrap();
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "{mac}");
        assert_eq!(mac.len(), 17);
        assert_ne!(mac, random_mac().unwrap());
    }
}
