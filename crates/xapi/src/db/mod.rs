//! The database: SQLite in WAL mode, one table per class, derived from the model.
//!
//! Durability: every change runs in one transaction ([`Db::write`]) that is committed with
//! `synchronous=FULL` before the call returns, so once a client has its answer the change is
//! in the WAL and fsynced; a `kill -9` (or a power cut) at any moment loses no committed
//! change, and an uncommitted transaction leaves no trace. Nothing is cached in memory but
//! the generation counter, which is written in the same transaction as the rows it stamps.
//!
//! Events: every row carries the generation of its creation and last change; deletions are
//! logged (bounded). A commit that changed anything wakes the waiters of `event.from`.

pub mod codec;
pub mod schema;
mod tx;

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{ApiError, Error};
pub use tx::Tx;

/// A migration hook: given the open transaction and the stored schema hash, bring the
/// database to the current schema (the DDL is [`schema::ddl`]) or explain why not.
pub type Migrate = fn(&rusqlite::Transaction<'_>, &str) -> Result<(), String>;

/// How to open a database.
#[derive(Clone, Copy)]
pub struct OpenOptions {
    /// What to do when the stored schema hash differs from the model's; `None` refuses.
    pub migrate: Option<Migrate>,
    /// How many deletions `event.from` remembers; an older token gets `EVENTS_LOST`.
    pub deleted_keep: u64,
}

impl std::default::Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            migrate: None,
            deleted_keep: 10_000,
        }
    }
}

struct Inner {
    conn: Connection,
    /// The last generation stamped on a committed change.
    gen: u64,
}

/// The database: `Send + Sync`, one connection behind a mutex (transactions are short).
pub struct Db {
    inner: Mutex<Inner>,
    /// The committed generation, for waiters.
    committed: Mutex<u64>,
    changed: Condvar,
    deleted_keep: u64,
}

const META_SCHEMA: &str = "schema_hash";
const META_GEN: &str = "generation";
/// Deletions at or below this generation have been pruned from `_deleted`.
const META_PRUNED: &str = "deleted_pruned_below";

impl Db {
    /// Opens (creating if needed) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Db, Error> {
        Db::open_with(path, OpenOptions::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Db, Error> {
        let path = path.as_ref();
        let open_err = |source| Error::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // WAL survives process death with any sync level; FULL also survives power loss:
        // a commit returns only once its WAL frames are fsynced.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Migration {
                from: String::new(),
                reason: format!("journal_mode is {mode}, not wal"),
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
        )
        .map_err(open_err)?;
        let gen = init_schema(&mut conn, opts.migrate)?;
        Ok(Db {
            inner: Mutex::new(Inner { conn, gen }),
            committed: Mutex::new(gen),
            changed: Condvar::new(),
            deleted_keep: opts.deleted_keep.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside a transaction rolled it back when the transaction dropped, so the
        // connection is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one write transaction, committed (durably) if it returns `Ok`, rolled
    /// back otherwise. Waiters for events are woken after the commit.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut inner = self.lock();
        let Inner { conn, gen } = &mut *inner;
        let start = *gen;
        let sql = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::from)?;
        let mut tx = Tx::new(sql, start, self.deleted_keep);
        let out = f(&mut tx)?;
        let new_gen = tx.commit()?;
        *gen = new_gen;
        drop(inner);
        if new_gen != start {
            let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            *c = new_gen;
            self.changed.notify_all();
        }
        Ok(out)
    }

    /// Runs `f` over a consistent snapshot (a read transaction).
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut inner = self.lock();
        let Inner { conn, gen } = &mut *inner;
        let sql = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(Error::from)?;
        let tx = Tx::new(sql, *gen, self.deleted_keep);
        f(&tx)
    }

    /// The generation of the last committed change.
    pub fn generation(&self) -> u64 {
        *self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until a change after generation `since` is committed or `deadline` passes;
    /// returns the committed generation. No polling: commits notify a condition variable.
    pub fn wait_change(&self, since: u64, deadline: Instant) -> u64 {
        let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        while *c <= since {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let (g, _) = self
                .changed
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner());
            c = g;
        }
        *c
    }

    /// A bound for waits: `timeout` seconds from now (clamped to a day; never panics).
    pub fn deadline(timeout_secs: f64) -> Instant {
        let secs = if timeout_secs.is_finite() {
            timeout_secs.clamp(0.0, 86_400.0)
        } else {
            0.0
        };
        Instant::now() + Duration::from_secs_f64(secs)
    }
}

/// Creates the schema in a new database or checks the stored hash; returns the generation.
fn init_schema(conn: &mut Connection, migrate: Option<Migrate>) -> Result<u64, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_meta: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='_meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    let expected = schema::hash();
    if !has_meta {
        tx.execute_batch(&schema::ddl())?;
        let put = "INSERT INTO _meta(key, value) VALUES (?1, ?2)";
        tx.execute(put, [META_SCHEMA, &expected])?;
        tx.execute(put, [META_GEN, "0"])?;
        tx.execute(put, [META_PRUNED, "0"])?;
    } else {
        let found: String = tx
            .query_row("SELECT value FROM _meta WHERE key=?1", [META_SCHEMA], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_default();
        if found != expected {
            let Some(m) = migrate else {
                return Err(Error::SchemaMismatch { found, expected });
            };
            m(&tx, &found).map_err(|reason| Error::Migration {
                from: found.clone(),
                reason,
            })?;
            tx.execute(
                "UPDATE _meta SET value=?2 WHERE key=?1",
                [META_SCHEMA, &expected],
            )?;
        }
    }
    let gen: String = tx.query_row("SELECT value FROM _meta WHERE key=?1", [META_GEN], |r| {
        r.get(0)
    })?;
    let gen = gen.parse().map_err(|_| Error::Corrupt {
        class: "_meta".into(),
        field: META_GEN.into(),
        reason: gen.clone(),
    })?;
    tx.commit()?;
    Ok(gen)
}

#[cfg(test)]
mod tests;
