//! virtio devices on the PCI bus. Each device sits behind the virtio-pci transport
//! (`fv_virtio::transport`), gets a KVM MSI route and an irqfd per MSI-X vector, an
//! ioeventfd per queue (registered by the PCI root when it maps BAR0), and an event-loop
//! thread of its own, started here at build time so that no thread is ever spawned later
//! from a seccomp-restricted vCPU thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use fv_virtio::transport::{MsiRouter, TransportError, VirtioPciDevice};
use fv_virtio::VirtioDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::lock;
use crate::devices::pci::{PciError, PciRoot};
use crate::memory::GuestMemoryMmap;
use crate::seccomp::{self, ThreadKind};
use crate::vstate::irq::IrqRouting;
use crate::vstate::vm::VmError;

#[derive(Debug, thiserror::Error)]
pub enum VirtioSetupError {
    #[error("cannot set up the interrupts of virtio device {name}")]
    Interrupts {
        name: String,
        #[source]
        source: VmError,
    },
    #[error("cannot create an irqfd for virtio device {name}")]
    Irqfd {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("virtio device {name}")]
    Transport {
        name: String,
        #[source]
        source: TransportError,
    },
    #[error("cannot put virtio device {name} on the PCI bus")]
    Pci {
        name: String,
        #[source]
        source: PciError,
    },
    #[error("cannot start the event loop of virtio device {name}: {why}")]
    EventLoop { name: String, why: String },
}

struct Vector {
    gsi: u32,
    irqfd: EventFd,
}

/// One function's MSI-X vectors as KVM routes: a GSI and an irqfd each.
pub struct KvmMsiRouter {
    name: String,
    routing: Arc<IrqRouting>,
    vectors: Vec<Vector>,
    warned: AtomicBool,
}

impl KvmMsiRouter {
    pub fn new(name: &str, routing: Arc<IrqRouting>, count: u16) -> Result<Self, VirtioSetupError> {
        let vm_err = |source| VirtioSetupError::Interrupts {
            name: name.to_string(),
            source,
        };
        let mut vectors = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let gsi = routing.allocate_gsi().map_err(vm_err)?;
            let irqfd = EventFd::new(EFD_NONBLOCK).map_err(|source| VirtioSetupError::Irqfd {
                name: name.to_string(),
                source,
            })?;
            routing.vm().register_irqfd(&irqfd, gsi).map_err(vm_err)?;
            vectors.push(Vector { gsi, irqfd });
        }
        Ok(KvmMsiRouter {
            name: name.to_string(),
            routing,
            vectors,
            warned: AtomicBool::new(false),
        })
    }
}

impl MsiRouter for KvmMsiRouter {
    fn update(&self, vector: u16, addr: u64, data: u32, masked: bool) {
        // A masked vector never fires (the transport holds its messages back), so its route
        // can wait until it is unmasked.
        let Some(v) = self.vectors.get(usize::from(vector)).filter(|_| !masked) else {
            return;
        };
        if let Err(e) = self.routing.set_msi(v.gsi, addr, data) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "fv-vmm: warning: virtio device {}: cannot route MSI-X vector {vector}: {e}",
                    self.name
                );
            }
        }
    }

    fn trigger(&self, vector: u16) {
        if let Some(v) = self.vectors.get(usize::from(vector)) {
            // A full counter (2^64 - 2 pending) still leaves the interrupt asserted.
            let _ = v.irqfd.write(1);
        }
    }
}

/// The name `GET /vm` gives a virtio device type.
fn kind_of(device_type: u32) -> &'static str {
    use virtio_bindings::virtio_ids::*;
    match device_type {
        VIRTIO_ID_NET => "virtio-net",
        VIRTIO_ID_BLOCK => "virtio-blk",
        VIRTIO_ID_CONSOLE => "virtio-console",
        VIRTIO_ID_RNG => "virtio-rng",
        VIRTIO_ID_BALLOON => "virtio-balloon",
        VIRTIO_ID_VSOCK => "virtio-vsock",
        _ => "virtio",
    }
}

/// The device as the event manager's subscriber (a poisoned lock is still usable).
struct DeviceLoop(Arc<Mutex<dyn VirtioDevice>>);

impl MutEventSubscriber for DeviceLoop {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        lock(&self.0).process(events, ops);
    }
    fn init(&mut self, ops: &mut EventOps) {
        lock(&self.0).init(ops);
    }
}

/// A virtio device on the PCI bus and its event-loop thread.
pub struct VirtioPciHandle {
    pub name: String,
    /// `virtio-blk`, `virtio-rng`, ...
    pub kind: &'static str,
    /// Device number on bus 0.
    pub slot: u8,
    pub thread: JoinHandle<()>,
    /// A NIC's tap (the kernel's name for a created one) and MAC.
    pub net: Option<(String, crate::config::MacAddr)>,
    /// A disk's image path and whether it is read-only.
    pub disk: Option<(std::path::PathBuf, bool)>,
}

/// Plugs `device` into the PCI bus behind the virtio-pci transport and starts its event
/// loop on a thread named `fv-virtio-<name>`, which installs the Device seccomp filter
/// before it runs the loop.
pub fn attach_virtio_pci(
    name: &str,
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: &GuestMemoryMmap,
    routing: &Arc<IrqRouting>,
    pci: &Mutex<PciRoot>,
    seccomp_on: bool,
) -> Result<VirtioPciHandle, VirtioSetupError> {
    let (queues, kind) = {
        let d = lock(&device);
        (d.queue_max_sizes().len(), kind_of(d.device_type()))
    };
    // A config vector plus one per queue; the transport refuses more than 255 queues.
    let vectors = u16::try_from(queues + 1).unwrap_or(u16::MAX);
    let router = Arc::new(KvmMsiRouter::new(name, routing.clone(), vectors)?);
    let transport =
        VirtioPciDevice::new(device.clone(), mem.clone(), router).map_err(|source| {
            VirtioSetupError::Transport {
                name: name.to_string(),
                source,
            }
        })?;
    let slot = lock(pci)
        .add(Arc::new(Mutex::new(transport)))
        .map_err(|source| VirtioSetupError::Pci {
            name: name.to_string(),
            source,
        })?;

    let loop_err = |why: String| VirtioSetupError::EventLoop {
        name: name.to_string(),
        why,
    };
    // The event loop is built here, so its errors fail the build rather than a thread.
    let mut manager: EventManager<DeviceLoop> =
        EventManager::new().map_err(|e| loop_err(format!("{e:?}")))?;
    manager.add_subscriber(DeviceLoop(device));
    let thread_name = format!("fv-virtio-{name}");
    let label = name.to_string();
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || run_device_loop(&label, manager, seccomp_on))
        .map_err(|e| loop_err(e.to_string()))?;
    Ok(VirtioPciHandle {
        name: name.to_string(),
        kind,
        slot,
        thread,
        net: None,
        disk: None,
    })
}

fn run_device_loop(name: &str, mut manager: EventManager<DeviceLoop>, seccomp_on: bool) {
    if let Err(e) = seccomp::install(ThreadKind::Device, seccomp_on) {
        // Without its filter the thread must not serve the guest: the device stays silent
        // (its requests are never answered) and the rest of the VM goes on.
        eprintln!("fv-vmm: virtio device {name} stopped: {e}");
        return;
    }
    loop {
        if let Err(e) = manager.run() {
            eprintln!("fv-vmm: virtio device {name}: event loop failed: {e:?}");
            return;
        }
    }
}
