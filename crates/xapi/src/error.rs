//! XenAPI error codes, declared once with their parameter names, and the crate's errors.
//!
//! A failed XenAPI call answers an `ErrorDescription`: the code then its string parameters.
//! [`ApiError`] is that list; [`codes`] declares each code the toolstack may answer.

use fv_rpc::Value;

/// A XenAPI error code and the names of its parameters, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorCode {
    pub name: &'static str,
    pub params: &'static [&'static str],
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $id:ident [$($p:literal),*] )*) => {
        $( $(#[$doc])* pub const $id: ErrorCode = ErrorCode { name: stringify!($id), params: &[$($p),*] }; )*
        /// Every declared code, for docs and consistency checks.
        pub const ALL: &[&ErrorCode] = &[$(&$id),*];
    };
}

/// The error codes, spelt and parameterised as XenAPI.
pub mod codes {
    use super::ErrorCode;
    error_codes! {
        /// Wrong user name or password.
        SESSION_AUTHENTICATION_FAILED ["username", "message"]
        /// The session reference is unknown or logged out.
        SESSION_INVALID ["handle"]
        /// A reference names no object of the class.
        HANDLE_INVALID ["class", "handle"]
        /// A UUID names no object of the class.
        UUID_INVALID ["class", "uuid"]
        /// No such method.
        MESSAGE_METHOD_UNKNOWN ["method"]
        /// Wrong number of parameters (the session included).
        MESSAGE_PARAMETER_COUNT_MISMATCH ["method", "expected", "received"]
        /// A parameter or record field of the wrong type.
        FIELD_TYPE_ERROR ["field"]
        /// A value the field does not accept.
        INVALID_VALUE ["field", "value"]
        /// The session's role may not make the call.
        RBAC_PERMISSION_DENIED ["permission", "message"]
        /// The VM is not in the power state the operation needs.
        VM_BAD_POWER_STATE ["vm", "expected", "actual"]
        /// Templates cannot be started.
        VM_IS_TEMPLATE ["vm"]
        /// Memory limits must satisfy static_min <= dynamic_min <= dynamic_max <= static_max.
        MEMORY_CONSTRAINT_VIOLATION ["constraint"]
        /// The guest did not shut down within the time given.
        VM_SHUTDOWN_TIMEOUT ["vm", "timeout"]
        /// Another operation holds the object.
        OTHER_OPERATION_IN_PROGRESS ["class", "object", "operation_type"]
        /// The operation is not allowed now.
        OPERATION_NOT_ALLOWED ["reason"]
        /// The operation was blocked through `blocked_operations`.
        OPERATION_BLOCKED ["ref", "code"]
        /// No host can run the VM.
        NO_HOSTS_AVAILABLE []
        /// Not enough space in the SR.
        SR_FULL ["requested", "maximum"]
        /// The VDI is in use.
        VDI_IN_USE ["vdi", "operation"]
        /// A device of that number already exists.
        DEVICE_ALREADY_EXISTS ["device"]
        /// The device is already attached to the running VM.
        DEVICE_ALREADY_ATTACHED ["device"]
        /// The device is not attached to the running VM.
        DEVICE_ALREADY_DETACHED ["device"]
        /// The VM refused to let go of the device.
        DEVICE_DETACH_REJECTED ["type", "ref", "msg"]
        /// Something went wrong inside the toolstack.
        INTERNAL_ERROR ["message"]
        /// `add_to_<map>` of a key already present.
        MAP_DUPLICATE_KEY ["type", "param_name", "uuid", "key"]
        /// A value that must be unique already exists.
        DB_UNIQUENESS_CONSTRAINT_VIOLATION ["table", "field", "value"]
        /// The task was cancelled.
        TASK_CANCELLED ["task"]
        /// The event token is older than the kept history: register again.
        EVENTS_LOST []
        /// The event token could not be parsed.
        EVENT_FROM_TOKEN_PARSE_FAILURE ["token"]
        /// An event class subscription could not be parsed.
        EVENT_SUBSCRIPTION_PARSE_FAILURE ["subscription"]
        /// The SR's type cannot do the operation (a VDI.create on an ISO library).
        SR_OPERATION_NOT_SUPPORTED ["sr"]
        /// The SR's backend (LVM, a mount) failed; the message says what it said.
        SR_BACKEND_FAILURE ["status", "stdout", "stderr"]
        /// The NFS server or export could not be mounted.
        SR_BACKEND_FAILURE_73 ["status", "stdout", "stderr"]
        /// The VBD is not a CD drive: it has no media to insert or eject.
        VBD_NOT_REMOVABLE_MEDIA ["vbd"]
        /// The drive already holds media: eject it first.
        VBD_NOT_EMPTY ["vbd"]
        /// The drive is empty: there is nothing to eject.
        VBD_IS_EMPTY ["vbd"]
        /// The network cannot be destroyed while VIFs are on it.
        NETWORK_CONTAINS_VIF ["vifs"]
        /// The call exists in XenAPI but is not implemented here.
        NOT_IMPLEMENTED ["function"]
    }
}

/// A XenAPI error: a code and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub params: Vec<String>,
}

impl ApiError {
    /// An error of `code` with `params` in the declared order.
    pub fn new<I, S>(code: &'static ErrorCode, params: I) -> ApiError
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let params: Vec<String> = params.into_iter().map(Into::into).collect();
        debug_assert_eq!(params.len(), code.params.len(), "params of {}", code.name);
        ApiError {
            code: code.name,
            params,
        }
    }

    pub fn handle_invalid(class: &str, r: &str) -> ApiError {
        ApiError::new(&codes::HANDLE_INVALID, [class, r])
    }

    pub fn uuid_invalid(class: &str, uuid: &str) -> ApiError {
        ApiError::new(&codes::UUID_INVALID, [class, uuid])
    }

    pub fn field_type(field: &str) -> ApiError {
        ApiError::new(&codes::FIELD_TYPE_ERROR, [field])
    }

    pub fn internal(msg: impl std::fmt::Display) -> ApiError {
        ApiError::new(&codes::INTERNAL_ERROR, [msg.to_string()])
    }

    pub fn method_unknown(method: &str) -> ApiError {
        ApiError::new(&codes::MESSAGE_METHOD_UNKNOWN, [method])
    }

    pub fn count_mismatch(method: &str, expected: usize, received: usize) -> ApiError {
        ApiError::new(
            &codes::MESSAGE_PARAMETER_COUNT_MISMATCH,
            [
                method.to_owned(),
                expected.to_string(),
                received.to_string(),
            ],
        )
    }

    /// XenAPI's `ErrorDescription`: the code then the parameters.
    pub fn description(&self) -> Vec<String> {
        std::iter::once(self.code.to_owned())
            .chain(self.params.iter().cloned())
            .collect()
    }

    /// The `ErrorDescription` as a wire value (an array of strings).
    pub fn to_value(&self) -> Value {
        Value::Array(self.description().into_iter().map(Value::String).collect())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.description().join(" "))
    }
}

impl std::error::Error for ApiError {}

/// What went wrong below the API: opening or using the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database schema {found} does not match the model's {expected}; no migration was given"
    )]
    SchemaMismatch { found: String, expected: String },
    #[error("database migration from schema {from}: {reason}")]
    Migration { from: String, reason: String },
    #[error("stored value of {class}.{field} is corrupt: {reason}")]
    Corrupt {
        class: String,
        field: String,
        reason: String,
    },
    #[error("password hashing: {0}")]
    Password(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Api(a) => a,
            other => {
                // The whole chain, once.
                let mut msg = other.to_string();
                let mut src = std::error::Error::source(&other);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                ApiError::internal(msg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_named_as_declared() {
        let mut names: Vec<&str> = codes::ALL.iter().map(|c| c.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        assert_eq!(codes::HANDLE_INVALID.name, "HANDLE_INVALID");
    }

    #[test]
    fn description_is_code_then_params() {
        let e = ApiError::handle_invalid("VM", "OpaqueRef:x");
        assert_eq!(e.description(), ["HANDLE_INVALID", "VM", "OpaqueRef:x"]);
        let e = ApiError::count_mismatch("VM.start", 4, 2);
        assert_eq!(e.params, ["VM.start", "4", "2"]);
    }
}
