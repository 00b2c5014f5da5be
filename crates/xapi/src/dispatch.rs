//! One entry point for every call: `Api::call("VM.get_name_label", params)`.
//!
//! Order of checks, as XAPI's generated server: method known → session valid → role
//! sufficient → parameter count → parameter types → references exist → run. Custom
//! messages with effects go to the daemon's [`Actions`]; the toolstack's own messages
//! (session, task, event, message) and every generic call are served here.

use std::collections::BTreeMap;
use std::sync::Arc;

use fv_rpc::Value;

use crate::auth::{Auth, Caller, Cost};
use crate::db::codec::{self, is_null_ref};
use crate::db::Db;
use crate::error::{codes, ApiError};
use crate::generic::{self, Generic};
use crate::model::{self, Class, Message, Role, Ty};
use crate::{events, task};

/// What a custom message's implementation is given.
pub struct CallContext {
    pub api: Api,
    pub caller: Caller,
    /// The task of an `Async.` call, for progress and cancellation.
    pub task: Option<String>,
}

/// The daemon's implementation of the custom messages ([`model::custom_messages`]).
///
/// `args` have been checked against the message's parameter types (refs name existing
/// objects; null refs are `OpaqueRef:NULL`), the session is valid and its role sufficient.
pub trait Actions: Send + Sync {
    fn call(
        &self,
        ctx: &CallContext,
        class: &'static Class,
        msg: &'static Message,
        args: Vec<Value>,
    ) -> Result<Value, ApiError>;

    /// Called in the transaction that creates an object through the generic `create`,
    /// so that fields the daemon derives (a VM's `allowed_operations`) are right from the
    /// start. An error undoes the creation.
    fn created(
        &self,
        _tx: &mut crate::db::Tx<'_>,
        _class: &'static Class,
        _r: &str,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Called in the transaction of a generic `destroy`, before the record goes: what
    /// the daemon holds for the object (a process, a firewall chain) goes with it, or the
    /// destruction is refused. An error leaves the object as it was.
    fn destroying(
        &self,
        _tx: &mut crate::db::Tx<'_>,
        _class: &'static Class,
        _r: &str,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Called in the transaction of a generic setter (`set_`, `add_to_`, `remove_from_`,
    /// `add_`, `remove_`), after `field` changed: the daemon makes the host follow. An
    /// error undoes the change.
    fn changed(
        &self,
        _tx: &mut crate::db::Tx<'_>,
        _class: &'static Class,
        _r: &str,
        _field: &'static model::Field,
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Answers every custom message with `NOT_IMPLEMENTED`: for tests and tools.
pub struct NoActions;

impl Actions for NoActions {
    fn call(
        &self,
        _: &CallContext,
        c: &'static Class,
        m: &'static Message,
        _: Vec<Value>,
    ) -> Result<Value, ApiError> {
        Err(ApiError::new(
            &codes::NOT_IMPLEMENTED,
            [format!("{}.{}", c.name, m.name)],
        ))
    }
}

/// Whether `class.msg` is served by this crate rather than the daemon.
pub fn is_builtin(class: &str, msg: &str) -> bool {
    matches!(
        (class, msg),
        (
            "session",
            "login_with_password" | "logout" | "change_password"
        ) | ("task", "create" | "destroy" | "cancel")
            | ("event", "from" | "inject" | "get_current_id")
            | ("message", "create" | "destroy" | "get_since")
            | (
                "user",
                "create_local" | "set_role" | "set_password" | "get_role"
            )
    )
}

/// A role by its XenAPI name (`vm-operator`...), or `INVALID_VALUE`.
fn parse_role(name: &str) -> Result<Role, ApiError> {
    Role::from_name(name).ok_or_else(|| ApiError::new(&codes::INVALID_VALUE, ["role", name]))
}

/// A user record's login name.
fn user_name(db: &Db, user: &str) -> Result<String, ApiError> {
    db.read(|tx| tx.get("user", user, "short_name"))
        .map(|v| v.as_str().unwrap_or_default().to_owned())
}

/// Most `Async.` calls running at once: each has a thread, and a client must not be able
/// to make the daemon start threads without end.
pub const MAX_RUNNING_TASKS: usize = 256;

struct Inner {
    db: Db,
    auth: Auth,
    actions: Arc<dyn Actions>,
    /// `Async.` calls running now.
    running_tasks: std::sync::atomic::AtomicUsize,
}

/// Counts one running task while it lives.
struct TaskSlot(Api);

impl TaskSlot {
    fn take(api: &Api) -> Option<TaskSlot> {
        use std::sync::atomic::Ordering;
        let running = &api.inner.running_tasks;
        let mut now = running.load(Ordering::Relaxed);
        loop {
            if now >= MAX_RUNNING_TASKS {
                return None;
            }
            match running.compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(TaskSlot(api.clone())),
                Err(seen) => now = seen,
            }
        }
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.0
            .inner
            .running_tasks
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The API: the database, authentication and the daemon's actions. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

/// What a method name resolved to.
enum Target {
    Custom(&'static Message),
    Generic(Generic),
}

impl Api {
    /// An API over `db`; creates the role records if missing.
    pub fn new(db: Db, cost: Cost, actions: Arc<dyn Actions>) -> Result<Api, ApiError> {
        Auth::ensure_roles(&db)?;
        Ok(Api {
            inner: Arc::new(Inner {
                db,
                auth: Auth::new(cost),
                actions,
                running_tasks: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Runs one XenAPI call. `params` are the wire parameters, the session first (except
    /// for `session.login_with_password`).
    pub fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        // `from` is a keyword in Python: the SDK's users write `xenapi.event_from(...)`,
        // which XAPI serves as `event.from`.
        let method = if method == "event_from" {
            "event.from"
        } else {
            method
        };
        let (is_async, name) = match method.strip_prefix("Async.") {
            Some(rest) => (true, rest),
            None => (false, method),
        };
        let unknown = || ApiError::method_unknown(method);
        let (cname, mname) = name.split_once('.').ok_or_else(unknown)?;
        let class = model::class(cname).ok_or_else(unknown)?;
        if (cname, mname) == ("session", "login_with_password") && !is_async {
            return self.login(method, params);
        }
        let target = match class.message(mname) {
            Some(m) => Target::Custom(m),
            None => Target::Generic(generic::resolve(class, mname).ok_or_else(unknown)?),
        };
        let async_ok = match &target {
            Target::Custom(m) => m.is_async,
            Target::Generic(g) => g.is_async(),
        };
        if is_async && !async_ok {
            return Err(unknown());
        }
        let mut params = params.into_iter();
        let session = match params.next() {
            Some(Value::String(s)) => s,
            Some(_) => return Err(ApiError::new(&codes::SESSION_INVALID, [""])),
            None => {
                let n = match &target {
                    Target::Custom(m) => m.params.len(),
                    Target::Generic(g) => g.params(class).len(),
                };
                return Err(ApiError::count_mismatch(method, n + 1, 0));
            }
        };
        let caller = Auth::check(self.db(), &session)?;
        let need = match &target {
            Target::Custom(m) => m.min_role,
            Target::Generic(g) => g.min_role(class),
        };
        if caller.role < need {
            return Err(ApiError::new(
                &codes::RBAC_PERMISSION_DENIED,
                [name, "No permission in user session"],
            ));
        }
        let args: Vec<Value> = params.collect();
        let types = match &target {
            Target::Custom(m) => m.params.iter().map(|p| (p.name, p.ty)).collect(),
            Target::Generic(g) => g.params(class),
        };
        if args.len() != types.len() {
            return Err(ApiError::count_mismatch(
                method,
                types.len() + 1,
                args.len() + 1,
            ));
        }
        let args = self.check_args(&types, &args)?;
        if is_async {
            let slot = TaskSlot::take(self).ok_or_else(|| {
                ApiError::new(
                    &codes::OPERATION_NOT_ALLOWED,
                    [format!(
                        "{MAX_RUNNING_TASKS} asynchronous calls are running; try again when some have ended"
                    )],
                )
            })?;
            let t = task::create(self.db(), method, "", None)?;
            let api = self.clone();
            let tref = t.clone();
            std::thread::Builder::new()
                .name(format!("xapi {name}"))
                .spawn(move || {
                    let _slot = slot;
                    let ctx = CallContext {
                        api: api.clone(),
                        caller,
                        task: Some(tref.clone()),
                    };
                    let out = api.run(&ctx, class, &target, args);
                    let done = match &out {
                        Ok(v) => task::succeed(api.db(), &tref, v),
                        Err(e) => task::fail(api.db(), &tref, e),
                    };
                    // The database refused the task's completion: nothing more can be done
                    // here; the task stays pending and the daemon's reconciliation sees it.
                    let _ = done;
                })
                .map_err(|e| ApiError::internal(format!("spawning a task thread: {e}")))?;
            return Ok(Value::String(t));
        }
        let ctx = CallContext {
            api: self.clone(),
            caller,
            task: None,
        };
        self.run(&ctx, class, &target, args)
    }

    fn run(
        &self,
        ctx: &CallContext,
        class: &'static Class,
        target: &Target,
        args: Vec<Value>,
    ) -> Result<Value, ApiError> {
        match target {
            Target::Generic(g) => generic::run(self.db(), class, g, args, &*self.inner.actions),
            Target::Custom(m) if is_builtin(class.name, m.name) => {
                self.builtin(ctx, class, m, args)
            }
            Target::Custom(m) => self.inner.actions.call(ctx, class, m, args),
        }
    }

    /// Checks each argument's type; refs must name existing objects.
    fn check_args(
        &self,
        types: &[(&'static str, Ty)],
        args: &[Value],
    ) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::with_capacity(args.len());
        for ((name, ty), v) in types.iter().zip(args) {
            let v = codec::coerce(ty, v, name)?;
            if let (Ty::Ref(c), Value::String(r)) = (ty, &v) {
                // XAPI lets a null ref through where a parameter is optional (VM.copy's sr).
                if !is_null_ref(r) && model::class(c).is_some_and(|c| c.stored) {
                    self.db().read(|tx| tx.check_ref(c, r))?;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    fn login(&self, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        // uname, pwd, then optionally version and originator, as XAPI accepts.
        if !(2..=4).contains(&params.len()) {
            return Err(ApiError::count_mismatch(method, 4, params.len()));
        }
        let s = |i: usize, name: &str| -> Result<String, ApiError> {
            match params.get(i) {
                None => Ok(String::new()),
                Some(v) => v
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::field_type(name)),
            }
        };
        let (u, p, _version, orig) = (
            s(0, "uname")?,
            s(1, "pwd")?,
            s(2, "version")?,
            s(3, "originator")?,
        );
        self.auth()
            .login(self.db(), &u, &p, &orig)
            .map(Value::String)
    }

    fn builtin(
        &self,
        ctx: &CallContext,
        class: &'static Class,
        m: &'static Message,
        args: Vec<Value>,
    ) -> Result<Value, ApiError> {
        let db = self.db();
        let s = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or("").to_owned();
        match (class.name, m.name) {
            ("session", "logout") => Auth::logout(db, &ctx.caller.session).map(|()| Value::void()),
            ("session", "change_password") => self
                .auth()
                .change_password(db, &ctx.caller, &s(0), &s(1))
                .map(|()| Value::void()),
            ("user", "create_local") => {
                let role = parse_role(&s(2))?;
                self.auth()
                    .add_user(db, &s(0), &s(1), role)
                    .map(Value::String)
            }
            ("user", "set_role") => {
                let role = parse_role(&s(1))?;
                Auth::set_role(db, &user_name(db, &s(0))?, role).map(|()| Value::void())
            }
            ("user", "set_password") => self
                .auth()
                .set_password(db, &user_name(db, &s(0))?, &s(1))
                .map(|()| Value::void()),
            ("user", "get_role") => {
                crate::auth::role_of(db, &user_name(db, &s(0))?).map(|r| Value::from(r.name()))
            }
            ("task", "create") => task::create(db, &s(0), &s(1), None).map(Value::String),
            ("task", "destroy") => db
                .write(|tx| tx.destroy("task", &s(0)))
                .map(|()| Value::void()),
            ("task", "cancel") => task::cancel(db, &s(0)).map(|()| Value::void()),
            ("event", "from") => {
                let classes: Vec<String> = match args.first() {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                    _ => Vec::new(),
                };
                let timeout = match args.get(2) {
                    Some(Value::Float(f)) => *f,
                    _ => 0.0,
                };
                events::from(db, &classes, &s(1), timeout)
            }
            ("event", "inject") => events::inject(db, &s(0), &s(1)),
            ("event", "get_current_id") => Ok(events::current_id(db)),
            ("message", "create") => {
                let mut f = BTreeMap::new();
                for (p, v) in m.params.iter().zip(args) {
                    f.insert(p.name.to_owned(), v);
                }
                f.insert("timestamp".to_owned(), Value::DateTime(crate::time::now()));
                db.write(|tx| tx.create("message", f)).map(Value::String)
            }
            ("message", "destroy") => db
                .write(|tx| tx.destroy("message", &s(0)))
                .map(|()| Value::void()),
            ("message", "get_since") => {
                let since = match args.first() {
                    Some(Value::DateTime(d)) => d.clone(),
                    _ => crate::time::NEVER.to_owned(),
                };
                let recs = db.read(|tx| tx.records("message"))?;
                let out = recs
                    .into_iter()
                    .filter(|(_, rec)| match rec {
                        // Same fixed-width UTC form, so text order is time order.
                        Value::Struct(m) => {
                            matches!(m.get("timestamp"), Some(Value::DateTime(t)) if *t > since)
                        }
                        _ => false,
                    })
                    .collect();
                Ok(Value::Struct(out))
            }
            _ => Err(ApiError::method_unknown(&format!(
                "{}.{}",
                class.name, m.name
            ))),
        }
    }
}

/// The role a generic call needs.
pub(crate) fn writer_role(class: &Class, field: &model::Field) -> Role {
    field.writer.unwrap_or(class.default_role)
}

#[cfg(test)]
mod tests;
