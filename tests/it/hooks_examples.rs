//! The example VDI hooks in contrib/hooks/ (installed under
//! /usr/share/doc/ipsyncd/examples/hooks/): run as ipsyncd runs a hook, with only the DESIGN §9
//! variables and PATH, they write the viewer's connection file exactly, refuse values that are
//! not an address or a port (non-zero exit, no file), and ignore every other REASON.
//!
//! Each run uses a copy of the script whose one settings line (`VV_FILE=…`, `RDP_FILE=…`) is
//! pointed into a temporary directory: that line is what an administrator edits, and the rest
//! of the script is tested as shipped.

use crate::common::{root, tmpdir};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `contrib/hooks/NAME` with `setting`'s default line replaced by `setting=value`.
fn copy_with(name: &str, dir: &Path, edits: &[(&str, &str, &Path)]) -> PathBuf {
    let text = std::fs::read_to_string(root().join("contrib/hooks").join(name)).expect("example hook");
    let mut out = text.clone();
    for (setting, default, path) in edits {
        let line = format!("\n{setting}={default}\n");
        assert_eq!(text.matches(&line).count(), 1, "{name}: one `{setting}={default}` settings line");
        out = out.replace(&line, &format!("\n{setting}={}\n", path.display()));
    }
    let p = dir.join(name);
    std::fs::write(&p, out).expect("write copy");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// Runs `hook` as the daemon does: `env -i` with PATH and the given variables only.
fn run(hook: &Path, vars: &[(&str, &str)]) -> Output {
    let mut c = Command::new("env");
    c.arg("-i").arg(format!("PATH={}", ipsyncd::shell::hooks::SAFE_PATH));
    for (k, v) in vars {
        c.arg(format!("{k}={v}"));
    }
    c.arg(hook).output().expect("run hook")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

const CHANGED: &[(&str, &str)] = &[
    ("REASON", "SERVER_CHANGED"),
    ("INTERFACE", "eth0"),
    ("OLD_SERVER_IP", "10.77.0.20"),
    ("NEW_SERVER_IP", "10.77.0.21"),
    ("SERVER_MAC", "02:00:00:00:00:21"),
    ("SERVICE_PORT", "5901"),
    ("OWN_IP", "10.77.0.10"),
    ("OLD_OWN_IP", ""),
    ("CONFLICT_KIND", ""),
    ("SERVER_NAME", "vdi-1"),
];

/// `base` with the variables of `over` replaced (or added).
fn with<'a>(base: &[(&'a str, &'a str)], over: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<_> = base.iter().filter(|(k, _)| !over.iter().any(|(o, _)| o == k)).copied().collect();
    v.extend_from_slice(over);
    v
}

#[test]
fn remote_viewer_hook_writes_the_vv_file_exactly() {
    let d = tmpdir("hook-vv");
    let out = d.join("out");
    let (vv, uri) = (out.join("vdi.vv"), out.join("vdi.uri"));
    let hook = copy_with("50-remote-viewer", &d, &[("VV_FILE", "/run/ipsyncd/vdi.vv", &vv), ("URI_FILE", "", &uri)]);
    let r = run(&hook, CHANGED);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        std::fs::read_to_string(&vv).expect("vv written"),
        "[virt-viewer]\ntype=spice\nhost=10.77.0.21\nport=5901\ntitle=vdi-1\n"
    );
    assert_eq!(std::fs::read_to_string(&uri).expect("uri written"), "spice://10.77.0.21:5901\n");
    // Readable by the desktop user's viewer, and no temporary file left behind.
    assert_eq!(std::fs::metadata(&vv).expect("vv").permissions().mode() & 0o777, 0o644);
    assert_eq!(files_in(&out), ["vdi.uri", "vdi.vv"]);

    // SERVER_CONNECTED without SERVICE_PORT or SERVER_NAME: SPICE's default port, no title;
    // the file is replaced, not appended to.
    let connected = with(CHANGED, &[("REASON", "SERVER_CONNECTED"), ("SERVICE_PORT", "")]);
    let connected: Vec<_> = connected.into_iter().filter(|(k, _)| *k != "SERVER_NAME").collect();
    let r = run(&hook, &connected);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&vv).expect("vv"), "[virt-viewer]\ntype=spice\nhost=10.77.0.21\nport=5900\n");

    // A name with a control character (the engine never passes one; a hook run by hand might
    // get one) would start a new key in the file: the title is left out, the rest written.
    let r = run(&hook, &with(CHANGED, &[("SERVER_NAME", "vdi-1\nhost=10.66.6.6")]));
    assert_eq!(r.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&r.stderr).contains("SERVER_NAME"));
    assert_eq!(std::fs::read_to_string(&vv).expect("vv"), "[virt-viewer]\ntype=spice\nhost=10.77.0.21\nport=5901\n");
}

#[test]
fn freerdp_hook_writes_the_rdp_file_exactly() {
    let d = tmpdir("hook-rdp");
    let rdp = d.join("out/vdi.rdp");
    let hook = copy_with("50-freerdp", &d, &[("RDP_FILE", "/run/ipsyncd/vdi.rdp", &rdp)]);
    let r = run(&hook, &with(CHANGED, &[("SERVICE_PORT", "3390")]));
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&rdp).expect("rdp written"), "full address:s:10.77.0.21:3390\n");
    let r = run(&hook, &with(CHANGED, &[("REASON", "SERVER_CONNECTED"), ("SERVICE_PORT", "")]));
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&rdp).expect("rdp"), "full address:s:10.77.0.21:3389\n", "RDP's default port");
    assert_eq!(files_in(&d.join("out")), ["vdi.rdp"]);
}

/// Values that are not a dotted quad or a port are refused on stderr with a non-zero exit, and
/// nothing is written (not even a temporary file); an unrelated REASON writes nothing, exit 0.
#[test]
fn example_hooks_refuse_bad_values_and_ignore_other_reasons() {
    let bad: &[(&str, &str)] = &[
        ("NEW_SERVER_IP", "1.2.3.4;rm"),
        ("NEW_SERVER_IP", "1.2.3.4\nhost=evil"),
        ("NEW_SERVER_IP", "$(reboot)"),
        ("NEW_SERVER_IP", "1.2.3"),
        ("NEW_SERVER_IP", "256.1.1.1"),
        ("NEW_SERVER_IP", "01.2.3.4"),
        ("NEW_SERVER_IP", ""),
        ("SERVICE_PORT", "0"),
        ("SERVICE_PORT", "65536"),
        ("SERVICE_PORT", "59x"),
        ("SERVICE_PORT", "-1"),
    ];
    for (name, setting, default) in
        [("50-remote-viewer", "VV_FILE", "/run/ipsyncd/vdi.vv"), ("50-freerdp", "RDP_FILE", "/run/ipsyncd/vdi.rdp")]
    {
        let d = tmpdir(&format!("hook-bad-{name}"));
        let out = d.join("out");
        let hook = copy_with(name, &d, &[(setting, default, &out.join("f"))]);
        for (k, v) in bad {
            let r = run(&hook, &with(CHANGED, &[(*k, *v)]));
            assert_ne!(r.status.code(), Some(0), "{name}: {k}={v:?} accepted");
            assert!(String::from_utf8_lossy(&r.stderr).contains(k), "{name}: {k}={v:?}: says which value");
            assert_eq!(files_in(&out), Vec::<String>::new(), "{name}: {k}={v:?} wrote a file");
        }
        for reason in ["SERVER_UNREACHABLE", "CONFLICT", "FORCERENEW", "LEASE_BOUND", "LEASE_LOST", ""] {
            let r = run(&hook, &with(CHANGED, &[("REASON", reason)]));
            assert_eq!(r.status.code(), Some(0), "{name}: REASON={reason}");
            assert!(!out.exists(), "{name}: REASON={reason} wrote something");
        }
    }
}

/// Both parse as POSIX sh (and pass shellcheck where it is installed), use no eval, and ship
/// executable.
#[test]
fn example_hooks_are_posix_sh_without_eval() {
    for name in ["50-remote-viewer", "50-freerdp"] {
        let p = root().join("contrib/hooks").join(name);
        let text = std::fs::read_to_string(&p).expect("example hook");
        assert!(text.starts_with("#!/bin/sh\n"), "{name}: POSIX sh");
        assert!(!text.lines().any(|l| !l.trim_start().starts_with('#') && l.contains("eval")), "{name}: eval");
        assert_ne!(std::fs::metadata(&p).expect("stat").permissions().mode() & 0o111, 0, "{name}: executable");
        for shell in ["sh", "dash"] {
            if let Ok(o) = Command::new(shell).arg("-n").arg(&p).output() {
                assert!(o.status.success(), "{shell} -n {name}: {}", String::from_utf8_lossy(&o.stderr));
            }
        }
        if let Ok(o) = Command::new("shellcheck").arg("-s").arg("sh").arg(&p).output() {
            assert!(o.status.success(), "shellcheck {name}:\n{}", String::from_utf8_lossy(&o.stdout));
        }
    }
}
