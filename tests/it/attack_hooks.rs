//! Attacks through the integrator's hook (issue 8 items 6 and 7, DESIGN §9): what a hook can
//! learn from the daemon's environment, what it can leave running past its timeout, which
//! privileges it holds, and what a hook directory runs. The shell's [`Hooks`] is driven
//! directly with scripts in a temp directory; no namespaces needed.

use crate::common::tmpdir;
use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded};
use ipsyncd::engine::{Action, Engine, EngineConfig, HookEnv, HookReason, Mode, ServerName, State};
use ipsyncd::server::Announce;
use ipsyncd::shell::hooks::{parse_caps, Hooks, SAFE_PATH};
use ipsyncd::wire::frame::Checksum;
use ipsyncd::wire::Mac;
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Waits for `path` to appear (scripts write a temp file and rename it, so it is whole).
fn wait_file(path: &Path, limit: Duration) -> String {
    let t = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            return s;
        }
        assert!(t.elapsed() < limit, "{} not written within {limit:?}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hooks(hook: PathBuf, timeout_ms: u64) -> Hooks {
    Hooks::new(Some(hook), None, "eth9".into(), Duration::from_millis(timeout_ms))
}

fn env() -> HookEnv {
    HookEnv {
        old_server_ip: Some(Ipv4Addr::new(10, 77, 0, 1)),
        new_server_ip: Some(Ipv4Addr::new(10, 77, 0, 20)),
        server_mac: Some(Mac([2, 0, 0, 0, 0, 0x20])),
        own_ip: Some(Ipv4Addr::new(10, 77, 0, 10)),
        server_name: ServerName::new("vdi-b"),
        ..HookEnv::default()
    }
}

/// A secret in the daemon's environment (a token, a proxy password) never reaches the hook:
/// it sees exactly DESIGN §9's variables and the fixed PATH.
#[test]
fn attack_hook_environment_is_only_the_listed_variables_and_path() {
    let d = tmpdir("attack-hook-env");
    let secret = format!("IPSYNCD_TEST_SECRET_{}", std::process::id());
    // The test binary plays the daemon; cargo's own variables (CARGO_*, HOME…) must not leak
    // through either. Set once, under a name nothing else reads.
    std::env::set_var(&secret, "hunter2");
    let out = d.join("environ");
    script(&d.join("hook"), &format!("cat /proc/$$/environ > {0}.tmp && mv {0}.tmp {0}", out.display()));
    hooks(d.join("hook"), 2000).fire(HookReason::ServerChanged, &env());
    let raw = wait_file(&out, Duration::from_secs(3));
    let vars: BTreeMap<&str, &str> =
        raw.split('\0').filter(|s| !s.is_empty()).filter_map(|kv| kv.split_once('=')).collect();
    let listed = [
        "REASON",
        "INTERFACE",
        "OLD_SERVER_IP",
        "NEW_SERVER_IP",
        "SERVER_MAC",
        "SERVICE_PORT",
        "OWN_IP",
        "OLD_OWN_IP",
        "CONFLICT_KIND",
        "SERVER_NAME",
        "PATH",
    ];
    let mut want: Vec<&str> = listed.to_vec();
    want.sort_unstable();
    assert_eq!(vars.keys().copied().collect::<Vec<_>>(), want, "{raw:?}");
    assert!(!raw.contains("hunter2") && !raw.contains(&secret));
    assert_eq!(vars["PATH"], SAFE_PATH);
    assert_eq!(vars["REASON"], "SERVER_CHANGED");
    assert_eq!(vars["INTERFACE"], "eth9");
    assert_eq!(vars["NEW_SERVER_IP"], "10.77.0.20");
    assert_eq!(vars["SERVER_MAC"], "02:00:00:00:00:20");
    assert_eq!(vars["SERVER_NAME"], "vdi-b");
    assert_eq!(vars["CONFLICT_KIND"], "");
    std::env::remove_var(&secret);
    fs::remove_dir_all(&d).unwrap();
}

/// The name a hook sees comes from the authenticated ANNOUNCE; one with a control character
/// (a newline would start a new key in a viewer config the hook writes) is not passed on.
#[test]
fn attack_server_name_with_control_characters_never_reaches_the_hook() {
    const ME: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
    let key = [0x42u8; 32];
    let mut cfg = EngineConfig::new(Mode::Follow, ME);
    cfg.address = Some("10.77.0.10/24".parse().unwrap());
    cfg.keys.insert(1, ipsyncd::wire::sig::VerifyKey::Hmac(key.to_vec()));
    cfg.max_age_s = 0;
    let mut e = Engine::new(cfg, State::default(), 1);
    let ctx = DecodeContext { mac: ME, port: 47474, server_option: 224 };
    let mut names = Vec::new();
    for (seq, name, last) in [(1, "vdi-b", 20), (2, "x\nHOST=evil.example", 21), (3, "bell\u{7}", 22)] {
        let frame = Announce {
            key_id: 1,
            key: ipsyncd::wire::sig::Signer::Hmac(&key),
            sequence: seq,
            server_ip: Ipv4Addr::new(10, 77, 0, last),
            server_mac: Mac([2, 0, 0, 0, 0, last]),
            previous_ip: None,
            server_name: Some(name),
            service_port: None,
        }
        .frame(47474);
        let Decoded::Inbound(i) = decode_frame(Some(seq), &frame, Checksum::Verify, &ctx) else { panic!("decode") };
        e.handle_frame(ipsyncd::engine::Instant::from_secs(seq), &i);
        while let Some(a) = e.poll_action() {
            if let Action::Hook { reason: HookReason::ServerChanged, env } = a {
                names.push(env.server_name.map(|n| n.as_str().to_string()));
            }
        }
    }
    assert_eq!(names, [Some("vdi-b".to_string()), None, None], "every move applies; only clean names pass");
}

fn alive(pid: i32) -> bool {
    // A zombie is dead: killed, waiting for whoever inherited it to reap it.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Before, the timeout killed the hook's own process only: a `sleep 1000 &` it started lived
/// on. Now the whole process group dies at the timeout.
#[test]
fn attack_hook_children_die_with_it_at_the_timeout() {
    let d = tmpdir("attack-hook-group");
    let pids = d.join("pids");
    script(&d.join("hook"), &format!("sleep 1000 &\necho \"$$ $!\" > {0}.tmp && mv {0}.tmp {0}\nwait", pids.display()));
    let started = Instant::now();
    hooks(d.join("hook"), 300).fire(HookReason::ServerChanged, &env());
    let line = wait_file(&pids, Duration::from_secs(3));
    let pids: Vec<i32> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    let t = Instant::now();
    while pids.iter().any(|&p| alive(p)) && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let survivors: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &survivors {
        // SAFETY: plain kill(2); cleaning up after a failed assertion.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert!(survivors.is_empty(), "the hook (pid {}) or its child (pid {}) outlived the timeout", pids[0], pids[1]);
    assert!(started.elapsed() >= Duration::from_millis(300), "killed before its timeout");
    fs::remove_dir_all(&d).unwrap();
}

/// Before, a root daemon's hook had every capability. Now it holds none, its bounding set is
/// empty when the daemon could empty it, and no_new_privs keeps setuid binaries from giving any
/// back. Read from the hook's own /proc/self/status.
#[test]
fn attack_root_hook_holds_no_capabilities() {
    let d = tmpdir("attack-hook-caps");
    let out = d.join("status");
    script(&d.join("hook"), &format!("cat /proc/$$/status > {0}.tmp && mv {0}.tmp {0}", out.display()));
    hooks(d.join("hook"), 2000).fire(HookReason::ServerChanged, &env());
    let status = wait_file(&out, Duration::from_secs(3));
    let caps = parse_caps(&status).expect("Cap* lines");
    let ours = parse_caps(&fs::read_to_string("/proc/self/status").unwrap()).unwrap();
    if ours.effective == 0 {
        eprintln!("note: this test runs without capabilities, so it shows little; run it as root");
    }
    assert_eq!((caps.effective, caps.permitted, caps.inheritable, caps.ambient), (0, 0, 0, 0), "{status}");
    // CAP_SETPCAP (8) is what lets the daemon empty the bounding set.
    if ours.effective & (1 << 8) != 0 {
        assert_eq!(caps.bounding, 0, "{status}");
    }
    assert!(status.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "{status}");
    fs::remove_dir_all(&d).unwrap();
}

/// `hook` as a directory: its executables run in byte order of their names, each with its own
/// timeout (one that hangs is killed and the next still runs); dotfiles, editor backups,
/// packaging leftovers, non-executables and subdirectories do not run.
#[test]
fn attack_hook_directory_runs_only_its_executables_in_name_order() {
    let d = tmpdir("attack-hook-dir");
    let dir = d.join("hook.d");
    fs::create_dir(&dir).unwrap();
    let log = d.join("log");
    let append = |name: &str| format!("echo {name} >> {}", log.display());
    // Byte order: "C" (0x43) before "a" and "b"; a locale's order would put it last.
    script(&dir.join("b"), &append("b"));
    script(&dir.join("a"), &format!("{}\nsleep 1000", append("a")));
    script(&dir.join("C"), &append("C"));
    for skipped in [".hidden", "a~", "#a#", "b.dpkg-old", "b.dpkg-new", "c.rpmsave"] {
        script(&dir.join(skipped), &append(skipped));
    }
    fs::write(dir.join("not-executable"), format!("#!/bin/sh\n{}\n", append("not-executable"))).unwrap();
    fs::create_dir(dir.join("subdir")).unwrap();
    hooks(dir.clone(), 300).fire(HookReason::ServerChanged, &env());
    let t = Instant::now();
    while fs::read_to_string(&log).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", fs::read_to_string(&log));
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whatever else would run has had the time to.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(fs::read_to_string(&log).unwrap(), "C\na\nb\n");
    assert!(t.elapsed() >= Duration::from_millis(300), "b ran before a's timeout");
    fs::remove_dir_all(&d).unwrap();
}
