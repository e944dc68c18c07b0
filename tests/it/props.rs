//! Properties over arbitrary bytes: no decoder panics, and parse → emit → parse is the identity
//! on the parsed form wherever parse succeeds.

use ipsyncd::engine::input::{decode_frame, DecodeContext};
use ipsyncd::shell::pcap::Reader;
use ipsyncd::wire::frame::{self, Checksum};
use ipsyncd::wire::{arp, dhcpv4, ipsync, Mac};
use proptest::prelude::*;

fn dhcp_like() -> impl Strategy<Value = Vec<u8>> {
    // A fixed header that passes the cheap checks, then random options: reaches the option walk.
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

fn dhcp_options() -> impl Strategy<Value = Vec<u8>> {
    // Well-formed option TLVs of codes the parser knows, so parses succeed often.
    let opt = (
        prop::sample::select(vec![1u8, 3, 6, 43, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61, 90, 145, 224, 12]),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(c, v)| {
            let mut o = vec![c, v.len() as u8];
            o.extend(v);
            o
        });
    prop::collection::vec(opt, 0..12).prop_map(|v| {
        let mut out = vec![53, 1, 5];
        for o in v {
            out.extend(o);
        }
        out.push(255);
        out
    })
}

fn ipsync_like() -> impl Strategy<Value = Vec<u8>> {
    (1u8..=3, any::<u32>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..120)).prop_map(|(t, k, s, tlvs)| {
        let len = 20 + tlvs.len() + 32;
        let mut b = b"IPSY".to_vec();
        b.extend_from_slice(&[1, t]);
        b.extend_from_slice(&(len as u16).to_be_bytes());
        b.extend_from_slice(&k.to_be_bytes());
        b.extend_from_slice(&s.to_be_bytes());
        b.extend(tlvs);
        b.extend_from_slice(&[0; 32]);
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

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
    fn udp_wrapped_payloads_reach_every_layer(payload in prop::collection::vec(any::<u8>(), 0..700), port in prop::sample::select(vec![68u16, 47474])) {
        let f = frame::UdpFrameRepr {
            src_mac: Mac([2, 0, 0, 0, 0, 1]), dst_mac: Mac::BROADCAST,
            src_ip: "10.0.0.1".parse().unwrap(), dst_ip: "10.0.0.255".parse().unwrap(),
            src_port: 67, dst_port: port, ttl: 64,
        }.emit(&payload);
        let ctx = DecodeContext { mac: Mac([2, 0, 0, 0, 0, 0x10]), port: 47474, server_option: 224 };
        for n in [f.len(), f.len() / 2, 45] {
            let _ = decode_frame(Some(1), &f[..n.min(f.len())], Checksum::Verify, &ctx);
        }
    }

    #[test]
    fn dhcp_random_options_never_panic(b in dhcp_like()) {
        if let Ok(p) = dhcpv4::Packet::new_checked(&b[..]) {
            let _ = dhcpv4::Repr::parse(&p, 224);
            for o in p.options() { let _ = o; }
        }
    }

    #[test]
    fn dhcp_parse_emit_parse(mut head in prop::collection::vec(any::<u8>(), 240), opts in dhcp_options(), op in 1u8..=2, hlen in 0u8..=16) {
        head[0] = op;
        head[2] = hlen;
        head[236..240].copy_from_slice(&dhcpv4::MAGIC_COOKIE.to_be_bytes());
        head.extend(opts);
        let p = dhcpv4::Packet::new_checked(&head[..]).unwrap();
        if let Ok(mut r) = dhcpv4::Repr::parse(&p, 224) {
            let out = r.to_bytes();
            let p2 = dhcpv4::Packet::new_checked(&out[..]).unwrap();
            let mut r2 = dhcpv4::Repr::parse(&p2, 224).unwrap();
            // Not part of the message's meaning: where option 90 sat, and whether an unusable
            // option 90 was seen (emit writes only usable ones).
            r.auth_offset = None;
            r2.auth_offset = None;
            r.auth_invalid = false;
            prop_assert_eq!(r, r2);
            // And emit is a fixed point on its own output.
            prop_assert_eq!(r2.to_bytes(), out);
        }
    }

    #[test]
    fn ipsync_parse_emit_parse(b in ipsync_like()) {
        if let Ok(p) = ipsync::Packet::new_checked(&b[..]) {
            if let Ok(r) = ipsync::Repr::parse(&p) {
                let out = r.to_bytes(b"key");
                let p2 = ipsync::Packet::new_checked(&out[..]).unwrap();
                prop_assert!(p2.verify(b"key"));
                prop_assert_eq!(ipsync::Repr::parse(&p2).unwrap(), r);
            }
        }
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
