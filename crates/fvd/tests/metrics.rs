//! Metrics through a real fvd: a VM spinning on its vCPU shows up busy in `/rrd_updates`
//! (XML and JSON) and `/metrics`, only for callers with a session or a password (or on
//! the local socket), and the archives survive an fvd restart.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use fv_rpc::Value;

/// Samples every 200 ms instead of 5 s (the archives keep their 5-s rows).
fn fast_sampling() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("FVD_SAMPLE_INTERVAL_MS", "200"));
}

fn exchange<S: Read + Write>(mut stream: S, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: fvd\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A GET over fvd's TCP listener, which only its network namespace reaches (with curl).
fn get_tcp(fvd: &Fvd, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let base = if fvd.tcp.contains("://") {
        fvd.tcp.clone()
    } else {
        format!("http://{}", fvd.tcp)
    };
    let url = format!("{base}{path}");
    let mut args: Vec<String> = ["curl", "-s", "-m", "60", "-w", "\n%{http_code}"]
        .map(String::from)
        .to_vec();
    for (k, v) in headers {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args.push(url);
    let out = fvd.in_netns(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// A GET on fvd's local socket.
fn get(fvd: &Fvd, path: &str) -> (u16, String) {
    let stream = UnixStream::connect(&fvd.socket).expect("connect to the socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    exchange(stream, path, &[])
}

/// An `/rrd_updates` XML document: its legend and its rows (time, values as text).
struct Xport {
    legend: Vec<String>,
    rows: Vec<(i64, Vec<String>)>,
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    s.split(open)
        .skip(1)
        .filter_map(|p| p.split_once(close).map(|(v, _)| v))
        .collect()
}

fn parse_xport(xml: &str) -> Xport {
    assert!(xml.starts_with("<?xml"), "not XML: {xml}");
    Xport {
        legend: between(xml, "<entry>", "</entry>")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        rows: between(xml, "<row>", "</row>")
            .into_iter()
            .map(|row| {
                let t = between(row, "<t>", "</t>")[0].parse().expect("row time");
                let vs = between(row, "<v>", "</v>")
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                (t, vs)
            })
            .collect(),
    }
}

impl Xport {
    /// The known values of column `entry`, newest first, with their times.
    fn column(&self, entry: &str) -> Vec<(i64, f64)> {
        let Some(i) = self.legend.iter().position(|e| e == entry) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .filter_map(|(t, vs)| Some((*t, vs.get(i)?.parse::<f64>().ok()?)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn updates(fvd: &Fvd, session: &str, extra: &str) -> Xport {
    let start = now() - 600;
    let (status, body) = get(
        fvd,
        &format!("/rrd_updates?start={start}&cf=AVERAGE&session_id={session}{extra}"),
    );
    assert_eq!(status, 200, "{body}\n{}", fvd.log());
    parse_xport(&body)
}

/// Waits until column `entry` has a known value over `min`.
fn wait_busy(fvd: &Fvd, session: &str, entry: &str, min: f64) -> Xport {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let x = updates(fvd, session, "&host=true");
        if x.column(entry).iter().any(|(_, v)| *v > min) {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "{entry} never went over {min}: legend {:?}, values {:?}\n{}",
            x.legend,
            x.column(entry),
            fvd.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_spinning_vm_is_busy_in_the_archives_which_survive_a_restart() {
    fast_sampling();
    let dir = TempDir::new("metrics");
    let data = dir.0.join("data");
    // A damaged archive file is logged and replaced, not fatal.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("rrds.bin"), b"FVRRDSET garbage").unwrap();
    let fvd = Fvd::start(&data);
    assert!(fvd.log().contains("cannot load"), "{}", fvd.log());
    let c = fvd.root();
    let session = c.session.clone().unwrap();
    let vm = c.tiny_vm("spinner", "spin");
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let uuid = c.field("VM", &vm, "uuid").as_str().unwrap().to_owned();
    let cpu0 = format!("AVERAGE:vm:{uuid}:cpu0");

    // The vCPU spins: its figure is close to one CPU.
    let x = wait_busy(&fvd, &session, &cpu0, 0.5);
    assert!(
        x.column(&cpu0).iter().all(|(_, v)| (0.0..=1.0).contains(v)),
        "{:?}",
        x.column(&cpu0)
    );
    for ds in ["cpu_usage", "memory", "vmm_cpu", "vmm_rss"] {
        let e = format!("AVERAGE:vm:{uuid}:{ds}");
        assert!(x.legend.contains(&e), "{e} missing: {:?}", x.legend);
    }
    let memory = x.column(&format!("AVERAGE:vm:{uuid}:memory"));
    assert!(
        memory
            .iter()
            .any(|(_, m)| (m / (64 << 20) as f64 - 1.0).abs() < 1e-4),
        "{memory:?}"
    );
    for ds in [
        "cpu_avg",
        "cpu0",
        "memory_total_kib",
        "memory_free_kib",
        "loadavg",
    ] {
        assert!(
            x.legend
                .iter()
                .any(|e| e.starts_with("AVERAGE:host:") && e.ends_with(&format!(":{ds}"))),
            "host {ds} missing: {:?}",
            x.legend
        );
    }
    // Without host=true, no host columns.
    let x = updates(&fvd, &session, "");
    assert!(
        !x.legend.iter().any(|e| e.contains(":host:")),
        "{:?}",
        x.legend
    );

    // JSON, the same content.
    let (status, body) = get(
        &fvd,
        &format!(
            "/rrd_updates?start={}&session_id={session}&host=true&json=true",
            now() - 600
        ),
    );
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        json["meta"]["legend"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == cpu0.as_str()),
        "{body}"
    );
    assert!(!json["data"].as_array().unwrap().is_empty(), "{body}");

    // VM_metrics follows the vCPU (written when it moves).
    let metrics = c.field("VM", &vm, "metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let u = c.field("VM_metrics", metrics.as_str().unwrap(), "VCPUs_utilisation");
        let busy = match &u {
            Value::Struct(m) => m.get("0").and_then(|v| match v {
                Value::Float(f) => Some(*f),
                _ => None,
            }),
            _ => None,
        };
        if busy.is_some_and(|b| b > 0.5) {
            break;
        }
        assert!(Instant::now() < deadline, "VCPUs_utilisation: {u:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // host_metrics is kept current too.
    let host = c.ok("host.get_all", &[]);
    let host = match &host {
        Value::Array(h) => h[0].as_str().unwrap().to_owned(),
        other => panic!("{other:?}"),
    };
    let host_metrics = c.field("host", &host, "metrics");
    let updated = c.field(
        "host_metrics",
        host_metrics.as_str().unwrap(),
        "last_updated",
    );
    assert!(
        matches!(&updated, Value::DateTime(t) if !t.starts_with("1970")),
        "{updated:?}"
    );

    // Prometheus text: with a session, a password, or on the local socket.
    let series = format!("fv_vm_cpu_usage_ratio{{uuid=\"{uuid}\",cpu=\"0\"}}");
    let (status, body) = get_tcp(&fvd, &format!("/metrics?session_id={session}"), &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&series), "{body}");
    let basic = "Basic cm9vdDpmdmQtdGVzdC1yb290"; // root:fvd-test-root
    assert_eq!(basic.len(), "Basic ".len() + 24);
    let (status, body) = get_tcp(&fvd, "/metrics", &[("Authorization", basic)]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&series), "{body}");
    let (status, body) = get(&fvd, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&series), "{body}");

    // Refused without valid credentials; bad queries are 400, empty selections 404.
    for (path, headers) in [
        ("/metrics", vec![]),
        ("/metrics?session_id=OpaqueRef:nope", vec![]),
        (
            "/metrics",
            vec![("Authorization", "Basic cm9vdDp3cm9uZw==")],
        ),
        ("/rrd_updates?start=0", vec![]),
        ("/rrd_updates?start=0&session_id=OpaqueRef:nope", vec![]),
    ] {
        let (status, body) = get_tcp(&fvd, path, &headers);
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, _) = get(&fvd, "/rrd_updates?start=0");
    assert_eq!(status, 401, "rrd_updates needs a session even locally");
    let (status, body) = get(&fvd, &format!("/rrd_updates?session_id={session}"));
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(&fvd, &format!("/rrd_updates?start=x&session_id={session}"));
    assert_eq!(status, 400, "{body}");
    let (status, body) = get(
        &fvd,
        &format!("/rrd_updates?start=0&vm_uuid=none&session_id={session}"),
    );
    assert_eq!(status, 404, "{body}");

    // A clean stop saves the archives; the next fvd serves the rows from before.
    let before = updates(&fvd, &session, "").column(&cpu0);
    let newest = before.iter().map(|(t, _)| *t).max().unwrap();
    let pid = fvd.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(i64::from(pid)) {
        assert!(Instant::now() < deadline, "fvd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(fvd);
    assert!(data.join("rrds.bin").exists());
    let fvd = Fvd::start(&data);
    assert!(fvd.log().contains("loaded"), "{}", fvd.log());
    let c = fvd.root();
    let session = c.session.clone().unwrap();
    let after = updates(&fvd, &session, "").column(&cpu0);
    let kept: Vec<_> = after.iter().filter(|(t, _)| *t <= newest).collect();
    assert!(
        kept.iter().any(|(_, v)| *v > 0.5),
        "rows from before the restart are gone: before {before:?}, after {after:?}"
    );
    // And sampling carries on for the adopted VM.
    wait_busy(&fvd, &session, &cpu0, 0.5);
    c.ok("VM.hard_shutdown", &[s(&vm)]);
}
