//! Golden replay: every fixture's decision log equals its reviewed NAME.expected.jsonl.

use crate::common::{fixtures, replay};

#[test]
fn every_fixture_matches_its_golden_log() {
    let all = fixtures();
    assert!(all.len() >= 16, "only {} fixtures", all.len());
    let mut failures = Vec::new();
    for (name, cap, cfg) in &all {
        let golden = cfg.with_extension("expected.jsonl");
        let want =
            std::fs::read_to_string(&golden).unwrap_or_else(|_| panic!("{name}: no golden {}", golden.display()));
        let out = replay(cap, cfg, &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let got = String::from_utf8(out.stdout).expect("utf-8");
        if got != want {
            failures.push(format!("{name}:\n--- want\n{want}--- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_golden_line_follows_the_design_schema() {
    const INPUTS: &[&str] =
        &["announce", "forcerenew", "offer", "ack", "nak", "dhcp", "arp", "welcome", "channel", "kernel", "timer"];
    const VERDICTS: &[&str] = &[
        "apply",
        "same",
        "conflict",
        "renew",
        "lease",
        "reject",
        "malformed",
        "select",
        "restart",
        "ignore",
        "retry",
        "unreachable",
        "repin",
    ];
    const OPS: &[&str] = &[
        "pin_neighbour",
        "unpin_neighbour",
        "set_address",
        "del_address",
        "transmit",
        "connect",
        "set_server",
        "alarm",
        "hook",
    ];
    let mut lines = 0;
    for (name, _, cfg) in fixtures() {
        let text = std::fs::read_to_string(cfg.with_extension("expected.jsonl")).expect("golden");
        for line in text.lines() {
            lines += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            let verdict = v["verdict"].as_str().expect("verdict");
            assert!(VERDICTS.contains(&verdict), "{name}: {verdict}");
            assert!(INPUTS.contains(&v["input"].as_str().expect("input")), "{name}: {line}");
            let needs_reason = ["reject", "malformed", "conflict", "ignore", "retry"].contains(&verdict);
            assert_eq!(v.get("reason").is_some(), needs_reason, "{name}: {line}");
            // Only frames have an index; timers and outcomes (welcome, channel, kernel) have none.
            let frameless = ["timer", "welcome", "channel", "kernel"].contains(&v["input"].as_str().unwrap_or(""));
            assert!(if frameless { v["frame"].is_null() } else { v["frame"].is_u64() }, "{name}: {line}");
            assert!(v["time"].is_f64(), "{name}: {line}");
            for a in v["actions"].as_array().expect("actions") {
                assert!(OPS.contains(&a["op"].as_str().expect("op")), "{name}: {line}");
            }
            if v["input"] == "forcerenew" {
                assert!(v.get("server_ip").is_none(), "{name}: FORCERENEW carries no server_ip");
            }
        }
    }
    assert!(lines > 40, "only {lines} golden lines");
}

#[test]
fn server_move_in_pcap_and_pcapng_decide_the_same() {
    let all = fixtures();
    let get = |n: &str| all.iter().find(|f| f.0 == n).expect(n).clone();
    let (_, a, ac) = get("server-move");
    let (_, b, bc) = get("server-move-pcapng");
    assert_eq!(replay(&a, &ac, &[]).stdout, replay(&b, &bc, &[]).stdout);
}
