//! One round-robin database: data sources, their primary data points (PDPs) and the
//! archives (RRAs) consolidating them, with rrdtool's and xapi-rrd's arithmetic
//! (`ocaml/libs/xapi-rrd/lib/rrd.ml`).
//!
//! Time is cut into PDPs of `step` seconds. Each update turns readings into rates (see
//! [`DsType`]); the rate applies to the time since the previous update, and a PDP is the
//! time-weighted mean of the known rates within it. An archive keeps one consolidated
//! data point (CDP) per `pdp_per_row` PDPs: their average, minimum, maximum or last value,
//! or unknown (NaN) when more than `xff` of them are unknown. A row is stamped with the end
//! of its interval.

use std::collections::{HashMap, HashSet};

use crate::ds::{DsDef, DsType};
use crate::error::{Error, Result};

/// Seconds between primary data points, as xcp-rrdd.
pub const DEFAULT_STEP: u64 = 5;
/// A reading more than this many seconds after the previous one is unknown (xcp-rrdd's
/// `mrhb`).
pub const DEFAULT_HEARTBEAT: f64 = 300.0;
/// Largest timestamp accepted, in seconds since the epoch (about the year 5138).
pub const MAX_TIMESTAMP: f64 = 1e11;
/// Most data sources one RRD may hold.
pub const MAX_DS: usize = 4096;
/// Most archives one RRD may hold.
pub const MAX_ARCHIVES: usize = 64;
/// Most rows one archive may hold.
pub const MAX_ROWS: u32 = 1_000_000;
/// Largest step accepted, in seconds (one day).
pub const MAX_STEP: u64 = 86_400;

/// XAPI's timescales: (rows, PDPs per row) — 5 s for 10 min, 1 min for 2 h, 1 h for a
/// week, 1 day for a year (`rrdd_shared.ml: timescales`).
pub const XAPI_TIMESCALES: [(u32, u32); 4] = [(120, 1), (120, 12), (168, 720), (366, 17280)];

/// A consolidation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Mean of the known PDPs.
    Average,
    /// Smallest known PDP.
    Min,
    /// Largest known PDP.
    Max,
    /// Last known PDP.
    Last,
}

impl Cf {
    /// XAPI's spelling: `AVERAGE`, `MIN`, `MAX`, `LAST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cf::Average => "AVERAGE",
            Cf::Min => "MIN",
            Cf::Max => "MAX",
            Cf::Last => "LAST",
        }
    }

    /// Parses XAPI's spelling exactly (`cf_type_of_string`).
    pub fn parse(s: &str) -> Option<Cf> {
        match s {
            "AVERAGE" => Some(Cf::Average),
            "MIN" => Some(Cf::Min),
            "MAX" => Some(Cf::Max),
            "LAST" => Some(Cf::Last),
            _ => None,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Cf::Average => 0,
            Cf::Min => 1,
            Cf::Max => 2,
            Cf::Last => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Cf> {
        match c {
            0 => Some(Cf::Average),
            1 => Some(Cf::Min),
            2 => Some(Cf::Max),
            3 => Some(Cf::Last),
            _ => None,
        }
    }
}

/// The layout of one archive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArchiveSpec {
    /// Consolidation function.
    pub cf: Cf,
    /// PDPs per row (1 = one row per step).
    pub pdp_per_row: u32,
    /// Rows kept.
    pub rows: u32,
    /// Largest fraction of unknown PDPs for which a row is still known.
    pub xff: f64,
}

/// The archives xcp-rrdd creates (`rrdd_monitor.ml: create_rras`): on every timescale an
/// AVERAGE (xff 0.5); with `min_max`, the coarser timescales get AVERAGE, MIN and MAX with
/// xff 1.0 instead. XAPI always uses `min_max` for hosts and, by default, not for VMs.
pub fn xapi_archives(min_max: bool) -> Vec<ArchiveSpec> {
    let mut v = Vec::new();
    for (rows, pdp_per_row) in XAPI_TIMESCALES {
        if pdp_per_row > 1 && min_max {
            for cf in [Cf::Average, Cf::Min, Cf::Max] {
                v.push(ArchiveSpec {
                    cf,
                    pdp_per_row,
                    rows,
                    xff: 1.0,
                });
            }
        } else {
            v.push(ArchiveSpec {
                cf: Cf::Average,
                pdp_per_row,
                rows,
                xff: 0.5,
            });
        }
    }
    v
}

/// A fixed-size ring of values, newest at `head`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ring {
    pub(crate) values: Vec<f64>,
    pub(crate) head: usize,
}

impl Ring {
    fn new(len: usize) -> Ring {
        Ring {
            values: vec![f64::NAN; len.max(1)],
            head: 0,
        }
    }

    fn push(&mut self, v: f64) {
        let len = self.values.len();
        self.head = (self.head + 1) % len;
        self.values[self.head] = v;
    }

    /// The value `i` rows before the newest (0 = newest); NaN past the end.
    pub(crate) fn peek(&self, i: u64) -> f64 {
        let len = self.values.len();
        match usize::try_from(i) {
            Ok(i) if i < len => self.values[(self.head + len - i) % len],
            _ => f64::NAN,
        }
    }
}

/// The CDP being prepared: enough to give any consolidation function.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cdp {
    pub(crate) sum: f64,
    pub(crate) known: u64,
    pub(crate) unknown: u64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) last: f64,
}

impl Cdp {
    pub(crate) fn new() -> Cdp {
        Cdp {
            sum: 0.0,
            known: 0,
            unknown: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: f64::NAN,
        }
    }

    fn unknown(n: u64) -> Cdp {
        Cdp {
            unknown: n,
            ..Cdp::new()
        }
    }

    /// Adds `n` PDPs of value `v`.
    fn add(&mut self, n: u64, v: f64) {
        if n == 0 {
            return;
        }
        if v.is_nan() {
            self.unknown = self.unknown.saturating_add(n);
        } else {
            self.known = self.known.saturating_add(n);
            self.sum += v * n as f64;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.last = v;
        }
    }

    fn finish(&self, spec: &ArchiveSpec) -> f64 {
        // xapi-rrd: known while unknown_pdps <= int_of_float (xff * pdp_cnt).
        let allowed = (spec.xff * f64::from(spec.pdp_per_row)).floor();
        if self.known == 0 || self.unknown as f64 > allowed {
            return f64::NAN;
        }
        match spec.cf {
            Cf::Average => self.sum / self.known as f64,
            Cf::Min => self.min,
            Cf::Max => self.max,
            Cf::Last => self.last,
        }
    }
}

/// One archive: a ring and a CDP in preparation per data source.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rra {
    pub(crate) spec: ArchiveSpec,
    pub(crate) rings: Vec<Ring>,
    pub(crate) cdps: Vec<Cdp>,
}

/// A data source and its PDP in preparation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DsState {
    pub(crate) def: DsDef,
    /// Last raw reading of a DERIVE source, if known.
    pub(crate) last_raw: Option<f64>,
    /// Sum of rate × seconds over the known part of the current PDP(s).
    pub(crate) pdp_sum: f64,
    /// Unknown seconds in the current PDP(s).
    pub(crate) unknown_sec: f64,
}

/// A round-robin database for one owner (a VM, a host...).
#[derive(Clone, Debug, PartialEq)]
pub struct Rrd {
    pub(crate) step: u64,
    pub(crate) heartbeat: f64,
    pub(crate) last_updated: Option<f64>,
    pub(crate) dss: Vec<DsState>,
    pub(crate) rras: Vec<Rra>,
    pub(crate) index: HashMap<String, usize>,
}

pub(crate) fn check_timestamp(t: f64) -> Result<()> {
    if t.is_finite() && (0.0..=MAX_TIMESTAMP).contains(&t) {
        Ok(())
    } else {
        Err(Error::BadTimestamp(t))
    }
}

pub(crate) fn check_layout(step: u64, heartbeat: f64, archives: &[ArchiveSpec]) -> Result<()> {
    if step == 0 || step > MAX_STEP {
        return Err(Error::BadArchive("step must be 1 to 86400 seconds"));
    }
    if heartbeat.is_nan() || heartbeat <= 0.0 {
        return Err(Error::BadArchive("heartbeat must be positive"));
    }
    if archives.is_empty() || archives.len() > MAX_ARCHIVES {
        return Err(Error::BadArchive("an RRD needs 1 to 64 archives"));
    }
    for a in archives {
        if a.rows == 0 || a.rows > MAX_ROWS {
            return Err(Error::BadArchive("rows must be 1 to 1000000"));
        }
        if a.pdp_per_row == 0 || u64::from(a.pdp_per_row) * step > MAX_TIMESTAMP as u64 {
            return Err(Error::BadArchive(
                "pdp_per_row must be at least 1 and fit in time",
            ));
        }
        if !(0.0..1.0 + f64::EPSILON).contains(&a.xff) {
            return Err(Error::BadArchive("xff must be in [0, 1]"));
        }
    }
    Ok(())
}

impl Rrd {
    /// An empty RRD with `step`-second PDPs and the given archives. List archives from
    /// the finest to the coarsest timescale, as XAPI does: export picks the first that
    /// fits.
    pub fn new(step: u64, archives: &[ArchiveSpec]) -> Result<Rrd> {
        check_layout(step, DEFAULT_HEARTBEAT, archives)?;
        Ok(Rrd::build(step, DEFAULT_HEARTBEAT, archives))
    }

    /// An RRD laid out as xcp-rrdd's: 5 s step, 300 s heartbeat, [`xapi_archives`].
    pub fn xapi(min_max: bool) -> Rrd {
        Rrd::build(DEFAULT_STEP, DEFAULT_HEARTBEAT, &xapi_archives(min_max))
    }

    pub(crate) fn build(step: u64, heartbeat: f64, archives: &[ArchiveSpec]) -> Rrd {
        Rrd {
            step,
            heartbeat,
            last_updated: None,
            dss: Vec::new(),
            rras: archives
                .iter()
                .map(|&spec| Rra {
                    spec,
                    rings: Vec::new(),
                    cdps: Vec::new(),
                })
                .collect(),
            index: HashMap::new(),
        }
    }

    /// Sets the heartbeat: readings further apart than this are unknown.
    pub fn with_heartbeat(mut self, seconds: f64) -> Result<Rrd> {
        let specs = self.archives();
        check_layout(self.step, seconds, &specs)?;
        self.heartbeat = seconds;
        Ok(self)
    }

    /// Seconds per PDP.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Time of the last accepted update.
    pub fn last_updated(&self) -> Option<f64> {
        self.last_updated
    }

    /// The archive layouts, in order.
    pub fn archives(&self) -> Vec<ArchiveSpec> {
        self.rras.iter().map(|r| r.spec).collect()
    }

    /// The data sources, in the order they appeared.
    pub fn data_sources(&self) -> impl Iterator<Item = &DsDef> {
        self.dss.iter().map(|d| &d.def)
    }

    /// Records readings taken at `timestamp` (seconds since the epoch). A data source not
    /// seen before is added; one known but absent from `samples` is unknown for this
    /// interval. NaN or infinite readings are unknown. A data source keeps its first
    /// definition. Timestamps must increase strictly: an update at or before the last one
    /// is refused (as rrdtool), so a clock stepping backwards loses samples until it
    /// passes the last update again, and never corrupts the archives. On any error
    /// nothing changes.
    pub fn update(&mut self, timestamp: f64, samples: &[(DsDef, f64)]) -> Result<()> {
        check_timestamp(timestamp)?;
        let mut seen = HashSet::with_capacity(samples.len());
        let mut new_count = 0usize;
        for (def, _) in samples {
            def.validate()?;
            if !seen.insert(def.name.as_str()) {
                return Err(Error::DuplicateDs(def.name.clone()));
            }
            if !self.index.contains_key(&def.name) {
                new_count += 1;
            }
        }
        if self.dss.len() + new_count > MAX_DS {
            return Err(Error::TooManyDs(self.dss.len() + new_count));
        }
        let lu = match self.last_updated {
            Some(lu) if timestamp <= lu => {
                return Err(Error::TimeNotIncreasing {
                    last: lu,
                    got: timestamp,
                })
            }
            Some(lu) => lu,
            None => {
                // The first reading only primes the counters: it closes no interval.
                for (def, v) in samples {
                    let i = self.add_ds(def.clone(), timestamp);
                    if def.ty == DsType::Derive && v.is_finite() {
                        self.dss[i].last_raw = Some(*v);
                    }
                }
                self.last_updated = Some(timestamp);
                return Ok(());
            }
        };
        for (def, _) in samples {
            if !self.index.contains_key(&def.name) {
                self.add_ds(def.clone(), lu);
            }
        }
        let by_name: HashMap<&str, f64> =
            samples.iter().map(|(d, v)| (d.name.as_str(), *v)).collect();

        let interval = timestamp - lu;
        let heartbeat = self.heartbeat;
        let rates: Vec<f64> = self
            .dss
            .iter_mut()
            .map(|ds| {
                ds.rate(
                    by_name.get(ds.def.name.as_str()).copied(),
                    interval,
                    heartbeat,
                )
            })
            .collect();

        let step = self.step as f64;
        // Both fit: timestamps are at most MAX_TIMESTAMP and step at least 1.
        let proc_idx = (lu / step).floor() as u64;
        let occu_idx = (timestamp / step).floor() as u64;
        let elapsed = occu_idx.saturating_sub(proc_idx);
        let occu_st = occu_idx as f64 * step;
        let (pre, post) = if elapsed > 0 {
            (occu_st - lu, timestamp - occu_st)
        } else {
            (interval, 0.0)
        };
        for (ds, &rate) in self.dss.iter_mut().zip(&rates) {
            if rate.is_nan() {
                ds.unknown_sec += pre;
            } else {
                ds.pdp_sum += rate * pre;
            }
        }
        if elapsed > 0 {
            let span = elapsed as f64 * step;
            let pdps: Vec<f64> = self
                .dss
                .iter()
                .map(|ds| {
                    let known = span - ds.unknown_sec;
                    let v = ds.pdp_sum / known;
                    if known <= span * 1e-9 || !v.is_finite() {
                        f64::NAN
                    } else {
                        v
                    }
                })
                .collect();
            self.rra_update(proc_idx, elapsed, &pdps);
            for (ds, &rate) in self.dss.iter_mut().zip(&rates) {
                if rate.is_nan() {
                    ds.pdp_sum = 0.0;
                    ds.unknown_sec = post;
                } else {
                    ds.pdp_sum = rate * post;
                    ds.unknown_sec = 0.0;
                }
            }
        }
        self.last_updated = Some(timestamp);
        Ok(())
    }

    /// Adds a data source at time `at`: the part of the current PDP and CDPs before `at`
    /// is unknown, and its rings hold NaN.
    fn add_ds(&mut self, def: DsDef, at: f64) -> usize {
        let step = self.step as f64;
        let pdp_idx = (at / step).floor() as u64;
        let proc_st = pdp_idx as f64 * step;
        for rra in &mut self.rras {
            rra.rings.push(Ring::new(rra.spec.rows as usize));
            rra.cdps
                .push(Cdp::unknown(pdp_idx % u64::from(rra.spec.pdp_per_row)));
        }
        let i = self.dss.len();
        self.index.insert(def.name.clone(), i);
        self.dss.push(DsState {
            def,
            last_raw: None,
            pdp_sum: 0.0,
            unknown_sec: at - proc_st,
        });
        i
    }

    /// Feeds `elapsed` completed PDPs (the first being PDP number `proc_idx`), all of
    /// value `pdps[ds]`, to every archive. Work is bounded by the archive size however
    /// long the gap.
    fn rra_update(&mut self, proc_idx: u64, elapsed: u64, pdps: &[f64]) {
        for rra in &mut self.rras {
            let cnt = u64::from(rra.spec.pdp_per_row);
            // PDPs still needed to complete the CDP in preparation (1..=cnt).
            let start_off = cnt - proc_idx % cnt;
            for (cdp, &p) in rra.cdps.iter_mut().zip(pdps) {
                cdp.add(start_off.min(elapsed), p);
            }
            if elapsed < start_off {
                continue;
            }
            let rows_done = (elapsed - start_off) / cnt + 1;
            let rem = (elapsed - start_off) % cnt;
            let secondaries = (rows_done - 1).min(u64::from(rra.spec.rows));
            let spec = rra.spec;
            for ((ring, cdp), &p) in rra.rings.iter_mut().zip(&mut rra.cdps).zip(pdps) {
                ring.push(cdp.finish(&spec));
                // A CDP made of `cnt` copies of one PDP is that PDP, whatever the CF.
                for _ in 0..secondaries {
                    ring.push(p);
                }
                *cdp = Cdp::new();
                cdp.add(rem, p);
            }
        }
    }

    /// Removes a data source and its data. Returns whether it existed.
    pub fn remove_ds(&mut self, name: &str) -> bool {
        let Some(i) = self.index.remove(name) else {
            return false;
        };
        self.dss.remove(i);
        for rra in &mut self.rras {
            rra.rings.remove(i);
            rra.cdps.remove(i);
        }
        self.reindex();
        true
    }

    pub(crate) fn reindex(&mut self) {
        self.index = self
            .dss
            .iter()
            .enumerate()
            .map(|(i, d)| (d.def.name.clone(), i))
            .collect();
    }

    pub(crate) fn ds_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Time stamp (end of interval) of the newest row of an archive of `pdp_per_row`.
    pub(crate) fn last_cdp_time(&self, pdp_per_row: u32) -> Option<i64> {
        let rs = self.step.checked_mul(u64::from(pdp_per_row))?;
        let rs = i64::try_from(rs).ok()?;
        let lu = self.last_updated? as i64;
        Some(lu.div_euclid(rs) * rs)
    }

    /// The newest completed value of a data source in the finest AVERAGE archive.
    pub fn latest(&self, name: &str) -> Option<f64> {
        let i = self.ds_index(name)?;
        let rra = self
            .rras
            .iter()
            .filter(|r| r.spec.cf == Cf::Average)
            .min_by_key(|r| r.spec.pdp_per_row)?;
        Some(rra.rings.get(i)?.peek(0))
    }

    /// The rows of a data source in the archive with `cf` and `pdp_per_row`, newest first,
    /// as (end of interval, value).
    pub fn fetch(&self, name: &str, cf: Cf, pdp_per_row: u32) -> Option<Vec<(i64, f64)>> {
        let i = self.ds_index(name)?;
        let rra = self
            .rras
            .iter()
            .find(|r| r.spec.cf == cf && r.spec.pdp_per_row == pdp_per_row)?;
        let end = self.last_cdp_time(pdp_per_row)?;
        let rs = (self.step * u64::from(pdp_per_row)) as i64;
        let ring = rra.rings.get(i)?;
        Some(
            (0..u64::from(rra.spec.rows))
                .map(|k| (end - k as i64 * rs, ring.peek(k)))
                .collect(),
        )
    }
}

impl DsState {
    /// The rate of this data source over the `interval` seconds ending now, from its
    /// reading (None when absent); NaN when unknown.
    fn rate(&mut self, reading: Option<f64>, interval: f64, heartbeat: f64) -> f64 {
        let rate = match reading {
            Some(v) if v.is_finite() => match self.def.ty {
                DsType::Gauge => v,
                DsType::Absolute => v / interval,
                DsType::Derive => {
                    // A counter going down was reset or wrapped: the interval is unknown
                    // and the new reading is the base for the next one.
                    let r = match self.last_raw {
                        Some(prev) if v >= prev => (v - prev) / interval,
                        _ => f64::NAN,
                    };
                    self.last_raw = Some(v);
                    r
                }
            },
            _ => {
                self.last_raw = None;
                f64::NAN
            }
        };
        if interval > heartbeat || !rate.is_finite() || rate < self.def.min || rate > self.def.max {
            f64::NAN
        } else {
            rate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::DsDef;

    fn one(cf: Cf, pdp_per_row: u32, rows: u32, xff: f64) -> ArchiveSpec {
        ArchiveSpec {
            cf,
            pdp_per_row,
            rows,
            xff,
        }
    }

    fn g(name: &str) -> DsDef {
        DsDef::new(name, DsType::Gauge)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 || (a.is_nan() && b.is_nan())
    }

    fn assert_rows(got: &[(i64, f64)], want: &[(i64, f64)]) {
        for (g, w) in got.iter().zip(want) {
            assert!(g.0 == w.0 && close(g.1, w.1), "got {got:?}\nwant {want:?}");
        }
    }

    #[test]
    fn xapi_layout() {
        let vm = xapi_archives(false);
        assert_eq!(vm.len(), 4);
        assert!(vm.iter().all(|a| a.cf == Cf::Average && a.xff == 0.5));
        let host = xapi_archives(true);
        assert_eq!(host.len(), 10);
        assert_eq!(host[0], one(Cf::Average, 1, 120, 0.5));
        assert_eq!(host[1], one(Cf::Average, 12, 120, 1.0));
        assert_eq!(host[2], one(Cf::Min, 12, 120, 1.0));
        assert_eq!(host[3], one(Cf::Max, 12, 120, 1.0));
        assert_eq!(host[9], one(Cf::Max, 17280, 366, 1.0));
    }

    #[test]
    fn gauge_aligned_updates_make_one_row_per_step() {
        let mut r = Rrd::new(5, &[one(Cf::Average, 1, 4, 0.5)]).unwrap();
        r.update(100.0, &[(g("x"), 1.0)]).unwrap();
        r.update(105.0, &[(g("x"), 2.0)]).unwrap();
        r.update(110.0, &[(g("x"), 4.0)]).unwrap();
        let rows = r.fetch("x", Cf::Average, 1).unwrap();
        // The reading at 105 is the rate over (100, 105], stamped 105.
        assert_rows(&rows, &[(110, 4.0), (105, 2.0), (100, f64::NAN)]);
        assert_eq!(r.latest("x"), Some(4.0));
    }

    #[test]
    fn unaligned_updates_are_time_weighted() {
        // Readings at 102 (prime), 107 (value 10), 112 (value 20).
        // PDP (100,105]: 3 s of rate 10 known, 2 s unknown (before the DS existed) -> 10.
        // PDP (105,110]: 2 s of 10 then 3 s of 20 -> (20 + 60) / 5 = 16.
        let mut r = Rrd::new(5, &[one(Cf::Average, 1, 4, 0.5)]).unwrap();
        r.update(102.0, &[(g("x"), 0.0)]).unwrap();
        r.update(107.0, &[(g("x"), 10.0)]).unwrap();
        r.update(112.0, &[(g("x"), 20.0)]).unwrap();
        let rows = r.fetch("x", Cf::Average, 1).unwrap();
        assert_rows(&rows, &[(110, 16.0), (105, 10.0)]);
    }

    #[test]
    fn consolidation_average_min_max_by_hand() {
        // 3 PDPs per row. PDPs (stamped at their end): 5:1, 10:2, 15:6 | 20:4, 25:NaN, 30:5.
        let specs = [
            one(Cf::Average, 1, 10, 0.5),
            one(Cf::Average, 3, 4, 0.5),
            one(Cf::Min, 3, 4, 0.5),
            one(Cf::Max, 3, 4, 0.5),
            one(Cf::Last, 3, 4, 0.5),
            one(Cf::Average, 3, 4, 0.0),
        ];
        let mut r = Rrd::new(5, &specs).unwrap();
        r.update(0.0, &[(g("x"), 0.0)]).unwrap();
        for (t, v) in [(5.0, 1.0), (10.0, 2.0), (15.0, 6.0), (20.0, 4.0)] {
            r.update(t, &[(g("x"), v)]).unwrap();
        }
        r.update(25.0, &[]).unwrap(); // x absent: unknown
        r.update(30.0, &[(g("x"), 5.0)]).unwrap();
        let fine = r.fetch("x", Cf::Average, 1).unwrap();
        assert_rows(
            &fine,
            &[
                (30, 5.0),
                (25, f64::NAN),
                (20, 4.0),
                (15, 6.0),
                (10, 2.0),
                (5, 1.0),
            ],
        );
        assert_rows(
            &r.fetch("x", Cf::Average, 3).unwrap(),
            &[(30, 4.5), (15, 3.0)],
        );
        assert_rows(&r.fetch("x", Cf::Min, 3).unwrap(), &[(30, 4.0), (15, 1.0)]);
        assert_rows(&r.fetch("x", Cf::Max, 3).unwrap(), &[(30, 5.0), (15, 6.0)]);
        assert_rows(&r.fetch("x", Cf::Last, 3).unwrap(), &[(30, 5.0), (15, 6.0)]);
        // xff 0: one unknown PDP makes the row unknown.
        let strict = &r.rras[5];
        assert!(strict.rings[0].peek(0).is_nan());
        assert!(close(strict.rings[0].peek(1), 3.0));
    }

    #[test]
    fn xff_counts_unknown_pdps() {
        // 4 PDPs per row, xff 0.5: 2 unknown still known, 3 unknown is NaN.
        let mut r = Rrd::new(5, &[one(Cf::Average, 4, 3, 0.5)]).unwrap();
        r.update(0.0, &[(g("x"), 0.0)]).unwrap();
        let readings = [
            Some(8.0),
            None,
            None,
            Some(2.0),
            Some(1.0),
            None,
            None,
            None,
        ];
        for (k, v) in readings.iter().enumerate() {
            let samples: Vec<(DsDef, f64)> = v.iter().map(|&v| (g("x"), v)).collect();
            r.update(5.0 * (k + 1) as f64, &samples).unwrap();
        }
        // Row 20: PDPs 8, NaN, NaN, 2 -> 2 unknown <= 2 allowed -> (8 + 2) / 2 = 5.
        // Row 40: PDPs 1, NaN, NaN, NaN -> 3 unknown > 2 -> NaN.
        assert_rows(
            &r.fetch("x", Cf::Average, 4).unwrap(),
            &[(40, f64::NAN), (20, 5.0)],
        );
    }

    #[test]
    fn derive_rates_and_counter_reset() {
        let d = DsDef::counter("vif_0_rx");
        let mut r = Rrd::new(5, &[one(Cf::Average, 1, 10, 0.5)]).unwrap();
        r.update(0.0, &[(d.clone(), 1000.0)]).unwrap();
        r.update(5.0, &[(d.clone(), 1500.0)]).unwrap(); // 100 B/s
        r.update(10.0, &[(d.clone(), 200.0)]).unwrap(); // reset: unknown, not negative
        r.update(15.0, &[(d.clone(), 700.0)]).unwrap(); // 100 B/s from the new base
        r.update(20.0, &[(d.clone(), f64::NAN)]).unwrap(); // unknown reading
        r.update(25.0, &[(d.clone(), 1200.0)]).unwrap(); // no base: unknown
        r.update(30.0, &[(d.clone(), 1700.0)]).unwrap();
        let rows = r.fetch("vif_0_rx", Cf::Average, 1).unwrap();
        assert_rows(
            &rows,
            &[
                (30, 100.0),
                (25, f64::NAN),
                (20, f64::NAN),
                (15, 100.0),
                (10, f64::NAN),
                (5, 100.0),
            ],
        );
        assert!(rows.iter().all(|(_, v)| v.is_nan() || *v >= 0.0));
    }

    #[test]
    fn derive_cpu_fraction_and_bounds() {
        let d = crate::ds::vm::cpu(0);
        let mut r = Rrd::new(5, &[one(Cf::Average, 1, 10, 0.5)]).unwrap();
        r.update(0.0, &[(d.clone(), 10.0)]).unwrap();
        r.update(5.0, &[(d.clone(), 12.5)]).unwrap(); // 0.5
        r.update(10.0, &[(d.clone(), 20.0)]).unwrap(); // 1.5 > max 1: unknown
        let rows = r.fetch("cpu0", Cf::Average, 1).unwrap();
        assert_rows(&rows, &[(10, f64::NAN), (5, 0.5)]);
    }

    #[test]
    fn absolute_is_count_over_interval() {
        let d = DsDef::new("events", DsType::Absolute);
        let mut r = Rrd::new(5, &[one(Cf::Average, 1, 10, 0.5)]).unwrap();
        r.update(0.0, &[(d.clone(), 99.0)]).unwrap();
        r.update(5.0, &[(d.clone(), 50.0)]).unwrap();
        r.update(10.0, &[(d.clone(), 5.0)]).unwrap();
        assert_rows(
            &r.fetch("events", Cf::Average, 1).unwrap(),
            &[(10, 1.0), (5, 10.0)],
        );
    }

    #[test]
    fn gap_beyond_heartbeat_is_unknown_and_bounded() {
        let mut r = Rrd::xapi(true);
        r.update(1_000_000.0, &[(g("x"), 1.0)]).unwrap();
        r.update(1_000_005.0, &[(g("x"), 1.0)]).unwrap();
        // Fifty years later: must not loop over billions of steps.
        let later = 1_000_005.0 + 50.0 * 365.0 * 86400.0;
        let t0 = std::time::Instant::now();
        r.update(later, &[(g("x"), 2.0)]).unwrap();
        assert!(t0.elapsed().as_secs() < 2);
        for spec in r.archives() {
            let rows = r.fetch("x", spec.cf, spec.pdp_per_row).unwrap();
            assert!(rows.iter().all(|(_, v)| v.is_nan()), "{spec:?}");
        }
        r.update(later + 5.0, &[(g("x"), 3.0)]).unwrap();
        assert_eq!(r.latest("x"), Some(3.0));
    }

    #[test]
    fn gap_within_heartbeat_fills_with_the_rate() {
        // 20 s between readings, heartbeat 300: the 4 PDPs all get the gauge value.
        let mut r = Rrd::new(5, &[one(Cf::Average, 1, 10, 0.5)]).unwrap();
        r.update(0.0, &[(g("x"), 0.0)]).unwrap();
        r.update(20.0, &[(g("x"), 7.0)]).unwrap();
        assert_rows(
            &r.fetch("x", Cf::Average, 1).unwrap(),
            &[(20, 7.0), (15, 7.0), (10, 7.0), (5, 7.0), (0, f64::NAN)],
        );
    }

    #[test]
    fn time_backwards_and_bad_input_change_nothing() {
        let mut r = Rrd::xapi(false);
        r.update(100.0, &[(g("x"), 1.0)]).unwrap();
        r.update(105.0, &[(g("x"), 1.0)]).unwrap();
        let before = r.clone();
        assert!(matches!(
            r.update(50.0, &[(g("x"), 1.0)]),
            Err(Error::TimeNotIncreasing { .. })
        ));
        assert!(r.update(105.0, &[(g("x"), 1.0)]).is_err());
        for t in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            assert!(matches!(r.update(t, &[]), Err(Error::BadTimestamp(_))));
        }
        assert!(matches!(
            r.update(110.0, &[(g("x"), 1.0), (g("x"), 2.0)]),
            Err(Error::DuplicateDs(_))
        ));
        assert!(r
            .update(110.0, &[(g("y"), 1.0), (g("bad:name"), 2.0)])
            .is_err());
        // Debug output compares NaN rows as equal, unlike PartialEq.
        assert_eq!(format!("{r:?}"), format!("{before:?}"));
        // Extreme readings are unknown, not a panic.
        r.update(110.0, &[(g("x"), f64::MAX), (g("y"), f64::NEG_INFINITY)])
            .unwrap();
        r.update(115.0, &[(g("x"), f64::MAX), (g("y"), -f64::MAX)])
            .unwrap();
    }

    #[test]
    fn ds_added_later_and_removed() {
        let mut r = Rrd::new(
            5,
            &[one(Cf::Average, 1, 10, 0.5), one(Cf::Average, 2, 5, 0.5)],
        )
        .unwrap();
        r.update(0.0, &[(g("a"), 1.0)]).unwrap();
        r.update(5.0, &[(g("a"), 1.0)]).unwrap();
        r.update(10.0, &[(g("a"), 1.0), (g("b"), 3.0)]).unwrap();
        r.update(15.0, &[(g("a"), 1.0), (g("b"), 5.0)]).unwrap();
        assert_rows(
            &r.fetch("b", Cf::Average, 1).unwrap(),
            &[(15, 5.0), (10, 3.0), (5, f64::NAN)],
        );
        assert_eq!(r.data_sources().count(), 2);
        assert!(r.remove_ds("a"));
        assert!(!r.remove_ds("a"));
        assert_eq!(r.latest("b"), Some(5.0));
        assert_eq!(r.latest("a"), None);
        r.update(20.0, &[(g("b"), 6.0)]).unwrap();
        assert_eq!(r.latest("b"), Some(6.0));
    }

    #[test]
    fn hourly_and_daily_rows_by_hand() {
        // A gauge holding the hour number (0, 1, 2) for three aligned hours, then one
        // reading into hour 3, on XAPI's host layout.
        let mut r = Rrd::xapi(true);
        let t0 = 3600.0 * 24.0 * 20_000.0; // midnight, aligned on every timescale
        r.update(t0, &[(g("x"), 0.0)]).unwrap();
        for k in 1..=(3 * 720 + 1) {
            let t = t0 + 5.0 * f64::from(k);
            // The reading at t is the value over (t - 5, t]: hour of t - 5.
            let hour = ((5.0 * f64::from(k) - 5.0) / 3600.0).floor();
            r.update(t, &[(g("x"), hour)]).unwrap();
        }
        let end = t0 as i64 + 3 * 3600;
        let hourly = r.fetch("x", Cf::Average, 720).unwrap();
        assert_rows(&hourly, &[(end, 2.0), (end - 3600, 1.0), (end - 7200, 0.0)]);
        assert!(hourly[3].1.is_nan());
        assert_rows(
            &r.fetch("x", Cf::Max, 720).unwrap(),
            &[(end, 2.0), (end - 3600, 1.0)],
        );
        let minutes = r.fetch("x", Cf::Average, 12).unwrap();
        assert_rows(&minutes, &[(end, 2.0), (end - 60, 2.0)]);
        assert_eq!(minutes.len(), 120);
        // The day is not over: its row is still being prepared, the archive holds NaN.
        let daily = r.fetch("x", Cf::Average, 17280).unwrap();
        assert!(daily.iter().all(|(_, v)| v.is_nan()));
        let day = &r
            .rras
            .iter()
            .position(|a| a.spec.pdp_per_row == 17280)
            .unwrap();
        let cdp = &r.rras[*day].cdps[0];
        // 720 PDPs each of 0, 1, 2, and one of 3.
        assert_eq!((cdp.known, cdp.unknown), (3 * 720 + 1, 0));
        assert!(close(cdp.sum, 720.0 + 1440.0 + 3.0));
        assert_eq!(r.latest("x"), Some(3.0));
    }

    #[test]
    fn layouts_are_checked() {
        assert!(Rrd::new(0, &[one(Cf::Average, 1, 1, 0.5)]).is_err());
        assert!(Rrd::new(5, &[]).is_err());
        assert!(Rrd::new(5, &[one(Cf::Average, 0, 1, 0.5)]).is_err());
        assert!(Rrd::new(5, &[one(Cf::Average, 1, 0, 0.5)]).is_err());
        assert!(Rrd::new(5, &[one(Cf::Average, 1, 1, 1.5)]).is_err());
        assert!(Rrd::new(5, &[one(Cf::Average, 1, 1, f64::NAN)]).is_err());
        assert!(Rrd::xapi(false).with_heartbeat(-1.0).is_err());
    }
}
