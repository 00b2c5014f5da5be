use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;
use crate::auth::ROOT;

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// Implements a few custom messages against the database, as the daemon would.
#[derive(Default)]
struct TestActions {
    calls: Mutex<Vec<String>>,
}

impl Actions for TestActions {
    fn call(
        &self,
        ctx: &CallContext,
        c: &'static Class,
        m: &'static Message,
        args: Vec<Value>,
    ) -> Result<Value, ApiError> {
        self.calls
            .lock()
            .expect("calls")
            .push(format!("{}.{}", c.name, m.name));
        let vm = args
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let db = ctx.api.db();
        match (c.name, m.name) {
            ("VM", "start") => {
                let st = db.read(|tx| tx.get("VM", &vm, "power_state"))?;
                if st != s("Halted") {
                    return Err(ApiError::new(
                        &codes::VM_BAD_POWER_STATE,
                        [vm.as_str(), "halted", st.as_str().unwrap_or("")],
                    ));
                }
                if let Some(t) = &ctx.task {
                    task::set_progress(db, t, 0.5)?;
                }
                db.write(|tx| tx.set("VM", &vm, "power_state", s("Running")))?;
                Ok(Value::void())
            }
            ("VM", "clean_shutdown") => {
                // Waits for cancellation, polling as a long operation would.
                let t = ctx.task.clone().unwrap_or_default();
                let end = Instant::now() + Duration::from_secs(10);
                while Instant::now() < end {
                    if task::cancel_requested(db, &t)? {
                        return Err(ApiError::new(&codes::TASK_CANCELLED, [t.as_str()]));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(Value::void())
            }
            ("VM", "clone") => db
                .write(|tx| {
                    tx.create(
                        "VM",
                        BTreeMap::from([("name_label".to_owned(), args[1].clone())]),
                    )
                })
                .map(Value::String),
            _ => NoActions.call(ctx, c, m, args),
        }
    }

    /// Refuses to destroy a network named "keep".
    fn destroying(
        &self,
        tx: &mut crate::db::Tx<'_>,
        c: &'static Class,
        r: &str,
    ) -> Result<(), ApiError> {
        self.calls
            .lock()
            .expect("calls")
            .push(format!("destroying {}", c.name));
        if tx.get(c.name, r, "name_label")? == s("keep") {
            return Err(ApiError::new(&codes::OPERATION_NOT_ALLOWED, ["kept"]));
        }
        Ok(())
    }

    /// Refuses an `other_config` with the key "refuse".
    fn changed(
        &self,
        tx: &mut crate::db::Tx<'_>,
        c: &'static Class,
        r: &str,
        f: &'static model::Field,
    ) -> Result<(), ApiError> {
        self.calls
            .lock()
            .expect("calls")
            .push(format!("changed {}.{}", c.name, f.name));
        if let Value::Struct(m) = tx.get(c.name, r, f.name)? {
            if m.contains_key("refuse") {
                return Err(ApiError::new(&codes::INVALID_VALUE, ["refuse", ""]));
            }
        }
        Ok(())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    api: Api,
    /// Session per role name, and "root".
    sessions: HashMap<&'static str, String>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path().join("api.db")).expect("open");
    let api = Api::new(db, Cost::Cheap, Arc::new(TestActions::default())).expect("api");
    assert!(api.auth().bootstrap_root(api.db(), "rootpw").expect("root"));
    assert!(!api.auth().bootstrap_root(api.db(), "other").expect("again"));
    let mut sessions = HashMap::new();
    for role in Role::ALL {
        api.auth()
            .add_user(api.db(), role.name(), "pw", role)
            .expect("user");
        let sess = api
            .call(
                "session.login_with_password",
                vec![s(role.name()), s("pw"), s("1.0"), s("test")],
            )
            .expect("login");
        sessions.insert(role.name(), sess.as_str().expect("ref").to_owned());
    }
    let root = api
        .call("session.login_with_password", vec![s(ROOT), s("rootpw")])
        .expect("root login");
    sessions.insert("root", root.as_str().expect("ref").to_owned());
    Env {
        _dir: dir,
        api,
        sessions,
    }
}

impl Env {
    fn call(&self, who: &str, method: &str, mut params: Vec<Value>) -> Result<Value, ApiError> {
        params.insert(0, s(&self.sessions[who]));
        self.api.call(method, params)
    }

    fn vm(&self, name: &str) -> String {
        let r = self
            .call(
                "root",
                "VM.create",
                vec![Value::Struct(BTreeMap::from([(
                    "name_label".into(),
                    s(name),
                )]))],
            )
            .expect("VM.create");
        r.as_str().expect("ref").to_owned()
    }

    fn wait_task(&self, t: &str) -> BTreeMap<String, Value> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let Value::Struct(rec) = self
                .call("root", "task.get_record", vec![s(t)])
                .expect("task")
            else {
                panic!("task record")
            };
            if rec["status"] != s("pending") && rec["status"] != s("cancelling") {
                return rec;
            }
            assert!(Instant::now() < end, "task never finished");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn code(r: Result<Value, ApiError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => e.code.to_owned(),
    }
}

#[test]
fn login_logout_and_sessions() {
    let e = env();
    let bad = e
        .api
        .call("session.login_with_password", vec![s(ROOT), s("wrong")])
        .expect_err("bad password");
    assert_eq!(
        bad.description(),
        [
            "SESSION_AUTHENTICATION_FAILED",
            "root",
            "Authentication failure"
        ]
    );
    assert_eq!(
        code(
            e.api
                .call("session.login_with_password", vec![s("nobody"), s("x")])
        ),
        "SESSION_AUTHENTICATION_FAILED"
    );
    assert_eq!(
        code(e.api.call("session.login_with_password", vec![s(ROOT)])),
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    );
    // No call without a valid session.
    let err = e
        .api
        .call("VM.get_all", vec![s("OpaqueRef:forged")])
        .expect_err("forged");
    assert_eq!(err.description(), ["SESSION_INVALID", "OpaqueRef:forged"]);
    assert_eq!(
        code(e.api.call("VM.get_all", vec![Value::Int(3)])),
        "SESSION_INVALID"
    );
    assert_eq!(
        code(e.api.call("VM.get_all", vec![])),
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    );
    // The session's own record.
    let me = e.sessions["root"].clone();
    let user = e
        .call("root", "session.get_this_user", vec![s(&me)])
        .expect("this_user");
    assert_eq!(
        e.call("root", "user.get_short_name", vec![user])
            .expect("name"),
        s(ROOT)
    );
    assert_eq!(
        e.call("root", "session.get_is_local_superuser", vec![s(&me)]),
        Ok(Value::Bool(true))
    );
    e.call("root", "session.logout", vec![]).expect("logout");
    assert_eq!(
        code(e.call("root", "VM.get_all", vec![])),
        "SESSION_INVALID"
    );
}

#[test]
fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("api.db");
    let sess = {
        let api = Api::new(
            Db::open(&path).expect("open"),
            Cost::Cheap,
            Arc::new(NoActions),
        )
        .expect("api");
        api.auth().bootstrap_root(api.db(), "pw").expect("root");
        api.call("session.login_with_password", vec![s(ROOT), s("pw")])
            .expect("login")
    };
    let api = Api::new(
        Db::open(&path).expect("reopen"),
        Cost::Cheap,
        Arc::new(NoActions),
    )
    .expect("api");
    assert_eq!(api.call("VM.get_all", vec![sess]), Ok(Value::Array(vec![])));
}

#[test]
fn roles_are_checked_on_every_call() {
    let e = env();
    let vm = e.vm("v");
    // (method, extra params, weakest role allowed)
    let cases: Vec<(&str, Vec<Value>, Role)> = vec![
        ("VM.get_all", vec![], Role::ReadOnly),
        ("VM.get_record", vec![s(&vm)], Role::ReadOnly),
        ("role.get_all_records", vec![], Role::ReadOnly),
        ("VM.add_tags", vec![s(&vm), s("t")], Role::VmOperator),
        ("VM.set_name_label", vec![s(&vm), s("n")], Role::VmAdmin),
        (
            "VM.add_to_other_config",
            vec![s(&vm), s("k"), s("v")],
            Role::VmAdmin,
        ),
        (
            "VM.set_affinity",
            vec![s(&vm), s("OpaqueRef:NULL")],
            Role::VmPowerAdmin,
        ),
        (
            "network.create",
            vec![Value::Struct(BTreeMap::new())],
            Role::PoolOperator,
        ),
        ("pool.get_all", vec![], Role::ReadOnly),
    ];
    for (method, params, weakest) in cases {
        for role in Role::ALL {
            // Undo the previous role's change so each succeeds afresh.
            let _ = e.call("root", "VM.remove_from_other_config", vec![s(&vm), s("k")]);
            let got = e.call(role.name(), method, params.clone());
            if role >= weakest {
                assert!(got.is_ok(), "{} may call {method}: {got:?}", role.name());
            } else {
                let err = got.expect_err("refused");
                assert_eq!(
                    err.code,
                    "RBAC_PERMISSION_DENIED",
                    "{} {method}",
                    role.name()
                );
                assert_eq!(err.params[0], method);
            }
        }
    }
    // Custom messages: VM.start is vm-operator, VM.clone vm-admin, VM.snapshot vm-power-admin.
    assert_eq!(
        code(e.call(
            "read-only",
            "VM.start",
            vec![s(&vm), Value::Bool(false), Value::Bool(false)]
        )),
        "RBAC_PERMISSION_DENIED"
    );
    assert_eq!(
        code(e.call(
            "vm-operator",
            "VM.start",
            vec![s(&vm), Value::Bool(false), Value::Bool(false)]
        )),
        "ok String(\"\")"
    );
    assert_eq!(
        code(e.call("vm-operator", "VM.clone", vec![s(&vm), s("c")])),
        "RBAC_PERMISSION_DENIED"
    );
    assert!(e.call("vm-admin", "VM.clone", vec![s(&vm), s("c")]).is_ok());
    assert_eq!(
        code(e.call("vm-admin", "VM.snapshot", vec![s(&vm), s("c")])),
        "RBAC_PERMISSION_DENIED"
    );
    assert_eq!(
        code(e.call("vm-power-admin", "VM.snapshot", vec![s(&vm), s("c")])),
        "NOT_IMPLEMENTED"
    );
    // A role change applies to an open session at once.
    Auth::set_role(e.api.db(), "read-only", Role::VmAdmin).expect("promote");
    assert!(e
        .call("read-only", "VM.set_name_label", vec![s(&vm), s("n")])
        .is_ok());
}

#[test]
fn generic_calls_serve_the_database() {
    let e = env();
    let vm = e.vm("web");
    let uuid = e.call("root", "VM.get_uuid", vec![s(&vm)]).expect("uuid");
    assert_eq!(e.call("root", "VM.get_by_uuid", vec![uuid]), Ok(s(&vm)));
    assert_eq!(
        e.call("root", "VM.get_by_name_label", vec![s("web")]),
        Ok(Value::Array(vec![s(&vm)]))
    );
    let Value::Struct(all) = e.call("root", "VM.get_all_records", vec![]).expect("all") else {
        panic!()
    };
    let Some(Value::Struct(rec)) = all.get(&vm) else {
        panic!("record")
    };
    assert_eq!(rec.len(), model::class("VM").expect("VM").fields.len());
    // Maps.
    e.call(
        "root",
        "VM.add_to_other_config",
        vec![s(&vm), s("k"), s("v")],
    )
    .expect("add");
    let dup = e
        .call(
            "root",
            "VM.add_to_other_config",
            vec![s(&vm), s("k"), s("w")],
        )
        .expect_err("dup");
    assert_eq!(dup.code, "MAP_DUPLICATE_KEY");
    assert_eq!(dup.params[3], "k");
    e.call("root", "VM.remove_from_other_config", vec![s(&vm), s("k")])
        .expect("remove");
    e.call("root", "VM.remove_from_other_config", vec![s(&vm), s("k")])
        .expect("remove absent");
    // Sets.
    e.call("root", "VM.add_tags", vec![s(&vm), s("a")])
        .expect("tag");
    e.call("root", "VM.add_tags", vec![s(&vm), s("a")])
        .expect("tag again");
    assert_eq!(
        e.call("root", "VM.get_tags", vec![s(&vm)]),
        Ok(Value::Array(vec![s("a")]))
    );
    e.call("root", "VM.remove_tags", vec![s(&vm), s("a")])
        .expect("untag");
    // Setters exist only for RW fields; DynamicRO and StaticRO have none.
    assert_eq!(
        code(e.call("root", "VM.set_power_state", vec![s(&vm), s("Running")])),
        "MESSAGE_METHOD_UNKNOWN"
    );
    assert_eq!(
        code(e.call("root", "VM.set_VCPUs_max", vec![s(&vm), Value::Int(2)])),
        "NOT_IMPLEMENTED"
    );
    // Generic destroy where the lifecycle is generic; custom where declared.
    let net = e
        .call(
            "root",
            "network.create",
            vec![Value::Struct(BTreeMap::new())],
        )
        .expect("net");
    e.call("root", "network.destroy", vec![net.clone()])
        .expect("destroy");
    assert_eq!(
        code(e.call("root", "network.get_record", vec![net])),
        "HANDLE_INVALID"
    );
    assert_eq!(
        code(e.call("root", "host.create", vec![Value::Struct(BTreeMap::new())])),
        "MESSAGE_METHOD_UNKNOWN"
    );
    // Required fields of create.
    assert_eq!(
        code(e.call("root", "VBD.create", vec![Value::Struct(BTreeMap::new())])),
        "FIELD_TYPE_ERROR"
    );
}

#[test]
fn the_daemon_sees_generic_changes_and_destructions() {
    let e = env();
    let net = |name: &str| {
        e.call(
            "root",
            "network.create",
            vec![Value::Struct(BTreeMap::from([(
                "name_label".into(),
                s(name),
            )]))],
        )
        .expect("network.create")
    };
    let kept = net("keep");
    assert_eq!(
        code(e.call("root", "network.destroy", vec![kept.clone()])),
        "OPERATION_NOT_ALLOWED"
    );
    assert!(e
        .call("root", "network.get_record", vec![kept.clone()])
        .is_ok());
    e.call(
        "root",
        "network.add_to_other_config",
        vec![kept.clone(), s("k"), s("v")],
    )
    .expect("add");
    // Refused by the hook: the change is undone.
    assert_eq!(
        code(e.call(
            "root",
            "network.add_to_other_config",
            vec![kept.clone(), s("refuse"), s("v")],
        )),
        "INVALID_VALUE"
    );
    assert_eq!(
        e.call("root", "network.get_other_config", vec![kept.clone()]),
        Ok(Value::Struct(BTreeMap::from([("k".into(), s("v"))])))
    );
    e.call(
        "root",
        "network.set_name_label",
        vec![kept.clone(), s("go")],
    )
    .expect("rename");
    e.call("root", "network.destroy", vec![kept])
        .expect("destroy");
}

#[test]
fn malformed_calls_get_errors_and_change_nothing() {
    let e = env();
    let vm = e.vm("v");
    let g = e.api.db().generation();
    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        ("VM.nonsense", vec![], "MESSAGE_METHOD_UNKNOWN"),
        ("Nope.get_all", vec![], "MESSAGE_METHOD_UNKNOWN"),
        ("noclass", vec![], "MESSAGE_METHOD_UNKNOWN"),
        ("Async.VM.get_all", vec![], "MESSAGE_METHOD_UNKNOWN"),
        (
            "VM.set_name_label",
            vec![s(&vm)],
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
        ),
        (
            "VM.set_name_label",
            vec![s(&vm), s("a"), s("b")],
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
        ),
        (
            "VM.set_name_label",
            vec![s(&vm), Value::Int(1)],
            "FIELD_TYPE_ERROR",
        ),
        (
            "VM.set_user_version",
            vec![s(&vm), s("x")],
            "FIELD_TYPE_ERROR",
        ),
        (
            "VM.set_actions_after_reboot",
            vec![s(&vm), s("explode")],
            "INVALID_VALUE",
        ),
        (
            "VM.set_name_label",
            vec![s("OpaqueRef:nope"), s("a")],
            "HANDLE_INVALID",
        ),
        (
            "VM.set_name_label",
            vec![s("not-a-ref"), s("a")],
            "FIELD_TYPE_ERROR",
        ),
        (
            "VM.add_to_other_config",
            vec![s(&vm), s("k"), Value::Array(vec![])],
            "FIELD_TYPE_ERROR",
        ),
        (
            "VM.set_affinity",
            vec![s(&vm), s("OpaqueRef:nohost")],
            "HANDLE_INVALID",
        ),
        (
            "VM.start",
            vec![s(&vm), s("yes"), Value::Bool(false)],
            "FIELD_TYPE_ERROR",
        ),
        ("VM.create", vec![s("not a record")], "FIELD_TYPE_ERROR"),
        (
            "VM.create",
            vec![Value::Struct(BTreeMap::from([(
                "VCPUs_max".into(),
                s("two"),
            )]))],
            "FIELD_TYPE_ERROR",
        ),
        (
            "event.from",
            vec![Value::Array(vec![]), s("bad"), Value::Float(0.0)],
            "EVENT_FROM_TOKEN_PARSE_FAILURE",
        ),
    ];
    for (method, params, want) in cases {
        let got = e.call("root", method, params);
        assert_eq!(code(got), want, "{method}");
    }
    let err = e
        .call("root", "VM.set_name_label", vec![s(&vm)])
        .expect_err("count");
    assert_eq!(err.params, ["VM.set_name_label", "3", "2"]);
    assert_eq!(e.api.db().generation(), g, "nothing changed");
}

#[test]
fn async_calls_run_as_tasks() {
    let e = env();
    let vm = e.vm("v");
    let t = e
        .call(
            "vm-operator",
            "Async.VM.start",
            vec![s(&vm), Value::Bool(false), Value::Bool(false)],
        )
        .expect("async start");
    let t = t.as_str().expect("task ref").to_owned();
    let rec = e.wait_task(&t);
    assert_eq!(rec["status"], s("success"));
    assert_eq!(rec["progress"], Value::Float(1.0));
    assert_eq!(
        e.call("root", "VM.get_power_state", vec![s(&vm)]),
        Ok(s("Running"))
    );
    // A failure lands in error_info.
    let t = e
        .call(
            "root",
            "Async.VM.start",
            vec![s(&vm), Value::Bool(false), Value::Bool(false)],
        )
        .expect("async start");
    let rec = e.wait_task(t.as_str().expect("ref"));
    assert_eq!(rec["status"], s("failure"));
    let Value::Array(info) = &rec["error_info"] else {
        panic!()
    };
    assert_eq!(info[0], s("VM_BAD_POWER_STATE"));
    // A result is XAPI's XML text.
    let t = e
        .call("root", "Async.VM.clone", vec![s(&vm), s("c")])
        .expect("clone");
    let rec = e.wait_task(t.as_str().expect("ref"));
    assert!(matches!(&rec["result"], Value::String(r) if r.starts_with("<value>OpaqueRef:")));
    // Cancellation.
    let t = e
        .call("root", "Async.VM.clean_shutdown", vec![s(&vm)])
        .expect("shutdown");
    let t = t.as_str().expect("ref").to_owned();
    e.call("root", "task.cancel", vec![s(&t)]).expect("cancel");
    let rec = e.wait_task(&t);
    assert_eq!(rec["status"], s("cancelled"));
    assert_eq!(
        code(e.call("root", "task.cancel", vec![s(&t)])),
        "OPERATION_NOT_ALLOWED"
    );
    // Generic constructors have async twins.
    let t = e
        .call(
            "root",
            "Async.network.create",
            vec![Value::Struct(BTreeMap::new())],
        )
        .expect("net");
    assert_eq!(
        e.wait_task(t.as_str().expect("ref"))["status"],
        s("success")
    );
}

#[test]
fn builtin_messages() {
    let e = env();
    let m = e
        .call(
            "pool-operator",
            "message.create",
            vec![
                s("VM_CRASHED"),
                Value::Int(2),
                s("VM"),
                s("u"),
                s("it crashed"),
            ],
        )
        .expect("message");
    let Value::Struct(since) = e
        .call(
            "read-only",
            "message.get_since",
            vec![s("20000101T00:00:00Z")],
        )
        .expect("since")
    else {
        panic!()
    };
    assert!(since.contains_key(m.as_str().expect("ref")));
    assert_eq!(
        code(e.call(
            "read-only",
            "message.create",
            vec![s("x"), Value::Int(1), s("VM"), s(""), s("")]
        )),
        "RBAC_PERMISSION_DENIED"
    );
    let t = e
        .call("read-only", "task.create", vec![s("mine"), s("")])
        .expect("task");
    e.call("read-only", "task.destroy", vec![t])
        .expect("destroy");
    let Value::Int(_) = e
        .call("read-only", "event.get_current_id", vec![])
        .expect("id")
    else {
        panic!()
    };
    e.call(
        "read-only",
        "session.change_password",
        vec![s("pw"), s("new")],
    )
    .expect("change");
    assert_eq!(
        code(e.call(
            "read-only",
            "session.change_password",
            vec![s("pw"), s("x")]
        )),
        "SESSION_AUTHENTICATION_FAILED"
    );
    assert!(e
        .api
        .call(
            "session.login_with_password",
            vec![s("read-only"), s("new")]
        )
        .is_ok());
}

#[test]
fn every_custom_message_is_listed_for_the_daemon() {
    let listed: Vec<String> = model::custom_messages()
        .map(|(c, m)| format!("{}.{}", c.name, m.name))
        .collect();
    for m in [
        "VM.start",
        "VM.clean_shutdown",
        "VM.destroy",
        "VDI.create",
        "SR.create",
        "VBD.plug",
    ] {
        assert!(listed.iter().any(|l| l == m), "{m}");
    }
    assert!(!listed
        .iter()
        .any(|l| l.starts_with("session.") || l.starts_with("event.")));
}

/// A rough timing of `VM.get_all_records` over 1,000 VMs (run with `--ignored`).
#[test]
#[ignore = "timing, not a check"]
fn get_all_records_of_1000_vms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::new(
        Db::open(dir.path().join("b.db")).expect("open"),
        Cost::Cheap,
        Arc::new(NoActions),
    )
    .expect("api");
    api.auth().bootstrap_root(api.db(), "pw").expect("root");
    let sess = api
        .call("session.login_with_password", vec![s(ROOT), s("pw")])
        .expect("login");
    api.db()
        .write(|tx| {
            for i in 0..1000 {
                let vm = tx.create(
                    "VM",
                    BTreeMap::from([("name_label".to_owned(), s(&format!("vm{i}")))]),
                )?;
                tx.create("VBD", BTreeMap::from([("VM".to_owned(), s(&vm))]))?;
            }
            Ok(())
        })
        .expect("fill");
    let start = Instant::now();
    let n = 5;
    for _ in 0..n {
        let Value::Struct(all) = api
            .call("VM.get_all_records", vec![sess.clone()])
            .expect("all")
        else {
            panic!()
        };
        assert_eq!(all.len(), 1000);
    }
    println!(
        "VM.get_all_records, 1000 VMs: {:?} per call",
        start.elapsed() / n
    );
}

#[test]
fn local_users_are_managed_through_the_api() {
    let e = env();
    let u = e
        .call(
            "root",
            "user.create_local",
            vec![s("alice"), s("alicepw"), s("vm-operator")],
        )
        .expect("create_local");
    let u = u.as_str().expect("ref").to_owned();
    let login = |pw: &str| {
        e.api
            .call("session.login_with_password", vec![s("alice"), s(pw)])
    };
    let alice = login("alicepw").expect("alice logs in");
    let as_alice = |method: &str, mut params: Vec<Value>| {
        params.insert(0, alice.clone());
        e.api.call(method, params)
    };
    assert_eq!(
        e.call("root", "user.get_role", vec![s(&u)]).expect("role"),
        s("vm-operator")
    );
    // vm-operator may not create VMs; pool-admin's role change applies to her session.
    let create = || {
        as_alice(
            "VM.create",
            vec![Value::Struct(BTreeMap::from([(
                "name_label".into(),
                s("a"),
            )]))],
        )
    };
    assert_eq!(code(create()), "RBAC_PERMISSION_DENIED");
    e.call("root", "user.set_role", vec![s(&u), s("vm-admin")])
        .expect("set_role");
    create().expect("vm-admin creates VMs");
    // Only pool-admin manages users; unknown roles and taken names are refused.
    assert_eq!(
        code(e.call(
            "vm-admin",
            "user.create_local",
            vec![s("bob"), s("pw"), s("read-only")]
        )),
        "RBAC_PERMISSION_DENIED"
    );
    assert_eq!(
        code(e.call(
            "root",
            "user.create_local",
            vec![s("bob"), s("pw"), s("god")]
        )),
        "INVALID_VALUE"
    );
    assert_eq!(
        code(e.call(
            "root",
            "user.create_local",
            vec![s("alice"), s("pw"), s("read-only")]
        )),
        "DB_UNIQUENESS_CONSTRAINT_VIOLATION"
    );
    e.call("root", "user.set_password", vec![s(&u), s("newpw")])
        .expect("set_password");
    assert_eq!(code(login("alicepw")), "SESSION_AUTHENTICATION_FAILED");
    login("newpw").expect("the new password works");
}

#[test]
fn async_calls_running_at_once_are_bounded() {
    let e = env();
    let vm = e.vm("busy");
    let tasks: Vec<Value> = (0..MAX_RUNNING_TASKS)
        .map(|_| {
            e.call("root", "Async.VM.clean_shutdown", vec![s(&vm)])
                .expect("a task")
        })
        .collect();
    assert_eq!(
        code(e.call("root", "Async.VM.clean_shutdown", vec![s(&vm)])),
        "OPERATION_NOT_ALLOWED",
        "one task too many"
    );
    for t in &tasks {
        e.call("root", "task.cancel", vec![t.clone()])
            .expect("cancel");
    }
    for t in &tasks {
        e.wait_task(t.as_str().expect("ref"));
    }
    // Slots come back as tasks end.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match e.call("root", "Async.VM.clean_shutdown", vec![s(&vm)]) {
            Ok(t) => {
                e.call("root", "task.cancel", vec![t]).expect("cancel");
                break;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => panic!("no slot came back: {err:?}"),
        }
    }
}
