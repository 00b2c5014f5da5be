//! The API's HTTP front ends: XML-RPC at `/` (and `/RPC2`) and JSON-RPC at `/jsonrpc`, as
//! XAPI serves them. Each call is decoded, run by `fv_xapi::Api` on a blocking thread (it touches
//! SQLite and may wait for a VM), and answered in the protocol it came in. Anything a
//! client sends that is not a call gets a XenAPI error, never a crash.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use fv_rpc::jsonrpc::{self, Id, Version};
use fv_rpc::{xmlrpc, Failure, Value, MAX_CALL_LEN};
use fv_xapi::{Api, ApiError};

/// The routes every listener serves.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", post(xml_rpc).get(crate::web::index))
        // Python's xmlrpc client (and so the XenAPI SDK) posts to /RPC2 when the URL has
        // no path, as XAPI's clients have always done.
        .route("/RPC2", post(xml_rpc))
        .route("/jsonrpc", post(json_rpc))
        .with_state(api)
}

/// Runs one call off the async threads.
async fn call(api: Api, method: String, params: Vec<Value>) -> Result<Value, Failure> {
    let result = tokio::task::spawn_blocking(move || api.call(&method, params)).await;
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failure(&e)),
        Err(e) => Err(Failure::new(
            "INTERNAL_ERROR",
            vec![format!("the call failed: {e}")],
        )),
    }
}

fn failure(e: &ApiError) -> Failure {
    let mut all = e.description();
    let code = all.remove(0);
    Failure::new(code, all)
}

/// A request body, refused past [`MAX_CALL_LEN`] (XAPI's own limit) without reading it all.
async fn read_body(body: Body) -> Result<Bytes, Failure> {
    axum::body::to_bytes(body, MAX_CALL_LEN).await.map_err(|_| {
        Failure::new(
            "XMLRPC_UNMARSHAL_FAILURE",
            vec![format!(
                "the request is over {MAX_CALL_LEN} bytes or was cut off"
            )],
        )
    })
}

fn unmarshal_failure(e: &fv_rpc::Error) -> Failure {
    Failure::new("XMLRPC_UNMARSHAL_FAILURE", vec![e.to_string()])
}

async fn xml_rpc(axum::extract::State(api): axum::extract::State<Api>, body: Body) -> Response {
    let result = match read_body(body).await {
        Ok(bytes) => match xmlrpc::parse_call(&bytes) {
            Ok(c) => call(api, c.method, c.params).await,
            Err(e) => Err(unmarshal_failure(&e)),
        },
        Err(f) => Err(f),
    };
    (
        [(header::CONTENT_TYPE, "text/xml")],
        xmlrpc::encode_response(&result),
    )
        .into_response()
}

async fn json_rpc(axum::extract::State(api): axum::extract::State<Api>, body: Body) -> Response {
    let json = |text: String| ([(header::CONTENT_TYPE, "application/json")], text).into_response();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(f) => return json(unparsed_error(&f)),
    };
    let request = match jsonrpc::parse_call(&bytes) {
        Ok(r) => r,
        Err(e) => return json(unparsed_error(&unmarshal_failure(&e))),
    };
    let result = call(api, request.call.method, request.call.params).await;
    json(jsonrpc::encode_response(
        request.version,
        &request.id,
        &result,
    ))
}

/// The answer to a JSON-RPC request too broken to have an id: JSON-RPC 2.0's parse error,
/// with `id: null`, carrying the XenAPI error as the data.
fn unparsed_error(f: &Failure) -> String {
    let text = jsonrpc::encode_response(Version::V2, &Id::Int(0), &Err(f.clone()));
    // The codec always writes the id last; a request we could not read has none.
    match text.strip_suffix(",\"id\":0}") {
        Some(head) => format!("{head},\"id\":null}}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_an_id_gets_a_null_id() {
        let text = unparsed_error(&Failure::new("XMLRPC_UNMARSHAL_FAILURE", vec!["x".into()]));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["id"].is_null(), "{text}");
        assert_eq!(v["error"]["message"], "XMLRPC_UNMARSHAL_FAILURE", "{text}");
        assert_eq!(v["error"]["data"][0], "x", "{text}");
    }
}
