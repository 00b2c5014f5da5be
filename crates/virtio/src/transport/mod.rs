//! Transports: how a driver finds a virtio device and reaches its registers. Only the
//! modern (virtio 1.x) PCI transport so far. No KVM here: the VMM plugs in through
//! [`pci::PciFunction`] (config space and BAR accesses from its vCPU threads) and
//! [`msix::MsiRouter`] (interrupt routes and delivery).

pub mod msix;
pub mod pci;
pub mod virtio_pci;

pub use msix::{MsiRouter, Msix};
pub use pci::{BarRegion, BarSpec, IoEvent, PciConfigSpace, PciFunction, PciIds};
pub use virtio_pci::{TransportError, VirtioPciDevice};
