//! Engine scenarios with simulated time: the engine is driven directly, the way the worker
//! drives it, with `now` chosen by the test.

use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded};
use ipsyncd::engine::{
    AcdMode, Action, Decision, Engine, EngineConfig, Inbound, Input, Instant, Mode, State, TxKind, Verdict,
};
use ipsyncd::server::{Announce, ForceRenew, ForceRenewAuth};
use ipsyncd::wire::dhcpv4::{self, CloudServer, MessageType, ServerForm};
use ipsyncd::wire::frame::{Checksum, UdpFrameRepr};
use ipsyncd::wire::sig::{Signer, VerifyKey};
use ipsyncd::wire::{arp, frame, Mac};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const ME: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
const MY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const SRV: Mac = Mac([2, 0, 0, 0, 0, 3]);
const SRV_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const KEY: [u8; 32] = [0x42; 32];
const T0: Instant = Instant::from_secs(1_800_000_000);

fn cfg(mode: Mode, acd: AcdMode) -> EngineConfig {
    EngineConfig {
        mode,
        mac: ME,
        address: Some("10.77.0.10/24".parse().unwrap()),
        initial_server: None,
        server_option: 224,
        port: 47474,
        keys: BTreeMap::from([(1, VerifyKey::Hmac(KEY.to_vec()))]),
        dhcp_keys: BTreeMap::from([(1, b"dhcpsecret-at-least-16".to_vec())]),
        allow_unauthenticated: false,
        acd,
        // These scenarios use small sequence numbers; freshness has its own test.
        max_age_s: 0,
        ..EngineConfig::new(mode, ME)
    }
}

fn inbound(frame: &[u8]) -> Inbound {
    let ctx = DecodeContext { mac: ME, port: 47474, server_option: 224 };
    match decode_frame(Some(1), frame, Checksum::Verify, &ctx) {
        Decoded::Inbound(i) => i,
        other => panic!("not an input: {other:?}"),
    }
}

fn decisions(e: &mut Engine) -> Vec<Decision> {
    while e.poll_action().is_some() {}
    std::iter::from_fn(|| e.poll_decision()).collect()
}

fn dhcp(t: MessageType, xid: u32, lease: u32, t1: u32, t2: u32) -> Vec<u8> {
    let from_client = matches!(t, MessageType::Discover | MessageType::Request);
    let r = dhcpv4::Repr {
        op: if from_client { 1 } else { 2 },
        yiaddr: if from_client { Ipv4Addr::UNSPECIFIED } else { MY_IP },
        server_identifier: Some(SRV_IP),
        requested_ip: if from_client { Some(MY_IP) } else { None },
        lease_time: (!from_client).then_some(lease),
        renewal_time: (!from_client).then_some(t1),
        rebinding_time: (!from_client).then_some(t2),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        cloud_server: (!from_client).then_some(CloudServer {
            code: 224,
            addr: Ipv4Addr::new(10, 77, 0, 1),
            form: ServerForm::Binary,
        }),
        ..dhcpv4::Repr::new(t, xid, &ME.0)
    };
    let (src_mac, src_ip, dst_ip, sp, dp) = if from_client {
        (ME, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67)
    } else {
        (SRV, SRV_IP, MY_IP, 67, 68)
    };
    UdpFrameRepr { src_mac, dst_mac: Mac::BROADCAST, src_ip, dst_ip, src_port: sp, dst_port: dp, ttl: 64 }
        .emit(&r.to_bytes())
}

/// DISCOVER/OFFER/REQUEST/ACK at T0 with the given lease times; returns the ACK's decision.
fn bind(e: &mut Engine, lease: u32, t1: u32, t2: u32) -> Decision {
    let xid = 0x1234;
    e.handle_frame(T0, &inbound(&dhcp(MessageType::Discover, xid, 0, 0, 0)));
    e.handle_frame(T0, &inbound(&dhcp(MessageType::Offer, xid, lease, t1, t2)));
    e.handle_frame(T0, &inbound(&dhcp(MessageType::Request, xid, 0, 0, 0)));
    e.handle_frame(T0, &inbound(&dhcp(MessageType::Ack, xid, lease, t1, t2)));
    let d = decisions(e);
    assert_eq!(d.iter().map(|d| d.verdict).collect::<Vec<_>>(), [Verdict::Select, Verdict::Lease]);
    d[1].clone()
}

fn ops(d: &Decision) -> Vec<String> {
    d.actions
        .iter()
        .map(|a| match a {
            Action::Transmit { kind, .. } => format!("transmit:{}", kind.as_str()),
            Action::Hook { reason, .. } => format!("hook:{}", reason.as_str()),
            other => other.op().to_string(),
        })
        .collect()
}

#[test]
fn lease_walks_t1_t2_and_expiry() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Optimistic), State::default(), 7);
    let ack = bind(&mut e, 100, 50, 87);
    assert!(ops(&ack).contains(&"set_address".to_string()));
    assert_eq!(e.client_state(), "BOUND");
    // The ARP resolution of option 224's server and the second ACD announcement come first.
    while let Some(t) = e.poll_timeout().filter(|&t| t < T0.add_secs(10)) {
        e.handle_timeout(t);
    }
    let _ = decisions(&mut e);

    assert_eq!(e.poll_timeout(), Some(T0.add_secs(50)), "T1");
    e.handle_timeout(T0.add_secs(50));
    let d = decisions(&mut e);
    assert_eq!((d.len(), d[0].input, d[0].verdict, d[0].frame), (1, Input::Timer, Verdict::Renew, None));
    assert_eq!(ops(&d[0]), ["transmit:request"]);
    assert_eq!(e.client_state(), "RENEWING");

    // Retransmission waits max(half the time to T2, 60 s), which is past T2: T2 comes first.
    assert_eq!(e.poll_timeout(), Some(T0.add_secs(87)), "T2");
    e.handle_timeout(T0.add_secs(87));
    let d = decisions(&mut e);
    assert_eq!((d[0].verdict, d[0].time), (Verdict::Renew, T0.add_secs(87)));
    assert_eq!(e.client_state(), "REBINDING");

    assert_eq!(e.poll_timeout(), Some(T0.add_secs(100)), "expiry");
    e.handle_timeout(T0.add_secs(100));
    let d = decisions(&mut e);
    assert_eq!(d[0].verdict, Verdict::Restart);
    assert_eq!(ops(&d[0]), ["del_address", "transmit:discover", "hook:LEASE_LOST"]);
    assert_eq!(e.client_state(), "SELECTING");
    assert!(e.state().lease.is_none());
}

#[test]
fn strict_acd_binds_within_ten_seconds_after_three_probes() {
    for seed in 0..20 {
        let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Strict), State::default(), seed);
        let ack = bind(&mut e, 3600, 1800, 3150);
        assert!(!ops(&ack).contains(&"set_address".to_string()), "strict ACD must not configure before probing");
        assert_eq!(e.client_state(), "PROBING");
        let mut probes = 0;
        let mut bound = false;
        // Three probes and the bind: a few more steps than that means the engine is stuck.
        for _ in 0..8 {
            let t = e.poll_timeout().expect("a probe deadline");
            assert!(t.saturating_sub(T0) <= 10_000_000, "seed {seed}: step at {t}");
            e.handle_timeout(t);
            let d = decisions(&mut e);
            assert_eq!(d[0].input, Input::Timer);
            let o = ops(&d[0]);
            if o.contains(&"set_address".to_string()) {
                assert!(o.contains(&"hook:LEASE_BOUND".to_string()));
                bound = true;
                break;
            }
            assert_eq!(o, ["transmit:arp_probe"]);
            probes += 1;
        }
        assert!(bound, "seed {seed}: not bound after {probes} probes");
        assert_eq!(probes, 3);
        assert_eq!(e.client_state(), "BOUND");
    }
}

#[test]
fn acd_conflict_while_probing_declines_and_restarts() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Strict), State::default(), 1);
    let _ = bind(&mut e, 3600, 1800, 3150);
    let other = Mac([2, 0, 0, 0, 0, 0x99]);
    let claim = arp::Repr::announcement(other, MY_IP);
    e.handle_frame(T0.add_ms(300), &inbound(&frame::emit_arp_frame(other, Mac::BROADCAST, &claim.to_bytes())));
    let d = decisions(&mut e);
    assert_eq!((d[0].verdict, d[0].reason), (Verdict::Conflict, Some("address_in_use")));
    assert!(ops(&d[0]).contains(&"transmit:decline".to_string()));
    assert_eq!(e.client_state(), "SELECTING");
}

fn announce_frame(seq: u64, src: Mac, key: &[u8]) -> Vec<u8> {
    Announce {
        key_id: 1,
        key: Signer::Hmac(key),
        sequence: seq,
        server_ip: Ipv4Addr::new(10, 77, 0, 20),
        server_mac: Mac([2, 0, 0, 0, 0, 2]),
        previous_ip: None,
        server_name: Some("vdi-1"),
        service_port: None,
    }
    .frame(47474)
    .into_iter()
    .enumerate()
    .map(|(i, b)| if (6..12).contains(&i) { src.0[i - 6] } else { b })
    .collect()
}

#[test]
fn rate_limit_only_above_fifty_per_second_per_source() {
    let mut e = Engine::new(cfg(Mode::Follow, AcdMode::Optimistic), State::default(), 0);
    let evil = Mac([2, 0, 0, 0, 0, 0x66]);
    for i in 0..60u64 {
        e.handle_frame(T0, &inbound(&announce_frame(i, evil, &[0; 32])));
    }
    let d = decisions(&mut e);
    assert_eq!(d.len(), 50, "burst of 50 decided, the rest dropped and counted");
    assert!(d.iter().all(|d| d.reason == Some("bad_mac")));
    assert_eq!(e.counters().drops.get("rate_limited"), Some(&10));
    // Another source is unaffected, and 50/s sustained is never limited.
    let good = Mac([2, 0, 0, 0, 0, 2]);
    for i in 0..100u64 {
        e.handle_frame(T0.add_ms(600 + i * 20), &inbound(&announce_frame(1000 + i, good, &KEY)));
    }
    assert_eq!(decisions(&mut e).len(), 100);
}

#[test]
fn sequence_commits_only_after_the_hmac_checks() {
    let mut e = Engine::new(cfg(Mode::Follow, AcdMode::Optimistic), State::default(), 0);
    let m = Mac([2, 0, 0, 0, 0, 2]);
    e.handle_frame(T0, &inbound(&announce_frame(u64::MAX, m, &[1; 32])));
    e.handle_frame(T0.add_ms(1), &inbound(&announce_frame(5, m, &KEY)));
    e.handle_frame(T0.add_ms(2), &inbound(&announce_frame(5, m, &KEY)));
    let v: Vec<_> = decisions(&mut e).iter().map(|d| (d.verdict, d.reason)).collect();
    assert_eq!(v, [(Verdict::Reject, Some("bad_mac")), (Verdict::Apply, None), (Verdict::Reject, Some("replayed"))]);
    assert_eq!(e.state().sequences.get(&1), Some(&5));
}

fn forcerenew_frame(auth: ForceRenewAuth<'_>, replay: u64) -> Vec<u8> {
    ForceRenew { server_ip: SRV_IP, server_mac: SRV, client_ip: MY_IP, client_mac: ME, xid: 99, replay, auth }.frame()
}

#[test]
fn unauthenticated_forcerenew_only_with_the_explicit_option() {
    for allow in [false, true] {
        let mut c = cfg(Mode::Follow, AcdMode::Optimistic);
        c.allow_unauthenticated = allow;
        let mut e = Engine::new(c, State::default(), 0);
        e.handle_frame(T0, &inbound(&forcerenew_frame(ForceRenewAuth::None, 0)));
        let d = decisions(&mut e);
        if allow {
            assert_eq!(d[0].verdict, Verdict::Renew);
        } else {
            assert_eq!((d[0].verdict, d[0].reason), (Verdict::Reject, Some("unauthenticated")));
        }
    }
}

#[test]
fn forcerenew_in_renewing_is_wrong_state_and_accepted_renewal_transmits() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Optimistic), State::default(), 3);
    let _ = bind(&mut e, 3600, 1800, 3150);
    let key = ForceRenewAuth::Delayed { secret_id: 1, key: b"dhcpsecret-at-least-16" };
    e.handle_frame(T0.add_secs(5), &inbound(&forcerenew_frame(key, 10)));
    let mut tx = Vec::new();
    while let Some(a) = e.poll_action() {
        if let Action::Transmit { kind, frame } = a {
            tx.push((kind, frame));
        }
    }
    let d = decisions(&mut e);
    assert_eq!(d[0].verdict, Verdict::Renew);
    assert_eq!(e.client_state(), "RENEWING");
    // The REQUEST we send is a real, decodable DHCP REQUEST from our address, unicast.
    let (kind, bytes) = &tx[0];
    assert_eq!(*kind, TxKind::Request);
    let f = frame::decode(bytes, Checksum::Verify).expect("our own frame decodes");
    let frame::Body::Udp(u) = f.body else { panic!("not udp") };
    assert_eq!((u.src_ip, u.dst_ip, u.dst_port), (MY_IP, SRV_IP, 67));
    let p = dhcpv4::Packet::new_checked(u.payload).unwrap();
    let r = dhcpv4::Repr::parse(&p, 224).unwrap();
    assert_eq!((r.message_type, r.ciaddr), (MessageType::Request, MY_IP));
    assert!(r.parameter_request_list.unwrap().contains(&224));

    e.handle_frame(T0.add_secs(6), &inbound(&forcerenew_frame(key, 11)));
    let d = decisions(&mut e);
    assert_eq!((d[0].verdict, d[0].reason), (Verdict::Reject, Some("wrong_state")));
}

#[test]
fn r6_acd_max_conflicts_rate_limits_new_addresses() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Strict), State::default(), 3);
    let other = Mac([2, 0, 0, 0, 0, 0x99]);
    let claim = arp::Repr::announcement(other, MY_IP);
    for n in 1..=10u32 {
        let _ = bind(&mut e, 3600, 1800, 3150);
        e.handle_frame(T0.add_ms(300), &inbound(&frame::emit_arp_frame(other, Mac::BROADCAST, &claim.to_bytes())));
        let d = decisions(&mut e);
        assert_eq!((d[0].verdict, d[0].reason), (Verdict::Conflict, Some("address_in_use")), "conflict {n}");
        let o = ops(&d[0]);
        assert!(o.contains(&"transmit:decline".to_string()), "conflict {n}: {o:?}");
        assert!(!o.contains(&"transmit:discover".to_string()), "{o:?}");
        if n < 10 {
            // RFC 2131 §3.1 (5): at least 10 s after a DECLINE.
            assert_eq!(e.poll_timeout(), Some(T0.add_ms(300).add_secs(10)), "conflict {n}");
        } else {
            // RFC 5227 §2.1.1: after MAX_CONFLICTS, one new address per RATE_LIMIT_INTERVAL.
            assert_eq!(e.poll_timeout(), Some(T0.add_ms(300).add_secs(60)));
        }
    }
    e.handle_timeout(T0.add_ms(300).add_secs(60));
    let d = decisions(&mut e);
    assert_eq!(ops(&d[0]), ["transmit:discover"], "the rate-limited DISCOVER comes due");
}

/// An ACK for `yiaddr` answering `xid`, from the DHCP server.
fn ack_for(xid: u32, yiaddr: Ipv4Addr) -> Vec<u8> {
    let r = dhcpv4::Repr {
        op: 2,
        yiaddr,
        server_identifier: Some(SRV_IP),
        lease_time: Some(3600),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        router: Some(SRV_IP),
        ..dhcpv4::Repr::new(MessageType::Ack, xid, &ME.0)
    };
    UdpFrameRepr { src_mac: SRV, dst_mac: ME, src_ip: SRV_IP, dst_ip: yiaddr, src_port: 67, dst_port: 68, ttl: 64 }
        .emit(&r.to_bytes())
}

/// Runs every deadline up to `until`; returns the decisions they made.
fn run_until(e: &mut Engine, until: Instant) -> Vec<Decision> {
    let mut out = Vec::new();
    while let Some(t) = e.poll_timeout().filter(|&t| t <= until) {
        e.handle_timeout(t);
        out.extend(decisions(e));
    }
    out
}

/// The engine's actions and decisions, drained together: (actions, decisions).
fn drain(e: &mut Engine) -> (Vec<Action>, Vec<Decision>) {
    let a = std::iter::from_fn(|| e.poll_action()).collect();
    (a, std::iter::from_fn(|| e.poll_decision()).collect())
}

/// The xid of the last REQUEST among `actions`.
fn request_xid(actions: &[Action]) -> u32 {
    let frame = actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Transmit { kind: TxKind::Request, frame } => Some(frame.clone()),
            _ => None,
        })
        .expect("a REQUEST was sent");
    let f = frame::decode(&frame, Checksum::Verify).expect("our frame decodes");
    let frame::Body::Udp(u) = f.body else { panic!("not udp") };
    dhcpv4::Repr::parse(&dhcpv4::Packet::new_checked(u.payload).unwrap(), 224).unwrap().xid
}

const DHCP_KEY: ForceRenewAuth<'static> = ForceRenewAuth::Delayed { secret_id: 1, key: b"dhcpsecret-at-least-16" };

#[test]
fn r7_strict_acd_probes_a_changed_address_and_swaps_only_when_bound() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Strict), State::default(), 5);
    let ack = bind(&mut e, 3600, 1800, 3150);
    assert!(!ops(&ack).contains(&"set_address".to_string()), "strict: nothing configured before ACD");
    let bound = run_until(&mut e, T0.add_secs(10));
    let set = bound.iter().find(|d| ops(d).contains(&"set_address".to_string())).expect("bound");
    assert!(set.time.saturating_sub(T0) <= 4_300_000, "bound {} µs after the ACK", set.time.saturating_sub(T0));

    e.handle_frame(T0.add_secs(20), &inbound(&forcerenew_frame(DHCP_KEY, 1)));
    let (actions, d) = drain(&mut e);
    assert_eq!(d[0].verdict, Verdict::Renew);
    let new_ip = Ipv4Addr::new(10, 77, 0, 11);
    e.handle_frame(T0.add_secs(20), &inbound(&ack_for(request_xid(&actions), new_ip)));
    let d = decisions(&mut e);
    assert_eq!(d[0].verdict, Verdict::Lease);
    assert!(ops(&d[0]).iter().all(|o| o != "set_address" && o != "del_address"), "{:?}", ops(&d[0]));
    assert_eq!(e.client_state(), "PROBING");
    assert_eq!(e.own_cidr().map(|c| c.addr), Some(MY_IP), "the old address serves while the new is probed");

    let d = run_until(&mut e, T0.add_secs(30));
    let swap = d.iter().find(|d| ops(d).contains(&"set_address".to_string())).expect("bound again");
    let o = ops(swap);
    let (set, del) = (o.iter().position(|x| x == "set_address"), o.iter().position(|x| x == "del_address"));
    assert!(set < del && del.is_some(), "the new address is added before the old is removed: {o:?}");
    assert!(o.contains(&"hook:LEASE_CHANGED".to_string()), "{o:?}");
    assert_eq!(e.own_cidr().map(|c| c.addr), Some(new_ip));
}

#[test]
fn r7_optimistic_acd_uses_the_address_at_once_and_a_conflict_while_probing_withdraws_it() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Optimistic), State::default(), 5);
    let ack = bind(&mut e, 3600, 1800, 3150);
    let o = ops(&ack);
    assert_eq!(o.first().map(String::as_str), Some("set_address"), "{o:?}");
    assert!(!o.contains(&"transmit:arp_announce".to_string()), "no announcement before the probes: {o:?}");
    let other = Mac([2, 0, 0, 0, 0, 0x99]);
    let claim = arp::Repr::announcement(other, MY_IP);
    e.handle_frame(T0.add_ms(500), &inbound(&frame::emit_arp_frame(other, Mac::BROADCAST, &claim.to_bytes())));
    let d = decisions(&mut e);
    let o = ops(&d[0]);
    assert_eq!((d[0].verdict, d[0].reason), (Verdict::Conflict, Some("address_in_use")));
    for want in ["del_address", "transmit:decline", "alarm", "hook:LEASE_LOST"] {
        assert!(o.contains(&want.to_string()), "{want} missing: {o:?}");
    }
    assert_eq!(e.own_cidr(), None);
    assert_eq!(next_discover(&mut e, T0.add_secs(100)), Some(T0.add_ms(500).add_secs(10)), "RFC 2131's 10 s");

    // Conflicts while optimistic probes run count towards MAX_CONFLICTS (the counter is reset
    // only when the probes found no one).
    let t = T0.add_secs(20);
    for _ in 1..10 {
        let _ = bind(&mut e, 3600, 1800, 3150);
        e.handle_frame(t, &inbound(&frame::emit_arp_frame(other, Mac::BROADCAST, &claim.to_bytes())));
        let _ = decisions(&mut e);
    }
    assert_eq!(next_discover(&mut e, t.add_secs(100)), Some(t.add_secs(60)), "RATE_LIMIT_INTERVAL");
}

#[test]
fn r7_a_claim_on_a_bound_address_is_defended_once_per_defend_interval() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Optimistic), State::default(), 5);
    let _ = bind(&mut e, 3600, 1800, 3150);
    let _ = run_until(&mut e, T0.add_secs(10)); // probes done, announced
    let claim = |mac: Mac| {
        inbound(&frame::emit_arp_frame(mac, Mac::BROADCAST, &arp::Repr::announcement(mac, MY_IP).to_bytes()))
    };
    let announces = |d: &[Decision]| d.iter().flat_map(ops).filter(|o| o == "transmit:arp_announce").count();
    e.handle_frame(T0.add_secs(20), &claim(Mac([2, 0, 0, 0, 0, 0x91])));
    assert_eq!(announces(&decisions(&mut e)), 1, "defended");
    e.handle_frame(T0.add_secs(25), &claim(Mac([2, 0, 0, 0, 0, 0x92])));
    let d = decisions(&mut e);
    assert_eq!((d[0].verdict, announces(&d)), (Verdict::Conflict, 0), "not again within DEFEND_INTERVAL");
    e.handle_frame(T0.add_secs(31), &claim(Mac([2, 0, 0, 0, 0, 0x93])));
    assert_eq!(announces(&decisions(&mut e)), 1, "defended again after it");
    assert_eq!(e.own_cidr().map(|c| c.addr), Some(MY_IP), "the address is kept");
}

#[test]
fn r7_authentic_forcerenews_renew_at_most_once_per_second() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Optimistic), State::default(), 5);
    let _ = bind(&mut e, 3600, 1800, 3150);
    let _ = run_until(&mut e, T0.add_secs(10));
    e.handle_frame(T0.add_secs(20), &inbound(&forcerenew_frame(DHCP_KEY, 1)));
    let (actions, d) = drain(&mut e);
    assert_eq!(d[0].verdict, Verdict::Renew);
    e.handle_frame(T0.add_secs(20), &inbound(&ack_for(request_xid(&actions), MY_IP)));
    assert_eq!(e.client_state(), "BOUND");
    let _ = decisions(&mut e);
    e.handle_frame(T0.add_secs(20).add_ms(500), &inbound(&forcerenew_frame(DHCP_KEY, 2)));
    let (actions, d) = drain(&mut e);
    assert!(d.is_empty() && actions.is_empty(), "over the limit: no line and nothing sent");
    assert_eq!(e.counters().drops.get("rate_limited"), Some(&1));
    e.handle_frame(T0.add_secs(21).add_ms(1), &inbound(&forcerenew_frame(DHCP_KEY, 2)));
    assert_eq!(decisions(&mut e)[0].verdict, Verdict::Renew, "the counter was not committed by the dropped one");
}

#[test]
fn r7_release_on_stop_releases_and_removes_the_address_only_when_asked() {
    for release in [false, true] {
        let mut c = cfg(Mode::Dhcp, AcdMode::Optimistic);
        c.release_on_stop = release;
        let mut e = Engine::new(c, State::default(), 5);
        let _ = bind(&mut e, 3600, 1800, 3150);
        let _ = run_until(&mut e, T0.add_secs(10));
        e.stop(T0.add_secs(20));
        let (actions, d) = drain(&mut e);
        if !release {
            assert!(d.is_empty() && actions.is_empty());
            continue;
        }
        assert_eq!(ops(&d[0]), ["transmit:release", "del_address", "hook:LEASE_LOST"]);
        let Some(Action::Transmit { frame: bytes, .. }) = actions.first() else { panic!("no release") };
        let f = frame::decode(bytes, Checksum::Verify).expect("decodes");
        let frame::Body::Udp(u) = f.body else { panic!("not udp") };
        assert_eq!((u.src_ip, u.dst_ip), (MY_IP, SRV_IP), "RFC 2131 §4.4.6: unicast to the server");
        assert!(e.state().lease.is_none());
    }
}

#[test]
fn r7_start_with_an_expired_lease_removes_its_address_and_a_live_one_reboots() {
    let mut e = Engine::new(cfg(Mode::Dhcp, AcdMode::Strict), State::default(), 5);
    let _ = bind(&mut e, 100, 50, 87);
    let _ = run_until(&mut e, T0.add_secs(10));
    let state = e.state().clone();
    assert!(state.lease.is_some());

    let mut late = Engine::new(cfg(Mode::Dhcp, AcdMode::Strict), state.clone(), 6);
    late.start(T0.add_secs(200));
    let d = decisions(&mut late);
    let restart = d.iter().find(|d| d.verdict == Verdict::Restart).expect("the client restarts");
    assert_eq!(ops(restart), ["transmit:discover", "del_address", "hook:LEASE_LOST"]);

    let mut soon = Engine::new(cfg(Mode::Dhcp, AcdMode::Strict), state, 6);
    soon.start(T0.add_secs(20));
    let (actions, d) = drain(&mut soon);
    let reboot = d.iter().find(|d| d.verdict == Verdict::Renew).expect("INIT-REBOOT");
    assert_eq!(ops(reboot), ["transmit:request"]);
    assert_eq!(soon.client_state(), "REBOOTING");
    let xid = request_xid(&actions);
    soon.handle_frame(T0.add_secs(20), &inbound(&ack_for(xid, MY_IP)));
    let bound = run_until(&mut soon, T0.add_secs(30));
    let o: Vec<String> = bound.iter().flat_map(ops).collect();
    assert!(o.contains(&"hook:LEASE_BOUND".to_string()) && !o.contains(&"del_address".to_string()), "{o:?}");
}

/// Runs deadlines up to `until`; the time of the first decision that sends a DISCOVER.
fn next_discover(e: &mut Engine, until: Instant) -> Option<Instant> {
    run_until(e, until).into_iter().find(|d| ops(d).contains(&"transmit:discover".to_string())).map(|d| d.time)
}

#[test]
fn r7_live_a_received_frame_with_our_own_mac_is_a_forgery_and_arms_nothing() {
    use ipsyncd::engine::input::{decode_frame_from, Direction};
    let ctx = DecodeContext { mac: ME, port: 47474, server_option: 224 };
    // A BOOTREQUEST "from us" to port 68: in a capture file it is our own frame …
    let mut forged = dhcp(MessageType::Request, 0x77, 0, 0, 0);
    forged[36..38].copy_from_slice(&68u16.to_be_bytes());
    forged[40..42].fill(0); // no UDP checksum
    let replay = decode_frame_from(Some(1), &forged, Checksum::Verify, Direction::Unknown, &ctx);
    assert!(
        matches!(replay, Decoded::Inbound(Inbound { kind: ipsyncd::engine::InboundKind::Own(_), .. })),
        "{replay:?}"
    );
    // … but live, received on the wire, it is spoofed: dropped before the engine sees it.
    let live = decode_frame_from(Some(1), &forged, Checksum::Verify, Direction::Inbound, &ctx);
    assert_eq!(live, Decoded::Dropped("spoofed_own_mac"));
    // Only what really left this host counts as ours, and only when it carries our MAC.
    let mut other = forged.clone();
    other[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x66]);
    assert_eq!(decode_frame_from(Some(1), &other, Checksum::Verify, Direction::Outgoing, &ctx), Decoded::Filtered);
}

/// An ANNOUNCE of `ip` at B's MAC, sent from `src`, signed with `key`.
fn announce_of(ip: Ipv4Addr, seq: u64, src: Mac, key: &[u8]) -> Vec<u8> {
    let mut f = Announce {
        key_id: 1,
        key: Signer::Hmac(key),
        sequence: seq,
        server_ip: ip,
        server_mac: Mac([2, 0, 0, 0, 0, 2]),
        previous_ip: None,
        server_name: None,
        service_port: None,
    }
    .frame(47474);
    f[6..12].copy_from_slice(&src.0);
    f
}

#[test]
fn r8_a_flood_forged_from_the_servers_own_mac_costs_bounded_checks_and_other_macs_never_starve_it() {
    use ipsyncd::engine::limits::{VERIFY_SERVER_PER_SEC, VERIFY_SERVER_RESERVE};
    let mut e = Engine::new(cfg(Mode::Follow, AcdMode::Optimistic), State::default(), 0);
    let b = Mac([2, 0, 0, 0, 0, 2]);
    let (b_ip, c_ip, d_ip) = (Ipv4Addr::new(10, 77, 0, 20), Ipv4Addr::new(10, 77, 0, 30), Ipv4Addr::new(10, 77, 0, 40));
    e.handle_frame(T0, &inbound(&announce_of(b_ip, 1000, b, &KEY)));
    assert_eq!(decisions(&mut e)[0].verdict, Verdict::Apply, "B pinned at its MAC");
    let drops = |e: &Engine, what: &str| e.counters().drops.get(what).copied().unwrap_or(0);

    // 5000 forgeries from B's own MAC, fresh sequences, in one instant: B's per-source bucket
    // decides its 49 remaining; past it only the server lane's spare checks are spent.
    let t = T0.add_ms(1);
    for i in 0..5000u64 {
        e.handle_frame(t, &inbound(&announce_of(c_ip, 2000 + i, b, &[0; 32])));
    }
    let d = decisions(&mut e);
    assert_eq!(d.len(), 49);
    assert!(d.iter().all(|d| d.reason == Some("bad_mac")));
    // The lane's spare: its burst less the reserve, less what B's 49 frames within its limit
    // took (its first ANNOUNCE, before B was pinned, was paid from the other lane).
    let checked_past_limit = drops(&e, "rate_limited");
    assert_eq!(checked_past_limit, VERIFY_SERVER_PER_SEC - VERIFY_SERVER_RESERVE - 49, "spare checks only");
    assert_eq!(drops(&e, "verify_budget"), 5000 - 49 - checked_past_limit, "the rest never checked");
    // Forged sequences commit nothing.
    assert_eq!(e.state().sequences.get(&1), Some(&1000));

    // 3000 forgeries from 3000 other MACs: the all-sources limit and their own lane hold them;
    // B's lane is untouched, so B's genuine move 10 ms later (its own bucket still drained) is
    // checked from the spare budget that refilled meanwhile, and applied.
    let t = T0.add_ms(2);
    for i in 0..3000u32 {
        let m = Mac([2, 0xaa, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        e.handle_frame(t, &inbound(&announce_of(d_ip, 10_000 + u64::from(i), m, &[0; 32])));
    }
    let d = decisions(&mut e);
    assert!(d.len() <= 500 && d.iter().all(|d| d.reason == Some("bad_mac")), "{}", d.len());
    let t = T0.add_ms(12);
    e.handle_frame(t, &inbound(&announce_of(c_ip, 100_000, b, &KEY)));
    let d = decisions(&mut e);
    assert_eq!((d.len(), d[0].verdict, d[0].server_ip), (1, Verdict::Apply, Some(c_ip)), "{d:?}");
    assert_eq!(e.state().sequences.get(&1), Some(&100_000));
}

#[test]
fn r8_within_the_rate_limits_the_verification_budget_never_refuses() {
    // DESIGN §5: below the limits every frame gets its decision. B's first ANNOUNCE and 499
    // other sources at once (the all-sources limit), B at 50/s for two seconds, and forged
    // FORCERENEWs from 500 MACs at once.
    let mut e = Engine::new(cfg(Mode::Follow, AcdMode::Optimistic), State::default(), 0);
    let b = Mac([2, 0, 0, 0, 0, 2]);
    e.handle_frame(T0, &inbound(&announce_of(Ipv4Addr::new(10, 77, 0, 20), 1, b, &KEY)));
    let mut n = decisions(&mut e).len();
    let wrong = ForceRenewAuth::Delayed { secret_id: 1, key: b"not-the-secret" };
    for i in 0..500u32 {
        let m = Mac([2, 0xaa, 0, 0, (i >> 8) as u8, i as u8]);
        if i < 499 {
            let f = announce_of(Ipv4Addr::new(10, 77, 0, 40), 10 + u64::from(i), m, &[0; 32]);
            e.handle_frame(T0.add_ms(1), &inbound(&f));
        }
        let mut f = forcerenew_frame(wrong, 5 + u64::from(i));
        f[6..12].copy_from_slice(&m.0);
        e.handle_frame(T0.add_ms(1), &inbound(&f));
    }
    for i in 0..100u64 {
        e.handle_frame(
            T0.add_ms(20 + i * 20),
            &inbound(&announce_of(Ipv4Addr::new(10, 77, 0, 20), 2 + i, b, &[0; 32])),
        );
    }
    n += decisions(&mut e).len();
    assert_eq!(n, 1 + 499 + 500 + 100);
    assert_eq!(e.counters().drops.get("verify_budget"), None);
    assert_eq!(e.counters().drops.get("rate_limited"), None);
}
