//! SR, PBD, VDI and VBD.

use super::common::*;
use super::types::{
    call, dro, p, rw, sro, t, Class, Default as D, EnumType, Lifecycle, Param, Role, Ty,
};
use crate::error::{codes, ErrorCode};

pub const STORAGE_OPERATIONS: EnumType = EnumType {
    name: "storage_operations",
    values: &[
        "scan",
        "destroy",
        "forget",
        "plug",
        "unplug",
        "update",
        "vdi_create",
        "vdi_introduce",
        "vdi_destroy",
        "vdi_resize",
        "vdi_clone",
        "vdi_snapshot",
        "vdi_mirror",
        "vdi_enable_cbt",
        "vdi_disable_cbt",
        "vdi_data_destroy",
        "vdi_list_changed_blocks",
        "vdi_set_on_boot",
        "vdi_blocks",
        "pbd_create",
        "pbd_destroy",
    ],
};

pub const VDI_OPERATIONS: EnumType = EnumType {
    name: "vdi_operations",
    values: &[
        "clone",
        "copy",
        "resize",
        "resize_online",
        "snapshot",
        "mirror",
        "destroy",
        "forget",
        "update",
        "force_unlock",
        "generate_config",
        "enable_cbt",
        "disable_cbt",
        "data_destroy",
        "list_changed_blocks",
        "set_on_boot",
        "blocked",
    ],
};

pub const VDI_TYPE: EnumType = EnumType {
    name: "vdi_type",
    values: &[
        "system",
        "user",
        "ephemeral",
        "suspend",
        "crashdump",
        "ha_statefile",
        "metadata",
        "redo_log",
        "rrd",
        "pvs_cache",
        "cbt_metadata",
    ],
};

pub const ON_BOOT: EnumType = EnumType {
    name: "on_boot",
    values: &["reset", "persist"],
};

pub const VBD_OPERATIONS: EnumType = EnumType {
    name: "vbd_operations",
    values: &[
        "attach",
        "eject",
        "insert",
        "plug",
        "unplug",
        "unplug_force",
        "pause",
        "unpause",
    ],
};

pub const VBD_TYPE: EnumType = EnumType {
    name: "vbd_type",
    values: &["CD", "Disk", "Floppy"],
};

pub const VBD_MODE: EnumType = EnumType {
    name: "vbd_mode",
    values: &["RO", "RW"],
};

const SR_OPS: Ty = Ty::Enum(&STORAGE_OPERATIONS);
const VDI_OPS: Ty = Ty::Enum(&VDI_OPERATIONS);
const VBD_OPS: Ty = Ty::Enum(&VBD_OPERATIONS);
const SR: Ty = Ty::Ref("SR");
const VDI: Ty = Ty::Ref("VDI");
const VBD: Ty = Ty::Ref("VBD");
const HOST: Ty = Ty::Ref("host");
const INT: Ty = Ty::Int;
const OP_ERRS: &[&ErrorCode] = &[
    &codes::OTHER_OPERATION_IN_PROGRESS,
    &codes::OPERATION_NOT_ALLOWED,
];

/// A storage repository.
pub static SR_CLASS: Class = Class {
    name: "SR",
    doc: "A storage repository",
    fields: &[
        UUID,
        NAME_LABEL,
        NAME_DESCRIPTION,
        allowed_ops(&SR_OPS),
        current_ops(&SR_OPS),
        dro("VDIs", Ty::Set(&VDI), "all virtual disks known to this storage repository"),
        dro("PBDs", Ty::Set(&Ty::Ref("PBD")), "describes how particular hosts can see this storage repository"),
        dro("virtual_allocation", INT, "sum of virtual_sizes of all VDIs in this storage repository (in bytes)").def(D::Int(0)),
        dro("physical_utilisation", INT, "physical space currently utilised on this storage repository (in bytes).").def(D::Int(0)),
        sro("physical_size", INT, "total physical size of the repository (in bytes)").def(D::Int(0)),
        sro("type", Ty::String, "type of the storage repository").def(D::Str("")),
        sro("content_type", Ty::String, "the type of the SR's content, if required (e.g. ISOs)").def(D::Str("")),
        dro("shared", Ty::Bool, "true if this SR is (capable of being) shared between multiple hosts").def(D::Bool(false)),
        OTHER_CONFIG,
        TAGS,
        sro("sm_config", t::STR_MAP, "SM dependent data").def(D::Empty),
        dro("local_cache_enabled", Ty::Bool, "True if this SR is assigned to be the local cache for its host").def(D::Bool(false)),
        dro("clustered", Ty::Bool, "True if the SR is using aggregated local storage").def(D::Bool(false)),
        dro("is_tools_sr", Ty::Bool, "True if this is the SR that contains the Tools ISO VDIs").def(D::Bool(false)),
    ],
    messages: &[
        call(
            "create",
            &[
                p("host", HOST, "The host to create/make the SR on"),
                p("device_config", t::STR_MAP, "The device config string that will be passed to backend SR driver"),
                p("physical_size", INT, "The physical size of the new storage repository"),
                p("name_label", Ty::String, "The name of the new storage repository"),
                p("name_description", Ty::String, "The description of the new storage repository"),
                p("type", Ty::String, "The type of the SR; used to specify the SR backend driver to use"),
                p("content_type", Ty::String, "The type of the new SRs content, if required (e.g. ISOs)"),
                p("shared", Ty::Bool, "True if the SR (is capable of) being shared by multiple hosts"),
                p("sm_config", t::STR_MAP, "Storage backend specific configuration options"),
            ],
            Some(SR),
            &[&codes::OPERATION_NOT_ALLOWED],
            Role::PoolOperator,
            "Create a new Storage Repository and introduce it into the managed system, creating both SR record and PBD record to attach it to current host (with specified device_config parameters)",
        )
        .asyn(),
        call("destroy", &[p("sr", SR, "The SR to destroy")], None, OP_ERRS, Role::PoolOperator, "Destroy specified SR, removing SR-record from database and remove SR from disk. (In order to affect this operation the appropriate device_config is read from the specified SR's PBD on current host)").asyn(),
        call("forget", &[p("sr", SR, "The SR to destroy")], None, OP_ERRS, Role::PoolOperator, "Removing specified SR-record from database, without attempting to remove SR from disk").asyn(),
        call("scan", &[p("sr", SR, "The SR to scan")], None, OP_ERRS, Role::VmPowerAdmin, "Refreshes the list of VDIs associated with an SR").asyn(),
        call(
            "introduce",
            &[
                p("uuid", Ty::String, "The uuid assigned to the introduced SR"),
                p("name_label", Ty::String, "The name of the new storage repository"),
                p("name_description", Ty::String, "The description of the new storage repository"),
                p("type", Ty::String, "The type of the SR; used to specify the SR backend driver to use"),
                p("content_type", Ty::String, "The type of the new SRs content, if required (e.g. ISOs)"),
                p("shared", Ty::Bool, "True if the SR (is capable of) being shared by multiple hosts"),
                p("sm_config", t::STR_MAP, "Storage backend specific configuration options"),
            ],
            Some(SR),
            &[&codes::OPERATION_NOT_ALLOWED],
            Role::PoolOperator,
            "Introduce a new Storage Repository into the managed system",
        )
        .asyn(),
        call(
            "probe",
            &[
                p("host", HOST, "The host to create/make the SR on"),
                p("device_config", t::STR_MAP, "The device config string that will be passed to backend SR driver"),
                p("type", Ty::String, "The type of the SR; used to specify the SR backend driver to use"),
                p("sm_config", t::STR_MAP, "Storage backend specific configuration options"),
            ],
            Some(Ty::String),
            &[&codes::OPERATION_NOT_ALLOWED, &codes::SR_BACKEND_FAILURE],
            Role::PoolOperator,
            "Perform a backend-specific scan, using the given device_config. If the device_config is complete, then this will return a list of the SRs present of this type on the device, if any. If the device_config is partial, then a backend-specific scan will be performed, returning results that will guide the user in improving the device_config.",
        )
        .asyn(),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolOperator,
    stored: true,
};

/// The physical block devices through which hosts access SRs.
pub static PBD: Class = Class {
    name: "PBD",
    doc: "The physical block devices through which hosts access SRs",
    fields: &[
        UUID,
        sro("host", HOST, "physical machine on which the pbd is available"),
        sro("SR", SR, "the storage repository that the pbd realises"),
        sro("device_config", t::STR_MAP, "a config string to string map that is provided to the host's SR-backend-driver").def(D::Empty),
        dro("currently_attached", Ty::Bool, "is the SR currently attached on this host?").def(D::Bool(false)),
        OTHER_CONFIG,
    ],
    messages: &[
        call("plug", &[p("self", Ty::Ref("PBD"), "The PBD to activate")], None, OP_ERRS, Role::PoolOperator, "Activate the specified PBD, causing the referenced SR to be attached and scanned").asyn(),
        call("unplug", &[p("self", Ty::Ref("PBD"), "The PBD to deactivate")], None, OP_ERRS, Role::PoolOperator, "Deactivate the specified PBD, causing the referenced SR to be detached and nolonger scanned").asyn(),
    ],
    lifecycle: Lifecycle::Generic,
    default_role: Role::PoolOperator,
    stored: true,
};

const VDI_SELF: Param = p("vdi", VDI, "The VDI");

/// A virtual disk image.
pub static VDI_CLASS: Class = Class {
    name: "VDI",
    doc: "A virtual disk image",
    fields: &[
        UUID,
        NAME_LABEL,
        NAME_DESCRIPTION,
        allowed_ops(&VDI_OPS),
        current_ops(&VDI_OPS),
        sro("SR", SR, "storage repository in which the VDI resides"),
        dro("VBDs", Ty::Set(&VBD), "list of vbds that refer to this disk"),
        sro("virtual_size", INT, "size of disk as presented to the guest (in bytes). Note that, depending on storage backend type, requested size may not be respected exactly").def(D::Int(0)),
        dro("physical_utilisation", INT, "amount of physical space that the disk image is currently taking up on the storage repository (in bytes)").def(D::Int(0)),
        sro("type", Ty::Enum(&VDI_TYPE), "type of the VDI").def(D::Str("user")),
        sro("sharable", Ty::Bool, "true if this disk may be shared").def(D::Bool(false)),
        sro("read_only", Ty::Bool, "true if this disk may ONLY be mounted read-only").def(D::Bool(false)),
        OTHER_CONFIG,
        dro("storage_lock", Ty::Bool, "true if this disk is locked at the storage level").def(D::Bool(false)),
        dro("location", Ty::String, "location information").def(D::Str("")),
        dro("managed", Ty::Bool, "").def(D::Bool(true)),
        dro("missing", Ty::Bool, "true if SR scan operation reported this VDI as not present on disk").def(D::Bool(false)),
        dro("parent", VDI, "This field is always null. Deprecated").def(D::Null),
        rw("xenstore_data", t::STR_MAP, "data to be inserted into the xenstore tree (/local/domain/0/backend/vbd/<domid>/<device-id>/sm-data) after the VDI is attached.").def(D::Empty),
        sro("sm_config", t::STR_MAP, "SM dependent data").def(D::Empty),
        dro("is_a_snapshot", Ty::Bool, "true if this is a snapshot.").def(D::Bool(false)),
        dro("snapshot_of", VDI, "Ref pointing to the VDI this snapshot is of.").def(D::Null),
        dro("snapshots", Ty::Set(&VDI), "List pointing to all the VDIs snapshots."),
        dro("snapshot_time", Ty::DateTime, "Date/time when this snapshot was created.").def(D::Never),
        TAGS,
        dro("allow_caching", Ty::Bool, "true if this VDI is to be cached in the local cache SR").def(D::Bool(false)),
        dro("on_boot", Ty::Enum(&ON_BOOT), "The behaviour of this VDI on a VM boot").def(D::Str("persist")),
        dro("metadata_latest", Ty::Bool, "Whether this VDI contains the latest known accessible metadata for the pool").def(D::Bool(false)),
        dro("is_tools_iso", Ty::Bool, "Whether this VDI is a Tools ISO").def(D::Bool(false)),
        dro("cbt_enabled", Ty::Bool, "True if changed blocks are tracked for this VDI").def(D::Bool(false)),
    ],
    messages: &[
        call("create", &[p("args", Ty::Record("VDI"), "All constructor arguments")], Some(VDI), &[&codes::SR_FULL, &codes::OPERATION_NOT_ALLOWED], Role::VmAdmin, "Create a new VDI instance, and return its handle.").asyn(),
        call("destroy", &[p("self", VDI, "reference to the object")], None, &[&codes::VDI_IN_USE, &codes::OPERATION_NOT_ALLOWED], Role::VmAdmin, "Destroy the specified VDI instance.").asyn(),
        call("snapshot", &[VDI_SELF, p("driver_params", t::STR_MAP, "Optional parameters that can be passed through to backend driver in order to specify storage-type-specific snapshot options")], Some(VDI), OP_ERRS, Role::VmAdmin, "Take a read-only snapshot of the VDI, returning a reference to the snapshot.").asyn(),
        call("clone", &[VDI_SELF, p("driver_params", t::STR_MAP, "Optional parameters that are passed through to the backend driver in order to specify storage-type-specific clone options")], Some(VDI), OP_ERRS, Role::VmAdmin, "Take an exact copy of the VDI and return a reference to the new disk.").asyn(),
        call("copy", &[VDI_SELF, p("sr", SR, "The destination SR")], Some(VDI), &[&codes::SR_FULL, &codes::OPERATION_NOT_ALLOWED], Role::VmAdmin, "Copy either a full VDI or the block differences between two VDIs into either a fresh VDI or an existing VDI.").asyn(),
        call("resize", &[VDI_SELF, p("size", INT, "The new size of the VDI")], None, &[&codes::SR_FULL, &codes::VDI_IN_USE, &codes::OPERATION_NOT_ALLOWED], Role::VmAdmin, "Resize the VDI.").asyn(),
        call("forget", &[VDI_SELF], None, OP_ERRS, Role::VmAdmin, "Removes a VDI record from the database").asyn(),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::VmAdmin,
    stored: true,
};

const VBD_SELF: Param = p("self", VBD, "The VBD");

/// A virtual block device.
pub static VBD_CLASS: Class = Class {
    name: "VBD",
    doc: "A virtual block device",
    fields: &[
        UUID,
        allowed_ops(&VBD_OPS),
        current_ops(&VBD_OPS),
        sro("VM", Ty::Ref("VM"), "the virtual machine"),
        sro("VDI", VDI, "the virtual disk").def(D::Null),
        dro("device", Ty::String, "device seen by the guest e.g. hda1").def(D::Str("")),
        rw("userdevice", Ty::String, "user-friendly device name e.g. 0,1,2,etc.").def(D::Str("autodetect")),
        rw("bootable", Ty::Bool, "true if this VBD is bootable").def(D::Bool(false)),
        rw("mode", Ty::Enum(&VBD_MODE), "the mode the VBD should be mounted with").def(D::Str("RW")),
        rw("type", Ty::Enum(&VBD_TYPE), "how the VBD will appear to the guest (e.g. disk or CD)").def(D::Str("Disk")),
        rw("unpluggable", Ty::Bool, "true if this VBD will support hot-unplug").def(D::Bool(true)),
        dro("storage_lock", Ty::Bool, "true if a storage level lock was acquired").def(D::Bool(false)),
        sro("empty", Ty::Bool, "if true this represents an empty drive").def(D::Bool(false)),
        OTHER_CONFIG,
        dro("currently_attached", Ty::Bool, "is the device currently attached (erased on reboot)").def(D::Bool(false)),
        dro("status_code", INT, "error/success code associated with last attach-operation (erased on reboot)").def(D::Int(0)),
        dro("status_detail", Ty::String, "error/success information associated with last attach-operation status (erased on reboot)").def(D::Str("")),
        dro("runtime_properties", t::STR_MAP, "Device runtime properties").def(D::Empty),
        rw("qos_algorithm_type", Ty::String, "QoS algorithm to use").def(D::Str("")),
        rw("qos_algorithm_params", t::STR_MAP, "parameters for chosen QoS algorithm").def(D::Empty),
        dro("qos_supported_algorithms", t::STR_SET, "supported QoS algorithms for this VBD").def(D::Empty),
    ],
    messages: &[
        call("plug", &[VBD_SELF], None, OP_ERRS, Role::VmAdmin, "Hotplug the specified VBD, dynamically attaching it to the running VM").asyn(),
        call("unplug", &[VBD_SELF], None, OP_ERRS, Role::VmAdmin, "Hot-unplug the specified VBD, dynamically unattaching it from the running VM").asyn(),
        call("unplug_force", &[VBD_SELF], None, OP_ERRS, Role::VmAdmin, "Forcibly unplug the specified VBD").asyn(),
        call("eject", &[p("vbd", VBD, "The vbd representing the CDROM-like device")], None, OP_ERRS, Role::VmOperator, "Remove the media from the device and leave it empty").asyn(),
        call("insert", &[p("vbd", VBD, "The vbd representing the CDROM-like device"), p("vdi", VDI, "The new VDI to 'insert'")], None, OP_ERRS, Role::VmOperator, "Insert new media into the device").asyn(),
    ],
    lifecycle: Lifecycle::Generic,
    default_role: Role::VmAdmin,
    stored: true,
};
