//! An independent decoder agrees with ours: dhcproto (owned and borrowed APIs) on every valid
//! DHCP message in the fixtures.

use crate::common::{fixtures, records};
use dhcproto::{Decodable, Decoder};
use ipsyncd::wire::dhcpv4;
use ipsyncd::wire::frame::{self, Body, Checksum};

#[test]
fn our_dhcp_decoder_agrees_with_dhcproto_on_every_fixture_frame() {
    let mut checked = 0;
    for (name, cap, _) in fixtures() {
        for (i, (_, bytes)) in records(&cap).iter().enumerate() {
            let Ok(f) = frame::decode(bytes, Checksum::Infer) else {
                continue;
            };
            let Body::Udp(u) = f.body else { continue };
            if u.dst_port != 67 && u.dst_port != 68 {
                continue;
            }
            let Ok(p) = dhcpv4::Packet::new_checked(u.payload) else {
                continue;
            };
            let Ok(ours) = dhcpv4::Repr::parse(&p, 224) else {
                continue;
            };
            let at = format!("{name} frame {}", i + 1);

            let owned = dhcproto::v4::Message::decode(&mut Decoder::new(u.payload))
                .unwrap_or_else(|e| panic!("{at}: dhcproto: {e}"));
            assert_eq!(owned.xid(), ours.xid, "{at}");
            assert_eq!(owned.yiaddr(), ours.yiaddr, "{at}");
            assert_eq!(owned.ciaddr(), ours.ciaddr, "{at}");
            assert_eq!(&owned.chaddr()[..ours.chaddr.len()], ours.chaddr, "{at}");
            assert_eq!(owned.opts().msg_type().map(u8::from), Some(u8::from(ours.message_type)), "{at}");

            let borrowed = dhcproto::v4::borrowed::Message::new(u.payload).expect("borrowed");
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
                assert_eq!(&u.payload[off..off + v.len()], &v[..], "{at}");
                assert_eq!(v.len(), a.buffer_len(), "{at}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} DHCP frames cross-checked");
}
