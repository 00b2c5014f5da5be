//! Why the VM ended, and how a device or vCPU thread tells the main thread so.
//!
//! The first reason reported wins: a guest that panics and then triple-faults
//! is reported as the panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the VM ended. Each maps to one process exit status (see `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered itself off (ACPI S5), or a client asked for a hard stop.
    PowerOff,
    /// The guest asked for a reboot (ACPI reset register, i8042 reset line).
    Reboot,
    /// The guest crashed: triple fault, KVM internal error, emulation failure,
    /// failed entry, or a panic it announced through pvpanic.
    Crash(String),
    /// The VMM itself failed while the guest ran.
    VmmError(String),
}

impl VmExit {
    /// Process exit status documented in the README and `docs/vmm.md`.
    pub fn status(&self) -> i32 {
        match self {
            VmExit::PowerOff => 0,
            VmExit::Reboot => 10,
            VmExit::Crash(_) => 11,
            VmExit::VmmError(_) => 1,
        }
    }
}

impl VmExit {
    /// The reason's name in the exit file.
    pub fn reason(&self) -> &'static str {
        match self {
            VmExit::PowerOff => "poweroff",
            VmExit::Reboot => "reboot",
            VmExit::Crash(_) => "crash",
            VmExit::VmmError(_) => "vmm_error",
        }
    }

    /// The exit file's content: `{"status": N, "reason": "...", "detail": "..."}`.
    pub fn to_json(&self) -> String {
        let detail = match self {
            VmExit::Crash(why) | VmExit::VmmError(why) => why.as_str(),
            VmExit::PowerOff | VmExit::Reboot => "",
        };
        serde_json::json!({
            "status": self.status(),
            "reason": self.reason(),
            "detail": detail,
        })
        .to_string()
    }
}

/// Shared by every thread that can end the VM; the main loop polls `eventfd`.
pub struct ExitEvent {
    reason: Mutex<Option<VmExit>>,
    /// Mirrors `reason.is_some()`, cheap enough to check after every vCPU exit.
    requested: AtomicBool,
    eventfd: EventFd,
}

impl ExitEvent {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitEvent {
            reason: Mutex::new(None),
            requested: AtomicBool::new(false),
            eventfd: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records `exit` unless an earlier reason is already recorded, and wakes the main loop.
    pub fn request(&self, exit: VmExit) {
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            *reason = Some(exit);
            self.requested.store(true, Ordering::Release);
        }
        // A full counter (u64::MAX - 1 writes) still leaves the fd readable, so the error is moot.
        let _ = self.eventfd.write(1);
    }

    /// Whether the VM is ending: vCPUs stop running guest code once it is.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<VmExit> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets a recorded reason (used when the VM is reset in place).
    pub fn clear(&self) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.requested.store(false, Ordering::Release);
        let _ = self.eventfd.read();
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_maps_to_status() {
        let e = ExitEvent::new().unwrap();
        assert_eq!(e.reason(), None);
        assert!(!e.is_requested());
        e.request(VmExit::Crash("pvpanic".into()));
        assert!(e.is_requested());
        e.request(VmExit::Reboot);
        assert_eq!(e.reason().unwrap().status(), 11);
        e.clear();
        e.request(VmExit::Reboot);
        assert_eq!(e.reason(), Some(VmExit::Reboot));
        assert_eq!(VmExit::PowerOff.status(), 0);
        assert_eq!(VmExit::VmmError("x".into()).status(), 1);
    }
}
