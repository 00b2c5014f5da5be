//! The emulated hardware-virtualization host that Ferrovisor's Linux-guest tests run in.
//!
//! The development and CI machines expose KVM through PVM, where stock Linux guests cannot
//! boot. This crate builds, from Debian packages, a QEMU TCG machine with an emulated AMD
//! CPU (SVM + NPT) running a Debian kernel with `kvm_amd`, shares the real root read-only
//! over 9p, and runs a command there, where `/dev/kvm` is real (nested) KVM. It also builds
//! the stock guest kernel and a tiny busybox initramfs for the guests the VMM boots.
//! See docs/testhost.md.
// The one exception, `tsc.rs`, reads the TSC (RDTSC).
#![deny(unsafe_code)]

mod artifacts;
mod cpio;
mod error;
mod ext4;
mod guest;
mod inside;
mod kernel;
mod rootfs;
mod run;
mod tiny;
mod tools;
mod tsc;

pub use artifacts::{cache_dir, ArtifactName, Artifacts};
pub use error::Error;
pub use ext4::mkext4;
pub use guest::{boot_guest, GuestBoot, GuestBootOptions, GUEST_CMDLINE};
pub use inside::{load_storage_modules, run_test_inside};
pub use rootfs::{build_rootfs, ROOTFS_MIB};
pub use run::{run, run_with, RunOptions, RunOutput};
pub use tiny::{build_tiny_guest, tiny_guest_sources};

/// End-to-end checks of the recipe. Each boots the TCG host (2-7 s); they share a lock so
/// that two emulated hosts do not fight over the machine's 2 cores.
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    static BOOT: Mutex<()> = Mutex::new(());

    fn opts() -> RunOptions {
        RunOptions {
            timeout: Some(Duration::from_secs(300)),
            ..RunOptions::default()
        }
    }

    #[test]
    fn prepare_twice_rebuilds_nothing() {
        let a = Artifacts::prepare().expect("prepare");
        let modified = |arts: &Artifacts| {
            ArtifactName::ALL.map(|name| {
                let path = arts.path(name);
                assert!(path.is_file(), "{}", name.as_str());
                std::fs::metadata(path).unwrap().modified().unwrap()
            })
        };
        let before = modified(&a);
        let b = Artifacts::prepare().expect("prepare again");
        assert_eq!(a.host_initrd, b.host_initrd);
        assert_eq!(before, modified(&b), "a second prepare rewrote an artifact");
    }

    #[test]
    fn emulated_host_has_svm_and_kvm_and_propagates_status() {
        let _g = BOOT.lock().unwrap_or_else(|e| e.into_inner());
        let script = "grep -c svm /proc/cpuinfo; test -c /dev/kvm && echo kvm-ok; \
                      test -c /dev/net/tun && echo tun-ok; echo \"$FV_X\"; pwd; exit 3";
        let o = RunOptions {
            env: vec![("FV_X".into(), "a b'c".into())],
            ..opts()
        };
        let out = run(&o, &["sh", "-c", script]).expect("run");
        eprintln!("emulated host run: {:?}", out.wall);
        let lines: Vec<&str> = out.output.lines().collect();
        let svm: u32 = lines[0].trim().parse().expect("a count");
        assert!(svm > 0, "{}", out.output);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            &lines[1..],
            ["kvm-ok", "tun-ok", "a b'c", cwd.to_str().unwrap()],
            "{}",
            out.output
        );
        assert_eq!(out.status, 3);
    }

    #[test]
    fn timeout_kills_the_emulated_host() {
        let _g = BOOT.lock().unwrap_or_else(|e| e.into_inner());
        let o = RunOptions {
            timeout: Some(Duration::from_secs(1)),
            ..RunOptions::default()
        };
        let t = Instant::now();
        let err = run(&o, &["sleep", "100"]).expect_err("must time out");
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        // Killed, not waited for: far less than the 100 s the command wanted.
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    }

    /// A free port on 127.0.0.1, as far as one can tell before QEMU binds it.
    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        l.local_addr().expect("local address").port()
    }

    /// Connects to `port` until the server in the emulated host answers. Before QEMU is up
    /// the connection is refused; while the emulated host boots, QEMU accepts it and retries
    /// the guest side (TCP backoff: seconds), hence the long read timeout, which also keeps
    /// a given-up connection from taking the server's one accept later; once the NIC is up
    /// but nothing listens, QEMU closes it at once.
    fn read_forwarded(
        port: u16,
        run: &std::thread::JoinHandle<Result<RunOutput, Error>>,
    ) -> String {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let t = Instant::now();
        while !run.is_finished() && t.elapsed() < Duration::from_secs(240) {
            let answer = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(120)))?;
                    c.write_all(b"ping\n")?;
                    let mut s = String::new();
                    c.read_to_string(&mut s)?;
                    Ok(s)
                });
            match answer {
                Ok(s) if !s.is_empty() => return s,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        String::new()
    }

    #[test]
    fn forwarded_port_reaches_a_server_in_the_emulated_host() {
        let _g = BOOT.lock().unwrap_or_else(|e| e.into_inner());
        // Another process may take the port between our check and QEMU's bind: try again.
        for _ in 0..3 {
            let port = free_port();
            let o = RunOptions {
                forward: vec![(port, 443)],
                ..opts()
            };
            let t = Instant::now();
            // One connection; the reply shows that bytes went both ways. Then the address
            // the init gave the NIC.
            let script = "busybox nc -l -p 443 -e sh -c 'read l; echo \"got $l\"' && \
                          busybox ip -4 addr show dev eth0";
            let server = std::thread::spawn(move || run(&o, &["sh", "-c", script]));
            let answer = read_forwarded(port, &server);
            let out = match server.join().expect("run thread") {
                Err(Error::ForwardUnavailable { detail }) => {
                    eprintln!("port {port} taken ({detail}); another one");
                    continue;
                }
                other => other.expect("run"),
            };
            eprintln!(
                "forwarded run: {:?} (answer after {:?})",
                out.wall,
                t.elapsed()
            );
            assert_eq!(answer, "got ping\n", "{}", out.output);
            assert_eq!(out.status, 0, "{}", out.output);
            assert!(out.output.contains("inet 10.0.2.15/24"), "{}", out.output);
            return;
        }
        panic!("no free port in 3 tries");
    }

    #[test]
    fn nested_kvm_boots_the_guest_kernel() {
        let _g = BOOT.lock().unwrap_or_else(|e| e.into_inner());
        let guest = GuestBootOptions {
            smp: 2,
            memory_mib: 256,
            ..GuestBootOptions::default()
        };
        let b = boot_guest(&opts(), &guest).expect("guest boots");
        eprintln!(
            "guest: to_ready={:?} qemu_wall={:?} outer_wall={:?}",
            b.to_ready, b.qemu_wall, b.outer_wall
        );
        assert_eq!(b.cpus, 2, "{}", b.output);
        // MemTotal is RAM minus what the kernel keeps for itself.
        assert!(
            (180 * 1024..=256 * 1024).contains(&b.mem_kib),
            "{}",
            b.output
        );
        assert_eq!(
            b.output.matches("FV-GUEST-READY").count(),
            1,
            "{}",
            b.output
        );
    }
}
