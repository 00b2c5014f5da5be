//! The hardware-reduced ACPI sleep control, sleep status and reset registers the FADT points
//! at (`layout::ACPI_PM_PORT`..+`ACPI_PM_PORT_LEN`): how the guest powers off and reboots.

use std::sync::Arc;

use crate::arch::layout;
use crate::devices::bus::BusDevice;
use crate::exit::{ExitEvent, VmExit};

/// Register offsets from `ACPI_PM_PORT`, as the FADT announces them.
const SLEEP_CONTROL: u64 = layout::ACPI_SLEEP_CONTROL_PORT - layout::ACPI_PM_PORT;
const SLEEP_STATUS: u64 = layout::ACPI_SLEEP_STATUS_PORT - layout::ACPI_PM_PORT;
const RESET: u64 = layout::ACPI_RESET_PORT - layout::ACPI_PM_PORT;

/// Sleep control register: SLP_TYP in bits 2-4, SLP_EN in bit 5 (ACPI 6.5 section 4.8.3.7).
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;
const SLP_EN: u8 = 1 << 5;
/// Sleep status register: WAK_STS, write 1 to clear.
const WAK_STS: u8 = 1 << 7;

pub struct AcpiPmDevice {
    exit: Arc<ExitEvent>,
    /// Set once a sleep request has been accepted, so a guest polling WAK_STS sees it.
    wake_status: bool,
}

impl AcpiPmDevice {
    pub fn new(exit: Arc<ExitEvent>) -> Self {
        AcpiPmDevice {
            exit,
            wake_status: false,
        }
    }

    fn read_byte(&self, offset: u64) -> u8 {
        match offset {
            SLEEP_STATUS if self.wake_status => WAK_STS,
            _ => 0,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            SLEEP_CONTROL if value & SLP_EN != 0 => {
                let slp_typ = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                // Only S5 is supported; S1-S4 requests are ignored and the guest carries on.
                if slp_typ == layout::ACPI_S5_SLP_TYP {
                    self.wake_status = true;
                    self.exit.request(VmExit::PowerOff);
                }
            }
            SLEEP_STATUS if value & WAK_STS != 0 => self.wake_status = false,
            RESET if value == layout::ACPI_RESET_VALUE => self.exit.request(VmExit::Reboot),
            _ => {}
        }
    }
}

impl BusDevice for AcpiPmDevice {
    /// A wider access covers consecutive registers, one byte each.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .map_or(0, |off| self.read_byte(off));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Some(off) = offset.checked_add(i as u64) {
                self.write_byte(off, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (Arc<ExitEvent>, AcpiPmDevice) {
        let exit = Arc::new(ExitEvent::new().unwrap());
        (exit.clone(), AcpiPmDevice::new(exit))
    }

    #[test]
    fn s5_powers_off_and_sets_wak_sts() {
        let (exit, mut dev) = device();
        let mut b = [0xffu8];
        dev.read(SLEEP_STATUS, &mut b);
        assert_eq!(b, [0]);
        // What Linux writes: (SLP_TYP << 2) | SLP_EN.
        dev.write(SLEEP_CONTROL, &[(layout::ACPI_S5_SLP_TYP << 2) | SLP_EN]);
        assert_eq!(exit.reason(), Some(VmExit::PowerOff));
        dev.read(SLEEP_STATUS, &mut b);
        assert_eq!(b, [WAK_STS]);
        dev.write(SLEEP_STATUS, &[WAK_STS]);
        dev.read(SLEEP_STATUS, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn other_sleep_types_and_values_are_ignored() {
        let (exit, mut dev) = device();
        dev.write(SLEEP_CONTROL, &[(3 << 2) | SLP_EN]);
        dev.write(SLEEP_CONTROL, &[layout::ACPI_S5_SLP_TYP << 2]);
        dev.write(RESET, &[0x06]);
        dev.write(2, &[0xff]);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn reset_value_reboots() {
        let (exit, mut dev) = device();
        dev.write(RESET, &[layout::ACPI_RESET_VALUE]);
        assert_eq!(exit.reason(), Some(VmExit::Reboot));
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let (exit, mut dev) = device();
        let mut wide = [0xffu8; 8];
        dev.read(0, &mut wide);
        assert_eq!(wide, [0; 8]);
        dev.read(u64::MAX, &mut wide);
        dev.write(u64::MAX - 1, &[0xff; 8]);
        dev.write(100, &[layout::ACPI_RESET_VALUE]);
        dev.read(0, &mut []);
        dev.write(0, &[]);
        assert_eq!(exit.reason(), None);
        // A 32-bit write at offset 4 still carries the reset value in its first byte.
        dev.write(RESET, &u32::from(layout::ACPI_RESET_VALUE).to_le_bytes());
        assert_eq!(exit.reason(), Some(VmExit::Reboot));
    }
}
