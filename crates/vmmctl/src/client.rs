//! A tiny blocking client for the fv-vmm API (HTTP/1.1 over its Unix socket).

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longer than the server's request and reply timeouts together, so the server answers first.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Our responses are small; refuse to buffer more than this from a misbehaving peer.
const MAX_RESPONSE: u64 = 1024 * 1024;

/// Sends one request (`Connection: close`) and returns the status code and the body.
///
/// An error means no complete response came back, e.g. the VMM exited right after `stop`.
pub fn http_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<(u16, String)> {
    // Refuse anything that could break out of the request line.
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_alphabetic())
        || !path.starts_with('/')
        || !path.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "invalid method or path",
        ));
    }
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;

    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(body) = body {
        request.push_str("Content-Type: application/json\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    // The server may refuse early (e.g. 413) and close; its answer is still worth reading.
    let sent = stream.write_all(request.as_bytes());

    let mut raw = Vec::new();
    match stream.take(MAX_RESPONSE).read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes with our bytes unread resets the connection after its answer.
        Err(e) if e.kind() == ErrorKind::ConnectionReset && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    if raw.is_empty() {
        sent?;
    }
    parse_response(&raw)
}

/// Parses `HTTP/1.x NNN reason\r\nheaders\r\n\r\nbody`, honouring Content-Length if present.
fn parse_response(raw: &[u8]) -> io::Result<(u16, String)> {
    let bad = |msg: &str| io::Error::new(ErrorKind::InvalidData, msg.to_owned());
    let head_len = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete response head"))?;
    let head = std::str::from_utf8(&raw[..head_len]).map_err(|_| bad("response head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad("invalid status line"))?;
    let mut body = &raw[head_len + 4..];
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                let len: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("invalid Content-Length"))?;
                body = body
                    .get(..len)
                    .ok_or_else(|| bad("truncated response body"))?;
            }
        }
    }
    let body = String::from_utf8(body.to_vec()).map_err(|_| bad("response body not UTF-8"))?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(ok).unwrap(), (200, "{}".to_owned()));
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(empty).unwrap(), (204, String::new()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn refuses_request_line_injection() {
        let p = Path::new("/nonexistent.sock");
        for (method, path) in [
            ("GET", "/vm HTTP/1.1\r\nX: y"),
            ("GET /", "/vm"),
            ("GET", "vm"),
            ("", "/"),
        ] {
            let e = http_request(p, method, path, None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }
}
