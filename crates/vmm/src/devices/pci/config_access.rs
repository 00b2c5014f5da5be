//! The two ways a guest reaches PCI configuration space.
//!
//! - Configuration mechanism #1: a dword write to port 0xCF8 selects
//!   `enable | bus | device | function | register`, then ports 0xCFC-0xCFF read or write
//!   that dword's bytes (any width that stays inside it). Accesses to 0xCF8-0xCFB other
//!   than a dword at 0xCF8 do nothing (reads float high), as on a PC chipset.
//! - ECAM: a memory window with 4 KiB of configuration space per function,
//!   `bus << 20 | device << 15 | function << 12 | register`; one bus (1 MiB) here.

use std::sync::{Arc, Mutex};

use crate::devices::bus::lock;
use crate::devices::BusDevice;

use super::PciRoot;

const ENABLE: u32 = 1 << 31;
/// Bus, device, function and the dword-aligned register; reserved bits read as zero.
const ADDRESS_MASK: u32 = ENABLE | 0x00ff_fffc;

/// Ports 0xCF8-0xCFF.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

impl PciConfigIo {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    /// (bus, device, function, register) for an access at data-port byte `byte`, if the
    /// address register enables one and the access stays inside the dword.
    fn target(&self, byte: u64, len: usize) -> Option<(u8, u8, u8, u16)> {
        if self.address & ENABLE == 0 || byte + len as u64 > 4 {
            return None;
        }
        let a = self.address;
        Some((
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 0x7) as u8,
            (a & 0xfc) as u16 + byte as u16,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 => match self.target(offset - 4, data.len()) {
                Some((bus, dev, func, reg)) => {
                    lock(&self.root).config_read(bus, dev, func, reg, data);
                }
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.address = v & ADDRESS_MASK;
            }
            4..=7 => {
                if let Some((bus, dev, func, reg)) = self.target(offset - 4, data.len()) {
                    lock(&self.root).config_write(bus, dev, func, reg, data);
                }
            }
            _ => {}
        }
    }
}

/// The ECAM window (bus 0 only: 1 MiB).
pub struct PciEcam {
    root: Arc<Mutex<PciRoot>>,
}

/// (bus, device, function, register) of an ECAM offset.
fn decode(offset: u64) -> (u8, u8, u8, u16) {
    (
        (offset >> 20) as u8,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 0x7) as u8,
        (offset & 0xfff) as u16,
    )
}

impl PciEcam {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciEcam { root }
    }
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A 64-bit access is two dword accesses; the function checks everything else.
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let (bus, dev, func, reg) = decode(offset + 4 * i as u64);
            lock(&self.root).config_read(bus, dev, func, reg, chunk);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 8 && !offset.is_multiple_of(8) {
            return;
        }
        for (i, chunk) in data.chunks(4).enumerate() {
            let (bus, dev, func, reg) = decode(offset + 4 * i as u64);
            lock(&self.root).config_write(bus, dev, func, reg, chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::root::tests::{root, TestFunction};
    use super::*;

    fn setup() -> (PciConfigIo, PciEcam) {
        let (mut r, _, _) = root();
        r.add(Arc::new(Mutex::new(TestFunction::new()))).unwrap();
        let r = Arc::new(Mutex::new(r));
        (PciConfigIo::new(r.clone()), PciEcam::new(r))
    }

    fn select(io: &mut PciConfigIo, bus: u32, dev: u32, func: u32, reg: u32) {
        io.write(
            0,
            &(ENABLE | bus << 16 | dev << 11 | func << 8 | reg).to_le_bytes(),
        );
    }

    #[test]
    fn mechanism_1_decodes_every_width() {
        let (mut io, _) = setup();
        // Linux's pci_check_type1: the address register reads back what was written.
        io.write(0, &0x8000_0000u32.to_le_bytes());
        let mut d = [0u8; 4];
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x8000_0000);
        io.write(0, &0xffff_ffffu32.to_le_bytes());
        io.read(0, &mut d);
        assert_eq!(
            u32::from_le_bytes(d),
            0x80ff_fffc,
            "reserved bits read zero"
        );
        // Byte accesses to 0xCF8-0xCFB do not touch the address.
        io.write(3, &[0x01]);
        io.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x80ff_fffc);
        let mut b = [0u8; 1];
        io.read(3, &mut b);
        assert_eq!(b, [0xff]);

        select(&mut io, 0, 1, 0, 0);
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1044_1af4);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1044);
        io.read(5, &mut b);
        assert_eq!(b, [0x1a]);
        io.read(7, &mut b);
        assert_eq!(b, [0x10]);
        io.read(5, &mut w);
        assert_eq!(w, [0xff; 2], "unaligned word");
        io.read(6, &mut d);
        assert_eq!(d, [0xff; 4], "crosses the dword");
        // Host bridge at 00:00.0, class dword at register 8.
        select(&mut io, 0, 0, 0, 8);
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d) >> 8, 0x06_0000);
        // Writes: the interrupt line of 00:01.0, a byte at 0xCFC.
        select(&mut io, 0, 1, 0, 0x3c);
        io.write(4, &[0x0a]);
        io.read(4, &mut d);
        assert_eq!(d[0], 0x0a);
        // Enable bit off: nothing.
        io.write(0, &0x0000_0800u32.to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Empty slot, other bus, other function.
        for (bus, dev, func) in [(0, 2, 0), (1, 1, 0), (0, 1, 3)] {
            select(&mut io, bus, dev, func, 0);
            io.read(4, &mut d);
            assert_eq!(d, [0xff; 4], "{bus}:{dev}.{func}");
        }
    }

    #[test]
    fn ecam_decodes_bus_device_function_register() {
        let (_, mut ecam) = setup();
        let mut d = [0u8; 4];
        ecam.read(1 << 15, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1044_1af4);
        ecam.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0008_1b36);
        let mut q = [0u8; 8];
        ecam.read(1 << 15, &mut q);
        assert_eq!(u64::from_le_bytes(q) & 0xffff_ffff, 0x1044_1af4);
        ecam.write((1 << 15) | 0x3c, &[7]);
        let mut b = [0u8; 1];
        ecam.read((1 << 15) | 0x3c, &mut b);
        assert_eq!(b, [7]);
        // Extended space of a present function reads zero; absent functions all ones.
        ecam.read((1 << 15) | 0x100, &mut d);
        assert_eq!(d, [0; 4]);
        ecam.read((1 << 15) | (1 << 12), &mut d);
        assert_eq!(d, [0xff; 4]);
        ecam.read(2 << 15, &mut d);
        assert_eq!(d, [0xff; 4]);
        ecam.read((1 << 15) | 1, &mut d);
        assert_eq!(d, [0xff; 4], "unaligned");
        ecam.write((1 << 15) | 0x3c | 4, &[1; 8]);
    }
}
