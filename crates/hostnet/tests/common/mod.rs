//! Helpers shared by the integration tests: Ethernet frames and polling a tap.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use fv_hostnet::Tap;

/// virtio_net_hdr_v1 length, as the taps here are set up.
pub const HDR: usize = 12;
/// An EtherType for local experiments (IEEE 802 "Local Experimental Ethertype 1").
pub const ETHERTYPE_TEST: u16 = 0x88b5;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame (no FCS), padded to the 60-byte minimum.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

pub fn ethertype(frame: &[u8]) -> Option<u16> {
    frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// `frame` behind a zero virtio-net header (no offload asked).
pub fn with_hdr(frame: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HDR];
    f.extend_from_slice(frame);
    f
}

/// Reads frames from `tap` (without their header) until one satisfies `want`, for up to
/// two seconds. Other frames (IPv6 router solicitations and the like) are skipped.
pub fn read_until(tap: &Tap, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let end = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 65_600];
    while Instant::now() < end {
        match tap.read(&mut buf) {
            Ok(n) if n >= HDR && want(&buf[HDR..n]) => return Some(buf[HDR..n].to_vec()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("reading {}: {e}", tap.name()),
        }
    }
    None
}

/// Keeps the namespace quiet: no IPv6 on interfaces created from now on (no router
/// solicitations or MLD reports on the taps). Best effort: /proc/sys/net belongs to the
/// calling thread's network namespace.
pub fn quiet_ipv6() {
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
}

/// A tap set up as the tests use it: 12-byte headers, up.
pub fn tap(pattern: &str) -> Tap {
    let tap = Tap::create(pattern).expect("create tap");
    tap.set_vnet_hdr_size(HDR).expect("vnet header size");
    tap.set_up().expect("tap up");
    tap
}
