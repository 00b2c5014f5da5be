//! The i8042 keyboard controller, only for its CPU reset line (Linux `reboot=k`).

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::bus::BusDevice;
use crate::exit::{ExitEvent, VmExit};

/// Turns the controller's reset pulse into a reboot request.
pub struct ResetTrigger(pub Arc<ExitEvent>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request(VmExit::Reboot);
        Ok(())
    }
}

pub struct I8042(I8042Device<ResetTrigger>);

impl I8042 {
    pub fn new(exit: Arc<ExitEvent>) -> Self {
        I8042(I8042Device::new(ResetTrigger(exit)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data, u8::try_from(offset)) {
            ([b], Ok(offset)) => *b = self.0.read(offset),
            (data, _) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let ([value], Ok(offset)) = (data, u8::try_from(offset)) {
            // The trigger is infallible.
            let _ = self.0.write(offset, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_reboots() {
        let exit = Arc::new(ExitEvent::new().unwrap());
        let mut dev = I8042::new(exit.clone());
        dev.write(0, &[0xfe]);
        dev.write(4, &[0xfe, 0]);
        assert_eq!(exit.reason(), None);
        dev.write(4, &[0xfe]);
        assert_eq!(exit.reason(), Some(VmExit::Reboot));
    }
}
