//! The daemon's logs and systemd hooks, end to end in network namespaces (root only; issue 10
//! items 4 and 5): the journal's native protocol with the reject warning that names the key
//! and the attacker, and the watchdog pinged from the worker's loop.
//!
//! The journal is faked without touching the host: the daemon runs in a private mount
//! namespace (`unshare -m`) where a tmpfs covers /run/systemd and the lab's directory is bound
//! at /run/systemd/journal, so /run/systemd/journal/socket is a socket this test binds;
//! JOURNAL_STREAM is set to stderr's own DEV:INODE, as systemd sets it.

use crate::lab::{Lab, EVIL_MAC};
use ipsyncd::server::Announce;
use ipsyncd::shell::capture::Transmitter;
use ipsyncd::shell::journal::parse_entry;
use ipsyncd::shell::netlink::Netlink;
use ipsyncd::wire::sig::Signer;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `ipsyncd run` for the lab's terminal with `env` and `wrapper` (a shell snippet that
/// ends by exec'ing "$@"), stderr to `log`.
fn run_term(lab: &mut Lab, env: &[(&str, String)], wrapper: &str, log: &str) {
    let term_cfg = lab.dir.join("term.toml").display().to_string();
    let out = std::fs::File::create(lab.dir.join(log)).unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.ns("term"), "sh", "-c", wrapper, "sh"])
        .args([env!("CARGO_BIN_EXE_ipsyncd"), "run", "--config", &term_cfg])
        .env("RUST_LOG", "info,ipsyncd::decision=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out);
    for (k, v) in env {
        c.env(k, v);
    }
    lab.children.push(c.spawn().unwrap());
}

fn field(e: &[(String, Vec<u8>)], k: &str) -> Option<String> {
    e.iter().find(|(n, _)| n == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

#[test]
#[ignore = "needs root"]
fn r10_journal_gets_the_reject_warning_with_key_and_attacker() {
    let mut lab = Lab::require("jl");
    lab.write_configs();
    let sock_dir = lab.dir.join("journal");
    std::fs::create_dir_all(&sock_dir).unwrap();
    let journal = UnixDatagram::bind(sock_dir.join("socket")).unwrap();
    journal.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let wrapper = format!(
        "mount -t tmpfs none /run/systemd 2>/dev/null || mount -t tmpfs none /run; mkdir -p /run/systemd/journal && \
         mount --bind '{}' /run/systemd/journal && JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) && \
         export JOURNAL_STREAM && exec \"$@\"",
        sock_dir.display()
    );
    // The mounts are the private namespace's own: `unshare -m` with private propagation.
    let wrapper = format!("exec unshare -m --propagation private sh -c {} sh \"$@\"", shell_quote(&wrapper));
    run_term(&mut lab, &[], &wrapper, "run.log");
    let mut entries = Vec::new();
    let mut buf = vec![0u8; 65536];
    // Started: "following on term0" is logged once the capture socket is open (the config
    // warning before it is not enough: a frame sent then finds no socket).
    let t0 = Instant::now();
    let following = |es: &Vec<Vec<(String, Vec<u8>)>>| {
        es.iter().any(|e| field(e, "MESSAGE").is_some_and(|m| m.starts_with("following on")))
    };
    while !following(&entries) && t0.elapsed() < Duration::from_secs(5) {
        if let Ok(n) = journal.recv(&mut buf) {
            entries.push(parse_entry(&buf[..n]).unwrap_or_default());
        }
    }
    assert!(following(&entries), "the start did not reach the journal socket: {entries:?}\n{}", lab.log("run.log"));
    lab.in_ns("attacker", || {
        let mut nl = Netlink::open().unwrap();
        let l = nl.link("att0").unwrap();
        let tx = Transmitter::open(l.index).unwrap();
        let wrong = Announce {
            key_id: 1,
            key: Signer::Hmac(&[7u8; 32]),
            sequence: 1 << 60,
            server_ip: Ipv4Addr::new(10, 77, 0, 66),
            server_mac: EVIL_MAC,
            previous_ip: None,
            server_name: None,
            service_port: None,
        };
        tx.send(&wrong.frame(47474)).unwrap();
    });
    let reject_id = ipsyncd::shell::log_lines::message_id(ipsyncd::engine::Verdict::Reject);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3)
        && !entries.iter().any(|e| {
            field(e, "PRIORITY").as_deref() == Some("4") && field(e, "MESSAGE_ID").as_deref() == Some(reject_id)
        })
    {
        if let Ok(n) = journal.recv(&mut buf) {
            entries.push(parse_entry(&buf[..n]).unwrap_or_default());
        }
    }
    let warning = entries
        .iter()
        .find(|e| field(e, "PRIORITY").as_deref() == Some("4") && field(e, "MESSAGE_ID").as_deref() == Some(reject_id));
    let Some(w) = warning else { panic!("no reject warning in the journal: {entries:?}\n{}", lab.log("run.log")) };
    let msg = field(w, "MESSAGE").unwrap_or_default();
    assert!(
        msg.starts_with(
            "rejected announce: HMAC or signature check failed for key 1 from 02:00:00:00:00:66/10.77.0.66"
        ),
        "{msg}"
    );
    assert_eq!(field(w, "IPSYNC_VERDICT").as_deref(), Some("reject"));
    assert_eq!(field(w, "IPSYNC_REASON").as_deref(), Some("bad_mac"));
    assert_eq!(field(w, "IPSYNC_INPUT").as_deref(), Some("announce"));
    assert_eq!(field(w, "SERVER_IP").as_deref(), Some("10.77.0.66"));
    let line = entries
        .iter()
        .find(|e| field(e, "PRIORITY").as_deref() == Some("7") && field(e, "MESSAGE_ID").as_deref() == Some(reject_id));
    assert!(
        line.is_some_and(|e| field(e, "MESSAGE").unwrap_or_default().contains("\"reason\":\"bad_mac\"")),
        "{entries:?}"
    );
    assert!(
        !lab.log("run.log").contains("rejected announce"),
        "the warning went to stderr too:\n{}",
        lab.log("run.log")
    );
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The notify datagrams that arrive within `for_` (or until `stop` says so).
fn notifications(sock: &UnixDatagram, for_: Duration) -> Vec<(Duration, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < for_ {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((t0.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    got
}

#[test]
#[ignore = "needs root"]
fn r10_watchdog_pings_from_the_worker_only_when_asked() {
    let mut lab = Lab::require("wd");
    lab.write_configs();
    for (watchdog, log) in [(true, "run-wd.log"), (false, "run-nowd.log")] {
        let path = lab.dir.join(format!("notify-{watchdog}"));
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut env = vec![("NOTIFY_SOCKET", path.display().to_string())];
        if watchdog {
            env.push(("WATCHDOG_USEC", "400000".to_string()));
        }
        run_term(&mut lab, &env, "exec \"$@\"", log);
        let got = notifications(&sock, Duration::from_secs(3));
        let ready = got.iter().position(|(_, m)| m.lines().any(|l| l == "READY=1"));
        let Some(ready) = ready else { panic!("no READY=1: {got:?}\n{}", lab.log(log)) };
        let ready_at = got[ready].0;
        let pings = got[ready..]
            .iter()
            .filter(|(t, m)| *t <= ready_at + Duration::from_millis(1500) && m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
        if watchdog {
            assert!(pings >= 3, "{pings} WATCHDOG=1 within 1.5 s of READY=1: {got:?}\n{}", lab.log(log));
        } else {
            assert!(!got.iter().any(|(_, m)| m.contains("WATCHDOG")), "pinged without WATCHDOG_USEC: {got:?}");
        }
        lab.kill_all();
    }
}
