//! Command-line text to XenAPI values by the model's types, and values back to text or
//! JSON, as xe shows them.

use std::collections::BTreeMap;

use fv_rpc::Value;
use fv_xapi::model::Ty;

use crate::error::Error;

/// XenAPI's null reference.
pub const NULL_REF: &str = "OpaqueRef:NULL";

/// What xe prints for a null or dangling reference.
pub const NOT_IN_DB: &str = "<not in database>";

/// Turns a name or uuid into a reference (the client asks the server).
pub trait Resolve {
    fn resolve(&mut self, class: &str, text: &str) -> Result<String, Error>;
}

/// Turns a reference into the uuid the user sees (the client asks the server, cached).
pub trait Namer {
    fn uuid_of(&mut self, class: &str, r: &str) -> Option<String>;
}

/// Whether `s` has the shape of a uuid (8-4-4-4-12 hex digits).
pub fn looks_like_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `r` is a null reference.
pub fn is_null(r: &str) -> bool {
    r.is_empty() || r == NULL_REF
}

/// The value of `text` as type `ty`, for parameter or field `name` (named in errors).
pub fn parse(ty: &Ty, text: &str, name: &str, res: &mut dyn Resolve) -> Result<Value, Error> {
    let bad = |what: &str| Error::usage(format!("{name}={text}: {what}"));
    Ok(match ty {
        Ty::String => Value::String(text.to_owned()),
        Ty::Int => Value::Int(text.trim().parse().map_err(|_| bad("not an integer"))?),
        Ty::Float => Value::Float(
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad("not a number"))?,
        ),
        Ty::Bool => Value::Bool(parse_bool(text).ok_or_else(|| bad("not true or false"))?),
        Ty::DateTime => Value::DateTime(parse_datetime(text).ok_or_else(|| {
            bad("not a UTC time like 20260101T12:00:00Z or 2026-01-01T12:00:00Z")
        })?),
        Ty::Enum(e) => {
            let v = e
                .values
                .iter()
                .find(|v| v.eq_ignore_ascii_case(text.trim()))
                .ok_or_else(|| bad(&format!("not one of {}", e.values.join(", "))))?;
            Value::String((*v).to_owned())
        }
        Ty::Ref(class) => {
            let t = text.trim();
            if is_null(t) {
                Value::String(NULL_REF.to_owned())
            } else if t.starts_with("OpaqueRef:") {
                Value::String(t.to_owned())
            } else {
                Value::String(res.resolve(class, t)?)
            }
        }
        Ty::Set(inner) => {
            let mut items = Vec::new();
            for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                items.push(parse(inner, item, name, res)?);
            }
            Value::Array(items)
        }
        Ty::Map(..) => return Err(bad(&format!("a map: give its entries as {name}:KEY=VALUE"))),
        Ty::Record(_) => return Err(bad("a whole record cannot be given as one value")),
    })
}

/// A map key or value of type `ty` (keys of XenAPI maps are strings on the wire).
pub fn parse_map_part(
    ty: &Ty,
    text: &str,
    name: &str,
    res: &mut dyn Resolve,
) -> Result<Value, Error> {
    let v = parse(ty, text, name, res)?;
    Ok(match v {
        Value::Int(i) => Value::String(i.to_string()),
        other => other,
    })
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// XenAPI's `YYYYMMDDTHH:MM:SSZ`, also read from ISO 8601's `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_datetime(text: &str) -> Option<String> {
    let t = text.trim();
    let (date, time) = t.split_once('T')?;
    let date: String = date.chars().filter(|c| *c != '-').collect();
    let time = time.strip_suffix('Z')?;
    let ok_date = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    let tb = time.as_bytes();
    let ok_time = tb.len() == 8
        && tb[2] == b':'
        && tb[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|i| tb[*i].is_ascii_digit());
    (ok_date && ok_time).then(|| format!("{date}T{time}Z"))
}

/// A value as text, as xe prints it: refs as the uuid of their object, sets joined by
/// `; `, maps as `key: value; ...`.
pub fn format(ty: &Ty, v: &Value, names: &mut dyn Namer) -> String {
    match (ty, v) {
        (Ty::Ref(class), Value::String(r)) => {
            if is_null(r) {
                NOT_IN_DB.to_owned()
            } else {
                names.uuid_of(class, r).unwrap_or_else(|| r.clone())
            }
        }
        (Ty::Set(inner), Value::Array(items)) => items
            .iter()
            .map(|i| format(inner, i, names))
            .collect::<Vec<_>>()
            .join("; "),
        (Ty::Map(k, val), Value::Struct(m)) => m
            .iter()
            .map(|(key, x)| {
                let key = format(k, &Value::String(key.clone()), names);
                format!("{key}: {}", format(val, x, names))
            })
            .collect::<Vec<_>>()
            .join("; "),
        (_, v) => plain(v),
    }
}

/// A value without its type (a call result of no declared type).
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) | Value::DateTime(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join("; "),
        Value::Struct(m) => m
            .iter()
            .map(|(k, x)| format!("{k}: {}", plain(x)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// A value as JSON: refs as uuids (null for a null ref), sets as arrays, maps as
/// objects, times as their XenAPI text.
pub fn json(ty: &Ty, v: &Value, names: &mut dyn Namer) -> serde_json::Value {
    use serde_json::Value as J;
    match (ty, v) {
        (Ty::Ref(class), Value::String(r)) => {
            if is_null(r) {
                J::Null
            } else {
                J::String(names.uuid_of(class, r).unwrap_or_else(|| r.clone()))
            }
        }
        (Ty::Set(inner), Value::Array(items)) => {
            J::Array(items.iter().map(|i| json(inner, i, names)).collect())
        }
        (Ty::Map(_, val), Value::Struct(m)) => J::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), json(val, x, names)))
                .collect(),
        ),
        (Ty::Int, Value::String(s)) => s
            .parse::<i64>()
            .map_or_else(|_| J::String(s.clone()), J::from),
        (_, v) => plain_json(v),
    }
}

/// A value as JSON without its type.
pub fn plain_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::String(s) | Value::DateTime(s) => J::String(s.clone()),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Bool(b) => J::Bool(*b),
        Value::Array(items) => J::Array(items.iter().map(plain_json).collect()),
        Value::Struct(m) => J::Object(m.iter().map(|(k, x)| (k.clone(), plain_json(x))).collect()),
    }
}

/// Whether the field value `v` (of type `ty`) matches the user's `want`, as list filters
/// and event-wait compare: enums and booleans without case, refs by uuid or ref, sets
/// and maps by their printed form.
pub fn matches(ty: &Ty, v: &Value, want: &str, names: &mut dyn Namer) -> bool {
    match (ty, v) {
        (Ty::Enum(_), Value::String(s)) => s.eq_ignore_ascii_case(want.trim()),
        (Ty::Bool, Value::Bool(b)) => parse_bool(want) == Some(*b),
        (Ty::Ref(_), Value::String(r)) if r == want => true,
        (Ty::Int, _) => v.as_int().is_some_and(|i| want.trim().parse() == Ok(i)),
        _ => format(ty, v, names) == want,
    }
}

/// A record's field, or null if absent (records of an older server may lack fields).
pub fn field<'a>(rec: &'a BTreeMap<String, Value>, name: &str) -> Option<&'a Value> {
    rec.get(name)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use fv_xapi::model;

    /// Resolves `name:<class>:<x>` style names from a table, for tests.
    pub struct Table(pub Vec<(&'static str, &'static str, &'static str)>);

    impl Resolve for Table {
        fn resolve(&mut self, class: &str, text: &str) -> Result<String, Error> {
            self.0
                .iter()
                .find(|(c, name, _)| *c == class && *name == text)
                .map(|(_, _, r)| (*r).to_owned())
                .ok_or_else(|| Error::NotFound(format!("no {class} {text}")))
        }
    }

    impl Namer for Table {
        fn uuid_of(&mut self, class: &str, r: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(c, _, x)| *c == class && *x == r)
                .map(|(_, name, _)| (*name).to_owned())
        }
    }

    fn vm_field(name: &str) -> Ty {
        model::class("VM").expect("VM").field(name).expect(name).ty
    }

    #[test]
    fn text_to_values_by_type() {
        let mut t = Table(vec![("SR", "sr-uuid-1", "OpaqueRef:sr1")]);
        let t = &mut t;
        assert_eq!(parse(&Ty::Int, " 42", "n", t).unwrap(), Value::Int(42));
        assert_eq!(parse(&Ty::Bool, "YES", "b", t).unwrap(), Value::Bool(true));
        assert_eq!(parse(&Ty::Float, "0.5", "f", t).unwrap(), Value::Float(0.5));
        assert_eq!(
            parse(&vm_field("power_state"), "running", "power-state", t).unwrap(),
            Value::String("Running".into())
        );
        assert_eq!(
            parse(&Ty::Ref("SR"), "sr-uuid-1", "sr", t).unwrap(),
            Value::String("OpaqueRef:sr1".into())
        );
        assert_eq!(
            parse(&Ty::Ref("SR"), "", "sr", t).unwrap(),
            Value::String(NULL_REF.into())
        );
        assert_eq!(
            parse(&vm_field("tags"), "a, b,,c", "tags", t).unwrap(),
            Value::Array(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            parse(&vm_field("tags"), "", "tags", t).unwrap(),
            Value::Array(vec![])
        );
        assert_eq!(
            parse(&Ty::DateTime, "2026-01-02T03:04:05Z", "d", t).unwrap(),
            Value::DateTime("20260102T03:04:05Z".into())
        );
        assert_eq!(
            parse_map_part(&Ty::Int, "7", "m", t).unwrap(),
            Value::String("7".into())
        );
    }

    #[test]
    fn bad_text_is_a_usage_error_naming_the_parameter() {
        let t = &mut Table(vec![]);
        for (ty, text, want) in [
            (Ty::Int, "x", "not an integer"),
            (Ty::Float, "inf", "not a number"),
            (Ty::Bool, "maybe", "not true or false"),
            (Ty::DateTime, "yesterday", "UTC time"),
            (vm_field("power_state"), "off", "not one of Halted, Paused"),
            (vm_field("other_config"), "a", "other-config:KEY=VALUE"),
        ] {
            let e = parse(&ty, text, "other-config", t).expect_err(text);
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
        assert!(matches!(
            parse(&Ty::Ref("VM"), "nope", "vm", t),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn values_to_text_as_xe() {
        let t = &mut Table(vec![("host", "host-uuid", "OpaqueRef:h")]);
        assert_eq!(
            format(&Ty::Ref("host"), &"OpaqueRef:h".into(), t),
            "host-uuid"
        );
        assert_eq!(format(&Ty::Ref("host"), &NULL_REF.into(), t), NOT_IN_DB);
        assert_eq!(
            format(&Ty::Ref("host"), &"OpaqueRef:gone".into(), t),
            "OpaqueRef:gone"
        );
        let m = Value::Struct(BTreeMap::from([
            ("a".to_owned(), Value::from("1")),
            ("b".to_owned(), Value::from("2")),
        ]));
        assert_eq!(format(&vm_field("other_config"), &m, t), "a: 1; b: 2");
        let s = Value::Array(vec!["x".into(), "y".into()]);
        assert_eq!(format(&vm_field("tags"), &s, t), "x; y");
        assert_eq!(format(&Ty::Int, &Value::Int(3), t), "3");
        assert_eq!(format(&Ty::Bool, &Value::Bool(false), t), "false");
    }

    #[test]
    fn values_to_json() {
        let t = &mut Table(vec![("host", "host-uuid", "OpaqueRef:h")]);
        assert_eq!(
            json(&Ty::Ref("host"), &"OpaqueRef:h".into(), t),
            serde_json::json!("host-uuid")
        );
        assert_eq!(
            json(&Ty::Ref("host"), &NULL_REF.into(), t),
            serde_json::Value::Null
        );
        assert_eq!(json(&Ty::Int, &"12".into(), t), serde_json::json!(12));
        let m = Value::Struct(BTreeMap::from([("k".to_owned(), Value::from("v"))]));
        assert_eq!(
            json(&vm_field("other_config"), &m, t),
            serde_json::json!({"k": "v"})
        );
        assert_eq!(plain_json(&Value::Float(f64::NAN)), serde_json::Value::Null);
    }

    #[test]
    fn filters_compare_as_users_write() {
        let t = &mut Table(vec![("host", "host-uuid", "OpaqueRef:h")]);
        let ps = vm_field("power_state");
        assert!(matches(&ps, &"Running".into(), "running", t));
        assert!(!matches(&ps, &"Running".into(), "halted", t));
        assert!(matches(&Ty::Bool, &Value::Bool(true), "yes", t));
        assert!(matches(
            &Ty::Ref("host"),
            &"OpaqueRef:h".into(),
            "host-uuid",
            t
        ));
        assert!(matches(
            &Ty::Ref("host"),
            &"OpaqueRef:h".into(),
            "OpaqueRef:h",
            t
        ));
        assert!(matches(&Ty::Int, &"5".into(), "5", t));
        assert!(matches(&Ty::String, &"a b".into(), "a b", t));
    }

    #[test]
    fn uuid_shape() {
        assert!(looks_like_uuid("0b0b1c2d-0000-4000-8000-00000000abcd"));
        assert!(!looks_like_uuid("my-vm"));
        assert!(!looks_like_uuid("0b0b1c2d-0000-4000-8000-00000000abcz"));
    }
}
