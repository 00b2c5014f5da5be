//! The guest-service devices (virtio console, vsock, balloon) with the tiny guests: they
//! appear on the PCI bus, the balloon API answers, the sockets go away at exit, and bad
//! settings are refused in one line. Their use by a Linux guest is tested in
//! `linux_guests.rs` (the emulated host). Seccomp is on throughout.

mod common;

use std::os::unix::net::UnixListener;

use common::{guest, run, TempDir, Vmm};

fn assert_no_panic(vmm: &Vmm) {
    let err = vmm.stderr();
    assert!(!err.contains("panicked"), "{}", vmm.describe());
}

#[test]
fn pci_scan_finds_console_vsock_and_balloon_after_the_rng() {
    let dir = TempDir::new("svcscan");
    let console = format!("socket={}", dir.join("hvc").display());
    let vsock = format!("cid=3,socket={}", dir.join("v").display());
    let mut vmm = Vmm::boot(
        &guest("pci_scan"),
        &[
            "--balloon",
            "--vsock",
            &vsock,
            "--rng",
            "--console",
            &console,
        ],
    );
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    let lines: Vec<String> = vmm
        .stdout()
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| l.starts_with("pci ") || l.starts_with("virtio "))
        .collect();
    assert_eq!(
        lines,
        [
            "pci 00:00.0 1b36:0008 class 060000",
            "pci 00:01.0 1af4:1044 class ff0000",
            "virtio 00:01.0 num_queues 1",
            "pci 00:02.0 1af4:1043 class 078000",
            "virtio 00:02.0 num_queues 2",
            "pci 00:03.0 1af4:1053 class 078000",
            "virtio 00:03.0 num_queues 3",
            "pci 00:04.0 1af4:1045 class ff0000",
            "virtio 00:04.0 num_queues 3",
        ],
        "{}",
        vmm.describe()
    );
    assert_no_panic(&vmm);
    // The guest powered off: both sockets are gone.
    assert!(!dir.join("hvc").exists() && !dir.join("v").exists());
}

#[test]
fn balloon_api_then_stop_removes_the_sockets() {
    let dir = TempDir::new("svcapi");
    let sock = dir.join("api.sock");
    let hvc = dir.join("hvc");
    let vsock = dir.join("v.sock");
    // A stale socket file (nobody listens) is replaced.
    drop(UnixListener::bind(&vsock).unwrap());
    let mut vmm = Vmm::boot(
        &guest("park"),
        &[
            "--api-socket",
            sock.to_str().unwrap(),
            "--console",
            &format!("socket={}", hvc.display()),
            "--vsock",
            &format!("cid=42,socket={}", vsock.display()),
            "--balloon",
            "stats_interval=1,deflate_on_oom=on",
        ],
    );
    vmm.wait_for_output("ready");
    let api = vmm.api();
    assert_eq!(
        api.vm()["devices"],
        serde_json::json!([
            {"id": "console", "kind": "virtio-console", "pci": "0000:00:01.0"},
            {"id": "vsock", "kind": "virtio-vsock", "pci": "0000:00:02.0"},
            {"id": "balloon", "kind": "virtio-balloon", "pci": "0000:00:03.0"}
        ])
    );
    let r = api.get("/vm/balloon");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        serde_json::json!({"target_mib": 0, "target_pages": 0, "actual_mib": 0,
            "actual_pages": 0, "deflate_on_oom": true, "stats_interval_s": 1, "stats": null})
    );
    let r = api.request("PUT", "/vm/balloon", Some(r#"{"target_mib": 48}"#));
    assert_eq!(r.status, 204, "{r:?}");
    let b = api.get("/vm/balloon").json();
    assert_eq!(
        (&b["target_mib"], &b["target_pages"]),
        (&48.into(), &12288.into())
    );
    // The tiny guest has no balloon driver: nothing is taken yet.
    assert_eq!(b["actual_pages"], 0);
    let r = api.request("PUT", "/vm/balloon", Some(r#"{"target_mib": 65}"#));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("64 MiB"), "{r:?}");
    let r = api.request("PUT", "/vm/balloon", Some(r#"{"target_mib": "all"}"#));
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(api.get("/vm/balloon").json()["target_mib"], 48);
    // A reset in place resets the three devices on the main thread (seccomp on); the
    // target stays for the next boot's driver.
    assert_eq!(api.put("/vm/reset").status, 204);
    vmm.wait_for_output_n("ready", 2, common::VM_TIMEOUT);
    assert_eq!(api.get("/vm/balloon").json()["target_mib"], 48);

    assert!(hvc.exists() && vsock.exists());
    assert_eq!(api.put("/vm/stop").status, 204);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
    assert!(!hvc.exists(), "the console socket is left behind");
    assert!(!vsock.exists(), "the vsock socket is left behind");
}

#[test]
fn no_balloon_is_a_conflict() {
    let dir = TempDir::new("svcnob");
    let sock = dir.join("api.sock");
    let mut vmm = Vmm::boot(&guest("park"), &["--api-socket", sock.to_str().unwrap()]);
    vmm.wait_for_output("ready");
    let api = vmm.api();
    for r in [
        api.get("/vm/balloon"),
        api.request("PUT", "/vm/balloon", Some(r#"{"target_mib": 1}"#)),
    ] {
        assert_eq!(r.status, 409, "{r:?}");
        assert!(r.body.contains("no balloon"), "{r:?}");
    }
    assert_eq!(api.put("/vm/stop").status, 204);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
}

/// fv-vmm exits 1 with one line on stderr that mentions `mention`, and runs no guest.
fn expect_error(args: &[&str], mention: &str) {
    let hello = guest("hello").display().to_string();
    let mut all = vec!["--kernel", hello.as_str(), "--memory", "64"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    let ctx = format!(
        "fv-vmm {}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        all.join(" ")
    );
    assert_eq!(code, 1, "{ctx}");
    assert!(!err.contains("panicked"), "{ctx}");
    assert_eq!(err.trim().lines().count(), 1, "{ctx}");
    assert!(
        err.contains(mention),
        "stderr does not mention {mention:?}\n{ctx}"
    );
    assert!(!out.contains("hello from ferrovisor"), "guest ran\n{ctx}");
}

#[test]
fn bad_settings_are_refused_in_one_line() {
    let dir = TempDir::new("svcbad");
    let file = dir.join("plain-file");
    std::fs::write(&file, "keep me").unwrap();
    let on_file = format!("cid=3,socket={}", file.display());
    expect_error(&["--vsock", &on_file], "exists and is not a socket");
    expect_error(
        &["--console", &format!("socket={}", file.display())],
        "exists and is not a socket",
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    let live = dir.join("live.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    expect_error(
        &["--vsock", &format!("cid=3,socket={}", live.display())],
        "another process listens there",
    );
    let nowhere = dir.join("no/such/dir/hvc");
    expect_error(
        &["--console", &format!("socket={}", nowhere.display())],
        "cannot listen there",
    );
    expect_error(&["--vsock", "cid=2,socket=/tmp/x"], "--vsock");
    expect_error(&["--vsock", "cid=3"], "socket= is required");
    expect_error(&["--console", "path=/tmp/x"], "unknown key");
    expect_error(&["--balloon", "stats_interval=fast"], "stats_interval=");
    expect_error(&["--balloon", "deflate_on_oom=yes"], "deflate_on_oom=");
    let same = format!("socket={}", dir.join("same").display());
    let same_vsock = format!("cid=3,{same}");
    expect_error(
        &["--console", &same, "--vsock", &same_vsock],
        "--console listens on this socket already",
    );
    // Nothing was left behind by the refused runs.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["live.sock", "plain-file"]);
}
