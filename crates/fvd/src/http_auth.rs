//! What XAPI's HTTP handlers (`/rrd_updates`, `/import_raw_vdi`, `/export_raw_vdi`...)
//! share: the query decoded, and the caller found from a `session_id` parameter or HTTP
//! basic auth. Errors are short plain-text bodies; 401 carries `WWW-Authenticate: Basic`.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fv_xapi::auth::{Auth, Caller};
use fv_xapi::error::codes;
use fv_xapi::{Api, ApiError};

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

pub(crate) fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::WWW_AUTHENTICATE, "Basic realm=\"Ferrovisor\""),
        ],
        format!("{why}\n"),
    )
        .into_response()
}

/// Percent-decodes one query component (`+` is a space); `None` if the result is not
/// UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query's `key=value` pairs, decoded; undecodable pairs are dropped.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// Standard base64 with optional padding; `None` for anything else.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// How a request says who it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    Session(String),
    Password(String, String),
    None,
}

pub(crate) fn credentials(pairs: &[(String, String)], headers: &HeaderMap) -> Credentials {
    if let Some((_, s)) = pairs.iter().rev().find(|(k, _)| k == "session_id") {
        return Credentials::Session(s.clone());
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(base64_decode)
        .and_then(|b| String::from_utf8(b).ok());
    match basic.as_deref().and_then(|b| b.split_once(':')) {
        Some((user, password)) => Credentials::Password(user.to_owned(), password.to_owned()),
        None => Credentials::None,
    }
}

/// Checks the credentials (on a blocking thread: the database, and Argon2 for a
/// password) and returns the caller, with its role for the handler to check. A password
/// is checked as `session.login_with_password` would; the session it makes only vouches
/// for this request and is logged out at once. `originator` names the handler in the
/// session's record while it lives.
pub(crate) async fn authenticate(
    api: &Api,
    c: Credentials,
    originator: &'static str,
) -> Result<Caller, Response> {
    if c == Credentials::None {
        return Err(unauthorized(
            "a session_id parameter or HTTP basic auth is required",
        ));
    }
    let api = api.clone();
    let checked = tokio::task::spawn_blocking(move || match c {
        Credentials::Session(s) => Auth::check(api.db(), &s),
        Credentials::Password(user, password) => {
            let session = api.auth().login(api.db(), &user, &password, originator)?;
            let caller = Auth::check(api.db(), &session);
            let _ = Auth::logout(api.db(), &session);
            caller
        }
        Credentials::None => Err(ApiError::new(&codes::SESSION_INVALID, [""])),
    })
    .await;
    match checked {
        Ok(Ok(caller)) => Ok(caller),
        Ok(Err(e)) => Err(unauthorized(
            &e.description().into_iter().next().unwrap_or_default(),
        )),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let p = query_pairs(Some(
            "start=-10&session_id=OpaqueRef%3Aab-cd&json&x=a+b&bad=%ff&y=%4",
        ));
        assert_eq!(
            p,
            vec![
                ("start".into(), "-10".into()),
                ("session_id".into(), "OpaqueRef:ab-cd".into()),
                ("json".into(), "".into()),
                ("x".into(), "a b".into()),
                ("y".into(), "%4".into()),
            ]
        );
        assert!(query_pairs(None).is_empty());
        assert_eq!(percent_decode("%"), Some("%".into()));
        assert_eq!(percent_decode("a%2"), Some("a%2".into()));
    }

    #[test]
    fn basic_auth_and_sessions() {
        assert_eq!(base64_decode("cm9vdDpwYXNz"), Some(b"root:pass".to_vec()));
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("a b"), None);
        let mut h = HeaderMap::new();
        assert_eq!(credentials(&[], &h), Credentials::None);
        h.insert(
            header::AUTHORIZATION,
            "Basic cm9vdDpwYTpzcw==".parse().unwrap(),
        );
        assert_eq!(
            credentials(&[], &h),
            Credentials::Password("root".into(), "pa:ss".into())
        );
        let pairs = vec![("session_id".to_owned(), "OpaqueRef:x".to_owned())];
        assert_eq!(
            credentials(&pairs, &h),
            Credentials::Session("OpaqueRef:x".into())
        );
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(credentials(&[], &h), Credentials::None);
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(credentials(&[], &h), Credentials::None);
    }
}
