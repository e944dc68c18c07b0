//! Cloud-server side: the tools `announce`, `forcerenew`, `serve` and `keygen` (one module
//! each), [`leases`] (the lease sources of `--leases`), and here the builders of what `announce`
//! and `forcerenew` send.
//!
//! Contract: the builders are pure over `wire`, used by the tools, the fixture generator and
//! the tests. Sequence numbers follow DESIGN §4.3: max(last + 1, µs since epoch), with both
//! inputs passed in ([`sequence`] persists them). The server side may use the shell; the shell
//! never uses the server side.

pub mod announce;
pub mod campaign;
mod conn_table;
pub mod dhcp_watch;
pub mod error;
pub mod fleet;
pub mod forcerenew;
pub mod keygen;
pub mod leases;
pub mod sequence;
pub mod serve;
pub mod xid_db;

use crate::wire::auth::{
    AuthRepr, Scheme, ALGORITHM_HMAC_MD5, PROTOCOL_DELAYED, PROTOCOL_RECONFIGURE_KEY, RDM_MONOTONIC,
};
use crate::wire::dhcpv4::{self, MessageType};
use crate::wire::frame::UdpFrameRepr;
use crate::wire::sig::Signer;
use crate::wire::{ipsync, Mac};
use std::net::Ipv4Addr;

pub use crate::wire::ipsync::next_sequence;

#[derive(Debug, Clone)]
pub struct Announce<'a> {
    pub key_id: u32,
    /// The `[[key]]` named by `key_id`: its secret, or its Ed25519 signing half.
    pub key: Signer<'a>,
    pub sequence: u64,
    pub server_ip: Ipv4Addr,
    pub server_mac: Mac,
    pub previous_ip: Option<Ipv4Addr>,
    pub server_name: Option<&'a str>,
    pub service_port: Option<u16>,
}

impl Announce<'_> {
    /// The signed ipsync ANNOUNCE payload.
    pub fn payload(&self) -> Vec<u8> {
        let mut r = ipsync::Repr::new(ipsync::MessageType::Announce, self.key_id, self.sequence);
        r.server_ipv4 = Some(self.server_ip);
        r.server_mac = Some(self.server_mac);
        r.previous_ipv4 = self.previous_ip;
        r.server_name = self.server_name;
        r.service_port = self.service_port;
        r.to_bytes_signed(self.key)
    }

    /// As a broadcast Ethernet frame from the server to `port`.
    pub fn frame(&self, port: u16) -> Vec<u8> {
        let udp = UdpFrameRepr {
            src_mac: self.server_mac,
            dst_mac: Mac::BROADCAST,
            src_ip: self.server_ip,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: port,
            dst_port: port,
            ttl: 64,
        };
        udp.emit(&self.payload())
    }
}

/// How a FORCERENEW is signed.
#[derive(Debug, Clone, Copy)]
pub enum ForceRenewAuth<'a> {
    /// RFC 3118 delayed authentication with a `[[dhcp_key]]`.
    Delayed { secret_id: u32, key: &'a [u8] },
    /// RFC 6704: HMAC-MD5 keyed by the reconfigure key the server handed out.
    ReconfigureKey { key: &'a [u8; 16] },
    /// No option 90 (for labs and adversarial fixtures only).
    None,
}

#[derive(Debug, Clone)]
pub struct ForceRenew<'a> {
    pub server_ip: Ipv4Addr,
    pub server_mac: Mac,
    pub client_ip: Ipv4Addr,
    pub client_mac: Mac,
    /// dhcpcd acts only on the xid of its last exchange; ipsyncd accepts any.
    pub xid: u32,
    pub replay: u64,
    pub auth: ForceRenewAuth<'a>,
}

impl ForceRenew<'_> {
    /// The signed DHCP message.
    pub fn payload(&self) -> Vec<u8> {
        let scheme_and_proto = match self.auth {
            ForceRenewAuth::Delayed { secret_id, .. } => {
                Some((PROTOCOL_DELAYED, Scheme::Delayed { secret_id, mac: [0; 16] }))
            }
            ForceRenewAuth::ReconfigureKey { .. } => {
                Some((PROTOCOL_RECONFIGURE_KEY, Scheme::ReconfigureHmac { mac: [0; 16] }))
            }
            ForceRenewAuth::None => None,
        };
        let repr = dhcpv4::Repr {
            server_identifier: Some(self.server_ip),
            auth: scheme_and_proto.map(|(protocol, scheme)| AuthRepr {
                protocol,
                algorithm: ALGORITHM_HMAC_MD5,
                rdm: RDM_MONOTONIC,
                replay: self.replay,
                scheme,
            }),
            ..dhcpv4::Repr::new(MessageType::ForceRenew, self.xid, &self.client_mac.0)
        };
        let mut msg = repr.to_bytes();
        let key: &[u8] = match self.auth {
            ForceRenewAuth::Delayed { key, .. } => key,
            ForceRenewAuth::ReconfigureKey { key } => key,
            ForceRenewAuth::None => return msg,
        };
        dhcpv4::sign(&mut msg, key, 0);
        msg
    }

    /// Unicast to the client, from the server's port 67 to the client's port 68 (RFC 3203 §2).
    pub fn frame(&self) -> Vec<u8> {
        let udp = UdpFrameRepr {
            src_mac: self.server_mac,
            dst_mac: self.client_mac,
            src_ip: self.server_ip,
            dst_ip: self.client_ip,
            src_port: dhcpv4::SERVER_PORT,
            dst_port: dhcpv4::CLIENT_PORT,
            ttl: 64,
        };
        udp.emit(&self.payload())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_rule() {
        assert_eq!(next_sequence(None, 100), 100);
        assert_eq!(next_sequence(Some(500), 100), 501);
        assert_eq!(next_sequence(Some(50), 100), 100);
        assert_eq!(next_sequence(Some(u64::MAX), 1), u64::MAX);
    }

    #[test]
    fn forcerenew_verifies_with_its_key() {
        let fr = ForceRenew {
            server_ip: Ipv4Addr::new(10, 77, 0, 1),
            server_mac: Mac([2, 0, 0, 0, 0, 1]),
            client_ip: Ipv4Addr::new(10, 77, 0, 10),
            client_mac: Mac([2, 0, 0, 0, 0, 0x10]),
            xid: 0,
            replay: 9,
            auth: ForceRenewAuth::Delayed { secret_id: 1, key: b"k" },
        };
        let raw = fr.payload();
        let p = dhcpv4::Packet::new_checked(&raw[..]).unwrap();
        let r = dhcpv4::Repr::parse(&p, 224).unwrap();
        assert_eq!(r.message_type, MessageType::ForceRenew);
        assert!(dhcpv4::verify(&raw, &r, b"k"));
        assert!(!dhcpv4::verify(&raw, &r, b"x"));
    }
}
