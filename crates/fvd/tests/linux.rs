//! A stock Debian kernel through fvd, inside the emulated AMD-V host (this machine's KVM
//! cannot boot Linux; see docs/testhost.md). fvd makes its ready template from a template
//! directory (Debian's kernel, the guest initramfs, a busybox root filesystem); a VM
//! cloned from it boots to a shell on its own copy of the root; `VM.clean_reboot` and
//! `VM.clean_shutdown` press the ACPI power button, the guest shuts itself down (busybox
//! acpid), and fvd starts it again or halts it. Then a qcow2 image made by `qemu-img`,
//! found by `SR.scan`, boots the VM. (The reboot is an ignored test of its own for now:
//! see `linux_guest_clean_reboot_and_shutdown_through_fvd`.)

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use fv_rpc::Value;

/// Set inside the emulated host, so that the `inside_*` test runs there and nowhere else.
const INSIDE: &str = "FV_LINUX_GUEST_INSIDE";
/// One nested boot takes 5 to 30 s depending on the machine's load.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn linux_guest_clean_shutdown_through_fvd() {
    run_inside("inside_linux_guest_clean_shutdown_through_fvd");
}

/// The same with a `VM.clean_reboot` first. Ignored: code patching, the emulated host's
/// KVM patching its own code as VMs come and go, or the rebooted guest patching its own as
/// it loads modules, now and then stalls QEMU TCG's nested AMD-V, and a reboot is one more
/// start (docs/testhost.md, "Guest kernels at fixed addresses"). Run it with
/// `cargo test -p fvd --test linux -- --ignored linux_guest_clean_reboot_and_shutdown`.
#[test]
#[ignore = "QEMU TCG's nested AMD-V stalls in some runs with a reboot (docs/testhost.md)"]
fn linux_guest_clean_reboot_and_shutdown_through_fvd() {
    run_inside("inside_linux_guest_clean_reboot_and_shutdown_through_fvd");
}

/// Runs `name` in the emulated host, one emulated host at a time: each is QEMU TCG with two
/// vCPUs, and three at once on a two-core machine made a nested guest stall past its
/// timeout (see docs/testhost.md on stalls under load).
fn run_inside(name: &str) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    fv_testhost::run_test_inside(INSIDE, name);
}

/// Inside the emulated host (else None): fvd on a fresh data directory under a TempDir
/// named `name`, started with a template directory of Debian's kernel, the guest initramfs
/// and a busybox root, so that it makes its ready template.
///
/// The kernel is the bzImage, not the PVH vmlinux: a guest kernel at its link address
/// (PVH, or a bzImage with `nokaslr`) now and then triple-faults, or resets the emulated
/// host itself, in QEMU TCG's nested AMD-V; the bzImage's KASLR places it elsewhere each
/// boot (docs/testhost.md, "Guest kernels at fixed addresses").
fn fvd_with_default_template(name: &str) -> Option<(TempDir, Fvd)> {
    std::env::var_os(INSIDE)?;
    let env = |var: &str| PathBuf::from(std::env::var_os(var).expect(var));
    let dir = TempDir::new(name);
    let template_dir = dir.0.join("template");
    std::fs::create_dir_all(&template_dir).unwrap();
    std::fs::copy(env("FV_BZIMAGE"), template_dir.join("vmlinuz")).unwrap();
    std::fs::copy(env("FV_INITRD"), template_dir.join("initrd.img")).unwrap();
    fv_testhost::build_rootfs(&template_dir.join("rootfs.img")).expect("build the root");
    let fvd = Fvd::start_args(
        &dir.0.join("data"),
        false,
        &["--template-dir", template_dir.to_str().unwrap()],
    );
    Some((dir, fvd))
}

/// `VM.clean_reboot` of a running guest whose console is `console`, run by fv-vmm `domid`:
/// the guest shuts down on the power button and fvd starts it again in a new fv-vmm.
/// Returns the new console, at a shell prompt, and the new domid.
fn clean_reboot(
    c: &Client,
    vm: &str,
    run_dir: &Path,
    mut console: Console,
    first: i64,
) -> (Console, i64) {
    // A clean reboot: the guest shuts down on the power button, fvd starts it again.
    // Async, so that a guest that does not answer fails on its console, not on a timeout.
    let task = c.ok("Async.VM.clean_reboot", &[s(vm)]);
    console.wait_for("power button: shutting down");
    wait_task(c, task.as_str().unwrap());
    assert_eq!(c.power_state(vm), "Running");
    let second = c.field("VM", vm, "domid").as_int().unwrap();
    assert_ne!(first, second, "a new fv-vmm runs the rebooted guest");
    assert!(!alive(first));
    // Connect to the new console; the shell prompt may already be past: ask for another.
    let mut console = Console::connect(run_dir);
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !console.seen.contains("guest# ") {
        assert!(
            Instant::now() < deadline,
            "no shell after the reboot:\n{}\n{}",
            console.seen.trim(),
            vmm_report(run_dir)
        );
        let _ = console.stream.write_all(b"\n");
        let mut buf = [0u8; 4096];
        if let Ok(n) = console.stream.read(&mut buf) {
            console.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    (console, second)
}

/// What the VM's fv-vmm says of itself, twice 3 s apart (are its vCPUs still exiting, or
/// stuck in the guest?), and its stderr: for a guest that stopped talking.
fn vmm_report(run_dir: &Path) -> String {
    let vm_state = || -> String {
        let ask = || -> std::io::Result<String> {
            let mut api = UnixStream::connect(run_dir.join("api.sock"))?;
            api.write_all(b"GET /vm HTTP/1.1\r\nHost: fv-vmm\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            api.read_to_string(&mut answer)?;
            Ok(answer
                .split("\r\n\r\n")
                .nth(1)
                .unwrap_or(&answer)
                .to_owned())
        };
        ask().unwrap_or_else(|e| format!("(no answer: {e})"))
    };
    let first = vm_state();
    std::thread::sleep(Duration::from_secs(3));
    format!(
        "--- fv-vmm's GET /vm ---\n{first}\n--- 3 s later ---\n{}\n--- its stderr.log ---\n{}",
        vm_state(),
        std::fs::read_to_string(run_dir.join("stderr.log")).unwrap_or_default()
    )
}

/// A VM's serial console, read from its run directory's socket until `want` appears.
struct Console {
    stream: UnixStream,
    seen: String,
    /// Commands run so far (each has its own end marker).
    commands: u32,
    /// The VM's run directory: its fv-vmm's stderr.log says why a console closed.
    run_dir: PathBuf,
    /// The last line typed by `run`.
    typed: String,
}

impl Console {
    fn connect(run_dir: &Path) -> Console {
        let stream = UnixStream::connect(run_dir.join("serial.sock")).expect("serial socket");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // fv-vmm reads input only as fast as the guest takes it: a prod at a guest that is
        // still booting must not block the test.
        stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Console {
            stream,
            seen: String::new(),
            commands: 0,
            run_dir: run_dir.to_owned(),
            typed: String::new(),
        }
    }

    /// Types `text` on the console.
    fn write(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .expect("console write");
    }

    /// Runs `cmd` in the guest's shell; returns its exit status and what the console
    /// showed meanwhile (the echoed command included).
    fn run(&mut self, cmd: &str) -> (i32, String) {
        self.commands += 1;
        let start = self.seen.len();
        let tag = format!("FV-CMD-{}", self.commands);
        // Quoted apart in what is typed, so that only the output has the marker whole.
        self.typed = format!("{cmd}; echo \"{tag}\"\"-RC-$?.\"");
        let line = format!("{}\n", self.typed);
        self.write(&line);
        let marker = format!("{tag}-RC-");
        self.wait_for(&marker);
        let at = start + self.seen[start..].find(&marker).unwrap();
        self.wait_for_after(at, ".");
        let rest = &self.seen[at + marker.len()..];
        let rc = rest[..rest.find('.').unwrap()].trim().parse().unwrap_or(-1);
        (rc, self.seen[start..at].to_owned())
    }

    /// Waits until `want` appears after byte `at` of what was seen.
    fn wait_for_after(&mut self, at: usize, want: &str) {
        let deadline = Instant::now() + GUEST_TIMEOUT;
        let mut buf = [0u8; 4096];
        while !self.seen[at..].contains(want) {
            assert!(
                Instant::now() < deadline,
                "no {want:?} on the console:\n{}\n{}",
                self.seen,
                vmm_report(&self.run_dir)
            );
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "console closed before {want:?}:\n{}\n{}",
                    self.seen,
                    vmm_report(&self.run_dir)
                ),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
    }

    /// What `cmd` printed, without the echoed command line. The terminal may wrap the echo
    /// and add escapes, so the typed characters are matched in order, skipping the rest.
    fn output(&mut self, cmd: &str) -> String {
        let (_, out) = self.run(cmd);
        let mut rest = out.as_str();
        for ch in self.typed.chars() {
            match rest.find(ch) {
                Some(at) => rest = &rest[at + ch.len_utf8()..],
                None => break,
            }
        }
        let rest = rest.split_once('\n').map_or("", |(_, after)| after);
        rest.replace('\r', "")
    }

    /// Runs `cmd`, which must succeed; returns its output.
    fn ok(&mut self, cmd: &str) -> String {
        let (rc, out) = self.run(cmd);
        assert_eq!(rc, 0, "{cmd} failed in the guest:\n{out}");
        out
    }

    fn wait_for(&mut self, want: &str) {
        self.wait_for_after(0, want);
    }
}

/// Waits for a task to end; it must have succeeded.
fn wait_task(c: &Client, task: &str) {
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        let status = c.field("task", task, "status");
        if status != s("pending") {
            assert_eq!(
                status,
                s("success"),
                "{:?}",
                c.field("task", task, "error_info")
            );
            return;
        }
        assert!(Instant::now() < deadline, "task {task} still pending");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_linux_guest_clean_shutdown_through_fvd() {
    clean_power_operations(false);
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_linux_guest_clean_reboot_and_shutdown_through_fvd() {
    clean_power_operations(true);
}

/// A VM cloned from the ready template boots to a shell on its own root; with `reboot`,
/// `VM.clean_reboot` makes the guest shut down on the power button and fvd starts it again;
/// `VM.clean_shutdown` halts it the same way. Then a qcow2 image made by `qemu-img`, found
/// by `SR.scan`, boots the VM.
fn clean_power_operations(reboot: bool) {
    let Some((dir, fvd)) = fvd_with_default_template("linux") else {
        return;
    };
    let c = fvd.root();
    let Value::Array(found) = c.ok("VM.get_by_name_label", &[s("Debian 12 (busybox root)")]) else {
        panic!("VM.get_by_name_label");
    };
    assert_eq!(found.len(), 1, "the template is made once");
    let template = found[0].as_str().unwrap().to_owned();
    assert_eq!(c.field("VM", &template, "is_a_template"), Value::Bool(true));
    // xe vm-install: clone the template and make the clone a VM.
    let vm = c.ok("VM.clone", &[s(&template), s("debian")]);
    let vm = vm.as_str().unwrap().to_owned();
    c.ok("VM.set_is_a_template", &[s(&vm), Value::Bool(false)]);
    let uuid = c.field("VM", &vm, "uuid");
    let run_dir = fvd.data.join("vms").join(uuid.as_str().unwrap());
    let started = Instant::now();

    // Paused, so that the console is there from the first byte.
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    let mut console = Console::connect(&run_dir);
    c.ok("VM.unpause", &[s(&vm)]);
    console.wait_for("guest# ");
    assert!(
        console.seen.contains("a busybox root on /dev/vda"),
        "{}",
        console.seen
    );
    let first = c.field("VM", &vm, "domid").as_int().unwrap();
    println!(
        "booted to a shell in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let running = if reboot {
        clean_reboot(&c, &vm, &run_dir, console, first)
    } else {
        (console, first)
    };
    let (mut console, second) = running;

    // A clean shutdown: the guest powers off on the power button, the VM halts.
    let t = Instant::now();
    let task = c.ok("Async.VM.clean_shutdown", &[s(&vm)]);
    console.wait_for("power button: shutting down");
    wait_task(&c, task.as_str().unwrap());
    assert_eq!(c.power_state(&vm), "Halted");
    assert!(!alive(second));
    let clean_shutdown = t.elapsed();

    // A qcow2 image made by qemu-img (the same root, converted), found by SR.scan, boots.
    let Value::Array(pools) = c.ok("pool.get_all", &[]) else {
        panic!()
    };
    let sr = c.field("pool", pools[0].as_str().unwrap(), "default_SR");
    let sr_uuid = c.field("SR", sr.as_str().unwrap(), "uuid");
    let sr_dir = fvd.data.join("sr").join(sr_uuid.as_str().unwrap());
    let imported = "5eed5eed-0000-4000-8000-00000000c0de";
    let converted = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(dir.0.join("template").join("rootfs.img"))
        .arg(sr_dir.join(format!("{imported}.qcow2")))
        .status()
        .expect("qemu-img");
    assert!(converted.success());
    c.ok("SR.scan", &[sr]);
    let vdi = c.ok("VDI.get_by_uuid", &[s(imported)]);
    let Value::Array(vbds) = c.field("VM", &vm, "VBDs") else {
        panic!()
    };
    c.ok("VBD.destroy", &[vbds[0].clone()]);
    c.attach_disk(&vm, vdi.as_str().unwrap(), "0", true);
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    let mut console = Console::connect(&run_dir);
    c.ok("VM.unpause", &[s(&vm)]);
    console.wait_for("guest# ");
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    println!(
        "clean shutdown took {:.1} s; whole test {:.1} s",
        clean_shutdown.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn pifs_and_vlans() {
    run_inside("inside_pifs_and_vlans");
}

/// `PIF.introduce` of an interface (a dummy link standing in for a NIC: this host's kernel
/// has no 8021q, the emulated host's has), `PIF.plug`, `VLAN.create` on it for a network,
/// `VLAN.destroy`; the links as `ip` shows them in fvd's network namespace.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_pifs_and_vlans() {
    if std::env::var_os(INSIDE).is_none() {
        return;
    }
    let dir = TempDir::new("vlans");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    fvd.in_netns(&["ip", "link", "add", "fvnic0", "type", "dummy"]);
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let host = hosts[0].clone();
    let introduce = |device: &str| {
        c.call(
            "PIF.introduce",
            &[host.clone(), s(""), s(device), Value::Bool(true)],
        )
    };
    assert_eq!(
        introduce("nosuch0").unwrap_err().code,
        "OPERATION_NOT_ALLOWED"
    );
    let pif = introduce("fvnic0").expect("PIF.introduce");
    let pif = pif.as_str().unwrap().to_owned();
    assert_eq!(
        introduce("fvnic0").unwrap_err().code,
        "DEVICE_ALREADY_EXISTS"
    );
    let mac = c.field("PIF", &pif, "MAC");
    assert_eq!(mac.as_str().unwrap().len(), 17, "{mac:?}");
    let pif_net = c.field("PIF", &pif, "network");
    let pif_bridge = c.field("network", pif_net.as_str().unwrap(), "bridge");
    c.ok("PIF.plug", &[s(&pif)]);
    let link = fvd.in_netns(&["ip", "-o", "link", "show", "dev", "fvnic0"]);
    assert!(
        link.contains(&format!("master {}", pif_bridge.as_str().unwrap())),
        "{link}"
    );

    // A VLAN on it, for a network of its own.
    let net = c.ok("network.create", &[record(&[("name_label", s("vlan 10"))])]);
    let net = net.as_str().unwrap().to_owned();
    let bridge = c
        .field("network", &net, "bridge")
        .as_str()
        .unwrap()
        .to_owned();
    for bad in [0, 4095] {
        assert_eq!(
            c.err("VLAN.create", &[s(&pif), Value::Int(bad), s(&net)])
                .code,
            "INVALID_VALUE"
        );
    }
    let vlan = c.ok("VLAN.create", &[s(&pif), Value::Int(10), s(&net)]);
    let vlan = vlan.as_str().unwrap().to_owned();
    let shown = fvd.in_netns(&["ip", "-d", "-o", "link", "show", "dev", "fvnic0.10"]);
    assert!(shown.contains("vlan protocol 802.1Q id 10"), "{shown}");
    assert!(shown.contains(&format!("master {bridge}")), "{shown}");
    let untagged = c.field("VLAN", &vlan, "untagged_PIF");
    assert_eq!(
        c.field("PIF", untagged.as_str().unwrap(), "network"),
        s(&net)
    );
    assert_eq!(
        c.err("VLAN.create", &[s(&pif), Value::Int(10), s(&net)])
            .code,
        "OPERATION_NOT_ALLOWED",
        "twice the same tag"
    );
    assert_eq!(
        c.err("PIF.forget", &[s(&pif)]).code,
        "OPERATION_NOT_ALLOWED"
    );
    c.ok("VLAN.destroy", &[s(&vlan)]);
    let gone = fvd.in_netns(&["ip", "-o", "link", "show", "dev", "fvnic0.10"]);
    assert!(gone.is_empty(), "{gone}");
    c.ok("PIF.forget", &[s(&pif)]);
}

#[test]
fn guest_networks() {
    run_inside("inside_guest_networks");
}

/// A guest's IPv4 address on `dev`, as `ip addr` shows it.
fn guest_address(console: &mut Console, dev: &str) -> String {
    let out = console.ok(&format!("ip -4 addr show dev {dev}"));
    let inet = out
        .split("inet ")
        .nth(1)
        .unwrap_or_else(|| panic!("no address on {dev}:\n{out}"));
    inet.split('/').next().unwrap().trim().to_owned()
}

/// Whether the guest reaches `addr` (two pings, 2 s each at most).
fn pings(console: &mut Console, addr: &str) -> bool {
    console.run(&format!("ping -c 2 -W 2 {addr}")).0 == 0
}

/// Two Linux guests through fvd's networks: on a managed internal network each gets its
/// address from fvd's dnsmasq (busybox udhcpc) and they ping each other; on a VLAN
/// network (a second NIC each, static addresses) too. Then VIF locking on a running VM:
/// `locked` to its address lets it talk, a changed address cuts it off while the other
/// guest still reaches the host; `unlocked` lets it through again, `disabled` stops all.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_guest_networks() {
    let started = Instant::now();
    let Some((_dir, fvd)) = fvd_with_default_template("guestnet") else {
        return;
    };
    let c = fvd.root();

    // A managed internal network, and a VLAN network (VLAN 20 on a dummy "NIC").
    let lan = c.ok(
        "network.create",
        &[record(&[
            ("name_label", s("lan")),
            (
                "other_config",
                record(&[
                    ("ip_begin", s("10.55.0.1")),
                    ("ip_end", s("10.55.0.50")),
                    ("netmask", s("255.255.255.0")),
                ]),
            ),
        ])],
    );
    let lan = lan.as_str().unwrap().to_owned();
    fvd.in_netns(&["ip", "link", "add", "fvnic0", "type", "dummy"]);
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let pif = c.ok(
        "PIF.introduce",
        &[hosts[0].clone(), s(""), s("fvnic0"), Value::Bool(true)],
    );
    c.ok("PIF.plug", std::slice::from_ref(&pif));
    let vlan_net = c.ok("network.create", &[record(&[("name_label", s("vlan 20"))])]);
    let vlan_net = vlan_net.as_str().unwrap().to_owned();
    c.ok("VLAN.create", &[pif, Value::Int(20), s(&vlan_net)]);

    // Two VMs from the template, 128 MiB each, a NIC on each network.
    let Value::Array(found) = c.ok("VM.get_by_name_label", &[s("Debian 12 (busybox root)")]) else {
        panic!()
    };
    let template = found[0].as_str().unwrap().to_owned();
    let mut vms = Vec::new();
    let mut vifs = Vec::new();
    for name in ["g1", "g2"] {
        let vm = c.ok("VM.clone", &[s(&template), s(name)]);
        let vm = vm.as_str().unwrap().to_owned();
        c.ok("VM.set_is_a_template", &[s(&vm), Value::Bool(false)]);
        c.ok("VM.set_memory", &[s(&vm), Value::Int(128 << 20)]);
        let Value::Array(old) = c.field("VM", &vm, "VIFs") else {
            panic!()
        };
        for vif in old {
            c.ok("VIF.destroy", &[vif]);
        }
        let mut mine = Vec::new();
        for (device, network) in [("0", &lan), ("1", &vlan_net)] {
            let vif = c.ok(
                "VIF.create",
                &[record(&[
                    ("device", s(device)),
                    ("network", s(network)),
                    ("VM", s(&vm)),
                    ("MAC", s("")),
                    ("MTU", Value::Int(1500)),
                ])],
            );
            mine.push(vif.as_str().unwrap().to_owned());
        }
        vifs.push(mine);
        vms.push(vm);
    }
    // Both boot at once, paused first so that their consoles see everything.
    let mut consoles = Vec::new();
    for vm in &vms {
        c.ok("VM.start", &[s(vm), Value::Bool(true), Value::Bool(false)]);
        let uuid = c.field("VM", vm, "uuid");
        consoles.push(Console::connect(
            &fvd.data.join("vms").join(uuid.as_str().unwrap()),
        ));
    }
    for vm in &vms {
        c.ok("VM.unpause", &[s(vm)]);
    }
    for console in &mut consoles {
        console.wait_for("guest# ");
    }
    println!(
        "two guests booted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // DHCP from fvd's dnsmasq on the managed network.
    let mut addrs = Vec::new();
    for console in &mut consoles {
        console.ok("echo '#!/bin/sh' >/tmp/dhcp.sh");
        console.ok(
            "echo '[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface; exit 0' \
             >>/tmp/dhcp.sh",
        );
        console.ok("chmod 755 /tmp/dhcp.sh");
        console.ok("udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh");
        let addr = guest_address(console, "eth0");
        assert!(addr.starts_with("10.55.0."), "{addr}");
        addrs.push(addr);
    }
    assert_ne!(addrs[0], addrs[1]);
    let leases = std::fs::read_to_string(fvd.data.join("dhcp").join(format!(
        "{}.leases",
        c.field("network", &lan, "bridge").as_str().unwrap()
    )))
    .unwrap();
    assert!(
        leases.contains(&addrs[0]) && leases.contains(&addrs[1]),
        "{leases}"
    );
    assert!(pings(&mut consoles[0], &addrs[1]), "g1 -> g2 on the lan");
    assert!(pings(&mut consoles[1], &addrs[0]), "g2 -> g1 on the lan");

    // The VLAN network: static addresses on the second NIC.
    for (i, console) in consoles.iter_mut().enumerate() {
        console.ok(&format!("ip addr add 10.66.0.{}/24 dev eth1", i + 1));
    }
    assert!(pings(&mut consoles[0], "10.66.0.2"), "g1 -> g2 on VLAN 20");
    println!(
        "DHCP and pings done at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Locked to its address: g1 still talks.
    let (g1_vif, g1_addr, g2_addr) = (vifs[0][0].clone(), addrs[0].clone(), addrs[1].clone());
    c.ok("VIF.set_locking_mode", &[s(&g1_vif), s("locked")]);
    c.ok("VIF.add_ipv4_allowed", &[s(&g1_vif), s(&g1_addr)]);
    assert!(pings(&mut consoles[0], &g2_addr), "locked, its own address");
    // Another address: cut off; g2 still reaches the host (the bridge's address).
    consoles[0].ok(&format!(
        "ip addr del {g1_addr}/24 dev eth0 && ip addr add 10.55.0.200/24 dev eth0"
    ));
    assert!(
        !pings(&mut consoles[0], &g2_addr),
        "locked, another address"
    );
    assert!(pings(&mut consoles[1], "10.55.0.1"), "g2 -> the host");
    // The lock is the VIF's: its VLAN NIC is not locked.
    assert!(pings(&mut consoles[0], "10.66.0.2"), "g1's other NIC");
    // Unlocked: through again, with the new address.
    c.ok("VIF.set_locking_mode", &[s(&g1_vif), s("unlocked")]);
    assert!(pings(&mut consoles[0], &g2_addr), "unlocked");
    // Disabled: nothing, either way.
    c.ok("VIF.set_locking_mode", &[s(&g1_vif), s("disabled")]);
    assert!(!pings(&mut consoles[0], &g2_addr), "disabled, from g1");
    assert!(!pings(&mut consoles[1], "10.55.0.200"), "disabled, to g1");
    // The network's default, for a VIF that follows it.
    c.ok("VIF.set_locking_mode", &[s(&g1_vif), s("network_default")]);
    assert!(
        pings(&mut consoles[0], &g2_addr),
        "network default: unlocked"
    );

    for vm in &vms {
        c.ok("VM.hard_shutdown", &[s(vm)]);
    }
    let table = fvd.in_netns(&["nft", "list", "table", "bridge", "ferrovisor"]);
    assert!(!table.contains("chain vif"), "{table}");
    println!("whole test {:.1} s", started.elapsed().as_secs_f64());
}

/// `console.output(cmd)`, printing fvd's log and the kernel's last messages if it fails.
fn run_or_explain(fvd: &Fvd, console: &mut Console, cmd: &str) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| console.output(cmd))) {
        Ok(out) => out,
        Err(e) => {
            let dmesg = std::process::Command::new("dmesg").output();
            eprintln!(
                "fvd's log:\n{}\ndmesg:\n{}",
                fvd.log(),
                dmesg.map_or_else(
                    |e| e.to_string(),
                    |o| String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            );
            std::panic::resume_unwind(e)
        }
    }
}

/// The MD5 of `data`, as busybox's `md5sum` prints it in the guest.
fn md5(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_owned()
}

/// The MD5s a guest command printed, one per `md5sum` line, in order.
fn md5s(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect()
}

#[test]
fn guest_data_survives_snapshot_clone_revert_copy_resize_export_and_import() {
    run_inside("inside_guest_data_survives_snapshot_clone_revert_copy_resize_export_and_import");
}

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;

/// Data a Debian guest writes on a 16 TiB thin VDI (at its start and in its last MiB), checked
/// by MD5 against what the host reads from each VDI made from it: a snapshot taken while the
/// guest runs (VM.snapshot), a clone of it, a full copy, an export and re-import as qcow2,
/// the VDI grown while the guest runs (the guest sees the new size and writes past the old
/// end), and VM.revert (the guest reads its old data again). Every file passes
/// `qemu-img check`.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_guest_data_survives_snapshot_clone_revert_copy_resize_export_and_import() {
    let Some((dir, fvd)) = fvd_with_default_template("integrity") else {
        return;
    };
    let c = fvd.root();
    let Value::Array(found) = c.ok("VM.get_by_name_label", &[s("Debian 12 (busybox root)")]) else {
        panic!("VM.get_by_name_label");
    };
    let vm = c.ok("VM.clone", &[found[0].clone(), s("integrity")]);
    let vm = vm.as_str().unwrap().to_owned();
    c.ok("VM.set_is_a_template", &[s(&vm), Value::Bool(false)]);
    let Value::Array(pools) = c.ok("pool.get_all", &[]) else {
        panic!()
    };
    let sr = c.field("pool", pools[0].as_str().unwrap(), "default_SR");
    let sr_uuid = c.field("SR", sr.as_str().unwrap(), "uuid");
    let sr_dir = fvd.data.join("sr").join(sr_uuid.as_str().unwrap());
    let size = 16 * TIB;
    let data = c.ok(
        "VDI.create",
        &[record(&[
            ("name_label", s("data")),
            ("SR", sr.clone()),
            ("virtual_size", Value::Int(size as i64)),
            ("type", s("user")),
        ])],
    );
    let data = data.as_str().unwrap().to_owned();
    c.attach_disk(&vm, &data, "1", false);
    let uuid = c.field("VM", &vm, "uuid");
    let run_dir = fvd.data.join("vms").join(uuid.as_str().unwrap());
    let boot = |c: &Client| {
        c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
        let mut console = Console::connect(&run_dir);
        c.ok("VM.unpause", &[s(&vm)]);
        console.wait_for("guest# ");
        console
    };
    let mut console = boot(&c);
    let last_mib = size / MIB - 1;
    let sectors = console.output("cat /sys/block/vdb/size");
    assert!(sectors.contains(&(size / 512).to_string()), "{sectors}");
    // Random data at the start and in the last MiB, written through to the disk.
    let written = run_or_explain(
        &fvd,
        &mut console,
        &format!(
            "dd if=/dev/urandom of=/dev/vdb bs=1M count=4 conv=fsync 2>/dev/null; \
         dd if=/dev/urandom of=/dev/vdb bs=1M count=1 seek={last_mib} conv=fsync 2>/dev/null; \
         dd if=/dev/vdb bs=1M count=4 2>/dev/null | md5sum; \
         dd if=/dev/vdb bs=1M count=1 skip={last_mib} 2>/dev/null | md5sum"
        ),
    );
    let [head_a, tail_a] = <[String; 2]>::try_from(md5s(&written)).expect(&written);

    // A snapshot of the running VM, then the guest changes its data.
    let snap = c.ok("VM.snapshot", &[s(&vm), s("before")]);
    let snap = snap.as_str().unwrap().to_owned();
    let changed = console.output(
        "dd if=/dev/urandom of=/dev/vdb bs=1M count=4 conv=fsync 2>/dev/null; \
         dd if=/dev/vdb bs=1M count=4 2>/dev/null | md5sum",
    );
    let [head_b] = <[String; 1]>::try_from(md5s(&changed)).expect(&changed);
    assert_ne!(head_a, head_b);

    // Grown by 1 GiB while it runs: the guest sees it and writes past the old end.
    let grown = size + 1024 * MIB;
    c.ok("VDI.resize", &[s(&data), Value::Int(grown as i64)]);
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !console
        .output("cat /sys/block/vdb/size")
        .contains(&(grown / 512).to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the guest never saw the new size"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let beyond = size / MIB + 512;
    let past = console.output(&format!(
        "dd if=/dev/urandom of=/dev/vdb bs=1M count=1 seek={beyond} conv=fsync 2>/dev/null; \
         dd if=/dev/vdb bs=1M count=1 skip={beyond} 2>/dev/null | md5sum"
    ));
    let [past_c] = <[String; 1]>::try_from(md5s(&past)).expect(&past);
    let task = c.ok("Async.VM.clean_shutdown", &[s(&vm)]);
    wait_task(&c, task.as_str().unwrap());

    // What the host reads from each VDI.
    let file = |vdi: &str| sr_dir.join(c.field("VDI", vdi, "location").as_str().unwrap());
    let read = |vdi: &str, at: u64, len: u64| {
        let disk = fv_disk::open_disk(&file(vdi), Some(fv_disk::Format::Qcow2), true)
            .expect("open the VDI");
        let mut buf = vec![0u8; len as usize];
        disk.read_at(&mut buf, at).expect("read");
        md5(&buf)
    };
    let disk_of = |vm: &str| {
        let Value::Array(vbds) = c.field("VM", vm, "VBDs") else {
            panic!()
        };
        vbds.iter()
            .map(|v| v.as_str().unwrap())
            .find(|v| c.field("VBD", v, "userdevice") == s("1"))
            .map(|v| c.field("VBD", v, "VDI").as_str().unwrap().to_owned())
            .expect("the data disk")
    };
    let snap_data = disk_of(&snap);
    assert_eq!(read(&snap_data, 0, 4 * MIB), head_a, "the snapshot");
    assert_eq!(
        read(&snap_data, last_mib * MIB, MIB),
        tail_a,
        "the snapshot"
    );
    assert_eq!(
        c.field("VDI", &snap_data, "virtual_size").as_int(),
        Some(size as i64)
    );
    assert_eq!(read(&data, 0, 4 * MIB), head_b, "the VDI");
    assert_eq!(read(&data, last_mib * MIB, MIB), tail_a, "the VDI");
    assert_eq!(
        read(&data, beyond * MIB, MIB),
        past_c,
        "the VDI, past the old end"
    );
    let clone = c.ok(
        "VDI.clone",
        &[s(&snap_data), Value::Struct(Default::default())],
    );
    let clone = clone.as_str().unwrap().to_owned();
    assert_eq!(read(&clone, 0, 4 * MIB), head_a, "the clone");
    let copy = c.ok("VDI.copy", &[s(&data), sr.clone()]);
    let copy = copy.as_str().unwrap().to_owned();
    assert_eq!(read(&copy, 0, 4 * MIB), head_b, "the copy");
    assert_eq!(read(&copy, last_mib * MIB, MIB), tail_a, "the copy");
    assert_eq!(read(&copy, beyond * MIB, MIB), past_c, "the copy");

    // Exported as qcow2 and imported into a new VDI of the same size.
    let session = c.session.clone().unwrap();
    let exported = dir.0.join("export.qcow2");
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--unix-socket",
                fvd.socket.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl {args:?}: {out:?}");
    };
    curl(&[
        "-o",
        exported.to_str().unwrap(),
        &format!("http://localhost/export_raw_vdi?session_id={session}&vdi={data}&format=qcow2"),
    ]);
    let imported = c.ok(
        "VDI.create",
        &[record(&[
            ("name_label", s("imported")),
            ("SR", sr.clone()),
            ("virtual_size", Value::Int(grown as i64)),
            ("type", s("user")),
        ])],
    );
    let imported = imported.as_str().unwrap().to_owned();
    curl(&[
        "-T",
        exported.to_str().unwrap(),
        &format!(
            "http://localhost/import_raw_vdi?session_id={session}&vdi={imported}&format=qcow2"
        ),
    ]);
    assert_eq!(read(&imported, 0, 4 * MIB), head_b, "the re-import");
    assert_eq!(
        read(&imported, last_mib * MIB, MIB),
        tail_a,
        "the re-import"
    );
    assert_eq!(read(&imported, beyond * MIB, MIB), past_c, "the re-import");

    // Reverted, the guest reads its first data again, on a disk of the old size.
    c.ok("VM.revert", &[s(&snap)]);
    let mut console = boot(&c);
    let again = console.output(&format!(
        "cat /sys/block/vdb/size; dd if=/dev/vdb bs=1M count=4 2>/dev/null | md5sum; \
         dd if=/dev/vdb bs=1M count=1 skip={last_mib} 2>/dev/null | md5sum"
    ));
    assert!(again.contains(&(size / 512).to_string()), "{again}");
    assert_eq!(md5s(&again), [head_a.clone(), tail_a.clone()], "{again}");
    c.ok("VM.hard_shutdown", &[s(&vm)]);

    // Every file fvd wrote passes qemu-img check.
    for entry in std::fs::read_dir(&sr_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".qcow2") || name.starts_with('.') {
            continue;
        }
        let out = std::process::Command::new("qemu-img")
            .args(["check", "-q"])
            .arg(entry.path())
            .output()
            .expect("qemu-img");
        assert!(out.status.success(), "qemu-img check {name}: {out:?}");
    }
}

#[test]
fn nics_and_discs_change_on_a_running_guest() {
    run_inside("inside_nics_and_discs_change_on_a_running_guest");
}

/// `VIF.plug` on a running Debian guest: fv-vmm puts a virtio-net device in a free PCI slot
/// and tells the guest through ACPI; the guest's kernel finds the NIC with the VIF's MAC,
/// and it reaches an address on the host side of the network's bridge. `VIF.unplug` takes
/// it away again (the guest ejects it), and it can be plugged once more. A disc inserted
/// into an empty CD drive of the running VM shows its size and data to the guest; ejected,
/// the drive is empty again.
#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_nics_and_discs_change_on_a_running_guest() {
    let Some((dir, fvd)) = fvd_with_default_template("hotplug") else {
        return;
    };
    let c = fvd.root();
    let Value::Array(found) = c.ok("VM.get_by_name_label", &[s("Debian 12 (busybox root)")]) else {
        panic!("VM.get_by_name_label");
    };
    let vm = c.ok("VM.clone", &[found[0].clone(), s("hotplug")]);
    let vm = vm.as_str().unwrap().to_owned();
    c.ok("VM.set_is_a_template", &[s(&vm), Value::Bool(false)]);
    let network = c.ok("network.create", &[record(&[("name_label", s("hot"))])]);
    let network = network.as_str().unwrap().to_owned();
    // An ISO library with one disc, and an empty CD drive (device 3: the guest's vdb).
    let library = dir.0.join("isos");
    std::fs::create_dir_all(&library).unwrap();
    let disc: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(library.join("disc.iso"), &disc).unwrap();
    let Value::Array(hosts) = c.ok("host.get_all", &[]) else {
        panic!()
    };
    let iso_sr = c.ok(
        "SR.create",
        &[
            hosts[0].clone(),
            record(&[("location", s(library.to_str().unwrap()))]),
            Value::Int(0),
            s("isos"),
            s(""),
            s("iso"),
            s("iso"),
            Value::Bool(false),
            record(&[]),
        ],
    );
    let Value::Array(iso_vdis) = c.field("SR", iso_sr.as_str().unwrap(), "VDIs") else {
        panic!()
    };
    let cd = c.ok(
        "VBD.create",
        &[record(&[
            ("VM", s(&vm)),
            ("VDI", s("OpaqueRef:NULL")),
            ("userdevice", s("3")),
            ("bootable", Value::Bool(false)),
            ("mode", s("RO")),
            ("type", s("CD")),
            ("empty", Value::Bool(true)),
        ])],
    );
    let uuid = c.field("VM", &vm, "uuid");
    let run_dir = fvd.data.join("vms").join(uuid.as_str().unwrap());
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    let mut console = Console::connect(&run_dir);
    c.ok("VM.unpause", &[s(&vm)]);
    console.wait_for("guest# ");
    let before = console.output("ls /sys/class/net");

    let mac = "52:54:00:5a:11:0e";
    let vif = c.ok(
        "VIF.create",
        &[record(&[
            ("device", s("4")),
            ("network", s(&network)),
            ("VM", s(&vm)),
            ("MAC", s(mac)),
            ("MTU", Value::Int(1500)),
        ])],
    );
    c.ok("VIF.plug", std::slice::from_ref(&vif));
    // The guest's kernel finds it: an interface with the VIF's MAC.
    let find = format!("grep -l {mac} /sys/class/net/*/address");
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let iface = loop {
        let out = run_or_explain(&fvd, &mut console, &find);
        if let Some(line) = out.lines().find(|l| l.starts_with("/sys/class/net/")) {
            break line.split('/').nth(4).unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no NIC with {mac} in the guest (before: {before}):\n{}",
            console.seen
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        !before.contains(&iface),
        "{iface} was there before: {before}"
    );
    assert_eq!(
        c.err("VIF.plug", std::slice::from_ref(&vif)).code,
        "DEVICE_ALREADY_ATTACHED"
    );

    // It works: the guest reaches the host's address on the network's bridge.
    let bridge = c.field("network", &network, "bridge");
    fvd.in_netns(&[
        "ip",
        "addr",
        "add",
        "10.77.0.1/24",
        "dev",
        bridge.as_str().unwrap(),
    ]);
    fvd.in_netns(&["ip", "link", "set", bridge.as_str().unwrap(), "up"]);
    let ping = run_or_explain(
        &fvd,
        &mut console,
        &format!(
            "ip addr add 10.77.0.2/24 dev {iface}; ip link set {iface} up; \
             ping -c 3 -W 5 10.77.0.1 >/dev/null && echo PING-$((40+2))"
        ),
    );
    assert!(ping.contains("PING-42"), "{ping}");

    // Unplugged: the guest lets go of it (ACPI eject), the interface and the tap are gone.
    c.ok("VIF.unplug", std::slice::from_ref(&vif));
    let left = run_or_explain(&fvd, &mut console, "ls /sys/class/net");
    assert!(!left.contains(&iface), "{iface} is still there: {left}");
    let tap = format!("vif{}.4", &uuid.as_str().unwrap()[..8]);
    let link = fvd.in_netns(&["ip", "-o", "link", "show", "dev", &tap]);
    assert!(link.is_empty(), "the tap outlived the unplug: {link}");
    assert_eq!(
        c.err("VIF.unplug", std::slice::from_ref(&vif)).code,
        "DEVICE_ALREADY_DETACHED"
    );
    let vif_ref = vif.as_str().unwrap();
    assert_eq!(
        c.field("VIF", vif_ref, "currently_attached"),
        Value::Bool(false)
    );
    // And plugged again.
    c.ok("VIF.plug", std::slice::from_ref(&vif));
    assert_eq!(
        c.field("VIF", vif_ref, "currently_attached"),
        Value::Bool(true)
    );
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !run_or_explain(&fvd, &mut console, &find).contains("/sys/class/net/") {
        assert!(Instant::now() < deadline, "the NIC did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }

    // A disc inserted into the empty CD drive: the guest sees its size and reads its data;
    // ejected, the drive is empty again.
    let size_of_vdb = "cat /sys/block/vdb/size";
    assert!(
        run_or_explain(&fvd, &mut console, size_of_vdb)
            .lines()
            .any(|l| l.trim() == "0"),
        "the empty drive"
    );
    c.ok("VBD.insert", &[cd.clone(), iso_vdis[0].clone()]);
    let sectors = (disc.len() / 512).to_string();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !run_or_explain(&fvd, &mut console, size_of_vdb)
        .lines()
        .any(|l| l.trim() == sectors)
    {
        assert!(Instant::now() < deadline, "the guest never saw the disc");
        std::thread::sleep(Duration::from_millis(200));
    }
    let read = run_or_explain(
        &fvd,
        &mut console,
        "dd if=/dev/vdb bs=64k 2>/dev/null | md5sum",
    );
    assert_eq!(md5s(&read), [md5(&disc)], "{read}");
    c.ok("VBD.eject", &[cd]);
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !run_or_explain(&fvd, &mut console, size_of_vdb)
        .lines()
        .any(|l| l.trim() == "0")
    {
        assert!(Instant::now() < deadline, "the guest never saw the eject");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok("VM.hard_shutdown", &[s(&vm)]);
}
