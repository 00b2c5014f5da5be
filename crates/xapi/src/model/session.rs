//! session, user, role, task, event and message: the toolstack's own classes.
//!
//! Their messages are served by this crate (see `dispatch::builtin`), not by the daemon.

use super::common::*;
use super::types::{call, dro, p, rw, sro, t, Class, Default as D, EnumType, Lifecycle, Role, Ty};
use crate::error::codes;

pub const TASK_STATUS: EnumType = EnumType {
    name: "task_status_type",
    values: &["pending", "success", "failure", "cancelling", "cancelled"],
};

pub const TASK_ALLOWED_OPERATIONS: EnumType = EnumType {
    name: "task_allowed_operations",
    values: &["cancel", "destroy"],
};

pub const EVENT_OPERATION: EnumType = EnumType {
    name: "event_operation",
    values: &["add", "del", "mod"],
};

pub const MESSAGE_CLS: EnumType = EnumType {
    name: "cls",
    values: &[
        "VM",
        "Host",
        "SR",
        "Pool",
        "VMPP",
        "VMSS",
        "PVS_proxy",
        "VDI",
        "Certificate",
    ],
};

const TASK_OPS: Ty = Ty::Enum(&TASK_ALLOWED_OPERATIONS);
const TASK: Ty = Ty::Ref("task");
const SESSION: Ty = Ty::Ref("session");

/// A session.
pub static SESSION_CLASS: Class = Class {
    name: "session",
    doc: "A session",
    fields: &[
        UUID,
        dro("this_host", Ty::Ref("host"), "Currently connected host").def(D::Null),
        dro("this_user", Ty::Ref("user"), "Currently connected user").def(D::Null),
        dro("last_active", Ty::DateTime, "Timestamp for last time session was active").def(D::Never),
        dro("pool", Ty::Bool, "True if this session relates to a intra-pool login, false otherwise").def(D::Bool(false)),
        OTHER_CONFIG,
        dro("is_local_superuser", Ty::Bool, "true iff this session was created using local superuser credentials").def(D::Bool(false)),
        dro("validation_time", Ty::DateTime, "time when session was last validated").def(D::Never),
        dro("auth_user_sid", Ty::String, "the subject identifier of the user that was externally authenticated.").def(D::Str("")),
        dro("auth_user_name", Ty::String, "the subject name of the user that was externally authenticated.").def(D::Str("")),
        dro("rbac_permissions", t::STR_SET, "list with all RBAC permissions for this session (here: the names of the roles it holds)").def(D::Empty),
        dro("parent", SESSION, "references the parent session that created this session").def(D::Null),
        dro("originator", Ty::String, "a key string provided by a API user to distinguish itself from other users sharing the same login name").def(D::Str("")),
        dro("client_certificate", Ty::Bool, "indicates whether this session was authenticated using a client certificate").def(D::Bool(false)),
    ],
    messages: &[
        call(
            "login_with_password",
            &[
                p("uname", Ty::String, "Username for login."),
                p("pwd", Ty::String, "Password for login."),
                p("version", Ty::String, "Client API version."),
                p("originator", Ty::String, "Key string for distinguishing different API users sharing the same login name."),
            ],
            Some(SESSION),
            &[&codes::SESSION_AUTHENTICATION_FAILED],
            Role::ReadOnly,
            "Attempt to authenticate the user, returning a session reference if successful",
        ),
        call("logout", &[], None, &[], Role::ReadOnly, "Log out of a session"),
        call(
            "change_password",
            &[
                p("old_pwd", Ty::String, "Old password for account"),
                p("new_pwd", Ty::String, "New password for account"),
            ],
            None,
            &[&codes::SESSION_AUTHENTICATION_FAILED],
            Role::ReadOnly,
            "Change the account password of the session's user",
        ),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolAdmin,
    stored: true,
};

/// A local user of the system (XenAPI's `user` class); its password and role are private.
pub static USER: Class = Class {
    name: "user",
    doc: "A user of the system",
    fields: &[
        UUID,
        sro("short_name", Ty::String, "short name (e.g. userid)"),
        rw("fullname", Ty::String, "full name").def(D::Str("")),
        OTHER_CONFIG,
    ],
    messages: &[
        call(
            "create_local",
            &[
                p("short_name", Ty::String, "The user's login name"),
                p("password", Ty::String, "The user's password"),
                p(
                    "role",
                    Ty::String,
                    "The name of the user's role, e.g. vm-operator",
                ),
            ],
            Some(Ty::Ref("user")),
            &[
                &codes::DB_UNIQUENESS_CONSTRAINT_VIOLATION,
                &codes::INVALID_VALUE,
            ],
            Role::PoolAdmin,
            "Ferrovisor: creates a local user who logs in with this password and has this role",
        ),
        call(
            "set_role",
            &[
                p("self", Ty::Ref("user"), "The user"),
                p("role", Ty::String, "The name of the new role"),
            ],
            None,
            &[&codes::INVALID_VALUE],
            Role::PoolAdmin,
            "Ferrovisor: changes a local user's role; it applies to their open sessions at once",
        ),
        call(
            "set_password",
            &[
                p("self", Ty::Ref("user"), "The user"),
                p("password", Ty::String, "The new password"),
            ],
            None,
            &[],
            Role::PoolAdmin,
            "Ferrovisor: sets a local user's password",
        ),
        call(
            "get_role",
            &[p("self", Ty::Ref("user"), "The user")],
            Some(Ty::String),
            &[],
            Role::PoolAdmin,
            "Ferrovisor: the name of a local user's role",
        ),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolAdmin,
    stored: true,
};

/// A set of permissions associated with a subject.
pub static ROLE: Class = Class {
    name: "role",
    doc: "A set of permissions associated with a subject",
    fields: &[
        UUID,
        sro("name_label", Ty::String, "a short user-friendly name for the role"),
        sro("name_description", Ty::String, "what this role is for").def(D::Str("")),
        sro("subroles", Ty::Set(&Ty::Ref("role")), "a list of pointers to other roles or permissions").def(D::Empty),
        sro("is_internal", Ty::Bool, "Indicates whether the role is only to be assigned internally by xapi, or can be used by clients").def(D::Bool(false)),
    ],
    messages: &[],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolAdmin,
    stored: true,
};

/// A long-running asynchronous task.
pub static TASK_CLASS: Class = Class {
    name: "task",
    doc: "A long-running asynchronous task",
    fields: &[
        UUID,
        dro("name_label", Ty::String, "a human-readable name").def(D::Str("")),
        dro("name_description", Ty::String, "a notes field containing human-readable description").def(D::Str("")),
        allowed_ops(&TASK_OPS),
        current_ops(&TASK_OPS),
        dro("created", Ty::DateTime, "Time task was created").def(D::Never),
        dro("finished", Ty::DateTime, "Time task finished (i.e. succeeded or failed). If task-status is pending, then the value of this field has no meaning").def(D::Never),
        dro("status", Ty::Enum(&TASK_STATUS), "current status of the task").def(D::Str("pending")),
        dro("resident_on", Ty::Ref("host"), "the host on which the task is running").def(D::Null),
        dro("progress", Ty::Float, "This field contains the estimated fraction of the task which is complete. This field should not be used to determine whether the task is complete - for this the status field of the task should be used.").def(D::Float(0.0)),
        dro("type", Ty::String, "if the task has completed successfully, this field contains the type of the encoded result (i.e. name of the class whose reference is in the result field). Undefined otherwise.").def(D::Str("")),
        dro("result", Ty::String, "if the task has completed successfully, this field contains the result value (either Void or an object reference). Undefined otherwise.").def(D::Str("")),
        dro("error_info", t::STR_SET, "if the task has failed, this field contains the set of associated error strings. Undefined otherwise.").def(D::Empty),
        rw("other_config", t::STR_MAP, "additional configuration").def(D::Empty).writer(Role::ReadOnly),
        dro("subtask_of", TASK, "Ref pointing to the task this is a substask of.").def(D::Null),
        dro("subtasks", Ty::Set(&TASK), "List pointing to all the substasks."),
        dro("backtrace", Ty::String, "Function call trace for debugging.").def(D::Str("")),
    ],
    messages: &[
        call(
            "create",
            &[
                p("label", Ty::String, "short label for the new task"),
                p("description", Ty::String, "longer description for the new task"),
            ],
            Some(TASK),
            &[],
            Role::ReadOnly,
            "Create a new task object which must be manually destroyed.",
        ),
        call("destroy", &[p("self", TASK, "Reference to the task object")], None, &[], Role::ReadOnly, "Destroy the task object"),
        call("cancel", &[p("task", TASK, "The task")], None, &[&codes::OPERATION_NOT_ALLOWED], Role::ReadOnly, "Request that a task be cancelled. Note that a task may fail to be cancelled and may complete or fail normally and note that, even when a task does cancel, it might take an arbitrary amount of time.").asyn(),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::ReadOnly,
    stored: true,
};

/// Asynchronous event registration and handling (not stored).
pub static EVENT: Class = Class {
    name: "event",
    doc: "Asynchronous event registration and handling",
    fields: &[
        dro("id", Ty::Int, "An ID, monotonically increasing, and local to the current session"),
        dro("timestamp", Ty::DateTime, "The time at which the event occurred"),
        dro("class", Ty::String, "The name of the class of the object that changed"),
        dro("operation", Ty::Enum(&EVENT_OPERATION), "The operation that was performed"),
        dro("ref", Ty::String, "A reference to the object that changed"),
    ],
    messages: &[
        call(
            "from",
            &[
                p("classes", t::STR_SET, "register for events for the indicated classes"),
                p("token", Ty::String, "A token representing the point from which to generate database events. The empty string represents the beginning."),
                p("timeout", Ty::Float, "Return after this many seconds if no events match"),
            ],
            Some(Ty::Record("event")),
            &[&codes::EVENTS_LOST, &codes::EVENT_FROM_TOKEN_PARSE_FAILURE],
            Role::ReadOnly,
            "Blocking call which returns a new token and a (possibly empty) batch of events: a struct {events, valid_ref_counts, token}.",
        )
        .pure(),
        call("get_current_id", &[], Some(Ty::Int), &[], Role::ReadOnly, "Return the ID of the next event to be generated by the system").pure(),
        call(
            "inject",
            &[
                p("class", Ty::String, "class of the object"),
                p("ref", Ty::String, "A reference to the object that will be changed."),
            ],
            Some(Ty::String),
            &[&codes::HANDLE_INVALID],
            Role::ReadOnly,
            "Injects an artificial event on the given object and returns the corresponding ID in the form of a token, which can be used as a point of reference for database events.",
        ),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::ReadOnly,
    stored: false,
};

/// An message for the attention of the administrator.
pub static MESSAGE: Class = Class {
    name: "message",
    doc: "An message for the attention of the administrator",
    fields: &[
        UUID,
        dro("name", Ty::String, "The name of the message").def(D::Str("")),
        dro(
            "priority",
            Ty::Int,
            "The message priority, 0 being low priority",
        )
        .def(D::Int(0)),
        dro(
            "cls",
            Ty::Enum(&MESSAGE_CLS),
            "The class of the object this message is associated with",
        )
        .def(D::Str("VM")),
        dro(
            "obj_uuid",
            Ty::String,
            "The uuid of the object this message is associated with",
        )
        .def(D::Str("")),
        dro(
            "timestamp",
            Ty::DateTime,
            "The time at which the message was created",
        )
        .def(D::Never),
        dro("body", Ty::String, "The body of the message").def(D::Str("")),
    ],
    messages: &[
        call(
            "create",
            &[
                p("name", Ty::String, "The name of the message"),
                p("priority", Ty::Int, "The priority of the message"),
                p(
                    "cls",
                    Ty::Enum(&MESSAGE_CLS),
                    "The class of object this message is associated with",
                ),
                p(
                    "obj_uuid",
                    Ty::String,
                    "The uuid of the object this message is associated with",
                ),
                p("body", Ty::String, "The body of the message"),
            ],
            Some(Ty::Ref("message")),
            &[],
            Role::PoolOperator,
            "Create a message",
        ),
        call(
            "destroy",
            &[p(
                "self",
                Ty::Ref("message"),
                "The reference of the message to destroy",
            )],
            None,
            &[],
            Role::PoolOperator,
            "Destroy a message",
        ),
        call(
            "get_since",
            &[p("since", Ty::DateTime, "The cutoff time")],
            Some(Ty::Map(&Ty::Ref("message"), &Ty::Record("message"))),
            &[],
            Role::ReadOnly,
            "Get the messages created after the given time",
        )
        .pure(),
    ],
    lifecycle: Lifecycle::Internal,
    default_role: Role::PoolOperator,
    stored: true,
};
