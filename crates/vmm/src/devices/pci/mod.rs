//! The PCI root complex: one root bus (bus 0) behind a host bridge at 00:00.0, reached
//! through configuration mechanism #1 (ports 0xCF8/0xCFC) and ECAM (MMIO, described by the
//! ACPI MCFG table). Functions are `fv_virtio::transport::PciFunction`s; their memory BARs
//! sit in the 32-bit MMIO hole and follow the guest when it moves them.

mod config_access;
mod root;

pub use config_access::{PciConfigIo, PciEcam};
pub use root::{BarAllocator, HostBridge, IoEventRegistry, PciError, PciRoot, MAX_DEVICES};
