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

use fv_testhost::{Artifacts, GUEST_CMDLINE};

/// Set inside the emulated host, so that the `inside_*` tests run there and nowhere else.
const INSIDE: &str = "FV_LINUX_GUEST_INSIDE";
/// One nested boot takes 5 to 30 s depending on vCPUs and machine load.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Two emulated hosts at once would share 2 cores and time out; run them one at a time.
static EMULATED_HOST: Mutex<()> = Mutex::new(());

/// Runs the test `inside_<name>` in the emulated host; fails with its output if it failed.
fn in_emulated_host(name: &str) {
    let _one_at_a_time = EMULATED_HOST.lock().unwrap_or_else(|e| e.into_inner());
    fv_testhost::run_test_inside(INSIDE, &format!("inside_{name}"));
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("artifact paths are UTF-8").to_string()
}

/// The guest artifact named by `var`, or `None` outside the emulated host.
fn inside(var: &str) -> Option<PathBuf> {
    std::env::var_os(INSIDE)?;
    Some(PathBuf::from(std::env::var_os(var).expect(var)))
}

/// Starts fv-vmm on `kernel` with the test initramfs, console on pipes, and no devices.
/// The guest loads no modules either (`fv.modules=0`), whose text patching now and then
/// stalls the emulated host's nested AMD-V, above all for a kernel at a fixed address;
/// except to panic, which it reports through the pvpanic module.
fn boot(kernel: &Path, vcpus: u8, memory_mib: u64, action: &str) -> Vmm {
    let initrd = inside("FV_INITRD").unwrap();
    let modules = if action == "panic" {
        ""
    } else {
        " fv.modules=0"
    };
    Vmm::spawn([
        "--kernel".into(),
        path_str(kernel),
        "--initrd".into(),
        path_str(&initrd),
        "--cmdline".into(),
        format!("{GUEST_CMDLINE}{modules} fv.action={action}"),
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
    assert!(
        output.contains("FV-GUEST-READY"),
        "the guest's init never ran (fv-vmm exit status {status}):\n{output}\n{stderr}"
    );
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

/// A raw ext4 image (in a fresh directory, as [`pci_test_disks`]) that boots as a root
/// filesystem: busybox and an /sbin/init that reports its PID and root mount (the last
/// mount on `/`, the one on top, since the initramfs's stays beneath it), prints the
/// marker, writes `written` to /written, syncs and powers off. Returns (dir, image, marker).
fn bootable_root_disk(written: &str) -> (PathBuf, PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("fv-root-{}", std::process::id()));
    let content = dir.join("content");
    for sub in ["bin", "sbin", "proc"] {
        std::fs::create_dir_all(content.join(sub)).unwrap();
    }
    let marker = format!("fv-marker-{}", std::process::id());
    std::fs::write(content.join("marker"), &marker).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox (package busybox-static)");
    std::fs::copy(busybox, content.join("bin/busybox")).unwrap();
    let init = format!(
        "#!/bin/busybox sh\n\
         b=/bin/busybox\n\
         $b mount -t proc proc /proc\n\
         echo \"DISK-INIT-PID $$\"\n\
         echo \"ROOT-FS $($b awk '$2 == \"/\" {{ split($4, o, \",\"); top = $1 \" \" $3 \" \" o[1] }} END {{ print top }}' /proc/mounts)\"\n\
         echo \"MARKER $($b cat /marker)\"\n\
         echo {written} >/written && $b sync\n\
         echo \"SYNCED $?\"\n\
         $b poweroff -f\n"
    );
    let init_path = content.join("sbin/init");
    std::fs::write(&init_path, init).unwrap();
    std::fs::set_permissions(
        &init_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let image = dir.join("root.ext4");
    fv_testhost::mkext4(&content, &image, 8).expect("mkext4");
    (dir, image, marker)
}

/// The value after `key ` on the first output line starting with it.
fn line_value<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key:?} line in the guest output:\n{output}"))
}

/// `n` random bytes from the host's /dev/urandom.
fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut data = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("read /dev/urandom");
    data
}

/// The md5 of `path`, in hex, by the host's `md5sum`.
fn md5_of(path: &Path) -> String {
    let out = run_tool(std::process::Command::new("md5sum").arg(path));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A timed guest step's line, `KEY <uptime before> <uptime after> [rest]` (the guest's
/// /proc/uptime, in hundredths of a second): the seconds it took by the guest's clock, and
/// the rest of the line.
fn timed_line<'a>(output: &'a str, key: &str) -> (f64, &'a str) {
    let mut words = line_value(output, key).splitn(3, ' ');
    let mut uptime = || -> f64 {
        words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no uptimes on the {key} line:\n{output}"))
    };
    let (before, after) = (uptime(), uptime());
    (after - before, words.next().unwrap_or_default())
}

/// The least time, by the guest's clock, in which a token bucket refilling at `rate`
/// tokens a second lets `total` tokens through, if it held at most `burst` when the clock
/// was first read and no single request was larger than `burst` (so that none left it in
/// debt): `(total - burst) / rate`, less 1% (the guest's kvm-clock and fv-vmm's clock
/// count the same TSC, but each with its own arithmetic) and less two of /proc/uptime's
/// hundredths of a second (each reading may be up to one late). A lower bound only: a slow
/// machine takes longer, never shorter, so this fails only if the limiter let too much by.
fn token_bucket_min_secs(total: u64, rate: u64, burst: u64) -> f64 {
    total.saturating_sub(burst) as f64 / rate as f64 * 0.99 - 0.02
}

#[test]
fn virtio_pci_disks_and_rng_in_linux() {
    in_emulated_host("virtio_pci_disks_and_rng_in_linux");
}

/// Linux finds the host bridge and three virtio-pci functions, binds virtio-pci with
/// MSI-X, mounts an ext4 disk read-only and reads a marker file from it, moves the second
/// disk's BAR (told to by `pci=resource_alignment`) and writes to that raw disk (which the
/// host then sees), and reads entropy from /dev/hwrng. Seccomp is on.
///
/// Two more disks have rate limits, `bytes_per_sec` on one and `ops_per_sec` on the other:
/// the guest reads each whole with O_DIRECT (the page cache would hide the device), timing
/// it by its own clock, and the read takes at least what the token bucket allows (see
/// [`token_bucket_min_secs`]; the bucket starts full, one second's worth) and returns the
/// image's bytes. The unlimited ext4 disk is read the same way, for comparison.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_virtio_pci_disks_and_rng_in_linux() {
    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let initrd = inside("FV_INITRD").unwrap();
    let (dir, ext4, scratch, marker) = pci_test_disks("pci");
    // 8 MiB at 2 MiB/s in 64 KiB reads: 3 s after the first second's worth. 800 reads of
    // 4 KiB at 200 op/s: 3 s after the first 200.
    const BYTES_PER_SEC: u64 = 2 << 20;
    const BYTES_TOTAL: usize = 8 << 20;
    const OPS_PER_SEC: u64 = 200;
    const OPS_TOTAL: usize = 800;
    let limited_bytes = dir.join("limited-bytes.img");
    std::fs::write(&limited_bytes, random_bytes(BYTES_TOTAL)).unwrap();
    let limited_ops = dir.join("limited-ops.img");
    std::fs::write(&limited_ops, random_bytes(OPS_TOTAL * 4096)).unwrap();
    let md5s = [&ext4, &limited_bytes, &limited_ops].map(|p| md5_of(p));

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
# A whole disk, found by its serial, read with O_DIRECT in blocks of $3 and timed.
timed_read() {
    for b in /sys/block/vd*; do [ "$(cat $b/serial)" = "$2" ] && dev=/dev/${b##*/}; done
    read -r t0 _ </proc/uptime
    sum=$(dd if=$dev bs=$3 iflag=direct 2>/dev/null | md5sum)
    read -r t1 _ </proc/uptime
    echo "$1 $t0 $t1 ${sum%% *}"
}
timed_read READ-UNLIMITED fv-ext4-disk 65536
timed_read READ-BYTES-LIMITED fv-limited-bytes 65536
timed_read READ-OPS-LIMITED fv-limited-ops 4096
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
        "--disk".into(),
        format!(
            "path={},readonly=on,serial=fv-limited-bytes,bytes_per_sec={BYTES_PER_SEC}",
            path_str(&limited_bytes)
        ),
        "--disk".into(),
        format!(
            "path={},readonly=on,serial=fv-limited-ops,ops_per_sec={OPS_PER_SEC}",
            path_str(&limited_ops)
        ),
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
            "0000:00:03.0 0x1af4:0x1042 0x010000 virtio-pci",
            "0000:00:04.0 0x1af4:0x1042 0x010000 virtio-pci",
            "0000:00:05.0 0x1af4:0x1044 0xff0000 virtio-pci",
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
    assert_eq!(irqs.len(), 10, "{output}");
    assert!(irqs.iter().all(|(_, l)| l.contains("PCI-MSI")), "{output}");
    for queue in [
        "virtio0-req.0",
        "virtio1-req.0",
        "virtio2-req.0",
        "virtio3-req.0",
        "virtio4-input",
    ] {
        assert!(
            irqs.iter().any(|(n, l)| *n > 0 && l.ends_with(queue)),
            "no interrupt on {queue}:\n{output}"
        );
    }

    // The rate-limited reads: the right bytes, no faster than the buckets allow. The
    // unlimited read is only shown, for comparison: no upper bound on any time.
    let reads = [
        ("READ-UNLIMITED", &md5s[0], 0.0),
        (
            "READ-BYTES-LIMITED",
            &md5s[1],
            token_bucket_min_secs(BYTES_TOTAL as u64, BYTES_PER_SEC, BYTES_PER_SEC),
        ),
        (
            "READ-OPS-LIMITED",
            &md5s[2],
            token_bucket_min_secs(OPS_TOTAL as u64, OPS_PER_SEC, OPS_PER_SEC),
        ),
    ];
    for (key, md5, min_secs) in reads {
        let (secs, sum) = timed_line(&output, key);
        println!("{key}: {secs:.2} s by the guest's clock, at least {min_secs:.2} s");
        assert_eq!(
            sum,
            md5.as_str(),
            "{key}: the guest read other bytes\n{output}"
        );
        assert!(
            secs >= min_secs,
            "{key}: read in {secs:.2} s, under the limit's {min_secs:.2} s\n{output}"
        );
    }
}

#[test]
fn virtio_pci_devices_work_again_after_a_reset_in_place() {
    in_emulated_host("virtio_pci_devices_work_again_after_a_reset_in_place");
}

/// `PUT /vm/reset`, several times, while Linux uses the devices (a moved BAR, MSI-X
/// vectors unmasked, disk and rng requests in flight): each next boot of the same kernel
/// finds them at their first places, and reading the disk and the rng works again.
/// Nothing of the previous kernel's vCPU state may reach the next one (a port or MMIO
/// access KVM had not finished, kvmclock pages, LAPIC state): before that was cleared,
/// one boot in a few crashed.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_virtio_pci_devices_work_again_after_a_reset_in_place() {
    // The bzImage, whose KASLR keeps it off the addresses that trip QEMU TCG's nested
    // AMD-V (docs/testhost.md, "Guest kernels at fixed addresses").
    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let initrd = inside("FV_INITRD").unwrap();
    let (dir, ext4, scratch, marker) = pci_test_disks("pcireset");
    let script = r#"mkdir -p /mnt
read -r bar0 _ </sys/bus/pci/devices/0000:00:02.0/resource
mount -t ext4 -o ro /dev/vda /mnt && echo "MARKER $(cat /mnt/marker) $bar0"
echo "RNGBYTES $(timeout 20 head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
echo ROUND-DONE
while :; do dd if=/dev/vdb of=/dev/null bs=4k count=64 iflag=direct 2>/dev/null; head -c 64 /dev/hwrng >/dev/null; done
"#;
    const RESETS: usize = 3;
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
    for round in 2..=RESETS + 1 {
        assert_eq!(api.put("/vm/reset").status, 204, "{}", vmm.describe());
        vmm.wait_for_output_n("ROUND-DONE", round, GUEST_TIMEOUT);
    }
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
    assert_eq!(markers, [want.as_str(); RESETS + 1], "{output}");
    let rng: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("RNGBYTES "))
        .collect();
    assert_eq!(rng.len(), RESETS + 1, "{output}");
    assert!(rng.iter().all(|b| b.len() == 32), "{output}");
    let distinct: std::collections::BTreeSet<&&str> = rng.iter().collect();
    assert_eq!(distinct.len(), rng.len(), "{output}");
}

#[test]
fn two_vms_on_a_bridge_then_the_power_button() {
    in_emulated_host("two_vms_on_a_bridge_then_the_power_button");
}

/// The script of guest `a` (10.0.0.2, on a tap fv-vmm creates): ping the host's side of
/// the bridge, send it a line over TCP, take a file from `b` over TCP, ping `b`.
const NET_GUEST_A: &str = r#"ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up
echo "MAC $(cat /sys/class/net/eth0/address)"
ping -c 3 -w 60 10.0.0.1 >/dev/null; echo "PING-HOST $?"
echo "hello from guest a" | nc 10.0.0.1 7000; echo "NC-HOST $?"
nc -l -p 5000 >/tmp/got
echo "GOT $(wc -c </tmp/got) $(md5sum </tmp/got)"
ping -c 3 -w 60 10.0.0.3 >/dev/null; echo "PING-PEER $?"
echo NET-DONE
sleep 600
"#;

/// The script of guest `b` (10.0.0.3, on an existing tap): ping `a`, then send it 1 MiB
/// of random bytes over TCP (retrying until `a` listens), timed by its clock from before
/// the connection that succeeded until its `nc` exits. That `nc` exits when `a` closes the
/// connection, which `a` does once it has read the end of the data: the time covers every
/// byte's passing through `b`'s transmit queue.
const NET_GUEST_B: &str = r#"ip addr add 10.0.0.3/24 dev eth0 && ip link set eth0 up
echo "MAC $(cat /sys/class/net/eth0/address)"
ping -c 3 -w 60 10.0.0.2 >/dev/null; echo "PING-PEER $?"
head -c 1048576 /dev/urandom >/tmp/sent
echo "SENT $(wc -c </tmp/sent) $(md5sum </tmp/sent)"
ok=1
for i in $(seq 1 150); do
    read -r t0 _ </proc/uptime
    if nc 10.0.0.2 5000 </tmp/sent 2>/dev/null; then ok=0; break; fi
    sleep 0.2
done
read -r t1 _ </proc/uptime
echo "NC-PEER $ok"
echo "SEND-TIME $t0 $t1"
echo NET-DONE
sleep 600
"#;

/// Two fv-vmm VMs on a Linux bridge inside the emulated host, with seccomp on: `a` on a
/// tap fv-vmm creates (`fvtap%d`, put on the bridge once `GET /vm` names it), `b` on a
/// persistent tap made beforehand, with a MAC of its own. The guests ping each other and
/// the bridge's own address, `a` sends the host a line over TCP, `b` sends `a` a file over
/// TCP, no faster than `b`'s transmit rate limit allows. Then `PUT /vm/power-button` makes
/// each guest shut itself down (its acpid runs the init's handler): both print the
/// handler's line and the kernel's `reboot: Power down`, and both fv-vmm exit 0. One
/// emulated host for all of it: its boots are the suite's largest cost.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_two_vms_on_a_bridge_then_the_power_button() {
    use fv_hostnet::link;
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpListener};

    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let initrd = inside("FV_INITRD").unwrap();
    let started = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("fv-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    link::create_bridge("fvbr0").unwrap();
    link::set_ipv4_address("fvbr0", Ipv4Addr::new(10, 0, 0, 1), 24).unwrap();
    link::set_up("fvbr0").unwrap();
    let status = std::process::Command::new("ip")
        .args(["tuntap", "add", "dev", "fvtapb", "mode", "tap"])
        .status()
        .expect("run ip (iproute2)");
    assert!(status.success(), "ip tuntap add: {status}");
    link::add_to_bridge("fvbr0", "fvtapb").unwrap();
    link::set_up("fvtapb").unwrap();

    // The host's end of guest a's TCP line.
    let listener = TcpListener::bind("10.0.0.1:7000").unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut line = String::new();
        conn.read_to_string(&mut line).unwrap();
        let _ = line_tx.send((peer.ip(), line));
    });

    let spawn = |script: &str, net: &str, sock: &Path| {
        Vmm::spawn([
            "--kernel".into(),
            path_str(&kernel),
            "--initrd".into(),
            path_str(&initrd),
            "--cmdline".into(),
            format!(
                "{GUEST_CMDLINE} fv.action=run fv.run={}",
                base64(script.as_bytes())
            ),
            "--memory".into(),
            "256".into(),
            "--net".into(),
            net.into(),
            "--api-socket".into(),
            path_str(sock),
        ])
    };
    let mut a = spawn(NET_GUEST_A, "tap=fvtap%d", &dir.join("a.sock"));
    // b's transmit queue is limited: 1 MiB at 256 KiB/s is 3 s after the first second's
    // worth (its frames, at most 64 KiB with offloads, all fit in that burst).
    const TX_BYTES_PER_SEC: u64 = 256 << 10;
    const SENT_BYTES: u64 = 1 << 20;
    let mut b = spawn(
        NET_GUEST_B,
        &format!("tap=fvtapb,mac=52:54:00:00:0b:0b,tx_bytes_per_sec={TX_BYTES_PER_SEC}"),
        &dir.join("b.sock"),
    );

    let (api_a, api_b) = (a.api(), b.api());
    let vm_a = api_a.vm();
    let nic_a = &vm_a["devices"][0];
    assert_eq!(nic_a["kind"], "virtio-net", "{vm_a}");
    let tap_a = nic_a["tap"]
        .as_str()
        .expect("GET /vm names the tap")
        .to_string();
    assert!(tap_a.starts_with("fvtap"), "{vm_a}");
    let mac_a = nic_a["mac"].as_str().unwrap().to_string();
    link::add_to_bridge("fvbr0", &tap_a).unwrap();
    let vm_b = api_b.vm();
    assert_eq!(vm_b["devices"][0]["tap"], "fvtapb", "{vm_b}");
    assert_eq!(vm_b["devices"][0]["mac"], "52:54:00:00:0b:0b", "{vm_b}");

    a.wait_for_output_n("NET-DONE", 1, GUEST_TIMEOUT);
    b.wait_for_output_n("NET-DONE", 1, GUEST_TIMEOUT);
    let net_wall = started.elapsed();
    let (out_a, out_b) = (a.stdout(), b.stdout());
    println!("--- guest a ---\n{out_a}\n--- guest b ---\n{out_b}");
    assert!(
        a.stderr().contains(&format!("net0: created tap {tap_a}")),
        "{}",
        a.describe()
    );
    assert_eq!(line_value(&out_a, "MAC"), mac_a, "{out_a}");
    assert_eq!(line_value(&out_b, "MAC"), "52:54:00:00:0b:0b", "{out_b}");
    assert_eq!(line_value(&out_a, "PING-HOST"), "0", "{out_a}");
    assert_eq!(line_value(&out_a, "NC-HOST"), "0", "{out_a}");
    let (peer, line) = line_rx.recv_timeout(GUEST_TIMEOUT).unwrap();
    assert_eq!(
        (peer.to_string().as_str(), line.as_str()),
        ("10.0.0.2", "hello from guest a\n")
    );
    assert_eq!(line_value(&out_b, "PING-PEER"), "0", "{out_b}");
    assert_eq!(line_value(&out_a, "PING-PEER"), "0", "{out_a}");
    assert_eq!(line_value(&out_b, "NC-PEER"), "0", "{out_b}");
    let sent = line_value(&out_b, "SENT");
    assert!(sent.starts_with(&format!("{SENT_BYTES} ")), "{out_b}");
    assert_eq!(line_value(&out_a, "GOT"), sent, "{out_a}\n{out_b}");
    // The TCP payload alone is SENT_BYTES of tokens; headers only add to it.
    let (send_secs, _) = timed_line(&out_b, "SEND-TIME");
    let min_secs = token_bucket_min_secs(SENT_BYTES, TX_BYTES_PER_SEC, TX_BYTES_PER_SEC);
    println!(
        "b sent {SENT_BYTES} bytes in {send_secs:.2} s by its clock, at least {min_secs:.2} s"
    );
    assert!(
        send_secs >= min_secs,
        "b sent in {send_secs:.2} s, under its tx limit's {min_secs:.2} s\n{out_b}"
    );

    let button = std::time::Instant::now();
    assert_eq!(api_a.put("/vm/power-button").status, 204);
    assert_eq!(api_b.put("/vm/power-button").status, 204);
    for (name, vmm) in [("a", a), ("b", b)] {
        let (status, output, stderr) = wait_exit(vmm);
        assert_eq!(status, 0, "guest {name}:\n{output}\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let after = output.split("NET-DONE").nth(1).unwrap_or_default();
        assert!(after.contains("FV-POWER-BUTTON"), "guest {name}:\n{output}");
        assert!(
            after.contains("reboot: Power down"),
            "guest {name}:\n{output}"
        );
        assert!(!after.contains("FV-RUN-EXIT"), "guest {name}:\n{output}");
    }
    println!(
        "network part {:.1} s, power button to both exits {:.1} s",
        net_wall.as_secs_f64(),
        button.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- virtio console, vsock and balloon ----

/// The guest's vsock tool, compiled by [`services_initrd`].
const VSOCK_TOOL: &str = include_str!("guest_tools/fv-vsock.rs");

/// FNV-1a, for cache file names.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter().chain(&[0xff])) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where the guest initramfs with `/bin/fv-vsock` goes: named after the stock one and the
/// tool's source, so the outer test (which builds it) and the inner one (which boots it,
/// on a read-only root) agree.
fn services_initrd_path(guest_initrd: &Path) -> PathBuf {
    let name = guest_initrd
        .file_name()
        .unwrap_or_default()
        .as_encoded_bytes();
    let key = fnv(&[name, VSOCK_TOOL.as_bytes()]);
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("guest-services")
        .join(format!("initrd-{key:016x}.cpio"))
}

/// One newc cpio archive holding `bin/<name>` (mode 0755). Appended to the guest
/// initramfs, the kernel unpacks it over the first archive.
fn cpio_with_bin(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |path: &str, mode: u32, data: &[u8]| {
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check
        let fields = [1, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
        out.extend_from_slice(b"070701");
        for f in fields.iter().chain(&[path.len() as u32 + 1, 0]) {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    entry(&format!("bin/{name}"), 0o100_755, data);
    entry("TRAILER!!!", 0, b"");
    out
}

/// Builds (once per tool source and guest initramfs) the guest initramfs plus `fv-vsock`,
/// compiled with `rustc -C target-feature=+crt-static`: busybox has no vsock tool.
fn services_initrd(guest_initrd: &Path) -> PathBuf {
    let out = services_initrd_path(guest_initrd);
    if out.is_file() {
        return out;
    }
    let dir = out.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join(format!("fv-vsock-{}.rs", std::process::id()));
    let bin = dir.join(format!("fv-vsock-{}", std::process::id()));
    std::fs::write(&src, VSOCK_TOOL).unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = std::process::Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .status()
        .unwrap_or_else(|e| panic!("run {rustc}: {e}"));
    assert!(
        status.success(),
        "rustc failed on tests/guest_tools/fv-vsock.rs"
    );
    let mut image = std::fs::read(guest_initrd).unwrap();
    image.resize(image.len().next_multiple_of(4), 0);
    image.extend(cpio_with_bin("fv-vsock", &std::fs::read(&bin).unwrap()));
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, image).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&bin);
    out
}

#[test]
fn console_vsock_and_balloon_in_linux() {
    let artifacts = Artifacts::prepare().expect("build the guest artifacts");
    services_initrd(&artifacts.guest_initrd);
    in_emulated_host("console_vsock_and_balloon_in_linux");
}

/// The guest's side: the console (a line from the host on /dev/hvc0, one back), vsock
/// (a connection from the host to guest port 1234, then one from the guest to host port
/// 5000), then the balloon (memory touched and freed, then MemTotal watched while the host
/// inflates and deflates), and a last line on the console lets it power off.
const SERVICES_SCRIPT: &str = r#"for d in /sys/bus/virtio/drivers/*/virtio*; do
    drv=${d%/*}; echo "VIRTIO-DRIVER ${drv##*/}"
done
exec 3<>/dev/hvc0
echo CONSOLE-WAITING
read -t 120 -r line <&3
echo "CONSOLE-GOT $line"
echo from-guest-hvc0 >&3
timeout 120 fv-vsock listen 1234
echo "VSOCK-LISTEN-EXIT $?"
timeout 120 fv-vsock connect 2 5000 hello-from-guest
echo "VSOCK-CONNECT-EXIT $?"
read -r _ before _ </proc/meminfo
dd if=/dev/zero of=/tmp/fill bs=1M count=96 2>/dev/null
rm -f /tmp/fill
echo "BALLOON-READY $before"
# MemTotal is /proc/meminfo's first line: read without a fork, cheap on a slow host.
i=0
while read -r _ mem _ </proc/meminfo && [ "$mem" -gt $((before - 128 * 1024)) ] && [ $i -lt 3000 ]; do
    usleep 100000; i=$((i + 1))
done
echo "BALLOON-INFLATED $mem"
i=0
while read -r _ mem _ </proc/meminfo && [ "$mem" -lt "$before" ] && [ $i -lt 3000 ]; do
    usleep 100000; i=$((i + 1))
done
echo "BALLOON-DEFLATED $mem"
# Stay up until the host has asked its last questions.
read -t 300 -r _ <&3
"#;

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Reads from `stream` until `want` has arrived (or 60 s passed); returns all read.
fn read_until(stream: &mut std::os::unix::net::UnixStream, want: &str) -> String {
    use std::io::Read;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while !String::from_utf8_lossy(&got).contains(want) && std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Polls `GET /vm/balloon` until `done` holds for its body (or 180 s passed).
fn balloon_until(
    api: &common::Api,
    vmm: &Vmm,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let r = api.get("/vm/balloon");
        assert_eq!(r.status, 200, "{r:?}");
        let b = r.json();
        if done(&b) {
            return b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {b}\n{}",
            vmm.describe()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A Linux guest uses all three guest-service devices, seccomp on: the console (its
/// `/dev/hvc0` and our socket, both ways), vsock (the host connects to a guest port
/// through `CONNECT <port>`, the guest connects to a host port through `PATH_<port>`),
/// and the balloon (`PUT /vm/balloon` to half the memory: the guest's MemTotal drops, the
/// device reports `actual`, the statistics follow, fv-vmm's RSS drops since the pages were
/// given back with `MADV_DONTNEED`; then back to 0). The sockets are gone after poweroff.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_console_vsock_and_balloon_in_linux() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let initrd = services_initrd_path(&inside("FV_INITRD").unwrap());
    assert!(initrd.is_file(), "{} was not built", initrd.display());
    let started = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("fv-svc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (api_sock, hvc, vsock) = (dir.join("api"), dir.join("hvc"), dir.join("v.sock"));

    // Guest connections to host port 5000 land here.
    let host_port = UnixListener::bind(dir.join("v.sock_5000")).unwrap();
    let host_side = std::thread::spawn(move || {
        let (stream, _) = host_port.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream)
            .write_all(format!("pong-from-host:{}\n", line.trim_end()).as_bytes())
            .unwrap();
        line.trim_end().to_string()
    });

    let mut vmm = Vmm::spawn([
        "--kernel".into(),
        path_str(&kernel),
        "--initrd".into(),
        path_str(&initrd),
        "--cmdline".into(),
        format!(
            "{GUEST_CMDLINE} fv.action=run fv.run={}",
            base64(SERVICES_SCRIPT.as_bytes())
        ),
        "--memory".into(),
        "256".into(),
        "--api-socket".into(),
        path_str(&api_sock),
        "--console".into(),
        format!("socket={}", path_str(&hvc)),
        "--vsock".into(),
        format!("cid=3,socket={}", path_str(&vsock)),
        "--balloon".into(),
        "stats_interval=1".into(),
    ]);
    // On failure, show the guest's console and fv-vmm's stderr (and how fv-vmm ended).
    let steps = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let api = vmm.api();
        let kinds: Vec<String> = api.vm()["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| format!("{} {}", d["id"], d["kind"]).replace('"', ""))
            .collect();
        assert_eq!(
            kinds,
            [
                "console virtio-console",
                "vsock virtio-vsock",
                "balloon virtio-balloon"
            ]
        );

        // Console: connect before the guest writes (output with nobody connected is dropped).
        let mut console = UnixStream::connect(&hvc).unwrap();
        vmm.wait_for_output_n("CONSOLE-WAITING", 1, GUEST_TIMEOUT);
        console.write_all(b"from-host-hvc0\n").unwrap();
        let from_guest = read_until(&mut console, "from-guest-hvc0");
        assert!(
            from_guest.contains("from-guest-hvc0"),
            "{from_guest:?}\n{}",
            vmm.describe()
        );
        let console_done = started.elapsed();

        // vsock, host to guest port 1234.
        vmm.wait_for_output_n("VSOCK-LISTENING 1234", 1, GUEST_TIMEOUT);
        let stream = UnixStream::connect(&vsock).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        (&stream).write_all(b"CONNECT 1234\n").unwrap();
        let mut reader = BufReader::new(&stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert!(ok.starts_with("OK "), "{ok:?}\n{}", vmm.describe());
        (&stream).write_all(b"ping-from-host\n").unwrap();
        let mut pong = String::new();
        reader.read_line(&mut pong).unwrap();
        assert_eq!(
            pong,
            "pong-from-guest:ping-from-host\n",
            "{}",
            vmm.describe()
        );
        drop(reader);
        drop(stream);
        // ... and guest to host port 5000.
        vmm.wait_for_output_n("VSOCK-CONNECT-EXIT", 1, GUEST_TIMEOUT);
        assert_eq!(host_side.join().unwrap(), "hello-from-guest");
        let vsock_done = started.elapsed();

        // Balloon.
        vmm.wait_for_output_n("BALLOON-READY", 1, GUEST_TIMEOUT);
        let pid = vmm.pid();
        let rss_before = rss_kib(pid);
        let with_stats = balloon_until(&api, &vmm, "the first statistics", |b| {
            !b["stats"].is_null()
        });
        let total_before = with_stats["stats"]["total_memory"].as_u64().unwrap();
        let put = |mib: u64| {
            let body = format!(r#"{{"target_mib": {mib}}}"#);
            let r = api.request("PUT", "/vm/balloon", Some(&body));
            assert_eq!(r.status, 204, "{r:?}");
        };
        let inflate_start = std::time::Instant::now();
        put(128);
        let inflated = balloon_until(&api, &vmm, "actual 128 MiB", |b| b["actual_mib"] == 128);
        let inflate_time = inflate_start.elapsed();
        vmm.wait_for_output_n("BALLOON-INFLATED", 1, GUEST_TIMEOUT);
        let rss_inflated = rss_kib(pid);
        // The statistics come every second; the guest's total shrinks by the balloon.
        let stats = balloon_until(&api, &vmm, "statistics after inflating", |b| {
            b["stats"]["total_memory"]
                .as_u64()
                .is_some_and(|t| t + (120 << 20) <= total_before)
        });
        let s = &stats["stats"];
        for key in ["free_memory", "available_memory", "age_ms"] {
            assert!(s[key].is_u64(), "{key} missing: {stats}");
        }
        assert!(s["age_ms"].as_u64().unwrap() < 10_000, "{stats}");
        put(0);
        let deflated = balloon_until(&api, &vmm, "actual 0", |b| b["actual_pages"] == 0);
        vmm.wait_for_output_n("BALLOON-DEFLATED", 1, GUEST_TIMEOUT);
        let rss_deflated = rss_kib(pid);
        // The guest may power off now.
        console.write_all(b"done\n").unwrap();
        (
            console_done,
            vsock_done,
            inflate_time,
            [rss_before, rss_inflated, rss_deflated],
            stats,
            inflated,
            deflated,
        )
    }));
    let (console_done, vsock_done, inflate_time, rss, stats, inflated, deflated) = match steps {
        Ok(values) => values,
        Err(panic) => {
            std::thread::sleep(Duration::from_secs(1));
            let ended = if vmm.running() {
                "still running".to_string()
            } else {
                format!("exited with {}", vmm.wait_exit_within(GUEST_TIMEOUT))
            };
            eprintln!("fv-vmm {ended}\n{}", vmm.describe());
            std::panic::resume_unwind(panic)
        }
    };
    let [rss_before, rss_inflated, rss_deflated] = rss;
    let (status, output, stderr) = wait_exit(vmm);
    println!("--- guest output ---\n{output}");
    println!(
        "console done at {:.1} s, vsock at {:.1} s; inflating 128 MiB took {:.1} s; \
         fv-vmm RSS: {rss_before} KiB before, {rss_inflated} KiB inflated, \
         {rss_deflated} KiB deflated; stats {}; total {:.1} s",
        console_done.as_secs_f64(),
        vsock_done.as_secs_f64(),
        inflate_time.as_secs_f64(),
        stats["stats"],
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status, 0, "{output}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(line_value(&output, "FV-RUN-EXIT"), "0", "{output}");
    let mut drivers: Vec<&str> = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("VIRTIO-DRIVER "))
        .collect();
    drivers.sort();
    assert_eq!(
        drivers,
        [
            "virtio_balloon",
            "virtio_console",
            "vmw_vsock_virtio_transport"
        ],
        "{output}"
    );
    assert_eq!(
        line_value(&output, "CONSOLE-GOT"),
        "from-host-hvc0",
        "{output}"
    );
    assert_eq!(
        line_value(&output, "VSOCK-GUEST-GOT"),
        "ping-from-host",
        "{output}"
    );
    assert_eq!(
        line_value(&output, "VSOCK-GUEST-REPLY"),
        "pong-from-host:hello-from-guest",
        "{output}"
    );
    assert_eq!(line_value(&output, "VSOCK-LISTEN-EXIT"), "0", "{output}");
    let kib = |key: &str| line_value(&output, key).parse::<u64>().unwrap();
    let (before, inflated_kib, deflated_kib) = (
        kib("BALLOON-READY"),
        kib("BALLOON-INFLATED"),
        kib("BALLOON-DEFLATED"),
    );
    // Without DEFLATE_ON_OOM, Linux takes ballooned pages out of MemTotal.
    assert_eq!(before - inflated_kib, 128 * 1024, "{output}");
    assert_eq!(deflated_kib, before, "{output}");
    assert_eq!(inflated["target_pages"], 128 * 256, "{inflated}");
    assert_eq!(deflated["target_mib"], 0, "{deflated}");
    // The guest had touched and freed ~96 MiB before; the balloon took those pages too,
    // and fv-vmm gave them back to the host.
    assert!(
        rss_inflated + 48 * 1024 <= rss_before,
        "RSS {rss_before} KiB -> {rss_inflated} KiB: the balloon released too little"
    );
    assert!(
        rss_deflated <= rss_inflated + 8 * 1024,
        "RSS {rss_inflated} KiB -> {rss_deflated} KiB after deflating"
    );
    assert!(!hvc.exists() && !vsock.exists(), "sockets left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ext4_on_a_qcow2_overlay_of_a_raw_base() {
    in_emulated_host("ext4_on_a_qcow2_overlay_of_a_raw_base");
}

/// Runs `cmd`, failing the test with its stderr if it fails; returns its stdout.
fn run_tool(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guest boots with its root filesystem on a qcow2 overlay whose backing file is a raw
/// ext4 image: the initramfs mounts /dev/vda and switches root to it, and the disk's own
/// /sbin/init reads the base's marker, writes and syncs a file and powers off. On the host
/// the file is in the overlay, `qemu-img check` passes, and the raw base is unchanged.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_ext4_on_a_qcow2_overlay_of_a_raw_base() {
    // The bzImage, whose KASLR keeps it off the addresses that trip QEMU TCG's nested
    // AMD-V (docs/testhost.md, "Guest kernels at fixed addresses").
    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let initrd = inside("FV_INITRD").unwrap();
    let written = format!("fv-guest-wrote-{}", std::process::id());
    let (dir, base, marker) = bootable_root_disk(&written);
    let base_before = std::fs::read(&base).unwrap();
    let overlay = dir.join("overlay.qcow2");
    run_tool(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&overlay),
    );

    let vmm = Vmm::spawn([
        "--kernel".into(),
        path_str(&kernel),
        "--initrd".into(),
        path_str(&initrd),
        "--cmdline".into(),
        format!("{GUEST_CMDLINE} fv.root=/dev/vda"),
        "--memory".into(),
        "256".into(),
        "--disk".into(),
        format!("path={},format=qcow2", path_str(&overlay)),
    ]);
    let (status, output, stderr) = wait_exit(vmm);
    println!("--- guest output ---\n{output}");
    assert_eq!(status, 0, "{output}\n{stderr}");
    // The disk's init ran as PID 1, with the overlay's ext4 as the root filesystem.
    assert_eq!(line_value(&output, "DISK-INIT-PID"), "1", "{output}");
    assert_eq!(
        line_value(&output, "ROOT-FS"),
        "/dev/vda ext4 rw",
        "{output}"
    );
    assert_eq!(line_value(&output, "MARKER"), marker, "{output}");
    assert_eq!(line_value(&output, "SYNCED"), "0", "{output}");

    run_tool(
        std::process::Command::new("qemu-img")
            .arg("check")
            .arg(&overlay),
    );
    assert!(
        std::fs::read(&base).unwrap() == base_before,
        "the raw base image changed"
    );
    let flat = dir.join("flat.raw");
    run_tool(
        std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&overlay)
            .arg(&flat),
    );
    let file = run_tool(
        std::process::Command::new("debugfs")
            .args(["-R", "cat /written"])
            .arg(&flat),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        file.trim(),
        written,
        "the file the guest wrote, read on the host"
    );
}

#[test]
fn qcow2_writes_survive_a_power_off_without_a_flush() {
    in_emulated_host("qcow2_writes_survive_a_power_off_without_a_flush");
}

/// A guest writes 1 MiB to a fresh qcow2 disk with O_DIRECT and powers off at once,
/// without a sync or any flush request. The data reached fv-vmm, so it must be in the
/// image: fv-vmm writes the qcow2 metadata it caches (the new clusters' L2 entries,
/// refcounts) when the VM ends, as QEMU does. `qemu-img check` passes.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_qcow2_writes_survive_a_power_off_without_a_flush() {
    let Some(kernel) = inside("FV_BZIMAGE") else {
        return;
    };
    let initrd = inside("FV_INITRD").unwrap();
    let dir = std::env::temp_dir().join(format!("fv-noflush-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("data.qcow2");
    run_tool(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg("64M"),
    );
    // `poweroff -n`: busybox would otherwise sync first.
    let script = r#"head -c 1048576 /dev/urandom >/tmp/data
echo "WROTE $(md5sum </tmp/data | cut -d' ' -f1)"
dd if=/tmp/data of=/dev/vda bs=65536 oflag=direct 2>/dev/null; echo "DD $?"
poweroff -n -f
"#;
    let vmm = Vmm::spawn([
        "--kernel".into(),
        path_str(&kernel),
        "--initrd".into(),
        path_str(&initrd),
        "--cmdline".into(),
        format!(
            "{GUEST_CMDLINE} fv.action=run fv.run={}",
            base64(script.as_bytes())
        ),
        "--disk".into(),
        format!("path={},format=qcow2", path_str(&image)),
    ]);
    let (status, output, stderr) = wait_exit(vmm);
    println!("--- guest output ---\n{output}");
    assert_eq!(status, 0, "{output}\n{stderr}");
    assert_eq!(line_value(&output, "DD"), "0", "{output}");
    let check = std::process::Command::new("qemu-img")
        .arg("check")
        .arg(&image)
        .output()
        .expect("qemu-img check");
    let flat = dir.join("flat.raw");
    run_tool(
        std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&image)
            .arg(&flat),
    );
    let data = std::fs::read(&flat).unwrap();
    std::fs::write(&flat, &data[..1 << 20]).unwrap();
    let on_host = md5_of(&flat);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        check.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        on_host,
        line_value(&output, "WROTE"),
        "the image does not hold what the guest wrote"
    );
}
