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
        .arg(&fvd.url)
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
