//! Attacks through the files `ipsyncd replay` reads (issue 8 item 7, DESIGN §6 and §10): config
//! files that are malformed, huge, links, directories, devices, FIFOs or binary; state files
//! that are directories, binary or nested without end, and state directories that are not
//! directories; captures with hostile headers, block lengths, timestamps and time running
//! backwards. Each run of the binary is bounded: killed and failed past its deadline, and run
//! under an RLIMIT_DATA of 128 MiB, so that allocating what a hostile header claims aborts it
//! instead of passing (a replay of these files needs under 16 MiB).
//!
//! What cli.rs and attack_files.rs already hold is not repeated here (a 4 GiB caplen, link type
//! 113 in classic pcap, a fraction of a second out of range, /dev/zero, a FIFO or a directory as
//! the capture, symlinked, FIFO and 4 GiB state files, an unwritable state directory).

use crate::common::{bin, records, root, tmpdir};
use ipsyncd::config::Config;
use ipsyncd::shell::pcap::{write_pcap, write_pcapng};
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a bounded run of the binary left behind.
struct Ran {
    /// None when a signal ended it (an allocation over the limit aborts).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Every run here is over in well under a second; a run still going after this has hung.
const LIMIT: Duration = Duration::from_secs(5);
/// The heap (and every private writable mapping) a run may hold: a few MiB are used; a 4 GiB
/// caplen taken at its word would not fit.
const MAX_DATA: u64 = 128 << 20;

/// Runs `cmd` with no stdin under [`MAX_DATA`], collects its output, and kills it (and fails)
/// when it runs past [`LIMIT`].
fn run_bounded(mut cmd: Command) -> Ran {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: MAX_DATA, rlim_max: MAX_DATA };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn ipsyncd");
    let pipe = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {LIMIT:?}: {}", err.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran { code: status.code(), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn replay_cmd(cap: &Path, cfg: &Path) -> Command {
    let mut c = bin();
    c.arg("replay").arg(cap).arg("--config").arg(cfg);
    c
}

fn noise() -> PathBuf {
    root().join("pcap-fixtures/noise.pcap")
}

fn noise_cfg() -> PathBuf {
    root().join("pcap-fixtures/noise.toml")
}

/// A config that `replay` accepts.
fn good_config() -> String {
    std::fs::read_to_string(noise_cfg()).unwrap()
}

/// `replay` with `cfg` as its config: exit 2, a message that names `named` (the path given),
/// fast and small.
fn assert_config_refused(what: &str, cfg: &Path, expect: &str) {
    let r = run_bounded(replay_cmd(&noise(), cfg));
    assert_eq!(r.code, Some(2), "{what}: {}", r.stderr);
    assert!(r.stdout.is_empty(), "{what}: {}", r.stdout);
    let path = cfg.display().to_string();
    assert!(r.stderr.contains(&path), "{what}: the message does not name {path}: {}", r.stderr);
    assert!(r.stderr.contains(expect), "{what}: expected {expect:?}: {}", r.stderr);
    assert!(r.stderr.lines().count() <= 3, "{what}: {}", r.stderr);
    // The library says the same, naming the same file.
    let e = Config::load(cfg).expect_err(what);
    assert_eq!(e.file, cfg, "{what}");
    assert!(e.to_string().contains(&path) && e.to_string().contains(expect), "{what}: {e}");
}

/// Malformed TOML, wrong types, NUL bytes, bad UTF-8 and more than 1 MiB: exit 2, naming the
/// file (and the line where there is one), never a panic.
#[test]
fn attack_config_malformed_binary_or_huge_is_exit_2_naming_the_file() {
    let d = tmpdir("attack-cfg-bad");
    let write = |name: &str, body: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let good = good_config();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("truncated TOML", write("cut.toml", &good.as_bytes()[..good.find('=').unwrap() + 1]), "line 2"),
        ("unterminated string", write("str.toml", b"mode = \"follow\n"), "line 1"),
        // DESIGN §6 wants the key named too; the TOML layer's type errors give only the line.
        ("wrong type", write("type.toml", b"mode = 5\n"), "line 1"),
        ("table for a value", write("tab.toml", b"[mode]\nx = 1\n"), "expected `dhcp` or `follow`"),
        ("port out of range", write("port.toml", b"[server]\nport = 70000\n"), "line 2"),
        ("NUL on line 3", write("nul.toml", b"mode = \"follow\"\n\n\0\0\0\n"), "line 3"),
        ("bad UTF-8", write("latin1.toml", b"# caf\xe9\nmode = \"follow\"\n"), "UTF-8"),
        ("a binary", write("elf.toml", b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"), "NUL"),
        (
            "a key of 1 byte",
            write("short.toml", format!("{good}\n[[key]]\nid = 9\nsecret = \"x\"\n").as_bytes()),
            "at least 16 bytes",
        ),
    ];
    for (what, p, expect) in &cases {
        assert_config_refused(what, p, expect);
    }
    // One byte over 1 MiB, every line of it a valid TOML comment: refused unread.
    let mut huge = good.clone().into_bytes();
    while huge.len() <= ipsyncd::config::MAX_CONFIG_BYTES as usize {
        huge.extend_from_slice(b"# padding padding padding padding padding padding padding padding\n");
    }
    assert_config_refused("over 1 MiB", &write("huge.toml", &huge), "larger than");
    // A 1 GiB sparse file is refused as fast.
    let sparse = d.join("sparse.toml");
    std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    let t = Instant::now();
    assert_config_refused("1 GiB sparse", &sparse, "larger than");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Links: a link to a good config is a config (package managers and config management install
/// them); a dangling link, a loop, and links to a directory or a device are exit 2, naming the
/// path given.
#[test]
fn attack_config_links_directories_and_devices_are_exit_2_naming_the_file() {
    let d = tmpdir("attack-cfg-links");
    let real = d.join("real.toml");
    std::fs::write(&real, good_config()).unwrap();
    let link = d.join("link.toml");
    symlink(&real, &link).unwrap();
    let r = run_bounded(replay_cmd(&noise(), &link));
    assert_eq!(r.code, Some(0), "a link to a good config: {}", r.stderr);

    symlink(d.join("nowhere.toml"), d.join("dangling.toml")).unwrap();
    assert_config_refused("dangling link", &d.join("dangling.toml"), "cannot read");
    symlink(d.join("loop.toml"), d.join("loop.toml")).unwrap();
    assert_config_refused("link loop", &d.join("loop.toml"), "cannot read");
    assert_config_refused("a directory", &d, "directory");
    symlink(&d, d.join("dir.toml")).unwrap();
    assert_config_refused("a link to a directory", &d.join("dir.toml"), "directory");
    // /dev/zero never ends: it is refused after at most 1 MiB, not read for ever.
    assert_config_refused("/dev/zero", Path::new("/dev/zero"), "not a config file");
    symlink("/dev/zero", d.join("zero.toml")).unwrap();
    assert_config_refused("a link to /dev/zero", &d.join("zero.toml"), "not a config file");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A FIFO (or a link to one) as the config: a plain open(2) blocks until some writer comes,
/// which is for ever. It is refused at once instead.
#[test]
fn attack_config_fifo_is_exit_2_not_a_hang() {
    let d = tmpdir("attack-cfg-fifo");
    let fifo = d.join("ipsyncd.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_config_refused("a FIFO", &fifo, "not a config file");
    symlink(&fifo, d.join("link.toml")).unwrap();
    assert_config_refused("a link to a FIFO", &d.join("link.toml"), "not a config file");
    std::fs::remove_dir_all(&d).unwrap();
}

fn server_move() -> (PathBuf, PathBuf) {
    (root().join("pcap-fixtures/server-move.pcap"), root().join("pcap-fixtures/server-move.toml"))
}

fn replay_with_state(state_dir: &Path) -> Ran {
    let (cap, cfg) = server_move();
    let mut c = replay_cmd(&cap, &cfg);
    c.arg("--state-dir").arg(state_dir);
    run_bounded(c)
}

fn moved_aside(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("state.json.corrupt-"))
        .collect();
    v.sort();
    v
}

/// State files that are not state: a directory in its place, NUL bytes, JSON nested a million
/// deep (a recursive parser's stack overflow), the right JSON of the wrong types. Each is moved
/// aside loudly, replay starts fresh and persists a new state, exit 0.
#[test]
fn attack_state_file_directory_binary_or_deeply_nested_is_moved_aside() {
    let fresh_decisions = {
        let d = tmpdir("attack-state-ref");
        let r = replay_with_state(&d);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        std::fs::remove_dir_all(&d).unwrap();
        r.stdout
    };
    let deep = [vec![b'['; 1 << 20], vec![b']'; 1 << 20]].concat();
    let wrong_types = br#"{"version":1,"server":{"ip":"10.77.0.20","mac":7,"since":"yesterday"}}"#.to_vec();
    let huge_number = br#"{"version":1,"sequences":{"1":1e999999}}"#.to_vec();
    let cases: [(&str, Option<Vec<u8>>); 5] = [
        ("a directory", None),
        ("NUL bytes", Some(b"{\"version\":1,\0\0\0}".to_vec())),
        ("nested a million deep", Some(deep[..(1 << 20) - 1].to_vec())),
        ("wrong types", Some(wrong_types)),
        ("a number past u64", Some(huge_number)),
    ];
    for (what, body) in cases {
        let d = tmpdir("attack-state-bad");
        match &body {
            None => std::fs::create_dir(d.join("state.json")).unwrap(),
            Some(b) => std::fs::write(d.join("state.json"), b).unwrap(),
        }
        let r = replay_with_state(&d);
        assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
        assert!(r.stderr.contains("corrupt") && r.stderr.contains("state.json"), "{what}: {}", r.stderr);
        assert_eq!(r.stdout, fresh_decisions, "{what}: replay did not start fresh");
        let aside = moved_aside(&d);
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        if let Some(b) = &body {
            assert_eq!(&std::fs::read(&aside[0]).unwrap(), b, "{what}: moved aside changed");
        } else {
            assert!(aside[0].is_dir(), "{what}");
        }
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap();
        assert_eq!(s["server"]["ip"], "10.77.0.20", "{what}: the new state was persisted");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A state directory that is a regular file, a FIFO or a dangling link: exit 1, naming it, and
/// nothing written through it.
#[test]
fn attack_state_dir_that_is_not_a_directory_is_exit_1_naming_it() {
    let d = tmpdir("attack-state-dir");
    let file = d.join("file");
    std::fs::write(&file, b"precious").unwrap();
    let fifo = d.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let dangling = d.join("dangling");
    symlink(d.join("nowhere/deeper"), &dangling).unwrap();
    for (what, p) in [("a file", &file), ("a FIFO", &fifo), ("a dangling link", &dangling)] {
        let r = replay_with_state(p);
        assert_eq!(r.code, Some(1), "{what}: {}", r.stderr);
        assert!(r.stderr.contains(&p.display().to_string()), "{what}: {}", r.stderr);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `replay CAP` with noise.toml: bounded, small, and what it printed.
fn replay_capture(tag: &str, bytes: &[u8]) -> Ran {
    let d = tmpdir(tag);
    let p = d.join(format!("{tag}.pcap"));
    std::fs::write(&p, bytes).unwrap();
    let r = run_bounded(replay_cmd(&p, &noise_cfg()));
    if r.code != Some(0) {
        assert!(
            r.stderr.contains(&p.display().to_string()),
            "{tag}: the error does not name the capture: {}",
            r.stderr
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
    r
}

fn assert_capture_refused(tag: &str, bytes: &[u8], expect: &str) {
    let r = replay_capture(tag, bytes);
    assert_eq!(r.code, Some(1), "{tag}: {}", r.stderr);
    assert!(r.stderr.contains(expect), "{tag}: expected {expect:?}: {}", r.stderr);
}

fn frames() -> Vec<(u64, Vec<u8>)> {
    records(&root().join("pcap-fixtures/server-move.pcap"))
}

/// Classic pcap: a record header cut short, a caplen of 2^32−1 and of MAX_RECORD + 1 (refused
/// before any allocation: the peak memory shows it), and a file that is only a header (read to
/// its end: exit 0, nothing printed).
#[test]
fn attack_pcap_classic_truncated_or_oversized_records() {
    let whole = write_pcap(&frames());
    assert_capture_refused("cut-header", &whole[..24 + 10], "record 1 is truncated");
    let first_len = 16 + u32::from_be_bytes(whole[32..36].try_into().unwrap()) as usize;
    assert_capture_refused("cut-second-header", &whole[..24 + first_len + 15], "record 2 is truncated");
    for (tag, caplen) in [("caplen-max", u32::MAX), ("caplen-over", 262_145)] {
        let mut b = whole.clone();
        b[32..36].copy_from_slice(&caplen.to_be_bytes());
        assert_capture_refused(tag, &b, &format!("record 1 claims {caplen} bytes"));
    }
    let r = replay_capture("header-only", &whole[..24]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), ""), "{}", r.stderr);
    // Records of 0 and 1 bytes pass nothing to the engine: read to the end, no line.
    let r = replay_capture("tiny-records", &write_pcap(&[(1, vec![]), (2, vec![0]), (3, vec![0xff; 13])]));
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), ""), "{}", r.stderr);
}

/// Offsets into write_pcapng's output: SHB 0..28, IDB 28..60 (link type at 36, if_tsresol's
/// value at 48), then the first EPB at 60 (its length at 64, timestamp high/low at 72/76,
/// caplen at 80).
fn pcapng() -> Vec<u8> {
    let b = write_pcapng(&frames());
    assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 1, "IDB moved");
    assert_eq!(u32::from_le_bytes(b[60..64].try_into().unwrap()), 6, "EPB moved");
    b
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// pcapng block lengths that lie (0, under the 12-byte minimum, not a multiple of 4, past the
/// end, 2^32−4, a trailer that disagrees), a foreign link type in the interface block, a packet
/// for an interface never declared, and a caplen of 2^32−1: each a typed error, exit 1.
#[test]
fn attack_pcapng_bad_block_lengths_link_types_and_caplens() {
    let good = pcapng();
    let epb_len = u32::from_le_bytes(good[64..68].try_into().unwrap());
    for (tag, len) in [
        ("blen-0", 0),
        ("blen-8", 8),
        ("blen-13", 13),
        ("blen-past-end", good.len() as u32),
        ("blen-max", u32::MAX - 3),
    ] {
        let mut b = good.clone();
        put32(&mut b, 64, len);
        assert_capture_refused(tag, &b, "block length out of bounds");
    }
    let mut b = good.clone();
    put32(&mut b, 64, epb_len + 4);
    let r = replay_capture("blen-trailer", &b);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("pcapng block"), "{}", r.stderr);
    let mut b = good.clone();
    b[36..38].copy_from_slice(&113u16.to_le_bytes());
    assert_capture_refused("ng-linktype", &b, "link type 113 is not Ethernet");
    let mut b = good.clone();
    put32(&mut b, 68, 7); // the EPB's interface id
    assert_capture_refused("ng-no-iface", &b, "undeclared interface");
    let mut b = good.clone();
    put32(&mut b, 80, u32::MAX);
    assert_capture_refused("ng-caplen", &b, "claims 4294967295 bytes");
    // The section header's block length itself.
    let mut b = good.clone();
    put32(&mut b, 4, u32::MAX);
    assert_capture_refused("shb-len", &b, "block length out of bounds");
}

/// pcapng timestamps: u64::MAX units, and resolutions that overflow (10^-20 s, 2^-127 s) or turn
/// a small count into a time past 2106. Typed errors, exit 1, never a clock near u64::MAX.
#[test]
fn attack_pcapng_huge_timestamps_and_resolutions() {
    let good = pcapng();
    let mut b = good.clone();
    put32(&mut b, 72, u32::MAX);
    put32(&mut b, 76, u32::MAX);
    assert_capture_refused("ts-max", &b, "record 1 has an impossible timestamp");
    for (tag, resol) in [("tsresol-1e20", 20u8), ("tsresol-2e127", 0xff)] {
        let mut b = good.clone();
        b[48] = resol;
        assert_capture_refused(tag, &b, "if_tsresol out of range");
    }
    // Seconds as the unit: 1.7e15 "seconds" is no time.
    let mut b = good.clone();
    b[48] = 0;
    assert_capture_refused("tsresol-seconds", &b, "impossible timestamp");
}

/// 5000 interface blocks: the reader keeps a table per interface, bounded.
#[test]
fn attack_pcapng_interface_block_flood_is_bounded() {
    let good = pcapng();
    let idb = good[28..60].to_vec();
    let mut b = good[..28].to_vec();
    for _ in 0..5000 {
        b.extend_from_slice(&idb);
    }
    b.extend_from_slice(&good[60..]);
    assert_capture_refused("idb-flood", &b, "too many interfaces");
}

/// Time that runs backwards and jumps by a century between frames (2106, 1970, 2106, …): the
/// replay clock follows the capture without hanging, overflowing or running a deadline for
/// ever, and every frame is still decided.
#[test]
fn attack_pcap_time_running_backwards_replays_without_hanging() {
    let (cap, cfg) = server_move();
    let recs: Vec<(u64, Vec<u8>)> = records(&cap)
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
        .map(|(i, (_, f))| (if i % 2 == 0 { ipsyncd::shell::pcap::MAX_TS_US } else { 1 }, f))
        .collect();
    let d = tmpdir("attack-backwards");
    let p = d.join("backwards.pcapng");
    std::fs::write(&p, write_pcapng(&recs)).unwrap();
    let r = run_bounded(replay_cmd(&p, &cfg));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let lines: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames = lines.iter().filter(|v| v["frame"].is_u64()).count();
    assert_eq!(frames, 12, "{}", r.stdout);
    assert!(lines.len() < 40, "{} lines: a deadline ran again and again", lines.len());
    // A lease exchange, whose every frame arms DHCP and ACD timers, stamped the same way.
    let fr = root().join("pcap-fixtures/forcerenew-rfc3118.pcap");
    let recs: Vec<(u64, Vec<u8>)> = records(&fr)
        .into_iter()
        .enumerate()
        .map(|(i, (_, f))| (if i % 2 == 0 { ipsyncd::shell::pcap::MAX_TS_US } else { 1 }, f))
        .collect();
    std::fs::write(&p, write_pcapng(&recs)).unwrap();
    let r = run_bounded(replay_cmd(&p, &root().join("pcap-fixtures/forcerenew-rfc3118.toml")));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Replay runs the deadlines that fall between two frames (DESIGN §6), so a century-long gap
    // retransmits DISCOVERs for as long as the worker's cap of 10,000 timer steps per gap lets
    // it: bounded per frame, and in time order within each gap.
    let lines: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() <= recs.len() * 10_001, "{} lines for {} frames", lines.len(), recs.len());
    let mut last = 0.0;
    for v in &lines {
        let t = v["time"].as_f64().unwrap();
        if v["frame"].is_u64() {
            last = t;
        } else {
            assert!(t >= last, "a timer ran before the one before it: {v}");
            last = t;
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}
