//! The ACPI Generic Event Device (GED, `ACPI0013`): how the VMM raises platform events on a
//! hardware-reduced ACPI machine, which has no GPE blocks or SCI. Today its one event is
//! the power button.
//!
//! The DSDT (`arch::acpi`) describes the GED with an edge-triggered interrupt on
//! `layout::ACPI_GED_IRQ` (an IOAPIC pin, fired through an irqfd) and an `_EVT` method that
//! reads the event register at `layout::ACPI_GED_PORT` and, when `GED_POWER_BUTTON` is set,
//! does `Notify(\_SB_.PWRB, 0x80)` on the `PNP0C0C` power button device. Linux's ACPI
//! button driver then reports KEY_POWER on an input device, and the guest's own policy
//! (acpid, systemd-logind) shuts it down.
//!
//! The event register is one byte: reading it returns the events raised since the last
//! read and clears them, so each press is handled once however the guest's interrupt and
//! reads interleave. Writes are ignored.

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// Event bit: the power button was pressed.
pub const GED_POWER_BUTTON: u8 = 1 << 0;
/// Event bit: a PCI slot changed (`devices::pci_hotplug` says which).
pub const GED_PCI_HOTPLUG: u8 = 1 << 1;

pub struct AcpiGed {
    /// Events raised and not yet read by the guest.
    pending: u8,
    /// Registered as an irqfd on `layout::ACPI_GED_IRQ`: a write pulses the line.
    irq: EventFd,
}

impl AcpiGed {
    pub fn new(irq: EventFd) -> Self {
        AcpiGed { pending: 0, irq }
    }

    /// Raises `events` (bits such as `GED_POWER_BUTTON`) and interrupts the guest.
    pub fn notify(&mut self, events: u8) -> std::io::Result<()> {
        self.pending |= events;
        self.irq.write(1)
    }

    /// Power-on state: no events pending (a reset in place forgets an unanswered press).
    pub fn reset(&mut self) {
        self.pending = 0;
    }
}

impl BusDevice for AcpiGed {
    /// The guest's AML reads one byte; a wider read gets the events in its first byte.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(first) = data.first_mut() {
                *first = self.pending;
                self.pending = 0;
            }
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn ged() -> (AcpiGed, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let seen = irq.try_clone().unwrap();
        (AcpiGed::new(irq), seen)
    }

    #[test]
    fn a_press_interrupts_and_reads_once() {
        let (mut ged, irq) = ged();
        let mut b = [0xffu8];
        ged.read(0, &mut b);
        assert_eq!(b, [0]);
        assert!(irq.read().is_err(), "no interrupt before a press");
        ged.notify(GED_POWER_BUTTON).unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        ged.read(0, &mut b);
        assert_eq!(b, [GED_POWER_BUTTON]);
        ged.read(0, &mut b);
        assert_eq!(b, [0], "read clears");
    }

    #[test]
    fn presses_before_a_read_merge_and_reset_forgets_them() {
        let (mut ged, irq) = ged();
        ged.notify(GED_POWER_BUTTON).unwrap();
        ged.notify(GED_POWER_BUTTON).unwrap();
        assert_eq!(irq.read().unwrap(), 2);
        let mut wide = [0xffu8; 4];
        ged.read(0, &mut wide);
        assert_eq!(wide, [GED_POWER_BUTTON, 0, 0, 0]);
        ged.notify(GED_POWER_BUTTON).unwrap();
        ged.reset();
        let mut b = [0xffu8];
        ged.read(0, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn odd_accesses_do_not_panic_or_clear() {
        let (mut ged, _irq) = ged();
        ged.notify(GED_POWER_BUTTON).unwrap();
        ged.write(0, &[0xff]);
        ged.read(0, &mut []);
        let mut b = [0xffu8; 2];
        ged.read(u64::MAX, &mut b);
        assert_eq!(b, [0, 0]);
        let mut b = [0u8];
        ged.read(0, &mut b);
        assert_eq!(b, [GED_POWER_BUTTON]);
    }
}
