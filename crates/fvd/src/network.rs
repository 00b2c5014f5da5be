//! PIFs and VLANs: a host's interfaces in the XenAPI's terms.
//!
//! `PIF.introduce` records an existing interface with a network of its own; `PIF.plug`
//! puts it on that network's bridge. `VLAN.create` makes `<device>.<tag>` on a PIF (the
//! kernel's 8021q) and puts it on the network given, as an untagged PIF of that network:
//! VMs on the network then reach the VLAN. fvd makes VLAN links again at start, as the
//! kernel forgets them at a reboot.

use std::collections::BTreeMap;

use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};

use crate::fields::text;
use crate::objects::{ensure_bridge, network_created, network_mtu};

/// A host tool (`nft`, `dnsmasq`): from PATH, else where Debian installs it (fvd may run
/// with a PATH without the sbin directories).
pub fn tool(name: &str) -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| std::path::PathBuf::from(name))
}

fn host_error(what: String) -> impl FnOnce(fv_hostnet::HostnetError) -> ApiError {
    move |e| match e.kind() {
        fv_hostnet::ErrorKind::NotFound => {
            ApiError::new(&codes::OPERATION_NOT_ALLOWED, [format!("{what}: {e}")])
        }
        fv_hostnet::ErrorKind::InvalidInput => {
            ApiError::new(&codes::INVALID_VALUE, [what, e.to_string()])
        }
        _ => ApiError::internal(format!("{what}: {e}")),
    }
}

/// `PIF.introduce(host, MAC, device, managed)`.
pub fn pif_introduce(
    tx: &mut Tx<'_>,
    host: &str,
    mac: &str,
    device: &str,
    managed: bool,
) -> Result<String, ApiError> {
    for pif in tx.refs("PIF")? {
        if text(tx, "PIF", &pif, "device")? == device {
            return Err(ApiError::new(&codes::DEVICE_ALREADY_EXISTS, [device]));
        }
    }
    let actual =
        fv_hostnet::link::mac(device).map_err(host_error(format!("interface {device}")))?;
    if !mac.is_empty() && !mac.eq_ignore_ascii_case(&actual) {
        return Err(ApiError::new(
            &codes::INVALID_VALUE,
            ["MAC", &format!("{mac} (interface {device} has {actual})")],
        ));
    }
    let mtu = fv_hostnet::link::mtu(device).map_err(host_error(format!("interface {device}")))?;
    let network = tx.create(
        "network",
        BTreeMap::from([
            (
                "name_label".to_owned(),
                Value::String(format!("Pool-wide network associated with {device}")),
            ),
            ("MTU".to_owned(), Value::Int(i64::from(mtu))),
        ]),
    )?;
    network_created(tx, &network)?;
    let pif = tx.create("PIF", BTreeMap::new())?;
    for (field, value) in [
        ("device", Value::from(device)),
        ("MAC", Value::String(actual)),
        ("MTU", Value::Int(i64::from(mtu))),
        ("host", Value::from(host)),
        ("network", Value::String(network)),
        ("physical", Value::Bool(true)),
        ("managed", Value::Bool(managed)),
    ] {
        tx.set("PIF", &pif, field, value)?;
    }
    Ok(pif)
}

/// `PIF.plug`/`unplug`: the interface joins its network's bridge (up), or goes down.
pub fn pif_plug(tx: &mut Tx<'_>, pif: &str, plug: bool) -> Result<(), ApiError> {
    let device = text(tx, "PIF", pif, "device")?;
    if plug {
        let network = text(tx, "PIF", pif, "network")?;
        let bridge = text(tx, "network", &network, "bridge")?;
        ensure_bridge(&bridge, network_mtu(tx, &network)?)?;
        let what = format!("putting {device} on {bridge}");
        fv_hostnet::link::add_to_bridge(&bridge, &device).or_else(|e| {
            // Already a port of it (plugged before): fine.
            if e.kind() == fv_hostnet::ErrorKind::Busy {
                Ok(())
            } else {
                Err(host_error(what)(e))
            }
        })?;
        fv_hostnet::link::set_up(&device).map_err(host_error(format!("bringing {device} up")))?;
    } else {
        fv_hostnet::link::set_down(&device)
            .map_err(host_error(format!("bringing {device} down")))?;
    }
    tx.set("PIF", pif, "currently_attached", Value::Bool(plug))
}

/// `PIF.forget`: the record only (a VLAN on it must go first).
pub fn pif_forget(tx: &mut Tx<'_>, pif: &str) -> Result<(), ApiError> {
    if let Value::Array(vlans) = tx.get("PIF", pif, "VLAN_slave_of")? {
        if !vlans.is_empty() {
            return Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                ["the PIF carries VLANs: destroy them first"],
            ));
        }
    }
    tx.destroy("PIF", pif)
}

/// Makes the VLAN link of a VLAN record (if missing) and puts it on its network's bridge.
fn vlan_link(tx: &Tx<'_>, tagged: &str, tag: u16, network: &str) -> Result<String, ApiError> {
    let device = text(tx, "PIF", tagged, "device")?;
    let link = format!("{device}.{tag}");
    let exists = fv_hostnet::link::exists(&link).unwrap_or(false);
    if !exists {
        fv_hostnet::link::create_vlan(&device, tag)
            .map_err(host_error(format!("VLAN {tag} on {device}")))?;
    }
    let bridge = text(tx, "network", network, "bridge")?;
    ensure_bridge(&bridge, network_mtu(tx, network)?)?;
    fv_hostnet::link::add_to_bridge(&bridge, &link).or_else(|e| {
        if e.kind() == fv_hostnet::ErrorKind::Busy {
            Ok(())
        } else {
            Err(host_error(format!("putting {link} on {bridge}"))(e))
        }
    })?;
    fv_hostnet::link::set_up(&device).map_err(host_error(format!("bringing {device} up")))?;
    fv_hostnet::link::set_up(&link).map_err(host_error(format!("bringing {link} up")))?;
    Ok(link)
}

/// `VLAN.create(tagged_PIF, tag, network)`.
pub fn vlan_create(
    tx: &mut Tx<'_>,
    tagged: &str,
    tag: i64,
    network: &str,
) -> Result<String, ApiError> {
    let tag = u16::try_from(tag)
        .ok()
        .filter(|t| (1..=4094).contains(t))
        .ok_or_else(|| ApiError::new(&codes::INVALID_VALUE, ["tag", &tag.to_string()]))?;
    for vlan in tx.refs("VLAN")? {
        if text(tx, "VLAN", &vlan, "tagged_PIF")? == tagged
            && tx.get("VLAN", &vlan, "tag")?.as_int() == Some(i64::from(tag))
        {
            return Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                [format!("VLAN {tag} already exists on this PIF")],
            ));
        }
    }
    let link = vlan_link(tx, tagged, tag, network)?;
    let host = text(tx, "PIF", tagged, "host")?;
    let untagged = tx.create("PIF", BTreeMap::new())?;
    let mac = fv_hostnet::link::mac(&link).unwrap_or_default();
    for (field, value) in [
        ("device", Value::String(link)),
        ("MAC", Value::String(mac)),
        ("host", Value::String(host)),
        ("network", Value::from(network)),
        ("VLAN", Value::Int(i64::from(tag))),
        ("physical", Value::Bool(false)),
        ("currently_attached", Value::Bool(true)),
    ] {
        tx.set("PIF", &untagged, field, value)?;
    }
    let vlan = tx.create("VLAN", BTreeMap::new())?;
    tx.set("VLAN", &vlan, "tagged_PIF", Value::from(tagged))?;
    tx.set("VLAN", &vlan, "untagged_PIF", Value::String(untagged))?;
    tx.set("VLAN", &vlan, "tag", Value::Int(i64::from(tag)))?;
    Ok(vlan)
}

/// `VLAN.destroy`: the link, its PIF and the record.
pub fn vlan_destroy(tx: &mut Tx<'_>, vlan: &str) -> Result<(), ApiError> {
    let untagged = text(tx, "VLAN", vlan, "untagged_PIF")?;
    let link = text(tx, "PIF", &untagged, "device")?;
    match fv_hostnet::link::delete_vlan(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == fv_hostnet::ErrorKind::NotFound => {}
        Err(e) => return Err(host_error(format!("deleting {link}"))(e)),
    }
    tx.destroy("VLAN", vlan)?;
    tx.destroy("PIF", &untagged)
}

/// At start: the VLAN links and plugged PIFs as the database says (a reboot of the host
/// forgets them). Failures are logged, not fatal: the rest of the host still works.
pub fn restore(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    for vlan in tx.refs("VLAN")? {
        let tagged = text(tx, "VLAN", &vlan, "tagged_PIF")?;
        let untagged = text(tx, "VLAN", &vlan, "untagged_PIF")?;
        let network = text(tx, "PIF", &untagged, "network")?;
        let tag = tx.get("VLAN", &vlan, "tag")?.as_int().unwrap_or(0);
        let Ok(tag) = u16::try_from(tag) else {
            continue;
        };
        if let Err(e) = vlan_link(tx, &tagged, tag, &network) {
            tracing::warn!("VLAN {tag}: {e:?}");
        }
    }
    for pif in tx.refs("PIF")? {
        let physical = matches!(tx.get("PIF", &pif, "physical")?, Value::Bool(true));
        let attached = matches!(
            tx.get("PIF", &pif, "currently_attached")?,
            Value::Bool(true)
        );
        if physical && attached {
            if let Err(e) = pif_plug(tx, &pif, true) {
                tracing::warn!("PIF {pif}: {e:?}");
            }
        }
    }
    Ok(())
}
