//! What the device needs from the host side of the link.

use std::io;
use std::os::fd::AsRawFd;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO,
};

/// Which offloaded frames the device can hand to the guest, so the backend need not
/// checksum or segment them first. Derived from the guest's `VIRTIO_NET_F_GUEST_*` features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames with a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    pub csum: bool,
    /// TCP/IPv4 segmentation offload (GSO) frames.
    pub tso4: bool,
    /// TCP/IPv6 GSO frames.
    pub tso6: bool,
    /// GSO frames with the ECN bit.
    pub tso_ecn: bool,
    /// UDP fragmentation offload frames.
    pub ufo: bool,
}

impl Offloads {
    /// The offloads a guest that acked `features` can receive. Segmentation needs checksum
    /// offload (the spec makes GUEST_TSO*/UFO depend on GUEST_CSUM; a tap refuses otherwise),
    /// and ECN needs TSO, so a driver that breaks those rules gets fewer offloads, not an error.
    pub fn from_guest_features(features: u64) -> Offloads {
        let has = |bit: u32| features & (1u64 << bit) != 0;
        let csum = has(VIRTIO_NET_F_GUEST_CSUM);
        let tso4 = csum && has(VIRTIO_NET_F_GUEST_TSO4);
        let tso6 = csum && has(VIRTIO_NET_F_GUEST_TSO6);
        Offloads {
            csum,
            tso4,
            tso6,
            tso_ecn: (tso4 || tso6) && has(VIRTIO_NET_F_GUEST_ECN),
            ufo: csum && has(VIRTIO_NET_F_GUEST_UFO),
        }
    }
}

/// The host end of a virtio-net link: a tap in fv-vmm (`fv_hostnet::Tap`), an in-memory fake
/// in tests. Every frame in both directions starts with a virtio-net header of the length
/// set by [`NetBackend::set_vnet_hdr_len`] (the device sets [`super::VNET_HDR_LEN`]).
///
/// The device polls `as_raw_fd()` for readability (level-triggered) and calls `read_frame`
/// until it fails with `WouldBlock`, so the descriptor must be non-blocking.
pub trait NetBackend: AsRawFd + Send {
    /// Reads one frame, header first, into `buf` (at least [`super::MAX_FRAME_LEN`] bytes)
    /// and returns its length. `WouldBlock` when no frame is waiting; any other error is
    /// taken as a backend that is gone (the device stops receiving until it is reset).
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame, header first. An error drops that frame (counted), nothing more.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The length of the virtio-net header on every frame, in both directions.
    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()>;
    /// The offloaded frames `read_frame` may return; others must come checksummed and
    /// segmented. Called at activation with what the guest acked.
    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(list: &[u32]) -> u64 {
        list.iter().fold(0, |acc, b| acc | (1u64 << b))
    }

    #[test]
    fn offloads_follow_guest_features() {
        assert_eq!(Offloads::from_guest_features(0), Offloads::default());
        let all = bits(&[
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_GUEST_UFO,
        ]);
        let o = Offloads::from_guest_features(all);
        assert!(o.csum && o.tso4 && o.tso6 && o.tso_ecn && o.ufo);
        // Segmentation without checksum offload is not honoured.
        let o = Offloads::from_guest_features(bits(&[VIRTIO_NET_F_GUEST_TSO4]));
        assert_eq!(o, Offloads::default());
        let o =
            Offloads::from_guest_features(bits(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN]));
        assert!(o.csum && !o.tso_ecn);
    }
}
