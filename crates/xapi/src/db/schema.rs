//! The SQLite schema, derived from the model: one table per stored class, one column per
//! stored field (derived back-reference sets have none), refs as foreign keys.
//!
//! Bookkeeping columns: `_ref` (primary key), `_created` and `_modified` (the generations
//! at which the row was added and last changed, for `event.from`). Private tables:
//! `_meta` (schema hash, generation), `_deleted` (the bounded log of deletions) and
//! `_credential` (local users' password hashes and roles).

use crate::model::{self, Class, Ty, CLASSES};

/// SQLite's type for a field's column.
fn column_type(ty: &Ty) -> &'static str {
    match ty {
        Ty::Int | Ty::Bool => "INTEGER",
        Ty::Float => "REAL",
        _ => "TEXT",
    }
}

/// The DDL of one class's table and indexes.
fn table_ddl(c: &Class, out: &mut String) {
    let t = c.name;
    out.push_str(&format!(
        "CREATE TABLE \"{t}\" (\n  _ref TEXT PRIMARY KEY NOT NULL,\n  _created INTEGER NOT NULL,\n  _modified INTEGER NOT NULL"
    ));
    for f in c.fields.iter().filter(|f| model::is_stored(c, f)) {
        let ty = column_type(&f.ty);
        let nn = if matches!(f.ty, Ty::Ref(_)) {
            ""
        } else {
            " NOT NULL"
        };
        out.push_str(&format!(",\n  \"{}\" {ty}{nn}", f.name));
        if let Ty::Ref(target) = f.ty {
            if model::class(target).is_some_and(|tc| tc.stored) {
                out.push_str(&format!(" REFERENCES \"{target}\"(_ref)"));
            }
        }
        if f.name == "uuid" {
            out.push_str(" UNIQUE");
        }
    }
    out.push_str("\n);\n");
    out.push_str(&format!(
        "CREATE INDEX \"ix__{t}___modified\" ON \"{t}\"(_modified);\n"
    ));
    // Indexes for the queries that derive back-reference sets and for destroy's nulling.
    for f in c.fields.iter().filter(|f| model::is_stored(c, f)) {
        if matches!(f.ty, Ty::Ref(_)) {
            out.push_str(&format!(
                "CREATE INDEX \"ix__{t}__{f}\" ON \"{t}\"(\"{f}\");\n",
                f = f.name
            ));
        }
        if f.name == "name_label" {
            out.push_str(&format!(
                "CREATE INDEX \"ix__{t}__name_label\" ON \"{t}\"(name_label);\n"
            ));
        }
    }
}

const PRIVATE: &str = "\
CREATE TABLE _meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
CREATE TABLE _deleted (gen INTEGER PRIMARY KEY NOT NULL, class TEXT NOT NULL, ref TEXT NOT NULL, ts TEXT NOT NULL);
CREATE TABLE _credential (user TEXT PRIMARY KEY NOT NULL REFERENCES \"user\"(_ref) ON DELETE CASCADE, hash TEXT NOT NULL, role TEXT NOT NULL);
";

/// The whole schema, in a stable order.
pub fn ddl() -> String {
    let mut out = String::from(PRIVATE);
    for c in CLASSES.iter().filter(|c| c.stored) {
        table_ddl(c, &mut out);
    }
    out
}

/// A stable hash of the schema (FNV-1a 64 of the DDL), stored in `_meta` and checked at open.
pub fn hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ddl().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sets_have_no_column_and_refs_are_keys() {
        let d = ddl();
        assert!(d.contains("CREATE TABLE \"VM\""));
        assert!(!d.contains("\"VBDs\""));
        assert!(d.contains("\"VM\" TEXT REFERENCES \"VM\"(_ref)"));
        assert!(!d.contains("CREATE TABLE \"event\""));
        assert_eq!(hash(), hash());
    }

    #[test]
    fn ddl_is_valid_sqlite() {
        let c = rusqlite::Connection::open_in_memory().expect("memory db");
        c.execute_batch(&ddl()).expect("schema");
    }
}
