//! On the host's own KVM: how fast fv-vmm starts and how much memory it adds, next to
//! QEMU (`-M microvm`) doing the same job in the same run.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs;
use crate::stats::{median, Table};

/// Guest memory for both VMMs. Only what the guest touches becomes resident.
const GUEST_MIB: u64 = 256;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for start-up work (threads, lazy page faults) to settle before RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

/// One start of one VMM.
struct Sample {
    cpu_ms: f64,
    wall_ms: f64,
    /// RSS minus resident guest RAM, KiB.
    overhead_kib: u64,
    guest_kib: u64,
}

struct Running {
    child: Child,
    started: Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cmd: &mut Command) -> Result<Running, String> {
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    Ok(Running { child, started })
}

/// Polls `ready` until it says yes; returns CPU and wall time at that moment.
fn wait_ready(run: &mut Running, mut ready: impl FnMut() -> bool) -> Result<(f64, f64), String> {
    loop {
        if ready() {
            let wall = run.started.elapsed();
            let cpu = procfs::cpu_ns(run.child.id()).map_err(|e| e.to_string())?;
            return Ok((cpu as f64 / 1e6, wall.as_secs_f64() * 1e3));
        }
        if let Ok(Some(status)) = run.child.try_wait() {
            return Err(format!("the VMM exited before it was ready: {status}"));
        }
        if run.started.elapsed() > READY_TIMEOUT {
            return Err("the VMM was not ready within 10 s".into());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn measure(
    mut run: Running,
    ready: impl FnMut() -> bool,
    mapping_slack: u64,
) -> Result<Sample, String> {
    let (cpu_ms, wall_ms) = wait_ready(&mut run, ready)?;
    std::thread::sleep(SETTLE);
    let r = procfs::resident(run.child.id(), GUEST_MIB << 20, mapping_slack)
        .map_err(|e| e.to_string())?;
    Ok(Sample {
        cpu_ms,
        wall_ms,
        overhead_kib: r.total_kib - r.guest_kib,
        guest_kib: r.guest_kib,
    })
}

fn fv_vmm_sample(fv_vmm: &Path, guest: &Path, dir: &Path) -> Result<Sample, String> {
    let socket = dir.join("fv.sock");
    let _ = std::fs::remove_file(&socket);
    let run = spawn(
        Command::new(fv_vmm)
            .arg("--kernel")
            .arg(guest)
            .args(["--memory", &GUEST_MIB.to_string(), "--serial", "none"])
            .arg("--api-socket")
            .arg(&socket),
    )?;
    // Ready means the API answers, not merely that the socket file exists.
    let ready = || {
        matches!(
            fv_vmmctl::http_request(&socket, "GET", "/vm", None),
            Ok((200, _))
        )
    };
    measure(run, ready, 0)
}

fn qemu_sample(dir: &Path) -> Result<Sample, String> {
    let socket = dir.join("qmp.sock");
    let _ = std::fs::remove_file(&socket);
    let run = spawn(
        Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "microvm,accel=kvm",
                "-S",
                "-m",
                &GUEST_MIB.to_string(),
            ])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "none", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", socket.display())),
    )?;
    // Ready means QMP sent its greeting.
    let ready = || {
        UnixStream::connect(&socket)
            .ok()
            .and_then(|s| {
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).ok()?;
                Some(line.contains("QMP"))
            })
            .unwrap_or(false)
    };
    // QEMU rounds its RAM block up; allow a few MiB.
    measure(run, ready, 4 << 20)
}

pub fn run(fv_vmm: &Path, guest: &Path, runs: usize) -> Result<(), String> {
    let dir = PathBuf::from(format!("/tmp/fv-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut fv = Vec::new();
    let mut qemu = Vec::new();
    // Alternate the two so that machine noise hits both alike.
    for _ in 0..runs {
        fv.push(fv_vmm_sample(fv_vmm, guest, &dir)?);
        qemu.push(qemu_sample(&dir)?);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    println!("VMM start to API ready (fv-vmm: GET /vm answered; QEMU -M microvm -S: QMP greeting), median of {runs}:");
    let mut t = Table::new(&["", "CPU ms", "wall ms"]);
    let (fc, fw) = (med(&fv, |s| s.cpu_ms), med(&fv, |s| s.wall_ms));
    let (qc, qw) = (med(&qemu, |s| s.cpu_ms), med(&qemu, |s| s.wall_ms));
    t.row("fv-vmm", &[fc, fw]);
    t.row("qemu", &[qc, qw]);
    t.row("ratio fv/qemu", &[fc / qc, fw / qw]);
    t.print();

    println!("\nMemory overhead: RSS minus resident guest RAM ({GUEST_MIB} MiB guest), median of {runs}:");
    let mut t = Table::new(&["", "overhead MiB", "guest RAM touched MiB"]);
    let (fo, fg) = (
        med(&fv, |s| s.overhead_kib as f64 / 1024.0),
        med(&fv, |s| s.guest_kib as f64 / 1024.0),
    );
    let (qo, qg) = (
        med(&qemu, |s| s.overhead_kib as f64 / 1024.0),
        med(&qemu, |s| s.guest_kib as f64 / 1024.0),
    );
    t.row("fv-vmm", &[fo, fg]);
    t.row("qemu", &[qo, qg]);
    t.row("ratio fv/qemu", &[fo / qo, f64::NAN]);
    t.print();
    Ok(())
}
