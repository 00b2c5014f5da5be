//! Sessions, local users and roles.
//!
//! Local users are XenAPI `user` records (`short_name` is the login name); their Argon2id
//! password hashes and roles live in the private `_credential` table, never in a record.
//! `root` is the local superuser, created by [`Auth::bootstrap_root`] with pool-admin.
//! Sessions are `session` records, so they survive a daemon restart. A session's role is
//! read from its user's credential on every call, so a role change takes effect at once.
//! The six XenAPI roles exist as `role` records with fixed references; each role's
//! `subroles` holds the role directly below it.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use fv_rpc::Value;
use rusqlite::OptionalExtension;

use crate::db::codec::NULL_REF;
use crate::db::{Db, Tx};
use crate::error::{codes, ApiError, Error};
use crate::model::Role;
use crate::time;

/// The login name of the local superuser.
pub const ROOT: &str = "root";

/// The fixed reference of a role's record.
pub fn role_ref(role: Role) -> String {
    let i = Role::ALL.iter().position(|r| *r == role).unwrap_or(0);
    format!("OpaqueRef:f0000000-0000-4000-8000-00000000000{i}")
}

fn role_uuid(role: Role) -> String {
    role_ref(role).trim_start_matches("OpaqueRef:").to_owned()
}

fn role_doc(role: Role) -> &'static str {
    match role {
        Role::PoolAdmin => "The Pool Administrator role has full access to all features and settings, including accessing Dom0 and managing subjects, roles and external authentication",
        Role::PoolOperator => "The Pool Operator role manages host- and pool-wide resources, including setting up storage, creating resource pools and managing patches, high availability (HA) and workload balancing (WLB)",
        Role::VmPowerAdmin => "The VM Power Administrator role has full access to VM and template management and can choose where to start VMs and use the dynamic memory control and VM snapshot features",
        Role::VmAdmin => "The VM Administrator role can manage VMs and templates",
        Role::VmOperator => "The VM Operator role can use VMs and interact with VM consoles",
        Role::ReadOnly => "The Read-Only role can log in with basic read-only access",
    }
}

/// The caller of an API call, once its session is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub session: String,
    pub user: String,
    pub role: Role,
}

/// How expensive password hashing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// Argon2id with its recommended defaults (19 MiB, 2 passes).
    Default,
    /// Minimal parameters, for tests only.
    Cheap,
}

/// Password hashing, users and sessions over a [`Db`].
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    cost: Cost,
}

impl Auth {
    pub fn new(cost: Cost) -> Auth {
        Auth { cost }
    }

    fn argon(&self) -> Result<Argon2<'static>, Error> {
        let params = match self.cost {
            Cost::Default => Params::default(),
            Cost::Cheap => Params::new(Params::MIN_M_COST, 1, 1, None)
                .map_err(|e| Error::Password(e.to_string()))?,
        };
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// An Argon2id hash of `password` in PHC string form.
    pub fn hash(&self, password: &str) -> Result<String, Error> {
        let raw = crate::db::codec::random_bytes::<16>();
        let salt = SaltString::encode_b64(&raw).map_err(|e| Error::Password(e.to_string()))?;
        self.argon()?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::Password(e.to_string()))
    }

    /// Whether `password` matches the PHC string `hash` (whose own parameters are used).
    pub fn verify(password: &str, hash: &str) -> bool {
        PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    }

    /// Creates the six role records if missing. Idempotent.
    pub fn ensure_roles(db: &Db) -> Result<(), ApiError> {
        db.write(|tx| {
            for role in Role::ALL {
                let r = role_ref(role);
                if tx.exists("role", &r)? {
                    continue;
                }
                let sub: Vec<Value> = role
                    .below()
                    .map(role_ref)
                    .map(Value::String)
                    .into_iter()
                    .collect();
                let fields = BTreeMap::from([
                    ("uuid".to_owned(), Value::String(role_uuid(role))),
                    ("name_label".to_owned(), Value::String(role.name().into())),
                    (
                        "name_description".to_owned(),
                        Value::String(role_doc(role).into()),
                    ),
                    ("subroles".to_owned(), Value::Array(sub)),
                ]);
                tx.create_with_ref("role", &r, fields)?;
            }
            Ok(())
        })
    }

    /// Creates `root` with `password` and pool-admin unless it exists; returns whether it
    /// was created. The daemon calls this at first start.
    pub fn bootstrap_root(&self, db: &Db, password: &str) -> Result<bool, ApiError> {
        if user_ref(db, ROOT)?.is_some() {
            return Ok(false);
        }
        self.add_user(db, ROOT, password, Role::PoolAdmin)?;
        Ok(true)
    }

    /// Adds a local user; `DB_UNIQUENESS_CONSTRAINT_VIOLATION` if the name is taken.
    pub fn add_user(
        &self,
        db: &Db,
        name: &str,
        password: &str,
        role: Role,
    ) -> Result<String, ApiError> {
        let hash = self.hash(password)?;
        db.write(|tx| {
            if find_user(tx, name)?.is_some() {
                return Err(ApiError::new(
                    &codes::DB_UNIQUENESS_CONSTRAINT_VIOLATION,
                    ["user", "short_name", name],
                ));
            }
            let r = tx.create(
                "user",
                BTreeMap::from([("short_name".to_owned(), Value::String(name.into()))]),
            )?;
            tx.sql()
                .execute(
                    "INSERT INTO _credential (user, hash, role) VALUES (?1, ?2, ?3)",
                    (&r, &hash, role.name()),
                )
                .map_err(Error::from)?;
            Ok(r)
        })
    }

    /// Changes a local user's password.
    pub fn set_password(&self, db: &Db, name: &str, password: &str) -> Result<(), ApiError> {
        let hash = self.hash(password)?;
        update_credential(db, name, "hash", &hash)
    }

    /// Changes a local user's role; it applies to their open sessions at once.
    pub fn set_role(db: &Db, name: &str, role: Role) -> Result<(), ApiError> {
        update_credential(db, name, "role", role.name())
    }

    /// `session.login_with_password`: a new session for `uname`, or
    /// `SESSION_AUTHENTICATION_FAILED`.
    pub fn login(
        &self,
        db: &Db,
        uname: &str,
        pwd: &str,
        originator: &str,
    ) -> Result<String, ApiError> {
        let cred = db.read(|tx| {
            let Some(u) = find_user(tx, uname)? else {
                return Ok(None);
            };
            credential(tx, &u).map(|c| c.map(|(hash, role)| (u, hash, role)))
        })?;
        let failed = || {
            ApiError::new(
                &codes::SESSION_AUTHENTICATION_FAILED,
                [uname, "Authentication failure"],
            )
        };
        let Some((user, hash, role)) = cred else {
            // Spend the same time as a real check, so names cannot be probed by timing.
            let _ = self.hash(pwd);
            return Err(failed());
        };
        // Hash checked outside the database lock.
        if !Auth::verify(pwd, &hash) {
            return Err(failed());
        }
        let perms: Vec<Value> = Role::ALL
            .into_iter()
            .filter(|r| *r <= role)
            .map(|r| Value::String(r.name().into()))
            .collect();
        db.write(|tx| {
            let host = tx
                .refs("host")?
                .into_iter()
                .next()
                .unwrap_or_else(|| NULL_REF.into());
            let now = Value::DateTime(time::now());
            tx.create(
                "session",
                BTreeMap::from([
                    ("this_host".to_owned(), Value::String(host)),
                    ("this_user".to_owned(), Value::String(user.clone())),
                    ("last_active".to_owned(), now.clone()),
                    ("validation_time".to_owned(), now),
                    ("is_local_superuser".to_owned(), Value::Bool(uname == ROOT)),
                    ("auth_user_name".to_owned(), Value::String(uname.into())),
                    ("rbac_permissions".to_owned(), Value::Array(perms)),
                    ("originator".to_owned(), Value::String(originator.into())),
                ]),
            )
        })
    }

    /// The caller behind session `session`, or `SESSION_INVALID [session]`.
    pub fn check(db: &Db, session: &str) -> Result<Caller, ApiError> {
        let row = db.read(|tx| {
            tx.sql()
                .prepare_cached(
                    "SELECT u.short_name, c.role FROM session s \
                     JOIN \"user\" u ON s.this_user = u._ref \
                     JOIN _credential c ON c.user = u._ref WHERE s._ref = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([session], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()
                })
                .map_err(|e| ApiError::from(Error::from(e)))
        })?;
        let invalid = || ApiError::new(&codes::SESSION_INVALID, [session]);
        let (user, role) = row.ok_or_else(invalid)?;
        let role = Role::from_name(&role).ok_or_else(invalid)?;
        Ok(Caller {
            session: session.to_owned(),
            user,
            role,
        })
    }

    /// `session.logout`.
    pub fn logout(db: &Db, session: &str) -> Result<(), ApiError> {
        db.write(|tx| tx.destroy("session", session))
    }

    /// `session.change_password` for the caller's own account.
    pub fn change_password(
        &self,
        db: &Db,
        caller: &Caller,
        old: &str,
        new: &str,
    ) -> Result<(), ApiError> {
        let hash = db.read(|tx| {
            let u = find_user(tx, &caller.user)?;
            match u {
                Some(u) => credential(tx, &u),
                None => Ok(None),
            }
        })?;
        match hash {
            Some((h, _)) if Auth::verify(old, &h) => self.set_password(db, &caller.user, new),
            _ => Err(ApiError::new(
                &codes::SESSION_AUTHENTICATION_FAILED,
                [caller.user.as_str(), "Authentication failure"],
            )),
        }
    }
}

/// The `user` record of a login name.
pub fn user_ref(db: &Db, name: &str) -> Result<Option<String>, ApiError> {
    db.read(|tx| find_user(tx, name))
}

/// A local user's role.
pub fn role_of(db: &Db, name: &str) -> Result<Role, ApiError> {
    db.read(|tx| {
        let u = find_user(tx, name)?.ok_or_else(|| ApiError::handle_invalid("user", name))?;
        credential(tx, &u)?
            .map(|(_, role)| role)
            .ok_or_else(|| ApiError::internal(format!("user {name} has no credential")))
    })
}

fn find_user(tx: &Tx<'_>, name: &str) -> Result<Option<String>, ApiError> {
    Ok(tx
        .find("user", "short_name", &Value::String(name.into()))?
        .into_iter()
        .next())
}

fn credential(tx: &Tx<'_>, user: &str) -> Result<Option<(String, Role)>, ApiError> {
    let row: Option<(String, String)> = tx
        .sql()
        .query_row(
            "SELECT hash, role FROM _credential WHERE user=?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(Error::from)?;
    Ok(row.and_then(|(h, r)| Role::from_name(&r).map(|r| (h, r))))
}

fn update_credential(db: &Db, name: &str, column: &str, value: &str) -> Result<(), ApiError> {
    db.write(|tx| {
        let u = find_user(tx, name)?.ok_or_else(|| ApiError::handle_invalid("user", name))?;
        tx.sql()
            .execute(
                &format!("UPDATE _credential SET {column}=?2 WHERE user=?1"),
                (&u, value),
            )
            .map_err(Error::from)?;
        // A `mod` event on the user, so watchers see that something changed.
        tx.touch("user", &u)?;
        Ok(())
    })
}
