//! The VMM's control API: a small, strict HTTP/1.1 server on a Unix socket.
//!
//! One thread ("fv-api") parses each request into a [`VmmAction`] (`http`), sends it with a
//! reply channel to the VMM's event loop, wakes that loop through an `EventFd`, and turns the
//! reply into an HTTP response (`server`). The VMM decides whether an action fits the VM's
//! state; this module only speaks HTTP. See `docs/vmm-api.md` for the wire contract.

pub mod balloon;
pub mod http;
pub mod server;

use std::sync::mpsc::Sender;

use serde::{Deserialize, Serialize};

pub use balloon::{BalloonInfo, BalloonStatistics};
pub use server::start_api_server;

use crate::metrics::ExitCountersSnapshot;

/// A command for the VMM, parsed from one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmAction {
    /// `GET /vm`
    GetInfo,
    /// `PUT /vm/pause`
    Pause,
    /// `PUT /vm/resume`
    Resume,
    /// `PUT /vm/stop`: hard stop; the VMM process then exits with status 0.
    Stop,
    /// `PUT /vm/reset`: hard reset in place.
    Reset,
    /// `PUT /vm/power-button`: press the ACPI power button; the guest shuts itself down.
    PowerButton,
    /// `GET /vm/balloon`: the balloon's target, size and the guest's last statistics.
    GetBalloon,
    /// `PUT /vm/balloon`: ask the guest to give `target_mib` MiB to the balloon.
    SetBalloon { target_mib: u64 },
}

/// The VM's run state, serialised as `"Running"` / `"Paused"`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum VmState {
    Running,
    Paused,
}

/// The body of `GET /vm`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VmInfo {
    pub state: VmState,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub uptime_ms: u64,
    pub exits: ExitCountersSnapshot,
    /// The VM's PCI devices other than the host bridge, in slot order.
    #[serde(default)]
    pub devices: Vec<DeviceInfo>,
}

/// One device as `GET /vm` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The VMM's name for it: `net0`, `net1`... in `--net` order, `blk0`, `blk1`... in
    /// `--disk` order, `rng`.
    pub id: String,
    /// `virtio-blk`, `virtio-rng`, ...
    pub kind: String,
    /// Its PCI address as the guest sees it (`/sys/bus/pci/devices/<pci>`).
    pub pci: String,
    /// A NIC's tap: the name given, or the one the kernel picked for a created tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// A NIC's MAC address, `52:54:00:12:34:56`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// A disk's image (file or block device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<std::path::PathBuf>,
    /// Whether a disk is read-only to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
}

/// What a successful action returns: `Info` becomes 200 + JSON, `Empty` becomes 204.
#[derive(Debug, Clone, PartialEq)]
pub enum VmmData {
    Info(VmInfo),
    /// `GET /vm/balloon`: 200 + JSON.
    Balloon(BalloonInfo),
    Empty,
}

/// Why the VMM refused or failed an action. The message is sent to the client as is.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The action does not fit the VM's state (e.g. "the VM is already paused"): HTTP 400.
    #[error("{0}")]
    BadState(&'static str),
    /// The action was valid but failed: HTTP 500.
    #[error("{0}")]
    Failed(String),
    /// The request's values are wrong for this VM (e.g. a balloon larger than its memory):
    /// HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// The VM has no such device (e.g. no balloon): HTTP 409.
    #[error("{0}")]
    NoDevice(&'static str),
}

impl ActionError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            ActionError::BadState(_) => 400,
            ActionError::Failed(_) => 500,
            ActionError::BadRequest(_) => 400,
            ActionError::NoDevice(_) => 409,
        }
    }
}

/// One action on its way to the VMM; the VMM answers exactly once on `reply`.
#[derive(Debug)]
pub struct ApiRequest {
    pub action: VmmAction,
    pub reply: Sender<Result<VmmData, ActionError>>,
    /// Gets `()` once the response is written to the client, or disconnects if it cannot
    /// be: the VMM waits on it before exiting after a stop, so the client sees its 204.
    pub sent: std::sync::mpsc::Receiver<()>,
}
