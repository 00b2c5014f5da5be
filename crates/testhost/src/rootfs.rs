//! A small root filesystem for the demo template: busybox and an init that gives a shell on
//! the serial console and shuts down on the ACPI power button. The guest initramfs (see
//! `init/guest.sh`) loads the virtio drivers, mounts it (`fv.root=/dev/vda`) and switches
//! root to it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::ext4::mkext4;
use crate::Error;

/// The root's size: busybox (2 MiB) and room for a user to write a little.
pub const ROOTFS_MIB: u64 = 64;

/// /sbin/init: a console shell (respawned), acpid for the power button, the network's
/// interfaces up; when the shell is closed with `poweroff` the VM powers off.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
hostname ferrovisor-guest
for i in /sys/class/net/*; do ip link set "${i##*/}" up 2>/dev/null; done
# The ACPI power button (fvd's clean shutdown) reaches acpid through evdev.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "power button: shutting down"\nsync\npoweroff -f\n' >/etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
# (Its default log, /var/log/acpid.log, does not exist here: without -l it would exit.)
[ -e /dev/input/event0 ] && acpid -l /dev/console
echo
echo "Ferrovisor demo guest: Debian's kernel $(uname -r), a busybox root on /dev/vda."
echo "Type 'poweroff' to power the VM off."
while true; do
    setsid cttyhack sh -l
    echo "(the shell ended; type poweroff to power off)"
done
"#;

/// Builds `image`: a raw ext4 root filesystem holding busybox (from the host's
/// busybox-static, with its applets linked) and the init above.
pub fn build_rootfs(image: &Path) -> Result<(), Error> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or(Error::MissingTool {
            tool: "busybox",
            package: "busybox-static",
        })?;
    let parent = image.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(".rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = stage(&staging, busybox).and_then(|()| mkext4(&staging, image, ROOTFS_MIB));
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn stage(dir: &Path, busybox: &Path) -> Result<(), Error> {
    let io = |what: &'static str, p: &Path| Error::io(what, p.to_path_buf());
    for sub in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io("creating", &p))?;
    }
    let bb = dir.join("bin/busybox");
    std::fs::copy(busybox, &bb).map_err(io("copying busybox to", &bb))?;
    // Links for the applets that init and a user need by name.
    for applet in [
        "sh", "ls", "cat", "echo", "mount", "umount", "ip", "ifconfig", "ping", "poweroff",
        "reboot", "halt", "acpid", "hostname", "setsid", "cttyhack", "mkdir", "chmod", "sync",
        "uname", "ps", "free", "df", "dmesg", "vi", "wget", "nc", "udhcpc", "sleep", "top",
    ] {
        let link = dir.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(io("linking", &link))?;
    }
    let init = dir.join("sbin/init");
    std::fs::write(&init, INIT).map_err(io("writing", &init))?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(io("setting the mode of", &init))?;
    let profile = dir.join("etc/profile");
    std::fs::write(&profile, "export PATH=/bin:/sbin\nexport PS1='guest# '\n")
        .map_err(io("writing", &profile))?;
    Ok(())
}
