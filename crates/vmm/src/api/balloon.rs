//! `/vm/balloon`: the balloon's target (`PUT`, `{"target_mib": N}`) and its state and the
//! guest's last memory statistics (`GET`). Parsing is pure, like the rest of `http`.

use serde::{Deserialize, Serialize};

use super::http::{check_body, Request, RouteError};
use super::VmmAction;

pub const PATH: &str = "/vm/balloon";
pub const ALLOW: &str = "GET, PUT";

/// The body of `PUT /vm/balloon`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PutBalloon {
    /// MiB of guest memory the balloon should hold (taken from the guest).
    target_mib: u64,
}

/// Parses a request for [`PATH`]: `GET` (body empty or `{}`) or `PUT` with a target.
pub fn parse(request: &Request) -> Result<VmmAction, RouteError> {
    match request.method.as_str() {
        "GET" => {
            check_body(&request.body)?;
            Ok(VmmAction::GetBalloon)
        }
        "PUT" => {
            let bad = |why: String| {
                RouteError::BadBody(format!(
                    "the body must be {{\"target_mib\": N}} (N a whole number of MiB): {why}"
                ))
            };
            // serde would also take a struct as a sequence (`[64]`): only an object will do.
            if request.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err(bad("not a JSON object".into()));
            }
            let body: PutBalloon =
                serde_json::from_slice(&request.body).map_err(|e| bad(e.to_string()))?;
            Ok(VmmAction::SetBalloon {
                target_mib: body.target_mib,
            })
        }
        method => Err(RouteError::MethodNotAllowed {
            method: method.to_owned(),
            allow: ALLOW,
        }),
    }
}

/// The body of `GET /vm/balloon`. MiB values are rounded down from pages (4 KiB each).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BalloonInfo {
    /// What the balloon should hold: set by `PUT /vm/balloon`, 0 at start.
    pub target_mib: u64,
    pub target_pages: u32,
    /// What the guest says it holds now; it moves towards the target as the guest's
    /// driver inflates or deflates, and is 0 until the driver has started.
    pub actual_mib: u64,
    pub actual_pages: u32,
    pub deflate_on_oom: bool,
    /// Seconds between statistics requests to the guest; 0: only when `GET` asks.
    pub stats_interval_s: u64,
    /// The guest's last statistics, or `null` before its first report.
    pub stats: Option<BalloonStatistics>,
}

/// The guest's memory statistics as it last reported them. Memory amounts are bytes, the
/// rest counts since the guest booted; a value the guest did not send is left out.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStatistics {
    /// Milliseconds since the report arrived.
    pub age_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_stalls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_scans: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_scans: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_reclaims: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_reclaims: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: PATH.into(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn get_and_put() {
        assert_eq!(parse(&request("GET", "")), Ok(VmmAction::GetBalloon));
        assert_eq!(parse(&request("GET", "{}")), Ok(VmmAction::GetBalloon));
        assert_eq!(
            parse(&request("PUT", r#"{"target_mib": 128}"#)),
            Ok(VmmAction::SetBalloon { target_mib: 128 })
        );
        assert_eq!(
            parse(&request("PUT", r#" {"target_mib":0} "#)),
            Ok(VmmAction::SetBalloon { target_mib: 0 })
        );
        // Through the whole parser, as the server sees it.
        let raw = b"PUT /vm/balloon HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"target_mib\":64}";
        let super::super::http::Status::Complete { request, .. } =
            super::super::http::parse_request(raw).unwrap()
        else {
            panic!("incomplete")
        };
        assert_eq!(
            super::super::http::parse_action(&request),
            Ok(VmmAction::SetBalloon { target_mib: 64 })
        );
    }

    #[test]
    fn bad_requests() {
        for body in [
            "",
            "{}",
            r#"{"target_mib": -1}"#,
            r#"{"target_mib": 1.5}"#,
            r#"{"target_mib": "64"}"#,
            r#"{"target_mib": 99999999999999999999999}"#,
            r#"{"target_mib": 1, "target_mib": 2}"#,
            r#"{"target_mib": 1, "deflate_on_oom": true}"#,
            r#"{"amount_mib": 1}"#,
            "[64]",
            "\u{ff}",
        ] {
            let e = parse(&request("PUT", body)).unwrap_err();
            assert_eq!(e.status(), 400, "{body:?}: {e}");
            assert!(e.to_string().contains("target_mib"), "{e}");
        }
        assert_eq!(
            parse(&request("GET", r#"{"target_mib": 1}"#)),
            Err(RouteError::UnexpectedBody)
        );
        for method in ["POST", "DELETE", "PATCH", "get"] {
            let e = parse(&request(method, "")).unwrap_err();
            assert_eq!(e.status(), 405, "{method}");
            assert_eq!(
                super::super::http::Response::from_route_error(&e).allow,
                Some(ALLOW)
            );
        }
    }

    #[test]
    fn stats_leave_out_what_the_guest_did_not_send() {
        let s = BalloonStatistics {
            age_ms: 12,
            free_memory: Some(1 << 20),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"age_ms":12,"free_memory":1048576}"#
        );
    }
}
