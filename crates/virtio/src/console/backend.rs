//! The host end of the console: where guest output goes and guest input comes from.
//!
//! - [`FdBackend`]: any pair of fds (a pipe pair, a pty, a connected socket).
//! - [`SocketBackend`]: a Unix socket the VMM listens on; one client at a time gets the
//!   output and sends the input, a new client replaces the old one (as the serial port's
//!   `socket=PATH` does). Output while nobody is connected is dropped.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The host end of a console port.
///
/// `Read` gives input for the guest: `WouldBlock` when there is none now (the device
/// then waits for [`ConsoleBackend::input_fd`] to be readable), `Ok(0)` when the input
/// has ended for good (the device stops reading until it is reset).
///
/// `Write` takes guest output and may take only part of it: `WouldBlock` means the sink is
/// full, and the device keeps the bytes, stops taking more from the guest and retries
/// when [`ConsoleBackend::output_ready`] fires (backpressure, no unbounded buffer). Any
/// other error drops the bytes (counted), nothing more.
///
/// Both fds are polled level-triggered by the device's event loop; they must stay the
/// same open fds for the backend's whole life (they may be the same fd).
pub trait ConsoleBackend: Read + Write + Send {
    /// Readable when `read` may have input; `None` when there is never any input.
    fn input_fd(&self) -> Option<RawFd>;
    /// What to poll before retrying a `write` that returned `WouldBlock`: an fd and the
    /// events that mean "try again" (`EventSet::OUT` for a pipe or a socket). `None` when
    /// `write` never returns `WouldBlock`.
    fn output_ready(&self) -> Option<(RawFd, EventSet)>;
}

/// Sets `O_NONBLOCK` on `fd`. The flag belongs to the open file, so every fd duplicated
/// from the same open (the VMM's own stdin, say) becomes non-blocking too.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// A console over a pair of fds: input read from one (if any), output written to the
/// other. Both are made non-blocking.
#[derive(Debug)]
pub struct FdBackend {
    input: Option<File>,
    output: File,
}

impl FdBackend {
    /// `input` (e.g. a pipe's read end, a pty master, `None` for output only) and
    /// `output` (a pipe's write end, the same pty master, a file).
    pub fn new(input: Option<OwnedFd>, output: OwnedFd) -> io::Result<Self> {
        if let Some(fd) = &input {
            set_nonblocking(fd.as_fd())?;
        }
        set_nonblocking(output.as_fd())?;
        Ok(FdBackend {
            input: input.map(File::from),
            output: File::from(output),
        })
    }

    /// Both directions over one connected stream socket.
    pub fn from_stream(stream: UnixStream) -> io::Result<Self> {
        let input = OwnedFd::from(stream.try_clone()?);
        Self::new(Some(input), OwnedFd::from(stream))
    }
}

impl Read for FdBackend {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.input.as_mut() {
            Some(input) => input.read(buf),
            None => Ok(0),
        }
    }
}

impl Write for FdBackend {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

impl ConsoleBackend for FdBackend {
    fn input_fd(&self) -> Option<RawFd> {
        self.input.as_ref().map(|f| f.as_raw_fd())
    }

    fn output_ready(&self) -> Option<(RawFd, EventSet)> {
        Some((self.output.as_raw_fd(), EventSet::OUT))
    }
}

/// Data of the fds inside [`SocketBackend`]'s epoll sets (never looked at: any readiness
/// just means "try again").
const INNER: u64 = 0;

/// A console on a listening Unix socket; see the module docs.
///
/// The device needs fixed fds to poll while clients come and go, so the backend keeps
/// two epoll sets of its own and hands out their fds (an epoll fd is readable when one of
/// its fds is ready): `input` holds the listener and the client (readable), `output`
/// holds the client (writable) and a `kick` eventfd written when the client goes away,
/// so that a device waiting to write wakes up and finds its output now dropped rather
/// than waiting for ever.
#[derive(Debug)]
pub struct SocketBackend {
    path: PathBuf,
    listener: UnixListener,
    client: Option<UnixStream>,
    input: Epoll,
    output: Epoll,
    kick: EventFd,
}

impl SocketBackend {
    /// Listens on `path` (which must not exist).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let input = Epoll::new()?;
        let output = Epoll::new()?;
        let kick = EventFd::new(EFD_NONBLOCK)?;
        input.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, INNER),
        )?;
        output.ctl(
            ControlOperation::Add,
            kick.as_raw_fd(),
            EpollEvent::new(EventSet::IN, INNER),
        )?;
        Ok(SocketBackend {
            path: path.to_path_buf(),
            listener,
            client: None,
            input,
            output,
            kick,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a client is connected.
    pub fn has_client(&self) -> bool {
        self.client.is_some()
    }

    /// Takes the newest waiting client, if any, in place of the current one.
    fn accept(&mut self) -> io::Result<()> {
        let mut newest = None;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => newest = Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of fds, say: keep the current client, try again on the next event.
                Err(e) => {
                    log::warn!("virtio-console: cannot accept on {:?}: {e}", self.path);
                    break;
                }
            }
        }
        let Some(stream) = newest else {
            return Ok(());
        };
        stream.set_nonblocking(true)?;
        self.drop_client();
        let fd = stream.as_raw_fd();
        self.input.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, INNER),
        )?;
        if let Err(e) = self.output.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::OUT, INNER),
        ) {
            let _ = self
                .input
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            return Err(e);
        }
        self.client = Some(stream);
        Ok(())
    }

    /// Forgets the client: out of both epoll sets first, then closed.
    fn drop_client(&mut self) {
        if let Some(stream) = self.client.take() {
            let fd = stream.as_raw_fd();
            // Deleting an fd that is in the set cannot fail.
            let _ = self
                .input
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            let _ = self
                .output
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            // A saturated counter is readable already.
            let _ = self.kick.write(1);
        }
    }
}

impl Read for SocketBackend {
    /// Input from the client; `WouldBlock` while there is none (never `Ok(0)`: the end of
    /// one client is not the end of the input).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Err(e) = self.accept() {
            log::warn!(
                "virtio-console: cannot take a client on {:?}: {e}",
                self.path
            );
        }
        let result = match self.client.as_mut() {
            Some(client) => client.read(buf),
            None => return Err(io::ErrorKind::WouldBlock.into()),
        };
        match result {
            Ok(0) => {
                self.drop_client();
                Err(io::ErrorKind::WouldBlock.into())
            }
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Err(e)
            }
            Err(e) => {
                log::debug!("virtio-console: client on {:?} failed: {e}", self.path);
                self.drop_client();
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

impl Write for SocketBackend {
    /// Output to the client; dropped (reported as written) while there is none.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Clear a kick from a past client; we are trying again now.
        let _ = self.kick.read();
        let result = match self.client.as_mut() {
            Some(client) => client.write(buf),
            None => return Ok(buf.len()),
        };
        match result {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Err(e)
            }
            Err(e) => {
                log::debug!("virtio-console: client on {:?} went away: {e}", self.path);
                self.drop_client();
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ConsoleBackend for SocketBackend {
    fn input_fd(&self) -> Option<RawFd> {
        Some(self.input.as_raw_fd())
    }

    fn output_ready(&self) -> Option<(RawFd, EventSet)> {
        // An epoll fd is readable when one of its fds is ready.
        Some((self.output.as_raw_fd(), EventSet::IN))
    }
}
