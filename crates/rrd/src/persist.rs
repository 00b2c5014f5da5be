//! Saving and loading an [`RrdSet`], so metrics survive a daemon restart.
//!
//! Format (little-endian), version 1:
//!
//! ```text
//! "FVRRDSET" | u32 version | u64 payload length | payload | u32 CRC-32 (IEEE) of payload
//! payload: u8 vm_min_max | u32 n_rrds | n × (u8 kind | str uuid | rrd)
//! rrd:     u64 step | f64 heartbeat | opt f64 last_updated | u32 n_ds | u32 n_rra
//!          | n_ds × (str name | u8 type | f64 min | f64 max | opt f64 last_raw
//!                    | f64 pdp_sum | f64 unknown_sec)
//!          | n_rra × (u8 cf | u32 pdp_per_row | u32 rows | f64 xff
//!                     | n_ds × (f64 sum | u64 known | u64 unknown | f64 min | f64 max
//!                              | f64 last | u32 head | rows × f64))
//! str: u16 length | UTF-8 bytes;  opt f64: u8 0 | u8 1 f64
//! ```
//!
//! A file is written to a temporary file in the same directory, synced, renamed over the
//! old one, and the directory is synced: a crash leaves the old or the new file, never a
//! mix. Loading checks everything (magic, version, length, checksum, every count against
//! the bytes left, layouts, names) and answers [`Error::Corrupt`] rather than panicking.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::ds::{validate_name, DsDef, DsType};
use crate::error::{Error, Result};
use crate::rrd::{check_layout, ArchiveSpec, Cdp, Cf, DsState, Ring, Rra, Rrd, MAX_DS};
use crate::set::{Owner, OwnerKind, RrdSet};

const MAGIC: &[u8; 8] = b"FVRRDSET";
/// The format version written.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8;

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE 802.3, as zlib).
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len32(&mut self, n: usize) {
        // Counts are bounded by MAX_DS, MAX_ARCHIVES, MAX_ROWS and the set size.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        // Names and owner ids are validated to at most 128 bytes.
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
    fn opt(&mut self, v: Option<f64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.f64(v);
            }
            None => self.u8(0),
        }
    }
}

struct R<'a> {
    b: &'a [u8],
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::Corrupt(what.into())
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(corrupt(format!("truncated in {what}")));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.arr::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.arr(what)?))
    }
    fn str(&mut self, what: &str) -> Result<String> {
        let n = self.u16(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(format!("{what} is not UTF-8")))
    }
    fn opt(&mut self, what: &str) -> Result<Option<f64>> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.f64(what)?)),
            _ => Err(corrupt(format!("bad option tag in {what}"))),
        }
    }
    /// A count of items each at least `min_size` bytes, checked against what is left.
    fn count(&mut self, what: &str, max: usize, min_size: usize) -> Result<usize> {
        let n = self.u32(what)? as usize;
        if n > max || n.saturating_mul(min_size.max(1)) > self.b.len() {
            return Err(corrupt(format!("{what} count {n} is impossible")));
        }
        Ok(n)
    }
}

fn write_rrd(w: &mut W, r: &Rrd) {
    w.u64(r.step);
    w.f64(r.heartbeat);
    w.opt(r.last_updated);
    w.len32(r.dss.len());
    w.len32(r.rras.len());
    for d in &r.dss {
        w.str(&d.def.name);
        w.u8(d.def.ty.code());
        w.f64(d.def.min);
        w.f64(d.def.max);
        w.opt(d.last_raw);
        w.f64(d.pdp_sum);
        w.f64(d.unknown_sec);
    }
    for a in &r.rras {
        w.u8(a.spec.cf.code());
        w.u32(a.spec.pdp_per_row);
        w.u32(a.spec.rows);
        w.f64(a.spec.xff);
        for (ring, cdp) in a.rings.iter().zip(&a.cdps) {
            w.f64(cdp.sum);
            w.u64(cdp.known);
            w.u64(cdp.unknown);
            w.f64(cdp.min);
            w.f64(cdp.max);
            w.f64(cdp.last);
            w.len32(ring.head);
            for &v in &ring.values {
                w.f64(v);
            }
        }
    }
}

fn read_rrd(r: &mut R) -> Result<Rrd> {
    let step = r.u64("step")?;
    let heartbeat = r.f64("heartbeat")?;
    let last_updated = r.opt("last update")?;
    if let Some(t) = last_updated {
        crate::rrd::check_timestamp(t).map_err(|_| corrupt("bad last update time"))?;
    }
    let n_ds = r.count("data source", MAX_DS, 36)?;
    let n_rra = r.count("archive", crate::rrd::MAX_ARCHIVES, 17)?;
    let mut dss = Vec::with_capacity(n_ds);
    let mut names = HashSet::new();
    for _ in 0..n_ds {
        let name = r.str("data source name")?;
        validate_name(&name).map_err(|e| corrupt(e.to_string()))?;
        if !names.insert(name.clone()) {
            return Err(corrupt(format!("data source {name:?} twice")));
        }
        let ty = DsType::from_code(r.u8("data source type")?)
            .ok_or_else(|| corrupt("bad data source type"))?;
        let def = DsDef {
            name,
            ty,
            min: r.f64("min")?,
            max: r.f64("max")?,
        };
        def.validate().map_err(|e| corrupt(e.to_string()))?;
        dss.push(DsState {
            def,
            last_raw: r.opt("last reading")?,
            pdp_sum: r.f64("pdp sum")?,
            unknown_sec: r.f64("unknown seconds")?,
        });
    }
    let mut rras = Vec::with_capacity(n_rra);
    for _ in 0..n_rra {
        let cf = Cf::from_code(r.u8("cf")?).ok_or_else(|| corrupt("bad consolidation function"))?;
        let spec = ArchiveSpec {
            cf,
            pdp_per_row: r.u32("pdp per row")?,
            rows: r.u32("rows")?,
            xff: r.f64("xff")?,
        };
        check_layout(step, heartbeat, &[spec]).map_err(|e| corrupt(e.to_string()))?;
        let rows = spec.rows as usize;
        let per_ds = 52usize.saturating_add(rows.saturating_mul(8));
        if n_ds.saturating_mul(per_ds) > r.b.len() {
            return Err(corrupt("archive larger than the data left"));
        }
        let mut rings = Vec::with_capacity(n_ds);
        let mut cdps = Vec::with_capacity(n_ds);
        for _ in 0..n_ds {
            cdps.push(Cdp {
                sum: r.f64("cdp")?,
                known: r.u64("cdp")?,
                unknown: r.u64("cdp")?,
                min: r.f64("cdp")?,
                max: r.f64("cdp")?,
                last: r.f64("cdp")?,
            });
            let head = r.u32("ring head")? as usize;
            if head >= rows {
                return Err(corrupt("ring head out of range"));
            }
            let bytes = r.take(rows * 8, "ring")?;
            let values = bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    f64::from_le_bytes(a)
                })
                .collect();
            rings.push(Ring { values, head });
        }
        rras.push(Rra { spec, rings, cdps });
    }
    let specs: Vec<ArchiveSpec> = rras.iter().map(|a| a.spec).collect();
    check_layout(step, heartbeat, &specs).map_err(|e| corrupt(e.to_string()))?;
    let mut rrd = Rrd::build(step, heartbeat, &specs);
    rrd.last_updated = last_updated;
    rrd.dss = dss;
    rrd.rras = rras;
    rrd.reindex();
    Ok(rrd)
}

impl RrdSet {
    /// The set in the saved format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut p = W(Vec::new());
        p.u8(u8::from(self.vm_min_max));
        p.len32(self.rrds.len());
        for (owner, rrd) in &self.rrds {
            p.u8(owner.kind.code());
            p.str(&owner.uuid);
            write_rrd(&mut p, rrd);
        }
        let payload = p.0;
        let mut out = Vec::with_capacity(HEADER + payload.len() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&crc32(&payload).to_le_bytes());
        out
    }

    /// Reads a set saved by [`RrdSet::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<RrdSet> {
        let mut h = R { b: bytes };
        if h.take(8, "magic").ok() != Some(MAGIC.as_slice()) {
            return Err(corrupt("not a Ferrovisor metrics file"));
        }
        let version = h.u32("version")?;
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}, expected {FORMAT_VERSION}"
            )));
        }
        let len = h.u64("length")?;
        if len != h.b.len().saturating_sub(4) as u64 || h.b.len() < 4 {
            return Err(corrupt("truncated or padded (length mismatch)"));
        }
        let (payload, crc) = h.b.split_at(h.b.len() - 4);
        let mut c = [0u8; 4];
        c.copy_from_slice(crc);
        if crc32(payload) != u32::from_le_bytes(c) {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = R { b: payload };
        let vm_min_max = match r.u8("flags")? {
            0 => false,
            1 => true,
            _ => return Err(corrupt("bad flags")),
        };
        let n = r.count("rrd", usize::MAX, 40)?;
        let mut rrds = BTreeMap::new();
        for _ in 0..n {
            let kind = OwnerKind::from_code(r.u8("owner kind")?)
                .ok_or_else(|| corrupt("bad owner kind"))?;
            let owner = Owner {
                kind,
                uuid: r.str("owner")?,
            };
            owner.validate().map_err(|e| corrupt(e.to_string()))?;
            let rrd = read_rrd(&mut r)?;
            if rrds.insert(owner, rrd).is_some() {
                return Err(corrupt("an owner appears twice"));
            }
        }
        if !r.b.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(RrdSet { rrds, vm_min_max })
    }

    /// Saves the set to `path` atomically (temporary file, fsync, rename, fsync of the
    /// directory).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |op: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Io {
                op,
                path: p,
                source,
            }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Io {
                op: "saving metrics: no file name in",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
        let bytes = self.to_bytes();
        let result = (|| {
            let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
            f.write_all(&bytes).map_err(io("writing", &tmp))?;
            f.sync_all().map_err(io("syncing", &tmp))?;
            drop(f);
            fs::rename(&tmp, path).map_err(io("renaming over", path))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing directory", &dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Loads a set saved by [`RrdSet::save`].
    pub fn load(path: &Path) -> Result<RrdSet> {
        let bytes = fs::read(path).map_err(|source| Error::Io {
            op: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        RrdSet::from_bytes(&bytes).map_err(|e| match e {
            Error::Corrupt(m) => Error::Corrupt(format!("{}: {m}", path.display())),
            e => e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::{host, vm};
    use crate::updates::UpdatesQuery;

    fn sample_set() -> RrdSet {
        let mut s = RrdSet::new();
        let h = Owner::host("host-1");
        let v = Owner::vm("vm-1");
        for k in 0..400 {
            let t = 1_700_000_000.0 + 5.0 * f64::from(k);
            let kf = f64::from(k);
            s.update(
                &h,
                t,
                &[(host::loadavg(), kf.sin()), (host::cpu(0), kf * 2.0)],
            )
            .unwrap();
            s.update(&v, t, &[(vm::memory(), 1e9), (vm::vif_rx(0), kf * 1e6)])
                .unwrap();
        }
        s
    }

    #[test]
    fn crc_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_bytes_and_file() {
        let s = sample_set();
        let bytes = s.to_bytes();
        let back = RrdSet::from_bytes(&bytes).unwrap();
        // NaN != NaN, so compare through the serialised form and the exports.
        assert_eq!(back.to_bytes(), bytes);
        let mut q = UpdatesQuery::new(0);
        q.host = true;
        assert_eq!(back.export(&q).unwrap(), s.export(&q).unwrap());
        assert_eq!(back.prometheus(), s.prometheus());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rrds.bin");
        s.save(&path).unwrap();
        s.save(&path).unwrap(); // overwrite
        let loaded = RrdSet::load(&path).unwrap();
        assert_eq!(loaded.to_bytes(), bytes);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // The loaded set keeps going where it stopped.
        let mut loaded = loaded;
        let t = 1_700_000_000.0 + 5.0 * 400.0;
        loaded
            .update(
                &Owner::vm("vm-1"),
                t,
                &[(vm::memory(), 1e9), (vm::vif_rx(0), 400e6)],
            )
            .unwrap();
        assert_eq!(
            loaded.get(&Owner::vm("vm-1")).unwrap().latest("vif_0_rx"),
            Some(200_000.0)
        );
        assert!(RrdSet::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn corrupt_and_truncated_input_is_an_error() {
        let bytes = sample_set().to_bytes();
        // Every truncation.
        for n in (0..bytes.len())
            .step_by(97)
            .chain([bytes.len() - 1, 3, 20, 21])
        {
            assert!(RrdSet::from_bytes(&bytes[..n]).is_err(), "len {n}");
        }
        // Bit flips anywhere: caught by the checksum or the header checks.
        for i in (0..bytes.len()).step_by(131) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(RrdSet::from_bytes(&b).is_err(), "flip at {i}");
        }
        let mut b = bytes.clone();
        b.push(0);
        assert!(RrdSet::from_bytes(&b).is_err());
        let mut b = bytes.clone();
        b[8] = 2; // version 2
        assert!(matches!(RrdSet::from_bytes(&b), Err(Error::Corrupt(m)) if m.contains("version")));
        assert!(RrdSet::from_bytes(b"").is_err());
        assert!(RrdSet::from_bytes(b"garbage garbage garbage").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rrds.bin");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = RrdSet::load(&path).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    }

    /// Payloads with a valid checksum but lying contents must still be refused.
    #[test]
    fn lying_payloads_with_good_checksum() {
        fn wrap(payload: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(payload);
            out.extend_from_slice(&crc32(payload).to_le_bytes());
            out
        }
        // Huge counts.
        assert!(RrdSet::from_bytes(&wrap(&[0, 0xFF, 0xFF, 0xFF, 0xFF])).is_err());
        // Valid empty set.
        assert!(RrdSet::from_bytes(&wrap(&[0, 0, 0, 0, 0]))
            .unwrap()
            .is_empty());
        // Take a real payload and corrupt fields inside it, re-checksummed.
        let bytes = sample_set().to_bytes();
        let payload = &bytes[HEADER..bytes.len() - 4];
        for i in (0..payload.len().min(6000)).step_by(7) {
            for x in [0xFFu8, 0x80, 0x01] {
                let mut p = payload.to_vec();
                p[i] ^= x;
                // Must not panic; may load (a flipped value) or fail.
                let _ = RrdSet::from_bytes(&wrap(&p));
            }
        }
        for cut in [1usize, 5, 100, payload.len() / 2] {
            assert!(RrdSet::from_bytes(&wrap(&payload[..payload.len() - cut])).is_err());
        }
    }
}
