//! Ethernet (+ one 802.1Q tag) → IPv4 → UDP | ARP: the checked descent from a captured frame.
//!
//! Contract: [`decode`] borrows the frame and returns views into it, or a [`Malformed`] naming the
//! layer and field. Every length is checked by us before a pnet_packet view is made, so pnet's
//! own indexing can never run past the buffer. [`classify`] is the software twin of the kernel
//! BPF filter: it answers which input a frame would be (ARP, or UDP to some port) using only the
//! bytes the filter reads, so replay drops exactly what live capture never sees.

use super::bytes::{be16, byte, checksum_accumulate, checksum_fold, Mac};
use super::{arp, dhcpv4, ipsync};
use core::fmt;
use pnet_packet::ethernet::EthernetPacket;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::udp::UdpPacket;
use std::net::Ipv4Addr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const IPPROTO_UDP: u8 = 17;

mod field {
    use crate::wire::bytes::Field;
    pub const ETH_DST: Field = 0..6;
    pub const ETH_SRC: Field = 6..12;
    pub const ETH_TYPE: Field = 12..14;
    pub const ETH_HEADER: usize = 14;
    pub const VLAN_TCI: Field = 14..16;
    pub const VLAN_TYPE: Field = 16..18;
    pub const VLAN_HEADER: usize = 18;

    pub const IP_VER_IHL: usize = 0;
    pub const IP_TOTAL_LEN: Field = 2..4;
    pub const IP_FLAGS_FRAG: Field = 6..8;
    pub const IP_PROTO: usize = 9;
    pub const IP_MIN_HEADER: usize = 20;

    pub const UDP_DST_PORT: Field = 2..4;
    pub const UDP_LEN: Field = 4..6;
    pub const UDP_CHECKSUM: Field = 6..8;
    pub const UDP_HEADER: usize = 8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EthError {
    Truncated,
    VlanTruncated,
}

impl EthError {
    pub fn reason(&self) -> &'static str {
        match self {
            EthError::Truncated => "ethernet_truncated",
            EthError::VlanTruncated => "vlan_truncated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ipv4Error {
    Truncated,
    Version(u8),
    Ihl(u8),
    TotalLength(u16),
    Checksum(u16),
    /// Fragments are never reassembled: a DHCP or ipsync message always fits one frame.
    Fragment,
}

impl Ipv4Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Ipv4Error::Truncated => "ipv4_truncated",
            Ipv4Error::Version(_) => "ipv4_version",
            Ipv4Error::Ihl(_) => "ipv4_ihl",
            Ipv4Error::TotalLength(_) => "ipv4_total_length",
            Ipv4Error::Checksum(_) => "ipv4_checksum",
            Ipv4Error::Fragment => "ipv4_fragment",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UdpError {
    Truncated,
    Length(u16),
    Checksum(u16),
}

impl UdpError {
    pub fn reason(&self) -> &'static str {
        match self {
            UdpError::Truncated => "udp_truncated",
            UdpError::Length(_) => "udp_length",
            UdpError::Checksum(_) => "udp_checksum",
        }
    }
}

/// How to treat the UDP checksum of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The kernel handed us a finished frame: a wrong checksum drops it.
    Verify,
    /// PACKET_AUXDATA said TP_STATUS_CSUMNOTREADY (veth, lo): the field is a partial sum.
    Skip,
    /// A pcap has no auxdata. Accept a correct checksum, zero, or the exact partial
    /// pseudo-header sum that CHECKSUM_PARTIAL leaves behind (what captures on veth hold);
    /// anything else is a corrupt frame.
    Infer,
}

/// What the kernel filter would let through, decided from the same bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Arp,
    Udp { dst_port: u16 },
}

/// The filter's view: ARP, or IPv4/UDP (first fragment) with a readable destination port.
/// Anything else is `None` and never reaches the worker.
pub fn classify(b: &[u8]) -> Option<Class> {
    let (ethertype, l3) = ethertype_and_offset(b)?;
    match ethertype {
        ETHERTYPE_ARP => Some(Class::Arp),
        ETHERTYPE_IPV4 => {
            let ip = b.get(l3..)?;
            if byte(ip, field::IP_VER_IHL) >> 4 != 4 || byte(ip, field::IP_PROTO) != IPPROTO_UDP {
                return None;
            }
            if ip.len() < field::IP_MIN_HEADER || be16(ip, field::IP_FLAGS_FRAG) & 0x1fff != 0 {
                return None;
            }
            let ihl = usize::from(byte(ip, field::IP_VER_IHL) & 0x0f) * 4;
            let udp = ip.get(ihl..)?;
            if udp.len() < 4 {
                return None;
            }
            Some(Class::Udp { dst_port: be16(udp, field::UDP_DST_PORT) })
        }
        _ => None,
    }
}

fn ethertype_and_offset(b: &[u8]) -> Option<(u16, usize)> {
    if b.len() < field::ETH_HEADER {
        return None;
    }
    let t = be16(b, field::ETH_TYPE);
    if t == ETHERTYPE_VLAN {
        if b.len() < field::VLAN_HEADER {
            return None;
        }
        Some((be16(b, field::VLAN_TYPE), field::VLAN_HEADER))
    } else {
        Some((t, field::ETH_HEADER))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    Udp(Udp<'a>),
    /// The ARP payload, still to be decoded by [`super::arp`].
    Arp(&'a [u8]),
    /// A well-formed frame of a kind we do not read (IPv6, TCP, …).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub dst: Mac,
    pub src: Mac,
    pub vlan: Option<u16>,
    pub body: Body<'a>,
}

/// Full checked descent. Trailing Ethernet padding after the IPv4 total length is allowed (short
/// frames are padded to 60 bytes); anything shorter than a declared length is malformed.
pub fn decode(b: &[u8], csum: Checksum) -> Result<Frame<'_>, Malformed> {
    if b.len() < field::ETH_HEADER {
        return Err(Malformed::Ethernet(EthError::Truncated));
    }
    let eth = EthernetPacket::new(b).ok_or(Malformed::Ethernet(EthError::Truncated))?;
    let dst = Mac(eth.get_destination().octets());
    let src = Mac(eth.get_source().octets());
    debug_assert_eq!(be16(b, field::ETH_TYPE), eth.get_ethertype().0);
    let mut ethertype = be16(b, field::ETH_TYPE);
    let mut l3 = field::ETH_HEADER;
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN {
        if b.len() < field::VLAN_HEADER {
            return Err(Malformed::Ethernet(EthError::VlanTruncated));
        }
        vlan = Some(be16(b, field::VLAN_TCI) & 0x0fff);
        ethertype = be16(b, field::VLAN_TYPE);
        l3 = field::VLAN_HEADER;
    }
    let rest = b.get(l3..).unwrap_or(&[]);
    let body = match ethertype {
        ETHERTYPE_ARP => Body::Arp(rest),
        ETHERTYPE_IPV4 => decode_ipv4(rest, csum)?,
        _ => Body::Other,
    };
    let _ = field::ETH_DST;
    let _ = field::ETH_SRC;
    Ok(Frame { dst, src, vlan, body })
}

fn decode_ipv4(ip: &[u8], csum: Checksum) -> Result<Body<'_>, Malformed> {
    use Ipv4Error as E;
    let err = |e| Err(Malformed::Ipv4(e));
    if ip.len() < field::IP_MIN_HEADER {
        return err(E::Truncated);
    }
    let ver_ihl = byte(ip, field::IP_VER_IHL);
    if ver_ihl >> 4 != 4 {
        return err(E::Version(ver_ihl >> 4));
    }
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ihl < field::IP_MIN_HEADER {
        return err(E::Ihl(ver_ihl & 0x0f));
    }
    if ip.len() < ihl {
        return err(E::Truncated);
    }
    let total = be16(ip, field::IP_TOTAL_LEN);
    if usize::from(total) < ihl || usize::from(total) > ip.len() {
        return err(E::TotalLength(total));
    }
    let header = ip.get(..ihl).unwrap_or(&[]);
    let sum = checksum_fold(checksum_accumulate(0, header));
    if sum != 0xffff {
        return err(E::Checksum(sum));
    }
    // Lengths are proven: the pnet view may index freely from here on.
    let view = Ipv4Packet::new(ip).ok_or(Malformed::Ipv4(E::Truncated))?;
    let frag = be16(ip, field::IP_FLAGS_FRAG);
    let more_fragments = frag & 0x2000 != 0;
    if more_fragments || frag & 0x1fff != 0 {
        return err(E::Fragment);
    }
    if view.get_next_level_protocol().0 != IPPROTO_UDP {
        return Ok(Body::Other);
    }
    let src_ip = view.get_source();
    let dst_ip = view.get_destination();
    let l4 = ip.get(ihl..usize::from(total)).unwrap_or(&[]);
    decode_udp(l4, src_ip, dst_ip, csum)
}

fn decode_udp<'a>(l4: &'a [u8], src_ip: Ipv4Addr, dst_ip: Ipv4Addr, csum: Checksum) -> Result<Body<'a>, Malformed> {
    use UdpError as E;
    if l4.len() < field::UDP_HEADER {
        return Err(Malformed::Udp(E::Truncated));
    }
    let len = be16(l4, field::UDP_LEN);
    if usize::from(len) < field::UDP_HEADER || usize::from(len) > l4.len() {
        return Err(Malformed::Udp(E::Length(len)));
    }
    let dgram = l4.get(..usize::from(len)).unwrap_or(&[]);
    let view = UdpPacket::new(dgram).ok_or(Malformed::Udp(E::Truncated))?;
    let stored = be16(dgram, field::UDP_CHECKSUM);
    if csum != Checksum::Skip && stored != 0 && !udp_checksum_ok(dgram, src_ip, dst_ip, csum) {
        return Err(Malformed::Udp(E::Checksum(stored)));
    }
    Ok(Body::Udp(Udp {
        src_ip,
        dst_ip,
        src_port: view.get_source(),
        dst_port: view.get_destination(),
        payload: dgram.get(field::UDP_HEADER..).unwrap_or(&[]),
    }))
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u32 {
    let mut ph = [0u8; 12];
    ph[..4].copy_from_slice(&src.octets());
    ph[4..8].copy_from_slice(&dst.octets());
    ph[9] = IPPROTO_UDP;
    ph[10..].copy_from_slice(&udp_len.to_be_bytes());
    // Summed as bytes, never with plain `+`: 255.255.255.255 alone fills 32 bits.
    checksum_accumulate(0, &ph)
}

fn udp_checksum_ok(dgram: &[u8], src: Ipv4Addr, dst: Ipv4Addr, csum: Checksum) -> bool {
    let ph = pseudo_header_sum(src, dst, dgram.len() as u16);
    if checksum_fold(checksum_accumulate(ph, dgram)) == 0xffff {
        return true;
    }
    csum == Checksum::Infer && be16(dgram, field::UDP_CHECKSUM) == checksum_fold(ph)
}

/// The UDP checksum to store for a datagram whose checksum field is zero.
pub fn udp_checksum(dgram: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    let ph = pseudo_header_sum(src, dst, dgram.len() as u16);
    let c = !checksum_fold(checksum_accumulate(ph, dgram));
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// Everything needed to wrap a UDP payload into an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrameRepr {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
}

impl UdpFrameRepr {
    pub fn buffer_len(&self, payload_len: usize) -> usize {
        field::ETH_HEADER + field::IP_MIN_HEADER + field::UDP_HEADER + payload_len
    }

    /// Builds Ethernet/IPv4/UDP around `payload` with both checksums filled in. Used by the
    /// server-side senders, the DHCP client, and the fixture generator.
    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        let udp_len = (field::UDP_HEADER + payload.len()) as u16;
        let total = field::IP_MIN_HEADER as u16 + udp_len;
        let mut f = Vec::with_capacity(self.buffer_len(payload.len()));
        f.extend_from_slice(&self.dst_mac.0);
        f.extend_from_slice(&self.src_mac.0);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip_start = f.len();
        f.extend_from_slice(&[0x45, 0x00]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0x00, self.ttl, IPPROTO_UDP, 0, 0]);
        f.extend_from_slice(&self.src_ip.octets());
        f.extend_from_slice(&self.dst_ip.octets());
        let ip_sum = !checksum_fold(checksum_accumulate(0, &f[ip_start..]));
        f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let udp_start = f.len();
        f.extend_from_slice(&self.src_port.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        let c = udp_checksum(&f[udp_start..], self.src_ip, self.dst_ip);
        f[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
        f
    }
}

/// Wraps an ARP payload into an Ethernet frame (padded to the 60-byte minimum).
pub fn emit_arp_frame(src: Mac, dst: Mac, arp: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(arp);
    f.resize(f.len().max(60), 0);
    f
}

/// A decode failure: which layer and which field. One variant per layer keeps the reason names
/// stable (`dhcp_option_overrun`, `ipsync_tlv_duplicate`, …) for the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    Ethernet(EthError),
    Ipv4(Ipv4Error),
    Udp(UdpError),
    Arp(arp::Error),
    Dhcp(dhcpv4::Error),
    Ipsync(ipsync::Error),
}

impl Malformed {
    /// The decision-log reason: `<layer>_<field>`.
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::Ethernet(e) => e.reason(),
            Malformed::Ipv4(e) => e.reason(),
            Malformed::Udp(e) => e.reason(),
            Malformed::Arp(e) => e.reason(),
            Malformed::Dhcp(e) => e.reason(),
            Malformed::Ipsync(e) => e.reason(),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Malformed {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (UdpFrameRepr, Vec<u8>) {
        let r = UdpFrameRepr {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac::BROADCAST,
            src_ip: Ipv4Addr::new(10, 77, 0, 1),
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 47474,
            dst_port: 47474,
            ttl: 64,
        };
        (r, r.emit(b"hello"))
    }

    #[test]
    fn emit_then_decode_round_trips() {
        let (r, f) = sample();
        let fr = decode(&f, Checksum::Verify).unwrap();
        assert_eq!(fr.src, r.src_mac);
        match fr.body {
            Body::Udp(u) => {
                assert_eq!(u.payload, b"hello");
                assert_eq!(u.src_ip, r.src_ip);
                assert_eq!(u.dst_port, 47474);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(classify(&f), Some(Class::Udp { dst_port: 47474 }));
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let (_, f) = sample();
        for n in 0..f.len() {
            assert!(decode(&f[..n], Checksum::Verify).is_err() || n < 14, "len {n}");
        }
    }

    #[test]
    fn bad_udp_checksum_is_dropped_unless_partial() {
        let (r, mut f) = sample();
        let last = f.len() - 1;
        f[last] ^= 0xff;
        assert_eq!(decode(&f, Checksum::Verify).unwrap_err().reason(), "udp_checksum");
        assert!(decode(&f, Checksum::Skip).is_ok());
        // What a veth capture holds: the folded pseudo-header sum, not the checksum.
        let partial = checksum_fold(pseudo_header_sum(r.src_ip, r.dst_ip, 13));
        f[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&partial.to_be_bytes());
        assert!(decode(&f, Checksum::Infer).is_ok());
        assert!(decode(&f, Checksum::Verify).is_err());
    }

    #[test]
    fn checksum_of_broadcast_from_zero_source() {
        // 0.0.0.0 → 255.255.255.255 (every DHCP DISCOVER): the pseudo header nearly fills 32 bits.
        let r = UdpFrameRepr { src_ip: Ipv4Addr::UNSPECIFIED, dst_ip: Ipv4Addr::BROADCAST, ..sample().0 };
        for len in [0, 1, 2, 3, 300, 301] {
            let f = r.emit(&vec![0xa5; len]);
            assert!(decode(&f, Checksum::Verify).is_ok(), "len {len}");
        }
    }

    #[test]
    fn lying_ip_total_length_is_malformed() {
        let (_, mut f) = sample();
        f[14 + 2] = 0x10;
        assert_eq!(decode(&f, Checksum::Skip).unwrap_err().reason(), "ipv4_total_length");
    }

    #[test]
    fn vlan_tag_is_stepped_over() {
        let (_, f) = sample();
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        v.extend_from_slice(&f[12..]);
        let fr = decode(&v, Checksum::Verify).unwrap();
        assert_eq!(fr.vlan, Some(42));
        assert!(matches!(fr.body, Body::Udp(_)));
    }
}
