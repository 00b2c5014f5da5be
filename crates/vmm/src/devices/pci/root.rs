//! Bus 0: which function sits in which slot, where its BARs are mapped, and keeping the
//! MMIO bus and the ioeventfds in step when the guest moves a BAR or turns decoding off.

use std::sync::{Arc, Mutex};

use fv_virtio::transport::pci::{BarRegion, PciConfigSpace, PciFunction, PciIds, COMMAND_MEMORY};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::lock;
use crate::devices::{Bus, BusDevice};

/// Device numbers on bus 0 (slot 0 is the host bridge).
pub const MAX_DEVICES: usize = 32;

/// Red Hat's generic PCIe host bridge ID (what QEMU's gpex shows); Linux needs a host
/// bridge class at 00:00.0 to trust configuration mechanism #1 (`pci_sanity_check`).
const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor: 0x1b36,
    device: 0x0008,
    subsystem_vendor: 0x1b36,
    subsystem: 0x0008,
    revision: 0,
    class: (0x06, 0x00, 0x00),
};

#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("no free slot on PCI bus 0 (at most {} devices)", MAX_DEVICES - 1)]
    NoSlot,
    #[error("no room for a {size:#x}-byte BAR in the PCI MMIO window")]
    NoBarSpace { size: u64 },
    #[error("cannot map BAR {index} at {addr:#x}: the range is in use")]
    Map { index: u8, addr: u64 },
}

/// Where KVM ioeventfds are registered (the VM; a recorder in tests).
pub trait IoEventRegistry: Send + Sync {
    fn register(&self, fd: &EventFd, addr: u64) -> Result<(), String>;
    fn unregister(&self, fd: &EventFd, addr: u64) -> Result<(), String>;
}

impl IoEventRegistry for crate::vstate::vm::Vm {
    fn register(&self, fd: &EventFd, addr: u64) -> Result<(), String> {
        self.register_ioevent(fd, addr).map_err(|e| e.to_string())
    }
    fn unregister(&self, fd: &EventFd, addr: u64) -> Result<(), String> {
        self.unregister_ioevent(fd, addr).map_err(|e| e.to_string())
    }
}

/// Hands out naturally aligned BAR addresses from one window (the firmware's job).
pub struct BarAllocator {
    next: u64,
    end: u64,
}

impl BarAllocator {
    pub fn new(start: u64, len: u64) -> Self {
        BarAllocator {
            next: start,
            end: start.saturating_add(len),
        }
    }

    /// `size` bytes aligned to `size` (a power of two).
    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        if !size.is_power_of_two() {
            return None;
        }
        let addr = self.next.checked_next_multiple_of(size)?;
        let end = addr.checked_add(size).filter(|e| *e <= self.end)?;
        self.next = end;
        Some(addr)
    }
}

/// The host bridge at 00:00.0: a header and nothing else.
pub struct HostBridge {
    config: PciConfigSpace,
}

impl HostBridge {
    pub fn new() -> Self {
        let mut config = PciConfigSpace::new(HOST_BRIDGE_IDS);
        config.set_command(COMMAND_MEMORY);
        config.save_power_on_state();
        HostBridge { config }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for HostBridge {
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }
}

/// A BAR as an MMIO bus device.
struct BarWindow {
    function: Arc<Mutex<dyn PciFunction>>,
    index: u8,
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.function).read_bar(self.index, offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.function).write_bar(self.index, offset, data);
    }
}

struct Slot {
    function: Arc<Mutex<dyn PciFunction>>,
    /// The BARs as they are on the MMIO bus now.
    mapped: Vec<BarRegion>,
}

/// Bus 0 and everything on it.
pub struct PciRoot {
    slots: Vec<Option<Slot>>,
    mmio: Arc<Bus>,
    ioevents: Arc<dyn IoEventRegistry>,
    allocator: BarAllocator,
    /// Set once an ioeventfd could not be registered (reported once; the transport then
    /// takes notifications through ordinary MMIO exits).
    ioevent_warned: bool,
}

impl PciRoot {
    /// Bus 0 with the host bridge in slot 0; BARs go into `window` = (start, len).
    pub fn new(mmio: Arc<Bus>, ioevents: Arc<dyn IoEventRegistry>, window: (u64, u64)) -> Self {
        let mut slots: Vec<Option<Slot>> = (0..MAX_DEVICES).map(|_| None).collect();
        slots[0] = Some(Slot {
            function: Arc::new(Mutex::new(HostBridge::new())),
            mapped: Vec::new(),
        });
        PciRoot {
            slots,
            mmio,
            ioevents,
            allocator: BarAllocator::new(window.0, window.1),
            ioevent_warned: false,
        }
    }

    /// Plugs `function` into the first free slot, places its BARs, turns memory decoding
    /// on (as firmware would) and maps them. Returns the device number.
    pub fn add(&mut self, function: Arc<Mutex<dyn PciFunction>>) -> Result<u8, PciError> {
        let index = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::NoSlot)?;
        {
            let mut f = lock(&function);
            let specs: Vec<_> = f.config().bar_specs().collect();
            for spec in specs {
                let addr = self
                    .allocator
                    .allocate(spec.size)
                    .ok_or(PciError::NoBarSpace { size: spec.size })?;
                f.config_mut().set_bar_address(spec.index, addr);
            }
            let command = f.config().command() | COMMAND_MEMORY;
            f.config_mut().set_command(command);
            f.config_mut().save_power_on_state();
        }
        self.slots[index] = Some(Slot {
            function,
            mapped: Vec::new(),
        });
        // Fewer than 32 slots.
        let device = index as u8;
        self.sync(device);
        if let Some(slot) = &self.slots[index] {
            let decoded = lock(&slot.function).config().decoded_bars();
            if let Some(bar) = decoded.iter().find(|b| !slot.mapped.contains(b)) {
                return Err(PciError::Map {
                    index: bar.index,
                    addr: bar.addr,
                });
            }
        }
        Ok(device)
    }

    /// Takes the function at 00:`device`.0 off the bus (after the guest ejected it): its
    /// BARs are unmapped and its ioeventfds unregistered. Their addresses are not reused.
    pub fn remove(&mut self, device: u8) -> Option<Arc<Mutex<dyn PciFunction>>> {
        if device == 0 {
            return None; // the host bridge stays
        }
        let slot = self.slots.get_mut(usize::from(device))?.take()?;
        let f = lock(&slot.function);
        for bar in &slot.mapped {
            self.mmio.remove(bar.addr);
            for ev in f.ioevents().iter().filter(|e| e.bar == bar.index) {
                let _ = self.ioevents.unregister(ev.fd, bar.addr + ev.offset);
            }
        }
        drop(f);
        Some(slot.function)
    }

    /// The function at 00:`device`.0, if any.
    pub fn function(&self, device: u8) -> Option<Arc<Mutex<dyn PciFunction>>> {
        self.slots
            .get(usize::from(device))?
            .as_ref()
            .map(|s| s.function.clone())
    }

    /// A configuration read of `bus:device.function` at `offset`. Nothing answers outside
    /// bus 0 function 0 of an occupied slot: all ones, as on real hardware.
    pub fn config_read(&self, bus: u8, device: u8, function: u8, offset: u16, data: &mut [u8]) {
        match self.function(device).filter(|_| bus == 0 && function == 0) {
            Some(f) => lock(&f).read_config(offset, data),
            None => data.fill(0xff),
        }
    }

    pub fn config_write(&mut self, bus: u8, device: u8, function: u8, offset: u16, data: &[u8]) {
        let Some(f) = self.function(device).filter(|_| bus == 0 && function == 0) else {
            return;
        };
        lock(&f).write_config(offset, data);
        self.sync(device);
    }

    /// Hard reset: every function back to its power-on state, BARs where firmware put them.
    pub fn reset(&mut self) {
        for device in 0..MAX_DEVICES as u8 {
            if let Some(f) = self.function(device) {
                lock(&f).reset();
                self.sync(device);
            }
        }
    }

    /// Brings the MMIO bus and the ioeventfds in line with the BARs the function decodes.
    fn sync(&mut self, device: u8) {
        let Some(Some(slot)) = self.slots.get_mut(usize::from(device)) else {
            return;
        };
        let f = lock(&slot.function);
        let now = f.config().decoded_bars();
        if now == slot.mapped {
            return;
        }
        let mut warnings = Vec::new();
        for old in slot.mapped.iter().filter(|b| !now.contains(b)) {
            self.mmio.remove(old.addr);
            for ev in f.ioevents().iter().filter(|e| e.bar == old.index) {
                if let Err(e) = self.ioevents.unregister(ev.fd, old.addr + ev.offset) {
                    warnings.push(e);
                }
            }
        }
        let mut mapped: Vec<BarRegion> = slot
            .mapped
            .iter()
            .filter(|b| now.contains(b))
            .copied()
            .collect();
        for new in now.iter().filter(|b| !slot.mapped.contains(b)) {
            let window = Arc::new(Mutex::new(BarWindow {
                function: slot.function.clone(),
                index: new.index,
            }));
            // A BAR moved onto another device's range (or the ECAM window) stays unmapped
            // until the guest moves it somewhere free, as on real hardware it would not decode.
            if self.mmio.insert(window, new.addr, new.size).is_err() {
                continue;
            }
            mapped.push(*new);
            for ev in f.ioevents().iter().filter(|e| e.bar == new.index) {
                if let Err(e) = self.ioevents.register(ev.fd, new.addr + ev.offset) {
                    warnings.push(e);
                }
            }
        }
        drop(f);
        slot.mapped = mapped;
        if !warnings.is_empty() && !self.ioevent_warned {
            self.ioevent_warned = true;
            eprintln!(
                "fv-vmm: warning: queue notifications take the slow path: {}",
                warnings.join("; ")
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fv_virtio::transport::pci::BarSpec;

    #[derive(Default)]
    pub struct IoEventRecorder(pub Mutex<Vec<(bool, u64)>>);

    impl IoEventRegistry for IoEventRecorder {
        fn register(&self, _fd: &EventFd, addr: u64) -> Result<(), String> {
            self.0.lock().unwrap().push((true, addr));
            Ok(())
        }
        fn unregister(&self, _fd: &EventFd, addr: u64) -> Result<(), String> {
            self.0.lock().unwrap().push((false, addr));
            Ok(())
        }
    }

    /// A function with one 64-bit 16 KiB BAR whose bytes read as their offset, and an
    /// ioeventfd at offset 0x100.
    pub struct TestFunction {
        config: PciConfigSpace,
        event: EventFd,
    }

    impl TestFunction {
        pub fn new() -> Self {
            let mut config = PciConfigSpace::new(PciIds {
                vendor: 0x1af4,
                device: 0x1044,
                subsystem_vendor: 0,
                subsystem: 0,
                revision: 1,
                class: (0xff, 0, 0),
            });
            config
                .add_bar(BarSpec {
                    index: 0,
                    size: 0x4000,
                    is_64bit: true,
                    prefetchable: false,
                })
                .unwrap();
            TestFunction {
                config,
                event: EventFd::new(0).unwrap(),
            }
        }
    }

    impl PciFunction for TestFunction {
        fn config(&self) -> &PciConfigSpace {
            &self.config
        }
        fn config_mut(&mut self) -> &mut PciConfigSpace {
            &mut self.config
        }
        fn read_bar(&mut self, _bar: u8, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn ioevents(&self) -> Vec<fv_virtio::transport::IoEvent<'_>> {
            vec![fv_virtio::transport::IoEvent {
                bar: 0,
                offset: 0x100,
                fd: &self.event,
            }]
        }
    }

    pub fn root() -> (PciRoot, Arc<Bus>, Arc<IoEventRecorder>) {
        let mmio = Arc::new(Bus::new());
        let rec = Arc::new(IoEventRecorder::default());
        let root = PciRoot::new(mmio.clone(), rec.clone(), (0xc000_0000, 0x1000_0000));
        (root, mmio, rec)
    }

    fn cfg32(root: &PciRoot, dev: u8, off: u16) -> u32 {
        let mut b = [0; 4];
        root.config_read(0, dev, 0, off, &mut b);
        u32::from_le_bytes(b)
    }

    fn set32(root: &mut PciRoot, dev: u8, off: u16, v: u32) {
        root.config_write(0, dev, 0, off, &v.to_le_bytes());
    }

    #[test]
    fn allocator_aligns_and_stops_at_the_end() {
        let mut a = BarAllocator::new(0xc000_1000, 0x10_0000);
        assert_eq!(a.allocate(0x8000), Some(0xc000_8000));
        assert_eq!(a.allocate(0x1000), Some(0xc001_0000));
        assert_eq!(a.allocate(0x3000), None);
        assert_eq!(a.allocate(0x10_0000), None);
        assert_eq!(a.allocate(0x8_0000), Some(0xc008_0000));
        assert_eq!(a.allocate(0x1000), Some(0xc010_0000));
        assert_eq!(a.allocate(0x1000), None, "window used up");
        let mut top = BarAllocator::new(u64::MAX - 0xfff, 0x1000);
        assert_eq!(top.allocate(0x2000), None);
    }

    #[test]
    fn host_bridge_and_empty_slots() {
        let (root, _, _) = root();
        assert_eq!(cfg32(&root, 0, 0), 0x0008_1b36);
        assert_eq!(cfg32(&root, 0, 8) >> 8, 0x06_0000, "host bridge class");
        assert_eq!(
            cfg32(&root, 0, 0xc) >> 16 & 0xff,
            0,
            "header type 0, single function"
        );
        assert_eq!(cfg32(&root, 1, 0), 0xffff_ffff);
        let mut b = [0u8; 4];
        root.config_read(1, 0, 0, 0, &mut b);
        assert_eq!(b, [0xff; 4], "no bus 1");
        root.config_read(0, 0, 1, 0, &mut b);
        assert_eq!(b, [0xff; 4], "no function 1");
        root.config_read(0, 40, 0, 0, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn bars_are_placed_mapped_and_follow_the_guest() {
        let (mut root, mmio, rec) = root();
        let dev = root.add(Arc::new(Mutex::new(TestFunction::new()))).unwrap();
        assert_eq!(dev, 1);
        assert_eq!(cfg32(&root, 1, 0x10), 0xc000_0004);
        assert_eq!(cfg32(&root, 1, 0x14), 0);
        assert_ne!(cfg32(&root, 1, 4) & u32::from(COMMAND_MEMORY), 0);
        let mut b = [0u8; 1];
        assert!(mmio.read(0xc000_0042, &mut b));
        assert_eq!(b, [0x42]);
        assert_eq!(
            rec.0.lock().unwrap().drain(..).collect::<Vec<_>>(),
            vec![(true, 0xc000_0100)]
        );

        // Linux sizing with decoding off: nothing moves on the bus while sizing.
        set32(&mut root, 1, 4, 0);
        assert!(!mmio.read(0xc000_0042, &mut b), "decoding off");
        set32(&mut root, 1, 0x10, 0xffff_ffff);
        set32(&mut root, 1, 0x14, 0xffff_ffff);
        assert_eq!(cfg32(&root, 1, 0x10), 0xffff_c004);
        // The guest moves the BAR and turns decoding back on.
        set32(&mut root, 1, 0x10, 0xc100_0000);
        set32(&mut root, 1, 0x14, 0);
        set32(&mut root, 1, 4, u32::from(COMMAND_MEMORY));
        assert!(mmio.read(0xc100_0010, &mut b));
        assert_eq!(b, [0x10]);
        assert!(!mmio.read(0xc000_0010, &mut b));
        assert_eq!(
            rec.0.lock().unwrap().drain(..).collect::<Vec<_>>(),
            vec![(false, 0xc000_0100), (true, 0xc100_0100)]
        );

        // A BAR moved onto another device's range is simply not decoded.
        let dev2 = root.add(Arc::new(Mutex::new(TestFunction::new()))).unwrap();
        assert_eq!(cfg32(&root, dev2, 0x10), 0xc000_4004);
        set32(&mut root, dev2, 0x10, 0xc100_0000);
        assert!(mmio.read(0xc100_0010, &mut b));
        assert_eq!(b, [0x10]);
        // Moving it away maps it again.
        set32(&mut root, dev2, 0x10, 0xc200_0000);
        assert!(mmio.read(0xc200_0020, &mut b));

        // A hard reset puts everything back where firmware placed it.
        root.reset();
        assert!(mmio.read(0xc000_0042, &mut b));
        assert!(mmio.read(0xc000_4042, &mut b));
        assert!(!mmio.read(0xc100_0010, &mut b));
        assert!(!mmio.read(0xc200_0020, &mut b));
    }

    #[test]
    fn bus_fills_up() {
        let (mut root, _, _) = root();
        for _ in 1..MAX_DEVICES {
            root.add(Arc::new(Mutex::new(TestFunction::new()))).unwrap();
        }
        assert!(matches!(
            root.add(Arc::new(Mutex::new(TestFunction::new()))),
            Err(PciError::NoSlot)
        ));
        let (mmio, rec) = (Arc::new(Bus::new()), Arc::new(IoEventRecorder::default()));
        let mut small = PciRoot::new(mmio, rec, (0xc000_0000, 0x4000));
        small
            .add(Arc::new(Mutex::new(TestFunction::new())))
            .unwrap();
        assert!(matches!(
            small.add(Arc::new(Mutex::new(TestFunction::new()))),
            Err(PciError::NoBarSpace { size: 0x4000 })
        ));
    }
}
