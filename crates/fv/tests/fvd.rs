//! The `fv` binary against a real fvd process: the local socket, plain HTTP, HTTPS with
//! each way of trusting fvd's self-signed certificate, and VM lifecycle commands with a
//! tiny guest booted by a real fv-vmm.
//!
//! fvd and fv-vmm are other packages' binaries, which Cargo does not build for this
//! package's tests (`CARGO_BIN_EXE_*` exists only for the package's own binaries). They
//! are looked for beside this test's target directory, i.e. `target/<profile>/fvd`
//! (the test executable is `target/<profile>/deps/fvd-HASH`). Build them first, with the
//! same CARGO_TARGET_DIR:
//!
//!     cargo build -p fvd -p fv-vmm && cargo test -p fv
//!
//! Without fvd the tests fail saying so; without fv-vmm or /dev/kvm only the lifecycle
//! test is skipped, saying why.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fv_in_netns;

const ROOT_PASSWORD: &str = "fvd-test-root";

/// `target/<profile>/NAME`.
fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target directory")
}

fn fvd_binary() -> PathBuf {
    let p = sibling_binary("fvd");
    assert!(
        p.is_file(),
        "fvd is not built at {}: run `cargo build -p fvd` (same CARGO_TARGET_DIR) before `cargo test -p fv`",
        p.display()
    );
    p
}

/// A running fvd on a temp data dir, killed on drop.
struct Fvd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Fvd {
    fn start(insecure_http: bool) -> Fvd {
        let dir = tempfile::Builder::new()
            .prefix("fvt-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // A free port: bind, read, release (a race with other tests is unlikely).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        // In a network namespace of its own: the bridge fvd makes for its host-internal
        // network, and any taps, go away with it instead of staying on the host.
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(fvd_binary())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--socket")
        .arg(dir.path().join("fvd.sock"))
        .env("FV_ROOT_PASSWORD", ROOT_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("fvd.log")).expect("log"));
        if insecure_http {
            cmd.arg("--insecure-http");
        }
        let child = cmd.spawn().expect("spawn fvd");
        let mut f = Fvd { child, dir, port };
        let t0 = Instant::now();
        while !(f.socket().exists() && f.log().contains("fvd ready")) {
            if let Ok(Some(status)) = f.child.try_wait() {
                panic!("fvd exited with {status}: {}", f.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "fvd did not start: {}",
                f.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        f
    }

    /// Runs fv in fvd's network namespace, where its TCP port is.
    fn fv(&self, conn: &[String], args: &[&str]) -> common::Ran {
        fv_in_netns(self.child.id(), conn, args)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("fvd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fvd.log")).unwrap_or_default()
    }

    fn local(&self) -> Vec<String> {
        vec![
            "--socket".into(),
            self.socket().display().to_string(),
            "-pw".into(),
            ROOT_PASSWORD.into(),
        ]
    }

    fn tcp(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "-s",
            "localhost",
            "-p",
            &self.port.to_string(),
            "-u",
            "root",
            "-pw",
            ROOT_PASSWORD,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

impl Drop for Fvd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SHA-256 of the first certificate in a PEM file, as `AA:BB:...`.
fn pem_fingerprint(path: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let der = CertificateDer::pem_file_iter(path)
        .expect("pem")
        .next()
        .expect("a certificate")
        .expect("pem");
    fv::tls::show_fingerprint(&fv::tls::sha256(der.as_ref()))
}

#[test]
fn socket_and_https_with_each_trust() {
    let fvd = Fvd::start(false);
    let host = fvd
        .fv(&fvd.local(), &["host-list", "--minimal"])
        .ok()
        .to_owned();
    assert_eq!(host.len(), 36, "one host: {host}");
    let pool = fvd
        .fv(&fvd.local(), &["pool-list", "params=master", "--json"])
        .ok()
        .to_owned();
    assert!(
        pool.contains(&host),
        "pool.master shown as the host's uuid: {pool}"
    );

    // HTTPS, certificate unknown: refused, with the fingerprint to pin.
    let cert = fvd.dir.path().join("fvd-cert.pem");
    let fp = pem_fingerprint(&cert);
    let out = fvd.fv(&fvd.tcp(&[]), &["host-list", "--minimal"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&fp), "{}", out.stderr);
    // Pinned: accepted.
    assert_eq!(
        fvd.fv(
            &fvd.tcp(&["--fingerprint", &fp]),
            &["host-list", "--minimal"]
        )
        .ok(),
        host
    );
    // A wrong pin: refused.
    let wrong = "00:".repeat(31) + "00";
    let out = fvd.fv(&fvd.tcp(&["--fingerprint", &wrong]), &["host-list"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("--fingerprint"), "{}", out.stderr);
    // fvd's certificate as the CA file, for the name it was made for.
    let ca = cert.display().to_string();
    assert_eq!(
        fvd.fv(&fvd.tcp(&["--cafile", &ca]), &["host-list", "--minimal"])
            .ok(),
        host
    );
    // --no-verify works, and warns.
    let out = fvd.fv(&fvd.tcp(&["--no-verify"]), &["host-list", "--minimal"]);
    assert_eq!(out.ok(), host);
    assert!(out.stderr.contains("warning"), "{}", out.stderr);
    // JSON-RPC over HTTPS too.
    assert_eq!(
        fvd.fv(
            &fvd.tcp(&["--fingerprint", &fp, "--jsonrpc"]),
            &["host-list", "--minimal"]
        )
        .ok(),
        host
    );
}

#[test]
fn params_and_derived_commands_against_fvd() {
    let fvd = Fvd::start(true);
    let c = fvd.tcp(&["--nossl"]);
    let vm = fvd
        .fv(
            &c,
            &[
                "vm-create",
                "name-label=cli-vm",
                "memory-static-max=67108864",
                "memory-dynamic-max=67108864",
                "memory-dynamic-min=67108864",
                "memory-static-min=67108864",
                "VCPUs-max=1",
                "VCPUs-at-startup=1",
                "other-config:made-by=fv",
            ],
        )
        .ok()
        .to_owned();
    assert_eq!(vm.len(), 36, "{vm}");
    let u = format!("uuid={vm}");
    assert_eq!(
        fvd.fv(&c, &["vm-list", "name-label=cli-vm", "--minimal"])
            .ok(),
        vm
    );
    assert_eq!(
        fvd.fv(
            &c,
            &[
                "vm-param-get",
                &u,
                "param-name=other-config",
                "param-key=made-by"
            ]
        )
        .ok(),
        "fv"
    );
    fvd.fv(
        &c,
        &[
            "vm-param-set",
            &u,
            "name-description=from the CLI",
            "tags=x,y",
        ],
    )
    .ok();
    assert_eq!(
        fvd.fv(&c, &["vm-param-get", &u, "param-name=name-description"])
            .ok(),
        "from the CLI"
    );
    // A custom setter (VM.set_VCPUs_max) through param-set.
    let out = fvd.fv(&c, &["vm-param-set", &u, "VCPUs-max=2"]);
    if out.code == 0 {
        assert_eq!(
            fvd.fv(&c, &["vm-param-get", &u, "param-name=VCPUs-max"])
                .ok(),
            "2"
        );
    } else {
        assert!(out.stderr.contains("The server failed"), "{}", out.stderr);
    }
    let j: serde_json::Value =
        serde_json::from_str(fvd.fv(&c, &["vm-param-list", &u, "--json"]).ok()).expect("json");
    assert_eq!(j["name_label"], "cli-vm");
    assert_eq!(j["power_state"], "Halted");
    // A message the server refuses: its error, explained, exit status 1.
    let out = fvd.fv(&c, &["vm-pause", &u]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("The server failed to handle your request"),
        "{}",
        out.stderr
    );
    // Clone, and destroy the clone.
    let out = fvd.fv(&c, &["vm-clone", &u, "new-name-label=cli-vm-2"]);
    if out.code == 0 {
        let clone = out.ok().to_owned();
        assert_eq!(
            fvd.fv(&c, &["vm-list", "name-label=cli-vm-2", "--minimal"])
                .ok(),
            clone
        );
        fvd.fv(&c, &["vm-destroy", &format!("uuid={clone}")]).ok();
    } else {
        eprintln!("fvd refused vm-clone (not ready?): {}", out.stderr);
    }
    fvd.fv(&c, &["vm-destroy", &u]).ok();
    assert_eq!(
        fvd.fv(&c, &["vm-list", "name-label=cli-vm", "--minimal"])
            .ok(),
        ""
    );
}

#[test]
fn vm_lifecycle_with_a_tiny_guest() {
    if !sibling_binary("fv-vmm").is_file() {
        eprintln!("SKIP: fv-vmm not built beside fvd (cargo build -p fv-vmm)");
        return;
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("SKIP: no usable /dev/kvm");
        return;
    }
    let guests = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fv-guests");
    let park = fv_testhost::build_tiny_guest("park", &guests).expect("build park");
    let hello = fv_testhost::build_tiny_guest("hello", &guests).expect("build hello");
    let fvd = Fvd::start(true);
    let c = fvd.local();
    let mk = |name: &str, kernel: &Path| {
        fvd.fv(
            &c,
            &[
                "vm-create",
                &format!("name-label={name}"),
                &format!("PV-kernel={}", kernel.display()),
                "memory-static-max=67108864",
                "memory-dynamic-max=67108864",
                "memory-dynamic-min=67108864",
                "memory-static-min=67108864",
                "VCPUs-max=1",
                "VCPUs-at-startup=1",
            ],
        )
        .ok()
        .to_owned()
    };
    let vm = mk("parked", &park);
    let u = format!("uuid={vm}");
    fvd.fv(&c, &["vm-start", &u]).ok();
    assert_eq!(
        fvd.fv(&c, &["vm-param-get", &u, "param-name=power-state"])
            .ok(),
        "Running",
        "{}",
        fvd.log()
    );
    fvd.fv(&c, &["event-wait", "class=vm", &u, "power-state=running"])
        .ok();
    fvd.fv(&c, &["vm-pause", &u]).ok();
    assert_eq!(
        fvd.fv(&c, &["vm-param-get", &u, "param-name=power-state"])
            .ok(),
        "Paused"
    );
    fvd.fv(&c, &["vm-unpause", &u]).ok();
    // park has interrupts off: only a hard shutdown stops it.
    fvd.fv(&c, &["vm-shutdown", &u, "--force"]).ok();
    assert_eq!(
        fvd.fv(&c, &["vm-param-get", &u, "param-name=power-state"])
            .ok(),
        "Halted"
    );
    let out = fvd.fv(&c, &["vm-unpause", &u]);
    assert!(out.stderr.contains("VM_BAD_POWER_STATE"), "{}", out.stderr);

    // hello powers itself off: event-wait sees it halt.
    let vm2 = mk("hello", &hello);
    let u2 = format!("uuid={vm2}");
    fvd.fv(&c, &["vm-start", &u2]).ok();
    fvd.fv(&c, &["event-wait", "class=vm", &u2, "power-state=halted"])
        .ok();
    fvd.fv(&c, &["vm-destroy", &u2]).ok();
    fvd.fv(&c, &["vm-destroy", &u]).ok();
}
