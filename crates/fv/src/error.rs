//! Why a command failed, and the exit status it gives.

use fv_rpc::Failure;

/// Everything `fv` can fail with. Printed once, with its whole `source` chain, by `main`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong: unknown command, missing or unknown parameter, bad value.
    #[error("{0}")]
    Usage(String),
    /// The server answered a XenAPI error.
    #[error("{}", explain(.0))]
    Api(Failure),
    /// Connecting to fvd failed.
    #[error("cannot connect to {target} (is fvd running there?)")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file or the connection.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS set-up or handshake failed; the text says what to do about it.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server's HTTP answer is not one we understand.
    #[error("HTTP: {0}")]
    Http(String),
    /// The body of the answer is not a XenAPI response.
    #[error("malformed response from the server")]
    Protocol(#[source] fv_rpc::Error),
    /// Something the server answered does not make sense (a record that is not a struct...).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// An object named on the command line does not exist, or is ambiguous.
    #[error("{0}")]
    NotFound(String),
    /// The user interrupted a wait (Ctrl-C) or a task was cancelled.
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// The process exit status: 2 for a bad command line, 130 for an interruption (as a
    /// shell reports SIGINT), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Interrupted(_) => 130,
            _ => 1,
        }
    }

    /// The message and its causes, one line: `a: b: c`.
    pub fn chain(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    }
}

/// A XenAPI failure as the user reads it: the code and its parameters on the first line
/// (named after the model's declaration where it has one), then a sentence for the
/// common codes.
pub fn explain(f: &Failure) -> String {
    let declared = fv_xapi::error::codes::ALL
        .iter()
        .find(|c| c.name == f.code)
        .map(|c| c.params)
        .unwrap_or(&[]);
    let mut out = format!("The server failed to handle your request: {}", f.code);
    for (i, p) in f.params.iter().enumerate() {
        match declared.get(i) {
            Some(name) => out.push_str(&format!("\n  {name}: {p}")),
            None => out.push_str(&format!("\n  {p}")),
        }
    }
    if let Some(s) = sentence(f) {
        out.push('\n');
        out.push_str(&s);
    }
    out
}

fn param(f: &Failure, i: usize) -> &str {
    f.params.get(i).map_or("", String::as_str)
}

/// A sentence for the codes a user meets most.
fn sentence(f: &Failure) -> Option<String> {
    let s = match f.code.as_str() {
        "SESSION_AUTHENTICATION_FAILED" => {
            "The user name or password is wrong (-u USER, -pw PASSWORD or -pwf FILE).".into()
        }
        "SESSION_INVALID" => "The session has expired or was logged out; run the command again.".into(),
        "HANDLE_INVALID" => format!(
            "The {} named does not exist (any more).",
            param(f, 0)
        ),
        "UUID_INVALID" => format!("There is no {} with uuid {}.", param(f, 0), param(f, 1)),
        "VM_BAD_POWER_STATE" => format!(
            "The VM must be {} for this, but it is {}.",
            param(f, 1),
            param(f, 2)
        ),
        "VM_IS_TEMPLATE" => "Templates cannot be started; install a VM from it with vm-install.".into(),
        "OTHER_OPERATION_IN_PROGRESS" => format!(
            "Another operation ({}) is in progress on the {}; wait for it or cancel its task.",
            param(f, 2),
            param(f, 0)
        ),
        "OPERATION_NOT_ALLOWED" => format!("Not allowed now: {}", param(f, 0)),
        "RBAC_PERMISSION_DENIED" => format!(
            "Your role does not allow {}; log in as a user with a stronger role.",
            param(f, 0)
        ),
        "MESSAGE_METHOD_UNKNOWN" => {
            "The server does not know this call: is fvd older than this fv?".into()
        }
        "MESSAGE_PARAMETER_COUNT_MISMATCH" => {
            "The server expects other parameters for this call: is fvd of another version than this fv?".into()
        }
        "NOT_IMPLEMENTED" => format!("{} is not implemented by this server yet.", param(f, 0)),
        "MAP_DUPLICATE_KEY" => format!(
            "The key {} is already in {}; remove it first.",
            param(f, 3),
            param(f, 1)
        ),
        "TASK_CANCELLED" => "The task was cancelled.".into(),
        "NO_HOSTS_AVAILABLE" => "No host can run this VM now (enough memory? host enabled?).".into(),
        "SR_FULL" => "The storage repository has not enough free space.".into(),
        "VDI_IN_USE" => "The disk is in use by a VM.".into(),
        _ => return None,
    };
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_explained_with_their_declared_parameter_names() {
        let f = Failure::new(
            "VM_BAD_POWER_STATE",
            vec!["OpaqueRef:1".into(), "Halted".into(), "Running".into()],
        );
        let text = explain(&f);
        assert!(text.contains("VM_BAD_POWER_STATE"), "{text}");
        assert!(text.contains("vm: OpaqueRef:1"), "{text}");
        assert!(
            text.contains("must be Halted for this, but it is Running"),
            "{text}"
        );
        // An unknown code keeps its parameters, unnamed, and has no sentence.
        let text = explain(&Failure::new("SOMETHING_NEW", vec!["x".into()]));
        assert_eq!(
            text,
            "The server failed to handle your request: SOMETHING_NEW\n  x"
        );
        // Missing parameters never panic.
        assert!(explain(&Failure::new("VM_BAD_POWER_STATE", vec![])).contains("must be"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::Interrupted("x".into()).exit_code(), 130);
        assert_eq!(Error::Api(Failure::new("X", vec![])).exit_code(), 1);
        let e = Error::io("reading f")(std::io::Error::other("boom"));
        assert_eq!(e.chain(), "reading f: boom");
    }
}
