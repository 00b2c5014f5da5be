//! Helpers for fv's integration tests: a minimal in-test XenAPI server (fv_xapi's `Api`
//! over a temporary SQLite database, behind a small HTTP/1.1 server on TCP and a Unix
//! socket), a few VM actions for it, and running the `fv` binary.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use fv_rpc::jsonrpc;
use fv_rpc::{xmlrpc, Failure, Value};
use fv_xapi::auth::Cost;
use fv_xapi::db::Db;
use fv_xapi::error::codes;
use fv_xapi::model::{Class, Message};
use fv_xapi::{Actions, Api, ApiError, CallContext};

pub const PASSWORD: &str = "test-password";

/// The fv binary Cargo built for these tests.
pub fn fv_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fv"))
}

/// What `fv` did.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "fv failed: {}\n{}", self.stderr, self.stdout);
        self.stdout.trim_end()
    }
}

fn ran(o: Output) -> Ran {
    Ran {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs fv with `conn` (connection arguments) then `args`, no environment of ours.
pub fn fv(conn: &[String], args: &[&str]) -> Ran {
    run_fv(Command::new(fv_bin()), conn, args)
}

/// As [`fv`], in the network namespace of process `pid` (an fvd started in one of its own).
pub fn fv_in_netns(pid: u32, conn: &[String], args: &[&str]) -> Ran {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net")).arg(fv_bin());
    run_fv(cmd, conn, args)
}

/// Runs `cmd` (fv, or a wrapper of it) with `conn` and `args` and without the FV_*
/// variables of the caller.
fn run_fv(mut cmd: Command, conn: &[String], args: &[&str]) -> Ran {
    for var in [
        "FV_SERVER",
        "FV_PASSWORD",
        "FV_SOCKET",
        "FV_USERNAME",
        "FV_PORT",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.args(conn).args(args).output().expect("run fv");
    ran(out)
}

/// A few VM actions, enough to exercise the CLI's task handling without a VMM: start
/// and shutdown only flip the power state (with progress steps), clone copies the
/// record, provision does nothing.
pub struct FakeVms;

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

impl Actions for FakeVms {
    fn call(
        &self,
        ctx: &CallContext,
        c: &'static Class,
        m: &'static Message,
        args: Vec<Value>,
    ) -> Result<Value, ApiError> {
        let db = ctx.api.db();
        let vm = args.first().map(s).unwrap_or_default();
        let power = |want: &str, to: &str| -> Result<Value, ApiError> {
            db.write(|tx| {
                let st = tx.get("VM", &vm, "power_state")?;
                if st.as_str() != Some(want) {
                    return Err(ApiError::new(
                        &codes::VM_BAD_POWER_STATE,
                        [vm.as_str(), want, st.as_str().unwrap_or("")],
                    ));
                }
                Ok(())
            })?;
            if let Some(t) = &ctx.task {
                for p in [0.25, 0.5, 0.75] {
                    fv_xapi::task::set_progress(db, t, p)?;
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            db.write(|tx| tx.set("VM", &vm, "power_state", Value::from(to)))?;
            Ok(Value::void())
        };
        match (c.name, m.name) {
            ("VM", "start") => {
                let paused = matches!(args.get(1), Some(Value::Bool(true)));
                power("Halted", if paused { "Paused" } else { "Running" })
            }
            ("VM", "clean_shutdown" | "hard_shutdown") => power("Running", "Halted"),
            ("VM", "pause") => power("Running", "Paused"),
            ("VM", "unpause") => power("Paused", "Running"),
            ("VM", "clone") => {
                let name = args.get(1).map(s).unwrap_or_default();
                db.write(|tx| {
                    let Value::Struct(rec) = tx.record("VM", &vm)? else {
                        return Err(ApiError::internal("record"));
                    };
                    let vmc = fv_xapi::model::class("VM").expect("VM");
                    let mut f = BTreeMap::new();
                    for field in vmc.fields {
                        if field.qual != fv_xapi::model::Qual::DynamicRO
                            && fv_xapi::model::is_stored(vmc, field)
                        {
                            if let Some(v) = rec.get(field.name) {
                                f.insert(field.name.to_owned(), v.clone());
                            }
                        }
                    }
                    f.insert("name_label".into(), Value::from(name.as_str()));
                    tx.create("VM", f)
                })
                .map(Value::String)
            }
            ("VM", "provision") => Ok(Value::void()),
            // A long call that only ends when cancelled (or after 20 s).
            ("VM", "suspend") => {
                let Some(t) = &ctx.task else {
                    return Ok(Value::void());
                };
                for _ in 0..400 {
                    if fv_xapi::task::cancel_requested(db, t)? {
                        return Err(ApiError::new(&codes::TASK_CANCELLED, [t.as_str()]));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(Value::void())
            }
            ("VM", "destroy") => db.write(|tx| tx.destroy("VM", &vm)).map(|()| Value::void()),
            _ => Err(ApiError::new(
                &codes::NOT_IMPLEMENTED,
                [format!("{}.{}", c.name, m.name)],
            )),
        }
    }
}

/// An in-test server: the API over a temp database, on a TCP port (plain HTTP) and a
/// Unix socket. Threads end with the test process.
pub struct Server {
    pub api: Api,
    pub port: u16,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path().join("x.db")).expect("db");
        let api = Api::new(db, Cost::Cheap, Arc::new(FakeVms)).expect("api");
        api.auth().bootstrap_root(api.db(), PASSWORD).expect("root");
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        let socket = dir.path().join("fvd.sock");
        let unix = UnixListener::bind(&socket).expect("bind unix");
        let a = api.clone();
        std::thread::spawn(move || {
            for c in tcp.incoming().flatten() {
                let a = a.clone();
                std::thread::spawn(move || serve(c, &a));
            }
        });
        let a = api.clone();
        std::thread::spawn(move || {
            for c in unix.incoming().flatten() {
                let a = a.clone();
                std::thread::spawn(move || serve(c, &a));
            }
        });
        Server {
            api,
            port,
            socket,
            _dir: dir,
        }
    }

    /// `-s 127.0.0.1 -p PORT --nossl -u root -pw PASSWORD`.
    pub fn tcp_args(&self) -> Vec<String> {
        [
            "-s",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "--nossl",
            "-u",
            "root",
            "-pw",
            PASSWORD,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Creates a VM record directly in the database.
    pub fn vm(&self, name: &str, template: bool) -> (String, String) {
        let r = self
            .api
            .db()
            .write(|tx| {
                tx.create(
                    "VM",
                    BTreeMap::from([
                        ("name_label".to_owned(), Value::from(name)),
                        ("is_a_template".to_owned(), Value::Bool(template)),
                        ("memory_static_max".to_owned(), Value::Int(64 << 20)),
                        ("memory_dynamic_max".to_owned(), Value::Int(64 << 20)),
                        ("memory_dynamic_min".to_owned(), Value::Int(64 << 20)),
                        ("memory_static_min".to_owned(), Value::Int(64 << 20)),
                        ("VCPUs_max".to_owned(), Value::Int(1)),
                        ("VCPUs_at_startup".to_owned(), Value::Int(1)),
                    ]),
                )
            })
            .expect("create VM");
        let u = self
            .api
            .db()
            .read(|tx| tx.get("VM", &r, "uuid"))
            .expect("uuid");
        (r, u.as_str().unwrap_or("").to_owned())
    }

    pub fn vm_field(&self, r: &str, f: &str) -> Value {
        self.api.db().read(|tx| tx.get("VM", r, f)).expect("get")
    }
}

/// Serves one connection: HTTP/1.1 keep-alive, XML-RPC at `/`, JSON-RPC at `/jsonrpc`.
fn serve<S: Read + Write>(stream: S, api: &Api) {
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let answer = if path == "/jsonrpc" {
            match jsonrpc::parse_call(&body) {
                Ok(req) => {
                    let out = call(api, req.call.method, req.call.params);
                    jsonrpc::encode_response(req.version, &req.id, &out)
                }
                Err(e) => e.to_string(),
            }
        } else {
            match xmlrpc::parse_call(&body) {
                Ok(c) => xmlrpc::encode_response(&call(api, c.method, c.params)),
                Err(e) => xmlrpc::encode_fault(1, &e.to_string()),
            }
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        );
        let w = r.get_mut();
        if w.write_all(head.as_bytes())
            .and_then(|()| w.write_all(answer.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

fn call(api: &Api, method: String, params: Vec<Value>) -> Result<Value, Failure> {
    api.call(&method, params).map_err(|e| {
        let mut d = e.description();
        let code = d.remove(0);
        Failure::new(code, d)
    })
}
