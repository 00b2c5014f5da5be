//! The i8042 keyboard controller's reset line, and nothing else of it.
//!
//! Linux reboots by writing 0xfe to port 0x64 (`reboot=k`, and the fallback of its other
//! reboot methods; our reset-vector stub does it too). We emulate no keyboard: reads float
//! high (0xff), as on a machine without the controller, so a guest that probes for one
//! learns at once that none is there instead of waiting for answers (over a second).

use std::sync::Arc;

use super::bus::BusDevice;
use crate::exit::{ExitEvent, VmExit};

/// Offset of the command/status port (0x64) from the data port (0x60).
const COMMAND_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

pub struct I8042ResetLine {
    exit: Arc<ExitEvent>,
}

impl I8042ResetLine {
    pub fn new(exit: Arc<ExitEvent>) -> Self {
        I8042ResetLine { exit }
    }
}

impl BusDevice for I8042ResetLine {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data == [CMD_RESET_CPU] {
            self.exit.request(VmExit::Reboot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reset_command_reboots() {
        let exit = Arc::new(ExitEvent::new().unwrap());
        let mut dev = I8042ResetLine::new(exit.clone());
        let mut status = [0u8; 1];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0xff], "no controller answers");
        dev.write(0, &[0xfe]);
        dev.write(COMMAND_OFFSET, &[0xfe, 0]);
        dev.write(COMMAND_OFFSET, &[0x20]);
        assert_eq!(exit.reason(), None);
        dev.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(exit.reason(), Some(VmExit::Reboot));
    }
}
