//! fv-vmm booting the stock Debian 6.1 cloud kernel, as bzImage and as PVH vmlinux, with
//! 1 and 4 vCPUs, to the busybox initramfs that fv-testhost builds.
//!
//! The host's KVM (PVM) cannot run Linux, so each test boots the emulated AMD-V host
//! (crates/testhost) and runs this very test binary inside it, where the `inside_*` twin of
//! the test drives fv-vmm on real nested KVM and makes the assertions. The outer test
//! passes when the inner one did.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::Vmm;

use fv_testhost::{Artifacts, RunOptions, GUEST_CMDLINE};

/// Set inside the emulated host, so that the `inside_*` tests run there and nowhere else.
const INSIDE: &str = "FV_LINUX_GUEST_INSIDE";
/// One nested boot takes 5 to 30 s depending on vCPUs and machine load.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Two emulated hosts at once would share 2 cores and time out; run them one at a time.
static EMULATED_HOST: Mutex<()> = Mutex::new(());

/// Runs the test `inside_<name>` in the emulated host; fails with its output if it failed.
fn in_emulated_host(name: &str) {
    let _one_at_a_time = EMULATED_HOST.lock().unwrap_or_else(|e| e.into_inner());
    let artifacts = Artifacts::prepare().expect("build the emulated host and guest artifacts");
    let exe = std::env::current_exe().unwrap();
    let test = format!("inside_{name}");
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(600)),
        env: vec![
            (INSIDE.into(), "1".into()),
            ("FV_BZIMAGE".into(), path_str(&artifacts.guest_bzimage)),
            ("FV_VMLINUX".into(), path_str(&artifacts.guest_vmlinux)),
            ("FV_INITRD".into(), path_str(&artifacts.guest_initrd)),
        ],
        ..RunOptions::default()
    };
    let argv = [
        exe.to_str().unwrap(),
        "--exact",
        &test,
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    let out = fv_testhost::run_with(&artifacts, &opts, &argv).expect("run the emulated host");
    assert!(
        out.status == 0 && out.output.contains("1 passed"),
        "{test} failed in the emulated host (status {}):\n{}",
        out.status,
        out.output
    );
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("artifact paths are UTF-8").to_string()
}

/// The guest artifact named by `var`, or `None` outside the emulated host.
fn inside(var: &str) -> Option<PathBuf> {
    std::env::var_os(INSIDE)?;
    Some(PathBuf::from(std::env::var_os(var).expect(var)))
}

/// Starts fv-vmm on `kernel` with the test initramfs, console on pipes.
fn boot(kernel: &Path, vcpus: u8, memory_mib: u64, action: &str) -> Vmm {
    let initrd = inside("FV_INITRD").unwrap();
    Vmm::spawn([
        "--kernel".into(),
        path_str(kernel),
        "--initrd".into(),
        path_str(&initrd),
        "--cmdline".into(),
        format!("{GUEST_CMDLINE} fv.action={action}"),
        "--vcpus".into(),
        vcpus.to_string(),
        "--memory".into(),
        memory_mib.to_string(),
    ])
}

/// Waits for fv-vmm to exit; returns its status, console output and stderr.
fn wait_exit(mut vmm: Vmm) -> (i32, String, String) {
    let status = vmm.wait_exit_within(GUEST_TIMEOUT);
    (status, vmm.stdout(), vmm.stderr())
}

/// The ready line the guest's init prints: (online CPUs, MemTotal KiB).
fn ready_line(output: &str) -> (u32, u64) {
    let line = output
        .lines()
        .find_map(|l| l.split("FV-GUEST-READY ").nth(1))
        .unwrap_or_else(|| panic!("no FV-GUEST-READY line:\n{output}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    (field("cpus=") as u32, field("mem_kib="))
}

/// MemTotal is RAM minus what the kernel keeps for itself (its image, page structs).
fn assert_memory(mem_kib: u64, memory_mib: u64, output: &str) {
    let ram_kib = memory_mib * 1024;
    assert!(
        (ram_kib * 3 / 4..=ram_kib).contains(&mem_kib),
        "guest sees {mem_kib} KiB of {ram_kib} KiB:\n{output}"
    );
}

fn boot_to_exit(kernel: &Path, vcpus: u8, memory_mib: u64, action: &str) -> (i32, String, String) {
    let (status, output, stderr) = wait_exit(boot(kernel, vcpus, memory_mib, action));
    let (cpus, mem_kib) = ready_line(&output);
    assert_eq!(cpus, u32::from(vcpus), "{output}");
    assert_memory(mem_kib, memory_mib, &output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (status, output, stderr)
}

#[test]
fn bzimage_one_vcpu_powers_off() {
    in_emulated_host("bzimage_one_vcpu_powers_off");
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_bzimage_one_vcpu_powers_off() {
    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let (status, output, stderr) = boot_to_exit(&kernel, 1, 256, "poweroff");
    assert_eq!(status, 0, "guest poweroff must exit 0\n{output}\n{stderr}");
}

#[test]
fn bzimage_four_vcpus_reboots() {
    in_emulated_host("bzimage_four_vcpus_reboots");
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_bzimage_four_vcpus_reboots() {
    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let (status, output, stderr) = boot_to_exit(&kernel, 4, 512, "reboot");
    assert_eq!(status, 10, "guest reboot must exit 10\n{output}\n{stderr}");
}

#[test]
fn pvh_vmlinux_panic_is_reported_as_a_crash() {
    in_emulated_host("pvh_vmlinux_panic_is_reported_as_a_crash");
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_pvh_vmlinux_panic_is_reported_as_a_crash() {
    let Some(kernel) = inside("FV_VMLINUX") else {
        return;
    };
    let (status, output, stderr) = boot_to_exit(&kernel, 1, 256, "panic");
    assert_eq!(status, 11, "guest panic must exit 11\n{output}\n{stderr}");
    assert!(
        stderr.contains("guest crashed") && stderr.contains("pvpanic"),
        "{stderr}"
    );
}

#[test]
fn pvh_vmlinux_four_vcpus_serial_shell() {
    in_emulated_host("pvh_vmlinux_four_vcpus_serial_shell");
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_pvh_vmlinux_four_vcpus_serial_shell() {
    let Some(kernel) = inside("FV_VMLINUX") else {
        return;
    };
    let mut guest = boot(&kernel, 4, 512, "shell");
    // Type each line at a prompt, as a person would. What we type reaches the shell and
    // its answer comes back (the echoed command itself shows `$((6*7))`, not `42`).
    guest.wait_for_output_n("/ # ", 1, GUEST_TIMEOUT);
    guest.write_stdin(b"echo fv-$((6*7))\n");
    guest.wait_for_output_n("fv-42", 1, GUEST_TIMEOUT);
    guest.wait_for_output_n("/ # ", 2, GUEST_TIMEOUT);
    guest.write_stdin(b"cat /sys/devices/system/clocksource/clocksource0/current_clocksource\n");
    guest.wait_for_output_n("kvm-clock", 1, GUEST_TIMEOUT);
    guest.wait_for_output_n("/ # ", 3, GUEST_TIMEOUT);
    guest.write_stdin(b"poweroff -f\n");
    let (status, output, stderr) = wait_exit(guest);
    let (cpus, mem_kib) = ready_line(&output);
    assert_eq!(cpus, 4, "{output}");
    assert_memory(mem_kib, 512, &output);
    assert_eq!(
        status, 0,
        "poweroff from the shell must exit 0\n{output}\n{stderr}"
    );
}

/// Standard base64 (the guest's busybox `base64 -d` reads it), for `fv.run=` scripts.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// In a fresh directory under TMPDIR (a tmpfs inside the emulated host; the rest of the
/// root is read-only): an 8 MiB ext4 image holding `marker` (its content returned too) and
/// a 1 MiB zeroed raw image. Returns (dir, ext4, raw, marker content).
fn pci_test_disks(tag: &str) -> (PathBuf, PathBuf, PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("fv-{tag}-{}", std::process::id()));
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    let marker = format!("fv-marker-{}", std::process::id());
    std::fs::write(content.join("marker"), &marker).unwrap();
    let ext4 = dir.join("root.ext4");
    fv_testhost::mkext4(&content, &ext4, 8).expect("mkext4");
    let scratch = dir.join("scratch.img");
    std::fs::write(&scratch, vec![0u8; 1 << 20]).unwrap();
    (dir, ext4, scratch, marker)
}

/// The value after `key ` on the first output line starting with it.
fn line_value<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key:?} line in the guest output:\n{output}"))
}

#[test]
fn virtio_pci_disks_and_rng_in_linux() {
    in_emulated_host("virtio_pci_disks_and_rng_in_linux");
}

/// Linux finds the host bridge and three virtio-pci functions, binds virtio-pci with
/// MSI-X, mounts an ext4 disk read-only and reads a marker file from it, moves the second
/// disk's BAR (told to by `pci=resource_alignment`) and writes to that raw disk (which the
/// host then sees), and reads entropy from /dev/hwrng. Seccomp is on.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_virtio_pci_disks_and_rng_in_linux() {
    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let initrd = inside("FV_INITRD").unwrap();
    let (dir, ext4, scratch, marker) = pci_test_disks("pci");

    let script = r#"mkdir -p /mnt
for d in /sys/bus/pci/devices/*; do
drv=$(readlink $d/driver)
echo "PCI ${d##*/} $(cat $d/vendor):$(cat $d/device) $(cat $d/class) ${drv##*/}"
done
read -r bar0 _ </sys/bus/pci/devices/0000:00:02.0/resource
echo "BAR0 $bar0"
echo "SERIAL $(cat /sys/block/vda/serial)"
echo "RO $(cat /sys/block/vda/ro)"
mount -t ext4 -o ro /dev/vda /mnt && echo "MARKER $(cat /mnt/marker)"
echo fv-written-by-the-guest | dd of=/dev/vdb bs=512 conv=sync,fsync 2>/dev/null
echo "WROTE $?"
echo "RNG $(cat /sys/class/misc/hw_random/rng_current)"
echo "RNGBYTES $(timeout 20 head -c 32 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
grep virtio /proc/interrupts | while read -r irq count rest; do echo "IRQ $count $rest"; done
"#;
    // Linux keeps the BARs where we placed them, except that 00:02.0 must be 1 MiB
    // aligned here: Linux moves it, and the scratch disk must work at its new address.
    let cmdline = format!(
        "{GUEST_CMDLINE} pci=resource_alignment=20@00:02.0 fv.action=run fv.run={}",
        base64(script.as_bytes())
    );
    let vmm = Vmm::spawn([
        "--kernel".into(),
        path_str(&kernel),
        "--initrd".into(),
        path_str(&initrd),
        "--cmdline".into(),
        cmdline,
        "--memory".into(),
        "256".into(),
        "--disk".into(),
        format!("path={},readonly=on,serial=fv-ext4-disk", path_str(&ext4)),
        "--disk".into(),
        format!("path={},format=raw", path_str(&scratch)),
        "--rng".into(),
    ]);
    let (status, output, stderr) = wait_exit(vmm);
    let written = std::fs::read(&scratch).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    println!("--- guest output ---\n{output}");
    assert_eq!(status, 0, "{output}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(line_value(&output, "FV-RUN-EXIT"), "0", "{output}");

    let pci: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("PCI "))
        .collect();
    assert_eq!(
        pci,
        [
            "0000:00:00.0 0x1b36:0x0008 0x060000",
            "0000:00:01.0 0x1af4:0x1042 0x010000 virtio-pci",
            "0000:00:02.0 0x1af4:0x1042 0x010000 virtio-pci",
            "0000:00:03.0 0x1af4:0x1044 0xff0000 virtio-pci",
        ],
        "{output}"
    );
    let bar0 = line_value(&output, "BAR0");
    let bar0 = u64::from_str_radix(bar0.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        bar0 % (1 << 20),
        0,
        "00:02.0 BAR0 at {bar0:#x} was not moved:\n{output}"
    );
    assert_eq!(line_value(&output, "SERIAL"), "fv-ext4-disk", "{output}");
    assert_eq!(line_value(&output, "RO"), "1", "{output}");
    assert_eq!(line_value(&output, "MARKER"), marker, "{output}");
    assert_eq!(line_value(&output, "WROTE"), "0", "{output}");
    assert!(
        written.starts_with(b"fv-written-by-the-guest\n"),
        "the raw disk holds {:?}\n{output}",
        String::from_utf8_lossy(&written[..32])
    );
    assert!(
        line_value(&output, "RNG").starts_with("virtio_rng"),
        "{output}"
    );
    let bytes = line_value(&output, "RNGBYTES");
    assert_eq!(bytes.len(), 64, "32 bytes from /dev/hwrng:\n{output}");
    assert_ne!(bytes, "0".repeat(64), "{output}");
    // Each device has MSI-X vectors of its own (a config vector and one per queue), and
    // the queue vectors fired: the device threads' irqfds reached the guest.
    let irqs: Vec<(u64, &str)> = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("IRQ "))
        .filter_map(|l| Some((l.split(' ').next()?.parse().ok()?, l)))
        .collect();
    assert_eq!(irqs.len(), 6, "{output}");
    assert!(irqs.iter().all(|(_, l)| l.contains("PCI-MSI")), "{output}");
    for queue in ["virtio0-req.0", "virtio1-req.0", "virtio2-input"] {
        assert!(
            irqs.iter().any(|(n, l)| *n > 0 && l.ends_with(queue)),
            "no interrupt on {queue}:\n{output}"
        );
    }
}

#[test]
fn virtio_pci_devices_work_again_after_a_reset_in_place() {
    in_emulated_host("virtio_pci_devices_work_again_after_a_reset_in_place");
}

/// `PUT /vm/reset` while Linux uses the devices (a moved BAR, MSI-X vectors unmasked,
/// queues live): the next boot of the same kernel finds them at their first places, and
/// reading the disk and the rng works again.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_virtio_pci_devices_work_again_after_a_reset_in_place() {
    let Some(kernel) = inside("FV_VMLINUX") else {
        return;
    };
    let initrd = inside("FV_INITRD").unwrap();
    let (dir, ext4, scratch, marker) = pci_test_disks("pcireset");
    let script = r#"mkdir -p /mnt
read -r bar0 _ </sys/bus/pci/devices/0000:00:02.0/resource
mount -t ext4 -o ro /dev/vda /mnt && echo "MARKER $(cat /mnt/marker) $bar0"
echo "RNGBYTES $(timeout 20 head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
echo ROUND-DONE
sleep 600
"#;
    let sock = dir.join("api.sock");
    let mut vmm = Vmm::spawn([
        "--kernel".into(),
        path_str(&kernel),
        "--initrd".into(),
        path_str(&initrd),
        "--cmdline".into(),
        format!(
            "{GUEST_CMDLINE} pci=resource_alignment=20@00:02.0 fv.action=run fv.run={}",
            base64(script.as_bytes())
        ),
        "--disk".into(),
        format!("path={},readonly=on", path_str(&ext4)),
        "--disk".into(),
        format!("path={}", path_str(&scratch)),
        "--rng".into(),
        "--api-socket".into(),
        path_str(&sock),
    ]);
    vmm.wait_for_output_n("ROUND-DONE", 1, GUEST_TIMEOUT);
    let api = vmm.api();
    assert_eq!(api.put("/vm/reset").status, 204, "{}", vmm.describe());
    vmm.wait_for_output_n("ROUND-DONE", 2, GUEST_TIMEOUT);
    assert_eq!(api.put("/vm/stop").status, 204, "{}", vmm.describe());
    let (status, output, stderr) = wait_exit(vmm);
    let _ = std::fs::remove_dir_all(&dir);
    println!("--- guest output ---\n{output}");
    assert_eq!(status, 0, "{output}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let markers: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("MARKER "))
        .collect();
    let want = format!("{marker} 0x00000000c0100000");
    assert_eq!(markers, [want.as_str(), want.as_str()], "{output}");
    let rng: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("RNGBYTES "))
        .collect();
    assert_eq!(rng.len(), 2, "{output}");
    assert!(rng.iter().all(|b| b.len() == 32), "{output}");
    assert_ne!(rng[0], rng[1], "{output}");
}
