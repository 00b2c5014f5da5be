//! The only `unsafe` code of fv-hostnet: the ioctls on `/dev/net/tun` and on a control
//! socket, and `unshare(CLONE_NEWNET)`. Each function here takes and returns safe types
//! (borrowed descriptors, checked names, plain values), so the rest of the crate is safe code.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libc::{c_char, c_int, c_short, c_uint, c_ulong};

pub(crate) const IFNAMSIZ: usize = libc::IFNAMSIZ;

// <linux/sockios.h>: the bridge ioctls, which the libc crate has only for Android.
const SIOCBRADDBR: libc::Ioctl = 0x89a0;
const SIOCBRDELBR: libc::Ioctl = 0x89a1;
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// An interface name as `ifr_name` holds it: 1 to `IFNAMSIZ - 1` bytes, NUL-terminated.
/// The naming rules (which characters) are checked by `crate::name`; this type only
/// guarantees the layout the kernel expects.
#[derive(Clone, Copy)]
pub(crate) struct IfName([c_char; IFNAMSIZ]);

impl IfName {
    /// `None` if `name` is empty, does not fit with its terminating NUL, or holds a NUL.
    pub(crate) fn new(name: &str) -> Option<IfName> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return None;
        }
        let mut raw = [0; IFNAMSIZ];
        for (dst, src) in raw.iter_mut().zip(bytes) {
            *dst = *src as c_char;
        }
        Some(IfName(raw))
    }

    /// A name the kernel returned; forced to end in NUL whatever it holds.
    fn from_kernel(mut raw: [c_char; IFNAMSIZ]) -> IfName {
        raw[IFNAMSIZ - 1] = 0;
        IfName(raw)
    }

    pub(crate) fn to_string_lossy(self) -> String {
        let bytes: Vec<u8> = self
            .0
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn ifreq(name: &IfName) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a char array and a union of integers, sockaddrs,
    // char arrays and a pointer); all-zero bytes are a valid value for each union member,
    // so every later read of a member reads initialized bytes.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    ifr.ifr_name = name.0;
    ifr
}

fn check(ret: c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioctl(fd, request, &mut ifr)`, for the requests whose argument is a `struct ifreq`.
fn ioctl_ifreq(fd: BorrowedFd<'_>, request: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `fd` is open for the whole call (the borrow keeps it so). Every caller in this
    // module passes a request whose argument is a `struct ifreq`; `ifr` points to a live one
    // that we borrow exclusively, and the kernel reads and writes no more than its size.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, ifr as *mut libc::ifreq) })
}

/// TUNSETIFF: attaches the tun file to the interface `name` (creating it if there is none;
/// a `%d` in the name is replaced by the kernel) with `flags`; returns the interface's name.
pub(crate) fn tun_set_iff(tun: BorrowedFd<'_>, name: &IfName, flags: c_int) -> io::Result<IfName> {
    let mut ifr = ifreq(name);
    // The IFF_* tun flags all fit in the 16-bit `ifr_flags` (the largest is 0x8000).
    ifr.ifr_ifru.ifru_flags = flags as c_short;
    ioctl_ifreq(tun, libc::TUNSETIFF, &mut ifr)?;
    Ok(IfName::from_kernel(ifr.ifr_name))
}

/// TUNGETIFF: the attached interface's name and its tun flags.
pub(crate) fn tun_get_iff(tun: BorrowedFd<'_>) -> io::Result<(IfName, c_int)> {
    let mut ifr = ifreq(&IfName([0; IFNAMSIZ]));
    ioctl_ifreq(tun, libc::TUNGETIFF, &mut ifr)?;
    // SAFETY: the union was zero-initialized by `ifreq` and TUNGETIFF stores `ifr_flags`;
    // a c_short is valid for any bytes.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    // The flags are a bit set, read back as the unsigned 16 bits they are.
    Ok((IfName::from_kernel(ifr.ifr_name), c_int::from(flags as u16)))
}

/// TUNSETVNETHDRSZ: the length of the virtio-net header before each frame.
pub(crate) fn tun_set_vnet_hdr_sz(tun: BorrowedFd<'_>, size: c_int) -> io::Result<()> {
    // SAFETY: `tun` is open for the call; TUNSETVNETHDRSZ reads one int through the pointer,
    // which points to a live local.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETVNETHDRSZ,
            &size as *const c_int,
        )
    })
}

/// TUNGETVNETHDRSZ.
pub(crate) fn tun_get_vnet_hdr_sz(tun: BorrowedFd<'_>) -> io::Result<c_int> {
    let mut size: c_int = 0;
    // SAFETY: `tun` is open for the call; TUNGETVNETHDRSZ writes one int through the pointer,
    // which points to a live local we borrow exclusively.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNGETVNETHDRSZ,
            &mut size as *mut c_int,
        )
    })?;
    Ok(size)
}

/// TUNSETOFFLOAD: the `TUN_F_*` offloads the reader of the tap accepts.
pub(crate) fn tun_set_offload(tun: BorrowedFd<'_>, flags: c_uint) -> io::Result<()> {
    // SAFETY: `tun` is open for the call; TUNSETOFFLOAD takes its argument by value (an
    // unsigned long), no memory is passed.
    check(unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETOFFLOAD, c_ulong::from(flags)) })
}

/// TUNSETPERSIST: whether the interface outlives its last open file.
pub(crate) fn tun_set_persist(tun: BorrowedFd<'_>, persist: bool) -> io::Result<()> {
    // SAFETY: `tun` is open for the call; TUNSETPERSIST takes its argument by value (an
    // unsigned long), no memory is passed.
    check(unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETPERSIST,
            c_ulong::from(u8::from(persist)),
        )
    })
}

/// An unbound AF_INET datagram socket: the handle the interface ioctls are made on. It
/// belongs to the calling thread's network namespace, and so do the interfaces it reaches.
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor socket() just returned; nothing else owns it, so the
    // OwnedFd becomes its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIOCGIFINDEX.
pub(crate) fn if_index(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<c_int> {
    let mut ifr = ifreq(name);
    ioctl_ifreq(sock, libc::SIOCGIFINDEX, &mut ifr)?;
    // SAFETY: zero-initialized union, `ifr_ifindex` stored by the kernel; any int is valid.
    Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
}

/// SIOCGIFFLAGS, as the unsigned 16-bit set it is.
pub(crate) fn if_flags(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<c_int> {
    let mut ifr = ifreq(name);
    ioctl_ifreq(sock, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: zero-initialized union, `ifr_flags` stored by the kernel; any short is valid.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    Ok(c_int::from(flags as u16))
}

/// SIOCSIFFLAGS (only the low 16 bits exist in this interface).
pub(crate) fn set_if_flags(sock: BorrowedFd<'_>, name: &IfName, flags: c_int) -> io::Result<()> {
    let mut ifr = ifreq(name);
    ifr.ifr_ifru.ifru_flags = flags as c_short;
    ioctl_ifreq(sock, libc::SIOCSIFFLAGS, &mut ifr)
}

/// SIOCGIFHWADDR: the link's hardware address (6 bytes for Ethernet).
pub(crate) fn if_hwaddr(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq(name);
    ioctl_ifreq(sock, libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: zero-initialized union, `ifr_hwaddr` stored by the kernel; a sockaddr's
    // bytes are all valid to read.
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(mac)
}

/// SIOCGIFMTU.
pub(crate) fn if_mtu(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<c_int> {
    let mut ifr = ifreq(name);
    ioctl_ifreq(sock, libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: zero-initialized union, `ifr_mtu` stored by the kernel; any int is valid.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu })
}

/// SIOCSIFMTU.
pub(crate) fn set_if_mtu(sock: BorrowedFd<'_>, name: &IfName, mtu: c_int) -> io::Result<()> {
    let mut ifr = ifreq(name);
    ifr.ifr_ifru.ifru_mtu = mtu;
    ioctl_ifreq(sock, libc::SIOCSIFMTU, &mut ifr)
}

/// `struct vlan_ioctl_args` of <linux/if_vlan.h>: the argument of SIOCSIFVLAN.
#[repr(C)]
struct VlanIoctlArgs {
    cmd: c_int,
    device1: [libc::c_char; 24],
    u: VlanIoctlUnion,
    vlan_qos: c_short,
}

#[repr(C)]
union VlanIoctlUnion {
    device2: [libc::c_char; 24],
    vid: c_int,
}

/// The `cmd`s of SIOCSIFVLAN we use.
const ADD_VLAN_CMD: c_int = 0;
const DEL_VLAN_CMD: c_int = 1;
/// SIOCSIFVLAN, from <linux/sockios.h> (served by the 8021q module).
const SIOCSIFVLAN: libc::Ioctl = 0x8983;

fn vlan_ioctl(sock: BorrowedFd<'_>, cmd: c_int, device: &IfName, vid: c_int) -> io::Result<()> {
    let mut args = VlanIoctlArgs {
        cmd,
        device1: [0; 24],
        u: VlanIoctlUnion { vid },
        vlan_qos: 0,
    };
    // IfName holds at most IFNAMSIZ (16) bytes, NUL included: it fits device1's 24.
    args.device1[..device.0.len()].copy_from_slice(&device.0);
    // SAFETY: `sock` is open for the call; SIOCSIFVLAN reads one `struct vlan_ioctl_args`,
    // which `args` is (#[repr(C)], the kernel's layout), borrowed exclusively for the call.
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            SIOCSIFVLAN,
            &mut args as *mut VlanIoctlArgs,
        )
    })
}

/// Adds the VLAN `vid` on `parent`: the kernel names it `<parent>.<vid>`.
pub(crate) fn vlan_add(sock: BorrowedFd<'_>, parent: &IfName, vid: c_int) -> io::Result<()> {
    vlan_ioctl(sock, ADD_VLAN_CMD, parent, vid)
}

/// Deletes the VLAN device `name`.
pub(crate) fn vlan_del(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<()> {
    vlan_ioctl(sock, DEL_VLAN_CMD, name, 0)
}

/// SIOCBRADDBR / SIOCBRDELBR, whose argument is the bridge's NUL-terminated name.
fn bridge_ioctl(sock: BorrowedFd<'_>, request: libc::Ioctl, name: &IfName) -> io::Result<()> {
    // SAFETY: `sock` is open for the call; both requests read a NUL-terminated string of at
    // most IFNAMSIZ bytes, and `name.0` is such a string (IfName guarantees the NUL) that
    // lives for the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), request, name.0.as_ptr()) })
}

pub(crate) fn bridge_add(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<()> {
    bridge_ioctl(sock, SIOCBRADDBR, name)
}

pub(crate) fn bridge_del(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<()> {
    bridge_ioctl(sock, SIOCBRDELBR, name)
}

/// SIOCBRADDIF: makes the interface `port_index` a port of `bridge`.
pub(crate) fn bridge_add_if(
    sock: BorrowedFd<'_>,
    bridge: &IfName,
    port_index: c_int,
) -> io::Result<()> {
    let mut ifr = ifreq(bridge);
    ifr.ifr_ifru.ifru_ifindex = port_index;
    ioctl_ifreq(sock, SIOCBRADDIF, &mut ifr)
}

/// Which IPv4 field of an interface an address ioctl reads or writes.
#[derive(Clone, Copy)]
pub(crate) enum AddrField {
    Address,
    Netmask,
}

/// SIOCSIFADDR / SIOCSIFNETMASK.
pub(crate) fn set_if_ipv4(
    sock: BorrowedFd<'_>,
    name: &IfName,
    field: AddrField,
    addr: Ipv4Addr,
) -> io::Result<()> {
    let mut ifr = ifreq(name);
    // A sockaddr_in laid out in a generic sockaddr: family, then port (0) and address in
    // network order in `sa_data`.
    let mut sa = libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: [0; 14],
    };
    for (dst, src) in sa.sa_data[2..6].iter_mut().zip(addr.octets()) {
        *dst = src as c_char;
    }
    ifr.ifr_ifru.ifru_addr = sa;
    let request = match field {
        AddrField::Address => libc::SIOCSIFADDR,
        AddrField::Netmask => libc::SIOCSIFNETMASK,
    };
    ioctl_ifreq(sock, request, &mut ifr)
}

/// SIOCGIFADDR / SIOCGIFNETMASK.
pub(crate) fn if_ipv4(
    sock: BorrowedFd<'_>,
    name: &IfName,
    field: AddrField,
) -> io::Result<Ipv4Addr> {
    let mut ifr = ifreq(name);
    let request = match field {
        AddrField::Address => libc::SIOCGIFADDR,
        AddrField::Netmask => libc::SIOCGIFNETMASK,
    };
    ioctl_ifreq(sock, request, &mut ifr)?;
    // SAFETY: zero-initialized union, `ifr_addr` stored by the kernel; a sockaddr is valid
    // for any bytes.
    let sa = unsafe { ifr.ifr_ifru.ifru_addr };
    let d = sa.sa_data;
    Ok(Ipv4Addr::new(
        d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8,
    ))
}

/// `unshare(CLONE_NEWNET)`: the calling thread (only it) moves to a new network namespace.
pub(crate) fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET changes only the calling thread's
    // network namespace, which no Rust invariant depends on.
    check(unsafe { libc::unshare(libc::CLONE_NEWNET) })
}
