//! The host side of the device, in Firecracker's scheme:
//!
//! - Host to guest: host processes connect to the Unix socket at `PATH` and write
//!   `CONNECT <port>\n`; the guest gets a REQUEST for its port `<port>` from a host port
//!   we pick, and once it answers RESPONSE the host process reads `OK <host port>\n` and
//!   the stream is bridged.
//! - Guest to host: a guest REQUEST for host port `P` connects to the Unix socket
//!   `PATH_P`; the guest gets a RESPONSE if someone listens there, an RST otherwise.
//!
//! The muxer owns every host stream (handshakes and connections), decides what each is
//! polled for, and queues what the guest must be told. Streams are registered and
//! unregistered only in [`Muxer::sync`], which the event loop calls after every event; a
//! stream that is closed waits there (still open) until it has left the epoll set, so the
//! loop never sees an fd number that was reused behind its back.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::connection::{ConnKey, Connection, ResetReason, Timeouts, Verdict};
use super::packet::{Header, Op};
use super::QUEUE_SIZE;
use crate::lifecycle::DEVICE_TOKEN_BASE;

/// Event data of the listening socket, the timer, the resume eventfd; streams use data
/// from [`STREAM_TOKEN_BASE`] on.
pub(super) const LISTENER_TOKEN: u32 = DEVICE_TOKEN_BASE;
pub(super) const TIMER_TOKEN: u32 = DEVICE_TOKEN_BASE + 1;
pub(super) const RESUME_TOKEN: u32 = DEVICE_TOKEN_BASE + 2;
pub(super) const STREAM_TOKEN_BASE: u32 = DEVICE_TOKEN_BASE + 0x100;

/// Host processes that connected and have not sent their `CONNECT` line yet; past this
/// the listener is not polled (the others wait in its backlog).
pub(super) const MAX_HANDSHAKES: usize = 16;
/// The longest `CONNECT <port>` line accepted.
const MAX_CONNECT_LINE: usize = 32;
/// RSTs waiting for receive buffers; past this the device takes no more transmit chains
/// (each could add one) until the guest makes room.
pub(super) const MAX_RST_BACKLOG: usize = QUEUE_SIZE as usize;
/// Host ports of host-initiated connections are picked from here on.
const LOCAL_PORT_BASE: u32 = 1 << 30;
/// How long the listener rests after `accept` failed (out of fds, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Counters, for the VMM's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockMetrics {
    /// Packets (and payload bytes) put in the guest's receive buffers.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Well-formed packets (and payload bytes) the guest sent.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets from the guest refused (malformed, wrong CIDs or type).
    pub bad_packets: u64,
    /// Receive chains that could not take a packet (returned empty).
    pub bad_rx_chains: u64,
    /// RSTs sent to the guest.
    pub rst_sent: u64,
    /// Connections made from the host side and from the guest side.
    pub host_connections: u64,
    pub guest_connections: u64,
    /// Connections refused: the cap, nobody listening on `PATH_P`, a bad `CONNECT` line.
    pub refused_connections: u64,
    /// Connections reset for a guest that broke the protocol or its credit, or that did
    /// not answer in time.
    pub protocol_errors: u64,
    pub credit_violations: u64,
    pub timeouts: u64,
    /// Event-loop, timer and socket errors on our side.
    pub event_errors: u64,
}

/// A host process that connected to `PATH` and is sending its `CONNECT` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

enum Line {
    /// Not all there yet.
    Partial,
    Connect(u32),
    Bad,
}

/// `CONNECT <port>` (the command in any case), as Firecracker accepts it.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("connect") {
        return None;
    }
    let port = words.next()?.parse().ok()?;
    words.next().is_none().then_some(port)
}

impl Handshake {
    /// Reads what has arrived of the line, a byte at a time so that nothing after the
    /// newline (the start of the stream) is taken.
    fn read_line(&mut self) -> Line {
        let mut byte = [0u8; 1];
        loop {
            match (&self.stream).read(&mut byte) {
                Ok(0) => return Line::Bad,
                Ok(_) if byte[0] == b'\n' => {
                    return parse_connect(&self.line).map_or(Line::Bad, Line::Connect)
                }
                Ok(_) if self.line.len() >= MAX_CONNECT_LINE => return Line::Bad,
                Ok(_) => self.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Line::Partial,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Line::Bad,
            }
        }
    }
}

enum Endpoint {
    Handshake(Handshake),
    Conn(Connection),
}

impl Endpoint {
    fn stream(&self) -> &UnixStream {
        match self {
            Endpoint::Handshake(h) => &h.stream,
            Endpoint::Conn(c) => &c.stream,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Endpoint::Handshake(h) => Some(h.deadline),
            Endpoint::Conn(c) => c.deadline,
        }
    }

    fn wants(&self) -> EventSet {
        match self {
            Endpoint::Handshake(_) => EventSet::IN,
            Endpoint::Conn(c) => c.wants(),
        }
    }
}

/// A host stream and what it is registered for.
struct Slot {
    ep: Endpoint,
    registered: EventSet,
    /// In [`Muxer::ready`].
    ready: bool,
}

/// Connects to a Unix socket without blocking: a listener whose backlog is full refuses
/// (EAGAIN) instead of stalling the event loop until it accepts.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}

pub(super) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    listener_registered: bool,
    /// `accept` failed; the listener rests until then.
    listener_paused_until: Option<Instant>,
    max_connections: usize,
    pub(super) timeouts: Timeouts,
    slots: HashMap<u32, Slot>,
    by_key: HashMap<ConnKey, u32>,
    connections: usize,
    handshakes: usize,
    next_token: u32,
    next_local_port: u32,
    /// RSTs for connections that no longer exist (or never did).
    rst_queue: VecDeque<ConnKey>,
    /// Connections that may have something for the guest, in turn.
    ready: VecDeque<u32>,
    /// Closed streams still in the epoll set: token, what they are registered for.
    graveyard: Vec<(u32, EventSet, UnixStream)>,
    pub(super) timer: TimerFd,
    timer_armed_for: Option<Instant>,
    pub(super) metrics: VsockMetrics,
}

impl Muxer {
    /// Listens on `uds_path` (which must not exist).
    pub fn new(guest_cid: u64, uds_path: PathBuf, max_connections: usize) -> io::Result<Muxer> {
        let listener = UnixListener::bind(&uds_path)?;
        listener.set_nonblocking(true)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Muxer {
            guest_cid,
            uds_path,
            listener,
            listener_registered: false,
            listener_paused_until: None,
            max_connections,
            timeouts: Timeouts::default(),
            slots: HashMap::new(),
            by_key: HashMap::new(),
            connections: 0,
            handshakes: 0,
            next_token: STREAM_TOKEN_BASE,
            next_local_port: LOCAL_PORT_BASE,
            rst_queue: VecDeque::new(),
            ready: VecDeque::new(),
            graveyard: Vec::new(),
            timer,
            timer_armed_for: None,
            metrics: VsockMetrics::default(),
        })
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Open connections (handshakes not included).
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// The socket a guest connection to host port `port` goes to: `PATH_<port>`.
    pub fn listener_path(&self, port: u32) -> PathBuf {
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{port}"));
        PathBuf::from(path)
    }

    fn alloc_token(&mut self) -> u32 {
        loop {
            let token = self.next_token;
            self.next_token = token.checked_add(1).unwrap_or(STREAM_TOKEN_BASE);
            if !self.slots.contains_key(&token) && !self.graveyard.iter().any(|g| g.0 == token) {
                return token;
            }
        }
    }

    /// A host port for a new host-initiated connection to `guest_port`.
    fn alloc_local_port(&mut self, guest_port: u32) -> Option<u32> {
        // At most `max_connections` keys are taken: one of these is free.
        for _ in 0..=self.max_connections {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(LOCAL_PORT_BASE);
            let key = ConnKey {
                host_port: port,
                guest_port,
            };
            if !self.by_key.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    fn mark_ready(&mut self, token: u32) {
        if let Some(slot) = self.slots.get_mut(&token) {
            if !slot.ready {
                slot.ready = true;
                self.ready.push_back(token);
            }
        }
    }

    /// Closes a stream; for a connection reset, the guest gets an RST.
    fn close(&mut self, token: u32, reset: Option<ResetReason>) {
        let Some(slot) = self.slots.remove(&token) else {
            return;
        };
        let stream = match slot.ep {
            Endpoint::Handshake(h) => {
                self.handshakes -= 1;
                h.stream
            }
            Endpoint::Conn(c) => {
                self.connections -= 1;
                self.by_key.remove(&c.key);
                if let Some(reason) = reset {
                    match reason {
                        ResetReason::Protocol => self.metrics.protocol_errors += 1,
                        ResetReason::CreditViolation => self.metrics.credit_violations += 1,
                        ResetReason::Timeout => self.metrics.timeouts += 1,
                        ResetReason::Done | ResetReason::HostGone => {}
                    }
                    log::debug!("virtio-vsock: reset {:?}: {reason:?}", c.key);
                    self.rst_queue.push_back(c.key);
                }
                c.stream
            }
        };
        self.graveyard.push((token, slot.registered, stream));
    }

    fn apply(&mut self, token: u32, verdict: Verdict) {
        match verdict {
            Verdict::Keep => {
                let work = matches!(
                    self.slots.get(&token),
                    Some(Slot { ep: Endpoint::Conn(c), .. }) if c.has_rx_work()
                );
                if work {
                    self.mark_ready(token);
                }
            }
            Verdict::Close => self.close(token, None),
            Verdict::Reset(reason) => self.close(token, Some(reason)),
        }
    }

    /// The listener is readable: takes the host processes waiting to connect.
    pub fn accept(&mut self, now: Instant) {
        while self.handshakes < MAX_HANDSHAKES {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!(
                            "virtio-vsock: cannot use a connection to {:?}: {e}",
                            self.uds_path
                        );
                        continue;
                    }
                    let token = self.alloc_token();
                    let hs = Handshake {
                        stream,
                        line: Vec::new(),
                        deadline: now + self.timeouts.handshake,
                    };
                    self.slots.insert(
                        token,
                        Slot {
                            ep: Endpoint::Handshake(hs),
                            registered: EventSet::empty(),
                            ready: false,
                        },
                    );
                    self.handshakes += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("virtio-vsock: cannot accept on {:?}: {e}", self.uds_path);
                    self.metrics.event_errors += 1;
                    self.listener_paused_until = Some(now + ACCEPT_BACKOFF);
                    break;
                }
            }
        }
    }

    /// A host stream is ready.
    pub fn on_stream_event(&mut self, token: u32, events: EventSet, now: Instant) {
        let Some(slot) = self.slots.get_mut(&token) else {
            return;
        };
        match &mut slot.ep {
            Endpoint::Handshake(hs) => match hs.read_line() {
                Line::Partial => {}
                Line::Bad => {
                    self.metrics.refused_connections += 1;
                    self.close(token, None);
                }
                Line::Connect(port) => self.connect_to_guest(token, port, now),
            },
            Endpoint::Conn(c) => {
                let verdict = c.on_stream_event(events, now);
                self.apply(token, verdict);
            }
        }
    }

    /// A host process asked for guest port `port`: the guest gets a REQUEST.
    fn connect_to_guest(&mut self, token: u32, port: u32, now: Instant) {
        let host_port = match self.connections < self.max_connections {
            true => self.alloc_local_port(port),
            false => None,
        };
        let Some(host_port) = host_port else {
            self.metrics.refused_connections += 1;
            self.close(token, None);
            return;
        };
        let Some(Slot {
            ep: Endpoint::Handshake(hs),
            registered,
            ..
        }) = self.slots.remove(&token)
        else {
            return;
        };
        self.handshakes -= 1;
        let key = ConnKey {
            host_port,
            guest_port: port,
        };
        let conn = Connection::host_initiated(key, hs.stream, &self.timeouts, now);
        self.slots.insert(
            token,
            Slot {
                ep: Endpoint::Conn(conn),
                registered,
                ready: false,
            },
        );
        self.connections += 1;
        self.by_key.insert(key, token);
        self.metrics.host_connections += 1;
        self.mark_ready(token);
    }

    /// The guest asked for host port `key.host_port`: connect to `PATH_<port>`.
    fn connect_to_host(&mut self, key: ConnKey, hdr: &Header) {
        if self.connections >= self.max_connections {
            self.metrics.refused_connections += 1;
            self.rst_queue.push_back(key);
            return;
        }
        let path = self.listener_path(key.host_port);
        let stream = match connect_nonblocking(&path) {
            Ok(stream) => stream,
            Err(e) => {
                log::debug!("virtio-vsock: guest connection to {path:?} refused: {e}");
                self.metrics.refused_connections += 1;
                self.rst_queue.push_back(key);
                return;
            }
        };
        let token = self.alloc_token();
        let conn = Connection::guest_initiated(key, stream, hdr, &self.timeouts);
        self.slots.insert(
            token,
            Slot {
                ep: Endpoint::Conn(conn),
                registered: EventSet::empty(),
                ready: false,
            },
        );
        self.connections += 1;
        self.by_key.insert(key, token);
        self.metrics.guest_connections += 1;
        self.mark_ready(token);
    }

    /// A well-formed packet from the guest.
    pub fn on_guest_packet(&mut self, hdr: &Header, op: Op, payload: &[u8], now: Instant) {
        let key = ConnKey::of_guest_packet(hdr);
        if let Some(&token) = self.by_key.get(&key) {
            if let Some(Slot {
                ep: Endpoint::Conn(c),
                ..
            }) = self.slots.get_mut(&token)
            {
                let verdict = c.on_guest_packet(hdr, op, payload, now);
                self.apply(token, verdict);
            }
            return;
        }
        match op {
            Op::Request => self.connect_to_host(key, hdr),
            // Never answer an RST with an RST.
            Op::Rst => {}
            _ => self.rst_queue.push_back(key),
        }
    }

    /// A packet from the guest that was refused but whose addresses are good: its
    /// connection (if any) cannot go on; the guest gets an RST.
    pub fn on_bad_guest_packet(&mut self, hdr: &Header) {
        let key = ConnKey::of_guest_packet(hdr);
        match self.by_key.get(&key) {
            Some(&token) => self.close(token, Some(ResetReason::Protocol)),
            None => self.rst_queue.push_back(key),
        }
    }

    /// Whether the guest takes no more transmit chains until it made room for RSTs.
    pub fn rst_backlog_full(&self) -> bool {
        self.rst_queue.len() >= MAX_RST_BACKLOG
    }

    /// Whether [`Muxer::next_rx`] may have something.
    pub fn has_rx_work(&self) -> bool {
        !self.rst_queue.is_empty() || !self.ready.is_empty()
    }

    /// The next packet for the guest (its payload, at most `room` bytes, in `out`).
    pub fn next_rx(&mut self, room: usize, out: &mut [u8], now: Instant) -> Option<Header> {
        loop {
            if let Some(key) = self.rst_queue.pop_front() {
                self.metrics.rst_sent += 1;
                return Some(key.header(self.guest_cid, Op::Rst));
            }
            let token = self.ready.pop_front()?;
            let Some(slot) = self.slots.get_mut(&token) else {
                continue;
            };
            slot.ready = false;
            let Endpoint::Conn(c) = &mut slot.ep else {
                continue;
            };
            let hdr = c.next_packet(self.guest_cid, room, out);
            let verdict = c.review(now);
            self.apply(token, verdict);
            if let Some(hdr) = hdr {
                return Some(hdr);
            }
        }
    }

    /// The timer fired: closes what ran out of time.
    pub fn on_timer(&mut self, now: Instant) {
        // Non-blocking: nothing to read means it was re-armed meanwhile.
        let _ = self.timer.wait();
        self.timer_armed_for = None;
        if self.listener_paused_until.is_some_and(|t| t <= now) {
            self.listener_paused_until = None;
        }
        let expired: Vec<(u32, bool)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.ep.deadline().is_some_and(|d| d <= now))
            .map(|(&t, s)| (t, matches!(s.ep, Endpoint::Conn(_))))
            .collect();
        for (token, is_conn) in expired {
            if is_conn {
                self.close(token, Some(ResetReason::Timeout));
            } else {
                self.metrics.refused_connections += 1;
                self.close(token, None);
            }
        }
    }

    /// Closes everything, without a word to the guest (the device is reset).
    pub fn close_all(&mut self) {
        let tokens: Vec<u32> = self.slots.keys().copied().collect();
        for token in tokens {
            self.close(token, None);
        }
        self.rst_queue.clear();
        self.ready.clear();
    }

    /// Brings the epoll set and the timer in line with the streams: closed streams
    /// leave it (and only then are closed), the others are polled for what they want, the
    /// listener while the device runs and handshakes are few. With `running` false
    /// (reset, or needing a reset) every stream is closed first.
    pub fn sync(&mut self, ops: &mut EventOps, running: bool, now: Instant) {
        if !running && (!self.slots.is_empty() || self.has_rx_work()) {
            self.close_all();
        }
        for (token, registered, stream) in self.graveyard.drain(..) {
            if !registered.is_empty() {
                let events = Events::with_data_raw(stream.as_raw_fd(), token, registered);
                if let Err(e) = ops.remove(events) {
                    log::error!("virtio-vsock: cannot unregister a closed stream: {e}");
                    self.metrics.event_errors += 1;
                }
            }
        }
        let paused = self.listener_paused_until.is_some_and(|t| t > now);
        let want_listener = running && self.handshakes < MAX_HANDSHAKES && !paused;
        if want_listener != self.listener_registered {
            let events = Events::with_data(&self.listener, LISTENER_TOKEN, EventSet::IN);
            let result = if want_listener {
                ops.add(events)
            } else {
                ops.remove(events)
            };
            match result {
                Ok(()) => self.listener_registered = want_listener,
                Err(e) => {
                    log::error!("virtio-vsock: cannot (un)register the listener: {e}");
                    self.metrics.event_errors += 1;
                }
            }
        }
        for (&token, slot) in self.slots.iter_mut() {
            let want = slot.ep.wants();
            if want == slot.registered {
                continue;
            }
            let fd = slot.ep.stream().as_raw_fd();
            let result = if slot.registered.is_empty() {
                ops.add(Events::with_data_raw(fd, token, want))
            } else if want.is_empty() {
                ops.remove(Events::with_data_raw(fd, token, slot.registered))
            } else {
                ops.modify(Events::with_data_raw(fd, token, want))
            };
            match result {
                Ok(()) => slot.registered = want,
                Err(e) => {
                    log::error!("virtio-vsock: cannot (un)register a stream: {e}");
                    self.metrics.event_errors += 1;
                }
            }
        }
        let next = self
            .slots
            .values()
            .filter_map(|s| s.ep.deadline())
            .chain(self.listener_paused_until)
            .min();
        if next != self.timer_armed_for {
            let result = match next {
                Some(at) => {
                    // Zero would disarm the timer.
                    let wait = at
                        .saturating_duration_since(now)
                        .max(Duration::from_micros(1));
                    self.timer.set(
                        Expiration::OneShot(TimeSpec::from_duration(wait)),
                        TimerSetTimeFlags::empty(),
                    )
                }
                None => self.timer.unset(),
            };
            match result {
                Ok(()) => self.timer_armed_for = next,
                Err(e) => {
                    log::error!("virtio-vsock: cannot arm the timer: {e}");
                    self.metrics.event_errors += 1;
                }
            }
        }
    }

    /// The timer's fd, for registration.
    pub fn timer_fd(&self) -> std::os::fd::RawFd {
        self.timer.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1234"), Some(1234));
        assert_eq!(parse_connect(b"connect 52\r"), Some(52));
        assert_eq!(parse_connect(b"  Connect   4294967295 "), Some(u32::MAX));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT 4294967296",
            b"CONNECT -1",
            b"CONNECT 12 34",
            b"LISTEN 12",
            b"CONNECT 0x10",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
    }
}
