//! XenAPI's wire formats.
//!
//! A XenAPI call is a method name and a list of [`Value`]s; its answer is a value or an
//! error code with string parameters. This crate turns those into and out of XML-RPC (at
//! `/`) and JSON-RPC (at `/jsonrpc`), both ways, so that fvd, the `fv` CLI and the tests
//! share one codec. It knows nothing of the object model: the `xapi` crate decides what a
//! value means.

#![forbid(unsafe_code)]

mod value;

pub use value::Value;
