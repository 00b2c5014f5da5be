//! A strict, pure HTTP/1.1 request parser, the router and response encoding.
//!
//! No I/O here: bytes go in, a typed request or an error with its status code comes out, so
//! every hostile input can be unit-tested. Anything outside the small subset we need
//! (chunked bodies, query strings, non-ASCII heads, obsolete line folding) is refused rather
//! than guessed at.

use super::VmmAction;

/// Largest request head (request line + headers + blank line) we accept.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest body we accept; our bodies are ignored, so this only bounds buffering.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest request path; ours are a few bytes, so anything long is noise or an attack.
pub const MAX_PATH: usize = 1024;

/// A complete request, as far as HTTP goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// False for `Connection: close`, and for HTTP/1.0 without `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// Result of feeding the bytes received so far to [`parse_request`].
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    /// Not a whole request yet; read more and call again with the larger buffer.
    Partial,
    /// A whole request, which took the first `len` bytes (pipelined data may follow).
    Complete { request: Request, len: usize },
}

/// Why a request could not be parsed. After any of these the connection is closed, since
/// we no longer know where the next request would start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body exceeds {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("transfer-encoding is not supported; send a Content-Length")]
    TransferEncoding,
    #[error("only HTTP/1.1 and HTTP/1.0 are supported")]
    Version,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::TransferEncoding => 501,
            HttpError::Version => 505,
        }
    }
}

/// Parses one request from the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Status, HttpError> {
    // The head must end within MAX_HEAD bytes, terminator included.
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(head_len) = find(window, b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(Status::Partial)
        };
    };
    let head = &buf[..head_len];
    // ASCII-only (plus tab and CRLF) rules out non-UTF-8 and smuggled control bytes at once.
    if !head
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t' || b == b'\r' || b == b'\n')
    {
        return Err(HttpError::BadRequest(
            "non-ASCII or control byte in request head",
        ));
    }
    // Checked ASCII above, so this cannot fail; map rather than unwrap all the same.
    let head = std::str::from_utf8(head).map_err(|_| HttpError::BadRequest("invalid UTF-8"))?;
    // A bare CR or LF could make us and a proxy in front of us disagree on line boundaries.
    if head.split("\r\n").any(|line| line.contains(['\r', '\n'])) {
        return Err(HttpError::BadRequest("bare CR or LF in request head"));
    }
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let (method, path, http10) = parse_request_line(request_line)?;

    let mut content_length: Option<usize> = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    for line in lines {
        let (name, value) = parse_header(line)?;
        if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HttpError::BadRequest("duplicate Content-Length"));
            }
            content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                connection_close |= token.eq_ignore_ascii_case("close");
                connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }

    let body_start = head_len + 4;
    let body_len = content_length.unwrap_or(0);
    let Some(body) = buf.get(body_start..body_start + body_len) else {
        return Ok(Status::Partial);
    };
    let keep_alive = !connection_close && (!http10 || connection_keep_alive);
    Ok(Status::Complete {
        request: Request {
            method: method.to_owned(),
            path: path.to_owned(),
            body: body.to_vec(),
            keep_alive,
        },
        len: body_start + body_len,
    })
}

/// `METHOD SP /path SP HTTP/1.x`, single spaces only. Returns (method, path, is_http10).
fn parse_request_line(line: &str) -> Result<(&str, &str, bool), HttpError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest(
            "request line is not `METHOD PATH VERSION`",
        ));
    };
    if method.is_empty() || method.len() > 16 || !method.bytes().all(is_tchar) {
        return Err(HttpError::BadRequest("invalid method"));
    }
    if !path.starts_with('/') {
        return Err(HttpError::BadRequest("path must start with '/'"));
    }
    if path.len() > MAX_PATH {
        return Err(HttpError::BadRequest("path too long"));
    }
    if path.contains('?') {
        return Err(HttpError::BadRequest("query strings are not supported"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(HttpError::Version),
        _ => return Err(HttpError::BadRequest("invalid HTTP version")),
    };
    Ok((method, path, http10))
}

/// `Name: value`, with no space before the colon (RFC 9112 §5.1) and no line folding.
fn parse_header(line: &str) -> Result<(&str, &str), HttpError> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(HttpError::BadRequest("header line without ':'"));
    };
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(HttpError::BadRequest("invalid header name"));
    }
    Ok((name, value.trim_matches([' ', '\t'])))
}

/// Digits only: `+5`, `-1`, `0x10`, `5, 5` and empty are all refused.
fn parse_content_length(value: &str) -> Result<usize, HttpError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadRequest("invalid Content-Length"));
    }
    // Only overflow can fail after the digit check, and that is too large anyway.
    match value.parse::<usize>() {
        Ok(n) if n <= MAX_BODY => Ok(n),
        _ => Err(HttpError::BodyTooLarge),
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Why a well-formed request maps to no action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("method {method} not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("request body must be empty or {{}}")]
    UnexpectedBody,
    /// A body the endpoint takes, but wrong.
    #[error("{0}")]
    BadBody(String),
}

impl RouteError {
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NotFound(_) => 404,
            RouteError::MethodNotAllowed { .. } => 405,
            RouteError::UnexpectedBody | RouteError::BadBody(_) => 400,
        }
    }
}

/// Maps a method and path to the action they name.
pub fn route(method: &str, path: &str) -> Result<VmmAction, RouteError> {
    let (allow, action) = match path {
        "/vm" => ("GET", VmmAction::GetInfo),
        "/vm/pause" => ("PUT", VmmAction::Pause),
        "/vm/resume" => ("PUT", VmmAction::Resume),
        "/vm/stop" => ("PUT", VmmAction::Stop),
        "/vm/reset" => ("PUT", VmmAction::Reset),
        "/vm/power-button" => ("PUT", VmmAction::PowerButton),
        // Echo at most a little of the path: it may be a kilobyte of junk.
        _ => return Err(RouteError::NotFound(path.chars().take(64).collect())),
    };
    if method != allow {
        return Err(RouteError::MethodNotAllowed {
            method: method.to_owned(),
            allow,
        });
    }
    Ok(action)
}

/// None of our endpoints takes input, but clients commonly send `{}`: allow that and nothing
/// else, so a client that thinks it is passing parameters learns that it is not.
pub fn check_body(body: &[u8]) -> Result<(), RouteError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(map) if map.is_empty() => Ok(()),
        _ => Err(RouteError::UnexpectedBody),
    }
}

/// Parses the action out of a complete request: route first (404/405), then the body (400).
pub fn parse_action(request: &Request) -> Result<VmmAction, RouteError> {
    // The one path with two methods and a body.
    if request.path == super::balloon::PATH {
        return super::balloon::parse(request);
    }
    if request.path == super::nets::PATH || request.path.starts_with(super::nets::PREFIX) {
        return super::nets::parse(request);
    }
    if request.path.starts_with(super::disks::PREFIX) {
        return super::disks::parse(request);
    }
    let action = route(&request.method, &request.path)?;
    check_body(&request.body)?;
    Ok(action)
}

/// An HTTP response; `body` is JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Option<String>,
    pub allow: Option<&'static str>,
    pub close: bool,
}

impl Response {
    pub fn json(status: u16, body: String) -> Self {
        Response {
            status,
            body: Some(body),
            allow: None,
            close: false,
        }
    }

    pub fn no_content() -> Self {
        Response {
            status: 204,
            body: None,
            allow: None,
            close: false,
        }
    }

    /// An error with the `{"fault_message": ...}` body every error carries.
    pub fn fault(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "fault_message": message }).to_string();
        Response::json(status, body)
    }

    pub fn from_http_error(e: &HttpError) -> Self {
        Response {
            close: true,
            ..Response::fault(e.status(), &e.to_string())
        }
    }

    pub fn from_route_error(e: &RouteError) -> Self {
        let allow = match e {
            RouteError::MethodNotAllowed { allow, .. } => Some(*allow),
            _ => None,
        };
        Response {
            allow,
            ..Response::fault(e.status(), &e.to_string())
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if let Some(allow) = self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        // RFC 9110 §8.6: no Content-Length on 204.
        if let Some(body) = &self.body {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else if self.status != 204 {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(body) = &self.body {
            bytes.extend_from_slice(body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf) {
            Ok(Status::Complete { request, len }) => (request, len),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn err(buf: &[u8]) -> HttpError {
        match parse_request(buf) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let raw = b"GET /vm HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let (req, len) = complete(raw);
        assert_eq!(len, raw.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/vm");
        assert!(req.body.is_empty());
        assert!(req.keep_alive);
        assert_eq!(parse_action(&req), Ok(VmmAction::GetInfo));
    }

    #[test]
    fn put_with_empty_object_body() {
        let raw = b"PUT /vm/pause HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{ }\n";
        let (req, len) = complete(raw);
        assert_eq!(len, raw.len());
        assert_eq!(req.body, b"{ }\n");
        assert_eq!(parse_action(&req), Ok(VmmAction::Pause));
    }

    #[test]
    fn non_empty_bodies_are_refused() {
        for body in [&b"{\"a\":1}"[..], b"[]", b"null", b"{", b"\xff\xfe", b"x"] {
            assert_eq!(
                check_body(body),
                Err(RouteError::UnexpectedBody),
                "{body:?}"
            );
        }
        assert_eq!(check_body(b""), Ok(()));
        assert_eq!(check_body(b" \r\n"), Ok(()));
        assert_eq!(check_body(b"{}"), Ok(()));
    }

    #[test]
    fn partial_until_head_and_body_arrive() {
        let raw = b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        for cut in 0..raw.len() {
            assert_eq!(
                parse_request(&raw[..cut]),
                Ok(Status::Partial),
                "cut at {cut}"
            );
        }
        assert_eq!(complete(raw).0.path, "/vm/stop");
    }

    #[test]
    fn pipelined_requests_are_split() {
        let raw = b"GET /vm HTTP/1.1\r\n\r\nPUT /vm/pause HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /vm/x HTTP/1.1\r\n\r\n";
        let (first, n1) = complete(raw);
        assert_eq!(first.path, "/vm");
        let (second, n2) = complete(&raw[n1..]);
        assert_eq!(second.path, "/vm/pause");
        assert_eq!(second.body, b"{}");
        let (third, n3) = complete(&raw[n1 + n2..]);
        assert_eq!(third.path, "/vm/x");
        assert_eq!(n1 + n2 + n3, raw.len());
    }

    #[test]
    fn connection_header_and_http10() {
        let (req, _) = complete(b"GET /vm HTTP/1.1\r\nConnection: Close\r\n\r\n");
        assert!(!req.keep_alive);
        let (req, _) = complete(b"GET /vm HTTP/1.0\r\n\r\n");
        assert!(!req.keep_alive);
        let (req, _) = complete(b"GET /vm HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(req.keep_alive);
        let (req, _) = complete(b"GET /vm HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
        assert!(!req.keep_alive);
    }

    #[test]
    fn other_versions_are_refused() {
        assert_eq!(err(b"GET /vm HTTP/2.0\r\n\r\n"), HttpError::Version);
        assert_eq!(err(b"GET /vm HTTP/0.9\r\n\r\n"), HttpError::Version);
        assert_eq!(err(b"GET /vm FOO/1.1\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET /vm\r\n\r\n").status(), 400);
    }

    #[test]
    fn oversized_head_is_refused() {
        let mut raw = b"GET /vm HTTP/1.1\r\nX-Junk: ".to_vec();
        raw.resize(MAX_HEAD, b'a');
        assert_eq!(err(&raw), HttpError::HeadTooLarge);
        assert_eq!(err(&raw).status(), 431);
        // Just under the limit, still waiting for more.
        assert_eq!(parse_request(&raw[..MAX_HEAD - 1]), Ok(Status::Partial));
        // A head that ends exactly at the limit is fine.
        let mut ok = b"GET /vm HTTP/1.1\r\nX-Junk: ".to_vec();
        ok.resize(MAX_HEAD - 4, b'a');
        ok.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&ok).1, MAX_HEAD);
    }

    #[test]
    fn oversized_or_invalid_content_length_is_refused() {
        let big = format!(
            "PUT /vm/stop HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(err(big.as_bytes()), HttpError::BodyTooLarge);
        let huge = b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n";
        assert_eq!(err(huge), HttpError::BodyTooLarge);
        for cl in ["", "-1", "+1", "0x10", "1 1", "1,1", "one"] {
            let raw = format!("PUT /vm/stop HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(err(raw.as_bytes()).status(), 400, "Content-Length: {cl}");
        }
        let dup = b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 0\r\nContent-length: 0\r\n\r\n";
        assert_eq!(err(dup).status(), 400);
        // Exactly the limit is accepted once it has all arrived.
        let mut max =
            format!("PUT /vm/stop HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\n\r\n").into_bytes();
        assert_eq!(parse_request(&max), Ok(Status::Partial));
        max.resize(max.len() + MAX_BODY, b' ');
        assert_eq!(complete(&max).0.body.len(), MAX_BODY);
    }

    #[test]
    fn transfer_encoding_is_refused() {
        let raw =
            b"PUT /vm/stop HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(err(raw), HttpError::TransferEncoding);
        assert_eq!(err(raw).status(), 501);
        let smuggle =
            b"PUT /vm/stop HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}";
        assert_eq!(err(smuggle), HttpError::TransferEncoding);
    }

    #[test]
    fn hostile_heads_are_refused() {
        let cases: &[&[u8]] = &[
            b"GET /vm\xff HTTP/1.1\r\n\r\n",
            b"GET /vm HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n",
            b"GET /vm HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET /vm HTTP/1.1\nHost: x\r\n\r\n",
            b"GET /vm HTTP/1.1\nHost:x\r\n\r\n",
            b"GET /vm HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
            b"GET  /vm HTTP/1.1\r\n\r\n",
            b"GET /vm  HTTP/1.1\r\n\r\n",
            b" GET /vm HTTP/1.1\r\n\r\n",
            b"\r\nGET /vm HTTP/1.1\r\n\r\n",
            b"G(T /vm HTTP/1.1\r\n\r\n",
            b"GET vm HTTP/1.1\r\n\r\n",
            b"GET http://localhost/vm HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET /vm?x=1 HTTP/1.1\r\n\r\n",
            b"GET /vm HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /vm HTTP/1.1\r\n: x\r\n\r\n",
            b"GET /vm HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /vm HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"\r\n\r\n",
        ];
        for raw in cases {
            let e = err(raw);
            assert_eq!(
                e.status(),
                400,
                "{:?} -> {e:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn absurd_paths() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_PATH));
        assert_eq!(err(long.as_bytes()).status(), 400);
        let (req, _) = complete(b"GET /vm/../vm HTTP/1.1\r\n\r\n");
        assert_eq!(parse_action(&req).unwrap_err().status(), 404);
        for path in [
            "/",
            "/vm/",
            "//vm",
            "/VM",
            "/vm%2fpause",
            "/vm/pause/x",
            "/vm#x",
        ] {
            assert!(
                matches!(route("GET", path), Err(RouteError::NotFound(_))),
                "{path}"
            );
        }
        let RouteError::NotFound(echo) = route("GET", &"/x".repeat(500)).unwrap_err() else {
            unreachable!()
        };
        assert!(echo.len() <= 64);
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(route("GET", "/vm"), Ok(VmmAction::GetInfo));
        assert_eq!(route("PUT", "/vm/pause"), Ok(VmmAction::Pause));
        assert_eq!(route("PUT", "/vm/resume"), Ok(VmmAction::Resume));
        assert_eq!(route("PUT", "/vm/stop"), Ok(VmmAction::Stop));
        assert_eq!(route("PUT", "/vm/reset"), Ok(VmmAction::Reset));
        assert_eq!(route("PUT", "/vm/power-button"), Ok(VmmAction::PowerButton));
        assert_eq!(route("GET", "/vm/power-button").unwrap_err().status(), 405);
        let e = route("PUT", "/vm").unwrap_err();
        assert_eq!(e.status(), 405);
        assert_eq!(Response::from_route_error(&e).allow, Some("GET"));
        for method in ["GET", "POST", "DELETE", "put", "HEAD"] {
            assert_eq!(route(method, "/vm/stop").unwrap_err().status(), 405);
        }
        // 404 wins over 405, and 405 over a bad body.
        let req = Request {
            method: "POST".into(),
            path: "/vm".into(),
            body: b"junk".to_vec(),
            keep_alive: true,
        };
        assert_eq!(parse_action(&req).unwrap_err().status(), 405);
    }

    #[test]
    fn response_encoding() {
        let r = Response::fault(405, "no").to_bytes();
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"fault_message\":\"no\"}"));
        assert!(text.contains("Content-Length: 22\r\n"));
        let r = String::from_utf8(Response::no_content().to_bytes()).unwrap();
        assert_eq!(r, "HTTP/1.1 204 No Content\r\n\r\n");
        let e = Response::from_http_error(&HttpError::BodyTooLarge);
        assert!(e.close);
        assert!(String::from_utf8(e.to_bytes())
            .unwrap()
            .contains("Connection: close\r\n"));
    }

    /// Deterministic fuzzing: random bytes and mutations of valid requests never panic.
    #[test]
    fn never_panics_on_garbage() {
        let seeds: &[&[u8]] = &[
            b"GET /vm HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"PUT /vm/pause HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..20_000 {
            let mut input = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 8) {
                let pos = (next() as usize) % (input.len() + 1);
                let byte = [b'\r', b'\n', b' ', b':', b'0', b'{', 0xff, next() as u8]
                    [(next() % 8) as usize];
                match next() % 3 {
                    0 if pos < input.len() => input[pos] = byte,
                    1 if pos < input.len() => {
                        input.remove(pos);
                    }
                    _ => input.insert(pos, byte),
                }
            }
            if let Ok(Status::Complete { request, len }) = parse_request(&input) {
                assert!(len <= input.len());
                let _ = parse_action(&request);
            }
            let random: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
            let _ = parse_request(&random);
        }
    }
}
