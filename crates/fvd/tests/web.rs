//! The web console, served by a real fvd: its files at `/` and `/assets/`, the console
//! WebSocket's refusals of bad requests, and the browser tests (web/tests/*.spec.ts),
//! which Playwright runs in Debian's Chromium against this fvd and its tiny-guest VMs.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use fv_rpc::Value;

/// A GET on fvd's local socket: status, headers (lower-cased names) and body.
fn get(fvd: &Fvd, path: &str, extra_headers: &str) -> (u16, String, String) {
    let mut stream = UnixStream::connect(&fvd.socket).expect("fvd's socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to GET {path}: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// A WebSocket upgrade on fvd's socket: the stream, and what came until the hello frame.
fn open_ws(fvd: &Fvd, path: &str, upgrade: &str) -> (UnixStream, String) {
    let mut ws = UnixStream::connect(&fvd.socket).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        ws,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{upgrade}\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"writable\":") {
        let n = ws.read(&mut buf).expect("the upgrade and the hello frame");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    (ws, text)
}

/// The payloads of the complete (unmasked, server-sent) WebSocket frames in `raw`, joined.
fn payloads(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while raw.len() >= at + 2 {
        let (len, head) = match raw[at + 1] & 0x7f {
            126 if raw.len() >= at + 4 => (
                usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]])),
                4,
            ),
            126 | 127 => break,
            n => (usize::from(n), 2),
        };
        let Some(payload) = raw.get(at + head..at + head + len) else {
            break;
        };
        out.extend_from_slice(payload);
        at += head + len;
    }
    out
}

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

#[test]
fn the_console_is_served_at_the_root() {
    let dir = TempDir::new("web-assets");
    let fvd = Fvd::start(&dir.0.join("data"));
    let (status, head, body) = get(&fvd, "/", "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    if !web_dir().join("dist/index.html").exists() {
        // Built without the console: the placeholder says how to build it.
        assert!(body.contains("scripts/build-web.sh"), "{body}");
        return;
    }
    // Every script and style index.html names is served, with its type, cached for good.
    let mut assets = 0;
    for part in body.split('"').filter(|p| p.starts_with("/assets/")) {
        let (status, head, _) = get(&fvd, part, "");
        assert_eq!(status, 200, "{part}: {head}");
        let want = if part.ends_with(".js") {
            "content-type: text/javascript"
        } else {
            "content-type: text/css"
        };
        assert!(head.contains(want), "{part}: {head}");
        assert!(
            head.contains("max-age=31536000, immutable"),
            "{part}: {head}"
        );
        assets += 1;
    }
    assert!(assets >= 2, "index.html names no script and style: {body}");
    let (status, _, _) = get(&fvd, "/assets/nothing-here.js", "");
    assert_eq!(status, 404);
    // POST / is still XML-RPC.
    let c = fvd.root();
    assert!(matches!(c.ok("VM.get_all", &[]), Value::Array(_)));
}

#[test]
fn the_console_websocket_refuses_bad_requests_clearly() {
    let dir = TempDir::new("web-ws");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let vm = c.tiny_vm("ws", "echo");
    let uuid = c.field("VM", &vm, "uuid").as_str().unwrap().to_owned();
    let session = c.session.clone().unwrap();
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    // No session, and a session that is not one.
    let (status, _, body) = get(&fvd, &format!("/console/{uuid}"), upgrade);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get(
        &fvd,
        &format!("/console/{uuid}?session_id=OpaqueRef:nope"),
        upgrade,
    );
    assert_eq!(status, 401, "{body}");
    // No such VM, and something that is not a uuid at all.
    let q = format!("session_id={session}");
    let (status, _, body) = get(
        &fvd,
        &format!("/console/00000000-0000-0000-0000-000000000000?{q}"),
        upgrade,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no VM"), "{body}");
    let (status, _, body) = get(&fvd, &format!("/console/..%2F..%2Fetc?{q}"), upgrade);
    assert_eq!(status, 404, "{body}");
    // A halted VM has no console.
    let (status, _, body) = get(&fvd, &format!("/console/{uuid}?{q}"), upgrade);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("Halted"), "{body}");

    // Running: a plain GET is told it is a WebSocket; an upgrade is switched and greeted.
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let (status, _, body) = get(&fvd, &format!("/console/{uuid}?{q}"), "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("WebSocket"), "{body}");
    // A read-only session may watch but not type.
    let mut viewer = fvd.client();
    c.ok(
        "user.create_local",
        &[s("viewer"), s("viewer-password"), s("read-only")],
    );
    viewer.login("viewer", "viewer-password").unwrap();
    let viewer_q = format!("session_id={}", viewer.session.as_deref().unwrap());
    let (_, hello) = open_ws(&fvd, &format!("/console/{uuid}?{viewer_q}"), upgrade);
    assert!(hello.contains("\"writable\":false"), "{hello}");
    let (mut ws, hello) = open_ws(&fvd, &format!("/console/{uuid}?{q}"), upgrade);
    assert!(hello.contains("\"writable\":true"), "{hello}");
    let mut buf = [0u8; 4096];
    // Typing: one masked binary frame; the echo guest answers in capitals.
    let payload = b"abc";
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).unwrap();
    // The guest answers a byte at a time, each in a frame of its own.
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&payloads(&out)).contains("ABC") {
        let n = ws.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no echo from the guest ({e}): {:?}\nfvd's log:\n{}",
                String::from_utf8_lossy(&out),
                fvd.log()
            )
        });
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    // The VM stops: the WebSocket is closed with the reason, and fvd is still there.
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    let mut rest = Vec::new();
    let _ = ws.read_to_end(&mut rest);
    assert!(
        String::from_utf8_lossy(&rest).contains("the console ended"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(c.power_state(&vm), "Halted");
}

/// The browser tests: Debian's Chromium, driven by Playwright, against this fvd.
#[test]
fn the_browser_tests_pass() {
    let web = web_dir();
    assert!(
        web.join("node_modules/@playwright/test").exists() && web.join("dist/index.html").exists(),
        "{} has no node_modules or dist: run scripts/build-web.sh (scripts/install-deps.sh does)",
        web.display()
    );
    let chromium = std::env::var("FV_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/install-deps.sh installs Debian's chromium"
    );
    let dir = TempDir::new("web");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    c.tiny_vm("echo-vm", "echo");
    let broken = c.tiny_vm("broken-vm", "echo");
    c.ok(
        "VM.set_PV_kernel",
        &[s(&broken), s("/nonexistent/ferrovisor-test-kernel")],
    );
    // A VM with a disk, for the snapshot tests, and one with none, for the storage tests.
    let snap_vm = c.tiny_vm("snap-vm", "echo");
    let sr = match c.ok("SR.get_by_name_label", &[s("Local storage")]) {
        Value::Array(srs) => srs[0].as_str().unwrap().to_owned(),
        other => panic!("no Local storage SR: {other:?}"),
    };
    // A 1 GiB disk for `vm`.
    let add_disk = |vm: &str, name: &str| {
        let vdi = c.ok(
            "VDI.create",
            &[record(&[
                ("name_label", s(name)),
                ("SR", s(&sr)),
                ("virtual_size", Value::Int(1 << 30)),
                ("type", s("system")),
            ])],
        );
        c.ok(
            "VBD.create",
            &[record(&[
                ("VM", s(vm)),
                ("VDI", vdi),
                ("userdevice", s("0")),
                ("mode", s("RW")),
                ("type", s("Disk")),
            ])],
        );
    };
    add_disk(&snap_vm, "snap-vm root");
    c.tiny_vm("disk-vm", "echo");
    // A VM with a NIC, for the performance graphs.
    let perf_vm = c.tiny_vm("perf-vm", "echo");
    let network = match c.ok("network.get_by_name_label", &[s("Host internal network")]) {
        Value::Array(n) => n[0].clone(),
        other => panic!("no host internal network: {other:?}"),
    };
    c.ok(
        "VIF.create",
        &[record(&[
            ("VM", s(&perf_vm)),
            ("network", network),
            ("device", s("0")),
            ("MAC", s("")),
            ("MTU", Value::Int(1500)),
        ])],
    );
    // For the Networking tab, a VM without NICs; for the network view, a network that a
    // VM's NIC uses (so that destroying it is refused).
    c.tiny_vm("nic-vm", "echo");
    let lan_vm = c.tiny_vm("lan-vm", "echo");
    let busy_net = c.ok(
        "network.create",
        &[record(&[
            ("name_label", s("busy-net")),
            ("MTU", Value::Int(1500)),
        ])],
    );
    c.ok(
        "VIF.create",
        &[record(&[
            ("VM", s(&lan_vm)),
            ("network", busy_net),
            ("device", s("0")),
            ("MAC", s("")),
            ("MTU", Value::Int(1500)),
        ])],
    );
    // Templates for the New VM wizard: one bare, one with a disk (as the ready template).
    let template = c.tiny_vm("echo-template", "echo");
    c.ok("VM.set_is_a_template", &[s(&template), Value::Bool(true)]);
    let disk_template = c.tiny_vm("disk-template", "echo");
    add_disk(&disk_template, "disk-template root");
    c.ok(
        "VM.set_is_a_template",
        &[s(&disk_template), Value::Bool(true)],
    );
    c.ok(
        "user.create_local",
        &[s("viewer"), s("viewer-password"), s("read-only")],
    );

    let artifacts = web.join("test-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    // The browser runs in fvd's network namespace, where fvd's TCP address is.
    let npx = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", fvd.pid()))
        .args(["npx", "--no-install", "playwright", "test"])
        // E.g. FV_PLAYWRIGHT_ARGS="--grep console" to run some of them.
        .args(
            std::env::var("FV_PLAYWRIGHT_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .current_dir(&web)
        .env("FV_URL", &fvd.tcp)
        .env("FV_ROOT_PASSWORD", ROOT_PASSWORD)
        .env("FV_READONLY_USER", "viewer")
        .env("FV_READONLY_PASSWORD", "viewer-password")
        .env("FV_ARTIFACTS", &artifacts)
        .env("FV_CHROMIUM", &chromium)
        .env("CI", "1")
        .status()
        .expect("run npx playwright test");
    assert!(
        npx.success(),
        "the browser tests failed (screenshots in {}); fvd's log:\n{}",
        artifacts.display(),
        fvd.log()
    );
}
