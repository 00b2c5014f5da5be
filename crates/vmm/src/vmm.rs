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
use crate::devices::acpi_ged::{AcpiGed, GED_POWER_BUTTON};
use crate::devices::bus::lock;
use crate::devices::pci::PciRoot;
use crate::devices::serial::{InputSource, SerialDevice, SerialInput};
use crate::devices::services::GuestServices;
use crate::devices::virtio::VirtioPciHandle;
use crate::devices::Bus;
use crate::exit::{ExitEvent, VmExit};
use crate::loader;
use crate::memory::GuestMemoryMmap;
use crate::metrics::ExitCounters;
use crate::seccomp::{self, ThreadKind};
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
                        path: d.disk.as_ref().map(|(path, _)| path.clone()),
                        readonly: d.disk.as_ref().map(|(_, ro)| *ro),
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
            // A paused guest sees the press when it resumes (the interrupt stays pending).
            VmmAction::PowerButton => lock(&self.ged)
                .notify(GED_POWER_BUTTON)
                .map(|()| VmmData::Empty)
                .map_err(|e| ActionError::Failed(format!("cannot raise the ACPI event: {e}"))),
        }
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
            let result = self.handle(request.action);
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
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.api_wake.as_raw_fd() {
            self.serve_api();
        }
        // The exit eventfd only needs to wake the loop, which then reads `exit.reason()`.
    }
}
