//! Tasks: the daemon's handle on long calls, and what `Async.*` calls return.
//!
//! Status goes `pending` → `success` | `failure` | `cancelling` → `cancelled`. Every change
//! (progress included) is a database write, so it produces a `mod` event.

use std::collections::BTreeMap;

use fv_rpc::Value;

use crate::db::Db;
use crate::error::{codes, ApiError};
use crate::time;

/// A task's status, as XenAPI's `task_status_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Success,
    Failure,
    Cancelling,
    Cancelled,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn from_name(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Success,
            Status::Failure,
            Status::Cancelling,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }

    /// Whether the task has finished one way or another.
    pub fn is_done(self) -> bool {
        matches!(self, Status::Success | Status::Failure | Status::Cancelled)
    }
}

/// Creates a pending task; returns its reference.
pub fn create(
    db: &Db,
    label: &str,
    description: &str,
    subtask_of: Option<&str>,
) -> Result<String, ApiError> {
    db.write(|tx| {
        let mut f = BTreeMap::from([
            ("name_label".to_owned(), Value::String(label.into())),
            (
                "name_description".to_owned(),
                Value::String(description.into()),
            ),
            ("created".to_owned(), Value::DateTime(time::now())),
            (
                "allowed_operations".to_owned(),
                Value::Array(vec![Value::String("cancel".into())]),
            ),
        ]);
        if let Some(host) = tx.refs("host")?.into_iter().next() {
            f.insert("resident_on".to_owned(), Value::String(host));
        }
        if let Some(parent) = subtask_of {
            f.insert("subtask_of".to_owned(), Value::String(parent.into()));
        }
        tx.create("task", f)
    })
}

/// The task's status.
pub fn status(db: &Db, task: &str) -> Result<Status, ApiError> {
    let v = db.read(|tx| tx.get("task", task, "status"))?;
    v.as_str()
        .and_then(Status::from_name)
        .ok_or_else(|| ApiError::internal(format!("task {task} has a bad status")))
}

/// Sets progress, clamped to 0..=1; ignored once the task is done.
pub fn set_progress(db: &Db, task: &str, progress: f64) -> Result<(), ApiError> {
    let p = if progress.is_finite() {
        progress.clamp(0.0, 1.0)
    } else {
        0.0
    };
    db.write(|tx| {
        let st = tx.get("task", task, "status")?;
        if matches!(st.as_str(), Some("pending" | "cancelling")) {
            tx.set("task", task, "progress", Value::Float(p))?;
        }
        Ok(())
    })
}

fn finish(db: &Db, task: &str, status: Status, fields: Vec<(&str, Value)>) -> Result<(), ApiError> {
    db.write(|tx| {
        let st = tx.get("task", task, "status")?;
        if st
            .as_str()
            .and_then(Status::from_name)
            .is_some_and(Status::is_done)
        {
            return Ok(());
        }
        tx.set("task", task, "status", Value::String(status.name().into()))?;
        tx.set("task", task, "finished", Value::DateTime(time::now()))?;
        tx.set("task", task, "allowed_operations", Value::Array(vec![]))?;
        for (k, v) in fields {
            tx.set("task", task, k, v)?;
        }
        Ok(())
    })
}

/// Completes the task with `result` (stored as XAPI does: the XML-RPC `<value>` text).
pub fn succeed(db: &Db, task: &str, result: &Value) -> Result<(), ApiError> {
    finish(
        db,
        task,
        Status::Success,
        vec![
            ("progress", Value::Float(1.0)),
            ("result", Value::String(result_text(result))),
        ],
    )
}

/// Fails the task with `err` (its `error_info` is the ErrorDescription); a
/// `TASK_CANCELLED` error marks it cancelled instead.
pub fn fail(db: &Db, task: &str, err: &ApiError) -> Result<(), ApiError> {
    let status = if err.code == codes::TASK_CANCELLED.name {
        Status::Cancelled
    } else {
        Status::Failure
    };
    let info = err.description().into_iter().map(Value::String).collect();
    finish(db, task, status, vec![("error_info", Value::Array(info))])
}

/// `task.cancel`: asks for cancellation. The worker sees [`cancel_requested`] and ends the
/// task with [`cancelled`] (or finishes normally). A finished task cannot be cancelled.
pub fn cancel(db: &Db, task: &str) -> Result<(), ApiError> {
    db.write(|tx| {
        let st = tx.get("task", task, "status")?;
        match st.as_str() {
            Some("pending") => tx.set("task", task, "status", Value::String("cancelling".into())),
            Some("cancelling") => Ok(()),
            _ => Err(ApiError::new(
                &codes::OPERATION_NOT_ALLOWED,
                [format!("task {task} has already finished")],
            )),
        }
    })
}

/// Whether cancellation was requested: the worker polls this between steps.
pub fn cancel_requested(db: &Db, task: &str) -> Result<bool, ApiError> {
    Ok(status(db, task)? == Status::Cancelling)
}

/// Ends a task as cancelled (`error_info` is `TASK_CANCELLED [task]`).
pub fn cancelled(db: &Db, task: &str) -> Result<(), ApiError> {
    fail(db, task, &ApiError::new(&codes::TASK_CANCELLED, [task]))
}

/// A task's `result` text: XAPI stores the XML-RPC encoding of the value.
pub fn result_text(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => String::new(),
        other => xml_value(other),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn xml_value(v: &Value) -> String {
    let inner = match v {
        Value::String(s) => xml_escape(s),
        Value::Int(i) => format!("<string>{i}</string>"),
        Value::Float(f) => format!("<double>{f}</double>"),
        Value::Bool(b) => format!("<boolean>{}</boolean>", u8::from(*b)),
        Value::DateTime(d) => format!("<dateTime.iso8601>{d}</dateTime.iso8601>"),
        Value::Array(items) => format!(
            "<array><data>{}</data></array>",
            items.iter().map(xml_value).collect::<String>()
        ),
        Value::Struct(m) => format!(
            "<struct>{}</struct>",
            m.iter()
                .map(|(k, v)| format!(
                    "<member><name>{}</name>{}</member>",
                    xml_escape(k),
                    xml_value(v)
                ))
                .collect::<String>()
        ),
    };
    format!("<value>{inner}</value>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path().join("t.db")).expect("open");
        (dir, db)
    }

    #[test]
    fn lifecycle_success() {
        let (_d, db) = db();
        let t = create(&db, "Async.VM.start", "", None).expect("create");
        assert_eq!(status(&db, &t), Ok(Status::Pending));
        set_progress(&db, &t, 0.5).expect("progress");
        set_progress(&db, &t, 7.0).expect("progress clamps");
        let p = db.read(|tx| tx.get("task", &t, "progress")).expect("read");
        assert_eq!(p, Value::Float(1.0));
        succeed(&db, &t, &Value::String("OpaqueRef:abc".into())).expect("succeed");
        let rec = db.read(|tx| tx.record("task", &t)).expect("record");
        let Value::Struct(rec) = rec else {
            panic!("record")
        };
        assert_eq!(rec["status"], Value::String("success".into()));
        assert_eq!(
            rec["result"],
            Value::String("<value>OpaqueRef:abc</value>".into())
        );
        // Done is done.
        assert!(cancel(&db, &t).is_err());
        fail(&db, &t, &ApiError::internal("late")).expect("ignored");
        assert_eq!(status(&db, &t), Ok(Status::Success));
    }

    #[test]
    fn cancel_then_cancelled_and_failure() {
        let (_d, db) = db();
        let t = create(&db, "x", "", None).expect("create");
        cancel(&db, &t).expect("cancel");
        assert_eq!(cancel_requested(&db, &t), Ok(true));
        cancelled(&db, &t).expect("cancelled");
        assert_eq!(status(&db, &t), Ok(Status::Cancelled));
        let info = db
            .read(|tx| tx.get("task", &t, "error_info"))
            .expect("read");
        assert_eq!(
            info,
            Value::Array(vec![
                Value::String("TASK_CANCELLED".into()),
                Value::String(t.clone())
            ])
        );
        let u = create(&db, "y", "", Some(&t)).expect("subtask");
        fail(&db, &u, &ApiError::handle_invalid("VM", "OpaqueRef:q")).expect("fail");
        assert_eq!(status(&db, &u), Ok(Status::Failure));
        let subs = db.read(|tx| tx.get("task", &t, "subtasks")).expect("read");
        assert_eq!(subs, Value::Array(vec![Value::String(u)]));
    }
}
