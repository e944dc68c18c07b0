//! End to end in network namespaces (root only): `srv`, `term` and `attacker` on a bridge that
//! lives in its own namespace. `ipsyncd serve` and `ipsyncd run` are the real binaries; frames
//! from the attacker are crafted with the library and sent with AF_PACKET from its namespace.
//! Everything (processes, namespaces) is removed when the `Lab` drops, even on a failed assert.

use crate::lab::{within, Lab, EVIL_MAC, SRV_MAC, TERM_MAC};
use ipsyncd::server::Announce;
use ipsyncd::shell::capture::Transmitter;
use ipsyncd::shell::netlink::Netlink;
use ipsyncd::wire::sig::Signer;
use ipsyncd::wire::{arp, frame, Mac};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

const KEY: [u8; 32] = [0x42; 32];
const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
const TERM_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

#[test]
#[ignore = "needs root"]
fn follow_mode_end_to_end() {
    let mut lab = Lab::require("f");
    lab.write_configs();
    let srv_cfg = lab.dir.join("srv.toml").display().to_string();
    let term_cfg = lab.dir.join("term.toml").display().to_string();
    // Start-up: the configured server is dialled at once and answers.
    lab.start_follow();

    // 1. The server announces itself: same address, and now we know its MAC: pinned.
    lab.announce(A, None);
    assert!(
        within(Duration::from_secs(2), || lab.pinned(A, SRV_MAC)).is_some(),
        "A not pinned\n{}",
        lab.log("run.log")
    );

    // 2. The server moves A → B; `serve` moves with it.
    lab.readdress_server(A, B);
    lab.announce(B, Some(A));
    assert!(
        within(Duration::from_secs(2), || lab.pinned(B, SRV_MAC)).is_some(),
        "B not pinned\n{}",
        lab.log("run.log")
    );
    assert!(within(Duration::from_secs(2), || lab.term_neigh(A).is_none()).is_some(), "A's pin not removed");
    assert!(within(Duration::from_secs(3), || lab.log("hook.log").matches("SERVER_CONNECTED").count() >= 2).is_some());
    let hooks = lab.log("hook.log");
    let changed = hooks.find("SERVER_CHANGED 10.77.0.1 10.77.0.20").expect("SERVER_CHANGED hook");
    assert!(hooks[changed..].contains("SERVER_CONNECTED"), "{hooks}");
    let st = lab.status();
    assert_eq!(st["server"]["ip"], "10.77.0.20", "{st}");
    assert_eq!(st["pin"]["in_kernel"], true, "{st}");

    // 3. The same address again: nothing changes.
    lab.announce(B, Some(A));
    std::thread::sleep(Duration::from_millis(200));
    assert!(lab.pinned(B, SRV_MAC));
    assert_eq!(lab.log("hook.log").matches("SERVER_CHANGED").count(), 1);

    // 4. The server announces the terminal's own address: alarm, no change.
    assert!(lab.sh("srv", &["ip", "addr", "add", "10.77.0.10/32", "dev", "srv0"]));
    lab.announce(TERM_IP, Some(B));
    assert!(within(Duration::from_secs(2), || lab.log("hook.log").contains("CONFLICT")).is_some());
    assert!(lab.pinned(B, SRV_MAC));
    assert!(lab.sh("srv", &["ip", "addr", "del", "10.77.0.10/32", "dev", "srv0"]));

    // 5. Forged, replayed and wrong-key announcements from the attacker, 1,000 of each.
    // (`apply` also counts the planned move's completing WELCOME and ARP pins: compare, not count.)
    let applies_before = lab.status()["counters"]["apply"].as_u64();
    let valid_seq =
        std::fs::read_to_string(lab.dir.join("srv-state/announce.seq")).unwrap().trim().parse::<u64>().unwrap();
    lab.in_ns("attacker", move || {
        let mut nl = Netlink::open().unwrap();
        let l = nl.link("att0").unwrap();
        let tx = Transmitter::open(l.index).unwrap();
        let evil = Ipv4Addr::new(10, 77, 0, 66);
        for i in 0..1000u64 {
            let forged = Announce {
                key_id: 1,
                key: Signer::Hmac(&KEY),
                sequence: valid_seq + 10 + i,
                server_ip: evil,
                server_mac: EVIL_MAC,
                previous_ip: None,
                server_name: None,
                service_port: None,
            };
            let mut f = forged.frame(47474);
            let n = f.len();
            f[n - 1] ^= 0xff; // HMAC broken
            let f = fix_udp(f);
            tx.send(&f).unwrap();
            let replayed = Announce { sequence: valid_seq, ..forged.clone() };
            tx.send(&replayed.frame(47474)).unwrap();
            let wrong = Announce { key: Signer::Hmac(&[7u8; 32]), sequence: valid_seq + 5000 + i, ..forged.clone() };
            tx.send(&wrong.frame(47474)).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(1200));
    lab.announce(B, Some(A)); // one more event so the status file catches up
    std::thread::sleep(Duration::from_millis(300));
    assert!(lab.pinned(B, SRV_MAC), "the pin moved under attack");
    let st = lab.status();
    assert_eq!(st["server"]["ip"], "10.77.0.20");
    let rejected: u64 =
        st["counters"]["reject"].as_object().map(|m| m.values().filter_map(|v| v.as_u64()).sum()).unwrap_or(0);
    let limited = st["dropped"]["rate_limited"].as_u64().unwrap_or(0);
    // Every frame that reached the daemon is either decided (rejected) or counted as rate-limited;
    // a burst this size also overflows socket buffers on the way, so not all 3,000 arrive.
    assert!(st["counters"]["reject"]["bad_mac"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(st["counters"]["reject"]["replayed"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(limited > 0 && rejected + limited >= 1000, "rejected {rejected} + rate-limited {limited}: {st}");
    assert_eq!(st["counters"]["apply"].as_u64(), applies_before, "an attacker frame was applied: {st}");

    // 6. ARP spoofing and gratuitous ARP for B: the kernel's entry never changes.
    lab.in_ns("attacker", || {
        let mut nl = Netlink::open().unwrap();
        let l = nl.link("att0").unwrap();
        let tx = Transmitter::open(l.index).unwrap();
        for _ in 0..500 {
            let reply =
                arp::Repr { operation: arp::Operation::Reply, sha: EVIL_MAC, spa: B, tha: TERM_MAC, tpa: TERM_IP };
            tx.send(&frame::emit_arp_frame(EVIL_MAC, TERM_MAC, &reply.to_bytes())).unwrap();
            tx.send(&frame::emit_arp_frame(EVIL_MAC, Mac::BROADCAST, &arp::Repr::announcement(EVIL_MAC, B).to_bytes()))
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(lab.pinned(B, SRV_MAC), "ARP spoofing overwrote the pin");

    // 7. The pin is deleted, then the link flaps: re-pinned within 100 ms each time.
    assert!(lab.sh("term", &["ip", "neigh", "del", "10.77.0.20", "dev", "term0"]));
    let t = within(Duration::from_millis(100), || lab.pinned(B, SRV_MAC));
    assert!(t.is_some(), "not re-pinned within 100 ms of ip neigh del");
    assert!(lab.sh("term", &["ip", "link", "set", "term0", "down"]));
    assert!(lab.sh("term", &["ip", "link", "set", "term0", "up"]));
    let t = within(Duration::from_millis(100), || lab.pinned(B, SRV_MAC));
    assert!(
        t.is_some(),
        "not re-pinned within 100 ms of link up: {:?}\n{}",
        lab.term_neigh(B),
        lab.log("run.log").lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );

    // 8. SIGHUP reloads the keys: a key the daemon did not know is refused before, accepted after.
    let k2 = "0x2222222222222222222222222222222222222222222222222222222222222222";
    std::fs::write(
        lab.dir.join("srv2.toml"),
        format!("state_dir = \"{}/srv-state\"\n[[key]]\nid = 2\nsecret = \"{k2}\"\n", lab.dir.display()),
    )
    .unwrap();
    let announce_k2 = |lab: &Lab| {
        let cfg = lab.dir.join("srv2.toml").display().to_string();
        assert!(lab.ipsyncd("srv", &["announce", "--interface", "srv0", "--address", "10.77.0.20", "--config", &cfg]));
        std::thread::sleep(Duration::from_millis(1100)); // let the status file's once-a-second counters catch up
        lab.announce(B, Some(A));
        std::thread::sleep(Duration::from_millis(200));
        lab.status()
    };
    let st = announce_k2(&lab);
    assert_eq!(st["counters"]["reject"]["unknown_key"], 1, "{st}");
    let term_toml = lab.dir.join("term.toml");
    let mut cfg = std::fs::read_to_string(&term_toml).unwrap();
    cfg.push_str(&format!("\n[[key]]\nid = 2\nsecret = \"{k2}\"\n"));
    std::fs::write(&term_toml, cfg).unwrap();
    let run_pid = lab.children[1].id() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run_pid), nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let st = announce_k2(&lab);
    assert_eq!(st["counters"]["reject"]["unknown_key"], 1, "accepted only after the reload: {st}");
    assert!(lab.pinned(B, SRV_MAC));

    // 9. kill -9 in the middle of an apply (a move to C, the daemon killed right after the
    //    announcement left): the state file is the old or the new state, never torn, and after a
    //    restart the pin of whichever server it names is back.
    let c = Ipv4Addr::new(10, 77, 0, 30);
    assert!(lab.sh("srv", &["ip", "addr", "add", "10.77.0.30/24", "dev", "srv0"]));
    let run_pid = lab.children[1].id() as i32;
    lab.announce(c, Some(B));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    lab.kill_all();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir.join("term-state/state.json")).unwrap())
            .expect("state is whole JSON, never torn");
    let server = state["server"]["ip"].as_str().unwrap().to_string();
    assert!(server == "10.77.0.20" || server == "10.77.0.30", "{state}");
    let server: Ipv4Addr = server.parse().unwrap();
    let _ = lab.sh("term", &["ip", "neigh", "flush", "dev", "term0", "nud", "permanent"]);
    lab.spawn("srv", &["serve", "--config", &srv_cfg], "serve2.log");
    lab.spawn("term", &["run", "--config", &term_cfg], "run2.log");
    assert!(within(Duration::from_secs(3), || lab.pinned(server, SRV_MAC)).is_some(), "pin not restored after restart");
}

/// Recomputes the UDP checksum after a payload byte was changed.
pub fn fix_udp(mut f: Vec<u8>) -> Vec<u8> {
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    f[40..42].fill(0);
    let c = frame::udp_checksum(&f[34..], src, dst);
    f[40..42].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
#[ignore = "needs root"]
fn runs_as_nobody_with_only_two_capabilities() {
    let mut lab = Lab::require("c");
    lab.write_configs();
    let srv_cfg = lab.dir.join("srv.toml").display().to_string();
    let term_cfg = lab.dir.join("term.toml").display().to_string();
    // The state directory belongs to the unprivileged user, as StateDirectory= would arrange.
    assert!(Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(lab.dir.join("term-state"))
        .status()
        .unwrap()
        .success());
    let _ = Command::new("chmod").args(["o+rx"]).arg(&lab.dir).status();
    lab.spawn("srv", &["serve", "--config", &srv_cfg], "serve.log");
    let out = std::fs::File::create(lab.dir.join("run.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("term"), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            "--inh-caps=-all,+net_raw,+net_admin",
            "--ambient-caps=-all,+net_raw,+net_admin",
            "--bounding-set=-all,+net_raw,+net_admin",
        ])
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_ipsyncd"))
        .args(["run", "--config", &term_cfg])
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = child.id();
    lab.children.push(child);
    let status_file = lab.dir.join("term-state/status.json");
    assert!(within(Duration::from_secs(3), || status_file.exists()).is_some(), "{}", lab.log("run.log"));
    lab.announce(A, None);
    assert!(
        within(Duration::from_secs(3), || lab.pinned(A, SRV_MAC)).is_some(),
        "not pinned as nobody:\n{}",
        lab.log("run.log")
    );
    // `ip netns exec` execs setpriv, which execs ipsyncd: same PID.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).unwrap_or("").split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(field("Uid:"), "65534", "{status}");
    // CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13.
    assert_eq!(u64::from_str_radix(&field("CapEff:"), 16).unwrap(), (1 << 12) | (1 << 13), "{status}");
    assert_eq!(u64::from_str_radix(&field("CapBnd:"), 16).unwrap(), (1 << 12) | (1 << 13), "{status}");
}

#[test]
#[ignore = "needs root"]
fn announce_watch_follows_an_address_change_on_the_server() {
    let mut lab = Lab::require("w");
    lab.write_configs();
    let srv_cfg = lab.dir.join("srv.toml").display().to_string();
    lab.start_follow();
    lab.spawn("srv", &["announce", "--interface", "srv0", "--watch", "--config", &srv_cfg], "watch.log");
    assert!(within(Duration::from_secs(3), || lab.pinned(A, SRV_MAC)).is_some(), "{}", lab.log("watch.log"));
    // The operator re-addresses the server; nobody runs announce by hand.
    let d = Ipv4Addr::new(10, 77, 0, 40);
    lab.readdress_server(A, d);
    assert!(
        within(Duration::from_secs(3), || lab.pinned(d, SRV_MAC)).is_some(),
        "{}\n{}",
        lab.log("watch.log"),
        lab.log("run.log")
    );
    assert!(within(Duration::from_secs(3), || lab.log("hook.log").contains("SERVER_CHANGED 10.77.0.1 10.77.0.40"))
        .is_some());
}

#[test]
#[ignore = "needs root"]
fn follow_mode_runs_renew_command_on_an_authenticated_forcerenew_only() {
    let mut lab = Lab::require("r");
    lab.write_configs();
    let d = lab.dir.clone();
    let term_toml = d.join("term.toml");
    let mut cfg = std::fs::read_to_string(&term_toml).unwrap();
    cfg = cfg.replacen(
        "hook_timeout_ms",
        &format!("renew_command = \"echo renewed >> {}/renew.log\"\nhook_timeout_ms", d.display()),
        1,
    );
    cfg.push_str("\n[[dhcp_key]]\nid = 1\nsecret = \"dhcpsecret-at-least-16\"\n");
    std::fs::write(&term_toml, cfg).unwrap();
    for (name, secret) in [("fr-right", "dhcpsecret-at-least-16"), ("fr-wrong", "not-the-right-secret")] {
        std::fs::create_dir_all(d.join(name)).unwrap();
        std::fs::write(
            d.join(format!("{name}.toml")),
            format!("state_dir = \"{}/{name}\"\n[[dhcp_key]]\nid = 1\nsecret = \"{secret}\"\n[forcerenew]\nauth = \"delayed\"\nkey_id = 1\n", d.display()),
        )
        .unwrap();
    }
    lab.start_follow();
    let send = |name: &str| {
        let cfg = d.join(format!("{name}.toml")).display().to_string();
        let args = [
            "forcerenew",
            "--interface",
            "srv0",
            "--client",
            "10.77.0.10",
            "--client-mac",
            "02:00:00:00:00:10",
            "--config",
            &cfg,
            // One frame each: the counters below count what one FORCERENEW does.
            "--retries",
            "0",
        ];
        assert!(lab.ipsyncd("srv", &args));
    };
    send("fr-wrong");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.log("renew.log"), "", "renew_command ran for a FORCERENEW signed with the wrong key");
    send("fr-right");
    assert!(within(Duration::from_secs(3), || lab.log("renew.log") == "renewed\n").is_some(), "{}", lab.log("run.log"));
    assert!(within(Duration::from_secs(2), || lab.log("hook.log").contains("FORCERENEW")).is_some());
    let st = lab.status();
    assert_eq!(st["counters"]["renew"], 1, "{st}");
    assert_eq!(st["counters"]["reject"]["bad_mac"], 1, "{st}");
}
