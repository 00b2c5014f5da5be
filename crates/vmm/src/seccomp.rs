//! Per-thread seccomp filters, deny by default, installed by each thread before it
//! touches guest-controlled data (vCPU threads: before the first KVM_RUN).
//!
//! A system call outside its thread's list kills the whole process (SIGSYS): a VMM that
//! does something it never does is compromised or broken, and must not go on.
//! `--no-seccomp` turns the filters off for debugging.

use std::collections::BTreeMap;

use kvm_bindings::{
    kvm_fpu, kvm_ioeventfd, kvm_irq_routing, kvm_irqchip, kvm_irqfd, kvm_lapic_state, kvm_mp_state,
    kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, KVMIO,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

/// Which thread a filter is for: each gets only the system calls its job needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// Event loop and controller: serial input, API actions, reset.
    Main,
    /// HTTP server on the API socket.
    Api,
    /// Runs guest code and emulates port/MMIO accesses.
    Vcpu,
    /// A virtio device's event loop ("fv-virtio-<name>"): queue processing and the
    /// device's backend I/O (disk image, entropy source, tap).
    Device,
}

ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_iow_nr!(KVM_SET_SREGS, KVMIO, 0x84, kvm_sregs);
ioctl_iow_nr!(KVM_SET_MSRS, KVMIO, 0x89, kvm_msrs);
ioctl_iow_nr!(KVM_SET_FPU, KVMIO, 0x8d, kvm_fpu);
ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
ioctl_iow_nr!(KVM_SET_LAPIC, KVMIO, 0x8f, kvm_lapic_state);
ioctl_iow_nr!(KVM_SET_MP_STATE, KVMIO, 0x99, kvm_mp_state);
ioctl_iow_nr!(KVM_SET_VCPU_EVENTS, KVMIO, 0xa0, kvm_vcpu_events);
ioctl_ior_nr!(KVM_SET_IRQCHIP, KVMIO, 0x63, kvm_irqchip);
ioctl_iow_nr!(KVM_SET_PIT2, KVMIO, 0xa0, kvm_pit_state2);
ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);
ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_irqfd);
/// A virtio-net device's activation, on the vCPU thread where the driver sets DRIVER_OK,
/// sets its tap's virtio-net header length and offloads (`Net::activate`).
const TUNSETVNETHDRSZ: u64 = libc::TUNSETVNETHDRSZ;
const TUNSETOFFLOAD: u64 = libc::TUNSETOFFLOAD;
const TUNSETIFF: u64 = libc::TUNSETIFF;
/// Terminal attributes: `set_canon_mode` restores the console at exit.
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;

/// What every Rust thread needs: memory, locks, signals, thread exit, stderr, panics.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

const MAIN: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_accept4,
    libc::SYS_shutdown,
    // Reset in place reloads the kernel and initrd from their files.
    libc::SYS_openat,
    libc::SYS_lseek,
    libc::SYS_pread64,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    // A reset in place resets the virtio devices (their rate-limit timers, the
    // balloon's statistics timer).
    libc::SYS_timerfd_settime,
    // At exit: the console and vsock sockets are removed (`devices::services`).
    libc::SYS_unlink,
    // `/vm/disks/<id>/pause` and `reopen` flush a disk image and open one (`api::disks`).
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_fstatfs,
    // `PUT /vm/nets` plugs a NIC: its tap is opened (`socket` as `MAIN_SOCKET_RULE`
    // allows, for the interface ioctls), its eventfds, timerfd and event loop made, and its
    // device thread started, which installs its own, narrower, filter.
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_epoll_create1,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
    libc::SYS_seccomp,
];

const API: &[i64] = &[
    libc::SYS_accept4,
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_setsockopt,
    libc::SYS_shutdown,
    libc::SYS_poll,
];

const VCPU: &[i64] = &[
    // Serial output to a socket client.
    libc::SYS_sendto,
    // A virtio reset drains the queue notification eventfds and disarms the device's
    // rate-limit timer; activation wakes the device's loop (write, in COMMON).
    libc::SYS_read,
    libc::SYS_timerfd_settime,
];

const DEVICE: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    // Eventfds, timerfds, the entropy source, taps (one read or write per frame, write in
    // COMMON); disk images (positioned and vectored I/O).
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    // imago grows a qcow2 file with ftruncate when it allocates past its end (seen when a
    // guest first wrote the last MiB of a 16 TiB disk).
    libc::SYS_ftruncate,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_getrandom,
    // Console and vsock: clients connect to their listening Unix sockets (accept4, then
    // FIONBIO, see `ioctls`), and are read with recv (recvfrom) and written with send
    // (sendto: std's `UnixStream` writes with MSG_NOSIGNAL); vsock connects to
    // `PATH_<port>` for the guest (connect, and `socket` as `SOCKET_RULE` allows) and
    // half-closes streams.
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_connect,
    libc::SYS_shutdown,
];

/// The only `socket` call a device thread makes: vsock's non-blocking Unix stream to
/// `PATH_<port>` (`fv_virtio::vsock`). (arg0, arg1) must be exactly these.
const SOCKET_RULE: (u64, u64) = (
    libc::AF_UNIX as u64,
    (libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64,
);
/// The only `socket` call the main thread makes: fv-hostnet's datagram socket for the
/// interface ioctls when a tap is opened for a NIC plugged into the running VM.
const MAIN_SOCKET_RULE: (u64, u64) = (
    libc::AF_INET as u64,
    (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
);
/// `UnixStream::set_nonblocking` (std uses this ioctl on sockets).
const FIONBIO: u64 = libc::FIONBIO;

fn ioctls(kind: ThreadKind) -> Vec<u64> {
    let n = |nr: libc::c_ulong| u64::from(nr as u32);
    match kind {
        ThreadKind::Main => vec![
            n(KVM_SET_IRQCHIP()),
            n(KVM_SET_PIT2()),
            // A reset in place puts PCI BARs (and their ioeventfds) back and masks MSI-X.
            n(KVM_IOEVENTFD()),
            n(KVM_SET_GSI_ROUTING()),
            TCGETS,
            TCSETS,
            // A NIC plugged while the VM runs: its tap, its interrupts.
            libc::SIOCGIFINDEX,
            TUNSETIFF,
            n(KVM_IRQFD()),
            // The serial console's client is made non-blocking when it connects.
            FIONBIO,
        ],
        ThreadKind::Api => vec![],
        // Console and vsock make accepted client streams non-blocking.
        ThreadKind::Device => vec![FIONBIO],
        ThreadKind::Vcpu => vec![
            n(KVM_RUN()),
            n(KVM_SET_REGS()),
            n(KVM_SET_SREGS()),
            n(KVM_SET_MSRS()),
            n(KVM_SET_FPU()),
            n(KVM_GET_LAPIC()),
            n(KVM_SET_LAPIC()),
            n(KVM_SET_MP_STATE()),
            n(KVM_SET_VCPU_EVENTS()),
            // A triple fault's report names where the vCPU was.
            n(KVM_GET_REGS()),
            n(KVM_GET_SREGS()),
            // The guest programs MSI-X vectors and moves PCI BARs.
            n(KVM_SET_GSI_ROUTING()),
            n(KVM_IOEVENTFD()),
            // The driver activates a virtio-net device. Allowed without NICs too: then no
            // tap fd exists, and on any other fd these requests fail harmlessly.
            TUNSETVNETHDRSZ,
            TUNSETOFFLOAD,
        ],
    }
}

/// The BPF program for `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, String> {
    let own = match kind {
        ThreadKind::Main => MAIN,
        ThreadKind::Api => API,
        ThreadKind::Vcpu => VCPU,
        ThreadKind::Device => DEVICE,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(own)
        .map(|nr| (*nr, Vec::new()))
        .collect();
    let ioctl_rules = ioctls(kind)
        .into_iter()
        .map(|request| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("seccomp rule: {e}"))?;
    if !ioctl_rules.is_empty() {
        rules.insert(libc::SYS_ioctl, ioctl_rules);
    }
    let socket_rule = match kind {
        ThreadKind::Device => Some(SOCKET_RULE),
        ThreadKind::Main => Some(MAIN_SOCKET_RULE),
        _ => None,
    };
    if let Some((domain, ty)) = socket_rule {
        let rule = [(0, domain), (1, ty)]
            .into_iter()
            .map(|(arg, value)| {
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(SeccompRule::new)
            .map_err(|e| format!("seccomp rule: {e}"))?;
        rules.insert(libc::SYS_socket, vec![rule]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter for {kind:?}: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp filter for {kind:?}: {e}"))
}

/// Installs the filter for `kind` on the calling thread (nothing when `enabled` is false).
pub fn install(kind: ThreadKind, enabled: bool) -> Result<(), String> {
    if !enabled {
        return Ok(());
    }
    let program = filter(kind)?;
    seccompiler::apply_filter(&program)
        .map_err(|e| format!("cannot install the seccomp filter for the {kind:?} thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles() {
        for kind in [
            ThreadKind::Main,
            ThreadKind::Api,
            ThreadKind::Vcpu,
            ThreadKind::Device,
        ] {
            assert!(!filter(kind).unwrap().is_empty());
        }
        assert_eq!(u64::from(KVM_RUN() as u32), 0xae80);
        assert_eq!(u64::from(KVM_GET_REGS() as u32), 0x8090_ae81);
        assert_eq!(u64::from(KVM_GET_SREGS() as u32), 0x8138_ae83);
        assert_eq!(u64::from(KVM_IOEVENTFD() as u32), 0x4040_ae79);
        assert_eq!(u64::from(KVM_SET_GSI_ROUTING() as u32), 0x4008_ae6a);
        assert_eq!(TUNSETVNETHDRSZ, 0x4004_54d8);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
    }

    #[test]
    fn a_forbidden_call_kills_only_after_install() {
        // Run in a child process: the filter kills whoever breaks it.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::child_breaks_the_vcpu_filter",
                "--ignored",
            ])
            .env("FV_SECCOMP_CHILD", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    }

    #[test]
    fn device_threads_may_open_only_vsock_sockets() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::child_opens_sockets_under_the_device_filter",
                "--ignored",
                "--nocapture",
            ])
            .env("FV_SECCOMP_CHILD", "1")
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{:?}", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("unix stream socket: ok"), "{stdout}");
        assert!(!stdout.contains("inet socket"), "{stdout}");
    }

    #[test]
    #[ignore = "run by device_threads_may_open_only_vsock_sockets in a child process"]
    fn child_opens_sockets_under_the_device_filter() {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        if std::env::var_os("FV_SECCOMP_CHILD").is_none() {
            return;
        }
        install(ThreadKind::Device, true).unwrap();
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let unix = socket(AddressFamily::Unix, SockType::Stream, flags, None);
        println!(
            "unix stream socket: {}",
            if unix.is_ok() { "ok" } else { "failed" }
        );
        // Killed here.
        let _ = socket(AddressFamily::Inet, SockType::Stream, flags, None);
        println!("inet socket: allowed");
        std::process::exit(0);
    }

    #[test]
    #[ignore = "run by a_forbidden_call_kills_only_after_install in a child process"]
    fn child_breaks_the_vcpu_filter() {
        if std::env::var_os("FV_SECCOMP_CHILD").is_none() {
            return;
        }
        install(ThreadKind::Vcpu, true).unwrap();
        // A vCPU thread never opens files.
        let _ = std::fs::File::open("/etc/hostname");
        std::process::exit(0);
    }
}
