//! Properties: no decoder panics on arbitrary bytes; emit → parse gives back what was emitted
//! (modulo each `Repr`'s documented normalisation) for every ipsync `Repr`; and parse → emit →
//! parse is the identity on the parsed form wherever parse succeeds.
//!
//! Random bytes almost never get past a magic number, so the round-trip properties start from
//! structurally valid messages (emitted from an arbitrary `Repr`, or built from well-formed
//! options) and then mutate some of them. Each property counts how many cases reached the part
//! it is about and asserts a floor on that count: a generator that stops producing parseable
//! input fails the test instead of passing with a body that never ran.

use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded, InboundKind, IpsyncMsg};
use ipsyncd::shell::pcap::{self, Reader};
use ipsyncd::wire::frame::{self, Checksum};
use ipsyncd::wire::sig::{Trailer, VerifyKey};
use ipsyncd::wire::{arp, dhcpv4, ipsync, Mac};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

const CASES: u32 = 2000;
const KEY: &[u8] = b"props-key";

/// Runs `body` on [`CASES`] values of `strategy`. `body` returns which of `N` branches the case
/// took; the per-branch counts come back for the caller's floors.
fn run_counting<S: Strategy, const N: usize>(
    name: &str,
    strategy: S,
    body: impl Fn(S::Value) -> Result<usize, TestCaseError>,
) -> [u32; N] {
    let counts: [AtomicU32; N] = std::array::from_fn(|_| AtomicU32::new(0));
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |v| {
        let branch = body(v)?;
        prop_assert!(branch < N, "branch {} out of range", branch);
        counts[branch].fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let counts = counts.map(|c| c.into_inner());
    eprintln!("{name}: cases per branch {counts:?}");
    counts
}

/// `part` is at least `percent` of `total`.
fn at_least(part: u32, total: u32, percent: u32) -> bool {
    u64::from(part) * 100 >= u64::from(total) * u64::from(percent)
}

// ---- ipsync ------------------------------------------------------------------------------

/// The owned parts of an ipsync `Repr` (a `Repr` borrows its name).
#[derive(Debug, Clone)]
struct IpsyncFields {
    msg_type: u8,
    key_id: u32,
    sequence: u64,
    server_ipv4: Option<Ipv4Addr>,
    server_mac: Option<[u8; 6]>,
    previous_ipv4: Option<Ipv4Addr>,
    server_name: Option<String>,
    service_port: Option<u16>,
    nonce: Option<[u8; 16]>,
    terminal_mac: Option<[u8; 6]>,
    terminal_ipv4: Option<Ipv4Addr>,
    status: Option<u8>,
}

impl IpsyncFields {
    fn repr(&self) -> ipsync::Repr<'_> {
        ipsync::Repr {
            server_ipv4: self.server_ipv4,
            server_mac: self.server_mac.map(Mac),
            previous_ipv4: self.previous_ipv4,
            server_name: self.server_name.as_deref(),
            service_port: self.service_port,
            nonce: self.nonce,
            terminal_mac: self.terminal_mac.map(Mac),
            terminal_ipv4: self.terminal_ipv4,
            status: self.status,
            ..ipsync::Repr::new(ipsync::MessageType::from(self.msg_type), self.key_id, self.sequence)
        }
    }

    /// Fills in whatever this type requires, so the message is valid by construction.
    fn with_required(mut self) -> IpsyncFields {
        let ip = Ipv4Addr::from(self.key_id);
        let mac = [2, 0, 0, 0, 0, self.key_id as u8];
        match ipsync::MessageType::from(self.msg_type) {
            ipsync::MessageType::Announce => {
                self.server_ipv4.get_or_insert(ip);
                self.server_mac.get_or_insert(mac);
            }
            ipsync::MessageType::Hello => {
                self.nonce.get_or_insert([self.sequence as u8; 16]);
                self.terminal_mac.get_or_insert(mac);
                self.terminal_ipv4.get_or_insert(ip);
            }
            _ => {
                self.msg_type = 3;
                self.server_ipv4.get_or_insert(ip);
                self.status.get_or_insert(ipsync::status::SUCCESS);
            }
        }
        self
    }
}

fn server_name() -> impl Strategy<Value = String> {
    prop_oneof![
        // Any characters, from none up to well past 64 bytes.
        prop::collection::vec(any::<char>(), 0..70).prop_map(String::from_iter),
        // Just around the limit, ending in a multi-byte character that may straddle byte 64.
        (58usize..66, prop::sample::select(vec!['é', '€', '😀', 'x']))
            .prop_map(|(n, c)| format!("{}{c}", "a".repeat(n))),
    ]
}

/// Every field independent: some Reprs lack a required TLV or have an unknown type.
fn any_ipsync() -> impl Strategy<Value = IpsyncFields> {
    let addr = || any::<u32>().prop_map(Ipv4Addr::from);
    let o = 0.8;
    (
        prop_oneof![9 => 1u8..=3, 1 => any::<u8>()],
        any::<u32>(),
        any::<u64>(),
        (
            prop::option::weighted(o, addr()),
            prop::option::weighted(o, any::<[u8; 6]>()),
            prop::option::weighted(o, addr()),
        ),
        (prop::option::weighted(o, server_name()), prop::option::weighted(o, any::<u16>())),
        (
            prop::option::weighted(o, any::<[u8; 16]>()),
            prop::option::weighted(o, any::<[u8; 6]>()),
            prop::option::weighted(o, addr()),
            prop::option::weighted(o, any::<u8>()),
        ),
    )
        .prop_map(|(msg_type, key_id, sequence, (sip, smac, pip), (name, port), (nonce, tmac, tip, status))| {
            IpsyncFields {
                msg_type,
                key_id,
                sequence,
                server_ipv4: sip,
                server_mac: smac,
                previous_ipv4: pip,
                server_name: name,
                service_port: port,
                nonce,
                terminal_mac: tmac,
                terminal_ipv4: tip,
                status,
            }
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    /// XOR one byte anywhere (header, TLVs or tag).
    Flip(Index, u8),
    /// Append a TLV of any type before the tag, fixing the length field.
    AppendTlv(u8, Vec<u8>),
    /// Drop the last `n` TLV bytes, fixing the length field.
    CutTlvs(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        1 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        1 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(t, v)| Mutation::AppendTlv(t, v)),
        1 => any::<Index>().prop_map(Mutation::CutTlvs),
    ]
}

fn mutate(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let tag_at = b.len() - 32;
    match m {
        Mutation::None => return b,
        Mutation::Flip(i, mask) => {
            let at = i.index(b.len());
            b[at] ^= mask;
            return b;
        }
        Mutation::AppendTlv(t, v) => {
            let mut tlv = vec![*t, v.len() as u8];
            tlv.extend_from_slice(v);
            b.splice(tag_at..tag_at, tlv);
        }
        Mutation::CutTlvs(i) => {
            let n = i.index(tag_at - ipsync::HEADER_LEN + 1);
            b.drain(tag_at - n..tag_at);
        }
    }
    let len = b.len() as u16;
    b[6..8].copy_from_slice(&len.to_be_bytes());
    b
}

#[test]
fn ipsync_emit_then_parse_for_any_repr() {
    let [emitted, refused, cut] = run_counting("ipsync_emit_then_parse_for_any_repr", any_ipsync(), |f| {
        let r = f.repr();
        let mut buf = [0u8; ipsync::MAX_LEN];
        match r.emit(&mut buf, KEY) {
            Ok(n) => {
                prop_assert_eq!(n, r.buffer_len());
                let p = ipsync::Packet::new_checked(&buf[..n]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert!(p.verify(&VerifyKey::Hmac(KEY.to_vec())));
                let back = ipsync::Repr::parse(&p).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let want = r.normalised();
                prop_assert_eq!(back, want);
                prop_assert_eq!(want.normalised(), want);
                // The only normalisation: the name, cut to ≤ 64 bytes at a character boundary
                // (so a prefix of the original), and gone when empty.
                match (r.server_name, want.server_name) {
                    (Some(s), Some(w)) => prop_assert!(s.starts_with(w) && !w.is_empty() && w.len() <= 64),
                    (s, None) => prop_assert!(s.map_or(true, str::is_empty)),
                    (None, Some(_)) => prop_assert!(false, "a name appeared"),
                }
                prop_assert_eq!(ipsync::Repr { server_name: r.server_name, ..want }, r);
                Ok(if want.server_name != r.server_name { 2 } else { 0 })
            }
            Err(ipsync::EmitError::Invalid(e)) => {
                // Refused exactly when parse would refuse the message, for the same reason.
                prop_assert_eq!(r.check_required(), Err(e));
                prop_assert!(matches!(e, ipsync::Error::Type(_) | ipsync::Error::TlvMissing { .. }), "{:?}", e);
                prop_assert!(buf.iter().all(|&b| b == 0), "a refused emit wrote bytes");
                Ok(1)
            }
            Err(e) => Err(TestCaseError::fail(format!("emit: {e}"))),
        }
    });
    let total = emitted + refused + cut;
    assert!(at_least(emitted + cut, total, 40), "only {} of {total} Reprs emitted", emitted + cut);
    assert!(at_least(refused, total, 5), "only {refused} of {total} Reprs refused");
    assert!(at_least(cut, total, 3), "only {cut} of {total} names were cut");
}

#[test]
fn ipsync_parse_emit_parse() {
    let strategy = (any_ipsync().prop_map(IpsyncFields::with_required), mutation());
    let [unmutated, mutated_parsed, mutated_rejected] = run_counting("ipsync_parse_emit_parse", strategy, |(f, m)| {
        let original = f.repr();
        let emitted = original.to_bytes(KEY);
        prop_assert!(!emitted.is_empty(), "valid by construction, yet emit refused {:?}", original);
        let b = mutate(emitted, &m);
        let parsed = ipsync::Packet::new_checked(&b[..]).and_then(|p| ipsync::Repr::parse(&p));
        if let Mutation::None = m {
            // Emitted and untouched: must parse, to what was emitted.
            prop_assert_eq!(parsed, Ok(original.normalised()));
        }
        let Ok(r) = parsed else { return Ok(2) };
        let out = r.to_bytes(KEY);
        let p2 = ipsync::Packet::new_checked(&out[..]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(p2.verify(&VerifyKey::Hmac(KEY.to_vec())));
        prop_assert_eq!(ipsync::Repr::parse(&p2), Ok(r));
        // Emit is a fixed point on its own output.
        prop_assert_eq!(r.to_bytes(KEY), out);
        Ok(if let Mutation::None = m { 0 } else { 1 })
    });
    let total = unmutated + mutated_parsed + mutated_rejected;
    assert!(at_least(unmutated, total, 30), "only {unmutated} of {total} cases unmutated");
    assert!(at_least(unmutated + mutated_parsed, total, 60), "only {} of {total} parsed", unmutated + mutated_parsed);
    assert!(at_least(mutated_parsed, total, 10), "only {mutated_parsed} of {total} mutated messages parsed");
    assert!(at_least(mutated_rejected, total, 5), "only {mutated_rejected} of {total} mutations rejected");
}

// ---- DHCPv4 ------------------------------------------------------------------------------

/// The value lengths an option of `code` may have (`None`: any).
fn valid_len(code: u8) -> Option<&'static [usize]> {
    match code {
        1 | 50 | 51 | 54 | 58 | 59 => Some(&[4]),
        3 | 6 => Some(&[4, 8, 12]),
        57 => Some(&[2]),
        90 => Some(&[31, 28]),
        _ => None,
    }
}

/// One option of a code the parser knows, well formed nine times in ten.
fn dhcp_option() -> impl Strategy<Value = Vec<u8>> {
    let codes = vec![1u8, 3, 6, 12, 43, 50, 51, 54, 55, 57, 58, 59, 61, 90, 145, 224];
    (prop::sample::select(codes), any::<Index>(), prop::collection::vec(any::<u8>(), 0..40), 0u8..10).prop_map(
        |(code, pick, mut v, broken)| {
            if let (Some(lens), true) = (valid_len(code), broken != 0) {
                v.resize(lens[pick.index(lens.len())], 0x5a);
            }
            match code {
                // A usable option 90 (RFC 3118 delayed, or RFC 6704 reconfigure) most of the time.
                90 if broken != 0 => {
                    let (proto, info) = if v.len() == 31 { (1, None) } else { (3, Some(1 + pick.index(2) as u8)) };
                    v[..3].copy_from_slice(&[proto, 1, 0]);
                    if let Some(i) = info {
                        v[11] = i;
                    }
                }
                // The cloud server as four bytes or as a dotted string.
                224 if broken > 4 => {
                    v = Ipv4Addr::from(u32::from_be_bytes([v.len() as u8, 7, 7, 7])).to_string().into_bytes()
                }
                224 if broken != 0 => v.resize(4, 9),
                _ => {}
            }
            let mut o = vec![code, v.len() as u8];
            o.extend(v);
            o
        },
    )
}

fn dhcp_options(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(dhcp_option(), 0..max).prop_map(|v| v.concat())
}

/// A DHCP message: random fixed header, type 53 first, well-formed options, sometimes option
/// 52 with well-formed options in `file` and/or `sname`.
fn dhcp_message() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 236),
        1u8..=2,
        0u8..=16,
        1u8..=9,
        dhcp_options(10),
        prop_oneof![3 => Just(0u8), 1 => 1u8..=3],
        dhcp_options(4),
        dhcp_options(3),
    )
        .prop_map(|(mut m, op, hlen, t, main, overload, file, sname)| {
            m[0] = op;
            m[2] = hlen;
            m.extend_from_slice(&dhcpv4::MAGIC_COOKIE.to_be_bytes());
            m.extend_from_slice(&[53, 1, t]);
            m.extend(main);
            if overload != 0 {
                m.extend_from_slice(&[52, 1, overload]);
                // Fill the regions with PAD, then as many whole options as fit, then END.
                for (range, opts) in [(108..236, file), (44..108, sname)] {
                    m[range.clone()].fill(0);
                    let room = range.len() - 1;
                    let mut at = 0;
                    while at < opts.len() && at + 2 + usize::from(opts[at + 1]) <= room {
                        at += 2 + usize::from(opts[at + 1]);
                    }
                    m[range.start..range.start + at].copy_from_slice(&opts[..at]);
                    m[range.start + at] = 255;
                }
            }
            m.push(255);
            m
        })
}

#[test]
fn dhcp_parse_emit_parse() {
    let [parsed, rejected] = run_counting("dhcp_parse_emit_parse", dhcp_message(), |m| {
        let p = dhcpv4::Packet::new_checked(&m[..]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        // The one option walker agrees with parse: every option, in order, no error.
        // Parse walks with `options()`: a walk error is parse's error, and a clean walk is
        // needed for parse to succeed.
        let walked: Result<Vec<_>, _> = p.options().collect();
        let parsed = dhcpv4::Repr::parse(&p, 224);
        if let Err(e) = walked {
            prop_assert_eq!(parsed, Err(e));
        }
        let Ok(mut r) = parsed else { return Ok(1) };
        let out = r.to_bytes();
        let p2 = dhcpv4::Packet::new_checked(&out[..]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let mut r2 = dhcpv4::Repr::parse(&p2, 224).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        // Not part of the message's meaning: where option 90 sat, and whether an unusable
        // option 90 was seen (emit writes only usable ones).
        r.auth_offset = None;
        r2.auth_offset = None;
        r.auth_invalid = false;
        prop_assert_eq!(r, r2);
        // And emit is a fixed point on its own output.
        prop_assert_eq!(r2.to_bytes(), out);
        Ok(0)
    });
    let total = parsed + rejected;
    assert!(at_least(parsed, total, 40), "only {parsed} of {total} DHCP messages parsed");
    assert!(at_least(rejected, total, 2), "only {rejected} of {total} DHCP messages rejected");
}

fn dhcp_like() -> impl Strategy<Value = Vec<u8>> {
    // A fixed header that passes the cheap checks, then random option bytes.
    (prop::collection::vec(any::<u8>(), 236), 1u8..=2, 0u8..=16, prop::collection::vec(any::<u8>(), 0..400)).prop_map(
        |(mut head, op, hlen, opts)| {
            head[0] = op;
            head[2] = hlen;
            head.extend_from_slice(&dhcpv4::MAGIC_COOKIE.to_be_bytes());
            head.extend_from_slice(&opts);
            head
        },
    )
}

#[test]
fn dhcp_random_options_never_panic() {
    let [walked] = run_counting("dhcp_random_options_never_panic", dhcp_like(), |b| {
        let p = dhcpv4::Packet::new_checked(&b[..]).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let _ = dhcpv4::Repr::parse(&p, 224);
        for o in p.options() {
            let _ = o;
        }
        Ok(0)
    });
    assert_eq!(walked, CASES);
}

// ---- whole frames and the rest -----------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    // No condition in the body: every case runs all of it.
    #[test]
    fn frame_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
        let _ = frame::decode(&bytes, Checksum::Verify);
        let _ = frame::decode(&bytes, Checksum::Infer);
        let _ = frame::classify(&bytes);
        let ctx = DecodeContext { mac: Mac([2, 0, 0, 0, 0, 0x10]), port: 47474, server_option: 224 };
        let _ = decode_frame(Some(1), &bytes, Checksum::Skip, &ctx);
        let _ = arp::Packet::new_checked(&bytes[..]).and_then(|p| arp::Repr::parse(&p));
        let _ = ipsync::Packet::new_checked(&bytes[..]).and_then(|p| ipsync::Repr::parse(&p));
        let _ = Reader::new(bytes.clone()).map(|mut r| while let Ok(Some(_)) = r.next_record() {});
    }

    #[test]
    fn arp_parse_emit_parse(mut b in prop::collection::vec(any::<u8>(), 28..60)) {
        b[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        let r = arp::Repr::parse(&arp::Packet::new_checked(&b[..]).unwrap()).unwrap();
        let out = r.to_bytes();
        prop_assert_eq!(&out[..], &b[..28]);
        prop_assert_eq!(arp::Repr::parse(&arp::Packet::new_checked(&out[..]).unwrap()).unwrap(), r);
    }
}

/// A UDP payload and the port it goes to: DHCP-shaped to 68, ipsync-shaped to 47474, or random
/// bytes to either.
fn udp_payload() -> impl Strategy<Value = (Vec<u8>, u16)> {
    let ipsync = (any_ipsync().prop_map(IpsyncFields::with_required), mutation())
        .prop_map(|(f, m)| mutate(f.repr().to_bytes(KEY), &m));
    prop_oneof![
        2 => dhcp_message().prop_map(|m| (m, 68)),
        1 => dhcp_like().prop_map(|m| (m, 68)),
        2 => ipsync.prop_map(|m| (m, 47474)),
        1 => (prop::collection::vec(any::<u8>(), 0..700), prop::sample::select(vec![68u16, 47474])),
    ]
}

#[test]
fn udp_wrapped_payloads_reach_every_layer() {
    let ctx = DecodeContext { mac: Mac([2, 0, 0, 0, 0, 0x10]), port: 47474, server_option: 224 };
    // Branches: 0 DHCP decoded, 1 ipsync decoded, 2 DHCP rejected in its option walk, 3 ipsync
    // rejected in its TLV walk, 4 stopped earlier.
    let counts: [u32; 5] = run_counting("udp_wrapped_payloads_reach_every_layer", udp_payload(), |(payload, port)| {
        let f = frame::UdpFrameRepr {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac::BROADCAST,
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 255),
            src_port: 67,
            dst_port: port,
            ttl: 64,
        }
        .emit(&payload);
        // Cut frames stop at the IPv4/UDP layer; they must not panic either.
        for n in [f.len() / 2, 45] {
            let _ = decode_frame(Some(1), &f[..n.min(f.len())], Checksum::Verify, &ctx);
        }
        let Decoded::Inbound(i) = decode_frame(Some(1), &f, Checksum::Verify, &ctx) else {
            return Err(TestCaseError::fail("a whole UDP frame to our port was filtered or dropped"));
        };
        Ok(match i.kind {
            InboundKind::Dhcp(_) => 0,
            // The engine walks the TLVs once it knows the key's trailer (here HMAC, as unknown).
            InboundKind::Ipsync { src_ip } => match IpsyncMsg::parse(&i.raw, src_ip, Trailer::HmacSha256) {
                Ok(_) => 1,
                Err(r) if r.starts_with("ipsync_tlv") || r == "ipsync_server_name" => 3,
                Err(_) => 4,
            },
            InboundKind::Malformed { reason, .. } => match reason {
                "dhcp_option_overrun" | "dhcp_option_length" | "dhcp_overload" | "dhcp_message_type" => 2,
                r if r.starts_with("ipsync_tlv") || r == "ipsync_server_name" => 3,
                _ => 4,
            },
            _ => 4,
        })
    });
    let total: u32 = counts.iter().sum();
    for (what, n) in
        ["DHCP decoded", "ipsync decoded", "DHCP option walk rejected", "ipsync TLV walk rejected"].iter().zip(counts)
    {
        assert!(at_least(n, total, 3), "{what}: only {n} of {total} frames ({counts:?})");
    }
}

/// Captures written by our own writers from random records (so the reader gets past the magic
/// number and into its record walk), then one byte flipped or the file cut, or left alone.
/// (records, pcapng rather than pcap, a byte to flip, where to cut).
type Capture = (Vec<(u64, Vec<u8>)>, bool, Option<(Index, u8)>, Option<Index>);

fn capture() -> impl Strategy<Value = Capture> {
    (
        prop::collection::vec((0u64..=pcap::MAX_TS_US, prop::collection::vec(any::<u8>(), 0..200)), 0..6),
        any::<bool>(),
        prop::option::weighted(0.4, (any::<Index>(), 1u8..=255)),
        prop::option::weighted(0.3, any::<Index>()),
    )
}

#[test]
fn pcap_reader_round_trips_and_never_panics_on_damaged_captures() {
    // Branches: 0 untouched and read back exactly, 1 damaged but read to the end, 2 damaged and
    // stopped by a typed error.
    let [intact, damaged_read, damaged_error] = run_counting("pcap_reader", capture(), |(recs, ng, flip, cut)| {
        // Any time up to MAX_TS_US fits both formats at µs resolution.
        let bytes = if ng { pcap::write_pcapng(&recs) } else { pcap::write_pcap(&recs) };
        let mut b = bytes.clone();
        if let Some((i, mask)) = flip {
            let at = i.index(b.len());
            b[at] ^= mask;
        }
        if let Some(i) = cut {
            b.truncate(i.index(b.len() + 1));
        }
        let read = |b: Vec<u8>| -> Result<Vec<(u64, Vec<u8>)>, pcap::PcapError> {
            let mut r = Reader::new(b)?;
            let mut out = Vec::new();
            while let Some(rec) = r.next_record()? {
                out.push((rec.ts_us, rec.data.to_vec()));
            }
            Ok(out)
        };
        let got = read(b.clone());
        if b == bytes {
            prop_assert_eq!(got, Ok(recs));
            return Ok(0);
        }
        Ok(if got.is_ok() { 1 } else { 2 })
    });
    let total = intact + damaged_read + damaged_error;
    assert!(at_least(intact, total, 20), "only {intact} of {total} captures untouched");
    assert!(at_least(damaged_read, total, 3), "only {damaged_read} of {total} damaged captures read through");
    assert!(at_least(damaged_error, total, 10), "only {damaged_error} of {total} damaged captures rejected");
}
