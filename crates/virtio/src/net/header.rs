//! The `virtio_net_hdr_v1` in front of every frame (12 bytes, little-endian):
//! `flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16,
//! csum_offset: u16, num_buffers: u16`.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
};

use super::VNET_HDR_LEN;

const FLAGS: usize = 0;
const GSO_TYPE: usize = 1;
const GSO_SIZE: usize = 4;
const NUM_BUFFERS: usize = 10;

// The flag and GSO type values all fit in the header's u8 fields.
const NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
const DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;

/// Why a transmitted frame's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the frame asks for checksum offload, which the driver did not negotiate")]
    CsumNotNegotiated,
    #[error("GSO type {0:#x} is unknown or was not negotiated")]
    GsoNotNegotiated(u8),
    #[error("a GSO frame with gso_size 0")]
    ZeroGsoSize,
}

fn has(features: u64, bit: u32) -> bool {
    features & (1u64 << bit) != 0
}

/// Checks the header of a frame the guest transmits against the features it acked, and
/// normalizes it for the backend: flags other than NEEDS_CSUM (DATA_VALID, RSC_INFO are
/// receive-only) are cleared, and `num_buffers` is zeroed (meaningless on transmit).
pub(crate) fn check_tx(hdr: &mut [u8; VNET_HDR_LEN], features: u64) -> Result<(), HeaderError> {
    hdr[FLAGS] &= NEEDS_CSUM;
    if hdr[FLAGS] & NEEDS_CSUM != 0 && !has(features, VIRTIO_NET_F_CSUM) {
        return Err(HeaderError::CsumNotNegotiated);
    }
    let gso_type = hdr[GSO_TYPE];
    let ecn = gso_type & GSO_ECN != 0;
    let allowed = match u32::from(gso_type & !GSO_ECN) {
        VIRTIO_NET_HDR_GSO_NONE => !ecn,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(features, VIRTIO_NET_F_HOST_TSO4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(features, VIRTIO_NET_F_HOST_TSO6),
        VIRTIO_NET_HDR_GSO_UDP => has(features, VIRTIO_NET_F_HOST_UFO),
        _ => false,
    } && (!ecn || has(features, VIRTIO_NET_F_HOST_ECN));
    if !allowed {
        return Err(HeaderError::GsoNotNegotiated(gso_type));
    }
    if u32::from(gso_type) != VIRTIO_NET_HDR_GSO_NONE
        && u16::from_le_bytes([hdr[GSO_SIZE], hdr[GSO_SIZE + 1]]) == 0
    {
        return Err(HeaderError::ZeroGsoSize);
    }
    hdr[NUM_BUFFERS..NUM_BUFFERS + 2].fill(0);
    Ok(())
}

/// Prepares the header of a frame from the backend for the guest: `num_buffers` (the
/// backend leaves those two bytes unwritten), and DATA_VALID cleared unless the driver
/// negotiated GUEST_CSUM (the only case the spec lets the device set it).
pub(crate) fn fill_rx(hdr: &mut [u8], num_buffers: u16, guest_csum: bool) {
    if !guest_csum {
        hdr[FLAGS] &= !DATA_VALID;
    }
    hdr[NUM_BUFFERS..NUM_BUFFERS + 2].copy_from_slice(&num_buffers.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(list: &[u32]) -> u64 {
        list.iter().fold(0, |acc, b| acc | (1u64 << b))
    }

    fn hdr(flags: u8, gso_type: u8, gso_size: u16) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[FLAGS] = flags;
        h[GSO_TYPE] = gso_type;
        h[GSO_SIZE..GSO_SIZE + 2].copy_from_slice(&gso_size.to_le_bytes());
        h[NUM_BUFFERS] = 7;
        h
    }

    #[test]
    fn plain_frame_needs_nothing() {
        let mut h = hdr(0, 0, 0);
        check_tx(&mut h, 0).unwrap();
        assert_eq!(h[NUM_BUFFERS], 0, "num_buffers is zeroed");
        // Receive-only flags are dropped, not refused.
        let mut h = hdr(DATA_VALID | 4, 0, 0);
        check_tx(&mut h, 0).unwrap();
        assert_eq!(h[FLAGS], 0);
    }

    #[test]
    fn offloads_must_be_negotiated() {
        let mut h = hdr(NEEDS_CSUM, 0, 0);
        assert_eq!(check_tx(&mut h, 0), Err(HeaderError::CsumNotNegotiated));
        check_tx(&mut h, bits(&[VIRTIO_NET_F_CSUM])).unwrap();

        let csum_tso4 = bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4]);
        let mut h = hdr(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 as u8, 1448);
        assert!(check_tx(&mut h, bits(&[VIRTIO_NET_F_CSUM])).is_err());
        check_tx(&mut h, csum_tso4).unwrap();

        let mut h = hdr(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6 as u8, 1448);
        assert!(check_tx(&mut h, csum_tso4).is_err());

        let mut h = hdr(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 as u8 | GSO_ECN, 1448);
        assert!(check_tx(&mut h, csum_tso4).is_err());
        check_tx(&mut h, csum_tso4 | bits(&[VIRTIO_NET_F_HOST_ECN])).unwrap();

        let mut h = hdr(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP as u8, 1448);
        assert!(check_tx(&mut h, csum_tso4).is_err());

        let mut h = hdr(0, GSO_ECN, 0);
        assert!(
            check_tx(&mut h, u64::MAX).is_err(),
            "ECN alone is not a GSO type"
        );
        let mut h = hdr(0, 0x42, 1448);
        assert!(check_tx(&mut h, u64::MAX).is_err());

        let mut h = hdr(NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 as u8, 0);
        assert_eq!(check_tx(&mut h, csum_tso4), Err(HeaderError::ZeroGsoSize));
    }

    #[test]
    fn rx_header() {
        let mut h = hdr(DATA_VALID, 0, 0);
        fill_rx(&mut h, 3, true);
        assert_eq!(h[FLAGS], DATA_VALID);
        assert_eq!(&h[NUM_BUFFERS..], &[3, 0]);
        fill_rx(&mut h, 1, false);
        assert_eq!(h[FLAGS], 0);
        assert_eq!(&h[NUM_BUFFERS..], &[1, 0]);
    }
}
