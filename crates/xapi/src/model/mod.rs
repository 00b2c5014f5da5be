//! The object model, declared once.
//!
//! Each class group has its own file; [`CLASSES`] and [`RELATIONS`] gather them. The
//! database schema (`db::schema`), the generic calls (`dispatch`) and the role checks are all
//! derived from this data at run time.

mod common;
pub mod host;
pub mod network;
pub mod reference;
pub mod session;
pub mod storage;
mod types;
pub mod vm;

pub use types::*;

/// Every class, in XenAPI's names.
pub static CLASSES: &[&Class] = &[
    &session::SESSION_CLASS,
    &session::USER,
    &session::ROLE,
    &session::TASK_CLASS,
    &session::EVENT,
    &session::MESSAGE,
    &host::POOL,
    &host::HOST_CLASS,
    &host::HOST_METRICS,
    &vm::VM_CLASS,
    &vm::VM_METRICS,
    &vm::VM_GUEST_METRICS,
    &vm::CONSOLE,
    &storage::SR_CLASS,
    &storage::PBD,
    &storage::VDI_CLASS,
    &storage::VBD_CLASS,
    &network::NETWORK_CLASS,
    &network::PIF_CLASS,
    &network::VIF_CLASS,
    &network::VLAN_CLASS,
];

/// Every reference with a derived back-reference set.
pub static RELATIONS: &[Relation] = &[
    rel("VBD", "VM", "VM", "VBDs"),
    rel("VIF", "VM", "VM", "VIFs"),
    rel("console", "VM", "VM", "consoles"),
    rel("VM", "snapshot_of", "VM", "snapshots"),
    rel("VM", "parent", "VM", "children"),
    rel("VM", "resident_on", "host", "resident_VMs"),
    rel("PBD", "host", "host", "PBDs"),
    rel("PIF", "host", "host", "PIFs"),
    rel("PBD", "SR", "SR", "PBDs"),
    rel("VDI", "SR", "SR", "VDIs"),
    rel("VBD", "VDI", "VDI", "VBDs"),
    rel("VDI", "snapshot_of", "VDI", "snapshots"),
    rel("VIF", "network", "network", "VIFs"),
    rel("PIF", "network", "network", "PIFs"),
    rel("VLAN", "tagged_PIF", "PIF", "VLAN_slave_of"),
    rel("task", "subtask_of", "task", "subtasks"),
];

/// The class of that exact name.
pub fn class(name: &str) -> Option<&'static Class> {
    CLASSES.iter().copied().find(|c| c.name == name)
}

/// The class of that name ignoring case, as `event.from` subscriptions name them.
pub fn class_ignore_case(name: &str) -> Option<&'static Class> {
    CLASSES
        .iter()
        .copied()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}

/// The relation whose derived end is `class.field`, if that field is derived.
pub fn derived_by(class: &str, field: &str) -> Option<&'static Relation> {
    RELATIONS
        .iter()
        .find(|r| r.to_class == class && r.to_field == field)
}

/// The relations whose stored end is a field of `class`.
pub fn relations_from(class: &str) -> impl Iterator<Item = &'static Relation> + '_ {
    RELATIONS.iter().filter(move |r| r.from_class == class)
}

/// Whether `class.field` is a stored column (not a derived set).
pub fn is_stored(class: &Class, field: &Field) -> bool {
    class.stored && derived_by(class.name, field.name).is_none()
}

/// Every custom message the daemon must implement: those not served by this crate.
pub fn custom_messages() -> impl Iterator<Item = (&'static Class, &'static Message)> {
    CLASSES.iter().copied().flat_map(|c| {
        c.messages
            .iter()
            .filter(move |m| !crate::dispatch::is_builtin(c.name, m.name))
            .map(move |m| (c, m))
    })
}

#[cfg(test)]
mod check;
