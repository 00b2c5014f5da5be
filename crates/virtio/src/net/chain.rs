//! Descriptor chains in, frames or checked receive buffers out; no queue, fd or thread.
//!
//! Every function takes the chain as an iterator of descriptors (a `DescriptorChain` is
//! one), so that the checks are the same whatever the chain came from. A chain is refused
//! when it ends early: `DescriptorChain` stops at a loop (its TTL), at a `next` index past
//! the table, at an unreadable descriptor or a bad indirect table, and we see that as a
//! last descriptor that still has `VRING_DESC_F_NEXT` (or none at all).

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use virtio_queue::desc::split::Descriptor;

use super::{ETH_HLEN, VNET_HDR_LEN};

/// Why a descriptor chain was refused. The chain is returned to the driver unused (length
/// 0) and its frame dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the chain is empty, loops, or links past the descriptor table")]
    Broken,
    #[error("a transmit descriptor is device-writable")]
    WritableInTx,
    #[error("a receive descriptor is device-readable")]
    ReadableInRx,
    #[error("a descriptor of {len} bytes at {addr:#x} lies outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("a {len}-byte frame is too short for a header and an Ethernet header")]
    TooShort { len: usize },
    #[error("the frame is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("a receive chain of {0} bytes cannot hold the 12-byte header")]
    RxTooSmall(u64),
}

/// A device-writable piece of a receive chain, checked to lie in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// Calls `f` on each descriptor, then checks that the chain ended on a descriptor without
/// `VRING_DESC_F_NEXT`.
fn walk<I, F>(chain: I, mut f: F) -> Result<(), ChainError>
where
    I: IntoIterator<Item = Descriptor>,
    F: FnMut(&Descriptor) -> Result<(), ChainError>,
{
    let mut ended = false;
    for desc in chain {
        ended = !desc.has_next();
        f(&desc)?;
    }
    if ended {
        Ok(())
    } else {
        Err(ChainError::Broken)
    }
}

fn outside(desc: &Descriptor) -> ChainError {
    ChainError::OutsideMemory {
        addr: desc.addr().raw_value(),
        len: desc.len(),
    }
}

/// Gathers a transmit chain (header and frame) into `buf` and returns its length. Every
/// descriptor must be device-readable and in guest memory; the total must fit `buf` (the
/// caller sizes it to `MAX_FRAME_LEN`) and hold a header and an Ethernet header.
pub(crate) fn read_tx_frame<M, I>(mem: &M, chain: I, buf: &mut [u8]) -> Result<usize, ChainError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let max = buf.len();
    let mut len = 0usize;
    walk(chain, |desc| {
        if desc.is_write_only() {
            return Err(ChainError::WritableInTx);
        }
        let end = usize::try_from(desc.len())
            .ok()
            .and_then(|n| len.checked_add(n))
            .filter(|&end| end <= max)
            .ok_or(ChainError::TooLong { max })?;
        mem.read_slice(&mut buf[len..end], desc.addr())
            .map_err(|_| outside(desc))?;
        len = end;
        Ok(())
    })?;
    if len < VNET_HDR_LEN + ETH_HLEN {
        return Err(ChainError::TooShort { len });
    }
    Ok(len)
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
    let mut capacity = 0u64;
    let mut recorded = 0usize;
    let result = walk(chain, |desc| {
        if !desc.is_write_only() {
            return Err(ChainError::ReadableInRx);
        }
        let len = desc.len();
        if len == 0 {
            return Ok(());
        }
        let len_usize = usize::try_from(len).map_err(|_| outside(desc))?;
        if !mem.check_range(desc.addr(), len_usize, Permissions::Write) {
            return Err(outside(desc));
        }
        capacity += u64::from(len);
        if recorded < need {
            segs.push(Segment {
                addr: desc.addr(),
                len,
            });
            recorded = recorded.saturating_add(len_usize);
        }
        Ok(())
    });
    let result = match result {
        Ok(()) if capacity < VNET_HDR_LEN as u64 => Err(ChainError::RxTooSmall(capacity)),
        Ok(()) => Ok(capacity),
        Err(e) => Err(e),
    };
    if result.is_err() {
        segs.truncate(start);
    }
    result
}

/// Writes `data` across `segs` in order, as far as they reach; returns the bytes written.
pub(crate) fn write_rx<M>(mem: &M, segs: &[Segment], data: &[u8]) -> Result<usize, ChainError>
where
    M: GuestMemory + ?Sized,
{
    let mut done = 0usize;
    for seg in segs {
        if done == data.len() {
            break;
        }
        let n = usize::try_from(seg.len)
            .unwrap_or(usize::MAX)
            .min(data.len() - done);
        mem.write_slice(&data[done..done + n], seg.addr)
            .map_err(|_| ChainError::OutsideMemory {
                addr: seg.addr.raw_value(),
                len: seg.len,
            })?;
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestMemoryMmap;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;
    const MEM_SIZE: u64 = 0x10_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
    }

    /// A well-formed chain: NEXT on all but the last.
    fn chain(descs: &[(u64, u32, u16)]) -> Vec<Descriptor> {
        let n = descs.len();
        descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let flags = if i + 1 < n {
                    flags | NEXT
                } else {
                    flags & !NEXT
                };
                Descriptor::new(addr, len, flags, 0)
            })
            .collect()
    }

    #[test]
    fn tx_gathers_all_readable_descriptors() {
        let m = mem();
        let frame: Vec<u8> = (0..100u8).collect();
        m.write_slice(&frame[..30], GuestAddress(0x1000)).unwrap();
        m.write_slice(&frame[30..], GuestAddress(0x2000)).unwrap();
        let mut buf = vec![0u8; 200];
        let len = read_tx_frame(&m, chain(&[(0x1000, 30, 0), (0x2000, 70, 0)]), &mut buf).unwrap();
        assert_eq!(&buf[..len], &frame[..]);
        // Zero-length descriptors are allowed and add nothing.
        let len = read_tx_frame(
            &m,
            chain(&[(0x1000, 30, 0), (0xdead_0000, 0, 0), (0x2000, 70, 0)]),
            &mut buf,
        )
        .unwrap();
        assert_eq!(&buf[..len], &frame[..]);
    }

    #[test]
    fn tx_refuses_bad_chains() {
        let m = mem();
        let mut buf = vec![0u8; 200];
        let bad =
            |descs: Vec<Descriptor>, buf: &mut [u8]| read_tx_frame(&m, descs, buf).unwrap_err();
        assert_eq!(
            bad(chain(&[(0x1000, 100, WRITE)]), &mut buf),
            ChainError::WritableInTx
        );
        assert_eq!(
            bad(chain(&[(0x1000, 201, 0)]), &mut buf),
            ChainError::TooLong { max: 200 }
        );
        assert_eq!(
            bad(chain(&[(0x1000, 150, 0), (0x2000, 51, 0)]), &mut buf),
            ChainError::TooLong { max: 200 }
        );
        assert_eq!(
            bad(chain(&[(0x1000, 25, 0)]), &mut buf),
            ChainError::TooShort { len: 25 }
        );
        assert_eq!(
            bad(chain(&[(0x1000, 0, 0)]), &mut buf),
            ChainError::TooShort { len: 0 }
        );
        assert_eq!(
            bad(chain(&[(MEM_SIZE - 10, 50, 0)]), &mut buf),
            ChainError::OutsideMemory {
                addr: MEM_SIZE - 10,
                len: 50
            }
        );
        assert_eq!(
            bad(chain(&[(u64::MAX - 10, 50, 0)]), &mut buf),
            ChainError::OutsideMemory {
                addr: u64::MAX - 10,
                len: 50
            }
        );
        // Ends on a descriptor that still has NEXT: a loop or a bad index cut short.
        assert_eq!(
            bad(vec![Descriptor::new(0x1000, 50, NEXT, 0)], &mut buf),
            ChainError::Broken
        );
        assert_eq!(bad(Vec::new(), &mut buf), ChainError::Broken);
    }

    #[test]
    fn rx_collects_up_to_need_and_checks_all() {
        let m = mem();
        let mut segs = vec![Segment {
            addr: GuestAddress(0),
            len: 1,
        }];
        let cap = collect_rx_buffers(
            &m,
            chain(&[
                (0x1000, 100, WRITE),
                (0x2000, 0, WRITE),
                (0x3000, 100, WRITE),
                (0x4000, 100, WRITE),
            ]),
            &mut segs,
            150,
        )
        .unwrap();
        assert_eq!(cap, 300);
        assert_eq!(
            &segs[1..],
            &[
                Segment {
                    addr: GuestAddress(0x1000),
                    len: 100
                },
                Segment {
                    addr: GuestAddress(0x3000),
                    len: 100
                },
            ]
        );

        // A readable descriptor past what is needed is still refused; segs is untouched.
        let err = collect_rx_buffers(
            &m,
            chain(&[(0x1000, 100, WRITE), (0x2000, 10, 0)]),
            &mut segs,
            50,
        )
        .unwrap_err();
        assert_eq!(err, ChainError::ReadableInRx);
        assert_eq!(segs.len(), 3);

        let mut s = Vec::new();
        assert_eq!(
            collect_rx_buffers(&m, chain(&[(MEM_SIZE - 4, 8, WRITE)]), &mut s, 8).unwrap_err(),
            ChainError::OutsideMemory {
                addr: MEM_SIZE - 4,
                len: 8
            }
        );
        assert_eq!(
            collect_rx_buffers(&m, chain(&[(0x1000, 11, WRITE)]), &mut s, 8).unwrap_err(),
            ChainError::RxTooSmall(11)
        );
        assert_eq!(
            collect_rx_buffers(&m, chain(&[(0x1000, 0, WRITE)]), &mut s, 8).unwrap_err(),
            ChainError::RxTooSmall(0)
        );
        assert_eq!(
            collect_rx_buffers(
                &m,
                vec![Descriptor::new(0x1000, 64, WRITE | NEXT, 0)],
                &mut s,
                8
            )
            .unwrap_err(),
            ChainError::Broken
        );
        assert!(s.is_empty());
    }

    #[test]
    fn rx_write_scatters() {
        let m = mem();
        let segs = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 3,
            },
            Segment {
                addr: GuestAddress(0x2000),
                len: 10,
            },
        ];
        assert_eq!(write_rx(&m, &segs, b"abcdefgh").unwrap(), 8);
        let mut out = [0u8; 5];
        m.read_slice(&mut out[..3], GuestAddress(0x1000)).unwrap();
        m.read_slice(&mut out[3..], GuestAddress(0x2000)).unwrap();
        assert_eq!(&out, b"abcde");
        assert_eq!(
            write_rx(&m, &segs, &[7u8; 20]).unwrap(),
            13,
            "stops where the buffers end"
        );
    }
}
