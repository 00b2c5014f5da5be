//! fv-vmm booting the stock Debian 6.1 cloud kernel, as bzImage and as PVH vmlinux, with
//! 1 and 4 vCPUs, to the busybox initramfs that fv-testhost builds.
//!
//! The host's KVM (PVM) cannot run Linux, so each test boots the emulated AMD-V host
//! (crates/testhost) and runs this very test binary inside it, where the `inside_*` twin of
//! the test drives fv-vmm on real nested KVM and makes the assertions. The outer test
//! passes when the inner one did.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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

/// A running fv-vmm with its serial console on pipes.
struct Guest {
    child: Child,
    output: Arc<(Mutex<String>, Condvar)>,
    stderr: Arc<(Mutex<String>, Condvar)>,
    started: Instant,
}

fn collect(mut r: impl Read + Send + 'static) -> Arc<(Mutex<String>, Condvar)> {
    let shared = Arc::new((Mutex::new(String::new()), Condvar::new()));
    let s = shared.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = r.read(&mut buf) {
            s.0.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
            s.1.notify_all();
        }
    });
    shared
}

impl Guest {
    fn boot(kernel: &Path, vcpus: u8, memory_mib: u64, action: &str) -> Guest {
        let initrd = inside("FV_INITRD").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fv-vmm"))
            .arg("--kernel")
            .arg(kernel)
            .arg("--initrd")
            .arg(initrd)
            .args(["--cmdline", &format!("{GUEST_CMDLINE} fv.action={action}")])
            .args(["--vcpus", &vcpus.to_string()])
            .args(["--memory", &memory_mib.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fv-vmm");
        let output = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Guest {
            child,
            output,
            stderr,
            started: Instant::now(),
        }
    }

    fn output(&self) -> String {
        self.output.0.lock().unwrap().clone()
    }

    fn wait_for(&mut self, text: &str) {
        self.wait_for_count(text, 1);
    }

    /// Waits until the console shows `text` `count` times; fails the test on timeout or
    /// early exit.
    fn wait_for_count(&mut self, text: &str, count: usize) {
        let (lock, cv) = &*self.output;
        let mut out = lock.lock().unwrap();
        while out.matches(text).count() < count {
            let left = GUEST_TIMEOUT.saturating_sub(self.started.elapsed());
            assert!(!left.is_zero(), "no {text:?} on the console:\n{out}");
            out = cv
                .wait_timeout(out, left.min(Duration::from_millis(200)))
                .unwrap()
                .0;
            if out.matches(text).count() >= count {
                break;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                drop(out);
                // Let the reader threads drain the pipes before reporting.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "fv-vmm exited ({status}) before {text:?}:\n{}\nstderr: {}",
                    self.output(),
                    self.stderr.0.lock().unwrap()
                );
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for fv-vmm to exit; returns its status, console output and stderr.
    fn wait_exit(mut self) -> (i32, String, String) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                let code = status.code().unwrap_or(-1);
                return (code, self.output(), self.stderr.0.lock().unwrap().clone());
            }
            if self.started.elapsed() > GUEST_TIMEOUT {
                let _ = self.child.kill();
                panic!(
                    "fv-vmm did not exit within {GUEST_TIMEOUT:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
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
    let (status, output, stderr) = Guest::boot(kernel, vcpus, memory_mib, action).wait_exit();
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
    let mut guest = Guest::boot(&kernel, 4, 512, "shell");
    // Type each line at a prompt, as a person would. What we type reaches the shell and
    // its answer comes back (the echoed command itself shows `$((6*7))`, not `42`).
    guest.wait_for("/ # ");
    guest.type_line("echo fv-$((6*7))");
    guest.wait_for("fv-42");
    guest.wait_for_count("/ # ", 2);
    guest.type_line("cat /sys/devices/system/clocksource/clocksource0/current_clocksource");
    guest.wait_for("kvm-clock");
    guest.wait_for_count("/ # ", 3);
    guest.type_line("poweroff -f");
    let (status, output, stderr) = guest.wait_exit();
    let (cpus, mem_kib) = ready_line(&output);
    assert_eq!(cpus, 4, "{output}");
    assert_memory(mem_kib, 512, &output);
    assert_eq!(
        status, 0,
        "poweroff from the shell must exit 0\n{output}\n{stderr}"
    );
}
