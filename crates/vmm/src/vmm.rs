//! The running VM: starts the vCPU and API threads, then serves the main event loop
//! (serial input, API requests, VM exits) until the VM ends.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::{self, ActionError, ApiRequest, DeviceInfo, VmInfo, VmState, VmmAction, VmmData};
use crate::config::VmConfig;
use crate::devices::acpi_ged::{AcpiGed, GED_PCI_HOTPLUG, GED_POWER_BUTTON};
use crate::devices::bus::lock;
use crate::devices::pci::PciRoot;
use crate::devices::pci_hotplug::PciHotplug;
use crate::devices::serial::{InputSource, SerialDevice, SerialInput};
use crate::devices::services::GuestServices;
use crate::devices::virtio::{DiskHandle, VirtioPciHandle};
use crate::devices::Bus;
use crate::exit::{ExitEvent, VmExit};
use crate::loader;
use crate::memory::GuestMemoryMmap;
use crate::metrics::ExitCounters;
use crate::seccomp::{self, ThreadKind};
use crate::vstate::irq::IrqRouting;
use crate::vstate::vcpu::{install_kick_handler, Vcpu, VcpuContext, VcpuControl};
use crate::vstate::vm::{discard_guest_memory, Vm};
use crate::vstate::KvmContext;

/// The devices the main loop and the vCPUs share.
pub struct Devices {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub serial_input: InputSource,
    /// PCI bus 0: the host bridge and the virtio devices.
    pub pci: Arc<Mutex<PciRoot>>,
    /// Tells the guest which slots a device was plugged into.
    pub pci_hotplug: Arc<Mutex<PciHotplug>>,
    /// MSI routing, for devices plugged while the VM runs.
    pub routing: Arc<IrqRouting>,
    /// The virtio devices' event-loop threads (they run until the process exits).
    pub virtio: Vec<VirtioPciHandle>,
    /// Console, vsock and balloon: the balloon to steer, the sockets to remove at exit.
    pub services: GuestServices,
    /// The ACPI Generic Event Device: the power button.
    pub ged: Arc<Mutex<AcpiGed>>,
}

pub struct Vmm {
    config: VmConfig,
    mem: GuestMemoryMmap,
    // Kept open for the life of the VM: the VM and vCPU fds hang off it.
    _kvm: KvmContext,
    vm: Arc<Vm>,
    vcpus: Vec<Vcpu>,
    devices: Devices,
    exit: Arc<ExitEvent>,
    api: Option<UnixListener>,
}

impl Vmm {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: VmConfig,
        mem: GuestMemoryMmap,
        kvm: KvmContext,
        vm: Arc<Vm>,
        vcpus: Vec<Vcpu>,
        devices: Devices,
        exit: Arc<ExitEvent>,
        api: Option<UnixListener>,
    ) -> Self {
        Vmm {
            config,
            mem,
            _kvm: kvm,
            vm,
            vcpus,
            devices,
            exit,
            api,
        }
    }

    /// Runs the VM until it ends; returns why.
    pub fn run(self) -> VmExit {
        match self.run_inner() {
            Ok(exit) => exit,
            Err(e) => VmExit::VmmError(e),
        }
    }

    fn run_inner(self) -> Result<VmExit, String> {
        let Vmm {
            config,
            mem,
            _kvm,
            vm,
            vcpus,
            devices,
            exit,
            api,
        } = self;
        let seccomp_on = config.seccomp;
        let counters = Arc::new(ExitCounters::default());
        let start_paused = config.paused;
        let control = Arc::new(VcpuControl::starting(start_paused));

        let (api_tx, api_rx) = channel();
        let api_wake =
            Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|e| format!("API eventfd: {e}"))?);
        let _api_thread = match api {
            Some(listener) => Some(
                api::start_api_server(
                    listener,
                    api_tx,
                    api_wake.clone(),
                    Box::new(move || seccomp::install(ThreadKind::Api, seccomp_on)),
                )
                .map_err(|e| format!("cannot start the API thread: {e}"))?,
            ),
            None => None,
        };

        install_kick_handler().map_err(|e| e.to_string())?;
        let ctx = VcpuContext {
            pio: devices.pio.clone(),
            mmio: devices.mmio.clone(),
            exit: exit.clone(),
            counters: counters.clone(),
            control: control.clone(),
        };
        let vcpu_threads = vcpus
            .into_iter()
            .map(|v| {
                v.start(
                    ctx.clone(),
                    Box::new(move || seccomp::install(ThreadKind::Vcpu, seccomp_on)),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;

        let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
            EventManager::new().map_err(|e| format!("cannot create the event loop: {e:?}"))?;
        let input = SerialInput::new(devices.serial.clone(), devices.serial_input)
            .map_err(|e| format!("serial input: {e}"))?;
        manager.add_subscriber(Arc::new(Mutex::new(input)));
        let controller = Arc::new(Mutex::new(Controller {
            config,
            mem,
            vm,
            serial: devices.serial,
            pci: devices.pci,
            pci_hotplug: devices.pci_hotplug,
            routing: devices.routing,
            virtio: devices.virtio,
            services: devices.services,
            ged: devices.ged,
            exit: exit.clone(),
            counters,
            control,
            vcpu_threads,
            api_rx,
            api_wake,
            started: Instant::now(),
            paused: start_paused,
        }));
        manager.add_subscriber(controller.clone());

        seccomp::install(ThreadKind::Main, seccomp_on)?;
        loop {
            if let Some(reason) = exit.reason() {
                lock(&controller).hold_disks_for_exit();
                return Ok(reason);
            }
            if let Err(e) = manager.run() {
                return Err(format!("event loop failed: {e:?}"));
            }
        }
    }
}

/// Longest the main loop waits for an API response to be written before going on.
const STOP_REPLY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves API requests and VM-exit notifications on the main thread.
struct Controller {
    config: VmConfig,
    mem: GuestMemoryMmap,
    vm: Arc<Vm>,
    serial: Arc<Mutex<SerialDevice>>,
    pci: Arc<Mutex<PciRoot>>,
    pci_hotplug: Arc<Mutex<PciHotplug>>,
    routing: Arc<IrqRouting>,
    virtio: Vec<VirtioPciHandle>,
    /// Dropped when the VM ends, removing the console and vsock sockets.
    services: GuestServices,
    ged: Arc<Mutex<AcpiGed>>,
    exit: Arc<ExitEvent>,
    counters: Arc<ExitCounters>,
    control: Arc<VcpuControl>,
    vcpu_threads: Vec<JoinHandle<()>>,
    api_rx: Receiver<ApiRequest>,
    api_wake: Arc<EventFd>,
    started: Instant,
    paused: bool,
}

impl Controller {
    fn handle(&mut self, action: VmmAction) -> Result<VmmData, ActionError> {
        match action {
            VmmAction::GetInfo => Ok(VmmData::Info(VmInfo {
                state: if self.paused {
                    VmState::Paused
                } else {
                    VmState::Running
                },
                vcpus: self.config.vcpus,
                memory_mib: self.config.memory_mib,
                uptime_ms: self.started.elapsed().as_millis() as u64,
                exits: self.counters.snapshot(),
                devices: self
                    .virtio
                    .iter()
                    .map(|d| DeviceInfo {
                        id: d.name.clone(),
                        kind: d.kind.to_string(),
                        pci: format!("0000:00:{:02x}.0", d.slot),
                        tap: d.net.as_ref().map(|(tap, _)| tap.clone()),
                        mac: d.net.as_ref().map(|(_, mac)| mac.to_string()),
                        path: d.disk.as_ref().map(|k| k.path.display().to_string()),
                        size: d.disk.as_ref().map(|k| lock(&k.device).capacity() * 512),
                        readonly: d.disk.as_ref().map(|k| k.readonly),
                        paused: d.disk.as_ref().map(|k| lock(&k.device).is_held()),
                        removing: d
                            .net
                            .as_ref()
                            .map(|_| lock(&self.pci_hotplug).is_removing(d.slot)),
                    })
                    .collect(),
            })),
            VmmAction::Pause if self.paused => {
                Err(ActionError::BadState("the VM is already paused"))
            }
            VmmAction::Pause => {
                self.control.pause_all(&self.vcpu_threads);
                self.paused = true;
                Ok(VmmData::Empty)
            }
            VmmAction::Resume if !self.paused => Err(ActionError::BadState("the VM is not paused")),
            VmmAction::Resume => {
                self.control.resume_all();
                self.paused = false;
                Ok(VmmData::Empty)
            }
            VmmAction::Stop => {
                // Stop the guest at once; the process exits once the reply is on its way.
                self.control.pause_all(&self.vcpu_threads);
                Ok(VmmData::Empty)
            }
            VmmAction::Reset => self.reset().map(|_| VmmData::Empty),
            VmmAction::GetBalloon => Ok(VmmData::Balloon(self.services.balloon()?.info())),
            VmmAction::SetBalloon { target_mib } => self
                .services
                .balloon()?
                .set_target_mib(target_mib)
                .map(|()| VmmData::Empty),
            VmmAction::DiskPause { id } => {
                let disk = self.disk(&id)?;
                lock(&disk.device).hold().map_err(|e| {
                    ActionError::Failed(format!("{id}: cannot flush {}: {e}", disk.path.display()))
                })?;
                Ok(VmmData::Empty)
            }
            VmmAction::DiskResume { id } => {
                lock(&self.disk(&id)?.device).release();
                Ok(VmmData::Empty)
            }
            VmmAction::DiskReopen { id, path, format } => {
                let disk = self.disk_mut(&id)?;
                let format = match (path.is_some(), format) {
                    (_, Some(f)) => Some(f.to_disk()),
                    (false, None) => disk.format,
                    (true, None) => None,
                };
                let path = path.unwrap_or_else(|| disk.path.clone());
                let mut device = lock(&disk.device);
                // Nothing may reach the old image once the new one is being opened.
                device.hold().map_err(|e| {
                    ActionError::Failed(format!("{id}: cannot flush {}: {e}", disk.path.display()))
                })?;
                // On failure the disk stays paused: the old image may now be a snapshot's
                // frozen data, which the guest must not write.
                let image = fv_disk::open_disk(&path, format, disk.readonly).map_err(|e| {
                    ActionError::Failed(format!(
                        "{id}: cannot open {} (the disk stays paused): {e}",
                        path.display()
                    ))
                })?;
                device.replace_disk(image).map_err(|e| {
                    ActionError::BadRequest(format!("{id}: {} (the disk stays paused)", e))
                })?;
                drop(device);
                disk.path = path;
                disk.format = format;
                Ok(VmmData::Empty)
            }
            VmmAction::AddNet(net) => self.add_net(&net).map(|()| VmmData::Empty),
            VmmAction::RemoveNet { id } => self.remove_net(&id).map(|()| VmmData::Empty),
            // A paused guest sees the press when it resumes (the interrupt stays pending).
            VmmAction::PowerButton => lock(&self.ged)
                .notify(GED_POWER_BUTTON)
                .map(|()| VmmData::Empty)
                .map_err(|e| ActionError::Failed(format!("cannot raise the ACPI event: {e}"))),
        }
    }

    /// Plugs a NIC into a free slot and tells the guest (ACPI hot-plug, see
    /// `devices::pci_hotplug`). Named `net<N>` after the NICs already there.
    fn add_net(&mut self, net: &crate::config::NetConfig) -> Result<(), ActionError> {
        let taken = |name: &str| self.virtio.iter().any(|d| d.name == name);
        let name = (0..)
            .map(|i| format!("net{i}"))
            .find(|n| !taken(n))
            .unwrap_or_default();
        let host = crate::devices::net::open_tap(net)
            .map_err(|e| ActionError::BadRequest(format!("{name}: {e}")))?;
        let handle = crate::builder::attach_nic(
            &name,
            net,
            host,
            &self.mem,
            &self.routing,
            &self.pci,
            self.config.seccomp,
        )
        .map_err(|e| ActionError::Failed(format!("{name}: {e}")))?;
        lock(&self.pci_hotplug).plugged(handle.slot);
        self.virtio.push(handle);
        lock(&self.ged)
            .notify(GED_PCI_HOTPLUG)
            .map_err(|e| ActionError::Failed(format!("cannot raise the ACPI event: {e}")))
    }

    /// Asks the guest to let go of NIC `id` (ACPI eject request); the NIC leaves the bus
    /// when the guest ejects it (`remove_ejected`), which `GET /vm` shows.
    fn remove_net(&mut self, id: &str) -> Result<(), ActionError> {
        let slot = self
            .virtio
            .iter()
            .find(|d| d.name == id && d.net.is_some())
            .map(|d| d.slot)
            .ok_or(ActionError::NoDevice("the VM has no NIC of that name"))?;
        if !lock(&self.pci_hotplug).request_removal(slot) {
            return Err(ActionError::BadState(
                "the NIC's removal was already asked for",
            ));
        }
        lock(&self.ged)
            .notify(GED_PCI_HOTPLUG)
            .map_err(|e| ActionError::Failed(format!("cannot raise the ACPI event: {e}")))
    }

    /// Takes the devices the guest ejected off the bus and ends their threads.
    fn remove_ejected(&mut self) {
        let ejected = {
            let mut hotplug = lock(&self.pci_hotplug);
            let _ = hotplug.ejected_event().read();
            hotplug.take_ejected()
        };
        for slot in (1..32u8).filter(|s| ejected & (1 << s) != 0) {
            let Some(at) = self.virtio.iter().position(|d| d.slot == slot) else {
                continue;
            };
            let handle = self.virtio.remove(at);
            lock(&self.pci).remove(slot);
            handle.stop();
        }
    }

    /// The VM ends, however it ends: every disk is held (nothing more reaches it) and
    /// flushed, so that what the guest wrote is in its image with the metadata that finds
    /// it. imago caches qcow2 metadata (L2 tables, refcounts); a guest that powered off
    /// without a flush left an image that pointed at clusters its refcounts called free.
    fn hold_disks_for_exit(&self) {
        for disk in self.virtio.iter().filter_map(|d| d.disk.as_ref()) {
            if let Err(e) = lock(&disk.device).hold() {
                eprintln!("fv-vmm: cannot flush {}: {e}", disk.path.display());
            }
        }
    }

    fn disk(&self, id: &str) -> Result<&DiskHandle, ActionError> {
        self.virtio
            .iter()
            .find(|d| d.name == id)
            .and_then(|d| d.disk.as_ref())
            .ok_or(ActionError::NoDevice("the VM has no disk of that name"))
    }

    fn disk_mut(&mut self, id: &str) -> Result<&mut DiskHandle, ActionError> {
        self.virtio
            .iter_mut()
            .find(|d| d.name == id)
            .and_then(|d| d.disk.as_mut())
            .ok_or(ActionError::NoDevice("the VM has no disk of that name"))
    }

    /// Hard reset in place: power-on memory, devices, interrupt controllers and vCPUs,
    /// then the kernel loaded afresh. A paused VM stays paused.
    fn reset(&mut self) -> Result<(), ActionError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ActionError::Failed(format!("reset failed ({what}): {e}"))
        };
        self.control.pause_all(&self.vcpu_threads);
        // Devices stop using guest memory before it is wiped; PCI goes back to the
        // firmware's BAR placement, every MSI-X vector masked.
        lock(&self.pci).reset();
        lock(&self.ged).reset();
        lock(&self.pci_hotplug).reset();
        discard_guest_memory(&self.mem).map_err(|e| failed("guest memory", &e))?;
        loader::load_guest(&self.mem, &self.config).map_err(|e| failed("guest image", &e))?;
        lock(&self.serial)
            .reset()
            .map_err(|e| failed("serial port", &e))?;

        self.vm
            .reset_irq_state()
            .map_err(|e| failed("interrupt controllers", &e))?;
        self.counters.reset();
        self.started = Instant::now();
        self.control.bump_generation();
        if !self.paused {
            self.control.resume_all();
        }
        Ok(())
    }

    fn serve_api(&mut self) {
        let _ = self.api_wake.read();
        while let Ok(request) = self.api_rx.try_recv() {
            let result = self.handle(request.action.clone());
            let stop = request.action == VmmAction::Stop && result.is_ok();
            // The API thread may have given up waiting; the action still happened.
            let _ = request.reply.send(result);
            // Let the client get its answer before the VM can end: after a stop, and also
            // after a resume or reset whose guest powers off at once. A client that
            // vanished disconnects the channel at once.
            let _ = request.sent.recv_timeout(STOP_REPLY_GRACE);
            if stop {
                self.exit.request(VmExit::PowerOff);
            }
        }
    }
}

impl MutEventSubscriber for Controller {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(self.exit.eventfd(), EventSet::IN));
        let _ = ops.add(Events::new(&*self.api_wake, EventSet::IN));
        let hotplug = lock(&self.pci_hotplug);
        let _ = ops.add(Events::new(hotplug.ejected_event(), EventSet::IN));
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.api_wake.as_raw_fd() {
            self.serve_api();
        }
        if events.fd() == lock(&self.pci_hotplug).ejected_event().as_raw_fd() {
            self.remove_ejected();
        }
        // The exit eventfd only needs to wake the loop, which then reads `exit.reason()`.
    }
}
