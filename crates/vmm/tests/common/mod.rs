//! Shared helpers for the fv-vmm integration tests: building the tiny guests, running
//! fv-vmm with a timeout while capturing its output, and a small HTTP/1.1 client for the
//! API socket (std only, independent of the crate's own client).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long any fv-vmm run may take before the test kills it and fails.
pub const VM_TIMEOUT: Duration = Duration::from_secs(20);

/// The fv-vmm binary Cargo built for this test run.
pub fn fv_vmm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fv-vmm"))
}

/// `tests/guests` at the workspace root.
pub fn guests_dir() -> PathBuf {
    fv_testhost::tiny_guest_sources()
}

/// A fresh directory for one test: short (Unix socket paths are limited to 108 bytes),
/// unique across processes and threads, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fvt-{}-{}-{}", std::process::id(), n, tag));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tests/guests/<name>.S` built into an ELF64 image under `$CARGO_TARGET_TMPDIR/guests`,
/// once per test run.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    // Holding the lock while building serialises builds within this process.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
    let elf = fv_testhost::build_tiny_guest(name, &out_dir)
        .unwrap_or_else(|e| panic!("cannot build guest {name}: {e}"));
    built.insert(name.to_string(), elf.clone());
    elf
}

/// Bytes read so far from one of the child's pipes, plus whether it reached EOF.
#[derive(Default)]
struct Captured {
    data: Vec<u8>,
    eof: bool,
}

type Shared = Arc<(Mutex<Captured>, Condvar)>;

fn capture<R: Read + Send + 'static>(mut r: R) -> Shared {
    let shared: Shared = Arc::default();
    let s = shared.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = r.read(&mut buf).unwrap_or(0);
            let (lock, cv) = &*s;
            let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
            if n == 0 {
                c.eof = true;
            } else {
                c.data.extend_from_slice(&buf[..n]);
            }
            cv.notify_all();
            if n == 0 {
                break;
            }
        }
    });
    shared
}

fn text(s: &Shared) -> String {
    String::from_utf8_lossy(&s.0.lock().unwrap_or_else(|e| e.into_inner()).data).into_owned()
}

/// A running fv-vmm. Killed on drop (so a failing test never leaks a VMM).
pub struct Vmm {
    child: Child,
    stdout: Shared,
    stderr: Shared,
    stdin: Option<ChildStdin>,
    started: Instant,
    pub args: Vec<String>,
    pub api_socket: Option<PathBuf>,
}

impl Vmm {
    /// Spawn `fv-vmm <args>` with stdin/stdout/stderr piped.
    pub fn spawn<I, S>(args: I) -> Vmm
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let api_socket = args
            .iter()
            .position(|a| a == "--api-socket")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from);
        let mut child = Command::new(fv_vmm())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fv-vmm");
        let stdout = capture(child.stdout.take().unwrap());
        let stderr = capture(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Vmm {
            child,
            stdout,
            stderr,
            stdin,
            started: Instant::now(),
            args,
            api_socket,
        }
    }

    /// Boot `kernel` with 1 vCPU, 64 MiB and serial on stdio (unless `extra` gives
    /// `--memory` / `--serial`), plus the `extra` flags.
    pub fn boot(kernel: &Path, extra: &[&str]) -> Vmm {
        let mut args: Vec<String> = vec!["--kernel".into(), kernel.display().to_string()];
        if !extra.contains(&"--serial") {
            args.extend(["--serial".into(), "stdio".into()]);
        }
        if !extra.contains(&"--memory") {
            args.extend(["--memory".into(), "64".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Vmm::spawn(args)
    }

    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }
    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Everything a failure message should show.
    pub fn describe(&self) -> String {
        format!(
            "fv-vmm {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.stdout(),
            self.stderr()
        )
    }

    /// Write bytes to fv-vmm's stdin (the guest's serial input with `--serial stdio`).
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin closed");
        stdin.write_all(bytes).expect("write to fv-vmm stdin");
        stdin.flush().expect("flush fv-vmm stdin");
    }

    /// Wait until stdout contains `needle` `count` times; panics (killing the VMM) on
    /// timeout or if fv-vmm exits first.
    pub fn wait_for_output_n(&mut self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.stdout.clone();
        let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if String::from_utf8_lossy(&c.data).matches(needle).count() >= count {
                return;
            }
            let now = Instant::now();
            if c.eof || now >= deadline {
                drop(c);
                let why = if now >= deadline {
                    "timed out".to_string()
                } else {
                    // fv-vmm is ending: let it finish its report on stderr first.
                    format!(
                        "stdout closed ({})",
                        self.ended_within(Duration::from_secs(5))
                    )
                };
                self.kill();
                self.drain();
                panic!("{why} waiting for {count}x {needle:?}\n{}", self.describe());
            }
            c = cv
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn wait_for_output(&mut self, needle: &str) {
        self.wait_for_output_n(needle, 1, VM_TIMEOUT);
    }

    /// Wait for fv-vmm to exit (killing it and panicking after `VM_TIMEOUT` since spawn),
    /// then for its output pipes to drain. Returns the exit code.
    pub fn wait_exit(&mut self) -> i32 {
        self.wait_exit_within(VM_TIMEOUT)
    }

    /// Like `wait_exit`, for guests slower than the tiny ones (Linux, nested).
    pub fn wait_exit_within(&mut self, timeout: Duration) -> i32 {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "fv-vmm did not exit within {timeout:?}\n{}",
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.drain();
        code_of(status, &self.describe())
    }

    /// Wait (bounded) until both output pipes reach EOF.
    fn drain(&self) {
        for s in [&self.stdout, &self.stderr] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let (lock, cv) = &**s;
            let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !c.eof && Instant::now() < deadline {
                c = cv
                    .wait_timeout(c, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    /// How the process ended, waiting up to `grace` for it to.
    fn ended_within(&mut self, grace: Duration) -> String {
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!("fv-vmm {status}"),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => return "fv-vmm still running".into(),
            }
        }
    }

    /// The fv-vmm process's id (e.g. to read its `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is the process still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The API client for this VMM's `--api-socket`, waiting for the socket to appear.
    pub fn api(&mut self) -> Api {
        let path = self
            .api_socket
            .clone()
            .expect("fv-vmm started without --api-socket");
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&path).is_err() {
            if !self.running() || Instant::now() >= deadline {
                self.kill();
                panic!(
                    "API socket {} never accepted a connection\n{}",
                    path.display(),
                    self.describe()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Api { path }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.kill();
    }
}

fn code_of(status: ExitStatus, context: &str) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(c) => c,
        None => panic!("fv-vmm killed by signal {:?}\n{context}", status.signal()),
    }
}

/// Run fv-vmm to completion with `args` (bounded by `VM_TIMEOUT`): (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let mut vmm = Vmm::spawn(args);
    drop(vmm.stdin.take());
    let code = vmm.wait_exit();
    (code, vmm.stdout(), vmm.stderr())
}

/// A minimal HTTP/1.1 client over the VMM's Unix socket: one request per connection.
pub struct Api {
    path: PathBuf,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.body))
    }
}

impl Api {
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        let mut s = UnixStream::connect(&self.path)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.path.display()));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = body.unwrap_or("");
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if !body.is_empty() || method != "GET" {
            req.push_str("Content-Type: application/json\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: write: {e}"));
        read_response(&mut s).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }
    pub fn put(&self, path: &str) -> Response {
        self.request("PUT", path, None)
    }

    /// `GET /vm`, asserting 200 and a JSON body.
    pub fn vm(&self) -> serde_json::Value {
        let r = self.get("/vm");
        assert_eq!(r.status, 200, "GET /vm: {r:?}");
        r.json()
    }
}

/// Read one HTTP/1.1 response: status line, headers, then Content-Length bytes of body
/// (or up to EOF when there is no Content-Length).
fn read_response(s: &mut UnixStream) -> Result<Response, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed inside the headers: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    v.trim()
                        .parse::<usize>()
                        .map_err(|e| format!("Content-Length {v:?}: {e}"))?,
                );
            }
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    match content_length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk).map_err(|e| format!("read body: {e}"))?;
                if n == 0 {
                    return Err(format!("body truncated: {} of {len} bytes", body.len()));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None if status == 204 || status == 304 || (100..200).contains(&status) => body.clear(),
        None => {
            s.read_to_end(&mut body)
                .map_err(|e| format!("read body: {e}"))?;
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Poll `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
