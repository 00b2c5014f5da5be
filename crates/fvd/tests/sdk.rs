//! The official XenAPI Python SDK (PyPI `xenapi`), unmodified, drives a real fvd: log in,
//! list, create, start, pause, unpause, shut down and destroy a VM (a tiny guest on this
//! host's KVM), following the changes with `event.from`.

mod common;

use common::*;

#[test]
fn the_xenapi_python_sdk_drives_a_vm_lifecycle() {
    let dir = TempDir::new("sdk");
    let fvd = Fvd::start(&dir.0.join("data"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_lifecycle.py");
    let out = std::process::Command::new(python())
        .arg(&script)
        .arg(fvd.sdk_url())
        .arg(ROOT_PASSWORD)
        .arg(tiny_guest("spin"))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("SDK-LIFECYCLE-OK"),
        "the SDK script failed:\n{stdout}\n{stderr}\nfvd:\n{}",
        fvd.log()
    );
    println!("{stdout}");
}

/// Over HTTPS with the certificate fvd made at its first start: the SDK (told to accept a
/// self-signed certificate, as one does for a fresh XenServer host) logs in and lists.
#[test]
fn the_sdk_logs_in_over_https() {
    let dir = TempDir::new("tls");
    let fvd = Fvd::start_with(&dir.0.join("data"), true);
    assert!(fvd.tcp.starts_with("https://127.0.0.1:"), "{}", fvd.tcp);
    let cert = std::fs::read_to_string(dir.0.join("data/fvd-cert.pem")).expect("certificate");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    let script = format!(
        "import XenAPI\n\
         s = XenAPI.Session({:?}, ignore_ssl=True)\n\
         s.xenapi.login_with_password('root', {ROOT_PASSWORD:?}, '1.0', 'tls-test')\n\
         print('HOSTS', len(s.xenapi.host.get_all()))\n",
        fvd.tcp
    );
    let out = fvd.in_netns(&[python().to_str().unwrap(), "-c", &script]);
    assert!(out.contains("HOSTS 1"), "{out:?}\nfvd:\n{}", fvd.log());
}
