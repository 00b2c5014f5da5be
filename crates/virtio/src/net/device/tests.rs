//! The device through the test driver and a real event loop, over an in-memory backend.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::rate_limiter::BucketConfig;
use crate::testing::{Desc, Harness, F_NEXT};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Default)]
struct FakeState {
    /// Frames waiting to be read by the device (what the host sends the guest).
    to_guest: VecDeque<Vec<u8>>,
    /// Frames the device wrote (what the guest sent).
    from_guest: Vec<Vec<u8>>,
    hdr_len: Option<usize>,
    offloads: Option<Offloads>,
    fail_reads: bool,
    fail_offloads: bool,
}

/// An in-memory backend; clones share the state, so a test keeps one to look inside. Its
/// fd is an eventfd that is readable while frames may be waiting.
#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    ready: Arc<EventFd>,
}

impl Fake {
    fn new() -> Self {
        Fake {
            state: Arc::default(),
            ready: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The host sends the guest `frame` (header included).
    fn inject(&self, frame: Vec<u8>) {
        self.state().to_guest.push_back(frame);
        self.ready.write(1).unwrap();
    }

    fn sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.state().from_guest)
    }

    fn waiting(&self) -> usize {
        self.state().to_guest.len()
    }
}

impl AsRawFd for Fake {
    fn as_raw_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
}

impl NetBackend for Fake {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.state();
        if st.fail_reads {
            return Err(io::Error::from_raw_os_error(libc::EBADFD));
        }
        match st.to_guest.pop_front() {
            Some(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok(n)
            }
            None => {
                let _ = self.ready.read();
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.state().from_guest.push(frame.to_vec());
        Ok(())
    }

    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()> {
        self.state().hdr_len = Some(len);
        Ok(())
    }

    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        let mut st = self.state();
        if st.fail_offloads {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        st.offloads = Some(offloads);
        Ok(())
    }
}

fn bit(b: u32) -> u64 {
    1u64 << b
}

/// A frame as a backend carries it: a zero virtio-net header, then an Ethernet frame of
/// `len` bytes with a recognizable pattern.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    f
}

fn setup_with(config: NetConfig) -> (Harness<Net<Fake>>, Fake) {
    let fake = Fake::new();
    let net = Net::new(config, fake.clone()).unwrap();
    (Harness::new(net), fake)
}

/// A device activated with every feature it offers (MRG_RXBUF among them).
fn setup() -> (Harness<Net<Fake>>, Fake) {
    let (mut h, fake) = setup_with(NetConfig::new(MAC));
    h.activate().unwrap();
    (h, fake)
}

/// A device activated without mergeable receive buffers.
fn setup_no_mrg() -> (Harness<Net<Fake>>, Fake) {
    let (mut h, fake) = setup_with(NetConfig::new(MAC));
    let features = h.device().avail_features() & !bit(VIRTIO_NET_F_MRG_RXBUF);
    h.activate_with(features).unwrap();
    (h, fake)
}

/// Posts one receive chain of `len` bytes and kicks; returns its address and head.
fn post_rx(h: &mut Harness<Net<Fake>>, len: u32) -> (GuestAddress, u16) {
    let a = h.driver.alloc(len);
    let head = h.driver.add_chain(RX_QUEUE, &[Desc::write(a, len)]);
    h.kick(RX_QUEUE);
    (a, head)
}

fn num_buffers(h: &Harness<Net<Fake>>, at: GuestAddress) -> u16 {
    let b = h.driver.read(GuestAddress(at.0 + 10), 2);
    u16::from_le_bytes([b[0], b[1]])
}

#[test]
fn config_space_and_features() {
    let (h, _) = setup_with(NetConfig {
        mtu: Some(1400),
        ..NetConfig::new(MAC)
    });
    let dev = h.device();
    assert_eq!(dev.device_type(), VIRTIO_ID_NET);
    assert_eq!(dev.queue_max_sizes(), &[256, 256]);
    let mut c = [0xffu8; 16];
    dev.read_config(0, &mut c);
    assert_eq!(&c[0..6], &MAC);
    assert_eq!(&c[6..8], &[1, 0], "link up");
    assert_eq!(&c[8..10], &[1, 0], "one queue pair");
    assert_eq!(u16::from_le_bytes([c[10], c[11]]), 1400);
    assert_eq!(&c[12..], &[0; 4], "past the end reads as zero");
    let mut b = [0xffu8; 2];
    dev.read_config(4, &mut b);
    assert_eq!(b, [0x34, 0x56]);
    dev.read_config(u64::MAX, &mut b);
    assert_eq!(b, [0, 0]);

    let f = dev.avail_features();
    for wanted in [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_MTU,
        VIRTIO_RING_F_EVENT_IDX,
    ] {
        assert!(has(f, wanted), "feature {wanted}");
    }
    drop(dev);

    let (h, _) = setup_with(NetConfig::new(MAC));
    assert!(!has(h.device().avail_features(), VIRTIO_NET_F_MTU));
    assert!(matches!(
        Net::new(
            NetConfig {
                mtu: Some(67),
                ..NetConfig::new(MAC)
            },
            Fake::new()
        ),
        Err(NetError::InvalidMtu(67))
    ));
}

#[test]
fn config_writes_are_ignored() {
    let (h, _) = setup();
    h.device().write_config(0, &[1, 2, 3, 4, 5, 6]);
    let mut c = [0u8; 6];
    h.device().read_config(0, &mut c);
    assert_eq!(c, MAC);
}

#[test]
fn activation_configures_the_backend() {
    let (_h, fake) = setup();
    {
        let st = fake.state();
        assert_eq!(st.hdr_len, Some(VNET_HDR_LEN));
        assert_eq!(
            st.offloads,
            Some(Offloads {
                csum: true,
                tso4: true,
                tso6: true,
                tso_ecn: true,
                ufo: false
            })
        );
    }

    let (mut h, fake) = setup_with(NetConfig::new(MAC));
    let plain = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MAC);
    h.activate_with(plain).unwrap();
    assert_eq!(fake.state().offloads, Some(Offloads::default()));
}

#[test]
fn activation_errors() {
    let (mut h, _) = setup_with(NetConfig::new(MAC));
    assert!(matches!(
        h.activate_with(bit(VIRTIO_NET_F_MAC)),
        Err(ActivateError::NotModern)
    ));

    let (mut h, fake) = setup_with(NetConfig::new(MAC));
    fake.state().fail_offloads = true;
    assert!(matches!(h.activate(), Err(ActivateError::Backend(_))));
    // Not active: frames are not read.
    fake.inject(frame(60, 1));
    h.run();
    assert_eq!(fake.waiting(), 1);
}

#[test]
fn tx_frame_reaches_the_backend() {
    let (mut h, fake) = setup();
    let f = frame(100, 3);
    let a = h.driver.alloc_bytes(&f[..VNET_HDR_LEN]);
    let b = h.driver.alloc_bytes(&f[VNET_HDR_LEN..]);
    let head = h.submit(TX_QUEUE, &[Desc::read(a, 12), Desc::read(b, 100)]);
    assert_eq!(fake.sent(), vec![f]);
    let used = h.driver.take_used(TX_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].id, used[0].len), (u32::from(head), 0));
    assert_eq!(h.interrupt.queue_signals(TX_QUEUE as u16), 1);
    let m = h.device().metrics();
    assert_eq!((m.tx_frames, m.tx_bytes, m.tx_dropped), (1, 100, 0));
}

#[test]
fn tx_indirect_chain() {
    let (mut h, fake) = setup();
    let f = frame(200, 9);
    let a = h.driver.alloc_bytes(&f[..50]);
    let b = h.driver.alloc_bytes(&f[50..]);
    h.driver
        .add_indirect_chain(TX_QUEUE, &[Desc::read(a, 50), Desc::read(b, 162)]);
    h.kick(TX_QUEUE);
    assert_eq!(fake.sent(), vec![f]);
}

#[test]
fn tx_malformed_chains_are_dropped_and_returned() {
    let (mut h, fake) = setup();
    let f = frame(100, 1);
    let a = h.driver.alloc_bytes(&f);
    let big = h.driver.alloc(MAX_FRAME_LEN as u32 + 1);
    let mem_end = crate::testing::DEFAULT_MEM_SIZE;

    let bad_chains: Vec<Vec<Desc>> = vec![
        // Device-writable.
        vec![Desc::write(a, 112)],
        vec![Desc::read(a, 12), Desc::write(a, 100)],
        // Longer than any frame.
        vec![Desc::read(big, MAX_FRAME_LEN as u32 + 1)],
        // Zero length, and too short for the headers.
        vec![Desc::read(a, 0)],
        vec![Desc::read(a, 20)],
        // Outside guest memory, and wrapping around the address space.
        vec![Desc::read(GuestAddress(mem_end - 50), 112)],
        vec![Desc::read(GuestAddress(u64::MAX - 50), 112)],
    ];
    for descs in &bad_chains {
        h.submit(TX_QUEUE, descs);
    }
    // A descriptor linked to itself, and one linked past the table.
    h.driver.set_desc(TX_QUEUE, 100, a.0, 112, F_NEXT, 100);
    h.driver.push_avail(TX_QUEUE, 100);
    h.driver.set_desc(TX_QUEUE, 101, a.0, 112, F_NEXT, 999);
    h.driver.push_avail(TX_QUEUE, 101);
    h.kick(TX_QUEUE);

    assert!(fake.sent().is_empty());
    let used = h.driver.take_used(TX_QUEUE);
    assert_eq!(used.len(), bad_chains.len() + 2);
    assert!(used.iter().all(|u| u.len == 0));
    let m = h.device().metrics();
    assert_eq!(m.tx_dropped as usize, bad_chains.len() + 2);
    assert_eq!(m.bad_chains as usize, bad_chains.len() + 2);
    assert!(!h.device().needs_reset());

    // The queue still works.
    h.submit(TX_QUEUE, &[Desc::read(a, 112)]);
    assert_eq!(fake.sent(), vec![f]);
}

#[test]
fn tx_header_must_match_the_features() {
    let (mut h, fake) = setup_with(NetConfig::new(MAC));
    h.activate_with(bit(VIRTIO_F_VERSION_1)).unwrap();
    let mut f = frame(100, 1);
    f[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM_U8;
    let a = h.driver.alloc_bytes(&f);
    h.submit(TX_QUEUE, &[Desc::read(a, 112)]);
    assert!(
        fake.sent().is_empty(),
        "checksum offload was not negotiated"
    );
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
    assert_eq!(h.device().metrics().tx_dropped, 1);
}

const VIRTIO_NET_HDR_F_NEEDS_CSUM_U8: u8 = 1;

#[test]
fn tx_a_full_ring_in_one_go_and_more() {
    let (mut h, fake) = setup();
    let f = frame(60, 5);
    let a = h.driver.alloc_bytes(&f);
    // A full ring is two budgets: the device comes back for the rest by itself.
    for _ in 0..256 {
        h.driver.add_chain(TX_QUEUE, &[Desc::read(a, 72)]);
    }
    h.kick(TX_QUEUE);
    for _ in 0..100 {
        h.driver.add_chain(TX_QUEUE, &[Desc::read(a, 72)]);
    }
    h.kick(TX_QUEUE);
    assert_eq!(fake.sent().len(), 356);
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 356);
}

#[test]
fn rx_frame_into_one_buffer() {
    let (mut h, fake) = setup_no_mrg();
    let (a, head) = post_rx(&mut h, 2048);
    let f = frame(1000, 7);
    fake.inject(f.clone());
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].id, used[0].len), (u32::from(head), f.len() as u32));
    let got = h.driver.read(a, f.len());
    assert_eq!(&got[VNET_HDR_LEN..], &f[VNET_HDR_LEN..]);
    assert_eq!(num_buffers(&h, a), 1, "num_buffers is 1 without MRG_RXBUF");
    assert_eq!(h.interrupt.queue_signals(RX_QUEUE as u16), 1);
    let m = h.device().metrics();
    assert_eq!((m.rx_frames, m.rx_bytes), (1, 1000));
}

#[test]
fn rx_one_chain_of_several_descriptors() {
    let (mut h, fake) = setup_no_mrg();
    let a = h.driver.alloc(10);
    let b = h.driver.alloc(100);
    let c = h.driver.alloc(1000);
    // The header itself is split across two descriptors.
    h.driver.add_chain(
        RX_QUEUE,
        &[
            Desc::write(a, 10),
            Desc::write(b, 100),
            Desc::write(c, 1000),
        ],
    );
    h.kick(RX_QUEUE);
    let f = frame(500, 2);
    fake.inject(f.clone());
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, f.len() as u32);
    let mut got = h.driver.read(a, 10);
    got.extend(h.driver.read(b, 100));
    got.extend(h.driver.read(c, f.len() - 110));
    assert_eq!(&got[VNET_HDR_LEN..], &f[VNET_HDR_LEN..]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
}

#[test]
fn rx_mergeable_across_buffers() {
    let (mut h, fake) = setup();
    let bufs: Vec<(GuestAddress, u16)> = (0..4).map(|_| post_rx(&mut h, 1000)).collect();
    let f = frame(2500, 4);
    fake.inject(f.clone());
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    let lens: Vec<u32> = used.iter().map(|u| u.len).collect();
    assert_eq!(lens, vec![1000, 1000, 512]);
    let ids: Vec<u32> = used.iter().map(|u| u.id).collect();
    assert_eq!(
        ids,
        bufs[..3].iter().map(|b| u32::from(b.1)).collect::<Vec<_>>()
    );
    assert_eq!(num_buffers(&h, bufs[0].0), 3);
    let mut got = Vec::new();
    for (u, (addr, _)) in used.iter().zip(&bufs) {
        got.extend(h.driver.read(*addr, u.len as usize));
    }
    assert_eq!(&got[VNET_HDR_LEN..], &f[VNET_HDR_LEN..]);
    assert_eq!(h.interrupt.queue_signals(RX_QUEUE as u16), 1);

    // The fourth buffer takes the next frame.
    fake.inject(frame(100, 8));
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    assert_eq!((used[0].id, used[0].len), (u32::from(bufs[3].1), 112));
    assert_eq!(num_buffers(&h, bufs[3].0), 1);
}

#[test]
fn rx_without_buffers_stops_reading_until_the_guest_kicks() {
    let (mut h, fake) = setup();
    fake.inject(frame(100, 1));
    fake.inject(frame(200, 2));
    fake.inject(frame(300, 3));
    // The harness panics if a ready fd is never drained: the device must stop polling.
    h.run();
    assert!(h.driver.take_used(RX_QUEUE).is_empty());
    assert_eq!(
        fake.waiting(),
        2,
        "one frame waits in the device, the rest in the backend"
    );

    let (a, _) = post_rx(&mut h, 4096);
    let used = h.driver.take_used(RX_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].len, 112);
    assert_eq!(h.driver.read(a, 112)[12..], frame(100, 1)[12..]);

    // Two more buffers: the other two frames follow without the backend firing again.
    for _ in 0..2 {
        let b = h.driver.alloc(4096);
        h.driver.add_chain(RX_QUEUE, &[Desc::write(b, 4096)]);
    }
    h.kick(RX_QUEUE);
    let lens: Vec<u32> = h.driver.take_used(RX_QUEUE).iter().map(|u| u.len).collect();
    assert_eq!(lens, vec![212, 312]);
    assert_eq!(fake.waiting(), 0);
}

#[test]
fn rx_too_few_buffers_for_a_frame_puts_them_back() {
    let (mut h, fake) = setup();
    let (first, head) = post_rx(&mut h, 1000);
    fake.inject(frame(2500, 6));
    h.run();
    assert!(
        h.driver.take_used(RX_QUEUE).is_empty(),
        "nothing used for a partial frame"
    );

    post_rx(&mut h, 1000);
    post_rx(&mut h, 1000);
    let used = h.driver.take_used(RX_QUEUE);
    assert_eq!(used.len(), 3);
    assert_eq!(
        used[0].id,
        u32::from(head),
        "the first buffer was put back, then used"
    );
    assert_eq!(num_buffers(&h, first), 3);
}

#[test]
fn rx_frame_larger_than_the_whole_ring_is_dropped() {
    let (mut h, fake) = setup();
    // 256 buffers of 12 bytes hold 3072 bytes.
    let a = h.driver.alloc(12 * 256);
    for i in 0..256u64 {
        h.driver
            .add_chain(RX_QUEUE, &[Desc::write(GuestAddress(a.0 + 12 * i), 12)]);
    }
    h.kick(RX_QUEUE);
    fake.inject(frame(4000, 1));
    fake.inject(frame(20, 2));
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    // The big frame is dropped; the small one (32 bytes) takes three buffers.
    assert_eq!(
        used.iter().map(|u| u.len).collect::<Vec<_>>(),
        vec![12, 12, 8]
    );
    assert_eq!(h.device().metrics().rx_dropped, 1);
}

#[test]
fn rx_buffer_too_small_without_mrg_drops_the_frame_keeps_the_buffer() {
    let (mut h, fake) = setup_no_mrg();
    let (_, head) = post_rx(&mut h, 200);
    fake.inject(frame(500, 1));
    fake.inject(frame(100, 2));
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].id, used[0].len), (u32::from(head), 112));
    assert_eq!(h.device().metrics().rx_dropped, 1);
}

#[test]
fn rx_malformed_chains_are_returned_empty() {
    let (mut h, fake) = setup();
    let a = h.driver.alloc(2048);
    let mem_end = crate::testing::DEFAULT_MEM_SIZE;
    let bad: Vec<Vec<Desc>> = vec![
        vec![Desc::read(a, 2048)],
        vec![Desc::write(a, 100), Desc::read(a, 100)],
        vec![Desc::write(GuestAddress(mem_end - 100), 2048)],
        vec![Desc::write(a, 11)],
        vec![Desc::write(a, 0)],
    ];
    for (i, descs) in bad.iter().enumerate() {
        let head = h.driver.add_chain(RX_QUEUE, descs);
        h.kick(RX_QUEUE);
        fake.inject(frame(100, i as u8));
        h.run();
        let used = h.driver.take_used(RX_QUEUE);
        assert_eq!(used.len(), 1, "chain {i}");
        assert_eq!((used[0].id, used[0].len), (u32::from(head), 0), "chain {i}");
    }
    // A loop in a receive chain.
    h.driver.set_desc(
        RX_QUEUE,
        200,
        a.0,
        64,
        F_NEXT | crate::testing::F_WRITE,
        200,
    );
    h.driver.push_avail(RX_QUEUE, 200);
    h.kick(RX_QUEUE);
    fake.inject(frame(100, 9));
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE).len(), 1);

    let m = h.device().metrics();
    assert_eq!((m.bad_chains, m.rx_dropped, m.rx_frames), (6, 6, 0));
    assert!(!h.device().needs_reset());

    // A good buffer gets the next frame.
    post_rx(&mut h, 2048);
    fake.inject(frame(100, 10));
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE)[0].len, 112);
}

#[test]
fn rx_a_bad_chain_among_merged_buffers_returns_them_all() {
    let (mut h, fake) = setup();
    let (_, good) = post_rx(&mut h, 1000);
    let a = h.driver.alloc(1000);
    let bad = h.driver.add_chain(RX_QUEUE, &[Desc::read(a, 1000)]);
    h.kick(RX_QUEUE);
    fake.inject(frame(1500, 1));
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    assert_eq!(
        used.iter().map(|u| (u.id, u.len)).collect::<Vec<_>>(),
        vec![(u32::from(good), 0), (u32::from(bad), 0)]
    );
}

#[test]
fn rx_data_valid_only_with_guest_csum() {
    let (mut h, fake) = setup_no_mrg();
    let (a, _) = post_rx(&mut h, 2048);
    let mut f = frame(100, 1);
    f[0] = 2; // VIRTIO_NET_HDR_F_DATA_VALID
    fake.inject(f.clone());
    h.run();
    assert_eq!(h.driver.read(a, 1)[0], 2);

    let (mut h, fake) = setup_with(NetConfig::new(MAC));
    h.activate_with(bit(VIRTIO_F_VERSION_1)).unwrap();
    let (a, _) = post_rx(&mut h, 2048);
    fake.inject(f);
    h.run();
    assert_eq!(h.driver.read(a, 1)[0], 0);
}

#[test]
fn backend_failure_stops_receiving_not_sending() {
    let (mut h, fake) = setup();
    post_rx(&mut h, 2048);
    fake.state().fail_reads = true;
    fake.inject(frame(100, 1));
    // The fd stays readable; the device must stop polling it.
    h.run();
    assert_eq!(h.device().metrics().backend_errors, 1);
    let f = frame(60, 2);
    let a = h.driver.alloc_bytes(&f);
    h.submit(TX_QUEUE, &[Desc::read(a, 72)]);
    assert_eq!(fake.sent(), vec![f]);

    // A reset and a new activation try the backend again.
    fake.state().fail_reads = false;
    h.reset();
    h.activate().unwrap();
    post_rx(&mut h, 2048);
    h.run();
    assert_eq!(h.device().metrics().rx_frames, 1);
}

#[test]
fn hostile_avail_index_needs_a_reset() {
    let (mut h, fake) = setup();
    h.driver.set_avail_idx(TX_QUEUE, 1000);
    h.kick(TX_QUEUE);
    assert!(h.device().needs_reset());
    assert_eq!(h.interrupt.config_signals(), 1);

    // Stopped: neither queue is served, and the backend is not polled.
    fake.inject(frame(100, 1));
    post_rx(&mut h, 2048);
    assert!(h.driver.take_used(RX_QUEUE).is_empty());

    h.reset();
    assert!(!h.device().needs_reset());
}

#[test]
fn hostile_rx_avail_index_needs_a_reset() {
    let (mut h, fake) = setup();
    h.driver.set_avail_idx(RX_QUEUE, 300);
    h.kick(RX_QUEUE);
    fake.inject(frame(100, 1));
    h.run();
    assert!(h.device().needs_reset());
    assert_eq!(h.interrupt.config_signals(), 1);
}

#[test]
fn reset_stops_everything_and_reactivation_starts_over() {
    let (mut h, fake) = setup();
    fake.inject(frame(100, 1));
    h.run();
    h.reset();
    fake.inject(frame(100, 2));
    h.run();
    assert_eq!(fake.waiting(), 1, "a reset device does not read");
    assert_eq!(h.device().metrics().rx_frames, 0);

    // The harness's driver reuses the same rings; a real driver would have rewritten them.
    h.activate().unwrap();
    post_rx(&mut h, 2048);
    h.run();
    let used = h.driver.take_used(RX_QUEUE);
    assert_eq!(used.len(), 1, "the frame pending at reset was dropped");
    assert_eq!(fake.waiting(), 0);
}

#[test]
fn tx_rate_limit_defers_frames() {
    let limit = crate::rate_limiter::RateLimit {
        ops: BucketConfig { rate: 20, burst: 1 },
        ..Default::default()
    };
    let (mut h, fake) = setup_with(NetConfig {
        tx_rate_limit: limit,
        ..NetConfig::new(MAC)
    });
    h.activate().unwrap();
    let f = frame(60, 1);
    let a = h.driver.alloc_bytes(&f);
    h.driver.add_chain(TX_QUEUE, &[Desc::read(a, 72)]);
    h.driver.add_chain(TX_QUEUE, &[Desc::read(a, 72)]);
    h.kick(TX_QUEUE);
    assert_eq!(fake.sent().len(), 1, "the second frame waits for a token");
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
    h.run_for(Duration::from_millis(200));
    assert_eq!(fake.sent().len(), 1);
    assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
}

#[test]
fn rx_rate_limit_defers_frames() {
    let limit = crate::rate_limiter::RateLimit {
        ops: BucketConfig { rate: 20, burst: 1 },
        ..Default::default()
    };
    let (mut h, fake) = setup_with(NetConfig {
        rx_rate_limit: limit,
        ..NetConfig::new(MAC)
    });
    h.activate().unwrap();
    post_rx(&mut h, 2048);
    post_rx(&mut h, 2048);
    fake.inject(frame(60, 1));
    fake.inject(frame(60, 2));
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE).len(), 1);
    h.run_for(Duration::from_millis(200));
    assert_eq!(h.driver.take_used(RX_QUEUE).len(), 1);
}

#[test]
fn event_idx_rx_asks_for_a_kick_when_out_of_buffers() {
    let (mut h, fake) = setup();
    post_rx(&mut h, 2048);
    fake.inject(frame(100, 1));
    fake.inject(frame(100, 2));
    h.run();
    assert_eq!(h.driver.take_used(RX_QUEUE).len(), 1);
    // Out of buffers at available index 1: the device wants a notification from there.
    assert_eq!(h.driver.avail_event(RX_QUEUE), 1);
    post_rx(&mut h, 2048);
    assert_eq!(h.driver.take_used(RX_QUEUE).len(), 1);
}

#[test]
fn a_head_index_past_the_table_needs_a_reset() {
    let (mut h, fake) = setup();
    h.driver.push_avail(TX_QUEUE, 999);
    h.kick(TX_QUEUE);
    assert!(h.device().needs_reset());
    assert!(fake.sent().is_empty());

    let (mut h, fake) = setup();
    h.driver.push_avail(RX_QUEUE, 999);
    h.kick(RX_QUEUE);
    fake.inject(frame(100, 1));
    h.run();
    assert!(h.device().needs_reset());
    assert!(h.driver.take_used(RX_QUEUE).is_empty());
}
