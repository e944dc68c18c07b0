//! End to end in namespaces (root only), DESIGN §4.3 "Two kinds of key": a terminal that holds
//! only the server's Ed25519 public key follows a move signed by `ipsyncd announce`, and every
//! forged variant an attacker on its segment can make is refused: an HMAC trailer under the
//! Ed25519 key id, a signature by another key pair, a flipped bit under a genuine signature, and
//! the genuine frame replayed. The terminal holds no shared key, so it sends no HELLO and the
//! move completes on the announcement (break-before-make).

use crate::e2e::fix_udp;
use crate::lab::{within, Lab, KEY_HEX, SRV_MAC};
use ipsyncd::server::Announce;
use ipsyncd::shell::capture::Transmitter;
use ipsyncd::shell::netlink::Netlink;
use ipsyncd::wire::hex::to_hex;
use ipsyncd::wire::sig::{Signer, SigningKey};
use ipsyncd::wire::Mac;
use std::net::Ipv4Addr;
use std::time::Duration;

const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
const EVIL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
/// The server's pair (a fixed seed: this is a test); the terminal gets the public half.
const SEED: [u8; 32] = [0x5e; 32];

#[test]
#[ignore = "needs root"]
fn ed25519_public_key_terminal_follows_a_signed_move_and_refuses_every_forgery() {
    let mut lab = Lab::require("ed");
    lab.write_configs();
    let sk = SigningKey::from_bytes(&SEED);
    let pk = to_hex(sk.verifying_key().as_bytes());
    let shared = format!("[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n");
    let term = std::fs::read_to_string(lab.dir.join("term.toml")).unwrap();
    assert!(term.contains(&shared), "{term}");
    let term = term.replace(&shared, &format!("[[key]]\nid = 2\npublic_key = \"0x{pk}\"\n"));
    assert!(!term.contains("secret") && !term.contains("signing_key"));
    std::fs::write(lab.dir.join("term.toml"), term).unwrap();
    let srv = std::fs::read_to_string(lab.dir.join("srv.toml")).unwrap();
    std::fs::write(
        lab.dir.join("srv.toml"),
        format!("{srv}\n[[key]]\nid = 2\npublic_key = \"0x{pk}\"\nsigning_key = \"0x{}\"\n", to_hex(sk.as_bytes())),
    )
    .unwrap();
    let term_cfg = lab.dir.join("term.toml").display().to_string();
    lab.spawn("term", &["run", "--config", &term_cfg], "run.log");
    assert!(
        within(Duration::from_secs(5), || lab.status()["server"]["ip"] == "10.77.0.1").is_some(),
        "{}",
        lab.log("run.log")
    );

    // The genuine move, signed by `ipsyncd announce` with the Ed25519 signing key.
    lab.readdress_server(A, B);
    lab.announce(B, Some(A));
    assert!(
        within(Duration::from_secs(2), || lab.pinned(B, SRV_MAC)).is_some(),
        "B not pinned\n{}",
        lab.log("run.log")
    );
    assert!(within(Duration::from_secs(2), || lab.term_neigh(A).is_none()).is_some(), "A's pin not removed");
    assert!(within(Duration::from_secs(2), || lab.log("hook.log").contains("SERVER_CHANGED 10.77.0.1 10.77.0.20"))
        .is_some());
    assert!(!lab.log("run.log").contains("connect 10.77.0.20"), "a terminal without a shared key sends no HELLO");
    let applies = lab.status()["counters"]["apply"].as_u64();

    // Forgeries from the attacker, each variant from its own source MAC (rate limits are per
    // source; these must be decided, not just dropped) and each moving the fleet to EVIL.
    let seq: u64 = std::fs::read_to_string(lab.dir.join("srv-state/announce.seq")).unwrap().trim().parse().unwrap();
    lab.in_ns("attacker", move || {
        let mut nl = Netlink::open().unwrap();
        let tx = Transmitter::open(nl.link("att0").unwrap().index).unwrap();
        let sk = SigningKey::from_bytes(&SEED);
        let wrong = SigningKey::from_bytes(&[0x77; 32]);
        let hmac_key = [0x42u8; 32];
        let forged = |i: u64, key, mac| Announce {
            key_id: 2,
            key,
            sequence: seq + 10 + i,
            server_ip: EVIL,
            server_mac: mac,
            previous_ip: Some(B),
            server_name: None,
            service_port: None,
        };
        for i in 0..5u64 {
            // An HMAC trailer under the Ed25519 key id (a stolen shared key would give this).
            tx.send(&forged(i, Signer::Hmac(&hmac_key), Mac([2, 0, 0, 0, 0x66, 1])).frame(47474)).unwrap();
            // A signature by another key pair.
            tx.send(&forged(i, Signer::Ed25519(&wrong), Mac([2, 0, 0, 0, 0x66, 2])).frame(47474)).unwrap();
            // A genuine signature over a frame whose server address was then changed.
            let mut f =
                Announce { server_ip: B, ..forged(i, Signer::Ed25519(&sk), Mac([2, 0, 0, 0, 0x66, 3])) }.frame(47474);
            // SERVER_IPV4's TLV (type 1, length 4, B), under the signature: B becomes EVIL.
            let at = f.windows(6).position(|w| w == [1, 4, 10, 77, 0, 20]).unwrap() + 5;
            f[at] = 66;
            tx.send(&fix_udp(f)).unwrap();
            // The genuine announcement, replayed byte for byte (signing is deterministic).
            let genuine = Announce {
                key_id: 2,
                key: Signer::Ed25519(&sk),
                sequence: seq,
                server_ip: B,
                server_mac: SRV_MAC,
                previous_ip: Some(A),
                server_name: None,
                service_port: None,
            };
            tx.send(&genuine.frame(47474)).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    std::thread::sleep(Duration::from_millis(1200));
    lab.announce(B, Some(A)); // one more genuine event so the status file catches up
    std::thread::sleep(Duration::from_millis(300));
    assert!(lab.pinned(B, SRV_MAC), "the pin moved under attack");
    assert!(lab.term_neigh(EVIL).is_none(), "the attacker's address was pinned");
    let st = lab.status();
    assert_eq!(st["server"]["ip"], "10.77.0.20", "{st}");
    assert_eq!(st["counters"]["apply"].as_u64(), applies, "a forgery was applied: {st}");
    assert!(st["counters"]["reject"]["bad_mac"].as_u64().unwrap_or(0) >= 5, "{st}");
    assert!(st["counters"]["reject"]["replayed"].as_u64().unwrap_or(0) >= 5, "{st}");
    let malformed = st["counters"]["malformed"]["ipsync_trailer"].as_u64().unwrap_or(0);
    assert!(malformed >= 5, "HMAC trailers under the Ed25519 key: {st}");
    assert_eq!(lab.log("hook.log").matches("SERVER_CHANGED").count(), 1, "{}", lab.log("hook.log"));
}
