//! A virtio-blk request, parsed from a descriptor chain and checked against the disk.
//!
//! Pure: guest memory and a chain go in, a typed [`Request`] comes out; no fd, no disk.
//! The layout is the one every driver uses (Linux, Windows, OVMF, SeaBIOS): a header
//! descriptor the device reads (16 bytes: type, reserved, sector), the data descriptors,
//! then a device-writable status descriptor whose last byte is the status. Everything in
//! it comes from the guest and is checked: directions, lengths, guest-memory ranges,
//! sector ranges (with `checked_add`), descriptor and segment counts.

use std::ops::Deref;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::{
    DISCARD_SEGMENT_SIZE, HEADER_SIZE, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG,
    MAX_WRITE_ZEROES_SECTORS, MAX_WRITE_ZEROES_SEG, SECTOR_SIZE, SEG_MAX,
};
use crate::{guest, GuestMemoryMmap};

/// Most descriptors a request may have: header, `SEG_MAX` data, status.
const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 2;

/// A guest buffer of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// One range of a discard or write-zeroes request, inside the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub sector: u64,
    pub num_sectors: u32,
    /// Write-zeroes only: the driver allows deallocating the range.
    pub unmap: bool,
}

impl Range {
    /// Byte offset and length on the disk.
    pub fn bytes(&self) -> (u64, u64) {
        // Exact for a parsed range: `parse` keeps every range below 2^64 bytes.
        (
            self.sector.saturating_mul(SECTOR_SIZE),
            u64::from(self.num_sectors) * SECTOR_SIZE,
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Disk to guest: `data` is device-writable, a whole number of sectors, in the disk.
    Read {
        sector: u64,
        data: Vec<Segment>,
    },
    /// Guest to disk: `data` is device-readable, a whole number of sectors, in the disk.
    Write {
        sector: u64,
        data: Vec<Segment>,
    },
    Flush,
    /// The serial, into device-writable `data` (at most 20 bytes of it are written).
    GetId {
        data: Vec<Segment>,
    },
    Discard {
        ranges: Vec<Range>,
    },
    WriteZeroes {
        ranges: Vec<Range>,
    },
}

/// A checked request: every buffer lies in guest memory, every sector in the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a valid request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestErrorKind {
    #[error(
        "the chain does not end with a device-writable status descriptor of at least one byte"
    )]
    NoStatus,
    #[error("the status byte at {0:#x} lies outside guest memory")]
    StatusOutsideMemory(u64),
    #[error("the chain has no device-readable header descriptor of at least 16 bytes")]
    BadHeader,
    #[error("the header at {0:#x} lies outside guest memory")]
    HeaderOutsideMemory(u64),
    #[error("the chain has {count} descriptors; at most {max} are allowed")]
    TooManyDescriptors { count: usize, max: usize },
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("descriptor {index} has the wrong direction for this request")]
    WrongDirection { index: usize },
    #[error("descriptor {index} is empty")]
    EmptyDescriptor { index: usize },
    #[error("descriptor {index} ({addr:#x}, {len} bytes) lies outside guest memory")]
    DataOutsideMemory { index: usize, addr: u64, len: u32 },
    #[error("the request has no data")]
    NoData,
    #[error("{0} bytes of data are not a whole number of 512-byte sectors")]
    UnalignedLength(u64),
    #[error("{count} sectors at sector {sector} lie beyond the disk's {capacity}")]
    OutOfRange {
        sector: u64,
        count: u64,
        capacity: u64,
    },
    #[error("{0} bytes are not a whole number of 16-byte discard/write-zeroes segments")]
    BadSegmentLength(u64),
    #[error("{count} segments exceed the limit of {max}")]
    TooManySegments { count: u64, max: u32 },
    #[error("segment flags {0:#x} are not supported for this request")]
    UnsupportedFlags(u32),
    #[error("a segment of {count} sectors exceeds the limit of {max}")]
    SegmentTooLarge { count: u32, max: u32 },
}

impl RequestErrorKind {
    /// The status the driver gets (`VIRTIO_BLK_S_*`).
    pub fn status(&self) -> u8 {
        match self {
            RequestErrorKind::Unsupported(_) | RequestErrorKind::UnsupportedFlags(_) => {
                VIRTIO_BLK_S_UNSUPP as u8
            }
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A rejected chain; [`RequestError::status_addr`] says whether the driver can be told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct RequestError {
    kind: RequestErrorKind,
    status: Option<GuestAddress>,
}

impl RequestError {
    pub fn kind(&self) -> &RequestErrorKind {
        &self.kind
    }

    /// Where to write [`RequestErrorKind::status`]; `None` when the chain has no usable
    /// status byte (the device cannot answer it and needs a reset).
    pub fn status_addr(&self) -> Option<GuestAddress> {
        self.status
    }
}

impl Request {
    /// Parses and checks the chain against guest memory `mem` and a disk of
    /// `disk_sectors` sectors (at most 2^64 bytes' worth are addressable: a larger value
    /// is taken as that).
    pub fn parse<M>(
        chain: DescriptorChain<M>,
        mem: &GuestMemoryMmap,
        disk_sectors: u64,
    ) -> Result<Request, RequestError>
    where
        M: Deref,
        M::Target: GuestMemory,
    {
        // Every sector range we accept must be addressable in bytes.
        let disk_sectors = disk_sectors.min(u64::MAX / SECTOR_SIZE);
        // The walk is bounded by virtio-queue (queue size, or the indirect table's length);
        // past our limit only the last descriptor is kept, to find the status byte.
        let mut descs: Vec<Descriptor> = Vec::with_capacity(4);
        let mut count = 0usize;
        let mut last = None;
        for desc in chain {
            count += 1;
            if descs.len() < MAX_DESCRIPTORS {
                descs.push(desc);
            }
            last = Some(desc);
        }

        let unanswerable = |kind| RequestError { kind, status: None };
        let status_desc = match last {
            Some(d) if d.is_write_only() && d.len() >= 1 => d,
            _ => return Err(unanswerable(RequestErrorKind::NoStatus)),
        };
        // The status is the last byte of the device-writable part (virtio 1.2, 5.2.6).
        let status = status_desc
            .addr()
            .checked_add(u64::from(status_desc.len() - 1))
            .filter(|&a| mem.check_range(a, 1, Permissions::Write))
            .ok_or_else(|| {
                let at = status_desc.addr().raw_value();
                unanswerable(RequestErrorKind::StatusOutsideMemory(at))
            })?;
        let fail = |kind| RequestError {
            kind,
            status: Some(status),
        };

        let header = match descs.first() {
            Some(h) if count >= 2 && !h.is_write_only() && h.len() >= HEADER_SIZE => *h,
            _ => return Err(fail(RequestErrorKind::BadHeader)),
        };
        let mut raw = [0u8; HEADER_SIZE as usize];
        if !guest::read(mem, header.addr(), &mut raw) {
            let at = header.addr().raw_value();
            return Err(fail(RequestErrorKind::HeaderOutsideMemory(at)));
        }
        let request_type = le_u32(&raw[0..4]);
        let sector = le_u64(&raw[8..16]);

        if count > MAX_DESCRIPTORS {
            return Err(fail(RequestErrorKind::TooManyDescriptors {
                count,
                max: MAX_DESCRIPTORS,
            }));
        }
        // `descs` holds the whole chain; data lies between header and status.
        let data = &descs[1..descs.len() - 1];

        let kind = match request_type {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
                let reading = request_type == VIRTIO_BLK_T_IN;
                let (data, len) = segments(data, reading, mem).map_err(fail)?;
                check_io(sector, len, disk_sectors).map_err(fail)?;
                if reading {
                    RequestKind::Read { sector, data }
                } else {
                    RequestKind::Write { sector, data }
                }
            }
            VIRTIO_BLK_T_FLUSH => RequestKind::Flush,
            VIRTIO_BLK_T_GET_ID => {
                let (data, len) = segments(data, true, mem).map_err(fail)?;
                if len == 0 {
                    return Err(fail(RequestErrorKind::NoData));
                }
                RequestKind::GetId { data }
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                let discard = request_type == VIRTIO_BLK_T_DISCARD;
                let ranges = ranges(data, discard, mem, disk_sectors).map_err(fail)?;
                if discard {
                    RequestKind::Discard { ranges }
                } else {
                    RequestKind::WriteZeroes { ranges }
                }
            }
            other => return Err(fail(RequestErrorKind::Unsupported(other))),
        };
        Ok(Request { kind, status })
    }

    /// Bytes moved between guest and disk (what a bytes-per-second limit counts).
    pub fn data_len(&self) -> u64 {
        match &self.kind {
            RequestKind::Read { data, .. } | RequestKind::Write { data, .. } => {
                data.iter().map(|s| u64::from(s.len)).sum()
            }
            _ => 0,
        }
    }

    /// True if the request changes the disk.
    pub fn modifies_disk(&self) -> bool {
        matches!(
            self.kind,
            RequestKind::Write { .. }
                | RequestKind::Discard { .. }
                | RequestKind::WriteZeroes { .. }
        )
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Checks the data descriptors (direction, non-empty, inside guest memory) and returns
/// them with their total length. Descriptor indices in errors count the header as 0.
fn segments<G: GuestMemory + ?Sized>(
    data: &[Descriptor],
    device_writes: bool,
    mem: &G,
) -> Result<(Vec<Segment>, u64), RequestErrorKind> {
    let access = if device_writes {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let mut out = Vec::with_capacity(data.len());
    let mut total = 0u64;
    for (i, d) in data.iter().enumerate() {
        let index = i + 1;
        if d.is_write_only() != device_writes {
            return Err(RequestErrorKind::WrongDirection { index });
        }
        if d.len() == 0 {
            return Err(RequestErrorKind::EmptyDescriptor { index });
        }
        if !mem.check_range(d.addr(), d.len() as usize, access) {
            return Err(RequestErrorKind::DataOutsideMemory {
                index,
                addr: d.addr().raw_value(),
                len: d.len(),
            });
        }
        total += u64::from(d.len());
        out.push(Segment {
            addr: d.addr(),
            len: d.len(),
        });
    }
    Ok((out, total))
}

/// Checks that `len` bytes at `sector` are whole sectors inside the disk.
fn check_io(sector: u64, len: u64, disk_sectors: u64) -> Result<(), RequestErrorKind> {
    if len == 0 {
        return Err(RequestErrorKind::NoData);
    }
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(RequestErrorKind::UnalignedLength(len));
    }
    check_sectors(sector, len / SECTOR_SIZE, disk_sectors)
}

fn check_sectors(sector: u64, count: u64, disk_sectors: u64) -> Result<(), RequestErrorKind> {
    match sector.checked_add(count) {
        Some(end) if end <= disk_sectors => Ok(()),
        _ => Err(RequestErrorKind::OutOfRange {
            sector,
            count,
            capacity: disk_sectors,
        }),
    }
}

/// Reads and checks the segments of a discard or write-zeroes request
/// (`struct virtio_blk_discard_write_zeroes`: le64 sector, le32 num_sectors, le32 flags).
fn ranges<G: GuestMemory + ?Sized>(
    data: &[Descriptor],
    discard: bool,
    mem: &G,
    disk_sectors: u64,
) -> Result<Vec<Range>, RequestErrorKind> {
    let (max_seg, max_sectors) = if discard {
        (MAX_DISCARD_SEG, MAX_DISCARD_SECTORS)
    } else {
        (MAX_WRITE_ZEROES_SEG, MAX_WRITE_ZEROES_SECTORS)
    };
    let (segs, len) = segments(data, false, mem)?;
    let seg_size = u64::from(DISCARD_SEGMENT_SIZE);
    if len == 0 || !len.is_multiple_of(seg_size) {
        return Err(RequestErrorKind::BadSegmentLength(len));
    }
    let count = len / seg_size;
    if count > u64::from(max_seg) {
        return Err(RequestErrorKind::TooManySegments {
            count,
            max: max_seg,
        });
    }
    // At most MAX_*_SEG x 16 bytes, checked just above.
    let mut raw = vec![0u8; len as usize];
    let mut at = 0usize;
    for s in &segs {
        let end = at + s.len as usize;
        // Checked to lie in guest memory by `segments`.
        mem.read_slice(&mut raw[at..end], s.addr).map_err(|_| {
            RequestErrorKind::DataOutsideMemory {
                index: 0,
                addr: s.addr.raw_value(),
                len: s.len,
            }
        })?;
        at = end;
    }
    let mut out = Vec::with_capacity(count as usize);
    for seg in raw.chunks_exact(DISCARD_SEGMENT_SIZE as usize) {
        let sector = le_u64(&seg[0..8]);
        let num_sectors = le_u32(&seg[8..12]);
        let flags = le_u32(&seg[12..16]);
        let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
        // Reserved bits, or unmap on a discard: virtio 1.2, 5.2.6.2 asks for UNSUPP.
        if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 || (discard && unmap) {
            return Err(RequestErrorKind::UnsupportedFlags(flags));
        }
        if num_sectors > max_sectors {
            return Err(RequestErrorKind::SegmentTooLarge {
                count: num_sectors,
                max: max_sectors,
            });
        }
        check_sectors(sector, u64::from(num_sectors), disk_sectors)?;
        out.push(Range {
            sector,
            num_sectors,
            unmap,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Desc, Driver, F_NEXT, F_WRITE};
    use virtio_queue::{Queue, QueueOwnedT};

    const SECTORS: u64 = 64;

    struct T {
        d: Driver,
        q: Queue,
        hdr: GuestAddress,
        status: GuestAddress,
        buf: GuestAddress,
    }

    impl T {
        fn new() -> Self {
            let mut d = Driver::new(0x10_0000, &[256]);
            let q = d.queue(0);
            let hdr = d.alloc(16);
            let status = d.alloc(1);
            let buf = d.alloc(0x4000);
            T {
                d,
                q,
                hdr,
                status,
                buf,
            }
        }

        fn header(&self, t: u32, sector: u64) {
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&t.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            self.d.write(self.hdr, &h);
        }

        fn parse(&mut self, descs: &[Desc]) -> Result<Request, RequestError> {
            self.d.add_chain(0, descs);
            self.parse_next()
        }

        fn parse_next(&mut self) -> Result<Request, RequestError> {
            let chain = self.q.iter(&self.d.mem).unwrap().next().unwrap();
            Request::parse(chain, &self.d.mem, SECTORS)
        }

        fn io(&mut self, t: u32, sector: u64, data: &[Desc]) -> Result<Request, RequestError> {
            self.header(t, sector);
            let mut descs = vec![Desc::read(self.hdr, 16)];
            descs.extend_from_slice(data);
            descs.push(Desc::write(self.status, 1));
            self.parse(&descs)
        }

        fn segs(&mut self, t: u32, segs: &[(u64, u32, u32)]) -> Result<Request, RequestError> {
            let mut raw = Vec::new();
            for &(sector, n, flags) in segs {
                raw.extend_from_slice(&sector.to_le_bytes());
                raw.extend_from_slice(&n.to_le_bytes());
                raw.extend_from_slice(&flags.to_le_bytes());
            }
            self.d.write(self.buf, &raw);
            let len = raw.len() as u32;
            self.io(t, 0, &[Desc::read(self.buf, len)])
        }
    }

    fn kind(r: Result<Request, RequestError>) -> RequestErrorKind {
        r.unwrap_err().kind().clone()
    }

    #[test]
    fn read_write_parse_with_their_segments() {
        let mut t = T::new();
        let b = t.buf;
        let r = t
            .io(
                VIRTIO_BLK_T_IN,
                3,
                &[Desc::write(b, 512), Desc::write(b.unchecked_add(512), 1024)],
            )
            .unwrap();
        assert_eq!(r.status, t.status);
        assert_eq!(r.data_len(), 1536);
        assert_eq!(
            r.kind,
            RequestKind::Read {
                sector: 3,
                data: vec![
                    Segment { addr: b, len: 512 },
                    Segment {
                        addr: b.unchecked_add(512),
                        len: 1024
                    }
                ]
            }
        );
        assert!(!r.modifies_disk());
        let r = t.io(VIRTIO_BLK_T_OUT, 63, &[Desc::read(b, 512)]).unwrap();
        assert!(matches!(r.kind, RequestKind::Write { sector: 63, .. }));
        assert!(r.modifies_disk());
    }

    #[test]
    fn segments_need_only_add_up_to_whole_sectors() {
        let mut t = T::new();
        let b = t.buf;
        let r = t.io(
            VIRTIO_BLK_T_IN,
            0,
            &[Desc::write(b, 100), Desc::write(b.unchecked_add(100), 412)],
        );
        assert_eq!(r.unwrap().data_len(), 512);
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_IN, 0, &[Desc::write(b, 100)])),
            RequestErrorKind::UnalignedLength(100)
        );
    }

    #[test]
    fn flush_get_id_and_unknown_types() {
        let mut t = T::new();
        let b = t.buf;
        let r = t.io(VIRTIO_BLK_T_FLUSH, 0, &[]).unwrap();
        assert_eq!(r.kind, RequestKind::Flush);
        let r = t.io(VIRTIO_BLK_T_GET_ID, 0, &[Desc::write(b, 20)]).unwrap();
        assert!(matches!(r.kind, RequestKind::GetId { .. }));
        let e = t.io(99, 0, &[]).unwrap_err();
        assert_eq!(e.kind(), &RequestErrorKind::Unsupported(99));
        assert_eq!(e.kind().status(), VIRTIO_BLK_S_UNSUPP as u8);
        assert_eq!(e.status_addr(), Some(t.status));
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_GET_ID, 0, &[])),
            RequestErrorKind::NoData
        );
    }

    #[test]
    fn wrong_directions_are_refused() {
        let mut t = T::new();
        let b = t.buf;
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_IN, 0, &[Desc::read(b, 512)])),
            RequestErrorKind::WrongDirection { index: 1 }
        );
        assert_eq!(
            kind(t.io(
                VIRTIO_BLK_T_OUT,
                0,
                &[Desc::read(b, 512), Desc::write(b, 512)]
            )),
            RequestErrorKind::WrongDirection { index: 2 }
        );
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_GET_ID, 0, &[Desc::read(b, 20)])),
            RequestErrorKind::WrongDirection { index: 1 }
        );
        // A device-writable header.
        t.header(VIRTIO_BLK_T_IN, 0);
        let (hdr, st) = (t.hdr, t.status);
        let e = t.parse(&[
            Desc::write(hdr, 16),
            Desc::write(b, 512),
            Desc::write(st, 1),
        ]);
        assert_eq!(kind(e), RequestErrorKind::BadHeader);
    }

    #[test]
    fn status_must_be_last_writable_and_in_memory() {
        let mut t = T::new();
        let (hdr, b, st) = (t.hdr, t.buf, t.status);
        t.header(VIRTIO_BLK_T_IN, 0);
        // No status at all: the last descriptor is the data.
        let e = t
            .parse(&[Desc::read(hdr, 16), Desc::write(b, 512)])
            .unwrap_err();
        // 512 writable bytes at the end look like a status: the data is then missing.
        assert_eq!(e.kind(), &RequestErrorKind::NoData);
        assert_eq!(e.status_addr(), Some(b.unchecked_add(511)));
        let e = t
            .parse(&[Desc::read(hdr, 16), Desc::read(st, 1)])
            .unwrap_err();
        assert_eq!(e.kind(), &RequestErrorKind::NoStatus);
        assert_eq!(e.status_addr(), None);
        // A zero-length status.
        let e = t
            .parse(&[Desc::read(hdr, 16), Desc::write(st, 0)])
            .unwrap_err();
        assert_eq!(e.kind(), &RequestErrorKind::NoStatus);
        // Outside guest memory, and wrapping around the address space.
        let e = t
            .parse(&[
                Desc::read(hdr, 16),
                Desc::write(GuestAddress(0x2000_0000), 1),
            ])
            .unwrap_err();
        assert_eq!(
            e.kind(),
            &RequestErrorKind::StatusOutsideMemory(0x2000_0000)
        );
        let e = t
            .parse(&[Desc::read(hdr, 16), Desc::write(GuestAddress(u64::MAX), 2)])
            .unwrap_err();
        assert!(matches!(e.kind(), RequestErrorKind::StatusOutsideMemory(_)));
        // A chain of a single status descriptor has no header.
        let e = t.parse(&[Desc::write(st, 1)]).unwrap_err();
        assert_eq!(e.kind(), &RequestErrorKind::BadHeader);
        assert_eq!(e.status_addr(), Some(st));
    }

    #[test]
    fn a_bigger_status_descriptor_gets_the_status_in_its_last_byte() {
        let mut t = T::new();
        let (hdr, st) = (t.hdr, t.status);
        t.header(VIRTIO_BLK_T_FLUSH, 0);
        let r = t.parse(&[Desc::read(hdr, 16), Desc::write(st, 4)]).unwrap();
        assert_eq!(r.status, st.unchecked_add(3));
    }

    #[test]
    fn header_problems() {
        let mut t = T::new();
        let (hdr, st) = (t.hdr, t.status);
        assert_eq!(
            kind(t.parse(&[Desc::read(hdr, 15), Desc::write(st, 1)])),
            RequestErrorKind::BadHeader
        );
        assert_eq!(
            kind(t.parse(&[Desc::read(GuestAddress(0xfff_fff8), 16), Desc::write(st, 1)])),
            RequestErrorKind::HeaderOutsideMemory(0xfff_fff8)
        );
    }

    #[test]
    fn data_outside_memory_and_empty_descriptors() {
        let mut t = T::new();
        let far = GuestAddress(0x10_0000 - 256);
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_IN, 0, &[Desc::write(far, 512)])),
            RequestErrorKind::DataOutsideMemory {
                index: 1,
                addr: far.0,
                len: 512
            }
        );
        let wrap = GuestAddress(u64::MAX - 100);
        assert!(matches!(
            kind(t.io(VIRTIO_BLK_T_OUT, 0, &[Desc::read(wrap, 512)])),
            RequestErrorKind::DataOutsideMemory { .. }
        ));
        let b = t.buf;
        assert_eq!(
            kind(t.io(
                VIRTIO_BLK_T_IN,
                0,
                &[Desc::write(b, 0), Desc::write(b, 512)]
            )),
            RequestErrorKind::EmptyDescriptor { index: 1 }
        );
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_IN, 0, &[])),
            RequestErrorKind::NoData
        );
    }

    #[test]
    fn sectors_beyond_the_disk_and_overflow() {
        let mut t = T::new();
        let b = t.buf;
        assert!(t
            .io(VIRTIO_BLK_T_IN, SECTORS - 1, &[Desc::write(b, 512)])
            .is_ok());
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_IN, SECTORS - 1, &[Desc::write(b, 1024)])),
            RequestErrorKind::OutOfRange {
                sector: SECTORS - 1,
                count: 2,
                capacity: SECTORS
            }
        );
        assert!(matches!(
            kind(t.io(VIRTIO_BLK_T_OUT, u64::MAX, &[Desc::read(b, 512)])),
            RequestErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            kind(t.io(VIRTIO_BLK_T_OUT, SECTORS, &[Desc::read(b, 512)])),
            RequestErrorKind::OutOfRange { .. }
        ));
    }

    #[test]
    fn disk_sizes_past_2_64_bytes_are_clamped() {
        let mut t = T::new();
        let b = t.buf;
        let mut raw = Vec::new();
        raw.extend_from_slice(&(u64::MAX / 512).to_le_bytes());
        raw.extend_from_slice(&1u32.to_le_bytes());
        raw.extend_from_slice(&0u32.to_le_bytes());
        t.d.write(b, &raw);
        t.header(VIRTIO_BLK_T_DISCARD, 0);
        let (hdr, st) = (t.hdr, t.status);
        t.d.add_chain(
            0,
            &[Desc::read(hdr, 16), Desc::read(b, 16), Desc::write(st, 1)],
        );
        let chain = t.q.iter(&t.d.mem).unwrap().next().unwrap();
        let e = Request::parse(chain, &t.d.mem, u64::MAX).unwrap_err();
        assert!(matches!(e.kind(), RequestErrorKind::OutOfRange { .. }));
        t.header(VIRTIO_BLK_T_IN, u64::MAX / 512 - 1);
        t.d.add_chain(
            0,
            &[Desc::read(hdr, 16), Desc::write(b, 512), Desc::write(st, 1)],
        );
        let chain = t.q.iter(&t.d.mem).unwrap().next().unwrap();
        let r = Request::parse(chain, &t.d.mem, u64::MAX).unwrap();
        assert!(matches!(r.kind, RequestKind::Read { .. }));
    }

    #[test]
    fn discard_and_write_zeroes_segments() {
        let mut t = T::new();
        let r = t
            .segs(VIRTIO_BLK_T_DISCARD, &[(0, 8, 0), (16, 48, 0)])
            .unwrap();
        assert_eq!(
            r.kind,
            RequestKind::Discard {
                ranges: vec![
                    Range {
                        sector: 0,
                        num_sectors: 8,
                        unmap: false
                    },
                    Range {
                        sector: 16,
                        num_sectors: 48,
                        unmap: false
                    }
                ]
            }
        );
        let r = t.segs(VIRTIO_BLK_T_WRITE_ZEROES, &[(4, 4, 1)]).unwrap();
        assert_eq!(
            r.kind,
            RequestKind::WriteZeroes {
                ranges: vec![Range {
                    sector: 4,
                    num_sectors: 4,
                    unmap: true
                }]
            }
        );
        assert_eq!(r.data_len(), 0);
        assert!(r.modifies_disk());
    }

    #[test]
    fn discard_and_write_zeroes_abuse() {
        let mut t = T::new();
        // Unmap is for write-zeroes only; other flag bits are reserved.
        let e = t.segs(VIRTIO_BLK_T_DISCARD, &[(0, 8, 1)]).unwrap_err();
        assert_eq!(e.kind(), &RequestErrorKind::UnsupportedFlags(1));
        assert_eq!(e.kind().status(), VIRTIO_BLK_S_UNSUPP as u8);
        assert_eq!(
            kind(t.segs(VIRTIO_BLK_T_WRITE_ZEROES, &[(0, 8, 2)])),
            RequestErrorKind::UnsupportedFlags(2)
        );
        // Too many segments.
        let many = vec![(0, 1, 0); MAX_DISCARD_SEG as usize + 1];
        assert_eq!(
            kind(t.segs(VIRTIO_BLK_T_DISCARD, &many)),
            RequestErrorKind::TooManySegments {
                count: u64::from(MAX_DISCARD_SEG) + 1,
                max: MAX_DISCARD_SEG
            }
        );
        let just = vec![(0, 1, 0); MAX_DISCARD_SEG as usize];
        assert!(t.segs(VIRTIO_BLK_T_DISCARD, &just).is_ok());
        // Beyond the disk, overflowing, too large.
        assert!(matches!(
            kind(t.segs(VIRTIO_BLK_T_DISCARD, &[(SECTORS - 1, 2, 0)])),
            RequestErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            kind(t.segs(VIRTIO_BLK_T_WRITE_ZEROES, &[(u64::MAX - 1, 4, 0)])),
            RequestErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            kind(t.segs(VIRTIO_BLK_T_DISCARD, &[(0, u32::MAX, 0)])),
            RequestErrorKind::SegmentTooLarge { .. }
        ));
        // Not a whole number of segments, or none.
        let b = t.buf;
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_DISCARD, 0, &[Desc::read(b, 20)])),
            RequestErrorKind::BadSegmentLength(20)
        );
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_DISCARD, 0, &[])),
            RequestErrorKind::BadSegmentLength(0)
        );
        // Segments must be device-readable.
        assert_eq!(
            kind(t.io(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[Desc::write(b, 16)])),
            RequestErrorKind::WrongDirection { index: 1 }
        );
    }

    #[test]
    fn segments_may_be_split_across_descriptors() {
        let mut t = T::new();
        let mut raw = Vec::new();
        raw.extend_from_slice(&8u64.to_le_bytes());
        raw.extend_from_slice(&8u32.to_le_bytes());
        raw.extend_from_slice(&0u32.to_le_bytes());
        let a = t.buf;
        let b = t.buf.unchecked_add(0x1000);
        t.d.write(a, &raw[..5]);
        t.d.write(b, &raw[5..]);
        let r = t
            .io(
                VIRTIO_BLK_T_DISCARD,
                0,
                &[Desc::read(a, 5), Desc::read(b, 11)],
            )
            .unwrap();
        assert_eq!(
            r.kind,
            RequestKind::Discard {
                ranges: vec![Range {
                    sector: 8,
                    num_sectors: 8,
                    unmap: false
                }]
            }
        );
    }

    #[test]
    fn too_many_descriptors_through_an_indirect_table() {
        let mut t = T::new();
        t.header(VIRTIO_BLK_T_IN, 0);
        let (hdr, b, st) = (t.hdr, t.buf, t.status);
        let mut descs = vec![Desc::read(hdr, 16)];
        descs.extend(std::iter::repeat_n(Desc::write(b, 8), SEG_MAX as usize + 1));
        descs.push(Desc::write(st, 1));
        t.d.add_indirect_chain(0, &descs);
        let e = t.parse_next().unwrap_err();
        assert_eq!(
            e.kind(),
            &RequestErrorKind::TooManyDescriptors {
                count: SEG_MAX as usize + 3,
                max: SEG_MAX as usize + 2
            }
        );
        assert_eq!(e.status_addr(), Some(st));
        // At the limit it parses (253 x 8 + 24 bytes = 4 sectors).
        let mut descs = vec![Desc::read(hdr, 16)];
        descs.extend(std::iter::repeat_n(Desc::write(b, 8), SEG_MAX as usize - 1));
        descs.push(Desc::write(b, 24));
        descs.push(Desc::write(st, 1));
        t.d.add_indirect_chain(0, &descs);
        assert_eq!(t.parse_next().unwrap().data_len(), 2048);
    }

    #[test]
    fn indirect_abuse_ends_the_walk_without_a_status() {
        let mut t = T::new();
        t.header(VIRTIO_BLK_T_IN, 0);
        let (hdr, st) = (t.hdr, t.status);
        // An indirect table that points at itself via an INDIRECT entry (nesting is
        // forbidden): the walk stops, the status is never reached.
        let table = t.d.alloc(48);
        let raw = |addr: u64, len: u32, flags: u16, next: u16| {
            let mut r = Vec::new();
            r.extend_from_slice(&addr.to_le_bytes());
            r.extend_from_slice(&len.to_le_bytes());
            r.extend_from_slice(&flags.to_le_bytes());
            r.extend_from_slice(&next.to_le_bytes());
            r
        };
        let mut bytes = raw(hdr.0, 16, F_NEXT, 1);
        bytes.extend(raw(table.0, 48, crate::testing::F_INDIRECT | F_NEXT, 2));
        bytes.extend(raw(st.0, 1, F_WRITE, 0));
        t.d.write(table, &bytes);
        t.d.add_chain(
            0,
            &[Desc {
                addr: table,
                len: 48,
                flags: crate::testing::F_INDIRECT,
            }],
        );
        let e = t.parse_next().unwrap_err();
        assert_eq!(e.kind(), &RequestErrorKind::NoStatus);
        // A table length that is not a multiple of 16, and one outside memory.
        t.d.add_chain(
            0,
            &[Desc {
                addr: table,
                len: 40,
                flags: crate::testing::F_INDIRECT,
            }],
        );
        assert_eq!(kind(t.parse_next()), RequestErrorKind::NoStatus);
        t.d.add_chain(
            0,
            &[Desc {
                addr: GuestAddress(0x7000_0000),
                len: 4096,
                flags: crate::testing::F_INDIRECT,
            }],
        );
        assert_eq!(kind(t.parse_next()), RequestErrorKind::NoStatus);
    }

    #[test]
    fn a_descriptor_loop_is_cut_at_the_queue_size() {
        let mut t = T::new();
        t.header(VIRTIO_BLK_T_IN, 0);
        // header -> data -> data -> ... (next points back at itself).
        t.d.set_desc(0, 0, t.hdr.0, 16, F_NEXT, 1);
        t.d.set_desc(0, 1, t.buf.0, 512, F_NEXT | F_WRITE, 1);
        t.d.push_avail(0, 0);
        // 256 descriptors walked (the queue size); the last one (a 512-byte data buffer)
        // is taken as the status, leaving 254 sectors of data for a 64-sector disk.
        let e = t.parse_next().unwrap_err();
        assert_eq!(
            e.kind(),
            &RequestErrorKind::OutOfRange {
                sector: 0,
                count: 254,
                capacity: SECTORS
            }
        );
    }
}
