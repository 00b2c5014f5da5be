//! The PCI hot-plug controller: how the VMM tells the guest that a device appeared in a
//! slot of bus 0, with ACPI (Linux's `acpiphp`), as QEMU's PIIX4 and Cloud Hypervisor do.
//!
//! The DSDT (`arch::acpi`) describes `\_SB_.PHPR` with this device's registers and one
//! `\_SB_.PCI0.Sxx` object per slot (`_ADR`, `_SUN`). To plug a device the VMM puts it on
//! the bus, marks its slot here and raises `GED_PCI_HOTPLUG`; the GED's `_EVT` calls
//! `\_SB_.PCI0.PCNT`, which reads the slots that came up and sends each a device-check
//! notification; `acpiphp` then scans the slot, gives the device its resources and binds
//! its driver.
//!
//! To unplug, the VMM sets the slot's `PCID` bit and raises the same event; `PCNT` sends an
//! eject request; the guest's driver lets go of the device and `_EJ0` writes the slot's bit
//! to `B0EJ`; the VMM then takes the device off the bus. Only slots the VMM asked for are
//! ejected: a guest cannot make it remove anything else.
//!
//! Registers (32-bit, at `layout::PCI_HOTPLUG_PORT`):
//! - 0: `PCIU`, slots plugged since the last read (read to clear);
//! - 4: `PCID`, slots whose device the VMM wants removed, since the last read (read to
//!   clear);
//! - 8: `B0EJ`, written by `_EJ0` with the slot the guest has let go of.

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// Length of the register block.
pub const REGISTERS_LEN: u64 = 12;

pub struct PciHotplug {
    up: u32,
    down: u32,
    /// Slots the VMM asked the guest to eject, until it does.
    removing: u32,
    /// Slots the guest ejected, for the VMM to take off the bus.
    ejected: u32,
    /// Wakes the VMM's main loop when the guest ejects a slot.
    ejected_event: EventFd,
}

impl PciHotplug {
    pub fn new(ejected_event: EventFd) -> Self {
        PciHotplug {
            up: 0,
            down: 0,
            removing: 0,
            ejected: 0,
            ejected_event,
        }
    }

    /// Marks `slot` (1-31) as plugged, for the guest's next read of `PCIU`.
    pub fn plugged(&mut self, slot: u8) {
        self.up |= bit(slot);
    }

    /// Asks the guest to eject `slot`'s device; false if that was already asked.
    pub fn request_removal(&mut self, slot: u8) -> bool {
        let b = bit(slot);
        if self.removing & b != 0 {
            return false;
        }
        self.removing |= b;
        self.down |= b;
        true
    }

    /// Whether the guest was asked to eject `slot` and has not yet.
    pub fn is_removing(&self, slot: u8) -> bool {
        self.removing & bit(slot) != 0
    }

    /// The slots the guest ejected since the last call.
    pub fn take_ejected(&mut self) -> u32 {
        std::mem::take(&mut self.ejected)
    }

    /// The eventfd written when the guest ejects a slot.
    pub fn ejected_event(&self) -> &EventFd {
        &self.ejected_event
    }

    /// Power-on state: nothing pending. Removals asked for stay asked: after a reset the
    /// guest boots with the device still there, and the VMM asks again when it is told to.
    pub fn reset(&mut self) {
        self.up = 0;
        self.down = 0;
        self.removing = 0;
    }
}

fn bit(slot: u8) -> u32 {
    1u32.checked_shl(u32::from(slot)).unwrap_or(0)
}

impl BusDevice for PciHotplug {
    /// The AML reads whole registers; other widths and offsets read zeroes.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match (offset, data.len()) {
            (0, 4) => std::mem::take(&mut self.up),
            (4, 4) => std::mem::take(&mut self.down),
            _ => return,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// `B0EJ`: the guest let go of these slots; only those the VMM asked for count.
    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset != 8 {
            return;
        }
        let ejected = u32::from_le_bytes(bytes) & self.removing;
        if ejected != 0 {
            self.removing &= !ejected;
            self.ejected |= ejected;
            let _ = self.ejected_event.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(h: &mut PciHotplug, offset: u64) -> u32 {
        let mut b = [0xffu8; 4];
        h.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn hotplug() -> (PciHotplug, EventFd) {
        let ev = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let seen = ev.try_clone().unwrap();
        (PciHotplug::new(ev), seen)
    }

    #[test]
    fn plugged_slots_read_once() {
        let (mut h, _) = hotplug();
        assert_eq!(read(&mut h, 0), 0);
        h.plugged(3);
        h.plugged(5);
        h.plugged(40); // no such slot: ignored
        assert_eq!(read(&mut h, 0), 1 << 3 | 1 << 5);
        assert_eq!(read(&mut h, 0), 0, "read to clear");
        assert_eq!(read(&mut h, 4), 0);
        h.plugged(7);
        let mut narrow = [0xffu8; 2];
        h.read(0, &mut narrow);
        assert_eq!(narrow, [0, 0], "only whole registers");
        h.reset();
        assert_eq!(read(&mut h, 0), 0);
    }

    #[test]
    fn only_slots_asked_for_are_ejected() {
        let (mut h, ev) = hotplug();
        // A guest ejecting on its own gets nothing removed.
        h.write(8, &(1u32 << 2).to_le_bytes());
        assert_eq!(h.take_ejected(), 0);
        assert!(ev.read().is_err(), "no wakeup");
        assert!(h.request_removal(4));
        assert!(!h.request_removal(4), "asked once");
        assert!(h.is_removing(4));
        assert_eq!(read(&mut h, 4), 1 << 4);
        assert_eq!(read(&mut h, 4), 0, "read to clear");
        h.write(8, &(1u32 << 4 | 1 << 2).to_le_bytes());
        assert_eq!(ev.read().unwrap(), 1);
        assert_eq!(h.take_ejected(), 1 << 4);
        assert!(!h.is_removing(4));
        h.write(8, &(1u32 << 4).to_le_bytes());
        assert_eq!(h.take_ejected(), 0, "ejected once");
    }
}
