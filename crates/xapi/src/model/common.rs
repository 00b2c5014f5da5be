//! Fields and types shared by many classes.

use super::types::{dro, rw, t, Default as D, EnumType, Field, Ty};

pub const UUID: Field = dro("uuid", Ty::String, "Unique identifier/object reference");
pub const NAME_LABEL: Field = rw("name_label", Ty::String, "a human-readable name").def(D::Str(""));
pub const NAME_DESCRIPTION: Field = rw(
    "name_description",
    Ty::String,
    "a notes field containing human-readable description",
)
.def(D::Str(""));
pub const OTHER_CONFIG: Field =
    rw("other_config", t::STR_MAP, "additional configuration").def(D::Empty);
pub const TAGS: Field = rw(
    "tags",
    t::STR_SET,
    "user-specified tags for categorization purposes",
)
.def(D::Empty);

/// `allowed_operations`, a set of the class's operations enum.
pub const fn allowed_ops(ops: &'static Ty) -> Field {
    dro(
        "allowed_operations",
        Ty::Set(ops),
        "list of the operations allowed in this state. This list is advisory only and the server state may have changed by the time this field is read by a client.",
    )
    .def(D::Empty)
}

/// `current_operations`, task id → operation: the object's lock.
pub const fn current_ops(ops: &'static Ty) -> Field {
    dro(
        "current_operations",
        Ty::Map(&Ty::String, ops),
        "links each of the running tasks using this object (by reference) to a current_operation enum which describes the nature of the task.",
    )
    .def(D::Empty)
}

pub const ON_NORMAL_EXIT: EnumType = EnumType {
    name: "on_normal_exit",
    values: &["destroy", "restart"],
};

pub const ON_CRASH_BEHAVIOUR: EnumType = EnumType {
    name: "on_crash_behaviour",
    values: &[
        "destroy",
        "coredump_and_destroy",
        "restart",
        "coredump_and_restart",
        "preserve",
        "rename_restart",
    ],
};

pub const IP_CONFIGURATION_MODE: EnumType = EnumType {
    name: "ip_configuration_mode",
    values: &["None", "DHCP", "Static"],
};

pub static IPV6_CONFIGURATION_MODE: EnumType = EnumType {
    name: "ipv6_configuration_mode",
    values: &["None", "DHCP", "Static", "Autoconf"],
};
