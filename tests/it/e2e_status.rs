//! `ipsyncd status` as a monitoring user sees it (issue 10, DESIGN §6), in network namespaces
//! (root only): the daemon's state directory is group-readable (the unit's StateDirectoryMode=0750
//! with Group=ipsyncd), so a member of that group reads the running daemon's status, exit 0; a
//! user outside it is told the directory cannot be read, exit 1; once the daemon stops, exit 3.
//! The outputs are printed (`--nocapture`) for the closing note.

use crate::lab::{poll, Lab, SRV_MAC};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The state directory's group in this test: what `ipsyncd` is on a real terminal.
const GROUP: &str = "4242";

/// `status [--json]` run in term as uid 65534 with `groups` (none: no supplementary groups).
fn status_as_nobody(lab: &Lab, exe: &Path, groups: Option<&str>, json: bool) -> (i32, String, String) {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.ns("term"), "setpriv", "--reuid=65534", "--regid=65534"]);
    match groups {
        Some(g) => c.arg(format!("--groups={g}")),
        None => c.arg("--clear-groups"),
    };
    c.arg(exe).arg("status");
    if json {
        c.arg("--json");
    }
    let out = c.arg("--config").arg(lab.dir.join("term.toml")).output().expect("setpriv");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn show(what: &str, (code, out, err): &(i32, String, String)) {
    println!("--- {what}: exit {code}\n{out}{err}");
}

#[test]
#[ignore = "needs root"]
fn r10_a_member_of_the_state_directorys_group_reads_status_others_are_told_why_not() {
    let mut lab = Lab::require("stat");
    lab.write_configs();
    // What systemd's StateDirectory= makes: the daemon's group owns the directory, 0750; the
    // setgid bit stands in for the daemon running with that group (here it runs as root).
    let state = lab.dir.join("term-state");
    assert!(Command::new("chgrp").args([GROUP, state.to_str().unwrap()]).status().unwrap().success());
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o2750)).unwrap();
    for p in [lab.dir.clone(), lab.dir.join("term.toml")] {
        let m = std::fs::metadata(&p).unwrap().permissions().mode();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m | 0o005)).unwrap();
    }
    // A copy of the binary nobody may run, wherever the checkout lives.
    let exe = lab.dir.join("ipsyncd");
    std::fs::copy(env!("CARGO_BIN_EXE_ipsyncd"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    lab.start_follow();
    assert!(poll(Duration::from_secs(3), || lab.status()["server"]["connected"] == true), "{}", lab.dump());
    let file = std::fs::metadata(state.join("status.json")).unwrap();
    assert_eq!(file.permissions().mode() & 0o777, 0o640, "status.json must be group-readable, no more");

    // Running: a group member reads it, exit 0.
    let json = status_as_nobody(&lab, &exe, Some(GROUP), true);
    show("running, --json, as a member of the group", &json);
    assert_eq!(json.0, 0, "{}", json.2);
    let v: serde_json::Value = serde_json::from_str(&json.1).expect("one JSON object");
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(v["server"]["ip"], "10.77.0.1", "{v}");
    assert_eq!(v["server"]["connected"], true, "{v}");
    assert_eq!(v["pin"]["in_kernel"], true, "{v}");
    assert_eq!(v["pin"]["kernel_entry"], format!("PERMANENT {SRV_MAC}"), "{v}");
    let text = status_as_nobody(&lab, &exe, Some(GROUP), false);
    show("running, text, as a member of the group", &text);
    assert_eq!(text.0, 0, "{}", text.2);
    for want in
        ["daemon:   running, pid ", "— connected", "last WELCOME ", " ago)", "(PERMANENT in the kernel)", "counters:"]
    {
        assert!(text.1.contains(want), "{want:?} missing:\n{}", text.1);
    }

    // Not a member: the directory cannot be read, and that is not "not running".
    let other = status_as_nobody(&lab, &exe, None, false);
    show("running, text, as a user outside the group", &other);
    assert_eq!(other.0, 1, "{other:?}");
    assert!(other.2.contains("cannot tell whether ipsyncd runs"), "{}", other.2);

    // The config holds the keys and may be unreadable to the group: --state-dir reads the status.
    let conf = lab.dir.join("term.toml");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.ns("term"), "setpriv", "--reuid=65534", "--regid=65534"]);
    let out = c
        .arg(format!("--groups={GROUP}"))
        .arg(&exe)
        .args(["status", "--json", "--config"])
        .arg(&conf)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!((v["running"].as_bool(), v["interface"].as_str()), (Some(true), Some("term0")), "{v}");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Stopped: the last known status, exit 3.
    lab.kill_all();
    let down = status_as_nobody(&lab, &exe, Some(GROUP), false);
    show("stopped, text, as a member of the group", &down);
    assert_eq!(down.0, 3, "{down:?}");
    assert!(down.1.contains("daemon:   NOT running"), "{}", down.1);
    assert!(down.1.contains("— not connected"), "a stopped daemon holds no connection:\n{}", down.1);
    assert!(down.2.contains("not running"), "{}", down.2);
    let down_json = status_as_nobody(&lab, &exe, Some(GROUP), true);
    show("stopped, --json, as a member of the group", &down_json);
    assert_eq!(down_json.0, 3);
    let v: serde_json::Value = serde_json::from_str(&down_json.1).expect("one JSON object");
    assert_eq!(v["running"], false, "{v}");
    assert_eq!(v["server"]["connected"], false, "{v}");
    let other_json = status_as_nobody(&lab, &exe, None, true);
    show("stopped, --json, as a user outside the group", &other_json);
    assert_eq!(other_json.0, 1);
}
