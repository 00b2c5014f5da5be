//! COM1: vm-superio's 8250 UART on the port bus, its output sink, and the event-loop
//! subscriber that feeds it input from stdin or a Unix socket client.
//!
//! Input respects the guest's pace: when the 64-byte FIFO is full we stop reading the
//! source (so a fast sender cannot grow our memory) until the guest drains the FIFO.
//!
//! Output never waits for a socket client: the vCPU writing the UART would freeze the
//! guest, and a client waiting for the guest to read its input would never be read from
//! again. What the client's socket does not take at once waits in a bounded backlog that
//! the event loop sends as the socket drains (EPOLLOUT). A client that connects first gets
//! the last `RECENT_LIMIT` bytes of output, as xenconsoled keeps a console's output: an
//! opened console shows the login prompt rather than nothing.

use std::collections::VecDeque;
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

/// How much output a slow socket client may fall behind by. Beyond it the oldest bytes
/// are dropped: the newest output (the latest prompt) is what a console user needs.
const BACKLOG_LIMIT: usize = 1 << 20;

/// How much of the latest output a newly connected client gets first: a few screens.
const RECENT_LIMIT: usize = 16 << 10;

/// The connected socket client and the output it has not taken yet.
pub struct ConsoleClient {
    stream: Option<UnixStream>,
    backlog: VecDeque<u8>,
    /// The latest output, whoever was connected, for the next client.
    recent: VecDeque<u8>,
    /// Written when output starts to wait in the backlog, for the event loop to send it.
    backlog_started: EventFd,
}

/// The socket client, shared by the output side (vCPU threads) and the event loop.
pub type SocketClient = Arc<Mutex<ConsoleClient>>;

impl ConsoleClient {
    pub fn new() -> io::Result<Self> {
        Ok(ConsoleClient {
            stream: None,
            backlog: VecDeque::new(),
            recent: VecDeque::new(),
            backlog_started: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// A new client (non-blocking) replaces the old one. What it gets first is the
    /// recent output (the old client's backlog is part of it, or older), which the event
    /// loop sends with `send_backlog`.
    fn connect(&mut self, stream: UnixStream) {
        self.stream = Some(stream);
        self.backlog = self.recent.clone();
    }

    fn disconnect(&mut self) {
        self.stream = None;
        self.backlog.clear();
    }

    /// Guest output: sent at once if the socket takes it, else kept in the backlog.
    /// Without a client it is only kept among the recent output.
    fn send(&mut self, mut buf: &[u8]) {
        self.recent.extend(buf);
        let over = self.recent.len().saturating_sub(RECENT_LIMIT);
        self.recent.drain(..over);
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let was_waiting = !self.backlog.is_empty();
        if !was_waiting {
            match stream.write(buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A client that went away just stops getting output.
                Err(_) => return self.disconnect(),
            }
        }
        if buf.is_empty() {
            return;
        }
        self.backlog.extend(buf);
        let over = self.backlog.len().saturating_sub(BACKLOG_LIMIT);
        self.backlog.drain(..over);
        if !was_waiting {
            // The counter only needs to become readable; a saturated one already is.
            let _ = self.backlog_started.write(1);
        }
    }

    /// Sends what the socket takes of the backlog; true when the backlog is empty.
    fn send_backlog(&mut self) -> bool {
        while let Some(stream) = self.stream.as_mut() {
            let (front, _) = self.backlog.as_slices();
            if front.is_empty() {
                break;
            }
            match stream.write(front) {
                Ok(n) => drop(self.backlog.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => self.disconnect(),
            }
        }
        self.backlog.is_empty()
    }

    fn is_connected(&self) -> bool {
        self.stream.is_some()
    }
}

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
                lock(client).send(buf);
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

/// Event-loop subscriber moving input bytes into the UART, and a socket client's output
/// backlog out to it.
pub struct SerialInput {
    device: Arc<Mutex<SerialDevice>>,
    source: InputSource,
    ready: EventFd,
    /// Bytes read from the source that did not fit in the FIFO yet; while there are any,
    /// the source is not read.
    pending: Vec<u8>,
    /// The socket client's own fd handle, kept for reading and for epoll: it is closed
    /// only after its registration is removed (the event manager keeps a stale entry for
    /// an fd closed first).
    reader: Option<UnixStream>,
    /// Stdin reached its end: it is not watched again.
    stdin_ended: bool,
    /// The socket client's `backlog_started`, ours to watch without its lock.
    backlog_started: Option<EventFd>,
    /// Output waits in the socket client's backlog.
    output_waiting: bool,
    /// The fd registered with the event loop and what for.
    watched: Option<(i32, EventSet)>,
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
        let backlog_started = match &source {
            InputSource::Socket { client, .. } => Some(lock(client).backlog_started.try_clone()?),
            InputSource::Stdin(_) | InputSource::None => None,
        };
        Ok(SerialInput {
            device,
            source,
            ready,
            pending: Vec::new(),
            reader: None,
            stdin_ended: false,
            backlog_started,
            output_waiting: false,
            watched: None,
        })
    }

    /// Stdin, or the socket client.
    fn source_fd(&self) -> Option<i32> {
        match &self.source {
            InputSource::Stdin(_) if self.stdin_ended => None,
            InputSource::Stdin(file) => Some(file.as_raw_fd()),
            InputSource::Socket { .. } => self.reader.as_ref().map(|s| s.as_raw_fd()),
            InputSource::None => None,
        }
    }

    /// Registers the source's fd for what is wanted now: input while the FIFO has room,
    /// room to send while output waits.
    fn update_watch(&mut self, ops: &mut EventOps) {
        let mut wanted = EventSet::empty();
        if self.pending.is_empty() {
            wanted |= EventSet::IN;
        }
        if self.output_waiting {
            wanted |= EventSet::OUT;
        }
        let target = self.source_fd().filter(|_| !wanted.is_empty());
        match (self.watched, target) {
            (Some((fd, now)), Some(to)) if fd == to => {
                if now != wanted && ops.modify(Events::new_raw(fd, wanted)).is_ok() {
                    self.watched = Some((fd, wanted));
                }
                return;
            }
            (Some(_), _) => self.unwatch(ops),
            (None, _) => {}
        }
        if let Some(fd) = target {
            if ops.add(Events::new_raw(fd, wanted)).is_ok() {
                self.watched = Some((fd, wanted));
            }
        }
    }

    fn unwatch(&mut self, ops: &mut EventOps) {
        if let Some((fd, set)) = self.watched.take() {
            let _ = ops.remove(Events::new_raw(fd, set));
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

    fn client(&self) -> Option<&SocketClient> {
        match &self.source {
            InputSource::Socket { client, .. } => Some(client),
            _ => None,
        }
    }

    /// Forgets the socket client: its registration first, then its fds.
    fn drop_client(&mut self, ops: &mut EventOps) {
        self.unwatch(ops);
        if let Some(client) = self.client() {
            lock(client).disconnect();
        }
        self.reader = None;
        self.output_waiting = false;
        self.pending.clear();
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
            // A wake-up with nothing to read on the non-blocking client.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => {
                // End of input (stdin closed, client gone): stop reading it.
                match self.source {
                    InputSource::Socket { .. } => self.drop_client(ops),
                    _ => {
                        self.unwatch(ops);
                        self.stdin_ended = true;
                    }
                }
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                // If the FIFO is full, the source waits until the guest drains it.
                self.flush_pending();
            }
        }
    }

    /// Sends the client's backlog as far as its socket takes it.
    fn send_backlog(&mut self) {
        let waiting = self.client().is_some_and(|client| {
            let mut client = lock(client);
            !client.send_backlog() && client.is_connected()
        });
        self.output_waiting = waiting;
    }

    fn accept_client(&mut self, ops: &mut EventOps) {
        let InputSource::Socket { listener, .. } = &self.source else {
            return;
        };
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        // Non-blocking for both directions (the clone shares the flag): guest output the
        // client does not take at once waits in the backlog (`ConsoleClient::send`).
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(reader) = stream.try_clone() else {
            return;
        };
        // One client at a time: a new one replaces the old, as with QEMU's chardev sockets.
        self.drop_client(ops);
        if let Some(client) = self.client() {
            lock(client).connect(stream);
        }
        self.reader = Some(reader);
        self.send_backlog();
    }
}

impl MutEventSubscriber for SerialInput {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.ready, EventSet::IN));
        if let InputSource::Socket { listener, .. } = &self.source {
            let _ = ops.add(Events::new(listener, EventSet::IN));
        }
        if let Some(backlog_started) = &self.backlog_started {
            let _ = ops.add(Events::new(backlog_started, EventSet::IN));
        }
        self.update_watch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let backlog_fd = self.backlog_started.as_ref().map(|e| e.as_raw_fd());
        if fd == self.ready.as_raw_fd() {
            let _ = self.ready.read();
            self.flush_pending();
        } else if Some(fd) == backlog_fd {
            if let Some(backlog_started) = &self.backlog_started {
                let _ = backlog_started.read();
            }
            self.send_backlog();
        } else if matches!(&self.source, InputSource::Socket { listener, .. } if listener.as_raw_fd() == fd)
        {
            self.accept_client(ops);
        } else if Some(fd) == self.watched.map(|(fd, _)| fd) {
            if events.event_set().contains(EventSet::OUT) {
                self.send_backlog();
            }
            if !events
                .event_set()
                .intersection(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR)
                .is_empty()
            {
                self.read_input(ops);
            }
        } else {
            // An fd we no longer track: drop its registration.
            let _ = ops.remove(events);
        }
        self.update_watch(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_manager::{EventManager, SubscriberOps};
    use std::time::{Duration, Instant};

    fn connected_client() -> (SocketClient, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut client = ConsoleClient::new().unwrap();
        client.connect(ours);
        (Arc::new(Mutex::new(client)), theirs)
    }

    /// What a guest writing `n` bytes one UART write at a time sends: a pattern that shows
    /// a lost or reordered byte.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// Everything the client's end `theirs` gets while the backlog is sent (as the event
    /// loop would on EPOLLOUT), until the backlog is empty and nothing is left to read.
    fn read_as_the_backlog_drains(client: &SocketClient, theirs: &UnixStream) -> Vec<u8> {
        theirs.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let drained = client.lock().unwrap().send_backlog();
            match (&*theirs).read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained => return got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn output_reaches_the_socket_client_and_input_respects_the_fifo() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let (client, theirs) = connected_client();
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
        assert!(!client.lock().unwrap().is_connected());
    }

    /// A client that does not read never holds the vCPU writing the UART, and loses
    /// nothing that fits in the backlog: once it reads, all of it arrives in order.
    #[test]
    fn a_client_that_does_not_read_does_not_stall_the_guest_or_lose_output() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let (client, theirs) = connected_client();
        let mut dev = SerialDevice::new(&irq, SerialOutput::Socket(client.clone())).unwrap();
        let sent = pattern(100_000);
        // The whole burst returns while nobody reads: 100,000 one-byte writes are far
        // more than the socket's buffer holds (each takes ~770 bytes of it).
        for b in &sent {
            dev.write(0, &[*b]);
        }
        let started = client.lock().unwrap().backlog_started.read().unwrap();
        assert_eq!(
            started, 1,
            "the event loop is woken once, when output starts to wait"
        );
        let got = read_as_the_backlog_drains(&client, &theirs);
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the client's output differs from the guest's");
    }

    /// Past `BACKLOG_LIMIT` the oldest waiting output goes: the client gets what its
    /// socket took at first, then the newest `BACKLOG_LIMIT` bytes.
    #[test]
    fn a_full_backlog_drops_the_oldest_output() {
        let (client, theirs) = connected_client();
        let sent = pattern(BACKLOG_LIMIT * 2 + 12_345);
        for chunk in sent.chunks(1000) {
            client.lock().unwrap().send(chunk);
        }
        let backlog = client.lock().unwrap().backlog.len();
        assert_eq!(backlog, BACKLOG_LIMIT);
        let got = read_as_the_backlog_drains(&client, &theirs);
        let first = got.len() - BACKLOG_LIMIT;
        assert!(
            got[..first] == sent[..first],
            "the first output was not the guest's first"
        );
        assert!(
            got[first..] == sent[sent.len() - BACKLOG_LIMIT..],
            "the backlog did not keep the newest output"
        );
    }

    /// A client that connects late first gets the latest `RECENT_LIMIT` bytes of what the
    /// guest wrote while nobody was connected, then the live output, in order.
    #[test]
    fn a_new_client_gets_the_recent_output_first() {
        let mut client = ConsoleClient::new().unwrap();
        let before = pattern(RECENT_LIMIT + 5000);
        client.send(&before);
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        client.connect(ours);
        assert!(client.send_backlog(), "16 KiB fit in a fresh socket");
        client.send(b"live");
        let mut got = vec![0u8; RECENT_LIMIT + 4];
        (&theirs).read_exact(&mut got).unwrap();
        assert!(got[..RECENT_LIMIT] == before[before.len() - RECENT_LIMIT..]);
        assert_eq!(&got[RECENT_LIMIT..], b"live");
    }

    /// Through the event loop, as fv-vmm runs it: a client connects to the socket, the
    /// guest writes more than the socket holds, and the loop sends the rest as the client
    /// reads (EPOLLOUT), while the client's typing still reaches the UART.
    #[test]
    fn the_event_loop_sends_the_backlog_as_the_client_reads() {
        let dir = std::env::temp_dir().join(format!("fv-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serial.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let client: SocketClient = Arc::new(Mutex::new(ConsoleClient::new().unwrap()));
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let device = Arc::new(Mutex::new(
            SerialDevice::new(&irq, SerialOutput::Socket(client.clone())).unwrap(),
        ));
        let input = SerialInput::new(
            device.clone(),
            InputSource::Socket {
                listener,
                client: client.clone(),
            },
        )
        .unwrap();
        let mut loop_ = EventManager::<Arc<Mutex<SerialInput>>>::new().unwrap();
        loop_.add_subscriber(Arc::new(Mutex::new(input)));
        let turn = |loop_: &mut EventManager<Arc<Mutex<SerialInput>>>| {
            loop_.run_with_timeout(10).unwrap();
        };

        let user = UnixStream::connect(&path).unwrap();
        while !client.lock().unwrap().is_connected() {
            turn(&mut loop_);
        }
        let sent = pattern(50_000);
        for b in &sent {
            lock(&device).write(0, &[*b]);
        }
        (&user).write_all(b"ls\r").unwrap();
        user.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < sent.len() && Instant::now() < deadline {
            turn(&mut loop_);
            if let Ok(n) = (&user).read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the client's output differs from the guest's");
        let mut typed = Vec::new();
        for _ in 0..3 {
            let mut b = [0u8; 1];
            lock(&device).read(0, &mut b);
            typed.push(b[0]);
        }
        assert_eq!(typed, b"ls\r");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
