//! A stock Debian kernel through fvd, inside the emulated AMD-V host (this machine's KVM
//! cannot boot Linux; see docs/testhost.md): `VM.clean_reboot` and `VM.clean_shutdown`
//! press the ACPI power button, the guest shuts itself down (busybox acpid), and fvd
//! starts it again or halts it.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use fv_rpc::Value;
use fv_testhost::{Artifacts, RunOptions, GUEST_CMDLINE};

/// Set inside the emulated host, so that the `inside_*` test runs there and nowhere else.
const INSIDE: &str = "FV_LINUX_GUEST_INSIDE";
/// One nested boot takes 5 to 30 s depending on the machine's load.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 paths").to_owned()
}

#[test]
fn linux_guest_clean_reboot_and_shutdown_through_fvd() {
    let artifacts = Artifacts::prepare().expect("build the emulated host and guest artifacts");
    let exe = std::env::current_exe().unwrap();
    let test = "inside_linux_guest_clean_reboot_and_shutdown_through_fvd";
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(600)),
        env: vec![
            (INSIDE.into(), "1".into()),
            ("FV_VMLINUX".into(), path_str(&artifacts.guest_vmlinux)),
            ("FV_INITRD".into(), path_str(&artifacts.guest_initrd)),
        ],
        ..RunOptions::default()
    };
    let argv = [
        exe.to_str().unwrap(),
        "--exact",
        test,
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    let out = fv_testhost::run_with(&artifacts, &opts, &argv).expect("run the emulated host");
    println!("--- {test} in the emulated host ---\n{}", out.output);
    assert!(
        out.status == 0 && out.output.contains("1 passed"),
        "{test} failed in the emulated host (status {}):\n{}",
        out.status,
        out.output
    );
}

/// A VM's serial console, read from its run directory's socket until `want` appears.
struct Console {
    stream: UnixStream,
    seen: String,
}

impl Console {
    fn connect(run_dir: &Path) -> Console {
        let stream = UnixStream::connect(run_dir.join("serial.sock")).expect("serial socket");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Console {
            stream,
            seen: String::new(),
        }
    }

    fn wait_for(&mut self, want: &str) {
        let deadline = Instant::now() + GUEST_TIMEOUT;
        let mut buf = [0u8; 4096];
        while !self.seen.contains(want) {
            assert!(
                Instant::now() < deadline,
                "no {want:?} on the console:\n{}",
                self.seen
            );
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("console closed before {want:?}:\n{}", self.seen),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
    }
}

#[test]
#[ignore = "runs inside the emulated host, started by the test of the same name"]
fn inside_linux_guest_clean_reboot_and_shutdown_through_fvd() {
    let Some(vmlinux) =
        std::env::var_os(INSIDE).map(|_| PathBuf::from(std::env::var_os("FV_VMLINUX").unwrap()))
    else {
        return;
    };
    let initrd = PathBuf::from(std::env::var_os("FV_INITRD").unwrap());
    let dir = TempDir::new("linux");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let rec = Value::Struct(
        [
            ("name_label", s("debian")),
            ("PV_kernel", s(&path_str(&vmlinux))),
            ("PV_ramdisk", s(&path_str(&initrd))),
            ("PV_args", s(GUEST_CMDLINE)),
            ("memory_static_max", Value::Int(256 << 20)),
            ("memory_dynamic_max", Value::Int(256 << 20)),
            ("memory_dynamic_min", Value::Int(256 << 20)),
            ("memory_static_min", Value::Int(256 << 20)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    let vm = c.ok("VM.create", &[rec]).as_str().unwrap().to_owned();
    let uuid = c.field("VM", &vm, "uuid");
    let run_dir = fvd.data.join("vms").join(uuid.as_str().unwrap());
    let started = Instant::now();

    // Paused, so that the console is there from the first byte.
    c.ok("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]);
    let mut console = Console::connect(&run_dir);
    c.ok("VM.unpause", &[s(&vm)]);
    console.wait_for("/ # ");
    let first = c.field("VM", &vm, "domid").as_int().unwrap();
    println!(
        "booted to a shell in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A clean reboot: the guest shuts down on the power button, fvd starts it again.
    c.ok("VM.clean_reboot", &[s(&vm)]);
    console.wait_for("FV-POWER-BUTTON");
    assert_eq!(c.power_state(&vm), "Running");
    let second = c.field("VM", &vm, "domid").as_int().unwrap();
    assert_ne!(first, second, "a new fv-vmm runs the rebooted guest");
    assert!(!alive(first));
    // Connect to the new console; the shell prompt may already be past: ask for another.
    let mut console = Console::connect(&run_dir);
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !console.seen.contains("/ # ") {
        assert!(
            Instant::now() < deadline,
            "no shell after the reboot:\n{}",
            console.seen
        );
        let _ = std::io::Write::write_all(&mut console.stream, b"\n");
        let mut buf = [0u8; 4096];
        if let Ok(n) = console.stream.read(&mut buf) {
            console.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    // A clean shutdown: the guest powers off on the power button, the VM halts.
    let t = Instant::now();
    c.ok("VM.clean_shutdown", &[s(&vm)]);
    assert_eq!(c.power_state(&vm), "Halted");
    console.wait_for("FV-POWER-BUTTON");
    assert!(!alive(second));
    println!(
        "clean shutdown took {:.1} s; whole test {:.1} s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
