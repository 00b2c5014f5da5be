//! A VM's operation lock and what it allows: `current_operations` and
//! `allowed_operations`, kept true in the same transaction as every change.
//!
//! Soft operations (start, clean shutdown, clone...) exclude each other. A hard operation
//! (hard shutdown or reboot, power-state reset) may begin while soft ones are pending, so a
//! VM is never stuck behind a guest that does not answer; two hard operations still
//! exclude each other.

use std::collections::BTreeMap;

use fv_xapi::db::Tx;
use fv_xapi::error::codes;
use fv_xapi::{ApiError, Value};

/// Operations that pre-empt pending soft ones.
const HARD: &[&str] = &["hard_shutdown", "hard_reboot", "power_state_reset"];

pub fn is_hard(op: &str) -> bool {
    HARD.contains(&op)
}

/// What `power_state` allows, before looking at operations in progress.
fn by_power_state(power_state: &str, is_template: bool) -> &'static [&'static str] {
    if is_template {
        return &["clone", "copy", "provision", "destroy", "export"];
    }
    match power_state {
        "Halted" => &[
            "start",
            "clone",
            "copy",
            "destroy",
            "export",
            "provision",
            "make_into_template",
            "changing_VCPUs",
            "changing_static_range",
            "changing_memory_limits",
        ],
        "Running" => &[
            "clean_shutdown",
            "clean_reboot",
            "hard_shutdown",
            "hard_reboot",
            "shutdown",
            "pause",
            "power_state_reset",
        ],
        "Paused" => &[
            "unpause",
            "hard_shutdown",
            "hard_reboot",
            "shutdown",
            "power_state_reset",
        ],
        _ => &["power_state_reset"],
    }
}

/// `allowed_operations` for a VM in `power_state` with `current` operations in progress.
pub fn allowed(power_state: &str, is_template: bool, current: &[String]) -> Vec<Value> {
    let base = by_power_state(power_state, is_template);
    let any_hard = current.iter().any(|op| is_hard(op));
    base.iter()
        .filter(|op| current.is_empty() || (is_hard(op) && !any_hard))
        .map(|op| Value::String((*op).to_owned()))
        .collect()
}

fn str_field(tx: &Tx<'_>, vm: &str, field: &str) -> Result<String, ApiError> {
    match tx.get("VM", vm, field)? {
        Value::String(s) => Ok(s),
        other => Err(ApiError::internal(format!("VM.{field} is {other:?}"))),
    }
}

/// The operations in progress: (key, operation).
pub fn current(tx: &Tx<'_>, vm: &str) -> Result<Vec<(String, String)>, ApiError> {
    match tx.get("VM", vm, "current_operations")? {
        Value::Struct(m) => Ok(m
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// Recomputes `allowed_operations` from the VM's power state and operations.
pub fn refresh(tx: &mut Tx<'_>, vm: &str) -> Result<(), ApiError> {
    let power_state = str_field(tx, vm, "power_state")?;
    let is_template = matches!(tx.get("VM", vm, "is_a_template")?, Value::Bool(true));
    let ops: Vec<String> = current(tx, vm)?.into_iter().map(|(_, op)| op).collect();
    tx.set(
        "VM",
        vm,
        "allowed_operations",
        Value::Array(allowed(&power_state, is_template, &ops)),
    )
}

/// Sets the power state, and what it allows. A VM that comes to run has all its VIFs
/// attached (fv-vmm starts with every NIC); one that stops has none: `VIF.currently_attached`
/// follows, and hot-plug changes it between.
pub fn set_power_state(tx: &mut Tx<'_>, vm: &str, state: &str) -> Result<(), ApiError> {
    let before = str_field(tx, vm, "power_state")?;
    let stopped = |s: &str| matches!(s, "Halted" | "Suspended");
    if stopped(&before) != stopped(state) {
        if let Value::Array(vifs) = tx.get("VM", vm, "VIFs")? {
            for vif in vifs.iter().filter_map(Value::as_str) {
                tx.set(
                    "VIF",
                    vif,
                    "currently_attached",
                    Value::Bool(!stopped(state)),
                )?;
            }
        }
    }
    tx.set("VM", vm, "power_state", Value::String(state.to_owned()))?;
    refresh(tx, vm)
}

/// Takes the lock for `op` under `key` (the task, or a fresh id), or refuses with
/// `OTHER_OPERATION_IN_PROGRESS`. Checks nothing else: the caller checks the power state
/// in the same transaction.
pub fn begin(tx: &mut Tx<'_>, vm: &str, key: &str, op: &str) -> Result<(), ApiError> {
    let current = current(tx, vm)?;
    let conflict = current
        .iter()
        .find(|(_, other)| !is_hard(op) || is_hard(other));
    if let Some((_, other)) = conflict {
        return Err(ApiError::new(
            &codes::OTHER_OPERATION_IN_PROGRESS,
            ["VM", vm, other.as_str()],
        ));
    }
    let mut map: BTreeMap<String, Value> = current
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    map.insert(key.to_owned(), Value::String(op.to_owned()));
    tx.set("VM", vm, "current_operations", Value::Struct(map))?;
    refresh(tx, vm)
}

/// Releases the lock taken under `key` (nothing if it is gone: the VM may be destroyed,
/// or a restarted daemon cleared it).
pub fn end(tx: &mut Tx<'_>, vm: &str, key: &str) -> Result<(), ApiError> {
    if !tx.exists("VM", vm)? {
        return Ok(());
    }
    let map: BTreeMap<String, Value> = current(tx, vm)?
        .into_iter()
        .filter(|(k, _)| k != key)
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    tx.set("VM", vm, "current_operations", Value::Struct(map))?;
    refresh(tx, vm)
}

/// Clears every VM's operations (none survives a restart of the daemon) and recomputes
/// what each allows.
pub fn clear_all(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    for vm in tx.refs("VM")? {
        tx.set(
            "VM",
            &vm,
            "current_operations",
            Value::Struct(BTreeMap::new()),
        )?;
        refresh(tx, &vm)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<Value>) -> Vec<String> {
        v.into_iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn power_states_allow_what_xenapi_allows() {
        let halted = names(allowed("Halted", false, &[]));
        assert!(halted.contains(&"start".into()) && halted.contains(&"destroy".into()));
        assert!(!halted.contains(&"hard_shutdown".into()));
        let running = names(allowed("Running", false, &[]));
        assert!(running.contains(&"clean_shutdown".into()) && running.contains(&"pause".into()));
        assert!(!running.contains(&"start".into()) && !running.contains(&"destroy".into()));
        let paused = names(allowed("Paused", false, &[]));
        assert!(paused.contains(&"unpause".into()) && !paused.contains(&"pause".into()));
        let template = names(allowed("Halted", true, &[]));
        assert!(!template.contains(&"start".into()) && template.contains(&"clone".into()));
    }

    #[test]
    fn a_pending_soft_operation_leaves_only_hard_ones() {
        let busy = names(allowed("Running", false, &["clean_shutdown".into()]));
        assert_eq!(busy, ["hard_shutdown", "hard_reboot", "power_state_reset"]);
        let hard_busy = allowed("Running", false, &["hard_shutdown".into()]);
        assert!(hard_busy.is_empty());
    }
}
