//! Ferrovisor's virtio devices and the virtio-pci transport.
//!
//! Nothing here knows KVM: a device sees guest memory, its queues, an eventfd per queue
//! that the driver's notifications arrive on, and an [`Interrupt`] to signal the driver.
//! `fv-vmm` wires those to ioeventfds, irqfds and MSI routes. Every value a guest writes
//! (descriptor chains, addresses, lengths, request headers) is checked here; a hostile
//! guest gets an error status or a device that needs a reset, never a panic.

#![forbid(unsafe_code)]

pub mod balloon;
pub mod block;
mod buffers;
pub mod console;
pub mod device;
mod guest;
pub mod lifecycle;
pub mod net;
pub mod queue;
pub mod rate_limiter;
pub mod rng;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod transport;
pub mod vsock;

pub use device::{ActivateError, Interrupt, QueueEvents, VirtioDevice};

/// The guest memory type every device works on (the VMM's, without dirty bitmap).
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;
