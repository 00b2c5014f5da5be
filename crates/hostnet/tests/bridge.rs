//! Real taps on a real bridge, each test in a network namespace of its own.

mod common;

use common::*;
use fv_hostnet::{link, netns::run_in_new_netns};

const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x01];
const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0xbb, 0x00, 0x02];

#[test]
fn a_frame_written_into_one_tap_comes_out_of_the_other() {
    run_in_new_netns(|| {
        quiet_ipv6();
        link::create_bridge("fvbr0").unwrap();
        link::set_up("fvbr0").unwrap();
        let a = tap("fvtap%d");
        let b = tap("fvtap%d");
        assert_ne!(a.name(), b.name());
        link::add_to_bridge("fvbr0", a.name()).unwrap();
        link::add_to_bridge("fvbr0", b.name()).unwrap();

        // Broadcast from A reaches B.
        let f = eth(BROADCAST, MAC_A, ETHERTYPE_TEST, b"broadcast from a");
        assert_eq!(a.write(&with_hdr(&f)).unwrap(), HDR + f.len());
        let got = read_until(&b, |fr| ethertype(fr) == Some(ETHERTYPE_TEST)).expect("frame on b");
        assert_eq!(got, f);

        // Unicast back from B to A (the bridge has learned A's MAC), over writev.
        let f = eth(MAC_A, MAC_B, ETHERTYPE_TEST, b"unicast from b");
        let hdr = [0u8; HDR];
        let n = b
            .writev(&[std::io::IoSlice::new(&hdr), std::io::IoSlice::new(&f)])
            .unwrap();
        assert_eq!(n, HDR + f.len());
        let got = read_until(&a, |fr| ethertype(fr) == Some(ETHERTYPE_TEST)).expect("frame on a");
        assert_eq!(got, f);

        link::delete_bridge("fvbr0").unwrap();
    })
    .unwrap();
}

#[test]
fn readv_splits_header_and_frame() {
    run_in_new_netns(|| {
        quiet_ipv6();
        link::create_bridge("fvbr0").unwrap();
        link::set_up("fvbr0").unwrap();
        let a = tap("fvtap%d");
        let b = tap("fvtap%d");
        link::add_to_bridge("fvbr0", a.name()).unwrap();
        link::add_to_bridge("fvbr0", b.name()).unwrap();

        let f = eth(BROADCAST, MAC_A, ETHERTYPE_TEST, b"scatter me");
        a.write(&with_hdr(&f)).unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let mut hdr = [0xffu8; HDR];
            let mut body = [0u8; 2048];
            let mut bufs = [
                std::io::IoSliceMut::new(&mut hdr),
                std::io::IoSliceMut::new(&mut body),
            ];
            match b.readv(&mut bufs) {
                Ok(n) if ethertype(&body) == Some(ETHERTYPE_TEST) => {
                    assert_eq!(n, HDR + f.len());
                    assert_eq!(&body[..f.len()], &f[..]);
                    // No offload: the first 10 header bytes say so (the kernel does not
                    // write num_buffers).
                    assert_eq!(&hdr[..10], &[0; 10]);
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < end, "no frame on b");
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .unwrap();
}

#[test]
fn a_tap_that_is_down_refuses_frames() {
    run_in_new_netns(|| {
        let t = fv_hostnet::Tap::create("fvtap%d").unwrap();
        t.set_vnet_hdr_size(HDR).unwrap();
        let f = eth(BROADCAST, MAC_A, ETHERTYPE_TEST, b"x");
        let err = t.write(&with_hdr(&f)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
    })
    .unwrap();
}
