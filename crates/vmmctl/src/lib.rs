//! What fvd needs of a VMM: start an fv-vmm process for a VM, find it again after fvd
//! restarts, learn when and why it ended, and send it commands.
//!
//! Each VM runs in a directory of its own (a [`RunDir`]) holding everything needed to find
//! it again: the config it started with, its pid (with the process's start time, so that
//! a recycled pid is not mistaken for it), its API, serial and exit files. fv-vmm runs in a
//! process group of its own, so it outlives fvd; exits are watched through a pidfd, which
//! works whether or not fvd is the parent, and the reason is read from the exit file
//! fv-vmm writes (`--exit-file`).
//!
//! Knows nothing of users, the object model or KVM.

#![forbid(unsafe_code)]

mod client;
mod process;
mod rundir;

pub use client::http_request;
pub use process::{Exit, Vmm};
pub use rundir::RunDir;

use std::path::PathBuf;

/// What can go wrong starting, finding or commanding a VMM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fv-vmm failed to start: {0}")]
    StartFailed(String),
    #[error("fv-vmm (pid {pid}) did not open its API socket within {secs} s")]
    StartTimeout { pid: i32, secs: u64 },
    #[error("cannot watch process {pid}")]
    Pidfd {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("the VMM API: {0}")]
    Api(#[source] std::io::Error),
    #[error("the VMM refused {method} {path}: {status} {message}")]
    Refused {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
}
