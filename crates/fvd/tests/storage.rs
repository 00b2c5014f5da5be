//! VDIs on the default file SR through the API (fv-sr underneath): thin qcow2 creation (a
//! 16 TiB VDI included), snapshot and clone copy-on-write, copy with a task's progress,
//! growth, destroy with the chain coalesced; the data checked at every step, every image
//! checked by `qemu-img check`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use fv_rpc::Value;

struct Sr<'a> {
    c: &'a Client,
    dir: PathBuf,
    sr: String,
}

impl<'a> Sr<'a> {
    /// The pool's default SR of `fvd`, spoken to through `c`.
    fn default_of(c: &'a Client, fvd: &Fvd) -> Sr<'a> {
        let Value::Array(pools) = c.ok("pool.get_all", &[]) else {
            panic!("pool.get_all")
        };
        let sr = c.field("pool", pools[0].as_str().unwrap(), "default_SR");
        let sr = sr.as_str().unwrap().to_owned();
        let uuid = c.field("SR", &sr, "uuid");
        Sr {
            c,
            dir: fvd.data.join("sr").join(uuid.as_str().unwrap()),
            sr,
        }
    }

    fn create(&self, name: &str, size: i64) -> String {
        let rec = record(&[
            ("name_label", s(name)),
            ("SR", s(&self.sr)),
            ("virtual_size", Value::Int(size)),
            ("type", s("user")),
            ("sharable", Value::Bool(false)),
            ("read_only", Value::Bool(false)),
            ("other_config", Value::Struct(BTreeMap::new())),
        ]);
        self.c.ok("VDI.create", &[rec]).as_str().unwrap().to_owned()
    }

    fn file(&self, vdi: &str) -> PathBuf {
        let location = self.c.field("VDI", vdi, "location");
        self.dir.join(location.as_str().unwrap())
    }

    fn write(&self, vdi: &str, offset: u64, data: &[u8]) {
        let disk = fv_disk::open_disk(&self.file(vdi), Some(fv_disk::Format::Qcow2), false)
            .expect("open the VDI");
        disk.write_at(data, offset).expect("write");
        disk.flush().expect("flush");
    }

    fn read(&self, vdi: &str, offset: u64, len: usize) -> Vec<u8> {
        let disk = fv_disk::open_disk(&self.file(vdi), Some(fv_disk::Format::Qcow2), true)
            .expect("open the VDI");
        let mut buf = vec![0u8; len];
        disk.read_at(&mut buf, offset).expect("read");
        buf
    }

    /// Every VDI file of the SR (base copies included) passes `qemu-img check`.
    fn check_all(&self) {
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".qcow2") || name.starts_with('.') {
                continue;
            }
            let out = std::process::Command::new("qemu-img")
                .arg("check")
                .arg(entry.path())
                .output()
                .expect("qemu-img");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    fn managed(&self) -> usize {
        let Value::Array(vdis) = self.c.field("SR", &self.sr, "VDIs") else {
            panic!()
        };
        vdis.len()
    }
}

/// Waits until no coalescing task is pending (it runs in the background after a destroy or
/// a halt): twice in a row 100 ms apart, so that one just starting is seen.
fn wait_for_coalescing(c: &Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut quiet = 0;
    while quiet < 2 {
        let Value::Struct(tasks) = c.ok("task.get_all_records", &[]) else {
            panic!()
        };
        let busy = tasks.values().any(|t| {
            let Value::Struct(t) = t else { return false };
            let name = t.get("name_label").and_then(Value::as_str).unwrap_or("");
            name.starts_with("Coalescing") && t.get("status") == Some(&s("pending"))
        });
        quiet = if busy { 0 } else { quiet + 1 };
        assert!(
            std::time::Instant::now() < deadline,
            "coalescing never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn vdis_snapshot_clone_copy_resize_and_destroy() {
    let dir = TempDir::new("storage");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let sr = Sr::default_of(&c, &fvd);

    // Thin: a 16 TiB VDI takes a few MiB, and a write at 15 TiB reads back.
    let huge = sr.create("huge", 16 << 40);
    assert_eq!(
        c.field("VDI", &huge, "virtual_size").as_int(),
        Some(16 << 40)
    );
    let far = (15u64 << 40) + 4096;
    sr.write(&huge, far, b"far away");
    assert_eq!(sr.read(&huge, far, 8), b"far away");
    let on_disk = std::fs::metadata(sr.file(&huge)).unwrap().len();
    assert!(on_disk < 64 << 20, "a thin VDI's file is {on_disk} bytes");

    // A snapshot keeps the data as it was; the VDI carries on.
    let vdi = sr.create("disk", 8 << 20);
    let before = pattern(1 << 20, 1);
    sr.write(&vdi, 0, &before);
    let snap = c.ok("VDI.snapshot", &[s(&vdi), Value::Struct(BTreeMap::new())]);
    let snap = snap.as_str().unwrap().to_owned();
    assert_eq!(c.field("VDI", &snap, "is_a_snapshot"), Value::Bool(true));
    assert_eq!(c.field("VDI", &snap, "snapshot_of"), s(&vdi));
    let after = pattern(1 << 20, 2);
    sr.write(&vdi, 0, &after);
    assert!(sr.read(&snap, 0, 1 << 20) == before, "the snapshot changed");
    assert!(sr.read(&vdi, 0, 1 << 20) == after);
    // A clone is its own disk from the same point.
    let clone = c.ok("VDI.clone", &[s(&vdi), Value::Struct(BTreeMap::new())]);
    let clone = clone.as_str().unwrap().to_owned();
    sr.write(&clone, 0, b"clone's own");
    assert_eq!(sr.read(&clone, 0, 11), b"clone's own");
    assert!(sr.read(&vdi, 0, 1 << 20) == after);

    // A copy, as a task with progress.
    let task = c.ok("Async.VDI.copy", &[s(&vdi), s(&sr.sr)]);
    let task = task.as_str().unwrap().to_owned();
    while c.field("task", &task, "status") == s("pending") {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(c.field("task", &task, "status"), s("success"));
    assert_eq!(c.field("task", &task, "progress"), Value::Float(1.0));
    let result = c.field("task", &task, "result");
    let copy = result
        .as_str()
        .unwrap()
        .trim_start_matches("<value>")
        .trim_end_matches("</value>")
        .to_owned();
    assert!(
        sr.read(&copy, 0, 1 << 20) == after,
        "the copy holds the data"
    );

    // Growth, not shrinking.
    c.ok("VDI.resize", &[s(&vdi), Value::Int(16 << 20)]);
    assert_eq!(
        c.field("VDI", &vdi, "virtual_size").as_int(),
        Some(16 << 20)
    );
    assert_eq!(
        c.err("VDI.resize", &[s(&vdi), Value::Int(1 << 20)]).code,
        "OPERATION_NOT_ALLOWED"
    );
    sr.check_all();

    // Destroying the snapshot and the clone leaves the chain short again: their base
    // copies go, the VDI's data stays.
    let with_bases = sr.managed();
    c.ok("VDI.destroy", &[s(&snap)]);
    wait_for_coalescing(&c);
    c.ok("VDI.destroy", &[s(&clone)]);
    wait_for_coalescing(&c);
    assert!(sr.read(&vdi, 0, 1 << 20) == after, "coalescing lost data");
    assert!(
        sr.managed() <= with_bases - 4,
        "the snapshot, the clone and their base copies should be gone: {} of {with_bases}",
        sr.managed()
    );
    let files = std::fs::read_dir(&sr.dir).unwrap().count();
    sr.check_all();
    for v in [&vdi, &copy, &huge] {
        c.ok("VDI.destroy", &[s(v)]);
        wait_for_coalescing(&c);
    }
    assert_eq!(sr.managed(), 0, "every record gone");
    let left: Vec<String> = std::fs::read_dir(&sr.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?} (of {files})");
}

/// fv-vmm's view of a running VM's disks (`GET /vm` on its API socket).
fn vmm_disks(fvd: &Fvd, c: &Client, vm: &str) -> Vec<serde_json::Value> {
    vmm_devices(fvd, c, vm)
        .into_iter()
        .filter(|d| d["kind"] == "virtio-blk")
        .collect()
}

/// A running VM's disk is held in its fv-vmm while fv-sr replaces or grows the file, and
/// reopened after: snapshots and clones hold the data as it was, the VM carries on from the
/// VDI's own file, and a grown disk shows its new size to the guest at once.
#[test]
fn a_running_vms_disk_is_held_while_it_is_snapshotted_and_grown() {
    let dir = TempDir::new("inuse");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let sr = Sr::default_of(&c, &fvd);
    let vm = c.tiny_vm("busy", "spin");
    let vdi = sr.create("d", 1 << 20);
    let data = pattern(1 << 20, 3);
    sr.write(&vdi, 0, &data);
    c.attach_disk(&vm, &vdi, "0", false);
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let file = sr.file(&vdi).display().to_string();
    let mut made = Vec::new();
    for call in ["VDI.snapshot", "VDI.clone"] {
        let new = c.ok(call, &[s(&vdi), Value::Struct(BTreeMap::new())]);
        made.push(new.as_str().unwrap().to_owned());
        let disks = vmm_disks(&fvd, &c, &vm);
        assert_eq!(
            disks[0]["path"], file,
            "{call}: the VM serves the VDI's own file"
        );
        assert_eq!(disks[0]["paused"], false, "{call}: the disk was released");
    }
    // Grown while running: fv-vmm reopened it and the guest sees the new size.
    c.ok("VDI.resize", &[s(&vdi), Value::Int(3 << 20)]);
    assert_eq!(vmm_disks(&fvd, &c, &vm)[0]["size"], 3 << 20);
    assert_eq!(c.field("VDI", &vdi, "virtual_size").as_int(), Some(3 << 20));
    // A failed change leaves the disk running on its file: shrinking is refused.
    assert_eq!(
        c.err("VDI.resize", &[s(&vdi), Value::Int(1 << 20)]).code,
        "OPERATION_NOT_ALLOWED"
    );
    assert_eq!(vmm_disks(&fvd, &c, &vm)[0]["paused"], false);
    assert_eq!(c.err("VDI.destroy", &[s(&vdi)]).code, "VDI_IN_USE");
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    for v in &made {
        assert!(
            sr.read(v, 0, 1 << 20) == data,
            "{v} holds the data as it was"
        );
    }
    assert!(sr.read(&vdi, 0, 1 << 20) == data);
    sr.check_all();
}

#[test]
fn vm_snapshot_and_revert() {
    let dir = TempDir::new("revert");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let sr = Sr::default_of(&c, &fvd);
    let vm = c.tiny_vm("reverting", "spin");
    let vdi = sr.create("root", 4 << 20);
    c.attach_disk(&vm, &vdi, "0", true);
    let first = pattern(1 << 20, 7);
    sr.write(&vdi, 0, &first);
    c.ok("VM.set_VCPUs_max", &[s(&vm), Value::Int(2)]);

    // Taken while the VM runs (paused here): its disks are held for the moment.
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    let snap = c.ok("VM.snapshot", &[s(&vm), s("before the change")]);
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    let snap = snap.as_str().unwrap().to_owned();
    assert_eq!(c.field("VM", &snap, "is_a_snapshot"), Value::Bool(true));
    assert_eq!(c.field("VM", &snap, "is_a_template"), Value::Bool(true));
    assert_eq!(c.field("VM", &snap, "snapshot_of"), s(&vm));
    let Value::Array(snaps) = c.field("VM", &vm, "snapshots") else {
        panic!()
    };
    assert_eq!(snaps, [s(&snap)]);

    // Change the disk and a setting, then revert.
    let second = pattern(1 << 20, 9);
    sr.write(&vdi, 0, &second);
    c.ok("VM.set_VCPUs_at_startup", &[s(&vm), Value::Int(2)]);
    c.ok("VM.revert", &[s(&snap)]);
    let Value::Array(vbds) = c.field("VM", &vm, "VBDs") else {
        panic!()
    };
    let disk = c.field("VBD", vbds[0].as_str().unwrap(), "VDI");
    let disk = disk.as_str().unwrap().to_owned();
    assert_ne!(disk, vdi, "the VM has a fresh disk");
    assert!(sr.read(&disk, 0, 1 << 20) == first, "the disk is as it was");
    assert_eq!(c.err("VDI.get_record", &[s(&vdi)]).code, "HANDLE_INVALID");
    assert_eq!(c.field("VM", &vm, "VCPUs_at_startup").as_int(), Some(1));
    // The snapshot is still there, and reverting twice works.
    c.ok("VM.revert", &[s(&snap)]);
    wait_for_coalescing(&c);
    sr.check_all();
    // A VM is not a snapshot to revert to.
    assert_eq!(c.err("VM.revert", &[s(&vm)]).code, "OPERATION_NOT_ALLOWED");
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    c.ok("VM.hard_shutdown", &[s(&vm)]);
}

#[test]
fn srs_are_created_scanned_forgotten_and_destroyed() {
    let dir = TempDir::new("srs");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let host = hosts[0].clone();
    let extra_dir = dir.0.join("extra-sr");
    let create = |config: Value, ty: &str| {
        c.call(
            "SR.create",
            &[
                host.clone(),
                config,
                Value::Int(0),
                s("extra"),
                s("a second file SR"),
                s(ty),
                s("user"),
                Value::Bool(false),
                Value::Struct(BTreeMap::new()),
            ],
        )
    };
    let path = |p: &std::path::Path| record(&[("path", s(p.to_str().unwrap()))]);
    assert_eq!(
        create(path(&extra_dir), "lvm").unwrap_err().code,
        "OPERATION_NOT_ALLOWED"
    );
    let sr = create(path(&extra_dir), "ext").expect("SR.create");
    let sr = sr.as_str().unwrap().to_owned();
    assert!(c.field("SR", &sr, "physical_size").as_int().unwrap() > 0);
    let Value::Array(pbds) = c.field("SR", &sr, "PBDs") else {
        panic!()
    };
    assert_eq!(
        c.field("PBD", pbds[0].as_str().unwrap(), "currently_attached"),
        Value::Bool(true)
    );

    // A VDI made there counts in its virtual allocation.
    let vdi = c.ok(
        "VDI.create",
        &[record(&[
            ("name_label", s("v")),
            ("SR", s(&sr)),
            ("virtual_size", Value::Int(64 << 20)),
            ("type", s("user")),
        ])],
    );
    assert_eq!(
        c.field("SR", &sr, "virtual_allocation").as_int(),
        Some(64 << 20)
    );

    // An image put there by hand is found by a scan; a file gone is marked missing.
    let found_uuid = "0f0f0f0f-1111-4222-8333-444455556666";
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(extra_dir.join(format!("{found_uuid}.qcow2")))
        .arg("8M")
        .status()
        .expect("qemu-img");
    assert!(made.success());
    let location = c.field("VDI", vdi.as_str().unwrap(), "location");
    std::fs::remove_file(extra_dir.join(location.as_str().unwrap())).unwrap();
    c.ok("SR.scan", &[s(&sr)]);
    let found = c.ok("VDI.get_by_uuid", &[s(found_uuid)]);
    assert_eq!(
        c.field("VDI", found.as_str().unwrap(), "virtual_size")
            .as_int(),
        Some(8 << 20)
    );
    assert_eq!(
        c.field("VDI", vdi.as_str().unwrap(), "missing"),
        Value::Bool(true)
    );

    // Forget keeps the files; the SR comes back with a create on the same path and a scan.
    c.ok("SR.forget", &[s(&sr)]);
    assert_eq!(c.err("SR.get_record", &[s(&sr)]).code, "HANDLE_INVALID");
    assert!(extra_dir.join(format!("{found_uuid}.qcow2")).exists());
    let again = create(path(&extra_dir), "ext").expect("SR.create again");
    let again = again.as_str().unwrap().to_owned();
    c.ok("SR.scan", &[s(&again)]);
    c.ok("VDI.get_by_uuid", &[s(found_uuid)]);
    // Destroy removes its VDIs' files (the directory was given, so it stays).
    c.ok("SR.destroy", &[s(&again)]);
    assert!(!extra_dir.join(format!("{found_uuid}.qcow2")).exists());
    assert_eq!(
        c.err("VDI.get_by_uuid", &[s(found_uuid)]).code,
        "UUID_INVALID"
    );
}

/// The base copies of the SR (VDIs with managed = false).
fn base_copies(c: &Client, sr: &str) -> usize {
    let Value::Array(vdis) = c.field("SR", sr, "VDIs") else {
        panic!()
    };
    vdis.iter()
        .filter(|v| c.field("VDI", v.as_str().unwrap(), "managed") == Value::Bool(false))
        .count()
}

#[test]
fn a_chain_under_a_running_vm_is_shortened_when_it_halts() {
    let dir = TempDir::new("coalesce");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let sr = Sr::default_of(&c, &fvd);
    let vm = c.tiny_vm("user", "spin");
    let vdi = sr.create("d", 1 << 20);
    c.attach_disk(&vm, &vdi, "0", false);
    let snap = c.ok("VDI.snapshot", &[s(&vdi), Value::Struct(BTreeMap::new())]);
    assert_eq!(base_copies(&c, &sr.sr), 1);
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    // The snapshot goes; its base would merge into the VM's disk, which the VM uses: wait.
    c.ok("VDI.destroy", &[snap]);
    wait_for_coalescing(&c);
    assert_eq!(base_copies(&c, &sr.sr), 1, "merged under a running VM");
    let Value::Struct(tasks) = c.ok("task.get_all_records", &[]) else {
        panic!()
    };
    let told = tasks.values().any(|t| {
        let Value::Struct(t) = t else { return false };
        format!("{:?}", t.get("error_info")).contains("resumes when the VM halts")
    });
    assert!(told, "no task says why the chain waits: {tasks:?}");
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    wait_for_coalescing(&c);
    assert_eq!(
        base_copies(&c, &sr.sr),
        0,
        "the chain was not shortened after the halt"
    );
}

/// fvd killed between holding a running VM's disk and reopening it (the hold done by hand
/// here, as the dead fvd would have): the restarted fvd reopens it, and the guest's disk
/// serves again.
#[test]
fn a_disk_left_held_by_a_killed_fvd_is_reopened() {
    let dir = TempDir::new("held");
    let data_dir = dir.0.join("data");
    let fvd = Fvd::start(&data_dir);
    let c = fvd.root();
    let sr = Sr::default_of(&c, &fvd);
    let vm = c.tiny_vm("held", "spin");
    let vdi = sr.create("d", 1 << 20);
    c.attach_disk(&vm, &vdi, "0", false);
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let uuid = c.field("VM", &vm, "uuid");
    let socket = data_dir
        .join("vms")
        .join(uuid.as_str().unwrap())
        .join("api.sock");
    let (status, _) =
        fv_vmmctl::http_request(&socket, "PUT", "/vm/disks/blk0/pause", None).unwrap();
    assert_eq!(status, 204);
    assert_eq!(vmm_disks(&fvd, &c, &vm)[0]["paused"], true);
    drop(sr);
    drop(c);
    fvd.kill9();
    let fvd = Fvd::start(&data_dir);
    let c = fvd.root();
    assert_eq!(c.power_state(&vm), "Running", "adopted");
    assert_eq!(vmm_disks(&fvd, &c, &vm)[0]["paused"], false, "reopened");
    c.ok("VM.hard_shutdown", &[s(&vm)]);
}

/// fvd killed (SIGKILL) while it coalesces a deleted snapshot's data into the VDI after it:
/// the restarted fvd recovers the SR, finishes the coalesce, and the chain is shorter with
/// the data intact and every file passing `qemu-img check`.
#[test]
fn coalesce_interrupted_by_a_kill_finishes_after_restart() {
    let dir = TempDir::new("killcoal");
    let data_dir = dir.0.join("data");
    let mut fvd = Fvd::start(&data_dir);
    let c = fvd.root();
    let sr = Sr::default_of(&c, &fvd);
    let sr_dir = sr.dir.clone();
    let len = 192 << 20;
    let vdi = sr.create("big", len as i64);
    let first = pattern(len, 5);
    sr.write(&vdi, 0, &first);
    let temp_files = || {
        std::fs::read_dir(&sr_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    // The coalesce copies the base's data into a new file built under a `.tmp` name: kill
    // fvd once that file is there. A fast machine may finish first: try again then.
    let mut caught = false;
    let mut rounds = 0;
    for round in 0..5u8 {
        rounds += 1;
        let snap = c.ok("VDI.snapshot", &[s(&vdi), Value::Struct(BTreeMap::new())]);
        // Some new data on top, so the chain has something on both sides.
        sr.write(&vdi, 4096 * u64::from(round), &pattern(4096, round));
        c.ok("VDI.destroy", &[snap]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline && !temp_files() {
            if fv_disk::qcow2_info(&sr.file(&vdi))
                .unwrap()
                .backing
                .is_none()
            {
                break;
            }
        }
        if temp_files() {
            caught = true;
            break;
        }
        wait_for_coalescing(&c);
    }
    assert!(
        caught,
        "the coalesce never ran long enough to be interrupted"
    );
    let mut expected = first;
    for round in 0..rounds {
        let at = 4096 * usize::from(round);
        expected[at..at + 4096].copy_from_slice(&pattern(4096, round));
    }
    let sr_name = sr.sr.clone();
    drop(sr);
    drop(c);
    fvd.kill9();
    fvd = Fvd::start(&data_dir);
    let c = fvd.root();
    let sr = Sr {
        c: &c,
        dir: sr_dir.clone(),
        sr: sr_name,
    };
    wait_for_coalescing(&c);
    let info = fv_disk::qcow2_info(&sr.file(&vdi)).unwrap();
    assert!(
        info.backing.is_none(),
        "the chain is one image again: {info:?}"
    );
    assert!(!temp_files(), "temporary files left");
    // Only the VDI is left, and it holds everything written.
    assert_eq!(sr.managed(), 1);
    let got = sr.read(&vdi, 0, expected.len());
    assert!(got == expected[..got.len()], "the data changed");
    sr.check_all();
}

/// The devices fv-vmm lists for running VM `vm` (`GET /vm` on its API socket).
fn vmm_devices(fvd: &Fvd, c: &Client, vm: &str) -> Vec<serde_json::Value> {
    let uuid = c.field("VM", vm, "uuid");
    let socket = fvd
        .data
        .join("vms")
        .join(uuid.as_str().unwrap())
        .join("api.sock");
    let (status, body) = fv_vmmctl::http_request(&socket, "GET", "/vm", None).expect("GET /vm");
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    info["devices"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_iso_library_gives_read_only_cds() {
    let dir = TempDir::new("iso");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let lib = dir.0.join("isos");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("install.iso"), pattern(1 << 20, 3)).unwrap();
    std::fs::write(lib.join("tools.iso"), pattern(64 << 10, 5)).unwrap();
    std::fs::write(lib.join("README"), b"not an ISO").unwrap();
    let create = |config: &[(&str, &str)]| {
        c.call(
            "SR.create",
            &[
                hosts[0].clone(),
                Value::Struct(config.iter().map(|(k, v)| (k.to_string(), s(v))).collect()),
                Value::Int(0),
                s("ISOs"),
                s(""),
                s("iso"),
                s("iso"),
                Value::Bool(false),
                Value::Struct(BTreeMap::new()),
            ],
        )
    };
    // Without a location, or a relative one, nothing is made.
    let srs_before = c.ok("SR.get_all", &[]);
    assert_eq!(create(&[]).unwrap_err().code, "OPERATION_NOT_ALLOWED");
    assert_eq!(
        create(&[("location", "isos")]).unwrap_err().code,
        "INVALID_VALUE"
    );
    assert_eq!(c.ok("SR.get_all", &[]), srs_before);

    let sr = create(&[("location", lib.to_str().unwrap())]).expect("SR.create iso");
    let sr = sr.as_str().unwrap().to_owned();
    let vdis = |c: &Client| -> BTreeMap<String, String> {
        let Value::Array(vdis) = c.field("SR", &sr, "VDIs") else {
            panic!()
        };
        vdis.iter()
            .map(|v| {
                let v = v.as_str().unwrap().to_owned();
                let name = c
                    .field("VDI", &v, "name_label")
                    .as_str()
                    .unwrap()
                    .to_owned();
                (name, v)
            })
            .collect()
    };
    let found = vdis(&c);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["install.iso", "tools.iso"]
    );
    let install = found["install.iso"].clone();
    assert_eq!(c.field("VDI", &install, "location"), s("install.iso"));
    assert_eq!(
        c.field("VDI", &install, "virtual_size").as_int(),
        Some(1 << 20)
    );
    assert_eq!(c.field("VDI", &install, "read_only"), Value::Bool(true));

    // Nothing is made, changed or removed in a library.
    let rec = record(&[
        ("name_label", s("new")),
        ("SR", s(&sr)),
        ("virtual_size", Value::Int(1 << 20)),
        ("type", s("user")),
    ]);
    assert_eq!(
        c.err("VDI.create", &[rec]).code,
        "SR_OPERATION_NOT_SUPPORTED"
    );
    let no_params = Value::Struct(BTreeMap::new());
    for call in ["VDI.snapshot", "VDI.clone"] {
        assert_eq!(
            c.err(call, &[s(&install), no_params.clone()]).code,
            "SR_OPERATION_NOT_SUPPORTED",
            "{call}"
        );
    }
    assert_eq!(
        c.err("VDI.resize", &[s(&install), Value::Int(2 << 20)])
            .code,
        "SR_OPERATION_NOT_SUPPORTED"
    );
    assert_eq!(
        c.err("VDI.destroy", &[s(&install)]).code,
        "SR_OPERATION_NOT_SUPPORTED"
    );
    assert_eq!(
        c.err("SR.destroy", &[s(&sr)]).code,
        "SR_OPERATION_NOT_SUPPORTED"
    );
    assert_eq!(vdis(&c).len(), 2);

    // A CD drive with the ISO, and an empty one: two read-only raw disks for fv-vmm, the
    // empty one of no size.
    let vm = c.tiny_vm("cd", "spin");
    let vbd = |device: &str, vdi: &str, empty: bool| {
        let v = c.ok(
            "VBD.create",
            &[record(&[
                ("VM", s(&vm)),
                ("VDI", s(vdi)),
                ("userdevice", s(device)),
                ("bootable", Value::Bool(false)),
                ("mode", s("RO")),
                ("type", s("CD")),
                ("empty", Value::Bool(empty)),
            ])],
        );
        v.as_str().unwrap().to_owned()
    };
    let cd = vbd("0", &install, false);
    let empty_cd = vbd("1", "OpaqueRef:NULL", true);
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let drives = |c: &Client| -> Vec<serde_json::Value> {
        vmm_devices(&fvd, c, &vm)
            .into_iter()
            .filter(|d| d["kind"] == "virtio-blk")
            .collect()
    };
    let iso_len = |name: &str| std::fs::metadata(lib.join(name)).unwrap().len();
    let disks = drives(&c);
    assert_eq!(disks.len(), 2, "{disks:?}");
    assert!(disks.iter().all(|d| d["readonly"] == true), "{disks:?}");
    assert_eq!(
        disks[0]["path"].as_str(),
        lib.join("install.iso").to_str(),
        "{disks:?}"
    );
    assert_eq!(disks[0]["size"], iso_len("install.iso"), "{disks:?}");
    assert_eq!(disks[1]["size"], 0, "the empty drive: {disks:?}");

    // Media changed while the VM runs: fv-vmm swaps the drive's image.
    assert_eq!(c.err("VBD.eject", &[s(&empty_cd)]).code, "VBD_IS_EMPTY");
    let tools = found["tools.iso"].clone();
    assert_eq!(
        c.err("VBD.insert", &[s(&cd), s(&tools)]).code,
        "VBD_NOT_EMPTY"
    );
    c.ok("VBD.eject", &[s(&cd)]);
    assert_eq!(c.field("VBD", &cd, "empty"), Value::Bool(true));
    assert_eq!(drives(&c)[0]["size"], 0, "ejected");
    c.ok("VBD.insert", &[s(&empty_cd), s(&tools)]);
    assert_eq!(c.field("VBD", &empty_cd, "VDI"), s(&tools));
    let disks = drives(&c);
    assert_eq!(
        disks[1]["path"].as_str(),
        lib.join("tools.iso").to_str(),
        "{disks:?}"
    );
    assert_eq!(disks[1]["size"], iso_len("tools.iso"));
    c.ok("VM.hard_shutdown", &[s(&vm)]);

    // And on the halted VM; the next start has the media as they were left.
    c.ok("VBD.insert", &[s(&cd), s(&install)]);
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let disks = drives(&c);
    assert_eq!(
        disks[0]["path"].as_str(),
        lib.join("install.iso").to_str(),
        "{disks:?}"
    );
    assert_eq!(
        disks[1]["path"].as_str(),
        lib.join("tools.iso").to_str(),
        "{disks:?}"
    );
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    c.ok("VBD.eject", &[s(&cd)]);

    // A file removed and one added: the scan follows; the drive that held it is empty.
    std::fs::remove_file(lib.join("tools.iso")).unwrap();
    std::fs::write(lib.join("new.iso"), b"x").unwrap();
    c.ok("SR.scan", &[s(&sr)]);
    assert_eq!(
        vdis(&c).keys().collect::<Vec<_>>(),
        ["install.iso", "new.iso"]
    );
    assert_eq!(c.err("VDI.get_record", &[s(&tools)]).code, "HANDLE_INVALID");
    assert_eq!(c.field("VBD", &empty_cd, "empty"), Value::Bool(true));

    // An ISO copies into a file SR, data intact.
    let Value::Array(pools) = c.ok("pool.get_all", &[]) else {
        panic!()
    };
    let local = c.field("pool", pools[0].as_str().unwrap(), "default_SR");
    let copy = c.ok("VDI.copy", &[s(&install), local.clone()]);
    let copy = copy.as_str().unwrap().to_owned();
    let local_dir = fvd.data.join("sr").join(
        c.field("SR", local.as_str().unwrap(), "uuid")
            .as_str()
            .unwrap(),
    );
    let file = local_dir.join(c.field("VDI", &copy, "location").as_str().unwrap());
    let disk = fv_disk::open_disk(&file, Some(fv_disk::Format::Qcow2), true).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    disk.read_at(&mut buf, 0).unwrap();
    assert!(buf == pattern(1 << 20, 3), "the copy holds the ISO's data");

    // Forget leaves the files.
    c.ok("SR.forget", &[s(&sr)]);
    assert!(lib.join("install.iso").exists());
}

/// A positive NFS test needs an NFS server (kernel nfsd), which runs in the emulated host:
/// `sr_types::nfs_sr_on_a_kernel_nfs_server`. Here: what fails fails clearly, and nothing
/// is recorded or left mounted.
#[test]
fn an_nfs_sr_that_cannot_be_mounted_is_not_made() {
    let dir = TempDir::new("nfs-down");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let create = |config: &[(&str, &str)]| {
        c.call(
            "SR.create",
            &[
                hosts[0].clone(),
                Value::Struct(config.iter().map(|(k, v)| (k.to_string(), s(v))).collect()),
                Value::Int(0),
                s("nfs"),
                s(""),
                s("nfs"),
                s("user"),
                Value::Bool(true),
                Value::Struct(BTreeMap::new()),
            ],
        )
    };
    let before = c.ok("SR.get_all", &[]);
    assert_eq!(
        create(&[("server", "127.0.0.1")]).unwrap_err().code,
        "OPERATION_NOT_ALLOWED"
    );
    assert_eq!(
        create(&[("server", "-oremount"), ("serverpath", "/x")])
            .unwrap_err()
            .code,
        "INVALID_VALUE"
    );
    // Nothing listens on 127.0.0.1:2049 in fvd's network namespace.
    let err = create(&[("server", "127.0.0.1"), ("serverpath", "/exports/sr")]).unwrap_err();
    assert_eq!(err.code, "SR_BACKEND_FAILURE_73", "{err:?}");
    assert!(
        err.params.iter().any(|p| p.contains("NFS mount error")),
        "{err:?}"
    );
    assert_eq!(c.ok("SR.get_all", &[]), before);
    let left: Vec<_> = std::fs::read_dir(fvd.data.join("sr-mount"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "mount points left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(fvd.data.to_str().unwrap()), "{mounts}");
}

/// Sets to 0, in `image`'s own refcount blocks, the refcount of the cluster holding its
/// first L2 table: what a fv-vmm killed right after imago allocated that table leaves (the
/// L1 entry written, the refcount still in imago's cache). Returns that cluster's offset.
fn forget_first_l2_refcount(image: &std::path::Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let be64 = |at: u64| {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, at).unwrap();
        u64::from_be_bytes(b)
    };
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, 20).unwrap();
    let cluster_bits = u32::from_be_bytes(b);
    file.read_exact_at(&mut b, 96).unwrap();
    assert_eq!(
        u32::from_be_bytes(b),
        4,
        "16-bit refcounts, qemu-img's default"
    );
    const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
    let l2 = be64(be64(40)) & OFFSET_MASK;
    assert_ne!(l2, 0, "the image has an L2 table");
    let cluster = l2 >> cluster_bits;
    let per_block = (1u64 << cluster_bits) / 2;
    let block = be64(be64(48) + 8 * (cluster / per_block)) & OFFSET_MASK;
    file.write_all_at(&[0, 0], block + 2 * (cluster % per_block))
        .unwrap();
    l2
}

fn qemu_img_check(image: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new("qemu-img")
        .arg("check")
        .arg(image)
        .output()
        .expect("qemu-img");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// fv-vmm killed (SIGKILL) while its VM runs: it cannot write imago's cached qcow2
/// metadata, and may leave an L2 table that its refcounts call free. fvd mends the VM's
/// writable qcow2 images (`qemu-img check -r all`) before it records the VM halted: the
/// image passes `qemu-img check` again, with the guest-visible data unchanged.
#[test]
fn a_killed_vmms_qcow2_disk_is_mended_before_the_vm_is_halted() {
    let dir = TempDir::new("killvmm");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let sr = Sr::default_of(&c, &fvd);
    let vm = c.tiny_vm("killed", "spin");
    let len = 2 << 20;
    let vdi = sr.create("d", len as i64);
    let data = pattern(len, 9);
    sr.write(&vdi, 0, &data);
    c.attach_disk(&vm, &vdi, "0", false);
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let image = sr.file(&vdi);
    let l2 = forget_first_l2_refcount(&image);
    let (code, report) = qemu_img_check(&image);
    assert_eq!(code, Some(2), "the test's damage is seen: {report}");

    let pid = c.field("VM", &vm, "domid").as_int().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    c.wait_power_state(&vm, "Halted");

    let (code, report) = qemu_img_check(&image);
    assert_eq!(
        code,
        Some(0),
        "the L2 table at {l2:#x} is not mended: {report}"
    );
    assert!(sr.read(&vdi, 0, len) == data, "the disk's data changed");
    c.assert_vm_message("VM_CRASHED", &vm);
}
