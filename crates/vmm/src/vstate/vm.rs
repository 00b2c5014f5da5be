//! The KVM VM: memory slots, in-kernel irqchip and PIT, irqfds.

use kvm_bindings::{
    kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::KvmContext;
use crate::arch::layout;
use crate::memory::GuestMemoryMmap;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot create the KVM VM")]
    Create(#[source] kvm_ioctls::Error),
    #[error("cannot set up the VM's {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot (un)register an ioeventfd at {addr:#x}")]
    IoEvent {
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("the GSI routing table is full")]
    TooManyRoutes,
    #[error("cannot register guest memory slot {slot} at {addr:#x}")]
    MemorySlot {
        slot: u32,
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Setup { what, source }
}

/// Interrupt controller state as KVM created it, restored on a reset in place.
struct InitialIrqState {
    chips: [kvm_irqchip; 3],
    pit: kvm_pit_state2,
}

pub struct Vm {
    pub fd: VmFd,
    initial: InitialIrqState,
}

impl Vm {
    /// Creates the VM with its in-kernel LAPICs, IOAPIC, 8259s and PIT, and maps `mem`.
    pub fn new(kvm: &KvmContext, mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        let fd = kvm.kvm.create_vm().map_err(VmError::Create)?;
        fd.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
            .map_err(setup("TSS address"))?;
        fd.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
            .map_err(setup("identity map address"))?;
        fd.create_irq_chip().map_err(setup("in-kernel irqchip"))?;
        let pit_config = kvm_pit_config {
            // The PC speaker port is not emulated; let KVM swallow it.
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit_config).map_err(setup("in-kernel PIT"))?;

        for (slot, region) in mem.iter().enumerate() {
            advise_huge_pages(region.as_ptr(), region.len());
            // A handful of regions (at most 2), so the index fits in u32.
            let slot = slot as u32;
            let memory_region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region's mapping is owned by `mem`, which the caller keeps alive for
            // the whole life of the VM (the builder stores both in `Vmm`), and its host address
            // and length come from that very mapping.
            unsafe { fd.set_user_memory_region(memory_region) }.map_err(|source| {
                VmError::MemorySlot {
                    slot,
                    addr: memory_region.guest_phys_addr,
                    source,
                }
            })?;
        }

        let initial = InitialIrqState {
            chips: [
                get_irqchip(&fd, KVM_IRQCHIP_PIC_MASTER)?,
                get_irqchip(&fd, KVM_IRQCHIP_PIC_SLAVE)?,
                get_irqchip(&fd, KVM_IRQCHIP_IOAPIC)?,
            ],
            pit: fd.get_pit2().map_err(setup("PIT state"))?,
        };
        Ok(Vm { fd, initial })
    }

    /// Routes writes to `evt` into guest interrupt `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd.register_irqfd(evt, gsi).map_err(setup("irqfd"))
    }

    /// Puts the 8259s, IOAPIC and PIT back to their power-on state.
    pub fn reset_irq_state(&self) -> Result<(), VmError> {
        for chip in &self.initial.chips {
            self.fd
                .set_irqchip(chip)
                .map_err(setup("interrupt controller reset"))?;
        }
        self.fd
            .set_pit2(&self.initial.pit)
            .map_err(setup("PIT reset"))
    }
}

fn get_irqchip(fd: &VmFd, chip_id: u32) -> Result<kvm_irqchip, VmError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    fd.get_irqchip(&mut chip)
        .map_err(setup("interrupt controller state"))?;
    Ok(chip)
}

/// Asks for transparent huge pages on guest RAM, as QEMU and Cloud Hypervisor do: fewer
/// page faults and shorter nested page walks. Hosts with THP off just decline.
fn advise_huge_pages(addr: *mut u8, len: u64) {
    // SAFETY: the range is one private anonymous mapping owned by the guest memory object;
    // MADV_HUGEPAGE only changes how the kernel backs it, never its contents.
    let _ = unsafe { libc::madvise(addr.cast(), len as usize, libc::MADV_HUGEPAGE) };
}

/// Gives RAM back to the host and leaves it reading as zeros, as after power-on.
pub fn discard_guest_memory(mem: &GuestMemoryMmap) -> std::io::Result<()> {
    for region in mem.iter() {
        // SAFETY: the range is exactly one private anonymous mapping owned by `mem`;
        // MADV_DONTNEED on such a mapping only replaces its pages with zero pages, which
        // cannot invalidate any Rust reference (guest memory is only accessed through
        // volatile slices, never through references).
        let ret = unsafe {
            libc::madvise(
                region.as_ptr().cast(),
                region.len() as usize,
                libc::MADV_DONTNEED,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
