//! VIF locking (`VIF.locking_mode`, `ipv4_allowed`, `ipv6_allowed`) enforced with nftables.
//!
//! fvd owns one table, `bridge ferrovisor`. Its base chains hook the bridges' prerouting
//! (frames entering a bridge from a port) and postrouting (frames leaving through one) and
//! dispatch by interface name through two verdict maps, `from_vif` and `to_vif`, to a
//! chain per VIF named after its tap. A VIF's chain is there while its VM runs:
//!
//! - `unlocked`: empty (everything passes);
//! - `disabled`: drop, both ways;
//! - `locked`: from the guest, only frames with the VIF's MAC as source; ARP only from
//!   that MAC and for the addresses of `ipv4_allowed`; IPv4 only from those addresses,
//!   IPv6 only from those of `ipv6_allowed`; no other protocol (so no VLAN tags). To the
//!   guest, no unicast frame for another MAC, and IP only for its allowed addresses (or
//!   broadcast and multicast). A locked VIF without addresses sends no IP at all.
//!
//! `network_default` is the network's `default_locking_mode` (`unlocked` or `disabled`).
//! Every change is one `nft -f -` transaction: the kernel takes all of it or none.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};

use crate::fields::text;

/// fvd's table, in the `bridge` family.
pub const TABLE: &str = "ferrovisor";

/// What a VIF is let do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    Unlocked,
    Disabled,
    Locked {
        /// Lower-case `aa:bb:cc:dd:ee:ff`.
        mac: String,
        ipv4: Vec<Ipv4Addr>,
        ipv6: Vec<Ipv6Addr>,
    },
}

/// A VIF's chain: its tap and its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifLock {
    pub tap: String,
    pub lock: Lock,
}

fn invalid(field: &str, value: &str) -> ApiError {
    ApiError::new(&codes::INVALID_VALUE, [field, value])
}

/// An IPv4 address of `ipv4_allowed`, in its canonical form, or `INVALID_VALUE`.
pub fn ipv4(value: &str) -> Result<Ipv4Addr, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid("ipv4_allowed", value))
}

/// An IPv6 address of `ipv6_allowed`, or `INVALID_VALUE`.
pub fn ipv6(value: &str) -> Result<Ipv6Addr, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid("ipv6_allowed", value))
}

/// `aa:bb:cc:dd:ee:ff` (either case, `-` too) in lower case, if it is a MAC.
pub fn mac(value: &str) -> Option<String> {
    let parts: Vec<&str> = value.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks the addresses of a VIF's `ipv4_allowed` and `ipv6_allowed` (a VIF made with
/// them through `VIF.create`): `INVALID_VALUE` for the first that is not an address.
pub fn check_allowed(tx: &Tx<'_>, vif: &str) -> Result<(), ApiError> {
    for a in strings(&tx.get("VIF", vif, "ipv4_allowed")?) {
        ipv4(&a)?;
    }
    for a in strings(&tx.get("VIF", vif, "ipv6_allowed")?) {
        ipv6(&a)?;
    }
    Ok(())
}

/// The VIF's lock as the database says: its `locking_mode`, or its network's
/// `default_locking_mode` for `network_default`.
pub fn vif_lock(tx: &Tx<'_>, vif: &str) -> Result<Lock, ApiError> {
    let mut mode = text(tx, "VIF", vif, "locking_mode")?;
    if mode == "network_default" {
        let network = text(tx, "VIF", vif, "network")?;
        mode = if tx.exists("network", &network)? {
            text(tx, "network", &network, "default_locking_mode")?
        } else {
            "unlocked".to_owned()
        };
    }
    Ok(match mode.as_str() {
        "disabled" => Lock::Disabled,
        "locked" => {
            let raw = text(tx, "VIF", vif, "MAC")?;
            let mac = mac(&raw).ok_or_else(|| invalid("MAC", &raw))?;
            let mut v4 = Vec::new();
            for a in strings(&tx.get("VIF", vif, "ipv4_allowed")?) {
                v4.push(ipv4(&a)?);
            }
            let mut v6 = Vec::new();
            for a in strings(&tx.get("VIF", vif, "ipv6_allowed")?) {
                v6.push(ipv6(&a)?);
            }
            v4.sort();
            v4.dedup();
            v6.sort();
            v6.dedup();
            Lock::Locked {
                mac,
                ipv4: v4,
                ipv6: v6,
            }
        }
        _ => Lock::Unlocked,
    })
}

/// `{ a, b }` of `items` and `extra`.
fn set_of(items: impl IntoIterator<Item = String>) -> String {
    format!("{{ {} }}", items.into_iter().collect::<Vec<_>>().join(", "))
}

/// The rules of a VIF's chain (without the `add rule bridge ferrovisor <chain>` part).
pub fn chain_rules(v: &VifLock) -> Vec<String> {
    let tap = &v.tap;
    let from = format!("iifname \"{tap}\"");
    let to = format!("oifname \"{tap}\"");
    match &v.lock {
        Lock::Unlocked => Vec::new(),
        Lock::Disabled => vec!["drop".to_owned()],
        Lock::Locked { mac, ipv4, ipv6 } => {
            let v4 = || ipv4.iter().map(ToString::to_string);
            let v6 = || ipv6.iter().map(ToString::to_string);
            let mut r = vec![
                format!("{from} ether saddr != {mac} drop"),
                format!("{from} ether type != {{ ip, arp, ip6 }} drop"),
            ];
            if ipv4.is_empty() {
                r.push(format!("{from} ether type {{ ip, arp }} drop"));
            } else {
                r.push(format!("{from} ether type arp arp hlen != 6 drop"));
                r.push(format!("{from} ether type arp arp plen != 4 drop"));
                r.push(format!(
                    "{from} ether type arp arp saddr ether != {mac} drop"
                ));
                r.push(format!(
                    "{from} ether type arp arp saddr ip != {} drop",
                    set_of(v4())
                ));
                r.push(format!(
                    "{from} ether type ip ip saddr != {} drop",
                    set_of(v4())
                ));
            }
            if ipv6.is_empty() {
                r.push(format!("{from} ether type ip6 drop"));
            } else {
                r.push(format!(
                    "{from} ether type ip6 ip6 saddr != {} drop",
                    set_of(v6())
                ));
            }
            r.push(format!(
                "{to} ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 \
                 ether daddr != {mac} drop"
            ));
            r.push(format!(
                "{to} ether type ip ip daddr != {} drop",
                set_of(v4().chain(["224.0.0.0/4".into(), "255.255.255.255".into()]))
            ));
            r.push(format!(
                "{to} ether type ip6 ip6 daddr != {} drop",
                set_of(v6().chain(["ff00::/8".into()]))
            ));
            r
        }
    }
}

/// The table with its maps and base chains, declared (an existing one is kept), and the
/// base chains' dispatch rules written again.
fn skeleton(chains: &[&str]) -> String {
    let mut s = format!(
        "table bridge {TABLE} {{\n\
         \tmap from_vif {{ type ifname : verdict; }}\n\
         \tmap to_vif {{ type ifname : verdict; }}\n\
         \tchain prerouting {{ type filter hook prerouting priority filter; policy accept; }}\n\
         \tchain postrouting {{ type filter hook postrouting priority filter; policy accept; }}\n"
    );
    for c in chains {
        s.push_str(&format!("\tchain {c} {{ }}\n"));
    }
    s.push_str(&format!(
        "}}\n\
         flush chain bridge {TABLE} prerouting\n\
         flush chain bridge {TABLE} postrouting\n\
         add rule bridge {TABLE} prerouting iifname vmap @from_vif\n\
         add rule bridge {TABLE} postrouting oifname vmap @to_vif\n"
    ));
    s
}

/// Writes the chains of `vifs` (made if missing) and points the maps at them.
pub fn update_script(vifs: &[VifLock]) -> String {
    let taps: Vec<&str> = vifs.iter().map(|v| v.tap.as_str()).collect();
    let mut s = skeleton(&taps);
    for v in vifs {
        let tap = &v.tap;
        s.push_str(&format!("flush chain bridge {TABLE} {tap}\n"));
        for rule in chain_rules(v) {
            s.push_str(&format!("add rule bridge {TABLE} {tap} {rule}\n"));
        }
        for map in ["from_vif", "to_vif"] {
            s.push_str(&format!(
                "add element bridge {TABLE} {map} {{ \"{tap}\" : jump {tap} }}\n"
            ));
        }
    }
    s
}

/// Removes the chains of `taps` and their map entries (whether or not they were there:
/// each is declared first, so that the deletions cannot fail).
pub fn remove_script(taps: &[String]) -> String {
    let names: Vec<&str> = taps.iter().map(String::as_str).collect();
    let mut s = skeleton(&names);
    for tap in taps {
        for map in ["from_vif", "to_vif"] {
            s.push_str(&format!(
                "add element bridge {TABLE} {map} {{ \"{tap}\" : jump {tap} }}\n\
                 delete element bridge {TABLE} {map} {{ \"{tap}\" }}\n"
            ));
        }
        s.push_str(&format!("delete chain bridge {TABLE} {tap}\n"));
    }
    s
}

/// The whole table made again with exactly the chains of `vifs`.
pub fn rebuild_script(vifs: &[VifLock]) -> String {
    format!(
        "table bridge {TABLE} {{ }}\ndelete table bridge {TABLE}\n{}",
        update_script(vifs)
    )
}

/// The `nft` binary: on PATH, else where Debian puts it (PATH may lack the sbin dirs).
fn nft() -> PathBuf {
    crate::network::tool("nft")
}

/// Runs `script` as one nftables transaction.
pub fn run_nft(script: &str) -> Result<(), String> {
    let mut child = Command::new(nft())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (Debian package nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The taps whose chains are in place. Changed only inside database write transactions,
/// which are serial: a change of a VIF's lock and its VM's start or halt cannot cross.
#[derive(Default)]
pub struct Firewall {
    active: Mutex<BTreeSet<String>>,
}

impl Firewall {
    fn active(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_active(&self, tap: &str) -> bool {
        self.active().contains(tap)
    }

    /// Applies `script` for `vifs`. Failing to filter a VIF that is to be unlocked anyway
    /// is only logged: a host without nftables still runs unlocked VMs.
    fn apply(&self, script: &str, vifs: &[VifLock]) -> Result<(), ApiError> {
        match run_nft(script) {
            Ok(()) => Ok(()),
            Err(e) if vifs.iter().all(|v| v.lock == Lock::Unlocked) => {
                tracing::warn!("VIF locking: {e}");
                Ok(())
            }
            Err(e) => Err(ApiError::internal(format!("VIF locking: {e}"))),
        }
    }

    /// Puts the chains of a starting VM's VIFs in place (before its taps exist).
    pub fn start(&self, vifs: &[VifLock]) -> Result<(), ApiError> {
        if vifs.is_empty() {
            return Ok(());
        }
        self.apply(&update_script(vifs), vifs)?;
        let mut active = self.active();
        active.extend(vifs.iter().map(|v| v.tap.clone()));
        Ok(())
    }

    /// Rewrites the chains of those of `vifs` whose VM runs.
    pub fn update(&self, vifs: Vec<VifLock>) -> Result<(), ApiError> {
        let vifs: Vec<VifLock> = vifs
            .into_iter()
            .filter(|v| self.is_active(&v.tap))
            .collect();
        if vifs.is_empty() {
            return Ok(());
        }
        self.apply(&update_script(&vifs), &vifs)
    }

    /// Removes the chains of `taps` (their VM halted), best effort.
    pub fn stop(&self, taps: &[String]) {
        if taps.is_empty() {
            return;
        }
        if let Err(e) = run_nft(&remove_script(taps)) {
            let locked = taps.iter().any(|t| self.is_active(t));
            if locked {
                tracing::warn!("VIF locking: removing the chains of {taps:?}: {e}");
            }
        }
        let mut active = self.active();
        for t in taps {
            active.remove(t);
        }
    }

    /// Makes the table again with the chains of exactly `vifs` (fvd's start).
    pub fn rebuild(&self, vifs: &[VifLock]) -> Result<(), ApiError> {
        self.apply(&rebuild_script(vifs), vifs)?;
        *self.active() = vifs.iter().map(|v| v.tap.clone()).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_canonical() {
        assert_eq!(ipv4(" 10.0.0.2").unwrap().to_string(), "10.0.0.2");
        for bad in [
            "10.0.0",
            "10.0.0.256",
            "10.0.0.1/24",
            "x; flush ruleset",
            "",
        ] {
            assert_eq!(ipv4(bad).unwrap_err().code, "INVALID_VALUE", "{bad}");
        }
        assert_eq!(ipv6("FE80::1").unwrap().to_string(), "fe80::1");
        assert!(ipv6("fe80::1%eth0").is_err());
        assert_eq!(
            mac("02-AB-cd-00-11-22").as_deref(),
            Some("02:ab:cd:00:11:22")
        );
        assert_eq!(mac("02:ab:cd:00:11"), None);
        assert_eq!(mac("02:ab:cd:00:11:2g"), None);
    }

    #[test]
    fn locked_rules_name_the_mac_and_addresses() {
        let v = VifLock {
            tap: "vif0c899d3a.0".into(),
            lock: Lock::Locked {
                mac: "02:00:00:00:00:01".into(),
                ipv4: vec!["10.0.0.2".parse().unwrap()],
                ipv6: vec![],
            },
        };
        let rules = chain_rules(&v).join("\n");
        assert!(rules.contains("iifname \"vif0c899d3a.0\" ether saddr != 02:00:00:00:00:01 drop"));
        assert!(rules.contains("ip saddr != { 10.0.0.2 } drop"));
        assert!(rules.contains("arp saddr ip != { 10.0.0.2 } drop"));
        assert!(rules.contains("ether type ip6 drop"), "{rules}");
        let none = VifLock {
            tap: "t".into(),
            lock: Lock::Locked {
                mac: "02:00:00:00:00:01".into(),
                ipv4: vec![],
                ipv6: vec![],
            },
        };
        let rules = chain_rules(&none).join("\n");
        assert!(rules.contains("ether type { ip, arp } drop"), "{rules}");
        assert_eq!(
            chain_rules(&VifLock {
                tap: "t".into(),
                lock: Lock::Disabled
            }),
            ["drop"]
        );
    }
}
