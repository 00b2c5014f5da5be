//! Bridges, bridge ports, link state and IPv4 addresses.
//!
//! Why ioctls and not rtnetlink: DESIGN.md names the `rtnetlink` crate, which is tokio-based;
//! the VMM and these tests are synchronous and need five operations, each of which is one
//! classic ioctl on a datagram socket (`SIOCBRADDBR`, `SIOCBRDELBR`, `SIOCBRADDIF`,
//! `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, `SIOCSIFADDR`/`SIOCSIFNETMASK`), the calls `brctl` and
//! `ifconfig` still make. They are a fixed struct in and out with a plain errno back, so
//! there is no message encoding, attribute parsing, sequence numbers or multi-part replies
//! to get wrong, and nothing to run. What they cannot do: more than one IPv4 address per
//! interface (SIOCSIFADDR sets the primary one), IPv6 addresses, VLAN or bond links,
//! deleting links other than bridges. When `fvd` needs those it should use rtnetlink (as
//! DESIGN.md says) behind the same functions.
//!
//! Every call acts in the calling thread's network namespace.

use libc::c_int;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys::{self, AddrField, IfName};
use crate::{name, HostnetError, Result};

fn socket() -> Result<OwnedFd> {
    sys::control_socket().map_err(HostnetError::Socket)
}

fn not_found_or(op: &'static str, name: &str, e: std::io::Error) -> HostnetError {
    if e.raw_os_error() == Some(libc::ENODEV) {
        HostnetError::NotFound(name.to_owned())
    } else {
        HostnetError::ioctl(op, name, e)
    }
}

fn index_of(sock: &OwnedFd, name: &str, ifname: &IfName) -> Result<u32> {
    let index =
        sys::if_index(sock.as_fd(), ifname).map_err(|e| not_found_or("SIOCGIFINDEX", name, e))?;
    // The kernel hands out positive indices only.
    u32::try_from(index).map_err(|_| HostnetError::NotFound(name.to_owned()))
}

/// Whether an interface named `name` exists.
pub fn exists(name: &str) -> Result<bool> {
    match index(name) {
        Ok(_) => Ok(true),
        Err(HostnetError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The interface's index.
pub fn index(name: &str) -> Result<u32> {
    let ifname = name::check(name, false)?;
    index_of(&socket()?, name, &ifname)
}

/// Creates the bridge `name` (down, no ports, STP off). `AlreadyExists` if the name is taken.
pub fn create_bridge(name: &str) -> Result<()> {
    let ifname = name::check(name, false)?;
    sys::bridge_add(socket()?.as_fd(), &ifname).map_err(|e| {
        if e.raw_os_error() == Some(libc::EEXIST) {
            HostnetError::AlreadyExists(name.to_owned())
        } else {
            HostnetError::ioctl("SIOCBRADDBR", name, e)
        }
    })
}

/// Deletes the bridge `name`, taking it down first (the kernel refuses to delete a bridge
/// that is up). Its ports are released, not deleted.
pub fn delete_bridge(name: &str) -> Result<()> {
    set_down(name)?;
    let ifname = name::check(name, false)?;
    sys::bridge_del(socket()?.as_fd(), &ifname).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ENXIO) | Some(libc::ENODEV) => HostnetError::NotFound(name.to_owned()),
            // ENXIO also comes back for a link that is not a bridge; EPERM for a bridge
            // that is up (we just took it down).
            _ => HostnetError::ioctl("SIOCBRDELBR", name, e),
        }
    })
}

/// Makes `link` a port of `bridge`.
pub fn add_to_bridge(bridge: &str, link: &str) -> Result<()> {
    let bridge_name = name::check(bridge, false)?;
    let link_name = name::check(link, false)?;
    let sock = socket()?;
    let link_index = index_of(&sock, link, &link_name)?;
    // The index came from the kernel as a positive c_int.
    let link_index =
        i32::try_from(link_index).map_err(|_| HostnetError::NotFound(link.to_owned()))?;
    sys::bridge_add_if(sock.as_fd(), &bridge_name, link_index)
        .map_err(|e| not_found_or("SIOCBRADDIF", bridge, e))
}

fn update_flags(name: &str, set: i32, clear: i32) -> Result<()> {
    let ifname = name::check(name, false)?;
    let sock = socket()?;
    let flags =
        sys::if_flags(sock.as_fd(), &ifname).map_err(|e| not_found_or("SIOCGIFFLAGS", name, e))?;
    let new = (flags | set) & !clear;
    if new == flags {
        return Ok(());
    }
    sys::set_if_flags(sock.as_fd(), &ifname, new).map_err(|e| not_found_or("SIOCSIFFLAGS", name, e))
}

/// Sets the link administratively up (`ip link set NAME up`).
pub fn set_up(name: &str) -> Result<()> {
    update_flags(name, libc::IFF_UP, 0)
}

/// Sets the link administratively down.
pub fn set_down(name: &str) -> Result<()> {
    update_flags(name, 0, libc::IFF_UP)
}

/// Whether the link is administratively up.
pub fn is_up(name: &str) -> Result<bool> {
    let ifname = name::check(name, false)?;
    let flags = sys::if_flags(socket()?.as_fd(), &ifname)
        .map_err(|e| not_found_or("SIOCGIFFLAGS", name, e))?;
    Ok(flags & libc::IFF_UP != 0)
}

/// Adds VLAN `vid` (1 to 4094) on the link `parent`, as `<parent>.<vid>` (`ip link add
/// link PARENT name PARENT.VID type vlan id VID`); returns its name. Needs the kernel's
/// 8021q module; the new link is down.
pub fn create_vlan(parent: &str, vid: u16) -> Result<String> {
    let parent_name = name::check(parent, false)?;
    if !(1..=4094).contains(&vid) {
        return Err(HostnetError::InvalidVlan(vid));
    }
    let vlan = format!("{parent}.{vid}");
    name::check(&vlan, false)?;
    sys::vlan_add(socket()?.as_fd(), &parent_name, c_int::from(vid))
        .map_err(|e| not_found_or("SIOCSIFVLAN", parent, e))?;
    Ok(vlan)
}

/// Deletes the VLAN link `name`.
pub fn delete_vlan(name: &str) -> Result<()> {
    let ifname = name::check(name, false)?;
    sys::vlan_del(socket()?.as_fd(), &ifname).map_err(|e| not_found_or("SIOCSIFVLAN", name, e))
}

/// The link's MAC address, `aa:bb:cc:dd:ee:ff` (of the calling thread's network namespace,
/// which sysfs would not follow).
pub fn mac(name: &str) -> Result<String> {
    let ifname = name::check(name, false)?;
    let mac = sys::if_hwaddr(socket()?.as_fd(), &ifname)
        .map_err(|e| not_found_or("SIOCGIFHWADDR", name, e))?;
    Ok(mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The link's MTU.
pub fn mtu(name: &str) -> Result<u32> {
    let ifname = name::check(name, false)?;
    let mtu =
        sys::if_mtu(socket()?.as_fd(), &ifname).map_err(|e| not_found_or("SIOCGIFMTU", name, e))?;
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// Sets the link's MTU (`ip link set NAME mtu MTU`); the kernel refuses values the link
/// cannot take (`EINVAL`: a bridge's is at most its ports' smallest).
pub fn set_mtu(name: &str, mtu: u32) -> Result<()> {
    let ifname = name::check(name, false)?;
    let value = i32::try_from(mtu).map_err(|_| HostnetError::InvalidMtu(mtu))?;
    sys::set_if_mtu(socket()?.as_fd(), &ifname, value)
        .map_err(|e| not_found_or("SIOCSIFMTU", name, e))
}

fn netmask(prefix_len: u8) -> Result<Ipv4Addr> {
    if prefix_len > 32 {
        return Err(HostnetError::InvalidPrefix(prefix_len));
    }
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ok(Ipv4Addr::from(bits))
}

fn prefix_len(mask: Ipv4Addr) -> u8 {
    // At most 32, so it fits.
    u32::from(mask).leading_ones() as u8
}

/// Sets the interface's (primary) IPv4 address and prefix, `ip addr add ADDR/PREFIX dev NAME`
/// on an interface without one. An existing primary address is replaced.
pub fn set_ipv4_address(name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
    let mask = netmask(prefix_len)?;
    let ifname = name::check(name, false)?;
    let sock = socket()?;
    sys::set_if_ipv4(sock.as_fd(), &ifname, AddrField::Address, addr)
        .map_err(|e| not_found_or("SIOCSIFADDR", name, e))?;
    sys::set_if_ipv4(sock.as_fd(), &ifname, AddrField::Netmask, mask)
        .map_err(|e| not_found_or("SIOCSIFNETMASK", name, e))
}

/// The interface's primary IPv4 address and prefix length, if it has one.
pub fn ipv4_address(name: &str) -> Result<Option<(Ipv4Addr, u8)>> {
    let ifname = name::check(name, false)?;
    let sock = socket()?;
    let addr = match sys::if_ipv4(sock.as_fd(), &ifname, AddrField::Address) {
        Ok(addr) => addr,
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return Ok(None),
        Err(e) => return Err(not_found_or("SIOCGIFADDR", name, e)),
    };
    let mask = sys::if_ipv4(sock.as_fd(), &ifname, AddrField::Netmask)
        .map_err(|e| not_found_or("SIOCGIFNETMASK", name, e))?;
    Ok(Some((addr, prefix_len(mask))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_in_new_netns;
    use crate::{ErrorKind, Tap};

    #[test]
    fn masks() {
        assert_eq!(netmask(0).unwrap(), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(24).unwrap(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32).unwrap(), Ipv4Addr::new(255, 255, 255, 255));
        assert!(netmask(33).is_err());
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 240, 0)), 20);
    }

    #[test]
    fn bridge_lifecycle() {
        run_in_new_netns(|| {
            assert!(!exists("fvbr0").unwrap());
            create_bridge("fvbr0").unwrap();
            assert!(exists("fvbr0").unwrap());
            assert_eq!(
                create_bridge("fvbr0").unwrap_err().kind(),
                ErrorKind::AlreadyExists
            );

            assert!(!is_up("fvbr0").unwrap());
            set_up("fvbr0").unwrap();
            assert!(is_up("fvbr0").unwrap());

            let tap = Tap::create("fvtest%d").unwrap();
            add_to_bridge("fvbr0", tap.name()).unwrap();
            // `ip` runs in this thread's namespace (a child inherits it).
            let out = std::process::Command::new("ip")
                .args(["-o", "link", "show", "dev", tap.name()])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&out.stdout);
            assert!(out.contains("master fvbr0"), "{out}");
            assert_eq!(
                add_to_bridge("fvbr0", "fvnone0").unwrap_err().kind(),
                ErrorKind::NotFound
            );

            delete_bridge("fvbr0").unwrap();
            assert!(!exists("fvbr0").unwrap());
            assert!(
                exists(tap.name()).unwrap(),
                "ports are released, not deleted"
            );
            assert_eq!(
                delete_bridge("fvbr0").unwrap_err().kind(),
                ErrorKind::NotFound
            );
        })
        .unwrap();
    }

    #[test]
    fn macs_and_vlan_ids() {
        run_in_new_netns(|| {
            let tap = Tap::create("fvmac%d").unwrap();
            let address = mac(tap.name()).unwrap();
            assert_eq!(address.len(), 17, "{address}");
            assert_eq!(address.matches(':').count(), 5, "{address}");
            assert_eq!(mac("fvnone0").unwrap_err().kind(), ErrorKind::NotFound);
            // Ids outside 1..=4094 are refused before the kernel is asked.
            for vid in [0, 4095, 5000] {
                assert_eq!(
                    create_vlan(tap.name(), vid).unwrap_err().kind(),
                    ErrorKind::InvalidInput,
                    "{vid}"
                );
            }
        })
        .unwrap();
    }

    #[test]
    fn mtus() {
        run_in_new_netns(|| {
            let tap = Tap::create("fvmtu%d").unwrap();
            assert_eq!(mtu(tap.name()).unwrap(), 1500);
            set_mtu(tap.name(), 9000).unwrap();
            assert_eq!(mtu(tap.name()).unwrap(), 9000);
            set_mtu(tap.name(), 1400).unwrap();
            assert_eq!(mtu(tap.name()).unwrap(), 1400);
            // Below what Ethernet takes, or beyond an int: refused, unchanged.
            assert_eq!(
                set_mtu(tap.name(), 10).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                set_mtu(tap.name(), u32::MAX).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(mtu(tap.name()).unwrap(), 1400);
            assert_eq!(mtu("fvnone0").unwrap_err().kind(), ErrorKind::NotFound);
        })
        .unwrap();
    }

    #[test]
    fn addresses() {
        run_in_new_netns(|| {
            create_bridge("fvbr1").unwrap();
            assert_eq!(ipv4_address("fvbr1").unwrap(), None);
            // TEST-NET-1 (RFC 5737), inside this test's own namespace.
            let addr = Ipv4Addr::new(192, 0, 2, 1);
            set_ipv4_address("fvbr1", addr, 24).unwrap();
            assert_eq!(ipv4_address("fvbr1").unwrap(), Some((addr, 24)));
            assert_eq!(
                set_ipv4_address("fvbr1", addr, 40).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                set_ipv4_address("fvnone0", addr, 24).unwrap_err().kind(),
                ErrorKind::NotFound
            );
        })
        .unwrap();
    }
}
