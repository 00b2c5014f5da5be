//! What fvd does when network objects are made through the generic `create` (called in
//! the creating transaction; an error undoes the creation): a network's Linux bridge.

use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};

use crate::fields::text;

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
