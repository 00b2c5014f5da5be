//! A real fvd for the tests: a fresh data directory, a known root password, the fv-vmm
//! binary of this build, and a network namespace of its own (the bridges and taps it makes
//! go away with it, and tests running side by side do not meet); the tests speak to it on
//! its local socket. Plus a small XML-RPC client over fv-rpc, and the tiny guests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fv_rpc::{xmlrpc, Failure, Value};

pub const ROOT_PASSWORD: &str = "fvd-test-root";

/// A binary of this build: `target/<profile>/<name>`, beside the test's `deps/` directory.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {name}, or cargo test --workspace)",
        path.display()
    );
    path
}

/// `tests/guests/<name>.S`, built once per test process (the builder names its
/// temporary files by process, so threads must not build at once).
pub fn tiny_guest(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests");
    let path = fv_testhost::build_tiny_guest(name, &dir).expect("build a tiny guest");
    built.push((name.to_owned(), path.clone()));
    path
}

/// A fresh directory, removed on drop; short, for Unix socket paths.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fvd-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        kill_vmms(&self.0.join("data"));
        kill_dhcp_servers(&self.0.join("data"));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the fv-vmm processes recorded under a data directory, so no test leaks VMs.
pub fn kill_vmms(data: &Path) {
    let Ok(dirs) = std::fs::read_dir(data.join("vms")) else {
        return;
    };
    for d in dirs.flatten() {
        if let Some(vmm) = fv_vmmctl::Vmm::adopt(fv_vmmctl::RunDir::new(d.path()))
            .ok()
            .flatten()
        {
            let _ = vmm.kill();
        }
    }
}

/// The dnsmasq a managed network's bridge has (`<data>/run/dnsmasq/<bridge>.pid`), if it
/// runs: its pid.
pub fn dhcp_server(data: &Path, bridge: &str) -> Option<i64> {
    let pid_file = data.join(format!("run/dnsmasq/{bridge}.pid"));
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = format!("--pid-file={}", pid_file.display());
    let ours = cmdline.split(|b| *b == 0).any(|a| a == ours.as_bytes());
    (ours && alive(pid)).then_some(pid)
}

/// Kills the DHCP servers fvd left under a data directory (it was killed, not stopped).
pub fn kill_dhcp_servers(data: &Path) {
    let Ok(files) = std::fs::read_dir(data.join("run/dnsmasq")) else {
        return;
    };
    for f in files.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_suffix(".pid").and_then(|b| dhcp_server(data, b)) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// A running fvd.
pub struct Fvd {
    child: Child,
    pub data: PathBuf,
    /// Its local API socket.
    pub socket: PathBuf,
    /// Its TCP URL (`http://` or `https://`), reachable only inside its network namespace.
    pub tcp: String,
    /// Everything fvd wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Fvd {
    /// Starts fvd on `data` (created at first start) in a new network namespace and waits
    /// until it serves.
    pub fn start(data: &Path) -> Fvd {
        Self::start_with(data, false)
    }

    /// As [`Fvd::start`], serving HTTPS on TCP when `tls`.
    pub fn start_with(data: &Path, tls: bool) -> Fvd {
        Self::start_args(data, tls, &[])
    }

    /// As [`Fvd::start_with`], with more of fvd's options.
    pub fn start_args(data: &Path, tls: bool, extra: &[&str]) -> Fvd {
        let socket = data.join("fvd.sock");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(built_binary("fvd"))
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"]);
        if !tls {
            cmd.arg("--insecure-http");
        }
        cmd.args(extra);
        let mut child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("--fv-vmm")
            .arg(built_binary("fv-vmm"))
            .env("FV_ROOT_PASSWORD", ROOT_PASSWORD)
            .env("FVD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fvd (with unshare from util-linux)");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("fvd ready: ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let tcp = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("fvd did not become ready:\n{}", log.lock().unwrap());
            }
        };
        Fvd {
            child,
            data: data.to_path_buf(),
            socket,
            tcp,
            log,
        }
    }

    /// fvd's pid (also the holder of its network namespace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A URL for the XenAPI Python SDK: its `UDSTransport` reads the socket's path from
    /// the host part, `/` written as `_`.
    pub fn sdk_url(&self) -> String {
        let path = self.socket.to_str().expect("UTF-8 path");
        assert!(
            !path.contains('_'),
            "the SDK cannot reach a socket path with _: {path}"
        );
        format!("http://{}/", path.replace('/', "_"))
    }

    /// Runs `cmd` in fvd's network namespace (with nsenter), returning its stdout.
    pub fn in_netns(&self, cmd: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .args(cmd)
            .output()
            .expect("run nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM, as a service manager stops it; waits until it has ended.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn client(&self) -> Client {
        Client {
            socket: self.socket.clone(),
            session: None,
        }
    }

    /// A client logged in as root.
    pub fn root(&self) -> Client {
        let mut c = self.client();
        c.login("root", ROOT_PASSWORD).expect("root logs in");
        c
    }
}

impl Drop for Fvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking XML-RPC client on fvd's local socket; `call` adds the session as the first
/// parameter.
#[derive(Clone)]
pub struct Client {
    pub socket: PathBuf,
    pub session: Option<String>,
}

pub fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// A XenAPI record (a struct) of `(field, value)` pairs, as `VDI.create` and the like take.
pub fn record(pairs: &[(&str, Value)]) -> Value {
    Value::Struct(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

impl Client {
    /// `VBD.create`: VDI `vdi` as `vm`'s read/write disk at position `userdevice`,
    /// `bootable` or not. Returns the VBD.
    pub fn attach_disk(&self, vm: &str, vdi: &str, userdevice: &str, bootable: bool) -> Value {
        self.ok(
            "VBD.create",
            &[record(&[
                ("VM", s(vm)),
                ("VDI", s(vdi)),
                ("userdevice", s(userdevice)),
                ("bootable", Value::Bool(bootable)),
                ("mode", s("RW")),
                ("type", s("Disk")),
                ("empty", Value::Bool(false)),
            ])],
        )
    }

    /// Asserts that a `message` named `name` is about the VM `vm`.
    pub fn assert_vm_message(&self, name: &str, vm: &str) {
        let uuid = self.field("VM", vm, "uuid");
        let Value::Struct(messages) = self.ok("message.get_all_records", &[]) else {
            panic!("message.get_all_records is not a map");
        };
        let found = messages.values().any(|m| {
            let Value::Struct(m) = m else { return false };
            m.get("name") == Some(&s(name)) && m.get("obj_uuid") == Some(&uuid)
        });
        assert!(found, "no {name} message for {uuid:?}: {messages:?}");
    }

    /// POSTs `body` to `path` and returns the status and response body.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        self.try_post_as(path, content_type, body)
            .expect("a response from fvd")
    }

    /// As [`Client::post`] of XML-RPC, or `None` if fvd is not there or did not answer.
    pub fn try_post(&self, path: &str, body: &[u8]) -> Option<(u16, String)> {
        self.try_post_as(path, "text/xml", body)
    }

    fn try_post_as(&self, path: &str, content_type: &str, body: &[u8]) -> Option<(u16, String)> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        // The server may answer before reading everything (a body over its limit).
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// One XML-RPC call with exactly `params`.
    pub fn raw_call(&self, method: &str, params: &[Value]) -> Result<Value, Failure> {
        let body = xmlrpc::encode_call(method, params);
        let (status, text) = self.post("/", "text/xml", body.as_bytes());
        assert_eq!(status, 200, "{method}: HTTP {status}: {text}");
        xmlrpc::parse_response(text.as_bytes()).expect("a XenAPI response")
    }

    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value, Failure> {
        let mut all = vec![s(self.session.as_deref().expect("logged in"))];
        all.extend_from_slice(params);
        self.raw_call(method, &all)
    }

    /// A call that must succeed.
    pub fn ok(&self, method: &str, params: &[Value]) -> Value {
        self.call(method, params)
            .unwrap_or_else(|f| panic!("{method}: {f}"))
    }

    /// The error code of a call that must fail.
    pub fn err(&self, method: &str, params: &[Value]) -> Failure {
        match self.call(method, params) {
            Ok(v) => panic!("{method} succeeded ({v:?}) but should have failed"),
            Err(f) => f,
        }
    }

    pub fn login(&mut self, user: &str, password: &str) -> Result<(), Failure> {
        let r = self.raw_call(
            "session.login_with_password",
            &[s(user), s(password), s("1.0"), s("fvd-tests")],
        )?;
        self.session = r.as_str().map(str::to_owned);
        Ok(())
    }

    /// A VM that boots tiny guest `guest` (64 MiB, 1 vCPU).
    pub fn tiny_vm(&self, name: &str, guest: &str) -> String {
        let kernel = tiny_guest(guest);
        let rec = Value::Struct(
            [
                ("name_label", s(name)),
                ("PV_kernel", s(kernel.to_str().unwrap())),
                ("memory_static_max", Value::Int(64 << 20)),
                ("memory_dynamic_max", Value::Int(64 << 20)),
                ("memory_dynamic_min", Value::Int(64 << 20)),
                ("memory_static_min", Value::Int(64 << 20)),
                ("VCPUs_max", Value::Int(1)),
                ("VCPUs_at_startup", Value::Int(1)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        );
        self.ok("VM.create", &[rec]).as_str().unwrap().to_owned()
    }

    pub fn field(&self, class: &str, r: &str, field: &str) -> Value {
        self.ok(&format!("{class}.get_{field}"), &[s(r)])
    }

    pub fn power_state(&self, vm: &str) -> String {
        self.field("VM", vm, "power_state")
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits until `vm`'s power state is `want`.
    pub fn wait_power_state(&self, vm: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.power_state(vm);
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "VM {vm} stayed {now}, expected {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether process `pid` is alive (and not a zombie).
pub fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.split_whitespace().next()?.to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// The interpreter that has the XenAPI Python SDK (see scripts/install-deps.sh).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FV_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("FV_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".local/share/ferrovisor/venv")
        });
    let py = venv.join("bin/python3");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-deps.sh (it installs PyPI's xenapi)",
        py.display()
    );
    py
}
