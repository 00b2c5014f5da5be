//! fv-vmm as fvd runs it, through `fv_vmmctl`: started in a run directory, found again by
//! a supervisor that did not start it, watched through a pidfd, told why it ended by its
//! exit file. Tiny guests on this host's KVM.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{fv_vmm, guest, TempDir};
use fv_vmmctl::{Error, Exit, RunDir, Vmm};
use serde_json::json;

/// The fv-vmm JSON config for tiny guest `name`.
fn config(name: &str) -> serde_json::Value {
    json!({ "kernel": guest(name), "memory_mib": 64 })
}

fn launch(dir: &TempDir, name: &str, paused: bool) -> Vmm {
    Vmm::launch(
        RunDir::new(dir.join("vm")),
        &fv_vmm(),
        &config(name),
        paused,
    )
    .unwrap_or_else(|e| panic!("launch {name}: {e}"))
}

fn wait(vmm: &mut Vmm) -> Exit {
    vmm.wait(Some(Duration::from_secs(30)))
        .unwrap()
        .unwrap_or_else(|| panic!("fv-vmm {} did not end", vmm.pid()))
}

#[test]
fn a_paused_start_then_serial_output_and_a_poweroff() {
    let dir = TempDir::new("sup-hello");
    let mut vmm = launch(&dir, "hello", true);
    assert_eq!(vmm.info().unwrap()["state"], "Paused");
    let mut serial = UnixStream::connect(vmm.dir().serial_socket()).unwrap();
    serial
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        vmm.wait(Some(Duration::ZERO)).unwrap(),
        None,
        "still running"
    );
    vmm.resume().unwrap();
    let mut out = Vec::new();
    if let Err(e) = serial.read_to_end(&mut out) {
        panic!(
            "reading the serial console: {e} (got {:?})",
            String::from_utf8_lossy(&out)
        );
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("hello from ferrovisor\n"), "{out:?}");
    assert_eq!(wait(&mut vmm), Exit::PowerOff);
    // The same answer again, and the run directory says so too.
    assert_eq!(wait(&mut vmm), Exit::PowerOff);
    assert_eq!(vmm.dir().last_exit(), Exit::PowerOff);
}

#[test]
fn a_restarted_supervisor_adopts_a_running_vmm() {
    let dir = TempDir::new("sup-adopt");
    let first = launch(&dir, "spin", false);
    let pid = first.pid();
    // The supervisor goes away; the VMM runs on.
    drop(first);
    let mut vmm = Vmm::adopt(RunDir::new(dir.join("vm")))
        .unwrap()
        .expect("the VMM is still running");
    assert_eq!(vmm.pid(), pid);
    assert_eq!(vmm.info().unwrap()["state"], "Running");
    vmm.pause().unwrap();
    let err = vmm.pause().unwrap_err();
    assert!(
        matches!(&err, Error::Refused { status: 400, message, .. } if message.contains("already paused")),
        "{err}"
    );
    vmm.stop().unwrap();
    assert_eq!(wait(&mut vmm), Exit::PowerOff);
    // Once it has ended there is nothing to adopt, and the run directory says why.
    let rundir = RunDir::new(dir.join("vm"));
    assert!(Vmm::adopt(rundir.clone()).unwrap().is_none());
    assert_eq!(rundir.last_exit(), Exit::PowerOff);
}

#[test]
fn a_vmm_whose_pid_file_was_never_written_is_found_by_its_socket() {
    let dir = TempDir::new("sup-nopid");
    let first = launch(&dir, "spin", false);
    let pid = first.pid();
    drop(first);
    // The supervisor died between starting fv-vmm and recording it.
    std::fs::remove_file(dir.join("vm").join("pid")).unwrap();
    let mut vmm = Vmm::adopt(RunDir::new(dir.join("vm")))
        .unwrap()
        .expect("found through its API socket");
    assert_eq!(vmm.pid(), pid);
    vmm.stop().unwrap();
    assert_eq!(wait(&mut vmm), Exit::PowerOff);
}

#[test]
fn a_pid_file_naming_another_process_is_not_adopted() {
    let dir = TempDir::new("sup-recycled");
    let rundir = RunDir::new(dir.join("vm"));
    std::fs::create_dir_all(rundir.path()).unwrap();
    // Our own pid with a start time that is not ours: a recycled pid.
    std::fs::write(
        rundir.path().join("pid"),
        format!("{} 1\n", std::process::id()),
    )
    .unwrap();
    assert!(Vmm::adopt(rundir.clone()).unwrap().is_none());
    std::fs::write(rundir.path().join("pid"), "not a pid").unwrap();
    assert!(Vmm::adopt(rundir).unwrap().is_none());
}

#[test]
fn crashes_kills_and_failed_starts_are_told_apart() {
    let dir = TempDir::new("sup-exits");
    let mut vmm = launch(&dir, "triple_fault", false);
    assert!(matches!(wait(&mut vmm), Exit::Crash(why) if why.contains("triple fault")));

    let mut vmm = launch(&dir, "spin", false);
    vmm.kill().unwrap();
    assert_eq!(
        wait(&mut vmm),
        Exit::Killed("fv-vmm was killed by signal 9".into())
    );

    let bad = json!({ "kernel": dir.join("no-such-kernel"), "memory_mib": 64 });
    let err = Vmm::launch(RunDir::new(dir.join("vm")), &fv_vmm(), &bad, false).unwrap_err();
    assert!(
        matches!(&err, Error::StartFailed(why) if why.contains("no-such-kernel")),
        "{err}"
    );
}
