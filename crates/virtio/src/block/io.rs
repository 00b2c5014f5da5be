//! Carrying out a parsed request: data between guest memory and the disk.
//!
//! Reads and writes go straight between the image and guest memory: the guest's segments
//! become slices of guest memory, handed to the disk as one vectored request (one
//! `preadv`/`pwritev` for a raw image). No host buffer, no copy.

use fv_disk::{DiskFile, MemSlice};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::{Address, GuestAddress};

use super::request::{Request, RequestKind, Segment};
use super::{ID_BYTES, SECTOR_SIZE};
use crate::{guest, GuestMemoryMmap};

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

/// Carries out `req`. Does not write the status.
pub fn execute(
    req: &Request,
    mem: &GuestMemoryMmap,
    disk: &dyn DiskFile,
    serial: &[u8; ID_BYTES],
) -> Done {
    if req.modifies_disk() && disk.read_only() {
        return Done::ioerr(0);
    }
    match &req.kind {
        RequestKind::Read { sector, data } => read(mem, disk, *sector, data),
        RequestKind::Write { sector, data } => write(mem, disk, *sector, data),
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

/// The guest's segments as slices of guest memory, or `None` if one is not all guest
/// memory. A segment across two adjacent regions becomes two slices.
fn guest_slices<'m>(mem: &'m GuestMemoryMmap, data: &[Segment]) -> Option<Vec<MemSlice<'m>>> {
    let mut slices = Vec::with_capacity(data.len());
    data.iter()
        .all(|seg| guest::slices(mem, seg.addr, seg.len as usize, &mut slices))
        .then_some(slices)
}

fn read(mem: &GuestMemoryMmap, disk: &dyn DiskFile, sector: u64, data: &[Segment]) -> Done {
    let Some(slices) = guest_slices(mem, data) else {
        return Done::ioerr(0);
    };
    // Parsing checked the range lies inside the disk, and virtio-queue keeps a chain's
    // length under 2^32.
    match disk.read_vectored_at(&slices, sector * SECTOR_SIZE) {
        Ok(()) => Done::ok(u32::try_from(total(data)).unwrap_or(u32::MAX)),
        Err(e) => {
            log::debug!("virtio-blk: {e}");
            Done::ioerr(0)
        }
    }
}

fn write(mem: &GuestMemoryMmap, disk: &dyn DiskFile, sector: u64, data: &[Segment]) -> Done {
    let Some(slices) = guest_slices(mem, data) else {
        return Done::ioerr(0);
    };
    match disk.write_vectored_at(&slices, sector * SECTOR_SIZE) {
        Ok(()) => Done::ok(0),
        Err(e) => {
            log::debug!("virtio-blk: {e}");
            Done::ioerr(0)
        }
    }
}

fn get_id(mem: &GuestMemoryMmap, serial: &[u8; ID_BYTES], data: &[Segment]) -> Done {
    let mut cursor = Cursor::new(data);
    let mut done = 0;
    while done < ID_BYTES {
        let Some((addr, len)) = cursor.take(ID_BYTES - done) else {
            break;
        };
        if !guest::write(mem, addr, &serial[done..done + len]) {
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
