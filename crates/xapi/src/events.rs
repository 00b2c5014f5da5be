//! `event.from`, `event.inject` and `event.get_current_id`, as XenAPI.
//!
//! Tokens are the database generation as decimal text (clients treat them as opaque). An
//! empty token answers every current object of the subscribed classes as an `add` event;
//! a token answers what changed after it, coalesced to the latest state per object
//! (`add` if the object was created after the token, else `mod`), plus `del` events from
//! the bounded deletion log. A token older than the log's horizon gets `EVENTS_LOST`, so
//! the client registers again with an empty token. Class names are matched without case
//! and answered in lower case, as XAPI; unknown class names are ignored (clients subscribe
//! to classes this toolstack lacks). Waiting is on a condition variable woken by commits.

use std::collections::BTreeMap;
use std::time::Instant;

use fv_rpc::Value;

use crate::db::{Db, Tx};
use crate::error::{codes, ApiError};
use crate::model::{self, Class, CLASSES};
use crate::time;

/// One subscription: a class, optionally one object of it.
#[derive(Debug, Clone)]
struct Sub {
    class: &'static Class,
    only: Option<String>,
}

fn parse_subs(classes: &[String]) -> Vec<Sub> {
    let mut out = Vec::new();
    for c in classes {
        if c == "*" {
            out.extend(
                CLASSES
                    .iter()
                    .copied()
                    .filter(|c| c.stored)
                    .map(|class| Sub { class, only: None }),
            );
            continue;
        }
        let (name, only) = match c.split_once('/') {
            Some((n, r)) => (n, Some(r.to_owned())),
            None => (c.as_str(), None),
        };
        if let Some(class) = model::class_ignore_case(name).filter(|c| c.stored) {
            out.push(Sub { class, only });
        }
    }
    out
}

fn parse_token(token: &str) -> Result<Option<u64>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    // Accept XAPI-shaped tokens ("gen,..."): the first number counts.
    let first = token.split(',').next().unwrap_or("");
    first
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| ApiError::new(&codes::EVENT_FROM_TOKEN_PARSE_FAILURE, [token]))
}

fn event(
    id: u64,
    class: &Class,
    op: &str,
    r: &str,
    snapshot: Option<Value>,
    ts: &str,
) -> (u64, Value) {
    let mut m = BTreeMap::from([
        (
            "id".to_owned(),
            Value::Int(i64::try_from(id).unwrap_or(i64::MAX)),
        ),
        ("timestamp".to_owned(), Value::DateTime(ts.to_owned())),
        (
            "class".to_owned(),
            Value::String(class.name.to_ascii_lowercase()),
        ),
        ("operation".to_owned(), Value::String(op.to_owned())),
        ("ref".to_owned(), Value::String(r.to_owned())),
    ]);
    if let Some(s) = snapshot {
        m.insert("snapshot".to_owned(), s);
    }
    (id, Value::Struct(m))
}

/// One answer of `event.from` before it is wrapped up.
struct Batch {
    events: Vec<Value>,
    counts: BTreeMap<String, Value>,
    /// The generation the batch is complete up to: the next token.
    gen: u64,
}

/// The events after `since` (or all objects) for `subs`, and the token to continue from.
fn collect(tx: &Tx<'_>, subs: &[Sub], since: Option<u64>) -> Result<Batch, ApiError> {
    let gen = tx.generation();
    let from = since.unwrap_or(0);
    if since.is_some() && from < tx.deleted_pruned_below()? {
        return Err(ApiError::new(&codes::EVENTS_LOST, Vec::<String>::new()));
    }
    let now = time::now();
    let from_i = i64::try_from(from).unwrap_or(i64::MAX);
    let mut evs: Vec<(u64, Value)> = Vec::new();
    let mut counts = BTreeMap::new();
    for sub in subs {
        let c = sub.class;
        let rows = match &sub.only {
            Some(r) => tx.raw_rows(c, "_ref = ?1 AND _modified > ?2", &[r, &from_i])?,
            None => tx.raw_rows(c, "_modified > ?1", &[&from_i])?,
        };
        let meta: Vec<(u64, u64)> = rows.iter().map(|r| (r.created, r.modified)).collect();
        for ((r, rec), (created, modified)) in tx.complete(c, rows)?.into_iter().zip(meta) {
            let op = if since.is_none() || created > from {
                "add"
            } else {
                "mod"
            };
            evs.push(event(modified, c, op, &r, Some(rec), &now));
        }
        counts.insert(c.name.to_ascii_lowercase(), Value::Int(tx.count(c.name)?));
    }
    if since.is_some() {
        for (g, class, r) in tx.deleted_since(from)? {
            let hit = subs
                .iter()
                .find(|s| s.class.name == class && s.only.as_deref().is_none_or(|o| o == r));
            if let Some(s) = hit {
                evs.push(event(g, s.class, "del", &r, None, &now));
            }
        }
    }
    evs.sort_by_key(|(id, _)| *id);
    evs.dedup_by_key(|(id, _)| *id);
    Ok(Batch {
        events: evs.into_iter().map(|(_, v)| v).collect(),
        counts,
        gen,
    })
}

/// `event.from(classes, token, timeout)`: `{events, valid_ref_counts, token}`. Blocks up
/// to `timeout` seconds while nothing matching has changed.
pub fn from(db: &Db, classes: &[String], token: &str, timeout: f64) -> Result<Value, ApiError> {
    let since = parse_token(token)?;
    let subs = parse_subs(classes);
    let deadline = Db::deadline(timeout);
    let mut after = since;
    loop {
        let Batch {
            events,
            counts,
            gen,
        } = db.read(|tx| collect(tx, &subs, after))?;
        if !events.is_empty() || since.is_none() || Instant::now() >= deadline {
            return Ok(Value::Struct(BTreeMap::from([
                ("events".to_owned(), Value::Array(events)),
                ("valid_ref_counts".to_owned(), Value::Struct(counts)),
                ("token".to_owned(), Value::String(gen.to_string())),
            ])));
        }
        // Nothing for us up to `gen`: later calls need only look after it.
        after = Some(gen);
        db.wait_change(gen, deadline);
    }
}

/// `event.inject(class, ref)`: a `mod` event on the object; returns its token.
pub fn inject(db: &Db, class: &str, r: &str) -> Result<Value, ApiError> {
    let c = model::class_ignore_case(class)
        .filter(|c| c.stored)
        .ok_or_else(|| ApiError::handle_invalid(class, r))?;
    let g = db.write(|tx| tx.touch(c.name, r))?;
    Ok(Value::String(g.to_string()))
}

/// `event.get_current_id`.
pub fn current_id(db: &Db) -> Value {
    Value::Int(i64::try_from(db.generation()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
