//! Disks fvd itself is writing outside any VM: an HTTP import (`transfer`) writes a VDI's
//! file by its path for minutes. Meanwhile nothing else may replace, grow, remove or open
//! that file: a snapshot would send the rest of the import into the snapshot's frozen base,
//! a VM started on it would be a second writer. Starting a VM claims its disks for the
//! moment it takes, so that an import cannot slip in between its checks and its launch.
//!
//! The claims live in memory: none survives fvd (an import dies with it).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use fv_xapi::error::codes;
use fv_xapi::ApiError;

static BUSY: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());

/// A claim on some VDIs, released when dropped.
#[derive(Debug)]
pub struct Claim(Vec<String>);

impl Drop for Claim {
    fn drop(&mut self) {
        let mut busy = BUSY.lock().unwrap_or_else(PoisonError::into_inner);
        for vdi in &self.0 {
            busy.remove(vdi);
        }
    }
}

fn in_progress(vdi: &str, op: &str) -> ApiError {
    ApiError::new(&codes::OTHER_OPERATION_IN_PROGRESS, ["VDI", vdi, op])
}

/// Claims every one of `vdis` for `op`, or none: `OTHER_OPERATION_IN_PROGRESS` names the
/// first one busy and what with.
pub fn claim(vdis: &[String], op: &'static str) -> Result<Claim, ApiError> {
    let mut busy = BUSY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((vdi, other)) = vdis
        .iter()
        .find_map(|v| busy.get(v).map(|other| (v, *other)))
    {
        return Err(in_progress(vdi, other));
    }
    for vdi in vdis {
        busy.insert(vdi.clone(), op);
    }
    Ok(Claim(vdis.to_vec()))
}

/// `OTHER_OPERATION_IN_PROGRESS` if `vdi` is claimed.
pub fn check(vdi: &str) -> Result<(), ApiError> {
    let busy = BUSY.lock().unwrap_or_else(PoisonError::into_inner);
    match busy.get(vdi) {
        Some(op) => Err(in_progress(vdi, op)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_exclude_each_other_until_dropped() {
        let a = "OpaqueRef:busy-test-a".to_owned();
        let b = "OpaqueRef:busy-test-b".to_owned();
        let first = claim(std::slice::from_ref(&a), "import").unwrap();
        assert!(check(&a).is_err());
        let both = claim(&[b.clone(), a.clone()], "start").unwrap_err();
        assert_eq!(both.code, "OTHER_OPERATION_IN_PROGRESS");
        assert!(check(&b).is_ok(), "all or nothing");
        drop(first);
        let second = claim(&[a.clone(), b.clone()], "start").unwrap();
        assert!(check(&a).is_err() && check(&b).is_err());
        drop(second);
        assert!(check(&a).is_ok() && check(&b).is_ok());
    }
}
