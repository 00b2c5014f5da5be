//! Running one test of the calling test binary inside the emulated host: how the Linux
//! guest tests of every crate get to a KVM that boots Linux.

use std::time::Duration;

use crate::{run_with, Artifacts, RunOptions};

/// Runs the test `name` of the current test executable inside the emulated host, with
/// `inside_var=1` and the guest artifacts in `FV_BZIMAGE`, `FV_VMLINUX` and `FV_INITRD`,
/// and prints its output (seen with `--nocapture`). Panics, with that output, unless the
/// test passed there. For use in tests: a test `foo` calls this for its ignored twin
/// `inside_foo`, which returns at once unless `inside_var` is set.
pub fn run_test_inside(inside_var: &str, name: &str) {
    let artifacts = Artifacts::prepare().expect("build the emulated host and guest artifacts");
    let exe = std::env::current_exe().expect("the test executable");
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 paths").to_owned();
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(600)),
        env: vec![
            (inside_var.into(), "1".into()),
            ("FV_BZIMAGE".into(), path(&artifacts.guest_bzimage)),
            ("FV_VMLINUX".into(), path(&artifacts.guest_vmlinux)),
            ("FV_INITRD".into(), path(&artifacts.guest_initrd)),
        ],
        ..RunOptions::default()
    };
    let argv = [
        exe.to_str().expect("UTF-8 path"),
        "--exact",
        name,
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    let out = run_with(&artifacts, &opts, &argv).expect("run the emulated host");
    println!("--- {name} in the emulated host ---\n{}", out.output);
    assert!(
        out.status == 0 && out.output.contains("1 passed"),
        "{name} failed in the emulated host (status {}):\n{}",
        out.status,
        out.output
    );
}

/// Inside the emulated host: loads the storage modules (loop, device-mapper with snapshots,
/// the NFS server and client) that its init leaves unloaded, with `insmod` (Debian `kmod`).
/// Modules already loaded are skipped. The error names the module and says what `insmod`
/// said.
pub fn load_storage_modules() -> Result<(), String> {
    let dir = std::path::Path::new("/run/fv-testhost");
    let list = std::fs::read_to_string(dir.join("storage-modules"))
        .map_err(|e| format!("not in the emulated host? {}: {e}", dir.display()))?;
    let loaded = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    for m in list.split_whitespace() {
        let name = m.trim_end_matches(".ko").replace('-', "_");
        if loaded
            .lines()
            .any(|l| l.split(' ').next() == Some(name.as_str()))
        {
            continue;
        }
        let out = std::process::Command::new("/sbin/insmod")
            .arg(dir.join("modules").join(m))
            .output()
            .map_err(|e| format!("insmod {m}: {e} (Debian package kmod)"))?;
        if !out.status.success() {
            return Err(format!(
                "insmod {m}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}
