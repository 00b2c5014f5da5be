//! Prometheus text exposition (format 0.0.4) of the latest values.
//!
//! Each RRD contributes the newest completed 5-second value of each data source (see
//! [`crate::Rrd::latest`]); unknown values are left out. XAPI's data sources are renamed
//! after Prometheus conventions (`fv_` namespace, base units, unit suffix; an index or
//! device becomes a label), all as gauges labelled with the owner's `uuid`:
//!
//! | XAPI data source            | metric                                          |
//! |-----------------------------|-------------------------------------------------|
//! | VM `cpu<N>`                 | `fv_vm_cpu_usage_ratio{uuid,cpu="N"}`           |
//! | VM `cpu_usage`              | `fv_vm_domain_cpu_usage_ratio{uuid}`            |
//! | VM `memory`                 | `fv_vm_memory_bytes{uuid}`                      |
//! | VM `memory_target`          | `fv_vm_memory_target_bytes{uuid}`               |
//! | VM `memory_internal_free`   | `fv_vm_memory_internal_free_bytes{uuid}` (KiB × 1024) |
//! | VM `vbd_<dev>_read`/`_write`| `fv_vm_vbd_{read,write}_bytes_per_second{uuid,device}` |
//! | VM `vif_<n>_rx`/`_tx`       | `fv_vm_vif_{rx,tx}_bytes_per_second{uuid,vif}`  |
//! | host `cpu<N>`               | `fv_host_cpu_usage_ratio{uuid,cpu="N"}`         |
//! | host `cpu_avg`              | `fv_host_cpu_avg_usage_ratio{uuid}`             |
//! | host `memory_total_kib`     | `fv_host_memory_total_bytes{uuid}` (× 1024)     |
//! | host `memory_free_kib`      | `fv_host_memory_free_bytes{uuid}` (× 1024)      |
//! | host `loadavg`              | `fv_host_load_average{uuid}`                    |
//! | host `pif_aggr_rx`/`_tx`    | `fv_host_pif_aggr_{rx,tx}_bytes_per_second{uuid}` |
//! | host `pif_<dev>_rx`/`_tx`   | `fv_host_pif_{rx,tx}_bytes_per_second{uuid,pif}` |
//! | anything else               | `fv_<host|vm|sr>_ds_<name>{uuid}` (`-`, `.` → `_`) |
//!
//! and `fv_rrd_last_update_timestamp_seconds{kind,uuid}` per RRD.

use std::collections::BTreeMap;

use crate::fmt::prom_float;
use crate::set::{OwnerKind, RrdSet};

/// One mapped sample: family, help, extra label, scale.
struct Mapped {
    family: String,
    help: &'static str,
    label: Option<(&'static str, String)>,
    scale: f64,
}

fn simple(family: &str, help: &'static str, scale: f64) -> Option<Mapped> {
    Some(Mapped {
        family: family.to_string(),
        help,
        label: None,
        scale,
    })
}

fn labelled(family: &str, help: &'static str, label: &'static str, value: &str) -> Option<Mapped> {
    Some(Mapped {
        family: family.to_string(),
        help,
        label: Some((label, value.to_string())),
        scale: 1.0,
    })
}

/// `prefix<digits>` → the digits.
fn indexed<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

/// `pre<middle>suf` → middle (non-empty).
fn between<'a>(name: &'a str, pre: &str, suf: &str) -> Option<&'a str> {
    let mid = name.strip_prefix(pre)?.strip_suffix(suf)?;
    (!mid.is_empty()).then_some(mid)
}

fn map_vm(name: &str) -> Option<Mapped> {
    match name {
        "cpu_usage" => simple(
            "fv_vm_domain_cpu_usage_ratio",
            "CPU used by the whole VM, as a fraction of its vCPUs (XAPI cpu_usage).",
            1.0,
        ),
        "memory" => simple(
            "fv_vm_memory_bytes",
            "Memory allocated to the VM (XAPI memory).",
            1.0,
        ),
        "memory_target" => simple(
            "fv_vm_memory_target_bytes",
            "Balloon target of the VM (XAPI memory_target).",
            1.0,
        ),
        "memory_internal_free" => simple(
            "fv_vm_memory_internal_free_bytes",
            "Free memory reported by the guest (XAPI memory_internal_free, KiB there).",
            1024.0,
        ),
        _ => {
            if let Some(n) = indexed(name, "cpu") {
                return labelled(
                    "fv_vm_cpu_usage_ratio",
                    "vCPU usage as a fraction of one physical CPU (XAPI cpu<N>).",
                    "cpu",
                    n,
                );
            }
            if let Some(d) = between(name, "vbd_", "_read") {
                return labelled(
                    "fv_vm_vbd_read_bytes_per_second",
                    "Bytes per second read from the virtual disk (XAPI vbd_<device>_read).",
                    "device",
                    d,
                );
            }
            if let Some(d) = between(name, "vbd_", "_write") {
                return labelled(
                    "fv_vm_vbd_write_bytes_per_second",
                    "Bytes per second written to the virtual disk (XAPI vbd_<device>_write).",
                    "device",
                    d,
                );
            }
            if let Some(n) =
                between(name, "vif_", "_rx").filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                return labelled(
                    "fv_vm_vif_rx_bytes_per_second",
                    "Bytes per second received by the VM on the virtual NIC (XAPI vif_<n>_rx).",
                    "vif",
                    n,
                );
            }
            if let Some(n) =
                between(name, "vif_", "_tx").filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            {
                return labelled(
                    "fv_vm_vif_tx_bytes_per_second",
                    "Bytes per second sent by the VM on the virtual NIC (XAPI vif_<n>_tx).",
                    "vif",
                    n,
                );
            }
            None
        }
    }
}

fn map_host(name: &str) -> Option<Mapped> {
    match name {
        "cpu_avg" => simple(
            "fv_host_cpu_avg_usage_ratio",
            "Mean usage of the physical CPUs (XAPI cpu_avg).",
            1.0,
        ),
        "memory_total_kib" => simple(
            "fv_host_memory_total_bytes",
            "Host memory (XAPI memory_total_kib, KiB there).",
            1024.0,
        ),
        "memory_free_kib" => simple(
            "fv_host_memory_free_bytes",
            "Free host memory (XAPI memory_free_kib, KiB there).",
            1024.0,
        ),
        "loadavg" => simple(
            "fv_host_load_average",
            "Load average of the host (XAPI loadavg).",
            1.0,
        ),
        "pif_aggr_rx" => simple(
            "fv_host_pif_aggr_rx_bytes_per_second",
            "Bytes per second received on all physical interfaces (XAPI pif_aggr_rx).",
            1.0,
        ),
        "pif_aggr_tx" => simple(
            "fv_host_pif_aggr_tx_bytes_per_second",
            "Bytes per second sent on all physical interfaces (XAPI pif_aggr_tx).",
            1.0,
        ),
        _ => {
            if let Some(n) = indexed(name, "cpu") {
                return labelled(
                    "fv_host_cpu_usage_ratio",
                    "Physical CPU usage as a fraction (XAPI cpu<N>).",
                    "cpu",
                    n,
                );
            }
            if let Some(d) = between(name, "pif_", "_rx") {
                return labelled(
                    "fv_host_pif_rx_bytes_per_second",
                    "Bytes per second received on the physical interface (XAPI pif_<dev>_rx).",
                    "pif",
                    d,
                );
            }
            if let Some(d) = between(name, "pif_", "_tx") {
                return labelled(
                    "fv_host_pif_tx_bytes_per_second",
                    "Bytes per second sent on the physical interface (XAPI pif_<dev>_tx).",
                    "pif",
                    d,
                );
            }
            None
        }
    }
}

fn map(kind: OwnerKind, name: &str) -> Mapped {
    let m = match kind {
        OwnerKind::Vm => map_vm(name),
        OwnerKind::Host => map_host(name),
        OwnerKind::Sr => None,
    };
    m.unwrap_or_else(|| Mapped {
        family: format!("fv_{}_ds_{}", kind.as_str(), sanitize(name)),
        help: "XAPI data source without a dedicated metric name.",
        label: None,
        scale: 1.0,
    })
}

/// Makes `name` fit `[a-zA-Z0-9_:]`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes HELP text: backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

struct Family {
    help: &'static str,
    samples: Vec<String>,
}

impl RrdSet {
    /// The latest value of every data source of every RRD in Prometheus' text format,
    /// families sorted by name, each with `# HELP` and `# TYPE` lines.
    pub fn prometheus(&self) -> String {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut add = |family: String, help: &'static str, sample: String| {
            families
                .entry(family)
                .or_insert_with(|| Family {
                    help,
                    samples: Vec::new(),
                })
                .samples
                .push(sample);
        };
        for (owner, rrd) in self.iter() {
            let uuid = escape_label_value(&owner.uuid);
            if let Some(lu) = rrd.last_updated() {
                add(
                    "fv_rrd_last_update_timestamp_seconds".to_string(),
                    "Time of the last sample recorded for the owner, seconds since the epoch.",
                    format!(
                        "fv_rrd_last_update_timestamp_seconds{{kind=\"{}\",uuid=\"{uuid}\"}} {}",
                        owner.kind.as_str(),
                        prom_float(lu)
                    ),
                );
            }
            for def in rrd.data_sources() {
                let Some(v) = rrd.latest(&def.name).filter(|v| !v.is_nan()) else {
                    continue;
                };
                let m = map(owner.kind, &def.name);
                let labels = match &m.label {
                    Some((k, val)) => {
                        format!("uuid=\"{uuid}\",{k}=\"{}\"", escape_label_value(val))
                    }
                    None => format!("uuid=\"{uuid}\""),
                };
                let sample = format!("{}{{{labels}}} {}", m.family, prom_float(v * m.scale));
                add(m.family, m.help, sample);
            }
        }
        let mut out = String::new();
        for (name, f) in families {
            out.push_str(&format!(
                "# HELP {name} {}\n# TYPE {name} gauge\n",
                escape_help(f.help)
            ));
            for s in f.samples {
                out.push_str(&s);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::{host, vm, DsDef};
    use crate::set::Owner;

    #[test]
    fn exposition_of_a_small_set() {
        let mut s = RrdSet::new();
        let h = Owner::host("h1");
        let v = Owner::vm("v1");
        for (k, t) in [100.0, 105.0].into_iter().enumerate() {
            let k = k as f64;
            s.update(
                &h,
                t,
                &[(host::memory_free_kib(), 2048.0), (host::cpu(1), 4.0 * k)],
            )
            .unwrap();
            s.update(
                &v,
                t,
                &[
                    (vm::cpu(0), 2.5 * k),
                    (vm::memory_internal_free(), 1.0),
                    (vm::vbd_read("xvda"), 1000.0 * k),
                    (vm::vif_tx(0), 0.0),
                    (DsDef::gauge("odd-name.x"), 3.0),
                ],
            )
            .unwrap();
        }
        let text = s.prometheus();
        let want = "\
# HELP fv_host_cpu_usage_ratio Physical CPU usage as a fraction (XAPI cpu<N>).
# TYPE fv_host_cpu_usage_ratio gauge
fv_host_cpu_usage_ratio{uuid=\"h1\",cpu=\"1\"} 0.8
# HELP fv_host_memory_free_bytes Free host memory (XAPI memory_free_kib, KiB there).
# TYPE fv_host_memory_free_bytes gauge
fv_host_memory_free_bytes{uuid=\"h1\"} 2097152
# HELP fv_rrd_last_update_timestamp_seconds Time of the last sample recorded for the owner, seconds since the epoch.
# TYPE fv_rrd_last_update_timestamp_seconds gauge
fv_rrd_last_update_timestamp_seconds{kind=\"host\",uuid=\"h1\"} 105
fv_rrd_last_update_timestamp_seconds{kind=\"vm\",uuid=\"v1\"} 105
# HELP fv_vm_cpu_usage_ratio vCPU usage as a fraction of one physical CPU (XAPI cpu<N>).
# TYPE fv_vm_cpu_usage_ratio gauge
fv_vm_cpu_usage_ratio{uuid=\"v1\",cpu=\"0\"} 0.5
# HELP fv_vm_ds_odd_name_x XAPI data source without a dedicated metric name.
# TYPE fv_vm_ds_odd_name_x gauge
fv_vm_ds_odd_name_x{uuid=\"v1\"} 3
# HELP fv_vm_memory_internal_free_bytes Free memory reported by the guest (XAPI memory_internal_free, KiB there).
# TYPE fv_vm_memory_internal_free_bytes gauge
fv_vm_memory_internal_free_bytes{uuid=\"v1\"} 1024
# HELP fv_vm_vbd_read_bytes_per_second Bytes per second read from the virtual disk (XAPI vbd_<device>_read).
# TYPE fv_vm_vbd_read_bytes_per_second gauge
fv_vm_vbd_read_bytes_per_second{uuid=\"v1\",device=\"xvda\"} 200
# HELP fv_vm_vif_tx_bytes_per_second Bytes per second sent by the VM on the virtual NIC (XAPI vif_<n>_tx).
# TYPE fv_vm_vif_tx_bytes_per_second gauge
fv_vm_vif_tx_bytes_per_second{uuid=\"v1\",vif=\"0\"} 0
";
        assert_eq!(text, want);
    }

    #[test]
    fn names_and_escaping() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(
            map(OwnerKind::Host, "pif_eth0_rx").family,
            "fv_host_pif_rx_bytes_per_second"
        );
        assert_eq!(
            map(OwnerKind::Host, "pif_aggr_tx").family,
            "fv_host_pif_aggr_tx_bytes_per_second"
        );
        assert_eq!(map(OwnerKind::Vm, "cpux").family, "fv_vm_ds_cpux");
        assert_eq!(map(OwnerKind::Vm, "vif_a_rx").family, "fv_vm_ds_vif_a_rx");
        assert_eq!(map(OwnerKind::Sr, "cpu0").family, "fv_sr_ds_cpu0");
        assert_eq!(RrdSet::new().prometheus(), "");
    }
}
