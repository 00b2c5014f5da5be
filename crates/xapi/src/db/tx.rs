//! Record operations inside one transaction, keyed by the model's class and field names.

use std::collections::{BTreeMap, HashMap};

use fv_rpc::Value;
use rusqlite::{params_from_iter, OptionalExtension, Row};

use super::codec::{self, is_null_ref, NULL_REF};
use super::{META_GEN, META_PRUNED};
use crate::error::{codes, ApiError, Error};
use crate::model::{self, Class, Field, Qual, Relation, Ty};
use crate::time;

/// One transaction. Reads see a consistent snapshot; writes (through `&mut`) are
/// committed together by [`super::Db::write`], or not at all.
pub struct Tx<'c> {
    sql: rusqlite::Transaction<'c>,
    /// The latest generation stamped in this transaction.
    gen: u64,
    start: u64,
    deleted_keep: u64,
}

fn sql_err(e: rusqlite::Error) -> ApiError {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation && msg.contains("UNIQUE") {
            // "UNIQUE constraint failed: VM.uuid"
            let what = msg.rsplit(' ').next().unwrap_or("");
            let (t, f) = what.split_once('.').unwrap_or((what, ""));
            return ApiError::new(&codes::DB_UNIQUENESS_CONSTRAINT_VIOLATION, [t, f, ""]);
        }
    }
    ApiError::from(Error::from(e))
}

/// The class of that name; an unknown name is a toolstack bug, not a client's.
pub fn class_named(name: &str) -> Result<&'static Class, ApiError> {
    model::class(name)
        .filter(|c| c.stored)
        .ok_or_else(|| ApiError::internal(format!("no stored class {name}")))
}

fn field_named(c: &Class, name: &str) -> Result<&'static Field, ApiError> {
    c.field(name)
        .ok_or_else(|| ApiError::internal(format!("no field {}.{name}", c.name)))
}

fn stored_fields(c: &'static Class) -> impl Iterator<Item = &'static Field> {
    c.fields.iter().filter(move |f| model::is_stored(c, f))
}

fn columns(c: &'static Class) -> String {
    stored_fields(c)
        .map(|f| format!("\"{}\"", f.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stored row as read: its ref, generations and stored field values.
pub(crate) struct RawRow {
    pub r: String,
    pub created: u64,
    pub modified: u64,
    pub fields: BTreeMap<String, Value>,
}

fn read_row(c: &'static Class, row: &Row<'_>) -> Result<RawRow, ApiError> {
    let r: String = row.get(0).map_err(sql_err)?;
    let created: i64 = row.get(1).map_err(sql_err)?;
    let modified: i64 = row.get(2).map_err(sql_err)?;
    let mut fields = BTreeMap::new();
    for (i, f) in stored_fields(c).enumerate() {
        let v = row.get_ref(i + 3).map_err(sql_err)?;
        let v = codec::from_sql(&f.ty, v).map_err(|reason| {
            ApiError::from(Error::Corrupt {
                class: c.name.into(),
                field: f.name.into(),
                reason,
            })
        })?;
        fields.insert(f.name.to_owned(), v);
    }
    Ok(RawRow {
        r,
        created: u64::try_from(created).unwrap_or(0),
        modified: u64::try_from(modified).unwrap_or(0),
        fields,
    })
}

impl<'c> Tx<'c> {
    pub(super) fn new(sql: rusqlite::Transaction<'c>, gen: u64, deleted_keep: u64) -> Tx<'c> {
        Tx {
            sql,
            gen,
            start: gen,
            deleted_keep,
        }
    }

    /// Persists the generation and commits; returns the new generation.
    pub(super) fn commit(self) -> Result<u64, ApiError> {
        if self.gen != self.start {
            self.sql
                .execute(
                    "UPDATE _meta SET value=?2 WHERE key=?1",
                    (META_GEN, self.gen.to_string()),
                )
                .map_err(sql_err)?;
        }
        let g = self.gen;
        self.sql.commit().map_err(sql_err)?;
        Ok(g)
    }

    /// The raw SQLite transaction, for the crate's private tables.
    pub(crate) fn sql(&self) -> &rusqlite::Transaction<'c> {
        &self.sql
    }

    /// The latest generation visible to this transaction.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    fn next_gen(&mut self) -> i64 {
        self.gen += 1;
        i64::try_from(self.gen).unwrap_or(i64::MAX)
    }

    /// Whether `r` names an object of `class`.
    pub fn exists(&self, class: &str, r: &str) -> Result<bool, ApiError> {
        let c = class_named(class)?;
        self.sql
            .prepare_cached(&format!("SELECT 1 FROM \"{}\" WHERE _ref=?1", c.name))
            .and_then(|mut s| s.exists([r]))
            .map_err(sql_err)
    }

    /// `HANDLE_INVALID [class, r]` unless `r` names an object of `class`.
    pub fn check_ref(&self, class: &str, r: &str) -> Result<(), ApiError> {
        if self.exists(class, r)? {
            Ok(())
        } else {
            Err(ApiError::handle_invalid(class, r))
        }
    }

    /// Creates an object of `class` from `fields` (any stored field; the rest take their
    /// defaults); returns its new reference. A field without a default that `create` needs
    /// must be given.
    pub fn create(
        &mut self,
        class: &str,
        fields: BTreeMap<String, Value>,
    ) -> Result<String, ApiError> {
        let r = codec::new_ref();
        self.create_with_ref(class, &r, fields)?;
        Ok(r)
    }

    /// As [`Tx::create`] with a chosen reference.
    pub fn create_with_ref(
        &mut self,
        class: &str,
        r: &str,
        mut fields: BTreeMap<String, Value>,
    ) -> Result<(), ApiError> {
        let c = class_named(class)?;
        for name in fields.keys() {
            let f = field_named(c, name).map_err(|_| ApiError::field_type(name))?;
            if !model::is_stored(c, f) {
                return Err(ApiError::field_type(name));
            }
        }
        let mut values = Vec::new();
        for f in stored_fields(c) {
            let v = match fields.remove(f.name) {
                Some(v) => codec::coerce(&f.ty, &v, f.name)?,
                None if f.name == "uuid" => Value::String(codec::new_uuid()),
                None => match (&f.default, f.qual) {
                    (Some(d), _) => codec::default_value(&f.ty, d),
                    (None, Qual::DynamicRO) => codec::zero(&f.ty),
                    (None, _) => return Err(ApiError::field_type(f.name)),
                },
            };
            self.check_target(f, &v)?;
            values.push(codec::to_sql(&f.ty, &v));
        }
        let g = self.next_gen();
        let cols = columns(c);
        let marks: Vec<String> = (0..values.len()).map(|i| format!("?{}", i + 4)).collect();
        let sep = if values.is_empty() { "" } else { ", " };
        let sql = format!(
            "INSERT INTO \"{}\" (_ref, _created, _modified{sep}{cols}) VALUES (?1, ?2, ?3{sep}{})",
            c.name,
            marks.join(", ")
        );
        let mut params: Vec<rusqlite::types::Value> = vec![r.to_owned().into(), g.into(), g.into()];
        params.extend(values);
        self.sql
            .prepare_cached(&sql)
            .and_then(|mut s| s.execute(params_from_iter(params)))
            .map_err(sql_err)?;
        for rel in model::relations_from(c.name) {
            let target = self.get(c.name, r, rel.from_field)?;
            self.touch_target(rel, &target)?;
        }
        Ok(())
    }

    /// A ref value must name an existing object of its class.
    fn check_target(&self, f: &Field, v: &Value) -> Result<(), ApiError> {
        if let (Ty::Ref(target), Value::String(r)) = (&f.ty, v) {
            if !is_null_ref(r) && model::class(target).is_some_and(|t| t.stored) {
                self.check_ref(target, r)?;
            }
        }
        Ok(())
    }

    fn touch_target(&mut self, rel: &Relation, target: &Value) -> Result<(), ApiError> {
        if let Value::String(t) = target {
            if !is_null_ref(t) {
                self.touch(rel.to_class, t)?;
            }
        }
        Ok(())
    }

    /// Marks an object changed (a `mod` event) without changing a field; returns the
    /// generation stamped.
    pub fn touch(&mut self, class: &str, r: &str) -> Result<u64, ApiError> {
        let c = class_named(class)?;
        let g = self.next_gen();
        let n = self
            .sql
            .prepare_cached(&format!(
                "UPDATE \"{}\" SET _modified=?2 WHERE _ref=?1",
                c.name
            ))
            .and_then(|mut s| s.execute((r, g)))
            .map_err(sql_err)?;
        if n == 0 {
            return Err(ApiError::handle_invalid(c.name, r));
        }
        Ok(self.gen)
    }

    /// One field of one object (derived sets included).
    pub fn get(&self, class: &str, r: &str, field: &str) -> Result<Value, ApiError> {
        let c = class_named(class)?;
        let f = field_named(c, field)?;
        if let Some(rel) = model::derived_by(c.name, f.name) {
            self.check_ref(c.name, r)?;
            return self.derived(rel, r);
        }
        let v = self
            .sql
            .prepare_cached(&format!(
                "SELECT \"{}\" FROM \"{}\" WHERE _ref=?1",
                f.name, c.name
            ))
            .and_then(|mut s| {
                s.query_row([r], |row| Ok(codec::from_sql(&f.ty, row.get_ref(0)?)))
                    .optional()
            })
            .map_err(sql_err)?
            .ok_or_else(|| ApiError::handle_invalid(c.name, r))?;
        v.map_err(|reason| {
            Error::Corrupt {
                class: c.name.into(),
                field: f.name.into(),
                reason,
            }
            .into()
        })
    }

    /// Sets one stored field, checked against its type; refs must name existing objects.
    pub fn set(&mut self, class: &str, r: &str, field: &str, v: Value) -> Result<(), ApiError> {
        let c = class_named(class)?;
        let f = field_named(c, field)?;
        if !model::is_stored(c, f) {
            return Err(ApiError::internal(format!(
                "{}.{} is derived",
                c.name, f.name
            )));
        }
        let v = codec::coerce(&f.ty, &v, f.name)?;
        self.check_target(f, &v)?;
        let rels: Vec<&Relation> = model::relations_from(c.name)
            .filter(|rel| rel.from_field == f.name)
            .collect();
        let old = if rels.is_empty() {
            None
        } else {
            Some(self.get(c.name, r, f.name)?)
        };
        let g = self.next_gen();
        let n = self
            .sql
            .prepare_cached(&format!(
                "UPDATE \"{}\" SET \"{}\"=?2, _modified=?3 WHERE _ref=?1",
                c.name, f.name
            ))
            .and_then(|mut s| s.execute((r, codec::to_sql(&f.ty, &v), g)))
            .map_err(sql_err)?;
        if n == 0 {
            return Err(ApiError::handle_invalid(c.name, r));
        }
        if let Some(old) = old {
            if old != v {
                for rel in rels {
                    self.touch_target(rel, &old)?;
                    self.touch_target(rel, &v)?;
                }
            }
        }
        Ok(())
    }

    fn derived(&self, rel: &Relation, target: &str) -> Result<Value, ApiError> {
        let mut s = self
            .sql
            .prepare_cached(&format!(
                "SELECT _ref FROM \"{}\" WHERE \"{}\"=?1 ORDER BY _ref",
                rel.from_class, rel.from_field
            ))
            .map_err(sql_err)?;
        let refs = s
            .query_map([target], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql_err)?;
        Ok(Value::Array(refs.into_iter().map(Value::String).collect()))
    }

    /// Every derived set of `rel`, grouped by target.
    fn derived_all(&self, rel: &Relation) -> Result<HashMap<String, Vec<Value>>, ApiError> {
        let mut s = self
            .sql
            .prepare_cached(&format!(
                "SELECT \"{f}\", _ref FROM \"{c}\" WHERE \"{f}\" IS NOT NULL ORDER BY _ref",
                c = rel.from_class,
                f = rel.from_field
            ))
            .map_err(sql_err)?;
        let pairs = s
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql_err)?;
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for (t, r) in pairs {
            out.entry(t).or_default().push(Value::String(r));
        }
        Ok(out)
    }

    /// Stored rows of `class` matching an SQL condition on the bookkeeping columns.
    pub(crate) fn raw_rows(
        &self,
        class: &'static Class,
        cond: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<RawRow>, ApiError> {
        let cols = columns(class);
        let sep = if cols.is_empty() { "" } else { ", " };
        let sql = format!(
            "SELECT _ref, _created, _modified{sep}{cols} FROM \"{}\" WHERE {cond} ORDER BY _ref",
            class.name
        );
        let mut s = self.sql.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = s.query(params).map_err(sql_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql_err)? {
            out.push(read_row(class, row)?);
        }
        Ok(out)
    }

    /// Full records (derived sets filled in) of the given rows.
    pub(crate) fn complete(
        &self,
        class: &'static Class,
        rows: Vec<RawRow>,
    ) -> Result<Vec<(String, Value)>, ApiError> {
        let rels: Vec<&Relation> = model::RELATIONS
            .iter()
            .filter(|r| r.to_class == class.name)
            .collect();
        // One grouped query per relation when many rows, one lookup each when few.
        let mut grouped = Vec::new();
        if rows.len() > 4 {
            for rel in &rels {
                grouped.push(self.derived_all(rel)?);
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            for (i, rel) in rels.iter().enumerate() {
                let set = match grouped.get(i) {
                    Some(g) => Value::Array(g.get(&row.r).cloned().unwrap_or_default()),
                    None => self.derived(rel, &row.r)?,
                };
                row.fields.insert(rel.to_field.to_owned(), set);
            }
            out.push((row.r, Value::Struct(row.fields)));
        }
        Ok(out)
    }

    /// The whole record of one object, as `get_record` answers it.
    pub fn record(&self, class: &str, r: &str) -> Result<Value, ApiError> {
        let c = class_named(class)?;
        let rows = self.raw_rows(c, "_ref=?1", &[&r])?;
        if rows.is_empty() {
            return Err(ApiError::handle_invalid(c.name, r));
        }
        self.complete(c, rows)?
            .pop()
            .map(|(_, v)| v)
            .ok_or_else(|| ApiError::handle_invalid(c.name, r))
    }

    /// Every object of `class` with its record.
    pub fn records(&self, class: &str) -> Result<Vec<(String, Value)>, ApiError> {
        let c = class_named(class)?;
        let rows = self.raw_rows(c, "1", &[])?;
        self.complete(c, rows)
    }

    /// Every reference of `class`.
    pub fn refs(&self, class: &str) -> Result<Vec<String>, ApiError> {
        let c = class_named(class)?;
        let mut s = self
            .sql
            .prepare_cached(&format!("SELECT _ref FROM \"{}\" ORDER BY _ref", c.name))
            .map_err(sql_err)?;
        s.query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql_err)
    }

    /// The number of objects of `class`.
    pub fn count(&self, class: &str) -> Result<i64, ApiError> {
        let c = class_named(class)?;
        self.sql
            .query_row(&format!("SELECT count(*) FROM \"{}\"", c.name), [], |r| {
                r.get(0)
            })
            .map_err(sql_err)
    }

    /// The references whose stored scalar `field` equals `v`.
    pub fn find(&self, class: &str, field: &str, v: &Value) -> Result<Vec<String>, ApiError> {
        let c = class_named(class)?;
        let f = field_named(c, field)?;
        if !model::is_stored(c, f) || matches!(f.ty, Ty::Set(_) | Ty::Map(..)) {
            return Err(ApiError::internal(format!(
                "cannot search {}.{}",
                c.name, f.name
            )));
        }
        let v = codec::coerce(&f.ty, v, f.name)?;
        let (cond, params) = match codec::to_sql(&f.ty, &v) {
            rusqlite::types::Value::Null => ("IS NULL", vec![]),
            other => ("= ?1", vec![other]),
        };
        let sql = format!(
            "SELECT _ref FROM \"{}\" WHERE \"{}\" {cond} ORDER BY _ref",
            c.name, f.name
        );
        let mut s = self.sql.prepare_cached(&sql).map_err(sql_err)?;
        s.query_map(params_from_iter(params), |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql_err)
    }

    /// The object with that UUID, or `UUID_INVALID [class, uuid]`.
    pub fn by_uuid(&self, class: &str, uuid: &str) -> Result<String, ApiError> {
        self.find(class, "uuid", &Value::String(uuid.to_owned()))?
            .pop()
            .ok_or_else(|| ApiError::uuid_invalid(class, uuid))
    }

    /// Destroys an object. Stored references to it elsewhere become `OpaqueRef:NULL` (each
    /// such object gets a `mod` event), and the deletion is logged for `event.from`.
    pub fn destroy(&mut self, class: &str, r: &str) -> Result<(), ApiError> {
        let c = class_named(class)?;
        self.check_ref(c.name, r)?;
        // The objects it points at lose it from their derived sets.
        for rel in model::relations_from(c.name) {
            let target = self.get(c.name, r, rel.from_field)?;
            self.touch_target(rel, &target)?;
        }
        // Null every stored reference to it.
        for other in model::CLASSES.iter().copied().filter(|o| o.stored) {
            for f in stored_fields(other).filter(|f| f.ty == Ty::Ref(c.name)) {
                for holder in self.find(other.name, f.name, &Value::String(r.to_owned()))? {
                    if holder != r {
                        self.set(other.name, &holder, f.name, Value::String(NULL_REF.into()))?;
                    }
                }
            }
        }
        let g = self.next_gen();
        self.sql
            .prepare_cached(&format!("DELETE FROM \"{}\" WHERE _ref=?1", c.name))
            .and_then(|mut s| s.execute([r]))
            .map_err(sql_err)?;
        self.sql
            .prepare_cached("INSERT INTO _deleted (gen, class, ref, ts) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute((g, c.name, r, time::now())))
            .map_err(sql_err)?;
        self.prune_deleted()
    }

    /// Keeps the deletion log bounded; remembers the highest pruned generation.
    fn prune_deleted(&mut self) -> Result<(), ApiError> {
        let keep = i64::try_from(self.deleted_keep).unwrap_or(i64::MAX);
        let n: i64 = self
            .sql
            .query_row("SELECT count(*) FROM _deleted", [], |r| r.get(0))
            .map_err(sql_err)?;
        // Prune in batches, so that not every deletion pays for it.
        if n <= keep + keep / 8 {
            return Ok(());
        }
        let cut: i64 = self
            .sql
            .query_row(
                "SELECT gen FROM _deleted ORDER BY gen DESC LIMIT 1 OFFSET ?1",
                [keep],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        self.sql
            .execute("DELETE FROM _deleted WHERE gen <= ?1", [cut])
            .map_err(sql_err)?;
        self.sql
            .execute(
                "UPDATE _meta SET value=?2 WHERE key=?1",
                (META_PRUNED, cut.to_string()),
            )
            .map_err(sql_err)?;
        Ok(())
    }

    /// Deletions at or below this generation are no longer known.
    pub(crate) fn deleted_pruned_below(&self) -> Result<u64, ApiError> {
        let v: String = self
            .sql
            .query_row("SELECT value FROM _meta WHERE key=?1", [META_PRUNED], |r| {
                r.get(0)
            })
            .map_err(sql_err)?;
        Ok(v.parse().unwrap_or(0))
    }

    /// Deletions after generation `since` of the given classes: (gen, class, ref).
    pub(crate) fn deleted_since(&self, since: u64) -> Result<Vec<(u64, String, String)>, ApiError> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let mut s = self
            .sql
            .prepare_cached("SELECT gen, class, ref FROM _deleted WHERE gen > ?1 ORDER BY gen")
            .map_err(sql_err)?;
        s.query_map([since], |row| {
            Ok((
                u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                row.get(1)?,
                row.get(2)?,
            ))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(sql_err)
    }
}
