//! A conventional PCI function as the guest sees it: the type-0 configuration header,
//! memory BARs and the capability list, plus the [`PciFunction`] trait through which the
//! VMM's root complex reaches a function's configuration space and BARs.
//!
//! Nothing here is virtio-specific (the VMM's host bridge uses it too); it lives in this
//! crate because the virtio-pci transport is its first user and `fv-virtio` must not depend
//! on the VMM. Every access is checked: an access that is not 1, 2 or 4 bytes, not naturally
//! aligned or outside the 4 KiB configuration space reads as all ones and writes nothing.
//!
//! Registers are plain bytes with a per-bit write mask, so BAR sizing needs no special
//! case: the address bits below a BAR's size and its flag bits are read-only, so writing all
//! ones reads back as `!(size - 1) | flags`, as PCI requires.

use vmm_sys_util::eventfd::EventFd;

/// Bytes of conventional configuration space; the rest of the 4 KiB that ECAM gives each
/// function (the PCIe extended space) reads as zero.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Bytes of configuration space per function through ECAM.
pub const EXTENDED_CONFIG_SPACE_SIZE: u16 = 4096;

pub const REG_VENDOR_ID: usize = 0x00;
pub const REG_DEVICE_ID: usize = 0x02;
pub const REG_COMMAND: usize = 0x04;
pub const REG_STATUS: usize = 0x06;
pub const REG_REVISION: usize = 0x08;
pub const REG_CLASS: usize = 0x09;
pub const REG_CACHE_LINE: usize = 0x0c;
pub const REG_LATENCY: usize = 0x0d;
pub const REG_HEADER_TYPE: usize = 0x0e;
pub const REG_BAR0: usize = 0x10;
pub const REG_SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const REG_SUBSYSTEM_ID: usize = 0x2e;
pub const REG_CAPABILITIES: usize = 0x34;
pub const REG_INTERRUPT_LINE: usize = 0x3c;
pub const REG_INTERRUPT_PIN: usize = 0x3d;
/// Where the first capability goes: right after the type-0 header.
const FIRST_CAPABILITY: usize = 0x40;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_MASTER: u16 = 1 << 2;
pub const COMMAND_PARITY: u16 = 1 << 6;
pub const COMMAND_SERR: u16 = 1 << 8;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
pub const STATUS_CAPABILITY_LIST: u16 = 1 << 4;

pub const CAP_ID_VENDOR: u8 = 0x09;
pub const CAP_ID_MSIX: u8 = 0x11;

/// Memory BAR flag bits (the low 4 bits of the BAR register).
const BAR_MEM_64BIT: u32 = 0b100;
const BAR_MEM_PREFETCHABLE: u32 = 0b1000;
pub const NUM_BARS: usize = 6;

/// What a function says about itself in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    pub revision: u8,
    /// Base class, subclass and programming interface.
    pub class: (u8, u8, u8),
}

/// A memory BAR a function implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    pub index: u8,
    /// Bytes; a power of two, at least 16.
    pub size: u64,
    pub is_64bit: bool,
    pub prefetchable: bool,
}

/// A BAR's current place in guest-physical memory, while memory decoding is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    pub index: u8,
    pub addr: u64,
    pub size: u64,
}

/// An ioeventfd a function wants at `offset` inside BAR `bar`: guest writes there signal
/// `fd` inside KVM, without a VM exit to the VMM. Any access width matches.
pub struct IoEvent<'a> {
    pub bar: u8,
    pub offset: u64,
    pub fd: &'a EventFd,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciConfigError {
    #[error("BAR {index} of {size:#x} bytes is invalid (index, size, or a 64-bit BAR in slot 5)")]
    BadBar { index: u8, size: u64 },
    #[error("BAR {0} overlaps a BAR already declared")]
    BarInUse(u8),
    #[error("no room for a {0}-byte capability in configuration space")]
    NoCapabilitySpace(usize),
}

/// Whether an access of `len` bytes at `offset` is one the configuration space serves.
pub fn valid_config_access(offset: u16, len: usize) -> bool {
    matches!(len, 1 | 2 | 4)
        && usize::from(offset) % len == 0
        && usize::from(offset) + len <= usize::from(EXTENDED_CONFIG_SPACE_SIZE)
}

/// The configuration space of one type-0 function.
#[derive(Clone)]
pub struct PciConfigSpace {
    regs: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<BarSpec>; NUM_BARS],
    /// The upper half of a 64-bit BAR: not a BAR of its own.
    bar_is_upper: [bool; NUM_BARS],
    /// Offset of the `next` byte to patch when the next capability is added.
    last_next: usize,
    next_free: usize,
    /// The registers as the firmware left them; `reset` goes back to them.
    power_on: Option<Box<[u8; CONFIG_SPACE_SIZE]>>,
}

impl PciConfigSpace {
    pub fn new(ids: PciIds) -> Self {
        let mut c = PciConfigSpace {
            regs: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            bars: [None; NUM_BARS],
            bar_is_upper: [false; NUM_BARS],
            last_next: REG_CAPABILITIES,
            next_free: FIRST_CAPABILITY,
            power_on: None,
        };
        c.put16(REG_VENDOR_ID, ids.vendor);
        c.put16(REG_DEVICE_ID, ids.device);
        c.regs[REG_REVISION] = ids.revision;
        c.regs[REG_CLASS] = ids.class.2;
        c.regs[REG_CLASS + 1] = ids.class.1;
        c.regs[REG_CLASS + 2] = ids.class.0;
        c.regs[REG_HEADER_TYPE] = 0;
        c.put16(REG_SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor);
        c.put16(REG_SUBSYSTEM_ID, ids.subsystem);
        // Interrupt pin 0: no INTx. The line register is scratch space for the OS.
        c.regs[REG_INTERRUPT_PIN] = 0;
        c.wmask[REG_INTERRUPT_LINE] = 0xff;
        c.wmask[REG_CACHE_LINE] = 0xff;
        c.wmask[REG_LATENCY] = 0xff;
        let command_mask =
            COMMAND_MEMORY | COMMAND_MASTER | COMMAND_PARITY | COMMAND_SERR | COMMAND_INTX_DISABLE;
        c.wmask[REG_COMMAND..REG_COMMAND + 2].copy_from_slice(&command_mask.to_le_bytes());
        c
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.regs[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.regs[off], self.regs[off + 1]])
    }

    fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.regs[off],
            self.regs[off + 1],
            self.regs[off + 2],
            self.regs[off + 3],
        ])
    }

    /// Declares memory BAR `spec.index`, unassigned (address 0).
    pub fn add_bar(&mut self, spec: BarSpec) -> Result<(), PciConfigError> {
        let index = usize::from(spec.index);
        let bad = PciConfigError::BadBar {
            index: spec.index,
            size: spec.size,
        };
        let slots = if spec.is_64bit { 2 } else { 1 };
        if index + slots > NUM_BARS
            || !spec.size.is_power_of_two()
            || spec.size < 16
            || (!spec.is_64bit && spec.size > 1 << 31)
        {
            return Err(bad);
        }
        if (index..index + slots).any(|i| self.bars[i].is_some() || self.bar_is_upper[i]) {
            return Err(PciConfigError::BarInUse(spec.index));
        }
        let mut flags = 0;
        if spec.is_64bit {
            flags |= BAR_MEM_64BIT;
        }
        if spec.prefetchable {
            flags |= BAR_MEM_PREFETCHABLE;
        }
        let mask = !(spec.size - 1);
        let off = REG_BAR0 + 4 * index;
        self.regs[off..off + 4].copy_from_slice(&flags.to_le_bytes());
        // The guest may write the address bits at or above the size; flags stay.
        let low_mask = (mask as u32) & !0xf;
        self.wmask[off..off + 4].copy_from_slice(&low_mask.to_le_bytes());
        if spec.is_64bit {
            let high_mask = (mask >> 32) as u32;
            self.wmask[off + 4..off + 8].copy_from_slice(&high_mask.to_le_bytes());
            self.bar_is_upper[index + 1] = true;
        }
        self.bars[index] = Some(spec);
        Ok(())
    }

    /// The BARs this function implements.
    pub fn bar_specs(&self) -> impl Iterator<Item = BarSpec> + '_ {
        self.bars.iter().flatten().copied()
    }

    /// The address BAR `index` holds now (whatever the command register says).
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        let spec = self.bars.get(usize::from(index)).copied().flatten()?;
        let off = REG_BAR0 + 4 * usize::from(index);
        let low = u64::from(self.get32(off) & !0xf);
        let high = if spec.is_64bit {
            u64::from(self.get32(off + 4))
        } else {
            0
        };
        Some((high << 32) | low)
    }

    /// Places BAR `index` at `addr` (the firmware's job; the guest may move it later).
    /// `addr` is aligned down to the BAR's size.
    pub fn set_bar_address(&mut self, index: u8, addr: u64) {
        let Some(spec) = self.bars.get(usize::from(index)).copied().flatten() else {
            return;
        };
        let addr = addr & !(spec.size - 1);
        let off = REG_BAR0 + 4 * usize::from(index);
        let flags = self.get32(off) & 0xf;
        let low = (addr as u32 & !0xf) | flags;
        self.regs[off..off + 4].copy_from_slice(&low.to_le_bytes());
        if spec.is_64bit {
            self.regs[off + 4..off + 8].copy_from_slice(&((addr >> 32) as u32).to_le_bytes());
        }
    }

    pub fn command(&self) -> u16 {
        self.get16(REG_COMMAND)
    }

    /// Sets the command register bits the guest could set itself.
    pub fn set_command(&mut self, value: u16) {
        let mask = u16::from_le_bytes([self.wmask[REG_COMMAND], self.wmask[REG_COMMAND + 1]]);
        self.put16(REG_COMMAND, value & mask);
    }

    /// The memory BARs the function decodes now: memory decoding on, a non-zero address,
    /// and the whole BAR inside the 64-bit address space.
    pub fn decoded_bars(&self) -> Vec<BarRegion> {
        if self.command() & COMMAND_MEMORY == 0 {
            return Vec::new();
        }
        self.bar_specs()
            .filter_map(|spec| {
                let addr = self.bar_address(spec.index)?;
                (addr != 0 && addr.checked_add(spec.size).is_some()).then_some(BarRegion {
                    index: spec.index,
                    addr,
                    size: spec.size,
                })
            })
            .collect()
    }

    /// Appends a capability: `id`, the next pointer, then `body`. Returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, PciConfigError> {
        let len = body.len() + 2;
        let offset = self.next_free;
        if offset + len > CONFIG_SPACE_SIZE {
            return Err(PciConfigError::NoCapabilitySpace(len));
        }
        self.regs[offset] = id;
        self.regs[offset + 1] = 0;
        self.regs[offset + 2..offset + len].copy_from_slice(body);
        // Offsets are below 256 (checked above).
        self.regs[self.last_next] = offset as u8;
        self.last_next = offset + 1;
        self.next_free = (offset + len).next_multiple_of(4);
        let status = self.get16(REG_STATUS) | STATUS_CAPABILITY_LIST;
        self.put16(REG_STATUS, status);
        Ok(offset)
    }

    /// Lets the guest write the bits of `mask` at `offset` (inside a capability).
    pub fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        if let Some(w) = self.wmask.get_mut(offset..offset + mask.len()) {
            w.copy_from_slice(mask);
        }
    }

    /// Raw register bytes, for a function's own use (e.g. a capability's fields).
    pub fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        let end = (offset + len).min(CONFIG_SPACE_SIZE);
        &self.regs[offset.min(end)..end]
    }

    /// Overwrites register bytes regardless of the write mask (the function's own updates).
    pub fn set_bytes(&mut self, offset: usize, data: &[u8]) {
        if let Some(r) = self.regs.get_mut(offset..offset + data.len()) {
            r.copy_from_slice(data);
        }
    }

    /// A guest read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        if !valid_config_access(offset, data.len()) {
            data.fill(0xff);
            return;
        }
        let off = usize::from(offset);
        match self.regs.get(off..off + data.len()) {
            Some(r) => data.copy_from_slice(r),
            // The extended space: no PCIe extended capabilities.
            None => data.fill(0),
        }
    }

    /// A guest write: only the writable bits change.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        if !valid_config_access(offset, data.len()) {
            return;
        }
        let off = usize::from(offset);
        if off + data.len() > CONFIG_SPACE_SIZE {
            return;
        }
        for (i, byte) in data.iter().enumerate() {
            let m = self.wmask[off + i];
            self.regs[off + i] = (self.regs[off + i] & !m) | (byte & m);
        }
    }

    /// Remembers the registers as they are now as the state `reset` returns to.
    pub fn save_power_on_state(&mut self) {
        self.power_on = Some(Box::new(self.regs));
    }

    /// Back to the saved power-on registers (or leaves them, if none were saved).
    pub fn reset(&mut self) {
        if let Some(saved) = &self.power_on {
            self.regs = **saved;
        }
    }
}

/// A PCI function on the root bus, as the VMM's root complex sees it. Called from vCPU
/// threads; implementations must be quick and must not block on I/O.
pub trait PciFunction: Send {
    /// The configuration space, for the root complex's BAR bookkeeping.
    fn config(&self) -> &PciConfigSpace;
    fn config_mut(&mut self) -> &mut PciConfigSpace;

    /// A guest read of configuration space. `offset` and `data.len()` are unchecked.
    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.config().read(offset, data);
    }

    /// A guest write of configuration space. `offset` and `data.len()` are unchecked.
    fn write_config(&mut self, offset: u16, data: &[u8]) {
        self.config_mut().write(offset, data);
    }

    /// A guest read inside BAR `bar` (`offset` from its start; any length 1 to 8).
    fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let _ = (bar, offset);
        data.fill(0xff);
    }

    fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let _ = (bar, offset, data);
    }

    /// Places where a guest write should only signal an eventfd (queue notifications).
    fn ioevents(&self) -> Vec<IoEvent<'_>> {
        Vec::new()
    }

    /// Hard reset (the VM reset in place): back to the power-on state.
    fn reset(&mut self) {
        self.config_mut().reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
            revision: 1,
            class: (0x01, 0x00, 0x00),
        }
    }

    fn r32(c: &PciConfigSpace, off: u16) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(c: &mut PciConfigSpace, off: u16, v: u32) {
        c.write(off, &v.to_le_bytes());
    }

    #[test]
    fn header_fields_and_read_only_ids() {
        let mut c = PciConfigSpace::new(ids());
        assert_eq!(r32(&c, 0), 0x1042_1af4);
        assert_eq!(r32(&c, 8), 0x0100_0001);
        assert_eq!(r32(&c, 0x2c), 0x1100_1af4);
        w32(&mut c, 0, 0xdead_beef);
        assert_eq!(r32(&c, 0), 0x1042_1af4, "IDs are read-only");
        // Interrupt pin 0; the line is writable scratch.
        c.write(0x3c, &[0x0b]);
        assert_eq!(r32(&c, 0x3c), 0x0000_000b);
        // Command: memory and bus master stick, I/O does not (no I/O BARs).
        c.write(
            4,
            &(COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER).to_le_bytes(),
        );
        assert_eq!(c.command(), COMMAND_MEMORY | COMMAND_MASTER);
        // No capabilities yet.
        assert_eq!(r32(&c, 4) >> 16, 0);
        assert_eq!(r32(&c, 0x34), 0);
    }

    #[test]
    fn bad_accesses_read_ones_and_write_nothing() {
        let mut c = PciConfigSpace::new(ids());
        let mut b = [0u8; 4];
        c.read(1, &mut b[..2]);
        assert_eq!(b[..2], [0xff, 0xff]);
        let mut b3 = [0u8; 3];
        c.read(0, &mut b3);
        assert_eq!(b3, [0xff; 3]);
        c.read(4094, &mut b);
        assert_eq!(b, [0xff; 4]);
        let mut e = [0xaau8; 4];
        c.read(0x100, &mut e);
        assert_eq!(e, [0; 4], "extended space reads zero");
        c.write(0xffe, &[1, 2, 3, 4]);
        c.write(0x3d, &[1, 1]);
        assert_eq!(r32(&c, 0x3c), 0);
    }

    #[test]
    fn bar_sizing_and_placement() {
        let mut c = PciConfigSpace::new(ids());
        c.add_bar(BarSpec {
            index: 0,
            size: 0x8000,
            is_64bit: true,
            prefetchable: false,
        })
        .unwrap();
        assert_eq!(r32(&c, 0x10), 0b100);
        // Sizing: all ones reads back as the size mask plus the flags.
        w32(&mut c, 0x10, 0xffff_ffff);
        w32(&mut c, 0x14, 0xffff_ffff);
        assert_eq!(r32(&c, 0x10), 0xffff_8004);
        assert_eq!(r32(&c, 0x14), 0xffff_ffff);
        let size = !(u64::from(r32(&c, 0x14)) << 32 | u64::from(r32(&c, 0x10) & !0xf)) + 1;
        assert_eq!(size, 0x8000);
        // Unimplemented BARs and the ROM read zero whatever is written.
        for off in [0x18u16, 0x1c, 0x20, 0x24, 0x30] {
            w32(&mut c, off, 0xffff_ffff);
            assert_eq!(r32(&c, off), 0, "{off:#x}");
        }
        w32(&mut c, 0x10, 0xc000_1234);
        w32(&mut c, 0x14, 0);
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
        assert!(c.decoded_bars().is_empty(), "memory decoding is off");
        c.set_command(COMMAND_MEMORY);
        assert_eq!(
            c.decoded_bars(),
            vec![BarRegion {
                index: 0,
                addr: 0xc000_0000,
                size: 0x8000
            }]
        );
        c.set_bar_address(0, 0x1_2345_8000);
        assert_eq!(r32(&c, 0x10), 0x2345_8004);
        assert_eq!(r32(&c, 0x14), 1);
        // A 32-bit prefetchable BAR.
        c.add_bar(BarSpec {
            index: 2,
            size: 0x1000,
            is_64bit: false,
            prefetchable: true,
        })
        .unwrap();
        w32(&mut c, 0x18, 0xffff_ffff);
        assert_eq!(r32(&c, 0x18), 0xffff_f008);
    }

    #[test]
    fn bad_bars_are_refused() {
        let mut c = PciConfigSpace::new(ids());
        let bar = |index, size, is_64bit| BarSpec {
            index,
            size,
            is_64bit,
            prefetchable: false,
        };
        assert!(c.add_bar(bar(5, 0x1000, true)).is_err());
        assert!(c.add_bar(bar(6, 0x1000, false)).is_err());
        assert!(c.add_bar(bar(0, 0x1001, false)).is_err());
        assert!(c.add_bar(bar(0, 8, false)).is_err());
        assert!(c.add_bar(bar(0, 1 << 32, false)).is_err());
        c.add_bar(bar(0, 0x1000, true)).unwrap();
        assert_eq!(
            c.add_bar(bar(1, 0x1000, false)),
            Err(PciConfigError::BarInUse(1))
        );
    }

    #[test]
    fn capability_list_links_up() {
        let mut c = PciConfigSpace::new(ids());
        let a = c.add_capability(CAP_ID_VENDOR, &[14, 1, 0, 0]).unwrap();
        let b = c.add_capability(CAP_ID_MSIX, &[0; 10]).unwrap();
        assert_eq!((a, b), (0x40, 0x48));
        assert_ne!(r32(&c, 4) >> 16 & u32::from(STATUS_CAPABILITY_LIST), 0);
        assert_eq!(r32(&c, 0x34) & 0xff, 0x40);
        assert_eq!(r32(&c, 0x40) & 0xffff, 0x4809);
        assert_eq!(r32(&c, 0x48) & 0xffff, 0x0011);
        // Capability bytes are read-only unless made writable.
        c.write(0x42, &[0xff]);
        assert_eq!(c.bytes(0x42, 1), [14]);
        c.set_writable(0x42, &[0x0f]);
        c.write(0x42, &[0xff]);
        assert_eq!(c.bytes(0x42, 1), [0x0f]);
        assert!(c.add_capability(1, &[0; 200]).is_err());
    }

    #[test]
    fn reset_returns_to_the_saved_state() {
        let mut c = PciConfigSpace::new(ids());
        c.add_bar(BarSpec {
            index: 0,
            size: 0x1000,
            is_64bit: false,
            prefetchable: false,
        })
        .unwrap();
        c.set_bar_address(0, 0xc000_0000);
        c.set_command(COMMAND_MEMORY);
        c.save_power_on_state();
        w32(&mut c, 0x10, 0xd000_0000);
        c.set_command(0);
        c.reset();
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
        assert_eq!(c.command(), COMMAND_MEMORY);
    }
}
