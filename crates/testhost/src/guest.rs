//! Booting the test guest with QEMU (microvm, KVM) inside the emulated host: the check that
//! the whole recipe works, and the reference boot time the benchmarks compare against.

use std::path::PathBuf;
use std::time::Duration;

use crate::{run_with, Artifacts, Error, RunOptions};

/// The guest QEMU boots inside the emulated host.
#[derive(Clone, Debug)]
pub struct GuestBootOptions {
    pub smp: u32,
    pub memory_mib: u32,
    /// Kernel image; default: the cloud bzImage.
    pub kernel: Option<PathBuf>,
    /// Initramfs; default: `guest-initrd`.
    pub initrd: Option<PathBuf>,
    /// Kernel command line, without `fv.action=`.
    pub cmdline: String,
    /// `fv.action=` for the guest init (`poweroff`, `reboot`, `panic`, `shell`).
    pub action: String,
}

/// The guest command line the reference boot uses.
///
/// microvm has no i8042 controller; without these the kernel spends about 0.7 s probing for
/// one (measured inside the emulated host).
pub const GUEST_CMDLINE: &str = "console=ttyS0 quiet panic=-1 i8042.noaux i8042.nokbd i8042.nopnp";

impl Default for GuestBootOptions {
    fn default() -> Self {
        Self {
            smp: 2,
            memory_mib: 256,
            kernel: None,
            initrd: None,
            cmdline: GUEST_CMDLINE.into(),
            action: "poweroff".into(),
        }
    }
}

/// What one guest boot showed.
#[derive(Clone, Debug)]
pub struct GuestBoot {
    /// From the guest's `FV-GUEST-READY` line.
    pub cpus: u32,
    pub mem_kib: u64,
    /// QEMU start to the ready line, measured inside the emulated host.
    pub to_ready: Duration,
    /// QEMU start to QEMU exit, measured inside the emulated host.
    pub qemu_wall: Duration,
    /// The whole run, emulated host boot included, measured here.
    pub outer_wall: Duration,
    /// Everything the inner run printed.
    pub output: String,
}

const READY: &str = "FV-GUEST-READY";

// rtc=on: with microvm's default the guest's rtc_cmos probe waited about 4.5 s.
/// Boots the guest with `qemu-system-x86_64 -M microvm,accel=kvm` inside the emulated host
/// and reads its ready line.
pub fn boot_guest(host: &RunOptions, guest: &GuestBootOptions) -> Result<GuestBoot, Error> {
    let a = Artifacts::prepare()?;
    let kernel = guest
        .kernel
        .clone()
        .unwrap_or_else(|| a.guest_bzimage.clone());
    let initrd = guest
        .initrd
        .clone()
        .unwrap_or_else(|| a.guest_initrd.clone());
    let (kernel, initrd) = match (kernel.to_str(), initrd.to_str()) {
        (Some(k), Some(i)) => (k.to_owned(), i.to_owned()),
        _ => return Err(Error::InvalidArgument("non-UTF-8 guest image path".into())),
    };
    if guest.cmdline.contains('\'')
        || guest
            .action
            .contains(|c: char| c.is_whitespace() || c == '\'')
    {
        return Err(Error::InvalidArgument(
            "guest command line must not contain quotes".into(),
        ));
    }
    // Timestamps are taken in the emulated host, so the TCG boot does not count.
    let script = format!(
        r#"t0=$(date +%s%N)
qemu-system-x86_64 -M microvm,accel=kvm,x-option-roms=off,rtc=on -cpu host \
  -smp {smp} -m {mem} -nodefaults -no-user-config -display none -serial stdio -no-reboot \
  -kernel '{kernel}' -initrd '{initrd}' \
  -append '{cmdline} fv.action={action}' </dev/null 2>&1 |
while IFS= read -r l; do
  printf '%s\n' "$l"
  case "$l" in {READY}*) echo "FVTH-READY-NS $(($(date +%s%N) - t0))" ;; esac
done
echo "FVTH-QEMU-NS $(($(date +%s%N) - t0))"
"#,
        smp = guest.smp,
        mem = guest.memory_mib,
        action = guest.action,
        cmdline = guest.cmdline,
    );
    let out = run_with(&a, host, &["sh", "-c", &script])?;
    let not_ready = |why: &str| Error::GuestNotReady(format!("{why}; output:\n{}", out.output));
    let value = |prefix: &str| -> Option<u128> {
        out.output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    };
    let ready = out
        .output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(READY))
        .ok_or_else(|| not_ready("no ready line"))?;
    let field = |name: &str| -> Option<u64> {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    let (Some(cpus), Some(mem_kib)) = (field("cpus="), field("mem_kib=")) else {
        return Err(not_ready("malformed ready line"));
    };
    let ns = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    Ok(GuestBoot {
        cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
        mem_kib,
        to_ready: ns(value("FVTH-READY-NS ").ok_or_else(|| not_ready("no ready timestamp"))?),
        qemu_wall: ns(value("FVTH-QEMU-NS ").ok_or_else(|| not_ready("no exit timestamp"))?),
        outer_wall: out.wall,
        output: out.output,
    })
}
