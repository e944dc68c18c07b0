//! Attacks on FORCERENEW (issue 8 item 7, DESIGN §4.2): every shape of option 90 that is not
//! RFC 3118 delayed authentication as we implement it, option 90 duplicated or hidden in the
//! overloaded file and sname fields, replay counters at their edges, relayed frames, forbidden
//! sources, and a bit flipped anywhere the HMAC covers.
//!
//! The DHCP messages are laid out by hand (the emitters refuse most of these), signed with
//! `auth::dhcp_hmac_md5` at the offset this file computes itself (not the parser's), wrapped by
//! `UdpFrameRepr` (which fills both checksums) and decided by a follow-mode engine, for which
//! the last check, "we are BOUND", always holds (DESIGN §2: the system's client keeps the lease).

use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded};
use ipsyncd::engine::{Action, Decision, Engine, EngineConfig, HookReason, Instant, Mode, State, Verdict};
use ipsyncd::wire::auth;
use ipsyncd::wire::frame::{Checksum, UdpFrameRepr};
use ipsyncd::wire::Mac;
use std::net::Ipv4Addr;

const ME: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
const MY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const SRV: Mac = Mac([2, 0, 0, 0, 0, 3]);
const SRV_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const DKEY: &[u8] = b"dhcpsecret-at-least-16";
const T0: Instant = Instant::from_secs(1_800_000_000);
/// More than the one renewal per second that authentic FORCERENEWs may start.
const STEP_MS: u64 = 1100;

struct Rig {
    e: Engine,
    t: Instant,
}

impl Rig {
    fn new(allow_unauthenticated: bool) -> Rig {
        let mut c = EngineConfig::new(Mode::Follow, ME);
        c.address = Some("10.77.0.10/24".parse().unwrap());
        c.dhcp_keys.insert(1, DKEY.to_vec());
        c.allow_unauthenticated = allow_unauthenticated;
        c.max_age_s = 0;
        Rig { e: Engine::new(c, State::default(), 1), t: T0 }
    }
    fn send(&mut self, frame: &[u8]) -> Vec<Decision> {
        let ctx = DecodeContext { mac: ME, port: 47474, server_option: 224 };
        if let Decoded::Inbound(i) = decode_frame(Some(1), frame, Checksum::Verify, &ctx) {
            self.e.handle_frame(self.t, &i);
        }
        self.t = self.t.add_ms(STEP_MS);
        while self.e.poll_action().is_some() {}
        std::iter::from_fn(|| self.e.poll_decision()).collect()
    }
    /// The one decision `payload`, sent from the DHCP server's address, made.
    fn one(&mut self, payload: &[u8]) -> (Verdict, Option<&'static str>) {
        self.one_from(payload, SRV_IP)
    }
    fn one_from(&mut self, payload: &[u8], src_ip: Ipv4Addr) -> (Verdict, Option<&'static str>) {
        let d = self.send(&wrap(payload, src_ip));
        assert_eq!(d.len(), 1, "one frame, one decision: {d:?}");
        if d[0].verdict == Verdict::Renew {
            assert!(
                matches!(d[0].actions.as_slice(), [Action::Hook { reason: HookReason::ForceRenew, .. }]),
                "{:?}",
                d[0].actions
            );
        }
        (d[0].verdict, d[0].reason)
    }
    fn counter(&self) -> Option<u64> {
        self.e.state().dhcp_replay.get("delayed:1").copied()
    }
}

const RENEW: (Verdict, Option<&str>) = (Verdict::Renew, None);

fn reject(reason: &'static str) -> (Verdict, Option<&'static str>) {
    (Verdict::Reject, Some(reason))
}

fn wrap(payload: &[u8], src_ip: Ipv4Addr) -> Vec<u8> {
    UdpFrameRepr { src_mac: SRV, dst_mac: ME, src_ip, dst_ip: MY_IP, src_port: 67, dst_port: 68, ttl: 64 }.emit(payload)
}

fn opt(code: u8, v: &[u8]) -> Vec<u8> {
    let mut o = vec![code, v.len() as u8];
    o.extend_from_slice(v);
    o
}

/// Option 90's value for delayed authentication (31 bytes), its MAC still zero.
fn delayed_value(protocol: u8, algorithm: u8, rdm: u8, replay: u64, secret_id: u32) -> Vec<u8> {
    let mut v = vec![protocol, algorithm, rdm];
    v.extend_from_slice(&replay.to_be_bytes());
    v.extend_from_slice(&secret_id.to_be_bytes());
    v.extend_from_slice(&[0; 16]);
    v
}

fn delayed(replay: u64) -> Vec<u8> {
    opt(90, &delayed_value(1, 1, 0, replay, 1))
}

const SNAME: core::ops::Range<usize> = 44..108;
const FILE: core::ops::Range<usize> = 108..236;

/// A FORCERENEW from SRV_IP to our chaddr: the fixed header, options 53 and 54, then `extra`
/// and END in the main area, padded to 300 bytes; `sname` and `file` fill those fields.
fn message(extra: &[u8], sname: &[u8], file: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 2; // BOOTREPLY
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&99u32.to_be_bytes());
    m[28..34].copy_from_slice(&ME.0);
    m[SNAME.start..SNAME.start + sname.len()].copy_from_slice(sname);
    m[FILE.start..FILE.start + file.len()].copy_from_slice(file);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend(opt(53, &[9]));
    m.extend(opt(54, &SRV_IP.octets()));
    m.extend_from_slice(extra);
    m.push(255);
    m.resize(m.len().max(300), 0);
    m
}

/// Absolute offsets of the value of every option 90 in `region` of `m`: this file's own walk
/// (PAD skipped, END stops), independent of the parser under test.
fn opt90_values(m: &[u8], region: core::ops::Range<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = region.start;
    while at < region.end {
        match m[at] {
            0 => at += 1,
            255 => break,
            code => {
                if code == 90 {
                    out.push(at + 2);
                }
                at += 2 + usize::from(m[at + 1]);
            }
        }
    }
    out
}

const MAIN: core::ops::Range<usize> = 240..usize::MAX;

fn main_region(m: &[u8]) -> core::ops::Range<usize> {
    MAIN.start..m.len()
}

/// Fills in the delayed-auth MAC of the option 90 whose value starts at `value_at`: HMAC-MD5
/// over the message with hops, giaddr and the MAC itself zero (RFC 3118 §4).
fn sign_delayed(m: &mut [u8], value_at: usize, key: &[u8]) {
    let range = value_at + 15..value_at + 31;
    let mac = auth::dhcp_hmac_md5(key, m, range.clone());
    m[range].copy_from_slice(&mac);
}

/// A genuine FORCERENEW with counter `replay`, option 90 in the main area.
fn genuine(replay: u64) -> Vec<u8> {
    let mut m = message(&delayed(replay), &[], &[]);
    let at = opt90_values(&m, main_region(&m))[0];
    sign_delayed(&mut m, at, DKEY);
    m
}

#[test]
fn attack_forcerenew_genuine_frame_renews() {
    // The control for every test below: the same layout, correctly signed, renews.
    let mut r = Rig::new(false);
    assert_eq!(r.one(&genuine(10)), RENEW);
    assert_eq!(r.counter(), Some(10));
}

/// Option 90 with the right length and a correct HMAC-MD5 at the delayed-auth position, but a
/// protocol, algorithm or replay detection method we do not implement: `unauthenticated`, and
/// still so with `allow_unauthenticated` (that lets in FORCERENEWs without option 90, never
/// ones with an unusable option 90).
#[test]
fn attack_forcerenew_option90_wrong_protocol_algorithm_or_rdm_is_unauthenticated() {
    let bad = [
        (0, 1, 0),
        (2, 1, 0),
        (4, 1, 0),
        (255, 1, 0),
        (1, 0, 0),
        (1, 2, 0),
        (1, 255, 0),
        (1, 1, 1),
        (1, 1, 2),
        (1, 1, 255),
    ];
    for (p, a, rdm) in bad {
        let mut m = message(&opt(90, &delayed_value(p, a, rdm, 10, 1)), &[], &[]);
        let at = opt90_values(&m, main_region(&m))[0];
        sign_delayed(&mut m, at, DKEY);
        for allow in [false, true] {
            let mut r = Rig::new(allow);
            assert_eq!(r.one(&m), reject("unauthenticated"), "protocol {p} algorithm {a} rdm {rdm}, allow {allow}");
            assert_eq!(r.counter(), None);
        }
    }
}

/// Delayed authentication is exactly 31 bytes; every other length is `unauthenticated`, with or
/// without `allow_unauthenticated`.
#[test]
fn attack_forcerenew_option90_lengths_other_than_31_are_unauthenticated() {
    let full = delayed_value(1, 1, 0, 10, 1);
    for len in [0usize, 1, 10, 11, 15, 30, 32, 47, 255] {
        let mut v = full.clone();
        v.resize(len, 0xa5);
        let m = message(&opt(90, &v), &[], &[]);
        for allow in [false, true] {
            let mut r = Rig::new(allow);
            assert_eq!(r.one(&m), reject("unauthenticated"), "length {len}, allow {allow}");
        }
    }
}

/// RFC 3118 §5's reconfigure key protocol (3): type 1 hands a key out (an ACK's business, never
/// a FORCERENEW's signature) and types other than 2 are unknown: `unauthenticated`. Type 2,
/// the RFC 6704 signature, needs the nonce an ACK handed out: without one, `unknown_key`.
#[test]
fn attack_forcerenew_reconfigure_key_types_are_refused() {
    for (rtype, want) in [
        (1u8, "unauthenticated"),
        (0, "unauthenticated"),
        (3, "unauthenticated"),
        (255, "unauthenticated"),
        (2, "unknown_key"),
    ] {
        let mut v = vec![3, 1, 0];
        v.extend_from_slice(&10u64.to_be_bytes());
        v.push(rtype);
        v.extend_from_slice(&[0x5a; 16]);
        let m = message(&opt(90, &v), &[], &[]);
        for allow in [false, true] {
            let mut r = Rig::new(allow);
            assert_eq!(r.one(&m), reject(want), "type {rtype}, allow {allow}");
        }
    }
}

/// Only the first option 90 counts. An unusable first one is never rescued by a genuine second
/// one; a well-formed first one names the key; and a second one inserted into a genuine frame
/// breaks its HMAC, which covers every byte.
#[test]
fn attack_forcerenew_duplicated_option90_is_never_rescued() {
    // Garbage first, then an option signed correctly at its own place.
    let mut m = message(&[opt(90, &delayed_value(9, 1, 0, 10, 1)), delayed(10)].concat(), &[], &[]);
    let at = opt90_values(&m, main_region(&m));
    assert_eq!(at.len(), 2);
    sign_delayed(&mut m, at[1], DKEY);
    for allow in [false, true] {
        assert_eq!(Rig::new(allow).one(&m), reject("unauthenticated"), "allow {allow}");
    }
    // An unknown secret id first.
    let mut m = message(&[opt(90, &delayed_value(1, 1, 0, 10, 9)), delayed(10)].concat(), &[], &[]);
    let at = opt90_values(&m, main_region(&m));
    sign_delayed(&mut m, at[1], DKEY);
    assert_eq!(Rig::new(false).one(&m), reject("unknown_key"));
    // A genuine frame, and a second option 90 with a higher counter slipped in before END.
    let g = genuine(10);
    let end = 240 + 3 + 6 + 33;
    assert_eq!(g[end], 255);
    let mut spliced = g[..end].to_vec();
    spliced.extend(delayed(1000));
    spliced.extend_from_slice(&g[end..]);
    let mut r = Rig::new(false);
    assert_eq!(r.one(&spliced), reject("bad_mac"));
    assert_eq!(r.counter(), None);
    // Garbage in the main area and a genuine option in the overloaded file field: the main
    // area is read first.
    let mut m = message(&[opt(52, &[1]), opt(90, &[0; 5])].concat(), &[], &[delayed(10), vec![255]].concat());
    let at = opt90_values(&m, FILE);
    sign_delayed(&mut m, at[0], DKEY);
    assert_eq!(Rig::new(true).one(&m), reject("unauthenticated"));
}

/// Option 52 (overload) moves options into the file and sname fields, and option 90 may be
/// among them: honoured, with the MAC found at its absolute offset there; a byte changed
/// anywhere else in those fields is `bad_mac`. Without option 52 those fields are a file name
/// and a server name: option 90's bytes in them are not an option.
#[test]
fn attack_forcerenew_option90_in_overloaded_file_or_sname() {
    let auth = [delayed(10), vec![255]].concat();
    for (what, overload, sname, file, region) in [
        ("file", 1u8, vec![], auth.clone(), FILE),
        ("sname", 2, auth.clone(), vec![], SNAME),
        ("sname after an empty file", 3, auth.clone(), vec![255], SNAME),
        ("file, sname empty", 3, vec![255], auth.clone(), FILE),
    ] {
        let mut m = message(&opt(52, &[overload]), &sname, &file);
        let at = opt90_values(&m, region.clone());
        assert_eq!(at.len(), 1, "{what}");
        sign_delayed(&mut m, at[0], DKEY);
        let mut r = Rig::new(false);
        assert_eq!(r.one(&m), RENEW, "{what}");
        assert_eq!(r.counter(), Some(10), "{what}");
        let mut tampered = m.clone();
        tampered[region.end - 1] ^= 1; // after END, inside the field
        assert_eq!(Rig::new(false).one(&tampered), reject("bad_mac"), "{what}");
    }
    // No option 52: the same bytes in sname and file are names, and there is no option 90.
    let mut m = message(&[], &auth, &auth);
    sign_delayed(&mut m, SNAME.start + 2, DKEY);
    for allow in [false, true] {
        let want = if allow { RENEW } else { reject("unauthenticated") };
        assert_eq!(Rig::new(allow).one(&m), want, "allow {allow}: without option 52 there is no option 90 here");
    }
}

/// The replay counter is strictly increasing: u64::MAX is accepted once (the key holder sent
/// it), and then 0, u64::MAX and everything between are `replayed`. A rejected FORCERENEW
/// commits nothing: the counter stays where the last renewal put it.
#[test]
fn attack_forcerenew_counter_u64_max_then_zero_is_replayed() {
    let mut r = Rig::new(false);
    assert_eq!(r.one(&genuine(5)), RENEW);
    assert_eq!(r.one(&genuine(u64::MAX)), RENEW);
    for c in [0, 1, 5, u64::MAX - 1, u64::MAX] {
        assert_eq!(r.one(&genuine(c)), reject("replayed"), "counter {c}");
    }
    assert_eq!(r.counter(), Some(u64::MAX));
}

/// A relay may change `hops` and `giaddr`, so RFC 3118 leaves them out of the HMAC: a relayed
/// genuine FORCERENEW renews, a relayed copy of one already accepted is `replayed`, and a change
/// to any other header field on the way is `bad_mac`.
#[test]
fn attack_forcerenew_relayed_hops_and_giaddr() {
    let relay = |mut m: Vec<u8>, hops: u8| {
        m[3] = hops;
        m[24..28].copy_from_slice(&[10, 77, 0, 254]);
        m
    };
    let mut r = Rig::new(false);
    assert_eq!(r.one(&relay(genuine(5), 1)), RENEW);
    assert_eq!(r.one(&relay(genuine(5), 2)), reject("replayed"));
    assert_eq!(r.one(&genuine(5)), reject("replayed"), "the same counter, not relayed");
    for (what, field) in
        [("secs", 8..10), ("flags", 10..12), ("ciaddr", 12..16), ("yiaddr", 16..20), ("siaddr", 20..24), ("xid", 4..8)]
    {
        let mut m = relay(genuine(6), 1);
        m[field.start] ^= 0x80;
        assert_eq!(r.one(&m), reject("bad_mac"), "{what} changed on the way");
    }
    assert_eq!(r.one(&relay(genuine(6), 255)), RENEW, "hops at its maximum");
    assert_eq!(r.counter(), Some(6));
}

/// DESIGN §4.2 check 2: a FORCERENEW from 0.0.0.0 or 255.255.255.255 is `bad_source`, before
/// its authentication is looked at (unsigned and forged ones get the same reason) and without
/// committing the genuine one's counter.
#[test]
fn attack_forcerenew_from_zero_or_broadcast_source_is_bad_source_before_auth() {
    let unsigned = message(&[], &[], &[]);
    let mut forged = genuine(7);
    let mac_at = opt90_values(&forged, main_region(&forged))[0] + 15;
    forged[mac_at] ^= 0xff;
    let mut r = Rig::new(true);
    for src in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST] {
        for (what, m) in [("genuine", genuine(7)), ("unsigned", unsigned.clone()), ("forged", forged.clone())] {
            assert_eq!(r.one_from(&m, src), reject("bad_source"), "{what} from {src}");
        }
    }
    assert_eq!(r.counter(), None);
    assert_eq!(r.one(&genuine(7)), RENEW, "counter 7 was never committed");
}

/// DESIGN §4.2 check 1, first of all: a BOOTREQUEST, another hardware type or address length,
/// or another client's chaddr is `not_for_us`, whatever its source or authentication.
#[test]
fn attack_forcerenew_not_for_us_is_checked_first() {
    let edits: [(&str, fn(&mut Vec<u8>)); 5] = [
        ("op BOOTREQUEST", |m| m[0] = 1),
        ("htype IEEE 802", |m| m[1] = 6),
        ("hlen 5", |m| m[2] = 5),
        ("hlen 16", |m| m[2] = 16),
        ("chaddr another", |m| m[33] = 0x11),
    ];
    for (what, edit) in edits {
        let mut m = genuine(9);
        edit(&mut m);
        let at = opt90_values(&m, main_region(&m))[0];
        sign_delayed(&mut m, at, DKEY);
        for src in [SRV_IP, Ipv4Addr::UNSPECIFIED] {
            assert_eq!(Rig::new(false).one_from(&m, src), reject("not_for_us"), "{what} from {src}");
        }
    }
}

/// The HMAC covers the whole message as received except hops, giaddr and the MAC: one bit
/// flipped in any other byte (the padding after END included) and the frame does not renew;
/// flipped in hops or giaddr, it still does. Nothing that fails commits the counter.
#[test]
fn attack_forcerenew_hmac_covers_every_byte_but_hops_giaddr_and_the_mac() {
    let good = genuine(11);
    let mac = {
        let at = opt90_values(&good, main_region(&good))[0];
        at + 15..at + 31
    };
    for at in 0..good.len() {
        let mut m = good.clone();
        m[at] ^= 1 << (at % 8);
        let mut r = Rig::new(false);
        let d = r.send(&wrap(&m, SRV_IP));
        let renewed = d.iter().any(|d| d.verdict == Verdict::Renew);
        if at == 3 || (24..28).contains(&at) {
            assert!(renewed, "byte {at} (hops or giaddr) is not covered: {d:?}");
        } else {
            assert!(!renewed, "byte {at} flipped and the frame still renewed");
            assert_eq!(r.counter(), None, "byte {at}");
            // Fields whose change keeps the message well-formed and for us, so that only the
            // HMAC can tell: xid, secs, flags, ciaddr, yiaddr, siaddr, chaddr past hlen, sname,
            // file, option 54's value, the replay counter, the MAC, and the padding after END
            // (layout: 53 at 240, 54 at 243, 90 at 249 with its value at 251, END at 282).
            let only_the_hmac = (4..24).contains(&at)
                || (34..236).contains(&at)
                || (245..249).contains(&at)
                || (254..262).contains(&at)
                || mac.contains(&at)
                || at > 282;
            if only_the_hmac {
                assert_eq!(
                    d.iter().map(|d| (d.verdict, d.reason)).collect::<Vec<_>>(),
                    [reject("bad_mac")],
                    "byte {at}"
                );
            }
        }
    }
}

/// Issue 10 item 4: a rejected FORCERENEW's decision carries the frame's source and the key it
/// named, for the journal's warning, and the JSON decision log still shows neither.
#[test]
fn r10_rejected_forcerenew_names_its_source_and_key() {
    let mut r = Rig::new(false);
    let mut m = genuine(10);
    let at = opt90_values(&m, main_region(&m))[0];
    m[at + 20] ^= 1; // a bit of the HMAC itself
    let d = r.send(&wrap(&m, SRV_IP));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].verdict, d[0].reason), reject("bad_mac"));
    assert_eq!(d[0].source, Some((SRV, SRV_IP)));
    assert_eq!(d[0].key_id, Some(1));
    let json = ipsyncd::shell::decision_log::to_json(&d[0]);
    assert!(!json.contains("10.77.0.2") && !json.contains("02:00:00:00:00:03"), "{json}");
    let mut w = ipsyncd::shell::decision_log::RejectWarnings::default();
    let line = w.note(&d[0], d[0].time).unwrap_or_default();
    assert!(
        line.starts_with("rejected forcerenew: HMAC check failed for key 1 from 02:00:00:00:00:03/10.77.0.2"),
        "{line}"
    );
}
