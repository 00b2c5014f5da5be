//! Interrupt routing for MSI-X and the eventfds that carry guest notifications:
//!
//! - the GSI routing table (`KVM_SET_GSI_ROUTING`): GSIs 0-23 keep the routes KVM sets up
//!   by default for the in-kernel IOAPIC and 8259s (the legacy devices' irqfds use them),
//!   and each MSI-X vector gets a GSI from 24 up with an MSI route holding the message
//!   address and data the guest wrote into the vector's table entry;
//! - an irqfd per MSI-X vector on that GSI: a device thread fires a vector by writing the
//!   eventfd, and KVM delivers the message without the VMM's involvement;
//! - ioeventfds (`KVM_IOEVENTFD`, any width, no data match) on each queue's notify
//!   address, so the driver's notifications reach the device thread without a VM exit to
//!   the VMM.
//!
//! Setting the whole table again on every change is what KVM's API offers; Linux changes a
//! vector's message only when it (re)programs the device, so this is rare.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MAX_IRQ_ROUTES,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch};
use vmm_sys_util::eventfd::EventFd;

use super::vm::{Vm, VmError};

/// GSIs 0-23 are the IOAPIC's pins (0-15 also the 8259s'); MSI routes start above.
pub const IOAPIC_PINS: u32 = 24;
const FIRST_MSI_GSI: u32 = IOAPIC_PINS;

fn irqchip_route(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    }
}

fn msi_route(gsi: u32, addr: u64, data: u32) -> kvm_irq_routing_entry {
    let mut msi = kvm_irq_routing_msi {
        address_lo: addr as u32,
        address_hi: (addr >> 32) as u32,
        data,
        ..Default::default()
    };
    // No device ID: KVM_MSI_VALID_DEVID is not set.
    msi.__bindgen_anon_1 = Default::default();
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 { msi },
        ..Default::default()
    }
}

/// The routes KVM installs with the in-kernel irqchip (`kvm_setup_default_irq_routing`):
/// GSI n → IOAPIC pin n for n < 24, and → 8259 pin n % 8 (master below 8) for n < 16.
pub fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut routes = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        routes.push(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        if gsi < 16 {
            let pic = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            routes.push(irqchip_route(gsi, pic, gsi % 8));
        }
    }
    routes
}

struct RoutingState {
    /// MSI routes by GSI: (address, data).
    msi: BTreeMap<u32, (u64, u32)>,
    next_gsi: u32,
}

/// The VM's GSI routing table. Shared by the builder (allocating GSIs) and the vCPU threads
/// (the guest reprogramming an MSI-X entry).
pub struct IrqRouting {
    vm: Arc<Vm>,
    state: Mutex<RoutingState>,
}

impl IrqRouting {
    /// Takes over the routing table, installing the default routes (which also checks that
    /// this KVM supports `KVM_SET_GSI_ROUTING`).
    pub fn new(vm: Arc<Vm>) -> Result<Self, VmError> {
        let routing = IrqRouting {
            vm,
            state: Mutex::new(RoutingState {
                msi: BTreeMap::new(),
                next_gsi: FIRST_MSI_GSI,
            }),
        };
        routing.commit(&routing.lock())?;
        Ok(routing)
    }

    fn lock(&self) -> MutexGuard<'_, RoutingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self, st: &RoutingState) -> Result<(), VmError> {
        let mut entries = default_routes();
        entries.extend(
            st.msi
                .iter()
                .map(|(gsi, (addr, data))| msi_route(*gsi, *addr, *data)),
        );
        let table = KvmIrqRouting::from_entries(&entries).map_err(|_| VmError::TooManyRoutes)?;
        self.vm.set_gsi_routing(&table)
    }

    /// A GSI of its own for one MSI-X vector (no route until `set_msi`).
    pub fn allocate_gsi(&self) -> Result<u32, VmError> {
        let mut st = self.lock();
        let gsi = st.next_gsi;
        // Each route takes a table entry; the legacy routes take 40.
        if gsi as usize >= KVM_MAX_IRQ_ROUTES - 40 {
            return Err(VmError::TooManyRoutes);
        }
        st.next_gsi += 1;
        Ok(gsi)
    }

    /// Points `gsi` at the MSI message `addr`/`data`; a no-op when it already does.
    pub fn set_msi(&self, gsi: u32, addr: u64, data: u32) -> Result<(), VmError> {
        let mut st = self.lock();
        if st.msi.get(&gsi) == Some(&(addr, data)) {
            return Ok(());
        }
        let old = st.msi.insert(gsi, (addr, data));
        let result = self.commit(&st);
        if result.is_err() {
            // KVM kept the old table; so do we.
            match old {
                Some(v) => st.msi.insert(gsi, v),
                None => st.msi.remove(&gsi),
            };
        }
        result
    }

    pub fn vm(&self) -> &Arc<Vm> {
        &self.vm
    }
}

impl Vm {
    /// Replaces the GSI routing table.
    pub fn set_gsi_routing(&self, table: &KvmIrqRouting) -> Result<(), VmError> {
        self.fd
            .set_gsi_routing(table)
            .map_err(|source| VmError::Setup {
                what: "GSI routing table",
                source,
            })
    }

    /// Guest writes of any width to guest-physical `addr` signal `fd` inside KVM.
    pub fn register_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), VmError> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|source| VmError::IoEvent { addr, source })
    }

    pub fn unregister_ioevent(&self, fd: &EventFd, addr: u64) -> Result<(), VmError> {
        self.fd
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|source| VmError::IoEvent { addr, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use crate::vstate::KvmContext;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn default_routes_match_kvms() {
        let r = default_routes();
        // 24 IOAPIC pins + 16 8259 pins.
        assert_eq!(r.len(), 40);
        let chip = |e: &kvm_irq_routing_entry| {
            // SAFETY: every default route is of type IRQCHIP, so `irqchip` is the member set.
            let c = unsafe { e.u.irqchip };
            (e.gsi, c.irqchip, c.pin)
        };
        assert_eq!(chip(&r[0]), (0, KVM_IRQCHIP_IOAPIC, 0));
        assert_eq!(chip(&r[1]), (0, KVM_IRQCHIP_PIC_MASTER, 0));
        assert_eq!(chip(&r[19]), (9, KVM_IRQCHIP_PIC_SLAVE, 1));
        assert_eq!(chip(&r[39]), (23, KVM_IRQCHIP_IOAPIC, 23));
    }

    /// The host's KVM (PVM here) accepts a routing table with MSI routes, irqfds on them,
    /// and MMIO ioeventfds without data match: what virtio-pci needs.
    #[test]
    fn this_kvm_routes_msi_through_irqfds_and_takes_ioeventfds() {
        let kvm = KvmContext::new().expect("/dev/kvm");
        assert!(kvm.kvm.check_extension(kvm_ioctls::Cap::IrqRouting));
        let mem = create_guest_memory(32).unwrap();
        let vm = Arc::new(Vm::new(&kvm, &mem).unwrap());
        let routing = IrqRouting::new(vm.clone()).unwrap();
        let gsi = routing.allocate_gsi().unwrap();
        assert_eq!(gsi, 24);
        let irqfd = EventFd::new(EFD_NONBLOCK).unwrap();
        vm.register_irqfd(&irqfd, gsi).unwrap();
        routing.set_msi(gsi, 0xfee0_0000, 0x4041).unwrap();
        routing.set_msi(gsi, 0xfee0_0000, 0x4041).unwrap();
        routing.set_msi(gsi, 0xfee0_1000, 0x4042).unwrap();
        irqfd.write(1).unwrap();
        let notify = EventFd::new(EFD_NONBLOCK).unwrap();
        vm.register_ioevent(&notify, 0xc000_3000).unwrap();
        vm.unregister_ioevent(&notify, 0xc000_3000).unwrap();
        vm.register_ioevent(&notify, 0xc001_3000).unwrap();
    }
}
