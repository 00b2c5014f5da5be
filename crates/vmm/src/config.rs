//! The VM's settings: command-line flags or a JSON file, validated into one `VmConfig`.
//!
//! Flags given on the command line override the same setting from `--config`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::arch::layout::{MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB};

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

/// One virtio-blk disk: `--disk path=P[,format=raw|qcow2][,readonly=on][,serial=S]`, or an
/// object in the JSON file's `disks` list with the same keys (`readonly` a boolean).
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
        };
        for (k, v) in parse_device_options("--disk", s, &["path", "format", "readonly", "serial"])?
        {
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
        Ok(())
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
    /// A virtio-rng device fed from the host's random source.
    pub rng: Option<bool>,
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
    /// A virtio-blk disk: path=P[,format=raw|qcow2][,readonly=on][,serial=S]. Repeatable;
    /// replaces the config file's disks.
    #[arg(long = "disk", value_name = "OPTIONS")]
    pub disks: Vec<String>,
    /// Add a virtio-rng device (the guest's /dev/hwrng).
    #[arg(long)]
    pub rng: bool,
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
    pub rng: bool,
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
            rng: if self.rng { Some(true) } else { file.rng },
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
        let rng = self.rng.unwrap_or(false);
        let count = disks.len() + usize::from(rng);
        if count > MAX_PCI_DEVICES {
            return Err(ConfigError::TooManyDevices {
                count,
                max: MAX_PCI_DEVICES,
            });
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
            rng,
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
            "path=/b.qcow2,format=qcow2,readonly=on,serial=fv-disk-2",
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
                    serial: None
                },
                DiskConfig {
                    path: "/b.qcow2".into(),
                    format: Some(DiskFormat::Qcow2),
                    readonly: true,
                    serial: Some("fv-disk-2".into())
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
        std::fs::write(
            &path,
            r#"{"kernel": "/k", "disks": [{"path": "/a", "serial": "x\u0001"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            cli(&["--config", path.to_str().unwrap()]),
            Err(ConfigError::DeviceOption { .. })
        ));

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
