//! Fuzz targets for fv-virtio's guest-facing parsing.
//!
//! The input is decoded into guest memory the way a driver would lay it out (rings,
//! descriptor tables, request headers, buffers), picking addresses, lengths and flags from
//! sets that hit the interesting edges (ends of RAM, holes, overflow) more often than
//! uniform random bytes would. So the plain random runner finds its way too, and a
//! coverage-guided fuzzer starts from well-formed-ish layouts.
//!
//! - [`fuzz_chain`]: a whole queue in fuzzer-controlled memory, walked raw, then served by
//!   the block and rng devices.
//! - [`fuzz_request`]: one chain through `block::Request::parse`, with the checks a
//!   parsed request promises verified.

use std::sync::Arc;

use fv_virtio::block::{
    BlockConfig, BlockDevice, Request, RequestKind, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SEG,
    SECTOR_SIZE, SEG_MAX,
};
use fv_virtio::device::VirtioDevice;
use fv_virtio::rate_limiter::RateLimit;
use fv_virtio::rng::RngDevice;
use fv_virtio::testing::{MemDisk, RecordingInterrupt};
use fv_virtio::GuestMemoryMmap;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, Permissions, ReadVolatile, VolatileMemoryError, VolatileSlice,
};

pub mod runner;

/// Reads the fuzz input as a stream of numbers; zeroes once it runs out.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }
}

// Guest memory: RAM [0, 64 KiB), a hole, and optionally a second region.
const RAM_END: u64 = 0x1_0000;
const REGION_B: u64 = 0x2_0000;
const REGION_B_LEN: u64 = 0x2000;
const DESC_TABLE: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const INDIRECT: u64 = 0x3000;
const DATA: u64 = 0x4000;
const SLOT: u64 = 0x200;
const SLOTS: u64 = (RAM_END - DATA) / SLOT;

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

fn memory(inp: &mut Input) -> GuestMemoryMmap {
    let mut ranges = vec![(GuestAddress(0), RAM_END as usize)];
    if inp.bool() {
        ranges.push((GuestAddress(REGION_B), REGION_B_LEN as usize));
    }
    GuestMemoryMmap::from_ranges(&ranges).expect("fuzz guest memory")
}

fn gen_addr(inp: &mut Input, size: u16) -> u64 {
    match inp.u8() % 16 {
        0..=7 => DATA + SLOT * (u64::from(inp.u8()) % SLOTS) + u64::from(inp.u8() % 4) * 8,
        8 => INDIRECT + 16 * u64::from(inp.u8()),
        9 => DESC_TABLE + 16 * (u64::from(inp.u16()) % u64::from(size.max(1))),
        10 => RAM_END - u64::from(inp.u8()),
        11 => RAM_END + u64::from(inp.u16()),
        12 => REGION_B + u64::from(inp.u16()) % REGION_B_LEN,
        13 => u64::MAX - u64::from(inp.u8()),
        14 => inp.u64(),
        _ => DATA + u64::from(inp.u16()),
    }
}

fn gen_len(inp: &mut Input) -> u32 {
    match inp.u8() % 12 {
        0 => 0,
        1 => 1,
        2 => 16,
        3 => 512,
        4 => 1024,
        5 => 4096,
        6 => 16 * (1 + u32::from(inp.u8() % 8)),
        7 => u32::from(inp.u16()),
        8 => u32::MAX,
        9 => u32::MAX - u32::from(inp.u8()),
        10 => 20,
        _ => 512 * (1 + u32::from(inp.u8() % 4)),
    }
}

fn gen_flags(inp: &mut Input) -> u16 {
    let bits = inp.u8();
    let mut flags = 0;
    if bits & 1 != 0 {
        flags |= F_NEXT;
    }
    if bits & 2 != 0 {
        flags |= F_WRITE;
    }
    if bits & 0x1c == 0x1c {
        flags |= F_INDIRECT;
    }
    if bits == 0xff {
        flags = inp.u16();
    }
    flags
}

fn write_desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    // The table areas lie in RAM.
    let _ = mem.write_slice(&raw, GuestAddress(at));
}

fn gen_desc(inp: &mut Input, mem: &GuestMemoryMmap, at: u64, size: u16) {
    let addr = gen_addr(inp, size);
    let len = gen_len(inp);
    let flags = gen_flags(inp);
    let next = inp.u16() % size.saturating_add(2);
    write_desc(mem, at, addr, len, flags, next);
}

/// Request headers and discard segments in the first data slots, for descriptors to hit.
fn fill_data(inp: &mut Input, mem: &GuestMemoryMmap) {
    for slot in 0..24u64 {
        let at = GuestAddress(DATA + SLOT * slot);
        if slot < 16 {
            let t = inp.pick(&[
                VIRTIO_BLK_T_IN,
                VIRTIO_BLK_T_OUT,
                VIRTIO_BLK_T_FLUSH,
                VIRTIO_BLK_T_GET_ID,
                VIRTIO_BLK_T_DISCARD,
                VIRTIO_BLK_T_WRITE_ZEROES,
                VIRTIO_BLK_T_SCSI_CMD,
                u32::MAX,
            ]);
            let sector = gen_sector(inp);
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&t.to_le_bytes());
            h[8..16].copy_from_slice(&sector.to_le_bytes());
            let _ = mem.write_slice(&h, at);
        } else {
            let mut raw = Vec::new();
            for _ in 0..(1 + inp.u8() % 4) {
                raw.extend_from_slice(&gen_sector(inp).to_le_bytes());
                let n = inp.pick(&[0u32, 1, 8, 64, 1 << 21, (1 << 21) + 1, u32::MAX]);
                raw.extend_from_slice(&n.to_le_bytes());
                let flags = inp.pick(&[0u32, 0, 1, 2, 0x8000_0000]);
                raw.extend_from_slice(&flags.to_le_bytes());
            }
            let _ = mem.write_slice(&raw, at);
        }
    }
}

fn gen_sector(inp: &mut Input) -> u64 {
    inp.pick(&[
        0,
        1,
        63,
        64,
        65,
        127,
        128,
        u64::MAX,
        u64::MAX / SECTOR_SIZE,
        u64::MAX / SECTOR_SIZE + 1,
        u64::MAX - 63,
    ])
}

/// A queue laid out in fuzzer-chosen memory, as the transport would hand it over.
struct Setup {
    mem: GuestMemoryMmap,
    queue: Queue,
    size: u16,
}

fn setup(inp: &mut Input) -> Setup {
    let mem = memory(inp);
    let mut size = inp.pick(&[1u16, 2, 4, 8, 16, 32, 64, 128, 256, 256]);
    let mut queue = Queue::new(256).expect("valid max size");
    if inp.u8() == 0xff {
        // Any size the driver may write; invalid ones are refused and the queue keeps 256.
        let _ = queue.try_set_size(inp.u16());
        size = queue.size();
    } else {
        let _ = queue.try_set_size(size);
    }
    let (desc, avail, used) = if inp.u8() == 0xfe {
        (inp.u64(), inp.u64(), inp.u64())
    } else {
        (DESC_TABLE, AVAIL, USED)
    };
    let _ = queue.try_set_desc_table_address(GuestAddress(desc));
    let _ = queue.try_set_avail_ring_address(GuestAddress(avail));
    let _ = queue.try_set_used_ring_address(GuestAddress(used));
    queue.set_ready(true);

    fill_data(inp, &mem);
    for i in 0..u64::from(size) {
        gen_desc(inp, &mem, DESC_TABLE + 16 * i, size);
    }
    for i in 0..16 {
        gen_desc(inp, &mem, INDIRECT + 16 * i, 16);
    }
    // The available ring: heads and an index.
    let n = match inp.u8() {
        0xff => inp.u16(),
        b => u16::from(b) % size.saturating_add(2),
    };
    for i in 0..u64::from(n.min(size)) {
        let head = match inp.u8() % 4 {
            0 => inp.u16(),
            _ => inp.u16() % size.saturating_add(2),
        };
        let _ = mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + 2 * i));
    }
    let _ = mem.write_obj(n.to_le(), GuestAddress(AVAIL + 2));
    // used_event, for EVENT_IDX.
    let used_event = inp.u16();
    let _ = mem.write_obj(
        used_event.to_le(),
        GuestAddress(AVAIL + 4 + 2 * u64::from(size)),
    );
    Setup { mem, queue, size }
}

/// Bytes 1, 2, 3, ... for the rng device.
struct Counter(u8);

impl ReadVolatile for Counter {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let bytes: Vec<u8> = (0..buf.len())
            .map(|_| {
                self.0 = self.0.wrapping_add(1);
                self.0
            })
            .collect();
        buf.copy_from(&bytes);
        Ok(bytes.len())
    }
}

fn features(inp: &mut Input) -> u64 {
    let mut f = 1u64 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC;
    if inp.bool() {
        f |= 1 << VIRTIO_RING_F_EVENT_IDX;
    }
    f
}

/// Activates `dev` on the setup's queue and lets it process up to three notifications,
/// the driver moving its available index in between.
fn serve<D, F>(dev: &mut D, s: Setup, inp: &mut Input, mut process: F)
where
    D: VirtioDevice,
    F: FnMut(&mut D),
{
    let irq = Arc::new(RecordingInterrupt::default());
    let events = vec![vmm_sys_util_eventfd()];
    let f = features(inp);
    let mem = s.mem.clone();
    if dev.activate(mem, irq, vec![s.queue], events, f).is_err() {
        return;
    }
    for _ in 0..3 {
        process(dev);
        if dev.needs_reset() {
            break;
        }
        let idx: u16 = s
            .mem
            .read_obj(GuestAddress(AVAIL + 2))
            .map(u16::from_le)
            .unwrap_or(0);
        let more = u16::from(inp.u8() % 4);
        let _ = s
            .mem
            .write_obj((idx.wrapping_add(more)).to_le(), GuestAddress(AVAIL + 2));
    }
    dev.reset();
}

fn vmm_sys_util_eventfd() -> vmm_sys_util::eventfd::EventFd {
    vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).expect("eventfd")
}

/// Target 1: a whole queue in fuzzer-controlled memory.
pub fn fuzz_chain(data: &[u8]) {
    // The raw walk: every chain ends, within the bounds virtio-queue promises.
    let mut inp = Input::new(data);
    let mut s = setup(&mut inp);
    let size = s.size;
    let mut chains = 0u32;
    while let Ok(Some(chain)) = fv_virtio::queue::pop_chain(&mut s.queue, &s.mem) {
        let n = chain.count();
        // A chain is at most the queue size, or one indirect table (<= 65535) after
        // descriptors of the ring.
        assert!(
            n <= usize::from(size) + usize::from(u16::MAX),
            "chain of {n}"
        );
        chains += 1;
        assert!(chains <= u32::from(size), "more chains than the ring holds");
    }

    // The block device over an in-memory disk.
    let mut inp = Input::new(data);
    let s = setup(&mut inp);
    let sectors = inp.pick(&[0u64, 1, 64, 128]);
    let mut bytes = vec![0u8; (sectors * SECTOR_SIZE) as usize + usize::from(inp.u8() % 3)];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut disk = MemDisk::from_bytes(bytes);
    if inp.bool() {
        disk = disk.read_only();
    }
    let config = BlockConfig {
        serial: "fuzz".into(),
        ..BlockConfig::default()
    };
    let mut blk = BlockDevice::new(Box::new(disk.clone()), config).expect("block device");
    serve(&mut blk, s, &mut inp, BlockDevice::process_queue);
    assert_eq!(disk.contents().len() as u64 / SECTOR_SIZE, sectors);

    // The rng device.
    let mut inp = Input::new(data);
    let s = setup(&mut inp);
    let mut rng = RngDevice::with_source(Counter(0), RateLimit::default()).expect("rng device");
    serve(&mut rng, s, &mut inp, RngDevice::process_queue);
}

/// Target 2: one chain through `Request::parse`, and what a parsed request promises.
pub fn fuzz_request(data: &[u8]) {
    let mut inp = Input::new(data);
    let mem = memory(&mut inp);
    fill_data(&mut inp, &mem);
    let disk_sectors = inp.pick(&[0u64, 1, 64, 1 << 20, u64::MAX / SECTOR_SIZE, u64::MAX]);

    // A chain written in the ring's table: a header, data, a status, each picked from
    // sensible and hostile choices; long ones go through an indirect table.
    let size = 256u16;
    let count = match inp.u8() {
        0xff => 300,
        0xfe => SEG_MAX as usize + 2,
        0xfd => 1,
        b => 2 + usize::from(b % 7),
    };
    let indirect = count > 16 || inp.u8() % 4 == 1;
    // An indirect table of up to 300 entries lives in the data area (slots 24..).
    let table = if indirect {
        DATA + SLOT * 24
    } else {
        DESC_TABLE
    };
    // The header, from the slots `fill_data` wrote; data descriptors mostly suit its type.
    let header = DATA + SLOT * u64::from(inp.u8() % 16);
    let request_type: u32 = mem.read_obj(GuestAddress(header)).unwrap_or(0);
    let device_writes = matches!(request_type, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID);
    let segments = matches!(
        request_type,
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES
    );
    for i in 0..count {
        let last = i + 1 == count;
        let at = table + 16 * i as u64;
        let (addr, len, mut flags) = match (i, last, inp.u8() % 16) {
            // Mostly: header first, status last, data in between.
            (0, _, 0..=13) => (header, 16, 0),
            (_, true, 0..=13) => (DATA + SLOT * 40 + u64::from(inp.u8()), 1, F_WRITE),
            (_, false, 0..=13) if segments => (
                DATA + SLOT * (16 + u64::from(inp.u8() % 8)),
                16 * (1 + u32::from(inp.u8() % 4)),
                0,
            ),
            (_, false, 0..=13) => {
                let write = if device_writes { F_WRITE } else { 0 };
                if inp.u8().is_multiple_of(4) {
                    (gen_addr(&mut inp, size), gen_len(&mut inp), write)
                } else {
                    let addr = DATA + SLOT * (24 + u64::from(inp.u8()) % (SLOTS - 24));
                    (addr, 512 * (1 + u32::from(inp.u8() % 2)), write)
                }
            }
            _ => (
                gen_addr(&mut inp, size),
                gen_len(&mut inp),
                gen_flags(&mut inp),
            ),
        };
        if !last {
            flags |= F_NEXT;
        }
        let next = if inp.u8() == 0xff {
            inp.u16()
        } else {
            (i + 1) as u16
        };
        if at + 16 <= RAM_END {
            write_desc(&mem, at, addr, len, flags, next);
        }
    }
    let mut queue = Queue::new(size).expect("valid queue size");
    let _ = queue.try_set_desc_table_address(GuestAddress(DESC_TABLE));
    let _ = queue.try_set_avail_ring_address(GuestAddress(AVAIL));
    let _ = queue.try_set_used_ring_address(GuestAddress(USED));
    queue.set_ready(true);
    if indirect {
        let len = match inp.u8() {
            0xff => u32::from(inp.u16()),
            _ => 16 * count as u32,
        };
        write_desc(&mem, DESC_TABLE, table, len, F_INDIRECT, 0);
    }
    let _ = mem.write_obj(0u16, GuestAddress(AVAIL + 4));
    let _ = mem.write_obj(1u16.to_le(), GuestAddress(AVAIL + 2));

    let Ok(Some(chain)) = fv_virtio::queue::pop_chain(&mut queue, &mem) else {
        panic!("the ring holds one chain at head 0");
    };
    let req = match Request::parse(chain, &mem, disk_sectors) {
        Ok(req) => req,
        Err(e) => {
            // An error the driver can be told about names a status byte in RAM.
            if let Some(at) = e.status_addr() {
                assert!(mem.check_range(at, 1, Permissions::Write), "{e}");
            }
            return;
        }
    };

    // What a parsed request promises.
    assert!(mem.check_range(req.status, 1, Permissions::Write));
    let in_ram = |segs: &[fv_virtio::block::Segment], access| {
        assert!(segs.len() <= SEG_MAX as usize);
        for s in segs {
            assert!(s.len > 0);
            assert!(mem.check_range(s.addr, s.len as usize, access));
        }
    };
    match &req.kind {
        RequestKind::Read { sector, data } | RequestKind::Write { sector, data } => {
            let access = if matches!(req.kind, RequestKind::Read { .. }) {
                Permissions::Write
            } else {
                Permissions::Read
            };
            in_ram(data, access);
            let len = req.data_len();
            assert!(len > 0 && len.is_multiple_of(SECTOR_SIZE));
            let end = sector.checked_add(len / SECTOR_SIZE).expect("no overflow");
            assert!(end <= disk_sectors);
        }
        RequestKind::GetId { data } => in_ram(data, Permissions::Write),
        RequestKind::Flush => {}
        RequestKind::Discard { ranges } | RequestKind::WriteZeroes { ranges } => {
            let max = if matches!(req.kind, RequestKind::Discard { .. }) {
                MAX_DISCARD_SEG
            } else {
                MAX_WRITE_ZEROES_SEG
            };
            assert!(!ranges.is_empty() && ranges.len() <= max as usize);
            for r in ranges {
                let end = r.sector.checked_add(u64::from(r.num_sectors));
                assert!(end.is_some_and(|e| e <= disk_sectors));
                let (offset, len) = r.bytes();
                assert!(offset.checked_add(len).is_some());
            }
        }
    }
}
