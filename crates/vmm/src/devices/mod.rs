//! Devices: the legacy ones on the port-I/O bus, the PCI root complex (`pci`) and the
//! virtio devices behind it (`virtio`). None of them touches KVM: interrupts go through
//! `EventFd`s that `vstate` registers as irqfds (and MSI routes, for PCI).

pub mod acpi_ged;
pub mod acpi_pm;
pub mod balloon;
pub mod bus;
pub mod cmos;
pub mod i8042;
pub mod net;
pub mod pci;
pub mod pci_hotplug;
pub mod pvpanic;
pub mod serial;
pub mod services;
pub mod virtio;

pub use bus::{Bus, BusDevice};
