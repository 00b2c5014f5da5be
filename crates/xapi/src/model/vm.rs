//! VM, VM_metrics, VM_guest_metrics and console (XAPI's `datamodel_vm.ml`).

use super::common::*;
use super::types::{
    call, dro, p, rw, sro, t, Class, Default as D, EnumType, Field, Lifecycle, Message, Role, Ty,
};
use crate::error::codes;

pub const VM_POWER_STATE: EnumType = EnumType {
    name: "vm_power_state",
    values: &["Halted", "Paused", "Running", "Suspended"],
};

pub const VM_OPERATIONS: EnumType = EnumType {
    name: "vm_operations",
    values: &[
        "snapshot",
        "clone",
        "copy",
        "create_template",
        "revert",
        "checkpoint",
        "snapshot_with_quiesce",
        "provision",
        "start",
        "start_on",
        "pause",
        "unpause",
        "clean_shutdown",
        "clean_reboot",
        "hard_shutdown",
        "power_state_reset",
        "hard_reboot",
        "suspend",
        "csvm",
        "resume",
        "resume_on",
        "pool_migrate",
        "migrate_send",
        "get_boot_record",
        "send_sysrq",
        "send_trigger",
        "query_services",
        "shutdown",
        "call_plugin",
        "changing_memory_live",
        "awaiting_memory_live",
        "changing_dynamic_range",
        "changing_static_range",
        "changing_memory_limits",
        "changing_shadow_memory",
        "changing_shadow_memory_live",
        "changing_VCPUs",
        "changing_VCPUs_live",
        "changing_NVRAM",
        "assert_operation_valid",
        "data_source_op",
        "update_allowed_operations",
        "make_into_template",
        "import",
        "export",
        "metadata_export",
        "reverting",
        "destroy",
    ],
};

pub const DOMAIN_TYPE: EnumType = EnumType {
    name: "domain_type",
    values: &["hvm", "pv", "pv_in_pvh", "pvh", "unspecified"],
};

pub const TRISTATE: EnumType = EnumType {
    name: "tristate_type",
    values: &["yes", "no", "unspecified"],
};

pub const CONSOLE_PROTOCOL: EnumType = EnumType {
    name: "console_protocol",
    values: &["vt100", "rfb", "rdp"],
};

const OPS: Ty = Ty::Enum(&VM_OPERATIONS);
const INT: Ty = Ty::Int;
const VM: Ty = Ty::Ref("VM");

const fn mem(name: &'static str, doc: &'static str) -> Field {
    sro(name, INT, doc).writer(Role::VmPowerAdmin)
}

/// Writable by vm-power-admin, server-maintained snapshot bookkeeping.
const fn snap(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    dro(name, ty, doc).writer(Role::VmPowerAdmin)
}

const VM_FIELDS: &[Field] = &[
    UUID,
    allowed_ops(&OPS),
    current_ops(&OPS),
    dro("power_state", Ty::Enum(&VM_POWER_STATE), "Current power state of the machine")
        .def(D::Str("Halted"))
        .writer(Role::VmOperator),
    NAME_LABEL,
    NAME_DESCRIPTION,
    rw("user_version", INT, "Creators of VMs and templates may store version information here.")
        .def(D::Int(1)),
    rw("is_a_template", Ty::Bool, "true if this is a template. Template VMs can never be started, they are used only for cloning other VMs")
        .def(D::Bool(false)),
    dro("is_default_template", Ty::Bool, "true if this is a default template. Default template VMs can never be started or migrated, they are used only for cloning other VMs")
        .def(D::Bool(false))
        .writer(Role::PoolAdmin),
    dro("suspend_VDI", Ty::Ref("VDI"), "The VDI that a suspend image is stored on. (Only has meaning if VM is currently suspended)")
        .def(D::Null),
    dro("resident_on", Ty::Ref("host"), "the host the VM is currently resident on")
        .def(D::Null)
        .writer(Role::VmPowerAdmin),
    rw("affinity", Ty::Ref("host"), "A host which the VM has some affinity for (or NULL). This is used as a hint to the start call when it decides where to run the VM.")
        .def(D::Null)
        .writer(Role::VmPowerAdmin),
    dro("memory_overhead", INT, "Virtualization memory overhead (bytes).").def(D::Int(0)),
    mem("memory_target", "Dynamically-set memory target (bytes).").def(D::Int(0)),
    mem("memory_static_max", "Statically-set (i.e. absolute) maximum (bytes). The value of this field at VM start time acts as a hard limit of the amount of memory a guest can use.")
        .def(D::Int(268_435_456)),
    mem("memory_dynamic_max", "Dynamic maximum (bytes)").def(D::Int(268_435_456)),
    mem("memory_dynamic_min", "Dynamic minimum (bytes)").def(D::Int(268_435_456)),
    mem("memory_static_min", "Statically-set (i.e. absolute) mininum (bytes).")
        .def(D::Int(134_217_728)),
    rw("VCPUs_params", t::STR_MAP, "configuration parameters for the selected VCPU policy")
        .def(D::Empty),
    sro("VCPUs_max", INT, "Max number of VCPUs").def(D::Int(1)),
    sro("VCPUs_at_startup", INT, "Boot number of VCPUs").def(D::Int(1)),
    rw("actions_after_shutdown", Ty::Enum(&ON_NORMAL_EXIT), "action to take after the guest has shutdown itself")
        .def(D::Str("destroy")),
    rw("actions_after_reboot", Ty::Enum(&ON_NORMAL_EXIT), "action to take after the guest has rebooted itself")
        .def(D::Str("restart")),
    sro("actions_after_crash", Ty::Enum(&ON_CRASH_BEHAVIOUR), "action to take if the guest crashes")
        .def(D::Str("restart")),
    dro("consoles", Ty::Set(&Ty::Ref("console")), "virtual console devices").writer(Role::PoolAdmin),
    dro("VIFs", Ty::Set(&Ty::Ref("VIF")), "virtual network interfaces"),
    dro("VBDs", Ty::Set(&Ty::Ref("VBD")), "virtual block devices"),
    rw("PV_bootloader", Ty::String, "name of or path to bootloader").def(D::Str("")),
    rw("PV_kernel", Ty::String, "path to the kernel").def(D::Str("")),
    rw("PV_ramdisk", Ty::String, "path to the initrd").def(D::Str("")),
    rw("PV_args", Ty::String, "kernel command-line arguments").def(D::Str("")),
    rw("PV_bootloader_args", Ty::String, "miscellaneous arguments for the bootloader").def(D::Str("")),
    rw("PV_legacy_args", Ty::String, "to make Zurich guests boot").def(D::Str("")),
    sro("HVM_boot_policy", Ty::String, "HVM boot policy").def(D::Str("BIOS order")),
    rw("HVM_boot_params", t::STR_MAP, "HVM boot params").def(D::Empty),
    sro("HVM_shadow_multiplier", Ty::Float, "multiplier applied to the amount of shadow that will be made available to the guest")
        .def(D::Float(1.0))
        .writer(Role::VmPowerAdmin),
    rw("platform", t::STR_MAP, "platform-specific configuration").def(D::Empty),
    rw("PCI_bus", Ty::String, "PCI bus path for pass-through devices").def(D::Str("")),
    OTHER_CONFIG,
    dro("domid", INT, "domain ID (if available, -1 otherwise)").def(D::Int(-1)),
    dro("domarch", Ty::String, "Domain architecture (if available, null string otherwise)").def(D::Str("")),
    dro("last_boot_CPU_flags", t::STR_MAP, "describes the CPU flags on which the VM was last booted").def(D::Empty),
    dro("is_control_domain", Ty::Bool, "true if this is a control domain (domain 0 or a driver domain)").def(D::Bool(false)),
    dro("metrics", Ty::Ref("VM_metrics"), "metrics associated with this VM").def(D::Null),
    dro("guest_metrics", Ty::Ref("VM_guest_metrics"), "metrics associated with the running guest").def(D::Null),
    dro("last_booted_record", Ty::String, "marshalled value containing VM record at time of last boot").def(D::Str("")),
    rw("recommendations", Ty::String, "An XML specification of recommended values and ranges for properties of this VM").def(D::Str("")),
    rw("xenstore_data", t::STR_MAP, "data to be inserted into the guest's store after the VM is created.").def(D::Empty),
    sro("ha_always_run", Ty::Bool, "if true then the system will attempt to keep the VM running as much as possible.")
        .def(D::Bool(false))
        .writer(Role::PoolOperator),
    sro("ha_restart_priority", Ty::String, "has possible values: \"best-effort\", \"restart\", \"\"")
        .def(D::Str(""))
        .writer(Role::PoolOperator),
    snap("is_a_snapshot", Ty::Bool, "true if this is a snapshot. Snapshotted VMs can never be started, they are used only for cloning other VMs").def(D::Bool(false)),
    snap("snapshot_of", VM, "Ref pointing to the VM this snapshot is of.").def(D::Null),
    snap("snapshots", Ty::Set(&VM), "List pointing to all the VM snapshots."),
    snap("snapshot_time", Ty::DateTime, "Date/time when this snapshot was created.").def(D::Never),
    snap("transportable_snapshot_id", Ty::String, "Transportable ID of the snapshot VM").def(D::Str("")),
    rw("tags", t::STR_SET, "user-specified tags for categorization purposes")
        .def(D::Empty)
        .writer(Role::VmOperator),
    rw("blocked_operations", Ty::Map(&OPS, &Ty::String), "List of operations which have been explicitly blocked and an error code")
        .def(D::Empty),
    snap("snapshot_info", t::STR_MAP, "Human-readable information concerning this snapshot").def(D::Empty),
    snap("snapshot_metadata", Ty::String, "Encoded information about the VM's metadata this is a snapshot of").def(D::Str("")),
    snap("parent", VM, "Ref pointing to the parent of this VM").def(D::Null),
    snap("children", Ty::Set(&VM), "List pointing to all the children of this VM"),
    dro("bios_strings", t::STR_MAP, "BIOS strings").def(D::Empty),
    sro("start_delay", INT, "The delay to wait before proceeding to the next order in the startup sequence (seconds)")
        .def(D::Int(0))
        .writer(Role::PoolOperator),
    sro("shutdown_delay", INT, "The delay to wait before proceeding to the next order in the shutdown sequence (seconds)")
        .def(D::Int(0))
        .writer(Role::PoolOperator),
    sro("order", INT, "The point in the startup or shutdown sequence at which this VM will be started")
        .def(D::Int(0))
        .writer(Role::PoolOperator),
    dro("version", INT, "The number of times this VM has been recovered").def(D::Int(0)),
    sro("generation_id", Ty::String, "Generation ID of the VM").def(D::Str("")),
    dro("hardware_platform_version", INT, "The host virtual hardware platform version the VM can run on").def(D::Int(0)),
    sro("has_vendor_device", Ty::Bool, "When an HVM guest starts, this controls the presence of the emulated C000 PCI device").def(D::Bool(false)),
    dro("requires_reboot", Ty::Bool, "Indicates whether a VM requires a reboot in order to update its configuration").def(D::Bool(false)),
    sro("reference_label", Ty::String, "Textual reference to the template used to create a VM").def(D::Str("")),
    sro("domain_type", Ty::Enum(&DOMAIN_TYPE), "The type of domain that will be created when the VM is started")
        .def(D::Str("pv")),
    rw("NVRAM", t::STR_MAP, "initial value for guest NVRAM (containing UEFI variables, etc)").def(D::Empty),
];

const SELF: super::types::Param = p("vm", VM, "The VM");
const ONE_VM: &[super::types::Param] = &[SELF];
const HARD: &[&crate::error::ErrorCode] = &[
    &codes::VM_BAD_POWER_STATE,
    &codes::OTHER_OPERATION_IN_PROGRESS,
    &codes::OPERATION_NOT_ALLOWED,
];
const POWER: Role = Role::VmOperator;

const VM_MESSAGES: &[Message] = &[
    call(
        "start",
        &[
            SELF,
            p("start_paused", Ty::Bool, "Instantiate VM in paused state if set to true."),
            p("force", Ty::Bool, "Attempt to force the VM to start."),
        ],
        None,
        &[
            &codes::VM_BAD_POWER_STATE,
            &codes::VM_IS_TEMPLATE,
            &codes::OTHER_OPERATION_IN_PROGRESS,
            &codes::OPERATION_NOT_ALLOWED,
            &codes::NO_HOSTS_AVAILABLE,
        ],
        POWER,
        "Start the specified VM. This function can only be called with the VM is in the Halted State.",
    )
    .asyn(),
    call("pause", ONE_VM, None, HARD, POWER, "Pause the specified VM. This can only be called when the specified VM is in the Running state.").asyn(),
    call("unpause", ONE_VM, None, HARD, POWER, "Resume the specified VM. This can only be called when the specified VM is in the Paused state.").asyn(),
    call("clean_shutdown", ONE_VM, None, HARD, POWER, "Attempt to cleanly shutdown the specified VM (the guest is sent an ACPI power button press).").asyn(),
    call("shutdown", ONE_VM, None, HARD, POWER, "Attempts to first clean shutdown a VM and if it should fail then perform a hard shutdown on it.").asyn(),
    call("clean_reboot", ONE_VM, None, HARD, POWER, "Attempt to cleanly shutdown the specified VM (Note: this may not be supported---e.g. if a guest agent is not installed). This can only be called when the specified VM is in the Running state.").asyn(),
    call("hard_shutdown", ONE_VM, None, HARD, POWER, "Stop executing the specified VM without attempting a clean shutdown.").asyn(),
    call("hard_reboot", ONE_VM, None, HARD, POWER, "Stop executing the specified VM without attempting a clean shutdown and immediately restart the VM.").asyn(),
    call("power_state_reset", ONE_VM, None, &[], Role::VmAdmin, "Reset the power-state of the VM to halted in the database only.").asyn(),
    call("suspend", ONE_VM, None, HARD, POWER, "Suspend the specified VM to disk. This can only be called when the specified VM is in the Running state.").asyn(),
    call("resume", &[SELF, p("start_paused", Ty::Bool, "Resume VM in paused state if set to true."), p("force", Ty::Bool, "Attempt to force the VM to resume.")], None, HARD, POWER, "Awaken the specified VM and resume it. This can only be called when the specified VM is in the Suspended state.").asyn(),
    call("clone", &[SELF, p("new_name", Ty::String, "The name of the cloned VM")], Some(VM), &[&codes::VM_BAD_POWER_STATE, &codes::SR_FULL, &codes::OPERATION_NOT_ALLOWED], Role::VmAdmin, "Clones the specified VM, making a new VM. This function can only be called when the VM is in the Halted State.").asyn(),
    call("copy", &[SELF, p("new_name", Ty::String, "The name of the copied VM"), p("sr", Ty::Ref("SR"), "An SR to copy all the VM's disks into (if an invalid reference then it uses the existing SRs)")], Some(VM), &[&codes::VM_BAD_POWER_STATE, &codes::SR_FULL, &codes::OPERATION_NOT_ALLOWED], Role::VmAdmin, "Copies the specified VM, making a new VM whose disks are full copies. This function can only be called when the VM is in the Halted State.").asyn(),
    call("provision", ONE_VM, None, &[&codes::VM_BAD_POWER_STATE, &codes::SR_FULL, &codes::OPERATION_NOT_ALLOWED], Role::VmAdmin, "Inspects the disk configuration contained within the VM's other_config, creates VDIs and VBDs and then executes any applicable post-install script.").asyn(),
    call("snapshot", &[SELF, p("new_name", Ty::String, "The name of the snapshotted VM")], Some(VM), &[&codes::VM_BAD_POWER_STATE, &codes::SR_FULL, &codes::OPERATION_NOT_ALLOWED], Role::VmPowerAdmin, "Snapshots the specified VM, making a new VM.").asyn(),
    call("revert", &[p("snapshot", VM, "The snapshotted state that we revert to")], None, &[&codes::VM_BAD_POWER_STATE, &codes::OPERATION_NOT_ALLOWED, &codes::SR_FULL], Role::VmPowerAdmin, "Reverts the specified VM to a previous state.").asyn(),
    call("destroy", &[p("self", VM, "reference to the object")], None, &[&codes::VM_BAD_POWER_STATE, &codes::OTHER_OPERATION_IN_PROGRESS], Role::VmAdmin, "Destroy the specified VM. The VM is completely removed from the system. This function can only be called when the VM is in the Halted State.").asyn(),
    call("set_VCPUs_max", &[p("self", VM, "The VM"), p("value", INT, "The new maximum number of VCPUs")], None, &[&codes::VM_BAD_POWER_STATE], Role::VmAdmin, "Set the maximum number of VCPUs for a halted VM"),
    call("set_VCPUs_at_startup", &[p("self", VM, "The VM"), p("value", INT, "The new maximum number of VCPUs")], None, &[&codes::VM_BAD_POWER_STATE], Role::VmAdmin, "Set the number of startup VCPUs for a halted VM"),
    call("set_memory_static_max", &[p("self", VM, "The VM"), p("value", INT, "The new value of memory_static_max.")], None, &[&codes::VM_BAD_POWER_STATE], Role::VmPowerAdmin, "Set the value of the memory_static_max field"),
    call("set_memory_dynamic_range", &[p("self", VM, "The VM"), p("min", INT, "The new minimum value"), p("max", INT, "The new maximum value")], None, &[], Role::VmPowerAdmin, "Set the minimum and maximum amounts of physical memory the VM is allowed to use."),
    call("set_memory_limits", &[p("self", VM, "The VM"), p("static_min", INT, "The new value of memory_static_min."), p("static_max", INT, "The new value of memory_static_max."), p("dynamic_min", INT, "The new value of memory_dynamic_min."), p("dynamic_max", INT, "The new value of memory_dynamic_max.")], None, &[&codes::VM_BAD_POWER_STATE], Role::VmPowerAdmin, "Set the memory limits of this VM.").asyn(),
    call("set_memory", &[p("self", VM, "The VM"), p("value", INT, "The new memory allocation (bytes).")], None, &[], Role::VmPowerAdmin, "Set the memory allocation of this VM. Sets all of memory_static_max, memory_dynamic_min, and memory_dynamic_max to the given value, and leaves memory_static_min untouched.").asyn(),
    call("set_actions_after_crash", &[p("self", VM, "The VM to set"), p("value", Ty::Enum(&ON_CRASH_BEHAVIOUR), "The new value to set")], None, &[], Role::VmAdmin, "Sets the actions_after_crash parameter"),
    call("set_HVM_boot_policy", &[p("self", VM, "The VM"), p("value", Ty::String, "The new HVM boot policy")], None, &[], Role::VmAdmin, "Set the VM.HVM_boot_policy field of the given VM, which will take effect when it is next started"),
    call("set_domain_type", &[p("self", VM, "The VM"), p("value", Ty::Enum(&DOMAIN_TYPE), "The new domain type")], None, &[], Role::VmAdmin, "Set the VM.domain_type field of the given VM, which will take effect when it is next started"),
    call("get_allowed_VBD_devices", &[SELF], Some(t::STR_SET), &[], Role::ReadOnly, "Returns a list of the allowed values that a VBD device field can take").pure(),
    call("get_allowed_VIF_devices", &[SELF], Some(t::STR_SET), &[], Role::ReadOnly, "Returns a list of the allowed values that a VIF device field can take").pure(),
];

/// A virtual machine (or 'guest').
pub static VM_CLASS: Class = Class {
    name: "VM",
    doc: "A virtual machine (or 'guest').",
    fields: VM_FIELDS,
    messages: VM_MESSAGES,
    lifecycle: Lifecycle::Generic,
    default_role: Role::VmAdmin,
    stored: true,
};

/// The metrics associated with a VM.
pub static VM_METRICS: Class = Class {
    name: "VM_metrics",
    doc: "The metrics associated with a VM",
    fields: &[
        UUID,
        dro("memory_actual", INT, "Guest's actual memory (bytes)").def(D::Int(0)),
        dro("VCPUs_number", INT, "Current number of VCPUs").def(D::Int(0)),
        dro("VCPUs_utilisation", Ty::Map(&INT, &Ty::Float), "Utilisation for all of guest's current VCPUs").def(D::Empty),
        dro("VCPUs_CPU", Ty::Map(&INT, &INT), "VCPU to PCPU map").def(D::Empty),
        dro("VCPUs_params", t::STR_MAP, "The live equivalent to VM.VCPUs_params").def(D::Empty),
        dro("VCPUs_flags", Ty::Map(&INT, &t::STR_SET), "CPU flags (blocked,online,running)").def(D::Empty),
        dro("state", t::STR_SET, "The state of the guest, eg blocked, dying etc").def(D::Empty),
        dro("start_time", Ty::DateTime, "Time at which this VM was last booted").def(D::Never),
        dro("install_time", Ty::DateTime, "Time at which the VM was installed").def(D::Never),
        dro("last_updated", Ty::DateTime, "Time at which this information was last updated").def(D::Never),
        OTHER_CONFIG,
        dro("hvm", Ty::Bool, "hardware virtual machine").def(D::Bool(false)),
        dro("nested_virt", Ty::Bool, "VM supports nested virtualisation").def(D::Bool(false)),
        dro("nomigrate", Ty::Bool, "VM is immobile and can't migrate between hosts").def(D::Bool(false)),
        dro("current_domain_type", Ty::Enum(&DOMAIN_TYPE), "The current domain type of the VM (for running,suspended, or paused VMs). The last-known domain type for halted VMs.").def(D::Str("unspecified")),
    ],
    messages: &[],
    lifecycle: Lifecycle::Internal,
    default_role: Role::VmAdmin,
    stored: true,
};

/// The metrics reported by the guest (as opposed to inferred from outside).
pub static VM_GUEST_METRICS: Class = Class {
    name: "VM_guest_metrics",
    doc: "The metrics reported by the guest (as opposed to inferred from outside)",
    fields: &[
        UUID,
        dro("os_version", t::STR_MAP, "version of the OS").def(D::Empty),
        dro(
            "PV_drivers_version",
            t::STR_MAP,
            "version of the PV drivers",
        )
        .def(D::Empty),
        dro(
            "PV_drivers_up_to_date",
            Ty::Bool,
            "Logical AND of network_paths_optimized and storage_paths_optimized",
        )
        .def(D::Bool(false)),
        dro("memory", t::STR_MAP, "This field exists but has no data.").def(D::Empty),
        dro("disks", t::STR_MAP, "This field exists but has no data.").def(D::Empty),
        dro("networks", t::STR_MAP, "network configuration").def(D::Empty),
        dro("other", t::STR_MAP, "anything else").def(D::Empty),
        dro(
            "last_updated",
            Ty::DateTime,
            "Time at which this information was last updated",
        )
        .def(D::Never),
        OTHER_CONFIG,
        dro(
            "live",
            Ty::Bool,
            "True if the guest is sending heartbeat messages via the guest agent",
        )
        .def(D::Bool(false)),
        dro(
            "can_use_hotplug_vbd",
            Ty::Enum(&TRISTATE),
            "The guest's statement of whether it supports VBD hotplug.",
        )
        .def(D::Str("unspecified")),
        dro(
            "can_use_hotplug_vif",
            Ty::Enum(&TRISTATE),
            "The guest's statement of whether it supports VIF hotplug.",
        )
        .def(D::Str("unspecified")),
        dro(
            "PV_drivers_detected",
            Ty::Bool,
            "At least one of the guest's devices has successfully connected to the backend.",
        )
        .def(D::Bool(false)),
    ],
    messages: &[],
    lifecycle: Lifecycle::Internal,
    default_role: Role::VmAdmin,
    stored: true,
};

/// A console.
pub static CONSOLE: Class = Class {
    name: "console",
    doc: "A console",
    fields: &[
        UUID,
        dro(
            "protocol",
            Ty::Enum(&CONSOLE_PROTOCOL),
            "the protocol used by this console",
        )
        .def(D::Str("vt100")),
        dro("location", Ty::String, "URI for the console service").def(D::Str("")),
        dro("VM", VM, "VM to which this console is attached").def(D::Null),
        OTHER_CONFIG,
    ],
    messages: &[],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolAdmin,
    stored: true,
};
