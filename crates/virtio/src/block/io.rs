//! Carrying out a parsed request: data between guest memory and the disk.
//!
//! [`fv_disk::DiskFile`] does positioned I/O on byte slices, so data goes through one
//! buffer the device keeps: the guest's segments are gathered into it for one disk
//! write (or scattered from it after one disk read) per chunk of up to [`IO_CHUNK`]
//! bytes. A request of many small segments thus costs one disk call, and a huge one
//! never needs more than `IO_CHUNK` bytes of host memory.

use fv_disk::DiskFile;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::{Address, Bytes, GuestAddress};

use super::request::{Request, RequestKind, Segment};
use super::{ID_BYTES, SECTOR_SIZE};
use crate::GuestMemoryMmap;

/// The largest disk call, and so the largest buffer a device keeps.
pub const IO_CHUNK: usize = 1 << 20;

/// What a request came to: its status and the bytes written into the guest's buffers
/// (status byte not included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub status: u8,
    pub written: u32,
}

impl Done {
    fn ok(written: u32) -> Self {
        Done {
            status: VIRTIO_BLK_S_OK as u8,
            written,
        }
    }

    fn ioerr(written: u32) -> Self {
        Done {
            status: VIRTIO_BLK_S_IOERR as u8,
            written,
        }
    }
}

/// Walks a request's segments a piece at a time.
struct Cursor<'a> {
    segs: &'a [Segment],
    /// Bytes of `segs[0]` already consumed.
    offset: u32,
}

impl<'a> Cursor<'a> {
    fn new(segs: &'a [Segment]) -> Self {
        Cursor { segs, offset: 0 }
    }

    /// The next piece, at most `max` bytes long.
    fn take(&mut self, max: usize) -> Option<(GuestAddress, usize)> {
        let seg = self.segs.first()?;
        let left = (seg.len - self.offset) as usize;
        let n = left.min(max);
        let addr = seg.addr.checked_add(u64::from(self.offset))?;
        if n == left {
            self.segs = &self.segs[1..];
            self.offset = 0;
        } else {
            // n < left <= u32::MAX.
            self.offset += n as u32;
        }
        Some((addr, n))
    }
}

fn total(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Carries out `req`. `buf` is the device's reusable buffer. Does not write the status.
pub fn execute(
    req: &Request,
    mem: &GuestMemoryMmap,
    disk: &dyn DiskFile,
    buf: &mut Vec<u8>,
    serial: &[u8; ID_BYTES],
) -> Done {
    if req.modifies_disk() && disk.read_only() {
        return Done::ioerr(0);
    }
    match &req.kind {
        RequestKind::Read { sector, data } => read(mem, disk, buf, *sector, data),
        RequestKind::Write { sector, data } => write(mem, disk, buf, *sector, data),
        RequestKind::Flush => match disk.flush() {
            Ok(()) => Done::ok(0),
            Err(e) => {
                log::debug!("virtio-blk: {e}");
                Done::ioerr(0)
            }
        },
        RequestKind::GetId { data } => get_id(mem, serial, data),
        RequestKind::Discard { ranges } | RequestKind::WriteZeroes { ranges } => {
            let discard = matches!(req.kind, RequestKind::Discard { .. });
            for r in ranges {
                let (offset, len) = r.bytes();
                let res = if discard {
                    disk.discard(offset, len)
                } else {
                    disk.write_zeroes(offset, len)
                };
                if let Err(e) = res {
                    log::debug!("virtio-blk: {e}");
                    return Done::ioerr(0);
                }
            }
            Done::ok(0)
        }
    }
}

fn chunk_len(left: u64) -> usize {
    usize::try_from(left).map_or(IO_CHUNK, |l| l.min(IO_CHUNK))
}

fn read(
    mem: &GuestMemoryMmap,
    disk: &dyn DiskFile,
    buf: &mut Vec<u8>,
    sector: u64,
    data: &[Segment],
) -> Done {
    let mut left = total(data);
    // Parsing checked the range lies inside the disk.
    let mut offset = sector * SECTOR_SIZE;
    let mut cursor = Cursor::new(data);
    let mut written = 0u32;
    while left > 0 {
        let n = chunk_len(left);
        if buf.len() < n {
            buf.resize(n, 0);
        }
        let chunk = &mut buf[..n];
        if let Err(e) = disk.read_at(chunk, offset) {
            log::debug!("virtio-blk: {e}");
            return Done::ioerr(written);
        }
        let mut done = 0;
        while done < n {
            let Some((addr, len)) = cursor.take(n - done) else {
                return Done::ioerr(written);
            };
            if mem.write_slice(&chunk[done..done + len], addr).is_err() {
                return Done::ioerr(written);
            }
            done += len;
            // At most the chain's length, which virtio-queue keeps under 2^32.
            written = written.saturating_add(len as u32);
        }
        offset += n as u64;
        left -= n as u64;
    }
    Done::ok(written)
}

fn write(
    mem: &GuestMemoryMmap,
    disk: &dyn DiskFile,
    buf: &mut Vec<u8>,
    sector: u64,
    data: &[Segment],
) -> Done {
    let mut left = total(data);
    let mut offset = sector * SECTOR_SIZE;
    let mut cursor = Cursor::new(data);
    while left > 0 {
        let n = chunk_len(left);
        if buf.len() < n {
            buf.resize(n, 0);
        }
        let chunk = &mut buf[..n];
        let mut done = 0;
        while done < n {
            let Some((addr, len)) = cursor.take(n - done) else {
                return Done::ioerr(0);
            };
            if mem.read_slice(&mut chunk[done..done + len], addr).is_err() {
                return Done::ioerr(0);
            }
            done += len;
        }
        if let Err(e) = disk.write_at(chunk, offset) {
            log::debug!("virtio-blk: {e}");
            return Done::ioerr(0);
        }
        offset += n as u64;
        left -= n as u64;
    }
    Done::ok(0)
}

fn get_id(mem: &GuestMemoryMmap, serial: &[u8; ID_BYTES], data: &[Segment]) -> Done {
    let mut cursor = Cursor::new(data);
    let mut done = 0;
    while done < ID_BYTES {
        let Some((addr, len)) = cursor.take(ID_BYTES - done) else {
            break;
        };
        if mem.write_slice(&serial[done..done + len], addr).is_err() {
            return Done::ioerr(done as u32);
        }
        done += len;
    }
    Done::ok(done as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_splits_segments_into_pieces() {
        let segs = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 10,
            },
            Segment {
                addr: GuestAddress(0x2000),
                len: 4,
            },
        ];
        let mut c = Cursor::new(&segs);
        assert_eq!(c.take(6), Some((GuestAddress(0x1000), 6)));
        assert_eq!(c.take(6), Some((GuestAddress(0x1006), 4)));
        assert_eq!(c.take(100), Some((GuestAddress(0x2000), 4)));
        assert_eq!(c.take(100), None);
    }
}
