//! The packaged systemd units and sysusers file (capabilities/): the single unit and the
//! per-interface template carry the same hardening, line for line, so they cannot drift apart;
//! both hold what issue 10 asks of them; the template runs the instance on its own interface,
//! config and state directory. `tests/deb-test.sh` checks the built package and the exposure
//! score; this runs everywhere, without root, cargo-deb or systemd.

use std::path::PathBuf;

fn read(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `[Service]` section's settings, in order, without comments or blank lines.
fn service_lines(unit: &str) -> Vec<String> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            out.push(line.to_string());
        }
    }
    out
}

/// What may differ between the unit and the template: which config, interface and state
/// directory the instance uses.
fn is_per_instance(line: &str) -> bool {
    ["ExecStartPre=", "ExecStart=", "StateDirectory="].iter().any(|k| line.starts_with(k))
}

#[test]
fn r10_unit_and_template_share_their_hardening() {
    let single = service_lines(&read("capabilities/ipsyncd.service"));
    let template = service_lines(&read("capabilities/ipsyncd@.service"));
    let a: Vec<&String> = single.iter().filter(|l| !is_per_instance(l)).collect();
    let b: Vec<&String> = template.iter().filter(|l| !is_per_instance(l)).collect();
    assert_eq!(a, b, "the [Service] hardening of ipsyncd.service and ipsyncd@.service differ");
    for want in [
        "User=ipsyncd",
        "Group=ipsyncd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectKernelTunables=yes",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "PrivateMounts=yes",
        "DevicePolicy=closed",
        "WatchdogSec=30s",
        "StateDirectoryMode=0750",
        "UMask=0077",
        "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
        "RestrictAddressFamilies=AF_PACKET AF_NETLINK AF_INET AF_UNIX",
    ] {
        assert!(single.iter().any(|l| l == want), "ipsyncd.service lacks {want}");
    }
}

#[test]
fn r10_units_check_the_config_they_run() {
    let single = service_lines(&read("capabilities/ipsyncd.service"));
    let template = service_lines(&read("capabilities/ipsyncd@.service"));
    let has = |lines: &[String], want: &str| assert!(lines.iter().any(|l| l == want), "missing {want}");
    has(&single, "ExecStartPre=/usr/bin/ipsyncd check --config /etc/ipsyncd/ipsyncd.toml");
    has(&single, "ExecStart=/usr/bin/ipsyncd run --config /etc/ipsyncd/ipsyncd.toml");
    has(&single, "StateDirectory=ipsyncd");
    has(&template, "ExecStartPre=/usr/bin/ipsyncd check --config /etc/ipsyncd/%I.toml --interface %I");
    has(&template, "ExecStart=/usr/bin/ipsyncd run --config /etc/ipsyncd/%I.toml --interface %I");
    has(&template, "StateDirectory=ipsyncd/%I");
    // A config error ends in a failed unit, not a restart every 2 s for ever.
    for unit in ["capabilities/ipsyncd.service", "capabilities/ipsyncd@.service"] {
        let text = read(unit);
        for want in ["StartLimitIntervalSec=60", "StartLimitBurst=5", "RestartPreventExitStatus=2"] {
            assert!(text.lines().any(|l| l == want), "{unit} lacks {want}");
        }
    }
}

#[test]
fn r10_sysusers_makes_the_group_and_user() {
    let conf = read("capabilities/sysusers.d/ipsyncd.conf");
    let lines: Vec<&str> = conf.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(lines.iter().any(|l| l.split_whitespace().take(2).eq(["g", "ipsyncd"])), "{conf}");
    let user = lines.iter().find(|l| l.starts_with("u ipsyncd ")).expect("a `u ipsyncd` line");
    assert!(user.ends_with("/usr/sbin/nologin"), "no login shell: {user}");
}
