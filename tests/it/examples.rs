//! The annotated example configs in contrib/ (installed as documentation): `ipsyncd check`
//! accepts each as shipped, warns about every published key in them by line, and, when the
//! terminal example is broken in several places at once, lists every problem with file, line
//! and key and exits 2 (DESIGN §6).
//!
//! The terminal example names `interface = "eth0"` and `state_dir = "/var/lib/ipsyncd"`, which
//! only a machine set up for it has. The root test checks the files as shipped in a network
//! namespace with an eth0 of its own, in a private mount namespace whose /var/lib is a fresh tmpfs,
//! so nothing is created on the host; both are gone when the command ends, and the network
//! namespace is removed by a guard even when the test fails.

use crate::common::{bin, root, tmpdir};
use ipsyncd::config::EXAMPLE_KEYS;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TERMINAL: &str = "contrib/ipsyncd.toml.example";
const SERVER: &str = "contrib/ipsyncd-server.toml.example";

fn example(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).expect("example config")
}

/// The 1-based line of the first line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines().position(|l| l.starts_with(start)).map(|i| i + 1).unwrap_or_else(|| panic!("no line {start:?}"))
}

fn check(cfg: &Path) -> Output {
    bin().args(["check", "--config"]).arg(cfg).output().expect("run ipsyncd check")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rel` with its `state_dir` line pointed into `dir`, written there (mode 0600, as the
/// examples tell admins).
fn with_state_dir(rel: &str, dir: &Path, name: &str) -> PathBuf {
    let t = example(rel);
    let line = "\nstate_dir = \"/var/lib/ipsyncd\"\n";
    assert_eq!(t.matches(line).count(), 1, "{rel}: one state_dir line");
    let p = dir.join(name);
    std::fs::write(&p, t.replace(line, &format!("\nstate_dir = \"{}/state\"\n", dir.display()))).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

#[test]
fn every_key_in_the_examples_is_a_published_example_key() {
    // The warnings compare against EXAMPLE_KEYS: a key edited in a file without the constant
    // (or the other way round) would slip through unwarned.
    let files = [example(TERMINAL), example(SERVER)];
    let mut seen = Vec::new();
    for t in &files {
        for l in t.lines() {
            let l = l.trim_start_matches(['#', ' ']);
            let Some((k, v)) = l.split_once(" = ") else { continue };
            if !["public_key", "signing_key", "secret", "reconfigure_key"].contains(&k) || !v.starts_with("\"0x") {
                continue;
            }
            let v = v.trim_matches('"');
            if v.starts_with("0x<") {
                continue; // a placeholder that does not parse
            }
            assert!(EXAMPLE_KEYS.iter().any(|e| e.hex == v), "{k} = {v} is not in EXAMPLE_KEYS");
            seen.push(v.to_string());
        }
    }
    for e in EXAMPLE_KEYS {
        assert!(seen.iter().any(|s| s == e.hex), "EXAMPLE_KEYS has {} which no example holds", e.hex);
    }
}

#[test]
fn the_server_example_passes_check_warning_about_each_published_key() {
    let d = tmpdir("example-srv");
    let cfg = with_state_dir(SERVER, &d, "srv.toml");
    let out = check(&cfg);
    let (stdout, t) = (text(&out.stdout), example(SERVER));
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let published =
        "this is the published example key from ipsyncd-server.toml.example; generate your own with `ipsyncd keygen`";
    for (start, what) in [
        ("signing_key = ", "[[key]] id 1 signing_key"),
        ("secret = \"0x4654", "[[key]] id 2 secret"),
        ("secret = \"0xa6e9", "[[dhcp_key]] id 1 secret"),
    ] {
        let want = format!("srv.toml: warning: line {}: {what}: {published}", line_of(&t, start));
        assert!(stdout.contains(&want), "missing {want:?} in:\n{stdout}");
    }
    let public = format!("line {}: [[key]] id 1 public_key: this is the public half", line_of(&t, "public_key = "));
    assert!(stdout.contains(&public), "missing {public:?} in:\n{stdout}");
    for e in EXAMPLE_KEYS {
        assert!(!stdout.contains(&e.hex[2..]), "check printed a key");
    }
}

#[test]
fn the_terminal_example_warns_that_its_public_key_signs_for_nobody() {
    // Its interface may be missing here (the root test has one); the key warning is there
    // either way.
    let d = tmpdir("example-term");
    let cfg = with_state_dir(TERMINAL, &d, "term.toml");
    let out = check(&cfg);
    let all = text(&out.stdout) + &text(&out.stderr);
    let want = format!(
        "line {}: [[key]] id 1 public_key: this is the published example key from ipsyncd.toml.example",
        line_of(&example(TERMINAL), "public_key = ")
    );
    assert!(all.contains(&want), "missing {want:?} in:\n{all}");
}

/// A terminal given the server example's key (its signing half is published) would follow
/// anyone who read the example: `check` calls that an error, and `run` refuses to start.
#[test]
fn a_terminal_with_a_key_anyone_can_sign_with_is_refused() {
    let d = tmpdir("example-signable");
    let t = std::fs::read_to_string(with_state_dir(TERMINAL, &d, "ok.toml")).expect("copy");
    let ours = EXAMPLE_KEYS.iter().find(|e| !e.signable).expect("the terminal example's key");
    let theirs = EXAMPLE_KEYS.iter().find(|e| e.signable && e.why.contains("public half")).expect("server's public");
    assert_eq!(t.matches(ours.hex).count(), 1);
    let cfg = d.join("stolen.toml");
    std::fs::write(&cfg, t.replace(ours.hex, theirs.hex)).expect("write");
    let want = format!(
        "stolen.toml: error: line {}: [[key]] id 1 public_key: this is the public half",
        line_of(&t, "public_key = ")
    );
    let out = check(&cfg);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains(&want), "missing {want:?} in:\n{all}");
    let out = bin().args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&want), "run: missing {want:?} in:\n{err}");
    // The server tools keep it a warning: the server example itself passes `check`.
    assert!(!all.contains(&theirs.hex[2..]), "the key is never printed");
}

/// The terminal example with five things wrong at once, each a different kind: `check` lists
/// them all, each with file, line and key, on stderr, and exits 2; `run` refuses the same.
#[test]
fn a_broken_terminal_example_lists_every_problem_with_file_line_and_key() {
    let d = tmpdir("example-broken");
    let hook = d.join("plain-hook");
    std::fs::write(&hook, "#!/bin/sh\n").expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let t = std::fs::read_to_string(with_state_dir(TERMINAL, &d, "ok.toml")).expect("copy");
    let edits = [
        ("interface = \"eth0\"", "interface = \"no-such-if9\"".to_string()),
        ("mode = \"dhcp\"", "mode = \"fallow\"".to_string()),
        ("renew_command = \"\"", "renew_comand = \"\"".to_string()),
        ("# hook = \"/etc/ipsyncd/hooks.d\"", format!("hook = \"{}\"", hook.display())),
        (
            "# [[key]]\n# id = 2\n# secret = \"0x<64 hex digits from ipsyncd keygen --kind hmac>\"",
            "[[key]]\nid = 2\nsecret = \"short\"".into(),
        ),
    ];
    let mut broken = t.clone();
    for (from, to) in &edits {
        assert_eq!(broken.matches(from).count(), 1, "{from:?} once in the example");
        broken = broken.replace(from, to);
    }
    assert_eq!(broken.lines().count(), t.lines().count(), "edits keep the line numbers");
    let cfg = d.join("broken.toml");
    std::fs::write(&cfg, &broken).expect("write");
    let out = check(&cfg);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}{}", text(&out.stdout));
    let wants = [
        format!("broken.toml: line {}: mode: unknown variant `fallow`", line_of(&broken, "mode = ")),
        format!("broken.toml: line {}: unknown field `renew_comand`", line_of(&broken, "renew_comand")),
        format!(
            "broken.toml: line {}: [[key]] id 2 secret: expected at least 16 bytes, got 5",
            line_of(&broken, "secret = \"short\"")
        ),
        format!(
            "broken.toml: line {}: interface: no network interface \"no-such-if9\" on this machine",
            line_of(&broken, "interface = ")
        ),
        format!("broken.toml: line {}: hook: {}: is not executable", line_of(&broken, "hook = "), hook.display()),
    ];
    for want in &wants {
        assert!(err.contains(want.as_str()), "missing {want:?} in:\n{err}");
    }
    // `run` refuses at start what `check` calls an error, with the same list.
    let out = bin().args(["run", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let run_err = text(&out.stderr);
    for want in &wants {
        assert!(run_err.contains(want.as_str()), "run: missing {want:?} in:\n{run_err}");
    }
}

#[test]
#[ignore = "needs root"]
fn both_examples_pass_check_as_shipped() {
    // The namespace guard of the kernel tests (removed on drop; fails without root).
    let ns = crate::netns::Ns::new("ex");
    // A veth pair rather than a dummy link: the dummy module is not loadable everywhere (in a
    // container), veth is what the other namespace tests use.
    assert!(ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"]));
    // A fresh tmpfs over /var/lib/ipsyncd, or over /var/lib where the host has no
    // /var/lib/ipsyncd to mount on: state_dir is then writable (or creatable) and empty, and
    // nothing is written to the host.
    let script = "set -e; if [ -d /var/lib/ipsyncd ]; then mount -t tmpfs ipsyncd-test /var/lib/ipsyncd; \
                  else mount -t tmpfs ipsyncd-test /var/lib; fi; exec \"$0\" check --config \"$1\"";
    let host_had = Path::new("/var/lib/ipsyncd").exists();
    // Terminal: its public key signs for nobody. Server: its four keys are published.
    for (rel, published) in [(TERMINAL, 1), (SERVER, 4)] {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "unshare", "-m", "--propagation", "private", "sh", "-c", script])
            .arg(env!("CARGO_BIN_EXE_ipsyncd"))
            .arg(root().join(rel))
            .output()
            .expect("ip netns exec");
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{rel}:\n{stdout}{}", text(&out.stderr));
        let warned = stdout.lines().filter(|l| l.contains(": warning: ") && l.contains("example key")).count();
        assert_eq!(warned, published, "{rel}:\n{stdout}");
        assert!(stdout.contains(": OK ("), "{rel}:\n{stdout}");
    }
    assert_eq!(Path::new("/var/lib/ipsyncd").exists(), host_had, "the host's /var/lib is untouched");
}
