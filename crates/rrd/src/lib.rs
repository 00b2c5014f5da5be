//! Round-robin metric archives as XAPI keeps them (xcp-rrdd, xapi-rrd).
//!
//! The daemon samples per-VM and per-host figures every 5 s and feeds them to an
//! [`RrdSet`]; this crate keeps them in round-robin archives (5 s × 120, 1 min × 120,
//! 1 h × 168, 1 day × 366), answers XAPI's `/rrd_updates` with the same XML or JSON,
//! renders the latest values as Prometheus text, and saves and loads the whole set.
//! It does no I/O to VMs and no HTTP.
//!
//! - [`ds`]: data sources, their types (GAUGE, ABSOLUTE, DERIVE) and XAPI's names.
//! - [`Rrd`]: one database: update, consolidation, fetch.
//! - [`RrdSet`]: all RRDs of a host keyed by [`Owner`]; [`RrdSet::export`] (see
//!   [`updates`]), [`RrdSet::prometheus`] (see [`prometheus`]), [`RrdSet::save`] and
//!   [`RrdSet::load`] (see [`persist`]).
//!
//! ```
//! use fv_rrd::{ds, Owner, RrdSet, UpdatesQuery};
//!
//! let mut set = RrdSet::new();
//! let vm = Owner::vm("6f1b4e2c-0000-4000-8000-000000000002");
//! set.update(&vm, 1000.0, &[(ds::vm::cpu(0), 0.0), (ds::vm::memory(), 1e9)]).unwrap();
//! set.update(&vm, 1005.0, &[(ds::vm::cpu(0), 2.5), (ds::vm::memory(), 1e9)]).unwrap();
//! let xml = set.export(&UpdatesQuery::new(1000)).unwrap();
//! assert!(xml.contains("<entry>AVERAGE:vm:6f1b4e2c-0000-4000-8000-000000000002:cpu0</entry>"));
//! assert!(set.prometheus().contains("fv_vm_cpu_usage_ratio{uuid=\"6f1b4e2c-0000-4000-8000-000000000002\",cpu=\"0\"} 0.5"));
//! ```

#![forbid(unsafe_code)]

pub mod ds;
pub mod error;
pub mod fmt;
pub mod persist;
pub mod prometheus;
pub mod rrd;
pub mod set;
pub mod updates;

pub use ds::{DsDef, DsType};
pub use error::{Error, ErrorKind, Result};
pub use rrd::{
    xapi_archives, ArchiveSpec, Cf, Rrd, DEFAULT_HEARTBEAT, DEFAULT_STEP, MAX_DS, MAX_TIMESTAMP,
    XAPI_TIMESCALES,
};
pub use set::{Owner, OwnerKind, RrdSet};
pub use updates::{Selection, Updates, UpdatesQuery};
