//! End to end in network namespaces (root only), issue 6: the connection channel's policy lives in
//! the engine and the real daemon shows it: a server that is down raises SERVER_UNREACHABLE once
//! and is connected when `serve` comes up; a planned move to an address where no `serve` answers
//! leaves the terminal on A with the alarm, and completes once `serve` runs on B; a genuine move
//! during a flood of spoofed ARP from random MACs still fires its SERVER_CHANGED hook.

use crate::lab::{poll, within, Lab, SRV_MAC};
use ipsyncd::shell::capture::Transmitter;
use ipsyncd::shell::netlink::Netlink;
use ipsyncd::wire::{arp, frame, Mac};
use std::net::Ipv4Addr;
use std::time::Duration;

const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
const TERM_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

fn hooks(lab: &Lab, reason: &str) -> Vec<String> {
    lab.log("hook.log").lines().filter(|l| l.starts_with(reason)).map(str::to_string).collect()
}

fn serve_on(lab: &mut Lab, ip: Ipv4Addr, log: &str) {
    let cfg = lab.dir.join("srv.toml").display().to_string();
    let listen = format!("{ip}:47474");
    lab.spawn("srv", &["serve", "--config", &cfg, "--listen", &listen], log);
}

#[test]
#[ignore = "needs root"]
fn r6_server_down_raises_unreachable_once_then_connects_when_serve_comes_up() {
    let mut lab = Lab::require("u");
    lab.write_configs();
    let term_cfg = lab.dir.join("term.toml").display().to_string();
    lab.spawn("term", &["run", "--config", &term_cfg], "run.log");
    // connect_timeout_ms = 500 and a refused port: three failures take about 1.5 s.
    assert!(
        within(Duration::from_secs(6), || !hooks(&lab, "SERVER_UNREACHABLE").is_empty()).is_some(),
        "no SERVER_UNREACHABLE\n{}",
        lab.log("run.log")
    );
    // Attempts go on at the capped backoff, but the outage is reported once.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(hooks(&lab, "SERVER_UNREACHABLE").len(), 1, "{}", lab.log("hook.log"));
    assert!(hooks(&lab, "SERVER_CONNECTED").is_empty());
    serve_on(&mut lab, A, "serve.log");
    assert!(
        within(Duration::from_secs(8), || !hooks(&lab, "SERVER_CONNECTED").is_empty()).is_some(),
        "never connected after serve came up\n{}",
        lab.log("run.log")
    );
    assert_eq!(hooks(&lab, "SERVER_UNREACHABLE").len(), 1);
    // The hook runs in the applier; the status file follows with the worker's next write.
    assert!(
        within(Duration::from_secs(2), || lab.status()["server"]["connected"] == true).is_some(),
        "{}",
        lab.status()
    );
}

#[test]
#[ignore = "needs root"]
fn r6_planned_move_needs_bs_welcome() {
    let mut lab = Lab::require("p");
    lab.write_configs();
    serve_on(&mut lab, A, "serve-a.log");
    let term_cfg = lab.dir.join("term.toml").display().to_string();
    lab.spawn("term", &["run", "--config", &term_cfg], "run.log");
    assert!(within(Duration::from_secs(5), || !hooks(&lab, "SERVER_CONNECTED").is_empty()).is_some());
    lab.announce(A, None);
    assert!(within(Duration::from_secs(2), || lab.pinned(A, SRV_MAC)).is_some(), "A not pinned");

    // B exists on the server host but no serve answers there: the move is abandoned.
    assert!(lab.sh("srv", &["ip", "addr", "add", "10.77.0.20/24", "dev", "srv0"]));
    lab.announce(B, Some(A));
    assert!(
        within(Duration::from_secs(8), || !hooks(&lab, "SERVER_UNREACHABLE").is_empty()).is_some(),
        "the failed move raised no alarm\n{}",
        lab.log("run.log")
    );
    let unreachable = hooks(&lab, "SERVER_UNREACHABLE");
    assert!(unreachable[0].contains("10.77.0.20"), "NEW_SERVER_IP is B: {unreachable:?}");
    assert!(lab.log("run.log").contains("move_failed"), "{}", lab.log("run.log"));
    assert!(hooks(&lab, "SERVER_CHANGED").is_empty(), "{}", lab.log("hook.log"));
    assert!(lab.pinned(A, SRV_MAC), "A's pin is kept");
    assert!(within(Duration::from_secs(2), || lab.term_neigh(B).is_none()).is_some(), "B's pin is removed");
    assert_eq!(lab.status()["server"]["ip"], "10.77.0.1");

    // The same move with serve on B completes on B's WELCOME.
    serve_on(&mut lab, B, "serve-b.log");
    std::thread::sleep(Duration::from_millis(300));
    lab.announce(B, Some(A));
    assert!(
        within(Duration::from_secs(5), || hooks(&lab, "SERVER_CHANGED")
            .iter()
            .any(|l| l.contains("10.77.0.1 10.77.0.20")))
        .is_some(),
        "move not completed\n{}",
        lab.log("run.log")
    );
    assert!(within(Duration::from_secs(2), || lab.term_neigh(A).is_none()).is_some(), "A unpinned after the move");
    assert!(lab.pinned(B, SRV_MAC));
    assert_eq!(lab.status()["server"]["ip"], "10.77.0.20");
    // The hooks run one after another on their own thread: SERVER_CONNECTED may still be
    // starting when SERVER_CHANGED is already in the log.
    let connected_after_changed = |log: &str| {
        let changed = log.find("SERVER_CHANGED 10.77.0.1 10.77.0.20").unwrap_or(usize::MAX);
        log[changed.min(log.len())..].contains("SERVER_CONNECTED")
    };
    assert!(
        poll(Duration::from_secs(2), || connected_after_changed(&lab.log("hook.log"))),
        "CHANGED precedes CONNECTED: {}",
        lab.log("hook.log")
    );
}

#[test]
#[ignore = "needs root"]
fn r6_genuine_move_during_random_mac_arp_flood_fires_server_changed() {
    let mut lab = Lab::require("a");
    lab.write_configs();
    lab.start_follow();
    lab.announce(A, None);
    assert!(within(Duration::from_secs(2), || lab.pinned(A, SRV_MAC)).is_some(), "A not pinned");
    assert!(lab.sh("srv", &["ip", "addr", "add", "10.77.0.20/24", "dev", "srv0"]));
    // 3,000 spoofed replies for A from random MACs over about 1.5 s, bounded in count and time.
    let flood = {
        let ns = lab.ns("attacker");
        std::thread::spawn(move || {
            crate::lab::in_netns(&ns, || {
                let mut nl = Netlink::open().unwrap();
                let l = nl.link("att0").unwrap();
                let tx = Transmitter::open(l.index).unwrap();
                let term = crate::lab::TERM_MAC;
                for i in 0..3000u32 {
                    let b = i.to_be_bytes();
                    let evil = Mac([2, 0xee, b[0], b[1], b[2], b[3]]);
                    let r = arp::Repr { operation: arp::Operation::Reply, sha: evil, spa: A, tha: term, tpa: TERM_IP };
                    let _ = tx.send(&frame::emit_arp_frame(evil, term, &r.to_bytes()));
                    if i % 100 == 0 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    lab.announce(B, Some(A));
    let _ = flood.join();
    assert!(
        within(Duration::from_secs(5), || hooks(&lab, "SERVER_CHANGED")
            .iter()
            .any(|l| l.contains("10.77.0.1 10.77.0.20")))
        .is_some(),
        "the genuine move's SERVER_CHANGED hook did not run\n{}",
        lab.log("hook.log")
    );
    assert!(lab.pinned(B, SRV_MAC));
    assert!(hooks(&lab, "CONFLICT").len() <= 2, "alarms are coalesced: {}", lab.log("hook.log"));
}
