//! The transport driven as Linux's virtio_pci driver drives it, against a tiny fake device
//! and a router that records what it is told.

use super::*;
use crate::transport::msix::tests::{Call, Recorder};
use crate::transport::msix::{MSIX_CONTROL_ENABLE, MSIX_CONTROL_FUNCTION_MASK};
use crate::transport::pci::{COMMAND_MEMORY, REG_BAR0, REG_CAPABILITIES, REG_COMMAND};
use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FAILED,
};
use vm_memory::GuestAddress;

const FEATURE_X: u64 = 1 << 5;
const MEM_SIZE: u64 = 0x10_0000;

/// What one activation gave the device: (size, desc, avail, used, event_idx) per queue,
/// the number of queue eventfds, the acked features.
type Activation = (Vec<(u16, u64, u64, u64, bool)>, usize, u64);

#[derive(Default)]
struct Fake {
    broken: bool,
    config: [u8; 8],
    activations: Vec<Activation>,
    interrupt: Option<Arc<dyn Interrupt>>,
    resets: usize,
}

impl MutEventSubscriber for Fake {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {}
    fn init(&mut self, _ops: &mut EventOps) {}
}

impl VirtioDevice for Fake {
    fn device_type(&self) -> u32 {
        virtio_ids::VIRTIO_ID_RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 16]
    }
    fn avail_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | FEATURE_X
            | (1 << VIRTIO_F_RING_PACKED)
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self
                .config
                .get(offset as usize + i)
                .copied()
                .unwrap_or_default();
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = self.config.get_mut(offset as usize + i) {
                *c = *b;
            }
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<Queue>,
        queue_events: crate::QueueEvents,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let q = queues
            .iter()
            .map(|q| {
                (
                    q.size(),
                    q.desc_table(),
                    q.avail_ring(),
                    q.used_ring(),
                    q.event_idx_enabled(),
                )
            })
            .collect();
        self.activations
            .push((q, queue_events.len(), acked_features));
        self.interrupt = Some(interrupt);
        Ok(())
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.interrupt = None;
        self.broken = false;
    }
    fn needs_reset(&self) -> bool {
        self.broken
    }
}

struct Driver {
    dev: VirtioPciDevice,
    fake: Arc<Mutex<Fake>>,
    rec: Arc<Recorder>,
}

impl Driver {
    fn new() -> Driver {
        let fake = Arc::new(Mutex::new(Fake::default()));
        let rec = Arc::new(Recorder::default());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let dev = VirtioPciDevice::new(fake.clone(), mem, rec.clone()).unwrap();
        Driver { dev, fake, rec }
    }

    fn cfg32(&mut self, off: u16) -> u32 {
        let mut b = [0; 4];
        self.dev.read_config(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn cfg8(&mut self, off: u16) -> u8 {
        let mut b = [0; 1];
        self.dev.read_config(off, &mut b);
        b[0]
    }
    fn set_cfg16(&mut self, off: u16, v: u16) {
        self.dev.write_config(off, &v.to_le_bytes());
    }
    fn read(&mut self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.read_bar(0, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    fn write(&mut self, off: u64, len: usize, v: u64) {
        self.dev.write_bar(0, off, &v.to_le_bytes()[..len]);
    }
    fn status(&mut self) -> u32 {
        self.read(DEVICE_STATUS, 1) as u32
    }
    fn add_status(&mut self, bits: u32) {
        let s = self.status() | bits;
        self.write(DEVICE_STATUS, 1, u64::from(s));
    }

    /// Walks the capability list: (id, offset) of each.
    fn capabilities(&mut self) -> Vec<(u8, u16)> {
        let mut caps = Vec::new();
        let mut ptr = self.cfg8(REG_CAPABILITIES as u16) as u16;
        while ptr != 0 && caps.len() < 48 {
            caps.push((self.cfg8(ptr), ptr));
            ptr = self.cfg8(ptr + 1) as u16;
        }
        caps
    }

    /// Program MSI-X entry `v` with a recognisable message, unmasked.
    fn program_vector(&mut self, v: u64) {
        let base = MSIX_TABLE_OFFSET + 16 * v;
        self.write(base, 4, 0xfee0_0000);
        self.write(base + 4, 4, 0);
        self.write(base + 8, 4, 0x40 + v);
        self.write(base + 12, 4, 0);
    }

    fn setup_queue(&mut self, q: u16, size: u16, base: u64, vector: u16) {
        self.write(QUEUE_SELECT, 2, q.into());
        self.write(QUEUE_SIZE, 2, size.into());
        self.write(QUEUE_MSIX_VECTOR, 2, vector.into());
        self.write(QUEUE_DESC, 4, base);
        self.write(QUEUE_DESC + 4, 4, 0);
        self.write(QUEUE_DRIVER, 8, base + 0x1000);
        self.write(QUEUE_DEVICE, 4, base + 0x2000);
        self.write(QUEUE_DEVICE + 4, 4, 0);
        self.write(QUEUE_ENABLE, 2, 1);
    }

    fn negotiate(&mut self, features: u64) {
        self.write(DEVICE_STATUS, 1, 0);
        self.add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        self.write(DRIVER_FEATURE_SELECT, 4, 0);
        self.write(DRIVER_FEATURE, 4, features & 0xffff_ffff);
        self.write(DRIVER_FEATURE_SELECT, 4, 1);
        self.write(DRIVER_FEATURE, 4, features >> 32);
        self.add_status(VIRTIO_CONFIG_S_FEATURES_OK);
    }
}

#[test]
fn configuration_space_describes_a_modern_virtio_function() {
    let mut d = Driver::new();
    assert_eq!(d.cfg32(0), 0x1044_1af4, "rng is 0x1040 + 4");
    assert_eq!(d.cfg32(8) >> 8, 0xff_0000, "class 'other'");
    assert_eq!(d.cfg32(8) & 0xff, 1, "revision 1: modern only");
    assert_eq!(d.cfg32(0x2c), 0x1100_1af4);
    assert_eq!(d.cfg32(0x3c) >> 8 & 0xff, 0, "interrupt pin 0");
    // BAR0: 64-bit memory, 32 KiB.
    d.dev.write_config(REG_BAR0 as u16, &[0xff; 4]);
    d.dev.write_config(REG_BAR0 as u16 + 4, &[0xff; 4]);
    assert_eq!(d.cfg32(0x10), 0xffff_8004);
    assert_eq!(d.cfg32(0x14), 0xffff_ffff);

    let caps = d.capabilities();
    let vendor: Vec<u16> = caps.iter().filter(|c| c.0 == 9).map(|c| c.1).collect();
    assert_eq!(vendor.len(), 5);
    let mut seen = Vec::new();
    for off in vendor {
        let cfg_type = d.cfg8(off + 3);
        let cap_len = d.cfg8(off + 2);
        assert_eq!(d.cfg8(off + 4), 0, "in BAR0");
        let offset = d.cfg32(off + 8);
        let length = d.cfg32(off + 12);
        seen.push((cfg_type, cap_len, offset, length));
        if cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG {
            assert_eq!(d.cfg32(off + 16), NOTIFY_OFF_MULTIPLIER);
        }
    }
    assert_eq!(
        seen,
        vec![
            (1, 16, 0, 0x38),
            (3, 16, 0x1000, 1),
            (4, 16, 0x2000, 0x1000),
            (2, 20, 0x3000, 0x1000),
            (5, 20, 0, 0)
        ]
    );
    let (_, msix) = *caps.iter().find(|c| c.0 == 0x11).unwrap();
    let control = d.cfg32(msix) >> 16;
    assert_eq!(control & 0x7ff, 2, "3 vectors: config + 2 queues");
    assert_eq!(d.cfg32(msix + 4), 0x4000, "table in BAR0 at 0x4000");
    assert_eq!(d.cfg32(msix + 8), 0x5000, "PBA in BAR0 at 0x5000");
    // Only enable and function mask are writable.
    d.set_cfg16(msix + 2, 0xffff);
    assert_eq!(d.cfg32(msix) >> 16, 0xc002);
}

#[test]
fn full_negotiation_activates_the_device_with_its_queues() {
    let mut d = Driver::new();
    assert_eq!(d.read(NUM_QUEUES, 2), 2);
    d.write(DEVICE_STATUS, 1, 0);
    d.add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    // Device features: packed rings are filtered out by the transport.
    d.write(DEVICE_FEATURE_SELECT, 4, 0);
    let low = d.read(DEVICE_FEATURE, 4);
    d.write(DEVICE_FEATURE_SELECT, 4, 1);
    let high = d.read(DEVICE_FEATURE, 4);
    assert_eq!(
        high << 32 | low,
        (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | FEATURE_X
    );
    d.write(DEVICE_FEATURE_SELECT, 4, 2);
    assert_eq!(d.read(DEVICE_FEATURE, 4), 0);
    // The driver accepts VERSION_1, EVENT_IDX and a bit the device never offered.
    d.write(DRIVER_FEATURE_SELECT, 4, 0);
    d.write(DRIVER_FEATURE, 4, (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << 3));
    d.write(DRIVER_FEATURE_SELECT, 4, 1);
    d.write(DRIVER_FEATURE, 4, 1);
    d.write(DRIVER_FEATURE_SELECT, 4, 0);
    assert_eq!(d.read(DRIVER_FEATURE, 4), 1 << VIRTIO_RING_F_EVENT_IDX);
    d.add_status(VIRTIO_CONFIG_S_FEATURES_OK);
    assert_ne!(d.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    // Features are frozen after FEATURES_OK.
    d.write(DRIVER_FEATURE, 4, 0);
    assert_eq!(d.read(DRIVER_FEATURE, 4), 1 << VIRTIO_RING_F_EVENT_IDX);

    // MSI-X on (function masked while the table is written, as Linux does).
    let msix = d.capabilities().iter().find(|c| c.0 == 0x11).unwrap().1;
    d.set_cfg16(msix + 2, MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK);
    for v in 0..3 {
        d.program_vector(v);
    }
    d.set_cfg16(msix + 2, MSIX_CONTROL_ENABLE);
    assert!(d
        .rec
        .take()
        .contains(&Call::Update(2, 0xfee0_0000, 0x42, false)));
    d.write(CONFIG_MSIX_VECTOR, 2, 0);
    assert_eq!(d.read(CONFIG_MSIX_VECTOR, 2), 0);
    d.write(CONFIG_MSIX_VECTOR, 2, 3);
    assert_eq!(
        d.read(CONFIG_MSIX_VECTOR, 2),
        u64::from(NO_VECTOR),
        "no entry 3"
    );
    d.write(CONFIG_MSIX_VECTOR, 2, 0);

    // Queue 0: max 256; refuse 100, 512 and 0; take 128.
    d.write(QUEUE_SELECT, 2, 0);
    assert_eq!(d.read(QUEUE_SIZE, 2), 256);
    for bad in [100, 512, 0] {
        d.write(QUEUE_SIZE, 2, bad);
        assert_eq!(d.read(QUEUE_SIZE, 2), 256, "size {bad}");
    }
    d.setup_queue(0, 128, 0x1_0000, 1);
    assert_eq!(d.read(QUEUE_SIZE, 2), 128);
    assert_eq!(d.read(QUEUE_NOTIFY_OFF, 2), 0);
    assert_eq!(d.read(QUEUE_DRIVER, 4), 0x1_1000);
    assert_eq!(d.read(QUEUE_DRIVER, 8), 0x1_1000);
    assert_eq!(d.read(QUEUE_ENABLE, 2), 1);
    // Enabled queues are frozen.
    d.write(QUEUE_SIZE, 2, 64);
    d.write(QUEUE_DESC, 4, 0x9000);
    assert_eq!(
        (d.read(QUEUE_SIZE, 2), d.read(QUEUE_DESC, 4)),
        (128, 0x1_0000)
    );
    d.setup_queue(1, 16, 0x2_0000, 2);
    assert_eq!(d.read(QUEUE_NOTIFY_OFF, 2), 1);
    // A queue that does not exist reads as zero and takes no writes.
    d.write(QUEUE_SELECT, 2, 7);
    d.write(QUEUE_SIZE, 2, 4);
    d.write(QUEUE_MSIX_VECTOR, 2, 1);
    for reg in [
        QUEUE_SIZE,
        QUEUE_MSIX_VECTOR,
        QUEUE_ENABLE,
        QUEUE_NOTIFY_OFF,
    ] {
        assert_eq!(d.read(reg, 2), 0, "{reg:#x}");
    }
    assert_eq!(d.read(QUEUE_DESC, 8), 0);

    d.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    assert_eq!(
        d.status(),
        VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK
    );
    {
        let fake = d.fake.lock().unwrap();
        assert_eq!(fake.activations.len(), 1);
        let (queues, events, features) = &fake.activations[0];
        assert_eq!(
            queues,
            &vec![
                (128, 0x1_0000, 0x1_1000, 0x1_2000, true),
                (16, 0x2_0000, 0x2_1000, 0x2_2000, true)
            ]
        );
        assert_eq!(*events, 2);
        assert_eq!(
            *features,
            (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX)
        );
    }
    // A device that broke shows DEVICE_NEEDS_RESET until the driver resets it.
    d.fake.lock().unwrap().broken = true;
    assert_ne!(d.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    d.fake.lock().unwrap().broken = false;
    assert_eq!(d.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);

    // Queue registers are frozen after DRIVER_OK too.
    d.write(QUEUE_SELECT, 2, 0);
    d.write(QUEUE_SIZE, 2, 64);
    assert_eq!(d.read(QUEUE_SIZE, 2), 128);

    // Interrupts: queue 1 → vector 2; config → vector 0; ISR bits set, cleared on read.
    d.rec.take();
    let irq = d.fake.lock().unwrap().interrupt.clone().unwrap();
    irq.signal_queue(1);
    irq.signal_queue(9);
    irq.signal_config();
    assert_eq!(d.rec.take(), vec![Call::Trigger(2), Call::Trigger(0)]);
    assert_eq!(d.read(ISR_OFFSET, 1), 3);
    assert_eq!(d.read(ISR_OFFSET, 1), 0);
    assert_eq!(d.read(CONFIG_GENERATION, 1), 1);

    // A masked vector goes pending and fires on unmask.
    d.write(MSIX_TABLE_OFFSET + 16 + 12, 4, 1);
    irq.signal_queue(0);
    assert_eq!(d.read(MSIX_PBA_OFFSET, 8), 0b10);
    assert!(!d.rec.take().contains(&Call::Trigger(1)));
    d.write(MSIX_TABLE_OFFSET + 16 + 12, 4, 0);
    assert_eq!(d.rec.take().last(), Some(&Call::Trigger(1)));
    assert_eq!(d.read(MSIX_PBA_OFFSET, 8), 0);

    // Notifications without an ioeventfd still reach the queue's eventfd.
    d.write(NOTIFY_OFFSET + 4, 2, 1);
    assert_eq!(d.dev.queue_events()[1].read().unwrap(), 1);
    assert!(
        d.dev.queue_events()[0].read().is_err(),
        "nothing for queue 0"
    );
    let ioevents: Vec<(u8, u64)> = d.dev.ioevents().iter().map(|e| (e.bar, e.offset)).collect();
    assert_eq!(ioevents, vec![(0, 0x3000), (0, 0x3004)]);

    // Device configuration goes to the device.
    d.write(DEVICE_CFG_OFFSET + 4, 4, 0x0403_0201);
    assert_eq!(d.read(DEVICE_CFG_OFFSET + 4, 4), 0x0403_0201);
    assert_eq!(d.read(DEVICE_CFG_OFFSET + 0x100, 4), 0, "past its end");
    assert_eq!(d.fake.lock().unwrap().config[4..8], [1, 2, 3, 4]);

    // Reset: the device is told, everything returns to its initial values.
    d.write(DEVICE_STATUS, 1, 0);
    assert_eq!(d.status(), 0);
    assert!(d.fake.lock().unwrap().resets >= 2);
    d.write(QUEUE_SELECT, 2, 0);
    assert_eq!(d.read(QUEUE_SIZE, 2), 256);
    assert_eq!(d.read(QUEUE_ENABLE, 2), 0);
    assert_eq!(d.read(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    assert_eq!(d.read(CONFIG_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    d.write(DRIVER_FEATURE_SELECT, 4, 1);
    assert_eq!(d.read(DRIVER_FEATURE, 4), 0);
    irq.signal_queue(1);
    assert!(
        !d.rec.take().iter().any(|c| matches!(c, Call::Trigger(_))),
        "a stale interrupt after reset fires nothing"
    );
}

#[test]
fn features_ok_needs_version_1() {
    let mut d = Driver::new();
    d.negotiate(1 << VIRTIO_RING_F_EVENT_IDX);
    assert_eq!(d.status() & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    d.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    assert_ne!(d.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert!(d.fake.lock().unwrap().activations.is_empty());
    d.add_status(VIRTIO_CONFIG_S_FAILED);
    d.write(DEVICE_STATUS, 1, 0);
    assert_eq!(d.status(), 0);
}

#[test]
fn bad_queues_set_needs_reset_and_signal_a_config_change() {
    let mut d = Driver::new();
    d.negotiate(1 << VIRTIO_F_VERSION_1);
    let msix = d.capabilities().iter().find(|c| c.0 == 0x11).unwrap().1;
    d.set_cfg16(msix + 2, MSIX_CONTROL_ENABLE);
    d.program_vector(0);
    d.write(CONFIG_MSIX_VECTOR, 2, 0);
    // Rings past the end of guest memory.
    d.setup_queue(0, 256, MEM_SIZE - 0x1000, NO_VECTOR);
    d.rec.take();
    d.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    assert_ne!(d.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_eq!(d.rec.take(), vec![Call::Trigger(0)]);
    assert!(d.fake.lock().unwrap().activations.is_empty());

    // Misaligned descriptor table.
    d.negotiate(1 << VIRTIO_F_VERSION_1);
    d.setup_queue(0, 256, 0x1_0008, NO_VECTOR);
    d.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    assert_ne!(d.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);

    // Only queue 1 enabled: the device gets one queue, and its interrupts map to queue 1.
    d.negotiate(1 << VIRTIO_F_VERSION_1);
    d.program_vector(2);
    d.setup_queue(1, 16, 0x3_0000, 2);
    d.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    assert_eq!(d.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    let fake = d.fake.lock().unwrap();
    assert_eq!(fake.activations[0].0.len(), 1);
    d.rec.take();
    fake.interrupt.clone().unwrap().signal_queue(0);
    assert_eq!(d.rec.take(), vec![Call::Trigger(2)]);
}

#[test]
fn pci_cfg_capability_is_a_window_into_bar0() {
    let mut d = Driver::new();
    let cap = d
        .capabilities()
        .into_iter()
        .filter(|c| c.0 == 9)
        .map(|c| c.1)
        .find(|off| {
            let mut b = [0u8];
            d.dev.read_config(off + 3, &mut b);
            b[0] == VIRTIO_PCI_CAP_PCI_CFG
        })
        .unwrap();
    // Read num_queues (2 bytes at 0x12) through the window.
    d.dev.write_config(cap + 4, &[0]);
    d.dev.write_config(cap + 8, &0x12u32.to_le_bytes());
    d.dev.write_config(cap + 12, &2u32.to_le_bytes());
    assert_eq!(d.cfg32(cap + 16) & 0xffff, 2);
    // Write device_status through it.
    d.dev.write_config(cap + 8, &0x14u32.to_le_bytes());
    d.dev.write_config(cap + 12, &1u32.to_le_bytes());
    d.dev
        .write_config(cap + 16, &VIRTIO_CONFIG_S_ACKNOWLEDGE.to_le_bytes());
    assert_eq!(d.status(), VIRTIO_CONFIG_S_ACKNOWLEDGE);
    // A bad window (length 3) does nothing.
    d.dev.write_config(cap + 12, &3u32.to_le_bytes());
    d.dev.write_config(cap + 16, &0u32.to_le_bytes());
    assert_eq!(d.status(), VIRTIO_CONFIG_S_ACKNOWLEDGE);
}

#[test]
fn hard_reset_restores_power_on_state() {
    let mut d = Driver::new();
    d.dev.config_mut().set_bar_address(0, 0xc000_0000);
    d.dev.config_mut().set_command(COMMAND_MEMORY);
    d.dev.config_mut().save_power_on_state();
    let msix = d.capabilities().iter().find(|c| c.0 == 0x11).unwrap().1;
    d.set_cfg16(msix + 2, MSIX_CONTROL_ENABLE);
    d.program_vector(1);
    d.negotiate(1 << VIRTIO_F_VERSION_1);
    d.set_cfg16(REG_COMMAND as u16, 0);
    d.dev
        .write_config(REG_BAR0 as u16, &0xd000_0000u32.to_le_bytes());
    PciFunction::reset(&mut d.dev);
    assert_eq!(d.status(), 0);
    assert_eq!(d.dev.config().bar_address(0), Some(0xc000_0000));
    assert_eq!(d.dev.config().command(), COMMAND_MEMORY);
    assert_eq!(d.cfg32(msix) >> 16, 2, "MSI-X disabled again");
    assert_eq!(d.read(MSIX_TABLE_OFFSET + 16 + 12, 4), 1, "entries masked");
}

/// Every register, every width, random values: nothing panics, and nothing the guest
/// does makes a later access fail.
#[test]
fn hostile_accesses_never_panic() {
    let mut d = Driver::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200_000 {
        let r = next();
        let len = [1usize, 2, 3, 4, 8, 0][(r % 6) as usize];
        let mut buf = [0u8; 8];
        let value = next().to_le_bytes();
        match (r >> 8) % 5 {
            0 => {
                let off = ((r >> 16) % 0x1100) as u16;
                let len = len.min(4);
                d.dev.write_config(off, &value[..len]);
                d.dev.read_config(off, &mut buf[..len]);
            }
            1 | 2 => {
                let off = (r >> 16) % (BAR0_SIZE + 0x100);
                d.dev.write_bar(0, off, &value[..len]);
                d.dev.read_bar(0, off, &mut buf[..len]);
            }
            3 => {
                let off = (r >> 16) % 0x40;
                d.dev.write_bar(0, off, &value[..len]);
            }
            _ => {
                let irq = d.fake.lock().unwrap().interrupt.clone();
                if let Some(irq) = irq {
                    irq.signal_queue((r >> 16) as u16 % 4);
                    irq.signal_config();
                }
                d.dev.write_bar(7, r, &value[..len]);
                d.dev.read_bar(0, u64::MAX - (r % 8), &mut buf[..len]);
            }
        }
    }
}
