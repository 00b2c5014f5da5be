//! The metrics endpoints:
//!
//! - `GET /rrd_updates?start=..[&cf=..][&interval=..][&host=true][&vm_uuid=..][&json]`:
//!   XAPI's export, XML (or JSON with `json`), from `fv-rrd`. As XAPI's HTTP handlers, it
//!   takes the caller's session as `session_id` in the query, or a user and password as
//!   HTTP basic auth; any role may read (read-only suffices).
//! - `GET /metrics`: the latest values as Prometheus text. On the local Unix socket (mode
//!   0600 in the 0700 data directory, so only fvd's own user reaches it) it needs no
//!   credentials; on TCP it needs the same as `/rrd_updates`, so that a scraper can use
//!   `basic_auth` (checked as `session.login_with_password` would, then logged out) or a
//!   `session_id` parameter.
//!
//! Errors are plain text: 400 for a bad query, 401 without a valid session or password
//! (with `WWW-Authenticate: Basic`), 404 when no archive matches.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fv_rrd::{ErrorKind, UpdatesQuery};
use fv_xapi::Api;

use super::Metrics;
use crate::http_auth::{authenticate, credentials, query_pairs, text};

/// Marks requests that came over the local Unix socket (an extension the socket's
/// router adds).
#[derive(Clone, Copy, Debug)]
pub struct LocalSocket;

#[derive(Clone)]
struct Shared {
    api: Api,
    metrics: Metrics,
}

/// The metrics routes, to merge into the API's router.
pub fn routes(api: Api, metrics: Metrics) -> Router {
    Router::new()
        .route("/rrd_updates", get(rrd_updates))
        .route("/metrics", get(prometheus))
        .with_state(Shared { api, metrics })
}

async fn rrd_updates(State(s): State<Shared>, req: Request) -> Response {
    let pairs = query_pairs(req.uri().query());
    if let Err(r) = authenticate(&s.api, credentials(&pairs, req.headers()), "fvd-metrics").await {
        return r;
    }
    let query = match UpdatesQuery::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let metrics = s.metrics.clone();
    let json = query.json;
    let exported = tokio::task::spawn_blocking(move || metrics.rrds().export(&query)).await;
    match exported {
        Ok(Ok(body)) => {
            let ty = if json { "application/json" } else { "text/xml" };
            ([(header::CONTENT_TYPE, ty)], body).into_response()
        }
        Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
            text(StatusCode::NOT_FOUND, format!("{e}\n"))
        }
        Ok(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn prometheus(State(s): State<Shared>, req: Request) -> Response {
    if req.extensions().get::<LocalSocket>().is_none() {
        let pairs = query_pairs(req.uri().query());
        if let Err(r) =
            authenticate(&s.api, credentials(&pairs, req.headers()), "fvd-metrics").await
        {
            return r;
        }
    }
    let metrics = s.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.rrds().prometheus()).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
