//! The block device driven end to end: a driver in guest memory, the device's event loop,
//! an in-memory disk.

use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Address, GuestAddress};

use super::*;
use crate::device::{ActivateError, VirtioDevice};
use crate::rate_limiter::{BucketConfig, RateLimit};
use crate::testing::{Desc, Driver, Harness, MemDisk, UsedElem, F_INDIRECT, F_NEXT, F_WRITE};

const DISK_SIZE: usize = 8 << 20;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

struct B {
    h: Harness<BlockDevice>,
    disk: MemDisk,
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 512) as u8).collect()
}

impl B {
    fn with(disk: MemDisk, config: BlockConfig) -> Self {
        let dev = BlockDevice::new(Box::new(disk.clone()), config).unwrap();
        let mut h = Harness::with_driver(dev, Driver::new(32 << 20, &[QUEUE_SIZE]));
        h.activate().unwrap();
        B { h, disk }
    }

    fn new() -> Self {
        Self::with(
            MemDisk::from_bytes(patterned(DISK_SIZE)),
            BlockConfig {
                serial: "fv-disk-0001".into(),
                ..BlockConfig::default()
            },
        )
    }

    fn header(&mut self, t: u32, sector: u64) -> GuestAddress {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.h.driver.alloc_bytes(&h)
    }

    /// The descriptors of a request of type `t` with `data` between header and status.
    fn chain(&mut self, t: u32, sector: u64, data: &[Desc]) -> (Vec<Desc>, GuestAddress) {
        let hdr = self.header(t, sector);
        let status = self.h.driver.alloc(1);
        self.h.driver.write(status, &[0xff]);
        let mut descs = vec![Desc::read(hdr, 16)];
        descs.extend_from_slice(data);
        descs.push(Desc::write(status, 1));
        (descs, status)
    }

    /// Sends one request; returns its status byte and used element.
    fn request(&mut self, t: u32, sector: u64, data: &[Desc]) -> (u8, UsedElem) {
        let (descs, status) = self.chain(t, sector, data);
        let head = self.h.submit(0, &descs);
        self.answer(head, status)
    }

    fn answer(&mut self, head: u16, status: GuestAddress) -> (u8, UsedElem) {
        let used = self.h.driver.take_used(0);
        assert_eq!(used.len(), 1, "one request, one used entry");
        assert_eq!(used[0].id, u32::from(head));
        (self.h.driver.read(status, 1)[0], used[0])
    }

    fn status_of(&mut self, t: u32, sector: u64, data: &[Desc]) -> u8 {
        self.request(t, sector, data).0
    }

    fn segs(&mut self, segs: &[(u64, u32, u32)]) -> Desc {
        let mut raw = Vec::new();
        for &(sector, n, flags) in segs {
            raw.extend_from_slice(&sector.to_le_bytes());
            raw.extend_from_slice(&n.to_le_bytes());
            raw.extend_from_slice(&flags.to_le_bytes());
        }
        let len = raw.len() as u32;
        Desc::read(self.h.driver.alloc_bytes(&raw), len)
    }

    fn needs_reset(&self) -> bool {
        self.h.device().needs_reset()
    }
}

fn config_u32(dev: &BlockDevice, at: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(at, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn features_and_config_space() {
    let disk = MemDisk::new(DISK_SIZE + 100);
    let dev = BlockDevice::new(Box::new(disk), BlockConfig::default()).unwrap();
    assert_eq!(dev.device_type(), 2);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE]);
    let f = dev.avail_features();
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
    ] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    // The partial sector at the end is not visible.
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK_SIZE / 512) as u64);
    assert_eq!(dev.capacity(), (DISK_SIZE / 512) as u64);
    assert_eq!(config_u32(&dev, 12), SEG_MAX);
    assert_eq!(config_u32(&dev, 20), 512);
    let mut nq = [0u8; 2];
    dev.read_config(34, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 1);
    assert_eq!(config_u32(&dev, 36), MAX_DISCARD_SECTORS);
    assert_eq!(config_u32(&dev, 40), MAX_DISCARD_SEG);
    assert_eq!(config_u32(&dev, 44), DISCARD_SECTOR_ALIGNMENT);
    assert_eq!(config_u32(&dev, 48), MAX_WRITE_ZEROES_SECTORS);
    assert_eq!(config_u32(&dev, 52), MAX_WRITE_ZEROES_SEG);
    let mut unmap = [0u8; 1];
    dev.read_config(56, &mut unmap);
    assert_eq!(unmap, [1]);
    // Past the end, straddling it, and at absurd offsets: zeroes, no panic.
    let mut b = [0xffu8; 8];
    dev.read_config(58, &mut b);
    assert_eq!(b, [0; 8]);
    dev.read_config(u64::MAX - 2, &mut b);
    assert_eq!(b, [0; 8]);
}

#[test]
fn config_writes_are_ignored() {
    let mut dev = BlockDevice::new(Box::new(MemDisk::new(4096)), BlockConfig::default()).unwrap();
    dev.write_config(0, &[0xff; 8]);
    dev.write_config(u64::MAX, &[1]);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
}

#[test]
fn read_only_disks_offer_ro_and_no_discard() {
    let dev = BlockDevice::new(
        Box::new(MemDisk::new(4096).read_only()),
        BlockConfig::default(),
    )
    .unwrap();
    let f = dev.avail_features();
    assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_WRITE_ZEROES), 0);
}

#[test]
fn bad_configs_are_refused() {
    let mk = |config| BlockDevice::new(Box::new(MemDisk::new(4096)), config);
    assert!(matches!(
        mk(BlockConfig {
            serial: "x".repeat(21),
            ..BlockConfig::default()
        }),
        Err(BlockError::SerialTooLong(_))
    ));
    for qs in [0, 1, 3, 100] {
        assert!(matches!(
            mk(BlockConfig {
                queue_size: qs,
                ..BlockConfig::default()
            }),
            Err(BlockError::QueueSize(_))
        ));
    }
    assert!(mk(BlockConfig {
        serial: "x".repeat(20),
        queue_size: 32768,
        ..BlockConfig::default()
    })
    .is_ok());
}

#[test]
fn activation_checks_what_the_driver_set_up() {
    let disk = MemDisk::new(4096);
    let dev = BlockDevice::new(Box::new(disk), BlockConfig::default()).unwrap();
    let mut h = Harness::new(dev);
    let version_1 = 1u64 << VIRTIO_F_VERSION_1;
    assert!(matches!(h.activate_with(0), Err(ActivateError::NotModern)));
    // A queue whose used ring lies outside guest memory.
    let mut queue = h.driver.queue(0);
    queue
        .try_set_used_ring_address(GuestAddress(0x7fff_0000))
        .unwrap();
    let events = vec![vmm_sys_util::eventfd::EventFd::new(0).unwrap()];
    let mem = h.driver.mem.clone();
    let res = h.device().activate(
        mem.clone(),
        h.interrupt.clone(),
        vec![queue],
        events,
        version_1,
    );
    assert!(matches!(res, Err(ActivateError::InvalidQueue(0))));
    let res = h
        .device()
        .activate(mem, h.interrupt.clone(), vec![], vec![], version_1);
    assert!(matches!(
        res,
        Err(ActivateError::QueueCount { got: 0, want: 1 })
    ));
    h.activate_with(version_1).unwrap();
}

#[test]
fn reads_land_in_guest_memory() {
    let mut b = B::new();
    let data = b.disk.contents();
    let x = b.h.driver.alloc(4096);
    let y = b.h.driver.alloc(1024);
    let (st, used) = b.request(
        VIRTIO_BLK_T_IN,
        10,
        &[Desc::write(x, 4096), Desc::write(y, 1024)],
    );
    assert_eq!(st, OK);
    assert_eq!(used.len, 4096 + 1024 + 1);
    assert_eq!(b.h.driver.read(x, 4096), data[10 * 512..10 * 512 + 4096]);
    assert_eq!(b.h.driver.read(y, 1024), data[18 * 512..18 * 512 + 1024]);
    assert_eq!(b.h.interrupt.queue_signals(0), 1);
}

#[test]
fn writes_land_on_the_disk() {
    let mut b = B::new();
    let before = b.disk.contents();
    let payload: Vec<u8> = (0..1536).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    let x = b.h.driver.alloc_bytes(&payload[..1000]);
    let y = b.h.driver.alloc_bytes(&payload[1000..]);
    let (st, used) = b.request(
        VIRTIO_BLK_T_OUT,
        7,
        &[Desc::read(x, 1000), Desc::read(y, 536)],
    );
    assert_eq!(st, OK);
    assert_eq!(used.len, 1);
    let after = b.disk.contents();
    assert_eq!(after[7 * 512..7 * 512 + 1536], payload[..]);
    assert_eq!(after[..7 * 512], before[..7 * 512]);
    assert_eq!(after[10 * 512..], before[10 * 512..]);
}

#[test]
fn requests_larger_than_the_io_chunk_round_trip() {
    let mut b = B::new();
    // 3 MiB + 4 KiB in 4 KiB segments and one 1 MiB segment: several disk calls.
    let payload = patterned(3 << 20 | 4096)
        .iter()
        .map(|b| !b)
        .collect::<Vec<_>>();
    let big = b.h.driver.alloc_bytes(&payload[..1 << 20]);
    let mut descs = vec![Desc::read(big, 1 << 20)];
    for chunk in payload[1 << 20..].chunks(256 << 10) {
        let at = b.h.driver.alloc_bytes(chunk);
        descs.push(Desc::read(at, chunk.len() as u32));
    }
    assert_eq!(b.status_of(VIRTIO_BLK_T_OUT, 100, &descs), OK);
    assert_eq!(
        b.disk.contents()[100 * 512..100 * 512 + payload.len()],
        payload[..]
    );
    let back = b.h.driver.alloc(payload.len() as u32);
    let (st, used) = b.request(
        VIRTIO_BLK_T_IN,
        100,
        &[Desc::write(back, payload.len() as u32)],
    );
    assert_eq!(st, OK);
    assert_eq!(used.len as usize, payload.len() + 1);
    assert_eq!(b.h.driver.read(back, payload.len()), payload);
}

#[test]
fn the_last_sector_is_reachable_and_the_next_is_not() {
    let mut b = B::new();
    let last = (DISK_SIZE / 512) as u64 - 1;
    let x = b.h.driver.alloc(512);
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_IN, last, &[Desc::write(x, 512)]),
        OK
    );
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_IN, last + 1, &[Desc::write(x, 512)]),
        IOERR
    );
    let y = b.h.driver.alloc(1024);
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_OUT, last, &[Desc::read(y, 1024)]),
        IOERR
    );
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_OUT, u64::MAX, &[Desc::read(x, 512)]),
        IOERR
    );
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_IN, u64::MAX / 512, &[Desc::write(x, 512)]),
        IOERR
    );
    assert!(!b.needs_reset());
}

#[test]
fn flush_reaches_the_disk() {
    let mut b = B::new();
    assert_eq!(b.status_of(VIRTIO_BLK_T_FLUSH, 0, &[]), OK);
    assert_eq!(b.disk.flush_count(), 1);
}

#[test]
fn get_id_returns_the_serial() {
    let mut b = B::new();
    let x = b.h.driver.alloc(20);
    b.h.driver.write(x, &[0xaa; 20]);
    let (st, used) = b.request(VIRTIO_BLK_T_GET_ID, 0, &[Desc::write(x, 20)]);
    assert_eq!(st, OK);
    assert_eq!(used.len, 21);
    let mut want = b"fv-disk-0001".to_vec();
    want.resize(20, 0);
    assert_eq!(b.h.driver.read(x, 20), want);
    // A shorter buffer gets the start; a longer one only 20 bytes.
    let y = b.h.driver.alloc(64);
    b.h.driver.write(y, &[0xaa; 64]);
    let (st, used) = b.request(VIRTIO_BLK_T_GET_ID, 0, &[Desc::write(y, 4)]);
    assert_eq!((st, used.len), (OK, 5));
    assert_eq!(b.h.driver.read(y, 5), b"fv-d\xaa");
    let (st, used) = b.request(VIRTIO_BLK_T_GET_ID, 0, &[Desc::write(y, 64)]);
    assert_eq!((st, used.len), (OK, 21));
    assert_eq!(b.h.driver.read(y.unchecked_add(20), 4), [0xaa; 4]);
}

#[test]
fn discard_and_write_zeroes_clear_the_ranges() {
    let mut b = B::new();
    let seg = b.segs(&[(8, 8, 0), (32, 16, 0)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_DISCARD, 0, &[seg]), OK);
    assert_eq!(
        b.disk.discards(),
        vec![(8 * 512, 8 * 512), (32 * 512, 16 * 512)]
    );
    let data = b.disk.contents();
    assert!(data[8 * 512..16 * 512].iter().all(|&x| x == 0));
    assert!(data[32 * 512..48 * 512].iter().all(|&x| x == 0));
    assert_ne!(data[16 * 512..17 * 512], [0; 512]);

    let seg = b.segs(&[(100, 3, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[seg]), OK);
    let data = b.disk.contents();
    assert!(data[100 * 512..103 * 512].iter().all(|&x| x == 0));
    assert_ne!(data[103 * 512..104 * 512], [0; 512]);
}

#[test]
fn discard_abuse_gets_error_statuses() {
    let mut b = B::new();
    let seg = b.segs(&[(0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_DISCARD, 0, &[seg]), UNSUPP);
    let seg = b.segs(&[(0, 8, 0x80)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[seg]), UNSUPP);
    let many = vec![(0, 1, 0); MAX_DISCARD_SEG as usize + 1];
    let seg = b.segs(&many);
    assert_eq!(b.status_of(VIRTIO_BLK_T_DISCARD, 0, &[seg]), IOERR);
    let seg = b.segs(&[(u64::MAX - 2, 8, 0)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[seg]), IOERR);
    let seg = b.segs(&[(0, MAX_DISCARD_SECTORS + 1, 0)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_DISCARD, 0, &[seg]), IOERR);
    assert!(b.disk.discards().is_empty());
    assert!(!b.needs_reset());
}

#[test]
fn unknown_request_types_are_unsupported() {
    let mut b = B::new();
    let x = b.h.driver.alloc(512);
    for t in [
        VIRTIO_BLK_T_SCSI_CMD,
        VIRTIO_BLK_T_SECURE_ERASE,
        VIRTIO_BLK_T_ZONE_REPORT,
        VIRTIO_BLK_T_BARRIER,
        0xdead_beef,
    ] {
        let (st, used) = b.request(t, 0, &[Desc::write(x, 512)]);
        assert_eq!((st, used.len), (UNSUPP, 1), "type {t}");
    }
}

#[test]
fn read_only_disks_refuse_changes() {
    let before = patterned(1 << 20);
    let mut b = B::with(
        MemDisk::from_bytes(before.clone()).read_only(),
        BlockConfig::default(),
    );
    let x = b.h.driver.alloc_bytes(&[0x11; 512]);
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_OUT, 0, &[Desc::read(x, 512)]),
        IOERR
    );
    let seg = b.segs(&[(0, 8, 0)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_DISCARD, 0, &[seg]), IOERR);
    let seg = b.segs(&[(0, 8, 0)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_WRITE_ZEROES, 0, &[seg]), IOERR);
    assert_eq!(b.disk.contents(), before);
    let y = b.h.driver.alloc(512);
    assert_eq!(b.status_of(VIRTIO_BLK_T_IN, 0, &[Desc::write(y, 512)]), OK);
    assert_eq!(b.status_of(VIRTIO_BLK_T_FLUSH, 0, &[]), OK);
}

#[test]
fn disk_errors_become_ioerr() {
    let mut b = B::new();
    b.disk.set_failing(true);
    let x = b.h.driver.alloc(512);
    let (st, used) = b.request(VIRTIO_BLK_T_IN, 0, &[Desc::write(x, 512)]);
    assert_eq!((st, used.len), (IOERR, 1));
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_OUT, 0, &[Desc::read(x, 512)]),
        IOERR
    );
    assert_eq!(b.status_of(VIRTIO_BLK_T_FLUSH, 0, &[]), IOERR);
    let seg = b.segs(&[(0, 8, 0)]);
    assert_eq!(b.status_of(VIRTIO_BLK_T_DISCARD, 0, &[seg]), IOERR);
    b.disk.set_failing(false);
    assert_eq!(b.status_of(VIRTIO_BLK_T_IN, 0, &[Desc::write(x, 512)]), OK);
    assert!(!b.needs_reset());
}

#[test]
fn malformed_requests_get_ioerr() {
    let mut b = B::new();
    let x = b.h.driver.alloc(4096);
    // Wrong direction, both ways.
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_IN, 0, &[Desc::read(x, 512)]),
        IOERR
    );
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_OUT, 0, &[Desc::write(x, 512)]),
        IOERR
    );
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_GET_ID, 0, &[Desc::read(x, 20)]),
        IOERR
    );
    // Zero-length and unaligned data, no data.
    assert_eq!(
        b.status_of(
            VIRTIO_BLK_T_IN,
            0,
            &[Desc::write(x, 0), Desc::write(x, 512)]
        ),
        IOERR
    );
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_IN, 0, &[Desc::write(x, 511)]),
        IOERR
    );
    assert_eq!(b.status_of(VIRTIO_BLK_T_OUT, 0, &[]), IOERR);
    // Data outside guest RAM, or wrapping the address space.
    let far = GuestAddress(64 << 20);
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_IN, 0, &[Desc::write(far, 512)]),
        IOERR
    );
    let wrap = GuestAddress(u64::MAX - 511);
    assert_eq!(
        b.status_of(VIRTIO_BLK_T_OUT, 0, &[Desc::read(wrap, 1024)]),
        IOERR
    );
    // A short header.
    let hdr = b.header(VIRTIO_BLK_T_IN, 0);
    let st = b.h.driver.alloc(1);
    let head = b.h.submit(
        0,
        &[Desc::read(hdr, 8), Desc::write(x, 512), Desc::write(st, 1)],
    );
    assert_eq!(b.answer(head, st).0, IOERR);
    assert!(!b.needs_reset());
    // Nothing reached the disk.
    assert_eq!(b.disk.contents(), patterned(DISK_SIZE));
}

#[test]
fn a_chain_without_status_needs_a_reset() {
    let mut b = B::new();
    let hdr = b.header(VIRTIO_BLK_T_OUT, 0);
    let x = b.h.driver.alloc(512);
    let head = b.h.submit(0, &[Desc::read(hdr, 16), Desc::read(x, 512)]);
    let used = b.h.driver.take_used(0);
    // The chain comes back unanswered, the driver is told, and the device stops.
    assert_eq!(
        used,
        vec![UsedElem {
            id: u32::from(head),
            len: 0
        }]
    );
    assert!(b.needs_reset());
    assert_eq!(b.h.interrupt.config_signals(), 1);
    assert_eq!(b.h.interrupt.queue_signals(0), 1);
    let y = b.h.driver.alloc(512);
    let (descs, _) = b.chain(VIRTIO_BLK_T_IN, 0, &[Desc::write(y, 512)]);
    b.h.submit(0, &descs);
    assert!(b.h.driver.take_used(0).is_empty());
    // Reset and activate again: it serves requests.
    b.h.reset();
    assert!(!b.needs_reset());
    b.h.driver.reset_rings();
    b.h.activate().unwrap();
    assert_eq!(b.status_of(VIRTIO_BLK_T_IN, 0, &[Desc::write(y, 512)]), OK);
}

#[test]
fn status_problems_need_a_reset() {
    for status in [
        Desc::write(GuestAddress(1 << 40), 1),
        Desc::write(GuestAddress(0x1000), 0),
        Desc::read(GuestAddress(0x1000), 1),
    ] {
        let mut b = B::new();
        let hdr = b.header(VIRTIO_BLK_T_FLUSH, 0);
        b.h.submit(0, &[Desc::read(hdr, 16), status]);
        assert!(b.needs_reset(), "{status:?}");
        assert_eq!(b.disk.flush_count(), 0);
    }
}

#[test]
fn indirect_requests_work() {
    let mut b = B::new();
    let data = b.disk.contents();
    let x = b.h.driver.alloc(1024);
    let (descs, status) = b.chain(VIRTIO_BLK_T_IN, 2, &[Desc::write(x, 1024)]);
    let head = b.h.driver.add_indirect_chain(0, &descs);
    b.h.kick(0);
    assert_eq!(
        b.answer(head, status),
        (
            OK,
            UsedElem {
                id: u32::from(head),
                len: 1025
            }
        )
    );
    assert_eq!(b.h.driver.read(x, 1024), data[1024..2048]);
}

#[test]
fn indirect_abuse_needs_a_reset_or_gets_ioerr() {
    // Nested indirect table: the walk stops before the status.
    let mut b = B::new();
    let hdr = b.header(VIRTIO_BLK_T_IN, 0);
    let st = b.h.driver.alloc(1);
    let inner = b.h.driver.alloc(32);
    let nested = [
        Desc::read(hdr, 16),
        Desc {
            addr: inner,
            len: 32,
            flags: F_INDIRECT,
        },
        Desc::write(st, 1),
    ];
    b.h.driver.add_indirect_chain(0, &nested);
    b.h.kick(0);
    assert!(b.needs_reset());

    // A table that runs outside guest memory, or has a length not a multiple of 16.
    for (addr, len) in [
        (GuestAddress((32 << 20) - 16), 64),
        (GuestAddress(0x2000), 24),
    ] {
        let mut b = B::new();
        b.h.driver.add_chain(
            0,
            &[Desc {
                addr,
                len,
                flags: F_INDIRECT,
            }],
        );
        b.h.kick(0);
        assert!(b.needs_reset());
    }

    // An indirect table holding more descriptors than seg_max allows: answered with IOERR.
    let mut b = B::new();
    let x = b.h.driver.alloc(512);
    let many = vec![Desc::write(x, 512); SEG_MAX as usize + 1];
    let (descs, status) = b.chain(VIRTIO_BLK_T_IN, 0, &many);
    let head = b.h.driver.add_indirect_chain(0, &descs);
    b.h.kick(0);
    assert_eq!(b.answer(head, status).0, IOERR);
    assert!(!b.needs_reset());
}

#[test]
fn descriptor_loops_terminate() {
    let mut b = B::new();
    let hdr = b.header(VIRTIO_BLK_T_IN, 0);
    let x = b.h.driver.alloc(512);
    // 0 -> 1 -> 2 -> 1 -> 2 ...: the walk ends after queue-size (256) descriptors. The
    // last, a 512-byte device-writable one, holds the status; the 254 others are a
    // valid read of overlapping buffers. An answer, no hang.
    b.h.driver.set_desc(0, 0, hdr.0, 16, F_NEXT, 1);
    b.h.driver.set_desc(0, 1, x.0, 512, F_NEXT | F_WRITE, 2);
    b.h.driver.set_desc(0, 2, x.0, 512, F_NEXT | F_WRITE, 1);
    b.h.driver.push_avail(0, 0);
    b.h.kick(0);
    let used = b.h.driver.take_used(0);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].len, 254 * 512 + 1);
    assert!(!b.needs_reset());
    // A loop through the header only (never device-writable): no status, reset.
    let mut b = B::new();
    let hdr = b.header(VIRTIO_BLK_T_IN, 0);
    b.h.driver.set_desc(0, 0, hdr.0, 16, F_NEXT, 0);
    b.h.driver.push_avail(0, 0);
    b.h.kick(0);
    assert!(b.needs_reset());
}

#[test]
fn next_index_past_the_table_ends_the_chain() {
    let mut b = B::new();
    let hdr = b.header(VIRTIO_BLK_T_IN, 0);
    b.h.driver.set_desc(0, 0, hdr.0, 16, F_NEXT, 9999);
    b.h.driver.push_avail(0, 0);
    b.h.kick(0);
    assert!(b.needs_reset());
}

#[test]
fn a_bad_avail_index_needs_a_reset() {
    let mut b = B::new();
    b.h.driver.set_avail_idx(0, QUEUE_SIZE + 1);
    b.h.kick(0);
    assert!(b.needs_reset());
    assert_eq!(b.h.interrupt.config_signals(), 1);
    // Further kicks do nothing (and do not spin).
    b.h.kick(0);
    assert_eq!(b.h.interrupt.config_signals(), 1);
}

#[test]
fn a_head_index_past_the_table_needs_a_reset() {
    let mut b = B::new();
    b.h.driver.push_avail(0, QUEUE_SIZE + 5);
    b.h.kick(0);
    assert!(b.needs_reset());
}

#[test]
fn many_requests_one_interrupt() {
    let mut b = B::new();
    let x = b.h.driver.alloc(512);
    let mut heads = Vec::new();
    for i in 0..50 {
        let (descs, _) = b.chain(VIRTIO_BLK_T_IN, i, &[Desc::write(x, 512)]);
        heads.push(b.h.driver.add_chain(0, &descs));
    }
    b.h.kick(0);
    let used = b.h.driver.take_used(0);
    assert_eq!(used.iter().map(|u| u.id as u16).collect::<Vec<_>>(), heads);
    assert_eq!(b.h.interrupt.queue_signals(0), 1);
}

#[test]
fn event_idx_suppresses_interrupts_and_asks_for_kicks() {
    let mut b = B::new();
    // The driver wants an interrupt only after the 3rd used entry.
    b.h.driver.set_used_event(0, 2);
    let x = b.h.driver.alloc(512);
    for i in 0..2 {
        let (descs, _) = b.chain(VIRTIO_BLK_T_IN, i, &[Desc::write(x, 512)]);
        b.h.submit(0, &descs);
    }
    assert_eq!(b.h.interrupt.queue_signals(0), 0);
    assert_eq!(b.h.driver.avail_event(0), 2);
    let (descs, _) = b.chain(VIRTIO_BLK_T_IN, 0, &[Desc::write(x, 512)]);
    b.h.submit(0, &descs);
    assert_eq!(b.h.interrupt.queue_signals(0), 1);
    assert_eq!(b.h.driver.take_used(0).len(), 3);
}

#[test]
fn without_event_idx_every_batch_interrupts() {
    let disk = MemDisk::new(1 << 20);
    let dev = BlockDevice::new(Box::new(disk.clone()), BlockConfig::default()).unwrap();
    let mut b = B {
        h: Harness::new(dev),
        disk,
    };
    b.h.activate_with(1 << VIRTIO_F_VERSION_1).unwrap();
    let x = b.h.driver.alloc(512);
    for i in 0..3 {
        assert_eq!(b.status_of(VIRTIO_BLK_T_IN, i, &[Desc::write(x, 512)]), OK);
    }
    assert_eq!(b.h.interrupt.queue_signals(0), 3);
    // Notifications are enabled again after each batch.
    assert_eq!(b.h.driver.used_flags(0), 0);
}

#[test]
fn buffers_made_available_before_activation_are_served() {
    let disk = MemDisk::new(1 << 20);
    let dev = BlockDevice::new(Box::new(disk.clone()), BlockConfig::default()).unwrap();
    let mut b = B {
        h: Harness::new(dev),
        disk,
    };
    let (descs, status) = b.chain(VIRTIO_BLK_T_FLUSH, 0, &[]);
    let head = b.h.driver.add_chain(0, &descs);
    b.h.activate().unwrap();
    assert_eq!(b.answer(head, status).0, OK);
}

#[test]
fn reset_stops_processing_and_unregisters_the_queue() {
    let mut b = B::new();
    b.h.reset();
    let (descs, _) = b.chain(VIRTIO_BLK_T_FLUSH, 0, &[]);
    b.h.driver.add_chain(0, &descs);
    // The queue eventfd is no longer in the epoll set: nothing is dispatched.
    b.h.notify(0);
    assert_eq!(b.h.run(), 0);
    assert!(b.h.driver.take_used(0).is_empty());
    assert_eq!(b.disk.flush_count(), 0);
    // Resetting twice is fine.
    b.h.reset();
}

#[test]
fn process_queue_works_without_an_event_loop() {
    let disk = MemDisk::new(1 << 20);
    let mut dev = BlockDevice::new(Box::new(disk.clone()), BlockConfig::default()).unwrap();
    let mut driver = Driver::for_device(&dev, 4 << 20);
    let irq = std::sync::Arc::new(crate::testing::RecordingInterrupt::default());
    let events = vec![vmm_sys_util::eventfd::EventFd::new(0).unwrap()];
    dev.activate(
        driver.mem.clone(),
        irq.clone(),
        driver.queues(),
        events,
        dev.avail_features(),
    )
    .unwrap();
    let hdr = driver.alloc_bytes(&{
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&VIRTIO_BLK_T_FLUSH.to_le_bytes());
        h
    });
    let st = driver.alloc(1);
    driver.add_chain(0, &[Desc::read(hdr, 16), Desc::write(st, 1)]);
    dev.process_queue();
    assert_eq!(driver.take_used(0).len(), 1);
    assert_eq!(disk.flush_count(), 1);
    assert_eq!(irq.queue_signals(0), 1);
}

#[test]
fn rate_limit_defers_requests_until_the_timer() {
    let limit = RateLimit {
        bytes: BucketConfig::default(),
        ops: BucketConfig { rate: 40, burst: 2 },
    };
    let mut b = B::with(
        MemDisk::new(1 << 20),
        BlockConfig {
            rate_limit: limit,
            ..BlockConfig::default()
        },
    );
    let x = b.h.driver.alloc(512);
    for i in 0..4 {
        let (descs, _) = b.chain(VIRTIO_BLK_T_IN, i, &[Desc::write(x, 512)]);
        b.h.driver.add_chain(0, &descs);
    }
    b.h.kick(0);
    // The burst lets two through; the others wait for refills (one per 25 ms).
    assert_eq!(b.h.driver.take_used(0).len(), 2);
    // Kicks while throttled change nothing.
    b.h.kick(0);
    assert_eq!(b.h.driver.take_used(0).len(), 0);
    b.h.run_for(Duration::from_millis(150));
    assert_eq!(b.h.driver.take_used(0).len(), 2);
}

#[test]
fn bandwidth_limit_counts_bytes() {
    let limit = RateLimit {
        bytes: BucketConfig {
            rate: 64 << 10,
            burst: 8 << 10,
        },
        ops: BucketConfig::default(),
    };
    let mut b = B::with(
        MemDisk::new(1 << 20),
        BlockConfig {
            rate_limit: limit,
            ..BlockConfig::default()
        },
    );
    let x = b.h.driver.alloc(8 << 10);
    // Two 8 KiB reads: the first empties the bucket, the second waits ~125 ms.
    for _ in 0..2 {
        let (descs, _) = b.chain(VIRTIO_BLK_T_IN, 0, &[Desc::write(x, 8 << 10)]);
        b.h.driver.add_chain(0, &descs);
    }
    let kicked = Instant::now();
    b.h.kick(0);
    assert_eq!(b.h.driver.take_used(0).len(), 1);
    // Only a lower bound on the wait: a loaded machine makes it longer, never shorter.
    let mut second = Vec::new();
    while second.is_empty() && kicked.elapsed() < Duration::from_secs(10) {
        b.h.run_for(Duration::from_millis(20));
        second = b.h.driver.take_used(0);
    }
    assert_eq!(second.len(), 1, "the second read never completed");
    assert!(
        kicked.elapsed() >= Duration::from_millis(100),
        "the second read was not held back: {:?}",
        kicked.elapsed()
    );
    // A request larger than the burst still goes through once the bucket is full.
    b.h.run_for(Duration::from_millis(150));
    let y = b.h.driver.alloc(64 << 10);
    let (descs, _) = b.chain(VIRTIO_BLK_T_IN, 0, &[Desc::write(y, 64 << 10)]);
    b.h.driver.add_chain(0, &descs);
    b.h.kick(0);
    assert_eq!(b.h.driver.take_used(0).len(), 1);
}

#[test]
fn reset_and_activate_again_before_the_loop_wakes() {
    let mut b = B::new();
    // The vCPU thread resets and the driver re-activates before the event loop runs:
    // the loop must swap the old queue eventfds for the new ones in one wake-up.
    b.h.device().reset();
    b.h.driver.reset_rings();
    b.h.activate().unwrap();
    assert_eq!(b.status_of(VIRTIO_BLK_T_FLUSH, 0, &[]), OK);
    b.h.reset();
    b.h.driver.reset_rings();
    b.h.activate().unwrap();
    assert_eq!(b.status_of(VIRTIO_BLK_T_FLUSH, 0, &[]), OK);
    assert_eq!(b.disk.flush_count(), 2);
}

#[test]
fn a_held_device_waits_then_serves_from_the_new_image_and_announces_its_size() {
    let mut b = B::new();
    b.h.device().hold().unwrap();
    assert_eq!(b.disk.flush_count(), 1, "hold flushes the old image");
    // A read made while held waits in the ring.
    let x = b.h.driver.alloc(512);
    let (descs, status) = b.chain(VIRTIO_BLK_T_IN, 0, &[Desc::write(x, 512)]);
    let head = b.h.submit(0, &descs);
    assert!(b.h.driver.take_used(0).is_empty(), "served while held");

    // The host grows the image and puts it back: the waiting read is served from it, and
    // the guest hears of the new size.
    let bigger = MemDisk::from_bytes(vec![0xab; DISK_SIZE * 2]);
    b.h.device().replace_disk(Box::new(bigger)).unwrap();
    let (st, _) = b.answer(head, status);
    assert_eq!(st, OK);
    assert_eq!(b.h.driver.read(x, 512), vec![0xab; 512]);
    assert_eq!(b.h.device().capacity(), (DISK_SIZE * 2 / 512) as u64);
    let mut cap = [0u8; 8];
    b.h.device().read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (DISK_SIZE * 2 / 512) as u64);
    assert_eq!(b.h.interrupt.config_signals(), 1);

    // The same size again is no news; a read-only image cannot replace a writable one.
    let same = MemDisk::new(DISK_SIZE * 2);
    b.h.device().replace_disk(Box::new(same)).unwrap();
    assert_eq!(b.h.interrupt.config_signals(), 1);
    let ro = MemDisk::new(DISK_SIZE).read_only();
    assert!(matches!(
        b.h.device().replace_disk(Box::new(ro)),
        Err(BlockError::ReadOnlyChanged)
    ));
    assert_eq!(b.h.device().capacity(), (DISK_SIZE * 2 / 512) as u64);
}
