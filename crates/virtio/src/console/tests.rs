//! The console through the test driver and a real event loop, over an in-memory backend
//! and over real sockets.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_manager::EventSet;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempdir::TempDir;

use super::device::VIRTIO_CONSOLE_F_SIZE;
use super::*;
use crate::testing::{Desc, Harness, F_NEXT, F_WRITE};
use crate::VirtioDevice;

#[derive(Default)]
struct FakeState {
    /// What the host sends the guest.
    input: VecDeque<u8>,
    eof: bool,
    fail_reads: bool,
    /// What the guest wrote.
    output: Vec<u8>,
    /// Bytes the sink takes before it would block; `None` for no limit.
    room: Option<usize>,
    fail_writes: bool,
    reads: usize,
}

/// An in-memory backend; clones share the state. Its input fd is an eventfd readable
/// while input may be waiting, its output fd one written when the sink has room again.
#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    input_ready: Arc<EventFd>,
    output_ready: Arc<EventFd>,
}

impl Fake {
    fn new() -> Self {
        Fake {
            state: Arc::default(),
            input_ready: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            output_ready: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, bytes: &[u8]) {
        self.state().input.extend(bytes);
        self.input_ready.write(1).unwrap();
    }

    fn end_input(&self) {
        self.state().eof = true;
        self.input_ready.write(1).unwrap();
    }

    fn output(&self) -> Vec<u8> {
        std::mem::take(&mut self.state().output)
    }

    fn set_room(&self, room: Option<usize>) {
        self.state().room = room;
        self.output_ready.write(1).unwrap();
    }
}

impl Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.state();
        st.reads += 1;
        if st.fail_reads {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if st.input.is_empty() {
            if st.eof {
                return Ok(0);
            }
            let _ = self.input_ready.read();
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(st.input.len());
        for (b, v) in buf.iter_mut().zip(st.input.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }
}

impl Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state();
        if st.fail_writes {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        let n = match st.room {
            None => buf.len(),
            Some(0) => {
                let _ = self.output_ready.read();
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Some(room) => {
                let n = room.min(buf.len());
                st.room = Some(room - n);
                n
            }
        };
        st.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ConsoleBackend for Fake {
    fn input_fd(&self) -> Option<RawFd> {
        Some(self.input_ready.as_raw_fd())
    }

    fn output_ready(&self) -> Option<(RawFd, EventSet)> {
        Some((self.output_ready.as_raw_fd(), EventSet::IN))
    }
}

fn harness() -> (Harness<Console<Fake>>, Fake) {
    let fake = Fake::new();
    let mut h = Harness::new(Console::new(fake.clone()).unwrap());
    h.activate().unwrap();
    (h, fake)
}

#[test]
fn guest_output_reaches_the_backend() {
    let (mut h, fake) = harness();
    let a = h.driver.alloc_bytes(b"hello ");
    let b = h.driver.alloc_bytes(b"world\n");
    let head = h.submit(TX_QUEUE, &[Desc::read(a, 6), Desc::read(b, 6)]);
    assert_eq!(fake.output(), b"hello world\n");
    let used = h.driver.take_used(TX_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].id, used[0].len), (u32::from(head), 0));
    assert_eq!(h.interrupt.queue_signals(TX_QUEUE as u16), 1);
    assert_eq!(h.device().metrics().tx_bytes, 12);
}

#[test]
fn a_full_sink_holds_back_the_guest() {
    let (mut h, fake) = harness();
    fake.set_room(Some(3));
    let a = h.driver.alloc_bytes(b"hello");
    let b = h.driver.alloc_bytes(b"world");
    h.driver.add_chain(TX_QUEUE, &[Desc::read(a, 5)]);
    h.driver.add_chain(TX_QUEUE, &[Desc::read(b, 5)]);
    h.kick(TX_QUEUE);
    // The first chain's bytes are ours (returned); the second waits in the ring.
    assert_eq!(fake.output(), b"hel");
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
    h.kick(TX_QUEUE);
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 0);
    // The sink drains: the rest follows, in order.
    fake.set_room(None);
    h.run();
    assert_eq!(fake.output(), b"loworld");
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
}

#[test]
fn output_errors_drop_the_bytes_not_the_device() {
    let (mut h, fake) = harness();
    fake.state().fail_writes = true;
    let a = h.driver.alloc_bytes(b"lost");
    h.submit(TX_QUEUE, &[Desc::read(a, 4)]);
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
    let m = h.device().metrics();
    assert_eq!((m.tx_dropped, m.backend_errors), (4, 1));
    fake.state().fail_writes = false;
    h.submit(TX_QUEUE, &[Desc::read(a, 4)]);
    assert_eq!(fake.output(), b"lost");
}

#[test]
fn malformed_transmit_chains_are_dropped() {
    let (mut h, fake) = harness();
    let a = h.driver.alloc_bytes(b"abcd");
    let big = h.driver.alloc(MAX_TX_CHAIN as u32 + 1);
    // Device-writable, outside RAM, too long, a loop, and an empty one.
    h.driver
        .add_chain(TX_QUEUE, &[Desc::read(a, 4), Desc::write(a, 4)]);
    h.driver
        .add_chain(TX_QUEUE, &[Desc::read(GuestAddress(0x4000_0000), 4)]);
    h.driver
        .add_chain(TX_QUEUE, &[Desc::read(big, MAX_TX_CHAIN as u32 + 1)]);
    h.driver.add_chain(TX_QUEUE, &[Desc::read(a, 0)]);
    h.kick(TX_QUEUE);
    let loop_head = 10;
    h.driver
        .set_desc(TX_QUEUE, loop_head, a.0, 4, F_NEXT, loop_head);
    h.driver.push_avail(TX_QUEUE, loop_head);
    h.kick(TX_QUEUE);
    assert_eq!(fake.output(), b"");
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 5);
    assert_eq!(h.device().metrics().bad_chains, 4);
    assert!(!h.device().needs_reset());
    // And the device still works.
    h.submit(TX_QUEUE, &[Desc::read(a, 4)]);
    assert_eq!(fake.output(), b"abcd");
}

#[test]
fn input_reaches_the_guest_buffers() {
    let (mut h, fake) = harness();
    let a = h.driver.alloc(2);
    let b = h.driver.alloc(2);
    let c = h.driver.alloc(16);
    for (at, len) in [(a, 2), (b, 2), (c, 16)] {
        h.driver.add_chain(RX_QUEUE, &[Desc::write(at, len)]);
    }
    h.kick(RX_QUEUE);
    fake.send(b"hello");
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    let lens: Vec<u32> = used.iter().map(|u| u.len).collect();
    assert_eq!(lens, vec![2, 2, 1]);
    assert_eq!(h.driver.read(a, 2), b"he");
    assert_eq!(h.driver.read(b, 2), b"ll");
    assert_eq!(h.driver.read(c, 1), b"o");
    assert_eq!(h.interrupt.queue_signals(RX_QUEUE as u16), 1);
}

#[test]
fn the_source_is_not_read_while_the_guest_has_no_buffers() {
    let (mut h, fake) = harness();
    fake.send(&vec![b'x'; 3 * RX_CHUNK]);
    h.run();
    // One chunk was read and waits; the rest stays in the backend.
    assert_eq!(fake.state().input.len(), 2 * RX_CHUNK);
    assert!(h.device().rx.waiting_for_buffers);
    let reads = fake.state().reads;
    h.run();
    assert_eq!(fake.state().reads, reads, "the source is not polled");
    let buf = h.driver.alloc(RX_CHUNK as u32);
    h.submit(RX_QUEUE, &[Desc::write(buf, RX_CHUNK as u32)]);
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, RX_CHUNK as u32);
    // That buffer took the chunk; the next one waits for the next buffer.
    assert_eq!(fake.state().input.len(), RX_CHUNK);
    h.submit(RX_QUEUE, &[Desc::write(buf, RX_CHUNK as u32)]);
    h.submit(RX_QUEUE, &[Desc::write(buf, RX_CHUNK as u32)]);
    assert_eq!(h.driver.take_used(RX_QUEUE).len(), 2);
    assert!(fake.state().input.is_empty());
}

#[test]
fn malformed_receive_chains_are_returned_unused() {
    let (mut h, fake) = harness();
    let a = h.driver.alloc(8);
    // Device-readable, outside RAM, a loop; then a good one.
    h.driver.add_chain(RX_QUEUE, &[Desc::read(a, 8)]);
    h.driver
        .add_chain(RX_QUEUE, &[Desc::write(GuestAddress(u64::MAX - 4), 8)]);
    h.driver.set_desc(RX_QUEUE, 5, a.0, 8, F_NEXT | F_WRITE, 5);
    h.driver.push_avail(RX_QUEUE, 5);
    h.driver.add_chain(RX_QUEUE, &[Desc::write(a, 0)]);
    h.driver.add_chain(RX_QUEUE, &[Desc::write(a, 8)]);
    h.kick(RX_QUEUE);
    fake.send(b"ok");
    h.run();
    let lens: Vec<u32> = h.driver.take_used(RX_QUEUE).iter().map(|u| u.len).collect();
    assert_eq!(lens, vec![0, 0, 0, 0, 2]);
    assert_eq!(h.driver.read(a, 2), b"ok");
    assert_eq!(h.device().metrics().bad_chains, 3);
    assert!(!h.device().needs_reset());
}

#[test]
fn the_end_of_input_stops_polling() {
    let (mut h, fake) = harness();
    fake.send(b"bye");
    fake.end_input();
    let a = h.driver.alloc(8);
    h.submit(RX_QUEUE, &[Desc::write(a, 8)]);
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, 3);
    // The eventfd stays readable; the device no longer listens, so the loop is idle.
    assert_eq!(h.run(), 0);
    assert!(h.device().rx.closed);
}

#[test]
fn a_failing_source_stops_input_only() {
    let (mut h, fake) = harness();
    fake.state().fail_reads = true;
    fake.send(b"x");
    h.run();
    assert_eq!(h.device().metrics().backend_errors, 1);
    let a = h.driver.alloc_bytes(b"out");
    h.submit(TX_QUEUE, &[Desc::read(a, 3)]);
    assert_eq!(fake.output(), b"out");
}

#[test]
fn a_bad_avail_index_needs_a_reset_and_reset_clears_everything() {
    let (mut h, fake) = harness();
    fake.set_room(Some(0));
    let a = h.driver.alloc_bytes(b"pending");
    h.submit(TX_QUEUE, &[Desc::read(a, 7)]);
    assert!(h.device().tx.blocked());
    h.driver.set_avail_idx(RX_QUEUE, 999);
    h.kick(RX_QUEUE);
    fake.send(b"in");
    h.run();
    assert!(h.device().needs_reset());
    assert_eq!(h.interrupt.config_signals(), 1);
    h.reset();
    assert!(!h.device().needs_reset());
    assert!(!h.device().tx.blocked());
    fake.set_room(None);
    h.driver.reset_rings();
    h.activate().unwrap();
    // Input and output from before the reset are dropped.
    let b = h.driver.alloc(8);
    h.submit(RX_QUEUE, &[Desc::write(b, 8)]);
    fake.send(b"again");
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, 5);
    assert_eq!(h.driver.read(b, 5), b"again");
    assert_eq!(fake.output(), b"");
}

#[test]
fn config_space_and_features() {
    let dev = Console::new(Fake::new()).unwrap();
    assert_eq!(dev.device_type(), 3);
    assert_eq!(dev.avail_features() & (1 << VIRTIO_CONSOLE_F_SIZE), 0);
    let mut cfg = [0xffu8; 16];
    dev.read_config(0, &mut cfg);
    assert_eq!(cfg[..4], [0, 0, 0, 0]);
    assert_eq!(cfg[12..], [0; 4], "past the end reads as zero");

    let mut h = Harness::new(Console::new(Fake::new()).unwrap().with_size(80, 25));
    assert_ne!(
        h.device().avail_features() & (1 << VIRTIO_CONSOLE_F_SIZE),
        0
    );
    let mut cfg = [0u8; 4];
    h.device().read_config(0, &mut cfg);
    assert_eq!(cfg, [80, 0, 25, 0]);
    let mut one = [0u8; 1];
    h.device().read_config(2, &mut one);
    assert_eq!(one, [25]);
    h.device().write_config(0, &[1, 2, 3, 4]);
    h.device().read_config(0, &mut cfg);
    assert_eq!(cfg, [80, 0, 25, 0], "read-only");
    h.activate().unwrap();
    h.device().set_size(132, 43);
    assert_eq!(h.interrupt.config_signals(), 1);
    h.device().read_config(0, &mut cfg);
    assert_eq!(cfg, [132, 0, 43, 0]);
}

#[test]
fn fd_backend_over_a_socket_pair_with_backpressure() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut h = Harness::new(Console::new(FdBackend::from_stream(ours).unwrap()).unwrap());
    h.activate().unwrap();
    // Far more output than the socket buffer holds: the device stops taking chains.
    const CHAINS: usize = 16;
    let chunk = 64 * 1024u32;
    let buf = h.driver.alloc(chunk);
    h.driver.write(buf, &vec![b'z'; chunk as usize]);
    for _ in 0..CHAINS {
        h.driver.add_chain(TX_QUEUE, &[Desc::read(buf, chunk)]);
    }
    h.kick(TX_QUEUE);
    let first = h.driver.take_used(TX_QUEUE).len();
    assert!(first < CHAINS, "the sink should have filled up");
    assert!(h.device().tx.blocked());
    // Read everything on the other end while running the loop.
    theirs.set_nonblocking(true).unwrap();
    let mut got = 0usize;
    let mut scratch = vec![0u8; 256 * 1024];
    for _ in 0..10_000 {
        match theirs.read(&mut scratch) {
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        h.run();
        if got == CHAINS * chunk as usize {
            break;
        }
    }
    assert_eq!(got, CHAINS * chunk as usize);
    assert_eq!(first + h.driver.take_used(TX_QUEUE).len(), CHAINS);

    // Input the other way.
    let a = h.driver.alloc(16);
    h.submit(RX_QUEUE, &[Desc::write(a, 16)]);
    theirs.write_all(b"typed").unwrap();
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, 5);
    assert_eq!(h.driver.read(a, 5), b"typed");
    // The other end closes: input ends, output is dropped, nothing spins.
    drop(theirs);
    h.run();
    let b = h.driver.alloc_bytes(b"gone");
    h.submit(TX_QUEUE, &[Desc::read(b, 4)]);
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
    assert_eq!(h.run(), 0);
}

#[test]
fn socket_backend_serves_one_client_at_a_time() {
    let dir = TempDir::new_with_prefix("/tmp/fv-console-").unwrap();
    let path = dir.as_path().join("console.sock");
    let mut h = Harness::new(Console::new(SocketBackend::bind(&path).unwrap()).unwrap());
    h.activate().unwrap();
    let out = h.driver.alloc_bytes(b"early ");
    // Nobody connected: output is dropped.
    h.submit(TX_QUEUE, &[Desc::read(out, 6)]);
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);

    let mut first = UnixStream::connect(&path).unwrap();
    h.run();
    assert!(h.device().backend().has_client());
    let msg = h.driver.alloc_bytes(b"login: ");
    h.submit(TX_QUEUE, &[Desc::read(msg, 7)]);
    let mut got = [0u8; 7];
    first.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"login: ");

    let rx = h.driver.alloc(32);
    h.driver.add_chain(RX_QUEUE, &[Desc::write(rx, 32)]);
    h.driver.add_chain(RX_QUEUE, &[Desc::write(rx, 32)]);
    h.kick(RX_QUEUE);
    first.write_all(b"root\n").unwrap();
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, 5);
    assert_eq!(h.driver.read(rx, 5), b"root\n");

    // A second client takes over; the first one is closed.
    let mut second = UnixStream::connect(&path).unwrap();
    h.run();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    second.write_all(b"ls\n").unwrap();
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, 3);
    h.submit(TX_QUEUE, &[Desc::read(msg, 7)]);
    let mut got = [0u8; 7];
    second.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"login: ");

    // The client leaves: the device goes idle, output is dropped again.
    drop(second);
    h.run();
    assert!(!h.device().backend().has_client());
    h.driver.take_used(TX_QUEUE);
    h.submit(TX_QUEUE, &[Desc::read(msg, 7)]);
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
    assert_eq!(h.run(), 0);
}
