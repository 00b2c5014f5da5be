//! The virtio-vsock packet: a 44-byte header (`struct virtio_vsock_hdr`, little endian,
//! packed) and, for `RW`, a payload. Pure: a chain and guest memory in, a checked header
//! out; no connection, no fd.
//!
//! Every field the guest sends is checked: the chain's directions and bounds, `len`
//! against the bytes the chain really holds and against [`MAX_PAYLOAD`], `src_cid`
//! against the guest's CID, `dst_cid` against the host's, `type` (stream only) and `op`.

use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestMemory;

use super::{HOST_CID, MAX_PAYLOAD};
use crate::buffers::{self, ChainError};

/// Length of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;

/// `type`: a stream socket, the only type we offer (no `VIRTIO_VSOCK_F_SEQPACKET`).
pub const TYPE_STREAM: u16 = 1;

/// `op` values.
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// `flags` of a SHUTDOWN: the sender will receive no more, send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Response,
    Rst,
    Shutdown,
    Rw,
    CreditUpdate,
    CreditRequest,
}

impl Op {
    pub fn from_raw(op: u16) -> Option<Op> {
        Some(match op {
            OP_REQUEST => Op::Request,
            OP_RESPONSE => Op::Response,
            OP_RST => Op::Rst,
            OP_SHUTDOWN => Op::Shutdown,
            OP_RW => Op::Rw,
            OP_CREDIT_UPDATE => Op::CreditUpdate,
            OP_CREDIT_REQUEST => Op::CreditRequest,
            _ => return None,
        })
    }

    pub fn raw(self) -> u16 {
        match self {
            Op::Request => OP_REQUEST,
            Op::Response => OP_RESPONSE,
            Op::Rst => OP_RST,
            Op::Shutdown => OP_SHUTDOWN,
            Op::Rw => OP_RW,
            Op::CreditUpdate => OP_CREDIT_UPDATE,
            Op::CreditRequest => OP_CREDIT_REQUEST,
        }
    }
}

/// `struct virtio_vsock_hdr`, fields as sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn u16_at(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; HDR_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        Header {
            src_cid: u64_at(b, 0),
            dst_cid: u64_at(b, 8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            type_: u16_at(b, 28),
            op: u16_at(b, 30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a transmitted packet was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("the chain is unusable: {0}")]
    Chain(#[from] ChainError),
    #[error("the chain holds {0} bytes, less than a header")]
    TooShort(u64),
    #[error("the chain holds {0} bytes, more than a header and {MAX_PAYLOAD} bytes of payload")]
    TooLong(u64),
    #[error("the header says {hdr} bytes of payload, the chain holds {chain}")]
    LenMismatch { hdr: u32, chain: u64 },
    #[error("source CID {0} is not the guest's")]
    BadSrcCid(u64),
    #[error("destination CID {0} is not the host's")]
    BadDstCid(u64),
    #[error("socket type {0} is not a stream")]
    BadType(u16),
    #[error("unknown operation {0}")]
    BadOp(u16),
    #[error("operation {0:?} with a payload")]
    UnexpectedPayload(Op),
}

/// A refused packet, and its header when it was readable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct Refused {
    pub error: PacketError,
    pub hdr: Option<Header>,
}

impl Refused {
    /// Whether the guest should get an RST for it: it came from the guest to the host,
    /// so its ports mean something, and it is not itself an RST.
    pub fn deserves_rst(&self, guest_cid: u64) -> bool {
        match &self.hdr {
            Some(h) => h.src_cid == guest_cid && h.dst_cid == HOST_CID && h.op != OP_RST,
            None => false,
        }
    }
}

/// Reads and checks one transmitted packet: its header is returned, its payload is left
/// in `buf[HDR_LEN..]`.
pub fn read_tx_packet<M, I>(
    mem: &M,
    chain: I,
    guest_cid: u64,
    buf: &mut Vec<u8>,
) -> Result<(Header, Op), Refused>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let total =
        buffers::read_chain_prefix(mem, chain, HDR_LEN + MAX_PAYLOAD, buf).map_err(|e| {
            Refused {
                error: e.into(),
                hdr: None,
            }
        })?;
    let Some(raw) = buf
        .get(..HDR_LEN)
        .and_then(|b| <&[u8; HDR_LEN]>::try_from(b).ok())
    else {
        return Err(Refused {
            error: PacketError::TooShort(total),
            hdr: None,
        });
    };
    let hdr = Header::from_bytes(raw);
    let refuse = |error| Refused {
        error,
        hdr: Some(hdr),
    };
    // HDR_LEN + MAX_PAYLOAD fits in u64.
    let payload = total - HDR_LEN as u64;
    if payload > MAX_PAYLOAD as u64 {
        return Err(refuse(PacketError::TooLong(total)));
    }
    if u64::from(hdr.len) != payload {
        return Err(refuse(PacketError::LenMismatch {
            hdr: hdr.len,
            chain: payload,
        }));
    }
    if hdr.src_cid != guest_cid {
        return Err(refuse(PacketError::BadSrcCid(hdr.src_cid)));
    }
    if hdr.dst_cid != HOST_CID {
        return Err(refuse(PacketError::BadDstCid(hdr.dst_cid)));
    }
    if hdr.type_ != TYPE_STREAM {
        return Err(refuse(PacketError::BadType(hdr.type_)));
    }
    let op = Op::from_raw(hdr.op).ok_or_else(|| refuse(PacketError::BadOp(hdr.op)))?;
    if op != Op::Rw && hdr.len != 0 {
        return Err(refuse(PacketError::UnexpectedPayload(op)));
    }
    Ok((hdr, op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestMemoryMmap;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use vm_memory::{Bytes, GuestAddress};

    const GUEST: u64 = 3;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap()
    }

    fn hdr(op: u16, len: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 2000,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 0,
        }
    }

    /// Writes `h` at 0x1000 and `payload` at 0x2000; a chain of the two.
    fn chain(m: &GuestMemoryMmap, h: &Header, payload: &[u8]) -> Vec<Descriptor> {
        m.write_slice(&h.to_bytes(), GuestAddress(0x1000)).unwrap();
        m.write_slice(payload, GuestAddress(0x2000)).unwrap();
        let n = VRING_DESC_F_NEXT as u16;
        vec![
            Descriptor::new(0x1000, HDR_LEN as u32, n, 0),
            Descriptor::new(0x2000, payload.len() as u32, 0, 0),
        ]
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0xdead_beef,
            dst_port: 7,
            len: 9,
            type_: 1,
            op: 5,
            flags: 3,
            buf_alloc: 0x1_0000,
            fwd_cnt: 0xffff_ffff,
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 0x08);
        assert_eq!(b[28..32], [1, 0, 5, 0]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn reads_a_good_packet() {
        let m = mem();
        let mut buf = Vec::new();
        let h = hdr(OP_RW, 5);
        let (got, op) = read_tx_packet(&m, chain(&m, &h, b"hello"), GUEST, &mut buf).unwrap();
        assert_eq!((got, op), (h, Op::Rw));
        assert_eq!(&buf[HDR_LEN..], b"hello");
        // Header and payload in one descriptor.
        m.write_slice(&h.to_bytes(), GuestAddress(0x3000)).unwrap();
        m.write_slice(b"hello", GuestAddress(0x3000 + HDR_LEN as u64))
            .unwrap();
        let one = vec![Descriptor::new(0x3000, HDR_LEN as u32 + 5, 0, 0)];
        assert!(read_tx_packet(&m, one, GUEST, &mut buf).is_ok());
    }

    #[test]
    fn refuses_bad_packets() {
        let m = mem();
        let mut buf = Vec::new();
        let mut check = |h: Header, payload: &[u8]| {
            let c = chain(&m, &h, payload);
            read_tx_packet(&m, c, GUEST, &mut buf).unwrap_err()
        };
        let e = check(hdr(OP_RW, 4), b"hello");
        assert_eq!(e.error, PacketError::LenMismatch { hdr: 4, chain: 5 });
        assert!(e.deserves_rst(GUEST));
        let e = check(hdr(OP_RW, u32::MAX), b"x");
        assert!(matches!(e.error, PacketError::LenMismatch { .. }));
        let e = check(
            Header {
                src_cid: 9,
                ..hdr(OP_RW, 0)
            },
            b"",
        );
        assert_eq!(e.error, PacketError::BadSrcCid(9));
        assert!(!e.deserves_rst(GUEST));
        let e = check(
            Header {
                dst_cid: 3,
                ..hdr(OP_REQUEST, 0)
            },
            b"",
        );
        assert_eq!(e.error, PacketError::BadDstCid(3));
        assert!(!e.deserves_rst(GUEST));
        let e = check(
            Header {
                type_: 2,
                ..hdr(OP_REQUEST, 0)
            },
            b"",
        );
        assert_eq!(e.error, PacketError::BadType(2));
        assert!(e.deserves_rst(GUEST));
        let e = check(hdr(0, 0), b"");
        assert_eq!(e.error, PacketError::BadOp(0));
        let e = check(hdr(99, 0), b"");
        assert_eq!(e.error, PacketError::BadOp(99));
        let e = check(hdr(OP_SHUTDOWN, 2), b"hi");
        assert_eq!(e.error, PacketError::UnexpectedPayload(Op::Shutdown));
        // A bad RST is never answered.
        let e = check(
            Header {
                type_: 7,
                ..hdr(OP_RST, 0)
            },
            b"",
        );
        assert!(!e.deserves_rst(GUEST));
    }

    #[test]
    fn refuses_bad_chains() {
        let m = mem();
        let mut buf = Vec::new();
        let w = VRING_DESC_F_WRITE as u16;
        let short = vec![Descriptor::new(0x1000, 40, 0, 0)];
        let e = read_tx_packet(&m, short, GUEST, &mut buf).unwrap_err();
        assert_eq!((e.error, e.hdr), (PacketError::TooShort(40), None));
        let writable = vec![Descriptor::new(0x1000, 44, w, 0)];
        let e = read_tx_packet(&m, writable, GUEST, &mut buf).unwrap_err();
        assert_eq!(e.error, PacketError::Chain(ChainError::Writable));
        let outside = vec![Descriptor::new(0x4_0000, 44, 0, 0)];
        let e = read_tx_packet(&m, outside, GUEST, &mut buf).unwrap_err();
        assert!(matches!(
            e.error,
            PacketError::Chain(ChainError::OutsideMemory { .. })
        ));
        // Too long, header readable: the guest gets an RST for it.
        let h = hdr(OP_RW, (MAX_PAYLOAD + 1) as u32);
        m.write_slice(&h.to_bytes(), GuestAddress(0x1000)).unwrap();
        let long = vec![
            Descriptor::new(0x1000, HDR_LEN as u32, VRING_DESC_F_NEXT as u16, 0),
            Descriptor::new(0x2000, MAX_PAYLOAD as u32 + 1, 0, 0),
        ];
        let e = read_tx_packet(&m, long, GUEST, &mut buf).unwrap_err();
        assert_eq!(
            e.error,
            PacketError::TooLong((HDR_LEN + MAX_PAYLOAD + 1) as u64)
        );
        assert!(e.deserves_rst(GUEST));
    }
}
