//! `fv`, Ferrovisor's command-line client, in the manner of XenServer's `xe`.
//!
//! Its commands are derived from the XenAPI object model (`fv_xapi::model`) at run time:
//! [`commands`] says how. It speaks XML-RPC (or JSON-RPC) to fvd over HTTPS, plain HTTP or
//! the local Unix socket ([`client`], [`http`], [`tls`]), and prints records as xe does or
//! as JSON ([`output`]).
//!
//! - [`args`]: the command line (xe's `-s/-u/-pw`, `key=value`, `--flags`).
//! - [`run`]: parameters checked against the model, then the calls; long calls run as
//!   `Async.` tasks followed with `event.from`.
//! - [`help`], [`complete`]: help text and shell completion from the same table.

#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod commands;
pub mod complete;
pub mod error;
pub mod help;
pub mod http;
pub mod output;
pub mod run;
pub mod tls;
pub mod values;

pub use error::Error;
