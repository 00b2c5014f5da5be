//! The `fv` binary against an in-test XenAPI server (fv_xapi's dispatcher over a temp
//! SQLite database, with fake VM actions): connection, list and param commands, derived
//! message commands, tasks, event-wait, errors.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fv, Server, PASSWORD};
use fv_rpc::Value;

#[test]
fn lists_and_params_over_tcp_and_the_socket() {
    let srv = Server::start();
    let c = srv.tcp_args();
    let (r, u) = srv.vm("web", false);
    srv.vm("db", false);

    // Default columns, xe's layout.
    let out = fv(&c, &["vm-list"]).ok().to_owned();
    assert!(out.contains("uuid ( RO)"), "{out}");
    assert!(out.contains("name-label ( RW): web"), "{out}");
    assert!(out.contains("power-state ( RO): Halted"), "{out}");
    // Filters and --minimal.
    let out = fv(&c, &["vm-list", "name-label=web", "--minimal"]);
    assert_eq!(out.ok(), u);
    let out = fv(&c, &["vm-list", "power-state=running", "--minimal"]);
    assert_eq!(out.ok(), "");
    // params= and --json.
    let out = fv(&c, &["vm-list", "params=name-label,VCPUs-max", "--json"]);
    let j: serde_json::Value = serde_json::from_str(out.ok()).expect("json");
    assert_eq!(j.as_array().map(Vec::len), Some(2));
    assert_eq!(j[1]["name_label"], "web");
    assert_eq!(j[1]["VCPUs_max"], 1);
    assert!(j[1].get("uuid").is_none());

    // The same over the local socket (password from -pw; user defaults to root).
    let sock = vec![
        "--socket".to_owned(),
        srv.socket.display().to_string(),
        "-pw".to_owned(),
        PASSWORD.to_owned(),
    ];
    assert_eq!(
        fv(&sock, &["vm-list", "name-label=web", "--minimal"]).ok(),
        u
    );
    // And JSON-RPC.
    let mut jc = c.clone();
    jc.push("--jsonrpc".into());
    assert_eq!(
        fv(&jc, &["vm-list", "name-label=db", "--minimal"])
            .ok()
            .len(),
        36
    );

    // param-get / param-set / maps / sets.
    assert_eq!(
        fv(
            &c,
            &[
                "vm-param-get",
                &format!("uuid={u}"),
                "param-name=name-label"
            ]
        )
        .ok(),
        "web"
    );
    fv(
        &c,
        &[
            "vm-param-set",
            &format!("uuid={u}"),
            "name-description=front end",
            "other-config:role=web",
            "tags=a,b",
        ],
    )
    .ok();
    assert_eq!(
        srv.vm_field(&r, "name_description"),
        Value::from("front end")
    );
    assert_eq!(
        fv(
            &c,
            &[
                "vm-param-get",
                &format!("uuid={u}"),
                "param-name=other-config",
                "param-key=role"
            ]
        )
        .ok(),
        "web"
    );
    fv(&c, &["vm-param-set", "vm=web", "other-config:role=api"]).ok();
    assert_eq!(
        fv(
            &c,
            &[
                "vm-param-get",
                "vm=web",
                "param-name=other-config",
                "param-key=role"
            ]
        )
        .ok(),
        "api"
    );
    fv(
        &c,
        &[
            "vm-param-add",
            &format!("uuid={u}"),
            "param-name=tags",
            "param-key=c",
        ],
    )
    .ok();
    fv(
        &c,
        &[
            "vm-param-remove",
            &format!("uuid={u}"),
            "param-name=tags",
            "param-key=a",
        ],
    )
    .ok();
    assert_eq!(
        fv(
            &c,
            &[
                "vm-param-get",
                &format!("uuid={u}"),
                "param-name=tags",
                "--minimal"
            ]
        )
        .ok(),
        "b,c"
    );
    fv(
        &c,
        &[
            "vm-param-add",
            &format!("uuid={u}"),
            "param-name=other-config",
            "k1=v1",
            "k2=v2",
        ],
    )
    .ok();
    fv(
        &c,
        &[
            "vm-param-remove",
            &format!("uuid={u}"),
            "param-name=other-config",
            "param-key=k1",
        ],
    )
    .ok();
    let oc = fv(
        &c,
        &[
            "vm-param-get",
            &format!("uuid={u}"),
            "param-name=other-config",
        ],
    )
    .ok()
    .to_owned();
    assert!(oc.contains("k2: v2") && !oc.contains("k1"), "{oc}");
    fv(
        &c,
        &["vm-param-clear", &format!("uuid={u}"), "param-name=tags"],
    )
    .ok();
    assert_eq!(srv.vm_field(&r, "tags"), Value::Array(vec![]));
    // Custom setter message (VM.set_VCPUs_max) behind param-set.
    let out = fv(&c, &["vm-param-set", &format!("uuid={u}"), "VCPUs-max=2"]);
    // FakeVms does not implement it: the server's NOT_IMPLEMENTED reaches the user.
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("NOT_IMPLEMENTED"), "{}", out.stderr);
    assert!(out.stderr.contains("VM.set_VCPUs_max"), "{}", out.stderr);

    // param-list shows every field, refs as uuids.
    let all = fv(&c, &["vm-param-list", &format!("uuid={u}")])
        .ok()
        .to_owned();
    assert!(
        all.contains("resident-on ( RO): <not in database>"),
        "{all}"
    );
    assert!(all.contains("allowed-operations (SRO)"), "{all}");
    let j: serde_json::Value =
        serde_json::from_str(fv(&c, &["vm-param-list", &format!("uuid={u}"), "--json"]).ok())
            .expect("json");
    assert_eq!(j["uuid"], u.as_str());
    assert!(j["resident_on"].is_null());

    // Other classes' lists work from the same derivation.
    for cls in [
        "host", "sr", "vdi", "network", "vif", "task", "pool", "role", "message",
    ] {
        fv(&c, &[&format!("{cls}-list")]).ok();
    }
    assert_eq!(
        fv(&c, &["role-list", "--minimal"]).ok().split(',').count(),
        6,
        "the six roles"
    );
}

#[test]
fn create_destroy_and_refs_by_name() {
    let srv = Server::start();
    let c = srv.tcp_args();
    let n = fv(
        &c,
        &["network-create", "name-label=lan", "other-config:x=1"],
    );
    let nu = n.ok().to_owned();
    assert_eq!(nu.len(), 36, "prints the new uuid: {nu}");
    let out = fv(
        &c,
        &["network-list", "params=uuid,other-config", "name-label=lan"],
    )
    .ok()
    .to_owned();
    assert!(out.contains(&nu) && out.contains("x: 1"), "{out}");
    // A required field missing: the error names it before anything is sent.
    let (_, vm_uuid) = srv.vm("web", false);
    let out = fv(&c, &["vif-create", "VM=web"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("missing parameter"), "{}", out.stderr);
    // Refs by name-label or uuid, xe's `-uuid` suffix included.
    let vif = fv(
        &c,
        &[
            "vif-create",
            "VM=web",
            &format!("network-uuid={nu}"),
            "device=0",
            "other-config:a=b",
        ],
    );
    let vu = vif.ok().to_owned();
    let out = fv(&c, &["vif-list", &format!("uuid={vu}")]).ok().to_owned();
    assert!(
        out.contains(&vm_uuid) && out.contains(&nu),
        "refs shown as uuids: {out}"
    );
    assert!(out.contains("device ( RO): 0"), "{out}");
    fv(&c, &["vif-destroy", &format!("uuid={vu}")]).ok();
    fv(&c, &["network-destroy", "network=lan"]).ok();
    assert_eq!(fv(&c, &["network-list", "--minimal"]).ok(), "");
}

#[test]
fn lifecycle_through_tasks_and_event_wait() {
    let srv = Server::start();
    let c = srv.tcp_args();
    let (r, u) = srv.vm("web", false);
    // vm-start: Async.VM.start, followed to its end.
    fv(&c, &["vm-start", &format!("uuid={u}")]).ok();
    assert_eq!(srv.vm_field(&r, "power_state"), Value::from("Running"));
    // A task's failure is the call's: VM_BAD_POWER_STATE, explained, exit 1.
    let out = fv(&c, &["vm-start", "vm=web"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("VM_BAD_POWER_STATE"), "{}", out.stderr);
    assert!(out.stderr.contains("must be Halted"), "{}", out.stderr);
    // Tasks are cleaned up after themselves.
    assert_eq!(fv(&c, &["task-list", "--minimal"]).ok(), "");
    // vm-shutdown is clean_shutdown; --force hard_shutdown.
    fv(&c, &["vm-shutdown", "vm=web"]).ok();
    assert_eq!(srv.vm_field(&r, "power_state"), Value::from("Halted"));
    fv(&c, &["vm-start", "vm=web", "paused=true"]).ok();
    assert_eq!(srv.vm_field(&r, "power_state"), Value::from("Paused"));
    fv(&c, &["vm-unpause", "vm=web"]).ok();
    fv(&c, &["vm-shutdown", "vm=web", "--force"]).ok();
    assert_eq!(srv.vm_field(&r, "power_state"), Value::from("Halted"));

    // event-wait returns once the condition holds, waiting on event.from meanwhile.
    let mut waiter = Command::new(common::fv_bin())
        .args(&c)
        .args([
            "event-wait",
            "class=vm",
            &format!("uuid={u}"),
            "power-state=running",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    assert!(waiter.try_wait().expect("wait").is_none(), "still waiting");
    fv(&c, &["vm-start", &format!("uuid={u}")]).ok();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = waiter.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "event-wait did not return"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    // Already true: returns at once; =/= negates.
    fv(
        &c,
        &["event-wait", "class=VM", "vm=web", "power-state=/=halted"],
    )
    .ok();

    // vm-install: clone of a template by name, provision, no longer a template.
    srv.vm("tmpl", true);
    let new = fv(
        &c,
        &["vm-install", "template=tmpl", "new-name-label=from-tmpl"],
    )
    .ok()
    .to_owned();
    assert_eq!(new.len(), 36, "{new}");
    assert_eq!(
        fv(
            &c,
            &[
                "vm-param-get",
                &format!("uuid={new}"),
                "param-name=is-a-template"
            ]
        )
        .ok(),
        "false"
    );
    let out = fv(&c, &["vm-install", "template=web", "new-name-label=x"]);
    assert!(out.stderr.contains("not a template"), "{}", out.stderr);
    // vm-clone prints the new VM's uuid; vm-destroy removes it.
    fv(&c, &["vm-shutdown", "vm=web", "--force"]).ok();
    let cl = fv(&c, &["vm-clone", "vm=web", "new-name-label=web2"])
        .ok()
        .to_owned();
    assert_eq!(
        fv(&c, &["vm-list", "name-label=web2", "--minimal"]).ok(),
        cl
    );
    fv(&c, &["vm-destroy", &format!("uuid={cl}")]).ok();
    assert_eq!(
        fv(&c, &["vm-list", "name-label=web2", "--minimal"]).ok(),
        ""
    );
}

#[test]
fn errors_are_clear_and_never_panics() {
    let srv = Server::start();
    let c = srv.tcp_args();
    srv.vm("web", false);
    srv.vm("web", false);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["vm-strat"], 2, "Did you mean: vm-start"),
        (&["vm-start"], 2, "missing parameter uuid="),
        (
            &["vm-start", "vm=web"],
            1,
            "2 objects of class VM are named web",
        ),
        (
            &["vm-start", "vm=nobody"],
            1,
            "no VM with uuid or name-label nobody",
        ),
        (
            &["vm-start", "uuid=00000000-0000-0000-0000-000000000000"],
            1,
            "no VM with uuid",
        ),
        (&["vm-list", "colour=red"], 2, "VM has no field colour"),
        (&["vm-list", "params=nope"], 2, "VM has no field nope"),
        (&["vm-param-set", "vm=x", "power-state=Running"], 1, ""),
        (&["vm-list", "--bogus"], 2, "unknown flag --bogus"),
        (&["vm-list", "extra"], 2, "unexpected word extra"),
        (
            &["vm-param-get", "param-name=uuid"],
            2,
            "missing parameter uuid=",
        ),
        (
            &["host-dmesg", "uuid=00000000-0000-0000-0000-000000000000"],
            1,
            "no host with uuid",
        ),
    ];
    for (args, code, want) in cases {
        let out = fv(&c, args);
        assert_eq!(out.code, *code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
    // Wrong password.
    let mut bad = c.clone();
    let last = bad.len() - 1;
    bad[last] = "wrong".into();
    let out = fv(&bad, &["vm-list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("SESSION_AUTHENTICATION_FAILED"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("password is wrong"), "{}", out.stderr);
    // The same over JSON-RPC.
    bad.push("--jsonrpc".into());
    let out = fv(&bad, &["vm-list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("SESSION_AUTHENTICATION_FAILED"),
        "{}",
        out.stderr
    );
    // Nothing listening.
    let out = fv(
        &[
            "-s".into(),
            "127.0.0.1".into(),
            "-p".into(),
            "1".into(),
            "--nossl".into(),
            "-pw".into(),
            "x".into(),
        ],
        &["vm-list"],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot connect to http://127.0.0.1:1"),
        "{}",
        out.stderr
    );
    // Plain HTTP to a TLS client: refused with a handshake error, not a hang.
    let out = fv(
        &[
            "-s".into(),
            "127.0.0.1".into(),
            "-p".into(),
            srv.port.to_string(),
            "--no-verify".into(),
            "-pw".into(),
            "x".into(),
        ],
        &["vm-list"],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    // No password and no file: a usage error before connecting.
    let out = fv(
        &["--socket".into(), "/nonexistent/fvd.sock".into()],
        &["vm-list"],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no password for root"),
        "{}",
        out.stderr
    );
}

#[test]
fn root_password_file_beside_the_socket() {
    let srv = Server::start();
    std::fs::write(srv.dir().join("root-password"), format!("{PASSWORD}\n")).expect("write");
    let sock = vec!["--socket".to_owned(), srv.socket.display().to_string()];
    fv(&sock, &["vm-list"]).ok();
    // Another user does not get root's password.
    let out = fv(
        &[
            sock[0].clone(),
            sock[1].clone(),
            "-u".into(),
            "alice".into(),
        ],
        &["vm-list"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn offline_commands() {
    let help = fv(&[], &["help"]).ok().to_owned();
    assert!(
        help.contains("vm-start") && help.contains("vdi-list"),
        "{help}"
    );
    let h = fv(&[], &["vm-start", "--help"]).ok().to_owned();
    assert!(h.contains("start-paused"), "{h}");
    let h = fv(&[], &["help", "vm-shutdown"]).ok().to_owned();
    assert!(h.contains("--force"), "{h}");
    assert!(fv(&[], &["completion", "bash"]).ok().contains("__complete"));
    let cands = fv(&[], &["__complete", "fv vm-sh"]).ok().to_owned();
    assert!(cands.lines().any(|l| l == "vm-shutdown"), "{cands}");
    assert!(fv(&[], &["--version"]).ok().starts_with("fv "));
    let out = fv(&[], &["completion", "csh"]);
    assert_eq!(out.code, 2);
}

#[test]
fn bash_completion_script_works_in_bash() {
    // The script, sourced in a real bash, completes a derived command.
    if Command::new("bash").arg("--version").output().is_err() {
        return;
    }
    let dir = common::fv_bin();
    let bin_dir = dir.parent().expect("dir");
    let script = format!(
        "export PATH={}:$PATH; source <(fv completion bash); COMP_LINE='fv vm-list power-state=Ru'; COMP_POINT=${{#COMP_LINE}}; _fv; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bin_dir.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        "Running",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ctrl_c_cancels_the_task() {
    let srv = Server::start();
    let c = srv.tcp_args();
    let (r, u) = srv.vm("web", false);
    let child = Command::new(common::fv_bin())
        .args(&c)
        .args(["vm-suspend", &format!("uuid={u}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for the task to exist, then interrupt fv as a terminal's Ctrl-C would.
    let t0 = std::time::Instant::now();
    while fv(&c, &["task-list", "--minimal"]).ok().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no task");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelling the task"), "{stderr}");
    assert!(stderr.contains("the task was cancelled"), "{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(15), "cancelled promptly");
    // The task was cleaned up; the VM is untouched.
    assert_eq!(fv(&c, &["task-list", "--minimal"]).ok(), "");
    assert_eq!(srv.vm_field(&r, "power_state"), Value::from("Halted"));
}
