//! Everything that talks to KVM: the VM, its vCPUs, their boot state.
//!
//! This is the only module (with `hostnet::sys` later) allowed to use `unsafe`.

pub mod cpuid;
pub mod irq;
pub mod memory;
pub mod reclaim;
pub mod regs;
pub mod vcpu;
pub mod vm;

use kvm_ioctls::{Cap, Kvm};

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm (is the kvm module loaded, and may this user open it?)")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("KVM lacks the {0:?} capability")]
    MissingCap(Cap),
    #[error("cannot read the CPUID that KVM supports")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
}

/// The capabilities every Ferrovisor VM needs.
const REQUIRED_CAPS: [Cap; 6] = [
    Cap::Irqchip,
    Cap::Irqfd,
    Cap::Pit2,
    Cap::UserMemory,
    Cap::SetTssAddr,
    Cap::ImmediateExit,
];

/// An open `/dev/kvm` that has what we need.
pub struct KvmContext {
    pub kvm: Kvm,
    pub supported_cpuid: kvm_bindings::CpuId,
}

impl KvmContext {
    pub fn new() -> Result<Self, KvmError> {
        let kvm = Kvm::new().map_err(KvmError::Open)?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(KvmError::ApiVersion(version));
        }
        if let Some(cap) = REQUIRED_CAPS.into_iter().find(|c| !kvm.check_extension(*c)) {
            return Err(KvmError::MissingCap(cap));
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::SupportedCpuid)?;
        Ok(KvmContext {
            kvm,
            supported_cpuid,
        })
    }
}
