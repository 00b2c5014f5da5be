//! The virtio 1.x ("modern") PCI transport: a [`VirtioDevice`] presented as a PCI function.
//!
//! Configuration space: vendor 0x1af4, device 0x1040 + the virtio device type, revision 1
//! (modern only), a class code per device type, interrupt pin 0 (no INTx: MSI-X only), one
//! 64-bit memory BAR (BAR0) and this capability list:
//!
//! ```text
//! virtio common cfg   BAR0 + 0x0000   the feature/status/queue registers
//! virtio ISR          BAR0 + 0x1000   one byte, cleared on read
//! virtio device cfg   BAR0 + 0x2000   forwarded to VirtioDevice::read_config/write_config
//! virtio notify       BAR0 + 0x3000   queue q at + 4 * q (notify_off_multiplier 4)
//! virtio PCI cfg      (window into BAR0 through configuration space, as the spec requires)
//! MSI-X               table BAR0 + 0x4000, PBA BAR0 + 0x5000; queues + 1 vectors
//! ```
//!
//! The driver's values are all checked: wrong offsets or access widths read as zero and
//! write nothing, a queue_select past the last queue reads its fields as zero and ignores
//! writes, queue sizes that are zero, not powers of two or above the maximum are refused,
//! and queues are validated against guest memory before the device sees them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_ADMIN_VQ, VIRTIO_F_NOTIFICATION_DATA, VIRTIO_F_NOTIF_CONFIG_DATA,
    VIRTIO_F_RING_PACKED, VIRTIO_F_RING_RESET, VIRTIO_F_SR_IOV, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ids;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::msix::{MsiRouter, Msix, MAX_VECTORS};
use super::pci::{
    BarSpec, IoEvent, PciConfigError, PciConfigSpace, PciFunction, PciIds, CAP_ID_MSIX,
    CAP_ID_VENDOR,
};
use crate::device::{ActivateError, Interrupt, VirtioDevice};
use crate::GuestMemoryMmap;

pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + the virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// The subsystem ID QEMU gives modern virtio functions; Linux does not look at it.
pub const VIRTIO_PCI_SUBSYSTEM_ID: u16 = 0x1100;
/// "No MSI-X vector" in the common configuration's vector registers.
pub const NO_VECTOR: u16 = 0xffff;

pub const BAR0_SIZE: u64 = 0x8000;
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// `struct virtio_pci_common_cfg` up to `queue_device` (no notify data, no queue reset).
pub const COMMON_CFG_SIZE: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const ISR_SIZE: u64 = 1;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const DEVICE_CFG_SIZE: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_SIZE: u64 = 0x1000;
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// The table has room for 256 vectors: a config vector and 255 queues.
pub const MAX_QUEUES: usize = 255;

/// `cfg_type` of the virtio vendor capabilities.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

/// ISR bits: a used buffer (queue interrupt), a configuration change.
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// Transport features we cannot honour, whatever a device offers.
const UNSUPPORTED_FEATURES: u64 = (1 << VIRTIO_F_RING_PACKED)
    | (1 << VIRTIO_F_SR_IOV)
    | (1 << VIRTIO_F_NOTIFICATION_DATA)
    | (1 << VIRTIO_F_NOTIF_CONFIG_DATA)
    | (1 << VIRTIO_F_RING_RESET)
    | (1 << VIRTIO_F_ADMIN_VQ);

// Common configuration register offsets.
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
/// End of the three 64-bit queue address registers.
const QUEUE_ADDR_END: u64 = QUEUE_DEVICE + 8;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("virtio device type {0} has no modern PCI device ID")]
    DeviceType(u32),
    #[error("a virtio-pci device has 1 to {MAX_QUEUES} queues, not {0}")]
    QueueCount(usize),
    #[error("queue {index} has maximum size {size}; it must be a power of two from 1 to 32768")]
    QueueMaxSize { index: usize, size: u16 },
    #[error("cannot create the notification eventfd of queue {0}")]
    EventFd(usize, #[source] std::io::Error),
    #[error("cannot lay out the PCI configuration space")]
    Config(#[from] PciConfigError),
}

/// A poisoned lock still guards consistent state here (state changes only after checks).
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The PCI class code Linux and `lspci` expect for each device type (QEMU's choices).
fn class_code(device_type: u32) -> (u8, u8, u8) {
    match device_type {
        virtio_ids::VIRTIO_ID_NET => (0x02, 0x00, 0x00),
        virtio_ids::VIRTIO_ID_BLOCK => (0x01, 0x00, 0x00),
        virtio_ids::VIRTIO_ID_CONSOLE | virtio_ids::VIRTIO_ID_VSOCK => (0x07, 0x80, 0x00),
        _ => (0xff, 0x00, 0x00),
    }
}

/// Interrupt state shared by the transport (vCPU threads) and the device (its own thread).
struct IrqState {
    msix: Msix,
    config_vector: u16,
    queue_vectors: Vec<u16>,
}

struct Shared {
    irq: Mutex<IrqState>,
    isr: AtomicU8,
    config_generation: AtomicU8,
}

impl Shared {
    fn signal_config(&self) {
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        self.isr.fetch_or(ISR_CONFIG, Ordering::AcqRel);
        let mut irq = lock(&self.irq);
        let vector = irq.config_vector;
        irq.msix.signal(vector);
    }
}

/// The [`Interrupt`] a device gets at activation: queue position → the queue's index →
/// the MSI-X vector the driver chose for it.
struct PciInterrupt {
    shared: Arc<Shared>,
    /// Index of each activated queue, in the order the device received them.
    queues: Vec<u16>,
}

impl Interrupt for PciInterrupt {
    fn signal_queue(&self, queue: u16) {
        let Some(&index) = self.queues.get(usize::from(queue)) else {
            return;
        };
        self.shared.isr.fetch_or(ISR_QUEUE, Ordering::AcqRel);
        let mut irq = lock(&self.shared.irq);
        let vector = irq
            .queue_vectors
            .get(usize::from(index))
            .copied()
            .unwrap_or(NO_VECTOR);
        irq.msix.signal(vector);
    }

    fn signal_config(&self) {
        self.shared.signal_config();
    }
}

/// What activation hands the device: its queues, their eventfds, and each one's index.
type ActiveQueues = (Vec<Queue>, Vec<EventFd>, Vec<u16>);

/// One queue's registers as the driver set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QueueRegs {
    size: u16,
    enabled: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueRegs {
    fn new(max: u16) -> Self {
        QueueRegs {
            size: max,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// A virtio device behind the modern virtio-pci transport.
pub struct VirtioPciDevice {
    config: PciConfigSpace,
    msix_cap: usize,
    pci_cfg_cap: usize,
    device: Arc<Mutex<dyn VirtioDevice>>,
    queue_max: Vec<u16>,
    avail_features: u64,
    mem: GuestMemoryMmap,
    shared: Arc<Shared>,
    queue_events: Vec<EventFd>,
    device_feature_select: u32,
    driver_feature_select: u32,
    acked_features: u64,
    status: u8,
    queue_select: u16,
    queues: Vec<QueueRegs>,
}

/// Bytes of a virtio vendor capability after its ID and next pointer.
fn virtio_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    // cap_len counts the ID and next bytes too.
    let cap_len = 16 + extra.len() as u8;
    let mut body = vec![cap_len, cfg_type, 0 /* bar */, 0 /* id */, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

impl VirtioPciDevice {
    /// Wraps `device`. Its queues are checked here, so a bad device model fails at build
    /// time rather than when a guest looks at it.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        router: Arc<dyn MsiRouter>,
    ) -> Result<Self, TransportError> {
        let (device_type, queue_max, avail_features) = {
            let d = lock(&device);
            (
                d.device_type(),
                d.queue_max_sizes().to_vec(),
                d.avail_features() & !UNSUPPORTED_FEATURES,
            )
        };
        let device_id = u16::try_from(device_type)
            .ok()
            .filter(|t| *t < 0x40)
            .map(|t| VIRTIO_PCI_DEVICE_ID_BASE + t)
            .ok_or(TransportError::DeviceType(device_type))?;
        if queue_max.is_empty() || queue_max.len() > MAX_QUEUES {
            return Err(TransportError::QueueCount(queue_max.len()));
        }
        if let Some((index, &size)) = queue_max
            .iter()
            .enumerate()
            .find(|(_, s)| !s.is_power_of_two())
        {
            return Err(TransportError::QueueMaxSize { index, size });
        }
        let queue_events = (0..queue_max.len())
            .map(|i| EventFd::new(EFD_NONBLOCK).map_err(|e| TransportError::EventFd(i, e)))
            .collect::<Result<Vec<_>, _>>()?;

        let mut config = PciConfigSpace::new(PciIds {
            vendor: VIRTIO_PCI_VENDOR_ID,
            device: device_id,
            subsystem_vendor: VIRTIO_PCI_VENDOR_ID,
            subsystem: VIRTIO_PCI_SUBSYSTEM_ID,
            revision: 1,
            class: class_code(device_type),
        });
        config.add_bar(BarSpec {
            index: 0,
            size: BAR0_SIZE,
            is_64bit: true,
            prefetchable: false,
        })?;
        config.add_capability(
            CAP_ID_VENDOR,
            &virtio_cap(
                VIRTIO_PCI_CAP_COMMON_CFG,
                COMMON_CFG_OFFSET,
                COMMON_CFG_SIZE,
                &[],
            ),
        )?;
        config.add_capability(
            CAP_ID_VENDOR,
            &virtio_cap(VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, ISR_SIZE, &[]),
        )?;
        config.add_capability(
            CAP_ID_VENDOR,
            &virtio_cap(
                VIRTIO_PCI_CAP_DEVICE_CFG,
                DEVICE_CFG_OFFSET,
                DEVICE_CFG_SIZE,
                &[],
            ),
        )?;
        config.add_capability(
            CAP_ID_VENDOR,
            &virtio_cap(
                VIRTIO_PCI_CAP_NOTIFY_CFG,
                NOTIFY_OFFSET,
                NOTIFY_SIZE,
                &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
            ),
        )?;
        // The PCI configuration access capability: bar, offset, length and data are the
        // driver's to write.
        let pci_cfg_cap = config.add_capability(
            CAP_ID_VENDOR,
            &virtio_cap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0, &[0; 4]),
        )?;
        config.set_writable(pci_cfg_cap + 4, &[0xff]);
        config.set_writable(pci_cfg_cap + 8, &[0xff; 12]);

        // One vector per queue plus the configuration vector; at most 256 (checked above).
        let vectors = queue_max.len() as u16 + 1;
        debug_assert!(vectors <= MAX_VECTORS);
        let mut msix_body = Vec::with_capacity(10);
        msix_body.extend_from_slice(&(vectors - 1).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        let msix_cap = config.add_capability(CAP_ID_MSIX, &msix_body)?;
        // Enable and function mask are the only writable bits of message control.
        config.set_writable(msix_cap + 2, &[0x00, 0xc0]);

        let shared = Arc::new(Shared {
            irq: Mutex::new(IrqState {
                msix: Msix::new(vectors, router),
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; queue_max.len()],
            }),
            isr: AtomicU8::new(0),
            config_generation: AtomicU8::new(0),
        });
        config.save_power_on_state();
        Ok(VirtioPciDevice {
            config,
            msix_cap,
            pci_cfg_cap,
            device,
            queues: queue_max.iter().map(|m| QueueRegs::new(*m)).collect(),
            queue_max,
            avail_features,
            mem,
            shared,
            queue_events,
            device_feature_select: 0,
            driver_feature_select: 0,
            acked_features: 0,
            status: 0,
            queue_select: 0,
        })
    }

    /// The queue notification eventfds, in queue order (the VMM registers them as
    /// ioeventfds on the notify addresses; see [`PciFunction::ioevents`]).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    fn driver_ok(&self) -> bool {
        u32::from(self.status) & VIRTIO_CONFIG_S_DRIVER_OK != 0
    }

    fn features_ok(&self) -> bool {
        u32::from(self.status) & VIRTIO_CONFIG_S_FEATURES_OK != 0
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// Virtio reset (the driver wrote 0 to device_status).
    fn reset_device(&mut self) {
        lock(&self.device).reset();
        self.status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.acked_features = 0;
        self.queue_select = 0;
        for (q, max) in self.queues.iter_mut().zip(&self.queue_max) {
            *q = QueueRegs::new(*max);
        }
        self.shared.isr.store(0, Ordering::Release);
        let mut irq = lock(&self.shared.irq);
        irq.config_vector = NO_VECTOR;
        irq.queue_vectors.fill(NO_VECTOR);
        for e in &self.queue_events {
            // Drop notifications that arrived before the reset; EAGAIN when there were none.
            let _ = e.read();
        }
    }

    /// A vector the driver asked for, or NO_VECTOR if the table has no such entry.
    fn checked_vector(irq: &IrqState, vector: u16) -> u16 {
        if vector < irq.msix.vectors() {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn read_common(&self, offset: u64, data: &mut [u8]) {
        let q = self.selected();
        // Asked before taking the interrupt lock: the device thread takes the device lock
        // first, then the interrupt lock (to signal), so never the other way round here.
        let needs_reset =
            offset == DEVICE_STATUS && self.driver_ok() && lock(&self.device).needs_reset();
        let irq = lock(&self.shared.irq);
        let value: u64 = match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => self.device_feature_select.into(),
            (DEVICE_FEATURE, 4) => match self.device_feature_select {
                0 => self.avail_features & 0xffff_ffff,
                1 => self.avail_features >> 32,
                _ => 0,
            },
            (DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select.into(),
            (DRIVER_FEATURE, 4) => match self.driver_feature_select {
                0 => self.acked_features & 0xffff_ffff,
                1 => self.acked_features >> 32,
                _ => 0,
            },
            (CONFIG_MSIX_VECTOR, 2) => irq.config_vector.into(),
            (NUM_QUEUES, 2) => self.queues.len() as u64,
            (DEVICE_STATUS, 1) if needs_reset => {
                u64::from(self.status) | u64::from(VIRTIO_CONFIG_S_NEEDS_RESET)
            }
            (DEVICE_STATUS, 1) => self.status.into(),
            (CONFIG_GENERATION, 1) => self.shared.config_generation.load(Ordering::Acquire).into(),
            (QUEUE_SELECT, 2) => self.queue_select.into(),
            (QUEUE_SIZE, 2) => q.map_or(0, |q| q.size.into()),
            (QUEUE_MSIX_VECTOR, 2) => q.map_or(0, |_| {
                irq.queue_vectors[usize::from(self.queue_select)].into()
            }),
            (QUEUE_ENABLE, 2) => q.map_or(0, |q| q.enabled.into()),
            (QUEUE_NOTIFY_OFF, 2) => q.map_or(0, |_| self.queue_select.into()),
            (QUEUE_DESC..QUEUE_ADDR_END, 4 | 8) if offset.is_multiple_of(data.len() as u64) => q
                .map_or(0, |q| {
                    let field = match offset & !7 {
                        QUEUE_DESC => q.desc,
                        QUEUE_DRIVER => q.driver,
                        _ => q.device,
                    };
                    if data.len() == 8 {
                        field
                    } else if offset.is_multiple_of(8) {
                        field & 0xffff_ffff
                    } else {
                        field >> 32
                    }
                }),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(bytes);
        let (v16, v32) = (value as u16, value as u32);
        let sel = usize::from(self.queue_select);
        // Queue registers are frozen once the queue is enabled or the device is running.
        let queue_writable = !self.driver_ok() && self.queues.get(sel).is_some_and(|q| !q.enabled);
        match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = v32,
            (DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = v32,
            (DRIVER_FEATURE, 4) if !self.features_ok() && !self.driver_ok() => {
                // Features the device did not offer cannot be accepted.
                match self.driver_feature_select {
                    0 => {
                        self.acked_features = (self.acked_features & !0xffff_ffff)
                            | (u64::from(v32) & self.avail_features);
                    }
                    1 => {
                        self.acked_features = (self.acked_features & 0xffff_ffff)
                            | ((u64::from(v32) << 32) & self.avail_features);
                    }
                    _ => {}
                }
            }
            (CONFIG_MSIX_VECTOR, 2) => {
                let mut irq = lock(&self.shared.irq);
                irq.config_vector = Self::checked_vector(&irq, v16);
            }
            (DEVICE_STATUS, 1) => self.set_status(value as u8),
            (QUEUE_SELECT, 2) => self.queue_select = v16,
            (QUEUE_SIZE, 2) if queue_writable => {
                let max = self.queue_max[sel];
                if v16.is_power_of_two() && v16 <= max {
                    self.queues[sel].size = v16;
                }
            }
            (QUEUE_MSIX_VECTOR, 2) if sel < self.queues.len() => {
                let mut irq = lock(&self.shared.irq);
                irq.queue_vectors[sel] = Self::checked_vector(&irq, v16);
            }
            // Only 1 may be written; a queue is disabled again by a device reset.
            (QUEUE_ENABLE, 2) if queue_writable && v16 == 1 => self.queues[sel].enabled = true,
            (QUEUE_DESC..QUEUE_ADDR_END, 4 | 8)
                if queue_writable && offset.is_multiple_of(data.len() as u64) =>
            {
                let q = &mut self.queues[sel];
                let field = match offset & !7 {
                    QUEUE_DESC => &mut q.desc,
                    QUEUE_DRIVER => &mut q.driver,
                    _ => &mut q.device,
                };
                *field = if data.len() == 8 {
                    value
                } else if offset.is_multiple_of(8) {
                    (*field & !0xffff_ffff) | u64::from(v32)
                } else {
                    (*field & 0xffff_ffff) | (u64::from(v32) << 32)
                };
            }
            _ => {}
        }
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset_device();
            return;
        }
        let old = u32::from(self.status);
        // The driver only ever adds bits; clearing them takes a reset.
        let mut new = old | u32::from(value);
        let mut failed = false;
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && old & VIRTIO_CONFIG_S_FEATURES_OK == 0
            && self.acked_features & (1 << VIRTIO_F_VERSION_1) == 0
        {
            // Legacy drivers do not get a modern-only device.
            new &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 && old & VIRTIO_CONFIG_S_DRIVER_OK == 0 {
            if new & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                failed = true;
            } else if let Err(_e) = self.activate() {
                failed = true;
            }
        }
        if failed {
            new |= VIRTIO_CONFIG_S_NEEDS_RESET;
        }
        // Status bits fit in a byte (they came from one).
        self.status = new as u8;
        if failed {
            self.shared.signal_config();
        }
    }

    /// The queues as the device will see them, checked against guest memory.
    fn build_queues(&self) -> Result<ActiveQueues, ActivateError> {
        let mut queues = Vec::new();
        let mut events = Vec::new();
        let mut indexes = Vec::new();
        let event_idx = self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        for (i, regs) in self.queues.iter().enumerate().filter(|(_, q)| q.enabled) {
            let invalid = |_| ActivateError::InvalidQueue(i);
            let mut q = Queue::new(self.queue_max[i]).map_err(invalid)?;
            q.try_set_size(regs.size).map_err(invalid)?;
            q.try_set_desc_table_address(GuestAddress(regs.desc))
                .map_err(invalid)?;
            q.try_set_avail_ring_address(GuestAddress(regs.driver))
                .map_err(invalid)?;
            q.try_set_used_ring_address(GuestAddress(regs.device))
                .map_err(invalid)?;
            q.set_event_idx(event_idx);
            q.set_ready(true);
            if !q.is_valid(&self.mem) {
                return Err(ActivateError::InvalidQueue(i));
            }
            let event = self.queue_events[i].try_clone().map_err(|e| {
                ActivateError::Backend(format!("cannot clone queue {i}'s eventfd: {e}"))
            })?;
            queues.push(q);
            events.push(event);
            // At most MAX_QUEUES (255) queues.
            indexes.push(i as u16);
        }
        Ok((queues, events, indexes))
    }

    fn activate(&mut self) -> Result<(), ActivateError> {
        let (queues, events, indexes) = self.build_queues()?;
        let interrupt = Arc::new(PciInterrupt {
            shared: self.shared.clone(),
            queues: indexes,
        });
        lock(&self.device).activate(
            self.mem.clone(),
            interrupt,
            queues,
            events,
            self.acked_features,
        )
    }

    /// The MSI-X message control word changed (or may have): tell the table.
    fn sync_msix_control(&mut self) {
        let b = self.config.bytes(self.msix_cap + 2, 2);
        let control = u16::from_le_bytes([b[0], b[1]]);
        lock(&self.shared.irq).msix.set_control(control);
    }

    /// The PCI configuration access capability's window: (offset in BAR0, length), if the
    /// driver set up a valid one.
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let cap = self.pci_cfg_cap;
        let bar = self.config.bytes(cap + 4, 1)[0];
        let b = self.config.bytes(cap + 8, 8);
        let offset = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let length = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        (bar == 0
            && matches!(length, 1 | 2 | 4)
            && offset % length as u64 == 0
            && offset + length as u64 <= BAR0_SIZE)
            .then_some((offset, length))
    }

    /// Whether a config access at `offset` hits the PCI cfg capability's data field.
    fn is_pci_cfg_data(&self, offset: u16, len: usize) -> bool {
        let data = self.pci_cfg_cap + 16;
        let off = usize::from(offset);
        super::pci::valid_config_access(offset, len) && off >= data && off + len <= data + 4
    }
}

impl PciFunction for VirtioPciDevice {
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }

    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        if self.is_pci_cfg_data(offset, data.len()) {
            let mut window = [0u8; 4];
            if let Some((bar_offset, length)) = self.pci_cfg_window() {
                self.read_bar(0, bar_offset, &mut window[..length]);
            }
            let data_field = self.pci_cfg_cap + 16;
            self.config.set_bytes(data_field, &window);
        }
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        if self.is_pci_cfg_data(offset, data.len()) {
            if let Some((bar_offset, length)) = self.pci_cfg_window() {
                let bytes = self.config.bytes(self.pci_cfg_cap + 16, 4).to_vec();
                self.write_bar(0, bar_offset, &bytes[..length]);
            }
        }
        let control = self.msix_cap + 2;
        let (start, end) = (usize::from(offset), usize::from(offset) + data.len());
        if start < control + 2 && end > control {
            self.sync_msix_control();
        }
    }

    fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar != 0 || !matches!(data.len(), 1 | 2 | 4 | 8) {
            data.fill(0);
            return;
        }
        let len = data.len() as u64;
        match offset {
            o if o < COMMON_CFG_OFFSET + COMMON_CFG_SIZE => self.read_common(o, data),
            o if (ISR_OFFSET..ISR_OFFSET + ISR_SIZE).contains(&o) => {
                // Reading the ISR clears it (used only with INTx; harmless with MSI-X).
                data.fill(0);
                data[0] = self.shared.isr.swap(0, Ordering::AcqRel);
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_SIZE).contains(&o)
                && o + len <= DEVICE_CFG_OFFSET + DEVICE_CFG_SIZE =>
            {
                lock(&self.device).read_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                lock(&self.shared.irq)
                    .msix
                    .read_table(o - MSIX_TABLE_OFFSET, data);
            }
            o if (MSIX_PBA_OFFSET..BAR0_SIZE).contains(&o) => {
                lock(&self.shared.irq)
                    .msix
                    .read_pba(o - MSIX_PBA_OFFSET, data);
            }
            // Notify reads, gaps, and anything past the end read as zero.
            _ => data.fill(0),
        }
    }

    fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar != 0 || !matches!(data.len(), 1 | 2 | 4 | 8) {
            return;
        }
        let len = data.len() as u64;
        match offset {
            o if o < COMMON_CFG_OFFSET + COMMON_CFG_SIZE => self.write_common(o, data),
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_SIZE).contains(&o)
                && o + len <= DEVICE_CFG_OFFSET + DEVICE_CFG_SIZE =>
            {
                lock(&self.device).write_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + NOTIFY_SIZE).contains(&o) => {
                // Normally KVM's ioeventfd takes these; this is the path without one.
                let rel = o - NOTIFY_OFFSET;
                if rel.is_multiple_of(u64::from(NOTIFY_OFF_MULTIPLIER)) {
                    let q = (rel / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
                    if let Some(e) = self.queue_events.get(q) {
                        // A full counter still wakes the device; nothing is lost.
                        let _ = e.write(1);
                    }
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                lock(&self.shared.irq)
                    .msix
                    .write_table(o - MSIX_TABLE_OFFSET, data);
            }
            // The ISR and PBA are read-only.
            _ => {}
        }
    }

    fn ioevents(&self) -> Vec<IoEvent<'_>> {
        self.queue_events
            .iter()
            .enumerate()
            .map(|(q, fd)| IoEvent {
                bar: 0,
                offset: NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
                fd,
            })
            .collect()
    }

    fn reset(&mut self) {
        self.reset_device();
        self.config.reset();
        lock(&self.shared.irq).msix.reset();
        self.sync_msix_control();
    }
}

#[cfg(test)]
mod tests;
