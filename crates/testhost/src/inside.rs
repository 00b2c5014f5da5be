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
