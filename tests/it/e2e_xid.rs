//! `ipsyncd serve --interface` learns the DHCP clients' xids into `[forcerenew] xid_db`
//! (DESIGN §6), and real dhcpcd accepts a FORCERENEW that `ipsyncd forcerenew` sends with the
//! learned xid and no xid given by hand (DESIGN §11, interop). dhcpcd acts only on the xid of its
//! last exchange (dhcpcd issue 615) and drops any other silently while bound, so the negative
//! control, the same FORCERENEW with a wrong xid, shows that the learned xid is what made it work.
//!
//! The root tests run in the lab's namespaces (removed on drop, even after a failed assert):
//! dnsmasq in `srv` with private files, `serve` there with a private config and xid file in the
//! lab's directory, dhcpcd in `term` in its private mounts with debug logging to a file. What
//! is checked comes from outside the code under test where it can: dhcpcd's own log, dnsmasq's
//! log, and a capture on the terminal's bridge port parsed by the lab's own parser.

use crate::common::{bin, tmpdir};
use crate::lab::{dhcp_type, within, Lab, Sniffer, DHCP_SECRET, KEY_HEX, TERM_MAC};
use ipsyncd::shell::capture::Transmitter;
use ipsyncd::shell::netlink::Netlink;
use ipsyncd::wire::dhcpv4::{self, MessageType};
use ipsyncd::wire::frame::UdpFrameRepr;
use ipsyncd::wire::Mac;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const RES_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);

/// The xid the file holds for `mac`, read with a parser of the test's own (the last line for a
/// MAC wins, as DESIGN §6 says).
fn xid_in(path: &Path, mac: Mac) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let want = mac.to_string();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (m, x) = (w.next()?, w.next()?);
            (m == want).then(|| u32::from_str_radix(x.strip_prefix("0x")?, 16).ok()).flatten()
        })
        .last()
}

/// Every line of the xid file is a header comment or `<lowercase mac> 0x<8 lowercase hex>`, and
/// the client lines are sorted by MAC.
fn well_formed(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    if !lines.next().is_some_and(|h| h.starts_with('#')) {
        return Err(format!("no header comment:\n{text}"));
    }
    let rows: Vec<&str> = lines.collect();
    for l in &rows {
        let ok = l.len() == 28
            && l.bytes().enumerate().all(|(i, b)| match i {
                17 => b == b' ',
                18 => b == b'0',
                19 => b == b'x',
                _ if i < 17 && i % 3 == 2 => b == b':',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if !ok {
            return Err(format!("bad line {l:?} in:\n{text}"));
        }
    }
    if !rows.windows(2).all(|w| w[0][..17] < w[1][..17]) {
        return Err(format!("not sorted by MAC:\n{text}"));
    }
    Ok(())
}

/// `serve`'s config, which is also the sender's: `[[key]]` for HELLO, the RFC 3118 secret,
/// and the xid file. One file for both, as a site would keep it.
fn write_server_config(lab: &Lab, name: &str, xids: &Path) -> PathBuf {
    let d = &lab.dir;
    std::fs::create_dir_all(d.join(format!("{name}-state"))).unwrap();
    let path = d.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "state_dir = \"{0}/{name}-state\"\n\n[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n\n[[dhcp_key]]\nid = 1\nsecret = \"{DHCP_SECRET}\"\n\n[forcerenew]\nauth = \"delayed\"\nkey_id = 1\nxid_db = \"{1}\"\n",
            d.display(),
            xids.display()
        ),
    )
    .unwrap();
    path
}

/// Starts `serve --interface srv0` with `cfg` in srv (log in `serve.log`) and waits until it
/// watches and listens; returns its pid.
fn start_serve_watching(lab: &mut Lab, cfg: &Path) -> u32 {
    let cfg = cfg.display().to_string();
    let bin = env!("CARGO_BIN_EXE_ipsyncd");
    let pid = lab.spawn_cmd("srv", &[bin, "serve", "--interface", "srv0", "--config", &cfg], "serve.log");
    assert!(
        within(Duration::from_secs(5), || {
            let log = lab.log("serve.log");
            log.contains("watching DHCP clients on srv0") && log.contains("listening on")
        })
        .is_some(),
        "serve --interface did not start:\n{}",
        lab.log("serve.log")
    );
    pid
}

/// dhcpcd's own log so far (its `logfile`, with `debug`).
fn dhcpcd_log(lab: &Lab) -> String {
    lab.log("dhcpcd-debug.log")
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// dhcpcd's FORCERENEW acceptance lines naming `from`. dhcpcd 9.4.1 prints "term0: Force Renew
/// from from 10.77.0.1" (its message ends in "from" and its logger adds "from" again), so only
/// the stable parts are matched.
fn force_renews(log: &str, from: Ipv4Addr) -> usize {
    let from = format!(" {from}");
    log.lines().filter(|l| l.contains("term0: Force Renew from") && l.ends_with(&from)).count()
}

/// The xid of dhcpcd's last message as it logs it: "term0: sending REQUEST (xid 0xdbad78a6), …".
fn dhcpcd_last_xid(log: &str) -> Option<u32> {
    log.lines()
        .filter(|l| l.contains("term0: sending "))
        .filter_map(|l| {
            let hex = l.split("(xid 0x").nth(1)?.split(')').next()?;
            u32::from_str_radix(hex, 16).ok()
        })
        .last()
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
fn poll(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    within(limit, || {
        let ok = f();
        if !ok {
            std::thread::sleep(Duration::from_millis(15));
        }
        ok
    })
    .is_some()
}

#[test]
#[ignore = "needs root"]
fn serve_interface_learns_dhcpcds_xid_and_dhcpcd_accepts_forcerenew_with_it() {
    let mut lab = Lab::require_dhcp("xl");
    let sniff = Sniffer::on_port(&lab, "term");
    lab.start_dnsmasq("2m", Some(RES_A), None);
    let xids = lab.dir.join("xids");
    let cfg = write_server_config(&lab, "fr-learned", &xids);
    let serve = start_serve_watching(&mut lab, &cfg);
    // dhcpcd: RFC 3118 delayed auth with the lab's secret (lab.rs), no ARP (binds at once),
    // debug to its own log file; syslog stays inside its private /run.
    let dlog = lab.dir.join("dhcpcd-debug.log");
    lab.write_dhcpcd_conf(&format!("noarp\ndebug\nlogfile {}", dlog.display()));
    assert!(lab.start_dhcpcd(), "dhcpcd got no lease\n{}\n{}", lab.log("dhcpcd.log"), lab.dnsmasq_log());
    assert!(
        poll(Duration::from_secs(5), || lab.term_addrs() == vec![format!("{RES_A}/24")]),
        "dhcpcd holds {:?}\n{}",
        lab.term_addrs(),
        dhcpcd_log(&lab)
    );

    // serve learned the xid of dhcpcd's last exchange: its REQUEST, which dnsmasq ACKed.
    let last_request_xid = || sniff.dhcp_from(TERM_MAC, dhcp_type::REQUEST).last().map(|r| r.xid);
    assert!(
        poll(Duration::from_secs(3), || {
            let x = xid_in(&xids, TERM_MAC);
            x.is_some() && x == lab.dnsmasq_last_ack_xid(TERM_MAC) && x == last_request_xid()
        }),
        "xid file {:?}, dnsmasq's ACK {:?}, REQUEST on the wire {:?}\nserve:\n{}\nfile:\n{}",
        xid_in(&xids, TERM_MAC),
        lab.dnsmasq_last_ack_xid(TERM_MAC),
        last_request_xid(),
        lab.log("serve.log"),
        std::fs::read_to_string(&xids).unwrap_or_default()
    );
    let learned = xid_in(&xids, TERM_MAC).unwrap();
    assert_eq!(dhcpcd_last_xid(&dhcpcd_log(&lab)), Some(learned), "dhcpcd's own last xid\n{}", dhcpcd_log(&lab));
    well_formed(&xids).unwrap();

    // Negative control: the same sender with a wrong xid for this MAC. dhcpcd, bound, drops it
    // without a word (dhcp.c: a wrong xid is logged only when not bound), so what is checked is
    // that it arrived and that nothing came of it within a bounded wait.
    let stale = lab.dir.join("xids-stale");
    let wrong = learned ^ 0x5a5a_5a5a;
    std::fs::write(&stale, format!("# a wrong xid\n{TERM_MAC} 0x{wrong:08x}\n")).unwrap();
    lab.write_sender("fr-stale", 1, DHCP_SECRET, Some(&stale));
    let requests_before = sniff.dhcp_from(TERM_MAC, dhcp_type::REQUEST).len();
    let log_before = dhcpcd_log(&lab);
    assert!(lab.forcerenew("fr-stale", RES_A), "forcerenew with the stale xid file failed");
    let arrived = |xid: u32| sniff.dhcp_to(TERM_MAC, dhcp_type::FORCERENEW).iter().any(|f| f.xid == xid);
    assert!(poll(Duration::from_secs(2), || arrived(wrong)), "the wrong-xid FORCERENEW never reached term");
    let acted = poll(Duration::from_millis(1500), || {
        let log = dhcpcd_log(&lab);
        force_renews(&log, ROUTER) > force_renews(&log_before, ROUTER)
            || sniff.dhcp_from(TERM_MAC, dhcp_type::REQUEST).len() > requests_before
    });
    assert!(!acted, "dhcpcd acted on a FORCERENEW with a wrong xid\n{}", dhcpcd_log(&lab));

    // The learned xid, nothing given by hand: dhcpcd validates it, takes it and renews.
    let log_before = dhcpcd_log(&lab);
    assert!(lab.forcerenew("fr-learned", RES_A), "forcerenew with the learned xid failed");
    assert!(poll(Duration::from_secs(2), || arrived(learned)), "the FORCERENEW never reached term");
    // dhcpcd's own words: the RFC 3118 token (secret id 1) verified the HMAC, the FORCERENEW
    // was taken from the server, and the lease is being renewed.
    let validated = "term0: validated using 0x00000001";
    let renewing = format!("term0: renewing lease of {RES_A}");
    assert!(
        poll(Duration::from_secs(5), || {
            let log = dhcpcd_log(&lab);
            count(&log, validated) > count(&log_before, validated)
                && force_renews(&log, ROUTER) > force_renews(&log_before, ROUTER)
                && count(&log, &renewing) > count(&log_before, &renewing)
        }),
        "dhcpcd did not take the FORCERENEW with the learned xid {learned:#010x}\n{}",
        dhcpcd_log(&lab)
    );
    assert!(
        poll(Duration::from_secs(3), || sniff
            .dhcp_from(TERM_MAC, dhcp_type::REQUEST)
            .iter()
            .skip(requests_before)
            .any(|r| r.ciaddr == RES_A)),
        "no renewing REQUEST (ciaddr {RES_A}) on the wire"
    );

    // The renewal is dhcpcd's new last exchange: serve learns its xid too, so the next
    // FORCERENEW would reach it as well.
    assert!(
        poll(Duration::from_secs(3), || {
            let x = xid_in(&xids, TERM_MAC);
            x.is_some()
                && x != Some(learned)
                && x == last_request_xid()
                && x == lab.dnsmasq_last_ack_xid(TERM_MAC)
                && x == dhcpcd_last_xid(&dhcpcd_log(&lab))
        }),
        "the renewal's xid was not learned: file {:?}, REQUEST {:?}, ACK {:?}\n{}",
        xid_in(&xids, TERM_MAC),
        last_request_xid(),
        lab.dnsmasq_last_ack_xid(TERM_MAC),
        lab.log("serve.log")
    );
    well_formed(&xids).unwrap();
    lab.stop_child(serve, nix::sys::signal::Signal::SIGTERM);
    assert!(lab.log("serve.log").contains("stopping on SIGTERM"), "{}", lab.log("serve.log"));
    lab.stop_dhcpcd();
}

/// A DHCP client message from `chaddr`, broadcast to port 67 as a client in INIT sends it.
fn client_frame(t: MessageType, chaddr: Mac, xid: u32, op: u8) -> Vec<u8> {
    let mut r = dhcpv4::Repr::new(t, xid, &chaddr.0);
    r.op = op;
    UdpFrameRepr {
        src_mac: chaddr,
        dst_mac: Mac::BROADCAST,
        src_ip: Ipv4Addr::UNSPECIFIED,
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: dhcpv4::CLIENT_PORT,
        dst_port: dhcpv4::SERVER_PORT,
        ttl: 64,
    }
    .emit(&r.to_bytes())
}

fn send_from_attacker(lab: &Lab, frames: Vec<Vec<u8>>) {
    lab.in_ns("attacker", move || {
        let idx = Netlink::open().unwrap().link("att0").unwrap().index;
        let tx = Transmitter::open(idx).unwrap();
        for f in &frames {
            tx.send(f).unwrap();
        }
    });
}

#[test]
#[ignore = "needs root"]
fn serve_interface_learns_every_client_message_type_and_writes_a_pending_change_at_sigterm() {
    let mut lab = Lab::require_dhcp("xf");
    let xids = lab.dir.join("xids");
    // A file from before: a client to keep, a bad line to leave out (warned by number).
    let kept = Mac([2, 0, 0, 0, 0x77, 1]);
    std::fs::write(&xids, format!("# old\n{kept} 0x00000042\nnot a line\n")).unwrap();
    let cfg = write_server_config(&lab, "srv-xid", &xids);
    let serve = start_serve_watching(&mut lab, &cfg);
    assert!(lab.log("serve.log").contains("left out (and out of the next write): line 3"), "{}", lab.log("serve.log"));
    assert!(lab.log("serve.log").contains("(1 known)"), "{}", lab.log("serve.log"));

    // Each client message type is learned; a BOOTREPLY, an OFFER-typed request and garbage to
    // port 67 are not, and do not stop serve.
    let types = [
        (MessageType::Discover, 0x1111_0001),
        (MessageType::Request, 0x1111_0003),
        (MessageType::Decline, 0x1111_0004),
        (MessageType::Release, 0x1111_0007),
        (MessageType::Inform, 0x1111_0008),
    ];
    let client = |i: u8| Mac([2, 0, 0, 0, 0x78, i]);
    let mut frames: Vec<Vec<u8>> =
        types.iter().enumerate().map(|(i, (t, x))| client_frame(*t, client(i as u8), *x, 1)).collect();
    let (reply_mac, offer_mac) = (Mac([2, 0, 0, 0, 0x79, 1]), Mac([2, 0, 0, 0, 0x79, 2]));
    frames.push(client_frame(MessageType::Request, reply_mac, 0x2222_0001, 2));
    frames.push(client_frame(MessageType::Offer, offer_mac, 0x2222_0002, 1));
    let mut garbage = client_frame(MessageType::Request, Mac([2, 0, 0, 0, 0x79, 3]), 0x2222_0003, 1);
    garbage.truncate(14 + 20 + 8 + 100);
    frames.push(garbage);
    send_from_attacker(&lab, frames);
    assert!(
        poll(Duration::from_secs(3), || types
            .iter()
            .enumerate()
            .all(|(i, (_, x))| xid_in(&xids, client(i as u8)) == Some(*x))),
        "not every client message type was learned:\n{}\nserve:\n{}",
        std::fs::read_to_string(&xids).unwrap_or_default(),
        lab.log("serve.log")
    );
    assert_eq!(xid_in(&xids, kept), Some(0x42), "the client from before was lost");
    assert_eq!(xid_in(&xids, reply_mac), None);
    assert_eq!(xid_in(&xids, offer_mac), None);
    let text = std::fs::read_to_string(&xids).unwrap();
    assert!(!text.contains("not a line"), "{text}");
    well_formed(&xids).unwrap();
    assert!(lab.child_alive(serve), "serve died:\n{}", lab.log("serve.log"));

    // Debounce and shutdown: a change written at once, the next one held for the rest of the
    // second, and SIGTERM in that second writes it before exit. On a machine too slow to send
    // SIGTERM within the second the hold is not observed; then it is tried again.
    let mut proved = false;
    for round in 0..3u8 {
        let (first, second) = (Mac([2, 0, 0, 0, 0x7a, 2 * round]), Mac([2, 0, 0, 0, 0x7a, 2 * round + 1]));
        send_from_attacker(&lab, vec![client_frame(MessageType::Discover, first, 0x3333_0000 + u32::from(round), 1)]);
        assert!(
            poll(Duration::from_secs(2), || xid_in(&xids, first).is_some()),
            "the first change was not written at once"
        );
        let written_at = Instant::now();
        send_from_attacker(&lab, vec![client_frame(MessageType::Discover, second, 0x4444_0000 + u32::from(round), 1)]);
        let learned = format!("for {second} (");
        assert!(
            poll(Duration::from_millis(500), || lab.log("serve.log").contains(&learned)),
            "{}",
            lab.log("serve.log")
        );
        if xid_in(&xids, second).is_some() || written_at.elapsed() > Duration::from_millis(700) {
            continue;
        }
        lab.stop_child(serve, nix::sys::signal::Signal::SIGTERM);
        assert_eq!(
            xid_in(&xids, second),
            Some(0x4444_0000 + u32::from(round)),
            "the pending change was lost at SIGTERM"
        );
        proved = true;
        break;
    }
    assert!(proved, "could not hold a change pending while sending SIGTERM in three tries\n{}", lab.log("serve.log"));
    assert!(lab.log("serve.log").contains("stopping on SIGTERM"), "{}", lab.log("serve.log"));
    well_formed(&xids).unwrap();
}

#[test]
fn serve_interface_without_xid_db_is_a_usage_error() {
    let d = tmpdir("serve-noxid");
    let cfg = d.join("srv.toml");
    std::fs::write(&cfg, format!("[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n")).unwrap();
    let out = bin().args(["serve", "--interface", "lo", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&cfg.display().to_string()) && err.contains("[forcerenew] xid_db"), "{err}");
    // A [forcerenew] section without the key is the same error.
    std::fs::write(&cfg, format!("[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n\n[forcerenew]\nkey_id = 1\n")).unwrap();
    let out = bin().args(["serve", "--interface", "lo", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let d = tmpdir("serve-term");
    let cfg = d.join("srv.toml");
    std::fs::write(&cfg, format!("[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = bin()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up = within(Duration::from_secs(5), || TcpStream::connect(("127.0.0.1", port)).is_ok()).is_some();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let exited = within(Duration::from_secs(5), || matches!(child.try_wait(), Ok(Some(_)))).is_some();
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(up, "serve did not listen");
    assert!(exited, "serve did not stop on SIGTERM");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&d);
}
