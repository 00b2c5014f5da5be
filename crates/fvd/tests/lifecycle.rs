//! VM lifecycle through a real fvd with real fv-vmm processes (tiny guests on this host's
//! KVM): what the guest does moves the VM as `actions_after_*` say, and VMs outlive fvd.

mod common;

use common::*;
use fv_rpc::Value;

fn set(c: &Client, vm: &str, field: &str, value: &str) {
    c.ok(&format!("VM.set_{field}"), &[s(vm), s(value)]);
}

#[test]
fn vms_outlive_a_killed_fvd_and_are_adopted() {
    let dir = TempDir::new("adopt");
    let data = dir.0.join("data");
    let fvd = Fvd::start(&data);
    let c = fvd.root();
    let vm = c.tiny_vm("survivor", "spin");
    let paused = c.tiny_vm("paused-survivor", "spin");
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    c.ok(
        "VM.start",
        &[s(&paused), Value::Bool(true), Value::Bool(false)],
    );
    let pid = c.field("VM", &vm, "domid").as_int().unwrap();
    assert!(alive(pid));
    fvd.kill9();
    assert!(alive(pid), "the VM died with fvd");

    // A new fvd finds both, in the state they are in, and can command them.
    let fvd = Fvd::start(&data);
    let c = fvd.root();
    assert_eq!(c.power_state(&vm), "Running", "{}", fvd.log());
    assert_eq!(c.field("VM", &vm, "domid").as_int(), Some(pid));
    assert_eq!(c.power_state(&paused), "Paused");
    assert!(fvd.log().contains("adopted fv-vmm"), "{}", fvd.log());
    c.ok("VM.unpause", &[s(&paused)]);
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    assert_eq!(c.power_state(&vm), "Halted");
    assert!(!alive(pid), "hard_shutdown left fv-vmm running");

    // A VM that ends while fvd is away is found halted, and one that is to be restarted
    // after a shutdown is restarted.
    set(&c, &paused, "actions_after_shutdown", "restart");
    let paused_pid = c.field("VM", &paused, "domid").as_int().unwrap();
    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    let pid = c.field("VM", &vm, "domid").as_int().unwrap();
    fvd.kill9();
    // Stop both VMMs behind fvd's back, as a guest powering off would.
    for dir in std::fs::read_dir(data.join("vms")).unwrap().flatten() {
        if let Some(vmm) = fv_vmmctl::Vmm::adopt(fv_vmmctl::RunDir::new(dir.path())).unwrap() {
            vmm.stop().unwrap();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (alive(pid) || alive(paused_pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let fvd = Fvd::start(&data);
    let c = fvd.root();
    assert_eq!(c.power_state(&vm), "Halted", "{}", fvd.log());
    assert_eq!(
        c.power_state(&paused),
        "Running",
        "restarted: {}",
        fvd.log()
    );
    let new_pid = c.field("VM", &paused, "domid").as_int().unwrap();
    assert_ne!(new_pid, paused_pid);
    assert!(alive(new_pid));
    c.ok("VM.hard_shutdown", &[s(&paused)]);
}

#[test]
fn what_the_guest_does_moves_the_vm() {
    let dir = TempDir::new("guest-ends");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();

    // The guest powers itself off: halted (actions_after_shutdown=destroy).
    let hello = c.tiny_vm("hello", "hello");
    c.ok(
        "VM.start",
        &[s(&hello), Value::Bool(false), Value::Bool(false)],
    );
    c.wait_power_state(&hello, "Halted");
    assert_eq!(c.field("VM", &hello, "domid").as_int(), Some(-1));

    // The guest reboots, actions_after_reboot=destroy: halted.
    let reboot = c.tiny_vm("reboot", "reboot_acpi");
    set(&c, &reboot, "actions_after_reboot", "destroy");
    c.ok(
        "VM.start",
        &[s(&reboot), Value::Bool(false), Value::Bool(false)],
    );
    c.wait_power_state(&reboot, "Halted");

    // The guest crashes: halted, and a VM_CRASHED message names it.
    let crash = c.tiny_vm("crash", "triple_fault");
    c.ok("VM.set_actions_after_crash", &[s(&crash), s("destroy")]);
    c.ok(
        "VM.start",
        &[s(&crash), Value::Bool(false), Value::Bool(false)],
    );
    c.wait_power_state(&crash, "Halted");
    c.assert_vm_message("VM_CRASHED", &crash);
}

#[test]
fn power_operations_check_the_state_and_hard_ones_preempt() {
    let dir = TempDir::new("ops");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let vm = c.tiny_vm("ops", "spin");
    let f = |v: &str| Value::Bool(v == "true");
    assert_eq!(c.err("VM.pause", &[s(&vm)]).code, "VM_BAD_POWER_STATE");
    assert_eq!(
        c.err("VM.hard_shutdown", &[s(&vm)]).code,
        "VM_BAD_POWER_STATE"
    );
    c.ok("VM.start", &[s(&vm), f("false"), f("false")]);
    assert_eq!(
        c.err("VM.start", &[s(&vm), f("false"), f("false")]).code,
        "VM_BAD_POWER_STATE"
    );
    assert_eq!(c.err("VM.destroy", &[s(&vm)]).code, "VM_BAD_POWER_STATE");
    let allowed = c.field("VM", &vm, "allowed_operations");
    assert!(
        format!("{allowed:?}").contains("clean_shutdown"),
        "{allowed:?}"
    );

    // The tiny guest ignores the power button: a clean shutdown waits until its task is
    // cancelled, and the VM runs on.
    let task = c.ok("Async.VM.clean_shutdown", &[s(&vm)]);
    let task = task.as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.ok("task.cancel", &[s(&task)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.field("task", &task, "status") != s("cancelled") {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancel was not heeded"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(c.power_state(&vm), "Running");
    assert_eq!(
        c.field("VM", &vm, "current_operations"),
        Value::Struct(Default::default())
    );

    // A clean shutdown waits, and a hard shutdown issued meanwhile ends both.
    let task = c.ok("Async.VM.clean_shutdown", &[s(&vm)]);
    let task = task.as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ops = c.field("VM", &vm, "current_operations");
        if format!("{ops:?}").contains("clean_shutdown") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no clean_shutdown in progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        c.err("VM.pause", &[s(&vm)]).code,
        "OTHER_OPERATION_IN_PROGRESS",
        "soft operations wait for each other"
    );
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    assert_eq!(c.power_state(&vm), "Halted");
    loop {
        let status = c.field("task", &task, "status");
        if status != s("pending") {
            assert_eq!(
                status,
                s("success"),
                "the clean shutdown ends with the VM halted: {:?}",
                c.field("task", &task, "error_info")
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        c.field("VM", &vm, "current_operations"),
        Value::Struct(Default::default())
    );
    c.ok("VM.destroy", &[s(&vm)]);
    assert_eq!(c.err("VM.get_record", &[s(&vm)]).code, "HANDLE_INVALID");
}
