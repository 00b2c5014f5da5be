//! fv-vmm: Ferrovisor's per-VM monitor. One process runs one VM on Linux KVM.
//!
//! Build order (see `builder`): guest memory, KVM VM, devices, kernel, ACPI, vCPUs.
//! Only `vstate` touches `kvm_ioctls`.

pub mod api;
pub mod arch;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod seccomp;
pub mod vmm;
pub mod vstate;
