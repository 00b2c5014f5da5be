//! The device through the test driver (acting as the guest's vsock driver) and a real
//! event loop, with real Unix sockets in a temporary directory as the host side.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use vm_memory::GuestAddress;
use vmm_sys_util::tempdir::TempDir;

use super::connection::Timeouts;
use super::packet::*;
use super::*;
use crate::testing::{Desc, Harness, F_NEXT};
use crate::VirtioDevice;

const CID: u64 = 3;
const RX_BUF: u32 = 4096;

/// A received packet.
#[derive(Debug)]
struct Pkt {
    hdr: Header,
    payload: Vec<u8>,
}

impl Pkt {
    fn op(&self) -> u16 {
        self.hdr.op
    }
}

/// The guest: a harness around the device, the receive buffers it gave, and the host's
/// socket directory.
struct Vm {
    h: Harness<Vsock>,
    path: PathBuf,
    _dir: TempDir,
    /// The buffers of each receive chain, by head.
    rx: HashMap<u16, Vec<(GuestAddress, u32)>>,
}

impl Vm {
    fn new() -> Vm {
        Vm::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut VsockConfig)) -> Vm {
        let dir = TempDir::new_with_prefix("/tmp/fv-vsock-").unwrap();
        let path = dir.as_path().join("v.sock");
        let mut config = VsockConfig::new(CID, &path);
        tweak(&mut config);
        let mut h = Harness::new(Vsock::with_config(config).unwrap());
        h.activate().unwrap();
        Vm {
            h,
            path,
            _dir: dir,
            rx: HashMap::new(),
        }
    }

    /// Gives the device `n` receive buffers (one descriptor each, as Linux does) and
    /// kicks the receive queue.
    fn fill_rx(&mut self, n: usize) {
        for _ in 0..n {
            let len = HDR_LEN as u32 + RX_BUF;
            let at = self.h.driver.alloc(len);
            let head = self.h.driver.add_chain(RX_QUEUE, &[Desc::write(at, len)]);
            self.rx.insert(head, vec![(at, len)]);
        }
        self.h.kick(RX_QUEUE);
    }

    /// Sends `hdr` and `payload` (`hdr.len` is set) on the transmit queue and runs.
    fn send(&mut self, mut hdr: Header, payload: &[u8]) {
        hdr.len = payload.len() as u32;
        let h = self.h.driver.alloc_bytes(&hdr.to_bytes());
        if payload.is_empty() {
            self.h.submit(TX_QUEUE, &[Desc::read(h, HDR_LEN as u32)]);
        } else {
            let p = self.h.driver.alloc_bytes(payload);
            self.h.submit(
                TX_QUEUE,
                &[
                    Desc::read(h, HDR_LEN as u32),
                    Desc::read(p, payload.len() as u32),
                ],
            );
        }
        self.h.driver.take_used(TX_QUEUE);
    }

    /// Runs the loop, then reads what arrived in the receive buffers.
    fn recv(&mut self) -> Vec<Pkt> {
        self.h.run();
        let mut out = Vec::new();
        for used in self.h.driver.take_used(RX_QUEUE) {
            let head = u16::try_from(used.id).unwrap();
            let bufs = self.rx.remove(&head).expect("a buffer we gave");
            let mut bytes = Vec::new();
            for (at, len) in bufs {
                bytes.extend(self.h.driver.read(at, len as usize));
            }
            bytes.truncate(used.len as usize);
            if bytes.len() < HDR_LEN {
                out.push(Pkt {
                    hdr: Header::default(),
                    payload: bytes,
                });
                continue;
            }
            let raw: [u8; HDR_LEN] = bytes[..HDR_LEN].try_into().unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(
                hdr.len as usize,
                bytes.len() - HDR_LEN,
                "len matches the used length"
            );
            out.push(Pkt {
                hdr,
                payload: bytes[HDR_LEN..].to_vec(),
            });
        }
        out
    }

    fn recv_one(&mut self) -> Pkt {
        let mut pkts = self.recv();
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        pkts.remove(0)
    }

    fn host_connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A host process connects to guest port `port` and the guest accepts; returns the
    /// host stream and the host port.
    fn host_to_guest(&mut self, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        let mut host = self.host_connect();
        host.write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        let req = self.recv_one();
        assert_eq!(req.op(), OP_REQUEST);
        let hp = req.hdr.src_port;
        self.send(guest(OP_RESPONSE, port, hp, buf_alloc, 0), &[]);
        let ok = format!("OK {hp}\n");
        let mut line = vec![0u8; ok.len()];
        host.read_exact(&mut line).unwrap();
        assert_eq!(line, ok.as_bytes());
        (host, hp)
    }
}

/// A header from the guest.
fn guest(op: u16, src_port: u32, dst_port: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

/// Whether the other end closed the stream (after anything still to read): the end of
/// the stream, or a reset when it closed with our bytes unread.
fn closed(s: &mut UnixStream) -> bool {
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Reads until the end of the stream.
fn read_to_end(s: &mut UnixStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn host_connects_and_data_flows_both_ways() {
    let mut vm = Vm::new();
    vm.fill_rx(16);
    let mut host = vm.host_connect();
    host.write_all(b"CONNECT 1234\n").unwrap();
    let req = vm.recv_one();
    assert_eq!(
        (req.hdr.src_cid, req.hdr.dst_cid, req.hdr.dst_port, req.op()),
        (HOST_CID, CID, 1234, OP_REQUEST)
    );
    assert_eq!(req.hdr.type_, TYPE_STREAM);
    assert_eq!(req.hdr.buf_alloc, CONN_BUF_SIZE);
    let hp = req.hdr.src_port;
    assert!(hp >= 1 << 30);
    // The guest accepts, with a tiny buffer to see credit at work.
    vm.send(guest(OP_RESPONSE, 1234, hp, 16, 0), &[]);
    assert_eq!(read_n(&mut host, 14), format!("OK {hp}\n").as_bytes());
    assert_eq!(vm.h.device().connections(), 1);

    // Host to guest.
    host.write_all(b"ping").unwrap();
    let p = vm.recv_one();
    assert_eq!((p.op(), p.payload.as_slice()), (OP_RW, &b"ping"[..]));
    assert_eq!((p.hdr.src_port, p.hdr.dst_port), (hp, 1234));
    // Guest to host.
    vm.send(guest(OP_RW, 1234, hp, 16, 0), b"pong");
    assert_eq!(read_n(&mut host, 4), b"pong");

    // 40 bytes with 12 bytes of credit left: 12 go, then the device asks for credit.
    host.write_all(&[b'x'; 40]).unwrap();
    let pkts = vm.recv();
    assert_eq!(pkts.len(), 2, "{pkts:?}");
    assert_eq!((pkts[0].op(), pkts[0].payload.len()), (OP_RW, 12));
    assert_eq!(pkts[1].op(), OP_CREDIT_REQUEST);
    assert!(vm.recv().is_empty(), "nothing more without credit");
    // The guest read 16 bytes: 16 more go.
    vm.send(guest(OP_CREDIT_UPDATE, 1234, hp, 16, 16), &[]);
    let pkts = vm.recv();
    assert_eq!((pkts[0].op(), pkts[0].payload.len()), (OP_RW, 16));
    // A bigger buffer: the rest.
    vm.send(guest(OP_CREDIT_UPDATE, 1234, hp, 4096, 32), &[]);
    let p = vm.recv().pop().unwrap();
    assert_eq!((p.op(), p.payload.len()), (OP_RW, 12));
    // Every packet tells the guest our fwd_cnt: the 4 bytes of "pong".
    assert_eq!(p.hdr.fwd_cnt, 4);

    // A credit request from the guest gets an update.
    vm.send(guest(OP_CREDIT_REQUEST, 1234, hp, 4096, 44), &[]);
    let p = vm.recv_one();
    assert_eq!(
        (p.op(), p.hdr.buf_alloc, p.hdr.fwd_cnt),
        (OP_CREDIT_UPDATE, CONN_BUF_SIZE, 4)
    );

    // The guest closes: its last bytes reach the host, then RST, then the host sees
    // the end of the stream.
    vm.send(guest(OP_RW, 1234, hp, 4096, 44), b"bye");
    let mut shut = guest(OP_SHUTDOWN, 1234, hp, 4096, 44);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    vm.send(shut, &[]);
    let p = vm.recv_one();
    assert_eq!((p.op(), p.hdr.dst_port), (OP_RST, 1234));
    assert_eq!(read_to_end(&mut host), b"bye");
    assert_eq!(vm.h.device().connections(), 0);
    let m = vm.h.device().metrics();
    assert_eq!(m.host_connections, 1);
    assert_eq!(m.bad_packets, 0);
}

#[test]
fn the_host_closing_ends_the_connection() {
    let mut vm = Vm::new();
    vm.fill_rx(8);
    let (mut host, hp) = vm.host_to_guest(80, 4096);
    host.write_all(b"last words").unwrap();
    drop(host);
    let pkts = vm.recv();
    let ops: Vec<u16> = pkts.iter().map(Pkt::op).collect();
    assert_eq!(ops, vec![OP_RW, OP_SHUTDOWN, OP_RST], "{pkts:?}");
    assert_eq!(pkts[0].payload, b"last words");
    assert_eq!(pkts[1].hdr.flags, SHUTDOWN_SEND);
    assert_eq!(pkts[2].hdr.src_port, hp);
    assert_eq!(vm.h.device().connections(), 0);
    assert_eq!(vm.h.run(), 0, "nothing left polling");
}

#[test]
fn half_close_from_the_host_lets_the_guest_answer() {
    let mut vm = Vm::new();
    vm.fill_rx(8);
    let (mut host, hp) = vm.host_to_guest(80, 4096);
    host.write_all(b"GET /").unwrap();
    host.shutdown(std::net::Shutdown::Write).unwrap();
    let pkts = vm.recv();
    let ops: Vec<u16> = pkts.iter().map(Pkt::op).collect();
    assert_eq!(ops, vec![OP_RW, OP_SHUTDOWN]);
    assert_eq!(pkts[1].hdr.flags, SHUTDOWN_SEND);
    vm.send(guest(OP_RW, 80, hp, 4096, 5), b"200 OK");
    assert_eq!(read_n(&mut host, 6), b"200 OK");
    // The guest is done too: both directions are closed, the connection ends.
    let mut shut = guest(OP_SHUTDOWN, 80, hp, 4096, 5);
    shut.flags = SHUTDOWN_SEND;
    vm.send(shut, &[]);
    assert_eq!(vm.recv_one().op(), OP_RST);
    assert!(read_to_end(&mut host).is_empty());
    assert_eq!(vm.h.device().connections(), 0);
}

#[test]
fn the_guest_connects_to_a_host_listener() {
    let mut vm = Vm::new();
    vm.fill_rx(8);
    let listener = UnixListener::bind(format!("{}_5000", vm.path.display())).unwrap();
    vm.send(guest(OP_REQUEST, 777, 5000, 4096, 0), &[]);
    let p = vm.recv_one();
    assert_eq!(
        (p.op(), p.hdr.src_port, p.hdr.dst_port, p.hdr.dst_cid),
        (OP_RESPONSE, 5000, 777, CID)
    );
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    vm.send(guest(OP_RW, 777, 5000, 4096, 0), b"hello host");
    assert_eq!(read_n(&mut host, 10), b"hello host");
    host.write_all(b"hello guest").unwrap();
    let p = vm.recv_one();
    assert_eq!((p.op(), p.payload.as_slice()), (OP_RW, &b"hello guest"[..]));
    // The guest resets: the host stream ends, no answer to an RST.
    vm.send(guest(OP_RST, 777, 5000, 4096, 11), &[]);
    assert!(vm.recv().is_empty());
    assert!(read_to_end(&mut host).is_empty());
    assert_eq!(vm.h.device().connections(), 0);
    assert_eq!(vm.h.device().metrics().guest_connections, 1);
}

#[test]
fn nobody_listening_or_no_connection_gets_an_rst() {
    let mut vm = Vm::new();
    vm.fill_rx(8);
    vm.send(guest(OP_REQUEST, 777, 6000, 4096, 0), &[]);
    let p = vm.recv_one();
    assert_eq!(
        (p.op(), p.hdr.src_port, p.hdr.dst_port),
        (OP_RST, 6000, 777)
    );
    for op in [
        OP_RW,
        OP_SHUTDOWN,
        OP_CREDIT_UPDATE,
        OP_CREDIT_REQUEST,
        OP_RESPONSE,
    ] {
        let payload: &[u8] = if op == OP_RW { b"data" } else { b"" };
        vm.send(guest(op, 1, 2, 4096, 0), payload);
        assert_eq!(vm.recv_one().op(), OP_RST, "op {op}");
    }
    // An RST for nothing gets no answer.
    vm.send(guest(OP_RST, 1, 2, 0, 0), &[]);
    assert!(vm.recv().is_empty());
    assert_eq!(vm.h.device().metrics().refused_connections, 1);
}

#[test]
fn bad_packets_are_dropped_or_reset_never_fatal() {
    let mut vm = Vm::new();
    vm.fill_rx(32);
    let listener = UnixListener::bind(format!("{}_7", vm.path.display())).unwrap();
    // Wrong addresses: dropped silently (no one to answer).
    vm.send(
        Header {
            src_cid: 9,
            ..guest(OP_REQUEST, 1, 7, 0, 0)
        },
        &[],
    );
    vm.send(
        Header {
            dst_cid: 4,
            ..guest(OP_REQUEST, 1, 7, 0, 0)
        },
        &[],
    );
    vm.send(
        Header {
            dst_cid: CID,
            ..guest(OP_REQUEST, 1, 7, 0, 0)
        },
        &[],
    );
    assert!(vm.recv().is_empty());
    // Well addressed but bad: an RST each.
    vm.send(
        Header {
            type_: 2,
            ..guest(OP_REQUEST, 1, 7, 0, 0)
        },
        &[],
    );
    vm.send(guest(0, 1, 7, 0, 0), &[]);
    vm.send(guest(99, 1, 7, 0, 0), &[]);
    let pkts = vm.recv();
    assert_eq!(pkts.iter().filter(|p| p.op() == OP_RST).count(), 3);
    // A length that does not match the chain.
    let mut hdr = guest(OP_RW, 1, 7, 0, 0);
    hdr.len = 100;
    let at = vm.h.driver.alloc_bytes(&hdr.to_bytes());
    let data = vm.h.driver.alloc(10);
    vm.h.submit(
        TX_QUEUE,
        &[Desc::read(at, HDR_LEN as u32), Desc::read(data, 10)],
    );
    assert_eq!(vm.recv_one().op(), OP_RST);
    // Unusable chains: empty, too short for a header, device-writable, outside RAM, a
    // loop.
    let short = vm.h.driver.alloc(20);
    vm.h.driver.add_chain(TX_QUEUE, &[Desc::read(short, 0)]);
    vm.h.driver.add_chain(TX_QUEUE, &[Desc::read(short, 20)]);
    vm.h.driver
        .add_chain(TX_QUEUE, &[Desc::write(at, HDR_LEN as u32)]);
    vm.h.driver.add_chain(
        TX_QUEUE,
        &[Desc::read(GuestAddress(1 << 40), HDR_LEN as u32)],
    );
    vm.h.kick(TX_QUEUE);
    vm.h.driver
        .set_desc(TX_QUEUE, 200, at.0, HDR_LEN as u32, F_NEXT, 200);
    vm.h.driver.push_avail(TX_QUEUE, 200);
    vm.h.kick(TX_QUEUE);
    assert!(vm.recv().is_empty());
    assert_eq!(vm.h.device().metrics().bad_packets, 12);
    assert!(!vm.h.device().needs_reset());

    // A bad packet on a live connection resets it.
    vm.send(guest(OP_REQUEST, 1, 7, 4096, 0), &[]);
    assert_eq!(vm.recv_one().op(), OP_RESPONSE);
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    vm.send(guest(OP_SHUTDOWN, 1, 7, 4096, 0), b"payload on a shutdown");
    assert_eq!(vm.recv_one().op(), OP_RST);
    assert!(read_to_end(&mut host).is_empty());
    assert_eq!(vm.h.device().connections(), 0);
    // And the device still works.
    vm.send(guest(OP_REQUEST, 2, 7, 4096, 0), &[]);
    assert_eq!(vm.recv_one().op(), OP_RESPONSE);
}

#[test]
fn a_guest_past_its_credit_is_reset() {
    let mut vm = Vm::new();
    vm.fill_rx(64);
    let (mut host, hp) = vm.host_to_guest(9, 4096);
    // The host does not read; the guest ignores the credit it was given.
    let chunk = vec![0xabu8; MAX_PAYLOAD];
    let mut sent = 0usize;
    let mut reset = false;
    for _ in 0..64 {
        vm.send(guest(OP_RW, 9, hp, 4096, 0), &chunk);
        sent += chunk.len();
        if vm.recv().iter().any(|p| p.op() == OP_RST) {
            reset = true;
            break;
        }
    }
    assert!(reset, "the device never reset the connection");
    assert_eq!(vm.h.device().metrics().credit_violations, 1);
    assert_eq!(vm.h.device().connections(), 0);
    // What the host got is a prefix of what was sent, and no more than the socket
    // buffer and our buffer held.
    let got = read_to_end(&mut host);
    assert!(got.len() < sent);
    assert!(got.iter().all(|&b| b == 0xab));
}

#[test]
fn guest_bytes_wait_for_a_slow_host_with_credit_updates() {
    let mut vm = Vm::new();
    vm.fill_rx(64);
    let (mut host, hp) = vm.host_to_guest(9, 4096);
    host.set_nonblocking(true).unwrap();
    // A well-behaved guest: it sends only within the credit it was told.
    let total = 4 * CONN_BUF_SIZE as usize;
    let mut sent = 0usize;
    let mut peer_fwd = 0u32;
    let mut got = 0usize;
    let mut sink = vec![0u8; 1 << 20];
    for _ in 0..100_000 {
        let credit = CONN_BUF_SIZE as usize - (sent - peer_fwd as usize);
        let n = credit.min(MAX_PAYLOAD).min(total - sent);
        if n > 0 {
            vm.send(guest(OP_RW, 9, hp, 4096, 0), &vec![7u8; n]);
            sent += n;
        }
        for p in vm.recv() {
            assert_ne!(p.op(), OP_RST, "a compliant guest was reset");
            peer_fwd = p.hdr.fwd_cnt;
        }
        if vm.rx.len() < 16 {
            vm.fill_rx(16);
        }
        // The host reads slowly.
        if let Ok(n) = host.read(&mut sink[..16 * 1024]) {
            got += n;
        }
        if got == total {
            break;
        }
    }
    assert_eq!(got, total);
    assert_eq!(vm.h.device().metrics().credit_violations, 0);
}

#[test]
fn the_connection_cap_refuses_more() {
    let mut vm = Vm::with(|c| c.max_connections = 1);
    vm.fill_rx(8);
    let _listener = UnixListener::bind(format!("{}_7", vm.path.display())).unwrap();
    vm.send(guest(OP_REQUEST, 1, 7, 4096, 0), &[]);
    assert_eq!(vm.recv_one().op(), OP_RESPONSE);
    vm.send(guest(OP_REQUEST, 2, 7, 4096, 0), &[]);
    assert_eq!(vm.recv_one().op(), OP_RST);
    // A host process is turned away too.
    let mut host = vm.host_connect();
    host.write_all(b"CONNECT 22\n").unwrap();
    assert!(vm.recv().is_empty());
    assert!(read_to_end(&mut host).is_empty());
    assert_eq!(vm.h.device().metrics().refused_connections, 2);
}

#[test]
fn bad_handshakes_and_timeouts_close_the_host_stream() {
    let mut vm = Vm::new();
    vm.h.device().muxer.timeouts = Timeouts {
        handshake: Duration::from_millis(30),
        request: Duration::from_millis(30),
        close: Duration::from_millis(30),
    };
    vm.fill_rx(8);
    let mut bad = vm.host_connect();
    bad.write_all(b"HELLO 12\n").unwrap();
    let mut long = vm.host_connect();
    long.write_all(&[b'1'; 40]).unwrap();
    let mut silent = vm.host_connect();
    vm.h.run();
    assert!(closed(&mut bad));
    assert!(closed(&mut long));
    // The silent one is closed once its time is up.
    vm.h.run_for(Duration::from_millis(80));
    assert!(read_to_end(&mut silent).is_empty());
    // A guest that never answers the REQUEST: the host stream closes, the guest gets an
    // RST after the REQUEST.
    let mut host = vm.host_connect();
    host.write_all(b"CONNECT 5\n").unwrap();
    assert_eq!(vm.recv_one().op(), OP_REQUEST);
    vm.h.run_for(Duration::from_millis(80));
    assert_eq!(vm.recv_one().op(), OP_RST);
    assert!(read_to_end(&mut host).is_empty());
    let m = vm.h.device().metrics();
    assert_eq!((m.refused_connections, m.timeouts), (3, 1));
    assert_eq!(vm.h.device().connections(), 0);
}

#[test]
fn the_guest_refusing_a_host_connection_closes_it() {
    let mut vm = Vm::new();
    vm.fill_rx(8);
    let mut host = vm.host_connect();
    host.write_all(b"CONNECT 31\n").unwrap();
    let req = vm.recv_one();
    vm.send(guest(OP_RST, 31, req.hdr.src_port, 0, 0), &[]);
    assert!(vm.recv().is_empty());
    assert!(read_to_end(&mut host).is_empty());
    assert_eq!(vm.h.device().connections(), 0);
}

#[test]
fn without_receive_buffers_the_host_is_not_read() {
    let mut vm = Vm::new();
    vm.fill_rx(2);
    let (mut host, _) = vm.host_to_guest(9, 1 << 20);
    // One buffer left: the first write takes it, the second waits in the socket.
    host.write_all(b"one").unwrap();
    assert_eq!(vm.recv_one().payload, b"one");
    host.write_all(b"two").unwrap();
    assert!(vm.recv().is_empty());
    assert!(vm.h.device().rx_waiting_for_buffers);
    assert_eq!(vm.h.run(), 0, "the stream is not polled meanwhile");
    vm.fill_rx(1);
    assert_eq!(vm.recv_one().payload, b"two");
}

#[test]
fn unusable_receive_chains_are_returned_empty() {
    let mut vm = Vm::new();
    let listener = UnixListener::bind(format!("{}_7", vm.path.display())).unwrap();
    // Device-readable, too small for a header, a loop; then a good one in two pieces.
    let a = vm.h.driver.alloc(HDR_LEN as u32 + 64);
    let h1 = vm.h.driver.add_chain(RX_QUEUE, &[Desc::read(a, 100)]);
    let h2 = vm.h.driver.add_chain(RX_QUEUE, &[Desc::write(a, 20)]);
    vm.h.driver.set_desc(
        RX_QUEUE,
        250,
        a.0,
        100,
        F_NEXT | crate::testing::F_WRITE,
        250,
    );
    vm.h.driver.push_avail(RX_QUEUE, 250);
    vm.rx.insert(250, vec![(a, 100)]);
    let hdr = vm.h.driver.alloc(HDR_LEN as u32);
    let body = vm.h.driver.alloc(64);
    let h3 = vm.h.driver.add_chain(
        RX_QUEUE,
        &[Desc::write(hdr, HDR_LEN as u32), Desc::write(body, 64)],
    );
    vm.rx.insert(h1, vec![(a, 100)]);
    vm.rx.insert(h2, vec![(a, 20)]);
    vm.rx.insert(h3, vec![(hdr, HDR_LEN as u32), (body, 64)]);
    vm.h.kick(RX_QUEUE);
    vm.send(guest(OP_REQUEST, 1, 7, 1 << 20, 0), &[]);
    let pkts = vm.recv();
    assert_eq!(pkts.len(), 4);
    assert!(pkts[..3].iter().all(|p| p.payload.is_empty()));
    assert_eq!(pkts[3].op(), OP_RESPONSE);
    assert_eq!(vm.h.device().metrics().bad_rx_chains, 3);
    // A payload bigger than the buffer is split across packets.
    let (mut host, _) = listener.accept().unwrap();
    vm.fill_rx(1);
    let body = vm.h.driver.alloc(HDR_LEN as u32 + 10);
    let h =
        vm.h.driver
            .add_chain(RX_QUEUE, &[Desc::write(body, HDR_LEN as u32 + 10)]);
    vm.rx.insert(h, vec![(body, HDR_LEN as u32 + 10)]);
    // Used in order: the big buffer first, then the small one.
    vm.h.kick(RX_QUEUE);
    host.write_all(&[1u8; RX_BUF as usize + 5]).unwrap();
    let pkts = vm.recv();
    let lens: Vec<usize> = pkts.iter().map(|p| p.payload.len()).collect();
    assert_eq!(lens, vec![RX_BUF as usize, 5]);
}

#[test]
fn a_reset_closes_every_connection() {
    let mut vm = Vm::new();
    vm.fill_rx(8);
    let listener = UnixListener::bind(format!("{}_7", vm.path.display())).unwrap();
    let (mut from_host, _) = vm.host_to_guest(9, 4096);
    vm.send(guest(OP_REQUEST, 1, 7, 4096, 0), &[]);
    assert_eq!(vm.recv_one().op(), OP_RESPONSE);
    let (mut to_host, _) = listener.accept().unwrap();
    let mut pending = vm.host_connect();
    vm.h.run();
    assert_eq!(vm.h.device().connections(), 2);
    vm.h.reset();
    assert_eq!(vm.h.device().connections(), 0);
    assert!(read_to_end(&mut from_host).is_empty());
    assert!(read_to_end(&mut to_host).is_empty());
    assert!(read_to_end(&mut pending).is_empty());
    // While reset, host processes wait in the backlog; after activation they get in.
    let mut early = vm.host_connect();
    early.write_all(b"CONNECT 9\n").unwrap();
    vm.h.run();
    vm.h.driver.reset_rings();
    vm.rx.clear();
    vm.h.activate().unwrap();
    vm.fill_rx(4);
    let req = vm.recv_one();
    assert_eq!((req.op(), req.hdr.dst_port), (OP_REQUEST, 9));
}

#[test]
fn a_bad_ring_needs_a_reset_and_closes_connections() {
    let mut vm = Vm::new();
    vm.fill_rx(4);
    let (mut host, _) = vm.host_to_guest(9, 4096);
    vm.h.driver.set_avail_idx(TX_QUEUE, 1000);
    vm.h.kick(TX_QUEUE);
    assert!(vm.h.device().needs_reset());
    assert_eq!(vm.h.interrupt.config_signals(), 1);
    assert!(read_to_end(&mut host).is_empty());
    assert_eq!(vm.h.run(), 0);
}

#[test]
fn config_space_and_construction() {
    let dir = TempDir::new_with_prefix("/tmp/fv-vsock-").unwrap();
    let path = dir.as_path().join("v.sock");
    let dev = Vsock::new(0x1_2345_6789 & 0xffff_fffe, &path).unwrap();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    let mut cfg = [0xffu8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(cfg[..8], (0x2345_6788u64).to_le_bytes());
    assert_eq!(cfg[8..], [0; 4]);
    let mut hi = [0u8; 4];
    dev.read_config(4, &mut hi);
    assert_eq!(hi, [0; 4]);
    // The socket exists now: a second device cannot take it.
    assert!(matches!(Vsock::new(5, &path), Err(VsockError::Bind { .. })));
    for bad in [0, 1, 2, u64::from(u32::MAX), 1 << 32] {
        let p = dir.as_path().join(format!("bad{bad}"));
        assert!(matches!(
            Vsock::new(bad, &p),
            Err(VsockError::InvalidCid(_))
        ));
    }
    let mut cfg = VsockConfig::new(3, dir.as_path().join("zero"));
    cfg.max_connections = 0;
    assert!(matches!(
        Vsock::with_config(cfg),
        Err(VsockError::NoConnections)
    ));
}
