//! XenAPI's wire formats.
//!
//! A XenAPI call is a method name and a list of [`Value`]s; its answer is a value or an
//! error code with string parameters. This crate turns those into and out of XML-RPC (at
//! `/`) and JSON-RPC (at `/jsonrpc`), both ways, so that fvd, the `fv` CLI and the tests
//! share one codec. It knows nothing of the object model: the `xapi` crate decides what a
//! value means.
//!
//! - [`xmlrpc`]: the server reads a [`Call`] with [`xmlrpc::parse_call`] and answers with
//!   [`xmlrpc::encode_response`]; a client does the reverse with [`xmlrpc::encode_call`] and
//!   [`xmlrpc::parse_response`].
//! - [`jsonrpc`]: the same four, plus the request's version and id, which the answer echoes.
//!
//! Every parser takes untrusted bytes: it refuses documents over its size limit
//! ([`MAX_CALL_LEN`], [`MAX_RESPONSE_LEN`]) and values nested deeper than [`MAX_DEPTH`], and
//! returns an [`Error`] (never panics) on anything it does not accept. Encoders take our
//! own values: they recurse once per level of nesting, as `Value`'s own drop does.

#![forbid(unsafe_code)]

mod error;
pub mod jsonrpc;
mod value;
pub mod xmlrpc;

use std::fmt;

pub use error::{Error, ErrorKind};
pub use value::Value;

/// The largest call body a server parses: XAPI's own limit on an RPC body
/// (`http_limit_max_rpc_size`, 300 KiB), so a client XAPI accepts is one we accept.
pub const MAX_CALL_LEN: usize = 300 * 1024;

/// The largest response body a client parses. Much larger than a call, since answers such
/// as `VM.get_all_records` grow with the pool, but still a bound.
pub const MAX_RESPONSE_LEN: usize = 256 * 1024 * 1024;

/// How deeply arrays and structs may nest inside one parameter or result. XenAPI's deepest
/// type is a map of sets or records (3 or 4); 64 leaves room and bounds the parsers' stack.
pub const MAX_DEPTH: usize = 64;

/// A parsed call: a method name and its positional parameters.
///
/// For a XenAPI call the first parameter is the session ref, except for the `session.login*`
/// calls; this crate does not look.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Vec<Value>,
}

impl Call {
    pub fn new(method: impl Into<String>, params: Vec<Value>) -> Self {
        Call {
            method: method.into(),
            params,
        }
    }
}

/// A XenAPI error as it travels: a code such as `VM_BAD_POWER_STATE` and its parameters.
///
/// On the wire this is `ErrorDescription` (XML-RPC, JSON-RPC 1.0) or the `message` and
/// `data` of a JSON-RPC 2.0 error; the Python SDK raises it as `XenAPI.Failure(details)`
/// with `details == [code, *params]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub params: Vec<String>,
}

impl Failure {
    /// The code a client gives an XML-RPC `<fault>`, with `[faultCode, faultString]` as its
    /// params; the same convention as XAPI's own OCaml client (ocaml-rpc's `xmlrpc.ml`).
    pub const FAULT: &'static str = "fault";

    pub fn new(code: impl Into<String>, params: Vec<String>) -> Self {
        Failure {
            code: code.into(),
            params,
        }
    }

    /// `[code, params...]`: XenAPI's `ErrorDescription`.
    pub fn description(&self) -> Vec<String> {
        let mut all = Vec::with_capacity(1 + self.params.len());
        all.push(self.code.clone());
        all.extend(self.params.iter().cloned());
        all
    }

    /// The reverse of [`Failure::description`], from the values of an `ErrorDescription`.
    /// XAPI sends only strings; ints are taken as their decimal text, being how XML-RPC
    /// carries them anyway.
    fn from_description(items: Vec<Value>) -> Result<Self, Error> {
        let mut strings = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(s) => strings.push(s),
                Value::Int(i) => strings.push(i.to_string()),
                _ => return Err(Error::structure("ErrorDescription holds a non-string")),
            }
        }
        if strings.is_empty() {
            return Err(Error::structure("ErrorDescription is empty"));
        }
        let code = strings.remove(0);
        Ok(Failure {
            code,
            params: strings,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.params.is_empty() {
            write!(f, ": {}", self.params.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// Shortens untrusted text quoted in an error message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_is_its_error_description() {
        let f = Failure::new(
            "VM_BAD_POWER_STATE",
            vec!["OpaqueRef:1".into(), "halted".into()],
        );
        assert_eq!(
            f.description(),
            ["VM_BAD_POWER_STATE", "OpaqueRef:1", "halted"]
        );
        assert_eq!(f.to_string(), "VM_BAD_POWER_STATE: OpaqueRef:1, halted");
        assert_eq!(Failure::new("X", vec![]).to_string(), "X");
        let items = vec![Value::from("E"), Value::Int(-3), Value::from("")];
        assert_eq!(
            Failure::from_description(items).unwrap(),
            Failure::new("E", vec!["-3".into(), "".into()])
        );
        assert!(Failure::from_description(vec![]).is_err());
        assert!(Failure::from_description(vec![Value::Bool(true)]).is_err());
    }

    #[test]
    fn errors_have_kinds() {
        let long = Error::check_body(&[b' '; 11], 10).unwrap_err();
        assert_eq!(long.kind(), ErrorKind::Limit);
        assert_eq!(
            long.to_string(),
            "document is 11 bytes, over the limit of 10"
        );
        assert_eq!(
            Error::check_body(b"\xc3", 10).unwrap_err().kind(),
            ErrorKind::Syntax
        );
        assert_eq!(Error::check_body("\u{feff}x".as_bytes(), 10).unwrap(), "x");
    }

    #[test]
    fn excerpts_cut_long_text_on_a_char_boundary() {
        assert_eq!(excerpt("short"), "short");
        let cut = excerpt(&"é".repeat(100));
        assert_eq!(cut, format!("{}...", "é".repeat(40)));
    }
}
