//! One stream between a guest port and a host Unix socket: its state, the credit in both
//! directions, the bytes on their way to the host, and what it still has to tell the
//! guest.
//!
//! Flow control (virtio 1.2, 5.10.6.3): each side advertises `buf_alloc` (its receive
//! buffer) and `fwd_cnt` (bytes it has consumed) in every packet; a sender may have at
//! most `buf_alloc - (sent - fwd_cnt)` bytes in flight.
//! - Guest to host: we advertise [`CONN_BUF_SIZE`] and hold what the host socket does not
//!   take at once, never more than that: a guest that sends past its credit is reset.
//! - Host to guest: we read the host socket only when the guest has credit and a receive
//!   buffer for it, so nothing is buffered on our side; the socket buffer holds the rest.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use event_manager::EventSet;

use super::packet::{Header, Op, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::{CONN_BUF_SIZE, HOST_CID, MAX_PAYLOAD};

/// How long the peers of a connection get to do their part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Timeouts {
    /// A host process that connected, to send its `CONNECT <port>` line.
    pub handshake: Duration,
    /// The guest, to answer a host-initiated REQUEST.
    pub request: Duration,
    /// A connection the guest closed, to hand its last bytes to the host.
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(2),
            request: Duration::from_secs(2),
            close: Duration::from_secs(2),
        }
    }
}
/// Tell the guest our `fwd_cnt` once it moved this far since we last did, so that its
/// view of our free space never falls below three quarters of the buffer while the host
/// keeps up.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 4;

/// A connection's address: host port and guest port (the CIDs are fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ConnKey {
    pub host_port: u32,
    pub guest_port: u32,
}

impl ConnKey {
    /// The key of a packet from the guest.
    pub fn of_guest_packet(hdr: &Header) -> ConnKey {
        ConnKey {
            host_port: hdr.dst_port,
            guest_port: hdr.src_port,
        }
    }

    /// A header from the host side of this connection, with no credit information.
    pub fn header(&self, guest_cid: u64, op: Op) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.host_port,
            dst_port: self.guest_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op.raw(),
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// The host connected; we sent (or will send) the guest a REQUEST and wait for its
    /// RESPONSE.
    LocalInit,
    Established,
}

/// Why a connection is reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ResetReason {
    /// Both sides are done: the usual end of a connection.
    Done,
    /// The guest broke the protocol (an unexpected operation, data after its shutdown).
    Protocol,
    /// The guest sent more than the credit we gave it.
    CreditViolation,
    /// The host socket failed or went away.
    HostGone,
    /// The guest did not answer in time.
    Timeout,
}

/// What the owner should do with a connection after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Keep,
    /// Close it without a word to the guest (it sent an RST itself).
    Close,
    /// Close it and send the guest an RST.
    Reset(ResetReason),
}

pub(super) struct Connection {
    pub key: ConnKey,
    pub state: State,
    pub stream: UnixStream,
    /// When the connection is closed for want of an answer (REQUEST, or the end of a
    /// close).
    pub deadline: Option<Instant>,
    close_timeout: Duration,
    /// Bytes for the host not written yet; its first `preamble` bytes are ours (the `OK`
    /// line), the rest the guest's.
    tx_buf: VecDeque<u8>,
    preamble: usize,
    /// Guest bytes written to the host socket, and the value of that we last told.
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// Bytes sent to the guest, and its last advertised buffer and `fwd_cnt`.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Packets owed to the guest.
    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    send_credit_request: bool,
    /// Flags of a SHUTDOWN owed to the guest, 0 for none.
    send_shutdown: u32,
    /// We asked the guest for credit and have not heard since.
    credit_requested: bool,
    /// The host socket may have bytes (it was readable and not yet read dry).
    readable: bool,
    /// The host socket reached its end (the host sends no more).
    host_eof: bool,
    /// The host closed its socket (or it failed): nothing can go there any more.
    host_hup: bool,
    /// The guest said it receives no more / sends no more.
    peer_shut_rcv: bool,
    peer_shut_send: bool,
    /// We shut the host socket's write side (after the guest's SHUTDOWN SEND).
    write_shut: bool,
    /// A read or write on the host socket failed.
    failed: bool,
}

impl Connection {
    fn new(key: ConnKey, state: State, stream: UnixStream, timeouts: &Timeouts) -> Connection {
        Connection {
            key,
            state,
            stream,
            deadline: None,
            close_timeout: timeouts.close,
            tx_buf: VecDeque::new(),
            preamble: 0,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            send_request: false,
            send_response: false,
            send_credit_update: false,
            send_credit_request: false,
            send_shutdown: 0,
            credit_requested: false,
            readable: false,
            host_eof: false,
            host_hup: false,
            peer_shut_rcv: false,
            peer_shut_send: false,
            write_shut: false,
            failed: false,
        }
    }

    /// A host process connected and asked for guest port `key.guest_port`: the guest gets
    /// a REQUEST and has `timeouts.request` to answer it.
    pub fn host_initiated(
        key: ConnKey,
        stream: UnixStream,
        timeouts: &Timeouts,
        now: Instant,
    ) -> Connection {
        let mut c = Connection::new(key, State::LocalInit, stream, timeouts);
        c.send_request = true;
        c.deadline = Some(now + timeouts.request);
        c
    }

    /// The guest's REQUEST `hdr` reached a host listener: it gets a RESPONSE.
    pub fn guest_initiated(
        key: ConnKey,
        stream: UnixStream,
        hdr: &Header,
        timeouts: &Timeouts,
    ) -> Connection {
        let mut c = Connection::new(key, State::Established, stream, timeouts);
        c.send_response = true;
        c.update_peer_credit(hdr);
        c
    }

    /// How many bytes the guest can take now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        // A guest claiming to have consumed more than we sent gets nothing until it
        // tells the truth.
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        self.credit_requested = false;
    }

    /// Guest bytes held for the host.
    fn held(&self) -> usize {
        self.tx_buf.len() - self.preamble
    }

    /// A packet from the guest for this connection (already checked: ours, a stream, a
    /// known op, `payload` only with RW).
    pub fn on_guest_packet(
        &mut self,
        hdr: &Header,
        op: Op,
        payload: &[u8],
        now: Instant,
    ) -> Verdict {
        self.update_peer_credit(hdr);
        match (self.state, op) {
            (_, Op::Rst) => return Verdict::Close,
            (State::LocalInit, Op::Response) => {
                self.state = State::Established;
                self.deadline = None;
                let line = format!("OK {}\n", self.key.host_port);
                self.preamble = line.len();
                self.tx_buf.extend(line.as_bytes());
                self.flush();
            }
            (State::LocalInit, _) => return Verdict::Reset(ResetReason::Protocol),
            (State::Established, Op::Rw) => {
                if self.peer_shut_send {
                    return Verdict::Reset(ResetReason::Protocol);
                }
                if self.held() + payload.len() > CONN_BUF_SIZE as usize {
                    return Verdict::Reset(ResetReason::CreditViolation);
                }
                self.tx_buf.extend(payload);
                self.flush();
            }
            (State::Established, Op::Shutdown) => {
                self.peer_shut_rcv |= hdr.flags & SHUTDOWN_RCV != 0;
                self.peer_shut_send |= hdr.flags & SHUTDOWN_SEND != 0;
                self.flush();
            }
            (State::Established, Op::CreditUpdate) => {}
            (State::Established, Op::CreditRequest) => self.send_credit_update = true,
            (State::Established, Op::Request | Op::Response) => {
                return Verdict::Reset(ResetReason::Protocol)
            }
        }
        self.review(now)
    }

    /// The host socket is ready (`events` from epoll).
    pub fn on_stream_event(&mut self, events: EventSet, now: Instant) -> Verdict {
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            // Whatever the host wrote before it left can still be read.
            self.host_hup = true;
            self.readable = true;
        }
        if events.contains(EventSet::IN) {
            self.readable = true;
        }
        if !self.tx_buf.is_empty() {
            self.flush();
        }
        self.review(now)
    }

    /// Writes what the host socket takes; keeps the rest.
    fn flush(&mut self) {
        while !self.tx_buf.is_empty() && !self.failed {
            let (front, _) = self.tx_buf.as_slices();
            match (&self.stream).write(front) {
                Ok(0) => self.failed = true,
                Ok(n) => {
                    let n = n.min(front.len());
                    self.tx_buf.drain(..n);
                    let ours = n.min(self.preamble);
                    self.preamble -= ours;
                    // n - ours <= front.len() <= CONN_BUF_SIZE + a short line.
                    self.fwd_cnt += Wrapping((n - ours) as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("virtio-vsock: writing to {:?} failed: {e}", self.key);
                    self.failed = true;
                }
            }
        }
        if self.state == State::Established
            && (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD
        {
            self.send_credit_update = true;
        }
        if self.peer_shut_send && self.tx_buf.is_empty() && !self.write_shut && !self.failed {
            // The host reads the end of the stream. It may be gone already: nothing to do.
            let _ = self.stream.shutdown(Shutdown::Write);
            self.write_shut = true;
        }
    }

    /// Whether the connection is over, after any change.
    pub fn review(&mut self, now: Instant) -> Verdict {
        if self.failed {
            return Verdict::Reset(ResetReason::HostGone);
        }
        if self.state == State::LocalInit {
            return Verdict::Keep;
        }
        if self.host_hup && (self.host_eof || self.peer_shut_rcv) {
            return Verdict::Reset(ResetReason::HostGone);
        }
        if self.tx_buf.is_empty() {
            if self.peer_shut_send && (self.peer_shut_rcv || self.host_eof) {
                return Verdict::Reset(ResetReason::Done);
            }
        } else if self.peer_shut_send && self.peer_shut_rcv && self.deadline.is_none() {
            self.deadline = Some(now + self.close_timeout);
        }
        Verdict::Keep
    }

    fn may_send_data(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && !self.peer_shut_rcv
            && !self.failed
    }

    /// Whether [`Connection::next_packet`] may have something for the guest.
    pub fn has_rx_work(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_shutdown != 0
            || self.send_credit_update
            || self.send_credit_request
            || (self.may_send_data() && (self.peer_credit() > 0 || !self.credit_requested))
    }

    /// What to poll the host socket for now; empty when nothing (or when it is gone).
    pub fn wants(&self) -> EventSet {
        let mut events = EventSet::empty();
        if self.host_hup || self.failed {
            return events;
        }
        if self.state == State::Established
            && !self.readable
            && !self.host_eof
            && !self.peer_shut_rcv
            && self.peer_credit() > 0
        {
            events |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            events |= EventSet::OUT;
        }
        events
    }

    /// A header from us with our credit information (which the guest now knows).
    fn header(&mut self, guest_cid: u64, op: Op) -> Header {
        let mut hdr = self.key.header(guest_cid, op);
        hdr.buf_alloc = CONN_BUF_SIZE;
        hdr.fwd_cnt = self.fwd_cnt.0;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.send_credit_update = false;
        hdr
    }

    /// The next packet for the guest, its payload (`hdr.len` bytes, at most `room`) read
    /// from the host socket into `out`. `None` when there is nothing to send now.
    pub fn next_packet(&mut self, guest_cid: u64, room: usize, out: &mut [u8]) -> Option<Header> {
        if self.send_request {
            self.send_request = false;
            return Some(self.header(guest_cid, Op::Request));
        }
        if self.send_response {
            self.send_response = false;
            return Some(self.header(guest_cid, Op::Response));
        }
        if self.state != State::Established {
            return None;
        }
        if self.may_send_data() {
            let credit = usize::try_from(self.peer_credit()).unwrap_or(usize::MAX);
            let n = room.min(credit).min(MAX_PAYLOAD).min(out.len());
            if credit == 0 && !self.credit_requested {
                self.send_credit_request = true;
                self.credit_requested = true;
            }
            if n > 0 {
                match (&self.stream).read(&mut out[..n]) {
                    Ok(0) => {
                        self.host_eof = true;
                        self.readable = false;
                        self.send_shutdown |= SHUTDOWN_SEND;
                    }
                    Ok(read) => {
                        let read = read.min(n);
                        // read <= MAX_PAYLOAD.
                        self.rx_cnt += Wrapping(read as u32);
                        let mut hdr = self.header(guest_cid, Op::Rw);
                        hdr.len = read as u32;
                        return Some(hdr);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!("virtio-vsock: reading from {:?} failed: {e}", self.key);
                        self.failed = true;
                        self.readable = false;
                    }
                }
            }
        }
        if self.send_shutdown != 0 {
            let flags = std::mem::take(&mut self.send_shutdown);
            let mut hdr = self.header(guest_cid, Op::Shutdown);
            hdr.flags = flags;
            return Some(hdr);
        }
        if self.send_credit_request {
            self.send_credit_request = false;
            return Some(self.header(guest_cid, Op::CreditRequest));
        }
        if self.send_credit_update {
            return Some(self.header(guest_cid, Op::CreditUpdate));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 3;

    fn key() -> ConnKey {
        ConnKey {
            host_port: 1 << 30,
            guest_port: 1234,
        }
    }

    fn from_guest(op: Op, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 1 << 30,
            op: op.raw(),
            type_: TYPE_STREAM,
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    fn established() -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let hdr = from_guest(Op::Request, 64, 0);
        let mut c = Connection::guest_initiated(key(), ours, &hdr, &Timeouts::default());
        let mut out = [0u8; 16];
        assert_eq!(
            c.next_packet(GUEST, 16, &mut out).unwrap().op,
            Op::Response.raw()
        );
        (c, theirs)
    }

    #[test]
    fn host_initiated_waits_for_the_response_then_says_ok() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let now = Instant::now();
        let t = Timeouts::default();
        let mut c = Connection::host_initiated(key(), ours, &t, now);
        assert_eq!(c.deadline, Some(now + t.request));
        let mut out = [0u8; 16];
        let req = c.next_packet(GUEST, 16, &mut out).unwrap();
        assert_eq!(
            (req.op, req.src_port, req.dst_port),
            (Op::Request.raw(), 1 << 30, 1234)
        );
        assert_eq!(req.buf_alloc, CONN_BUF_SIZE);
        assert!(c.next_packet(GUEST, 16, &mut out).is_none());
        let v = c.on_guest_packet(&from_guest(Op::Response, 100, 0), Op::Response, &[], now);
        assert_eq!(v, Verdict::Keep);
        assert_eq!(c.state, State::Established);
        assert_eq!(c.deadline, None);
        let mut line = [0u8; 14];
        theirs.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"OK 1073741824\n");
        // The OK line is not guest data: fwd_cnt is still 0.
        assert_eq!(c.fwd_cnt.0, 0);
        assert_eq!(c.peer_credit(), 100);
    }

    #[test]
    fn anything_but_a_response_to_a_request_resets() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let now = Instant::now();
        let mut c = Connection::host_initiated(key(), ours, &Timeouts::default(), now);
        let v = c.on_guest_packet(&from_guest(Op::Rw, 100, 0), Op::Rw, b"x", now);
        assert_eq!(v, Verdict::Reset(ResetReason::Protocol));
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut c = Connection::host_initiated(key(), ours, &Timeouts::default(), now);
        let v = c.on_guest_packet(&from_guest(Op::Rst, 0, 0), Op::Rst, &[], now);
        assert_eq!(v, Verdict::Close);
    }

    #[test]
    fn sends_no_more_than_the_guest_credit() {
        let (mut c, mut theirs) = established();
        theirs.write_all(&[7u8; 100]).unwrap();
        c.on_stream_event(EventSet::IN, Instant::now());
        let mut out = [0u8; 1000];
        let hdr = c.next_packet(GUEST, 1000, &mut out).unwrap();
        assert_eq!((hdr.op, hdr.len), (Op::Rw.raw(), 64));
        assert_eq!(c.peer_credit(), 0);
        assert!(c.wants().is_empty() || !c.wants().contains(EventSet::IN));
        // Out of credit with data waiting: ask once.
        let hdr = c.next_packet(GUEST, 1000, &mut out).unwrap();
        assert_eq!(hdr.op, Op::CreditRequest.raw());
        assert!(c.next_packet(GUEST, 1000, &mut out).is_none());
        assert!(!c.has_rx_work());
        // The guest consumed 32 bytes.
        let upd = from_guest(Op::CreditUpdate, 64, 32);
        c.on_guest_packet(&upd, Op::CreditUpdate, &[], Instant::now());
        assert!(c.has_rx_work());
        let hdr = c.next_packet(GUEST, 1000, &mut out).unwrap();
        assert_eq!(hdr.len, 32);
        // A bogus fwd_cnt (more than we sent) gives no credit, and no panic.
        let bogus = from_guest(Op::CreditUpdate, 64, 1_000_000);
        c.on_guest_packet(&bogus, Op::CreditUpdate, &[], Instant::now());
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn a_guest_past_its_credit_is_reset() {
        let (mut c, _theirs) = established();
        // Fill the socket until it would block, then our buffer.
        let chunk = vec![1u8; MAX_PAYLOAD];
        let now = Instant::now();
        let mut sent = 0usize;
        loop {
            let hdr = from_guest(Op::Rw, 64, 0);
            match c.on_guest_packet(&hdr, Op::Rw, &chunk, now) {
                Verdict::Keep => sent += chunk.len(),
                v => {
                    assert_eq!(v, Verdict::Reset(ResetReason::CreditViolation));
                    break;
                }
            }
            assert!(sent < 64 * 1024 * 1024, "never refused");
        }
        assert!(c.held() <= CONN_BUF_SIZE as usize);
    }

    #[test]
    fn credit_updates_follow_the_host_reading() {
        let (mut c, mut theirs) = established();
        let chunk = vec![1u8; MAX_PAYLOAD];
        let now = Instant::now();
        let hdr = from_guest(Op::Rw, 64, 0);
        let mut out = [0u8; 16];
        for _ in 0..(CREDIT_UPDATE_THRESHOLD as usize / MAX_PAYLOAD) {
            assert_eq!(c.on_guest_packet(&hdr, Op::Rw, &chunk, now), Verdict::Keep);
        }
        let mut sink = vec![0u8; CREDIT_UPDATE_THRESHOLD as usize];
        theirs.read_exact(&mut sink).unwrap();
        let upd = c.next_packet(GUEST, 16, &mut out).unwrap();
        assert_eq!(upd.op, Op::CreditUpdate.raw());
        assert_eq!(upd.fwd_cnt, CREDIT_UPDATE_THRESHOLD);
        assert!(c.next_packet(GUEST, 16, &mut out).is_none());
    }

    #[test]
    fn shutdown_and_close() {
        let now = Instant::now();
        // The guest closes both ways: RST once its bytes reached the host.
        let (mut c, mut theirs) = established();
        c.on_guest_packet(&from_guest(Op::Rw, 64, 0), Op::Rw, b"bye", now);
        let mut shut = from_guest(Op::Shutdown, 64, 0);
        shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        let v = c.on_guest_packet(&shut, Op::Shutdown, &[], now);
        assert_eq!(v, Verdict::Reset(ResetReason::Done));
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");

        // The guest only stops sending: the host reads the end, the other way goes on.
        let (mut c, mut theirs) = established();
        shut.flags = SHUTDOWN_SEND;
        assert_eq!(
            c.on_guest_packet(&shut, Op::Shutdown, &[], now),
            Verdict::Keep
        );
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
        theirs.write_all(b"late").unwrap();
        c.on_stream_event(EventSet::IN, now);
        let mut out = [0u8; 16];
        assert_eq!(c.next_packet(GUEST, 16, &mut out).unwrap().len, 4);
        // Data after its own shutdown is a protocol error.
        let v = c.on_guest_packet(&from_guest(Op::Rw, 64, 0), Op::Rw, b"x", now);
        assert_eq!(v, Verdict::Reset(ResetReason::Protocol));

        // The host closes: the guest gets what was written, then an RST.
        let (mut c, mut theirs) = established();
        theirs.write_all(b"last").unwrap();
        drop(theirs);
        let v = c.on_stream_event(EventSet::IN | EventSet::HANG_UP, now);
        assert_eq!(v, Verdict::Keep);
        assert_eq!(c.next_packet(GUEST, 16, &mut out).unwrap().len, 4);
        let hdr = c.next_packet(GUEST, 16, &mut out).unwrap();
        assert_eq!((hdr.op, hdr.flags), (Op::Shutdown.raw(), SHUTDOWN_SEND));
        assert_eq!(c.review(now), Verdict::Reset(ResetReason::HostGone));
    }
}
