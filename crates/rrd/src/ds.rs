//! Data sources: what is measured, how a raw reading becomes a rate, and the names XAPI
//! gives the figures of VMs and hosts.
//!
//! Names and types follow xcp-rrdd (`ocaml/xcp-rrdd/bin/rrdp-cpu/rrdp_cpu.ml`,
//! `rrdp-netdev/rrdp_netdev.ml`, `rrdp-iostat`, `xcp_rrdd.ml` in xapi-project/xen-api), so
//! that XenCenter, `xe vm-data-source-list` users and scripts find the names they expect.

use crate::error::{Error, Result};

/// Longest data-source name accepted.
pub const MAX_DS_NAME: usize = 128;

/// How a raw reading becomes the rate stored in the archives (rrdtool's DS types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DsType {
    /// The reading is the value itself (memory in bytes, load average).
    Gauge,
    /// The reading counts events since the previous reading; stored as count / interval.
    Absolute,
    /// The reading is an ever-growing counter (CPU seconds, bytes); stored as its rate of
    /// change. A counter that goes down (reset, wrap, VM restart) gives an unknown (NaN)
    /// interval, never a negative spike.
    Derive,
}

impl DsType {
    /// The rrdtool/XAPI spelling: `GAUGE`, `ABSOLUTE`, `DERIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            DsType::Gauge => "GAUGE",
            DsType::Absolute => "ABSOLUTE",
            DsType::Derive => "DERIVE",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            DsType::Gauge => 0,
            DsType::Absolute => 1,
            DsType::Derive => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<DsType> {
        match c {
            0 => Some(DsType::Gauge),
            1 => Some(DsType::Absolute),
            2 => Some(DsType::Derive),
            _ => None,
        }
    }
}

/// The definition of a data source. A rate outside `[min, max]` is stored as unknown
/// (NaN), as rrdtool and XAPI do.
#[derive(Clone, Debug, PartialEq)]
pub struct DsDef {
    /// Name, e.g. `cpu0`, `vbd_xvda_read`.
    pub name: String,
    /// How readings become rates.
    pub ty: DsType,
    /// Smallest valid rate.
    pub min: f64,
    /// Largest valid rate.
    pub max: f64,
}

impl DsDef {
    /// A data source with no bounds.
    pub fn new(name: impl Into<String>, ty: DsType) -> DsDef {
        DsDef {
            name: name.into(),
            ty,
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
        }
    }

    /// The same with bounds `[min, max]`.
    pub fn bounded(mut self, min: f64, max: f64) -> DsDef {
        self.min = min;
        self.max = max;
        self
    }

    /// A gauge that cannot be negative.
    pub fn gauge(name: impl Into<String>) -> DsDef {
        DsDef::new(name, DsType::Gauge).bounded(0.0, f64::INFINITY)
    }

    /// A counter whose rate cannot be negative.
    pub fn counter(name: impl Into<String>) -> DsDef {
        DsDef::new(name, DsType::Derive).bounded(0.0, f64::INFINITY)
    }

    /// A counter of seconds busy, whose rate is a fraction in [0, 1].
    pub fn fraction_counter(name: impl Into<String>) -> DsDef {
        DsDef::new(name, DsType::Derive).bounded(0.0, 1.0)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.min.is_nan() || self.max.is_nan() || self.min > self.max {
            return Err(Error::BadDsName {
                name: self.name.clone(),
                reason: "bounds are NaN or min > max",
            });
        }
        Ok(())
    }
}

/// Checks a data-source name: 1 to [`MAX_DS_NAME`] bytes of `[0-9A-Za-z_.-]` (XAPI's
/// legend separates fields with `:`; Prometheus and XML need no escaping then).
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_DS_NAME {
        Some("longer than 128 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Some("only [0-9A-Za-z_.-] allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::BadDsName {
            name: name.chars().take(MAX_DS_NAME).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The data sources XAPI records for a VM. Feed each the reading named in its doc.
pub mod vm {
    use super::DsDef;

    /// `cpu<i>`: vCPU `i` usage as a fraction of one physical CPU. Reading: cumulative
    /// seconds vCPU `i` has run (DERIVE, bounded to [0, 1]).
    pub fn cpu(i: u32) -> DsDef {
        DsDef::fraction_counter(format!("cpu{i}"))
    }

    /// `cpu_usage`: the whole domain's usage, a fraction. Reading: cumulative CPU
    /// seconds of all vCPUs divided by the number of vCPUs.
    pub fn cpu_usage() -> DsDef {
        DsDef::fraction_counter("cpu_usage")
    }

    /// `memory`: memory allocated to the VM, bytes (GAUGE).
    pub fn memory() -> DsDef {
        DsDef::gauge("memory")
    }

    /// `memory_target`: the balloon target, bytes (GAUGE).
    pub fn memory_target() -> DsDef {
        DsDef::gauge("memory_target")
    }

    /// `memory_internal_free`: free memory reported by the guest, **KiB** as XAPI
    /// (GAUGE).
    pub fn memory_internal_free() -> DsDef {
        DsDef::gauge("memory_internal_free")
    }

    /// `vbd_<dev>_read`: bytes/s read from the disk whose VBD `device` is `dev` (e.g.
    /// `xvda`). Reading: cumulative bytes read (DERIVE).
    pub fn vbd_read(dev: &str) -> DsDef {
        DsDef::counter(format!("vbd_{dev}_read"))
    }

    /// `vbd_<dev>_write`: bytes/s written. Reading: cumulative bytes written (DERIVE).
    pub fn vbd_write(dev: &str) -> DsDef {
        DsDef::counter(format!("vbd_{dev}_write"))
    }

    /// `vif_<n>_rx`: bytes/s received by the guest on VIF `n` (its `device` number).
    /// Reading: cumulative bytes the guest received (DERIVE). XAPI reads the host side
    /// of the tap, where rx and tx are swapped: give the guest's view here.
    pub fn vif_rx(n: u32) -> DsDef {
        DsDef::counter(format!("vif_{n}_rx"))
    }

    /// `vif_<n>_tx`: bytes/s sent by the guest on VIF `n`. Reading: cumulative bytes.
    pub fn vif_tx(n: u32) -> DsDef {
        DsDef::counter(format!("vif_{n}_tx"))
    }
}

/// The data sources XAPI records for a host.
pub mod host {
    use super::{DsDef, DsType};

    /// `cpu<i>`: physical CPU `i` usage, a fraction. Reading: cumulative busy seconds
    /// (XAPI feeds idle time through an inverse transform; we take busy time directly).
    pub fn cpu(i: u32) -> DsDef {
        DsDef::fraction_counter(format!("cpu{i}"))
    }

    /// `cpu_avg`: mean usage over all physical CPUs. Reading: cumulative busy seconds
    /// summed over CPUs, divided by their number.
    pub fn cpu_avg() -> DsDef {
        DsDef::fraction_counter("cpu_avg")
    }

    /// `memory_total_kib`: host memory, KiB (GAUGE).
    pub fn memory_total_kib() -> DsDef {
        DsDef::gauge("memory_total_kib")
    }

    /// `memory_free_kib`: free host memory, KiB (GAUGE).
    pub fn memory_free_kib() -> DsDef {
        DsDef::gauge("memory_free_kib")
    }

    /// `loadavg`: the 1-minute load average of the control domain (GAUGE, unbounded as
    /// XAPI).
    pub fn loadavg() -> DsDef {
        DsDef::new("loadavg", DsType::Gauge)
    }

    /// `pif_<dev>_rx`: bytes/s received on physical interface `dev` (DERIVE of bytes).
    pub fn pif_rx(dev: &str) -> DsDef {
        DsDef::counter(format!("pif_{dev}_rx"))
    }

    /// `pif_<dev>_tx`: bytes/s sent on physical interface `dev`.
    pub fn pif_tx(dev: &str) -> DsDef {
        DsDef::counter(format!("pif_{dev}_tx"))
    }

    /// `pif_aggr_rx`: bytes/s received on all physical interfaces.
    pub fn pif_aggr_rx() -> DsDef {
        DsDef::counter("pif_aggr_rx")
    }

    /// `pif_aggr_tx`: bytes/s sent on all physical interfaces.
    pub fn pif_aggr_tx() -> DsDef {
        DsDef::counter("pif_aggr_tx")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xapi_names() {
        assert_eq!(vm::cpu(3).name, "cpu3");
        assert_eq!(vm::vbd_read("xvda").name, "vbd_xvda_read");
        assert_eq!(vm::vbd_write("xvdb").name, "vbd_xvdb_write");
        assert_eq!(vm::vif_rx(0).name, "vif_0_rx");
        assert_eq!(vm::vif_tx(1).name, "vif_1_tx");
        assert_eq!(vm::memory_internal_free().name, "memory_internal_free");
        assert_eq!(host::cpu_avg().name, "cpu_avg");
        assert_eq!(host::memory_total_kib().name, "memory_total_kib");
        assert_eq!(host::memory_free_kib().name, "memory_free_kib");
        assert_eq!(host::loadavg().ty, DsType::Gauge);
        assert_eq!(vm::cpu(0).ty, DsType::Derive);
        assert_eq!((vm::cpu(0).min, vm::cpu(0).max), (0.0, 1.0));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("vbd_xvda_read").is_ok());
        for bad in ["", "a:b", "a b", "é", "a\"b", "a<b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(MAX_DS_NAME + 1)).is_err());
        let mut d = DsDef::gauge("x");
        d.min = 2.0;
        d.max = 1.0;
        assert!(d.validate().is_err());
        for c in 0..3 {
            assert_eq!(DsType::from_code(c).map(DsType::code), Some(c));
        }
        assert_eq!(DsType::from_code(3), None);
    }
}
