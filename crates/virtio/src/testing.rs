//! A virtio driver for tests: guest memory, split queues laid out in it, chains pushed by
//! hand, a device run through a real `EventManager`, and what came back read out.
//!
//! ```ignore
//! let mut h = Harness::new(BlockDevice::new(Box::new(disk), BlockConfig::default())?);
//! h.activate()?;                                  // every offered feature, DRIVER_OK
//! let hdr = h.driver.alloc_bytes(&header_bytes);  // buffers in guest memory
//! let status = h.driver.alloc(1);
//! h.submit(0, &[Desc::read(hdr, 16), Desc::write(status, 1)]); // chain + kick + run
//! let used = h.driver.take_used(0);               // [UsedElem { id, len }]
//! assert_eq!(h.driver.read(status, 1), [0]);
//! assert_eq!(h.interrupt.queue_signals(0), 1);
//! ```
//!
//! [`Driver`] alone (no device, no event loop) is enough to test queue code or to call a
//! device's processing directly; [`Harness`] adds the device and its event loop. Helpers
//! panic on misuse (they are for tests); the device under test must not.

use std::num::Wrapping;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use fv_disk::{DiskError, DiskFile, Op};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::{ActivateError, Interrupt, VirtioDevice};
use crate::GuestMemoryMmap;

/// Descriptor flag: the chain continues at `next`.
pub const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
/// Descriptor flag: the device writes this buffer.
pub const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
/// Descriptor flag: the buffer is a table of descriptors.
pub const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// A well-formed chain of `(addr, len, flags)` descriptors, as a device's chain walker
/// sees it: `F_NEXT` on all but the last.
pub fn desc_chain(descs: &[(u64, u32, u16)]) -> Vec<virtio_queue::desc::split::Descriptor> {
    let n = descs.len();
    descs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, flags))| {
            let flags = if i + 1 < n {
                flags | F_NEXT
            } else {
                flags & !F_NEXT
            };
            virtio_queue::desc::split::Descriptor::new(addr, len, flags, 0)
        })
        .collect()
}

/// One descriptor of a chain given to [`Driver::add_chain`]; `F_NEXT` and `next` are
/// filled in by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub addr: GuestAddress,
    pub len: u32,
    pub flags: u16,
}

impl Desc {
    /// A buffer the device reads.
    pub fn read(addr: GuestAddress, len: u32) -> Self {
        Desc {
            addr,
            len,
            flags: 0,
        }
    }

    /// A buffer the device writes.
    pub fn write(addr: GuestAddress, len: u32) -> Self {
        Desc {
            addr,
            len,
            flags: F_WRITE,
        }
    }
}

/// An entry of the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedElem {
    pub id: u32,
    pub len: u32,
}

struct DriverQueue {
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    next_desc: u16,
    used_seen: Wrapping<u16>,
}

/// The driver's side of guest memory and of the split queues in it.
pub struct Driver {
    pub mem: GuestMemoryMmap,
    queues: Vec<DriverQueue>,
    next_free: u64,
    end: u64,
}

const PAGE: u64 = 4096;

fn align_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

impl Driver {
    /// Guest RAM `[0, mem_size)` with one queue per entry of `queue_sizes` laid out at its
    /// start; buffers come from [`Driver::alloc`] after the rings.
    pub fn new(mem_size: u64, queue_sizes: &[u16]) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size as usize)])
            .expect("guest memory for the test driver");
        Self::with_memory(mem, queue_sizes)
    }

    /// Like [`Driver::new`] on memory the test built (several regions, holes); the rings go
    /// at the start of the first region.
    pub fn with_memory(mem: GuestMemoryMmap, queue_sizes: &[u16]) -> Self {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        let first = mem.iter().next().expect("guest memory has a region");
        let mut at = first.start_addr().raw_value();
        let end = first.start_addr().raw_value() + first.len();
        let mut queues = Vec::new();
        for &size in queue_sizes {
            let n = u64::from(size);
            let desc = align_up(at, 16);
            let avail = align_up(desc + 16 * n, 2);
            let used = align_up(avail + 6 + 2 * n, 4);
            at = align_up(used + 6 + 8 * n, PAGE);
            queues.push(DriverQueue {
                size,
                desc: GuestAddress(desc),
                avail: GuestAddress(avail),
                used: GuestAddress(used),
                next_desc: 0,
                used_seen: Wrapping(0),
            });
        }
        assert!(at <= end, "the rings do not fit in the first memory region");
        let driver = Driver {
            mem,
            queues,
            next_free: at,
            end,
        };
        for q in 0..driver.queues.len() {
            driver.clear_rings(q);
        }
        driver
    }

    /// A driver for `device`'s queues (at their largest sizes) in `mem_size` bytes of RAM.
    pub fn for_device(device: &dyn VirtioDevice, mem_size: u64) -> Self {
        Self::new(mem_size, device.queue_max_sizes())
    }

    /// Zeroes every ring and forgets what was used, as a driver does after a device reset.
    pub fn reset_rings(&mut self) {
        for q in &mut self.queues {
            q.next_desc = 0;
            q.used_seen = Wrapping(0);
        }
        for q in 0..self.queues.len() {
            self.clear_rings(q);
        }
    }

    fn q(&self, queue: usize) -> &DriverQueue {
        self.queues.get(queue).expect("no such queue")
    }

    fn clear_rings(&self, queue: usize) {
        let q = self.q(queue);
        let n = usize::from(q.size);
        self.write(q.desc, &vec![0; 16 * n]);
        self.write(q.avail, &vec![0; 6 + 2 * n]);
        self.write(q.used, &vec![0; 6 + 8 * n]);
    }

    /// The queue as the transport hands it to the device: configured and ready.
    pub fn queue(&self, queue: usize) -> Queue {
        let q = self.q(queue);
        let mut out = Queue::new(q.size).expect("valid queue size");
        out.set_size(q.size);
        out.try_set_desc_table_address(q.desc)
            .expect("aligned desc table");
        out.try_set_avail_ring_address(q.avail)
            .expect("aligned avail ring");
        out.try_set_used_ring_address(q.used)
            .expect("aligned used ring");
        out.set_ready(true);
        out
    }

    /// All queues, as [`Driver::queue`].
    pub fn queues(&self) -> Vec<Queue> {
        (0..self.queues.len()).map(|i| self.queue(i)).collect()
    }

    /// Allocates `len` zeroed bytes of guest memory (8-byte aligned).
    pub fn alloc(&mut self, len: u32) -> GuestAddress {
        let at = align_up(self.next_free, 8);
        let end = at + u64::from(len);
        assert!(end <= self.end, "test driver out of guest memory");
        self.next_free = end;
        self.write(GuestAddress(at), &vec![0; len as usize]);
        GuestAddress(at)
    }

    /// Allocates guest memory holding `bytes`.
    pub fn alloc_bytes(&mut self, bytes: &[u8]) -> GuestAddress {
        let len = u32::try_from(bytes.len()).expect("buffer under 4 GiB");
        let at = self.alloc(len);
        self.write(at, bytes);
        at
    }

    pub fn write(&self, addr: GuestAddress, bytes: &[u8]) {
        self.mem.write_slice(bytes, addr).expect("driver write");
    }

    pub fn read(&self, addr: GuestAddress, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.mem.read_slice(&mut out, addr).expect("driver read");
        out
    }

    /// Writes descriptor `index` of `queue`'s table as is.
    pub fn set_desc(&self, queue: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let table = self.q(queue).desc;
        write_desc(&self.mem, table, index, addr, len, flags, next);
    }

    /// Writes `descs` into the queue's table (linked with `F_NEXT`, in consecutive slots
    /// that wrap around) and makes the chain available. Returns its head index.
    pub fn add_chain(&mut self, queue: usize, descs: &[Desc]) -> u16 {
        let head = self.write_chain(queue, descs);
        self.push_avail(queue, head);
        head
    }

    /// Writes `descs` into the queue's table without making them available.
    pub fn write_chain(&mut self, queue: usize, descs: &[Desc]) -> u16 {
        let q = self.queues.get_mut(queue).expect("no such queue");
        assert!(
            !descs.is_empty() && descs.len() <= usize::from(q.size),
            "a chain needs 1..=queue size descriptors"
        );
        let size = q.size;
        let table = q.desc;
        let head = q.next_desc;
        let mut index = head;
        for (i, d) in descs.iter().enumerate() {
            let next = (index + 1) % size;
            let (flags, link) = if i + 1 < descs.len() {
                (d.flags | F_NEXT, next)
            } else {
                (d.flags & !F_NEXT, 0)
            };
            write_desc(&self.mem, table, index, d.addr.0, d.len, flags, link);
            index = next;
        }
        q.next_desc = index;
        head
    }

    /// Writes `descs` as an indirect table in fresh guest memory and makes available a
    /// chain of one `F_INDIRECT` descriptor pointing at it. Returns the head index.
    pub fn add_indirect_chain(&mut self, queue: usize, descs: &[Desc]) -> u16 {
        let len = u32::try_from(16 * descs.len()).expect("small table");
        let table = self.alloc(len);
        for (i, d) in descs.iter().enumerate() {
            let i = u16::try_from(i).expect("small table");
            let (flags, next) = if usize::from(i) + 1 < descs.len() {
                (d.flags | F_NEXT, i + 1)
            } else {
                (d.flags & !F_NEXT, 0)
            };
            write_desc(&self.mem, table, i, d.addr.0, d.len, flags, next);
        }
        self.add_chain(
            queue,
            &[Desc {
                addr: table,
                len,
                flags: F_INDIRECT,
            }],
        )
    }

    /// Puts `head` in the next available ring slot and bumps the available index.
    pub fn push_avail(&mut self, queue: usize, head: u16) {
        let q = self.q(queue);
        let idx = self.avail_idx(queue);
        let slot = q.avail.unchecked_add(4 + 2 * u64::from(idx % q.size));
        self.mem.write_obj(head.to_le(), slot).expect("avail slot");
        self.set_avail_idx(queue, idx.wrapping_add(1));
    }

    pub fn avail_idx(&self, queue: usize) -> u16 {
        let at = self.q(queue).avail.unchecked_add(2);
        u16::from_le(self.mem.read_obj(at).expect("avail idx"))
    }

    /// Sets the available index as is (no ring entries are written).
    pub fn set_avail_idx(&self, queue: usize, idx: u16) {
        let at = self.q(queue).avail.unchecked_add(2);
        self.mem.write_obj(idx.to_le(), at).expect("avail idx");
    }

    /// With EVENT_IDX: interrupt me once the used index passes `value`.
    pub fn set_used_event(&self, queue: usize, value: u16) {
        let q = self.q(queue);
        let at = q.avail.unchecked_add(4 + 2 * u64::from(q.size));
        self.mem.write_obj(value.to_le(), at).expect("used_event");
    }

    /// With EVENT_IDX: the available index at which the device wants a notification.
    pub fn avail_event(&self, queue: usize) -> u16 {
        let q = self.q(queue);
        let at = q.used.unchecked_add(4 + 8 * u64::from(q.size));
        u16::from_le(self.mem.read_obj(at).expect("avail_event"))
    }

    /// The used ring's flags (`VRING_USED_F_NO_NOTIFY`).
    pub fn used_flags(&self, queue: usize) -> u16 {
        u16::from_le(self.mem.read_obj(self.q(queue).used).expect("used flags"))
    }

    pub fn used_idx(&self, queue: usize) -> u16 {
        let at = self.q(queue).used.unchecked_add(2);
        u16::from_le(self.mem.read_obj(at).expect("used idx"))
    }

    /// The used ring entries added since the last call.
    pub fn take_used(&mut self, queue: usize) -> Vec<UsedElem> {
        let idx = Wrapping(self.used_idx(queue));
        let q = self.queues.get_mut(queue).expect("no such queue");
        let mut out = Vec::new();
        while q.used_seen != idx {
            let slot = q
                .used
                .unchecked_add(4 + 8 * u64::from(q.used_seen.0 % q.size));
            let id: u32 = self.mem.read_obj(slot).expect("used elem");
            let len: u32 = self.mem.read_obj(slot.unchecked_add(4)).expect("used elem");
            out.push(UsedElem {
                id: u32::from_le(id),
                len: u32::from_le(len),
            });
            q.used_seen += Wrapping(1);
        }
        out
    }
}

fn write_desc(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    index: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    let at = table.unchecked_add(16 * u64::from(index));
    mem.write_slice(&raw, at)
        .expect("descriptor in guest memory");
}

/// An [`Interrupt`] that counts what the device signalled.
#[derive(Debug, Default)]
pub struct RecordingInterrupt {
    queues: Mutex<Vec<usize>>,
    config: AtomicUsize,
}

impl RecordingInterrupt {
    /// Interrupts for queue `queue` so far.
    pub fn queue_signals(&self, queue: u16) -> usize {
        let counts = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(usize::from(queue)).copied().unwrap_or(0)
    }

    /// Configuration-change interrupts so far.
    pub fn config_signals(&self) -> usize {
        self.config.load(Ordering::SeqCst)
    }
}

impl Interrupt for RecordingInterrupt {
    fn signal_queue(&self, queue: u16) {
        let mut counts = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let i = usize::from(queue);
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
    }

    fn signal_config(&self) {
        self.config.fetch_add(1, Ordering::SeqCst);
    }
}

/// A device under test, its event loop, and a driver for it.
pub struct Harness<D: VirtioDevice + 'static> {
    pub driver: Driver,
    pub interrupt: Arc<RecordingInterrupt>,
    device: Arc<Mutex<D>>,
    manager: EventManager<Arc<Mutex<D>>>,
    /// The transport's queue eventfds (the device gets clones).
    queue_events: Vec<EventFd>,
}

/// Guest RAM of a [`Harness::new`]: 16 MiB.
pub const DEFAULT_MEM_SIZE: u64 = 16 << 20;

impl<D: VirtioDevice + 'static> Harness<D> {
    /// `device` registered with a new event manager, and a driver with 16 MiB of RAM.
    pub fn new(device: D) -> Self {
        let driver = Driver::for_device(&device, DEFAULT_MEM_SIZE);
        Self::with_driver(device, driver)
    }

    /// Like [`Harness::new`] with a driver the test built.
    pub fn with_driver(device: D, driver: Driver) -> Self {
        let queue_events = (0..device.queue_max_sizes().len())
            .map(|_| EventFd::new(EFD_NONBLOCK).expect("eventfd"))
            .collect();
        let device = Arc::new(Mutex::new(device));
        let mut manager = EventManager::new().expect("event manager");
        manager.add_subscriber(device.clone());
        Harness {
            driver,
            interrupt: Arc::new(RecordingInterrupt::default()),
            device,
            manager,
            queue_events,
        }
    }

    pub fn device(&self) -> MutexGuard<'_, D> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts every feature the device offers, activates it and lets its loop register
    /// the queues.
    pub fn activate(&mut self) -> Result<(), ActivateError> {
        let features = self.device().avail_features();
        self.activate_with(features)
    }

    /// Activates the device with `features` acknowledged.
    pub fn activate_with(&mut self, features: u64) -> Result<(), ActivateError> {
        let events = self
            .queue_events
            .iter()
            .map(|e| e.try_clone().expect("eventfd clone"))
            .collect();
        let queues = self.driver.queues();
        let interrupt: Arc<dyn Interrupt> = self.interrupt.clone();
        let mem = self.driver.mem.clone();
        self.device()
            .activate(mem, interrupt, queues, events, features)?;
        self.run();
        Ok(())
    }

    /// Resets the device as the transport does, and lets its loop catch up.
    pub fn reset(&mut self) {
        self.device().reset();
        self.run();
    }

    /// Notifies `queue` without running the loop.
    pub fn notify(&self, queue: usize) {
        self.queue_events
            .get(queue)
            .expect("no such queue")
            .write(1)
            .expect("queue eventfd");
    }

    /// Notifies `queue` and runs the loop until the device is idle.
    pub fn kick(&mut self, queue: usize) {
        self.notify(queue);
        self.run();
    }

    /// Adds a chain to `queue`, kicks it and runs the loop. Returns the chain's head.
    pub fn submit(&mut self, queue: usize, descs: &[Desc]) -> u16 {
        let head = self.driver.add_chain(queue, descs);
        self.kick(queue);
        head
    }

    /// Dispatches ready events until there are none; returns how many were dispatched.
    /// Panics if the device never goes idle (an fd it does not drain).
    pub fn run(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..10_000 {
            match self.manager.run_with_timeout(0).expect("event loop") {
                0 => return total,
                n => total += n,
            }
        }
        panic!("the device never went idle: some fd stays ready");
    }

    /// Dispatches events for `time` (timers included), then until idle.
    pub fn run_for(&mut self, time: Duration) -> usize {
        let end = Instant::now() + time;
        let mut total = 0;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return total + self.run();
            }
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            total += self.manager.run_with_timeout(ms).expect("event loop");
        }
    }
}

/// A disk in memory: clones share the bytes, so a test keeps one to look at what the
/// device wrote.
#[derive(Clone, Debug)]
pub struct MemDisk {
    data: Arc<Mutex<Vec<u8>>>,
    read_only: bool,
    failing: Arc<AtomicBool>,
    flushes: Arc<AtomicUsize>,
    discards: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl MemDisk {
    /// `size` bytes of zeroes.
    pub fn new(size: usize) -> Self {
        Self::from_bytes(vec![0; size])
    }

    pub fn from_bytes(data: Vec<u8>) -> Self {
        MemDisk {
            data: Arc::new(Mutex::new(data)),
            read_only: false,
            failing: Arc::default(),
            flushes: Arc::default(),
            discards: Arc::default(),
        }
    }

    /// The same disk, opened read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// From now on every request fails (as EIO) until called with false.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    pub fn flush_count(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }

    /// `(offset, len)` of every discard so far.
    pub fn discards(&self) -> Vec<(u64, u64)> {
        self.discards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The byte range of a request, or the error the disk layer gives for it.
    fn range(&self, op: Op, offset: u64, len: u64) -> Result<std::ops::Range<usize>, DiskError> {
        let path = std::path::PathBuf::from("<memdisk>");
        if self.failing.load(Ordering::SeqCst) {
            return Err(DiskError::Io {
                path,
                op,
                offset,
                len,
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        if self.read_only && op != Op::Read && op != Op::Flush {
            return Err(DiskError::ReadOnly { path, op });
        }
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(offset as usize..end as usize),
            _ => Err(DiskError::OutOfRange {
                path,
                op,
                offset,
                len,
                size,
            }),
        }
    }
}

impl DiskFile for MemDisk {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let r = self.range(Op::Read, offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.lock()[r]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let r = self.range(Op::Write, offset, buf.len() as u64)?;
        self.lock()[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<(), DiskError> {
        self.range(Op::Flush, 0, 0)?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let r = self.range(Op::Discard, offset, len)?;
        self.lock()[r].fill(0);
        self.discards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((offset, len));
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        let r = self.range(Op::WriteZeroes, offset, len)?;
        self.lock()[r].fill(0);
        Ok(())
    }
}
