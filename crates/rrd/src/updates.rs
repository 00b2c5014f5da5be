//! `/rrd_updates`: XAPI's export of recent archive rows of many RRDs at once.
//!
//! Reproduces `ocaml/libs/xapi-rrd/lib/rrd_updates.ml` (`create_multi`, `xml_of`,
//! `json_of_t`), `rrd.ml` (`find_best_rras`) and the query handling of
//! `ocaml/xcp-rrdd/bin/rrdd/rrdd_http_handler.ml` (`get_rrd_updates_handler`), xapi-project/
//! xen-api. The XML is what Xmlm prints there: an XML declaration and newline, then the
//! document without whitespace:
//!
//! ```text
//! <?xml version="1.0" encoding="UTF-8"?>
//! <xport><meta><start>S</start><step>P</step><end>E</end><rows>N</rows><columns>C</columns>
//! <legend><entry>AVERAGE:host:UUID:cpu0</entry>...</legend></meta>
//! <data><row><t>T</t><v>0.5</v>...</row>...</data></xport>
//! ```
//!
//! (shown wrapped; it is one line). Rows run newest first; values are printed as `%0.5g`
//! with `NaN`, `Infinity` and `0.0` spelled as XAPI. The JSON form (`json` in the query)
//! has the same content, every number as a string, as xapi-rrd's `Json` module prints it.

use crate::error::{Error, Result};
use crate::fmt::xapi_float;
use crate::rrd::{ArchiveSpec, Cf, Rrd};
use crate::set::{OwnerKind, RrdSet};

/// Which VMs or SRs a query covers (`vm_uuid=all|none|<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every one.
    All,
    /// None.
    None,
    /// Only the one with this UUID.
    One(String),
}

impl Selection {
    fn parse(v: &str) -> Selection {
        match v {
            "all" => Selection::All,
            "none" => Selection::None,
            uuid => Selection::One(uuid.to_string()),
        }
    }

    fn matches(&self, uuid: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::None => false,
            Selection::One(u) => u == uuid,
        }
    }
}

/// A parsed `/rrd_updates` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdatesQuery {
    /// Rows stamped at or after this time (seconds since the epoch); negative values are
    /// relative to the last update.
    pub start: i64,
    /// Wanted seconds between rows; the finest archive at least this coarse that still
    /// holds `start` is used (0: the finest that holds `start`).
    pub interval: u64,
    /// Consolidation function, or every one the chosen timescale has.
    pub cf: Option<Cf>,
    /// Include the host's RRD (`host=true`).
    pub host: bool,
    /// VMs included (default all).
    pub vm: Selection,
    /// SRs included (default none).
    pub sr: Selection,
    /// JSON instead of XML.
    pub json: bool,
}

impl UpdatesQuery {
    /// A query for everything since `start` with XAPI's defaults: all CFs, finest
    /// interval, no host, all VMs, no SRs, XML.
    pub fn new(start: i64) -> UpdatesQuery {
        UpdatesQuery {
            start,
            interval: 0,
            cf: None,
            host: false,
            vm: Selection::All,
            sr: Selection::None,
            json: false,
        }
    }

    /// Parses URL query parameters (already percent-decoded) as xcp-rrdd does: `start`
    /// is required; a missing or unparsable `interval` is 0; `cf` other than `AVERAGE`,
    /// `MIN`, `MAX`, `LAST` means all; `host` must be `true`; `vm_uuid` and `sr_uuid`
    /// take `all`, `none` or a UUID; the mere presence of `json` selects JSON. Unknown
    /// parameters (`session_id`...) are ignored; the last of repeated ones wins.
    pub fn from_query<'a, I>(pairs: I) -> Result<UpdatesQuery>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut q = UpdatesQuery::new(0);
        let mut start = None;
        for (k, v) in pairs {
            match k {
                "start" => {
                    start = Some(v.trim().parse::<i64>().map_err(|_| Error::BadQuery {
                        name: "start",
                        value: v.chars().take(64).collect(),
                    })?)
                }
                "interval" => q.interval = v.trim().parse().unwrap_or(0),
                "cf" => q.cf = Cf::parse(v),
                "host" => q.host = v == "true",
                "vm_uuid" => q.vm = Selection::parse(v),
                "sr_uuid" => q.sr = Selection::parse(v),
                "json" => q.json = true,
                _ => {}
            }
        }
        q.start = start.ok_or(Error::BadQuery {
            name: "start",
            value: String::new(),
        })?;
        Ok(q)
    }
}

/// The content of an export, before printing.
#[derive(Clone, Debug, PartialEq)]
pub struct Updates {
    /// First row time XAPI reports (the step after `start`, rounded down to a step).
    pub start: i64,
    /// Seconds between rows.
    pub step: i64,
    /// Time of the newest row.
    pub end: i64,
    /// Column names, `CF:kind:uuid:ds`.
    pub legend: Vec<String>,
    /// Rows, newest first: time and one value per column.
    pub rows: Vec<(i64, Vec<f64>)>,
}

impl RrdSet {
    /// Answers a `/rrd_updates` query: the XML (or JSON) document XAPI would send.
    /// Errors with [`Error::NoRraAvailable`] when nothing matches, as XAPI.
    pub fn export(&self, q: &UpdatesQuery) -> Result<String> {
        let u = self.updates(q)?;
        Ok(if q.json { u.to_json() } else { u.to_xml() })
    }

    /// The rows a query selects, unprinted.
    pub fn updates(&self, q: &UpdatesQuery) -> Result<Updates> {
        let selected: Vec<(String, &Rrd)> = self
            .rrds
            .iter()
            .filter(|(o, _)| match o.kind {
                OwnerKind::Host => q.host,
                OwnerKind::Vm => q.vm.matches(&o.uuid),
                OwnerKind::Sr => q.sr.matches(&o.uuid),
            })
            .map(|(o, r)| (format!("{}:{}:", o.kind.as_str(), o.uuid), r))
            .collect();
        create_multi(&selected, q.start, q.interval, q.cf)
    }
}

/// xapi-rrd's `find_best_rras`, reduced to the chosen timescale (pdp_per_row, rows).
fn best_timescale(
    rrd: &Rrd,
    lu: f64,
    pdp_interval: u64,
    cf: Option<Cf>,
    start: i64,
) -> Option<(u32, u32)> {
    let rras: Vec<ArchiveSpec> = rrd
        .archives()
        .into_iter()
        .filter(|a| cf.is_none_or(|c| a.cf == c))
        .collect();
    let step = i64::try_from(rrd.step()).ok()?;
    let last_pdp_time = (lu as i64 / step) * step;
    let oldest = |a: &ArchiveSpec| {
        last_pdp_time.saturating_sub(
            step.saturating_mul(i64::from(a.rows))
                .saturating_mul(i64::from(a.pdp_per_row)),
        )
    };
    let contains =
        |t: i64, a: &ArchiveSpec| u64::from(a.pdp_per_row) >= pdp_interval && t > oldest(a);
    let chosen = match rras.iter().find(|a| contains(start, a)) {
        Some(a) => Some(a),
        None => {
            let last = rras.last()?;
            let newstart = oldest(last).saturating_add(1);
            rras.iter().find(|a| contains(newstart, a))
        }
    }?;
    Some((chosen.pdp_per_row, chosen.rows))
}

/// xapi-rrd's `Rrd_updates.create_multi`: `prefixed` in output order, each with its legend
/// prefix (`vm:<uuid>:`).
fn create_multi(
    prefixed: &[(String, &Rrd)],
    start: i64,
    interval: u64,
    cf: Option<Cf>,
) -> Result<Updates> {
    // The first RRD with data sets the step; the others must share it.
    let step = prefixed
        .iter()
        .find(|(_, r)| r.last_updated().is_some())
        .map(|(_, r)| r.step())
        .ok_or(Error::NoRraAvailable)?;
    let prefixed: Vec<&(String, &Rrd)> =
        prefixed.iter().filter(|(_, r)| r.step() == step).collect();

    let start = if start < 0 {
        prefixed
            .iter()
            .filter_map(|(_, r)| r.last_updated())
            .map(|lu| start.saturating_add(lu as i64))
            .min()
            .unwrap_or(start)
    } else {
        start
    };
    let pdp_interval = interval / step;
    // As xapi-rrd: the first RRD having a fitting archive chooses the timescale, and its
    // last update sets the row times.
    let (lu, (pdp_per_row, rows)) = prefixed
        .iter()
        .find_map(|(_, r)| {
            let lu = r.last_updated()?;
            Some((lu, best_timescale(r, lu, pdp_interval, cf, start)?))
        })
        .ok_or(Error::NoRraAvailable)?;
    let rra_step = i64::try_from(step.saturating_mul(u64::from(pdp_per_row)))
        .map_err(|_| Error::NoRraAvailable)?;

    // Columns: per RRD, per matching archive, per data source.
    let mut legend = Vec::new();
    let mut columns: Vec<(&Rrd, usize, usize)> = Vec::new();
    for (prefix, rrd) in &prefixed {
        for (ai, rra) in rrd.rras.iter().enumerate() {
            let s = rra.spec;
            if s.pdp_per_row != pdp_per_row || s.rows != rows || cf.is_some_and(|c| c != s.cf) {
                continue;
            }
            for (di, ds) in rrd.dss.iter().enumerate() {
                legend.push(format!("{}:{}{}", s.cf.as_str(), prefix, ds.def.name));
                columns.push((rrd, ai, di));
            }
        }
    }

    let last_cdp_time = (lu as i64 / rra_step) * rra_step;
    let first_cdp_time = (start / rra_step)
        .saturating_mul(rra_step)
        .saturating_add(rra_step);
    let mut data = Vec::new();
    for i in 0..i64::from(rows) {
        let time = last_cdp_time - i * rra_step;
        if time < start {
            break;
        }
        let values = columns
            .iter()
            .map(|&(rrd, ai, di)| {
                // Each RRD is read at its own time, so one updated late stays aligned.
                let Some(own_last) = rrd.last_cdp_time(pdp_per_row) else {
                    return f64::NAN;
                };
                let back = own_last - time;
                if back < 0 || back % rra_step != 0 {
                    return f64::NAN;
                }
                rrd.rras[ai].rings[di].peek((back / rra_step) as u64)
            })
            .collect();
        data.push((time, values));
    }
    Ok(Updates {
        start: first_cdp_time,
        step: rra_step,
        end: last_cdp_time,
        legend,
        rows: data,
    })
}

fn xml_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Updates {
    /// The XML document, byte for byte as xapi-rrd's `xml_of` through Xmlm.
    pub fn to_xml(&self) -> String {
        let mut o = String::with_capacity(256 + self.rows.len() * (16 + self.legend.len() * 12));
        o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xport><meta>");
        o.push_str(&format!(
            "<start>{}</start><step>{}</step><end>{}</end><rows>{}</rows><columns>{}</columns>",
            self.start,
            self.step,
            self.end,
            self.rows.len(),
            self.legend.len()
        ));
        if self.legend.is_empty() {
            o.push_str("<legend/>");
        } else {
            o.push_str("<legend>");
            for e in &self.legend {
                o.push_str("<entry>");
                xml_escape(e, &mut o);
                o.push_str("</entry>");
            }
            o.push_str("</legend>");
        }
        o.push_str("</meta>");
        if self.rows.is_empty() {
            o.push_str("<data/>");
        } else {
            o.push_str("<data>");
            for (t, vs) in &self.rows {
                o.push_str(&format!("<row><t>{t}</t>"));
                for v in vs {
                    o.push_str("<v>");
                    o.push_str(&xapi_float(*v));
                    o.push_str("</v>");
                }
                o.push_str("</row>");
            }
            o.push_str("</data>");
        }
        o.push_str("</xport>");
        o
    }

    /// The JSON document, as xapi-rrd's `json_of_t` through `Yojson.to_string`.
    pub fn to_json(&self) -> String {
        let mut o = String::with_capacity(256 + self.rows.len() * (16 + self.legend.len() * 12));
        o.push_str(&format!(
            "{{\"meta\":{{\"start\":\"{}\",\"step\":\"{}\",\"end\":\"{}\",\"rows\":\"{}\",\"columns\":\"{}\",\"legend\":[",
            self.start,
            self.step,
            self.end,
            self.rows.len(),
            self.legend.len()
        ));
        for (i, e) in self.legend.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            json_string(e, &mut o);
        }
        o.push_str("]},\"data\":[");
        for (i, (t, vs)) in self.rows.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str(&format!("{{\"t\":\"{t}\",\"values\":["));
            for (j, v) in vs.iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                json_string(&xapi_float(*v), &mut o);
            }
            o.push_str("]}");
        }
        o.push_str("]}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::{host, vm};
    use crate::set::Owner;

    const H: &str = "0c2e8b1a-0000-4000-8000-000000000001";
    const V: &str = "6f1b4e2c-0000-4000-8000-000000000002";

    /// Host with loadavg, VM with memory and cpu0, sampled at 1000, 1005, 1010.
    fn small_set() -> RrdSet {
        let mut s = RrdSet::new();
        let h = Owner::host(H);
        let v = Owner::vm(V);
        for (k, t) in [1000.0, 1005.0, 1010.0].into_iter().enumerate() {
            let k = k as f64;
            s.update(&h, t, &[(host::loadavg(), 0.25 * (k + 1.0))])
                .unwrap();
            s.update(
                &v,
                t,
                &[(vm::memory(), 1073741824.0), (vm::cpu(0), 2.5 * k)],
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn xml_exactly_as_xapi() {
        let s = small_set();
        let mut q = UpdatesQuery::new(1000);
        q.host = true;
        q.cf = Some(Cf::Average);
        let xml = s.export(&q).unwrap();
        let want = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<xport><meta><start>1005</start>\
             <step>5</step><end>1010</end><rows>3</rows><columns>3</columns><legend>\
             <entry>AVERAGE:host:{H}:loadavg</entry><entry>AVERAGE:vm:{V}:memory</entry>\
             <entry>AVERAGE:vm:{V}:cpu0</entry></legend></meta><data>\
             <row><t>1010</t><v>0.75</v><v>1.0737e+09</v><v>0.5</v></row>\
             <row><t>1005</t><v>0.5</v><v>1.0737e+09</v><v>0.5</v></row>\
             <row><t>1000</t><v>NaN</v><v>NaN</v><v>NaN</v></row></data></xport>"
        );
        assert_eq!(xml, want);
    }

    #[test]
    fn json_exactly_as_xapi() {
        let s = small_set();
        let mut q = UpdatesQuery::new(1005);
        q.vm = Selection::One(V.into());
        q.cf = Some(Cf::Average);
        q.json = true;
        let json = s.export(&q).unwrap();
        let want = format!(
            "{{\"meta\":{{\"start\":\"1010\",\"step\":\"5\",\"end\":\"1010\",\"rows\":\"2\",\
             \"columns\":\"2\",\"legend\":[\"AVERAGE:vm:{V}:memory\",\"AVERAGE:vm:{V}:cpu0\"]}},\
             \"data\":[{{\"t\":\"1010\",\"values\":[\"1.0737e+09\",\"0.5\"]}},\
             {{\"t\":\"1005\",\"values\":[\"1.0737e+09\",\"0.5\"]}}]}}"
        );
        assert_eq!(json, want);
    }

    /// A tiny parser for the xport document: (meta fields, legend, rows).
    type Parsed = (Vec<(String, String)>, Vec<String>, Vec<Vec<String>>);

    fn parse_xport(xml: &str) -> Parsed {
        fn inner<'a>(s: &'a str, tag: &str) -> Vec<&'a str> {
            let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
            let mut out = Vec::new();
            let mut rest = s;
            while let Some(i) = rest.find(&open) {
                let after = &rest[i + open.len()..];
                let j = after.find(&close).expect("unclosed");
                out.push(&after[..j]);
                rest = &after[j + close.len()..];
            }
            out
        }
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("declaration");
        let xport = inner(body, "xport")[0];
        let meta = inner(xport, "meta")[0];
        let fields = ["start", "step", "end", "rows", "columns"]
            .iter()
            .map(|f| (f.to_string(), inner(meta, f)[0].to_string()))
            .collect();
        let legend = inner(meta, "entry").iter().map(|s| s.to_string()).collect();
        let data = inner(xport, "data").first().copied().unwrap_or("");
        let rows = inner(data, "row")
            .iter()
            .map(|r| {
                let mut v = vec![inner(r, "t")[0].to_string()];
                v.extend(inner(r, "v").iter().map(|s| s.to_string()));
                v
            })
            .collect();
        (fields, legend, rows)
    }

    #[test]
    fn interval_picks_the_archive_and_all_cfs_of_it() {
        // A host sampled every 5 s for 3 hours: 5 s rows cover 10 min, 1 min rows 2 h.
        let mut s = RrdSet::new();
        let h = Owner::host(H);
        let t0 = 1_700_000_000.0;
        for k in 0..(3 * 720) {
            let t = t0 + 5.0 * k as f64;
            s.update(&h, t, &[(host::loadavg(), (k % 12) as f64)])
                .unwrap();
        }
        let now = t0 + 5.0 * (3 * 720 - 1) as f64;
        let mut q = UpdatesQuery::new(now as i64 - 300);
        q.host = true;
        q.vm = Selection::None;
        let (meta, legend, rows) = parse_xport(&s.export(&q).unwrap());
        assert_eq!(meta[1], ("step".into(), "5".into()));
        assert_eq!(legend, vec![format!("AVERAGE:host:{H}:loadavg")]);
        assert_eq!(rows.len(), 61);
        // interval=60: the 1-minute timescale, with AVERAGE, MIN and MAX (host).
        q.interval = 60;
        let (meta, legend, rows) = parse_xport(&s.export(&q).unwrap());
        assert_eq!(meta[1].1, "60");
        assert_eq!(
            legend,
            ["AVERAGE", "MIN", "MAX"].map(|cf| format!("{cf}:host:{H}:loadavg"))
        );
        // Each minute holds readings 0..11 (shifted by one PDP): mean 5.5, min 0, max 11.
        let full = &rows[1];
        assert_eq!(&full[1..], &["5.5", "0.0", "11"]);
        // Rows at or after start: the newest minute ends 15 s before `now` here.
        assert_eq!(rows.len(), 5);
        // A start older than the 1-minute archive falls to the hourly one.
        q.start = now as i64 - 3 * 3600;
        q.interval = 0;
        let (meta, _, _) = parse_xport(&s.export(&q).unwrap());
        assert_eq!(meta[1].1, "3600");
        // cf=MIN alone.
        q.cf = Some(Cf::Min);
        q.interval = 60;
        q.start = now as i64 - 600;
        let (_, legend, _) = parse_xport(&s.export(&q).unwrap());
        assert_eq!(legend, vec![format!("MIN:host:{H}:loadavg")]);
    }

    #[test]
    fn negative_start_is_relative_and_nothing_is_an_error() {
        let s = small_set();
        let mut q = UpdatesQuery::new(-5);
        q.cf = Some(Cf::Average);
        let (meta, _, rows) = parse_xport(&s.export(&q).unwrap());
        assert_eq!(meta[0].1, "1010");
        assert_eq!(rows.len(), 2);
        let mut q = UpdatesQuery::new(0);
        q.vm = Selection::None;
        assert!(matches!(s.export(&q), Err(Error::NoRraAvailable)));
        q.host = true;
        q.cf = Some(Cf::Last);
        assert!(matches!(s.export(&q), Err(Error::NoRraAvailable)));
        assert!(RrdSet::new().export(&UpdatesQuery::new(0)).is_err());
        // A start in the future: no rows, still a document.
        let mut q = UpdatesQuery::new(5000);
        q.cf = Some(Cf::Average);
        assert!(s.export(&q).unwrap().contains("<rows>0</rows>"));
        assert!(s.export(&q).unwrap().contains("<data/>"));
        for start in [i64::MIN, i64::MAX, -1] {
            let mut q = UpdatesQuery::new(start);
            q.host = true;
            q.interval = u64::MAX;
            let _ = s.export(&q);
        }
    }

    #[test]
    fn first_rrd_with_the_cf_chooses() {
        // VM "a" has AVERAGE only, VM "b" also MIN: cf=MIN exports b alone.
        let mut s = RrdSet::new();
        s.update(&Owner::vm("a"), 1000.0, &[]).unwrap();
        s.insert(Owner::vm("b"), crate::Rrd::xapi(true)).unwrap();
        for t in [1000.0, 1005.0, 1010.0] {
            s.update(&Owner::vm("a"), t + 60.0, &[(vm::memory(), 1.0)])
                .unwrap();
            s.update(&Owner::vm("b"), t, &[(vm::memory(), 2.0)])
                .unwrap();
        }
        let mut q = UpdatesQuery::new(0);
        q.cf = Some(Cf::Min);
        q.interval = 60;
        let (_, legend, _) = parse_xport(&s.export(&q).unwrap());
        assert_eq!(legend, vec!["MIN:vm:b:memory".to_string()]);
    }

    #[test]
    fn query_parsing_as_xcp_rrdd() {
        let q = UpdatesQuery::from_query([
            ("session_id", "OpaqueRef:x"),
            ("start", "1234"),
            ("cf", "AVERAGE"),
            ("interval", "60"),
            ("host", "true"),
            ("json", "true"),
        ])
        .unwrap();
        assert_eq!(
            q,
            UpdatesQuery {
                start: 1234,
                interval: 60,
                cf: Some(Cf::Average),
                host: true,
                vm: Selection::All,
                sr: Selection::None,
                json: true,
            }
        );
        let q = UpdatesQuery::from_query([
            ("start", "-60"),
            ("cf", "ave"),
            ("interval", "x"),
            ("host", "yes"),
            ("vm_uuid", V),
            ("sr_uuid", "all"),
        ])
        .unwrap();
        assert_eq!((q.start, q.cf, q.interval, q.host), (-60, None, 0, false));
        assert_eq!(q.vm, Selection::One(V.into()));
        assert_eq!(q.sr, Selection::All);
        assert!(UpdatesQuery::from_query([("host", "true")]).is_err());
        assert!(UpdatesQuery::from_query([("start", "soon")]).is_err());
    }

    #[test]
    fn escaping() {
        let mut o = String::new();
        xml_escape("a<b>&\"c", &mut o);
        assert_eq!(o, "a&lt;b&gt;&amp;&quot;c");
        let mut o = String::new();
        json_string("a\"b\\c\n\u{1}", &mut o);
        assert_eq!(o, "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
