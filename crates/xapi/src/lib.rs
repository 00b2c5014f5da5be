//! The XenAPI object model, its database, sessions and roles, generic calls, events and
//! tasks: everything of the toolstack that is not I/O to VMs.
//!
//! - [`model`]: the classes, fields, messages and relations, declared once as data.
//! - [`db`]: SQLite storage derived from the model.
//! - [`Api`]: dispatch of a call (`VM.get_record`, `Async.VM.start`...) with session and
//!   role checks; custom messages go to the daemon's [`Actions`].
//! - [`auth`], [`events`], [`task`]: sessions and users, `event.from`, tasks.

#![forbid(unsafe_code)]

pub mod auth;
pub mod db;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod generic;
pub mod model;
pub mod task;
pub mod time;

pub use dispatch::{Actions, Api, CallContext, NoActions};
pub use error::{ApiError, Error};
pub use fv_rpc::Value;
