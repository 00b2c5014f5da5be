//! The generated-style calls of every stored class, derived from its fields:
//! `get_all`, `get_all_records`, `get_record`, `get_by_uuid`, `get_by_name_label`,
//! `get_<field>`, `set_<field>` (RW fields), `add_to_<map>`/`remove_from_<map>` and
//! `add_<set>`/`remove_<set>` (RW maps and sets), `create` and `destroy` (classes whose
//! lifecycle is generic).

use std::collections::BTreeMap;

use fv_rpc::Value;

use crate::db::{codec, Db};
use crate::dispatch::{writer_role, Actions};
use crate::error::{codes, ApiError};
use crate::model::{Class, Field, Lifecycle, Qual, Role, Ty};

/// A generic call of a class.
#[derive(Debug, Clone, Copy)]
pub enum Generic {
    GetAll,
    GetAllRecords,
    GetRecord,
    GetByUuid,
    GetByNameLabel,
    Get(&'static Field),
    Set(&'static Field),
    AddToMap(&'static Field),
    RemoveFromMap(&'static Field),
    AddToSet(&'static Field),
    RemoveFromSet(&'static Field),
    Create,
    Destroy,
}

/// The generic call `name` of `class`, if it has one.
pub fn resolve(class: &'static Class, name: &str) -> Option<Generic> {
    if !class.stored {
        return None;
    }
    let rw = |f: &str| class.field(f).filter(|f| f.qual == Qual::RW);
    let g = match name {
        "get_all" => Generic::GetAll,
        "get_all_records" => Generic::GetAllRecords,
        "get_record" => Generic::GetRecord,
        "get_by_uuid" => Generic::GetByUuid,
        "get_by_name_label" if class.by_name() => Generic::GetByNameLabel,
        "create" if class.lifecycle == Lifecycle::Generic => Generic::Create,
        "destroy" if class.lifecycle == Lifecycle::Generic => Generic::Destroy,
        _ => {
            if let Some(f) = name.strip_prefix("get_").and_then(|f| class.field(f)) {
                Generic::Get(f)
            } else if let Some(f) = name.strip_prefix("set_").and_then(rw) {
                Generic::Set(f)
            } else if let Some(f) = name
                .strip_prefix("add_to_")
                .and_then(rw)
                .filter(|f| is_map(f))
            {
                Generic::AddToMap(f)
            } else if let Some(f) = name
                .strip_prefix("remove_from_")
                .and_then(rw)
                .filter(|f| is_map(f))
            {
                Generic::RemoveFromMap(f)
            } else if let Some(f) = name.strip_prefix("add_").and_then(rw).filter(|f| is_set(f)) {
                Generic::AddToSet(f)
            } else if let Some(f) = name
                .strip_prefix("remove_")
                .and_then(rw)
                .filter(|f| is_set(f))
            {
                Generic::RemoveFromSet(f)
            } else {
                return None;
            }
        }
    };
    Some(g)
}

/// Every generic call of `class` by name (custom messages of the same name take
/// precedence in dispatch): for the API reference, the CLI and completeness tests.
pub fn calls(class: &'static Class) -> Vec<(String, Generic)> {
    if !class.stored {
        return Vec::new();
    }
    let mut out = vec![
        ("get_all".to_owned(), Generic::GetAll),
        ("get_all_records".to_owned(), Generic::GetAllRecords),
        ("get_record".to_owned(), Generic::GetRecord),
        ("get_by_uuid".to_owned(), Generic::GetByUuid),
    ];
    if class.by_name() {
        out.push(("get_by_name_label".to_owned(), Generic::GetByNameLabel));
    }
    if class.lifecycle == Lifecycle::Generic {
        out.push(("create".to_owned(), Generic::Create));
        out.push(("destroy".to_owned(), Generic::Destroy));
    }
    for f in class.fields {
        out.push((format!("get_{}", f.name), Generic::Get(f)));
        if f.qual != Qual::RW {
            continue;
        }
        out.push((format!("set_{}", f.name), Generic::Set(f)));
        if is_map(f) {
            out.push((format!("add_to_{}", f.name), Generic::AddToMap(f)));
            out.push((format!("remove_from_{}", f.name), Generic::RemoveFromMap(f)));
        }
        if is_set(f) {
            out.push((format!("add_{}", f.name), Generic::AddToSet(f)));
            out.push((format!("remove_{}", f.name), Generic::RemoveFromSet(f)));
        }
    }
    out
}

fn is_map(f: &Field) -> bool {
    matches!(f.ty, Ty::Map(..))
}

fn is_set(f: &Field) -> bool {
    matches!(f.ty, Ty::Set(_))
}

const STR: Ty = Ty::String;

impl Generic {
    /// Its parameters after the session.
    pub fn params(&self, class: &'static Class) -> Vec<(&'static str, Ty)> {
        let me = ("self", Ty::Ref(class.name));
        match *self {
            Generic::GetAll | Generic::GetAllRecords => vec![],
            Generic::GetRecord | Generic::Destroy | Generic::Get(_) => vec![me],
            Generic::GetByUuid => vec![("uuid", STR)],
            Generic::GetByNameLabel => vec![("label", STR)],
            Generic::Set(f) => vec![me, ("value", f.ty)],
            Generic::AddToMap(f) => match f.ty {
                Ty::Map(k, v) => vec![me, ("key", *k), ("value", *v)],
                _ => vec![me],
            },
            Generic::RemoveFromMap(f) => match f.ty {
                Ty::Map(k, _) => vec![me, ("key", *k)],
                _ => vec![me],
            },
            Generic::AddToSet(f) | Generic::RemoveFromSet(f) => match f.ty {
                Ty::Set(t) => vec![me, ("value", *t)],
                _ => vec![me],
            },
            Generic::Create => vec![("args", Ty::Record(class.name))],
        }
    }

    /// The role it needs: reads are read-only; writes need the field's writer role, or
    /// the class's default role for create and destroy.
    pub fn min_role(&self, class: &'static Class) -> Role {
        match *self {
            Generic::GetAll
            | Generic::GetAllRecords
            | Generic::GetRecord
            | Generic::GetByUuid
            | Generic::GetByNameLabel
            | Generic::Get(_) => Role::ReadOnly,
            Generic::Set(f)
            | Generic::AddToMap(f)
            | Generic::RemoveFromMap(f)
            | Generic::AddToSet(f)
            | Generic::RemoveFromSet(f) => writer_role(class, f),
            Generic::Create | Generic::Destroy => class.default_role,
        }
    }

    /// Whether an `Async.` twin exists (as XAPI: constructors and destructors).
    pub fn is_async(&self) -> bool {
        matches!(self, Generic::Create | Generic::Destroy)
    }
}

fn arg(args: &[Value], i: usize) -> Value {
    args.get(i).cloned().unwrap_or_else(Value::void)
}

fn text(args: &[Value], i: usize) -> String {
    args.get(i).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// Runs a generic call with checked `args`; the daemon's hooks ([`Actions::created`],
/// [`Actions::destroying`], [`Actions::changed`]) run in the call's transaction.
pub fn run(
    db: &Db,
    class: &'static Class,
    g: &Generic,
    args: Vec<Value>,
    hooks: &dyn Actions,
) -> Result<Value, ApiError> {
    let c = class.name;
    let me = text(&args, 0);
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    match *g {
        Generic::GetAll => db.read(|tx| tx.refs(c)).map(strings),
        Generic::GetAllRecords => db
            .read(|tx| tx.records(c))
            .map(|recs| Value::Struct(recs.into_iter().collect())),
        Generic::GetRecord => db.read(|tx| tx.record(c, &me)),
        Generic::GetByUuid => db.read(|tx| tx.by_uuid(c, &me)).map(Value::String),
        Generic::GetByNameLabel => db
            .read(|tx| tx.find(c, "name_label", &arg(&args, 0)))
            .map(strings),
        Generic::Get(f) => db.read(|tx| tx.get(c, &me, f.name)),
        Generic::Set(f) => db
            .write(|tx| {
                tx.set(c, &me, f.name, arg(&args, 1))?;
                hooks.changed(tx, class, &me, f)
            })
            .map(|()| Value::void()),
        Generic::AddToMap(f) => db
            .write(|tx| {
                let key = text(&args, 1);
                let Value::Struct(mut m) = tx.get(c, &me, f.name)? else {
                    return Err(ApiError::internal(format!("{c}.{} is not a map", f.name)));
                };
                if m.contains_key(&key) {
                    let uuid = tx.get(c, &me, "uuid")?;
                    return Err(ApiError::new(
                        &codes::MAP_DUPLICATE_KEY,
                        [c, f.name, uuid.as_str().unwrap_or(""), key.as_str()],
                    ));
                }
                m.insert(key, arg(&args, 2));
                tx.set(c, &me, f.name, Value::Struct(m))?;
                hooks.changed(tx, class, &me, f)
            })
            .map(|()| Value::void()),
        Generic::RemoveFromMap(f) => db
            .write(|tx| {
                let Value::Struct(mut m) = tx.get(c, &me, f.name)? else {
                    return Err(ApiError::internal(format!("{c}.{} is not a map", f.name)));
                };
                if m.remove(&text(&args, 1)).is_some() {
                    tx.set(c, &me, f.name, Value::Struct(m))?;
                    hooks.changed(tx, class, &me, f)?;
                }
                Ok(())
            })
            .map(|()| Value::void()),
        Generic::AddToSet(f) | Generic::RemoveFromSet(f) => db
            .write(|tx| {
                let Value::Array(mut s) = tx.get(c, &me, f.name)? else {
                    return Err(ApiError::internal(format!("{c}.{} is not a set", f.name)));
                };
                let v = arg(&args, 1);
                let had = s.contains(&v);
                match (g, had) {
                    (Generic::AddToSet(_), false) => s.push(v),
                    (Generic::RemoveFromSet(_), true) => s.retain(|x| *x != v),
                    _ => return Ok(()),
                }
                tx.set(c, &me, f.name, Value::Array(s))?;
                hooks.changed(tx, class, &me, f)
            })
            .map(|()| Value::void()),
        Generic::Create => {
            let Some(Value::Struct(rec)) = args.into_iter().next() else {
                return Err(ApiError::field_type("args"));
            };
            create(db, class, rec, hooks).map(Value::String)
        }
        Generic::Destroy => db
            .write(|tx| {
                hooks.destroying(tx, class, &me)?;
                tx.destroy(c, &me)
            })
            .map(|()| Value::void()),
    }
}

/// `<class>.create(record)`: RW and StaticRO fields from the record (others ignored, as
/// XAPI's unmarshaller does), defaults from the model, every other field server-set.
fn create(
    db: &Db,
    class: &'static Class,
    rec: BTreeMap<String, Value>,
    hooks: &dyn Actions,
) -> Result<String, ApiError> {
    let mut fields = BTreeMap::new();
    for f in class.fields.iter().filter(|f| f.qual != Qual::DynamicRO) {
        if let Some(v) = rec.get(f.name) {
            fields.insert(f.name.to_owned(), codec::coerce(&f.ty, v, f.name)?);
        } else if f.default.is_none() {
            return Err(ApiError::field_type(f.name));
        }
    }
    db.write(|tx| {
        let r = tx.create(class.name, fields)?;
        hooks.created(tx, class, &r)?;
        Ok(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, CLASSES};

    #[test]
    fn every_listed_call_resolves_to_itself() {
        for c in CLASSES.iter().copied() {
            for (name, g) in calls(c) {
                let back = resolve(c, &name).unwrap_or_else(|| panic!("{}.{name}", c.name));
                assert_eq!(format!("{back:?}"), format!("{g:?}"), "{}.{name}", c.name);
            }
        }
        let vm = model::class("VM").expect("VM");
        let names: Vec<String> = calls(vm).into_iter().map(|(n, _)| n).collect();
        for n in [
            "set_name_label",
            "add_to_other_config",
            "add_tags",
            "get_VBDs",
            "create",
        ] {
            assert!(names.iter().any(|x| x == n), "{n}");
        }
        assert!(!names.iter().any(|x| x == "set_power_state"));
        assert!(calls(model::class("event").expect("event")).is_empty());
    }
}
