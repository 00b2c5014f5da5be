//! Tap interfaces through `/dev/net/tun`.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::{link, name, sys, HostnetError, Result};

/// The reader of the tap accepts frames with a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
pub const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
/// ... TCP/IPv4 segmentation offload frames (needs `TUN_F_CSUM`).
pub const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
/// ... TCP/IPv6 segmentation offload frames (needs `TUN_F_CSUM`).
pub const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;
/// ... TSO frames with the ECN bit (needs `TUN_F_TSO4` or `TUN_F_TSO6`).
pub const TUN_F_TSO_ECN: u32 = libc::TUN_F_TSO_ECN;
/// ... UDP fragmentation offload frames (needs `TUN_F_CSUM`).
pub const TUN_F_UFO: u32 = libc::TUN_F_UFO;

const TUN_PATH: &str = "/dev/net/tun";

/// A tap interface: each `read` returns one Ethernet frame that the host sent to the
/// interface, each `write` injects one frame as if the interface had received it. Both carry
/// a virtio-net header first (`IFF_VNET_HDR`; 10 bytes until `set_vnet_hdr_size`). The file
/// is non-blocking: `read` fails with `WouldBlock` when no frame is waiting.
///
/// A tap made by [`Tap::create`] is not persistent: the kernel removes the interface when
/// this value (its only file) is dropped. One attached by [`Tap::open`] is left as it was.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    created: bool,
}

impl Tap {
    /// Creates a new tap named `name_or_pattern`, where one `%d` lets the kernel choose a
    /// free number (`"fvtap%d"` gives `fvtap0`, `fvtap1`...). Fails with `AlreadyExists`
    /// when a fixed name is taken, rather than attaching to that interface.
    pub fn create(name_or_pattern: &str) -> Result<Tap> {
        let ifname = name::check(name_or_pattern, true)?;
        // A fixed name that exists would make TUNSETIFF attach to it (if it is a free tap)
        // instead of creating one. The check and the creation are not atomic: a tap created
        // by someone else between the two is attached to, and then not ours to remove; but
        // as we never make it persistent, nothing is left behind by us either way.
        if !name_or_pattern.contains('%') && link::exists(name_or_pattern)? {
            return Err(HostnetError::AlreadyExists(name_or_pattern.to_owned()));
        }
        Self::attach(name_or_pattern, &ifname, true)
    }

    /// Attaches to the existing (persistent) tap `name`, as made by `ip tuntap add mode tap`
    /// or by `fvd`. Fails with `NotFound` if there is none (it does not create one), and with
    /// a `Busy` kind if another process holds it.
    pub fn open(name: &str) -> Result<Tap> {
        let ifname = name::check(name, false)?;
        if !link::exists(name)? {
            return Err(HostnetError::NotFound(name.to_owned()));
        }
        Self::attach(name, &ifname, false)
    }

    fn attach(requested: &str, ifname: &sys::IfName, created: bool) -> Result<Tap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_PATH)
            .map_err(HostnetError::OpenTun)?;
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        let actual = sys::tun_set_iff(file.as_fd(), ifname, flags)
            .map_err(|e| HostnetError::ioctl("TUNSETIFF", requested, e))?;
        Ok(Tap {
            file,
            name: actual.to_string_lossy(),
            created,
        })
    }

    /// Makes the tap `name` outlive this process (until [`Tap::remove_persistent`]), so that
    /// another process can attach to it with [`Tap::open`]: how fvd makes a VIF's tap, puts
    /// it on its network's bridge, and hands it to fv-vmm. `AlreadyExists` if the name is
    /// taken.
    pub fn create_persistent(name: &str) -> Result<()> {
        let tap = Self::create(name)?;
        sys::tun_set_persist(tap.file.as_fd(), true)
            .map_err(|e| HostnetError::ioctl("TUNSETPERSIST", name, e))
    }

    /// Removes a persistent tap (nothing if there is none). Fails with a `Busy` kind while
    /// a process still holds it.
    pub fn remove_persistent(name: &str) -> Result<()> {
        let tap = match Self::open(name) {
            Ok(tap) => tap,
            Err(HostnetError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        sys::tun_set_persist(tap.file.as_fd(), false)
            .map_err(|e| HostnetError::ioctl("TUNSETPERSIST", name, e))
    }

    /// The interface's name (the kernel's choice when created from a pattern).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether [`Tap::create`] made this interface (it disappears when this value is dropped).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The tun flags the interface has (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, ...).
    pub fn flags(&self) -> Result<i32> {
        let (_, flags) = sys::tun_get_iff(self.file.as_fd())
            .map_err(|e| HostnetError::ioctl("TUNGETIFF", &self.name, e))?;
        Ok(flags)
    }

    /// Sets the length of the virtio-net header before every frame, in both directions:
    /// 12 for `virtio_net_hdr_v1` (virtio 1.x, or mergeable rx buffers), 10 for the legacy
    /// `virtio_net_hdr`.
    pub fn set_vnet_hdr_size(&self, size: usize) -> Result<()> {
        let size_int = i32::try_from(size)
            .ok()
            .filter(|&s| s >= 10)
            .ok_or(HostnetError::InvalidHeaderSize(size))?;
        sys::tun_set_vnet_hdr_sz(self.file.as_fd(), size_int)
            .map_err(|e| HostnetError::ioctl("TUNSETVNETHDRSZ", &self.name, e))
    }

    pub fn vnet_hdr_size(&self) -> Result<usize> {
        let size = sys::tun_get_vnet_hdr_sz(self.file.as_fd())
            .map_err(|e| HostnetError::ioctl("TUNGETVNETHDRSZ", &self.name, e))?;
        // The kernel keeps it at 10 or more.
        Ok(usize::try_from(size).unwrap_or(0))
    }

    /// Sets which offloaded frames (`TUN_F_*`) the reader of this tap accepts: the kernel
    /// segments and checksums the rest before `read` returns them. Set it to match what the
    /// guest acked (`VIRTIO_NET_F_GUEST_*`). The TSO and UFO flags need `TUN_F_CSUM`.
    pub fn set_offload(&self, flags: u32) -> Result<()> {
        sys::tun_set_offload(self.file.as_fd(), flags)
            .map_err(|e| HostnetError::ioctl("TUNSETOFFLOAD", &self.name, e))
    }

    /// Brings the interface up (in the calling thread's network namespace, which must be
    /// the tap's).
    pub fn set_up(&self) -> Result<()> {
        link::set_up(&self.name)
    }

    /// Reads one frame with its header; `WouldBlock` when none is waiting. A buffer shorter
    /// than the frame gets an error or a truncated frame: size it for the largest frame.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame with its header, in one call (the kernel takes whole frames only).
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }

    /// Reads one frame scattered over `bufs` (readv).
    pub fn readv(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.file).read_vectored(bufs)
    }

    /// Writes one frame gathered from `bufs` (writev).
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Tap::read(self, buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.readv(bufs)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Tap::write(self, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writev(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::run_in_new_netns;

    #[test]
    fn create_names_flags_and_removal() {
        run_in_new_netns(|| {
            let tap = Tap::create("fvtest%d").unwrap();
            assert!(tap.name().starts_with("fvtest"), "{}", tap.name());
            assert!(tap.created());
            let flags = tap.flags().unwrap();
            assert_eq!(flags & libc::IFF_TAP, libc::IFF_TAP);
            assert_eq!(flags & libc::IFF_NO_PI, libc::IFF_NO_PI);
            assert_eq!(flags & libc::IFF_VNET_HDR, libc::IFF_VNET_HDR);
            assert!(link::exists(tap.name()).unwrap());

            // A fixed name that exists is refused, not attached to.
            let err = Tap::create(tap.name()).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::AlreadyExists);

            let name = tap.name().to_owned();
            drop(tap);
            assert!(
                !link::exists(&name).unwrap(),
                "a created tap goes away when dropped"
            );

            let fixed = Tap::create("fvfixed").unwrap();
            assert_eq!(fixed.name(), "fvfixed");
        })
        .unwrap();
    }

    #[test]
    fn persistent_taps_outlive_their_maker_until_removed() {
        run_in_new_netns(|| {
            Tap::create_persistent("fvpersist").unwrap();
            assert!(
                link::exists("fvpersist").unwrap(),
                "kept after its file closed"
            );
            assert_eq!(
                Tap::create_persistent("fvpersist").unwrap_err().kind(),
                crate::ErrorKind::AlreadyExists
            );
            // Another holder attaches, as fv-vmm does; while it holds the tap, removal
            // waits for it.
            let held = Tap::open("fvpersist").unwrap();
            assert!(!held.created());
            drop(held);
            Tap::remove_persistent("fvpersist").unwrap();
            assert!(!link::exists("fvpersist").unwrap());
            // Removing what is not there is not an error.
            Tap::remove_persistent("fvpersist").unwrap();
        })
        .unwrap();
    }

    #[test]
    fn vnet_header_and_offloads() {
        run_in_new_netns(|| {
            let tap = Tap::create("fvtest%d").unwrap();
            assert_eq!(tap.vnet_hdr_size().unwrap(), 10);
            tap.set_vnet_hdr_size(12).unwrap();
            assert_eq!(tap.vnet_hdr_size().unwrap(), 12);
            assert_eq!(
                tap.set_vnet_hdr_size(4).unwrap_err().kind(),
                crate::ErrorKind::InvalidInput
            );

            tap.set_offload(0).unwrap();
            tap.set_offload(TUN_F_CSUM).unwrap();
            tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO)
                .unwrap();
            // TSO without checksum offload is refused by the kernel.
            let err = tap.set_offload(TUN_F_TSO4).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        })
        .unwrap();
    }

    #[test]
    fn open_existing_is_left_alone() {
        run_in_new_netns(|| {
            assert_eq!(
                Tap::open("fvnone0").unwrap_err().kind(),
                crate::ErrorKind::NotFound
            );
            // Make a persistent tap the way an administrator would.
            let status = std::process::Command::new("ip")
                .args(["tuntap", "add", "dev", "fvpersist", "mode", "tap"])
                .status()
                .unwrap();
            assert!(status.success());
            let tap = Tap::open("fvpersist").unwrap();
            assert!(!tap.created());
            assert_eq!(tap.name(), "fvpersist");
            assert_eq!(
                tap.flags().unwrap() & libc::IFF_VNET_HDR,
                libc::IFF_VNET_HDR
            );
            drop(tap);
            assert!(link::exists("fvpersist").unwrap(), "an opened tap stays");
            let status = std::process::Command::new("ip")
                .args(["tuntap", "del", "dev", "fvpersist", "mode", "tap"])
                .status()
                .unwrap();
            assert!(status.success());
        })
        .unwrap();
    }

    #[test]
    fn read_is_non_blocking() {
        run_in_new_netns(|| {
            let tap = Tap::create("fvtest%d").unwrap();
            let mut buf = [0u8; 2048];
            let err = tap.read(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        })
        .unwrap();
    }
}
