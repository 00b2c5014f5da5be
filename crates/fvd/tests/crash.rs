//! fvd killed with SIGKILL at random points during a stream of lifecycle calls, many times
//! over one data directory. After each restart: the database opens and is consistent, no
//! change a client was told had committed is lost, every VM that was running still runs
//! and is adopted, and every VM's recorded power state matches its fv-vmm process.
//!
//! `FVD_CRASH_RUNS` sets the number of kills (default 120; the figure of hundreds
//! was measured with `FVD_CRASH_RUNS=400`).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fv_rpc::Value;

const VMS: usize = 3;

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the client was told: per VM, the last name_label acknowledged, and the one in
/// flight when fvd died (which may or may not have committed).
#[derive(Default, Clone, Debug)]
struct Names {
    acked: Option<String>,
    in_flight: Option<String>,
}

/// Calls lifecycle operations and renames at random until fvd dies under it.
fn stream(
    client: Client,
    vms: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> HashMap<String, Names> {
    let mut rng = Rng(seed | 1);
    let mut names: HashMap<String, Names> = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let vm = &vms[rng.below(vms.len() as u64) as usize];
        let f = Value::Bool(false);
        let outcome = match rng.below(6) {
            0 => client.try_call("VM.start", &[s(vm), f.clone(), f]),
            1 => client.try_call("VM.start", &[s(vm), Value::Bool(true), f]),
            2 => client.try_call("VM.pause", &[s(vm)]),
            3 => client.try_call("VM.unpause", &[s(vm)]),
            4 => client.try_call("VM.hard_shutdown", &[s(vm)]),
            _ => {
                n += 1;
                let name = format!("name-{seed}-{n}");
                names.entry(vm.clone()).or_default().in_flight = Some(name.clone());
                let r = client.try_call("VM.set_name_label", &[s(vm), s(&name)]);
                if matches!(r, Some(Ok(_))) {
                    let e = names.entry(vm.clone()).or_default();
                    e.acked = Some(name);
                    e.in_flight = None;
                }
                r
            }
        };
        // fvd is gone: stop. XenAPI errors (a VM in the wrong state) are part of the stream.
        if outcome.is_none() {
            break;
        }
    }
    names
}

impl Client {
    /// A call, or `None` when the connection failed (fvd was killed).
    fn try_call(&self, method: &str, params: &[Value]) -> Option<Result<Value, fv_rpc::Failure>> {
        let mut all = vec![s(self.session.as_deref()?)];
        all.extend_from_slice(params);
        let body = fv_rpc::xmlrpc::encode_call(method, &all);
        let (status, text) = self.try_post("/", body.as_bytes())?;
        if status != 200 {
            return None;
        }
        fv_rpc::xmlrpc::parse_response(text.as_bytes()).ok()
    }
}

/// Checks the database against reality and against what the client was told.
fn check(
    c: &Client,
    data: &std::path::Path,
    vms: &[String],
    told: &HashMap<String, Names>,
    run: usize,
) {
    let mut running = 0;
    for vm in vms {
        let Value::Struct(rec) = c.ok("VM.get_record", &[s(vm)]) else {
            panic!("run {run}: VM {vm} has no record");
        };
        let get = |f: &str| rec.get(f).cloned().unwrap_or_else(|| panic!("no {f}"));
        let state = get("power_state").as_str().unwrap().to_owned();
        assert_eq!(
            get("current_operations"),
            Value::Struct(Default::default()),
            "run {run}: operations left over"
        );
        let uuid = get("uuid").as_str().unwrap().to_owned();
        let vmm = fv_vmmctl::Vmm::adopt(fv_vmmctl::RunDir::new(data.join("vms").join(&uuid)))
            .expect("adopt");
        match state.as_str() {
            "Running" | "Paused" => {
                running += 1;
                let vmm = vmm.unwrap_or_else(|| {
                    panic!("run {run}: VM {uuid} is {state} but no fv-vmm runs")
                });
                assert_eq!(
                    get("domid").as_int(),
                    Some(i64::from(vmm.pid())),
                    "run {run}"
                );
                let info = vmm.info().unwrap_or_else(|e| {
                    let dir = data.join("vms").join(&uuid);
                    let files: Vec<_> = std::fs::read_dir(&dir)
                        .map(|d| d.flatten().map(|e| e.file_name()).collect())
                        .unwrap_or_default();
                    panic!(
                        "run {run}: fv-vmm {} of VM {uuid} does not answer: {e}; files {files:?}; \
                         stderr {:?}",
                        vmm.pid(),
                        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                    )
                });
                assert_eq!(info["state"], state.as_str(), "run {run}: VM {uuid}");
            }
            "Halted" => assert!(
                vmm.is_none(),
                "run {run}: VM {uuid} is Halted but fv-vmm {} runs",
                vmm.map(|v| v.pid()).unwrap_or_default()
            ),
            other => panic!("run {run}: VM {uuid} is {other}"),
        }
        // No acknowledged rename is lost; the one in flight may or may not have landed.
        if let Some(names) = told.get(vm) {
            let name = get("name_label").as_str().unwrap().to_owned();
            let ok = Some(&name) == names.acked.as_ref() || Some(&name) == names.in_flight.as_ref();
            assert!(
                ok,
                "run {run}: VM {uuid} is named {name:?}, the client was told {names:?}"
            );
        }
    }
    // No fv-vmm runs that the database does not know of.
    let vmms = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
            let is_vmm = args.next().is_some_and(|a| a.ends_with("/fv-vmm"));
            let ours = args.any(|a| a.starts_with(data.to_str().unwrap()));
            let pid = e
                .file_name()
                .to_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            is_vmm && ours && alive(pid)
        })
        .count();
    assert_eq!(
        vmms, running,
        "run {run}: fv-vmm processes vs VMs the database says run"
    );
}

#[test]
fn fvd_killed_at_random_points_loses_nothing_and_reconciles() {
    let runs: usize = std::env::var("FVD_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let dir = TempDir::new("crash");
    let data = dir.0.join("data");
    let fvd = Fvd::start(&data);
    let c = fvd.root();
    let vms: Vec<String> = (0..VMS)
        .map(|i| c.tiny_vm(&format!("crash-{i}"), "spin"))
        .collect();
    let mut told: HashMap<String, Names> = HashMap::new();
    let mut fvd = Some(fvd);
    let mut rng = Rng(0x5eed);
    let started = Instant::now();
    let mut ended_running = 0;
    for run in 0..runs {
        let current = fvd.take().unwrap_or_else(|| Fvd::start(&data));
        let c = current.root();
        check(&c, &data, &vms, &told, run);
        // What survived is now what the client knows.
        for vm in &vms {
            let name = c.field("VM", vm, "name_label").as_str().unwrap().to_owned();
            told.insert(
                vm.clone(),
                Names {
                    acked: Some(name),
                    in_flight: None,
                },
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (c, vms, stop) = (c.clone(), vms.clone(), stop.clone());
            let seed = run as u64 + 1;
            std::thread::spawn(move || stream(c, vms, seed, stop))
        };
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        current.kill9();
        stop.store(true, Ordering::Relaxed);
        for (vm, names) in worker.join().expect("the client thread") {
            let e = told.entry(vm).or_default();
            if names.acked.is_some() {
                e.acked = names.acked;
            }
            if names.in_flight.is_some() {
                e.in_flight = names.in_flight;
            }
        }
        if run + 1 == runs {
            let last = Fvd::start(&data);
            let c = last.root();
            check(&c, &data, &vms, &told, runs);
            ended_running = vms.iter().filter(|v| c.power_state(v) != "Halted").count();
            for vm in &vms {
                if c.power_state(vm) != "Halted" {
                    c.ok("VM.hard_shutdown", &[s(vm)]);
                }
            }
        }
    }
    println!(
        "{runs} kills in {:.1} s; {ended_running} of {VMS} VMs running at the end",
        started.elapsed().as_secs_f64()
    );
}
