//! The VM's settings: command-line flags or a JSON file, validated into one `VmConfig`.
//!
//! Flags given on the command line override the same setting from `--config`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::arch::layout::{MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB};

mod devices;
pub use devices::{BalloonConfig, ConsoleConfig, VsockConfig};

/// Used when neither a flag nor the config file gives a command line.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";
pub const DEFAULT_MEMORY_MIB: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no kernel given: use --kernel PATH or \"kernel\" in the config file")]
    NoKernel,
    #[error("--vcpus {0} is out of range: 1 to {MAX_VCPUS}")]
    Vcpus(u64),
    #[error("--memory {0} MiB is out of range: {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB")]
    Memory(u64),
    #[error("--serial {0:?} is not one of stdio, none, file=PATH, socket=PATH")]
    Serial(String),
    #[error("kernel command line is {0} bytes long; at most {max} fit", max = crate::arch::layout::CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong(usize),
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("{flag} {value:?}: {why}")]
    DeviceOption {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("{count} PCI devices asked for; at most {max} fit on the PCI bus")]
    TooManyDevices { count: usize, max: usize },
    #[error("--paused needs --api-socket: nothing else could resume the VM")]
    PausedWithoutApi,
}

/// PCI slots for devices: bus 0 has 32, the host bridge takes one.
pub const MAX_PCI_DEVICES: usize = 31;
/// virtio-blk's serial (VIRTIO_BLK_ID_BYTES).
pub const MAX_DISK_SERIAL_LEN: usize = 20;

/// A disk image's format on the command line and in the JSON file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn to_disk(self) -> fv_disk::Format {
        match self {
            DiskFormat::Raw => fv_disk::Format::Raw,
            DiskFormat::Qcow2 => fv_disk::Format::Qcow2,
        }
    }
}

/// One virtio-blk disk: `--disk path=P[,format=raw|qcow2][,readonly=on][,serial=S]
/// [,bytes_per_sec=N][,ops_per_sec=N]`, or an object in the JSON file's `disks` list with the
/// same keys (`readonly` a boolean, the limits integers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: PathBuf,
    /// `None`: probed from the image (a qcow2 header, else raw).
    #[serde(default)]
    pub format: Option<DiskFormat>,
    #[serde(default)]
    pub readonly: bool,
    /// What the guest reads as the disk's serial (e.g. /sys/block/vda/serial).
    #[serde(default)]
    pub serial: Option<String>,
    /// Throughput limit, bytes read or written per second; `None` for none.
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
    /// Request limit, requests per second; `None` for none.
    #[serde(default)]
    pub ops_per_sec: Option<u64>,
}

/// A MAC address, written `52:54:00:12:34:56` (two hex digits per byte, either case). Only
/// unicast addresses other than all zeros are accepted: a NIC cannot own anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address like 52:54:00:12:34:56");
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in mac.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if mac[0] & 1 != 0 {
            return Err(format!(
                "{s} is a multicast address; a NIC needs a unicast one"
            ));
        }
        if mac == [0; 6] {
            return Err("00:00:00:00:00:00 is not a usable MAC address".into());
        }
        Ok(MacAddr(mac))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl MacAddr {
    /// The MAC a NIC gets when none is given: `52:54:00` (locally administered, unicast;
    /// the prefix QEMU uses) followed by 24 bits of a hash (FNV-1a) of the host's name and
    /// the tap's name. A tap's name is unique on its host at any time, so two VMs running
    /// on one host differ unless 24-bit hashes collide, and a VM restarted on the same tap
    /// keeps its MAC (its DHCP lease, the bridge's forwarding entries). The host name keeps
    /// hosts that reuse tap names apart on a shared segment. Give `mac=` to be sure.
    pub fn derived(host: &str, tap: &str) -> MacAddr {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in host.bytes().chain([b'/']).chain(tap.bytes()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let h = hash.to_be_bytes();
        MacAddr([0x52, 0x54, 0x00, h[5], h[6], h[7]])
    }
}

/// One virtio-net NIC: `--net tap=NAME[,mac=M][,rx_bytes_per_sec=N][,rx_ops_per_sec=N]
/// [,tx_bytes_per_sec=N][,tx_ops_per_sec=N]`, or an object in the JSON file's `nets` list with
/// the same keys. `rx` is what the guest receives, `tx` what it sends; ops are frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// An existing tap to attach to, or a name with one `%d` (`fvtap%d`): fv-vmm then
    /// creates a tap, the kernel picking the number, and removes it when it exits.
    pub tap: String,
    /// `None`: derived from the host and tap names (`MacAddr::derived`).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub rx_bytes_per_sec: Option<u64>,
    #[serde(default)]
    pub rx_ops_per_sec: Option<u64>,
    #[serde(default)]
    pub tx_bytes_per_sec: Option<u64>,
    #[serde(default)]
    pub tx_ops_per_sec: Option<u64>,
}

/// Linux's IFNAMSIZ less the terminating NUL.
pub const MAX_TAP_NAME_LEN: usize = 15;

/// Parses a rate limit: a whole number above zero (leave the key out for no limit).
fn parse_rate(key: &str, v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "{key}= is a whole number above 0 (leave it out for no limit)"
        )),
    }
}

/// Checks the limits read from the JSON file: none may be 0.
fn check_rates(rates: &[(&str, Option<u64>)]) -> Result<(), String> {
    match rates.iter().find(|(_, v)| *v == Some(0)) {
        Some((key, _)) => Err(format!(
            "{key} is a whole number above 0 (leave it out for no limit)"
        )),
        None => Ok(()),
    }
}

/// Splits a device flag's value, `key=value,key=value`, refusing unknown and repeated keys
/// and empty values. Values cannot contain commas (use the JSON file for such paths).
pub fn parse_device_options<'a>(
    flag: &'static str,
    value: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, ConfigError> {
    let bad = |why: String| ConfigError::DeviceOption {
        flag,
        value: value.to_string(),
        why,
    };
    let mut out: Vec<(&str, &str)> = Vec::new();
    for item in value.split(',') {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?} is not key=value")))?;
        if !known.contains(&k) {
            return Err(bad(format!(
                "unknown key {k:?} (known: {})",
                known.join(", ")
            )));
        }
        if v.is_empty() {
            return Err(bad(format!("{k}= needs a value")));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(bad(format!("{k}= given twice")));
        }
        out.push((k, v));
    }
    Ok(out)
}

impl FromStr for DiskConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::DeviceOption {
            flag: "--disk",
            value: s.to_string(),
            why: why.to_string(),
        };
        let mut disk = DiskConfig {
            path: PathBuf::new(),
            format: None,
            readonly: false,
            serial: None,
            bytes_per_sec: None,
            ops_per_sec: None,
        };
        const KEYS: &[&str] = &[
            "path",
            "format",
            "readonly",
            "serial",
            "bytes_per_sec",
            "ops_per_sec",
        ];
        for (k, v) in parse_device_options("--disk", s, KEYS)? {
            match k {
                "path" => disk.path = PathBuf::from(v),
                "format" => {
                    disk.format = Some(match v {
                        "raw" => DiskFormat::Raw,
                        "qcow2" => DiskFormat::Qcow2,
                        _ => return Err(bad("format= is raw or qcow2")),
                    })
                }
                "readonly" => {
                    disk.readonly = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("readonly= is on or off")),
                    }
                }
                "bytes_per_sec" => {
                    disk.bytes_per_sec = Some(parse_rate(k, v).map_err(|e| bad(&e))?)
                }
                "ops_per_sec" => disk.ops_per_sec = Some(parse_rate(k, v).map_err(|e| bad(&e))?),
                _ => disk.serial = Some(v.to_string()),
            }
        }
        if disk.path.as_os_str().is_empty() {
            return Err(bad("path= is required"));
        }
        Ok(disk)
    }
}

impl DiskConfig {
    /// Checks what the JSON file could get wrong that the flag parser already refuses.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::DeviceOption {
            flag: "--disk",
            value: self.path.display().to_string(),
            why,
        };
        if self.path.as_os_str().is_empty() {
            return Err(bad("path is empty".into()));
        }
        if let Some(serial) = &self.serial {
            if serial.len() > MAX_DISK_SERIAL_LEN
                || !serial.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                return Err(bad(format!(
                    "serial {serial:?} must be at most {MAX_DISK_SERIAL_LEN} printable ASCII characters"
                )));
            }
        }
        check_rates(&[
            ("bytes_per_sec", self.bytes_per_sec),
            ("ops_per_sec", self.ops_per_sec),
        ])
        .map_err(bad)
    }

    /// The virtio-blk device's limits.
    pub fn rate_limit(&self) -> fv_virtio::rate_limiter::RateLimit {
        rate_limit(self.bytes_per_sec, self.ops_per_sec)
    }
}

/// Limits as the device models take them: 0 is "no limit", the burst one second's worth.
fn rate_limit(bytes: Option<u64>, ops: Option<u64>) -> fv_virtio::rate_limiter::RateLimit {
    use fv_virtio::rate_limiter::{BucketConfig, RateLimit};
    let bucket = |rate: Option<u64>| BucketConfig {
        rate: rate.unwrap_or(0),
        burst: 0,
    };
    RateLimit {
        bytes: bucket(bytes),
        ops: bucket(ops),
    }
}

impl FromStr for NetConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::DeviceOption {
            flag: "--net",
            value: s.to_string(),
            why: why.to_string(),
        };
        let mut net = NetConfig {
            tap: String::new(),
            mac: None,
            rx_bytes_per_sec: None,
            rx_ops_per_sec: None,
            tx_bytes_per_sec: None,
            tx_ops_per_sec: None,
        };
        const KEYS: &[&str] = &[
            "tap",
            "mac",
            "rx_bytes_per_sec",
            "rx_ops_per_sec",
            "tx_bytes_per_sec",
            "tx_ops_per_sec",
        ];
        for (k, v) in parse_device_options("--net", s, KEYS)? {
            let rate = || parse_rate(k, v).map(Some).map_err(|e| bad(&e));
            match k {
                "tap" => net.tap = v.to_string(),
                "mac" => net.mac = Some(v.parse().map_err(|e: String| bad(&e))?),
                "rx_bytes_per_sec" => net.rx_bytes_per_sec = rate()?,
                "rx_ops_per_sec" => net.rx_ops_per_sec = rate()?,
                "tx_bytes_per_sec" => net.tx_bytes_per_sec = rate()?,
                _ => net.tx_ops_per_sec = rate()?,
            }
        }
        if net.tap.is_empty() {
            return Err(bad("tap= is required"));
        }
        net.validate()?;
        Ok(net)
    }
}

impl NetConfig {
    /// Checks what the JSON file could get wrong that the flag parser already refuses. The
    /// tap name's finer rules (no '/', ':' or spaces) are fv-hostnet's, when it opens it.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::DeviceOption {
            flag: "--net",
            value: format!("tap={}", self.tap),
            why,
        };
        if self.tap.is_empty() || self.tap.len() > MAX_TAP_NAME_LEN {
            return Err(bad(format!(
                "a tap name is 1 to {MAX_TAP_NAME_LEN} bytes long"
            )));
        }
        let percents = self.tap.matches('%').count();
        if percents > 1 || (percents == 1 && !self.tap.contains("%d")) {
            return Err(bad(
                "a name to create takes one %d, for the number the kernel picks".into(),
            ));
        }
        check_rates(&[
            ("rx_bytes_per_sec", self.rx_bytes_per_sec),
            ("rx_ops_per_sec", self.rx_ops_per_sec),
            ("tx_bytes_per_sec", self.tx_bytes_per_sec),
            ("tx_ops_per_sec", self.tx_ops_per_sec),
        ])
        .map_err(bad)
    }

    /// Whether fv-vmm creates the tap (the name is a pattern) rather than opening it.
    pub fn creates_tap(&self) -> bool {
        self.tap.contains('%')
    }

    /// Limits on what the guest receives.
    pub fn rx_rate_limit(&self) -> fv_virtio::rate_limiter::RateLimit {
        rate_limit(self.rx_bytes_per_sec, self.rx_ops_per_sec)
    }

    /// Limits on what the guest sends.
    pub fn tx_rate_limit(&self) -> fv_virtio::rate_limiter::RateLimit {
        rate_limit(self.tx_bytes_per_sec, self.tx_ops_per_sec)
    }
}

/// Where the guest's COM1 goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialConfig {
    /// Output to our stdout, input from our stdin (raw mode when it is a terminal).
    #[default]
    Stdio,
    /// Output dropped, no input.
    None,
    /// Output appended to a file, no input.
    File(PathBuf),
    /// A Unix socket we listen on: one client at a time gets output and sends input.
    Socket(PathBuf),
}

impl FromStr for SerialConfig {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let path = |p: &str| {
            if p.is_empty() {
                Err(ConfigError::Serial(s.to_string()))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        match s {
            "stdio" => Ok(SerialConfig::Stdio),
            "none" => Ok(SerialConfig::None),
            _ => match s.split_once('=') {
                Some(("file", p)) => Ok(SerialConfig::File(path(p)?)),
                Some(("socket", p)) => Ok(SerialConfig::Socket(path(p)?)),
                _ => Err(ConfigError::Serial(s.to_string())),
            },
        }
    }
}

impl std::fmt::Display for SerialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SerialConfig::Stdio => write!(f, "stdio"),
            SerialConfig::None => write!(f, "none"),
            SerialConfig::File(p) => write!(f, "file={}", p.display()),
            SerialConfig::Socket(p) => write!(f, "socket={}", p.display()),
        }
    }
}

/// The JSON config file: the same settings as the flags, all optional here.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub vcpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub serial: Option<String>,
    pub api_socket: Option<PathBuf>,
    pub seccomp: Option<bool>,
    /// virtio-blk disks, in PCI slot order.
    pub disks: Option<Vec<DiskConfig>>,
    /// virtio-net NICs, in PCI slot order (before the disks).
    pub nets: Option<Vec<NetConfig>>,
    /// A virtio-rng device fed from the host's random source.
    pub rng: Option<bool>,
    /// A virtio console port on a Unix socket: `{"socket": PATH}`.
    pub console: Option<ConsoleConfig>,
    /// A virtio-vsock device: `{"cid": N, "socket": PATH}`.
    pub vsock: Option<VsockConfig>,
    /// A virtio-balloon device: `{"stats_interval": SECS, "deflate_on_oom": BOOL}` (both
    /// optional: `{}`).
    pub balloon: Option<BalloonConfig>,
    /// Build the VM but keep its vCPUs paused until `PUT /vm/resume`.
    pub paused: Option<bool>,
    /// Where to write why the VM ended, as JSON, before exiting.
    pub exit_file: Option<PathBuf>,
}

/// fv-vmm: run one virtual machine on KVM.
///
/// Exit status: 0 the guest powered off (or a hard stop through the API),
/// 10 the guest asked for a reboot, 11 the guest crashed, 1 a VMM error.
#[derive(Debug, Parser, Default)]
#[command(name = "fv-vmm", version)]
pub struct Cli {
    /// Linux kernel: bzImage, or ELF vmlinux (booted through its PVH entry when it has one).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk loaded at the top of low memory.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 panic=-1"].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs, 1 to 32 [default: 1].
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u64>,
    /// Guest memory in MiB [default: 256].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Guest serial console: stdio, none, file=PATH or socket=PATH [default: stdio].
    #[arg(long, value_name = "WHERE")]
    pub serial: Option<String>,
    /// Serve the HTTP/JSON API on this Unix socket (see docs/vmm-api.md).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Read settings from a JSON file; flags override it.
    #[arg(long, value_name = "FILE.json")]
    pub config: Option<PathBuf>,
    /// Do not install seccomp filters (debugging only).
    #[arg(long)]
    pub no_seccomp: bool,
    /// A virtio-blk disk: path=P[,format=raw|qcow2][,readonly=on][,serial=S]
    /// [,bytes_per_sec=N][,ops_per_sec=N]. Repeatable; replaces the config file's disks.
    #[arg(long = "disk", value_name = "OPTIONS")]
    pub disks: Vec<String>,
    /// A virtio-net NIC on a tap: tap=NAME (an existing tap, or e.g. fvtap%d to create one)
    /// [,mac=52:54:00:..][,rx_bytes_per_sec=N][,rx_ops_per_sec=N][,tx_bytes_per_sec=N]
    /// [,tx_ops_per_sec=N]. Repeatable; replaces the config file's NICs.
    #[arg(long = "net", value_name = "OPTIONS")]
    pub nets: Vec<String>,
    /// Add a virtio-rng device (the guest's /dev/hwrng).
    #[arg(long)]
    pub rng: bool,
    /// A virtio console (the guest's /dev/hvc0) on a Unix socket: socket=PATH.
    #[arg(long, value_name = "OPTIONS")]
    pub console: Option<String>,
    /// A virtio-vsock device: cid=N,socket=PATH (host processes connect to PATH; guest
    /// connections to host port P go to PATH_P).
    #[arg(long, value_name = "OPTIONS")]
    pub vsock: Option<String>,
    /// A virtio-balloon device, resized through the API:
    /// [stats_interval=SECS][,deflate_on_oom=on].
    #[arg(long, value_name = "OPTIONS", num_args = 0..=1, default_missing_value = "")]
    pub balloon: Option<String>,
    /// Build the VM but run no guest code until `PUT /vm/resume` (needs --api-socket).
    #[arg(long)]
    pub paused: bool,
    /// Before exiting, write why the VM ended to PATH as JSON ({"status", "reason",
    /// "detail"}), for a supervisor that is not fv-vmm's parent and cannot wait for it.
    #[arg(long, value_name = "PATH")]
    pub exit_file: Option<PathBuf>,
}

/// Validated settings for one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub serial: SerialConfig,
    pub api_socket: Option<PathBuf>,
    pub seccomp: bool,
    pub disks: Vec<DiskConfig>,
    pub nets: Vec<NetConfig>,
    pub rng: bool,
    pub console: Option<ConsoleConfig>,
    pub vsock: Option<VsockConfig>,
    pub balloon: Option<BalloonConfig>,
    /// The vCPUs start paused (`--paused`).
    pub paused: bool,
    pub exit_file: Option<PathBuf>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl Cli {
    /// Merges the flags over the config file (if any) and validates the result.
    pub fn into_config(self) -> Result<VmConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let merged = ConfigFile {
            kernel: self.kernel.or(file.kernel),
            initrd: self.initrd.or(file.initrd),
            cmdline: self.cmdline.or(file.cmdline),
            vcpus: self.vcpus.or(file.vcpus),
            memory_mib: self.memory.or(file.memory_mib),
            serial: self.serial.or(file.serial),
            api_socket: self.api_socket.or(file.api_socket),
            seccomp: if self.no_seccomp {
                Some(false)
            } else {
                file.seccomp
            },
            disks: if self.disks.is_empty() {
                file.disks
            } else {
                Some(
                    self.disks
                        .iter()
                        .map(|d| d.parse())
                        .collect::<Result<Vec<DiskConfig>, _>>()?,
                )
            },
            nets: if self.nets.is_empty() {
                file.nets
            } else {
                Some(
                    self.nets
                        .iter()
                        .map(|n| n.parse())
                        .collect::<Result<Vec<NetConfig>, _>>()?,
                )
            },
            rng: if self.rng { Some(true) } else { file.rng },
            console: match &self.console {
                Some(s) => Some(s.parse()?),
                None => file.console,
            },
            vsock: match &self.vsock {
                Some(s) => Some(s.parse()?),
                None => file.vsock,
            },
            balloon: match &self.balloon {
                Some(s) => Some(s.parse()?),
                None => file.balloon,
            },
            paused: if self.paused { Some(true) } else { file.paused },
            exit_file: self.exit_file.or(file.exit_file),
        };
        merged.validate()
    }
}

impl ConfigFile {
    pub fn validate(self) -> Result<VmConfig, ConfigError> {
        let vcpus = self.vcpus.unwrap_or(1);
        if vcpus == 0 || vcpus > u64::from(MAX_VCPUS) {
            return Err(ConfigError::Vcpus(vcpus));
        }
        let memory_mib = self.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
            return Err(ConfigError::Memory(memory_mib));
        }
        let cmdline = self.cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
        if cmdline.len() >= crate::arch::layout::CMDLINE_MAX_SIZE {
            return Err(ConfigError::CmdlineTooLong(cmdline.len()));
        }
        if cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        let serial = match self.serial {
            Some(s) => s.parse()?,
            None => SerialConfig::default(),
        };
        let disks = self.disks.unwrap_or_default();
        for d in &disks {
            d.validate()?;
        }
        let nets = self.nets.unwrap_or_default();
        for (i, n) in nets.iter().enumerate() {
            n.validate()?;
            let earlier = &nets[..i];
            let twice = |why: String| ConfigError::DeviceOption {
                flag: "--net",
                value: format!("tap={}", n.tap),
                why,
            };
            if !n.creates_tap() && earlier.iter().any(|e| e.tap == n.tap) {
                return Err(twice(format!("tap {} is given to two NICs", n.tap)));
            }
            if let Some(mac) = n.mac.filter(|m| earlier.iter().any(|e| e.mac == Some(*m))) {
                return Err(twice(format!("MAC {mac} is given to two NICs")));
            }
        }
        let rng = self.rng.unwrap_or(false);
        let mut sockets = Vec::new();
        if let SerialConfig::Socket(path) = &serial {
            sockets.push(("--serial", path.as_path()));
        }
        if let Some(path) = &self.api_socket {
            sockets.push(("--api-socket", path.as_path()));
        }
        let services = devices::validate_services(
            self.console.as_ref(),
            self.vsock.as_ref(),
            self.balloon.as_ref(),
            &sockets,
        )?;
        let count = disks.len() + nets.len() + usize::from(rng) + services;
        if count > MAX_PCI_DEVICES {
            return Err(ConfigError::TooManyDevices {
                count,
                max: MAX_PCI_DEVICES,
            });
        }
        let paused = self.paused.unwrap_or(false);
        if paused && self.api_socket.is_none() {
            return Err(ConfigError::PausedWithoutApi);
        }
        Ok(VmConfig {
            kernel: self.kernel.ok_or(ConfigError::NoKernel)?,
            initrd: self.initrd,
            cmdline,
            // In range 1..=32 (checked above), so the cast is lossless.
            vcpus: vcpus as u8,
            memory_mib,
            serial,
            api_socket: self.api_socket,
            seccomp: self.seccomp.unwrap_or(true),
            disks,
            nets,
            rng,
            console: self.console,
            vsock: self.vsock,
            balloon: self.balloon,
            paused,
            exit_file: self.exit_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<VmConfig, ConfigError> {
        let mut argv = vec!["fv-vmm"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().into_config()
    }

    #[test]
    fn paused_and_exit_file_from_flags_and_json() {
        let c = cli(&["--kernel", "/k"]).unwrap();
        assert!(!c.paused);
        assert_eq!(c.exit_file, None);
        let c = cli(&[
            "--kernel",
            "/k",
            "--paused",
            "--api-socket",
            "/a",
            "--exit-file",
            "/e",
        ]);
        let c = c.unwrap();
        assert!(c.paused);
        assert_eq!(c.exit_file, Some(PathBuf::from("/e")));
        assert!(matches!(
            cli(&["--kernel", "/k", "--paused"]),
            Err(ConfigError::PausedWithoutApi)
        ));
        let file: ConfigFile =
            serde_json::from_str(r#"{"kernel": "/k", "paused": true, "exit_file": "/e"}"#).unwrap();
        assert!(matches!(
            file.validate(),
            Err(ConfigError::PausedWithoutApi)
        ));
    }

    #[test]
    fn defaults_and_ranges() {
        let c = cli(&["--kernel", "/k"]).unwrap();
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.memory_mib, DEFAULT_MEMORY_MIB);
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);
        assert_eq!(c.serial, SerialConfig::Stdio);
        assert!(c.seccomp);
        assert!(matches!(cli(&[]), Err(ConfigError::NoKernel)));
        assert!(matches!(
            cli(&["--kernel", "/k", "--vcpus", "0"]),
            Err(ConfigError::Vcpus(0))
        ));
        assert!(matches!(
            cli(&["--kernel", "/k", "--vcpus", "33"]),
            Err(ConfigError::Vcpus(33))
        ));
        assert!(cli(&["--kernel", "/k", "--vcpus", "32"]).is_ok());
        assert!(matches!(
            cli(&["--kernel", "/k", "--memory", "0"]),
            Err(ConfigError::Memory(0))
        ));
        assert!(matches!(
            cli(&["--kernel", "/k", "--memory", "10000000"]),
            Err(ConfigError::Memory(_))
        ));
        let long = "x".repeat(4096);
        assert!(matches!(
            cli(&["--kernel", "/k", "--cmdline", &long]),
            Err(ConfigError::CmdlineTooLong(4096))
        ));
    }

    #[test]
    fn serial_forms() {
        assert_eq!("none".parse::<SerialConfig>().unwrap(), SerialConfig::None);
        assert_eq!(
            "file=/tmp/x".parse::<SerialConfig>().unwrap(),
            SerialConfig::File("/tmp/x".into())
        );
        assert_eq!(
            "socket=/tmp/s".parse::<SerialConfig>().unwrap(),
            SerialConfig::Socket("/tmp/s".into())
        );
        for bad in ["file=", "tty", "socket", "pipe=/x"] {
            assert!(bad.parse::<SerialConfig>().is_err(), "{bad}");
        }
        let s = SerialConfig::File("/a b".into());
        assert_eq!(s.to_string().parse::<SerialConfig>().unwrap(), s);
    }

    #[test]
    fn disk_and_rng_flags() {
        let c = cli(&[
            "--kernel",
            "/k",
            "--disk",
            "path=/a.img",
            "--disk",
            "path=/b.qcow2,format=qcow2,readonly=on,serial=fv-disk-2,bytes_per_sec=1000000,ops_per_sec=500",
            "--rng",
        ])
        .unwrap();
        assert_eq!(
            c.disks,
            vec![
                DiskConfig {
                    path: "/a.img".into(),
                    format: None,
                    readonly: false,
                    serial: None,
                    bytes_per_sec: None,
                    ops_per_sec: None,
                },
                DiskConfig {
                    path: "/b.qcow2".into(),
                    format: Some(DiskFormat::Qcow2),
                    readonly: true,
                    serial: Some("fv-disk-2".into()),
                    bytes_per_sec: Some(1_000_000),
                    ops_per_sec: Some(500),
                }
            ]
        );
        assert!(c.rng);
        let plain = cli(&["--kernel", "/k"]).unwrap();
        assert!(plain.disks.is_empty() && !plain.rng);
        for bad in [
            "/a.img",
            "path=",
            "format=raw",
            "path=/a,format=vmdk",
            "path=/a,readonly=yes",
            "path=/a,path=/b",
            "path=/a,cache=none",
            "path=/a,serial=this-serial-is-far-too-long",
            "path=/a,serial=tab\there",
            "path=/a,",
            "path=/a,bytes_per_sec=0",
            "path=/a,ops_per_sec=-1",
            "path=/a,ops_per_sec=+5",
            "path=/a,bytes_per_sec=10M",
        ] {
            let err = cli(&["--kernel", "/k", "--disk", bad]).unwrap_err();
            assert!(
                matches!(err, ConfigError::DeviceOption { flag: "--disk", .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().starts_with("--disk "), "{err}");
        }
        let many: Vec<String> = (0..32).map(|i| format!("path=/d{i}")).collect();
        let mut args = vec!["--kernel", "/k"];
        for d in &many {
            args.extend(["--disk", d.as_str()]);
        }
        assert!(matches!(
            cli(&args),
            Err(ConfigError::TooManyDevices { count: 32, max: 31 })
        ));
    }

    #[test]
    fn net_flags() {
        let c = cli(&[
            "--kernel",
            "/k",
            "--net",
            "tap=fvtap%d",
            "--net",
            "tap=vif3.0,mac=52:54:00:AB:cd:01,rx_bytes_per_sec=1000,tx_ops_per_sec=10",
            "--disk",
            "path=/a",
        ])
        .unwrap();
        assert_eq!(c.nets.len(), 2);
        assert_eq!(c.nets[0].tap, "fvtap%d");
        assert!(c.nets[0].creates_tap());
        assert_eq!(c.nets[0].mac, None);
        let n = &c.nets[1];
        assert!(!n.creates_tap());
        assert_eq!(n.mac, Some(MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 1])));
        assert_eq!(n.mac.unwrap().to_string(), "52:54:00:ab:cd:01");
        assert_eq!(
            (
                n.rx_bytes_per_sec,
                n.rx_ops_per_sec,
                n.tx_bytes_per_sec,
                n.tx_ops_per_sec
            ),
            (Some(1000), None, None, Some(10))
        );
        assert_eq!(n.rx_rate_limit().bytes.rate, 1000);
        assert_eq!(n.rx_rate_limit().ops.rate, 0);
        assert_eq!(n.tx_rate_limit().ops.rate, 10);
        for bad in [
            "fvtap0",
            "tap=",
            "mac=52:54:00:00:00:01",
            "tap=a,mac=52:54:00:00:00",
            "tap=a,mac=52:54:00:00:00:01:02",
            "tap=a,mac=52-54-00-00-00-01",
            "tap=a,mac=52:54:00:00:00:g1",
            "tap=a,mac=5:54:00:00:00:001",
            "tap=a,mac=01:00:5e:00:00:01",
            "tap=a,mac=00:00:00:00:00:00",
            "tap=a,rx_bytes_per_sec=0",
            "tap=a,tx_ops_per_sec=fast",
            "tap=a,bytes_per_sec=1",
            "tap=a,tap=b",
            "tap=much-too-long-name",
            "tap=fv%d%d",
            "tap=fv%s",
        ] {
            let err = cli(&["--kernel", "/k", "--net", bad]).unwrap_err();
            assert!(
                matches!(err, ConfigError::DeviceOption { flag: "--net", .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().starts_with("--net "), "{err}");
        }
        for twice in [
            ["tap=vif1.0", "tap=vif1.0"],
            [
                "tap=a%d,mac=52:54:00:00:00:01",
                "tap=b,mac=52:54:00:00:00:01",
            ],
        ] {
            let err = cli(&["--kernel", "/k", "--net", twice[0], "--net", twice[1]]).unwrap_err();
            assert!(err.to_string().contains("two NICs"), "{err}");
        }
        // Two taps created from one pattern get different names.
        assert!(cli(&["--kernel", "/k", "--net", "tap=a%d", "--net", "tap=a%d"]).is_ok());
        let nets: Vec<String> = (0..16).map(|i| format!("tap=t{i}")).collect();
        let disks: Vec<String> = (0..16).map(|i| format!("path=/d{i}")).collect();
        let mut args = vec!["--kernel", "/k"];
        for (n, d) in nets.iter().zip(&disks) {
            args.extend(["--net", n.as_str(), "--disk", d.as_str()]);
        }
        assert!(matches!(
            cli(&args),
            Err(ConfigError::TooManyDevices { count: 32, max: 31 })
        ));
    }

    #[test]
    fn derived_macs_are_local_unicast_and_stable() {
        let a = MacAddr::derived("host1", "fvtap0");
        assert_eq!(a, MacAddr::derived("host1", "fvtap0"));
        assert_eq!(a.0[..3], [0x52, 0x54, 0x00]);
        assert_eq!(a.0[0] & 0b11, 0b10, "locally administered, unicast");
        assert_ne!(a, MacAddr::derived("host1", "fvtap1"));
        assert_ne!(a, MacAddr::derived("host2", "fvtap0"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(MacAddr::derived("ab", "c"), MacAddr::derived("a", "bc"));
        assert_eq!(a.to_string().parse::<MacAddr>().unwrap(), a);
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("fv-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vm.json");
        std::fs::write(
            &path,
            r#"{"kernel": "/vmlinux", "vcpus": 4, "memory_mib": 512, "serial": "none", "seccomp": false}"#,
        )
        .unwrap();
        let c = cli(&["--config", path.to_str().unwrap(), "--vcpus", "2"]).unwrap();
        assert_eq!(c.kernel, PathBuf::from("/vmlinux"));
        assert_eq!((c.vcpus, c.memory_mib), (2, 512));
        assert_eq!(c.serial, SerialConfig::None);
        assert!(!c.seccomp);

        std::fs::write(
            &path,
            r#"{"kernel": "/k", "rng": true,
                "disks": [{"path": "/a.img"}, {"path": "/b", "format": "raw", "readonly": true}]}"#,
        )
        .unwrap();
        let c = cli(&["--config", path.to_str().unwrap()]).unwrap();
        assert!(c.rng);
        assert_eq!(c.disks.len(), 2);
        assert_eq!(c.disks[1].format, Some(DiskFormat::Raw));
        assert!(c.disks[1].readonly);
        // --disk flags replace the file's list.
        let c = cli(&["--config", path.to_str().unwrap(), "--disk", "path=/c"]).unwrap();
        assert_eq!(c.disks.len(), 1);
        assert_eq!(c.disks[0].path, PathBuf::from("/c"));
        for bad in [
            r#"{"kernel": "/k", "disks": [{"path": "/a", "format": "vmdk"}]}"#,
            r#"{"kernel": "/k", "disks": [{"path": "/a", "cache": "none"}]}"#,
            r#"{"kernel": "/k", "disks": [{"format": "raw"}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(
                    cli(&["--config", path.to_str().unwrap()]),
                    Err(ConfigError::Parse { .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            r#"{"kernel": "/k", "disks": [{"path": "/a", "serial": "x\u0001"}]}"#,
            r#"{"kernel": "/k", "disks": [{"path": "/a", "ops_per_sec": 0}]}"#,
            r#"{"kernel": "/k", "nets": [{"tap": ""}]}"#,
            r#"{"kernel": "/k", "nets": [{"tap": "a%d%d"}]}"#,
            r#"{"kernel": "/k", "nets": [{"tap": "a", "tx_bytes_per_sec": 0}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(
                    cli(&["--config", path.to_str().unwrap()]),
                    Err(ConfigError::DeviceOption { .. })
                ),
                "{bad}"
            );
        }

        std::fs::write(
            &path,
            r#"{"kernel": "/k", "nets": [{"tap": "fvtap%d"},
                {"tap": "vif1.0", "mac": "52:54:00:00:00:02", "rx_bytes_per_sec": 100}],
                "disks": [{"path": "/a", "bytes_per_sec": 4096, "ops_per_sec": 8}]}"#,
        )
        .unwrap();
        let c = cli(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.nets.len(), 2);
        assert_eq!(c.nets[1].mac, Some(MacAddr([0x52, 0x54, 0, 0, 0, 2])));
        assert_eq!(c.nets[1].rx_bytes_per_sec, Some(100));
        assert_eq!(c.disks[0].rate_limit().bytes.rate, 4096);
        assert_eq!(c.disks[0].rate_limit().ops.rate, 8);
        // --net flags replace the file's list.
        let c = cli(&["--config", path.to_str().unwrap(), "--net", "tap=x"]).unwrap();
        assert_eq!(c.nets.len(), 1);
        for bad in [
            r#"{"kernel": "/k", "nets": [{"tap": "a", "mac": "01:02:03:04:05:06"}]}"#,
            r#"{"kernel": "/k", "nets": [{"tap": "a", "mac": 5}]}"#,
            r#"{"kernel": "/k", "nets": [{"tap": "a", "vlan": 5}]}"#,
            r#"{"kernel": "/k", "nets": [{"mac": "52:54:00:00:00:02"}]}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(
                    cli(&["--config", path.to_str().unwrap()]),
                    Err(ConfigError::Parse { .. })
                ),
                "{bad}"
            );
        }

        std::fs::write(&path, r#"{"kernel": "/k", "vcpu": 2}"#).unwrap();
        let err = cli(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(
            std::error::Error::source(&err)
                .unwrap()
                .to_string()
                .contains("unknown field"),
            "{err}"
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            cli(&["--config", path.to_str().unwrap()]),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            cli(&["--config", "/nonexistent/vm.json"]),
            Err(ConfigError::ReadFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
