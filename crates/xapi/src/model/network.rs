//! network, PIF, VIF and VLAN.

use super::common::*;
use super::types::{call, dro, p, rw, sro, t, Class, Default as D, EnumType, Lifecycle, Role, Ty};
use crate::error::{codes, ErrorCode};

pub const NETWORK_OPERATIONS: EnumType = EnumType {
    name: "network_operations",
    values: &["attaching"],
};

pub const NETWORK_DEFAULT_LOCKING_MODE: EnumType = EnumType {
    name: "network_default_locking_mode",
    values: &["unlocked", "disabled"],
};

pub const VIF_OPERATIONS: EnumType = EnumType {
    name: "vif_operations",
    values: &["attach", "plug", "unplug"],
};

pub const VIF_LOCKING_MODE: EnumType = EnumType {
    name: "vif_locking_mode",
    values: &["network_default", "locked", "unlocked", "disabled"],
};

pub const VIF_IPV4_CONFIGURATION_MODE: EnumType = EnumType {
    name: "vif_ipv4_configuration_mode",
    values: &["None", "Static"],
};

pub const VIF_IPV6_CONFIGURATION_MODE: EnumType = EnumType {
    name: "vif_ipv6_configuration_mode",
    values: &["None", "Static"],
};

pub const PRIMARY_ADDRESS_TYPE: EnumType = EnumType {
    name: "primary_address_type",
    values: &["IPv4", "IPv6"],
};

const NET_OPS: Ty = Ty::Enum(&NETWORK_OPERATIONS);
const VIF_OPS: Ty = Ty::Enum(&VIF_OPERATIONS);
const NETWORK: Ty = Ty::Ref("network");
const PIF: Ty = Ty::Ref("PIF");
const VIF: Ty = Ty::Ref("VIF");
const VLAN: Ty = Ty::Ref("VLAN");
const INT: Ty = Ty::Int;
const IP_ERRS: &[&ErrorCode] = &[&codes::INVALID_VALUE];
const OP_ERRS: &[&ErrorCode] = &[
    &codes::OTHER_OPERATION_IN_PROGRESS,
    &codes::OPERATION_NOT_ALLOWED,
];

/// A virtual network.
pub static NETWORK_CLASS: Class = Class {
    name: "network",
    doc: "A virtual network",
    fields: &[
        UUID,
        NAME_LABEL,
        NAME_DESCRIPTION,
        allowed_ops(&NET_OPS),
        current_ops(&NET_OPS),
        dro("VIFs", Ty::Set(&VIF), "list of connected vifs"),
        dro("PIFs", Ty::Set(&PIF), "list of connected pifs"),
        rw("MTU", INT, "MTU in octets").def(D::Int(1500)),
        OTHER_CONFIG,
        sro("bridge", Ty::String, "name of the bridge corresponding to this network on the local host").def(D::Str("")),
        sro("managed", Ty::Bool, "true if the bridge is managed by the toolstack").def(D::Bool(true)),
        TAGS,
        dro("default_locking_mode", Ty::Enum(&NETWORK_DEFAULT_LOCKING_MODE), "The network will use this value to determine the behaviour of all VIFs where locking_mode = default").def(D::Str("unlocked")),
        dro("assigned_ips", Ty::Map(&VIF, &Ty::String), "The IP addresses assigned to VIFs on networks that have active xapi-managed DHCP servers.").def(D::Empty),
    ],
    messages: &[
        call("set_default_locking_mode", &[p("network", NETWORK, "The network"), p("value", Ty::Enum(&NETWORK_DEFAULT_LOCKING_MODE), "The default locking mode for VIFs attached to this network.")], None, &[], Role::PoolOperator, "Set the default locking mode for VIFs attached to this network").asyn(),
    ],
    lifecycle: Lifecycle::Generic,
    default_role: Role::PoolOperator,
    stored: true,
};

/// A physical network interface (note separate VLANs are represented as several PIFs).
pub static PIF_CLASS: Class = Class {
    name: "PIF",
    doc: "A physical network interface (note separate VLANs are represented as several PIFs)",
    fields: &[
        UUID,
        dro(
            "device",
            Ty::String,
            "machine-readable name of the interface (e.g. eth0)",
        )
        .def(D::Str("")),
        dro(
            "network",
            NETWORK,
            "virtual network to which this pif is connected",
        )
        .def(D::Null),
        dro(
            "host",
            Ty::Ref("host"),
            "physical machine to which this pif is connected",
        )
        .def(D::Null),
        dro(
            "MAC",
            Ty::String,
            "ethernet MAC address of physical interface",
        )
        .def(D::Str("")),
        dro("MTU", INT, "MTU in octets").def(D::Int(1500)),
        dro(
            "VLAN",
            INT,
            "VLAN tag for all traffic passing through this interface",
        )
        .def(D::Int(-1)),
        dro(
            "physical",
            Ty::Bool,
            "true if this represents a physical network interface",
        )
        .def(D::Bool(false)),
        dro(
            "currently_attached",
            Ty::Bool,
            "true if this interface is online",
        )
        .def(D::Bool(false)),
        dro(
            "ip_configuration_mode",
            Ty::Enum(&IP_CONFIGURATION_MODE),
            "Sets if and how this interface gets an IP address",
        )
        .def(D::Str("None")),
        dro("IP", Ty::String, "IP address").def(D::Str("")),
        dro("netmask", Ty::String, "IP netmask").def(D::Str("")),
        dro("gateway", Ty::String, "IP gateway").def(D::Str("")),
        dro(
            "DNS",
            Ty::String,
            "Comma separated list of the IP addresses of the DNS servers to use",
        )
        .def(D::Str("")),
        dro(
            "VLAN_master_of",
            VLAN,
            "Indicates which VLAN this interface receives untagged traffic from",
        )
        .def(D::Null),
        dro(
            "VLAN_slave_of",
            Ty::Set(&VLAN),
            "Indicates which VLANs this interface transmits tagged traffic to",
        ),
        dro(
            "management",
            Ty::Bool,
            "Indicates whether the control software is listening for connections on this interface",
        )
        .def(D::Bool(false)),
        OTHER_CONFIG,
        dro(
            "disallow_unplug",
            Ty::Bool,
            "Prevent this PIF from being unplugged",
        )
        .def(D::Bool(false)),
        dro(
            "ipv6_configuration_mode",
            Ty::Enum(&IPV6_CONFIGURATION_MODE),
            "Sets if and how this interface gets an IPv6 address",
        )
        .def(D::Str("None")),
        dro("IPv6", t::STR_SET, "IPv6 address").def(D::Empty),
        dro("ipv6_gateway", Ty::String, "IPv6 gateway").def(D::Str("")),
        dro(
            "primary_address_type",
            Ty::Enum(&PRIMARY_ADDRESS_TYPE),
            "Which protocol should define the primary address of this interface",
        )
        .def(D::Str("IPv4")),
        dro(
            "managed",
            Ty::Bool,
            "Indicates whether the interface is managed by the toolstack",
        )
        .def(D::Bool(true)),
        dro(
            "properties",
            t::STR_MAP,
            "Additional configuration properties for the interface.",
        )
        .def(D::Empty),
        dro(
            "capabilities",
            t::STR_SET,
            "Additional capabilities on the interface.",
        )
        .def(D::Empty),
    ],
    messages: &[
        call(
            "introduce",
            &[
                p(
                    "host",
                    Ty::Ref("host"),
                    "The host on which the interface exists",
                ),
                p(
                    "MAC",
                    Ty::String,
                    "The MAC address of the interface (empty: read it)",
                ),
                p(
                    "device",
                    Ty::String,
                    "The device name to use for the interface",
                ),
                p(
                    "managed",
                    Ty::Bool,
                    "Indicates whether the interface is managed by xapi",
                ),
            ],
            Some(PIF),
            OP_ERRS,
            Role::PoolOperator,
            "Create a PIF to represent the physical interface",
        )
        .asyn(),
        call(
            "forget",
            &[p("self", PIF, "The PIF object to destroy")],
            None,
            OP_ERRS,
            Role::PoolOperator,
            "Destroy the PIF object matching a particular network interface",
        )
        .asyn(),
        call(
            "plug",
            &[p("self", PIF, "the PIF object to plug")],
            None,
            OP_ERRS,
            Role::PoolOperator,
            "Attempt to bring up a physical interface",
        )
        .asyn(),
        call(
            "unplug",
            &[p("self", PIF, "the PIF object to unplug")],
            None,
            OP_ERRS,
            Role::PoolOperator,
            "Attempt to bring down a physical interface",
        )
        .asyn(),
        call(
            "reconfigure_ip",
            &[
                p("self", PIF, "the PIF object to reconfigure"),
                p(
                    "mode",
                    Ty::Enum(&IP_CONFIGURATION_MODE),
                    "whether to use dynamic/static/no-assignment",
                ),
                p("IP", Ty::String, "the new IP address"),
                p("netmask", Ty::String, "the new netmask"),
                p("gateway", Ty::String, "the new gateway"),
                p("DNS", Ty::String, "the new DNS settings"),
            ],
            None,
            OP_ERRS,
            Role::PoolOperator,
            "Reconfigure the IP address settings for this interface",
        )
        .asyn(),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolOperator,
    stored: true,
};

const VIF_SELF: super::types::Param = p("self", VIF, "The VIF");

/// A virtual network interface.
pub static VIF_CLASS: Class = Class {
    name: "VIF",
    doc: "A virtual network interface",
    fields: &[
        UUID,
        allowed_ops(&VIF_OPS),
        current_ops(&VIF_OPS),
        sro("device", Ty::String, "order in which VIF backends are created by the toolstack"),
        sro("network", NETWORK, "virtual network to which this vif is connected"),
        sro("VM", Ty::Ref("VM"), "virtual machine to which this vif is connected"),
        sro("MAC", Ty::String, "ethernet MAC address of virtual interface, as exposed to guest").def(D::Str("")),
        sro("MTU", INT, "MTU in octets").def(D::Int(1500)),
        OTHER_CONFIG,
        dro("currently_attached", Ty::Bool, "is the device currently attached (erased on reboot)").def(D::Bool(false)),
        dro("status_code", INT, "error/success code associated with last attach-operation (erased on reboot)").def(D::Int(0)),
        dro("status_detail", Ty::String, "error/success information associated with last attach-operation status (erased on reboot)").def(D::Str("")),
        dro("runtime_properties", t::STR_MAP, "Device runtime properties").def(D::Empty),
        rw("qos_algorithm_type", Ty::String, "QoS algorithm to use").def(D::Str("")),
        rw("qos_algorithm_params", t::STR_MAP, "parameters for chosen QoS algorithm").def(D::Empty),
        dro("qos_supported_algorithms", t::STR_SET, "supported QoS algorithms for this VIF").def(D::Empty),
        dro("MAC_autogenerated", Ty::Bool, "true if the MAC was autogenerated; false indicates it was set manually").def(D::Bool(false)),
        sro("locking_mode", Ty::Enum(&VIF_LOCKING_MODE), "current locking mode of the VIF").def(D::Str("network_default")),
        sro("ipv4_allowed", t::STR_SET, "A list of IPv4 addresses which can be used to filter traffic passing through this VIF").def(D::Empty),
        sro("ipv6_allowed", t::STR_SET, "A list of IPv6 addresses which can be used to filter traffic passing through this VIF").def(D::Empty),
        dro("ipv4_configuration_mode", Ty::Enum(&VIF_IPV4_CONFIGURATION_MODE), "Determines whether IPv4 addresses are configured on the VIF").def(D::Str("None")),
        dro("ipv4_addresses", t::STR_SET, "IPv4 addresses in CIDR format").def(D::Empty),
        dro("ipv4_gateway", Ty::String, "IPv4 gateway (the empty string means that no gateway is set)").def(D::Str("")),
        dro("ipv6_configuration_mode", Ty::Enum(&VIF_IPV6_CONFIGURATION_MODE), "Determines whether IPv6 addresses are configured on the VIF").def(D::Str("None")),
        dro("ipv6_addresses", t::STR_SET, "IPv6 addresses in CIDR format").def(D::Empty),
        dro("ipv6_gateway", Ty::String, "IPv6 gateway (the empty string means that no gateway is set)").def(D::Str("")),
    ],
    messages: &[
        call("plug", &[VIF_SELF], None, OP_ERRS, Role::VmAdmin, "Hotplug the specified VIF, dynamically attaching it to the running VM").asyn(),
        call("unplug", &[VIF_SELF], None, OP_ERRS, Role::VmAdmin, "Hot-unplug the specified VIF, dynamically unattaching it from the running VM").asyn(),
        call("set_locking_mode", &[VIF_SELF, p("value", Ty::Enum(&VIF_LOCKING_MODE), "The new locking mode for the VIF")], None, &[], Role::PoolOperator, "Set the locking mode for this VIF").asyn(),
        call("set_ipv4_allowed", &[VIF_SELF, p("value", t::STR_SET, "The IP addresses which will be associated with the VIF")], None, IP_ERRS, Role::PoolOperator, "Set the IPv4 addresses to which traffic on this VIF can be restricted").asyn(),
        call("add_ipv4_allowed", &[VIF_SELF, p("value", Ty::String, "The IP address which will be associated with the VIF")], None, IP_ERRS, Role::PoolOperator, "Associates an IPv4 address with this VIF").asyn(),
        call("remove_ipv4_allowed", &[VIF_SELF, p("value", Ty::String, "The IP address which will be removed from the VIF")], None, &[], Role::PoolOperator, "Removes an IPv4 address from this VIF").asyn(),
        call("set_ipv6_allowed", &[VIF_SELF, p("value", t::STR_SET, "The IP addresses which will be associated with the VIF")], None, IP_ERRS, Role::PoolOperator, "Set the IPv6 addresses to which traffic on this VIF can be restricted").asyn(),
        call("add_ipv6_allowed", &[VIF_SELF, p("value", Ty::String, "The IP address which will be associated with the VIF")], None, IP_ERRS, Role::PoolOperator, "Associates an IPv6 address with this VIF").asyn(),
        call("remove_ipv6_allowed", &[VIF_SELF, p("value", Ty::String, "The IP address which will be removed from the VIF")], None, &[], Role::PoolOperator, "Removes an IPv6 address from this VIF").asyn(),
    ],
    lifecycle: Lifecycle::Generic,
    default_role: Role::VmAdmin,
    stored: true,
};

/// A VLAN mux/demux.
pub static VLAN_CLASS: Class = Class {
    name: "VLAN",
    doc: "A VLAN mux/demux",
    fields: &[
        UUID,
        dro("tagged_PIF", PIF, "interface on which traffic is tagged").def(D::Null),
        dro(
            "untagged_PIF",
            PIF,
            "interface on which traffic is untagged",
        )
        .def(D::Null),
        dro("tag", INT, "VLAN tag in use").def(D::Int(-1)),
        OTHER_CONFIG,
    ],
    messages: &[
        call(
            "create",
            &[
                p("tagged_PIF", PIF, "PIF which receives the tagged traffic"),
                p("tag", INT, "VLAN tag to use"),
                p(
                    "network",
                    NETWORK,
                    "Network to receive the untagged traffic",
                ),
            ],
            Some(VLAN),
            &[&codes::OPERATION_NOT_ALLOWED],
            Role::PoolOperator,
            "Create a VLAN mux/demuxer",
        )
        .asyn(),
        call(
            "destroy",
            &[p("self", VLAN, "VLAN mux/demuxer to destroy")],
            None,
            &[&codes::OPERATION_NOT_ALLOWED],
            Role::PoolOperator,
            "Destroy a VLAN mux/demuxer",
        )
        .asyn(),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolOperator,
    stored: true,
};
