//! Templates and copies: `VM.clone` of a template then `VM.provision`, as `xe vm-install`
//! does; `VM.clone` (copy-on-write) and `VM.copy` (in full) of a halted VM carry its disks'
//! data and its NICs; every image `qemu-img check` accepts.

mod common;

use std::collections::BTreeMap;

use common::*;
use fv_rpc::Value;

fn map(pairs: &[(&str, &str)]) -> Value {
    Value::Struct(pairs.iter().map(|(k, v)| (k.to_string(), s(v))).collect())
}

/// The file behind a VDI, in the default SR's directory.
fn vdi_file(fvd: &Fvd, c: &Client, vdi: &str) -> std::path::PathBuf {
    let sr = c.field("VDI", vdi, "SR");
    let sr_uuid = c.field("SR", sr.as_str().unwrap(), "uuid");
    let location = c.field("VDI", vdi, "location");
    fvd.data
        .join("sr")
        .join(sr_uuid.as_str().unwrap())
        .join(location.as_str().unwrap())
}

/// Writes `data` at the start of the qcow2 VDI at `path`, as a guest would.
fn write_disk(path: &std::path::Path, data: &[u8]) {
    let disk = fv_disk::open_disk(path, Some(fv_disk::Format::Qcow2), false).expect("open");
    disk.write_at(data, 0).expect("write");
    disk.flush().expect("flush");
}

/// The first 2 MiB of the qcow2 VDI (and its chain) at `path`.
fn read_disk(path: &std::path::Path) -> Vec<u8> {
    let disk = fv_disk::open_disk(path, Some(fv_disk::Format::Qcow2), true).expect("open");
    let mut buf = vec![0u8; 2 << 20];
    disk.read_at(&mut buf, 0).expect("read");
    buf
}

fn qemu_img_check(path: &std::path::Path) {
    let out = std::process::Command::new("qemu-img")
        .arg("check")
        .arg(path)
        .output()
        .expect("qemu-img (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn vdis_of(c: &Client, vm: &str) -> Vec<String> {
    let Value::Array(vbds) = c.field("VM", vm, "VBDs") else {
        panic!()
    };
    vbds.iter()
        .map(|b| {
            c.field("VBD", b.as_str().unwrap(), "VDI")
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn install_from_a_template_then_clone_and_copy() {
    let dir = TempDir::new("templates");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();

    // A template that boots the pci_scan guest with one 2 MiB disk to provision.
    let template = c.tiny_vm("Scanner template", "pci_scan");
    c.ok("VM.set_is_a_template", &[s(&template), Value::Bool(true)]);
    c.ok(
        "VM.set_other_config",
        &[
            s(&template),
            map(&[(
                "disks",
                r#"<provision><disk device="0" size="2097152" sr="" bootable="true" type="system"/></provision>"#,
            )]),
        ],
    );
    assert_eq!(
        c.err(
            "VM.start",
            &[s(&template), Value::Bool(false), Value::Bool(false)]
        )
        .code,
        "VM_IS_TEMPLATE"
    );

    // xe vm-install: clone the template, make it a VM, provision its disks.
    let vm = c.ok("VM.clone", &[s(&template), s("installed")]);
    let vm = vm.as_str().unwrap().to_owned();
    assert_eq!(c.field("VM", &vm, "is_a_template"), Value::Bool(true));
    assert_eq!(c.field("VM", &vm, "parent"), s(&template));
    c.ok("VM.set_is_a_template", &[s(&vm), Value::Bool(false)]);
    c.ok("VM.provision", &[s(&vm)]);
    let vdis = vdis_of(&c, &vm);
    assert_eq!(vdis.len(), 1);
    assert_eq!(
        c.field("VDI", &vdis[0], "virtual_size").as_int(),
        Some(2 << 20)
    );
    assert!(
        vdis_of(&c, &template).is_empty(),
        "the template itself has no disks"
    );
    let allowed = format!("{:?}", c.field("VM", &vm, "allowed_operations"));
    assert!(allowed.contains("start"), "{allowed}");
    // As fv vm-install and the web console's wizard do it: provisioned while still a
    // template, then made a VM. Its allowed operations follow at once.
    let other = c.ok("VM.clone", &[s(&template), s("installed later")]);
    let allowed = format!(
        "{:?}",
        c.field("VM", other.as_str().unwrap(), "allowed_operations")
    );
    assert!(
        !allowed.contains("start"),
        "a template may not start: {allowed}"
    );
    c.ok("VM.provision", std::slice::from_ref(&other));
    c.ok("VM.set_is_a_template", &[other.clone(), Value::Bool(false)]);
    let allowed = format!(
        "{:?}",
        c.field("VM", other.as_str().unwrap(), "allowed_operations")
    );
    assert!(allowed.contains("start"), "{allowed}");
    c.ok("VM.destroy", &[other]);
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    c.wait_power_state(&vm, "Halted");

    // Data on the VM's disk, then a clone and a copy: each has its own disk with the data.
    let file = vdi_file(&fvd, &c, &vdis[0]);
    let data: Vec<u8> = (0..(2 << 20)).map(|i| (i % 251) as u8).collect();
    write_disk(&file, &data);
    let vif = c.ok(
        "VIF.create",
        &[Value::Struct(BTreeMap::from([
            ("device".to_owned(), s("0")),
            ("network".to_owned(), {
                let Value::Array(n) = c.ok("network.get_all", &[]) else {
                    panic!()
                };
                n[0].clone()
            }),
            ("VM".to_owned(), s(&vm)),
            ("MAC".to_owned(), s("")),
            ("MTU".to_owned(), Value::Int(1500)),
        ]))],
    );
    let mac = c.field("VIF", vif.as_str().unwrap(), "MAC");
    let clone = c.ok("VM.clone", &[s(&vm), s("clone")]);
    let copy = c.ok("VM.copy", &[s(&vm), s("copy"), s("OpaqueRef:NULL")]);
    for new in [clone.as_str().unwrap(), copy.as_str().unwrap()] {
        let new_vdis = vdis_of(&c, new);
        assert_eq!(new_vdis.len(), 1);
        assert_ne!(new_vdis[0], vdis[0], "a copy has its own disk");
        let new_file = vdi_file(&fvd, &c, &new_vdis[0]);
        assert!(read_disk(&new_file) == data, "the copy holds the data");
        qemu_img_check(&new_file);
        let Value::Array(vifs) = c.field("VM", new, "VIFs") else {
            panic!()
        };
        assert_eq!(vifs.len(), 1);
        let new_mac = c.field("VIF", vifs[0].as_str().unwrap(), "MAC");
        assert_ne!(new_mac, mac, "a generated MAC is generated again");
        assert_eq!(c.power_state(new), "Halted");
    }
    // Only halted VMs are cloned.
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    assert_eq!(
        c.err("VM.clone", &[s(&vm), s("no")]).code,
        "VM_BAD_POWER_STATE"
    );
    c.ok("VM.hard_shutdown", &[s(&vm)]);
}
