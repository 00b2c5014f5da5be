//! `Tap` as the virtio-net device's backend (feature `virtio`). The dependency goes one
//! way: fv-hostnet knows fv-virtio's trait, fv-virtio knows no tap.

use std::io;

use fv_virtio::net::{NetBackend, Offloads};

use crate::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO};

/// The `TUN_F_*` flags for `offloads`.
pub(crate) fn tun_offload_flags(offloads: Offloads) -> u32 {
    [
        (offloads.csum, TUN_F_CSUM),
        (offloads.tso4, TUN_F_TSO4),
        (offloads.tso6, TUN_F_TSO6),
        (offloads.tso_ecn, TUN_F_TSO_ECN),
        (offloads.ufo, TUN_F_UFO),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, flag)| acc | flag)
}

impl NetBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let n = self.write(frame)?;
        if n == frame.len() {
            Ok(())
        } else {
            // The kernel takes a frame whole or not at all; this would be a short write.
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("tap {} took {n} of {} bytes", self.name(), frame.len()),
            ))
        }
    }

    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()> {
        self.set_vnet_hdr_size(len).map_err(io::Error::other)
    }

    fn set_offloads(&mut self, offloads: Offloads) -> io::Result<()> {
        self.set_offload(tun_offload_flags(offloads))
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_flags() {
        assert_eq!(tun_offload_flags(Offloads::default()), 0);
        let all = Offloads {
            csum: true,
            tso4: true,
            tso6: true,
            tso_ecn: true,
            ufo: true,
        };
        assert_eq!(
            tun_offload_flags(all),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO
        );
        let csum = Offloads {
            csum: true,
            ..Offloads::default()
        };
        assert_eq!(tun_offload_flags(csum), TUN_F_CSUM);
    }
}
