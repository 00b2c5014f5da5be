//! MSI-X: the vector table and pending-bit array a function keeps in a BAR, and the
//! [`MsiRouter`] through which it tells the VMM where each vector goes.
//!
//! The table is the guest's: it writes each entry's message address, data and mask bit.
//! The VMM only needs to know the current (address, data) of unmasked entries (it keeps a
//! KVM route per vector) and when to fire one. A masked vector never fires: its pending
//! bit is set instead, and the message goes out when the vector or the whole function is
//! unmasked, as PCI requires.

use std::sync::Arc;

/// Bytes per table entry: address low, address high, data, vector control.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Vector control bit 0: the entry is masked.
const VECTOR_CONTROL_MASKED: u32 = 1;
/// MSI-X message control bits.
pub const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
pub const MSIX_CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// The most vectors one function may have (table size is an 11-bit field, minus one).
pub const MAX_VECTORS: u16 = 2048;

/// How the transport reaches the VMM's interrupt delivery. Implemented by the VMM with a
/// KVM MSI route and an irqfd per vector; by a recorder in tests.
pub trait MsiRouter: Send + Sync {
    /// Entry `vector` now holds `addr`/`data` and is (un)masked. Called from vCPU threads
    /// on every change; the VMM may ignore masked entries (they never fire).
    fn update(&self, vector: u16, addr: u64, data: u32, masked: bool);
    /// Sends vector `vector`'s message now. Only called for an enabled, unmasked vector
    /// whose entry `update` reported. Called from device threads: must not block.
    fn trigger(&self, vector: u16);
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsixEntry {
    pub addr: u64,
    pub data: u32,
    pub masked: bool,
}

impl MsixEntry {
    const MASKED: MsixEntry = MsixEntry {
        addr: 0,
        data: 0,
        masked: true,
    };
}

/// One function's MSI-X state.
pub struct Msix {
    entries: Vec<MsixEntry>,
    /// Pending bits, 64 vectors per word (the PBA's own layout).
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    router: Arc<dyn MsiRouter>,
}

/// Accesses the table and PBA serve: 4 or 8 bytes, naturally aligned.
fn valid_access(offset: u64, len: usize) -> bool {
    matches!(len, 4 | 8) && offset.is_multiple_of(len as u64)
}

impl Msix {
    /// `vectors` entries (1 to 2048), all masked; MSI-X disabled.
    pub fn new(vectors: u16, router: Arc<dyn MsiRouter>) -> Self {
        let vectors = vectors.clamp(1, MAX_VECTORS);
        Msix {
            entries: vec![MsixEntry::MASKED; usize::from(vectors)],
            pending: vec![0; usize::from(vectors).div_ceil(64)],
            enabled: false,
            function_masked: false,
            router,
        }
    }

    pub fn vectors(&self) -> u16 {
        // At most MAX_VECTORS (checked in `new`).
        self.entries.len() as u16
    }

    /// Bytes the table takes in its BAR.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Bytes the PBA takes in its BAR.
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    pub fn entry(&self, vector: u16) -> Option<MsixEntry> {
        self.entries.get(usize::from(vector)).copied()
    }

    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    fn set_pending(&mut self, vector: u16, on: bool) {
        let v = usize::from(vector);
        if let Some(w) = self.pending.get_mut(v / 64) {
            if on {
                *w |= 1 << (v % 64);
            } else {
                *w &= !(1 << (v % 64));
            }
        }
    }

    fn can_fire(&self, vector: u16) -> bool {
        self.enabled && !self.function_masked && self.entry(vector).is_some_and(|e| !e.masked)
    }

    /// The device wants vector `vector` delivered. Out-of-range vectors and NO_VECTOR are
    /// dropped; with MSI-X disabled there is nowhere to deliver (no INTx), so it is dropped.
    pub fn signal(&mut self, vector: u16) {
        if usize::from(vector) >= self.entries.len() || !self.enabled {
            return;
        }
        if self.can_fire(vector) {
            self.router.trigger(vector);
        } else {
            self.set_pending(vector, true);
        }
    }

    /// Fires every pending vector that may fire now.
    fn deliver_pending(&mut self) {
        for v in 0..self.vectors() {
            if self.is_pending(v) && self.can_fire(v) {
                self.set_pending(v, false);
                self.router.trigger(v);
            }
        }
    }

    /// The message control register changed (enable and function-mask bits).
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & MSIX_CONTROL_ENABLE != 0;
        self.function_masked = control & MSIX_CONTROL_FUNCTION_MASK != 0;
        self.deliver_pending();
    }

    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        if !valid_access(offset, data.len()) || offset >= self.table_size() {
            data.fill(0xff);
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let off = offset + 4 * i as u64;
            // In range (checked above; an 8-byte access is 8-aligned, so it stays in its entry).
            let e = self.entries[(off / MSIX_ENTRY_SIZE) as usize];
            let v = match off % MSIX_ENTRY_SIZE {
                0 => e.addr as u32,
                4 => (e.addr >> 32) as u32,
                8 => e.data,
                _ => u32::from(e.masked),
            };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        if !valid_access(offset, data.len()) || offset >= self.table_size() {
            return;
        }
        let index = (offset / MSIX_ENTRY_SIZE) as usize;
        let old = self.entries[index];
        let mut e = old;
        for (i, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * i as u64;
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            match off % MSIX_ENTRY_SIZE {
                0 => e.addr = (e.addr & !0xffff_ffff) | u64::from(v),
                4 => e.addr = (e.addr & 0xffff_ffff) | (u64::from(v) << 32),
                8 => e.data = v,
                _ => e.masked = v & VECTOR_CONTROL_MASKED != 0,
            }
        }
        if e == old {
            return;
        }
        self.entries[index] = e;
        // Below MAX_VECTORS entries, so the index fits.
        let vector = index as u16;
        self.router.update(vector, e.addr, e.data, e.masked);
        if old.masked && !e.masked && self.is_pending(vector) && self.can_fire(vector) {
            self.set_pending(vector, false);
            self.router.trigger(vector);
        }
    }

    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        if !valid_access(offset, data.len()) || offset >= self.pba_size() {
            data.fill(0xff);
            return;
        }
        let word = self.pending[(offset / 8) as usize];
        let bytes = word.to_le_bytes();
        let start = (offset % 8) as usize;
        data.copy_from_slice(&bytes[start..start + data.len()]);
    }

    /// Power-on state: every entry masked and cleared, nothing pending, MSI-X disabled.
    pub fn reset(&mut self) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            if *e != MsixEntry::MASKED {
                *e = MsixEntry::MASKED;
                self.router.update(i as u16, 0, 0, true);
            }
        }
        self.pending.fill(0);
        self.enabled = false;
        self.function_masked = false;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// What a router was told, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Update(u16, u64, u32, bool),
        Trigger(u16),
    }

    #[derive(Default)]
    pub struct Recorder(pub Mutex<Vec<Call>>);

    impl Recorder {
        pub fn take(&self) -> Vec<Call> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl MsiRouter for Recorder {
        fn update(&self, vector: u16, addr: u64, data: u32, masked: bool) {
            self.0
                .lock()
                .unwrap()
                .push(Call::Update(vector, addr, data, masked));
        }
        fn trigger(&self, vector: u16) {
            self.0.lock().unwrap().push(Call::Trigger(vector));
        }
    }

    fn w32(m: &mut Msix, off: u64, v: u32) {
        m.write_table(off, &v.to_le_bytes());
    }

    fn r32(m: &Msix, off: u64) -> u32 {
        let mut b = [0; 4];
        m.read_table(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn entries_start_masked_and_read_back() {
        let rec = Arc::new(Recorder::default());
        let mut m = Msix::new(3, rec.clone());
        assert_eq!((m.table_size(), m.pba_size()), (48, 8));
        assert_eq!(r32(&m, 12), 1);
        w32(&mut m, 16, 0xfee0_0000);
        w32(&mut m, 20, 0);
        w32(&mut m, 24, 0x4041);
        assert_eq!(
            rec.take(),
            vec![
                Call::Update(1, 0xfee0_0000, 0, true),
                Call::Update(1, 0xfee0_0000, 0x4041, true)
            ],
            "an unchanged word (address high 0) is not reported"
        );
        w32(&mut m, 28, 0);
        assert_eq!(
            rec.take(),
            vec![Call::Update(1, 0xfee0_0000, 0x4041, false)]
        );
        let mut q = [0u8; 8];
        m.read_table(16, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0xfee0_0000);
        // 64-bit write of address, then bad accesses.
        m.write_table(32, &0x1_fee0_1000u64.to_le_bytes());
        assert_eq!(m.entry(2).unwrap().addr, 0x1_fee0_1000);
        rec.take();
        m.write_table(33, &[1, 2, 3, 4]);
        m.write_table(34, &[1, 2]);
        m.write_table(48, &[0; 4]);
        m.write_table(u64::MAX - 3, &[0; 4]);
        assert!(rec.take().is_empty());
        let mut b = [0u8; 4];
        m.read_table(48, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn masked_vectors_are_pending_then_delivered_on_unmask() {
        let rec = Arc::new(Recorder::default());
        let mut m = Msix::new(2, rec.clone());
        m.signal(0);
        assert!(!m.is_pending(0), "MSI-X disabled: nowhere to deliver");
        m.set_control(MSIX_CONTROL_ENABLE);
        m.signal(0);
        assert!(m.is_pending(0));
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 1);
        w32(&mut m, 0, 0xfee0_0000);
        w32(&mut m, 8, 0x30);
        rec.take();
        w32(&mut m, 12, 0);
        assert_eq!(
            rec.take(),
            vec![Call::Update(0, 0xfee0_0000, 0x30, false), Call::Trigger(0)]
        );
        assert!(!m.is_pending(0));
        m.signal(0);
        assert_eq!(rec.take(), vec![Call::Trigger(0)]);
        // Function mask holds everything back; clearing it delivers.
        m.set_control(MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK);
        m.signal(0);
        m.signal(0);
        m.signal(7);
        m.signal(0xffff);
        assert!(rec.take().is_empty());
        m.set_control(MSIX_CONTROL_ENABLE);
        assert_eq!(rec.take(), vec![Call::Trigger(0)]);
        // Reset: masked again, routes told.
        m.reset();
        assert_eq!(rec.take(), vec![Call::Update(0, 0, 0, true)]);
        assert_eq!(m.entry(0), Some(MsixEntry::MASKED));
    }
}
