//! `/import_raw_vdi` and `/export_raw_vdi` against a real fvd on its local socket: raw,
//! qcow2 and VHD both ways, checked by `qemu-img check` and `qemu-img compare`; refusals
//! (sizes, backing files, garbage, credentials, roles, a running VM's disk) that change
//! nothing; tasks with progress and cancel; and export throughput against `qemu-img convert`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fv_rpc::Value;

/// An HTTP response: status, head, body.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on fvd's socket (`Connection: close`); the body may be refused half-way.
fn http(socket: &Path, method: &str, path: &str, body: &[u8], extra: &str) -> Reply {
    let mut stream = UnixStream::connect(socket).expect("connect to fvd");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

struct Env {
    _dir: TempDir,
    fvd: Fvd,
    c: Client,
    sr: String,
    sr_dir: PathBuf,
    tmp: PathBuf,
}

impl Env {
    fn start(tag: &str) -> Env {
        let dir = TempDir::new(tag);
        let fvd = Fvd::start(&dir.0.join("data"));
        let c = fvd.root();
        let Value::Array(pools) = c.ok("pool.get_all", &[]) else {
            panic!()
        };
        let sr = c.field("pool", pools[0].as_str().unwrap(), "default_SR");
        let sr = sr.as_str().unwrap().to_owned();
        let uuid = c.field("SR", &sr, "uuid");
        let sr_dir = fvd.data.join("sr").join(uuid.as_str().unwrap());
        let tmp = dir.0.join("files");
        std::fs::create_dir_all(&tmp).unwrap();
        Env {
            _dir: dir,
            fvd,
            c,
            sr,
            sr_dir,
            tmp,
        }
    }

    fn session(&self) -> String {
        self.c.session.clone().unwrap()
    }

    fn vdi(&self, name: &str, size: u64) -> String {
        let rec = record(&[
            ("name_label", s(name)),
            ("SR", s(&self.sr)),
            ("virtual_size", Value::Int(size as i64)),
            ("type", s("user")),
            ("sharable", Value::Bool(false)),
            ("read_only", Value::Bool(false)),
            ("other_config", Value::Struct(BTreeMap::new())),
        ]);
        self.c.ok("VDI.create", &[rec]).as_str().unwrap().to_owned()
    }

    fn vdi_file(&self, vdi: &str) -> PathBuf {
        let location = self.c.field("VDI", vdi, "location");
        self.sr_dir.join(location.as_str().unwrap())
    }

    fn import(&self, vdi: &str, format: &str, body: &[u8]) -> Reply {
        let path = format!(
            "/import_raw_vdi?session_id={}&vdi={vdi}&format={format}",
            self.session()
        );
        http(&self.fvd.socket, "PUT", &path, body, "")
    }

    fn export(&self, vdi: &str, format: &str) -> Reply {
        let path = format!(
            "/export_raw_vdi?session_id={}&vdi={vdi}&format={format}",
            self.session()
        );
        http(&self.fvd.socket, "GET", &path, b"", "")
    }

    fn export_raw(&self, vdi: &str) -> Vec<u8> {
        let r = self.export(vdi, "raw");
        assert_eq!(r.status, 200, "{}", r.text());
        r.body
    }

    /// The task a reply names must succeed, its progress at 1. An export's client may have
    /// read the last byte (its length is declared) a moment before the task is marked done.
    fn task_succeeded(&self, r: &Reply) {
        let task = r.header("task-id").expect("a task-id header");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.c.field("task", &task, "status").as_str() == Some("pending") {
            assert!(Instant::now() < deadline, "task {task} still pending");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            self.c.field("task", &task, "status").as_str(),
            Some("success")
        );
        assert_eq!(self.c.field("task", &task, "progress"), Value::Float(1.0));
    }

    fn file(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Deterministic non-zero-ish bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An 8 MiB disk image with data in a few places and zeroes elsewhere.
fn disk_image(seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; 8 << 20];
    for (at, len) in [(0, 1 << 20), (3 << 20, 300_000), ((8 << 20) - 4096, 4096)] {
        d[at..at + len].copy_from_slice(&pattern(len, seed + at as u64));
    }
    d
}

#[test]
fn every_format_both_ways() {
    let env = Env::start("xfer");
    let data = disk_image(1);
    let raw = env.file("data.raw");
    std::fs::write(&raw, &data).unwrap();

    // Raw in, raw out; the VDI stays thin.
    let a = env.vdi("a", 8 << 20);
    let r = env.import(&a, "raw", &data);
    assert_eq!(r.status, 200, "{}", r.text());
    env.task_succeeded(&r);
    assert!(
        env.export_raw(&a) == data,
        "raw export differs from the import"
    );
    let on_disk = std::fs::metadata(env.vdi_file(&a)).unwrap().len();
    assert!(on_disk < 4 << 20, "the VDI's file is {on_disk} bytes");
    qemu_img(&["check", p(&env.vdi_file(&a))]);

    // qcow2 out: a standalone image that passes qemu-img check and holds the data.
    let r = env.export(&a, "qcow2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/x-qemu-disk")
    );
    env.task_succeeded(&r);
    let out = env.file("out.qcow2");
    std::fs::write(&out, &r.body).unwrap();
    let check = qemu_img(&["check", "-f", "qcow2", p(&out)]);
    assert!(check.contains("No errors were found"), "{check}");
    qemu_img(&["compare", "-f", "raw", "-F", "qcow2", p(&raw), p(&out)]);
    let info = qemu_img(&["info", "-f", "qcow2", p(&out)]);
    assert!(!info.contains("backing file"), "{info}");

    // VHD out: dynamic, read by qemu-img.
    let r = env.export(&a, "vhd");
    assert_eq!(r.status, 200, "{}", r.text());
    env.task_succeeded(&r);
    let out = env.file("out.vhd");
    std::fs::write(&out, &r.body).unwrap();
    qemu_img(&["compare", "-f", "raw", "-F", "vpc", p(&raw), p(&out)]);
    assert!(
        r.body.len() < 8 << 20,
        "a sparse VHD is {} bytes",
        r.body.len()
    );

    // qcow2 in, made by qemu-img, over a VDI holding other data (zeroes must win).
    let src = env.file("src.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", p(&raw), p(&src)]);
    let b = env.vdi("b", 8 << 20);
    assert_eq!(env.import(&b, "raw", &pattern(8 << 20, 9)).status, 200);
    let r = env.import(&b, "qcow2", &std::fs::read(&src).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    env.task_succeeded(&r);
    assert!(env.export_raw(&b) == data, "qcow2 import differs");
    qemu_img(&["check", p(&env.vdi_file(&b))]);

    // VHD in: dynamic and fixed, made by qemu-img.
    for sub in ["dynamic", "fixed"] {
        let vhd = env.file(&format!("src-{sub}.vhd"));
        let opts = format!("subformat={sub},force_size=on");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            &opts,
            p(&raw),
            p(&vhd),
        ]);
        let c = env.vdi(sub, 8 << 20);
        let r = env.import(&c, "vhd", &std::fs::read(&vhd).unwrap());
        assert_eq!(r.status, 200, "{sub}: {}", r.text());
        env.task_succeeded(&r);
        assert!(env.export_raw(&c) == data, "{sub} VHD import differs");
    }

    // A smaller image into a larger VDI: the image's bytes, the tail untouched.
    let big = env.vdi("big", 16 << 20);
    let r = env.import(&big, "qcow2", &std::fs::read(&src).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    let back = env.export_raw(&big);
    assert!(back[..8 << 20] == data[..] && back[8 << 20..].iter().all(|b| *b == 0));
}

#[test]
fn bad_uploads_are_refused_and_change_nothing() {
    let env = Env::start("xfer-bad");
    let small = env.vdi("small", 1 << 20);
    let before = pattern(1 << 20, 3);
    assert_eq!(env.import(&small, "raw", &before).status, 200);

    // Larger than the VDI: refused before anything is written.
    let r = env.import(&small, "raw", &pattern(2 << 20, 4));
    assert_eq!(r.status, 413, "{}", r.text());
    let task = r.header("task-id").expect("task-id");
    assert_eq!(c_status(&env, &task), "failure");
    assert!(env.export_raw(&small) == before);

    // A qcow2 image larger than the VDI.
    let raw2 = env.file("two.raw");
    std::fs::write(&raw2, pattern(2 << 20, 5)).unwrap();
    let q2 = env.file("two.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", p(&raw2), p(&q2)]);
    let r = env.import(&small, "qcow2", &std::fs::read(&q2).unwrap());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(env.export_raw(&small) == before);

    // A qcow2 image with a backing file: never followed.
    let child = env.file("child.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        p(&q2),
        "-F",
        "qcow2",
        p(&child),
    ]);
    let r = env.import(&small, "qcow2", &std::fs::read(&child).unwrap());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("backing file"), "{}", r.text());
    assert!(env.export_raw(&small) == before);

    // Garbage as qcow2 and as VHD; a truncated VHD; a differencing VHD.
    let garbage = pattern(1 << 20, 6);
    for format in ["qcow2", "vhd"] {
        let r = env.import(&small, format, &garbage);
        assert_eq!(r.status, 400, "{format}: {}", r.text());
        assert!(r.text().contains("not a valid"), "{}", r.text());
    }
    let vhd = env.file("one.vhd");
    let raw1 = env.file("one.raw");
    std::fs::write(&raw1, pattern(1 << 20, 7)).unwrap();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "force_size=on",
        p(&raw1),
        p(&vhd),
    ]);
    let whole = std::fs::read(&vhd).unwrap();
    let mut cut = whole[..whole.len() / 2].to_vec();
    cut.extend_from_slice(&whole[whole.len() - 512..]);
    let r = env.import(&small, "vhd", &cut);
    assert_eq!(r.status, 400, "{}", r.text());
    // A differencing VHD (qemu-img cannot make one: the footer's disk type set to 4).
    let mut diff = whole.clone();
    let f = diff.len() - 512;
    diff[f + 60..f + 64].copy_from_slice(&4u32.to_be_bytes());
    diff[f + 64..f + 68].fill(0);
    let sum = !diff[f..]
        .iter()
        .fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
    diff[f + 64..f + 68].copy_from_slice(&sum.to_be_bytes());
    let r = env.import(&small, "vhd", &diff);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("differencing"), "{}", r.text());
    assert!(env.export_raw(&small) == before);
    // Nothing is left in the SR but VDIs.
    for e in std::fs::read_dir(&env.sr_dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.ends_with(".tmp"), "left behind: {n}");
    }

    // Queries: an unknown format (404, as XAPI), no VDI (400), an unknown VDI (404).
    let sess = env.session();
    let get = |q: &str| http(&env.fvd.socket, "GET", q, b"", "");
    let path = format!("/export_raw_vdi?session_id={sess}&vdi={small}&format=vmdk");
    assert_eq!(get(&path).status, 404);
    assert_eq!(
        get(&format!("/export_raw_vdi?session_id={sess}")).status,
        400
    );
    let path = format!("/export_raw_vdi?session_id={sess}&vdi=OpaqueRef:nope");
    assert_eq!(get(&path).status, 404);
    let uuid = env.c.field("VDI", &small, "uuid");
    let path = format!(
        "/export_raw_vdi?session_id={sess}&vdi={}",
        uuid.as_str().unwrap()
    );
    assert!(get(&path).body == before, "export by uuid");
}

fn c_status(env: &Env, task: &str) -> String {
    env.c
        .field("task", task, "status")
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn credentials_roles_tasks_and_running_vms() {
    let env = Env::start("xfer-auth");
    let vdi = env.vdi("d", 1 << 20);
    let sock = &env.fvd.socket;

    // No credentials, a bad session: 401; basic auth works.
    let r = http(sock, "GET", &format!("/export_raw_vdi?vdi={vdi}"), b"", "");
    assert_eq!(r.status, 401);
    let path = format!("/export_raw_vdi?session_id=OpaqueRef:bogus&vdi={vdi}");
    assert_eq!(http(sock, "GET", &path, b"", "").status, 401);
    let basic = format!(
        "Authorization: Basic {}\r\n",
        base64(&format!("root:{ROOT_PASSWORD}"))
    );
    let r = http(
        sock,
        "GET",
        &format!("/export_raw_vdi?vdi={vdi}"),
        b"",
        &basic,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), 1 << 20);
    let bad = format!("Authorization: Basic {}\r\n", base64("root:wrong"));
    let r = http(
        sock,
        "GET",
        &format!("/export_raw_vdi?vdi={vdi}"),
        b"",
        &bad,
    );
    assert_eq!(r.status, 401);

    // Roles: vm-admin may; vm-operator and read-only may not (403).
    for (role, want) in [("read-only", 403), ("vm-operator", 403), ("vm-admin", 200)] {
        env.c.ok("user.create_local", &[s(role), s("pw"), s(role)]);
        let mut u = env.fvd.client();
        u.login(role, "pw").expect("login");
        let sess = u.session.unwrap();
        let path = format!("/export_raw_vdi?session_id={sess}&vdi={vdi}");
        let r = http(sock, "GET", &path, b"", "");
        assert_eq!(r.status, want, "{role} export: {}", r.text());
        let path = format!("/import_raw_vdi?session_id={sess}&vdi={vdi}");
        let r = http(sock, "PUT", &path, &[1u8; 512], "");
        assert_eq!(r.status, want, "{role} import: {}", r.text());
    }

    // A task of the client's: used, and ends with success and progress 1.
    let task = env.c.ok("task.create", &[s("mine"), s("")]);
    let task = task.as_str().unwrap().to_owned();
    let path = format!(
        "/import_raw_vdi?session_id={}&vdi={vdi}&task_id={task}",
        env.session()
    );
    let r = http(sock, "PUT", &path, &pattern(1 << 20, 1), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("task-id").as_deref(), Some(task.as_str()));
    assert_eq!(c_status(&env, &task), "success");
    assert_eq!(env.c.field("task", &task, "progress"), Value::Float(1.0));
    // A finished task cannot carry another transfer.
    assert_eq!(http(sock, "PUT", &path, &[1u8; 512], "").status, 400);

    // A running VM's disk: import refused (409), export allowed.
    let vm = env.c.tiny_vm("busy", "spin");
    env.c.attach_disk(&vm, &vdi, "0", false);
    env.c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let r = env.import(&vdi, "raw", &[0u8; 512]);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(env.export(&vdi, "raw").status, 200);
    env.c.ok("VM.hard_shutdown", &[s(&vm)]);
}

#[test]
fn cancelled_transfers_stop() {
    let env = Env::start("xfer-cancel");
    let vdi = env.vdi("huge", 64 << 30);
    let path = format!(
        "/export_raw_vdi?session_id={}&vdi={vdi}&format=raw",
        env.session()
    );
    let mut stream = UnixStream::connect(&env.fvd.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let task = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("task-id")
                .then(|| v.trim().to_owned())
        })
        .expect("task-id");
    // Let it run a little, then cancel; the stream stops long before 64 GiB.
    let mut total = 0u64;
    while total < 64 << 20 {
        total += stream.read(&mut buf).unwrap() as u64;
    }
    env.c.ok("task.cancel", &[s(&task)]);
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
        assert!(total < 32 << 30, "the export went on after the cancel");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while c_status(&env, &task) != "cancelled" {
        assert!(
            Instant::now() < deadline,
            "task is {}",
            c_status(&env, &task)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // An import cancelled half-way: fvd stops reading and answers 500, the task cancelled.
    let task = env.c.ok("task.create", &[s("upload"), s("")]);
    let task = task.as_str().unwrap().to_owned();
    let path = format!(
        "/import_raw_vdi?session_id={}&vdi={vdi}&format=raw&task_id={task}",
        env.session()
    );
    let total = 1u64 << 30;
    let mut stream = UnixStream::connect(&env.fvd.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {total}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let piece = pattern(1 << 20, 2);
    for _ in 0..32 {
        stream.write_all(&piece).unwrap();
    }
    env.c.ok("task.cancel", &[s(&task)]);
    let mut sent = 32u64 << 20;
    while sent < total {
        if stream.write_all(&piece).is_err() {
            break;
        }
        sent += piece.len() as u64;
    }
    assert!(sent < total, "fvd read the whole upload after the cancel");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 500"), "{reply}");
    assert_eq!(c_status(&env, &task), "cancelled");
}

/// While an import writes a VDI, nothing else may change or open it: a snapshot would send
/// the rest of the upload into the snapshot's frozen data, a VM would be a second writer.
/// Once it ends, both work.
#[test]
fn an_import_holds_its_vdi_until_it_ends() {
    let env = Env::start("xfer-hold");
    let size = 16u64 << 20;
    let vdi = env.vdi("held", size);
    let vm = env.c.tiny_vm("held", "spin");
    env.c.attach_disk(&vm, &vdi, "0", false);
    let task = env.c.ok("task.create", &[s("upload"), s("")]);
    let task = task.as_str().unwrap().to_owned();
    let path = format!(
        "/import_raw_vdi?session_id={}&vdi={vdi}&format=raw&task_id={task}",
        env.session()
    );
    let mut stream = UnixStream::connect(&env.fvd.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let data = pattern(size as usize, 9);
    let half = data.len() / 2;
    stream.write_all(&data[..half]).unwrap();
    // Under way once the task shows progress.
    let deadline = Instant::now() + Duration::from_secs(30);
    let progress = || match env.c.field("task", &task, "progress") {
        Value::Float(f) => f,
        _ => 0.0,
    };
    while progress() <= 0.0 {
        assert!(Instant::now() < deadline, "the import never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    for call in ["VDI.snapshot", "VDI.clone"] {
        let e = env.c.err(call, &[s(&vdi), Value::Struct(BTreeMap::new())]);
        assert_eq!(e.code, "OTHER_OPERATION_IN_PROGRESS", "{call}: {e}");
    }
    let e = env.c.err("VDI.resize", &[s(&vdi), Value::Int(32 << 20)]);
    assert_eq!(e.code, "OTHER_OPERATION_IN_PROGRESS");
    let e = env.c.err(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    assert_eq!(e.code, "OTHER_OPERATION_IN_PROGRESS");
    assert_eq!(env.c.power_state(&vm), "Halted");
    let Value::Array(before) = env.c.field("SR", &env.sr, "VDIs") else {
        panic!()
    };

    stream.write_all(&data[half..]).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let Value::Array(after) = env.c.field("SR", &env.sr, "VDIs") else {
        panic!()
    };
    assert_eq!(before.len(), after.len(), "the refused calls made nothing");
    assert!(env.export_raw(&vdi) == data, "the import wrote everything");
    env.c
        .ok("VDI.snapshot", &[s(&vdi), Value::Struct(BTreeMap::new())]);
    env.c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    env.c.ok("VM.hard_shutdown", &[s(&vm)]);
}

/// Export throughput against `qemu-img convert` of the same VDI file, in the same run.
#[test]
fn export_throughput_against_qemu_img() {
    let env = Env::start("xfer-bench");
    const SIZE: usize = 256 << 20;
    let vdi = env.vdi("bench", SIZE as u64);
    let data = pattern(SIZE, 11);
    let t = Instant::now();
    let r = env.import(&vdi, "raw", &data);
    assert_eq!(r.status, 200, "{}", r.text());
    let import = t.elapsed();
    drop(data);
    let file = env.vdi_file(&vdi);
    let mib = (SIZE >> 20) as f64;
    let rate = |d: Duration| mib / d.as_secs_f64();

    let mut lines = vec![format!(
        "import raw {} MiB: {:.0} MiB/s",
        SIZE >> 20,
        rate(import)
    )];
    for (format, qemu_fmt) in [("raw", "raw"), ("qcow2", "qcow2"), ("vhd", "vpc")] {
        let t = Instant::now();
        let r = env.export(&vdi, format);
        let ours = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        drop(r);
        let out = env.file(&format!("qemu.{format}"));
        let t = Instant::now();
        qemu_img(&["convert", "-f", "qcow2", "-O", qemu_fmt, p(&file), p(&out)]);
        let theirs = t.elapsed();
        let _ = std::fs::remove_file(&out);
        lines.push(format!(
            "export {format}: fvd {:.0} MiB/s ({:.2}s), qemu-img convert -O {qemu_fmt} \
             {:.0} MiB/s ({:.2}s), ratio {:.2}",
            rate(ours),
            ours.as_secs_f64(),
            rate(theirs),
            theirs.as_secs_f64(),
            theirs.as_secs_f64() / ours.as_secs_f64()
        ));
    }
    for l in lines {
        println!("{l}");
    }
}

fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
