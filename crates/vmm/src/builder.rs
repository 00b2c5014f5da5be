//! Builds a VM top to bottom, in the order the hardware would exist: memory, KVM VM,
//! legacy devices, the PCI bus and its virtio devices (each with its event-loop thread),
//! vCPUs. Nothing runs guest code until `Vmm::run`. What the user names (kernel, initrd,
//! taps) is opened first, so a typo fails before any KVM work.

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::layout;
use crate::config::{SerialConfig, VmConfig};
use crate::devices::acpi_ged::AcpiGed;
use crate::devices::acpi_pm::AcpiPmDevice;
use crate::devices::cmos::Cmos;
use crate::devices::i8042::I8042ResetLine;
use crate::devices::net::{open_tap, HostTap, NetSetupError};
use crate::devices::pci::{PciConfigIo, PciEcam, PciRoot};
use crate::devices::pci_hotplug::PciHotplug;
use crate::devices::pvpanic::PvPanic;
use crate::devices::serial::{
    ConsoleClient, InputSource, SerialDevice, SerialOutput, SocketClient,
};
use crate::devices::virtio::{attach_virtio_pci, VirtioPciHandle, VirtioSetupError};
use crate::devices::{Bus, BusDevice};
use crate::exit::ExitEvent;
use crate::loader::{self, LoadError};
use crate::memory::{self, MemoryError};
use crate::vmm::{Devices, Vmm};
use crate::vstate::irq::IrqRouting;
use crate::vstate::vcpu::{Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};
use crate::vstate::{KvmContext, KvmError};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot set up {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API socket {0} is in use by another process")]
    SocketInUse(PathBuf),
    #[error("cannot place a device on the bus")]
    Bus(#[from] crate::devices::bus::BusError),
    #[error("disk {path}")]
    Disk {
        path: PathBuf,
        #[source]
        source: fv_disk::DiskError,
    },
    #[error("disk {path}: cannot create its virtio-blk device")]
    Block {
        path: PathBuf,
        #[source]
        source: fv_virtio::block::BlockError,
    },
    #[error("cannot create the virtio-rng device")]
    Rng(#[source] fv_virtio::rng::RngError),
    #[error(transparent)]
    NetSetup(#[from] NetSetupError),
    #[error("tap {tap}: cannot create its virtio-net device")]
    Net {
        tap: String,
        #[source]
        source: fv_virtio::net::NetError,
    },
    #[error(transparent)]
    Virtio(#[from] VirtioSetupError),
    #[error(transparent)]
    Services(#[from] crate::devices::services::ServiceError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// Binds a Unix socket at `path`, replacing a stale socket file nobody listens on.
pub fn bind_unix_socket(path: &Path) -> Result<UnixListener, BuildError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && UnixStream::connect(path).is_err() {
            std::fs::remove_file(path).map_err(io(format!("stale socket {}", path.display())))?;
        } else if meta.file_type().is_socket() {
            return Err(BuildError::SocketInUse(path.to_path_buf()));
        }
    }
    UnixListener::bind(path).map_err(io(format!("socket {}", path.display())))
}

fn serial_ends(config: &SerialConfig) -> Result<(SerialOutput, InputSource), BuildError> {
    Ok(match config {
        SerialConfig::Stdio => (
            SerialOutput::Stdout(std::io::stdout()),
            // A process started without fd 0 simply gets no console input.
            InputSource::stdin().unwrap_or(InputSource::None),
        ),
        SerialConfig::None => (SerialOutput::Sink, InputSource::None),
        SerialConfig::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io(format!("serial output file {}", path.display())))?;
            (SerialOutput::File(file), InputSource::None)
        }
        SerialConfig::Socket(path) => {
            let listener = bind_unix_socket(path)?;
            listener
                .set_nonblocking(true)
                .map_err(io("serial socket"))?;
            let client: SocketClient = Arc::new(Mutex::new(
                ConsoleClient::new().map_err(io("serial socket"))?,
            ));
            (
                SerialOutput::Socket(client.clone()),
                InputSource::Socket { listener, client },
            )
        }
    })
}

fn shared<D: BusDevice + 'static>(d: D) -> Arc<Mutex<dyn BusDevice>> {
    Arc::new(Mutex::new(d))
}

/// The NICs, the disks, then the entropy device, each in the next free PCI slot (NICs
/// first: a guest names its interfaces by slot, so adding a disk does not rename them).
/// `taps` are the NICs' taps, in `config.nets` order.
/// Puts a virtio-net NIC on `host`'s tap on the PCI bus, named `name`; also used to plug
/// one into a running VM.
pub fn attach_nic(
    name: &str,
    net: &crate::config::NetConfig,
    host: HostTap,
    mem: &crate::memory::GuestMemoryMmap,
    routing: &Arc<IrqRouting>,
    pci: &Mutex<PciRoot>,
    seccomp: bool,
) -> Result<VirtioPciHandle, BuildError> {
    use fv_virtio::net::Net;
    use fv_virtio::VirtioDevice;

    let tap_name = host.tap.name().to_string();
    let device_config = fv_virtio::net::NetConfig {
        mac: host.mac.0,
        mtu: None,
        rx_rate_limit: net.rx_rate_limit(),
        tx_rate_limit: net.tx_rate_limit(),
    };
    let nic = Net::new(device_config, host.tap).map_err(|source| BuildError::Net {
        tap: tap_name.clone(),
        source,
    })?;
    let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(nic));
    let mut handle = attach_virtio_pci(name, device, mem, routing, pci, seccomp)?;
    handle.net = Some((tap_name, host.mac));
    Ok(handle)
}

fn attach_virtio_devices(
    config: &VmConfig,
    taps: Vec<HostTap>,
    mem: &crate::memory::GuestMemoryMmap,
    routing: &Arc<IrqRouting>,
    pci: &Mutex<PciRoot>,
) -> Result<Vec<VirtioPciHandle>, BuildError> {
    use fv_virtio::block::{BlockConfig, BlockDevice};
    use fv_virtio::rng::RngDevice;
    use fv_virtio::VirtioDevice;

    let mut handles = Vec::new();
    for (i, (net, host)) in config.nets.iter().zip(taps).enumerate() {
        handles.push(attach_nic(
            &format!("net{i}"),
            net,
            host,
            mem,
            routing,
            pci,
            config.seccomp,
        )?);
    }
    for (i, disk) in config.disks.iter().enumerate() {
        let image = fv_disk::open_disk(&disk.path, disk.format.map(|f| f.to_disk()), disk.readonly)
            .map_err(|source| BuildError::Disk {
                path: disk.path.clone(),
                source,
            })?;
        let block = BlockDevice::new(
            image,
            BlockConfig {
                serial: disk.serial.clone().unwrap_or_default(),
                rate_limit: disk.rate_limit(),
                ..BlockConfig::default()
            },
        )
        .map_err(|source| BuildError::Block {
            path: disk.path.clone(),
            source,
        })?;
        let block = Arc::new(Mutex::new(block));
        let device: Arc<Mutex<dyn VirtioDevice>> = block.clone();
        let mut handle = attach_virtio_pci(
            &format!("blk{i}"),
            device,
            mem,
            routing,
            pci,
            config.seccomp,
        )?;
        handle.disk = Some(crate::devices::virtio::DiskHandle {
            device: block,
            path: disk.path.clone(),
            format: disk.format.map(|f| f.to_disk()),
            readonly: disk.readonly,
        });
        handles.push(handle);
    }
    if config.rng {
        let rng = RngDevice::new(Default::default()).map_err(BuildError::Rng)?;
        let device: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(rng));
        handles.push(attach_virtio_pci(
            "rng",
            device,
            mem,
            routing,
            pci,
            config.seccomp,
        )?);
    }
    Ok(handles)
}

/// Builds the VM described by `config`, ready to run.
pub fn build_vm(config: &VmConfig) -> Result<Vmm, BuildError> {
    // Cheap checks on user input first, so a typo does not cost a KVM VM.
    let mem = memory::create_guest_memory(config.memory_mib)?;
    let boot_entry = loader::load_guest(&mem, config)?;
    let taps = config
        .nets
        .iter()
        .map(open_tap)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (net, host)) in config.nets.iter().zip(&taps).enumerate() {
        if net.creates_tap() {
            // Whoever started us needs the kernel's choice to put the tap on a bridge.
            eprintln!("fv-vmm: net{i}: created tap {}", host.tap.name());
        }
    }

    let kvm = KvmContext::new()?;
    let vm = Arc::new(Vm::new(&kvm, &mem)?);
    let routing = Arc::new(IrqRouting::new(vm.clone())?);
    let exit = Arc::new(ExitEvent::new().map_err(io("exit eventfd"))?);

    let com1_irq = EventFd::new(EFD_NONBLOCK).map_err(io("COM1 irqfd"))?;
    vm.register_irqfd(&com1_irq, layout::COM1_IRQ)?;
    let (output, input) = serial_ends(&config.serial)?;
    let serial = Arc::new(Mutex::new(
        SerialDevice::new(&com1_irq, output).map_err(io("COM1"))?,
    ));

    let pio = Bus::new();
    let mmio = Arc::new(Bus::new());
    pio.insert(serial.clone(), layout::COM1_PORT, 8)?;
    pio.insert(
        shared(I8042ResetLine::new(exit.clone())),
        layout::I8042_PORT,
        layout::I8042_PORT_LEN,
    )?;
    pio.insert(
        shared(Cmos::new(config.memory_mib << 20)),
        layout::CMOS_PORT,
        layout::CMOS_PORT_LEN,
    )?;
    pio.insert(
        shared(AcpiPmDevice::new(exit.clone())),
        layout::ACPI_PM_PORT,
        layout::ACPI_PM_PORT_LEN,
    )?;
    pio.insert(shared(PvPanic::new(exit.clone())), layout::PVPANIC_PORT, 1)?;
    let ged_irq = EventFd::new(EFD_NONBLOCK).map_err(io("ACPI GED irqfd"))?;
    vm.register_irqfd(&ged_irq, layout::ACPI_GED_IRQ)?;
    let ged = Arc::new(Mutex::new(AcpiGed::new(ged_irq)));
    pio.insert(
        ged.clone(),
        layout::ACPI_GED_PORT,
        layout::ACPI_GED_PORT_LEN,
    )?;

    let ejected = EventFd::new(EFD_NONBLOCK).map_err(io("PCI hot-plug eventfd"))?;
    let pci_hotplug = Arc::new(Mutex::new(PciHotplug::new(ejected)));
    pio.insert(
        pci_hotplug.clone(),
        layout::PCI_HOTPLUG_PORT,
        crate::devices::pci_hotplug::REGISTERS_LEN,
    )?;

    let pci = Arc::new(Mutex::new(PciRoot::new(
        mmio.clone(),
        vm.clone(),
        (layout::PCI_MMIO_START, layout::PCI_MMIO_SIZE),
    )));
    pio.insert(
        shared(PciConfigIo::new(pci.clone())),
        layout::PCI_CONFIG_IO_PORT,
        layout::PCI_CONFIG_IO_PORT_LEN,
    )?;
    mmio.insert(
        shared(PciEcam::new(pci.clone())),
        layout::PCI_ECAM_START,
        layout::PCI_ECAM_SIZE,
    )?;
    let mut virtio = attach_virtio_devices(config, taps, &mem, &routing, &pci)?;
    let services =
        crate::devices::services::attach_guest_services(config, &mem, &routing, &pci, &mut virtio)?;

    let vcpus = (0..config.vcpus)
        .map(|i| Vcpu::new(&kvm, &vm, i, config.vcpus, boot_entry))
        .collect::<Result<Vec<_>, _>>()?;

    let api = match &config.api_socket {
        Some(path) => Some(bind_unix_socket(path)?),
        None => None,
    };

    Ok(Vmm::new(
        config.clone(),
        mem,
        kvm,
        vm,
        vcpus,
        Devices {
            pio: Arc::new(pio),
            mmio,
            serial,
            serial_input: input,
            pci,
            pci_hotplug,
            routing,
            virtio,
            ged,
            services,
        },
        exit,
        api,
    ))
}
