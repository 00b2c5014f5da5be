//! The RRDs of a host: one per owner (the host itself, each VM, each SR).

use std::collections::btree_map::{self, BTreeMap};

use crate::ds::DsDef;
use crate::error::{Error, Result};
use crate::rrd::Rrd;

/// Longest owner id accepted.
pub const MAX_OWNER_ID: usize = 64;

/// What an RRD belongs to. The order is XAPI's export order: host, VMs, SRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    /// The host (XAPI legend prefix `host`).
    Host,
    /// A VM (`vm`).
    Vm,
    /// A storage repository (`sr`).
    Sr,
}

impl OwnerKind {
    /// The word XAPI puts in legends: `host`, `vm`, `sr`.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Host => "host",
            OwnerKind::Vm => "vm",
            OwnerKind::Sr => "sr",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            OwnerKind::Host => 0,
            OwnerKind::Vm => 1,
            OwnerKind::Sr => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<OwnerKind> {
        match c {
            0 => Some(OwnerKind::Host),
            1 => Some(OwnerKind::Vm),
            2 => Some(OwnerKind::Sr),
            _ => None,
        }
    }
}

/// The key of an RRD: its owner's kind and UUID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Kind of owner.
    pub kind: OwnerKind,
    /// The owner's UUID.
    pub uuid: String,
}

impl Owner {
    /// The host with this UUID.
    pub fn host(uuid: impl Into<String>) -> Owner {
        Owner {
            kind: OwnerKind::Host,
            uuid: uuid.into(),
        }
    }

    /// The VM with this UUID.
    pub fn vm(uuid: impl Into<String>) -> Owner {
        Owner {
            kind: OwnerKind::Vm,
            uuid: uuid.into(),
        }
    }

    /// The SR with this UUID.
    pub fn sr(uuid: impl Into<String>) -> Owner {
        Owner {
            kind: OwnerKind::Sr,
            uuid: uuid.into(),
        }
    }

    /// Checks the UUID: 1 to 64 bytes of `[0-9A-Za-z_.-]`.
    pub fn validate(&self) -> Result<()> {
        let ok = !self.uuid.is_empty()
            && self.uuid.len() <= MAX_OWNER_ID
            && self
                .uuid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(())
        } else {
            Err(Error::BadOwner(
                self.uuid.chars().take(MAX_OWNER_ID).collect(),
            ))
        }
    }
}

/// All RRDs of a host, keyed by owner, created on first update with XAPI's layout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RrdSet {
    pub(crate) rrds: BTreeMap<Owner, Rrd>,
    pub(crate) vm_min_max: bool,
}

impl RrdSet {
    /// An empty set. VMs and SRs get AVERAGE archives only, hosts also MIN and MAX, as
    /// XAPI by default.
    pub fn new() -> RrdSet {
        RrdSet::default()
    }

    /// Whether new VM and SR RRDs also keep MIN and MAX (XAPI's pool option
    /// `create_min_max_in_new_VM_RRDs`).
    pub fn with_vm_min_max(mut self, on: bool) -> RrdSet {
        self.vm_min_max = on;
        self
    }

    /// Records `samples` taken at `timestamp` for `owner`, creating its RRD if needed
    /// (see [`Rrd::update`]). On error nothing changes.
    pub fn update(
        &mut self,
        owner: &Owner,
        timestamp: f64,
        samples: &[(DsDef, f64)],
    ) -> Result<()> {
        if let Some(rrd) = self.rrds.get_mut(owner) {
            return rrd.update(timestamp, samples);
        }
        owner.validate()?;
        let min_max = owner.kind == OwnerKind::Host || self.vm_min_max;
        let mut rrd = Rrd::xapi(min_max);
        rrd.update(timestamp, samples)?;
        self.rrds.insert(owner.clone(), rrd);
        Ok(())
    }

    /// Puts an RRD in the set (e.g. one received from another host), replacing any.
    pub fn insert(&mut self, owner: Owner, rrd: Rrd) -> Result<Option<Rrd>> {
        owner.validate()?;
        Ok(self.rrds.insert(owner, rrd))
    }

    /// The RRD of `owner`.
    pub fn get(&self, owner: &Owner) -> Option<&Rrd> {
        self.rrds.get(owner)
    }

    /// Removes and returns the RRD of `owner` (a VM destroyed or moved away).
    pub fn remove(&mut self, owner: &Owner) -> Option<Rrd> {
        self.rrds.remove(owner)
    }

    /// All RRDs in export order.
    pub fn iter(&self) -> btree_map::Iter<'_, Owner, Rrd> {
        self.rrds.iter()
    }

    /// Number of RRDs.
    pub fn len(&self) -> usize {
        self.rrds.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.rrds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ds::{host, vm};
    use crate::rrd::Cf;

    #[test]
    fn creates_xapi_layouts_per_kind() {
        let mut s = RrdSet::new();
        s.update(&Owner::host("h1"), 10.0, &[(host::loadavg(), 0.5)])
            .unwrap();
        s.update(&Owner::vm("v1"), 10.0, &[(vm::memory(), 1.0)])
            .unwrap();
        let h = s.get(&Owner::host("h1")).unwrap();
        assert!(h.archives().iter().any(|a| a.cf == Cf::Max));
        let v = s.get(&Owner::vm("v1")).unwrap();
        assert!(v.archives().iter().all(|a| a.cf == Cf::Average));
        let mut s2 = RrdSet::new().with_vm_min_max(true);
        s2.update(&Owner::vm("v1"), 10.0, &[]).unwrap();
        assert_eq!(s2.get(&Owner::vm("v1")).unwrap().archives().len(), 10);
    }

    #[test]
    fn bad_owner_or_update_creates_nothing() {
        let mut s = RrdSet::new();
        assert!(s.update(&Owner::vm("a:b"), 1.0, &[]).is_err());
        assert!(s.update(&Owner::vm(""), 1.0, &[]).is_err());
        assert!(s.update(&Owner::vm("ok"), f64::NAN, &[]).is_err());
        assert!(s.is_empty());
        assert!(s.insert(Owner::sr("x y"), Rrd::xapi(false)).is_err());
        s.update(&Owner::vm("ok"), 1.0, &[]).unwrap();
        assert!(s.remove(&Owner::vm("ok")).is_some());
        assert_eq!(s.len(), 0);
    }
}
