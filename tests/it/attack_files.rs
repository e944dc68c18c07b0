//! Attacks on the daemon's files (issue 8 items 5 and 7, DESIGN §10): links, FIFOs and huge
//! files planted in `state_dir`, corrupt states in quick succession, and a state directory that
//! cannot be written. Each test drives the shell's own API (state file, status file, sequence
//! counters, worker and applier threads) in a temp directory; no namespaces, no network.

use crate::common::tmpdir;
use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded};
use ipsyncd::engine::{Action, ActionResult, Decision, Engine, EngineConfig, HookReason, Input, Mode, State, Verdict};
use ipsyncd::server::sequence::take_persisted;
use ipsyncd::server::Announce;
use ipsyncd::shell::applier::Recorder;
use ipsyncd::shell::clock::SystemClock;
use ipsyncd::shell::state_file::{self, Loaded};
use ipsyncd::shell::status;
use ipsyncd::shell::worker::{run_applier, ApplierMsg, CaptureMsg, Timing, Worker};
use ipsyncd::wire::frame::Checksum;
use ipsyncd::wire::Mac;
use parking_lot::Mutex;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ME: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
const SRV_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
const KEY: [u8; 32] = [0x42; 32];

/// Valid state naming a server the attacker chose: what a followed link would load.
fn attacker_state() -> Vec<u8> {
    let s = State {
        server: Some(ipsyncd::engine::state::ServerState {
            ip: Ipv4Addr::new(198, 51, 100, 66),
            mac: Some(Mac([2, 0xba, 0xd, 0, 0, 1])),
            since: 1,
        }),
        ..State::default()
    };
    serde_json::to_vec(&s).unwrap()
}

fn is_link(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn temps(d: &Path) -> Vec<String> {
    fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// A symlink at every temp name an earlier version used, and at each target, is never written
/// through: the state, status and both sequence files land as regular files beside the links'
/// targets, which keep their bytes.
#[test]
fn attack_symlinks_planted_at_temp_and_target_names_are_not_followed() {
    let d = tmpdir("attack-links");
    let victim = d.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let names = ["state.json", "status.json", "announce.seq", "forcerenew.replay"];
    for n in names {
        for planted in [format!(".{n}.tmp"), format!("{n}.tmp"), n.to_string()] {
            symlink(&victim, d.join(planted)).unwrap();
        }
    }
    state_file::save(&d, &State::default()).unwrap();
    status::write(&d, &serde_json::json!({"planted": false})).unwrap();
    // The counter is not read through the link (that would start from 'precious'), nor written.
    let now_us = 1_800_000_000_000_000;
    assert_eq!(take_persisted(&d, "announce.seq", now_us).unwrap(), now_us);
    assert_eq!(take_persisted(&d, "forcerenew.replay", now_us).unwrap(), now_us);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    for n in names {
        assert!(!is_link(&d.join(n)), "{n} is still the planted link");
        assert!(is_link(&d.join(format!(".{n}.tmp"))), "the planted .{n}.tmp was removed or replaced");
    }
    assert_eq!(temps(&d).len(), 2 * names.len(), "only the planted links end in .tmp: {:?}", temps(&d));
    fs::remove_dir_all(&d).unwrap();
}

/// A link at state.json to valid state would make the daemon follow a server of the
/// attacker's choosing; it is moved aside unread instead, and `status` does not read it either.
#[test]
fn attack_symlinked_state_is_moved_aside_not_loaded() {
    let d = tmpdir("attack-state-link");
    let evil = d.join("evil.json");
    fs::write(&evil, attacker_state()).unwrap();
    symlink(&evil, state_file::path(&d)).unwrap();
    assert_eq!(state_file::read(&d).unwrap(), None);
    match state_file::load(&d, 1_800_000_000).unwrap() {
        Loaded::MovedAside { to, error } => {
            assert!(is_link(&to), "the link itself is what was moved");
            assert!(error.contains("symbolic link"), "{error}");
        }
        other => panic!("a planted link was loaded: {other:?}"),
    }
    assert_eq!(fs::read(&evil).unwrap(), attacker_state());
    // status.json likewise.
    symlink(&evil, d.join(status::FILE_NAME)).unwrap();
    assert!(status::read(&d).is_err());
    fs::remove_dir_all(&d).unwrap();
}

/// A FIFO at state.json would block a plain open for reading until someone writes; a 4 GiB
/// sparse file would be read whole. Both are moved aside at once.
#[test]
fn attack_fifo_or_huge_state_does_not_hang_or_fill_memory() {
    let d = tmpdir("attack-fifo");
    let p = std::ffi::CString::new(state_file::path(&d).into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o600) }, 0);
    let t = Instant::now();
    assert!(matches!(state_file::load(&d, 1).unwrap(), Loaded::MovedAside { .. }));
    fs::File::create(state_file::path(&d)).unwrap().set_len(4 << 30).unwrap();
    match state_file::load(&d, 1).unwrap() {
        Loaded::MovedAside { error, .. } => assert!(error.contains("bytes is more than"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    fs::remove_dir_all(&d).unwrap();
}

/// Two (three) corrupt states within one second each keep their moved-aside copy, and a link
/// planted at the first moved-aside name is neither replaced nor followed.
#[test]
fn attack_corrupt_states_in_one_second_keep_every_moved_aside_copy() {
    let d = tmpdir("attack-corrupt");
    let now = 1_800_000_000;
    let victim = d.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let first_name = d.join(format!("state.json.corrupt-{now}"));
    symlink(&victim, &first_name).unwrap();
    let mut moved = Vec::new();
    for body in [&b"{\"version\":"[..], b"\xff\xfe not json", b"[]"] {
        fs::write(state_file::path(&d), body).unwrap();
        match state_file::load(&d, now).unwrap() {
            Loaded::MovedAside { to, .. } => moved.push((to, body)),
            other => panic!("{other:?}"),
        }
    }
    for (to, body) in &moved {
        assert_eq!(&fs::read(to).unwrap()[..], *body, "{}", to.display());
    }
    let mut names: Vec<_> = moved.iter().map(|(p, _)| p.clone()).collect();
    names.dedup();
    assert_eq!(names.len(), 3);
    assert!(is_link(&first_name) && fs::read(&victim).unwrap() == b"precious");
    fs::remove_dir_all(&d).unwrap();
}

type Seen = Arc<Mutex<Vec<Decision>>>;

fn hooks_in(log: &Mutex<Vec<Action>>) -> Vec<HookReason> {
    log.lock()
        .iter()
        .filter_map(|a| match a {
            Action::Hook { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// DESIGN §10: with a state directory that cannot be written, a move is `alarm persist_failed`
/// and its hooks wait; once the directory can be written, the engine's retry puts the state
/// on disk and the hooks run, once each, in order. Live worker and applier threads, the
/// system clock, and the Recorder as applier (it persists into `state_dir`).
#[test]
fn attack_unwritable_state_dir_raises_persist_failed_and_holds_hooks_until_written() {
    let d = tmpdir("attack-persist");
    // Not there yet: every write fails with ENOENT, as a read-only or full disk would fail it
    // (root writes through any permission bits, so a mode would not stop this test).
    let state_dir = d.join("state");
    let mut cfg = EngineConfig::new(Mode::Follow, ME);
    cfg.address = Some("10.77.0.10/24".parse().unwrap());
    cfg.keys.insert(1, ipsyncd::wire::sig::VerifyKey::Hmac(KEY.to_vec()));
    cfg.max_age_s = 0;
    let engine = Engine::new(cfg, State::default(), 7);
    let log: Arc<Mutex<Vec<Action>>> = Arc::default();
    let recorder = Recorder { log: Some(Arc::clone(&log)), ..Recorder::new(Some(state_dir.clone())) };
    let (app_tx, app_rx) = crossbeam_channel::bounded::<ApplierMsg>(64);
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<ActionResult>();
    let applier = std::thread::spawn(move || run_applier(Box::new(recorder), app_rx, res_tx).1);
    let seen: Seen = Arc::default();
    let sink_seen = Arc::clone(&seen);
    let worker = Worker {
        engine,
        timing: Timing::Live(Box::new(SystemClock)),
        to_applier: app_tx,
        results: res_rx,
        sink: Box::new(move |d: &Decision, _| sink_seen.lock().push(d.clone())),
        status: None,
        control: crossbeam_channel::never(),
        frames: None,
        status_again: None,
        watchdog: None,
    };
    let (cap_tx, cap_rx) = crossbeam_channel::bounded::<CaptureMsg>(8);
    let worker = std::thread::spawn(move || worker.run(cap_rx));

    let frame = Announce {
        key_id: 1,
        key: ipsyncd::wire::sig::Signer::Hmac(&KEY),
        sequence: 1,
        server_ip: SRV_B,
        server_mac: Mac([2, 0, 0, 0, 0, 0x20]),
        previous_ip: None,
        server_name: Some("vdi-b"),
        service_port: None,
    }
    .frame(47474);
    let ctx = DecodeContext { mac: ME, port: 47474, server_option: 224 };
    let Decoded::Inbound(inbound) = decode_frame(Some(1), &frame, Checksum::Verify, &ctx) else { panic!("decode") };
    cap_tx.send(CaptureMsg::Frames(vec![(ipsyncd::engine::Instant::default(), inbound)])).unwrap();

    let persist_failed = |s: &Seen| {
        s.lock().iter().any(|d| {
            d.input == Input::Kernel
                && d.verdict == Verdict::Retry
                && d.reason == Some("persist_failed")
                && d.actions.iter().any(|a| matches!(a, Action::Alarm { kind: "persist_failed", .. }))
        })
    };
    wait_for("alarm persist_failed", Duration::from_secs(2), || persist_failed(&seen));
    // The move itself was carried out (pin, connect, set_server reached the applier) ...
    let ops: Vec<&str> = log.lock().iter().map(|a| a.op()).collect();
    assert!(ops.starts_with(&["pin_neighbour", "connect", "set_server"]), "{ops:?}");
    // ... and its WELCOME came back, but neither SERVER_CHANGED nor SERVER_CONNECTED ran.
    std::thread::sleep(Duration::from_millis(300));
    assert!(seen.lock().iter().any(|d| d.input == Input::Welcome), "the Recorder answered the connect");
    assert!(hooks_in(&log).is_empty(), "a hook ran while its state was not on disk");

    fs::create_dir(&state_dir).unwrap();
    // The first retry is due 1 s after the failure.
    wait_for("the held hooks", Duration::from_secs(3), || hooks_in(&log).len() >= 2);
    let on_disk = state_file::read(&state_dir).unwrap().expect("state written before its hooks ran");
    assert_eq!(on_disk.server.map(|s| s.ip), Some(SRV_B));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hooks_in(&log), [HookReason::ServerChanged, HookReason::ServerConnected], "once each, in order");

    drop(cap_tx);
    let engine = worker.join().unwrap();
    let failures = applier.join().unwrap();
    assert!(failures >= 1);
    assert_eq!(engine.counters().drops.get("persist_failed").copied(), Some(failures));
    // Persisted ended the outage: no retry is scheduled any more.
    assert_eq!(engine.poll_timeout(), None);
    fs::remove_dir_all(&d).unwrap();
}
