//! The virtio-net device over a real tap: frames between guest memory and the host's
//! network stack, in a network namespace of the test's own.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use fv_hostnet::{link, netns::run_in_new_netns, Tap};
use fv_virtio::net::{Net, NetConfig, RX_QUEUE, TX_QUEUE};
use fv_virtio::testing::{Desc, Harness};
use fv_virtio::VirtioDevice;
use vm_memory::GuestAddress;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x65, 0x43, 0x21];
const RX_BUF: u32 = 4096;

/// A device over `tap`, activated with every feature it offers, with `n` receive buffers.
fn device(tap: Tap, n: usize) -> (Harness<Net<Tap>>, Vec<(u16, GuestAddress)>) {
    let mut h = Harness::new(Net::new(NetConfig::new(GUEST_MAC), tap).unwrap());
    h.activate().unwrap();
    let bufs = (0..n)
        .map(|_| {
            let a = h.driver.alloc(RX_BUF);
            (h.driver.add_chain(RX_QUEUE, &[Desc::write(a, RX_BUF)]), a)
        })
        .collect();
    h.kick(RX_QUEUE);
    (h, bufs)
}

/// Runs the device's loop until a received frame satisfies `want`; returns its header and
/// the frame. A frame spread over several buffers (MRG_RXBUF) is put back together from
/// `num_buffers` consecutive used entries.
fn guest_receives(
    h: &mut Harness<Net<Tap>>,
    bufs: &[(u16, GuestAddress)],
    want: impl Fn(&[u8], &[u8]) -> bool,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let end = Instant::now() + Duration::from_secs(2);
    let mut used = std::collections::VecDeque::new();
    while Instant::now() < end {
        h.run_for(Duration::from_millis(5));
        used.extend(h.driver.take_used(RX_QUEUE));
        while let Some(first) = used.front() {
            let read = |id: u32, len: u32| {
                let &(_, addr) = bufs
                    .iter()
                    .find(|(head, _)| u32::from(*head) == id)
                    .expect("a used head we posted");
                h.driver.read(addr, len as usize)
            };
            let mut data = read(first.id, first.len);
            let n = usize::from(u16::from_le_bytes([data[10], data[11]]));
            assert!(n >= 1, "num_buffers");
            if used.len() < n {
                break; // the rest is still to come
            }
            used.pop_front();
            for _ in 1..n {
                let next = used.pop_front().expect("counted above");
                data.extend(read(next.id, next.len));
            }
            if want(&data[..HDR], &data[HDR..]) {
                return Some((data[..HDR].to_vec(), data[HDR..].to_vec()));
            }
        }
    }
    None
}

/// The guest's tap and a peer tap on one bridge.
fn bridged() -> (Tap, Tap) {
    quiet_ipv6();
    link::create_bridge("fvbr0").unwrap();
    link::set_up("fvbr0").unwrap();
    let guest = tap("fvnet%d");
    let peer = tap("fvpeer%d");
    link::add_to_bridge("fvbr0", guest.name()).unwrap();
    link::add_to_bridge("fvbr0", peer.name()).unwrap();
    (guest, peer)
}

#[test]
fn a_frame_the_guest_sends_comes_out_of_the_tap() {
    run_in_new_netns(|| {
        let (guest, peer) = bridged();
        let (mut h, _) = device(guest, 0);
        let f = eth(
            BROADCAST,
            GUEST_MAC,
            ETHERTYPE_TEST,
            b"hello from the guest",
        );
        let framed = with_hdr(&f);
        // Header and frame in separate descriptors, as Linux lays them out.
        let hdr = h.driver.alloc_bytes(&framed[..HDR]);
        let body = h.driver.alloc_bytes(&framed[HDR..]);
        let len = u32::try_from(f.len()).unwrap();
        h.submit(TX_QUEUE, &[Desc::read(hdr, 12), Desc::read(body, len)]);
        assert_eq!(h.driver.take_used(TX_QUEUE).len(), 1);
        assert_eq!(h.device().metrics().tx_frames, 1);

        let got = read_until(&peer, |fr| ethertype(fr) == Some(ETHERTYPE_TEST))
            .expect("the frame on the peer tap");
        assert_eq!(got, f);
    })
    .unwrap();
}

#[test]
fn a_frame_sent_to_the_tap_lands_in_a_guest_buffer() {
    run_in_new_netns(|| {
        let (guest, peer) = bridged();
        let (mut h, bufs) = device(guest, 16);
        let f = eth(GUEST_MAC, PEER_MAC, ETHERTYPE_TEST, b"hello to the guest");
        peer.write(&with_hdr(&f)).unwrap();
        let (hdr, got) =
            guest_receives(&mut h, &bufs, |_, fr| ethertype(fr) == Some(ETHERTYPE_TEST))
                .expect("the frame in guest memory");
        assert_eq!(got, f);
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");
        assert!(h.device().metrics().rx_frames >= 1);
    })
    .unwrap();
}

#[test]
fn the_host_answers_the_guests_arp_request() {
    run_in_new_netns(|| {
        quiet_ipv6();
        let guest = tap("fvnet%d");
        let host_ip = Ipv4Addr::new(192, 0, 2, 1);
        let guest_ip = Ipv4Addr::new(192, 0, 2, 2);
        link::set_ipv4_address(guest.name(), host_ip, 24).unwrap();
        let (mut h, bufs) = device(guest, 16);

        // ARP request: who has 192.0.2.1? Tell 192.0.2.2 (GUEST_MAC).
        let mut arp = Vec::new();
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&GUEST_MAC);
        arp.extend_from_slice(&guest_ip.octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&host_ip.octets());
        let framed = with_hdr(&eth(BROADCAST, GUEST_MAC, ETHERTYPE_ARP, &arp));
        let a = h.driver.alloc_bytes(&framed);
        h.submit(
            TX_QUEUE,
            &[Desc::read(a, u32::try_from(framed.len()).unwrap())],
        );

        let (_, reply) = guest_receives(&mut h, &bufs, |_, fr| {
            ethertype(fr) == Some(ETHERTYPE_ARP) && fr.get(20..22) == Some(&[0, 2])
        })
        .expect("an ARP reply in guest memory");
        assert_eq!(&reply[0..6], &GUEST_MAC, "sent to the guest");
        assert_eq!(&reply[28..32], &host_ip.octets(), "sender IP");
        assert_eq!(&reply[32..38], &GUEST_MAC, "target MAC");
        assert_eq!(&reply[38..42], &guest_ip.octets(), "target IP");
        assert!(!h.device().needs_reset());
    })
    .unwrap();
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const TCP_PORT: u16 = 4321;

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits just above.
    sum as u16
}

/// A TCP/IPv4 frame carrying `payload` in one piece, with the virtio-net header that asks
/// for segmentation (TSO) into `mss`-byte segments and a partial checksum, the way Linux's
/// virtio-net driver sends one.
fn tso_frame(src: [u8; 6], dst: [u8; 6], payload: &[u8], mss: u16) -> Vec<u8> {
    let (src_ip, dst_ip) = ([192, 0, 2, 2], [192, 0, 2, 3]);
    let tcp_len = 20 + payload.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&u16::try_from(20 + tcp_len).unwrap().to_be_bytes());
    ip.extend_from_slice(&src_ip);
    ip.extend_from_slice(&dst_ip);
    let ip_sum = !fold(checksum_add(0, &ip));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let mut tcp = Vec::new();
    tcp.extend_from_slice(&1234u16.to_be_bytes());
    tcp.extend_from_slice(&TCP_PORT.to_be_bytes());
    tcp.extend_from_slice(&1000u32.to_be_bytes()); // seq
    tcp.extend_from_slice(&1u32.to_be_bytes()); // ack
    tcp.extend_from_slice(&[0x50, 0x18, 0xff, 0xff]); // header length, ACK|PSH, window
                                                      // The pseudo-header sum, not complemented: the checksum is left to whoever segments.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src_ip);
    pseudo.extend_from_slice(&dst_ip);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&u16::try_from(tcp_len).unwrap().to_be_bytes());
    tcp.extend_from_slice(&fold(checksum_add(0, &pseudo)).to_be_bytes());
    tcp.extend_from_slice(&[0, 0]); // urgent pointer

    let mut body = ip;
    body.extend_from_slice(&tcp);
    body.extend_from_slice(payload);
    let frame = eth(dst, src, ETHERTYPE_IPV4, &body);

    let mut hdr = vec![0u8; HDR];
    hdr[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    hdr[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    hdr[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len: Ethernet + IP + TCP
    hdr[4..6].copy_from_slice(&mss.to_le_bytes()); // gso_size
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the TCP header
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset: TCP checksum field
    hdr.extend_from_slice(&frame);
    hdr
}

fn is_our_tcp(frame: &[u8]) -> bool {
    ethertype(frame) == Some(ETHERTYPE_IPV4)
        && frame.get(23) == Some(&6)
        && frame.get(36..38) == Some(&TCP_PORT.to_be_bytes()[..])
}

#[test]
fn a_tso_frame_from_the_guest_is_segmented_by_the_host() {
    run_in_new_netns(|| {
        let (guest, peer) = bridged();
        // The peer takes no offloads: the kernel must segment and checksum for it.
        peer.set_offload(0).unwrap();
        let (mut h, _) = device(guest, 0);
        let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let framed = tso_frame(GUEST_MAC, PEER_MAC, &payload, 1448);
        let hdr = h.driver.alloc_bytes(&framed[..HDR]);
        let body = h.driver.alloc_bytes(&framed[HDR..]);
        let len = u32::try_from(framed.len() - HDR).unwrap();
        h.submit(TX_QUEUE, &[Desc::read(hdr, 12), Desc::read(body, len)]);
        let m = h.device().metrics();
        assert_eq!((m.tx_frames, m.tx_dropped), (1, 0));

        let mut got = Vec::new();
        let mut segments = 0;
        while got.len() < payload.len() {
            let seg = read_until(&peer, is_our_tcp).expect("a TCP segment on the peer tap");
            assert!(seg.len() <= 14 + 20 + 20 + 1448, "segmented to the MSS");
            got.extend_from_slice(&seg[54..]);
            segments += 1;
        }
        assert_eq!(segments, 3);
        assert_eq!(got, payload);
    })
    .unwrap();
}

#[test]
fn a_tso_frame_for_the_guest_arrives_whole_in_merged_buffers() {
    run_in_new_netns(|| {
        let (guest, peer) = bridged();
        let (mut h, bufs) = device(guest, 32);
        let payload: Vec<u8> = (0..6000u32).map(|i| (i % 241) as u8).collect();
        peer.write(&tso_frame(PEER_MAC, GUEST_MAC, &payload, 1448))
            .unwrap();

        let mut got = Vec::new();
        let mut gso_frames = 0;
        while got.len() < payload.len() {
            let (hdr, frame) = guest_receives(&mut h, &bufs, |_, fr| is_our_tcp(fr))
                .expect("TCP data in guest memory");
            if hdr[1] != 0 {
                gso_frames += 1;
                // The guest acked GUEST_TSO4: the frame arrives unsegmented, with the
                // segmentation asked of the guest, across several 4 KiB buffers.
                assert_eq!(hdr[1], 1, "GSO TCPv4");
                assert_eq!(u16::from_le_bytes([hdr[4], hdr[5]]), 1448);
                assert!(u16::from_le_bytes([hdr[10], hdr[11]]) >= 2, "num_buffers");
            }
            got.extend_from_slice(&frame[54..]);
        }
        assert_eq!(got, payload);
        assert_eq!(gso_frames, 1, "one unsegmented frame");
    })
    .unwrap();
}
