//! A small blocking HTTP/1.1 client: POST a body, read the answer, keep the connection
//! for the next call. Enough for fvd's API; no redirects, no proxies.

use std::io::{BufRead, BufReader, Read, Write};

use crate::error::Error;

/// Anything a request can be written to and an answer read from.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// The answer's status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close` (or spoke HTTP/1.0).
    pub close: bool,
}

/// Longest status or header line we accept.
const MAX_LINE: usize = 8 * 1024;
/// Most header lines we accept.
const MAX_HEADERS: usize = 100;

/// Writes one POST request.
pub fn write_request(
    w: &mut dyn Write,
    host: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fv/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept: {content_type}\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    // One write where possible: fewer TLS records and packets.
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    w.write_all(&all)?;
    w.flush()
}

fn read_line(r: &mut dyn BufRead) -> Result<String, Error> {
    let mut line = Vec::new();
    let n = r
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(Error::io("reading the server's answer"))?;
    if n == 0 {
        return Err(Error::Http("the server closed the connection".into()));
    }
    if line.len() > MAX_LINE || !line.ends_with(b"\n") {
        return Err(Error::Http("a header line is too long or cut off".into()));
    }
    let text = String::from_utf8(line).map_err(|_| Error::Http("a header is not UTF-8".into()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads one response, at most `limit` bytes of body.
pub fn read_response(r: &mut dyn BufRead, limit: usize) -> Result<Response, Error> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| Error::Http(format!("not an HTTP answer: {:.60}", status_line)))?;
    let mut close = version == "HTTP/1.0";
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for i in 0.. {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        if i >= MAX_HEADERS {
            return Err(Error::Http("too many headers".into()));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Error::Http(format!("malformed header: {line:.60}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| Error::Http(format!("bad Content-Length {value:.30}")))?,
                )
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    let too_long = |n: usize| Error::Http(format!("the answer is over {limit} bytes ({n})"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line = read_line(r)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| Error::Http(format!("bad chunk size {size_text:.20}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let total = body.len().saturating_add(size);
            if total > limit {
                return Err(too_long(total));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])
                .map_err(Error::io("reading the server's answer"))?;
            if !read_line(r)?.is_empty() {
                return Err(Error::Http("a chunk is longer than its size".into()));
            }
        }
        body
    } else if let Some(n) = length {
        if n > limit {
            return Err(too_long(n));
        }
        let mut body = vec![0; n];
        r.read_exact(&mut body)
            .map_err(Error::io("reading the server's answer"))?;
        body
    } else {
        close = true;
        let mut body = Vec::new();
        r.take(limit as u64 + 1)
            .read_to_end(&mut body)
            .map_err(Error::io("reading the server's answer"))?;
        if body.len() > limit {
            return Err(too_long(body.len()));
        }
        body
    };
    Ok(Response {
        status,
        body,
        close,
    })
}

/// A connection that can be reused for the next request.
pub struct Conn {
    pub reader: BufReader<Box<dyn Stream>>,
}

impl Conn {
    pub fn new(s: Box<dyn Stream>) -> Conn {
        Conn {
            reader: BufReader::new(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read(text: &str) -> Result<Response, Error> {
        read_response(&mut Cursor::new(text.as_bytes().to_vec()), 1000)
    }

    #[test]
    fn content_length_chunked_and_close() {
        let r = read(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/xml\r\n\r\nhelloEXTRA",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"hello"[..], false)
        );
        let r = read("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"hello");
        let r = read("HTTP/1.0 500 Oops\r\n\r\nall of it").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (500, &b"all of it"[..], true)
        );
        let r = read("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(r.close);
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for bad in [
            "",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nFFFFFFFFFFFFFFFF\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1",
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        assert!(read(&long).is_err());
    }

    #[test]
    fn requests_carry_length_and_host() {
        let mut out = Vec::new();
        write_request(&mut out, "h:80", "/jsonrpc", "application/json", b"{}").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("POST /jsonrpc HTTP/1.1\r\nHost: h:80\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 2\r\n") && text.ends_with("\r\n\r\n{}"));
    }
}
