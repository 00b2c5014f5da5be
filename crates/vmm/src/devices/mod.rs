//! Legacy devices on the port-I/O bus. None of them touches KVM: interrupts go
//! through an `EventFd` that `vstate` registers as an irqfd.

pub mod acpi_pm;
pub mod bus;
pub mod cmos;
pub mod i8042;
pub mod pvpanic;
pub mod serial;

pub use bus::{Bus, BusDevice};
