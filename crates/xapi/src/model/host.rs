//! pool, host and host_metrics.

use super::common::*;
use super::types::{call, dro, p, rw, t, Class, Default as D, EnumType, Lifecycle, Role, Ty};
use crate::error::codes;

pub const HOST_ALLOWED_OPERATIONS: EnumType = EnumType {
    name: "host_allowed_operations",
    values: &[
        "provision",
        "evacuate",
        "shutdown",
        "reboot",
        "power_on",
        "vm_start",
        "vm_resume",
        "vm_migrate",
        "apply_updates",
        "enable",
    ],
};

pub const POOL_ALLOWED_OPERATIONS: EnumType = EnumType {
    name: "pool_allowed_operations",
    values: &[
        "ha_enable",
        "ha_disable",
        "cluster_create",
        "designate_new_master",
        "configure_repositories",
        "sync_updates",
        "get_updates",
        "apply_updates",
        "tls_verification_enable",
        "cert_refresh",
        "exchange_ca_certificates_on_join",
        "exchange_certificates_on_join",
        "copy_primary_host_certs",
    ],
};

pub const HOST_DISPLAY: EnumType = EnumType {
    name: "host_display",
    values: &[
        "enabled",
        "disable_on_reboot",
        "disabled",
        "enable_on_reboot",
    ],
};

const HOST_OPS: Ty = Ty::Enum(&HOST_ALLOWED_OPERATIONS);
const POOL_OPS: Ty = Ty::Enum(&POOL_ALLOWED_OPERATIONS);
const HOST: Ty = Ty::Ref("host");
const SR: Ty = Ty::Ref("SR");
const INT: Ty = Ty::Int;

/// Pool-wide information.
pub static POOL: Class = Class {
    name: "pool",
    doc: "Pool-wide information",
    fields: &[
        UUID,
        rw("name_label", Ty::String, "Short name").def(D::Str("")),
        rw("name_description", Ty::String, "Description").def(D::Str("")),
        dro("master", HOST, "The host that is pool master").def(D::Null),
        rw("default_SR", SR, "Default SR for VDIs").def(D::Null),
        rw("suspend_image_SR", SR, "The SR in which VDIs for suspend images are created").def(D::Null),
        rw("crash_dump_SR", SR, "The SR in which VDIs for crash dumps are created").def(D::Null),
        OTHER_CONFIG,
        dro("ha_enabled", Ty::Bool, "true if HA is enabled on the pool, false otherwise").def(D::Bool(false)),
        dro("ha_configuration", t::STR_MAP, "The current HA configuration").def(D::Empty),
        dro("ha_statefiles", t::STR_SET, "HA statefile VDIs in use").def(D::Empty),
        dro("ha_host_failures_to_tolerate", INT, "Number of host failures to tolerate before the Pool is declared to be overcommitted").def(D::Int(0)),
        dro("ha_plan_exists_for", INT, "Number of future host failures we have managed to find a plan for.").def(D::Int(0)),
        rw("ha_allow_overcommit", Ty::Bool, "If set to false then operations which would cause the Pool to become overcommitted will be blocked.").def(D::Bool(false)),
        dro("ha_overcommitted", Ty::Bool, "True if the Pool is considered to be overcommitted").def(D::Bool(false)),
        TAGS,
        rw("gui_config", t::STR_MAP, "gui-specific configuration for pool").def(D::Empty),
        rw("health_check_config", t::STR_MAP, "Configuration for the automatic health check feature").def(D::Empty),
        dro("wlb_url", Ty::String, "Url for the configured workload balancing host").def(D::Str("")),
        dro("wlb_username", Ty::String, "Username for accessing the workload balancing host").def(D::Str("")),
        rw("wlb_enabled", Ty::Bool, "true if workload balancing is enabled on the pool, false otherwise").def(D::Bool(false)),
        rw("wlb_verify_cert", Ty::Bool, "true if communication with the WLB server should enforce TLS certificate verification.").def(D::Bool(false)),
        dro("redo_log_enabled", Ty::Bool, "true a redo-log is to be used other than when HA is enabled, false otherwise").def(D::Bool(false)),
        dro("redo_log_vdi", Ty::Ref("VDI"), "indicates the VDI to use for the redo-log other than when HA is enabled").def(D::Null),
        dro("vswitch_controller", Ty::String, "address of the vswitch controller").def(D::Str("")),
        dro("restrictions", t::STR_MAP, "Pool-wide restrictions currently in effect").def(D::Empty),
        dro("ha_cluster_stack", Ty::String, "The HA cluster stack that is currently in use.").def(D::Str("")),
        allowed_ops(&POOL_OPS),
        current_ops(&POOL_OPS),
        dro("guest_agent_config", t::STR_MAP, "Pool-wide guest agent configuration information").def(D::Empty),
        dro("cpu_info", t::STR_MAP, "Details about the physical CPUs on the pool").def(D::Empty),
        rw("policy_no_vendor_device", Ty::Bool, "The pool-wide policy for clients on whether to use the vendor device or not on newly created VMs.").def(D::Bool(false)),
        rw("live_patching_disabled", Ty::Bool, "The pool-wide flag to show if the live patching feauture is disabled or not.").def(D::Bool(false)),
        dro("igmp_snooping_enabled", Ty::Bool, "true if IGMP snooping is enabled in the pool, false otherwise.").def(D::Bool(false)),
        rw("uefi_certificates", Ty::String, "The UEFI certificates allowing Secure Boot").def(D::Str("")),
        dro("is_psr_pending", Ty::Bool, "True if either a PSR is running or we are waiting for a PSR to be re-run").def(D::Bool(false)),
        dro("tls_verification_enabled", Ty::Bool, "True iff TLS certificate verification is enabled").def(D::Bool(false)),
        dro("client_certificate_auth_enabled", Ty::Bool, "True if authentication by TLS client certificates is enabled").def(D::Bool(false)),
        dro("client_certificate_auth_name", Ty::String, "The name (CN/SAN) that an incoming client certificate must have to allow authentication").def(D::Str("")),
        dro("migration_compression", Ty::Bool, "Default behaviour during migration, True if stream compression should be used").def(D::Bool(false)),
        dro("coordinator_bias", Ty::Bool, "true if bias against pool master when scheduling vms is enabled, false otherwise").def(D::Bool(true)),
    ],
    messages: &[],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolOperator,
    stored: true,
};

const HOST_SELF: super::types::Param = p("host", HOST, "The Host");
const HOST_ERRS: &[&crate::error::ErrorCode] = &[&codes::OPERATION_NOT_ALLOWED];

/// A physical host.
pub static HOST_CLASS: Class = Class {
    name: "host",
    doc: "A physical host",
    fields: &[
        UUID,
        NAME_LABEL,
        NAME_DESCRIPTION,
        dro("memory_overhead", INT, "Virtualization memory overhead (bytes).").def(D::Int(0)),
        allowed_ops(&HOST_OPS),
        current_ops(&HOST_OPS),
        dro("API_version_major", INT, "major version number").def(D::Int(2)),
        dro("API_version_minor", INT, "minor version number").def(D::Int(21)),
        dro("API_version_vendor", Ty::String, "identification of vendor").def(D::Str("Ferrovisor")),
        dro("API_version_vendor_implementation", t::STR_MAP, "details of vendor implementation").def(D::Empty),
        dro("enabled", Ty::Bool, "True if the host is currently enabled").def(D::Bool(true)),
        dro("software_version", t::STR_MAP, "version strings").def(D::Empty),
        OTHER_CONFIG,
        dro("capabilities", t::STR_SET, "Xen capabilities").def(D::Empty),
        dro("cpu_configuration", t::STR_MAP, "The CPU configuration on this host.  May contain keys such as \"nr_nodes\", \"sockets_per_node\", \"cores_per_socket\", or \"threads_per_core\"").def(D::Empty),
        dro("sched_policy", Ty::String, "Scheduler policy currently in force on this host").def(D::Str("")),
        dro("supported_bootloaders", t::STR_SET, "a list of the bootloaders installed on the machine").def(D::Empty),
        dro("resident_VMs", Ty::Set(&Ty::Ref("VM")), "list of VMs currently resident on host"),
        rw("logging", t::STR_MAP, "logging configuration").def(D::Empty),
        dro("PIFs", Ty::Set(&Ty::Ref("PIF")), "physical network interfaces"),
        rw("suspend_image_sr", SR, "The SR in which VDIs for suspend images are created").def(D::Null),
        rw("crash_dump_sr", SR, "The SR in which VDIs for crash dumps are created").def(D::Null),
        dro("PBDs", Ty::Set(&Ty::Ref("PBD")), "physical blockdevices"),
        dro("cpu_info", t::STR_MAP, "Details about the physical CPUs on this host").def(D::Empty),
        rw("hostname", Ty::String, "The hostname of this host").def(D::Str("")),
        rw("address", Ty::String, "The address by which this host can be contacted from any other host in the pool").def(D::Str("")),
        dro("metrics", Ty::Ref("host_metrics"), "metrics associated with this host").def(D::Null),
        dro("license_params", t::STR_MAP, "State of the current license").def(D::Empty),
        dro("ha_statefiles", t::STR_SET, "The set of statefiles accessible from this host").def(D::Empty),
        dro("ha_network_peers", t::STR_SET, "The set of hosts visible via the network from this host").def(D::Empty),
        TAGS,
        dro("external_auth_type", Ty::String, "type of external authentication service configured; empty if none configured.").def(D::Str("")),
        dro("external_auth_service_name", Ty::String, "name of external authentication service configured; empty if none configured.").def(D::Str("")),
        dro("external_auth_configuration", t::STR_MAP, "configuration specific to external authentication service").def(D::Empty),
        dro("edition", Ty::String, "Product edition").def(D::Str("")),
        dro("license_server", t::STR_MAP, "Contact information of the license server").def(D::Empty),
        dro("bios_strings", t::STR_MAP, "BIOS strings").def(D::Empty),
        dro("power_on_mode", Ty::String, "The power on mode").def(D::Str("")),
        dro("power_on_config", t::STR_MAP, "The power on config").def(D::Empty),
        dro("local_cache_sr", SR, "The SR that is used as a local cache").def(D::Null),
        dro("chipset_info", t::STR_MAP, "Information about chipset features").def(D::Empty),
        dro("ssl_legacy", Ty::Bool, "Allow SSLv3 protocol and ciphersuites as used by older server versions.").def(D::Bool(false)),
        rw("guest_VCPUs_params", t::STR_MAP, "VCPUs params to apply to all resident guests").def(D::Empty),
        rw("display", Ty::Enum(&HOST_DISPLAY), "indicates whether the host is configured to output its console to a physical display device").def(D::Str("enabled")),
        dro("virtual_hardware_platform_versions", Ty::Set(&INT), "The set of versions of the virtual hardware platform that the host can offer to its guests").def(D::Empty),
        dro("control_domain", Ty::Ref("VM"), "The control domain (domain 0)").def(D::Null),
        dro("iscsi_iqn", Ty::String, "The initiator IQN for the host").def(D::Str("")),
        dro("multipathing", Ty::Bool, "Specifies whether multipathing is enabled").def(D::Bool(false)),
        dro("uefi_certificates", Ty::String, "The UEFI certificates allowing Secure Boot").def(D::Str("")),
        dro("editions", t::STR_SET, "List of all available product editions").def(D::Empty),
        dro("tls_verification_enabled", Ty::Bool, "True if this host has TLS verifcation enabled").def(D::Bool(false)),
        dro("last_software_update", Ty::DateTime, "Date and time when the last software update was applied").def(D::Never),
        dro("https_only", Ty::Bool, "Reflects whether port 80 is open (false) or not (true)").def(D::Bool(false)),
    ],
    messages: &[
        call("disable", &[HOST_SELF], None, HOST_ERRS, Role::PoolOperator, "Puts the host into a state in which no new VMs can be started. Currently active VMs on the host continue to execute."),
        call("enable", &[HOST_SELF], None, HOST_ERRS, Role::PoolOperator, "Puts the host into a state in which new VMs can be started."),
        call("shutdown", &[HOST_SELF], None, HOST_ERRS, Role::PoolOperator, "Shutdown the host. (This function can only be called if there are no currently running VMs on the host and it is disabled.)").asyn(),
        call("reboot", &[HOST_SELF], None, HOST_ERRS, Role::PoolOperator, "Reboot the host. (This function can only be called if there are no currently running VMs on the host and it is disabled.)").asyn(),
        call("dmesg", &[HOST_SELF], Some(Ty::String), &[], Role::PoolOperator, "Get the host xen dmesg.").asyn().pure(),
        call("get_log", &[HOST_SELF], Some(Ty::String), &[], Role::PoolOperator, "Get the host's log file").asyn().pure(),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolOperator,
    stored: true,
};

/// The metrics associated with a host.
pub static HOST_METRICS: Class = Class {
    name: "host_metrics",
    doc: "The metrics associated with a host",
    fields: &[
        UUID,
        dro("memory_total", INT, "Total host memory (bytes)").def(D::Int(0)),
        dro("memory_free", INT, "Free host memory (bytes)").def(D::Int(0)),
        dro("live", Ty::Bool, "Pool master thinks this host is live").def(D::Bool(false)),
        dro(
            "last_updated",
            Ty::DateTime,
            "Time at which this information was last updated",
        )
        .def(D::Never),
        OTHER_CONFIG,
    ],
    messages: &[],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolOperator,
    stored: true,
};
