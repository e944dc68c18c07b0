//! Kea as the DHCP server (root only, DESIGN §6 `--leases`, §11): kea-dhcp4 runs in `srv` with
//! private files (lab.rs [`Kea`]), dhcpcd in `term` takes a real lease with option 224 in it,
//! and `ipsyncd::server::leases::load` must then read exactly that client (address and MAC)
//! both from Kea's control socket (`kea:PATH`, `lease4-get-all`) and from the memfile CSV Kea
//! wrote. A second lease added and then deleted over the control socket checks the CSV's
//! append-log rule (the deletion row replaces the lease) against what real Kea writes.
//! Everything is removed on drop, even after a failed assert: Kea first, then the lab.

use crate::lab::{unix_now, within, Kea, Lab, TERM_MAC};
use ipsyncd::server::leases::{self, Format, Lease, Loaded};
use ipsyncd::wire::Mac;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The cloud server Kea names in option 224.
const CLOUD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
const LIFETIME: u64 = 120;

fn pairs(l: &Loaded) -> Vec<(Ipv4Addr, Mac)> {
    l.leases.iter().map(|l| (l.ip, l.mac)).collect()
}

fn both(kea: &Kea, now: u64) -> (Loaded, Loaded) {
    let sock =
        leases::load(&format!("kea:{}", kea.socket().display()), now).unwrap_or_else(|e| panic!("{e}\n{}", kea.log()));
    let csv =
        leases::load(kea.lease_file().to_str().unwrap(), now).unwrap_or_else(|e| panic!("{e}\n{}", kea.lease_csv()));
    assert_eq!(sock.format, Format::KeaSocket);
    assert_eq!(csv.format, Format::KeaCsv);
    assert!(sock.bad.is_empty() && csv.bad.is_empty(), "{:?} {:?}\n{}", sock.bad, csv.bad, kea.lease_csv());
    (sock, csv)
}

#[test]
#[ignore = "needs root"]
fn kea_leases_of_a_real_client_from_the_socket_and_the_csv() {
    let lab = Lab::require_dhcp("kl");
    let kea = Kea::start(&lab.ns("srv"), "srv0", "10.77.0.0/24", "10.77.0.100 - 10.77.0.150", CLOUD, LIFETIME as u32);
    lab.write_dhcpcd_conf("noarp");
    let before = unix_now();
    assert!(lab.start_dhcpcd(), "dhcpcd got no lease\n{}\n{}", lab.log("dhcpcd.log"), kea.log());
    let addrs = lab.term_addrs();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let ip: Ipv4Addr = addrs[0].split('/').next().unwrap().parse().unwrap();
    assert!((100..=150).contains(&ip.octets()[3]), "{ip} is not from the pool");
    // dhcpcd's script logs "$reason $new_ip_address $new_vdi": option 224 arrived in the ACK.
    let bound = format!("BOUND {ip} {CLOUD}");
    assert!(
        within(Duration::from_secs(5), || lab.log("dhcpcd-hook.log").contains(&bound)).is_some(),
        "no `{bound}` in dhcpcd's hook log:\n{}",
        lab.log("dhcpcd-hook.log")
    );

    let now = unix_now();
    let (sock, csv) = both(&kea, now);
    assert_eq!(pairs(&sock), [(ip, TERM_MAC)], "{sock:?}");
    assert_eq!(pairs(&csv), [(ip, TERM_MAC)], "{csv:?}\n{}", kea.lease_csv());
    for l in [&sock.leases[0], &csv.leases[0]] {
        let e = l.expires.expect("a finite lease");
        assert!(e >= before + LIFETIME && e <= now + LIFETIME + 1, "expires {e}, now {now}");
    }
    assert_eq!(sock.leases[0].expires, csv.leases[0].expires);
    assert_eq!((sock.expired, csv.expired), (0, 0));
    // Past the lease's end both sources call it expired.
    let later = sock.leases[0].expires.unwrap();
    let (s2, c2) = both(&kea, later);
    assert_eq!((s2.leases.len(), s2.expired, c2.leases.len(), c2.expired), (0, 1, 0, 1));

    // A lease added over the socket, with a hostname Kea must escape in its CSV (`,` and `&`).
    let other = Ipv4Addr::new(10, 77, 0, 140);
    let other_mac = Mac([2, 0, 0, 0, 0, 0x20]);
    let add = format!(
        r#"{{"command":"lease4-add","arguments":{{"ip-address":"{other}","hw-address":"{other_mac}","hostname":"desk,7&b"}}}}"#
    );
    kea.command(&add).unwrap_or_else(|e| panic!("lease4-add: {e}"));
    let (sock, csv) = both(&kea, unix_now());
    let want = Lease { ip: other, mac: other_mac, expires: None, hostname: Some("desk,7&b".into()) };
    for l in [&sock, &csv] {
        assert_eq!(l.leases.len(), 2, "{l:?}");
        let got = l.leases.iter().find(|x| x.ip == other).expect("the added lease");
        assert_eq!(Lease { expires: None, ..got.clone() }, want, "{}", kea.lease_csv());
    }
    assert!(kea.lease_csv().contains("desk&#x2c7&#x26b"), "{}", kea.lease_csv());

    // Deleted: Kea appends a row with valid_lifetime 0, which replaces the earlier one.
    kea.command(&format!(r#"{{"command":"lease4-del","arguments":{{"ip-address":"{other}"}}}}"#))
        .unwrap_or_else(|e| panic!("lease4-del: {e}"));
    let (sock, csv) = both(&kea, unix_now());
    assert_eq!(pairs(&sock), [(ip, TERM_MAC)]);
    assert_eq!(pairs(&csv), [(ip, TERM_MAC)], "{}", kea.lease_csv());
    lab.stop_dhcpcd();
}

const CLOUD_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 201);

fn xid_of(path: &std::path::Path, mac: Mac) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let m = mac.to_string();
    text.lines().filter(|l| l.starts_with(&m)).last().and_then(|l| l.split_whitespace().nth(1)).map(str::to_string)
}

/// Issue 9: Kea (option 224 defined, lease_cmds, control socket) leases to an ipsyncd terminal
/// in dhcp mode and to dhcpcd with `authprotocol delayed`; `serve --interface` learns both xids;
/// the operator changes option 224 and `forcerenew --leases kea:SOCKET` moves both, then
/// `--leases` on Kea's memfile CSV moves them back. dhcpcd acts only on its last xid, so its
/// renewal is the proof the learned xid was right.
#[test]
#[ignore = "needs root"]
fn r9_forcerenew_leases_from_kea_socket_and_csv_moves_an_ipsyncd_terminal_and_dhcpcd() {
    let mut lab = Lab::require_dhcp("kf");
    for a in [CLOUD, CLOUD_B] {
        assert!(lab.sh("srv", &["ip", "addr", "add", &format!("{a}/24"), "dev", "srv0"]));
    }
    // The second client lives in the lab's third namespace, without its static address.
    assert!(lab.sh("attacker", &["ip", "addr", "flush", "dev", "att0"]));
    let kea = Kea::start(&lab.ns("srv"), "srv0", "10.77.0.0/24", "10.77.0.100 - 10.77.0.150", CLOUD, LIFETIME as u32);
    lab.write_dhcp_configs("optimistic", "");
    let xids = lab.dir.join("xids");
    let srv = lab.dir.join("srv.toml");
    let mut text = std::fs::read_to_string(&srv).unwrap();
    text.push_str(&format!(
        "\n[[dhcp_key]]\nid = 1\nsecret = \"{}\"\n\n[forcerenew]\nauth = \"delayed\"\nkey_id = 1\nxid_db = \"{}\"\n",
        crate::lab::DHCP_SECRET,
        xids.display()
    ));
    std::fs::write(&srv, text).unwrap();
    let cfg = srv.display().to_string();
    lab.spawn("srv", &["serve", "--config", &cfg, "--interface", "srv0"], "serve.log");
    lab.start_run();
    lab.write_dhcpcd_conf("noarp");
    assert!(lab.start_dhcpcd_in("attacker", "att0"), "dhcpcd got no lease\n{}\n{}", lab.log("dhcpcd.log"), kea.log());
    let dhcpcd_ip = lab.addrs("attacker", "att0").first().and_then(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok());
    let dhcpcd_ip = dhcpcd_ip.expect("dhcpcd's address");
    let evil = crate::lab::EVIL_MAC;
    assert!(
        within(Duration::from_secs(12), || lab.status()["lease"]["state"] == "BOUND"
            && lab.status()["server"]["ip"] == CLOUD.to_string())
        .is_some(),
        "the ipsyncd terminal is not bound and following {CLOUD}\n{}",
        lab.dump()
    );
    assert!(
        within(Duration::from_secs(5), || xid_of(&xids, evil).is_some() && xid_of(&xids, TERM_MAC).is_some()).is_some(),
        "serve --interface learned no xids:\n{}\n{}",
        std::fs::read_to_string(&xids).unwrap_or_default(),
        lab.log("serve.log")
    );

    let sock = format!("kea:{}", kea.socket().display());
    let csv = kea.lease_file().display().to_string();
    for (source, to) in [(sock.as_str(), CLOUD_B), (csv.as_str(), CLOUD)] {
        kea.set_ipsync_server(to);
        // The xid dhcpcd used last, learned by serve: forcerenew reads it from the file.
        let learned = xid_of(&xids, evil).unwrap();
        let renews_before = lab.log("dhcpcd-hook.log").matches("RENEW").count();
        let args =
            ["forcerenew", "--interface", "srv0", "--leases", source, "--config", &cfg, "--json", "--require-confirm"];
        let (code, out, err) = lab.tool("srv", &args);
        assert_eq!(code, 0, "{source}: both must renew\nstdout:\n{out}\nstderr:\n{err}\n{}", lab.log("dhcpcd.log"));
        let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!((r["sent"].as_u64(), r["renewed"].as_u64()), (Some(2), Some(2)), "{source}: {r}");
        let c = r["clients"].as_array().unwrap();
        let d = c.iter().find(|c| c["mac"] == evil.to_string()).expect("dhcpcd in the report");
        assert_eq!(d["ip"], dhcpcd_ip.to_string());
        assert_eq!(d["xid"], learned, "{source}: the learned xid was sent");
        // Both clients follow option 224: ipsyncd's status, dhcpcd's own hook.
        assert!(
            within(Duration::from_secs(5), || lab.status()["server"]["ip"] == to.to_string()).is_some(),
            "{source}: the ipsyncd terminal did not move to {to}\n{}",
            lab.dump()
        );
        let renewed = format!("RENEW {dhcpcd_ip} {to}");
        assert!(
            within(Duration::from_secs(5), || lab.log("dhcpcd-hook.log").contains(&renewed)).is_some(),
            "{source}: dhcpcd did not renew onto {to}:\n{}\n{}",
            lab.log("dhcpcd-hook.log"),
            lab.log("dhcpcd.log")
        );
        assert!(lab.log("dhcpcd-hook.log").matches("RENEW").count() > renews_before);
        // serve learns the xid of that renewal before the next round.
        assert!(
            within(Duration::from_secs(3), || xid_of(&xids, evil).is_some_and(|x| x != learned)).is_some(),
            "no new xid for dhcpcd after its renewal"
        );
    }
    drop(kea);
}
