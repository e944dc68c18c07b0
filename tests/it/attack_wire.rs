//! Attacks on the ipsync wire (issue 8 item 7, DESIGN §4.3 and §5): ANNOUNCEs naming unusable
//! servers, sequences at the edges, TLVs that lie, SERVER_NAMEs that are not text, Ed25519
//! trailers that are almost right, IP fragments and checksums, and floods from random MACs.
//!
//! Every frame is built here, byte by byte where the emitters would refuse to, signed with the
//! real keys so that only the attacked field is wrong, and pushed through the decoder and the
//! engine the way the worker does (`decode_frame` + `Engine::handle_frame`), with simulated
//! time. The pcap fixtures hold one example of several of these; here each attack is a table.

use crate::heap::live_bytes;
use ipsyncd::config::Config;
use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded};
use ipsyncd::engine::{Action, Decision, Engine, EngineConfig, HookReason, Instant, Mode, State, Verdict};
use ipsyncd::wire::frame::{self, Checksum, UdpFrameRepr};
use ipsyncd::wire::sig::{self, Signer, SigningKey, VerifyKey, VerifyingKey};
use ipsyncd::wire::{arp, Mac};
use std::net::Ipv4Addr;

const ME: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
const MY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
const B_MAC: Mac = Mac([2, 0, 0, 0, 0, 2]);
const C_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 30);
const C_MAC: Mac = Mac([2, 0, 0, 0, 0, 3]);
const EVIL: Mac = Mac([2, 0, 0, 0, 0, 0x66]);
/// `[[key]] id 1`: a shared secret.
const HMAC: [u8; 32] = [0x42; 32];
const HMAC_ID: u32 = 1;
/// `[[key]] id 3`: the terminal holds the public half of the pair with this seed.
const ED_SEED: [u8; 32] = [0x33; 32];
const ED_ID: u32 = 3;
const T0: Instant = Instant::from_secs(1_800_000_000);
/// Frames of one test are this far apart: well inside the 50/s per-source limit.
const STEP_MS: u64 = 25;

fn ed() -> SigningKey {
    SigningKey::from_bytes(&ED_SEED)
}

/// A terminal with the shared key 1 only: ANNOUNCEs under it are authentic.
fn config(max_age_s: u64) -> EngineConfig {
    let mut c = EngineConfig::new(Mode::Follow, ME);
    c.address = Some("10.77.0.10/24".parse().unwrap());
    c.keys.insert(HMAC_ID, VerifyKey::Hmac(HMAC.to_vec()));
    c.max_age_s = max_age_s;
    c
}

/// The recommended terminal (DESIGN §4.3): key 1 shared, for HELLO only, and key 3's Ed25519
/// public half, which alone authenticates ANNOUNCEs.
fn config_ed(max_age_s: u64) -> EngineConfig {
    let mut c = config(max_age_s);
    c.keys.insert(ED_ID, VerifyKey::Ed25519(ed().verifying_key()));
    c
}

/// An engine and its simulated clock: each frame is decided at `t`, then `t` moves on.
struct Rig {
    e: Engine,
    t: Instant,
    n: u64,
}

impl Rig {
    fn new(max_age_s: u64) -> Rig {
        Rig::with(config(max_age_s))
    }
    fn ed(max_age_s: u64) -> Rig {
        Rig::with(config_ed(max_age_s))
    }
    fn with(cfg: EngineConfig) -> Rig {
        Rig { e: Engine::new(cfg, State::default(), 1), t: T0, n: 0 }
    }
    /// Every decision the frame made (none when the filter or decoder dropped it).
    fn send(&mut self, frame: &[u8]) -> Vec<Decision> {
        let d = feed(&mut self.e, self.t, frame);
        self.t = self.t.add_ms(STEP_MS);
        d
    }
    fn one(&mut self, frame: &[u8]) -> Decision {
        let mut d = self.send(frame);
        assert_eq!(d.len(), 1, "one frame, one decision: {d:?}");
        d.remove(0)
    }
    /// A sequence fresh at the next frame's time, larger than every earlier one.
    fn fresh(&mut self) -> u64 {
        self.n += 1;
        self.t.micros() + self.n
    }
    fn committed(&self, key_id: u32) -> Option<u64> {
        self.e.state().sequences.get(&key_id).copied()
    }
}

fn feed(e: &mut Engine, t: Instant, frame: &[u8]) -> Vec<Decision> {
    let ctx = DecodeContext { mac: ME, port: 47474, server_option: 224 };
    if let Decoded::Inbound(i) = decode_frame(Some(1), frame, Checksum::Verify, &ctx) {
        e.handle_frame(t, &i);
    }
    while e.poll_action().is_some() {}
    std::iter::from_fn(|| e.poll_decision()).collect()
}

fn vr(d: &Decision) -> (Verdict, Option<&'static str>) {
    (d.verdict, d.reason)
}

fn tlv(t: u8, v: &[u8]) -> Vec<u8> {
    let mut out = vec![t, v.len() as u8];
    out.extend_from_slice(v);
    out
}

/// SERVER_IPV4 and SERVER_MAC, the TLVs every ANNOUNCE needs.
fn server_tlvs(ip: Ipv4Addr, mac: Mac) -> Vec<u8> {
    [tlv(1, &ip.octets()), tlv(2, &mac.0)].concat()
}

/// An ipsync message with exactly these TLV bytes, signed by `signer` over everything before
/// its trailer; `length` overrides the length field (the signature then covers the lie).
fn message(kind: u8, key_id: u32, seq: u64, tlvs: &[u8], signer: Signer<'_>, length: Option<u16>) -> Vec<u8> {
    let n = 20 + tlvs.len() + signer.trailer().len();
    let mut b = Vec::with_capacity(n);
    b.extend_from_slice(b"IPSY");
    b.extend_from_slice(&[1, kind]);
    b.extend_from_slice(&length.unwrap_or(n as u16).to_be_bytes());
    b.extend_from_slice(&key_id.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(tlvs);
    let mut tag = vec![0; signer.trailer().len()];
    signer.sign(&b, &mut tag);
    b.extend_from_slice(&tag);
    b
}

fn announce(key_id: u32, seq: u64, tlvs: &[u8], signer: Signer<'_>) -> Vec<u8> {
    message(1, key_id, seq, tlvs, signer, None)
}

/// An HMAC ANNOUNCE of `ip` at `mac` under key 1.
fn hmac_announce(seq: u64, ip: Ipv4Addr, mac: Mac) -> Vec<u8> {
    announce(HMAC_ID, seq, &server_tlvs(ip, mac), Signer::Hmac(&HMAC))
}

/// The UDP payload to the ipsync port, broadcast from `src`.
fn udp(payload: &[u8], src: Mac) -> Vec<u8> {
    UdpFrameRepr {
        src_mac: src,
        dst_mac: Mac::BROADCAST,
        src_ip: Ipv4Addr::new(10, 77, 0, 66),
        dst_ip: Ipv4Addr::BROADCAST,
        src_port: 47474,
        dst_port: 47474,
        ttl: 64,
    }
    .emit(payload)
}

fn has_pin(d: &Decision) -> bool {
    d.actions.iter().any(|a| matches!(a, Action::PinNeighbour { .. } | Action::UnpinNeighbour { .. }))
}

/// B applied by a genuine ANNOUNCE: the server every later attack tries to move.
fn rig_following_b(max_age_s: u64) -> Rig {
    let mut r = Rig::new(max_age_s);
    let s = r.fresh();
    let d = r.one(&udp(&hmac_announce(s, B_IP, B_MAC), B_MAC));
    assert_eq!(d.verdict, Verdict::Apply, "{d:?}");
    r
}

fn server_is_b(r: &Rig) -> bool {
    r.e.state().server.is_some_and(|s| s.ip == B_IP && s.mac == Some(B_MAC))
}

/// DESIGN §5 "Usable addresses": every address that cannot be a unicast host on this segment is
/// `ignore bad_address`, with no action at all; the authenticated frame still commits its
/// sequence. The terminal's own address is `conflict own_address` (alarm, CONFLICT hook, no pin).
#[test]
fn attack_announce_unusable_server_addresses_are_ignored_and_pin_nothing() {
    let mut r = rig_following_b(86_400);
    let unusable = [
        "0.0.0.0",
        "0.1.2.3",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.1.1",
        "10.77.0.0",   // the subnet's network address
        "10.77.0.255", // its broadcast address
    ];
    for ip in unusable {
        let s = r.fresh();
        let d = r.one(&udp(&hmac_announce(s, ip.parse().unwrap(), C_MAC), EVIL));
        assert_eq!(vr(&d), (Verdict::Ignore, Some("bad_address")), "{ip}");
        assert!(d.actions.is_empty(), "{ip}: {:?}", d.actions);
        assert!(server_is_b(&r), "{ip} moved the server: {:?}", r.e.state().server);
        assert_eq!(r.committed(HMAC_ID), Some(s), "{ip}: an authenticated ANNOUNCE commits its sequence");
    }
    // Our own address: an alarm and a CONFLICT hook, nothing pinned, nothing persisted.
    let s = r.fresh();
    let d = r.one(&udp(&hmac_announce(s, MY_IP, C_MAC), EVIL));
    assert_eq!(vr(&d), (Verdict::Conflict, Some("own_address")));
    let ops: Vec<&str> = d.actions.iter().map(Action::op).collect();
    assert_eq!(ops, ["alarm", "hook"]);
    assert!(matches!(&d.actions[1], Action::Hook { reason: HookReason::Conflict, .. }));
    // Again within alarm_interval_s: the same verdict, coalesced to no action at all.
    let s = r.fresh();
    let d = r.one(&udp(&hmac_announce(s, MY_IP, C_MAC), EVIL));
    assert_eq!((vr(&d), d.actions.len()), ((Verdict::Conflict, Some("own_address")), 0));
    assert!(server_is_b(&r));
    // None of it stands in the way of a genuine move.
    let s = r.fresh();
    assert_eq!(r.one(&udp(&hmac_announce(s, C_IP, C_MAC), B_MAC)).verdict, Verdict::Apply);
}

/// A SERVER_MAC that is zero, broadcast, has the multicast bit set or is the terminal's own
/// would pin a neighbour entry no host answers for: `ignore bad_address`, nothing pinned.
#[test]
fn attack_announce_unusable_server_macs_are_ignored_and_pin_nothing() {
    let mut r = rig_following_b(86_400);
    for mac in [
        Mac::ZERO,
        Mac::BROADCAST,
        Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]), // IPv4 multicast
        Mac([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]), // IPv6 multicast
        Mac([0x03, 0x00, 0x00, 0x00, 0x00, 0x01]), // multicast bit on a local address
        ME,
    ] {
        let s = r.fresh();
        let d = r.one(&udp(&hmac_announce(s, C_IP, mac), EVIL));
        assert_eq!(vr(&d), (Verdict::Ignore, Some("bad_address")), "{mac}");
        assert!(d.actions.is_empty(), "{mac}: {:?}", d.actions);
        assert!(server_is_b(&r), "{mac}");
        assert_eq!(r.committed(HMAC_ID), Some(s));
    }
}

/// Sequence 0 on a synchronised clock is decades old: `stale`, and not committed. An equal or
/// lower sequence is `replayed` whatever its age (the sequence check comes first), and a
/// rejected frame never commits anything.
#[test]
fn attack_announce_sequence_zero_equal_and_lower() {
    let mut r = Rig::new(86_400);
    let d = r.one(&udp(&hmac_announce(0, B_IP, B_MAC), B_MAC));
    assert_eq!(vr(&d), (Verdict::Reject, Some("stale")));
    assert_eq!(r.committed(HMAC_ID), None);
    let s = r.fresh();
    assert_eq!(r.one(&udp(&hmac_announce(s, B_IP, B_MAC), B_MAC)).verdict, Verdict::Apply);
    for (what, seq) in [("equal", s), ("lower", s - 1), ("zero", 0), ("ancient and lower", 1)] {
        let d = r.one(&udp(&hmac_announce(seq, C_IP, C_MAC), B_MAC));
        assert_eq!(vr(&d), (Verdict::Reject, Some("replayed")), "{what}");
        assert_eq!(r.committed(HMAC_ID), Some(s), "{what}");
    }
    assert!(server_is_b(&r));
    // Under an Ed25519 key too, 0 is stale on a synchronised clock.
    let sk = ed();
    let mut r3 = Rig::ed(86_400);
    let d = r3.one(&udp(&announce(ED_ID, 0, &server_tlvs(C_IP, C_MAC), Signer::Ed25519(&sk)), B_MAC));
    assert_eq!(vr(&d), (Verdict::Reject, Some("stale")));
    // A forgery is judged by its signature before its sequence: bad_mac, even when replayed.
    let d = r.one(&udp(&announce(HMAC_ID, s, &server_tlvs(C_IP, C_MAC), Signer::Hmac(&[0; 32])), B_MAC));
    assert_eq!(vr(&d), (Verdict::Reject, Some("bad_mac")));
}

/// DESIGN §4.3: a far-future sequence that would block the key for good is `stale` on a
/// synchronised clock, and commits nothing, so the genuine sender is not locked out.
#[test]
fn attack_announce_sequence_u64_max_is_stale_on_a_synchronised_clock() {
    let mut r = rig_following_b(86_400);
    let before = r.committed(HMAC_ID);
    let d = r.one(&udp(&hmac_announce(u64::MAX, C_IP, C_MAC), B_MAC));
    assert_eq!(vr(&d), (Verdict::Reject, Some("stale")));
    assert_eq!(r.committed(HMAC_ID), before);
    let s = r.fresh();
    assert_eq!(r.one(&udp(&hmac_announce(s, C_IP, C_MAC), B_MAC)).verdict, Verdict::Apply);
}

/// With freshness off (`max_age_s = 0`) or an unsynchronised clock, nothing stops u64::MAX: it
/// is accepted once, and from then on every ANNOUNCE under that key is `replayed` (u64::MAX
/// itself included). This is the price of turning freshness off that DESIGN §4.3 describes.
#[test]
fn attack_announce_sequence_u64_max_without_freshness_is_accepted_once_then_all_replayed() {
    for unsynced in [false, true] {
        // A second shared key, 2, to show that one key's u64::MAX blocks no other.
        let mut c = config(if unsynced { 86_400 } else { 0 });
        c.keys.insert(2, VerifyKey::Hmac(vec![0x24; 32]));
        let mut r = Rig::with(c);
        if unsynced {
            r.e.set_wall_clock(r.t, r.t.micros(), false);
        }
        let d = r.one(&udp(&hmac_announce(u64::MAX, B_IP, B_MAC), B_MAC));
        assert_eq!(d.verdict, Verdict::Apply, "unsynced {unsynced}");
        assert_eq!(r.committed(HMAC_ID), Some(u64::MAX));
        for seq in [u64::MAX, u64::MAX - 1, r.fresh(), 0] {
            let d = r.one(&udp(&hmac_announce(seq, C_IP, C_MAC), B_MAC));
            assert_eq!(vr(&d), (Verdict::Reject, Some("replayed")), "unsynced {unsynced}, seq {seq}");
        }
        assert!(server_is_b(&r));
        // Another key is not blocked by it.
        let s = r.fresh();
        let d = r.one(&udp(&announce(2, s, &server_tlvs(C_IP, C_MAC), Signer::Hmac(&[0x24; 32])), B_MAC));
        assert_eq!(d.verdict, Verdict::Apply);
    }
}

/// "More than `max_age_s` away, in either direction" is stale: exactly max_age_s is not.
#[test]
fn attack_announce_freshness_window_edges_are_exact() {
    let window = 86_400 * 1_000_000;
    let now = T0.micros();
    for (seq, ok) in [(now - window, true), (now - window - 1, false), (now + window, true), (now + window + 1, false)]
    {
        let mut r = Rig::new(86_400);
        let d = r.one(&udp(&hmac_announce(seq, B_IP, B_MAC), B_MAC));
        let want = if ok { (Verdict::Apply, None) } else { (Verdict::Reject, Some("stale")) };
        assert_eq!(vr(&d), want, "sequence {} µs from now", seq as i128 - now as i128);
    }
}

/// TLV types 128 and above are extensions a receiver skips, whatever their length: the move
/// applies, under either kind of key.
#[test]
fn attack_announce_tlvs_128_and_above_are_skipped() {
    let sk = ed();
    let extensions = [tlv(128, &[]), tlv(200, &[0xee; 10]), tlv(254, &[0; 200]), tlv(255, &[1; 255])];
    for signer in [Signer::Hmac(&HMAC), Signer::Ed25519(&sk)] {
        let (key_id, mut r) =
            if matches!(signer, Signer::Hmac(_)) { (HMAC_ID, Rig::new(86_400)) } else { (ED_ID, Rig::ed(86_400)) };
        let mut tlvs = extensions[0].clone();
        tlvs.extend(tlv(1, &B_IP.octets()));
        tlvs.extend(&extensions[1]);
        tlvs.extend(tlv(2, &B_MAC.0));
        tlvs.extend(extensions[2..].concat());
        let s = r.fresh();
        let d = r.one(&udp(&announce(key_id, s, &tlvs, signer), B_MAC));
        assert_eq!((d.verdict, d.server_ip, d.server_mac), (Verdict::Apply, Some(B_IP), Some(B_MAC)), "{signer:?}");
    }
}

/// Unknown types below 128 (0 included: it is no padding) make the message malformed, even
/// when it is validly signed and carries every required TLV; a malformed frame commits nothing.
#[test]
fn attack_announce_unknown_tlv_below_128_is_malformed() {
    let mut r = Rig::new(86_400);
    for t in [0u8, 10, 64, 127] {
        let s = r.fresh();
        let tlvs = [server_tlvs(B_IP, B_MAC), tlv(t, &[1, 2, 3])].concat();
        let d = r.one(&udp(&announce(HMAC_ID, s, &tlvs, Signer::Hmac(&HMAC)), B_MAC));
        assert_eq!(vr(&d), (Verdict::Malformed, Some("ipsync_tlv_unknown")), "type {t}");
    }
    assert_eq!(r.committed(HMAC_ID), None);
    assert_eq!(r.e.state().server, None);
}

fn hook_name(d: &Decision) -> Option<Option<String>> {
    d.actions.iter().find_map(|a| match a {
        Action::Hook { reason: HookReason::ServerChanged, env } => {
            Some(env.server_name.map(|n| n.as_str().to_string()))
        }
        _ => None,
    })
}

/// A SERVER_NAME with control characters (a newline to forge a log line, an escape sequence for
/// the operator's terminal, NUL, C1 controls) is valid UTF-8 and the move applies, but the name
/// never reaches the hook. A clean name does.
#[test]
fn attack_announce_server_name_with_control_characters_never_reaches_the_hook() {
    for (name, passes) in [
        ("vdi-b", true),
        ("vdi-b.example, 64 bytes long: 0123456789abcdef0123456789abcd", true),
        ("vdi\n2025-01-01 ipsyncd: apply 6.6.6.6", false),
        ("\x1b]0;owned\x07vdi", false),
        ("vdi\0b", false),
        ("vdi\u{85}b", false),
        ("\u{7f}", false),
    ] {
        let mut r = Rig::new(86_400);
        let s = r.fresh();
        let tlvs = [server_tlvs(B_IP, B_MAC), tlv(4, name.as_bytes())].concat();
        let d = r.one(&udp(&announce(HMAC_ID, s, &tlvs, Signer::Hmac(&HMAC)), B_MAC));
        assert_eq!(d.verdict, Verdict::Apply, "{name:?}");
        let want = passes.then(|| name.to_string());
        assert_eq!(hook_name(&d), Some(want), "{name:?}");
    }
}

/// SERVER_NAME must be 1–64 bytes of UTF-8: bad UTF-8 is `malformed ipsync_server_name`, an
/// empty or 65-byte one `ipsync_tlv_length`, even validly signed.
#[test]
fn attack_announce_server_name_bad_utf8_or_bad_length_is_malformed() {
    let mut r = Rig::new(86_400);
    let cases: [(&[u8], &str); 7] = [
        (&[0xff], "ipsync_server_name"),
        (&[0xc0, 0x80], "ipsync_server_name"),             // overlong NUL
        (&[0xed, 0xa0, 0x80], "ipsync_server_name"),       // a UTF-16 surrogate
        (b"vdi\xe2\x82", "ipsync_server_name"),            // cut inside a character
        (&[0xf4, 0x90, 0x80, 0x80], "ipsync_server_name"), // past U+10FFFF
        (&[], "ipsync_tlv_length"),
        (&[b'a'; 65], "ipsync_tlv_length"),
    ];
    for (name, reason) in cases {
        let s = r.fresh();
        let tlvs = [server_tlvs(B_IP, B_MAC), tlv(4, name)].concat();
        let d = r.one(&udp(&announce(HMAC_ID, s, &tlvs, Signer::Hmac(&HMAC)), B_MAC));
        assert_eq!(vr(&d), (Verdict::Malformed, Some(reason)), "{name:?}");
    }
    assert_eq!(r.committed(HMAC_ID), None);
}

/// The length field must equal the UDP payload and lie in 52..=1024: a lie either way, signed
/// or not, is `malformed ipsync_length`; so is a message padded inside its datagram, and one
/// longer than 1024 bytes that tells the truth about it.
#[test]
fn attack_announce_length_field_lies_are_malformed() {
    let mut r = Rig::new(86_400);
    let tlvs = server_tlvs(B_IP, B_MAC);
    let true_len = (20 + tlvs.len() + 32) as u16;
    for lie in [true_len + 1, true_len - 1, 0, 51, 52, 1024, 1025, u16::MAX] {
        let s = r.fresh();
        let d = r.one(&udp(&message(1, HMAC_ID, s, &tlvs, Signer::Hmac(&HMAC), Some(lie)), B_MAC));
        assert_eq!(vr(&d), (Verdict::Malformed, Some("ipsync_length")), "length {lie} for {true_len}");
    }
    // The message is true, the datagram carries more.
    let s = r.fresh();
    let mut padded = hmac_announce(s, B_IP, B_MAC);
    padded.extend_from_slice(&[0; 8]);
    assert_eq!(vr(&r.one(&udp(&padded, B_MAC))), (Verdict::Malformed, Some("ipsync_length")));
    // 1100 bytes, and the field says so.
    let s = r.fresh();
    let big =
        [tlvs.clone(), [tlv(200, &[0; 253]), tlv(201, &[0; 253]), tlv(202, &[0; 253]), tlv(203, &[0; 253])].concat()]
            .concat();
    let huge = message(1, HMAC_ID, s, &big, Signer::Hmac(&HMAC), None);
    assert!(huge.len() > 1024);
    assert_eq!(vr(&r.one(&udp(&huge, B_MAC))), (Verdict::Malformed, Some("ipsync_length")));
    assert_eq!(r.committed(HMAC_ID), None);
}

/// TLVs that run into the trailer or past it, a dangling type byte, duplicates (even of the
/// same value), a wrong fixed length and a missing SERVER_MAC: each malformed with its own
/// reason, each validly signed under both kinds of key, and structure is judged before the key:
/// an unknown key_id on a malformed message is still `malformed`.
#[test]
fn attack_announce_tlv_overrun_duplicate_and_missing_are_malformed() {
    let sk = ed();
    let base = server_tlvs(B_IP, B_MAC);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("overrun into the trailer", [base.clone(), vec![4, 40, b'x', b'y']].concat(), "ipsync_tlv_overrun"),
        ("dangling type byte", [base.clone(), vec![4]].concat(), "ipsync_tlv_overrun"),
        ("dangling at the start", vec![1], "ipsync_tlv_overrun"),
        ("duplicate SERVER_IPV4", [base.clone(), tlv(1, &C_IP.octets())].concat(), "ipsync_tlv_duplicate"),
        ("duplicate, same value", [base.clone(), tlv(2, &B_MAC.0)].concat(), "ipsync_tlv_duplicate"),
        ("duplicate SERVER_NAME", [base.clone(), tlv(4, b"a"), tlv(4, b"b")].concat(), "ipsync_tlv_duplicate"),
        ("SERVER_IPV4 of 5 bytes", [tlv(1, &[10, 77, 0, 20, 0]), tlv(2, &B_MAC.0)].concat(), "ipsync_tlv_length"),
        ("SERVER_MAC of 4 bytes", [tlv(1, &B_IP.octets()), tlv(2, &[2, 0, 0, 2])].concat(), "ipsync_tlv_length"),
        ("no SERVER_MAC", tlv(1, &B_IP.octets()), "ipsync_tlv_missing"),
        ("no SERVER_IPV4", tlv(2, &B_MAC.0), "ipsync_tlv_missing"),
        ("no TLV at all", vec![], "ipsync_tlv_missing"),
    ];
    for (key_id, signer) in [(HMAC_ID, Signer::Hmac(&HMAC)), (ED_ID, Signer::Ed25519(&sk)), (99, Signer::Hmac(&HMAC))] {
        let mut r = if key_id == ED_ID { Rig::ed(86_400) } else { Rig::new(86_400) };
        for (what, tlvs, reason) in &cases {
            let s = r.fresh();
            let raw = announce(key_id, s, tlvs, signer);
            if raw.len() < 84 && key_id == ED_ID {
                continue; // too short for an Ed25519 trailer: the next test's business
            }
            let d = r.one(&udp(&raw, B_MAC));
            assert_eq!(vr(&d), (Verdict::Malformed, Some(*reason)), "key {key_id}: {what}");
        }
        assert!(r.e.state().sequences.is_empty() && r.e.state().server.is_none(), "key {key_id}");
    }
}

/// A valid Ed25519 ANNOUNCE with any single bit flipped is refused, never applied, and commits
/// nothing: bad_mac wherever the signature covers it (the sequence included: the signature is
/// checked before the sequence), or the header's own verdict where the flip breaks structure.
#[test]
fn attack_ed25519_any_flipped_bit_is_refused() {
    let sk = ed();
    let tlvs = [server_tlvs(B_IP, B_MAC), tlv(4, b"vdi-b"), tlv(5, &3389u16.to_be_bytes())].concat();
    let seq = T0.micros();
    let good = announce(ED_ID, seq, &tlvs, Signer::Ed25519(&sk));
    let len = good.len();
    let mut r = Rig::ed(86_400);
    assert_eq!(r.one(&udp(&good, B_MAC)).verdict, Verdict::Apply, "the unflipped frame is genuine");
    for at in 0..len {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[at] ^= 1 << bit;
            let mut r = Rig::ed(86_400);
            let d = r.one(&udp(&bad, B_MAC));
            assert!(
                matches!(d.verdict, Verdict::Reject | Verdict::Malformed | Verdict::Ignore),
                "byte {at} bit {bit}: {d:?}"
            );
            assert!(r.e.state().sequences.is_empty() && r.e.state().server.is_none(), "byte {at} bit {bit}");
            // The sequence, the signature, and the values of SERVER_IPV4, SERVER_MAC and SERVICE_PORT
            // (a flip in SERVER_NAME may first make it bad UTF-8, a flip in a type or length
            // byte breaks the TLV structure: those are malformed before the signature is read).
            let covered = (12..20).contains(&at)
                || at >= len - 64
                || (22..26).contains(&at)
                || (28..34).contains(&at)
                || (43..45).contains(&at);
            if covered {
                assert_eq!(vr(&d), (Verdict::Reject, Some("bad_mac")), "byte {at} bit {bit}");
            }
        }
    }
}

/// L, the order of the Ed25519 base point, little-endian (RFC 8032 §5.1).
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_le(a: &[u8], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    assert_eq!(carry, 0);
    out
}

/// verify_strict's refusals, on the wire: S + L (the same scalar, not canonical), S with its
/// top bit set, R the identity (a small-order point), and an all-zero signature. A malleated
/// signature would otherwise be a second "fresh" frame for one signed message. None commits,
/// so the canonical signature still applies afterwards.
#[test]
fn attack_ed25519_non_canonical_or_small_order_signatures_are_bad_mac() {
    let sk = ed();
    let mut r = Rig::ed(86_400);
    let s = r.fresh();
    let good = announce(ED_ID, s, &server_tlvs(B_IP, B_MAC), Signer::Ed25519(&sk));
    let at = good.len() - 64;
    let mut variants = Vec::new();
    let mut plus_l = good.clone();
    let sl = add_le(&good[at + 32..], &L);
    plus_l[at + 32..].copy_from_slice(&sl);
    variants.push(("S + L", plus_l));
    let mut high = good.clone();
    high[at + 63] |= 0x80;
    variants.push(("S with bit 255", high));
    let mut small_r = good.clone();
    small_r[at..at + 32].copy_from_slice(&identity());
    variants.push(("R = identity", small_r));
    let mut zero = good.clone();
    zero[at..].fill(0);
    variants.push(("all zero", zero));
    for (what, raw) in &variants {
        assert_ne!(raw, &good);
        let d = r.one(&udp(raw, B_MAC));
        assert_eq!(vr(&d), (Verdict::Reject, Some("bad_mac")), "{what}");
        assert_eq!(r.committed(ED_ID), None, "{what}");
    }
    assert_eq!(r.one(&udp(&good, B_MAC)).verdict, Verdict::Apply);
}

/// The encoding of the identity point (y = 1): the public key under which every message has the
/// signature (R = identity, S = 0) when verification is not strict.
fn identity() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
}

/// The eight points of small order, as the compressed encodings that name them (the identity,
/// the point of order 2, two of order 4 and four of order 8).
fn small_order_points() -> Vec<[u8; 32]> {
    let hex = |s: &str| -> [u8; 32] { ipsyncd::config::parse_hex(s).unwrap().try_into().unwrap() };
    vec![
        identity(),
        hex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        [0; 32],
        hex("0000000000000000000000000000000000000000000000000000000000000080"),
        hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
        hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    ]
}

/// A small-order public key accepts forgeries: it cannot be configured (the error names the
/// key's line), and even if one reached the engine, verify_strict refuses the trivial forgery
/// that would pass under it.
#[test]
fn attack_ed25519_small_order_public_key_cannot_be_configured() {
    for p in small_order_points() {
        let hexkey = ipsyncd::config::to_hex(&p);
        assert!(sig::public_key(&p).is_err(), "{hexkey} accepted as a public key");
        let text = format!("mode = \"follow\"\n\n[[key]]\nid = 3\npublic_key = \"0x{hexkey}\"\n");
        let e = Config::parse(&text).expect_err(&hexkey);
        assert!(e.contains("line 5") && e.contains("public_key"), "{hexkey}: {e}");
    }
    // Past the config: the identity point as the engine's key, and the forgery it admits.
    let weak = VerifyingKey::from_bytes(&identity()).expect("the identity is a curve point");
    assert!(weak.is_weak());
    let mut cfg = config(86_400);
    cfg.keys.insert(5, VerifyKey::Ed25519(weak));
    let mut r = Rig::with(cfg);
    let s = r.fresh();
    let mut forged = message(1, 5, s, &server_tlvs(EVIL_IP, EVIL), Signer::Hmac(&HMAC), None);
    forged.extend_from_slice(&[0; 32]); // room for a 64-byte trailer, length fixed below
    let n = forged.len() as u16;
    forged[6..8].copy_from_slice(&n.to_be_bytes());
    let at = forged.len() - 64;
    forged[at..at + 32].copy_from_slice(&identity());
    forged[at + 32..].fill(0);
    // The forgery is valid for a verifier that is not strict ...
    let sig = ed25519_dalek::Signature::from_slice(&forged[at..]).unwrap();
    assert!(weak.verify_strict(&forged[..at], &sig).is_err());
    assert!(ed25519_dalek::Verifier::verify(&weak, &forged[..at], &sig).is_ok(), "not the forgery intended");
    // ... and refused here.
    let d = r.one(&udp(&forged, EVIL));
    assert_eq!(vr(&d), (Verdict::Reject, Some("bad_mac")));
}

const EVIL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);

/// An HMAC trailer under the Ed25519 key_id: too short for a signature is `malformed
/// ipsync_trailer`; long enough, the last 64 bytes are read as the signature and it fails. A
/// signature by another pair, and an Ed25519 trailer under the HMAC key_id, fail likewise. None
/// applies or commits.
#[test]
fn attack_ed25519_wrong_trailer_kind_or_wrong_key_is_refused() {
    let other = SigningKey::from_bytes(&[0x44; 32]);
    let sk = ed();
    let mut r = Rig::ed(86_400);
    let short = announce(ED_ID, r.fresh(), &server_tlvs(B_IP, B_MAC), Signer::Hmac(&HMAC));
    assert!(short.len() < 84);
    assert_eq!(vr(&r.one(&udp(&short, B_MAC))), (Verdict::Malformed, Some("ipsync_trailer")));
    // Padded with skippable TLVs so that the TLV walk ends exactly where a signature would start:
    // the whole structure reads as valid, and only the "signature" is wrong.
    let tlvs = [server_tlvs(B_IP, B_MAC), tlv(200, &[0; 30])].concat();
    let mut long = announce(ED_ID, r.fresh(), &tlvs, Signer::Hmac(&HMAC));
    long.extend_from_slice(&[0; 32]);
    let n = long.len() as u16;
    long[6..8].copy_from_slice(&n.to_be_bytes());
    assert_eq!(vr(&r.one(&udp(&long, B_MAC))), (Verdict::Reject, Some("bad_mac")));
    let by_other = announce(ED_ID, r.fresh(), &server_tlvs(B_IP, B_MAC), Signer::Ed25519(&other));
    assert_eq!(vr(&r.one(&udp(&by_other, B_MAC))), (Verdict::Reject, Some("bad_mac")));
    // A signature with the right key over other bytes (the signed part of another message).
    let mut spliced = announce(ED_ID, r.fresh(), &server_tlvs(C_IP, C_MAC), Signer::Ed25519(&sk));
    let genuine = announce(ED_ID, r.fresh(), &server_tlvs(B_IP, B_MAC), Signer::Ed25519(&sk));
    let at = spliced.len() - 64;
    spliced[at..].copy_from_slice(&genuine[genuine.len() - 64..]);
    assert_eq!(vr(&r.one(&udp(&spliced, B_MAC))), (Verdict::Reject, Some("bad_mac")));
    let ed_under_hmac = announce(HMAC_ID, r.fresh(), &server_tlvs(B_IP, B_MAC), Signer::Ed25519(&sk));
    let d = r.one(&udp(&ed_under_hmac, B_MAC));
    assert!(matches!(vr(&d), (Verdict::Malformed, _) | (Verdict::Reject, Some("bad_mac"))), "{d:?}");
    assert!(r.e.state().sequences.is_empty() && r.e.state().server.is_none());
    // The configured pair still signs what the terminal takes.
    let msg = announce(ED_ID, r.fresh(), &server_tlvs(B_IP, B_MAC), Signer::Ed25519(&sk));
    assert_eq!(r.one(&udp(&msg, B_MAC)).verdict, Verdict::Apply);
}

/// DESIGN §4.3: "the recommended terminal holds two keys: the server's Ed25519 public key, for
/// ANNOUNCE and WELCOME, and a shared HMAC key for HELLO. Whoever steals the HMAC key can ask
/// `serve` for WELCOMEs and nothing more." So on a terminal that holds an Ed25519 key, an
/// ANNOUNCE signed with the (stealable) HMAC key must not move it.
#[test]
fn attack_ed25519_terminal_refuses_announces_signed_with_its_hello_hmac_key() {
    let mut r = Rig::ed(86_400);
    let s = r.fresh();
    let d = r.one(&udp(&hmac_announce(s, EVIL_IP, EVIL), EVIL));
    assert_eq!(
        vr(&d),
        (Verdict::Reject, Some("unknown_key")),
        "the HELLO key moved a terminal that holds an Ed25519 key"
    );
    assert_eq!(r.e.state().server, None);
}

/// Recomputes the IPv4 header checksum of an Ethernet frame (no VLAN tag).
fn fix_ip_checksum(f: &mut [u8]) {
    f[24..26].fill(0);
    let sum = !ipsyncd::wire::bytes::checksum_fold(ipsyncd::wire::bytes::checksum_accumulate(0, &f[14..34]));
    f[24..26].copy_from_slice(&sum.to_be_bytes());
}

/// IP fragments are never reassembled: a first fragment (more fragments set) is `malformed
/// ipv4_fragment`, a later one does not pass the filter. A corrupt UDP or IP checksum is
/// malformed at its layer. None of these commits the genuine message they carry.
#[test]
fn attack_fragmented_or_corrupt_frames_never_reach_the_message() {
    let mut r = Rig::new(86_400);
    let s = r.fresh();
    let good = udp(&hmac_announce(s, B_IP, B_MAC), B_MAC);
    let mut first = good.clone();
    first[20] |= 0x20; // MF
    fix_ip_checksum(&mut first);
    assert_eq!(vr(&r.one(&first)), (Verdict::Malformed, Some("ipv4_fragment")));
    let mut later = good.clone();
    later[20..22].copy_from_slice(&0x0002u16.to_be_bytes()); // offset 16 bytes, last fragment
    fix_ip_checksum(&mut later);
    assert!(r.send(&later).is_empty(), "a later fragment has no UDP header: the filter drops it");
    let mut udp_sum = good.clone();
    udp_sum[40] ^= 0x55;
    assert_eq!(vr(&r.one(&udp_sum)), (Verdict::Malformed, Some("udp_checksum")));
    let mut ip_sum = good.clone();
    ip_sum[24] ^= 0x55;
    assert_eq!(vr(&r.one(&ip_sum)), (Verdict::Malformed, Some("ipv4_checksum")));
    assert_eq!(r.committed(HMAC_ID), None);
    assert_eq!(r.one(&good).verdict, Verdict::Apply);
}

/// A deterministic stream of MACs no one owns (xorshift; unicast, locally administered).
struct RandomMacs(u64);

impl RandomMacs {
    fn next(&mut self) -> (Mac, u32) {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let b = self.0.to_be_bytes();
        (Mac([0x02, b[1], b[2], b[3], b[4], b[5]]), u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
    }
}

/// 100,000 ARP frames from random MACs: replies and gratuitous ARP claiming the pinned server's
/// address, and claims to random addresses of the subnet that fill the evidence table. The pin
/// never moves (no action ever pins or unpins, the state keeps B's MAC), the engine holds no
/// more memory after 100,000 frames than after the first 10,000, and a genuine move from B's
/// MAC still applies at once.
#[test]
fn attack_arp_flood_from_random_macs_never_moves_the_pin_and_memory_stays_bounded() {
    // The measure itself: a MiB held on this thread shows as a MiB.
    let before = live_bytes();
    let held = vec![1u8; 1 << 20];
    assert!(live_bytes() - before >= 1 << 20, "the counting allocator is not counting");
    drop(held);
    let mut r = rig_following_b(86_400);
    let mut macs = RandomMacs(0x9e37_79b9_7f4a_7c15);
    let mut t = r.t;
    let mut conflicts = 0;
    let mut flood = |r: &mut Rig, n: usize, t: &mut Instant| {
        for i in 0..n {
            let (mac, x) = macs.next();
            let spa = if i % 2 == 0 { B_IP } else { Ipv4Addr::new(10, 77, (x >> 8) as u8, x as u8) };
            let a = if i % 4 < 2 {
                arp::Repr { operation: arp::Operation::Reply, sha: mac, spa, tha: ME, tpa: MY_IP }
            } else {
                arp::Repr::announcement(mac, spa)
            };
            let dst = if i % 4 < 2 { ME } else { Mac::BROADCAST };
            for d in feed(&mut r.e, *t, &frame::emit_arp_frame(mac, dst, &a.to_bytes())) {
                assert!(!has_pin(&d) && !d.actions.iter().any(|a| a.op() == "set_server"), "{d:?}");
                assert_eq!(d.verdict, Verdict::Conflict, "{d:?}");
                conflicts += 1;
            }
            *t = t.add_ms(1) // 1000 frames a second: over the all-sources limit half the time
        }
    };
    flood(&mut r, 10_000, &mut t);
    let after_warmup = live_bytes();
    flood(&mut r, 90_000, &mut t);
    let grown = live_bytes() - after_warmup;
    assert!(grown < 64 * 1024, "the engine grew by {grown} bytes over 90,000 more flood frames");
    assert!(conflicts > 1000, "only {conflicts} conflict decisions: was the flood rate-limited away?");
    assert!(server_is_b(&r));
    let alarms = r.e.counters().drops.get("alarm_coalesced").copied().unwrap_or(0);
    assert!(alarms > 0, "alarms are coalesced: {:?}", r.e.counters().drops);
    // The genuine move, from B's own (exempt) MAC, in the middle of the flood.
    r.t = t;
    let s = r.fresh();
    let d = r.one(&udp(&hmac_announce(s, C_IP, C_MAC), B_MAC));
    assert_eq!(d.verdict, Verdict::Apply);
}

/// 100,000 forged ANNOUNCEs from random MACs at 10,000 a second: memory stays bounded as for ARP,
/// nothing is committed, and the pinned server's genuine move is decided in the middle of it.
#[test]
fn attack_announce_flood_from_random_macs_memory_stays_bounded() {
    let mut r = rig_following_b(86_400);
    let mut macs = RandomMacs(0x2545_f491_4f6c_dd1d);
    let committed = r.committed(HMAC_ID);
    let forged = hmac_forgery(r.t.micros() + 1_000_000);
    let mut t = r.t;
    let mut flood = |r: &mut Rig, n: usize, t: &mut Instant| {
        for _ in 0..n {
            let (mac, _) = macs.next();
            let mut f = forged.clone();
            f[6..12].copy_from_slice(&mac.0);
            for d in feed(&mut r.e, *t, &f) {
                assert_eq!(vr(&d), (Verdict::Reject, Some("bad_mac")));
            }
            *t = Instant::from_micros(t.micros() + 100);
        }
    };
    flood(&mut r, 10_000, &mut t);
    let after_warmup = live_bytes();
    flood(&mut r, 90_000, &mut t);
    let grown = live_bytes() - after_warmup;
    assert!(grown < 64 * 1024, "the engine grew by {grown} bytes over 90,000 more forged frames");
    assert_eq!(r.committed(HMAC_ID), committed);
    assert!(r.e.counters().drops.get("rate_limited").copied().unwrap_or(0) > 50_000);
    r.t = t;
    let s = r.fresh();
    assert_eq!(r.one(&udp(&hmac_announce(s, C_IP, C_MAC), B_MAC)).verdict, Verdict::Apply);
}

fn hmac_forgery(seq: u64) -> Vec<u8> {
    udp(&announce(HMAC_ID, seq, &server_tlvs(EVIL_IP, EVIL), Signer::Hmac(&[0x66; 32])), EVIL)
}
