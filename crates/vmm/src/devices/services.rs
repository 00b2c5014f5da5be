//! The guest-service devices, after the disks, NICs and rng on the PCI bus: a virtio
//! console on a Unix socket (`--console`, the guest's `/dev/hvc0`), virtio-vsock
//! (`--vsock`) and the memory balloon (`--balloon`), in that order.
//!
//! The sockets are bound here, at build time, and removed when the VMM ends (when the
//! returned [`GuestServices`] is dropped), unless another file has taken their place
//! meanwhile. A socket file left behind (fv-vmm killed) is replaced at the next start when
//! nobody listens on it; a socket someone listens on, or a path that is not a socket, is
//! refused.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fv_virtio::balloon::{Balloon, BalloonError};
use fv_virtio::console::{Console, ConsoleError, SocketBackend};
use fv_virtio::vsock::{Vsock, VsockError};
use fv_virtio::VirtioDevice;

use crate::api::ActionError;
use crate::config::VmConfig;
use crate::devices::balloon::BalloonControl;
use crate::devices::pci::PciRoot;
use crate::devices::virtio::{attach_virtio_pci, VirtioPciHandle, VirtioSetupError};
use crate::memory::GuestMemoryMmap;
use crate::vstate::irq::IrqRouting;
use crate::vstate::reclaim::GuestRamReclaimer;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{flag} socket {}: another process listens there", path.display())]
    SocketInUse { flag: &'static str, path: PathBuf },
    #[error(
        "{flag} socket {}: the path exists and is not a socket (refusing to replace it)",
        path.display()
    )]
    NotASocket { flag: &'static str, path: PathBuf },
    #[error("{flag} socket {}: cannot listen there", path.display())]
    Listen {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the virtio-console device")]
    Console(#[source] ConsoleError),
    #[error("--vsock: cannot create the virtio-vsock device")]
    Vsock(#[source] VsockError),
    #[error("cannot create the virtio-balloon device")]
    Balloon(#[source] BalloonError),
    #[error(transparent)]
    Virtio(#[from] VirtioSetupError),
}

/// A socket file we created: removed on drop if the path still names that very file.
struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket right after binding; `None` if it could not be read.
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: &Path) -> Self {
        let id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        SocketFile {
            path: path.to_path_buf(),
            id,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| self.id == Some((m.dev(), m.ino())));
        if ours {
            // Nothing to do about a failure at exit; the next start replaces a stale socket.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes `path` free for a socket: nothing there, or a stale socket nobody listens on
/// (removed). A live socket or anything else is refused.
fn free_socket_path(flag: &'static str, path: &Path) -> Result<(), ServiceError> {
    let listen = |source| ServiceError::Listen {
        flag,
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(listen(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServiceError::NotASocket {
            flag,
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServiceError::SocketInUse {
            flag,
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(listen)
        }
        Err(e) => Err(listen(e)),
    }
}

/// What the controller keeps of the guest-service devices: the balloon to steer, and the
/// socket files to remove at the end.
#[derive(Default)]
pub struct GuestServices {
    pub balloon: Option<BalloonControl>,
    _sockets: Vec<SocketFile>,
}

impl GuestServices {
    /// The balloon, or the API's answer for a VM that has none.
    pub fn balloon(&self) -> Result<&BalloonControl, ActionError> {
        self.balloon.as_ref().ok_or(ActionError::NoDevice(
            "the VM has no balloon (start it with --balloon)",
        ))
    }
}

/// Builds the console, vsock and balloon devices `config` asks for, each in the next free
/// PCI slot, and appends their handles to `handles`.
pub fn attach_guest_services(
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    routing: &Arc<IrqRouting>,
    pci: &Mutex<PciRoot>,
    handles: &mut Vec<VirtioPciHandle>,
) -> Result<GuestServices, ServiceError> {
    let mut services = GuestServices::default();
    let mut attach = |name: &str, device: Arc<Mutex<dyn VirtioDevice>>| {
        attach_virtio_pci(name, device, mem, routing, pci, config.seccomp)
            .map(|handle| handles.push(handle))
    };
    if let Some(console) = &config.console {
        let path = &console.socket;
        free_socket_path("--console", path)?;
        let backend = SocketBackend::bind(path).map_err(|source| ServiceError::Listen {
            flag: "--console",
            path: path.clone(),
            source,
        })?;
        services._sockets.push(SocketFile::new(path));
        let device = Console::new(backend).map_err(ServiceError::Console)?;
        attach("console", Arc::new(Mutex::new(device)))?;
    }
    if let Some(vsock) = &config.vsock {
        free_socket_path("--vsock", &vsock.socket)?;
        let device = Vsock::new(vsock.cid, &vsock.socket).map_err(ServiceError::Vsock)?;
        services._sockets.push(SocketFile::new(&vsock.socket));
        attach("vsock", Arc::new(Mutex::new(device)))?;
    }
    if let Some(balloon) = &config.balloon {
        let reclaimer = GuestRamReclaimer::new(mem.clone());
        let mut device =
            Balloon::new(reclaimer, balloon.stats_interval()).map_err(ServiceError::Balloon)?;
        if balloon.deflate_on_oom {
            device = device.with_deflate_on_oom();
        }
        let device = Arc::new(Mutex::new(device));
        attach("balloon", device.clone())?;
        services.balloon = Some(BalloonControl::new(
            device,
            config.memory_mib,
            balloon.clone(),
        ));
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fv-svc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn socket_paths_are_freed_only_when_stale() {
        let dir = temp_dir("free");
        let path = dir.join("s");
        free_socket_path("--vsock", &path).unwrap();

        let live = UnixListener::bind(&path).unwrap();
        let e = free_socket_path("--vsock", &path).unwrap_err();
        assert!(matches!(e, ServiceError::SocketInUse { .. }), "{e}");
        drop(live);
        // Closed without removing its file: stale, so it goes.
        free_socket_path("--vsock", &path).unwrap();
        assert!(!path.exists());

        std::fs::write(&path, "not a socket").unwrap();
        let e = free_socket_path("--console", &path).unwrap_err();
        assert!(e.to_string().contains("exists and is not a socket"), "{e}");
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            free_socket_path("--console", &path),
            Err(ServiceError::NotASocket { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn socket_files_are_removed_only_if_still_ours() {
        let dir = temp_dir("drop");
        let path = dir.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        drop(SocketFile::new(&path));
        assert!(!path.exists());
        drop(listener);

        let _listener = UnixListener::bind(&path).unwrap();
        let guard = SocketFile::new(&path);
        // Someone else's socket now stands at the path (ours moved away, so the inodes
        // differ).
        std::fs::rename(&path, dir.join("moved")).unwrap();
        let _theirs = UnixListener::bind(&path).unwrap();
        drop(guard);
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
