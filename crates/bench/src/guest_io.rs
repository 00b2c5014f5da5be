//! Disk and network throughput seen from inside a Linux guest, fv-vmm next to QEMU running
//! the same kernel, initramfs, disk image and tap, in one run of the emulated AMD-V host.
//!
//! The guest runs `fv-io` (guest/fv-io.rs: std only, compiled here with
//! `rustc -C target-feature=+crt-static` and appended to fv_testhost's guest initramfs as a
//! second cpio archive): O_DIRECT sequential and random I/O on /dev/vda, one request in
//! flight, each for a fixed time, timed by the guest; then a TCP stream to a listener of
//! ours on the emulated host's bridge, timed by the receiver. Everything network stays
//! inside the emulated host: a bridge with an address, a persistent tap on it for each VMM,
//! the guests at the other ends.
//!
//! The machine's load changes within seconds, so the two VMs are up at the same time and
//! take turns test by test (the guest reads each test's fv-io arguments from its console;
//! the VM not running a test idles in `read`), the first of each pair alternating; each
//! ratio compares two turns taken seconds apart.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fv_testhost::{Artifacts, RunOptions, GUEST_CMDLINE};

use crate::stats::{median, ratio_range, Table};

/// The guest program's source; compiled at run time (see [`build_tool`]).
const TOOL_SOURCE: &str = include_str!("../guest/fv-io.rs");

/// Addresses inside the emulated host only: its bridge (the guests' are in [`VMS`]).
const BRIDGE: &str = "fvbbr0";
const HOST_IP: &str = "10.77.0.1";
const PREFIX: u8 = 24;
const PORT: u16 = 5201;

const VMM_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct Options {
    /// Boots of the pair of VMs.
    pub boots: usize,
    /// Rounds of every test per boot.
    pub rounds: usize,
    /// Seconds of each disk test in the guest.
    pub secs: f64,
    pub disk_mib: u64,
    /// MiB the guest sends over TCP; 0 leaves the network out.
    pub net_mib: u64,
    pub vcpus: u32,
    pub memory_mib: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            boots: 2,
            rounds: 3,
            secs: 3.0,
            disk_mib: 512,
            net_mib: 64,
            vcpus: 1,
            memory_mib: 256,
        }
    }
}

/// FNV-1a, for cache file names.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter().chain(&[0xff])) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Compiles guest/fv-io.rs into a static binary, cached by source and compiler version.
fn build_tool() -> Result<PathBuf, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .map_err(|e| format!("cannot run {rustc} to build the guest tool: {e}"))?
        .stdout;
    let dir = fv_testhost::cache_dir().join("bench");
    let out = dir.join(format!(
        "fv-io-{:016x}",
        fnv(&[TOOL_SOURCE.as_bytes(), &version])
    ));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join(format!("fv-io-{}.rs", std::process::id()));
    std::fs::write(&src, TOOL_SOURCE).map_err(|e| format!("{}: {e}", src.display()))?;
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args([
            "-C",
            "target-feature=+crt-static",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .status()
        .map_err(|e| format!("cannot run {rustc}: {e}"));
    let _ = std::fs::remove_file(&src);
    if !status?.success() {
        return Err("rustc failed to build the guest tool (guest/fv-io.rs)".into());
    }
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// A newc cpio archive holding one executable file (the kernel unpacks archives appended
/// to the initramfs over the first, so this adds `path` to fv_testhost's guest image).
fn cpio_with_file(path: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |name: &str, mode: u32, data: &[u8]| {
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    entry(path.trim_start_matches('/'), 0o100_755, data);
    entry("TRAILER!!!", 0, b"");
    out
}

/// Whether this fv-vmm has virtio-net (`--net tap=...`).
fn has_net_flag(fv_vmm: &Path) -> bool {
    Command::new(fv_vmm)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--net"))
}

/// Boots the emulated host and runs `fv-bench guest-io-inside` there.
pub fn run(fv_vmm: &Path, opts: &Options) -> Result<(), String> {
    let mut opts = opts.clone();
    if opts.net_mib > 0 && !has_net_flag(fv_vmm) {
        eprintln!(
            "fv-bench guest-io: {} has no --net flag yet: measuring the disk only",
            fv_vmm.display()
        );
        opts.net_mib = 0;
    }
    let opts = &opts;
    let a = Artifacts::prepare().map_err(|e| e.to_string())?;
    let tool = build_tool()?;
    // In the host's /tmp, which the emulated host sees (read-only).
    let dir = std::env::temp_dir().join(format!("fv-bench-guest-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(fv_vmm, opts, &a, &tool, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(
    fv_vmm: &Path,
    opts: &Options,
    a: &Artifacts,
    tool: &Path,
    dir: &Path,
) -> Result<(), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut initrd = read(&a.guest_initrd_cpio)?;
    initrd.extend(cpio_with_file("/bin/fv-io", &read(tool)?));
    let initrd_path = dir.join("initrd.cpio");
    std::fs::write(&initrd_path, initrd).map_err(|e| e.to_string())?;

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let argv = [
        s(&exe),
        "guest-io-inside".into(),
        "--fv-vmm".into(),
        s(fv_vmm),
        "--kernel".into(),
        s(&a.guest_vmlinux),
        "--initrd".into(),
        s(&initrd_path),
        "--boots".into(),
        opts.boots.to_string(),
        "--rounds".into(),
        opts.rounds.to_string(),
        "--secs".into(),
        opts.secs.to_string(),
        "--disk-mib".into(),
        opts.disk_mib.to_string(),
        "--net-mib".into(),
        opts.net_mib.to_string(),
        "--vcpus".into(),
        opts.vcpus.to_string(),
        "--memory".into(),
        opts.memory_mib.to_string(),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let run_opts = RunOptions {
        timeout: Some(Duration::from_secs(3600)),
        echo: true,
        ..RunOptions::default()
    };
    let out = fv_testhost::run_with(a, &run_opts, &argv).map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!(
            "guest-io benchmark failed inside the emulated host ({})",
            out.status
        ));
    }
    Ok(())
}

/// Standard base64, for the guest's `fv.run=` (busybox `base64 -d` reads it).
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

/// The disk tests: (name fv-io prints, label, fv-io mode, block size).
const DISK_TESTS: [(&str, &str, &str, u64); 4] = [
    (
        "seqread-1048576",
        "1 MiB sequential read",
        "seqread",
        1 << 20,
    ),
    ("randread-4096", "4 KiB random read", "randread", 4096),
    (
        "seqwrite-1048576",
        "1 MiB sequential write",
        "seqwrite",
        1 << 20,
    ),
    ("randwrite-4096", "4 KiB random write", "randwrite", 4096),
];

/// One test: what the guest runs (fv-io's arguments) and the figure's name and label.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub args: String,
    pub name: String,
    pub label: String,
}

/// The tests of one round, in order.
pub fn steps(opts: &Options) -> Vec<Step> {
    let span = opts.disk_mib << 20;
    let mut out: Vec<Step> = DISK_TESTS
        .iter()
        .map(|(name, label, mode, block)| Step {
            args: format!("disk /dev/vda {mode} {block} {span} {}", opts.secs),
            name: name.to_string(),
            label: label.to_string(),
        })
        .collect();
    if opts.net_mib > 0 {
        out.push(Step {
            args: format!("tcp {HOST_IP}:{PORT} {}", opts.net_mib),
            name: "tcp".into(),
            label: "TCP guest to host".into(),
        });
    }
    out
}

/// What the guest runs: set up its address, then run each line the benchmark types on
/// the console (fv-io's arguments) until `quit`, so that the two VMs can take turns.
pub fn guest_script(guest_ip: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(ip) = guest_ip {
        s += &format!("ip addr add {ip}/{PREFIX} dev eth0\nip link set eth0 up\n");
    }
    s += "echo FV-STEPS-READY\n\
          while read -r line; do\n\
          [ \"$line\" = quit ] && break\n\
          /bin/fv-io $line\n\
          echo \"FV-STEP-DONE $?\"\n\
          done\n";
    s
}

/// `FV-IO name bytes=N ops=N usecs=N` → (name, MiB/s).
pub fn parse_result(line: &str) -> Option<(String, f64)> {
    let mut words = line.trim().strip_prefix("FV-IO ")?.split_whitespace();
    let name = words.next()?.to_string();
    let mut bytes = None;
    let mut usecs = None;
    for w in words {
        if let Some(v) = w.strip_prefix("bytes=") {
            bytes = v.parse::<f64>().ok();
        } else if let Some(v) = w.strip_prefix("usecs=") {
            usecs = v.parse::<f64>().ok();
        }
    }
    let (bytes, usecs) = (bytes?, usecs?);
    (usecs > 0.0).then(|| (name, bytes / (1 << 20) as f64 / (usecs / 1e6)))
}

pub struct Inside {
    pub fv_vmm: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

fn sh(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The bridge with the host's address, and a persistent tap on it for each VMM.
/// Inside the emulated host, which is thrown away afterwards.
fn setup_network() -> Result<(), String> {
    let mut cmd = format!(
        "ip link add {BRIDGE} type bridge && ip addr add {HOST_IP}/{PREFIX} dev {BRIDGE} && \
         ip link set {BRIDGE} up"
    );
    for vm in &VMS {
        let tap = vm.tap;
        cmd += &format!(
            " && ip tuntap add dev {tap} mode tap vnet_hdr && \
             ip link set {tap} master {BRIDGE} && ip link set {tap} up"
        );
    }
    sh(&cmd)
}

/// Receives the guest's streams: for each connection, MiB per second from the first
/// byte to the end, sent to `tx`. Closing the connection tells the guest it is over.
fn serve(listener: TcpListener, tx: mpsc::Sender<f64>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut first = None;
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first.get_or_insert_with(Instant::now);
                    total += n as u64;
                }
            }
        }
        let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        drop(conn);
        if secs > 0.0 {
            let _ = tx.send(total as f64 / (1 << 20) as f64 / secs);
        }
    }
}

/// Each VMM's own tap and guest address (both on the same bridge).
struct Vm {
    name: &'static str,
    tap: &'static str,
    ip: &'static str,
    mac: &'static str,
}

const VMS: [Vm; 2] = [
    Vm {
        name: "fv-vmm",
        tap: "fvbtap0",
        ip: "10.77.0.2",
        mac: "52:54:00:77:00:02",
    },
    Vm {
        name: "qemu",
        tap: "fvbtap1",
        ip: "10.77.0.3",
        mac: "52:54:00:77:00:03",
    },
];

/// A booted guest waiting for steps on its console.
struct Guest {
    what: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    console: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Guest {
    fn start(cmd: &mut Command, what: &'static str) -> Result<Guest, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut g = Guest {
            what,
            child,
            stdin,
            lines,
            console: Vec::new(),
            stderr: Some(stderr),
        };
        g.wait_for("FV-STEPS-READY")?;
        Ok(g)
    }

    /// Console lines until one starts with `prefix` (returned), or an error with the tail
    /// of the console.
    fn wait_for(&mut self, prefix: &str) -> Result<String, String> {
        let deadline = Instant::now() + VMM_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim().to_string();
                    self.console.push(line.clone());
                    if line.starts_with(prefix) {
                        return Ok(line);
                    }
                }
                Err(_) => return Err(self.failure(&format!("no {prefix} line"))),
            }
        }
    }

    fn failure(&mut self, why: &str) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let from = self.console.len().saturating_sub(30);
        format!(
            "{}: {why}; console:\n{}\nstderr:\n{stderr}",
            self.what,
            self.console[from..].join("\n")
        )
    }

    /// Runs `fv-io ARGS` in the guest; returns the figures it printed.
    fn step(&mut self, args: &str) -> Result<BTreeMap<String, f64>, String> {
        let first = self.console.len();
        writeln!(self.stdin, "{args}").map_err(|e| self.failure(&format!("console: {e}")))?;
        let done = self.wait_for("FV-STEP-DONE")?;
        if done != "FV-STEP-DONE 0" {
            return Err(self.failure(&format!("`fv-io {args}` failed")));
        }
        Ok(self.console[first..]
            .iter()
            .filter_map(|l| parse_result(l))
            .collect())
    }

    /// Ends the script; the guest powers off.
    fn quit(mut self) -> Result<(), String> {
        writeln!(self.stdin, "quit").map_err(|e| self.failure(&format!("console: {e}")))?;
        let exit = self.wait_for("FV-RUN-EXIT")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if exit != "FV-RUN-EXIT 0" {
            return Err(self.failure(&exit));
        }
        Ok(())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs in the emulated host.
pub fn inside(images: &Inside, opts: &Options) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("fv-bench-guest-io-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let result = inside_in(images, opts, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    if opts.net_mib > 0 {
        let taps: Vec<String> = VMS
            .iter()
            .map(|v| format!("ip link del {}", v.tap))
            .collect();
        let _ = sh(&format!("{}; ip link del {BRIDGE}", taps.join("; ")));
    }
    result
}

fn make_image(path: &Path, mib: u64) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(path).map_err(err)?;
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    for _ in 0..mib {
        f.write_all(&chunk).map_err(err)?;
    }
    Ok(())
}

fn inside_in(images: &Inside, opts: &Options, tmp: &Path) -> Result<(), String> {
    let image = tmp.join("disk.raw");
    make_image(&image, opts.disk_mib)?;
    let net = opts.net_mib > 0;
    let (tx, rx) = mpsc::channel();
    if net {
        setup_network()?;
        let listener = TcpListener::bind((HOST_IP, PORT))
            .map_err(|e| format!("listen on {HOST_IP}:{PORT}: {e}"))?;
        std::thread::spawn(move || serve(listener, tx));
    }
    let cmdline = |vm: &Vm| {
        format!(
            "{GUEST_CMDLINE} fv.action=run fv.run={}",
            base64(guest_script(net.then_some(vm.ip)).as_bytes())
        )
    };
    let (smp, mem) = (opts.vcpus.to_string(), opts.memory_mib.to_string());
    let img = image.to_string_lossy().into_owned();
    let fv = |vm: &Vm| {
        let mut c = Command::new(&images.fv_vmm);
        c.arg("--kernel")
            .arg(&images.kernel)
            .arg("--initrd")
            .arg(&images.initrd)
            .args(["--cmdline", &cmdline(vm), "--vcpus", &smp, "--memory", &mem])
            .args(["--disk", &format!("path={img},format=raw")]);
        if net {
            c.args(["--net", &format!("tap={},mac={}", vm.tap, vm.mac)]);
        }
        c
    };
    let qemu = |vm: &Vm| {
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-M",
            "microvm,accel=kvm,x-option-roms=off,rtc=on,pcie=on",
            "-cpu",
            "host",
        ])
        .args(["-smp", &smp, "-m", &mem, "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&images.kernel)
        .arg("-initrd")
        .arg(&images.initrd)
        .args(["-append", &cmdline(vm)])
        .args([
            "-drive",
            &format!("file={img},format=raw,if=none,id=d0,cache=writeback,aio=threads"),
            "-device",
            "virtio-blk-pci,drive=d0,num-queues=1",
        ]);
        if net {
            c.args([
                "-netdev",
                &format!(
                    "tap,id=n0,ifname={},script=no,downscript=no,vhost=off",
                    vm.tap
                ),
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={}", vm.mac),
            ]);
        }
        c
    };
    let steps = steps(opts);
    // Per step, per VMM (0 fv-vmm, 1 QEMU), the figure of each turn.
    let mut figures: Vec<[Vec<f64>; 2]> = vec![Default::default(); steps.len()];
    for boot in 0..opts.boots {
        // Both guests up at once; they take turns, each idle (halted) while the other runs.
        let mut guests = [
            Guest::start(&mut fv(&VMS[0]), VMS[0].name)?,
            Guest::start(&mut qemu(&VMS[1]), VMS[1].name)?,
        ];
        for round in 0..opts.rounds {
            for (i, step) in steps.iter().enumerate() {
                // Alternate who goes first, so that neither always follows the other.
                let order = if (boot * opts.rounds + round + i).is_multiple_of(2) {
                    [0, 1]
                } else {
                    [1, 0]
                };
                for vm in order {
                    while rx.try_recv().is_ok() {}
                    let r = guests[vm].step(&step.args)?;
                    let v = if step.name == "tcp" {
                        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| {
                            format!("{}: the listener saw no complete stream", VMS[vm].name)
                        })?
                    } else {
                        r.get(&step.name)
                            .copied()
                            .ok_or(format!("{}: no {} figure", VMS[vm].name, step.name))?
                    };
                    figures[i][vm].push(v);
                }
                let [f, q] = &figures[i];
                eprintln!(
                    "boot {}/{} round {}/{} {}: fv-vmm {:.1}, qemu {:.1} MiB/s",
                    boot + 1,
                    opts.boots,
                    round + 1,
                    opts.rounds,
                    step.label,
                    f.last().copied().unwrap_or(f64::NAN),
                    q.last().copied().unwrap_or(f64::NAN)
                );
            }
        }
        let [a, b] = guests;
        a.quit()?;
        b.quit()?;
    }
    println!(
        "\nIn-guest throughput, MiB/s (Debian 6.1 cloud kernel, {} vCPU, {} MiB, in the \
         emulated host; disk: O_DIRECT, one request in flight, {} s per turn, {} MiB raw \
         image on tmpfs; QEMU -M microvm,pcie=on with virtio-blk-pci/virtio-net-pci, no \
         vhost). Both VMs booted, taking turns; {} boots x {} rounds; median, and ratio \
         fv/qemu per turn pair: median (min-max):",
        opts.vcpus, opts.memory_mib, opts.secs, opts.disk_mib, opts.boots, opts.rounds
    );
    let mut t = Table::new(&["", "fv-vmm", "qemu", "ratio fv/qemu"]);
    for (step, [f, q]) in steps.iter().zip(figures) {
        let ratios: Vec<f64> = f.iter().zip(&q).map(|(a, b)| a / b).collect();
        t.text_row(vec![
            step.label.clone(),
            format!("{:.1}", median(f)),
            format!("{:.1}", median(q)),
            ratio_range(&ratios),
        ]);
    }
    t.print();
    Ok(())
}

#[cfg(test)]
#[path = "../guest/fv-io.rs"]
#[allow(dead_code)]
mod tool;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_parse() {
        let (name, mibs) =
            parse_result("FV-IO randread-4096 bytes=4194304 ops=1024 usecs=2000000").unwrap();
        assert_eq!(name, "randread-4096");
        assert!((mibs - 2.0).abs() < 1e-9);
        assert!(parse_result("FV-IO x bytes=1 ops=1 usecs=0").is_none());
        assert!(parse_result("[    1.0] FV-IO").is_none());
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn steps_cover_every_test() {
        let s = steps(&Options::default());
        let args: Vec<&str> = s.iter().map(|s| s.args.as_str()).collect();
        assert_eq!(
            args,
            [
                "disk /dev/vda seqread 1048576 536870912 3",
                "disk /dev/vda randread 4096 536870912 3",
                "disk /dev/vda seqwrite 1048576 536870912 3",
                "disk /dev/vda randwrite 4096 536870912 3",
                "tcp 10.77.0.1:5201 64",
            ]
        );
        let no_net = steps(&Options {
            net_mib: 0,
            ..Options::default()
        });
        assert_eq!(no_net.len(), 4);
        let script = guest_script(Some("10.77.0.2"));
        assert!(
            script.starts_with("ip addr add 10.77.0.2/24 dev eth0\n"),
            "{script}"
        );
        assert!(script.contains("/bin/fv-io $line"), "{script}");
        assert!(!guest_script(None).contains("ip addr"));
    }

    #[test]
    fn the_cpio_entry_is_aligned_and_ends() {
        let c = cpio_with_file("/bin/x", b"hello");
        assert_eq!(&c[..6], b"070701");
        assert_eq!(c.len() % 4, 0);
        assert!(c.windows(6).any(|w| w == b"bin/x\0"));
        assert!(c.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn tool_offsets_stay_in_the_span() {
        use tool::{Mode, Offsets};
        let mut r = Offsets::new(Mode::RandRead, 4096, 1 << 20);
        for _ in 0..1000 {
            let o = r.next_offset();
            assert!(o.is_multiple_of(4096) && o < 1 << 20);
        }
        let mut s = Offsets::new(Mode::SeqWrite, 1 << 20, 2 << 20);
        let seq: Vec<u64> = (0..3).map(|_| s.next_offset()).collect();
        assert_eq!(seq, [0, 1 << 20, 0]);
        assert_eq!(Mode::parse("randwrite"), Some(Mode::RandWrite));
        assert_eq!(Mode::parse("x"), None);
    }
}
