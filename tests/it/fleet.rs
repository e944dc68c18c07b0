//! The cloud-server side at fleet scale (issue 9), in network namespaces (root only):
//! `forcerenew --leases` over dnsmasq's own lease file, with its report and `--require-confirm`,
//! and `announce --leases` reaching a terminal on another subnet behind a router.
//!
//! What each test checks is read from outside the tool where it can be: dnsmasq's lease file
//! and log, the terminal's `status --json` and decision log, and the tool's exit code and report.

use crate::lab::{poll, unix_now, within, Lab, DHCP_SECRET, TERM_MAC};
use std::net::Ipv4Addr;
use std::time::Duration;

const RES_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);
const CLOUD_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
const CLOUD_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 201);

/// 199 leases for clients that do not exist: addresses of 10.77.0.0/24 that no host of the lab
/// uses, MACs 02:fa:00:00:00:NN. In dnsmasq's lease-file format, valid for an hour.
fn fake_leases() -> Vec<(Ipv4Addr, String)> {
    let used = [1u8, 10, 50, 51, 66, 200, 201, 254];
    (2u8..=253)
        .filter(|o| !used.contains(o))
        .take(199)
        .map(|o| (Ipv4Addr::new(10, 77, 0, o), format!("02:fa:00:00:00:{o:02x}")))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn r9_forcerenew_over_a_dnsmasq_lease_file_of_200_reports_the_one_real_terminal_and_exit_3() {
    let mut lab = Lab::require_dhcp("fl");
    for a in [CLOUD_A, CLOUD_B] {
        assert!(lab.sh("srv", &["ip", "addr", "add", &format!("{a}/24"), "dev", "srv0"]));
    }
    // dnsmasq's own lease file, seeded with the 199 fakes before it starts: it keeps them, adds
    // the real terminal's, and rewrites the file.
    let leases = lab.dir.join("dnsmasq").join("leases");
    std::fs::create_dir_all(leases.parent().unwrap()).unwrap();
    let expiry = unix_now() + 3600;
    let fakes = fake_leases();
    let seeded: String = fakes.iter().map(|(ip, mac)| format!("{expiry} {mac} {ip} * *\n")).collect();
    std::fs::write(&leases, seeded).unwrap();
    lab.start_dnsmasq_with("2m", Some(RES_A), Some(CLOUD_A), &["--dhcp-range=10.77.0.2,10.77.0.99,2m"]);
    lab.write_dhcp_configs("optimistic", "");
    lab.write_sender("fr", 1, DHCP_SECRET, None);
    lab.start_serve();
    lab.start_run();
    let lease_lines = || std::fs::read_to_string(&leases).unwrap_or_default().lines().count();
    assert!(
        poll(Duration::from_secs(12), || lab.status()["lease"]["state"] == "BOUND" && lease_lines() == 200),
        "no bound terminal and 200 leases within 12 s: {} lines\n{}",
        lease_lines(),
        lab.dump()
    );
    let real = std::fs::read_to_string(&leases).unwrap();
    assert!(real.contains(&format!("{TERM_MAC} {RES_A} ")), "the terminal's lease is not in dnsmasq's file:\n{real}");
    assert!(poll(Duration::from_secs(5), || lab.status()["server"]["ip"] == CLOUD_A.to_string()), "{}", lab.dump());

    // The operator moves the cloud server in option 224, then tells the whole fleet.
    lab.dnsmasq_reload(Some(RES_A), Some(CLOUD_B));
    let cfg = lab.dir.join("fr.toml").display().to_string();
    let src = leases.display().to_string();
    let args = ["forcerenew", "--interface", "srv0", "--leases", &src, "--config", &cfg, "--json", "--require-confirm"];
    let started = std::time::Instant::now();
    let (code, out, err) = lab.tool("srv", &args);
    let took = started.elapsed();
    assert_eq!(code, 3, "--require-confirm with 199 silent clients must exit 3\nstdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("200 live leases, 0 expired and 0 bad lines skipped"), "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["sent"], 200, "{r}");
    assert_eq!(r["renewed"], 1, "{r}");
    let clients = r["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 200);
    let term = clients.iter().find(|c| c["mac"] == TERM_MAC.to_string()).expect("the terminal in the report");
    assert_eq!(term["ip"], RES_A.to_string());
    assert_eq!((term["renewed"].as_bool(), term["attempts"].as_u64()), (Some(true), Some(1)), "{term}");
    assert!(term["ms"].as_f64().is_some_and(|ms| ms < 1000.0), "{term}");
    assert_eq!(term["xid"], serde_json::Value::Null, "no xid file: the xid is unknown");
    for (ip, mac) in &fakes {
        let c = clients.iter().find(|c| c["mac"] == mac.as_str()).unwrap_or_else(|| panic!("{mac} missing"));
        assert_eq!(c["ip"], ip.to_string());
        // The first send and the four default retries, none answered.
        assert_eq!(
            (c["renewed"].as_bool(), c["attempts"].as_u64(), &c["ms"]),
            (Some(false), Some(5), &serde_json::Value::Null)
        );
    }
    // 250 ms + 500 ms + 1 s + 2 s between the sends, then 4 s for the last to be answered.
    assert!(took >= Duration::from_millis(7700), "gave up after {took:?}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // And the terminal followed option 224 after its renewal.
    assert!(poll(Duration::from_secs(5), || lab.status()["server"]["ip"] == CLOUD_B.to_string()), "{}", lab.dump());
    assert!(lab.dnsmasq_lines("DHCPREQUEST", TERM_MAC).len() >= 2, "{}", lab.dnsmasq_log());

    // Text for a person, and without --require-confirm a silent client is no failure.
    let args = ["forcerenew", "--interface", "srv0", "--leases", &src, "--config", &cfg, "--retries", "1"];
    let (code, out, err) = lab.tool("srv", &args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with("sent FORCERENEW to 200 clients (399 frames); 1 renewed in "), "{out}");
    assert!(out.contains("199 of 200 clients did not renew"), "{out}");
    let line = out.lines().find(|l| l.contains(&TERM_MAC.to_string())).unwrap_or_default();
    assert!(line.starts_with("10.77.0.50") && line.contains("1 attempt: renewed after"), "{out}");
    let silent =
        out.lines().filter(|l| l.contains("02:fa:00:00:00:") && l.ends_with("2 attempts: NOT renewed")).count();
    assert_eq!(silent, 199, "{out}");
}

#[test]
#[ignore = "needs root"]
fn r9_a_bad_lease_line_is_reported_by_number_and_the_rest_still_go() {
    let lab = Lab::require("fb");
    lab.write_sender("fr", 1, DHCP_SECRET, None);
    let f = lab.dir.join("leases");
    let e = unix_now() + 600;
    std::fs::write(
        &f,
        format!(
            "{e} 02:00:00:00:00:10 10.77.0.10 * *\nthis is not a lease\n{} 02:00:00:00:00:11 10.77.0.11 * *\n",
            unix_now() - 5
        ),
    )
    .unwrap();
    let cfg = lab.dir.join("fr.toml").display().to_string();
    let src = f.display().to_string();
    let args = ["forcerenew", "--interface", "srv0", "--leases", &src, "--config", &cfg, "--json", "--retries", "0"];
    let (code, out, err) = lab.tool("srv", &args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("line 2"), "the bad line by number: {err}");
    assert!(err.contains("1 live leases, 1 expired and 1 bad lines skipped"), "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["sent"], 1, "{r}");
    assert_eq!(r["clients"][0]["ip"], "10.77.0.10");
    // A missing source is the DHCP server's problem, named, exit 1.
    let args = ["forcerenew", "--interface", "srv0", "--leases", "/nonexistent/leases", "--config", &cfg];
    let (code, _, err) = lab.tool("srv", &args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/leases"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn r9_announce_leases_moves_a_terminal_behind_a_router_that_the_broadcast_never_reaches() {
    let mut lab = Lab::new_routed("fa").expect("needs root");
    for a in ["10.77.0.20/24", "10.77.0.21/24"] {
        assert!(lab.sh("srv", &["ip", "addr", "add", a, "dev", "srv0"]));
    }
    lab.write_configs();
    // The terminal lives on 10.78.0.0/24 and starts with the server at .20.
    let t = lab.dir.join("term.toml");
    let text = std::fs::read_to_string(&t).unwrap();
    std::fs::write(
        &t,
        text.replace("10.77.0.10/24", "10.78.0.10/24").replace("address = \"10.77.0.1\"", "address = \"10.77.0.20\""),
    )
    .unwrap();
    lab.start_follow();
    assert!(poll(Duration::from_secs(5), || lab.status()["server"]["connected"] == true
        || lab.log("hook.log").contains("SERVER_CONNECTED")));
    assert_eq!(lab.status()["server"]["ip"], "10.77.0.20", "{}", lab.log("run.log"));
    let leases = lab.dir.join("leases");
    std::fs::write(&leases, format!("{} {TERM_MAC} 10.78.0.10 thin-1 *\n", unix_now() + 600)).unwrap();
    let cfg = lab.dir.join("srv.toml").display().to_string();
    let src = leases.display().to_string();

    // The broadcast alone stays on srv's segment.
    let bcast =
        ["announce", "--interface", "srv0", "--address", "10.77.0.21", "--previous", "10.77.0.20", "--config", &cfg];
    let (code, out, err) = lab.tool("srv", &bcast);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.status()["server"]["ip"], "10.77.0.20", "a broadcast crossed the router?");
    assert!(!lab.log("run.log").contains("\"input\":\"announce\""), "the terminal heard the broadcast");

    // With --leases it goes unicast to the lease too, through the router.
    let mut uni = bcast.to_vec();
    uni.extend(["--leases", &src]);
    let (code, out, err) = lab.tool("srv", &uni);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        within(Duration::from_secs(5), || lab.status()["server"]["ip"] == "10.77.0.21").is_some(),
        "not moved behind the router\n{}",
        lab.log("run.log")
    );
    // Make-before-break completed on the new server's WELCOME, through the router.
    assert!(
        within(Duration::from_secs(3), || lab
            .log("hook.log")
            .lines()
            .any(|l| l.starts_with("SERVER_CHANGED 10.77.0.20 10.77.0.21")))
        .is_some(),
        "{}",
        lab.log("hook.log")
    );
    // The announced SERVER_MAC is on srv's segment, not ours: nothing pinned for it (DESIGN §5).
    assert_eq!(lab.term_neigh("10.77.0.21".parse().unwrap()), None, "an off-link server was pinned");
}
