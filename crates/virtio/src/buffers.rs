//! Copying between a descriptor chain and host memory, for devices whose chains are all
//! one direction: gather a device-readable chain into a host buffer, or check a
//! device-writable chain and scatter bytes into it (console, vsock, balloon).
//!
//! Every value in the chain is the guest's and is checked here: each descriptor's
//! direction, that it lies in guest memory, the total length against the caller's bound,
//! and that the chain really ended. `DescriptorChain` stops at a loop (its TTL), at a
//! `next` index past the table or at a bad indirect table; we see that as a last
//! descriptor that still has `VRING_DESC_F_NEXT`, and refuse the chain.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Why a chain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the chain is empty, loops, or links past the descriptor table")]
    Broken,
    #[error("a device-writable descriptor in a chain the device only reads")]
    Writable,
    #[error("a device-readable descriptor in a chain the device only writes")]
    Readable,
    #[error("a descriptor of {len} bytes at {addr:#x} lies outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("the chain holds more than {max} bytes")]
    TooLong { max: usize },
}

/// A device-writable buffer of a chain, checked to lie in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

fn outside(desc: &Descriptor) -> ChainError {
    ChainError::OutsideMemory {
        addr: desc.addr().raw_value(),
        len: desc.len(),
    }
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

/// Gathers a chain of device-readable descriptors into `out` (cleared first). The chain
/// may hold at most `max` bytes. On error `out` holds an unspecified prefix.
pub fn read_chain<M, I>(mem: &M, chain: I, max: usize, out: &mut Vec<u8>) -> Result<(), ChainError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let total = read_chain_prefix(mem, chain, max, out)?;
    if total > max as u64 {
        return Err(ChainError::TooLong { max });
    }
    Ok(())
}

/// Like [`read_chain`] for a chain of any length: copies its first `max` bytes into `out`
/// and returns its whole length (every descriptor is still checked), so that the caller
/// can look at the start of a chain it will refuse (a header, to answer it).
pub fn read_chain_prefix<M, I>(
    mem: &M,
    chain: I,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<u64, ChainError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    out.clear();
    let mut total = 0u64;
    walk(chain, |desc| {
        if desc.is_write_only() {
            return Err(ChainError::Writable);
        }
        let len = desc.len();
        if len == 0 {
            return Ok(());
        }
        // At most queue-size descriptors of < 4 GiB each: no overflow.
        total += u64::from(len);
        let n = usize::try_from(len).map_err(|_| outside(desc))?;
        let take = n.min(max - out.len());
        if take < n && !mem.check_range(desc.addr(), n, Permissions::Read) {
            return Err(outside(desc));
        }
        let start = out.len();
        out.resize(start + take, 0);
        mem.read_slice(&mut out[start..], desc.addr())
            .map_err(|_| outside(desc))
    })?;
    Ok(total)
}

/// Checks a chain of device-writable descriptors and puts its non-empty buffers in
/// `segs` (cleared first). Returns the chain's capacity in bytes.
pub fn writable_segments<M, I>(
    mem: &M,
    chain: I,
    segs: &mut Vec<Segment>,
) -> Result<u64, ChainError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    segs.clear();
    append_writable_segments(mem, chain, segs, usize::MAX)
}

/// Like [`writable_segments`], but appends to `segs` only the buffers that hold the
/// chain's first `need` bytes (the rest is still checked), and leaves `segs` as it was on
/// error. Returns the chain's whole capacity.
pub fn append_writable_segments<M, I>(
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
    let result = walk(chain, |desc| {
        if !desc.is_write_only() {
            return Err(ChainError::Readable);
        }
        let len = desc.len();
        if len == 0 {
            return Ok(());
        }
        let n = usize::try_from(len).map_err(|_| outside(desc))?;
        if !mem.check_range(desc.addr(), n, Permissions::Write) {
            return Err(outside(desc));
        }
        if capacity < need as u64 {
            segs.push(Segment {
                addr: desc.addr(),
                len,
            });
        }
        // At most queue-size descriptors of < 4 GiB each: no overflow.
        capacity += u64::from(len);
        Ok(())
    });
    if result.is_err() {
        segs.truncate(start);
    }
    result.map(|()| capacity)
}

/// Writes `data` across `segs` in order, as far as they reach, starting `skip` bytes in.
/// Returns the bytes written. The segments were checked by [`writable_segments`]; a
/// failure (memory changed since) stops the copy there.
pub fn write_segments<M>(mem: &M, segs: &[Segment], mut skip: usize, data: &[u8]) -> usize
where
    M: GuestMemory + ?Sized,
{
    let mut done = 0usize;
    for seg in segs {
        if done == data.len() {
            break;
        }
        let len = usize::try_from(seg.len).unwrap_or(usize::MAX);
        if skip >= len {
            skip -= len;
            continue;
        }
        let room = len - skip;
        let n = room.min(data.len() - done);
        // `skip < len <= u32::MAX`, so the offset fits the segment.
        let at = seg.addr.checked_add(skip as u64);
        skip = 0;
        let Some(at) = at else { break };
        if mem.write_slice(&data[done..done + n], at).is_err() {
            break;
        }
        done += n;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desc_chain as chain, F_NEXT as NEXT, F_WRITE as WRITE};
    use crate::GuestMemoryMmap;

    const MEM_SIZE: u64 = 0x10_0000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
    }

    #[test]
    fn gathers_readable_chains() {
        let m = mem();
        m.write_slice(b"hello ", GuestAddress(0x1000)).unwrap();
        m.write_slice(b"world", GuestAddress(0x2000)).unwrap();
        let mut out = vec![1, 2, 3];
        read_chain(
            &m,
            chain(&[(0x1000, 6, 0), (0xdead_0000, 0, 0), (0x2000, 5, 0)]),
            64,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn refuses_bad_readable_chains() {
        let m = mem();
        let mut out = Vec::new();
        let mut bad = |descs: Vec<Descriptor>, max| read_chain(&m, descs, max, &mut out);
        assert_eq!(
            bad(chain(&[(0x1000, 8, WRITE)]), 64),
            Err(ChainError::Writable)
        );
        assert_eq!(
            bad(chain(&[(0x1000, 40, 0), (0x2000, 40, 0)]), 64),
            Err(ChainError::TooLong { max: 64 })
        );
        // Too long and outside memory: the whole chain is checked, whatever the bound.
        assert_eq!(
            bad(chain(&[(0x1000, u32::MAX, 0)]), 64),
            Err(ChainError::OutsideMemory {
                addr: 0x1000,
                len: u32::MAX
            })
        );
        assert_eq!(
            bad(chain(&[(MEM_SIZE - 4, 8, 0)]), 64),
            Err(ChainError::OutsideMemory {
                addr: MEM_SIZE - 4,
                len: 8
            })
        );
        assert_eq!(
            bad(chain(&[(u64::MAX - 2, 8, 0)]), 64),
            Err(ChainError::OutsideMemory {
                addr: u64::MAX - 2,
                len: 8
            })
        );
        assert_eq!(
            bad(vec![Descriptor::new(0x1000, 8, NEXT, 0)], 64),
            Err(ChainError::Broken)
        );
        assert_eq!(bad(Vec::new(), 64), Err(ChainError::Broken));
    }

    #[test]
    fn prefix_of_a_long_chain() {
        let m = mem();
        m.write_slice(b"0123456789", GuestAddress(0x1000)).unwrap();
        let mut out = Vec::new();
        let total = read_chain_prefix(
            &m,
            chain(&[(0x1000, 4, 0), (0x1004, 6, 0), (0x8000, 100, 0)]),
            6,
            &mut out,
        )
        .unwrap();
        assert_eq!((total, out.as_slice()), (110, &b"012345"[..]));
        // The part past `max` is still checked.
        assert_eq!(
            read_chain_prefix(&m, chain(&[(0x1000, 4, 0), (MEM_SIZE, 4, 0)]), 2, &mut out),
            Err(ChainError::OutsideMemory {
                addr: MEM_SIZE,
                len: 4
            })
        );
    }

    #[test]
    fn checks_writable_chains_and_scatters() {
        let m = mem();
        let mut segs = Vec::new();
        let cap = writable_segments(
            &m,
            chain(&[(0x1000, 3, WRITE), (0x5000, 0, WRITE), (0x2000, 10, WRITE)]),
            &mut segs,
        )
        .unwrap();
        assert_eq!(cap, 13);
        assert_eq!(segs.len(), 2);
        assert_eq!(write_segments(&m, &segs, 0, b"abcdefgh"), 8);
        let mut got = [0u8; 5];
        m.read_slice(&mut got[..3], GuestAddress(0x1000)).unwrap();
        m.read_slice(&mut got[3..], GuestAddress(0x2000)).unwrap();
        assert_eq!(&got, b"abcde");
        // Skipping into the second segment.
        assert_eq!(write_segments(&m, &segs, 4, b"XY"), 2);
        let mut got = [0u8; 4];
        m.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        assert_eq!(&got, b"dXYg");
        // Stops where the buffers end.
        assert_eq!(write_segments(&m, &segs, 0, &[0u8; 20]), 13);
        assert_eq!(write_segments(&m, &segs, 13, &[0u8; 20]), 0);
    }

    #[test]
    fn refuses_bad_writable_chains() {
        let m = mem();
        let mut segs = Vec::new();
        assert_eq!(
            writable_segments(&m, chain(&[(0x1000, 8, WRITE), (0x2000, 8, 0)]), &mut segs),
            Err(ChainError::Readable)
        );
        assert_eq!(
            writable_segments(&m, chain(&[(MEM_SIZE - 4, 8, WRITE)]), &mut segs),
            Err(ChainError::OutsideMemory {
                addr: MEM_SIZE - 4,
                len: 8
            })
        );
        assert_eq!(
            writable_segments(
                &m,
                vec![Descriptor::new(0x1000, 8, WRITE | NEXT, 0)],
                &mut segs
            ),
            Err(ChainError::Broken)
        );
        // A chain of empty buffers is valid, with no capacity.
        assert_eq!(
            writable_segments(&m, chain(&[(0x1000, 0, WRITE)]), &mut segs),
            Ok(0)
        );
        assert!(segs.is_empty());
    }

    #[test]
    fn appends_only_what_is_needed_and_nothing_on_error() {
        let m = mem();
        let mut segs = vec![Segment {
            addr: GuestAddress(0),
            len: 1,
        }];
        let descs = [
            (0x1000, 100, WRITE),
            (0x2000, 0, WRITE),
            (0x3000, 100, WRITE),
            (0x4000, 100, WRITE),
        ];
        let cap = append_writable_segments(&m, chain(&descs), &mut segs, 150).unwrap();
        assert_eq!(cap, 300);
        let addrs: Vec<u64> = segs[1..].iter().map(|s| s.addr.0).collect();
        assert_eq!(addrs, [0x1000, 0x3000]);
        // A readable descriptor past what is needed is still refused; segs is untouched.
        let bad = chain(&[(0x1000, 100, WRITE), (0x2000, 10, 0)]);
        let err = append_writable_segments(&m, bad, &mut segs, 50).unwrap_err();
        assert_eq!(err, ChainError::Readable);
        assert_eq!(segs.len(), 3);
    }
}
