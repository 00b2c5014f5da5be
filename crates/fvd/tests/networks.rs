//! Networks on this host (no Linux guest): VIF locking as nftables rules in fvd's network
//! namespace, following `VIF.set_locking_mode`, the `ipv4_allowed`/`ipv6_allowed` calls and
//! `network.set_default_locking_mode` on a running VM, gone when it halts, made again when
//! fvd starts. (Frames through the rules: `tests/linux.rs`, with Linux guests.)

mod common;

use common::*;
use fv_rpc::Value;

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|i| s(i)).collect())
}

/// The VIF's chain as `nft` lists it (empty if there is none).
fn chain(fvd: &Fvd, tap: &str) -> String {
    fvd.in_netns(&["nft", "list", "chain", "bridge", "ferrovisor", tap])
}

/// The rules of the VIF's chain, one a line, without the chain's frame.
fn rules(fvd: &Fvd, tap: &str) -> Vec<String> {
    let listed = chain(fvd, tap);
    assert!(
        listed.contains(&format!("chain {tap} {{")),
        "no chain {tap}:\n{}",
        fvd.in_netns(&["nft", "list", "ruleset"])
    );
    listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with("chain"))
        .filter(|l| *l != "}")
        .map(str::to_owned)
        .collect()
}

#[test]
fn vif_locking_follows_the_api() {
    let dir = TempDir::new("locking");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    let Value::Array(networks) = c.ok("network.get_all", &[]) else {
        panic!()
    };
    let network = networks[0].as_str().unwrap().to_owned();
    let vm = c.tiny_vm("locked", "spin");
    let mac = "02:00:00:00:00:0a";
    let vif_record = |device: &str, extra: &[(&str, Value)]| {
        let mut pairs = vec![
            ("device", s(device)),
            ("network", s(&network)),
            ("VM", s(&vm)),
            ("MAC", s(mac)),
            ("MTU", Value::Int(1500)),
        ];
        pairs.extend_from_slice(extra);
        record(&pairs)
    };
    // Addresses are checked when a VIF is made with them, too.
    let bad = c.err(
        "VIF.create",
        &[vif_record(
            "0",
            &[("ipv4_allowed", strings(&["10.0.0.999"]))],
        )],
    );
    assert_eq!(bad.code, "INVALID_VALUE", "{bad}");
    let vif = c.ok("VIF.create", &[vif_record("0", &[])]);
    let vif = vif.as_str().unwrap().to_owned();
    assert_eq!(c.field("VIF", &vif, "locking_mode"), s("network_default"));
    assert_eq!(
        c.field("network", &network, "default_locking_mode"),
        s("unlocked")
    );

    // A halted VM's VIF: the record changes, no chain yet (the table is fvd's, empty).
    c.ok("VIF.set_locking_mode", &[s(&vif), s("locked")]);
    let uuid = c.field("VM", &vm, "uuid");
    let tap = format!("vif{}.0", &uuid.as_str().unwrap()[..8]);
    let table = fvd.in_netns(&["nft", "list", "table", "bridge", "ferrovisor"]);
    assert!(
        table.contains("table bridge ferrovisor") && !table.contains(&tap),
        "{table}"
    );

    c.ok(
        "VM.start",
        &[s(&vm), Value::Bool(false), Value::Bool(false)],
    );
    // Locked without addresses: its own MAC only, and no IP (nor ARP) at all.
    let r = rules(&fvd, &tap);
    let from = format!("iifname \"{tap}\"");
    assert!(
        r.contains(&format!("{from} ether saddr != {mac} drop")),
        "{r:#?}"
    );
    assert!(
        r.contains(&format!("{from} ether type {{ ip, arp }} drop")),
        "{r:#?}"
    );
    assert!(r.contains(&format!("{from} ether type ip6 drop")), "{r:#?}");
    let table = fvd.in_netns(&["nft", "list", "table", "bridge", "ferrovisor"]);
    assert!(
        table.contains(&format!("\"{tap}\" : jump {tap}")),
        "the maps dispatch to the chain:\n{table}"
    );

    // Addresses, one at a time or all at once; canonical, without duplicates.
    c.ok("VIF.add_ipv4_allowed", &[s(&vif), s("10.0.0.2")]);
    let r = rules(&fvd, &tap);
    assert!(
        r.contains(&format!("{from} ip saddr != 10.0.0.2 drop")),
        "{r:#?}"
    );
    assert!(
        r.contains(&format!("{from} arp saddr ip != 10.0.0.2 drop")),
        "{r:#?}"
    );
    c.ok(
        "VIF.set_ipv4_allowed",
        &[s(&vif), strings(&["10.0.0.3", "10.0.0.2", "10.0.0.3"])],
    );
    assert_eq!(
        c.field("VIF", &vif, "ipv4_allowed"),
        strings(&["10.0.0.3", "10.0.0.2"])
    );
    let r = rules(&fvd, &tap);
    assert!(
        r.contains(&format!("{from} ip saddr != {{ 10.0.0.2, 10.0.0.3 }} drop")),
        "{r:#?}"
    );
    // Invalid addresses: INVALID_VALUE, and neither the record nor the rules change.
    let before = chain(&fvd, &tap);
    for (call, value) in [
        ("VIF.set_ipv4_allowed", strings(&["10.0.0.4", "10.0.0.300"])),
        ("VIF.add_ipv4_allowed", s("10.0.0")),
        ("VIF.add_ipv4_allowed", s("10.0.0.5; flush ruleset")),
        ("VIF.add_ipv6_allowed", s("fe80::1::2")),
        ("VIF.set_ipv6_allowed", strings(&["10.0.0.4"])),
    ] {
        let e = c.err(call, &[s(&vif), value.clone()]);
        assert_eq!(e.code, "INVALID_VALUE", "{call}({value:?}): {e}");
    }
    assert_eq!(
        c.field("VIF", &vif, "ipv4_allowed"),
        strings(&["10.0.0.3", "10.0.0.2"])
    );
    assert_eq!(c.field("VIF", &vif, "ipv6_allowed"), strings(&[]));
    assert_eq!(chain(&fvd, &tap), before);
    c.ok("VIF.remove_ipv4_allowed", &[s(&vif), s("10.0.0.3")]);
    c.ok("VIF.add_ipv6_allowed", &[s(&vif), s("FE80::1")]);
    assert_eq!(c.field("VIF", &vif, "ipv6_allowed"), strings(&["fe80::1"]));
    let r = rules(&fvd, &tap);
    assert!(
        r.contains(&format!("{from} ip saddr != 10.0.0.2 drop")),
        "{r:#?}"
    );
    assert!(
        r.contains(&format!("{from} ip6 saddr != fe80::1 drop")),
        "{r:#?}"
    );

    // Unlocked: an empty chain; disabled: everything dropped.
    c.ok("VIF.set_locking_mode", &[s(&vif), s("unlocked")]);
    assert!(rules(&fvd, &tap).is_empty(), "{:#?}", rules(&fvd, &tap));
    c.ok("VIF.set_locking_mode", &[s(&vif), s("disabled")]);
    assert_eq!(rules(&fvd, &tap), ["drop"]);
    assert_eq!(
        c.err("VIF.set_locking_mode", &[s(&vif), s("open")]).code,
        "INVALID_VALUE"
    );

    // network_default follows the network.
    c.ok("VIF.set_locking_mode", &[s(&vif), s("network_default")]);
    assert!(rules(&fvd, &tap).is_empty());
    c.ok(
        "network.set_default_locking_mode",
        &[s(&network), s("disabled")],
    );
    assert_eq!(rules(&fvd, &tap), ["drop"]);
    assert_eq!(
        c.err(
            "network.set_default_locking_mode",
            &[s(&network), s("locked")]
        )
        .code,
        "INVALID_VALUE",
        "a network's default is unlocked or disabled"
    );

    // The VIF of a running VM cannot be destroyed (its tap and chain would stay).
    assert_eq!(
        c.err("VIF.destroy", &[s(&vif)]).code,
        "OPERATION_NOT_ALLOWED"
    );

    // A restarted fvd makes its table again from the database.
    let data = fvd.data.clone();
    fvd.kill9();
    let fvd = Fvd::start(&data);
    let c = fvd.root();
    assert_eq!(c.power_state(&vm), "Running");
    assert_eq!(rules(&fvd, &tap), ["drop"]);
    c.ok(
        "network.set_default_locking_mode",
        &[s(&network), s("unlocked")],
    );
    assert!(rules(&fvd, &tap).is_empty());

    // Halted: the chain and its map entries are gone.
    c.ok("VM.hard_shutdown", &[s(&vm)]);
    c.wait_power_state(&vm, "Halted");
    assert_eq!(chain(&fvd, &tap), "");
    let table = fvd.in_netns(&["nft", "list", "table", "bridge", "ferrovisor"]);
    assert!(!table.contains(&tap), "{table}");
    c.ok("VIF.destroy", &[s(&vif)]);
}

fn managed_config(begin: &str, end: &str) -> Value {
    record(&[
        ("ip_begin", s(begin)),
        ("ip_end", s(end)),
        ("netmask", s("255.255.255.0")),
    ])
}

fn bridge_of(c: &Client, network: &str) -> String {
    c.field("network", network, "bridge")
        .as_str()
        .unwrap()
        .to_owned()
}

/// The dnsmasq of a bridge: its pid and command line.
fn server(fvd: &Fvd, bridge: &str) -> (i64, String) {
    let pid = dhcp_server(&fvd.data, bridge)
        .unwrap_or_else(|| panic!("no DHCP server on {bridge}; fvd says:\n{}", fvd.log()));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    (pid, String::from_utf8_lossy(&cmdline).replace('\0', " "))
}

#[test]
fn managed_networks_have_a_dhcp_server() {
    let dir = TempDir::new("dhcp");
    let fvd = Fvd::start(&dir.0.join("data"));
    let c = fvd.root();
    // Invalid addresses: no network.
    let before = c.ok("network.get_all", &[]);
    let bad = c.err(
        "network.create",
        &[record(&[
            ("name_label", s("bad")),
            ("other_config", managed_config("10.55.0.1", "10.56.0.9")),
        ])],
    );
    assert_eq!(bad.code, "INVALID_VALUE", "{bad}");
    assert_eq!(c.ok("network.get_all", &[]), before);

    let net = c.ok(
        "network.create",
        &[record(&[
            ("name_label", s("managed")),
            ("other_config", managed_config("10.55.0.1", "10.55.0.50")),
        ])],
    );
    let net = net.as_str().unwrap().to_owned();
    let bridge = bridge_of(&c, &net);
    let addr = fvd.in_netns(&["ip", "-4", "-o", "addr", "show", "dev", &bridge]);
    assert!(addr.contains("inet 10.55.0.1/24"), "{addr}");
    let (pid, cmdline) = server(&fvd, &bridge);
    for want in [
        format!("--interface={bridge} "),
        "--bind-interfaces".into(),
        "--except-interface=lo".into(),
        "--dhcp-range=10.55.0.2,10.55.0.50,255.255.255.0".into(),
    ] {
        assert!(cmdline.contains(&want), "{want} in {cmdline}");
    }
    // It listens for DHCP on the bridge, in fvd's network namespace.
    let udp = fvd.in_netns(&["ss", "-u", "-l", "-n", "-p"]);
    assert!(
        udp.contains(&format!("%{bridge}:67")) || udp.contains(":67 "),
        "{udp}"
    );

    // An unmanaged network stays so; a change of the addresses restarts the server; a bad
    // change is refused and changes nothing.
    let plain = c.ok("network.create", &[record(&[("name_label", s("plain"))])]);
    let plain = plain.as_str().unwrap().to_owned();
    assert_eq!(dhcp_server(&fvd.data, &bridge_of(&c, &plain)), None);
    c.ok(
        "network.set_other_config",
        &[s(&net), managed_config("10.55.0.1", "10.55.0.60")],
    );
    let (pid2, cmdline) = server(&fvd, &bridge);
    assert_ne!(pid, pid2);
    assert!(
        cmdline.contains("--dhcp-range=10.55.0.2,10.55.0.60,"),
        "{cmdline}"
    );
    assert_eq!(
        c.err(
            "network.set_other_config",
            &[s(&net), managed_config("10.55.0.1", "10.55.0.255")]
        )
        .code,
        "INVALID_VALUE"
    );
    assert_eq!(server(&fvd, &bridge).0, pid2);
    // xe's way of changing a key: remove it (unmanaged), add it again (managed).
    c.ok("network.remove_from_other_config", &[s(&net), s("ip_end")]);
    assert_eq!(dhcp_server(&fvd.data, &bridge), None);
    assert!(!alive(pid2));
    c.ok(
        "network.add_to_other_config",
        &[s(&net), s("ip_end"), s("10.55.0.70")],
    );
    let (pid3, _) = server(&fvd, &bridge);

    // A restarted fvd adopts the server it left running.
    let data = fvd.data.clone();
    let fvd_pid = fvd.pid();
    fvd.kill9();
    assert!(alive(pid3), "the server outlives a crash of fvd");
    let fvd = Fvd::start(&data);
    let c = fvd.root();
    let (pid4, _) = server(&fvd, &bridge);
    // (The test gives every fvd its own network namespace, so the new one makes its own.)
    assert!(pid4 == pid3 || !alive(pid3), "{fvd_pid}: {pid3} {pid4}");

    // Destroyed: no server. A clean stop of fvd stops the others.
    c.ok("network.destroy", &[s(&net)]);
    assert_eq!(dhcp_server(&fvd.data, &bridge), None);
    assert!(!alive(pid4));
    let other = c.ok(
        "network.create",
        &[record(&[
            ("name_label", s("managed too")),
            ("other_config", managed_config("10.56.0.1", "10.56.0.9")),
        ])],
    );
    let other_bridge = bridge_of(&c, other.as_str().unwrap());
    let (pid5, _) = server(&fvd, &other_bridge);
    fvd.terminate();
    assert!(!alive(pid5), "fvd's stop ends its DHCP servers");
    assert_eq!(dhcp_server(&data, &other_bridge), None);
}
