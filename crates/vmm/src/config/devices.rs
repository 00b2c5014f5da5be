//! The settings of the guest-service devices: a virtio console (`--console`), a vsock
//! device (`--vsock`) and a memory balloon (`--balloon`). At most one of each; in the JSON
//! file they are objects with the flag's keys (`"console": {"socket": "/run/vm.hvc"}`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{parse_device_options, ConfigError};

/// `sun_path` holds 108 bytes, the terminating NUL included.
pub const MAX_SOCKET_PATH_LEN: usize = 107;
/// A vsock socket path leaves room for `_<port>` (up to 10 digits), the sockets that guest
/// connections to host port `<port>` go to.
pub const MAX_VSOCK_PATH_LEN: usize = MAX_SOCKET_PATH_LEN - 11;
/// The guest CIDs a VM may have: 0-2 are reserved (hypervisor, local, host), and
/// `u32::MAX` is VMADDR_CID_ANY.
pub const MIN_VSOCK_CID: u64 = 3;
pub const MAX_VSOCK_CID: u64 = u32::MAX as u64 - 1;
/// What the balloon asks the guest for statistics every, unless told otherwise.
pub const DEFAULT_STATS_INTERVAL_S: u64 = 5;
/// The longest statistics interval accepted (one hour); 0 turns the polling off.
pub const MAX_STATS_INTERVAL_S: u64 = 3600;

/// A virtio console port (the guest's `/dev/hvc0`) on a Unix socket we listen on: one
/// client at a time gets the guest's output and sends it input, as with `--serial socket=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub socket: PathBuf,
}

/// A virtio-vsock device: the guest's CID, and the Unix socket host processes connect to
/// (`CONNECT <port>\n`); guest connections to host port `P` go to `<socket>_P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    pub cid: u64,
    pub socket: PathBuf,
}

/// A virtio-balloon device. Its target starts at 0 (nothing taken from the guest); the
/// API sets it (`PUT /vm/balloon`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonConfig {
    /// Seconds between two statistics requests to the guest; 0: only when asked through
    /// the API.
    #[serde(default = "default_stats_interval")]
    pub stats_interval: u64,
    /// Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM: a guest about to run out of memory takes
    /// pages back from the balloon instead of killing a process.
    #[serde(default)]
    pub deflate_on_oom: bool,
}

fn default_stats_interval() -> u64 {
    DEFAULT_STATS_INTERVAL_S
}

impl Default for BalloonConfig {
    fn default() -> Self {
        BalloonConfig {
            stats_interval: DEFAULT_STATS_INTERVAL_S,
            deflate_on_oom: false,
        }
    }
}

fn option_error(flag: &'static str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::DeviceOption {
        flag,
        value: value.to_string(),
        why: why.into(),
    }
}

/// A socket path: not empty, short enough for a Unix socket address.
fn check_socket_path(flag: &'static str, path: &Path, max: usize) -> Result<(), ConfigError> {
    let len = path.as_os_str().as_bytes().len();
    if len == 0 {
        return Err(option_error(flag, "", "socket= needs a path"));
    }
    if len > max {
        return Err(option_error(
            flag,
            &path.display().to_string(),
            format!(
                "the socket path is {len} bytes long; at most {max} fit in a Unix socket address"
            ),
        ));
    }
    Ok(())
}

/// Digits only (no sign, no spaces), as a `u64`.
fn parse_number(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

impl FromStr for ConsoleConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut socket = None;
        for (k, v) in parse_device_options("--console", s, &["socket"])? {
            if k == "socket" {
                socket = Some(PathBuf::from(v));
            }
        }
        let socket = socket.ok_or_else(|| option_error("--console", s, "socket= is required"))?;
        let console = ConsoleConfig { socket };
        console.validate()?;
        Ok(console)
    }
}

impl ConsoleConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_socket_path("--console", &self.socket, MAX_SOCKET_PATH_LEN)
    }
}

impl FromStr for VsockConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| option_error("--vsock", s, why);
        let (mut cid, mut socket) = (None, None);
        for (k, v) in parse_device_options("--vsock", s, &["cid", "socket"])? {
            match k {
                "cid" => {
                    cid = Some(
                        parse_number(v)
                            .ok_or_else(|| bad("cid= is a whole number, 3 to 4294967294"))?,
                    )
                }
                _ => socket = Some(PathBuf::from(v)),
            }
        }
        let vsock = VsockConfig {
            cid: cid.ok_or_else(|| bad("cid= is required"))?,
            socket: socket.ok_or_else(|| bad("socket= is required"))?,
        };
        vsock.validate()?;
        Ok(vsock)
    }
}

impl VsockConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_VSOCK_CID..=MAX_VSOCK_CID).contains(&self.cid) {
            return Err(option_error(
                "--vsock",
                &format!("cid={}", self.cid),
                format!(
                    "the guest CID is {MIN_VSOCK_CID} to {MAX_VSOCK_CID} (0-2 and {} are reserved)",
                    u32::MAX
                ),
            ));
        }
        check_socket_path("--vsock", &self.socket, MAX_VSOCK_PATH_LEN)
    }
}

impl FromStr for BalloonConfig {
    type Err = ConfigError;

    /// The options of `--balloon`; empty (the bare flag) gives the defaults.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| option_error("--balloon", s, why);
        let mut balloon = BalloonConfig::default();
        if s.is_empty() {
            return Ok(balloon);
        }
        const KEYS: &[&str] = &["stats_interval", "deflate_on_oom"];
        for (k, v) in parse_device_options("--balloon", s, KEYS)? {
            match k {
                "stats_interval" => {
                    balloon.stats_interval = parse_number(v).ok_or_else(|| {
                        bad("stats_interval= is a whole number of seconds (0: no polling)")
                    })?
                }
                _ => {
                    balloon.deflate_on_oom = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("deflate_on_oom= is on or off")),
                    }
                }
            }
        }
        balloon.validate()?;
        Ok(balloon)
    }
}

impl BalloonConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stats_interval > MAX_STATS_INTERVAL_S {
            return Err(option_error(
                "--balloon",
                &format!("stats_interval={}", self.stats_interval),
                format!(
                    "stats_interval= is at most {MAX_STATS_INTERVAL_S} seconds (0: no polling)"
                ),
            ));
        }
        Ok(())
    }

    /// How often the device asks for statistics by itself; `None`: never.
    pub fn stats_interval(&self) -> Option<std::time::Duration> {
        (self.stats_interval > 0).then(|| std::time::Duration::from_secs(self.stats_interval))
    }
}

/// The guest-service devices of one VM, checked together: each on its own, then the
/// sockets fv-vmm listens on (these and `others`, e.g. the API and serial sockets) must all
/// differ. Returns how many PCI slots they take.
pub fn validate_services(
    console: Option<&ConsoleConfig>,
    vsock: Option<&VsockConfig>,
    balloon: Option<&BalloonConfig>,
    others: &[(&'static str, &Path)],
) -> Result<usize, ConfigError> {
    let mut sockets: Vec<(&'static str, &Path)> = others.to_vec();
    if let Some(c) = console {
        c.validate()?;
        sockets.push(("--console", &c.socket));
    }
    if let Some(v) = vsock {
        v.validate()?;
        sockets.push(("--vsock", &v.socket));
    }
    if let Some(b) = balloon {
        b.validate()?;
    }
    for (i, (flag, path)) in sockets.iter().enumerate() {
        if let Some((other, _)) = sockets[..i].iter().find(|(_, p)| p == path) {
            return Err(option_error(
                flag,
                &path.display().to_string(),
                format!("{other} listens on this socket already"),
            ));
        }
    }
    Ok(usize::from(console.is_some())
        + usize::from(vsock.is_some())
        + usize::from(balloon.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of<T: FromStr<Err = ConfigError> + std::fmt::Debug>(s: &str) -> String {
        s.parse::<T>().unwrap_err().to_string()
    }

    #[test]
    fn console_options() {
        let c: ConsoleConfig = "socket=/run/vm.hvc".parse().unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/vm.hvc"));
        for bad in ["", "socket=", "/run/x", "path=/x", "socket=/a,socket=/b"] {
            let e = err_of::<ConsoleConfig>(bad);
            assert!(e.starts_with("--console "), "{bad}: {e}");
        }
        let long = format!("socket=/{}", "x".repeat(MAX_SOCKET_PATH_LEN));
        assert!(err_of::<ConsoleConfig>(&long).contains("at most 107"));
    }

    #[test]
    fn vsock_options() {
        let v: VsockConfig = "cid=3,socket=/run/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.socket.as_path()), (3, Path::new("/run/v.sock")));
        let v: VsockConfig = "socket=/s,cid=4294967294".parse().unwrap();
        assert_eq!(v.cid, 4_294_967_294);
        for bad in [
            "cid=3",
            "socket=/s",
            "cid=2,socket=/s",
            "cid=0,socket=/s",
            "cid=4294967295,socket=/s",
            "cid=99999999999999999999999,socket=/s",
            "cid=-3,socket=/s",
            "cid=+3,socket=/s",
            "cid=0x10,socket=/s",
            "cid=3,socket=/s,port=5",
            "cid=3,socket=",
        ] {
            let e = err_of::<VsockConfig>(bad);
            assert!(e.starts_with("--vsock "), "{bad}: {e}");
        }
        let long = format!("cid=3,socket=/{}", "x".repeat(MAX_VSOCK_PATH_LEN));
        assert!(err_of::<VsockConfig>(&long).contains("Unix socket address"));
    }

    #[test]
    fn balloon_options() {
        assert_eq!(
            "".parse::<BalloonConfig>().unwrap(),
            BalloonConfig::default()
        );
        let b: BalloonConfig = "stats_interval=0,deflate_on_oom=on".parse().unwrap();
        assert_eq!(
            b,
            BalloonConfig {
                stats_interval: 0,
                deflate_on_oom: true
            }
        );
        assert_eq!(b.stats_interval(), None);
        assert_eq!(
            BalloonConfig::default().stats_interval(),
            Some(std::time::Duration::from_secs(5))
        );
        for bad in [
            "stats_interval=",
            "stats_interval=-1",
            "stats_interval=1.5",
            "stats_interval=3601",
            "stats_interval=1,stats_interval=2",
            "deflate_on_oom=yes",
            "deflate_on_oom",
            "size=5",
            ",",
        ] {
            let e = err_of::<BalloonConfig>(bad);
            assert!(e.starts_with("--balloon "), "{bad}: {e}");
        }
    }

    fn cli(args: &[&str]) -> Result<super::super::VmConfig, ConfigError> {
        use clap::Parser;
        let mut argv = vec!["fv-vmm", "--kernel", "/k"];
        argv.extend_from_slice(args);
        super::super::Cli::try_parse_from(argv)
            .map_err(|e| option_error("clap", "", e.to_string()))?
            .into_config()
    }

    #[test]
    fn flags_and_json() {
        let c = cli(&[]).unwrap();
        assert_eq!((c.console, c.vsock, c.balloon), (None, None, None));
        // The bare flag, followed by another flag.
        let c = cli(&["--balloon", "--rng"]).unwrap();
        assert_eq!(c.balloon, Some(BalloonConfig::default()));
        assert!(c.rng);
        let c = cli(&[
            "--console",
            "socket=/run/c",
            "--vsock",
            "cid=7,socket=/run/v",
            "--balloon=stats_interval=1",
        ])
        .unwrap();
        assert_eq!(c.console.unwrap().socket, PathBuf::from("/run/c"));
        assert_eq!(c.vsock.unwrap().cid, 7);
        assert_eq!(c.balloon.unwrap().stats_interval, 1);
        let e = cli(&["--serial", "socket=/run/s", "--console", "socket=/run/s"]).unwrap_err();
        assert!(e.to_string().contains("--serial listens"), "{e}");
        let e = cli(&["--vsock", "cid=1,socket=/v"]).unwrap_err();
        assert!(e.to_string().starts_with("--vsock "), "{e}");

        let json = |text: &str| serde_json::from_str::<super::super::ConfigFile>(text);
        let f = json(
            r#"{"kernel": "/k", "console": {"socket": "/c"}, "vsock": {"cid": 3, "socket": "/v"},
                "balloon": {}}"#,
        )
        .unwrap();
        let c = f.validate().unwrap();
        assert_eq!(c.balloon, Some(BalloonConfig::default()));
        assert_eq!(c.vsock.unwrap().socket, PathBuf::from("/v"));
        let f =
            json(r#"{"kernel": "/k", "balloon": {"deflate_on_oom": true, "stats_interval": 0}}"#)
                .unwrap();
        assert!(f.validate().unwrap().balloon.unwrap().deflate_on_oom);
        for bad in [
            r#"{"kernel": "/k", "console": "socket=/c"}"#,
            r#"{"kernel": "/k", "console": {"path": "/c"}}"#,
            r#"{"kernel": "/k", "vsock": {"cid": 3}}"#,
            r#"{"kernel": "/k", "vsock": {"cid": -3, "socket": "/v"}}"#,
            r#"{"kernel": "/k", "balloon": {"size": 1}}"#,
            r#"{"kernel": "/k", "balloon": true}"#,
        ] {
            assert!(json(bad).is_err(), "{bad}");
        }
        for bad in [
            r#"{"kernel": "/k", "vsock": {"cid": 2, "socket": "/v"}}"#,
            r#"{"kernel": "/k", "console": {"socket": ""}}"#,
            r#"{"kernel": "/k", "balloon": {"stats_interval": 100000}}"#,
        ] {
            let e = json(bad).unwrap().validate().unwrap_err();
            assert!(matches!(e, ConfigError::DeviceOption { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn sockets_must_differ() {
        let c = ConsoleConfig {
            socket: "/run/a".into(),
        };
        let v = VsockConfig {
            cid: 3,
            socket: "/run/a".into(),
        };
        let e = validate_services(Some(&c), Some(&v), None, &[]).unwrap_err();
        assert!(e.to_string().contains("--console listens"), "{e}");
        let api = Path::new("/run/a");
        let e = validate_services(Some(&c), None, None, &[("--api-socket", api)]).unwrap_err();
        assert!(e.to_string().contains("--api-socket listens"), "{e}");
        let b = BalloonConfig::default();
        assert_eq!(validate_services(Some(&c), None, Some(&b), &[]).unwrap(), 2);
        assert_eq!(validate_services(None, None, None, &[]).unwrap(), 0);
    }
}
