//! Calls to fvd: where it is, the wire protocol, and the session.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fv_rpc::jsonrpc::{self, Id, Version};
use fv_rpc::{xmlrpc, Failure, Value, MAX_RESPONSE_LEN};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::args::ConnOpts;
use crate::error::Error;
use crate::http::{self, Conn};
use crate::tls::{self, Trust};
use crate::values::{self, Namer, Resolve};

/// fvd's default data directory; the socket and the generated root password live there.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ferrovisor";
/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "fvd.sock";
/// The generated root password's file name in the data directory (fvd's bootstrap).
pub const ROOT_PASSWORD_FILE: &str = "root-password";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long fv waits for any one answer. Long operations run as tasks, and fv's own
/// `event.from` waits are 30 s at most, so only a stuck server takes this long.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Where fvd is.
#[derive(Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
        /// `None` for plain HTTP (`--nossl`).
        tls: Option<TlsSetup>,
    },
}

/// A TCP endpoint's TLS: the configuration, where the presented certificate's
/// fingerprint is recorded, and whether verification is off (warned about).
#[derive(Clone)]
pub struct TlsSetup {
    config: Arc<ClientConfig>,
    seen: tls::Seen,
    no_verify: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Endpoint {
    /// The endpoint the options name: `-s` (with `-p`, `--nossl` and the trust options),
    /// else the local socket.
    pub fn from_opts(c: &ConnOpts) -> Result<Endpoint, Error> {
        let Some(host) = &c.server else {
            return Ok(Endpoint::Unix(
                c.socket
                    .clone()
                    .unwrap_or_else(|| Path::new(DEFAULT_DATA_DIR).join(SOCKET_NAME)),
            ));
        };
        let chosen = [c.fingerprint.is_some(), c.cafile.is_some(), c.no_verify];
        if chosen.iter().filter(|x| **x).count() > 1 {
            return Err(Error::usage(
                "give at most one of --fingerprint, --cafile and --no-verify",
            ));
        }
        if c.nossl {
            return Ok(Endpoint::Tcp {
                host: host.clone(),
                port: c.port.unwrap_or(80),
                tls: None,
            });
        }
        let trust = if let Some(fp) = &c.fingerprint {
            Trust::Fingerprint(tls::parse_fingerprint(fp)?)
        } else if let Some(ca) = &c.cafile {
            Trust::CaFile(ca.clone())
        } else if c.no_verify {
            Trust::NoVerify
        } else {
            Trust::System
        };
        tls::server_name(host)?;
        Ok(Endpoint::Tcp {
            host: host.clone(),
            port: c.port.unwrap_or(443),
            tls: Some({
                let (config, seen) = tls::config(&trust)?;
                TlsSetup {
                    config,
                    seen,
                    no_verify: trust == Trust::NoVerify,
                }
            }),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("the local socket {}", p.display()),
            Endpoint::Tcp { host, port, tls } => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}:{port}", bracket(host))
            }
        }
    }

    fn host_header(&self) -> String {
        match self {
            Endpoint::Unix(_) => "localhost".to_owned(),
            Endpoint::Tcp { host, port, .. } => format!("{}:{port}", bracket(host)),
        }
    }

    fn connect(&self, warn_no_verify: bool) -> Result<Conn, Error> {
        let target = self.describe();
        let connect_err = |source| Error::Connect {
            target: target.clone(),
            source,
        };
        match self {
            Endpoint::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path).map_err(connect_err)?;
                s.set_read_timeout(Some(READ_TIMEOUT))
                    .map_err(connect_err)?;
                Ok(Conn::new(Box::new(s)))
            }
            Endpoint::Tcp { host, port, tls } => {
                let h = host.trim_start_matches('[').trim_end_matches(']');
                let addrs: Vec<_> = (h, *port).to_socket_addrs().map_err(connect_err)?.collect();
                let mut last = std::io::Error::other("the name resolves to no address");
                let mut stream = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let tcp = stream.ok_or_else(|| connect_err(last))?;
                let _ = tcp.set_nodelay(true);
                tcp.set_read_timeout(Some(READ_TIMEOUT))
                    .map_err(connect_err)?;
                let Some(TlsSetup {
                    config,
                    seen,
                    no_verify,
                }) = tls
                else {
                    return Ok(Conn::new(Box::new(tcp)));
                };
                let name = tls::server_name(host)?;
                let conn = ClientConnection::new(config.clone(), name)
                    .map_err(|e| Error::Tls(e.to_string()))?;
                let mut s = StreamOwned::new(conn, tcp);
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| tls::handshake_error(&target, &e, seen))?;
                }
                if warn_no_verify && *no_verify {
                    let fp = seen.lock().ok().and_then(|s| *s);
                    eprintln!(
                        "fv: warning: --no-verify: the server's certificate was not checked{}",
                        fp.map(|f| format!(" (SHA-256 {})", tls::show_fingerprint(&f)))
                            .unwrap_or_default()
                    );
                }
                Ok(Conn::new(Box::new(s)))
            }
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// XenAPI's two encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    XmlRpc,
    JsonRpc,
}

/// One connection to fvd, reopened when the server closes it.
pub struct Transport {
    endpoint: Endpoint,
    protocol: Protocol,
    conn: Option<Conn>,
    next_id: i64,
    warned: bool,
}

impl Transport {
    pub fn new(endpoint: Endpoint, protocol: Protocol) -> Transport {
        Transport {
            endpoint,
            protocol,
            conn: None,
            next_id: 1,
            warned: false,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// One call: `Ok(Ok(value))`, `Ok(Err(failure))` for a XenAPI error, `Err` when the
    /// call could not be made or its answer not read.
    pub fn call(
        &mut self,
        method: &str,
        params: &[Value],
    ) -> Result<Result<Value, Failure>, Error> {
        let (path, ctype, body) = match self.protocol {
            Protocol::XmlRpc => ("/", "text/xml", xmlrpc::encode_call(method, params)),
            Protocol::JsonRpc => {
                let id = Id::Int(self.next_id);
                self.next_id += 1;
                (
                    "/jsonrpc",
                    "application/json",
                    jsonrpc::encode_call(Version::V2, &id, method, params),
                )
            }
        };
        let resp = self.exchange(path, ctype, body.as_bytes())?;
        if resp.status != 200 {
            let text = String::from_utf8_lossy(&resp.body);
            return Err(Error::Http(format!(
                "the server answered status {}: {:.200}",
                resp.status,
                text.trim()
            )));
        }
        match self.protocol {
            Protocol::XmlRpc => xmlrpc::parse_response(&resp.body).map_err(Error::Protocol),
            Protocol::JsonRpc => jsonrpc::parse_response(&resp.body)
                .map(|r| r.result)
                .map_err(Error::Protocol),
        }
    }

    fn exchange(&mut self, path: &str, ctype: &str, body: &[u8]) -> Result<http::Response, Error> {
        let host = self.endpoint.host_header();
        // A kept connection may have been closed by the server since: then the request
        // fails before any answer, and is sent once more on a new connection.
        let reused = self.conn.is_some();
        match self.try_exchange(&host, path, ctype, body) {
            Err(e) if reused && is_stale(&e) => {
                self.conn = None;
                self.try_exchange(&host, path, ctype, body)
            }
            other => other,
        }
    }

    fn try_exchange(
        &mut self,
        host: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> Result<http::Response, Error> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let c = self.endpoint.connect(!self.warned)?;
                self.warned = true;
                c
            }
        };
        http::write_request(conn.reader.get_mut(), host, path, ctype, body)
            .map_err(Error::io("sending the request"))?;
        let resp = http::read_response(&mut conn.reader, MAX_RESPONSE_LEN)?;
        if !resp.close {
            self.conn = Some(conn);
        }
        Ok(resp)
    }
}

fn is_stale(e: &Error) -> bool {
    match e {
        Error::Http(m) => m.contains("closed the connection"),
        Error::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// The password: `-pw`, `-pwf FILE`'s first line, `$FV_PASSWORD` (applied into `-pw`
/// earlier), and, for root over the local socket only, the password fvd generated at its
/// first start in the data directory beside the socket (mode 0600: reading it already
/// takes the privileges of fvd's data directory, so it proves as much as the password).
pub fn password(c: &ConnOpts, endpoint: &Endpoint, user: &str) -> Result<String, Error> {
    if let Some(p) = &c.password {
        return Ok(p.clone());
    }
    if let Some(f) = &c.password_file {
        let text = std::fs::read_to_string(f).map_err(Error::io(format!(
            "reading the password file {}",
            f.display()
        )))?;
        return Ok(text.lines().next().unwrap_or("").to_owned());
    }
    if let (Endpoint::Unix(sock), "root") = (endpoint, user) {
        if let Some(dir) = sock.parent() {
            if let Ok(text) = std::fs::read_to_string(dir.join(ROOT_PASSWORD_FILE)) {
                return Ok(text.lines().next().unwrap_or("").to_owned());
            }
        }
    }
    Err(Error::usage(format!(
        "no password for {user}: give -pw PASSWORD, -pwf FILE or FV_PASSWORD"
    )))
}

/// A logged-in session: every call goes with its reference.
pub struct Session {
    transport: Transport,
    session: String,
    uuids: HashMap<String, Option<String>>,
}

impl Session {
    pub fn login(mut transport: Transport, user: &str, password: &str) -> Result<Session, Error> {
        let params = [
            Value::from(user),
            Value::from(password),
            Value::from("1.0"),
            Value::from(concat!("fv/", env!("CARGO_PKG_VERSION"))),
        ];
        let session = match transport.call("session.login_with_password", &params)? {
            Ok(Value::String(s)) => s,
            Ok(other) => {
                return Err(Error::Unexpected(format!(
                    "login answered {}",
                    values::plain(&other)
                )))
            }
            Err(f) => return Err(Error::Api(f)),
        };
        Ok(Session {
            transport,
            session,
            uuids: HashMap::new(),
        })
    }

    /// Logs out; errors are ignored (the session expires anyway).
    pub fn logout(mut self) {
        let s = Value::String(self.session.clone());
        let _ = self.transport.call("session.logout", &[s]);
    }

    /// `method(session, args...)`.
    pub fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, Error> {
        let mut params = Vec::with_capacity(args.len() + 1);
        params.push(Value::String(self.session.clone()));
        params.extend(args);
        self.transport.call(method, &params)?.map_err(Error::Api)
    }

    /// A call answering a string (a ref).
    pub fn call_str(&mut self, method: &str, args: Vec<Value>) -> Result<String, Error> {
        match self.call(method, args)? {
            Value::String(s) => Ok(s),
            other => Err(Error::Unexpected(format!(
                "{method} answered {}",
                values::plain(&other)
            ))),
        }
    }

    /// A call answering a struct (a record).
    pub fn call_struct(
        &mut self,
        method: &str,
        args: Vec<Value>,
    ) -> Result<BTreeMap<String, Value>, Error> {
        match self.call(method, args)? {
            Value::Struct(m) => Ok(m),
            other => Err(Error::Unexpected(format!(
                "{method} answered {}",
                values::plain(&other)
            ))),
        }
    }

    /// Every record of a class, by ref.
    pub fn all_records(
        &mut self,
        class: &str,
    ) -> Result<BTreeMap<String, BTreeMap<String, Value>>, Error> {
        let all = self.call_struct(&format!("{class}.get_all_records"), vec![])?;
        let mut out = BTreeMap::new();
        for (r, rec) in all {
            if let Value::Struct(rec) = rec {
                if let Some(Value::String(u)) = rec.get("uuid") {
                    self.uuids.insert(r.clone(), Some(u.clone()));
                }
                out.insert(r, rec);
            }
        }
        Ok(out)
    }

    /// Learns the uuids of many refs of `class` at once: one `get_all_records` when there
    /// are many, else nothing (they are asked one by one when printed).
    pub fn prefetch_uuids(&mut self, class: &str, refs: &[String]) {
        let unknown = refs
            .iter()
            .filter(|r| !values::is_null(r) && !self.uuids.contains_key(*r))
            .count();
        if unknown > 8 {
            let _ = self.all_records(class);
        }
    }

    /// The ref of the object of `class` with this uuid.
    pub fn by_uuid(&mut self, class: &str, uuid: &str) -> Result<String, Error> {
        let r = self.call_str(&format!("{class}.get_by_uuid"), vec![Value::from(uuid)])?;
        self.uuids.insert(r.clone(), Some(uuid.to_owned()));
        Ok(r)
    }
}

impl Resolve for Session {
    /// A uuid, else a name-label naming exactly one object.
    fn resolve(&mut self, class: &str, text: &str) -> Result<String, Error> {
        if values::looks_like_uuid(text) {
            match self.by_uuid(class, text) {
                Ok(r) => return Ok(r),
                Err(Error::Api(f)) if f.code == "UUID_INVALID" => {}
                Err(e) => return Err(e),
            }
        }
        let has_names = fv_xapi::model::class(class).is_some_and(|c| c.by_name());
        if !has_names {
            return Err(Error::NotFound(format!(
                "there is no {class} with uuid {text}"
            )));
        }
        let found = match self.call(
            &format!("{class}.get_by_name_label"),
            vec![Value::from(text)],
        )? {
            Value::Array(a) => a,
            other => {
                return Err(Error::Unexpected(format!(
                    "get_by_name_label answered {}",
                    values::plain(&other)
                )))
            }
        };
        match found.as_slice() {
            [Value::String(r)] => Ok(r.clone()),
            [] => Err(Error::NotFound(format!(
                "there is no {class} with uuid or name-label {text}"
            ))),
            many => Err(Error::NotFound(format!(
                "{} objects of class {class} are named {text}; give a uuid",
                many.len()
            ))),
        }
    }
}

impl Namer for Session {
    fn uuid_of(&mut self, class: &str, r: &str) -> Option<String> {
        if let Some(u) = self.uuids.get(r) {
            return u.clone();
        }
        let u = match fv_xapi::model::class(class) {
            Some(c) if c.stored && c.field("uuid").is_some() => self
                .call_str(&format!("{class}.get_uuid"), vec![Value::from(r)])
                .ok(),
            _ => None,
        };
        self.uuids.insert(r.to_owned(), u.clone());
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_options() {
        let unix = Endpoint::from_opts(&ConnOpts::default()).unwrap();
        assert_eq!(
            unix.describe(),
            "the local socket /var/lib/ferrovisor/fvd.sock"
        );
        let c = ConnOpts {
            server: Some("h".into()),
            nossl: true,
            ..ConnOpts::default()
        };
        assert_eq!(Endpoint::from_opts(&c).unwrap().describe(), "http://h:80");
        let c = ConnOpts {
            server: Some("::1".into()),
            port: Some(8443),
            fingerprint: Some("00".repeat(32)),
            ..ConnOpts::default()
        };
        let e = Endpoint::from_opts(&c).unwrap();
        assert_eq!(e.describe(), "https://[::1]:8443");
        assert_eq!(e.host_header(), "[::1]:8443");
        let c = ConnOpts {
            server: Some("h".into()),
            fingerprint: Some("00".repeat(32)),
            no_verify: true,
            ..ConnOpts::default()
        };
        assert!(matches!(Endpoint::from_opts(&c), Err(Error::Usage(_))));
    }

    #[test]
    fn passwords_come_from_options_then_the_local_file_for_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ROOT_PASSWORD_FILE), "generated\n").unwrap();
        std::fs::write(dir.path().join("pwf"), "fromfile\nignored\n").unwrap();
        let local = Endpoint::Unix(dir.path().join(SOCKET_NAME));
        let remote = Endpoint::Tcp {
            host: "h".into(),
            port: 80,
            tls: None,
        };
        let mut c = ConnOpts::default();
        assert_eq!(password(&c, &local, "root").unwrap(), "generated");
        assert!(password(&c, &local, "alice").is_err(), "only root's file");
        assert!(
            password(&c, &remote, "root").is_err(),
            "only over the local socket"
        );
        c.password_file = Some(dir.path().join("pwf"));
        assert_eq!(password(&c, &remote, "root").unwrap(), "fromfile");
        c.password = Some("given".into());
        assert_eq!(password(&c, &remote, "root").unwrap(), "given");
    }
}
