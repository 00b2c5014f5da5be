//! The one error type of the crate.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while preparing artifacts or running the emulated host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host tool the recipe needs is not installed.
    #[error("`{tool}` not found in PATH (install the Debian package `{package}`)")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    /// A tool ran but failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// Spawning or waiting for a process failed.
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A filesystem operation failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// apt knows no suitable kernel package.
    #[error("no Debian kernel package found for `{what}`: {detail}")]
    NoKernelPackage { what: &'static str, detail: String },
    /// A kernel image or module does not look the way the recipe expects.
    #[error("{}: {reason}", path.display())]
    BadKernel { path: PathBuf, reason: String },
    /// A module the recipe needs is not in the kernel package.
    #[error("kernel module `{module}` not found under {}", tree.display())]
    MissingModule { module: String, tree: PathBuf },
    /// An argument to the runner cannot be expressed safely.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The emulated host did not reach the command in time (twice, when returned by `run`).
    #[error("emulated host did not reach the command within {after:?} (QEMU killed)")]
    BootStalled { after: Duration },
    /// The run exceeded its time limit; QEMU was killed.
    #[error(
        "emulated host timed out after {:.0?} (QEMU killed); output so far:\n{output}",
        timeout
    )]
    Timeout { timeout: Duration, output: String },
    /// The emulated host stopped without reporting the command's exit status.
    #[error("emulated host stopped without an exit status (QEMU {qemu_status}); output:\n{output}\nQEMU stderr:\n{stderr}")]
    NoExitStatus {
        qemu_status: String,
        output: String,
        stderr: String,
    },
    /// QEMU could not listen on a forwarded host port (most likely in use); the emulated
    /// host never started.
    #[error("cannot forward the port (is it in use?): {detail}")]
    ForwardUnavailable { detail: String },
    /// A guest boot check did not produce the expected ready line.
    #[error("guest did not report ready: {0}")]
    GuestNotReady(String),
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
