//! The API over real HTTP: what a hostile or careless client gets, and roles.

mod common;

use common::*;
use fv_rpc::Value;

/// Everything a client can read of the VMs: compared before and after bad requests.
fn snapshot(c: &Client) -> Value {
    c.ok("VM.get_all_records", &[])
}

#[test]
fn malformed_requests_get_xenapi_errors_and_change_nothing() {
    let dir = TempDir::new("malformed");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let vm = c.tiny_vm("victim", "spin");
    let before = snapshot(&c);
    let session = c.session.clone().unwrap();

    // XML-RPC that is not a call, is cut off, or is far too large.
    for body in [
        "not xml at all".to_owned(),
        "<?xml version='1.0'?><methodCall><methodName>VM.destroy".to_owned(),
        format!(
            "<methodCall><methodName>VM.destroy</methodName><params><param><value>{session}\
             </value></param><param><value>{vm}</value></param></params></methodCall>{}",
            " ".repeat(400 * 1024)
        ),
        "<methodCall><methodName>VM.destroy</methodName><params>".to_owned()
            + &"<param><value><array><data>".repeat(200),
    ] {
        let (status, text) = c.post("/", "text/xml", body.as_bytes());
        assert_eq!(status, 200, "{text}");
        let r = fv_rpc::xmlrpc::parse_response(text.as_bytes()).expect("a XenAPI response");
        let f = r.expect_err("refused");
        assert_eq!(f.code, "XMLRPC_UNMARSHAL_FAILURE", "{f}");
    }
    // JSON-RPC likewise, with JSON-RPC's error shape.
    for body in ["{", "[]", "{\"method\": 3, \"params\": [], \"id\": 1}"] {
        let (status, text) = c.post("/jsonrpc", "application/json", body.as_bytes());
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["error"]["message"], "XMLRPC_UNMARSHAL_FAILURE", "{text}");
    }
    // Well-formed calls that are wrong.
    assert_eq!(
        c.err("VM.destroy", &[]).code,
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    );
    assert_eq!(
        c.err("VM.destroy", &[s(&vm), s("extra")]).code,
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    );
    assert_eq!(
        c.err("VM.set_name_label", &[s(&vm), Value::Array(vec![s("x")])])
            .code,
        "FIELD_TYPE_ERROR"
    );
    assert_eq!(
        c.err("VM.destroy", &[s("OpaqueRef:nope")]).code,
        "HANDLE_INVALID"
    );
    assert_eq!(
        c.err("VM.no_such_call", &[s(&vm)]).code,
        "MESSAGE_METHOD_UNKNOWN"
    );
    // No call works without a valid session.
    let forged = Client {
        socket: c.socket.clone(),
        session: Some("OpaqueRef:forged".into()),
    };
    assert_eq!(forged.err("VM.destroy", &[s(&vm)]).code, "SESSION_INVALID");
    assert_eq!(
        c.raw_call("VM.get_all", &[]).unwrap_err().code,
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    );
    let mut wrong = fvd.client();
    assert_eq!(
        wrong.login("root", "wrong").unwrap_err().code,
        "SESSION_AUTHENTICATION_FAILED"
    );
    // JSON-RPC 2.0 carries the same errors as XML-RPC.
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"VM.destroy\",\"params\":[\"{session}\"],\"id\":7}}"
    );
    let (_, text) = c.post("/jsonrpc", "application/json", body.as_bytes());
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        v["error"]["message"], "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "{text}"
    );
    assert_eq!(v["id"], 7, "{text}");

    assert_eq!(snapshot(&c), before, "a refused request changed something");
    assert!(!fvd.log().contains("panicked"), "{}", fvd.log());
}

#[test]
fn each_role_can_do_what_xenapi_allows_and_no_more() {
    let dir = TempDir::new("roles");
    let fvd = Fvd::start(&dir.0.join("data"));
    let root = fvd.root();
    let roles = [
        "pool-admin",
        "pool-operator",
        "vm-power-admin",
        "vm-admin",
        "vm-operator",
        "read-only",
    ];
    let mut users = Vec::new();
    for role in roles {
        root.ok("user.create_local", &[s(role), s("pw"), s(role)]);
        let mut c = fvd.client();
        c.login(role, "pw").expect("login");
        users.push((role, c));
    }
    // The lowest role each call needs, as XenAPI's RBAC has it.
    let rank = |role: &str| roles.iter().position(|r| *r == role).unwrap();
    for (role, c) in &users {
        let may = |needed: &str| rank(role) <= rank(needed);
        let check = |what: &str, needed: &str, result: Result<Value, fv_rpc::Failure>| match (
            may(needed),
            result,
        ) {
            (true, Err(f)) => panic!("{role} may {what}, but got {f}"),
            (false, Ok(_)) => panic!("{role} may not {what}, but it worked"),
            (false, Err(f)) => assert_eq!(f.code, "RBAC_PERMISSION_DENIED", "{role} {what}"),
            (true, Ok(_)) => {}
        };
        check("list VMs", "read-only", c.call("VM.get_all_records", &[]));
        let vm = root.tiny_vm(&format!("for-{role}"), "spin");
        check(
            "start a VM",
            "vm-operator",
            c.call("VM.start", &[s(&vm), Value::Bool(true), Value::Bool(false)]),
        );
        if may("vm-operator") {
            c.ok("VM.hard_shutdown", &[s(&vm)]);
        }
        check(
            "rename a VM",
            "vm-admin",
            c.call("VM.set_name_label", &[s(&vm), s("x")]),
        );
        check(
            "create a VM",
            "vm-admin",
            c.call(
                "VM.create",
                &[Value::Struct(
                    [("name_label".to_owned(), s("mine"))].into_iter().collect(),
                )],
            ),
        );
        check("destroy a VM", "vm-admin", c.call("VM.destroy", &[s(&vm)]));
        check(
            "add a user",
            "pool-admin",
            c.call(
                "user.create_local",
                &[s(&format!("u-{role}")), s("pw"), s("read-only")],
            ),
        );
    }
}

/// Without `$FV_ROOT_PASSWORD`, the first start makes root a password of its own and
/// writes it where only fvd's user can read it.
#[test]
fn a_first_start_without_a_password_generates_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("rootpw");
    let data = dir.0.join("data");
    let mut child = std::process::Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(built_binary("fvd"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--insecure-http"])
        .env_remove("FV_ROOT_PASSWORD")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start fvd");
    let socket = data.join("fvd.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(std::time::Instant::now() < deadline, "fvd did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let file = data.join("root-password");
    let mode = std::fs::metadata(&file)
        .expect("root-password")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = std::fs::read_to_string(&file).unwrap();
    let password = password.trim();
    assert!(password.len() >= 16, "a short password: {password:?}");
    let mut c = Client {
        socket,
        session: None,
    };
    c.login("root", password)
        .expect("root logs in with the generated password");
    assert_eq!(
        c.clone().login("root", ROOT_PASSWORD).unwrap_err().code,
        "SESSION_AUTHENTICATION_FAILED"
    );
    let _ = child.kill();
    let _ = child.wait();
}
