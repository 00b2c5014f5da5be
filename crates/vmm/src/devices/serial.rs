//! COM1: vm-superio's 8250 UART on the port bus, its output sink, and the event-loop
//! subscriber that feeds it input from stdin or a Unix socket client.
//!
//! Input respects the guest's pace: when the 64-byte FIFO is full we stop reading the
//! source (so a fast sender cannot grow our memory) until the guest drains the FIFO.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::bus::{lock, BusDevice};

/// Raises the UART's interrupt by writing an irqfd.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl EventFdTrigger {
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(EventFdTrigger(self.0.try_clone()?))
    }
}

/// Signals the event loop when the guest has drained the receive FIFO.
pub struct InputReady(pub EventFd);

impl vm_superio::serial::SerialEvents for InputReady {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // The counter only needs to become readable; a saturated counter already is.
        let _ = self.0.write(1);
    }
}

/// The connected socket client, shared by the output side and the event loop.
pub type SocketClient = Arc<Mutex<Option<UnixStream>>>;

/// Where guest output goes.
pub enum SerialOutput {
    Stdout(io::Stdout),
    File(File),
    Socket(SocketClient),
    Sink,
}

impl Write for SerialOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SerialOutput::Stdout(s) => {
                let n = s.write(buf)?;
                s.flush()?;
                Ok(n)
            }
            SerialOutput::File(f) => f.write(buf),
            SerialOutput::Socket(client) => {
                let mut client = lock(client);
                if let Some(stream) = client.as_mut() {
                    if stream.write_all(buf).is_err() {
                        // A client that went away just stops getting output.
                        *client = None;
                    }
                }
                Ok(buf.len())
            }
            SerialOutput::Sink => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SerialOutput::Stdout(s) => s.flush(),
            SerialOutput::File(f) => f.flush(),
            _ => Ok(()),
        }
    }
}

type Uart = Serial<EventFdTrigger, InputReady, SerialOutput>;

/// The 8250 UART as a bus device.
pub struct SerialDevice {
    uart: Option<Uart>,
    trigger: EventFdTrigger,
    ready: EventFd,
}

impl SerialDevice {
    /// `irq` is registered by the caller as the irqfd for COM1's GSI.
    pub fn new(irq: &EventFd, output: SerialOutput) -> io::Result<Self> {
        let trigger = EventFdTrigger(irq.try_clone()?);
        let ready = EventFd::new(EFD_NONBLOCK)?;
        let uart =
            Serial::with_events(trigger.try_clone()?, InputReady(ready.try_clone()?), output);
        Ok(SerialDevice {
            uart: Some(uart),
            trigger,
            ready,
        })
    }

    /// Becomes readable when the guest has emptied the receive FIFO.
    pub fn input_ready_fd(&self) -> io::Result<EventFd> {
        self.ready.try_clone()
    }

    /// Queues guest input; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.as_mut() {
            Some(uart) if uart.fifo_capacity() > 0 => uart.enqueue_raw_bytes(bytes).unwrap_or(0),
            _ => 0,
        }
    }

    /// Puts the UART registers back to power-on state, keeping the output.
    pub fn reset(&mut self) -> io::Result<()> {
        if let Some(old) = self.uart.take() {
            let output = old.into_writer();
            self.uart = Some(Serial::with_events(
                self.trigger.try_clone()?,
                InputReady(self.ready.try_clone()?),
                output,
            ));
        }
        Ok(())
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (self.uart.as_mut(), data.len(), u8::try_from(offset)) {
            (Some(uart), 1, Ok(offset)) => data[0] = uart.read(offset),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(uart), [value], Ok(offset)) = (self.uart.as_mut(), data, u8::try_from(offset))
        {
            // An output error (closed stdout, full disk) must not stop the guest.
            let _ = uart.write(offset, *value);
        }
    }
}

/// Where guest input comes from.
pub enum InputSource {
    None,
    /// A duplicate of fd 0, read without std's buffering: bytes hidden in a user-space
    /// buffer would never make epoll report the fd readable again.
    Stdin(File),
    Socket {
        listener: UnixListener,
        client: SocketClient,
    },
}

/// Event-loop subscriber moving input bytes into the UART.
pub struct SerialInput {
    device: Arc<Mutex<SerialDevice>>,
    source: InputSource,
    ready: EventFd,
    /// Bytes read from the source that did not fit in the FIFO yet.
    pending: Vec<u8>,
    /// The fd we read input from right now, if any (stdin, or the socket client).
    reading: Option<i32>,
    /// The socket client's own fd handle, kept for reading.
    reader: Option<UnixStream>,
}

impl InputSource {
    /// Our stdin, as an input source.
    pub fn stdin() -> io::Result<Self> {
        let fd = io::stdin().as_fd().try_clone_to_owned()?;
        Ok(InputSource::Stdin(File::from(fd)))
    }
}

impl SerialInput {
    pub fn new(device: Arc<Mutex<SerialDevice>>, source: InputSource) -> io::Result<Self> {
        let ready = lock(&device).input_ready_fd()?;
        Ok(SerialInput {
            device,
            source,
            ready,
            pending: Vec::new(),
            reading: None,
            reader: None,
        })
    }

    fn watch(&mut self, ops: &mut EventOps, fd: i32) {
        if self.reading.is_none() && ops.add(Events::new_raw(fd, EventSet::IN)).is_ok() {
            self.reading = Some(fd);
        }
    }

    fn unwatch(&mut self, ops: &mut EventOps) {
        if let Some(fd) = self.reading.take() {
            let _ = ops.remove(Events::new_raw(fd, EventSet::IN));
        }
    }

    fn input_fd(&self) -> Option<i32> {
        match &self.source {
            InputSource::Stdin(file) => Some(file.as_raw_fd()),
            InputSource::Socket { .. } => self.reader.as_ref().map(|s| s.as_raw_fd()),
            InputSource::None => None,
        }
    }

    /// Moves pending bytes into the FIFO; returns true when nothing is left pending.
    fn flush_pending(&mut self) -> bool {
        if !self.pending.is_empty() {
            let n = lock(&self.device).enqueue_input(&self.pending);
            self.pending.drain(..n);
        }
        self.pending.is_empty()
    }

    fn read_input(&mut self, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let result = match &self.source {
            InputSource::Stdin(file) => (&*file).read(&mut buf),
            InputSource::Socket { .. } => match self.reader.as_mut() {
                Some(stream) => stream.read(&mut buf),
                None => Ok(0),
            },
            InputSource::None => Ok(0),
        };
        match result {
            Ok(0) | Err(_) => {
                // End of input (stdin closed, client gone): stop reading it.
                self.unwatch(ops);
                if let InputSource::Socket { client, .. } = &self.source {
                    *lock(client) = None;
                    self.reader = None;
                }
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                if !self.flush_pending() {
                    // Wait for the guest to drain the FIFO before reading more.
                    self.unwatch(ops);
                }
            }
        }
    }

    fn accept_client(&mut self, ops: &mut EventOps) {
        let InputSource::Socket { listener, client } = &self.source else {
            return;
        };
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        // One client at a time: a new one replaces the old, as with QEMU's chardev sockets.
        *lock(client) = Some(stream);
        self.unwatch(ops);
        self.reader = Some(reader);
        self.pending.clear();
        if let Some(fd) = self.input_fd() {
            self.watch(ops, fd);
        }
    }
}

impl MutEventSubscriber for SerialInput {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.ready, EventSet::IN));
        match &self.source {
            InputSource::Stdin(file) => {
                let fd = file.as_raw_fd();
                self.watch(ops, fd)
            }
            InputSource::Socket { listener, .. } => {
                let _ = ops.add(Events::new(listener, EventSet::IN));
            }
            InputSource::None => {}
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.ready.as_raw_fd() {
            let _ = self.ready.read();
            if self.flush_pending() {
                if let Some(fd) = self.input_fd() {
                    self.watch(ops, fd);
                }
            }
        } else if matches!(&self.source, InputSource::Socket { listener, .. } if listener.as_raw_fd() == fd)
        {
            self.accept_client(ops);
        } else if Some(fd) == self.reading {
            self.read_input(ops);
        } else {
            // An fd we no longer track (closed client): drop its registration.
            let _ = ops.remove(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_the_socket_client_and_input_respects_the_fifo() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let client: SocketClient = Arc::new(Mutex::new(Some(ours)));
        let mut dev = SerialDevice::new(&irq, SerialOutput::Socket(client.clone())).unwrap();
        for b in b"hi" {
            dev.write(0, &[*b]);
        }
        let mut got = [0u8; 2];
        (&theirs).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");

        assert_eq!(dev.enqueue_input(&[b'x'; 100]), 64);
        assert_eq!(dev.enqueue_input(b"y"), 0);
        let mut b = [0u8; 1];
        dev.read(0, &mut b);
        assert_eq!(b, [b'x']);
        // Odd widths and offsets from a guest are ignored, not a panic.
        dev.write(1 << 40, &[1]);
        dev.write(0, &[1, 2]);
        let mut wide = [0u8; 4];
        dev.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);

        dev.reset().unwrap();
        assert_eq!(dev.enqueue_input(b"z"), 1);
        drop(theirs);
        dev.write(0, b"!");
        assert!(client.lock().unwrap().is_none());
    }
}
