//! fvd, the control domain: owns the XenAPI object model (`fv-xapi`, in SQLite), serves the
//! API over XML-RPC at `/` and JSON-RPC at `/jsonrpc` (HTTPS, and a local Unix socket for
//! the CLI), and runs one fv-vmm per running VM (`fv-vmmctl`). VMs keep running when fvd
//! stops; a restarted fvd adopts them and reconciles every VM's power state.

#![forbid(unsafe_code)]

mod bootstrap;
mod console;
mod daemon;
mod dhcp;
mod error;
mod fields;
mod http_auth;
mod listen;
mod metrics;
mod network;
mod objects;
mod options;
mod rpc;
mod storage;
mod tls;
mod transfer;
mod vdi_busy;
mod vm;
mod web;

pub use daemon::{run, Daemon};
pub use error::Error;
pub use options::Options;
