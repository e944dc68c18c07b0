//! Turning one captured frame into one owned, small [`Inbound`]: the hand-off from the capture
//! thread to the worker. Pure and deterministic, shared by live capture and replay.
//!
//! Contract: [`decode_frame`] never panics and never allocates more than one copy of a message
//! that must be authenticated (≤ one frame). Frames the kernel filter would drop come back as
//! [`Decoded::Filtered`] and make no decision; frames it would pass but that fail to decode come
//! back as `Malformed` with the input named by their UDP port; ARP that fails to decode is only
//! counted (DESIGN §5: ARP makes a line only as evidence).

use crate::wire::auth::AuthRepr;
use crate::wire::frame::{self, Body, Checksum, Class};
use crate::wire::sig::Trailer;
use crate::wire::{arp, dhcpv4, ipsync, Mac, Malformed};
use std::net::Ipv4Addr;
use std::ops::Range;

use super::decision::Input;
use super::vocab::ServerName;

/// The owned summary of a DHCP message: what the engine decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpMsg {
    pub msg_type: dhcpv4::MessageType,
    pub op: u8,
    pub xid: u32,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub chaddr: Option<Mac>,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
    pub renewal_time: Option<u32>,
    pub rebinding_time: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub cloud_server: Option<Ipv4Addr>,
    pub auth: Option<AuthRepr>,
    pub auth_mac: Option<Range<usize>>,
    pub auth_invalid: bool,
}

impl DhcpMsg {
    fn from_repr(r: &dhcpv4::Repr<'_>, udp: &frame::Udp<'_>) -> DhcpMsg {
        DhcpMsg {
            msg_type: r.message_type,
            op: r.op,
            xid: r.xid,
            src_ip: udp.src_ip,
            dst_ip: udp.dst_ip,
            chaddr: r.client_mac(),
            ciaddr: r.ciaddr,
            yiaddr: r.yiaddr,
            server_id: r.server_identifier,
            requested_ip: r.requested_ip,
            lease_time: r.lease_time,
            renewal_time: r.renewal_time,
            rebinding_time: r.rebinding_time,
            subnet_mask: r.subnet_mask,
            router: r.router,
            cloud_server: r.cloud_server.map(|c| c.addr),
            auth: r.auth,
            auth_mac: r.auth_mac_range(),
            auth_invalid: r.auth_invalid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsyncMsg {
    pub msg_type: ipsync::MessageType,
    pub key_id: u32,
    pub sequence: u64,
    pub server_ipv4: Option<Ipv4Addr>,
    pub server_mac: Option<Mac>,
    pub previous_ipv4: Option<Ipv4Addr>,
    pub service_port: Option<u16>,
    /// SERVER_NAME, for the hook; `None` also when it has a control character.
    pub server_name: Option<ServerName>,
    pub nonce: Option<[u8; 16]>,
    pub status: Option<u8>,
    pub src_ip: Ipv4Addr,
}

impl IpsyncMsg {
    /// Walks the TLVs of a message whose header the decoder checked, up to the trailer its
    /// key_id names (DESIGN §4.3: the key, not the bytes, says HMAC or Ed25519). The error is
    /// the decision log's `malformed` reason.
    pub fn parse(raw: &[u8], src_ip: Ipv4Addr, trailer: Trailer) -> Result<IpsyncMsg, &'static str> {
        let p = ipsync::Packet::new_checked(raw).map_err(|e| Malformed::Ipsync(e).reason())?;
        let r = ipsync::Repr::parse_with(&p, trailer).map_err(|e| Malformed::Ipsync(e).reason())?;
        Ok(IpsyncMsg::from_repr(&r, src_ip))
    }

    /// The key_id of a message whose header the decoder checked (0 when too short to have one).
    pub fn key_id_of(raw: &[u8]) -> u32 {
        ipsync::Packet::new_checked(raw).map_or(0, |p| p.key_id())
    }

    pub fn from_repr(r: &ipsync::Repr<'_>, src_ip: Ipv4Addr) -> IpsyncMsg {
        IpsyncMsg {
            msg_type: r.msg_type,
            key_id: r.key_id,
            sequence: r.sequence,
            server_ipv4: r.server_ipv4,
            server_mac: r.server_mac,
            previous_ipv4: r.previous_ipv4,
            service_port: r.service_port,
            server_name: r.server_name.and_then(ServerName::new),
            nonce: r.nonce,
            status: r.status,
            src_ip,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundKind {
    Dhcp(DhcpMsg),
    /// A DHCP message the terminal itself sent: arms the client state (xid), makes no line.
    Own(DhcpMsg),
    /// An ipsync message whose header checked; its TLVs are walked by the engine, which knows
    /// from the key_id where the trailer starts ([`IpsyncMsg::parse`]).
    Ipsync {
        src_ip: Ipv4Addr,
    },
    Arp(arp::Repr),
    Malformed {
        input: Input,
        reason: &'static str,
    },
    Ignored,
}

/// One frame's worth of input for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub frame: Option<u64>,
    /// Ethernet source: rate limits are per source.
    pub src: Mac,
    pub kind: InboundKind,
    /// The UDP payload, kept only when the engine must authenticate it (ipsync, FORCERENEW).
    pub raw: Box<[u8]>,
}

/// What the decoder needs to know about us.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext {
    pub mac: Mac,
    pub port: u16,
    pub server_option: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The kernel filter would not pass it.
    Filtered,
    /// Passed the filter but makes no decision; the string is the counter to bump.
    Dropped(&'static str),
    Inbound(Inbound),
}

/// Which way a frame went, when the source knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A capture file: a frame from our own MAC is one the terminal sent.
    Unknown,
    /// Live, received: our own MAC as its source is a forgery, never our own frame.
    Inbound,
    /// Live, sent by this host (follow mode: the system client's REQUESTs).
    Outgoing,
}

/// [`decode_frame_from`] for a frame whose direction is unknown (replay, tests).
pub fn decode_frame(index: Option<u64>, bytes: &[u8], csum: Checksum, ctx: &DecodeContext) -> Decoded {
    decode_frame_from(index, bytes, csum, Direction::Unknown, ctx)
}

pub fn decode_frame_from(
    index: Option<u64>,
    bytes: &[u8],
    csum: Checksum,
    dir: Direction,
    ctx: &DecodeContext,
) -> Decoded {
    let src = Mac::from_slice(bytes.get(6..12).unwrap_or(&[])).unwrap_or(Mac::ZERO);
    // Frames from our own MAC are what the terminal sent: its DHCP requests go to the server
    // port, and they are let in only to arm the client state. Live, only a frame that really
    // left this host counts: one received with our MAC as its source is spoofed, and it must
    // not be able to arm (or reset) the client.
    let own = src.ct_eq(&ctx.mac);
    match dir {
        Direction::Inbound if own => return Decoded::Dropped("spoofed_own_mac"),
        Direction::Outgoing if !own => return Decoded::Filtered,
        _ => {}
    }
    let input = match frame::classify(bytes) {
        None => return Decoded::Filtered,
        Some(Class::Arp) => Input::Arp,
        Some(Class::Udp { dst_port }) if dst_port == dhcpv4::CLIENT_PORT => Input::Dhcp,
        Some(Class::Udp { dst_port }) if own && dst_port == dhcpv4::SERVER_PORT => Input::Dhcp,
        Some(Class::Udp { dst_port }) if dst_port == ctx.port => Input::Announce,
        Some(Class::Udp { .. }) => return Decoded::Filtered,
    };
    let malformed = |e: Malformed| {
        if input == Input::Arp || own {
            Decoded::Dropped("malformed")
        } else {
            Decoded::Inbound(Inbound {
                frame: index,
                src,
                kind: InboundKind::Malformed { input, reason: e.reason() },
                raw: Box::default(),
            })
        }
    };
    let f = match frame::decode(bytes, csum) {
        Ok(f) => f,
        Err(e) => return malformed(e),
    };
    let inbound = |kind, raw: &[u8]| Decoded::Inbound(Inbound { frame: index, src, kind, raw: raw.into() });
    match (input, f.body) {
        (Input::Arp, Body::Arp(payload)) => {
            if own {
                return Decoded::Dropped("own_frame");
            }
            match arp::Packet::new_checked(payload).and_then(|p| arp::Repr::parse(&p)) {
                Ok(a) => inbound(InboundKind::Arp(a), &[]),
                Err(e) => malformed(Malformed::Arp(e)),
            }
        }
        (Input::Dhcp, Body::Udp(udp)) => {
            let parsed =
                dhcpv4::Packet::new_checked(udp.payload).and_then(|p| dhcpv4::Repr::parse(&p, ctx.server_option));
            match parsed {
                Ok(r) => {
                    let msg = DhcpMsg::from_repr(&r, &udp);
                    if own {
                        inbound(InboundKind::Own(msg), &[])
                    } else if msg.msg_type == dhcpv4::MessageType::ForceRenew {
                        inbound(InboundKind::Dhcp(msg), udp.payload)
                    } else {
                        inbound(InboundKind::Dhcp(msg), &[])
                    }
                }
                Err(e) => malformed(Malformed::Dhcp(e)),
            }
        }
        (Input::Announce, Body::Udp(udp)) => {
            if own {
                return Decoded::Dropped("own_frame");
            }
            match ipsync::Packet::new_checked(udp.payload) {
                Ok(_) => inbound(InboundKind::Ipsync { src_ip: udp.src_ip }, udp.payload),
                Err(e) => malformed(Malformed::Ipsync(e)),
            }
        }
        // classify and decode disagree only for frames the filter would not pass anyway.
        _ => Decoded::Filtered,
    }
}

/// The decision log's `input` for a DHCP message.
pub fn input_of(msg: &DhcpMsg) -> Input {
    match msg.msg_type {
        dhcpv4::MessageType::ForceRenew => Input::ForceRenew,
        dhcpv4::MessageType::Offer => Input::Offer,
        dhcpv4::MessageType::Ack => Input::Ack,
        dhcpv4::MessageType::Nak => Input::Nak,
        _ => Input::Dhcp,
    }
}
