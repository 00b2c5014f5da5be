//! Managed networks: a DHCP server on a network's bridge, as XenServer's host-internal
//! networks with `other_config:ip_begin`, `ip_end` and `netmask`.
//!
//! The bridge gets `ip_begin` (with `netmask`), and a dnsmasq (Debian `dnsmasq-base`) bound
//! to that bridge alone hands out `ip_begin + 1` to `ip_end`. Its pid file is
//! `DATA_DIR/run/dnsmasq/<bridge>.pid`, its leases `DATA_DIR/dhcp/<bridge>.leases` (kept
//! across restarts), its log `DATA_DIR/dhcp/<bridge>.log`. A server is known by its
//! command line (`/proc/<pid>/cmdline`): fvd keeps one that runs with the arguments it
//! would give and replaces any other, so a restarted fvd adopts its servers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};

use crate::fields::{map_get, text};

/// The keys of `other_config` that make a network managed.
pub const KEYS: [&str; 3] = ["ip_begin", "ip_end", "netmask"];
/// How long a lease lasts.
const LEASE: &str = "1h";

/// A managed network's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Managed {
    /// The bridge's own address.
    pub begin: Ipv4Addr,
    /// The last address handed out.
    pub end: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

impl Managed {
    pub fn prefix_len(&self) -> u8 {
        // At most 32.
        u32::from(self.netmask).leading_ones() as u8
    }

    /// The first address handed out: the one after the bridge's.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.begin) + 1)
    }
}

fn invalid(key: &str, value: &str, why: &str) -> ApiError {
    ApiError::new(
        &codes::INVALID_VALUE,
        [format!("other_config:{key}"), format!("{value} ({why})")],
    )
}

/// The managed addresses `other_config` asks for: none unless it has all of [`KEYS`]
/// (`xe` changes a key by removing it, then adding it again); `INVALID_VALUE` unless they
/// make sense (a contiguous netmask, `ip_begin` < `ip_end` in one subnet, neither its
/// network nor its broadcast address).
pub fn managed(other_config: &Value) -> Result<Option<Managed>, ApiError> {
    let values: Vec<Option<String>> = KEYS.iter().map(|k| map_get(other_config, k)).collect();
    if values.iter().any(Option::is_none) {
        return Ok(None);
    }
    let mut addrs = [Ipv4Addr::UNSPECIFIED; 3];
    for ((key, value), addr) in KEYS.iter().zip(&values).zip(&mut addrs) {
        let value = value.as_deref().unwrap_or_default();
        *addr = value
            .trim()
            .parse()
            .map_err(|_| invalid(key, value, "not an IPv4 address"))?;
    }
    let [begin, end, netmask] = addrs;
    let m = Managed {
        begin,
        end,
        netmask,
    };
    let mask = u32::from(netmask);
    let show = |a: Ipv4Addr| a.to_string();
    if mask.leading_ones() + mask.trailing_zeros() != 32 || !(8..=30).contains(&m.prefix_len()) {
        return Err(invalid(
            "netmask",
            &show(netmask),
            "a contiguous mask of /8 to /30",
        ));
    }
    let (b, e) = (u32::from(begin), u32::from(end));
    let network = b & mask;
    let broadcast = network | !mask;
    if b == network || b == broadcast {
        return Err(invalid(
            "ip_begin",
            &show(begin),
            "the subnet's network or broadcast address",
        ));
    }
    if e & mask != network || e == broadcast || e <= b {
        return Err(invalid(
            "ip_end",
            &show(end),
            "after ip_begin, in its subnet, not the broadcast address",
        ));
    }
    Ok(Some(m))
}

/// The managed addresses of `network`, from its record.
pub fn of_network(tx: &Tx<'_>, network: &str) -> Result<Option<Managed>, ApiError> {
    managed(&tx.get("network", network, "other_config")?)
}

/// fvd's DHCP servers; the pid files are the only state, so this is cheap to make.
#[derive(Debug, Clone)]
pub struct Dhcp {
    run_dir: PathBuf,
    lease_dir: PathBuf,
}

/// Whether process `pid` is alive (and not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.split_whitespace().next()?.to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

impl Dhcp {
    pub fn new(data_dir: &Path) -> Dhcp {
        Dhcp {
            run_dir: data_dir.join("run").join("dnsmasq"),
            lease_dir: data_dir.join("dhcp"),
        }
    }

    fn pid_file(&self, bridge: &str) -> PathBuf {
        self.run_dir.join(format!("{bridge}.pid"))
    }

    /// dnsmasq's arguments for `bridge` (after the program's name).
    fn args(&self, bridge: &str, m: &Managed) -> Vec<String> {
        let lease = |ext: &str| self.lease_dir.join(format!("{bridge}.{ext}"));
        vec![
            // Not /etc/dnsmasq.conf, which is the host's.
            "--conf-file=/dev/null".into(),
            format!("--interface={bridge}"),
            "--bind-interfaces".into(),
            "--except-interface=lo".into(),
            // DNS answers only the names of its leases: no upstream, not the host's hosts.
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--dhcp-range={},{},{},{LEASE}", m.first(), m.end, m.netmask),
            "--dhcp-authoritative".into(),
            format!("--pid-file={}", self.pid_file(bridge).display()),
            format!("--dhcp-leasefile={}", lease("leases").display()),
            format!("--log-facility={}", lease("log").display()),
        ]
    }

    /// The pid of fvd's dnsmasq on `bridge` and its arguments, if one runs: the pid file
    /// names a live process whose command line has that pid file. (Its arguments are
    /// empty if it serves another network namespace than fvd's: it must be replaced.)
    fn running(&self, bridge: &str) -> Option<(i32, Vec<String>)> {
        let pid_file = self.pid_file(bridge);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if !alive(pid) {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mut argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = format!("--pid-file={}", pid_file.display());
        if argv.is_empty() || !argv.contains(&ours) {
            return None;
        }
        argv.remove(0);
        let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        if netns(&pid.to_string()) != netns("self") {
            argv.clear();
        }
        Some((pid, argv))
    }

    /// Gives `bridge` its address and a DHCP server for `m`: the running one if it has
    /// the same arguments, else a new one.
    pub fn ensure(&self, bridge: &str, m: &Managed) -> Result<(), ApiError> {
        fv_hostnet::link::set_ipv4_address(bridge, m.begin, m.prefix_len()).map_err(|e| {
            ApiError::internal(format!("giving {bridge} the address {}: {e}", m.begin))
        })?;
        let args = self.args(bridge, m);
        match self.running(bridge) {
            Some((_, running)) if running == args => return Ok(()),
            Some(_) => self.stop(bridge),
            None => {}
        }
        for dir in [&self.run_dir, &self.lease_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
        }
        // dnsmasq binds, writes its pid file, then detaches: its exit status says whether
        // it serves.
        let out = Command::new(crate::network::tool("dnsmasq"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                ApiError::internal(format!(
                    "cannot run dnsmasq (Debian package dnsmasq-base): {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(ApiError::internal(format!(
                "dnsmasq on {bridge} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        tracing::info!(
            "DHCP on {bridge}: {} to {} ({})",
            m.first(),
            m.end,
            m.netmask
        );
        Ok(())
    }

    /// Stops the DHCP server on `bridge`, if one runs (SIGTERM, SIGKILL after 2 s).
    pub fn stop(&self, bridge: &str) {
        if let Some((pid, _)) = self.running(bridge) {
            signal(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if alive(pid) {
                signal(pid, rustix::process::Signal::KILL);
            }
            tracing::info!("DHCP on {bridge} stopped");
        }
        let _ = std::fs::remove_file(self.pid_file(bridge));
    }

    /// The bridges that have a pid file.
    fn bridges(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".pid")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Stops every server (fvd stops).
    pub fn stop_all(&self) {
        for bridge in self.bridges() {
            self.stop(&bridge);
        }
    }

    /// At fvd's start: a server on each managed network's bridge (a running one with the
    /// same arguments is kept), none elsewhere. Failures are logged: the rest of the host
    /// still works.
    pub fn restore(&self, tx: &Tx<'_>) -> Result<(), ApiError> {
        let mut managed = Vec::new();
        for network in tx.refs("network")? {
            let bridge = text(tx, "network", &network, "bridge")?;
            match of_network(tx, &network) {
                Ok(Some(m)) if !bridge.is_empty() => managed.push((bridge, m)),
                Ok(_) => {}
                Err(e) => tracing::warn!("network {network}: {e:?}"),
            }
        }
        for bridge in self.bridges() {
            if !managed.iter().any(|(b, _)| *b == bridge) {
                self.stop(&bridge);
            }
        }
        for (bridge, m) in managed {
            if let Err(e) = self.ensure(&bridge, &m) {
                tracing::warn!("DHCP on {bridge}: {e:?}");
            }
        }
        Ok(())
    }

    /// A network's `other_config` changed (or it was made): its server follows.
    pub fn network_changed(&self, tx: &Tx<'_>, network: &str) -> Result<(), ApiError> {
        let bridge = text(tx, "network", network, "bridge")?;
        if bridge.is_empty() {
            return Ok(());
        }
        match of_network(tx, network)? {
            Some(m) => self.ensure(&bridge, &m),
            None => {
                if self.running(&bridge).is_some() {
                    self.stop(&bridge);
                    flush_address(&bridge);
                }
                Ok(())
            }
        }
    }

    /// A network goes: so does its server (and the bridge's address).
    pub fn network_destroyed(&self, tx: &Tx<'_>, network: &str) -> Result<(), ApiError> {
        let bridge = text(tx, "network", network, "bridge")?;
        if !bridge.is_empty() && self.running(&bridge).is_some() {
            self.stop(&bridge);
            flush_address(&bridge);
        }
        Ok(())
    }
}

/// Removes the IPv4 addresses fvd gave a bridge, best effort.
fn flush_address(bridge: &str) {
    let _ = Command::new(crate::network::tool("ip"))
        .args(["-4", "addr", "flush", "dev", bridge])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(pairs: &[(&str, &str)]) -> Value {
        Value::Struct(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn managed_networks_are_checked() {
        assert_eq!(managed(&config(&[("other", "x")])).unwrap(), None);
        assert_eq!(
            managed(&config(&[("ip_begin", "10.55.0.1")])).unwrap(),
            None
        );
        let m = managed(&config(&[
            ("ip_begin", "10.55.0.1"),
            ("ip_end", "10.55.0.50"),
            ("netmask", "255.255.255.0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(m.prefix_len(), 24);
        assert_eq!(m.first().to_string(), "10.55.0.2");
        for bad in [
            &[
                ("ip_begin", "10.55.0.1"),
                ("ip_end", "10.55.0.9"),
                ("netmask", "255.0.255.0"),
            ][..],
            &[
                ("ip_begin", "10.55.0.0"),
                ("ip_end", "10.55.0.9"),
                ("netmask", "255.255.255.0"),
            ],
            &[
                ("ip_begin", "10.55.0.9"),
                ("ip_end", "10.55.0.9"),
                ("netmask", "255.255.255.0"),
            ],
            &[
                ("ip_begin", "10.55.0.1"),
                ("ip_end", "10.55.1.9"),
                ("netmask", "255.255.255.0"),
            ],
            &[
                ("ip_begin", "10.55.0.1"),
                ("ip_end", "10.55.0.255"),
                ("netmask", "255.255.255.0"),
            ],
            &[
                ("ip_begin", "10.55.0.1"),
                ("ip_end", "x"),
                ("netmask", "255.255.255.0"),
            ],
        ] {
            let e = managed(&config(bad)).unwrap_err();
            assert_eq!(e.code, "INVALID_VALUE", "{bad:?}");
        }
    }

    #[test]
    fn dnsmasq_serves_the_bridge_only() {
        let d = Dhcp::new(Path::new("/data"));
        let m = Managed {
            begin: "10.55.0.1".parse().unwrap(),
            end: "10.55.0.50".parse().unwrap(),
            netmask: "255.255.255.0".parse().unwrap(),
        };
        let args = d.args("fvbr1", &m);
        for want in [
            "--interface=fvbr1",
            "--bind-interfaces",
            "--except-interface=lo",
            "--no-resolv",
            "--conf-file=/dev/null",
            "--dhcp-range=10.55.0.2,10.55.0.50,255.255.255.0,1h",
            "--pid-file=/data/run/dnsmasq/fvbr1.pid",
            "--dhcp-leasefile=/data/dhcp/fvbr1.leases",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
    }
}
