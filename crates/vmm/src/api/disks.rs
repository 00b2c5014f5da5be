//! `/vm/disks/<id>/{pause,resume,reopen}`: what the toolstack needs to snapshot, grow or
//! replace a running VM's disk image. `pause` flushes the image and holds the guest's
//! requests in the ring; the host then changes the file; `reopen` opens the image again
//! (another path if given; a new size is announced to the guest) and serves the requests
//! that waited; `resume` serves them from the image as it was. Parsing is pure, like the
//! rest of `http`.

use std::path::PathBuf;

use serde::Deserialize;

use super::http::{check_body, Request, RouteError};
use super::VmmAction;
use crate::config::DiskFormat;

pub const PREFIX: &str = "/vm/disks/";

/// The body of `PUT /vm/disks/<id>/reopen`; both fields optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Reopen {
    /// Another image to serve from; by default the disk's own path, opened again.
    #[serde(default)]
    path: Option<PathBuf>,
    /// Its format; by default probed from the image.
    #[serde(default)]
    format: Option<DiskFormat>,
}

/// Parses a request whose path starts with [`PREFIX`].
pub fn parse(request: &Request) -> Result<VmmAction, RouteError> {
    let rest = &request.path[PREFIX.len()..];
    let not_found = || RouteError::NotFound(request.path.chars().take(64).collect());
    let (id, verb) = rest.split_once('/').ok_or_else(not_found)?;
    // Device names are the VMM's own (`blk0`...): anything else cannot name one.
    if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_found());
    }
    if !matches!(verb, "pause" | "resume" | "reopen") {
        return Err(not_found());
    }
    if request.method != "PUT" {
        return Err(RouteError::MethodNotAllowed {
            method: request.method.clone(),
            allow: "PUT",
        });
    }
    let id = id.to_owned();
    match verb {
        "pause" => {
            check_body(&request.body)?;
            Ok(VmmAction::DiskPause { id })
        }
        "resume" => {
            check_body(&request.body)?;
            Ok(VmmAction::DiskResume { id })
        }
        _ => {
            let body: Reopen = if request.body.iter().all(u8::is_ascii_whitespace) {
                Reopen::default()
            } else if request.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(RouteError::BadBody(
                    "the body must be a JSON object: {\"path\": P, \"format\": \"raw\"|\"qcow2\"}, both optional".into(),
                ));
            } else {
                serde_json::from_slice(&request.body)
                    .map_err(|e| RouteError::BadBody(format!("bad reopen body: {e}")))?
            };
            if let Some(path) = &body.path {
                if !path.is_absolute() {
                    return Err(RouteError::BadBody(format!(
                        "the path {} must be absolute",
                        path.display()
                    )));
                }
            }
            Ok(VmmAction::DiskReopen {
                id,
                path: body.path,
                format: body.format,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn routes_and_bodies() {
        let id = || "blk0".to_owned();
        assert_eq!(
            parse(&req("PUT", "/vm/disks/blk0/pause", "")).unwrap(),
            VmmAction::DiskPause { id: id() }
        );
        assert_eq!(
            parse(&req("PUT", "/vm/disks/blk0/resume", "{}")).unwrap(),
            VmmAction::DiskResume { id: id() }
        );
        assert_eq!(
            parse(&req("PUT", "/vm/disks/blk0/reopen", "")).unwrap(),
            VmmAction::DiskReopen {
                id: id(),
                path: None,
                format: None
            }
        );
        assert_eq!(
            parse(&req(
                "PUT",
                "/vm/disks/blk0/reopen",
                r#"{"path": "/x/y.qcow2", "format": "qcow2"}"#
            ))
            .unwrap(),
            VmmAction::DiskReopen {
                id: id(),
                path: Some("/x/y.qcow2".into()),
                format: Some(DiskFormat::Qcow2)
            }
        );
        for (method, path, body, status) in [
            ("GET", "/vm/disks/blk0/pause", "", 405),
            ("PUT", "/vm/disks/blk0/eject", "", 404),
            ("PUT", "/vm/disks/blk0", "", 404),
            ("PUT", "/vm/disks//pause", "", 404),
            ("PUT", "/vm/disks/../pause", "", 404),
            ("PUT", "/vm/disks/blk0/pause", r#"{"x":1}"#, 400),
            ("PUT", "/vm/disks/blk0/reopen", r#"{"path":"rel"}"#, 400),
            ("PUT", "/vm/disks/blk0/reopen", r#"{"size":1}"#, 400),
            ("PUT", "/vm/disks/blk0/reopen", "[1]", 400),
            ("PUT", "/vm/disks/blk0/reopen", r#"{"format":"vhd"}"#, 400),
        ] {
            let got = parse(&req(method, path, body)).unwrap_err();
            assert_eq!(got.status(), status, "{method} {path} {body}: {got}");
        }
    }
}
