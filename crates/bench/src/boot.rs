//! Linux boot time, VMM start to the guest's init, fv-vmm next to QEMU `-M microvm`
//! booting the same kernel and initramfs, in one run of the emulated AMD-V host.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fv_testhost::{Artifacts, RunOptions, GUEST_CMDLINE};

use crate::stats::{median, Table};

const READY: &str = "FV-GUEST-READY";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Boots the emulated host and runs `fv-bench boot-inside` there.
pub fn run(fv_vmm: &Path, runs: usize, vcpus: u32, memory_mib: u32) -> Result<(), String> {
    let a = Artifacts::prepare().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let argv = [
        s(&exe),
        "boot-inside".into(),
        "--runs".into(),
        runs.to_string(),
        "--vcpus".into(),
        vcpus.to_string(),
        "--memory".into(),
        memory_mib.to_string(),
        "--fv-vmm".into(),
        s(fv_vmm),
        "--bzimage".into(),
        s(&a.guest_bzimage),
        "--vmlinux".into(),
        s(&a.guest_vmlinux),
        "--initrd".into(),
        s(&a.guest_initrd),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(1800)),
        echo: true,
        ..RunOptions::default()
    };
    let out = fv_testhost::run_with(&a, &opts, &argv).map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!(
            "boot benchmark failed inside the emulated host ({})",
            out.status
        ));
    }
    Ok(())
}

pub struct Images {
    pub fv_vmm: PathBuf,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
}

/// Starts `cmd` and returns the time until the guest's ready line; then kills it.
fn time_to_ready(cmd: &mut Command) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(READY) {
                let _ = tx.send(started.elapsed());
                return;
            }
        }
    });
    let result = rx
        .recv_timeout(BOOT_TIMEOUT)
        .map_err(|_| format!("no {READY} line within {BOOT_TIMEOUT:?} from {cmd:?}"));
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Runs in the emulated host: alternates the VMMs so that noise hits each alike.
pub fn inside(images: &Images, runs: usize, vcpus: u32, memory_mib: u32) -> Result<(), String> {
    let cmdline = format!("{GUEST_CMDLINE} fv.action=poweroff");
    let (smp, mem) = (vcpus.to_string(), memory_mib.to_string());
    let fv = |kernel: &Path| {
        let mut c = Command::new(&images.fv_vmm);
        c.arg("--kernel")
            .arg(kernel)
            .arg("--initrd")
            .arg(&images.initrd)
            .args(["--cmdline", &cmdline, "--vcpus", &smp, "--memory", &mem]);
        c
    };
    let qemu = |kernel: &Path| {
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-M",
            "microvm,accel=kvm,x-option-roms=off,rtc=on",
            "-cpu",
            "host",
        ])
        .args(["-smp", &smp, "-m", &mem, "-nodefaults", "-no-user-config"])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(&images.initrd)
        .args(["-append", &cmdline]);
        c
    };
    // Each kernel format booted by both VMMs, alternating, so each pair shares the noise.
    let mut ms: [Vec<f64>; 4] = Default::default();
    for i in 0..runs {
        let boots = [
            time_to_ready(&mut fv(&images.bzimage))?,
            time_to_ready(&mut qemu(&images.bzimage))?,
            time_to_ready(&mut fv(&images.vmlinux))?,
            time_to_ready(&mut qemu(&images.vmlinux))?,
        ];
        for (v, d) in ms.iter_mut().zip(boots) {
            v.push(d.as_secs_f64() * 1e3);
        }
        eprintln!(
            "run {}/{runs}: bzImage fv-vmm {:.0} ms, qemu {:.0} ms; PVH vmlinux fv-vmm {:.0} ms, qemu {:.0} ms",
            i + 1,
            ms[0][i],
            ms[1][i],
            ms[2][i],
            ms[3][i]
        );
    }
    let [fb, qb, fp, qp] = ms.map(median);
    println!(
        "\nLinux boot, VMM start to the guest's init (Debian 6.1 cloud kernel, {vcpus} vCPU, \
         {memory_mib} MiB, in the emulated host), median of {runs}:"
    );
    let mut t = Table::new(&["kernel", "fv-vmm ms", "qemu microvm ms", "ratio fv/qemu"]);
    t.row("bzImage", &[fb, qb, fb / qb]);
    t.row("PVH vmlinux", &[fp, qp, fp / qp]);
    t.print();
    Ok(())
}
