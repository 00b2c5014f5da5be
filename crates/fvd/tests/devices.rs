//! A VM's VBDs and VIFs become fv-vmm's disks and NICs: a VDI on the default local SR and a
//! VIF on the host-internal network, made through the API, appear on the guest's PCI bus
//! (the `pci_scan` tiny guest reports them on its serial console), the VIF's tap is on the
//! network's bridge while the VM runs and gone once it halts.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use fv_rpc::Value;

#[test]
fn vbds_and_vifs_become_disks_and_nics() {
    let dir = TempDir::new("devices");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();

    // The embedded defaults: a local SR that is the pool's default, a host-internal network.
    let pool = c.ok("pool.get_all", &[]);
    let Value::Array(pools) = pool else { panic!() };
    let sr = c.field("pool", pools[0].as_str().unwrap(), "default_SR");
    let sr = sr.as_str().unwrap().to_owned();
    assert_eq!(c.field("SR", &sr, "name_label"), s("Local storage"));
    let Value::Array(networks) = c.ok("network.get_all", &[]) else {
        panic!()
    };
    let network = networks[0].as_str().unwrap().to_owned();
    let bridge = c
        .field("network", &network, "bridge")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        fvd.in_netns(&["ip", "-o", "link", "show", "dev", &bridge])
            .contains(",UP"),
        "bridge {bridge:?} is not up: {:?}",
        fvd.in_netns(&["ip", "-o", "link", "show", "dev", &bridge])
    );

    let vm = c.tiny_vm("devices", "pci_scan");
    let vdi = c.ok(
        "VDI.create",
        &[record(&[
            ("name_label", s("disk 0")),
            ("SR", s(&sr)),
            ("virtual_size", Value::Int(4 << 20)),
            ("type", s("user")),
            ("sharable", Value::Bool(false)),
            ("read_only", Value::Bool(false)),
            ("other_config", Value::Struct(Default::default())),
        ])],
    );
    let vdi = vdi.as_str().unwrap().to_owned();
    c.attach_disk(&vm, &vdi, "0", true);
    let vif = c.ok(
        "VIF.create",
        &[record(&[
            ("device", s("0")),
            ("network", s(&network)),
            ("VM", s(&vm)),
            ("MAC", s("")),
            ("MTU", Value::Int(1500)),
        ])],
    );
    let mac = c.field("VIF", vif.as_str().unwrap(), "MAC");
    assert_eq!(
        mac.as_str().unwrap().len(),
        17,
        "a MAC was generated: {mac:?}"
    );

    // A second NIC on a jumbo-frame network: its bridge and the VM's tap take its MTU.
    let jumbo = c.ok(
        "network.create",
        &[record(&[
            ("name_label", s("jumbo")),
            ("MTU", Value::Int(9000)),
        ])],
    );
    let jumbo = jumbo.as_str().unwrap().to_owned();
    let jumbo_bridge = c
        .field("network", &jumbo, "bridge")
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(jumbo_bridge, bridge);
    let link = fvd.in_netns(&["ip", "-o", "link", "show", "dev", &jumbo_bridge]);
    assert!(link.contains("mtu 9000"), "{link}");
    let vif1 = c.ok(
        "VIF.create",
        &[record(&[
            ("device", s("1")),
            ("network", s(&jumbo)),
            ("VM", s(&vm)),
            ("MAC", s("")),
            ("MTU", Value::Int(9000)),
        ])],
    );
    let vif1 = vif1.as_str().unwrap().to_owned();
    assert_eq!(c.err("VIF.plug", &[s(&vif1)]).code, "VM_BAD_POWER_STATE");

    // Paused, so that the serial console is connected before the guest speaks.
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    let uuid = c.field("VM", &vm, "uuid");
    let run_dir = fvd.data.join("vms").join(uuid.as_str().unwrap());
    let mut serial = UnixStream::connect(run_dir.join("serial.sock")).expect("serial");
    serial
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let tap = format!("vif{}.0", &uuid.as_str().unwrap()[..8]);
    let link = fvd.in_netns(&["ip", "-o", "link", "show", "dev", &tap]);
    assert!(link.contains(&format!("master {bridge}")), "{tap}: {link}");
    let tap1 = format!("vif{}.1", &uuid.as_str().unwrap()[..8]);
    let link = fvd.in_netns(&["ip", "-o", "link", "show", "dev", &tap1]);
    assert!(
        link.contains("mtu 9000") && link.contains(&format!("master {jumbo_bridge}")),
        "{tap1}: {link}"
    );
    // Attached NICs cannot be plugged again (unplugging needs a guest that answers ACPI:
    // tests/linux.rs); disks cannot be hot-plugged yet: a clear error that says what to do.
    assert_eq!(
        c.err("VIF.plug", &[s(&vif1)]).code,
        "DEVICE_ALREADY_ATTACHED"
    );
    let Value::Array(vbds) = c.field("VM", &vm, "VBDs") else {
        panic!()
    };
    let refused = c.err("VBD.unplug", &[vbds[0].clone()]);
    assert_eq!(refused.code, "OPERATION_NOT_ALLOWED");
    assert!(refused.params[0].contains("shut VM"), "{refused}");
    // A third NIC, hot-plugged: its tap is on the bridge and fv-vmm has it on the bus
    // (the guest, paused, has not scanned the bus yet, and finds three devices).
    let vif2 = c.ok(
        "VIF.create",
        &[record(&[
            ("device", s("2")),
            ("network", s(&network)),
            ("VM", s(&vm)),
            ("MAC", s("")),
            ("MTU", Value::Int(1500)),
        ])],
    );
    // Made on a running VM, it is not attached until plugged.
    let vif2 = vif2.as_str().unwrap().to_owned();
    assert_eq!(
        c.field("VIF", &vif2, "currently_attached"),
        Value::Bool(false)
    );
    assert_eq!(
        c.field("VIF", &vif1, "currently_attached"),
        Value::Bool(true)
    );
    c.ok("VIF.plug", &[s(&vif2)]);
    assert_eq!(
        c.field("VIF", &vif2, "currently_attached"),
        Value::Bool(true)
    );
    // An attached VIF of a running VM stays; one never plugged may go.
    assert_eq!(
        c.err("VIF.destroy", &[s(&vif2)]).code,
        "OPERATION_NOT_ALLOWED"
    );
    let spare = c.ok(
        "VIF.create",
        &[record(&[
            ("device", s("3")),
            ("network", s(&jumbo)),
            ("VM", s(&vm)),
            ("MAC", s("")),
            ("MTU", Value::Int(1500)),
        ])],
    );
    c.ok("VIF.destroy", &[spare]);
    // A network with VIFs on it is not destroyed, as XAPI: NETWORK_CONTAINS_VIF names them.
    let refused = c.err("network.destroy", &[s(&jumbo)]);
    assert_eq!(refused.code, "NETWORK_CONTAINS_VIF", "{refused}");
    assert!(refused.params[0].contains(&vif1), "{refused}");
    let tap2 = format!("vif{}.2", &uuid.as_str().unwrap()[..8]);
    let link = fvd.in_netns(&["ip", "-o", "link", "show", "dev", &tap2]);
    assert!(link.contains(&format!("master {bridge}")), "{tap2}: {link}");
    c.ok("VM.unpause", &[s(&vm)]);
    let mut out = Vec::new();
    let _ = serial.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    // virtio-net (1041) first, then virtio-blk (1042), as fv-vmm lays them out.
    assert!(
        out.contains("1af4:1041"),
        "no NIC on the guest's bus:\n{out}"
    );
    assert!(
        out.contains("1af4:1042"),
        "no disk on the guest's bus:\n{out}"
    );
    assert_eq!(
        out.matches("1af4:1041").count(),
        3,
        "three NICs on the guest's bus:\n{out}"
    );
    c.wait_power_state(&vm, "Halted");
    assert_eq!(
        c.field("VIF", &vif2, "currently_attached"),
        Value::Bool(false)
    );
    for tap in [&tap, &tap2] {
        let gone = fvd.in_netns(&["ip", "-o", "link", "show", "dev", tap]);
        assert!(gone.is_empty(), "the tap outlived the VM: {gone}");
    }
}
