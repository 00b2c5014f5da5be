//! The official XenAPI Python SDK (PyPI `xenapi`, module `XenAPI`) and Python's own
//! `xmlrpc.client` and `json` against our codecs.
//!
//! A small HTTP server on 127.0.0.1 answers with our encoders; Python drives it with
//! `XenAPI.Session` over XML-RPC (the SDK speaks nothing else) and with `urllib` + `json`
//! over JSON-RPC, both versions. Python checks what it gets back; this side checks what
//! Python sent, as our parsers read it.
//!
//! The SDK comes from the venv that `scripts/install-deps.sh` makes (`$FV_VENV`, default
//! `~/.local/share/ferrovisor/venv`), or `$FV_PYTHON` names an interpreter that has it.
//! Without it these tests fail, saying to run the script: CI runs it first, so a skip
//! would only hide a broken install.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use fv_rpc::{jsonrpc, xmlrpc, Call, Failure, Value};

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("FV_PYTHON") {
        return python.into();
    }
    let venv = std::env::var_os("FV_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".local/share/ferrovisor/venv")
        });
    venv.join("bin/python3")
}

/// Runs `script` with `args`, feeding it `stdin`; returns its stdout, failing the test
/// with its stderr if it fails.
fn run_python(script: &str, args: &[&str], stdin: &str) -> String {
    let python = python();
    let has_sdk = Command::new(&python)
        .args(["-c", "import XenAPI"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_sdk,
        "the XenAPI Python SDK is missing: {} cannot `import XenAPI`. \
         Run scripts/install-deps.sh (it installs PyPI's `xenapi` into a venv), \
         or point FV_PYTHON at a python3 that has it.",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python failed ({}):\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn map(members: &[(&str, Value)]) -> Value {
    Value::Struct(
        members
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// What the server sends for `test.sample`: every type, and text that needs escaping.
fn sample() -> Value {
    map(&[
        ("int", Value::Int(i64::MAX)),
        ("negative", Value::Int(-1)),
        ("float", Value::Float(0.1)),
        ("inf", Value::Float(f64::INFINITY)),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("when", Value::DateTime("20240229T23:59:59Z".into())),
        ("text", s("a\r\nb <&> ]]> \"q\" 'a' ünïcødé 😀\t")),
        ("controls", s("x\u{1}y\u{1f}z")),
        ("empty", s("")),
        (
            "list",
            Value::Array(vec![Value::Array(vec![]), map(&[]), s("x")]),
        ),
        (
            "nested",
            map(&[("k<&>", Value::Array(vec![map(&[("v", Value::Float(1.5))])]))]),
        ),
    ])
}

/// The XenAPI calls the test server knows, the same over both protocols.
fn answer(call: &Call, sessions: &AtomicU32) -> Result<Value, Failure> {
    let session = call
        .params
        .first()
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match call.method.as_str() {
        "session.login_with_password" => {
            if call.params.get(..2) != Some(&[s("root"), s("secret")][..]) {
                return Err(Failure::new(
                    "SESSION_AUTHENTICATION_FAILED",
                    vec!["root".into()],
                ));
            }
            let n = sessions.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Value::String(format!("OpaqueRef:session-{n}")))
        }
        "session.logout" => Ok(Value::void()),
        "test.echo" => Ok(call.params.get(1).cloned().unwrap_or_else(Value::void)),
        "test.params" => Ok(Value::Array(call.params.clone())),
        "test.sample" => Ok(sample()),
        "test.fail" => Err(Failure::new(
            "VM_BAD_POWER_STATE",
            vec!["OpaqueRef:vm".into(), "halted".into(), "running".into()],
        )),
        // The first session has expired: the SDK logs in again and retries.
        "test.expire" if session == "OpaqueRef:session-1" => {
            Err(Failure::new("SESSION_INVALID", vec![session]))
        }
        "test.expire" => Ok(Value::String(session)),
        other => Err(Failure::new("MESSAGE_METHOD_UNKNOWN", vec![other.into()])),
    }
}

/// A test server: XML-RPC at `/`, JSON-RPC at `/jsonrpc`. It records every call it read and
/// lives until the test process ends.
struct Server {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

fn serve() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sessions = Arc::new(AtomicU32::new(0));
    let recorded = calls.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (calls, sessions) = (recorded.clone(), sessions.clone());
            thread::spawn(move || connection(stream, &calls, &sessions));
        }
    });
    Server { url, calls }
}

/// Answers HTTP/1.1 requests on one connection (the SDK keeps it open) until it closes.
fn connection(stream: TcpStream, calls: &Mutex<Vec<Call>>, sessions: &AtomicU32) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let mut len = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let (content_type, response) = if path == "/jsonrpc" {
            let request = jsonrpc::parse_call(&body).unwrap();
            calls.lock().unwrap().push(request.call.clone());
            let result = answer(&request.call, sessions);
            (
                "application/json",
                jsonrpc::encode_response(request.version, &request.id, &result),
            )
        } else {
            let call = xmlrpc::parse_call(&body).unwrap();
            calls.lock().unwrap().push(call.clone());
            let response = if call.method == "test.fault" {
                xmlrpc::encode_fault(-32601, "no such <method>")
            } else {
                xmlrpc::encode_response(&answer(&call, sessions))
            };
            ("text/xml", response)
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            response.len()
        );
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(response.as_bytes()).unwrap();
    }
}

const SDK_SCRIPT: &str = r#"
import math, sys, xmlrpc.client
import XenAPI

url = sys.argv[1]
s = XenAPI.Session(url)
s.xenapi.login_with_password("root", "secret", "1.0", "fv-rpc-test")
assert s.handle == "OpaqueRef:session-1", s.handle

sent = {
    "int": 42, "negative": -2147483648, "float": 0.1, "big float": 1e300, "neg zero": -0.0,
    "true": True, "false": False,
    "when": xmlrpc.client.DateTime("20240229T23:59:59Z"),
    "text": "<&>\"' ünïcødé ☃ 𝄞 ]]> \t\n end",
    "empty": "", "none": None,
    "list": [1, "two", [3.25, {}], []],
    "nested": {"a<&>": {"b": {"c": ["deep"]}}},
    "big int as string": "9223372036854775807",
}
got = s.xenapi.test.echo(sent)
# XenAPI sends ints as strings; our nil is the empty string.
expected = dict(sent, int="42", negative="-2147483648", none="", list=["1", "two", [3.25, {}], []])
assert got == expected, (got, expected)
assert math.copysign(1, got["neg zero"]) == -1, got["neg zero"]
assert isinstance(got["when"], xmlrpc.client.DateTime), type(got["when"])

got = s.xenapi.test.sample()
expected = {
    "int": "9223372036854775807", "negative": "-1", "float": 0.1, "inf": math.inf,
    "true": True, "false": False, "when": xmlrpc.client.DateTime("20240229T23:59:59Z"),
    "text": "a\r\nb <&> ]]> \"q\" 'a' ünïcødé 😀\t", "controls": "xyz", "empty": "",
    "list": [[], {}, "x"], "nested": {"k<&>": [{"v": 1.5}]},
}
assert got == expected, (got, expected)

try:
    s.xenapi.test.fail()
    raise AssertionError("test.fail did not raise")
except XenAPI.Failure as e:
    assert e.details == ["VM_BAD_POWER_STATE", "OpaqueRef:vm", "halted", "running"], e.details

# SESSION_INVALID makes the SDK log in again and retry.
assert s.xenapi.test.expire() == "OpaqueRef:session-2"
assert s.handle == "OpaqueRef:session-2", s.handle

try:
    s.test.fault()
    raise AssertionError("test.fault did not raise")
except xmlrpc.client.Fault as f:
    assert (f.faultCode, f.faultString) == (-32601, "no such <method>"), f

try:
    XenAPI.Session(url).xenapi.login_with_password("root", "wrong", "1.0", "fv-rpc-test")
    raise AssertionError("bad login did not raise")
except XenAPI.Failure as e:
    assert e.details == ["SESSION_AUTHENTICATION_FAILED", "root"], e.details

s.xenapi.session.logout()
assert s.handle is None
print("ok")
"#;

#[test]
fn xenapi_sdk_over_xmlrpc() {
    let server = serve();
    let out = run_python(SDK_SCRIPT, &[&server.url], "");
    assert_eq!(out.trim(), "ok");

    let calls = server.calls.lock().unwrap();
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "session.login_with_password",
            "test.echo",
            "test.sample",
            "test.fail",
            "test.expire",
            "session.login_with_password",
            "test.expire",
            "test.fault",
            "session.login_with_password",
            "session.logout",
        ]
    );
    assert_eq!(
        calls[0].params,
        [s("root"), s("secret"), s("1.0"), s("fv-rpc-test")],
        "login params"
    );
    // What Python's xmlrpc.client sends, as our parser reads it: real <int>s this way.
    let expected = map(&[
        ("int", Value::Int(42)),
        ("negative", Value::Int(-2147483648)),
        ("float", Value::Float(0.1)),
        ("big float", Value::Float(1e300)),
        ("neg zero", Value::Float(-0.0)),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("when", Value::DateTime("20240229T23:59:59Z".into())),
        ("text", s("<&>\"' ünïcødé ☃ 𝄞 ]]> \t\n end")),
        ("empty", s("")),
        ("none", Value::void()),
        (
            "list",
            Value::Array(vec![
                Value::Int(1),
                s("two"),
                Value::Array(vec![Value::Float(3.25), map(&[])]),
                Value::Array(vec![]),
            ]),
        ),
        (
            "nested",
            map(&[(
                "a<&>",
                map(&[("b", map(&[("c", Value::Array(vec![s("deep")]))]))]),
            )]),
        ),
        ("big int as string", s("9223372036854775807")),
    ]);
    assert_eq!(calls[1].params, [s("OpaqueRef:session-1"), expected]);
    assert_eq!(calls[6].params, [s("OpaqueRef:session-2")]);
}

const JSON_SCRIPT: &str = r#"
import json, math, sys, urllib.request

url = sys.argv[1] + "jsonrpc"
def rpc(body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())

sent = {
    "int": 9223372036854775807, "negative": -9223372036854775808, "float": 0.1,
    "big float": 1e300, "true": True, "false": False, "none": None,
    "text": "\"\\/ <&> ünïcødé 😀 \r\n\t \u0001 \u2028", "empty": "",
    "list": [1, [2.5, {}], []], "nested": {"a": {"b": ["c"]}},
}
echoed = dict(sent, none="")
sample = {
    "int": 9223372036854775807, "negative": -1, "float": 0.1, "inf": None,
    "true": True, "false": False, "when": "20240229T23:59:59Z",
    "text": "a\r\nb <&> ]]> \"q\" 'a' ünïcødé 😀\t", "controls": "x\u0001y\u001fz", "empty": "",
    "list": [[], {}, "x"], "nested": {"k<&>": [{"v": 1.5}]},
}
fail = ["VM_BAD_POWER_STATE", "OpaqueRef:vm", "halted", "running"]

r = rpc({"method": "session.login_with_password", "params": ["root", "secret", "1.0", "t"], "id": 1})
assert r == {"result": "OpaqueRef:session-1", "error": None, "id": 1}, r
r = rpc({"method": "test.echo", "params": ["OpaqueRef:session-1", sent], "id": "a"})
assert r == {"result": echoed, "error": None, "id": "a"}, r
r = rpc({"method": "test.sample", "params": ["OpaqueRef:session-1"], "id": 2})
assert r == {"result": sample, "error": None, "id": 2}, r
r = rpc({"method": "test.fail", "params": ["OpaqueRef:session-1"], "id": 3})
assert r == {"result": None, "error": fail, "id": 3}, r

r = rpc({"jsonrpc": "2.0", "method": "test.echo", "params": ["OpaqueRef:session-1", sent], "id": "b"})
assert r == {"jsonrpc": "2.0", "result": echoed, "id": "b"}, r
r = rpc({"jsonrpc": "2.0", "method": "test.sample", "params": ["OpaqueRef:session-1"], "id": 4})
assert r == {"jsonrpc": "2.0", "result": sample, "id": 4}, r
r = rpc({"jsonrpc": "2.0", "method": "test.fail", "params": ["OpaqueRef:session-1"], "id": 5})
assert r == {"jsonrpc": "2.0", "error": {"code": 1, "message": fail[0], "data": fail[1:]}, "id": 5}, r
r = rpc({"jsonrpc": "2.0", "method": "test.params", "params": {"a": 1}, "id": 6})
assert r == {"jsonrpc": "2.0", "result": [{"a": 1}], "id": 6}, r
r = rpc({"jsonrpc": "2.0", "method": "test.params", "id": 7})
assert r == {"jsonrpc": "2.0", "result": [], "id": 7}, r
print("ok")
"#;

#[test]
fn python_json_over_jsonrpc() {
    let server = serve();
    let out = run_python(JSON_SCRIPT, &[&server.url], "");
    assert_eq!(out.trim(), "ok");
    let calls = server.calls.lock().unwrap();
    let expected = map(&[
        ("int", Value::Int(i64::MAX)),
        ("negative", Value::Int(i64::MIN)),
        ("float", Value::Float(0.1)),
        ("big float", Value::Float(1e300)),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("none", Value::void()),
        ("text", s("\"\\/ <&> ünïcødé 😀 \r\n\t \u{1} \u{2028}")),
        ("empty", s("")),
        (
            "list",
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::Float(2.5), map(&[])]),
                Value::Array(vec![]),
            ]),
        ),
        (
            "nested",
            map(&[("a", map(&[("b", Value::Array(vec![s("c")]))]))]),
        ),
    ]);
    assert_eq!(
        calls[1].params,
        [s("OpaqueRef:session-1"), expected.clone()]
    );
    assert_eq!(calls[4].params, [s("OpaqueRef:session-1"), expected]);
}

/// Python reads our calls and writes responses for us to read: the client side.
const CLIENT_SCRIPT: &str = r#"
import json, sys, xmlrpc.client

params, method = xmlrpc.client.loads(sys.stdin.read())
assert method == "VM.set_other_config", method
expected = ("OpaqueRef:vm", {
    "int": "-7", "float": 2.5, "true": True, "when": xmlrpc.client.DateTime("20240101T00:00:00Z"),
    "text": "a\r\n<&>\"' ünï 😀", "list": [[], {}],
})
assert params == expected, params

value = {"int": 7, "float": 2.5, "none": None, "true": True,
         "when": xmlrpc.client.DateTime("20240229T23:59:59"), "text": "<&>\"' ünï 😀 ]]>",
         "list": [1, ["x"], {}], "empty": ""}
dumps = lambda v: xmlrpc.client.dumps(v, methodresponse=True, allow_none=True)
print(json.dumps([
    dumps(({"Status": "Success", "Value": value},)),
    dumps(({"Status": "Failure", "ErrorDescription": ["HANDLE_INVALID", "VM", "OpaqueRef:x"]},)),
    xmlrpc.client.dumps(xmlrpc.client.Fault(42, "boom <&>")),
]))
"#;

#[test]
fn python_xmlrpc_reads_our_calls_and_we_read_its_responses() {
    let call = xmlrpc::encode_call(
        "VM.set_other_config",
        &[
            s("OpaqueRef:vm"),
            map(&[
                ("int", Value::Int(-7)),
                ("float", Value::Float(2.5)),
                ("true", Value::Bool(true)),
                ("when", Value::DateTime("20240101T00:00:00Z".into())),
                ("text", s("a\r\n<&>\"' ünï 😀")),
                ("list", Value::Array(vec![Value::Array(vec![]), map(&[])])),
            ]),
        ],
    );
    let out = run_python(CLIENT_SCRIPT, &[], &call);
    let responses: Vec<String> = serde_json::from_str(&out).unwrap();
    let [success, failure, fault] = &responses[..] else {
        panic!("{out}")
    };

    let value = Value::Struct(BTreeMap::from([
        ("int".into(), Value::Int(7)),
        ("float".into(), Value::Float(2.5)),
        ("none".into(), Value::void()),
        ("true".into(), Value::Bool(true)),
        ("when".into(), Value::DateTime("20240229T23:59:59".into())),
        ("text".into(), s("<&>\"' ünï 😀 ]]>")),
        (
            "list".into(),
            Value::Array(vec![Value::Int(1), Value::Array(vec![s("x")]), map(&[])]),
        ),
        ("empty".into(), s("")),
    ]));
    assert_eq!(
        xmlrpc::parse_response(success.as_bytes()).unwrap(),
        Ok(value)
    );
    assert_eq!(
        xmlrpc::parse_response(failure.as_bytes()).unwrap(),
        Err(Failure::new(
            "HANDLE_INVALID",
            vec!["VM".into(), "OpaqueRef:x".into()]
        ))
    );
    assert_eq!(
        xmlrpc::parse_response(fault.as_bytes()).unwrap(),
        Err(Failure::new(
            Failure::FAULT,
            vec!["42".into(), "boom <&>".into()]
        ))
    );
}
