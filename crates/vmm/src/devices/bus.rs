//! Port-I/O and MMIO buses: map a guest address to the device that owns it.
//!
//! A guest may touch any address; an access nobody owns is counted by the
//! caller and otherwise ignored (reads return all ones, as on real hardware).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

/// A device on a bus. `offset` is relative to the start of the range it was inserted at.
/// `data` is 1, 2, 4 or 8 bytes long, as the guest's access was.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let _ = offset;
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or overlaps a device already inserted")]
    Overlap { base: u64, len: u64 },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping ranges, each owned by one device. Ranges may be added and
/// removed while vCPUs use the bus (a guest moving a PCI BAR); a device is called with no
/// bus lock held, so a device may itself change the bus.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    fn ranges(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Entry>> {
        self.ranges.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(
        &self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::Overlap { base, len })?;
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let clash_below = ranges
            .range(..end)
            .next_back()
            .is_some_and(|(b, e)| b + e.len > base);
        if clash_below {
            return Err(BusError::Overlap { base, len });
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the range that starts at `base`; returns whether there was one.
    pub fn remove(&self, base: u64) -> bool {
        self.ranges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&base)
            .is_some()
    }

    /// The device owning `addr` and the offset of `addr` in its range.
    fn find(&self, addr: u64) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges();
        let (base, entry) = ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then(|| (addr - base, entry.device.clone()))
    }

    /// Returns false when no device owns `addr` (`data` is then all ones).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(&device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Returns false when no device owns `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                lock(&device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// A device mutex poisoned by a panicking thread still holds consistent register state
/// (devices update state only after validating input), so keep using it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_rejects_overlap() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        assert_eq!(
            bus.insert(dev.clone(), 0x3f0, 9),
            Err(BusError::Overlap {
                base: 0x3f0,
                len: 9
            })
        );
        assert!(bus.insert(dev.clone(), 0x3fc, 1).is_err());
        assert!(bus.insert(dev.clone(), u64::MAX, 2).is_err());
        assert!(bus.insert(dev.clone(), 0x400, 0).is_err());
        bus.insert(dev.clone(), 0x400, 1).unwrap();

        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b, [0xff]);
        assert!(bus.write(0x3ff, &[7]));
        assert!(!bus.write(0x401, &[7]));
        assert_eq!(dev.lock().unwrap().0, vec![(7, vec![7])]);

        assert!(bus.remove(0x400));
        assert!(!bus.remove(0x400));
        assert!(!bus.write(0x400, &[7]));
        bus.insert(dev.clone(), 0x3ff + 1, 8).unwrap();
        assert!(bus.read(0x407, &mut b));
    }
}
