//! Booting the emulated host and running one command inside it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::tools::require;
use crate::{Artifacts, Error};

/// How to run a command in the emulated host.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Kill QEMU and fail after this long (None: wait forever).
    pub timeout: Option<Duration>,
    /// vCPUs of the emulated host.
    pub smp: u32,
    /// Memory of the emulated host, MiB.
    pub memory_mib: u32,
    /// Extra environment variables for the command.
    pub env: Vec<(String, String)>,
    /// Directory to run in (same absolute path inside); default: the current directory.
    pub cwd: Option<PathBuf>,
    /// Copy the output to our stdout as it arrives (the CLI does).
    pub echo: bool,
    /// TCP ports to forward, `(port on the real host's 127.0.0.1, port in the emulated
    /// host)`. Non-empty: the emulated host gets a NIC (QEMU user networking, 10.0.2.15/24)
    /// and a connection to `127.0.0.1:H` here reaches port `G` there.
    pub forward: Vec<(u16, u16)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(600)),
            smp: 2,
            memory_mib: 2048,
            env: Vec::new(),
            cwd: None,
            echo: false,
            forward: Vec::new(),
        }
    }
}

/// What the command did.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// The command's exit status (128+N when killed by signal N, as the shell reports it).
    pub status: i32,
    /// Its stdout and stderr, interleaved as written (lossy UTF-8).
    pub output: String,
    /// Wall time from starting QEMU to its exit.
    pub wall: Duration,
}

/// Quotes a word for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn valid_env_name(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}

/// The script the emulated host's init runs with `chroot /host /bin/sh -c`.
fn command_script(opts: &RunOptions, cwd: &Path, argv: &[&str]) -> Result<String, Error> {
    if argv.is_empty() {
        return Err(Error::InvalidArgument("empty command".into()));
    }
    let cwd = cwd
        .to_str()
        .ok_or_else(|| Error::InvalidArgument(format!("non-UTF-8 directory {}", cwd.display())))?;
    let mut s = String::new();
    let default_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let path =
        std::env::var("PATH").map_or(default_path.to_owned(), |p| format!("{p}:{default_path}"));
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    // TERM=dumb: the command's stdout is the serial tty; keep progress bars and colours out.
    let base = [("PATH", path), ("HOME", home), ("TERM", "dumb".to_owned())];
    for (k, v) in base
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        if !valid_env_name(k) {
            return Err(Error::InvalidArgument(format!(
                "bad environment variable name `{k}`"
            )));
        }
        s += &format!("export {k}={}\n", sh_quote(v));
    }
    s += &format!("cd {} || exit 125\nexec", sh_quote(cwd));
    for a in argv {
        s += " ";
        s += &sh_quote(a);
    }
    s += "\n";
    Ok(s)
}

/// Separates the command's output from the exit marker the init prints after it.
/// Bytes that might start the marker are held back until it is clear they do not.
struct MarkerFilter {
    marker: Vec<u8>,
    pending: Vec<u8>,
    status: Option<Vec<u8>>,
    /// The line the host init prints right before the command; `None` once seen (or when
    /// not looked for).
    start: Option<Vec<u8>>,
}

impl MarkerFilter {
    fn new(marker: String) -> Self {
        Self {
            marker: marker.into_bytes(),
            pending: Vec::new(),
            status: None,
            start: None,
        }
    }

    /// Also drops everything up to and including the line `start`.
    fn with_start(mut self, start: String) -> Self {
        self.start = Some(format!("{start}\n").into_bytes());
        self
    }

    /// Whether the command has started (the start line was seen, or none is expected).
    fn started(&self) -> bool {
        self.start.is_none()
    }

    /// Feeds bytes from the console; returns those that belong to the command's output.
    fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        if let Some(start) = &self.start {
            self.pending.extend_from_slice(data);
            let Some(i) = self.pending.windows(start.len()).position(|w| w == start) else {
                // Boot noise: keep only what could be the start of the start line.
                let keep = self.pending.len().saturating_sub(start.len());
                self.pending.drain(..keep);
                return Vec::new();
            };
            let rest = self.pending.split_off(i + start.len());
            self.pending.clear();
            self.start = None;
            return self.feed(&rest);
        }
        if let Some(status) = &mut self.status {
            status.extend_from_slice(data);
            return Vec::new();
        }
        self.pending.extend_from_slice(data);
        if let Some(i) = self
            .pending
            .windows(self.marker.len())
            .position(|w| w == self.marker)
        {
            let rest = self.pending.split_off(i);
            self.status = Some(rest[self.marker.len()..].to_vec());
            return std::mem::take(&mut self.pending);
        }
        let keep = (1..self.marker.len().min(self.pending.len() + 1))
            .rev()
            .find(|&n| self.pending.ends_with(&self.marker[..n]))
            .unwrap_or(0);
        let rest = self.pending.split_off(self.pending.len() - keep);
        std::mem::replace(&mut self.pending, rest)
    }

    /// The exit status, once the marker and its line were seen.
    fn status(&self) -> Option<i32> {
        let s = self.status.as_ref()?;
        let line = s.split(|&b| b == b'\n').next()?;
        std::str::from_utf8(line).ok()?.trim().parse().ok()
    }
}

fn nonce() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}{:x}",
        t.as_nanos() & 0xffff_ffff_ffff,
        std::process::id()
    )
}

/// Removes the temporary script when the run ends, however it ends.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// QEMU warnings that say nothing about a failure (TCG lacks some EPYC features).
fn interesting_stderr(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("TCG doesn't support requested feature"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `FV_TESTHOST_DEBUG` set (and not `0`): keep the kernel's messages (no `quiet`), have the
/// init report its steps, copy the raw console (in place of `echo`) and QEMU's stderr to our
/// stderr as they arrive, and open a QEMU monitor socket (`info registers -a`, `info pic`,
/// `info lapic`). The kernel's messages and the steps are then part of the output too.
fn debug_enabled() -> bool {
    std::env::var_os("FV_TESTHOST_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The emulated host's kernel command line.
fn kernel_cmdline(
    debug: bool,
    tsc_khz: Option<u64>,
    net: bool,
    script: &str,
    nonce: &str,
) -> String {
    let mut s = String::from("console=ttyS0 panic=-1");
    s += if debug {
        " fv.debug=1"
    } else {
        " quiet loglevel=1"
    };
    // The guest's TSC is the host's: tell the kernel its frequency so that it does not
    // calibrate it against the PIT. That calibration fails when the vCPU thread is
    // descheduled, and microvm (hardware-reduced ACPI) has no PIT tick, HPET or PM timer to
    // fall back on: the kernel then waits forever in calibrate_delay() (docs/testhost.md).
    if let Some(khz) = tsc_khz {
        s += &format!(" tsc_early_khz={khz}");
    }
    // Only then does the init load the NIC driver and configure it (runs without stay as fast).
    if net {
        s += " fv.net=1";
    }
    s += &format!(" fv.script={script} fv.nonce={nonce}");
    s
}

/// QEMU's `-netdev` for the port forwards (None: no NIC at all).
///
/// User networking needs no privileges or host setup; its fixed addresses (guest
/// 10.0.2.15, gateway 10.0.2.2) are what the init configures. The host side binds
/// 127.0.0.1 only: the forwarded services are for this machine's user, not its network.
fn netdev_arg(forward: &[(u16, u16)]) -> Result<Option<String>, Error> {
    if forward.is_empty() {
        return Ok(None);
    }
    let mut s = String::from("user,id=fwd");
    for (i, &(host, guest)) in forward.iter().enumerate() {
        if host == 0 || guest == 0 {
            return Err(Error::InvalidArgument(format!(
                "port forward {host}:{guest}: ports must be 1-65535"
            )));
        }
        if forward[..i].iter().any(|&(h, _)| h == host) {
            return Err(Error::InvalidArgument(format!(
                "host port {host} forwarded twice"
            )));
        }
        s += &format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}");
    }
    Ok(Some(s))
}

/// QEMU's complaint when a forwarded host port cannot be bound (already in use).
fn forward_failure(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| l.contains("Could not set up host forwarding rule"))
        .map(str::to_owned)
}

/// Boots the emulated host and runs `argv` inside it (see the crate docs).
pub fn run(opts: &RunOptions, argv: &[&str]) -> Result<RunOutput, Error> {
    let artifacts = Artifacts::prepare()?;
    run_with(&artifacts, opts, argv)
}

/// How long the emulated host may take to reach the command (normally 2-3 s, 6 s on a
/// loaded machine) before the boot counts as stalled.
const BOOT_DEADLINE: Duration = Duration::from_secs(90);

/// Like [`run`] with already prepared artifacts.
///
/// A boot that stalls before the command starts is retried once, with a warning on
/// stderr: the command itself never ran, so running it then is not running it twice.
/// (The emulated host's kernel occasionally stalls in early boot on a loaded machine;
/// see docs/testhost.md.)
pub fn run_with(
    artifacts: &Artifacts,
    opts: &RunOptions,
    argv: &[&str],
) -> Result<RunOutput, Error> {
    match run_once(artifacts, opts, argv) {
        Err(Error::BootStalled { after }) => {
            eprintln!(
                "fv-testhost: warning: the emulated host did not reach the command within \
                 {after:?}; booting it again"
            );
            run_once(artifacts, opts, argv)
        }
        other => other,
    }
}

fn run_once(artifacts: &Artifacts, opts: &RunOptions, argv: &[&str]) -> Result<RunOutput, Error> {
    let qemu = require("qemu-system-x86_64", "qemu-system-x86")?;
    let cwd = match &opts.cwd {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(Error::io("reading current directory", "."))?,
    };
    let script = command_script(opts, &cwd, argv)?;
    let netdev = netdev_arg(&opts.forward)?;
    let nonce = nonce();
    let script_path = std::env::temp_dir().join(format!("fv-testhost-{nonce}.sh"));
    let script_str = script_path.to_str().unwrap_or_default().to_owned();
    if script_str.is_empty() || script_str.contains(char::is_whitespace) {
        return Err(Error::InvalidArgument(format!(
            "temporary directory path {} must be UTF-8 without spaces (it goes on the kernel command line)",
            script_path.display()
        )));
    }
    std::fs::write(&script_path, &script).map_err(Error::io("writing", &script_path))?;
    let _cleanup = TempFile(script_path);
    let debug = debug_enabled();
    let tsc_khz = crate::tsc::host_tsc_khz();
    if tsc_khz.is_none() {
        eprintln!(
            "fv-testhost: warning: could not measure the host's TSC frequency; the emulated \
             host calibrates it itself and can hang in early boot when the machine is busy"
        );
    }

    let mut cmd = Command::new(qemu);
    // microvm: no firmware tables to build, no PCI to scan; measured about 0.3 s faster than q35.
    cmd.args(["-M", "microvm,accel=tcg", "-cpu", "EPYC,+svm,+npt"])
        .args([
            "-smp",
            &opts.smp.to_string(),
            "-m",
            &opts.memory_mib.to_string(),
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&artifacts.host_kernel)
        .arg("-initrd")
        .arg(&artifacts.host_initrd)
        .arg("-append")
        .arg(kernel_cmdline(
            debug,
            tsc_khz,
            netdev.is_some(),
            &script_str,
            &nonce,
        ))
        .args([
            "-fsdev",
            "local,id=host,path=/,security_model=none,readonly=on,multidevs=remap",
        ])
        .args(["-device", "virtio-9p-device,fsdev=host,mount_tag=host"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(netdev) = &netdev {
        // virtio-mmio like the 9p device: microvm has no PCI.
        cmd.args(["-netdev", netdev])
            .args(["-device", "virtio-net-device,netdev=fwd"]);
    }
    // Every run gets a monitor socket: to inspect a run that stalls, and because runs with
    // one open have not shown the in-run stall so far (docs/testhost.md, "Boot watchdog").
    // It sits next to the script, whose path was checked above (UTF-8, no spaces).
    let monitor = std::env::temp_dir().join(format!("fv-testhost-{nonce}.mon"));
    let _monitor_cleanup = TempFile(monitor.clone());
    cmd.args([
        "-monitor",
        &format!("unix:{},server=on,wait=off", monitor.display()),
    ]);
    if debug {
        eprintln!(
            "fv-testhost: debug: QEMU monitor at {} (kernel command line: {})",
            monitor.display(),
            kernel_cmdline(debug, tsc_khz, netdev.is_some(), &script_str, &nonce)
        );
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        command: "qemu-system-x86_64".into(),
        source,
    })?;

    let filter = Arc::new(Mutex::new(
        MarkerFilter::new(format!("FVTH-{nonce}-EXIT=")).with_start(format!("FVTH-{nonce}-START")),
    ));
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::InvalidArgument("no stdout".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::InvalidArgument("no stderr".into()))?;
    let reader = {
        let (filter, output, echo) = (filter.clone(), output.clone(), opts.echo);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if debug {
                    // The raw console (kernel messages, init steps, marker) instead of the echo.
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(&buf[..n]);
                    let _ = err.flush();
                }
                let pass = filter
                    .lock()
                    .map(|mut f| f.feed(&buf[..n]))
                    .unwrap_or_default();
                if echo && !debug {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&pass);
                    let _ = out.flush();
                }
                if let Ok(mut o) = output.lock() {
                    o.extend_from_slice(&pass);
                }
            }
        })
    };
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            if debug {
                let _ = std::io::stderr().lock().write_all(&buf[..n]);
            }
            s.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&s).into_owned()
    });

    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) => {}
            Err(source) => break Err(source),
        }
        let started = filter.lock().map(|f| f.started()).unwrap_or(true);
        if !started && start.elapsed() > BOOT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            let _ = err_reader.join();
            return Err(Error::BootStalled {
                after: BOOT_DEADLINE,
            });
        }
        if opts.timeout.is_some_and(|t| start.elapsed() > t) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            let _ = err_reader.join();
            let text = output
                .lock()
                .map(|o| String::from_utf8_lossy(&o).into_owned())
                .unwrap_or_default();
            return Err(Error::Timeout {
                timeout: opts.timeout.unwrap_or_default(),
                output: text,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = start.elapsed();
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let qemu_status = status.map_err(|source| Error::Spawn {
        command: "qemu-system-x86_64 (wait)".into(),
        source,
    })?;
    let text = output
        .lock()
        .map(|o| String::from_utf8_lossy(&o).into_owned())
        .unwrap_or_default();
    let exit = filter.lock().ok().and_then(|f| f.status());
    let stderr = interesting_stderr(&stderr);
    match exit {
        Some(status) => Ok(RunOutput {
            status,
            output: text,
            wall,
        }),
        None => match forward_failure(&stderr) {
            Some(detail) => Err(Error::ForwardUnavailable { detail }),
            None => Err(Error::NoExitStatus {
                qemu_status: qemu_status.to_string(),
                output: text,
                stderr,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_line_hides_boot_noise_even_when_split() {
        let mut f = MarkerFilter::new("FVTH-x-EXIT=".into()).with_start("FVTH-x-START".into());
        assert!(!f.started());
        let mut out = f.feed(b"[ 1.0] noise\nFVTH-x-ST");
        out.extend(f.feed(b"ART\nhello\n"));
        assert!(f.started());
        out.extend(f.feed(b"world\nFVTH-x-EXIT=7\n"));
        assert_eq!(out, b"hello\nworld\n");
        assert_eq!(f.status(), Some(7));
    }

    #[test]
    fn filter_splits_output_and_status_across_chunks() {
        let mut f = MarkerFilter::new("FVTH-x-EXIT=".into());
        let mut out = Vec::new();
        for chunk in [
            &b"hello FV"[..],
            b"TH",
            b"-",
            b"x-EX",
            b"IT=",
            b"3",
            b"\n[ 1.0] reboot\n",
        ] {
            out.extend(f.feed(chunk));
        }
        assert_eq!(out, b"hello ");
        assert_eq!(f.status(), Some(3));
    }

    #[test]
    fn filter_releases_false_prefixes() {
        let mut f = MarkerFilter::new("FVTH-x-EXIT=".into());
        let mut out = f.feed(b"FVTH-y and more");
        out.extend(f.feed(b"\nFVTH-x-EXIT=0\n"));
        assert_eq!(out, b"FVTH-y and more\n");
        assert_eq!(f.status(), Some(0));
    }

    #[test]
    fn cmdline_gives_the_tsc_frequency_and_keeps_quiet_unless_debugging() {
        let c = kernel_cmdline(false, Some(2_596_130), false, "/tmp/s.sh", "ab");
        assert_eq!(
            c,
            "console=ttyS0 panic=-1 quiet loglevel=1 tsc_early_khz=2596130 \
             fv.script=/tmp/s.sh fv.nonce=ab"
        );
        let d = kernel_cmdline(true, None, true, "/tmp/s.sh", "ab");
        assert!(!d.contains("quiet") && !d.contains("tsc_early_khz"), "{d}");
        assert!(
            d.contains(" fv.debug=1 ") && d.contains(" fv.net=1 "),
            "{d}"
        );
    }

    #[test]
    fn forwards_become_one_user_netdev_and_bad_ones_are_refused() {
        assert_eq!(netdev_arg(&[]).unwrap(), None);
        assert_eq!(
            netdev_arg(&[(8443, 443), (8080, 80)]).unwrap().as_deref(),
            Some("user,id=fwd,hostfwd=tcp:127.0.0.1:8443-:443,hostfwd=tcp:127.0.0.1:8080-:80")
        );
        assert!(netdev_arg(&[(0, 443)]).is_err());
        assert!(netdev_arg(&[(8443, 0)]).is_err());
        assert!(netdev_arg(&[(8443, 443), (8443, 80)]).is_err());
        let qemu = "qemu-system-x86_64: -netdev user,id=fwd,hostfwd=tcp:127.0.0.1:1-:443: \
                    Could not set up host forwarding rule 'tcp:127.0.0.1:1-:443'";
        assert!(forward_failure(qemu).is_some());
        assert!(forward_failure("something else").is_none());
    }

    #[test]
    fn script_quotes_everything() {
        let opts = RunOptions {
            env: vec![("A_B".into(), "it's".into())],
            ..RunOptions::default()
        };
        let s = command_script(&opts, Path::new("/x y"), &["echo", "a'b", "$HOME"]).unwrap();
        assert!(s.contains("export A_B='it'\\''s'\n"), "{s}");
        assert!(
            s.contains("cd '/x y' || exit 125\nexec 'echo' 'a'\\''b' '$HOME'\n"),
            "{s}"
        );
        let bad = RunOptions {
            env: vec![("A=B".into(), String::new())],
            ..RunOptions::default()
        };
        assert!(command_script(&bad, Path::new("/"), &["true"]).is_err());
        assert!(command_script(&opts, Path::new("/"), &[]).is_err());
    }
}
