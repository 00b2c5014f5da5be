//! End-to-end tests of fv-vmm with the tiny hand-written guests in `tests/guests/`.
//!
//! Each test boots a guest (assembled and linked at test time, see `common::guest`) and
//! checks what a user would: the serial output, the exit status (0 powered off, 10 reboot,
//! 11 crash, 1 VMM error) and the API's answers. Every run is bounded by
//! `common::VM_TIMEOUT`; a hung VMM is killed and fails the test.

mod common;

use common::*;
use std::time::Duration;

/// Number of each kind of exit the `exits` guest makes (its `K`).
const EXITS_K: u64 = 100;

fn assert_no_panic(vmm: &Vmm) {
    assert!(
        !vmm.stderr().contains("panicked"),
        "fv-vmm panicked\n{}",
        vmm.describe()
    );
}

/// Boot `guest` with `extra` flags, wait for it to exit; assert the exit code and that
/// the serial output contains `expect_out`.
fn boot_and_expect(guest_name: &str, extra: &[&str], code: i32, expect_out: &str) -> Vmm {
    let mut vmm = Vmm::boot(&guest(guest_name), extra);
    let got = vmm.wait_exit();
    assert_eq!(
        got,
        code,
        "exit status of guest {guest_name}\n{}",
        vmm.describe()
    );
    assert!(
        vmm.stdout().contains(expect_out),
        "missing {expect_out:?}\n{}",
        vmm.describe()
    );
    assert_no_panic(&vmm);
    vmm
}

// ---- the guests themselves ----

/// Every guest in tests/guests assembles and links into what fv-vmm's ELF path expects:
/// ELF64 x86-64, entry at 0x200000, one PT_LOAD at p_paddr 0x200000, no PT_NOTE (no PVH).
#[test]
fn guests_build_as_elf64_without_pvh_note() {
    let mut names: Vec<String> = std::fs::read_dir(guests_dir())
        .expect("read tests/guests")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".S").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 9, "guests: {names:?}");
    for name in &names {
        let elf = std::fs::read(guest(name)).unwrap();
        let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
        assert_eq!(&elf[..4], b"\x7fELF", "{name}");
        assert_eq!(elf[4], 2, "{name}: not ELFCLASS64");
        assert_eq!(u16_at(18), 62, "{name}: not EM_X86_64");
        assert_eq!(u64_at(24), 0x200000, "{name}: entry");
        let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
        let mut loads = 0;
        for i in 0..phnum as usize {
            let ph = phoff + i * phentsize;
            let p_type = u32_at(ph);
            assert_ne!(p_type, 4, "{name}: has a PT_NOTE");
            if p_type == 1 {
                loads += 1;
                assert_eq!(u64_at(ph + 24), 0x200000, "{name}: p_paddr");
            }
        }
        assert_eq!(loads, 1, "{name}: PT_LOAD count");
    }
}

// ---- power off, reboot, crash ----

#[test]
fn hello_prints_and_powers_off() {
    boot_and_expect("hello", &[], 0, "hello from ferrovisor\n");
}

#[test]
fn serial_file_receives_output() {
    let dir = TempDir::new("serfile");
    let out = dir.join("serial.log");
    let path = format!("file={}", out.display());
    let mut vmm = Vmm::spawn([
        "--kernel",
        guest("hello").to_str().unwrap(),
        "--serial",
        &path,
    ]);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    let log = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("read {}: {e}\n{}", out.display(), vmm.describe()));
    assert!(
        log.contains("hello from ferrovisor\n"),
        "serial file: {log:?}"
    );
    assert!(
        !vmm.stdout().contains("hello from ferrovisor"),
        "{}",
        vmm.describe()
    );
    assert_no_panic(&vmm);
}

#[test]
fn serial_none_discards_output() {
    let mut vmm = Vmm::spawn([
        "--kernel",
        guest("hello").to_str().unwrap(),
        "--serial",
        "none",
    ]);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert!(
        !vmm.stdout().contains("hello from ferrovisor"),
        "{}",
        vmm.describe()
    );
    assert_no_panic(&vmm);
}

#[test]
fn reboot_through_i8042_exits_10() {
    boot_and_expect("reboot_i8042", &[], 10, "rebooting via i8042\n");
}

#[test]
fn reboot_through_acpi_exits_10() {
    boot_and_expect("reboot_acpi", &[], 10, "rebooting via acpi\n");
}

#[test]
fn reboot_through_the_reset_vector_exits_10() {
    boot_and_expect("reboot_bios", &[], 10, "rebooting via the reset vector\n");
}

#[test]
fn triple_fault_exits_11() {
    let vmm = boot_and_expect("triple_fault", &[], 11, "triple faulting\n");
    assert!(!vmm.stdout().contains("still alive"), "{}", vmm.describe());
    // The report says where the vCPU was: the empty IDT the guest loaded is what a
    // reader of the log would find the cause in.
    let err = vmm.stderr();
    assert!(
        err.contains("RIP 0x") && err.contains("IDT 0x0/0x0"),
        "{}",
        vmm.describe()
    );
}

#[test]
fn pvpanic_exits_11() {
    boot_and_expect("pvpanic", &[], 11, "panicking via pvpanic\n");
}

// ---- SMP ----

fn smp(n: u32) {
    let n_s = n.to_string();
    let cmdline = format!("cpus={n}");
    let vmm = boot_and_expect("smp", &["--vcpus", &n_s, "--cmdline", &cmdline], 0, "");
    let out = vmm.stdout();
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    for i in 0..n {
        let want = format!("cpu {i} up");
        assert!(
            lines.contains(&want.as_str()),
            "missing {want:?}\n{}",
            vmm.describe()
        );
    }
    let all = format!("all {n} cpus up");
    assert!(
        lines.contains(&all.as_str()),
        "missing {all:?}\n{}",
        vmm.describe()
    );
}

#[test]
fn smp_1_vcpu() {
    smp(1);
}

#[test]
fn smp_2_vcpus_start_with_init_sipi() {
    smp(2);
}

#[test]
fn smp_4_vcpus_start_with_init_sipi() {
    smp(4);
}

#[test]
fn smp_32_vcpus_start_with_init_sipi() {
    smp(32);
}

// ---- serial input ----

#[test]
fn echo_serial_input() {
    let mut vmm = Vmm::boot(&guest("echo"), &[]);
    vmm.wait_for_output("echo: ready\n");
    vmm.write_stdin(b"hello, World 42\n");
    vmm.wait_for_output("HELLO, WORLD 42\n");
    vmm.write_stdin(b"quit\n");
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert!(vmm.stdout().contains("QUIT\nbye\n"), "{}", vmm.describe());
    assert_no_panic(&vmm);
}

/// Much more input than the UART's 64-byte FIFO, in one write: fv-vmm holds the rest back
/// until the guest drains the FIFO, and nothing is lost or reordered.
#[test]
fn serial_input_larger_than_the_fifo_arrives_whole() {
    let mut vmm = Vmm::boot(&guest("echo"), &[]);
    vmm.wait_for_output("echo: ready\n");
    let line: String = (0..4000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    vmm.write_stdin(format!("{line}\nquit\n").as_bytes());
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    let expected = format!("{}\nQUIT\nbye\n", line.to_uppercase());
    assert!(vmm.stdout().contains(&expected), "{}", vmm.describe());
}

/// The echo guest with its serial port on a socket, and a client connected to it.
fn echo_guest_on_a_serial_socket(tag: &str) -> (TempDir, Vmm, std::os::unix::net::UnixStream) {
    let dir = TempDir::new(tag);
    let sock = dir.join("serial.sock");
    let serial = format!("socket={}", sock.display());
    let vmm = Vmm::boot(&guest("echo"), &["--serial", &serial]);
    let conn = poll(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).ok()
    })
    .unwrap_or_else(|| panic!("serial socket never accepted\n{}", vmm.describe()));
    (dir, vmm, conn)
}

#[test]
fn echo_over_serial_socket() {
    use std::io::{Read, Write};
    let (_dir, mut vmm, mut conn) = echo_guest_on_a_serial_socket("sersock");
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    conn.write_all(b"over the socket\n").unwrap();
    // The guest's first line comes too, whether it was written before we connected (fv-vmm
    // keeps the recent output for the next client) or after.
    let mut got = Vec::new();
    let found = poll(Duration::from_secs(10), || {
        let mut buf = [0u8; 256];
        if let Ok(n) = conn.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got)
            .contains("echo: ready\nOVER THE SOCKET\n")
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no echo on the serial socket: {:?}\n{}",
        String::from_utf8_lossy(&got),
        vmm.describe()
    );
    conn.write_all(b"quit\n").unwrap();
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
}

/// A console client that types a lot without reading (a paste into a stuck browser tab)
/// holds neither the guest nor fv-vmm: the guest echoes all of it while the client does
/// not read, and the client then gets every byte of the echo, in order. Writing the UART
/// blocked on the client once: the guest stopped reading input, the client's writes
/// stopped, and both waited for ever.
#[test]
fn a_console_client_that_types_without_reading_loses_nothing() {
    use std::io::{Read, Write};
    let (_dir, mut vmm, mut conn) = echo_guest_on_a_serial_socket("serpaste");
    // A small send buffer, so that a paste of 40 KB is more than the socket holds both
    // ways (one-byte UART writes fill fv-vmm's side after about 270 bytes): here the old
    // blocking UART deadlocked.
    let sndbuf: libc::c_int = 4096;
    // SAFETY: a valid socket fd and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&conn),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&sndbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_SNDBUF: {}", std::io::Error::last_os_error());
    let line = format!("{}\n", "pasted text ".repeat(5));
    let lines = 40_000 / line.len();
    let typed = line.repeat(lines);
    conn.set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    if let Err(e) = conn.write_all(typed.as_bytes()) {
        panic!("the console stopped taking input: {e}\n{}", vmm.describe());
    }
    let expected = typed.to_uppercase();
    let mut got = Vec::new();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let complete = poll(Duration::from_secs(60), || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        // Output from before we connected may be dropped: start at the first echo.
        let text = String::from_utf8_lossy(&got);
        let echo = text.find("PASTED").map_or("", |at| &text[at..]);
        (echo.len() >= expected.len()).then(|| echo.to_string())
    });
    let echo = complete.unwrap_or_else(|| {
        panic!(
            "the echo did not all arrive: {} of {} bytes\n{}",
            got.len(),
            expected.len(),
            vmm.describe()
        )
    });
    assert!(echo == expected, "the echo differs from what was typed");
    conn.write_all(b"quit\n").unwrap();
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
}

// ---- API: exit counters, pause/resume, stop, reset ----

fn exits_of(vm: &serde_json::Value, key: &str) -> u64 {
    vm["exits"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("GET /vm has no exits.{key}: {vm}"))
}

#[test]
fn exits_counted_then_pause_resume_stop() {
    let dir = TempDir::new("exits");
    let sock = dir.join("api.sock");
    let mut vmm = Vmm::boot(
        &guest("exits"),
        &[
            "--vcpus",
            "2",
            "--memory",
            "96",
            "--api-socket",
            sock.to_str().unwrap(),
        ],
    );
    vmm.wait_for_output("done\n");
    let out = vmm.stdout();
    assert!(
        out.contains("mmio reads ok\n"),
        "unowned MMIO must read all ones\n{}",
        vmm.describe()
    );
    assert!(
        out.contains("io read ok\n"),
        "unowned port must read 0xff\n{}",
        vmm.describe()
    );

    let api = vmm.api();
    let vm = api.vm();
    assert_eq!(vm["state"], "Running", "{vm}");
    assert_eq!(vm["vcpus"], 2, "{vm}");
    assert_eq!(vm["memory_mib"], 96, "{vm}");
    assert!(vm["uptime_ms"].as_u64().is_some(), "{vm}");
    assert!(exits_of(&vm, "io_out") >= EXITS_K, "{vm}");
    assert!(exits_of(&vm, "io_in") >= 1, "{vm}");
    assert!(exits_of(&vm, "mmio_write") >= EXITS_K, "{vm}");
    assert!(exits_of(&vm, "mmio_read") >= EXITS_K, "{vm}");
    assert!(exits_of(&vm, "unhandled") > 3 * EXITS_K, "{vm}");
    for key in ["hlt", "other"] {
        exits_of(&vm, key);
    }

    // resume while running is a bad state
    let r = api.put("/vm/resume");
    assert_eq!(r.status, 400, "resume while Running: {r:?}");
    assert!(r.json()["fault_message"].is_string(), "{r:?}");

    let r = api.put("/vm/pause");
    assert_eq!(r.status, 204, "pause: {r:?}");
    assert_eq!(api.vm()["state"], "Paused");
    let r = api.put("/vm/resume");
    assert_eq!(r.status, 204, "resume: {r:?}");
    assert_eq!(api.vm()["state"], "Running");

    let r = api.put("/vm/stop");
    assert_eq!(r.status, 204, "stop: {r:?}");
    assert_eq!(
        vmm.wait_exit(),
        0,
        "exit status after stop\n{}",
        vmm.describe()
    );
    assert_no_panic(&vmm);
}

#[test]
fn unknown_api_path_is_an_error_not_a_crash() {
    let dir = TempDir::new("badapi");
    let sock = dir.join("api.sock");
    let mut vmm = Vmm::boot(&guest("exits"), &["--api-socket", sock.to_str().unwrap()]);
    vmm.wait_for_output("done\n");
    let api = vmm.api();
    let r = api.get("/no/such/thing");
    assert!((400..500).contains(&r.status), "{r:?}");
    let r = api.request("PUT", "/vm/pause", Some("{not json"));
    assert!(r.status == 204 || (400..500).contains(&r.status), "{r:?}");
    // still serving, still alive
    assert!(api.vm()["state"].is_string());
    assert!(vmm.running(), "{}", vmm.describe());
    let r = api.put("/vm/stop");
    assert_eq!(r.status, 204, "stop: {r:?}");
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
}

#[test]
fn spin_pause_freezes_counters_resume_and_reset() {
    let dir = TempDir::new("spin");
    let sock = dir.join("api.sock");
    let mut vmm = Vmm::boot(&guest("spin"), &["--api-socket", sock.to_str().unwrap()]);
    vmm.wait_for_output("spin: start\n");
    let api = vmm.api();

    let first = api.vm();
    let io_out = |vm: &serde_json::Value| exits_of(vm, "io_out");
    let grown = poll(Duration::from_secs(10), || {
        let vm = api.vm();
        (io_out(&vm) > io_out(&first)).then_some(vm)
    });
    assert!(grown.is_some(), "io_out never grew while running: {first}");

    let r = api.put("/vm/pause");
    assert_eq!(r.status, 204, "pause: {r:?}");
    let a = api.vm();
    assert_eq!(a["state"], "Paused", "{a}");
    std::thread::sleep(Duration::from_millis(300));
    let b = api.vm();
    assert_eq!(a["exits"], b["exits"], "exit counters moved while paused");

    let r = api.put("/vm/resume");
    assert_eq!(r.status, 204, "resume: {r:?}");
    assert_eq!(api.vm()["state"], "Running");
    let grown = poll(Duration::from_secs(10), || {
        let vm = api.vm();
        (io_out(&vm) > io_out(&b)).then_some(vm)
    });
    let after = grown.unwrap_or_else(|| panic!("io_out never grew after resume: {b}"));
    assert!(
        after["uptime_ms"].as_u64() > first["uptime_ms"].as_u64(),
        "uptime did not grow: {first} -> {after}"
    );

    let r = api.put("/vm/reset");
    assert_eq!(r.status, 204, "reset: {r:?}");
    vmm.wait_for_output_n("spin: start\n", 2, VM_TIMEOUT);
    assert!(
        vmm.running(),
        "fv-vmm exited after reset\n{}",
        vmm.describe()
    );
    assert_eq!(api.vm()["state"], "Running");

    let r = api.put("/vm/stop");
    assert_eq!(r.status, 204, "stop: {r:?}");
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
}

#[test]
fn stop_while_paused_exits_0() {
    let dir = TempDir::new("stoppaused");
    let sock = dir.join("api.sock");
    let mut vmm = Vmm::boot(&guest("spin"), &["--api-socket", sock.to_str().unwrap()]);
    vmm.wait_for_output("spin: start\n");
    let api = vmm.api();
    assert_eq!(api.put("/vm/pause").status, 204);
    let r = api.put("/vm/stop");
    assert_eq!(r.status, 204, "stop: {r:?}");
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
}

/// The exit file's JSON.
fn exit_file(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the exit file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("exit file {text:?}: {e}"))
}

#[test]
fn started_paused_runs_nothing_until_resumed_and_reports_its_exit() {
    let dir = TempDir::new("paused");
    let sock = dir.join("api.sock");
    let exit = dir.join("exit.json");
    let mut vmm = Vmm::boot(
        &guest("hello"),
        &[
            "--paused",
            "--api-socket",
            sock.to_str().unwrap(),
            "--exit-file",
            exit.to_str().unwrap(),
        ],
    );
    let api = vmm.api();
    assert_eq!(api.vm()["state"], "Paused");
    // Unpaused, this guest prints and powers off within milliseconds.
    std::thread::sleep(Duration::from_millis(500));
    assert!(vmm.running(), "{}", vmm.describe());
    assert_eq!(vmm.stdout(), "", "a paused VM ran guest code");
    assert_eq!(
        std::fs::read_to_string(&exit).unwrap(),
        "",
        "the exit file is empty while the VM runs"
    );
    assert_eq!(api.put("/vm/pause").status, 400, "already paused");
    assert_eq!(api.put("/vm/resume").status, 204);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert!(vmm.stdout().contains("hello from ferrovisor\n"));
    let e = exit_file(&exit);
    assert_eq!(
        (e["status"].as_i64(), e["reason"].as_str()),
        (Some(0), Some("poweroff")),
        "{e}"
    );
    assert_no_panic(&vmm);
}

#[test]
fn the_exit_file_names_crashes_and_bad_configs() {
    let dir = TempDir::new("exitfile");
    let exit = dir.join("exit.json");
    let path = exit.to_str().unwrap();
    boot_and_expect(
        "triple_fault",
        &["--exit-file", path],
        11,
        "triple faulting\n",
    );
    let e = exit_file(&exit);
    assert_eq!(e["status"], 11, "{e}");
    assert_eq!(e["reason"], "crash", "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("triple fault"),
        "{e}"
    );

    // Paused with no API to resume it: refused before anything runs.
    let mut vmm = Vmm::boot(&guest("hello"), &["--paused", "--exit-file", path]);
    assert_eq!(vmm.wait_exit(), 1, "{}", vmm.describe());
    let e = exit_file(&exit);
    assert_eq!(e["reason"], "vmm_error", "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("--paused needs --api-socket"),
        "{e}"
    );
}

// ---- PCI ----

/// The `pci_scan` guest's report: (lines starting with "pci " or "virtio ", the summary).
fn pci_scan(extra: &[&str]) -> Vec<String> {
    let vmm = boot_and_expect("pci_scan", extra, 0, "ecam: agrees\n");
    vmm.stdout()
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| l.starts_with("pci") || l.starts_with("virtio"))
        .collect()
}

#[test]
fn pci_scan_finds_the_host_bridge_through_cf8_and_ecam() {
    assert_eq!(
        pci_scan(&[]),
        [
            "pci: scan",
            "pci 00:00.0 1b36:0008 class 060000",
            "pci: 1 devices"
        ]
    );
}

#[test]
fn pci_scan_finds_virtio_blk_and_rng() {
    let dir = TempDir::new("pciscan");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let disk_flag = format!("path={},serial=fv-test-0", disk.display());
    let ro_flag = format!("path={},format=raw,readonly=on", disk.display());
    assert_eq!(
        pci_scan(&["--disk", &disk_flag, "--rng", "--disk", &ro_flag]),
        [
            "pci: scan",
            "pci 00:00.0 1b36:0008 class 060000",
            "pci 00:01.0 1af4:1042 class 010000",
            "virtio 00:01.0 num_queues 1",
            "pci 00:02.0 1af4:1042 class 010000",
            "virtio 00:02.0 num_queues 1",
            "pci 00:03.0 1af4:1044 class ff0000",
            "virtio 00:03.0 num_queues 1",
            "pci: 4 devices"
        ]
    );
}

#[test]
fn pci_devices_from_the_config_file() {
    let dir = TempDir::new("pcicfg");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let cfg = dir.join("vm.json");
    let json = serde_json::json!({
        "kernel": guest("pci_scan"),
        "memory_mib": 64,
        "disks": [{"path": disk, "format": "raw", "serial": "json-disk"}],
        "rng": true,
    });
    std::fs::write(&cfg, json.to_string()).unwrap();
    let mut vmm = Vmm::spawn(["--config", cfg.to_str().unwrap()]);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    let out = vmm.stdout();
    assert!(out.contains("pci 00:01.0 1af4:1042"), "{}", vmm.describe());
    assert!(out.contains("pci 00:02.0 1af4:1044"), "{}", vmm.describe());
    assert_no_panic(&vmm);
}

#[test]
fn api_lists_the_pci_devices() {
    let dir = TempDir::new("apidev");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let sock = dir.join("api.sock");
    let disk_flag = format!("path={}", disk.display());
    let mut vmm = Vmm::boot(
        &guest("park"),
        &[
            "--api-socket",
            sock.to_str().unwrap(),
            "--rng",
            "--disk",
            &disk_flag,
        ],
    );
    vmm.wait_for_output("ready");
    let vm = vmm.api().vm();
    assert_eq!(
        vm["devices"],
        serde_json::json!([
            {"id": "blk0", "kind": "virtio-blk", "pci": "0000:00:01.0",
             "path": disk.display().to_string(), "size": 1 << 20, "readonly": false,
             "paused": false},
            {"id": "rng", "kind": "virtio-rng", "pci": "0000:00:02.0"}
        ]),
        "{vm}"
    );
    assert_eq!(vmm.api().put("/vm/stop").status, 204);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
}

/// What fvd does to snapshot or grow a running VM's disk: pause it (flush, hold requests),
/// change the file, reopen it (a new size shows) or another file; a file that cannot be
/// opened leaves the disk paused and the VM running. All under the seccomp filters.
#[test]
fn api_pauses_and_reopens_a_disk() {
    let dir = TempDir::new("apireopen");
    let disk = dir.join("disk.qcow2");
    let qemu_img = |args: &[&str]| {
        let out = std::process::Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img (Debian qemu-utils)");
        assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
    };
    qemu_img(&["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "1M"]);
    let sock = dir.join("api.sock");
    let disk_flag = format!("path={},format=qcow2", disk.display());
    let mut vmm = Vmm::boot(
        &guest("park"),
        &["--api-socket", sock.to_str().unwrap(), "--disk", &disk_flag],
    );
    vmm.wait_for_output("ready");
    let api = vmm.api();
    let blk0 = |api: &Api| api.vm()["devices"][0].clone();
    assert_eq!(api.put("/vm/disks/blk0/pause").status, 204);
    assert_eq!(blk0(&api)["paused"], true);
    qemu_img(&["resize", "-q", disk.to_str().unwrap(), "3M"]);
    assert_eq!(blk0(&api)["size"], 1 << 20, "not reopened yet");
    assert_eq!(api.put("/vm/disks/blk0/reopen").status, 204);
    assert_eq!(blk0(&api)["size"], 3 << 20);
    assert_eq!(blk0(&api)["paused"], false);

    // Another file, raw this time.
    let other = dir.join("other.img");
    std::fs::write(&other, vec![0u8; 2 << 20]).unwrap();
    let body = format!(r#"{{"path": "{}", "format": "raw"}}"#, other.display());
    let r = api.request("PUT", "/vm/disks/blk0/reopen", Some(&body));
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(blk0(&api)["path"], other.display().to_string());
    assert_eq!(blk0(&api)["size"], 2 << 20);

    // A missing file: an error, the disk held, the VM still there; resume carries on.
    let body = format!(r#"{{"path": "{}"}}"#, dir.join("gone.img").display());
    let r = api.request("PUT", "/vm/disks/blk0/reopen", Some(&body));
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("stays paused"), "{r:?}");
    assert_eq!(blk0(&api)["paused"], true);
    assert_eq!(blk0(&api)["path"], other.display().to_string());
    assert_eq!(api.put("/vm/disks/blk0/resume").status, 204);
    assert_eq!(blk0(&api)["paused"], false);
    assert_eq!(api.put("/vm/disks/blk9/pause").status, 409);
    assert_eq!(api.put("/vm/stop").status, 204);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert_no_panic(&vmm);
}

// ---- virtio-net on taps, the power button ----

/// Runs `f` in a network namespace of its own, so the taps fv-vmm creates never appear on
/// this host's interfaces (fv-vmm inherits the namespace of the thread that spawns it).
fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    fv_hostnet::netns::run_in_new_netns(f).expect("a network namespace of our own")
}

#[test]
fn pci_scan_finds_virtio_net_first() {
    let dir = TempDir::new("pcinet");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let disk_flag = format!(
        "path={},bytes_per_sec=1000000,ops_per_sec=1000",
        disk.display()
    );
    let found = in_netns(|| {
        pci_scan(&[
            "--disk",
            &disk_flag,
            "--net",
            "tap=fvtap%d,rx_bytes_per_sec=1000000,tx_ops_per_sec=1000",
            "--rng",
        ])
    });
    assert_eq!(
        found,
        [
            "pci: scan",
            "pci 00:00.0 1b36:0008 class 060000",
            "pci 00:01.0 1af4:1041 class 020000",
            "virtio 00:01.0 num_queues 2",
            "pci 00:02.0 1af4:1042 class 010000",
            "virtio 00:02.0 num_queues 1",
            "pci 00:03.0 1af4:1044 class ff0000",
            "virtio 00:03.0 num_queues 1",
            "pci: 4 devices"
        ]
    );
}

/// `GET /vm` names each NIC's tap (the kernel's choice for a created one) and MAC; created
/// taps are up while the VM runs and gone once fv-vmm exits. The power button is accepted
/// on a guest that ignores it (the `park` guest never enables interrupts).
#[test]
fn nics_on_created_taps_and_the_power_button() {
    let dir = TempDir::new("apinet");
    let sock = dir.join("api.sock");
    in_netns(|| {
        let mut vmm = Vmm::boot(
            &guest("park"),
            &[
                "--api-socket",
                sock.to_str().unwrap(),
                "--net",
                "tap=fvtap%d",
                "--net",
                "tap=fvx%d,mac=52:54:00:AB:CD:EF",
            ],
        );
        vmm.wait_for_output("ready");
        let api = vmm.api();
        let vm = api.vm();
        let devices = vm["devices"].as_array().unwrap().clone();
        assert_eq!(devices.len(), 2, "{vm}");
        assert_eq!(devices[0]["id"], "net0", "{vm}");
        assert_eq!(devices[0]["kind"], "virtio-net", "{vm}");
        assert_eq!(devices[0]["pci"], "0000:00:01.0", "{vm}");
        assert_eq!(devices[0]["tap"], "fvtap0", "{vm}");
        let mac = devices[0]["mac"].as_str().unwrap().to_string();
        assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{vm}");
        assert_eq!(devices[1]["id"], "net1", "{vm}");
        assert_eq!(devices[1]["tap"], "fvx0", "{vm}");
        assert_eq!(devices[1]["mac"], "52:54:00:ab:cd:ef", "{vm}");
        assert!(fv_hostnet::link::is_up("fvtap0").unwrap());
        let err = vmm.stderr();
        assert!(err.contains("fv-vmm: net0: created tap fvtap0"), "{err}");
        assert!(err.contains("fv-vmm: net1: created tap fvx0"), "{err}");

        assert_eq!(api.put("/vm/power-button").status, 204);
        assert_eq!(api.get("/vm/power-button").status, 405);
        assert!(vmm.running(), "{}", vmm.describe());
        assert_eq!(api.put("/vm/pause").status, 204);
        assert_eq!(api.put("/vm/power-button").status, 204);
        assert_eq!(api.put("/vm/stop").status, 204);
        assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
        assert_no_panic(&vmm);
        assert!(!fv_hostnet::link::exists("fvtap0").unwrap());
        assert!(!fv_hostnet::link::exists("fvx0").unwrap());
    });
}

#[test]
fn nics_from_the_config_file() {
    let dir = TempDir::new("netcfg");
    let cfg = dir.join("vm.json");
    let json = serde_json::json!({
        "kernel": guest("pci_scan"),
        "memory_mib": 64,
        "nets": [{"tap": "fvj%d", "mac": "52:54:00:00:00:01", "tx_bytes_per_sec": 100000}],
    });
    std::fs::write(&cfg, json.to_string()).unwrap();
    in_netns(|| {
        let mut vmm = Vmm::spawn(["--config", cfg.to_str().unwrap()]);
        assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
        assert!(
            vmm.stdout().contains("pci 00:01.0 1af4:1041"),
            "{}",
            vmm.describe()
        );
        assert_no_panic(&vmm);
    });
}

#[test]
fn bad_nics_are_refused() {
    in_netns(|| {
        expect_error(
            &["--kernel", &hello_path(), "--net", "tap=fvnosuch0"],
            &[1],
            "no such tap",
        );
        expect_error(
            &["--kernel", &hello_path(), "--net", "tap=lo"],
            &[1],
            "not a tap",
        );
        for bad in [
            "fvtap0",
            "tap=fvtap0,mac=52:54:00:00:00",
            "tap=fvtap0,mac=ff:ff:ff:ff:ff:ff",
            "tap=fvtap0,rx_bytes_per_sec=0",
            "tap=fvtap0,queues=2",
            "tap=fv/tap%d",
        ] {
            expect_error(&["--kernel", &hello_path(), "--net", bad], &[1], "--net");
        }
    });
}

// ---- JSON config ----

#[test]
fn config_file_boots_hello() {
    let dir = TempDir::new("config");
    let cfg = dir.join("vm.json");
    let json = serde_json::json!({
        "kernel": guest("hello"),
        "cmdline": "console=ttyS0",
        "vcpus": 1,
        "memory_mib": 64,
        "serial": "stdio",
    });
    std::fs::write(&cfg, json.to_string()).unwrap();
    let mut vmm = Vmm::spawn(["--config", cfg.to_str().unwrap()]);
    assert_eq!(vmm.wait_exit(), 0, "{}", vmm.describe());
    assert!(
        vmm.stdout().contains("hello from ferrovisor\n"),
        "{}",
        vmm.describe()
    );
    assert_no_panic(&vmm);
}

// ---- bad input: exit 1, one clear line on stderr, no panic ----

/// Run fv-vmm with `args`; assert it exits with one of `codes`, says something on stderr
/// mentioning `mention` (case-insensitive), does not panic, and (for exit 1) says it in
/// one line.
fn expect_error(args: &[&str], codes: &[i32], mention: &str) {
    let (code, out, err) = run(args);
    let ctx = format!(
        "fv-vmm {}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        args.join(" ")
    );
    assert!(
        codes.contains(&code),
        "exit status {code}, want one of {codes:?}\n{ctx}"
    );
    assert!(!err.contains("panicked"), "panicked\n{ctx}");
    assert!(
        err.to_lowercase().contains(&mention.to_lowercase()),
        "stderr does not mention {mention:?}\n{ctx}"
    );
    if code == 1 {
        assert_eq!(
            err.trim().lines().count(),
            1,
            "want a one-line message\n{ctx}"
        );
    }
    assert!(!out.contains("hello from ferrovisor"), "guest ran\n{ctx}");
}

fn hello_path() -> String {
    guest("hello").display().to_string()
}

#[test]
fn missing_kernel_file() {
    let dir = TempDir::new("nokernel");
    let k = dir.join("no-such-vmlinux");
    expect_error(&["--kernel", k.to_str().unwrap()], &[1], "no-such-vmlinux");
}

#[test]
fn kernel_of_random_bytes() {
    let dir = TempDir::new("randkernel");
    let k = dir.join("random.bin");
    // xorshift64: deterministic "random" bytes that are neither ELF nor bzImage
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&k, bytes).unwrap();
    expect_error(&["--kernel", k.to_str().unwrap()], &[1], "kernel");
}

#[test]
fn zero_length_kernel() {
    let dir = TempDir::new("emptykernel");
    let k = dir.join("empty");
    std::fs::write(&k, b"").unwrap();
    expect_error(&["--kernel", k.to_str().unwrap()], &[1], "kernel");
}

#[test]
fn missing_initrd() {
    let dir = TempDir::new("noinitrd");
    let i = dir.join("no-such-initrd");
    expect_error(
        &["--kernel", &hello_path(), "--initrd", i.to_str().unwrap()],
        &[1],
        "no-such-initrd",
    );
}

#[test]
fn unreadable_initrd() {
    // A directory cannot be read as a file, even by root.
    let dir = TempDir::new("dirinitrd");
    expect_error(
        &[
            "--kernel",
            &hello_path(),
            "--initrd",
            dir.path().to_str().unwrap(),
        ],
        &[1],
        "initrd",
    );
}

#[test]
fn memory_zero() {
    expect_error(
        &["--kernel", &hello_path(), "--memory", "0"],
        &[1],
        "memory",
    );
}

#[test]
fn memory_too_large() {
    expect_error(
        &["--kernel", &hello_path(), "--memory", "10000000"],
        &[1],
        "memory",
    );
}

#[test]
fn vcpus_zero() {
    expect_error(&["--kernel", &hello_path(), "--vcpus", "0"], &[1], "vcpu");
}

#[test]
fn vcpus_too_many() {
    expect_error(&["--kernel", &hello_path(), "--vcpus", "33"], &[1], "vcpu");
}

#[test]
fn unknown_flag() {
    // clap's own usage errors exit 2; either way the flag must be named.
    expect_error(
        &["--kernel", &hello_path(), "--frobnicate"],
        &[1, 2],
        "--frobnicate",
    );
}

#[test]
fn disk_that_does_not_exist() {
    expect_error(
        &[
            "--kernel",
            &hello_path(),
            "--disk",
            "path=/nonexistent/fv.img",
        ],
        &[1],
        "/nonexistent/fv.img",
    );
}

#[test]
fn disk_flag_with_bad_options() {
    for bad in [
        "/x.img",
        "path=/x.img,format=vmdk",
        "path=/x.img,readonly=maybe",
        "path=/x.img,cache=none",
        "path=/x.img,serial=much-too-long-for-virtio-blk",
    ] {
        expect_error(&["--kernel", &hello_path(), "--disk", bad], &[1], "--disk");
    }
}

#[test]
fn raw_file_opened_as_qcow2_is_refused() {
    let dir = TempDir::new("notqcow");
    let disk = dir.join("plain.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let flag = format!("path={},format=qcow2", disk.display());
    expect_error(
        &["--kernel", &hello_path(), "--disk", &flag],
        &[1],
        "plain.img",
    );
}

#[test]
fn malformed_config_json() {
    let dir = TempDir::new("badcfg");
    let cfg = dir.join("broken.json");
    std::fs::write(&cfg, br#"{"kernel": "/x", "vcpus": "#).unwrap();
    expect_error(&["--config", cfg.to_str().unwrap()], &[1], "broken.json");
}
