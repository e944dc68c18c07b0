//! Kea as the DHCP server (root only, DESIGN §6 `--leases`, §11): kea-dhcp4 runs in `srv` with
//! private files (lab.rs [`Kea`]), dhcpcd in `term` takes a real lease with option 224 in it,
//! and `ipsyncd::server::leases::load` must then read exactly that client (address and MAC)
//! both from Kea's control socket (`kea:PATH`, `lease4-get-all`) and from the memfile CSV Kea
//! wrote. A second lease added and then deleted over the control socket checks the CSV's
//! append-log rule (the deletion row replaces the lease) against what real Kea writes.
//! Everything is removed on drop, even after a failed assert: Kea first, then the lab.

use crate::lab::{within, Kea, Lab, TERM_MAC};
use ipsyncd::server::leases::{self, Format, Lease, Loaded};
use ipsyncd::wire::Mac;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cloud server Kea names in option 224.
const CLOUD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
const LIFETIME: u64 = 120;

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

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
    let before = now_unix();
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

    let now = now_unix();
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
    let (sock, csv) = both(&kea, now_unix());
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
    let (sock, csv) = both(&kea, now_unix());
    assert_eq!(pairs(&sock), [(ip, TERM_MAC)]);
    assert_eq!(pairs(&csv), [(ip, TERM_MAC)], "{}", kea.lease_csv());
    lab.stop_dhcpcd();
}
