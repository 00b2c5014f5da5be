//! Values in and out: client input checked against a field's type, and typed values to and
//! from SQLite columns (scalars as themselves, sets and maps as JSON text, refs as text or
//! NULL).

use std::collections::BTreeMap;

use fv_rpc::Value;
use rusqlite::types::{Value as Sql, ValueRef};
use serde_json::Value as Json;

use crate::error::{codes, ApiError};
use crate::model::Ty;
use crate::time;

/// XenAPI's null reference.
pub const NULL_REF: &str = "OpaqueRef:NULL";

/// Whether `r` is the null reference (XAPI also takes the empty string as null).
pub fn is_null_ref(r: &str) -> bool {
    r.is_empty() || r == NULL_REF
}

/// A fresh reference, XAPI's form.
pub fn new_ref() -> String {
    format!("OpaqueRef:{}", new_uuid())
}

/// `n` bytes from the OS's CSPRNG. Failure to get randomness means the host is broken;
/// refs and salts must not be predictable, so there is no fallback.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // getrandom fails only without an OS entropy source, which Linux always has.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut b).expect("the OS random source");
    b
}

/// A fresh random (version 4) UUID.
pub fn new_uuid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Checks a client's `v` against `ty`, returning it in canonical form (ints from strings,
/// dates normalised, null refs as `OpaqueRef:NULL`). `name` names the field or parameter
/// in the error.
pub fn coerce(ty: &Ty, v: &Value, name: &str) -> Result<Value, ApiError> {
    let bad = || ApiError::field_type(name);
    Ok(match *ty {
        Ty::String => Value::String(v.as_str().ok_or_else(bad)?.to_owned()),
        Ty::Int => Value::Int(v.as_int().ok_or_else(bad)?),
        Ty::Float => Value::Float(match v {
            Value::Float(f) => *f,
            // Lossy for huge ints, as XAPI's float parameters are.
            #[allow(clippy::cast_precision_loss)]
            Value::Int(i) => *i as f64,
            Value::String(s) => s.trim().parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }),
        Ty::Bool => Value::Bool(match v {
            Value::Bool(b) => *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") => true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => false,
            _ => return Err(bad()),
        }),
        Ty::DateTime => {
            let s = match v {
                Value::DateTime(s) | Value::String(s) => s,
                _ => return Err(bad()),
            };
            Value::DateTime(time::normalize(s).ok_or_else(bad)?)
        }
        Ty::Enum(e) => {
            let s = v.as_str().ok_or_else(bad)?;
            if !e.has(s) {
                return Err(ApiError::new(&codes::INVALID_VALUE, [name, s]));
            }
            Value::String(s.to_owned())
        }
        Ty::Ref(_) => {
            let s = v.as_str().ok_or_else(bad)?;
            if is_null_ref(s) {
                Value::String(NULL_REF.to_owned())
            } else if s.starts_with("OpaqueRef:") {
                Value::String(s.to_owned())
            } else {
                return Err(bad());
            }
        }
        Ty::Set(t) => match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| coerce(t, i, name))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(bad()),
        },
        Ty::Map(k, t) => match v {
            Value::Struct(m) => {
                let mut out = BTreeMap::new();
                for (key, val) in m {
                    out.insert(coerce_key(k, key, name)?, coerce(t, val, name)?);
                }
                Value::Struct(out)
            }
            _ => return Err(bad()),
        },
        Ty::Record(_) => match v {
            Value::Struct(_) => v.clone(),
            _ => return Err(bad()),
        },
    })
}

/// A map key (always a string on the wire) checked against the key type.
pub fn coerce_key(k: &Ty, key: &str, name: &str) -> Result<String, ApiError> {
    match coerce(k, &Value::String(key.to_owned()), name)? {
        Value::String(s) | Value::DateTime(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(ApiError::field_type(name)),
    }
}

/// The zero value of a type, for fields without a default.
pub fn zero(ty: &Ty) -> Value {
    match ty {
        Ty::String | Ty::Enum(_) => match ty {
            Ty::Enum(e) => Value::String(e.values[0].to_owned()),
            _ => Value::String(String::new()),
        },
        Ty::Int => Value::Int(0),
        Ty::Float => Value::Float(0.0),
        Ty::Bool => Value::Bool(false),
        Ty::DateTime => Value::DateTime(time::NEVER.to_owned()),
        Ty::Ref(_) => Value::String(NULL_REF.to_owned()),
        Ty::Set(_) => Value::Array(Vec::new()),
        Ty::Map(..) | Ty::Record(_) => Value::Struct(BTreeMap::new()),
    }
}

/// A model default as a value.
pub fn default_value(ty: &Ty, d: &crate::model::Default) -> Value {
    use crate::model::Default as D;
    match *d {
        D::Str(s) => Value::String(s.to_owned()),
        D::Int(i) => Value::Int(i),
        D::Float(f) => Value::Float(f),
        D::Bool(b) => Value::Bool(b),
        D::Empty | D::Null | D::Never => zero(ty),
    }
}

/// A canonical value (from [`coerce`]) as a column value.
pub fn to_sql(ty: &Ty, v: &Value) -> Sql {
    match (ty, v) {
        (Ty::Ref(_), Value::String(s)) if is_null_ref(s) => Sql::Null,
        (Ty::Int, Value::Int(i)) => Sql::Integer(*i),
        (Ty::Float, Value::Float(f)) => Sql::Real(*f),
        (Ty::Bool, Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        (Ty::Set(_) | Ty::Map(..), _) => Sql::Text(to_json(ty, v).to_string()),
        (_, Value::String(s) | Value::DateTime(s)) => Sql::Text(s.clone()),
        // Not reachable with coerced values; store the zero rather than fail.
        _ => to_sql(ty, &zero(ty)),
    }
}

fn to_json(ty: &Ty, v: &Value) -> Json {
    match (ty, v) {
        (Ty::Set(t), Value::Array(items)) => {
            Json::Array(items.iter().map(|i| to_json(t, i)).collect())
        }
        (Ty::Map(_, t), Value::Struct(m)) => Json::Object(
            m.iter()
                .map(|(k, val)| (k.clone(), to_json(t, val)))
                .collect(),
        ),
        (_, Value::Int(i)) => Json::from(*i),
        (_, Value::Float(f)) => Json::from(*f),
        (_, Value::Bool(b)) => Json::Bool(*b),
        (_, Value::String(s) | Value::DateTime(s)) => Json::String(s.clone()),
        _ => Json::Null,
    }
}

/// Why a stored column could not be read back.
pub type Corrupt = String;

/// A column value back as a typed value.
pub fn from_sql(ty: &Ty, c: ValueRef<'_>) -> Result<Value, Corrupt> {
    Ok(match (ty, c) {
        (Ty::Ref(_), ValueRef::Null) => Value::String(NULL_REF.to_owned()),
        (Ty::Int, ValueRef::Integer(i)) => Value::Int(i),
        #[allow(clippy::cast_precision_loss)]
        (Ty::Float, ValueRef::Integer(i)) => Value::Float(i as f64),
        (Ty::Float, ValueRef::Real(f)) => Value::Float(f),
        (Ty::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (Ty::Set(_) | Ty::Map(..), ValueRef::Text(t)) => {
            let j: Json = serde_json::from_slice(t).map_err(|e| e.to_string())?;
            from_json(ty, &j)?
        }
        (Ty::DateTime, ValueRef::Text(t)) => Value::DateTime(text(t)?),
        (Ty::String | Ty::Enum(_) | Ty::Ref(_), ValueRef::Text(t)) => Value::String(text(t)?),
        (_, other) => return Err(format!("{:?} column for {ty:?}", other.data_type())),
    })
}

fn text(t: &[u8]) -> Result<String, Corrupt> {
    String::from_utf8(t.to_vec()).map_err(|e| e.to_string())
}

fn from_json(ty: &Ty, j: &Json) -> Result<Value, Corrupt> {
    let bad = || format!("JSON {j} for {ty:?}");
    Ok(match (ty, j) {
        (Ty::Set(t), Json::Array(items)) => Value::Array(
            items
                .iter()
                .map(|i| from_json(t, i))
                .collect::<Result<_, _>>()?,
        ),
        (Ty::Map(_, t), Json::Object(m)) => Value::Struct(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), from_json(t, v)?)))
                .collect::<Result<_, Corrupt>>()?,
        ),
        (Ty::Int, Json::Number(n)) => Value::Int(n.as_i64().ok_or_else(bad)?),
        (Ty::Float, Json::Number(n)) => Value::Float(n.as_f64().ok_or_else(bad)?),
        (Ty::Bool, Json::Bool(b)) => Value::Bool(*b),
        (Ty::DateTime, Json::String(s)) => Value::DateTime(s.clone()),
        (Ty::String | Ty::Enum(_) | Ty::Ref(_), Json::String(s)) => Value::String(s.clone()),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{t, EnumType};

    const E: EnumType = EnumType {
        name: "e",
        values: &["a", "b"],
    };

    fn round(ty: &Ty, v: Value) -> Value {
        let c = coerce(ty, &v, "f").expect("coerce");
        let sql = to_sql(ty, &c);
        from_sql(ty, ValueRef::from(&sql)).expect("read back")
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert!(new_ref().starts_with("OpaqueRef:"));
    }

    #[test]
    fn scalars_round_trip() {
        assert_eq!(round(&Ty::Int, Value::String("42".into())), Value::Int(42));
        assert_eq!(round(&Ty::Float, Value::Int(2)), Value::Float(2.0));
        assert_eq!(round(&Ty::Bool, Value::Bool(true)), Value::Bool(true));
        assert_eq!(
            round(&Ty::Ref("VM"), Value::String(String::new())),
            Value::String(NULL_REF.into())
        );
        assert_eq!(
            round(&Ty::DateTime, Value::String("2024-01-02T03:04:05Z".into())),
            Value::DateTime("20240102T03:04:05Z".into())
        );
    }

    #[test]
    fn sets_and_maps_round_trip() {
        let m = Value::Struct(BTreeMap::from([("k".into(), Value::String("v".into()))]));
        assert_eq!(round(&t::STR_MAP, m.clone()), m);
        let s = Value::Array(vec![Value::String("x".into())]);
        assert_eq!(round(&t::STR_SET, s.clone()), s);
        let ints = Ty::Map(&Ty::Int, &Ty::Float);
        let m = Value::Struct(BTreeMap::from([("0".into(), Value::Float(0.5))]));
        assert_eq!(round(&ints, m.clone()), m);
    }

    #[test]
    fn wrong_types_are_refused() {
        assert_eq!(
            coerce(&Ty::Int, &Value::String("x".into()), "f").map_err(|e| e.code),
            Err("FIELD_TYPE_ERROR")
        );
        assert_eq!(
            coerce(&Ty::Enum(&E), &Value::String("c".into()), "f").map_err(|e| e.code),
            Err("INVALID_VALUE")
        );
        assert!(coerce(&Ty::Ref("VM"), &Value::String("vm1".into()), "f").is_err());
        let bad_key = Value::Struct(BTreeMap::from([("x".into(), Value::Float(0.5))]));
        assert!(coerce(&Ty::Map(&Ty::Int, &Ty::Float), &bad_key, "f").is_err());
        assert!(coerce(&t::STR_SET, &Value::Int(1), "f").is_err());
    }
}
