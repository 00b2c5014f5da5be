//! SRs on block devices and servers, inside the emulated host (this machine's kernel has no
//! device-mapper; see docs/testhost.md): an `lvm` SR on a loop device (VDIs as LVs, LVM
//! snapshots keeping old data, copies to and from the local file SR, the VG found again
//! after SR.forget + SR.introduce, gone after SR.destroy); an `nfs` SR on the kernel's NFS
//! server (VDIs and snapshots as files on the export, data written through the mount read
//! on the server, unplug/plug, destroy).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fv_rpc::Value;

/// Set inside the emulated host, so that the `inside_*` tests run there and nowhere else.
const INSIDE: &str = "FV_SR_TYPES_INSIDE";

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn read_dev(path: &Path, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

fn write_dev(path: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loop device on a sparse file, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(file: &Path, size_mib: u64) -> Loop {
        let f = std::fs::File::create(file).unwrap();
        f.set_len(size_mib << 20).unwrap();
        Loop(run(Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn vdi_create(c: &Client, sr: &str, name: &str, size: i64) -> String {
    let v = c.ok(
        "VDI.create",
        &[record(&[
            ("name_label", s(name)),
            ("SR", s(sr)),
            ("virtual_size", Value::Int(size)),
            ("type", s("user")),
        ])],
    );
    v.as_str().unwrap().to_owned()
}

fn by_uuid(c: &Client, uuid: &str) -> String {
    c.ok("VDI.get_by_uuid", &[s(uuid)])
        .as_str()
        .unwrap()
        .to_owned()
}

fn field_str(c: &Client, class: &str, r: &str, field: &str) -> String {
    c.field(class, r, field).as_str().unwrap().to_owned()
}

#[test]
fn lvm_sr_on_a_loop_device() {
    // The tiny guest is built here: the emulated host's root is read-only.
    let _ = tiny_guest("spin");
    fv_testhost::run_test_inside(INSIDE, "inside_lvm_sr_on_a_loop_device");
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_lvm_sr_on_a_loop_device() {
    if std::env::var_os(INSIDE).is_none() {
        return;
    }
    fv_testhost::load_storage_modules().expect("load loop and device-mapper");
    let dir = TempDir::new("lvm");
    let dev = Loop::new(&dir.0.join("pv.img"), 256);
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let host = hosts[0].clone();
    let device = record(&[("device", s(&dev.0))]);
    let probe = || {
        c.ok(
            "SR.probe",
            &[host.clone(), device.clone(), s("lvm"), record(&[])],
        )
        .as_str()
        .unwrap()
        .to_owned()
    };
    assert!(!probe().contains("<SR>"), "{}", probe());
    let create = |config: &Value| {
        c.call(
            "SR.create",
            &[
                host.clone(),
                config.clone(),
                Value::Int(0),
                s("lvm"),
                s(""),
                s("lvm"),
                s("user"),
                Value::Bool(false),
                record(&[]),
            ],
        )
    };
    assert_eq!(
        create(&record(&[])).unwrap_err().code,
        "OPERATION_NOT_ALLOWED"
    );
    let not_block = dir.0.join("pv.img");
    assert!(create(&record(&[("device", s(not_block.to_str().unwrap()))])).is_err());
    let sr = create(&device).expect("SR.create lvm");
    let sr = sr.as_str().unwrap().to_owned();
    let sr_uuid = field_str(&c, "SR", &sr, "uuid");
    let vg = format!("VG_Ferrovisor_{sr_uuid}");
    assert!(
        probe().contains(&format!("<UUID>{sr_uuid}</UUID>")),
        "{}",
        probe()
    );
    let size = c.field("SR", &sr, "physical_size").as_int().unwrap();
    assert!(
        size > 200 << 20 && size <= 256 << 20,
        "physical_size {size}"
    );
    // The same device cannot hold a second SR.
    assert!(create(&device).is_err());

    // A VDI is a raw LV of its size.
    let vdi = vdi_create(&c, &sr, "disk", 8 << 20);
    let lv = field_str(&c, "VDI", &vdi, "location");
    assert_eq!(lv, format!("LV-{}", field_str(&c, "VDI", &vdi, "uuid")));
    assert_eq!(c.field("VDI", &vdi, "virtual_size").as_int(), Some(8 << 20));
    let lv_path = PathBuf::from("/dev").join(&vg).join(&lv);
    let a = pattern(8 << 20, 1);
    write_dev(&lv_path, &a);

    // The VM's disk is the LV, raw, writable.
    let guest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests/spin.elf");
    let vm = c
        .ok(
            "VM.create",
            &[record(&[
                ("name_label", s("on lvm")),
                ("PV_kernel", s(guest.to_str().unwrap())),
                ("memory_static_max", Value::Int(64 << 20)),
                ("memory_dynamic_max", Value::Int(64 << 20)),
                ("memory_dynamic_min", Value::Int(64 << 20)),
                ("memory_static_min", Value::Int(64 << 20)),
                ("VCPUs_max", Value::Int(1)),
                ("VCPUs_at_startup", Value::Int(1)),
            ])],
        )
        .as_str()
        .unwrap()
        .to_owned();
    let vbd = c.attach_disk(&vm, &vdi, "0", false);
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    let socket = fvd
        .data
        .join("vms")
        .join(field_str(&c, "VM", &vm, "uuid"))
        .join("api.sock");
    let (status, body) = fv_vmmctl::http_request(&socket, "GET", "/vm", None).expect("GET /vm");
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    let disks: Vec<&serde_json::Value> = info["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "virtio-blk")
        .collect();
    assert_eq!(disks.len(), 1, "{body}");
    assert_eq!(disks[0]["path"].as_str(), lv_path.to_str(), "{body}");
    assert_eq!(disks[0]["readonly"], false, "{body}");
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    c.ok("VBD.destroy", &[vbd]);

    // A snapshot keeps the data as it was while the VDI is overwritten.
    let snap = c
        .ok("VDI.snapshot", &[s(&vdi), record(&[])])
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(c.field("VDI", &snap, "is_a_snapshot"), Value::Bool(true));
    assert_eq!(c.field("VDI", &snap, "snapshot_of"), s(&vdi));
    assert_eq!(c.field("VDI", &snap, "read_only"), Value::Bool(true));
    let snap_path = PathBuf::from("/dev")
        .join(&vg)
        .join(field_str(&c, "VDI", &snap, "location"));
    let b = pattern(8 << 20, 2);
    write_dev(&lv_path, &b);
    assert!(
        read_dev(&snap_path, 8 << 20) == a,
        "the snapshot kept the old data"
    );
    assert!(read_dev(&lv_path, 8 << 20) == b, "the VDI has the new data");

    // LVM's limits answer errors and change nothing.
    assert_eq!(
        c.err("VDI.snapshot", &[s(&snap), record(&[])]).code,
        "SR_OPERATION_NOT_SUPPORTED"
    );
    assert_eq!(c.err("VDI.destroy", &[s(&vdi)]).code, "VDI_IN_USE");
    assert_eq!(
        c.err("VDI.resize", &[s(&vdi), Value::Int(32 << 20)]).code,
        "VDI_IN_USE"
    );
    assert_eq!(
        c.err("VDI.resize", &[s(&vdi), Value::Int(4 << 20)]).code,
        "OPERATION_NOT_ALLOWED"
    );
    assert!(read_dev(&lv_path, 8 << 20) == b);

    // A writable clone; growing a VDI without snapshots.
    let clone = c
        .ok("VDI.clone", &[s(&vdi), record(&[])])
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(c.field("VDI", &clone, "read_only"), Value::Bool(false));
    let grown = vdi_create(&c, &sr, "grown", 8 << 20);
    c.ok("VDI.resize", &[s(&grown), Value::Int(20 << 20)]);
    assert_eq!(
        c.field("VDI", &grown, "virtual_size").as_int(),
        Some(20 << 20)
    );

    // Copies to the local file SR and back hold the same data.
    let Value::Array(pools) = c.ok("pool.get_all", &[]) else {
        panic!()
    };
    let local = field_str(&c, "pool", pools[0].as_str().unwrap(), "default_SR");
    let task = c
        .ok("Async.VDI.copy", &[s(&snap), s(&local)])
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while field_str(&c, "task", &task, "status") == "pending" {
        assert!(std::time::Instant::now() < deadline, "the copy never ended");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(field_str(&c, "task", &task, "status"), "success");
    assert_eq!(c.field("task", &task, "progress"), Value::Float(1.0));
    let result = field_str(&c, "task", &task, "result");
    let on_file = result
        .trim_start_matches("<value>")
        .trim_end_matches("</value>")
        .to_owned();
    let local_dir = fvd
        .data
        .join("sr")
        .join(field_str(&c, "SR", &local, "uuid"));
    let file = local_dir.join(field_str(&c, "VDI", &on_file, "location"));
    let disk = fv_disk::open_disk(&file, Some(fv_disk::Format::Qcow2), true).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    disk.read_at(&mut buf, 0).unwrap();
    assert!(
        buf == a,
        "the copy on the file SR holds the snapshot's data"
    );
    let back = c
        .ok("VDI.copy", &[s(&on_file), s(&sr)])
        .as_str()
        .unwrap()
        .to_owned();
    let back_path = PathBuf::from("/dev")
        .join(&vg)
        .join(field_str(&c, "VDI", &back, "location"));
    assert!(
        read_dev(&back_path, 8 << 20) == a,
        "the copy back holds it too"
    );

    // Forget leaves the VG; introduce + plug find the VDIs again.
    let names: BTreeMap<String, String> = [&vdi, &snap, &clone, &back]
        .iter()
        .map(|v| {
            (
                field_str(&c, "VDI", v, "uuid"),
                field_str(&c, "VDI", v, "location"),
            )
        })
        .collect();
    let vdi_uuid = field_str(&c, "VDI", &vdi, "uuid");
    let snap_uuid = field_str(&c, "VDI", &snap, "uuid");
    let clone_uuid = field_str(&c, "VDI", &clone, "uuid");
    c.ok("SR.forget", &[s(&sr)]);
    assert!(!lv_path.exists(), "the VG is deactivated");
    assert!(probe().contains(&sr_uuid), "{}", probe());
    let again = c
        .ok(
            "SR.introduce",
            &[
                s(&sr_uuid),
                s("lvm again"),
                s(""),
                s("lvm"),
                s("user"),
                Value::Bool(false),
                record(&[]),
            ],
        )
        .as_str()
        .unwrap()
        .to_owned();
    let pbd = c
        .ok(
            "PBD.create",
            &[record(&[
                ("host", host.clone()),
                ("SR", s(&again)),
                ("device_config", device.clone()),
            ])],
        )
        .as_str()
        .unwrap()
        .to_owned();
    c.ok("PBD.plug", &[s(&pbd)]);
    for (uuid, location) in &names {
        let v = by_uuid(&c, uuid);
        assert_eq!(&field_str(&c, "VDI", &v, "location"), location);
    }
    let vdi = by_uuid(&c, &vdi_uuid);
    let snap = by_uuid(&c, &snap_uuid);
    assert_eq!(c.field("VDI", &snap, "is_a_snapshot"), Value::Bool(true));
    assert_eq!(c.field("VDI", &snap, "snapshot_of"), s(&vdi));
    assert!(
        read_dev(&snap_path, 8 << 20) == a,
        "the snapshot's data survived"
    );

    // A reboot of the host leaves the VG inactive; fvd activates it again at its start.
    run(Command::new("lvm")
        .args([
            "vgchange",
            "--config",
            "activation { udev_sync = 0 udev_rules = 0 } devices { use_devicesfile = 0 }",
        ])
        .args(["-an", &vg])
        .env("DM_DISABLE_UDEV", "1"));
    assert!(!snap_path.exists());
    fvd.kill9();
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    assert!(snap_path.exists(), "the VG is active again");
    assert_eq!(
        c.field("PBD", &pbd, "currently_attached"),
        Value::Bool(true)
    );

    // Destroy: the snapshot and the clone first, then the VDI, then the SR with the VG.
    c.ok("VDI.destroy", &[s(&snap)]);
    assert!(!snap_path.exists());
    assert_eq!(
        c.err("VDI.destroy", &[s(&vdi)]).code,
        "VDI_IN_USE",
        "the clone is left"
    );
    c.ok("VDI.destroy", &[s(&by_uuid(&c, &clone_uuid))]);
    c.ok("VDI.destroy", &[s(&vdi)]);
    assert!(!lv_path.exists());
    c.ok("SR.destroy", &[s(&again)]);
    let probed = c.ok(
        "SR.probe",
        &[host.clone(), device.clone(), s("lvm"), record(&[])],
    );
    assert!(!probed.as_str().unwrap().contains("<SR>"), "{probed:?}");
    assert_eq!(
        c.err("VDI.get_by_uuid", &[s(&snap_uuid)]).code,
        "UUID_INVALID"
    );
}

#[test]
fn nfs_sr_on_a_kernel_nfs_server() {
    fv_testhost::run_test_inside(INSIDE, "inside_nfs_sr_on_a_kernel_nfs_server");
}

/// The kernel's NFS server (Debian `nfs-kernel-server`) in fvd's network namespace (nfsd
/// is per namespace; fvd's has only `lo`), exporting `export` to 127.0.0.1, NFS 4 only (no
/// rpcbind). The export is the NFS 4 root (`fsid=0`: the real root, 9p, cannot be
/// exported, nor can a tmpfs without an fsid), so clients mount `127.0.0.1:/`.
/// `/var/lib/nfs` gets a tmpfs: the real root is read-only here. Returns rpc.mountd, to
/// be killed at the end.
fn start_nfs_server(fvd: &Fvd, export: &Path) -> std::process::Child {
    run(Command::new("mount").args(["-t", "tmpfs", "tmpfs", "/var/lib/nfs"]));
    let netns = format!("--net=/proc/{}/ns/net", fvd.pid());
    let script = format!(
        "set -e; mkdir -p /var/lib/nfs/v4recovery; touch /var/lib/nfs/etab; mount -t nfsd nfsd /proc/fs/nfsd; \
         exportfs -o rw,no_root_squash,insecure,no_subtree_check,fsid=0 127.0.0.1:{}; \
         echo 10 > /proc/fs/nfsd/nfsv4gracetime; echo 10 > /proc/fs/nfsd/nfsv4leasetime",
        export.display()
    );
    run(Command::new("nsenter").args([&netns, "sh", "-c", &script]));
    let mountd = Command::new("nsenter")
        .args([&netns, "/usr/sbin/rpc.mountd", "-F", "-N", "3", "--no-udp"])
        .spawn()
        .expect("rpc.mountd (Debian nfs-kernel-server)");
    // The grace period (10 s, the least) holds the first opens back; writing
    // v4_end_grace to skip it failed here (EIO).
    run(Command::new("nsenter").args([&netns, "/usr/sbin/rpc.nfsd", "-N", "3", "-U", "2"]));
    mountd
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_nfs_sr_on_a_kernel_nfs_server() {
    if std::env::var_os(INSIDE).is_none() {
        return;
    }
    fv_testhost::load_storage_modules().expect("load nfsd and the NFS client");
    let dir = TempDir::new("nfs");
    let export = dir.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let fvd = Fvd::start(&dir.0.join("data"));
    let mut mountd = start_nfs_server(&fvd, &export);
    let c = fvd.root();
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let host = hosts[0].clone();
    let config = record(&[("server", s("127.0.0.1")), ("serverpath", s("/"))]);
    let probe = || {
        c.ok(
            "SR.probe",
            &[host.clone(), config.clone(), s("nfs"), record(&[])],
        )
        .as_str()
        .unwrap()
        .to_owned()
    };
    assert!(!probe().contains("<SR>"), "{}", probe());
    let sr = c
        .ok(
            "SR.create",
            &[
                host.clone(),
                config.clone(),
                Value::Int(0),
                s("nfs"),
                s(""),
                s("nfs"),
                s("user"),
                Value::Bool(true),
                record(&[]),
            ],
        )
        .as_str()
        .unwrap()
        .to_owned();
    let uuid = field_str(&c, "SR", &sr, "uuid");
    assert_eq!(c.field("SR", &sr, "shared"), Value::Bool(true));
    // XenServer's layout: the SR is the directory <uuid> of the export.
    let on_server = export.join(&uuid);
    assert!(on_server.is_dir());
    assert!(
        probe().contains(&format!("<UUID>{uuid}</UUID>")),
        "{}",
        probe()
    );
    let mountpoint = fvd.data.join("sr-mount").join(&uuid);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts.contains(&format!("127.0.0.1:/ {} nfs4", mountpoint.display())),
        "{mounts}"
    );

    // VDIs are qcow2 files on the server; data written through the mount, snapshot kept.
    let vdi = vdi_create(&c, &sr, "on nfs", 8 << 20);
    let location = field_str(&c, "VDI", &vdi, "location");
    let through_mount = mountpoint.join(&uuid).join(&location);
    let a = pattern(1 << 20, 5);
    {
        let disk = fv_disk::open_disk(&through_mount, Some(fv_disk::Format::Qcow2), false).unwrap();
        disk.write_at(&a, 0).unwrap();
        disk.flush().unwrap();
    }
    let snap = c
        .ok("VDI.snapshot", &[s(&vdi), record(&[])])
        .as_str()
        .unwrap()
        .to_owned();
    let b = pattern(1 << 20, 6);
    {
        let disk = fv_disk::open_disk(&through_mount, Some(fv_disk::Format::Qcow2), false).unwrap();
        disk.write_at(&b, 0).unwrap();
        disk.flush().unwrap();
    }
    let read = |file: &Path| {
        let disk = fv_disk::open_disk(file, Some(fv_disk::Format::Qcow2), true).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        disk.read_at(&mut buf, 0).unwrap();
        buf
    };
    // Read on the server's side: what went through NFS is there.
    assert!(read(&on_server.join(&location)) == b);
    let snap_file = on_server.join(field_str(&c, "VDI", &snap, "location"));
    assert!(read(&snap_file) == a, "the snapshot kept the old data");

    // Unplug unmounts; plug mounts again and finds the VDIs.
    let Value::Array(pbds) = c.field("SR", &sr, "PBDs") else {
        panic!()
    };
    let pbd = pbds[0].as_str().unwrap().to_owned();
    c.ok("PBD.unplug", &[s(&pbd)]);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(mountpoint.to_str().unwrap()), "{mounts}");
    c.ok("PBD.plug", &[s(&pbd)]);
    c.ok("SR.scan", &[s(&sr)]);
    assert_eq!(c.field("VDI", &vdi, "missing"), Value::Bool(false));
    assert!(read(&through_mount) == b);

    // Destroy: the snapshot, the VDI, then the SR with its directory on the server.
    c.ok("VDI.destroy", &[s(&snap)]);
    c.ok("VDI.destroy", &[s(&vdi)]);
    c.ok("SR.destroy", &[s(&sr)]);
    assert!(
        !on_server.exists(),
        "the SR's directory is gone from the server"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(mountpoint.to_str().unwrap()), "{mounts}");
    let _ = mountd.kill();
    let _ = mountd.wait();
}
