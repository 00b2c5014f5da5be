use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::db::OpenOptions;

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn open(dir: &tempfile::TempDir) -> Db {
    Db::open(dir.path().join("ev.db")).expect("open")
}

fn new_vm(db: &Db, name: &str) -> String {
    db.write(|tx| tx.create("VM", BTreeMap::from([("name_label".to_owned(), s(name))])))
        .expect("vm")
}

/// (events as (class, op, ref), token)
fn from_(
    db: &Db,
    classes: &[&str],
    token: &str,
    timeout: f64,
) -> (Vec<(String, String, String)>, String) {
    let classes: Vec<String> = classes.iter().map(|c| (*c).to_owned()).collect();
    let Value::Struct(m) = from(db, &classes, token, timeout).expect("event.from") else {
        panic!("not a struct")
    };
    let Some(Value::Array(evs)) = m.get("events") else {
        panic!("events")
    };
    let evs = evs
        .iter()
        .map(|e| {
            let Value::Struct(e) = e else { panic!("event") };
            let g = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            if g("operation") != "del" {
                assert!(
                    matches!(e.get("snapshot"), Some(Value::Struct(_))),
                    "snapshot"
                );
            }
            (g("class"), g("operation"), g("ref"))
        })
        .collect();
    let Some(Value::String(t)) = m.get("token") else {
        panic!("token")
    };
    assert!(matches!(m.get("valid_ref_counts"), Some(Value::Struct(_))));
    (evs, t.clone())
}

fn ev(class: &str, op: &str, r: &str) -> (String, String, String) {
    (class.to_owned(), op.to_owned(), r.to_owned())
}

#[test]
fn empty_token_gives_everything_as_add_then_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir);
    let a = new_vm(&db, "a");
    let (evs, t0) = from_(&db, &["VM"], "", 0.0);
    assert_eq!(evs, [ev("vm", "add", &a)]);
    // Nothing new: empty after the timeout.
    let (evs, t1) = from_(&db, &["vm"], &t0, 0.0);
    assert!(evs.is_empty());
    assert_eq!(t0, t1);
    // A change, a creation, a deletion.
    db.write(|tx| tx.set("VM", &a, "name_label", s("a2")))
        .expect("set");
    let b = new_vm(&db, "b");
    let (evs, t2) = from_(&db, &["*"], &t1, 0.0);
    assert_eq!(evs, [ev("vm", "mod", &a), ev("vm", "add", &b)]);
    db.write(|tx| tx.destroy("VM", &b)).expect("destroy");
    let (evs, _) = from_(&db, &["VM"], &t2, 0.0);
    assert_eq!(evs, [ev("vm", "del", &b)]);
}

#[test]
fn subscriptions_filter_by_class_and_ref() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir);
    let (_, t) = from_(&db, &["vm"], "", 0.0);
    let a = new_vm(&db, "a");
    let b = new_vm(&db, "b");
    db.write(|tx| tx.create("network", BTreeMap::new()))
        .expect("net");
    let (evs, _) = from_(&db, &[&format!("vm/{b}")], &t, 0.0);
    assert_eq!(evs, [ev("vm", "add", &b)]);
    let (evs, _) = from_(&db, &["Vm", "nosuchclass"], &t, 0.0);
    assert_eq!(evs, [ev("vm", "add", &a), ev("vm", "add", &b)]);
    let (evs, _) = from_(&db, &["network"], &t, 0.0);
    assert_eq!(evs.len(), 1);
}

#[test]
fn waiting_is_woken_by_a_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(open(&dir));
    let (_, t) = from_(&db, &["vm"], "", 0.0);
    let writer = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // Changes of other classes do not end the wait...
            db.write(|tx| tx.create("network", BTreeMap::new()))
                .expect("net");
            std::thread::sleep(Duration::from_millis(100));
            new_vm(&db, "late")
        })
    };
    let start = Instant::now();
    let (evs, _) = from_(&db, &["vm"], &t, 30.0);
    let took = start.elapsed();
    let vm = writer.join().expect("writer");
    assert_eq!(evs, [ev("vm", "add", &vm)]);
    assert!(
        took >= Duration::from_millis(150),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "not woken: {took:?}");
    // A timeout with nothing to say returns on time.
    let start = Instant::now();
    let (evs, _) = from_(&db, &["vm"], &db.generation().to_string(), 0.2);
    assert!(evs.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn old_tokens_lose_events_and_bad_tokens_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = OpenOptions {
        deleted_keep: 2,
        ..OpenOptions::default()
    };
    let db = Db::open_with(dir.path().join("ev.db"), opts).expect("open");
    let (_, t) = from_(&db, &["vm"], "", 0.0);
    for i in 0..5 {
        let vm = new_vm(&db, &format!("v{i}"));
        db.write(|tx| tx.destroy("VM", &vm)).expect("destroy");
    }
    let e = from(&db, &["vm".into()], &t, 0.0).expect_err("lost");
    assert_eq!(e.code, "EVENTS_LOST");
    // An empty token always works.
    from(&db, &["vm".into()], "", 0.0).expect("resync");
    let e = from(&db, &["vm".into()], "yesterday", 0.0).expect_err("parse");
    assert_eq!(
        e.description(),
        ["EVENT_FROM_TOKEN_PARSE_FAILURE", "yesterday"]
    );
}

#[test]
fn inject_and_current_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(&dir);
    let a = new_vm(&db, "a");
    let (_, t) = from_(&db, &["vm"], "", 0.0);
    let Value::String(tok) = inject(&db, "vm", &a).expect("inject") else {
        panic!()
    };
    assert_eq!(current_id(&db), Value::Int(tok.parse().expect("number")));
    let (evs, _) = from_(&db, &["vm"], &t, 0.0);
    assert_eq!(evs, [ev("vm", "mod", &a)]);
    let e = inject(&db, "vm", "OpaqueRef:nope").expect_err("bad ref");
    assert_eq!(e.code, "HANDLE_INVALID");
}
