//! Reading fields of records inside a transaction, as the daemon's code needs them.

use fv_xapi::db::Tx;
use fv_xapi::{ApiError, Value};

/// A string field (refs, enums and uuids included); empty if it is not a string.
pub fn text(tx: &Tx<'_>, class: &str, r: &str, field: &str) -> Result<String, ApiError> {
    Ok(tx
        .get(class, r, field)?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// A set-of-refs field (a derived one included), as strings.
pub fn refs(tx: &Tx<'_>, class: &str, r: &str, field: &str) -> Result<Vec<String>, ApiError> {
    Ok(match tx.get(class, r, field)? {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    })
}

/// One string entry of a map value.
pub fn map_get(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Struct(m) => m.get(key).and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}
