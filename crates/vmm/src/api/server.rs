//! The API thread: accepts one connection at a time on a blocking `UnixListener`, serves its
//! requests (keep-alive, pipelining), and forwards each action to the VMM.
//!
//! One thread and blocking I/O keep startup cheap and the seccomp filter short. The price is
//! that one client can hold the thread, so every request has a deadline: a client that
//! stalls, or idles on a keep-alive connection, is dropped after `REQUEST_TIMEOUT`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::http::{self, Request, Response, Status};
use super::{ApiRequest, VmmData};

/// Time a client has to send each whole request, idle keep-alive time included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the VMM has to answer an action before the client gets a 503.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
struct Timeouts {
    request: Duration,
    reply: Duration,
}

struct VmmLink {
    to_vmm: Sender<ApiRequest>,
    wake: Arc<EventFd>,
}

/// Spawns the API thread ("fv-api"): it first runs `on_start` (the caller installs the
/// thread's seccomp filter there; if it returns Err the thread logs one line to stderr and
/// exits), then serves the socket forever. Each parsed request is sent on `to_vmm`, then
/// `wake.write(1)` wakes the VMM's event loop, then the thread waits up to `REPLY_TIMEOUT`
/// for the reply (503 after that).
pub fn start_api_server(
    listener: UnixListener,
    to_vmm: Sender<ApiRequest>,
    wake: Arc<EventFd>,
    on_start: Box<dyn FnOnce() -> Result<(), String> + Send>,
) -> io::Result<JoinHandle<()>> {
    let timeouts = Timeouts {
        request: REQUEST_TIMEOUT,
        reply: REPLY_TIMEOUT,
    };
    spawn(listener, VmmLink { to_vmm, wake }, on_start, timeouts)
}

fn spawn(
    listener: UnixListener,
    vmm: VmmLink,
    on_start: Box<dyn FnOnce() -> Result<(), String> + Send>,
    timeouts: Timeouts,
) -> io::Result<JoinHandle<()>> {
    // Done here, before the seccomp filter exists: a non-blocking listener would spin.
    listener.set_nonblocking(false)?;
    thread::Builder::new()
        .name("fv-api".to_owned())
        .spawn(move || {
            if let Err(e) = on_start() {
                eprintln!("fv-api: not serving the API: {e}");
                return;
            }
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => serve_connection(stream, &vmm, timeouts),
                    Err(e) => {
                        eprintln!("fv-api: accept failed: {e}");
                        // E.g. EMFILE: do not spin while it lasts.
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })
}

/// Serves requests on one connection until the client closes, errs, asks to close, or
/// misses a deadline. Never panics; I/O errors just end the connection.
fn serve_connection(mut stream: UnixStream, vmm: &VmmLink, timeouts: Timeouts) {
    // A client that never reads its responses must not block us either.
    if stream.set_write_timeout(Some(timeouts.request)).is_err() {
        return;
    }
    let mut buf = Vec::with_capacity(1024);
    loop {
        let deadline = Instant::now() + timeouts.request;
        let request = loop {
            match http::parse_request(&buf) {
                Ok(Status::Complete { request, len }) => {
                    buf.drain(..len);
                    break request;
                }
                Ok(Status::Partial) => {}
                Err(e) => {
                    let _ = stream.write_all(&Response::from_http_error(&e).to_bytes());
                    return linger_close(stream);
                }
            }
            match read_some(&mut stream, &mut buf, deadline) {
                Ok(0) => return, // Closed, perhaps midway: nobody left to answer.
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if !buf.is_empty() {
                        let mut timeout = Response::fault(408, "request not received in time");
                        timeout.close = true;
                        let _ = stream.write_all(&timeout.to_bytes());
                    }
                    return linger_close(stream);
                }
                Err(_) => return,
            }
        };
        let (mut response, sent) = handle(&request, vmm, timeouts.reply);
        response.close |= !request.keep_alive;
        let written = stream.write_all(&response.to_bytes()).is_ok();
        if let (true, Some(sent)) = (written, sent) {
            // The VMM may be waiting to exit until the client has its answer.
            let _ = sent.send(());
        }
        if !written || response.close {
            return;
        }
    }
}

/// Closes after an error response without losing it: closing a Unix socket with unread
/// input makes the client's next read fail with ECONNRESET, so discard what the client has
/// already sent, for a short, bounded time.
fn linger_close(mut stream: UnixStream) {
    const LINGER: Duration = Duration::from_millis(100);
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = Vec::with_capacity(4096);
    while let Ok(1..) = read_some(&mut stream, &mut sink, deadline) {
        sink.clear();
    }
}

/// Appends whatever arrives before `deadline` to `buf`; `Ok(0)` means end of stream.
fn read_some(stream: &mut UnixStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Routes one request and, if it names an action, runs it through the VMM. Also returns
/// the sender that tells the VMM the response was written (see `ApiRequest::sent`).
fn handle(
    request: &Request,
    vmm: &VmmLink,
    reply_timeout: Duration,
) -> (Response, Option<mpsc::Sender<()>>) {
    let action = match http::parse_action(request) {
        Ok(action) => action,
        Err(e) => return (Response::from_route_error(&e), None),
    };
    let (reply, from_vmm) = mpsc::channel();
    let (sent_tx, sent) = mpsc::channel();
    if vmm
        .to_vmm
        .send(ApiRequest {
            action,
            reply,
            sent,
        })
        .is_err()
    {
        return (
            Response::fault(503, "the VMM is not accepting requests"),
            None,
        );
    }
    if let Err(e) = vmm.wake.write(1) {
        // The request is queued; the VMM will still see it at its next wakeup.
        eprintln!("fv-api: cannot wake the VMM: {e}");
    }
    let response = match from_vmm.recv_timeout(reply_timeout) {
        Ok(Ok(VmmData::Info(info))) => match serde_json::to_string(&info) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::fault(500, &format!("cannot encode the reply: {e}")),
        },
        Ok(Ok(VmmData::Balloon(info))) => match serde_json::to_string(&info) {
            Ok(body) => Response::json(200, body),
            Err(e) => Response::fault(500, &format!("cannot encode the reply: {e}")),
        },
        Ok(Ok(VmmData::Empty)) => Response::no_content(),
        Ok(Err(e)) => Response::fault(e.status(), &e.to_string()),
        Err(RecvTimeoutError::Timeout) => Response::fault(503, "the VMM did not answer in time"),
        Err(RecvTimeoutError::Disconnected) => {
            Response::fault(503, "the VMM dropped the request unanswered")
        }
    };
    (response, Some(sent_tx))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::Receiver;

    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::api::{ActionError, VmInfo, VmState, VmmAction};
    use crate::metrics::ExitCountersSnapshot;
    use fv_vmmctl::http_request;

    /// A socket path unique to this test; removed on drop.
    struct TempSocket(PathBuf);

    impl TempSocket {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "fv-api-test-{}-{}.sock",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_file(&path);
            TempSocket(path)
        }
    }

    impl Drop for TempSocket {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A stand-in for the VMM: keeps a paused flag and answers like the real one should.
    fn fake_vmm(rx: Receiver<ApiRequest>) {
        let mut paused = false;
        for req in rx {
            let reply = match req.action {
                VmmAction::GetInfo => Ok(VmmData::Info(VmInfo {
                    state: if paused {
                        VmState::Paused
                    } else {
                        VmState::Running
                    },
                    vcpus: 2,
                    memory_mib: 256,
                    uptime_ms: 1234,
                    exits: ExitCountersSnapshot {
                        io_out: 7,
                        hlt: 1,
                        ..Default::default()
                    },
                    devices: Vec::new(),
                })),
                VmmAction::Pause if paused => {
                    Err(ActionError::BadState("the VM is already paused"))
                }
                VmmAction::Resume if !paused => Err(ActionError::BadState("the VM is not paused")),
                VmmAction::Pause | VmmAction::Resume => {
                    paused = !paused;
                    Ok(VmmData::Empty)
                }
                VmmAction::Stop | VmmAction::PowerButton => Ok(VmmData::Empty),
                VmmAction::Reset => Err(ActionError::Failed("reset failed: no reason".into())),
                VmmAction::GetBalloon | VmmAction::SetBalloon { .. } => {
                    Err(ActionError::NoDevice("the VM has no balloon"))
                }
                VmmAction::AddNet(_) | VmmAction::RemoveNet { .. } => {
                    Err(ActionError::Failed("no slot".into()))
                }
                VmmAction::DiskPause { .. }
                | VmmAction::DiskResume { .. }
                | VmmAction::DiskReopen { .. } => {
                    Err(ActionError::NoDevice("the VM has no disk of that name"))
                }
            };
            let _ = req.reply.send(reply);
        }
    }

    struct Server {
        socket: TempSocket,
        wake: Arc<EventFd>,
    }

    fn start(timeouts: Timeouts, vmm: fn(Receiver<ApiRequest>)) -> Server {
        let socket = TempSocket::new();
        let listener = UnixListener::bind(&socket.0).unwrap();
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || vmm(rx));
        let link = VmmLink {
            to_vmm: tx,
            wake: wake.clone(),
        };
        spawn(listener, link, Box::new(|| Ok(())), timeouts).unwrap();
        Server { socket, wake }
    }

    const FAST: Timeouts = Timeouts {
        request: Duration::from_millis(300),
        reply: Duration::from_millis(300),
    };

    fn fault(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["fault_message"].as_str().unwrap().to_owned()
    }

    /// Writes `raw`, then reads until the server closes the connection.
    fn raw_exchange(path: &Path, raw: &[u8]) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn endpoints_over_a_real_socket() {
        let server = start(FAST, fake_vmm);
        let sock = server.socket.0.as_path();

        let (status, body) = http_request(sock, "GET", "/vm", None).unwrap();
        assert_eq!(status, 200);
        let info: VmInfo = serde_json::from_str(&body).unwrap();
        assert_eq!(info.state, VmState::Running);
        assert_eq!(info.exits.io_out, 7);
        assert!(body.contains("\"state\":\"Running\""), "{body}");

        assert_eq!(
            http_request(sock, "PUT", "/vm/pause", None).unwrap(),
            (204, String::new())
        );
        let (status, body) = http_request(sock, "PUT", "/vm/pause", Some("{}")).unwrap();
        assert_eq!(
            (status, fault(&body).as_str()),
            (400, "the VM is already paused")
        );
        let (_, body) = http_request(sock, "GET", "/vm", None).unwrap();
        assert!(body.contains("\"state\":\"Paused\""), "{body}");
        assert_eq!(
            http_request(sock, "PUT", "/vm/resume", None).unwrap().0,
            204
        );
        assert_eq!(http_request(sock, "PUT", "/vm/stop", None).unwrap().0, 204);
        let (status, body) = http_request(sock, "PUT", "/vm/reset", None).unwrap();
        assert_eq!(
            (status, fault(&body).as_str()),
            (500, "reset failed: no reason")
        );

        // Errors that never reach the VMM.
        let (status, body) = http_request(sock, "GET", "/nope", None).unwrap();
        assert_eq!(status, 404);
        assert!(fault(&body).contains("/nope"));
        assert_eq!(http_request(sock, "DELETE", "/vm", None).unwrap().0, 405);
        let (status, _) = http_request(sock, "PUT", "/vm/pause", Some("{\"x\":1}")).unwrap();
        assert_eq!(status, 400);

        // Seven requests reached the VMM, and each one woke it.
        assert_eq!(server.wake.read().unwrap(), 7);
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let server = start(FAST, fake_vmm);
        let out = raw_exchange(
            &server.socket.0,
            b"PUT /vm HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("\r\nAllow: GET\r\n"), "{out}");
        assert!(
            out.contains("\r\nContent-Type: application/json\r\n"),
            "{out}"
        );
    }

    #[test]
    fn keep_alive_and_pipelining() {
        let server = start(FAST, fake_vmm);
        let mut s = UnixStream::connect(&server.socket.0).unwrap();
        // Two requests in one write, then a third one later on the same connection.
        s.write_all(b"PUT /vm/pause HTTP/1.1\r\n\r\nGET /vm HTTP/1.1\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        s.write_all(b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let statuses: Vec<&str> = out.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
        assert_eq!(statuses, ["204", "200", "404"], "{out}");
        assert!(out.contains("\"state\":\"Paused\""));
    }

    #[test]
    fn http10_closes_after_one_request() {
        let server = start(FAST, fake_vmm);
        let out = raw_exchange(
            &server.socket.0,
            b"GET /vm HTTP/1.0\r\n\r\nGET /vm HTTP/1.0\r\n\r\n",
        );
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 1, "{out}");
    }

    #[test]
    fn malformed_requests_get_an_error_and_a_close() {
        let server = start(FAST, fake_vmm);
        let sock = &server.socket.0;
        let out = raw_exchange(
            sock,
            b"GET /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 501 "), "{out}");
        assert!(out.contains("Connection: close"));
        let big = format!(
            "PUT /vm/stop HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            70_000
        );
        assert!(raw_exchange(sock, big.as_bytes()).starts_with("HTTP/1.1 413 "));
        let mut huge_head = b"GET /vm HTTP/1.1\r\nX: ".to_vec();
        huge_head.resize(20_000, b'a');
        assert!(raw_exchange(sock, &huge_head).starts_with("HTTP/1.1 431 "));
        assert!(raw_exchange(sock, b"\xff\xfe\r\n\r\n").starts_with("HTTP/1.1 400 "));
        // The server is still there.
        assert_eq!(http_request(sock, "GET", "/vm", None).unwrap().0, 200);
    }

    #[test]
    fn stuck_and_vanishing_clients_do_not_block_the_server() {
        let server = start(FAST, fake_vmm);
        let sock = server.socket.0.clone();
        // Disconnects midway.
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(b"GET /vm HTTP/1.1\r\nHo").unwrap();
        drop(s);
        // Sends nothing: closed silently once the deadline passes.
        let mut silent = UnixStream::connect(&sock).unwrap();
        // Sends half a request: gets a 408.
        let mut slow = UnixStream::connect(&sock).unwrap();
        slow.write_all(b"GET /vm HTTP/1.1\r\n").unwrap();
        let started = Instant::now();
        let (status, _) = http_request(&sock, "GET", "/vm", None).unwrap();
        assert_eq!(status, 200);
        // Both stuck clients had their turn of at most FAST.request each.
        assert!(started.elapsed() < Duration::from_secs(3));
        let mut out = Vec::new();
        silent.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        let mut out = String::new();
        slow.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    }

    #[test]
    fn silent_or_gone_vmm_gives_503() {
        fn hoarder(rx: Receiver<ApiRequest>) {
            let kept: Vec<ApiRequest> = rx.iter().collect();
            drop(kept);
        }
        fn dropper(rx: Receiver<ApiRequest>) {
            for req in rx {
                drop(req);
            }
        }
        for vmm in [hoarder as fn(Receiver<ApiRequest>), dropper] {
            let server = start(FAST, vmm);
            let (status, body) = http_request(&server.socket.0, "PUT", "/vm/pause", None).unwrap();
            assert_eq!(status, 503);
            assert!(fault(&body).starts_with("the VMM"));
        }
        // No VMM at all: the receiver is gone.
        fn gone(rx: Receiver<ApiRequest>) {
            drop(rx);
        }
        let server = start(FAST, gone);
        thread::sleep(Duration::from_millis(50));
        let (status, _) = http_request(&server.socket.0, "GET", "/vm", None).unwrap();
        assert_eq!(status, 503);
    }

    #[test]
    fn balloon_endpoint_errors() {
        let server = start(FAST, fake_vmm);
        let sock = server.socket.0.as_path();
        // Parsed, then refused by the VMM: a VM without a balloon answers 409.
        let (status, body) = http_request(sock, "GET", "/vm/balloon", None).unwrap();
        assert_eq!(
            (status, fault(&body).as_str()),
            (409, "the VM has no balloon")
        );
        let put = Some(r#"{"target_mib": 64}"#);
        assert_eq!(
            http_request(sock, "PUT", "/vm/balloon", put).unwrap().0,
            409
        );
        // Refused before the VMM sees them.
        let (status, body) =
            http_request(sock, "PUT", "/vm/balloon", Some(r#"{"target_mib": -1}"#)).unwrap();
        assert_eq!(status, 400);
        assert!(fault(&body).contains("target_mib"), "{body}");
        let out = raw_exchange(
            sock,
            b"POST /vm/balloon HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("\r\nAllow: GET, PUT\r\n"), "{out}");
        let out = raw_exchange(
            sock,
            b"GET /vm/balloon HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 409 Conflict\r\n"), "{out}");
    }

    #[test]
    fn failing_on_start_ends_the_thread() {
        let socket = TempSocket::new();
        let listener = UnixListener::bind(&socket.0).unwrap();
        let (tx, _rx) = mpsc::channel();
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let handle =
            start_api_server(listener, tx, wake, Box::new(|| Err("no seccomp".into()))).unwrap();
        assert_eq!(handle.thread().name(), Some("fv-api"));
        handle.join().unwrap();
        assert!(UnixStream::connect(&socket.0).is_err());
    }
}
