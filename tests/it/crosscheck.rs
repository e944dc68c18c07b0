//! An independent decoder agrees with ours: dhcproto (owned and borrowed APIs) on every DHCP
//! message in the fixtures. Where we accept, dhcproto must decode the same fields. Where we
//! reject a frame that dhcproto decodes, the frame must be one of the deliberate rejections
//! below, rejected for the listed reason; any other such frame fails the test.

use crate::common::{fixtures, records};
use dhcproto::{Decodable, Decoder};
use ipsyncd::wire::dhcpv4;
use ipsyncd::wire::frame::{self, Body, Checksum};

/// (fixture, 1-based frame, our reason, why the rejection is right). dhcproto is lenient
/// where DESIGN §4.1/§4.2 are strict, so these frames decode there and not here.
const DELIBERATE: &[(&str, usize, &str, &str)] = &[
    ("malformed-dhcp", 1, "dhcp_option_overrun", "option 90 claims more bytes than the message holds (§4.2)"),
    ("malformed-dhcp", 2, "dhcp_hlen", "hlen 17 exceeds chaddr's 16 bytes (§4.2)"),
    ("malformed-dhcp", 3, "dhcp_magic_cookie", "wrong magic cookie (§4.2)"),
    ("malformed-truncated", 4, "udp_length", "the UDP length (4000) runs past the datagram: never parsed truncated"),
    ("noise", 3, "dhcp_magic_cookie", "300 zero bytes to port 67: no magic cookie, not DHCP"),
];

/// The UDP payload of an IPv4/UDP frame to port 67 or 68, read by hand without any length
/// check beyond the capture's: what dhcproto would be handed if our frame decoder were lenient.
fn raw_dhcp_payload(b: &[u8]) -> Option<&[u8]> {
    if b.get(12..14)? != [0x08, 0x00] || *b.get(23)? != 17 {
        return None;
    }
    let udp = 14 + usize::from(b.get(14)? & 0x0f) * 4;
    let dst = u16::from_be_bytes([*b.get(udp + 2)?, *b.get(udp + 3)?]);
    if dst != 67 && dst != 68 {
        return None;
    }
    b.get(udp + 8..)
}

#[test]
fn our_dhcp_decoder_agrees_with_dhcproto_on_every_fixture_frame() {
    let mut checked = 0;
    let mut rejected = Vec::new();
    for (name, cap, _) in fixtures() {
        for (i, (_, bytes)) in records(&cap).iter().enumerate() {
            let at = format!("{name} frame {}", i + 1);
            // Our verdict and the payload dhcproto gets: ours where our frame decoder
            // accepts, else the raw one.
            let (payload, verdict) = match frame::decode(bytes, Checksum::Infer) {
                Ok(f) => match f.body {
                    Body::Udp(u) if u.dst_port == 67 || u.dst_port == 68 => {
                        let parsed = dhcpv4::Packet::new_checked(u.payload).and_then(|p| dhcpv4::Repr::parse(&p, 224));
                        (u.payload, parsed.map_err(|e| e.reason()))
                    }
                    _ => continue,
                },
                Err(e) => match raw_dhcp_payload(bytes) {
                    Some(p) => (p, Err(e.reason())),
                    None => continue,
                },
            };
            let ours = match verdict {
                Ok(ours) => ours,
                Err(reason) => {
                    if dhcproto::v4::Message::decode(&mut Decoder::new(payload)).is_ok() {
                        let listed = DELIBERATE.iter().find(|d| d.0 == name && d.1 == i + 1);
                        assert!(listed.is_some(), "{at}: dhcproto decodes it, we reject it ({reason}), not listed");
                        assert_eq!(listed.map(|d| d.2), Some(reason), "{at}: rejected for another reason");
                        rejected.push((name.clone(), i + 1));
                    }
                    continue;
                }
            };

            let owned = dhcproto::v4::Message::decode(&mut Decoder::new(payload))
                .unwrap_or_else(|e| panic!("{at}: dhcproto: {e}"));
            assert_eq!(owned.xid(), ours.xid, "{at}");
            assert_eq!(owned.yiaddr(), ours.yiaddr, "{at}");
            assert_eq!(owned.ciaddr(), ours.ciaddr, "{at}");
            assert_eq!(&owned.chaddr()[..ours.chaddr.len()], ours.chaddr, "{at}");
            assert_eq!(owned.opts().msg_type().map(u8::from), Some(u8::from(ours.message_type)), "{at}");

            let borrowed = dhcproto::v4::borrowed::Message::new(payload).expect("borrowed");
            let mut seen_server_id = None;
            let mut seen_224 = None;
            let mut seen_90 = None;
            for o in borrowed.opts() {
                match u8::from(o.code()) {
                    54 => seen_server_id = Some(o.data().to_vec()),
                    224 => seen_224 = Some(o.data().to_vec()),
                    90 => seen_90 = Some(o.data().to_vec()),
                    _ => {}
                }
            }
            assert_eq!(seen_server_id, ours.server_identifier.map(|a| a.octets().to_vec()), "{at}");
            if let Some(c) = ours.cloud_server {
                if c.form == dhcpv4::ServerForm::Binary {
                    assert_eq!(seen_224, Some(c.addr.octets().to_vec()), "{at}");
                }
            }
            if let (Some(a), Some(off)) = (ours.auth, ours.auth_offset) {
                let v = seen_90.expect("option 90 seen by dhcproto");
                assert_eq!(&payload[off..off + v.len()], &v[..], "{at}");
                assert_eq!(v.len(), a.buffer_len(), "{at}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} DHCP frames cross-checked");
    // A stale entry would let a future wrong rejection of that frame pass unnoticed.
    for (fixture, frame, reason, _) in DELIBERATE {
        assert!(
            rejected.iter().any(|(n, f)| n == fixture && f == frame),
            "{fixture} frame {frame} ({reason}) is allow-listed but no longer a dhcproto-decodes/we-reject frame"
        );
    }
}
