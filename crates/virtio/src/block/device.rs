//! The virtio-blk device: features, configuration space, activation, and the processing
//! of its request queue.

use std::sync::Arc;

use fv_disk::DiskFile;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::GuestAddress;

use super::io::{self, Done};
use super::request::Request;
use super::{
    BlockConfig, BlockError, DISCARD_SECTOR_ALIGNMENT, ID_BYTES, MAX_DISCARD_SECTORS,
    MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SECTORS, MAX_WRITE_ZEROES_SEG, SECTOR_SIZE, SEG_MAX,
};
use crate::device::{ActivateError, Interrupt, QueueEvents, VirtioDevice};
use crate::lifecycle::Lifecycle;
use crate::queue::{self, Chain, Outcome};
use crate::rate_limiter::Throttle;
use crate::{guest, GuestMemoryMmap};

/// Length of the configuration space we expose (`struct virtio_blk_config` up to and
/// including `write_zeroes_may_unmap` and its padding).
const CONFIG_SIZE: usize = 60;

/// A virtio-blk device over one disk.
pub struct BlockDevice {
    pub(super) disk: Box<dyn DiskFile>,
    pub(super) disk_sectors: u64,
    pub(super) serial: [u8; ID_BYTES],
    queue_sizes: [u16; 1],
    avail_features: u64,
    config: [u8; CONFIG_SIZE],
    pub(super) lifecycle: Lifecycle,
    pub(super) throttle: Throttle,
    /// Held by the host (`pause`) while its image is swapped: requests wait in the ring.
    held: bool,
}

impl BlockDevice {
    pub fn new(disk: Box<dyn DiskFile>, config: BlockConfig) -> Result<Self, BlockError> {
        let serial_bytes = config.serial.as_bytes();
        if serial_bytes.len() > ID_BYTES {
            return Err(BlockError::SerialTooLong(config.serial));
        }
        let mut serial = [0u8; ID_BYTES];
        serial[..serial_bytes.len()].copy_from_slice(serial_bytes);
        let qs = config.queue_size;
        if !qs.is_power_of_two() || !(2..=32768).contains(&qs) {
            return Err(BlockError::QueueSize(qs));
        }

        let disk_sectors = disk.size() / SECTOR_SIZE;
        let read_only = disk.read_only();
        let mut avail_features = 1u64 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH;
        if read_only {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            avail_features |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }

        Ok(BlockDevice {
            disk,
            disk_sectors,
            serial,
            queue_sizes: [qs],
            avail_features,
            config: config_space(disk_sectors),
            lifecycle: Lifecycle::new().map_err(BlockError::Fd)?,
            throttle: Throttle::new(config.rate_limit).map_err(BlockError::Fd)?,
            held: false,
        })
    }

    /// Stops taking requests and flushes the image, so that the host can snapshot, grow or
    /// replace the file under it. Requests the guest makes meanwhile wait in the ring (no
    /// request is ever half done: the device handles one under the same lock). Holding a
    /// held device again only flushes again.
    pub fn hold(&mut self) -> Result<(), fv_disk::DiskError> {
        self.held = true;
        self.disk.flush()
    }

    /// Whether [`BlockDevice::hold`] holds the device.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Puts `disk` in place of the image (the host replaced or grew the file) and takes
    /// requests again. The new image must be as writable as the old one: the guest
    /// negotiated read-only or not at start. A changed size is announced to the guest with
    /// a configuration-change interrupt, as a resized disk is on real hardware.
    pub fn replace_disk(&mut self, disk: Box<dyn DiskFile>) -> Result<(), BlockError> {
        if disk.read_only() != self.disk.read_only() {
            return Err(BlockError::ReadOnlyChanged);
        }
        let sectors = disk.size() / SECTOR_SIZE;
        self.disk = disk;
        if sectors != self.disk_sectors {
            self.disk_sectors = sectors;
            self.config[..8].copy_from_slice(&sectors.to_le_bytes());
            if let Some(active) = self.lifecycle.running() {
                active.interrupt.signal_config();
            }
        }
        self.release();
        Ok(())
    }

    /// Takes requests again, on the same image; handles those that waited.
    pub fn release(&mut self) {
        self.held = false;
        self.process_queue();
    }

    /// Disk size in 512-byte sectors, as the guest sees it.
    pub fn capacity(&self) -> u64 {
        self.disk_sectors
    }

    /// Processes the request queue once, synchronously: every available request (until a
    /// rate limit stops it), then one interrupt if the driver wants it. The event loop
    /// calls this on a queue notification; benchmarks and tests may call it directly on
    /// an activated device. Does nothing if the device is not active, needs a reset, or
    /// is waiting for its rate limiter.
    pub fn process_queue(&mut self) {
        if self.held || self.throttle.is_blocked() {
            return;
        }
        let Some(active) = self.lifecycle.running() else {
            return;
        };
        let Some(queue) = active.queues.first_mut() else {
            return;
        };
        let mem = &active.mem;
        let mut ctx = Ctx {
            mem,
            disk: &*self.disk,
            disk_sectors: self.disk_sectors,
            serial: &self.serial,
            throttle: &mut self.throttle,
        };
        let drained = queue::drain(queue, mem, |chain| ctx.handle(chain));
        let mut error = drained.error;
        if drained.used > 0 {
            if let Err(e) = queue::notify(queue, mem, &*active.interrupt, 0) {
                error.get_or_insert(e);
            }
        }
        if let Some(e) = error {
            self.lifecycle.fail("virtio-blk", &e);
        }
    }
}

/// What handling one chain needs, borrowed from the device.
struct Ctx<'a> {
    mem: &'a GuestMemoryMmap,
    disk: &'a dyn DiskFile,
    disk_sectors: u64,
    serial: &'a [u8; ID_BYTES],
    throttle: &'a mut Throttle,
}

impl Ctx<'_> {
    fn handle(&mut self, chain: Chain<'_>) -> Outcome {
        match Request::parse(chain, self.mem, self.disk_sectors) {
            Ok(req) => {
                if !self.throttle.try_take(1, req.data_len()) {
                    return Outcome::Later;
                }
                let done = io::execute(&req, self.mem, self.disk, self.serial);
                finish(self.mem, req.status, done)
            }
            Err(e) => match e.status_addr() {
                Some(status) => {
                    // A rejected request still costs an operation, so that a guest cannot
                    // flood the device with bad ones past its limit.
                    if !self.throttle.try_take(1, 0) {
                        return Outcome::Later;
                    }
                    log::debug!("virtio-blk: rejected request: {e}");
                    let done = Done {
                        status: e.kind().status(),
                        written: 0,
                    };
                    finish(self.mem, status, done)
                }
                None => Outcome::Broken {
                    len: 0,
                    why: e.to_string(),
                },
            },
        }
    }
}

/// Writes the status byte and returns the chain's used length.
fn finish(mem: &GuestMemoryMmap, status: GuestAddress, done: Done) -> Outcome {
    if guest::write(mem, status, &[done.status]) {
        Outcome::Used(done.written.saturating_add(1))
    } else {
        Outcome::Broken {
            len: done.written,
            why: format!("cannot write the status byte at {:#x}", status.0),
        }
    }
}

fn config_space(capacity: u64) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &capacity.to_le_bytes());
    // size_max (8) stays 0: VIRTIO_BLK_F_SIZE_MAX is not offered, any segment size works.
    put(12, &SEG_MAX.to_le_bytes());
    // geometry (16..20) and topology (24..32) are not offered.
    put(20, &(SECTOR_SIZE as u32).to_le_bytes());
    // writeback (32) is not offered: the cache is always write-back, FLUSH is honoured.
    put(34, &1u16.to_le_bytes());
    put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
    put(40, &MAX_DISCARD_SEG.to_le_bytes());
    put(44, &DISCARD_SECTOR_ALIGNMENT.to_le_bytes());
    put(48, &MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
    put(52, &MAX_WRITE_ZEROES_SEG.to_le_bytes());
    put(56, &[1]);
    c
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device::read_config_window(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every field is read-only without VIRTIO_BLK_F_CONFIG_WCE.
        log::debug!(
            "virtio-blk: ignored a {}-byte config write at {offset}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
        queue_events: QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        self.lifecycle
            .activate(1, mem, interrupt, queues, queue_events, acked_features)
    }

    fn reset(&mut self) {
        self.lifecycle.reset();
        self.throttle.unblock();
    }

    fn needs_reset(&self) -> bool {
        self.lifecycle.needs_reset()
    }
}
