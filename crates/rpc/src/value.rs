//! The one value type of both wire formats.

use std::collections::BTreeMap;

/// A XenAPI value as it travels.
///
/// XenAPI's conventions, which the codecs apply:
/// - `Int` is a 64-bit integer. XML-RPC's `<int>` is 32-bit, so XenAPI sends ints as
///   strings there; the XML-RPC encoder does the same, and readers of an int accept both.
/// - Refs, UUIDs and enum values are `String`s.
/// - Sets are `Array`s; maps and records are `Struct`s (map keys are always strings).
/// - A call with no result answers `String("")`, as XAPI does.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// XenAPI's `dateTime.iso8601` text, `YYYYMMDDTHH:MM:SSZ`, always UTC.
    DateTime(String),
    Array(Vec<Value>),
    Struct(BTreeMap<String, Value>),
}

impl Value {
    /// The empty answer of a call that returns nothing.
    pub fn void() -> Self {
        Value::String(String::new())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An int as XenAPI clients send it: a number, or a string holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
