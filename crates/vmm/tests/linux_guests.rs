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
