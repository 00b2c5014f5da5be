//! `GET /console/<vm uuid>?session_id=...`, upgraded to a WebSocket: the VM's serial console
//! (fv-vmm's `serial.sock` in the VM's run directory) for the web console's xterm.js.
//!
//! Protocol: binary frames from fvd carry the guest's serial output as it comes; binary (or
//! text) frames from the client are typed into the guest. The first frame fvd sends is a
//! text frame, `{"type":"hello","vm":"<uuid>","writable":true|false}`: a read-only session
//! sees the output but what it sends is dropped (typing needs vm-operator, as XAPI's
//! console access). When the console ends fvd closes the WebSocket with code 1000 and the
//! reason (the VM stopped, or another console client took over: fv-vmm serves one client
//! at a time and the newest wins); the client reconnects when the VM runs again.
//!
//! Refusals are plain HTTP before any upgrade: 401 without a valid session, 404 for a VM
//! that does not exist, 409 for a VM that is not running or paused, 400 for a request that
//! is not a WebSocket upgrade.

use std::path::PathBuf;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use fv_rpc::Value;
use fv_xapi::auth::Caller;
use fv_xapi::model::Role;
use fv_xapi::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::http_auth::{authenticate, credentials, query_pairs, text};

#[derive(Clone)]
struct Consoles {
    api: Api,
    /// Each running VM's fv-vmm directory is `<run_root>/<vm uuid>`.
    run_root: PathBuf,
}

pub fn routes(api: Api, run_root: PathBuf) -> Router {
    Router::new()
        .route("/console/{vm}", get(console))
        .with_state(Consoles { api, run_root })
}

/// Whether a string is a uuid as fvd writes them (so it can name a directory safely).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The VM's power state, or why there is no console to reach.
fn find_vm(api: &Api, uuid: &str) -> Result<String, (StatusCode, String)> {
    let state = api.db().read(|tx| {
        let vm = tx.by_uuid("VM", uuid)?;
        tx.get("VM", &vm, "power_state")
    });
    match state {
        Ok(Value::String(s)) => Ok(s),
        Ok(other) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("VM {uuid} has a power state of {other:?}\n"),
        )),
        Err(_) => Err((StatusCode::NOT_FOUND, format!("no VM {uuid}\n"))),
    }
}

async fn console(State(c): State<Consoles>, Path(uuid): Path<String>, req: Request) -> Response {
    let pairs = query_pairs(req.uri().query());
    let caller = match authenticate(&c.api, credentials(&pairs, req.headers()), "fvd-console").await
    {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    if !is_uuid(&uuid) {
        return text(
            StatusCode::NOT_FOUND,
            format!("no VM {uuid:?}: a console is named by its VM's uuid\n"),
        );
    }
    let state = {
        let (api, uuid) = (c.api.clone(), uuid.clone());
        tokio::task::spawn_blocking(move || find_vm(&api, &uuid)).await
    };
    match state {
        Ok(Ok(s)) if s == "Running" || s == "Paused" => {}
        Ok(Ok(s)) => {
            return text(
                StatusCode::CONFLICT,
                format!("VM {uuid} is {s}: its console exists only while it runs\n"),
            )
        }
        Ok(Err((status, why))) => return text(status, why),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
    let (mut parts, _body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("the console is a WebSocket: {e}\n"),
            )
        }
    };
    let socket = c.run_root.join(&uuid).join("serial.sock");
    // Connect before upgrading, so that a VM whose monitor is not there is an HTTP error.
    let serial = match UnixStream::connect(&socket).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::CONFLICT,
                format!("VM {uuid}'s serial console cannot be reached: {e}\n"),
            )
        }
    };
    tracing::info!("console of VM {uuid} opened by {}", caller.user);
    upgrade.on_upgrade(move |ws| proxy(ws, serial, uuid, caller))
}

/// Copies both ways until either side ends.
async fn proxy(mut ws: WebSocket, serial: UnixStream, uuid: String, caller: Caller) {
    let writable = caller.role >= Role::VmOperator;
    let hello = serde_json::json!({"type": "hello", "vm": uuid, "writable": writable});
    if ws
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let (mut from_guest, mut to_guest) = serial.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let reason: String = loop {
        tokio::select! {
            read = from_guest.read(&mut buf) => match read {
                Ok(0) | Err(_) => break "the console ended: the VM stopped, or another console client took over".into(),
                Ok(n) => {
                    if ws.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        return;
                    }
                }
            },
            msg = ws.recv() => {
                let bytes: Vec<u8> = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                if !writable {
                    continue;
                }
                if to_guest.write_all(&bytes).await.is_err() {
                    break "the console ended: the VM stopped".into();
                }
            }
        }
    };
    tracing::info!("console of VM {uuid} closed: {reason}");
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: reason.into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_name_consoles() {
        assert!(is_uuid("0123abcd-4567-89ab-cdef-0123456789ab"));
        assert!(!is_uuid("../../etc/passwd"));
        assert!(!is_uuid("0123abcd-4567-89ab-cdef-0123456789a/"));
        assert!(!is_uuid(""));
    }
}
