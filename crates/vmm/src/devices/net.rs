//! The host side of a virtio-net NIC: the tap it reads and writes frames through
//! (`fv_hostnet::Tap`, the device's `NetBackend`) and the MAC address the guest sees.
//!
//! A tap is opened (or created) while the VM is built, before any thread installs its
//! seccomp filter. Afterwards the device thread only reads and writes it; the vCPU thread
//! on which the driver activates the device sets its virtio-net header length and offloads
//! (`TUNSETVNETHDRSZ`, `TUNSETOFFLOAD`).

use fv_hostnet::{HostnetError, Tap};

use crate::config::{MacAddr, NetConfig};

#[derive(Debug, thiserror::Error)]
pub enum NetSetupError {
    #[error("--net tap={tap}: {why}")]
    Tap {
        tap: String,
        why: &'static str,
        #[source]
        source: HostnetError,
    },
}

/// A NIC's tap, ready for the device.
#[derive(Debug)]
pub struct HostTap {
    pub tap: Tap,
    pub mac: MacAddr,
}

/// Opens the tap `config` names, or creates one when the name is a pattern (`fvtap%d`);
/// a created tap is brought up, since nobody else knew its name to configure it. The MAC is
/// `config`'s, or derived from the host's and the tap's names.
pub fn open_tap(config: &NetConfig) -> Result<HostTap, NetSetupError> {
    let failed = |why: &'static str| {
        let tap = config.tap.clone();
        move |source| NetSetupError::Tap { tap, why, source }
    };
    let tap = if config.creates_tap() {
        let tap = Tap::create(&config.tap).map_err(failed("cannot create a tap"))?;
        tap.set_up()
            .map_err(failed("cannot bring the new tap up"))?;
        tap
    } else {
        Tap::open(&config.tap).map_err(|e| {
            let why = match &e {
                HostnetError::NotFound(_) => "no such tap (give a name with %d to create one)",
                // TUNSETIFF refuses an interface that is not a single-queue tap.
                HostnetError::Ioctl {
                    op: "TUNSETIFF",
                    source,
                    ..
                } if source.raw_os_error() == Some(libc::EINVAL) => {
                    "not a tap (a tun, a multi-queue tap or another kind of interface)"
                }
                _ if e.kind() == fv_hostnet::ErrorKind::Busy => {
                    "the tap is in use by another process"
                }
                _ => "cannot open the tap",
            };
            failed(why)(e)
        })?
    };
    let mac = config
        .mac
        .unwrap_or_else(|| MacAddr::derived(&host_name(), tap.name()));
    Ok(HostTap { tap, mac })
}

/// This host's name (of our UTS namespace), or "" when it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fv_hostnet::netns::run_in_new_netns;

    fn net(tap: &str) -> NetConfig {
        tap.parse::<NetConfig>()
            .or_else(|_| format!("tap={tap}").parse())
            .unwrap()
    }

    #[test]
    fn creates_opens_and_refuses_taps() {
        run_in_new_netns(|| {
            let created = open_tap(&net("fvtest%d")).unwrap();
            let name = created.tap.name().to_string();
            assert!(name.starts_with("fvtest"), "{name}");
            assert!(fv_hostnet::link::is_up(&name).unwrap());
            assert_eq!(created.mac, MacAddr::derived(&host_name(), &name));
            assert_eq!(created.mac.0[..3], [0x52, 0x54, 0x00]);

            let err = open_tap(&net("fvnone0")).unwrap_err().to_string();
            assert!(
                err.contains("fvnone0") && err.contains("no such tap"),
                "{err}"
            );
            let err = open_tap(&net("lo")).unwrap_err().to_string();
            assert!(err.contains("not a tap"), "{err}");

            let with_mac = net("tap=fvtest%d,mac=52:54:00:00:00:07");
            let t = open_tap(&with_mac).unwrap();
            assert_eq!(t.mac, MacAddr([0x52, 0x54, 0, 0, 0, 7]));
            assert_ne!(t.tap.name(), name);
        })
        .unwrap();
    }
}
