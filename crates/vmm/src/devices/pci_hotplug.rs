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
//! Registers (32-bit, at `layout::PCI_HOTPLUG_PORT`):
//! - 0: `PCIU`, slots plugged since the last read (read to clear);
//! - 4: `PCID`, slots whose device should be removed since the last read (read to clear);
//!   unused until unplug exists;
//! - 8: `B0EJ`, written by `_EJ0` with the slots the guest has let go of; ignored for now
//!   (no slot has `_EJ0`, so the guest never ejects).

use crate::devices::bus::BusDevice;

/// Length of the register block.
pub const REGISTERS_LEN: u64 = 12;

#[derive(Default)]
pub struct PciHotplug {
    up: u32,
    down: u32,
}

impl PciHotplug {
    /// Marks `slot` (1-31) as plugged, for the guest's next read of `PCIU`.
    pub fn plugged(&mut self, slot: u8) {
        if let Some(bit) = 1u32.checked_shl(u32::from(slot)) {
            self.up |= bit;
        }
    }

    /// Power-on state: nothing pending.
    pub fn reset(&mut self) {
        self.up = 0;
        self.down = 0;
    }
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

    /// `B0EJ` is the only writable register, and nothing ejects yet (no slot has `_EJ0`).
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(h: &mut PciHotplug, offset: u64) -> u32 {
        let mut b = [0xffu8; 4];
        h.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn plugged_slots_read_once() {
        let mut h = PciHotplug::default();
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
        h.write(8, &[1, 0, 0, 0]);
        h.reset();
        assert_eq!(read(&mut h, 0), 0);
    }
}
