//! Descriptor chains in, frames or checked receive buffers out; no queue, fd or thread.
//!
//! The walking and checking is [`crate::buffers`]'s, shared with the other devices; this
//! adds what a network chain must also be: a transmit chain long enough for a header and
//! an Ethernet header, a receive chain that can hold at least the header.

use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestMemory;

use super::{ETH_HLEN, VNET_HDR_LEN};
use crate::buffers;
pub(crate) use crate::buffers::Segment;

/// Why a descriptor chain was refused. The chain is returned to the driver unused (length
/// 0) and its frame dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Chain(#[from] buffers::ChainError),
    #[error("a {len}-byte frame is too short for a header and an Ethernet header")]
    TooShort { len: usize },
    #[error("a receive chain of {0} bytes cannot hold the 12-byte header")]
    RxTooSmall(u64),
}

/// Gathers a transmit chain (header and frame) into `frame` and returns its length. Every
/// descriptor must be device-readable and in guest memory; the total must be at most
/// `max` bytes (`MAX_FRAME_LEN`) and hold a header and an Ethernet header.
pub(crate) fn read_tx_frame<M, I>(
    mem: &M,
    chain: I,
    max: usize,
    frame: &mut Vec<u8>,
) -> Result<usize, ChainError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    buffers::read_chain(mem, chain, max, frame)?;
    if frame.len() < VNET_HDR_LEN + ETH_HLEN {
        return Err(ChainError::TooShort { len: frame.len() });
    }
    Ok(frame.len())
}

/// Checks a receive chain and appends its buffers to `segs`, up to the first `need` bytes
/// (the rest of the chain is still checked, not recorded). Returns the chain's whole
/// capacity. Every descriptor must be device-writable and in guest memory, and the chain
/// must hold at least a header. On error `segs` is left as it was.
pub(crate) fn collect_rx_buffers<M, I>(
    mem: &M,
    chain: I,
    segs: &mut Vec<Segment>,
    need: usize,
) -> Result<u64, ChainError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let start = segs.len();
    let capacity = buffers::append_writable_segments(mem, chain, segs, need)?;
    if capacity < VNET_HDR_LEN as u64 {
        segs.truncate(start);
        return Err(ChainError::RxTooSmall(capacity));
    }
    Ok(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffers::ChainError::{Broken, Writable};
    use crate::testing::{desc_chain as chain, F_NEXT as NEXT, F_WRITE as WRITE};
    use crate::GuestMemoryMmap;
    use vm_memory::{Bytes, GuestAddress};

    const MEM_SIZE: u64 = 0x10_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
    }

    #[test]
    fn tx_gathers_readable_chains_that_hold_a_frame() {
        let m = mem();
        let frame: Vec<u8> = (0..100u8).collect();
        m.write_slice(&frame[..30], GuestAddress(0x1000)).unwrap();
        m.write_slice(&frame[30..], GuestAddress(0x2000)).unwrap();
        let mut buf = Vec::new();
        let descs = chain(&[(0x1000, 30, 0), (0xdead_0000, 0, 0), (0x2000, 70, 0)]);
        let len = read_tx_frame(&m, descs, 200, &mut buf).unwrap();
        assert_eq!(&buf[..len], &frame[..]);

        let mut bad = |descs, max| read_tx_frame(&m, descs, max, &mut buf).unwrap_err();
        assert_eq!(bad(chain(&[(0x1000, 100, WRITE)]), 200), Writable.into());
        assert_eq!(
            bad(chain(&[(0x1000, 150, 0), (0x2000, 51, 0)]), 200),
            buffers::ChainError::TooLong { max: 200 }.into()
        );
        assert_eq!(
            bad(chain(&[(0x1000, 25, 0)]), 200),
            ChainError::TooShort { len: 25 }
        );
        assert_eq!(
            bad(vec![Descriptor::new(0x1000, 50, NEXT, 0)], 200),
            Broken.into()
        );
    }

    #[test]
    fn rx_chains_must_hold_a_header() {
        let m = mem();
        let mut segs = Vec::new();
        let mut collect = |descs| collect_rx_buffers(&m, descs, &mut segs, 8);
        assert_eq!(
            collect(chain(&[(0x1000, 11, WRITE)])),
            Err(ChainError::RxTooSmall(11))
        );
        assert_eq!(
            collect(chain(&[(0x1000, 0, WRITE)])),
            Err(ChainError::RxTooSmall(0))
        );
        assert_eq!(collect(chain(&[(0x1000, 12, WRITE)])), Ok(12));
        assert_eq!(segs.len(), 1, "refused chains left nothing behind");
    }
}
