//! x86-64 specifics that do not touch KVM: memory map, boot protocols, ACPI tables.

pub mod acpi;
pub mod boot;
pub mod layout;
