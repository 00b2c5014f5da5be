//! ACPI tables for a hardware-reduced platform: RSDP, XSDT, FADT, MADT, MCFG and DSDT,
//! packed in that order from `ACPI_START`.
//!
//! Power-off and reboot go through the FADT's sleep control and reset registers, served by
//! `devices::acpi_pm`; there is no PM1 block, SCI or GPE. Events for the guest (the power
//! button) come through a Generic Event Device, served by `devices::acpi_ged`.

use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::layout;
use crate::devices::acpi_ged::{GED_PCI_HOTPLUG, GED_POWER_BUTTON};
use crate::memory::GuestMemoryMmap;

const OEM_ID: [u8; 6] = *b"FERROV";
const OEM_REVISION: u32 = 1;
/// Tables start on 8-byte boundaries so 64-bit fields (XSDT entries) are aligned.
const TABLE_ALIGN: u64 = 8;

/// MADT flags: PCAT_COMPAT, the in-kernel dual 8259 is present (Linux masks it).
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT interrupt source override flags: active high (bits 0-1 = 01), edge (bits 2-3 = 01).
const MPS_INTI_EDGE_HIGH: u16 = 0b0101;
/// FADT IA-PC boot architecture flags (ACPI 6.5 table 5.11).
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// CMOS register holding the century, so guests read the full year.
const CMOS_CENTURY_REG: u8 = 0x32;

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("cannot describe {vcpus} vCPUs: between 1 and {max} are supported")]
    VcpuCount { vcpus: u8, max: u8 },
    #[error("ACPI tables end at {end:#x}, past the end of their area at {limit:#x}")]
    TooLarge { end: u64, limit: u64 },
    #[error("cannot write the ACPI {table} at {addr:#x} into guest memory")]
    Write {
        table: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// AML bytes built elsewhere, placed as they are.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn bytes_of(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn table_id(name: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"FV      ";
    id[2..6].copy_from_slice(name);
    id
}

fn io_gas(port: u64) -> GAS {
    GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port)
}

/// The PCI host bridge `\_SB_.PCI0` (PCI Express root, bus 0): its `_CRS` gives the bus
/// number, the configuration ports 0xCF8-0xCFF and the memory window BARs live in. Plus a
/// motherboard-resources device reserving the ECAM window, as Linux checks before using MCFG.
fn pci_host_bridge(sink: &mut Vec<u8>) {
    let hid = aml::EISAName::new("PNP0A08");
    let cid = aml::EISAName::new("PNP0A03");
    let bus = aml::AddressSpace::<u16>::new_bus_number(0, 0);
    // Port and window constants come from the memory map and fit their fields.
    let cf8 = layout::PCI_CONFIG_IO_PORT as u16;
    let config_ports = aml::IO::new(cf8, cf8, 1, layout::PCI_CONFIG_IO_PORT_LEN as u8);
    let window = aml::AddressSpace::<u32>::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_MMIO_START as u32,
        (layout::PCI_MMIO_START + layout::PCI_MMIO_SIZE - 1) as u32,
        None,
    );
    let crs = aml::ResourceTemplate::new(vec![&bus, &config_ports, &window]);
    let fields = [
        aml::Name::new("_HID".into(), &hid),
        aml::Name::new("_CID".into(), &cid),
        aml::Name::new("_ADR".into(), &aml::ZERO),
        aml::Name::new("_SEG".into(), &aml::ZERO),
        aml::Name::new("_UID".into(), &aml::ZERO),
        aml::Name::new("_BBN".into(), &aml::ZERO),
        aml::Name::new("_CRS".into(), &crs),
    ];
    let mut slots = Vec::new();
    pci_slots(&mut slots);
    let slots = RawAml(slots);
    let mut children: Vec<&dyn Aml> = fields.iter().map(|n| n as &dyn Aml).collect();
    children.push(&slots);
    let pci0 = aml::Device::new("PCI0".into(), children);
    pci0.to_aml_bytes(sink);

    let res_hid = aml::EISAName::new("PNP0C02");
    let ecam = aml::Memory32Fixed::new(
        false,
        layout::PCI_ECAM_START as u32,
        layout::PCI_ECAM_SIZE as u32,
    );
    let res_crs = aml::ResourceTemplate::new(vec![&ecam]);
    let res_fields = [
        aml::Name::new("_HID".into(), &res_hid),
        aml::Name::new("_UID".into(), &aml::ONE),
        aml::Name::new("_CRS".into(), &res_crs),
    ];
    let res = aml::Device::new(
        "MRES".into(),
        res_fields.iter().map(|n| n as &dyn Aml).collect(),
    );
    res.to_aml_bytes(sink);
}

/// What ACPI PCI hot-plug needs inside `\_SB_.PCI0` (see `devices::pci_hotplug`): a device
/// object per slot 1-31, which `acpiphp` takes as the bus's slots, and the method the GED
/// calls when slots changed:
///
/// ```text
/// Device (S001) {                         // ... S031
///     Name (_ADR, 0x00010000)  Name (_SUN, 1)
///     Method (_EJ0, 1) { \_SB_.PHPR.PCEJ (_SUN) }
/// }
/// Method (PCNT, 0, Serialized) {
///     Local0 = \_SB_.PHPR.PCIU             // slots plugged, cleared by this read
///     Local2 = \_SB_.PHPR.PCID             // slots to remove, cleared by this read
///     If ((Local0 & (1 << 1)) == (1 << 1)) { Notify (S001, 1) }   // device check
///     ...
///     If ((Local2 & (1 << 1)) == (1 << 1)) { Notify (S001, 3) }   // eject request
///     ...
/// }
/// ```
fn pci_slots(sink: &mut Vec<u8>) {
    let names: Vec<String> = (1..32u8).map(|slot| format!("S{slot:03}")).collect();
    let sun = aml::Path::new("_SUN");
    let pcej = aml::MethodCall::new("\\_SB_.PHPR.PCEJ".into(), vec![&sun]);
    let ej0 = aml::Method::new("_EJ0".into(), 1, false, vec![&pcej]);
    for (slot, name) in (1..32u32).zip(&names) {
        let adr = slot << 16;
        let fields = [
            aml::Name::new("_ADR".into(), &adr),
            aml::Name::new("_SUN".into(), &slot),
        ];
        let mut children: Vec<&dyn Aml> = fields.iter().map(|n| n as &dyn Aml).collect();
        children.push(&ej0);
        aml::Device::new(name.as_str().into(), children).to_aml_bytes(sink);
    }
    let pciu = aml::Path::new("\\_SB_.PHPR.PCIU");
    let read = aml::Store::new(&aml::Local(0), &pciu);
    let pcid = aml::Path::new("\\_SB_.PHPR.PCID");
    let read_down = aml::Store::new(&aml::Local(2), &pcid);
    let bits: Vec<usize> = (1..32).map(|slot| 1usize << slot).collect();
    let paths: Vec<aml::Path> = names.iter().map(|n| aml::Path::new(n)).collect();
    let device_check = 1usize;
    let masks: Vec<aml::And> = bits
        .iter()
        .map(|bit| aml::And::new(&aml::Local(1), &aml::Local(0), bit))
        .collect();
    let equals: Vec<aml::Equal> = bits
        .iter()
        .map(|bit| aml::Equal::new(&aml::Local(1), bit))
        .collect();
    let notifies: Vec<aml::Notify> = paths
        .iter()
        .map(|p| aml::Notify::new(p, &device_check))
        .collect();
    let ifs: Vec<aml::If> = equals
        .iter()
        .zip(&notifies)
        .map(|(eq, notify)| aml::If::new(eq, vec![notify]))
        .collect();
    let eject_request = 3usize;
    let down_masks: Vec<aml::And> = bits
        .iter()
        .map(|bit| aml::And::new(&aml::Local(1), &aml::Local(2), bit))
        .collect();
    let ejects: Vec<aml::Notify> = paths
        .iter()
        .map(|p| aml::Notify::new(p, &eject_request))
        .collect();
    let down_ifs: Vec<aml::If> = equals
        .iter()
        .zip(&ejects)
        .map(|(eq, notify)| aml::If::new(eq, vec![notify]))
        .collect();
    let mut body: Vec<&dyn Aml> = vec![&read, &read_down];
    for (mask, test) in masks.iter().zip(&ifs) {
        body.push(mask);
        body.push(test);
    }
    for (mask, test) in down_masks.iter().zip(&down_ifs) {
        body.push(mask);
        body.push(test);
    }
    aml::Method::new("PCNT".into(), 0, true, body).to_aml_bytes(sink);
}

/// The PCI hot-plug controller's registers, `\_SB_.PHPR` (see `devices::pci_hotplug`):
///
/// ```text
/// Device (PHPR) {
///     Name (_HID, EisaId ("PNP0A06"))       // generic container
///     Name (_UID, "PCI Hotplug Controller")
///     Name (_STA, 0x0B)                     // present, enabled, not shown in the UI
///     Name (_CRS, ResourceTemplate () { IO (Decode16, PORT, PORT, 1, 12) })
///     OperationRegion (PCST, SystemIO, PORT, 12)
///     Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32 }
///     Method (PCEJ, 1, Serialized) { B0EJ = 1 << Arg0 }
/// }
/// ```
fn pci_hotplug_controller(sink: &mut Vec<u8>) {
    let hid = aml::EISAName::new("PNP0A06");
    let uid: aml::AmlStr = "PCI Hotplug Controller";
    // The port map fixes these; they fit.
    let port16 = layout::PCI_HOTPLUG_PORT as u16;
    let len8 = crate::devices::pci_hotplug::REGISTERS_LEN as u8;
    let io = aml::IO::new(port16, port16, 1, len8);
    let crs = aml::ResourceTemplate::new(vec![&io]);
    let port = layout::PCI_HOTPLUG_PORT as usize;
    let len = crate::devices::pci_hotplug::REGISTERS_LEN as usize;
    let region = aml::OpRegion::new("PCST".into(), aml::OpRegionSpace::SystemIO, &port, &len);
    let field = aml::Field::new(
        "PCST".into(),
        aml::FieldAccessType::DWord,
        aml::FieldLockRule::NoLock,
        aml::FieldUpdateRule::WriteAsZeroes,
        vec![
            aml::FieldEntry::Named(*b"PCIU", 32),
            aml::FieldEntry::Named(*b"PCID", 32),
            aml::FieldEntry::Named(*b"B0EJ", 32),
        ],
    );
    let names = [
        aml::Name::new("_HID".into(), &hid),
        aml::Name::new("_UID".into(), &uid),
        aml::Name::new("_STA".into(), &0x0bu8),
        aml::Name::new("_CRS".into(), &crs),
    ];
    // Method (PCEJ, 1) { B0EJ = 1 << Arg0 }: `_EJ0` of slot Arg0.
    let shifted = aml::ShiftLeft::new(&aml::Local(0), &aml::ONE, &aml::Arg(0));
    let b0ej = aml::Path::new("B0EJ");
    let write = aml::Store::new(&b0ej, &aml::Local(0));
    let pcej = aml::Method::new("PCEJ".into(), 1, true, vec![&shifted, &write]);
    let mut children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    children.extend([&region as &dyn Aml, &field, &pcej]);
    aml::Device::new("PHPR".into(), children).to_aml_bytes(sink);
}

/// The power button `\_SB_.PWRB` (`PNP0C0C`, a control-method button: the FADT says there
/// is no fixed one) and the Generic Event Device `\_SB_.GED_` (`ACPI0013`) that notifies it:
///
/// ```text
/// Device (GED_) {
///     Name (_HID, "ACPI0013")
///     Name (_UID, 0)
///     Name (_CRS, ResourceTemplate () {
///         Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { ACPI_GED_IRQ } })
///     OperationRegion (GDST, SystemIO, ACPI_GED_PORT, 1)
///     Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
///     Method (_EVT, 1, Serialized) {       // Arg0: the interrupt, there is one
///         Local0 = GDAT                      // the events, cleared by this read
///         If ((Local0 & GED_POWER_BUTTON) == GED_POWER_BUTTON) {
///             Notify (\_SB_.PWRB, 0x80)     // "button pressed"
///         }
///     }
/// }
/// ```
fn power_button_and_ged(sink: &mut Vec<u8>) {
    let pwrb_hid = aml::EISAName::new("PNP0C0C");
    let pwrb_fields = [
        aml::Name::new("_HID".into(), &pwrb_hid),
        aml::Name::new("_UID".into(), &aml::ZERO),
    ];
    aml::Device::new(
        "PWRB".into(),
        pwrb_fields.iter().map(|n| n as &dyn Aml).collect(),
    )
    .to_aml_bytes(sink);

    let ged_hid: aml::AmlStr = "ACPI0013";
    let irq = aml::Interrupt::new(true, true, false, false, layout::ACPI_GED_IRQ);
    let crs = aml::ResourceTemplate::new(vec![&irq]);
    // The port map fixes these; they fit.
    let port = layout::ACPI_GED_PORT as usize;
    let len = layout::ACPI_GED_PORT_LEN as usize;
    let region = aml::OpRegion::new("GDST".into(), aml::OpRegionSpace::SystemIO, &port, &len);
    let field = aml::Field::new(
        "GDST".into(),
        aml::FieldAccessType::Byte,
        aml::FieldLockRule::NoLock,
        aml::FieldUpdateRule::WriteAsZeroes,
        vec![aml::FieldEntry::Named(*b"GDAT", 8)],
    );
    let gdat = aml::Path::new("GDAT");
    let read = aml::Store::new(&aml::Local(0), &gdat);
    let bit = usize::from(GED_POWER_BUTTON);
    let mask = aml::And::new(&aml::Local(1), &aml::Local(0), &bit);
    let pressed = aml::Equal::new(&aml::Local(1), &bit);
    let pwrb = aml::Path::new("\\_SB_.PWRB");
    let button_pressed = 0x80usize;
    let notify = aml::Notify::new(&pwrb, &button_pressed);
    let on_button = aml::If::new(&pressed, vec![&notify]);
    let hp_bit = usize::from(GED_PCI_HOTPLUG);
    let hp_mask = aml::And::new(&aml::Local(1), &aml::Local(0), &hp_bit);
    let hp_set = aml::Equal::new(&aml::Local(1), &hp_bit);
    let pcnt = aml::MethodCall::new("\\_SB_.PCI0.PCNT".into(), vec![]);
    let on_hotplug = aml::If::new(&hp_set, vec![&pcnt]);
    let evt = aml::Method::new(
        "_EVT".into(),
        1,
        true,
        vec![&read, &mask, &on_button, &hp_mask, &on_hotplug],
    );
    let names = [
        aml::Name::new("_HID".into(), &ged_hid),
        aml::Name::new("_UID".into(), &aml::ZERO),
        aml::Name::new("_CRS".into(), &crs),
    ];
    let mut children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    children.extend([&region as &dyn Aml, &field, &evt]);
    aml::Device::new("GED_".into(), children).to_aml_bytes(sink);
}

/// MCFG: where ECAM for bus 0 of segment 0 is.
fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, table_id(b"MCFG"), OEM_REVISION);
    mcfg.add_ecam(layout::PCI_ECAM_START, 0, 0, 0);
    bytes_of(&mcfg)
}

/// DSDT: `\_S5_` (soft off), COM1, the pvpanic device, the PCI host bridge, the power
/// button and the Generic Event Device.
fn dsdt() -> Vec<u8> {
    let s5 = layout::ACPI_S5_SLP_TYP;
    // SLP_TYPa, SLP_TYPb, reserved, reserved; hardware-reduced sleep uses only SLP_TYPa.
    let s5_pkg = aml::Package::new(vec![&s5, &s5, &aml::ZERO, &aml::ZERO]);
    let s5_name = aml::Name::new("\\_S5_".into(), &s5_pkg);

    // The PortIO map fixes these; the casts only narrow constants that fit.
    let com1_port = layout::COM1_PORT as u16;
    let com1_hid = aml::EISAName::new("PNP0501");
    let com1_io = aml::IO::new(com1_port, com1_port, 1, 8);
    let com1_irq = aml::Interrupt::new(true, true, false, false, layout::COM1_IRQ);
    let com1_crs = aml::ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_fields = [
        aml::Name::new("_HID".into(), &com1_hid),
        aml::Name::new("_UID".into(), &aml::ZERO),
        aml::Name::new("_STA".into(), &0x0fu8),
        aml::Name::new("_CRS".into(), &com1_crs),
    ];
    let com1 = aml::Device::new(
        "COM1".into(),
        com1_fields.iter().map(|n| n as &dyn Aml).collect(),
    );

    let pvpanic_port = layout::PVPANIC_PORT as u16;
    let pvpanic_hid: aml::AmlStr = "QEMU0001";
    let pvpanic_io = aml::IO::new(pvpanic_port, pvpanic_port, 1, 1);
    let pvpanic_crs = aml::ResourceTemplate::new(vec![&pvpanic_io]);
    let pvpanic_fields = [
        aml::Name::new("_HID".into(), &pvpanic_hid),
        aml::Name::new("_UID".into(), &aml::ZERO),
        aml::Name::new("_STA".into(), &0x0fu8),
        aml::Name::new("_CRS".into(), &pvpanic_crs),
    ];
    let pvpanic = aml::Device::new(
        "PEVT".into(),
        pvpanic_fields.iter().map(|n| n as &dyn Aml).collect(),
    );

    let mut pci = Vec::new();
    pci_host_bridge(&mut pci);
    let pci = RawAml(pci);
    let mut events = Vec::new();
    pci_hotplug_controller(&mut events);
    power_button_and_ged(&mut events);
    let events = RawAml(events);
    let sb = aml::Scope::new("\\_SB_".into(), vec![&com1, &pvpanic, &pci, &events]);

    let mut table = Sdt::new(
        *b"DSDT",
        36,
        // Revision 2: AML integers are 64-bit.
        2,
        OEM_ID,
        table_id(b"DSDT"),
        OEM_REVISION,
    );
    table.append_slice(&bytes_of(&s5_name));
    table.append_slice(&bytes_of(&sb));
    table.as_slice().to_vec()
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, table_id(b"FACP"), OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep button.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .preferred_pm_profile(PmProfile::EnterpriseServer)
        .dsdt_64(dsdt_addr);
    fadt.reset_reg = io_gas(layout::ACPI_RESET_PORT);
    fadt.reset_value = layout::ACPI_RESET_VALUE;
    fadt.sleep_control_reg = io_gas(layout::ACPI_SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_gas(layout::ACPI_SLEEP_STATUS_PORT);
    // No IAPC_8042 (bit 1): our i8042 only carries the reset line, which Linux's reboot code
    // uses without asking. Announced, Linux's keyboard driver probes it and waits over a
    // second for answers a keyboard controller would give (1.1 s of a 4 s nested boot).
    fadt.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_VGA_NOT_PRESENT).into();
    fadt.century = CMOS_CENTURY_REG;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"FERROVSR").into();
    bytes_of(&fadt.finalize())
}

/// MADT built on `Sdt` because acpi_tables' `MADT` has no flags or x86 override entries.
fn madt(vcpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(*b"APIC", 44, 5, OEM_ID, table_id(b"APIC"), OEM_REVISION);
    // LAPIC_START is below 4 GiB by the memory map.
    madt.write_u32(36, layout::LAPIC_START as u32);
    madt.write_u32(40, MADT_PCAT_COMPAT);
    for id in 0..vcpus {
        madt.append_slice(&bytes_of(&ProcessorLocalApic::new(
            id,
            id,
            EnabledStatus::Enabled,
        )));
    }
    madt.append_slice(&bytes_of(&IoApic::new(
        vcpus,
        layout::IOAPIC_START as u32,
        0,
    )));
    // Interrupt source override: ISA IRQ 0 (the PIT) arrives on IOAPIC pin 2, as KVM wires it.
    let mut iso = vec![2u8, 10, 0, 0];
    iso.extend_from_slice(&2u32.to_le_bytes());
    iso.extend_from_slice(&MPS_INTI_EDGE_HIGH.to_le_bytes());
    madt.append_slice(&iso);
    // Local APIC NMI: LINT1 of every processor (uid 0xff) is the NMI line.
    let mut nmi = vec![4u8, 6, 0xff];
    nmi.extend_from_slice(&0u16.to_le_bytes());
    nmi.push(1);
    madt.append_slice(&nmi);
    madt.as_slice().to_vec()
}

fn align(addr: u64) -> u64 {
    addr.next_multiple_of(TABLE_ALIGN)
}

/// Writes the ACPI tables for `vcpus` vCPUs into `mem` and returns the RSDP's address,
/// which the boot protocol passes to the kernel.
pub fn create_acpi_tables(mem: &GuestMemoryMmap, vcpus: u8) -> Result<GuestAddress, AcpiError> {
    if vcpus == 0 || vcpus > layout::MAX_VCPUS {
        return Err(AcpiError::VcpuCount {
            vcpus,
            max: layout::MAX_VCPUS,
        });
    }
    let dsdt = dsdt();
    let madt = madt(vcpus);
    let mcfg = mcfg();
    const XSDT_ENTRIES: u64 = 4;

    let rsdp_addr = layout::ACPI_START;
    let xsdt_addr = align(rsdp_addr + Rsdp::len() as u64);
    let fadt_addr = align(xsdt_addr + 36 + 8 * XSDT_ENTRIES);
    let madt_addr = align(fadt_addr + FADT::len() as u64);
    let mcfg_addr = align(madt_addr + madt.len() as u64);
    let dsdt_addr = align(mcfg_addr + mcfg.len() as u64);
    let end = dsdt_addr + dsdt.len() as u64;
    if end > layout::ACPI_END {
        return Err(AcpiError::TooLarge {
            end,
            limit: layout::ACPI_END,
        });
    }
    let fadt = fadt(dsdt_addr);

    let mut xsdt = XSDT::new(OEM_ID, table_id(b"XSDT"), OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    xsdt.add_entry(mcfg_addr);
    xsdt.add_entry(dsdt_addr);
    let xsdt = bytes_of(&xsdt);
    debug_assert_eq!(xsdt.len() as u64, 36 + 8 * XSDT_ENTRIES);
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));

    for (table, addr, bytes) in [
        ("RSDP", rsdp_addr, &rsdp),
        ("XSDT", xsdt_addr, &xsdt),
        ("FADT", fadt_addr, &fadt),
        ("MADT", madt_addr, &madt),
        ("MCFG", mcfg_addr, &mcfg),
        ("DSDT", dsdt_addr, &dsdt),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| AcpiError::Write {
                table,
                addr,
                source,
            })?;
    }
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// Reads a whole SDT by the length in its header and checks its checksum.
    fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let len = u32_at(&read(mem, addr, 8), 4) as usize;
        assert!((36..0x2_0000).contains(&len));
        assert!(addr + len as u64 <= layout::ACPI_END);
        let t = read(mem, addr, len);
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        assert_eq!(sum, 0, "checksum of {}", String::from_utf8_lossy(&t[..4]));
        t
    }

    /// The tables by signature, reached from the RSDP as a guest would.
    fn tables(mem: &GuestMemoryMmap, rsdp: GuestAddress) -> Vec<Vec<u8>> {
        let r = read(mem, rsdp.0, 36);
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(r[15], 2, "revision");
        assert_eq!(r[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(r.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(u32_at(&r, 20), 36);
        let xsdt = table(mem, u64_at(&r, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let mut all: Vec<Vec<u8>> = (36..xsdt.len())
            .step_by(8)
            .map(|off| table(mem, u64_at(&xsdt, off)))
            .collect();
        all.push(xsdt);
        all
    }

    fn find<'a>(all: &'a [Vec<u8>], sig: &[u8; 4]) -> &'a [u8] {
        all.iter().find(|t| &t[..4] == sig).unwrap()
    }

    #[test]
    fn rsdp_and_xsdt_point_at_the_tables() {
        let mem = create_guest_memory(64).unwrap();
        let rsdp = create_acpi_tables(&mem, 2).unwrap();
        assert_eq!(rsdp, GuestAddress(layout::ACPI_START));
        let all = tables(&mem, rsdp);
        let sigs: Vec<&[u8]> = all.iter().map(|t| &t[..4]).collect();
        assert_eq!(sigs, [b"FACP", b"APIC", b"MCFG", b"DSDT", b"XSDT"]);
    }

    #[test]
    fn mcfg_points_at_ecam_for_bus_0() {
        let mem = create_guest_memory(64).unwrap();
        let all = tables(&mem, create_acpi_tables(&mem, 1).unwrap());
        let mcfg = find(&all, b"MCFG");
        assert_eq!(mcfg.len(), 36 + 8 + 16);
        let e = &mcfg[44..];
        assert_eq!(u64_at(e, 0), layout::PCI_ECAM_START);
        assert_eq!(
            (e[8], e[9], e[10], e[11]),
            (0, 0, 0, 0),
            "segment 0, buses 0-0"
        );
    }

    #[test]
    fn dsdt_describes_the_pci_host_bridge() {
        let mem = create_guest_memory(64).unwrap();
        let all = tables(&mem, create_acpi_tables(&mem, 1).unwrap());
        let dsdt = find(&all, b"DSDT");
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"PCI0"));
        // EISAID("PNP0A08") = 0x080ad041, EISAID("PNP0A03") = 0x030ad041,
        // EISAID("PNP0C02") = 0x020cd041.
        assert!(has(&0x080a_d041u32.to_le_bytes()));
        assert!(has(&0x030a_d041u32.to_le_bytes()));
        assert!(has(&0x020c_d041u32.to_le_bytes()));
        for name in [b"_SEG", b"_UID", b"_BBN", b"_CRS"] {
            assert!(has(name));
        }
        // WordBusNumber 0-0: descriptor 0x88, length 13, type 2 (bus), min 0, max 0, len 1.
        assert!(has(&[
            0x88, 13, 0, 2, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0
        ]));
        // IO(Decode16, 0xcf8, 0xcf8, 1, 8).
        assert!(has(&[0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8]));
        // DWordMemory window: min and max of the BAR window.
        let mut window = (layout::PCI_MMIO_START as u32).to_le_bytes().to_vec();
        window.extend_from_slice(
            &((layout::PCI_MMIO_START + layout::PCI_MMIO_SIZE - 1) as u32).to_le_bytes(),
        );
        assert!(has(&window));
        // Memory32Fixed(ReadOnly, ECAM, 1 MiB).
        let mut ecam = vec![0x86, 9, 0, 0];
        ecam.extend_from_slice(&(layout::PCI_ECAM_START as u32).to_le_bytes());
        ecam.extend_from_slice(&(layout::PCI_ECAM_SIZE as u32).to_le_bytes());
        assert!(has(&ecam));
    }

    #[test]
    fn madt_lists_every_vcpu_and_the_ioapic() {
        let mem = create_guest_memory(64).unwrap();
        for vcpus in [1u8, 4, layout::MAX_VCPUS] {
            let all = tables(&mem, create_acpi_tables(&mem, vcpus).unwrap());
            let madt = find(&all, b"APIC");
            assert_eq!(u32_at(madt, 36), layout::LAPIC_START as u32);
            assert_eq!(u32_at(madt, 40), MADT_PCAT_COMPAT);
            let mut off = 44;
            let (mut lapics, mut ioapics, mut overrides) = (0, 0, 0);
            while off < madt.len() {
                let (kind, len) = (madt[off], madt[off + 1] as usize);
                let e = &madt[off..off + len];
                match kind {
                    0 => {
                        assert_eq!((e[2], e[3], u32_at(e, 4)), (lapics, lapics, 1));
                        lapics += 1;
                    }
                    1 => {
                        assert_eq!(e[2], vcpus);
                        assert_eq!(u32_at(e, 4), layout::IOAPIC_START as u32);
                        assert_eq!(u32_at(e, 8), 0);
                        ioapics += 1;
                    }
                    2 => {
                        assert_eq!((e[2], e[3], u32_at(e, 4)), (0, 0, 2));
                        overrides += 1;
                    }
                    4 => assert_eq!((e[2], e[5]), (0xff, 1)),
                    other => panic!("unexpected MADT entry type {other}"),
                }
                off += len;
            }
            assert_eq!(off, madt.len());
            assert_eq!((lapics, ioapics, overrides), (vcpus, 1, 1));
        }
    }

    #[test]
    fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
        let mem = create_guest_memory(64).unwrap();
        let all = tables(&mem, create_acpi_tables(&mem, 1).unwrap());
        let fadt = find(&all, b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!((fadt[8], fadt[131]), (6, 5), "FADT revision 6.5");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        let gas = |off: usize| {
            (
                fadt[off],
                fadt[off + 1],
                fadt[off + 3],
                u64_at(fadt, off + 4),
            )
        };
        assert_eq!(gas(116), (1, 8, 1, layout::ACPI_RESET_PORT));
        assert_eq!(fadt[128], layout::ACPI_RESET_VALUE);
        assert_eq!(gas(244), (1, 8, 1, layout::ACPI_SLEEP_CONTROL_PORT));
        assert_eq!(gas(256), (1, 8, 1, layout::ACPI_SLEEP_STATUS_PORT));
        // No FACS on a hardware-reduced platform; DSDT only through the 64-bit field.
        assert_eq!((u32_at(fadt, 36), u64_at(fadt, 132)), (0, 0));
        assert_eq!(u32_at(fadt, 40), 0);
        let dsdt_addr = u64_at(fadt, 140);
        assert_eq!(&read(&mem, dsdt_addr, 4), b"DSDT");
        const IAPC_8042: u16 = 1 << 1;
        assert_eq!(u16::from_le_bytes([fadt[109], fadt[110]]) & IAPC_8042, 0);
    }

    #[test]
    fn dsdt_names_s5_com1_and_pvpanic() {
        let mem = create_guest_memory(64).unwrap();
        let all = tables(&mem, create_acpi_tables(&mem, 1).unwrap());
        let dsdt = find(&all, b"DSDT");
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        // Name(\_S5_, Package(4) { 5, 5, 0, 0 }): PackageOp, length, count, BytePrefix 5 ...
        let s5 = layout::ACPI_S5_SLP_TYP;
        assert!(has(&[
            b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 4, 0x0a, s5, 0x0a, s5
        ]));
        assert!(has(b"COM1"));
        // EISAID("PNP0501") encodes to 0x0105d041.
        assert!(has(&0x0105_d041u32.to_le_bytes()));
        // IO(Decode16, 0x3f8, 0x3f8, 1, 8) and IO(Decode16, 0x505, 0x505, 1, 1).
        assert!(has(&[0x47, 1, 0xf8, 0x03, 0xf8, 0x03, 1, 8]));
        assert!(has(&[0x47, 1, 0x05, 0x05, 0x05, 0x05, 1, 1]));
        assert!(has(b"QEMU0001\0"));
    }

    #[test]
    fn dsdt_describes_pci_hotplug() {
        let dsdt = dsdt();
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"PHPR") && has(b"PCIU") && has(b"PCNT"));
        // OperationRegion (PCST, SystemIO (1), 0xae00 (WordPrefix), 12 (BytePrefix)).
        assert!(has(&[
            0x5b, 0x80, b'P', b'C', b'S', b'T', 1, 0x0b, 0x00, 0xae, 0x0a, 12
        ]));
        for slot in 1..32u32 {
            let name = format!("S{slot:03}");
            // Name (_ADR, slot << 16): DWordPrefix and the address.
            let mut adr = b"_ADR\x0c".to_vec();
            adr.extend_from_slice(&(slot << 16).to_le_bytes());
            assert!(has(name.as_bytes()), "{name}");
            assert!(has(&adr), "{name}'s _ADR");
        }
    }

    #[test]
    fn dsdt_has_the_power_button_and_the_ged() {
        let mem = create_guest_memory(64).unwrap();
        let all = tables(&mem, create_acpi_tables(&mem, 1).unwrap());
        let dsdt = find(&all, b"DSDT");
        let has = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        // EISAID("PNP0C0C") = 0x0c0cd041.
        assert!(has(b"PWRB"));
        assert!(has(&0x0c0c_d041u32.to_le_bytes()));
        assert!(has(b"GED_"));
        assert!(has(b"ACPI0013\0"));
        // Extended IRQ descriptor: consumer, edge, active high, exclusive; one interrupt.
        let mut irq = vec![0x89, 6, 0, 0b0011, 1];
        irq.extend_from_slice(&layout::ACPI_GED_IRQ.to_le_bytes());
        assert!(has(&irq));
        // OperationRegion (GDST, SystemIO (1), 0x608 (WordPrefix), 1 (OnePrefix)).
        let port = (layout::ACPI_GED_PORT as u16).to_le_bytes();
        assert!(has(&[
            0x5b, 0x80, b'G', b'D', b'S', b'T', 1, 0x0b, port[0], port[1], 0x01
        ]));
        assert!(has(b"GDAT"));
        // Method (_EVT, 1, Serialized): flags 0b1001.
        let evt = dsdt.windows(4).position(|w| w == b"_EVT").unwrap();
        assert_eq!(dsdt[evt + 4], 0b1001);
        // Notify (\_SB_.PWRB, 0x80): NotifyOp, root, dual-name prefix, the two names.
        assert!(has(b"\x86\\\x2e_SB_PWRB\x0a\x80"));
    }

    #[test]
    fn bad_vcpu_counts_are_refused() {
        let mem = create_guest_memory(64).unwrap();
        assert!(matches!(
            create_acpi_tables(&mem, 0),
            Err(AcpiError::VcpuCount { .. })
        ));
        assert!(matches!(
            create_acpi_tables(&mem, layout::MAX_VCPUS + 1),
            Err(AcpiError::VcpuCount { .. })
        ));
    }
}
