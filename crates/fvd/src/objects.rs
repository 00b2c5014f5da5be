//! What fvd does when storage and network objects are made through the generic `create`
//! (called in the creating transaction; an error undoes the creation).
//!
//! This is the small part of SRs and networks that running VMs need: a network's Linux
//! bridge, and a VDI's file in a local file SR.

use std::collections::BTreeMap;

use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};

use crate::fields::text;
use crate::vm::sr_path;

fn host_error(what: String) -> impl FnOnce(fv_hostnet::HostnetError) -> ApiError {
    move |e| ApiError::internal(format!("{what}: {e}"))
}

/// Makes `bridge` if it does not exist, with the network's `mtu`, and brings it up.
pub fn ensure_bridge(bridge: &str, mtu: u32) -> Result<(), ApiError> {
    if !fv_hostnet::link::exists(bridge).map_err(host_error(format!("looking for {bridge}")))? {
        fv_hostnet::link::create_bridge(bridge)
            .map_err(host_error(format!("creating bridge {bridge}")))?;
    }
    fv_hostnet::link::set_mtu(bridge, mtu)
        .map_err(host_error(format!("setting {bridge}'s MTU to {mtu}")))?;
    fv_hostnet::link::set_up(bridge).map_err(host_error(format!("bringing {bridge} up")))
}

/// A network's MTU: 68 (IPv4's least) to 65535, as the kernel takes.
pub fn network_mtu(tx: &Tx<'_>, network: &str) -> Result<u32, ApiError> {
    let mtu = tx.get("network", network, "MTU")?.as_int().unwrap_or(1500);
    u32::try_from(mtu)
        .ok()
        .filter(|m| (68..=65535).contains(m))
        .ok_or_else(|| ApiError::new(&codes::INVALID_VALUE, ["MTU", &mtu.to_string()]))
}

/// A new network gets a bridge: the one its record names, or `fvbr<N>`, the first free.
pub fn network_created(tx: &mut Tx<'_>, network: &str) -> Result<(), ApiError> {
    let mut bridge = text(tx, "network", network, "bridge")?;
    if bridge.is_empty() {
        let mut taken = Vec::new();
        for other in tx.refs("network")? {
            taken.push(text(tx, "network", &other, "bridge")?);
        }
        bridge = (0..)
            .map(|n| format!("fvbr{n}"))
            .find(|b| !taken.contains(b) && !fv_hostnet::link::exists(b).unwrap_or(true))
            .unwrap_or_default();
        tx.set("network", network, "bridge", Value::String(bridge.clone()))?;
    }
    if bridge.len() > 15
        || !bridge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(ApiError::new(&codes::INVALID_VALUE, ["bridge", &bridge]));
    }
    ensure_bridge(&bridge, network_mtu(tx, network)?)
}

/// The fields a client gives `VDI.create` (the others are the storage's to set).
const VDI_CREATE_FIELDS: &[&str] = &[
    "name_label",
    "name_description",
    "SR",
    "virtual_size",
    "type",
    "sharable",
    "read_only",
    "other_config",
    "xenstore_data",
    "sm_config",
    "tags",
];

/// `VDI.create(record)`: the record, and its file in the SR.
pub fn vdi_create(tx: &mut Tx<'_>, record: &Value) -> Result<String, ApiError> {
    let Value::Struct(given) = record else {
        return Err(ApiError::field_type("args"));
    };
    let fields: BTreeMap<String, Value> = given
        .iter()
        .filter(|(k, _)| VDI_CREATE_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vdi = tx.create("VDI", fields)?;
    vdi_created(tx, &vdi)?;
    Ok(vdi)
}

/// A new VDI in a file SR gets a sparse raw file of its virtual size.
pub fn vdi_created(tx: &mut Tx<'_>, vdi: &str) -> Result<(), ApiError> {
    let sr = text(tx, "VDI", vdi, "SR")?;
    if !tx.exists("SR", &sr)? {
        return Ok(());
    }
    let size = tx.get("VDI", vdi, "virtual_size")?.as_int().unwrap_or(0);
    let size = u64::try_from(size)
        .map_err(|_| ApiError::new(&codes::INVALID_VALUE, ["virtual_size", &size.to_string()]))?;
    let uuid = text(tx, "VDI", vdi, "uuid")?;
    let location = format!("{uuid}.raw");
    let path = sr_path(tx, &sr)?.join(&location);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|f| f.set_len(size))
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())));
    file?;
    tx.set("VDI", vdi, "location", Value::String(location))?;
    tx.set(
        "VDI",
        vdi,
        "sm_config",
        Value::Struct(BTreeMap::from([("type".to_owned(), Value::from("raw"))])),
    )
}

/// Copies `vdi` into SR `sr` as a new VDI (same name, size and type), file and all.
pub fn vdi_copy(tx: &mut Tx<'_>, vdi: &str, sr: &str) -> Result<String, ApiError> {
    let mut record = BTreeMap::new();
    for f in [
        "name_label",
        "name_description",
        "virtual_size",
        "type",
        "sharable",
        "other_config",
    ] {
        record.insert(f.to_owned(), tx.get("VDI", vdi, f)?);
    }
    record.insert("read_only".to_owned(), Value::Bool(false));
    record.insert("SR".to_owned(), Value::String(sr.to_owned()));
    let format = match tx.get("VDI", vdi, "sm_config")? {
        Value::Struct(m) => m
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("raw")
            .to_owned(),
        _ => "raw".to_owned(),
    };
    if format != "raw" {
        return Err(ApiError::new(
            &codes::OPERATION_NOT_ALLOWED,
            [format!(
                "copying a {format} VDI needs the storage layer; only raw is copied"
            )],
        ));
    }
    let from = sr_path(tx, &text(tx, "VDI", vdi, "SR")?)?.join(text(tx, "VDI", vdi, "location")?);
    let new = vdi_create(tx, &Value::Struct(record))?;
    let to = sr_path(tx, sr)?.join(text(tx, "VDI", &new, "location")?);
    copy_sparse(&from, &to).map_err(|e| {
        ApiError::internal(format!(
            "copying {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })?;
    Ok(new)
}

/// Copies a file's data over an existing file of the same size, leaving holes where the
/// source reads as zeroes (disks are mostly empty).
pub fn copy_sparse(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    const CHUNK: usize = 1 << 20;
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::OpenOptions::new().write(true).open(to)?;
    let len = src.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from((len - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        src.read_exact(&mut buf[..n])?;
        if buf[..n].iter().any(|b| *b != 0) {
            dst.seek(SeekFrom::Start(done))?;
            dst.write_all(&buf[..n])?;
        }
        done += n as u64;
    }
    dst.set_len(len)?;
    dst.sync_all()
}
