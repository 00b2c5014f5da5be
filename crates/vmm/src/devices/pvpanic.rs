//! The pvpanic ISA device (QEMU's `pvpanic`, ACPI id QEMU0001) at `layout::PVPANIC_PORT`:
//! the guest kernel announces a panic here, so the VM ends as crashed instead of hanging.

use std::sync::Arc;

use crate::devices::bus::BusDevice;
use crate::exit::{ExitEvent, VmExit};

/// The guest panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
/// A crash kernel (kdump) was loaded and takes over; the guest keeps running.
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;
/// Events we report in the capabilities register; the guest sends only these.
const CAPABILITIES: u8 = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;

pub const CRASH_MESSAGE: &str = "guest kernel panic (pvpanic)";

pub struct PvPanic {
    exit: Arc<ExitEvent>,
    crash_loaded: bool,
}

impl PvPanic {
    pub fn new(exit: Arc<ExitEvent>) -> Self {
        PvPanic {
            exit,
            crash_loaded: false,
        }
    }

    /// True once the guest said a crash kernel took over after a panic.
    pub fn crash_loaded(&self) -> bool {
        self.crash_loaded
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = CAPABILITIES;
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&event) = data.first().filter(|_| offset == 0) else {
            return;
        };
        if event & PVPANIC_PANICKED != 0 {
            self.exit.request(VmExit::Crash(CRASH_MESSAGE.into()));
        } else if event & PVPANIC_CRASH_LOADED != 0 {
            self.crash_loaded = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (Arc<ExitEvent>, PvPanic) {
        let exit = Arc::new(ExitEvent::new().unwrap());
        (exit.clone(), PvPanic::new(exit))
    }

    #[test]
    fn reads_capabilities() {
        let (_, mut dev) = device();
        let mut b = [0u8; 2];
        dev.read(0, &mut b);
        assert_eq!(b, [3, 0]);
        dev.read(1, &mut b);
        assert_eq!(b, [0, 0]);
        dev.read(0, &mut []);
    }

    #[test]
    fn panic_ends_the_vm_as_crashed() {
        let (exit, mut dev) = device();
        dev.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(
            exit.reason(),
            Some(VmExit::Crash("guest kernel panic (pvpanic)".into()))
        );
    }

    #[test]
    fn crash_loaded_is_remembered_not_an_exit() {
        let (exit, mut dev) = device();
        dev.write(0, &[PVPANIC_CRASH_LOADED]);
        dev.write(0, &[0]);
        dev.write(1, &[PVPANIC_PANICKED]);
        dev.write(0, &[]);
        assert!(dev.crash_loaded());
        assert_eq!(exit.reason(), None);
    }
}
