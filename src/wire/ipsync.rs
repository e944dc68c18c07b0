//! The ipsync message (DESIGN §4.3): ANNOUNCE over UDP, HELLO and WELCOME as one record on TCP.
//!
//! Contract: [`Packet::new_checked`] proves magic, version, type and that the length field
//! equals the buffer and lies in 52..=1024. [`Repr::parse`] walks the TLVs once and rejects
//! overruns, duplicates, unknown types below 128 and missing required TLVs. Authentication is
//! separate ([`Packet::verify`]) so the engine can order its checks as DESIGN §5 requires:
//! structure, key id, HMAC, sequence.

use super::auth;
use super::bytes::{be16, be32, be64, byte, ipv4_at, put, BufferTooSmall, Mac};
use std::net::Ipv4Addr;

mod field {
    use crate::wire::bytes::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: usize = 4;
    pub const TYPE: usize = 5;
    pub const LENGTH: Field = 6..8;
    pub const KEY_ID: Field = 8..12;
    pub const SEQUENCE: Field = 12..20;
    pub const TLVS: usize = 20;
    pub const HMAC_LEN: usize = 32;
}

pub const MAGIC: [u8; 4] = *b"IPSY";
pub const VERSION: u8 = 1;
pub const MIN_LEN: usize = 52;
pub const MAX_LEN: usize = 1024;
pub const DEFAULT_PORT: u16 = 47474;
pub const HEADER_LEN: usize = field::TLVS;

/// DESIGN §4.3: strictly increasing, and close to wall time so a restarted sender that lost its
/// counter still moves forward.
pub fn next_sequence(last_sent: Option<u64>, now_unix_us: u64) -> u64 {
    match last_sent {
        Some(l) => l.saturating_add(1).max(now_unix_us),
        None => now_unix_us,
    }
}

pub mod tlv {
    pub const SERVER_IPV4: u8 = 1;
    pub const SERVER_MAC: u8 = 2;
    pub const PREVIOUS_IPV4: u8 = 3;
    pub const SERVER_NAME: u8 = 4;
    pub const SERVICE_PORT: u8 = 5;
    pub const NONCE: u8 = 6;
    pub const TERMINAL_MAC: u8 = 7;
    pub const TERMINAL_IPV4: u8 = 8;
    pub const STATUS: u8 = 9;
    /// Types at or above this are extensions a receiver may skip.
    pub const FIRST_SKIPPABLE: u8 = 128;
}

pub mod status {
    pub const SUCCESS: u8 = 0;
    pub const UNKNOWN_TERMINAL: u8 = 1;
    pub const BUSY: u8 = 2;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    Truncated(usize),
    Magic,
    Version(u8),
    Type(u8),
    Length(u16),
    TlvOverrun { tlv: u8 },
    TlvDuplicate { tlv: u8 },
    TlvUnknown { tlv: u8 },
    TlvLength { tlv: u8, len: u8 },
    TlvMissing { tlv: u8 },
    ServerName,
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Truncated(_) => "ipsync_truncated",
            Error::Magic => "ipsync_magic",
            Error::Version(_) => "ipsync_version",
            Error::Type(_) => "ipsync_type",
            Error::Length(_) => "ipsync_length",
            Error::TlvOverrun { .. } => "ipsync_tlv_overrun",
            Error::TlvDuplicate { .. } => "ipsync_tlv_duplicate",
            Error::TlvUnknown { .. } => "ipsync_tlv_unknown",
            Error::TlvLength { .. } => "ipsync_tlv_length",
            Error::TlvMissing { .. } => "ipsync_tlv_missing",
            Error::ServerName => "ipsync_server_name",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    Announce,
    Hello,
    Welcome,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => MessageType::Announce,
            2 => MessageType::Hello,
            3 => MessageType::Welcome,
            o => MessageType::Unknown(o),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(v: MessageType) -> u8 {
        match v {
            MessageType::Announce => 1,
            MessageType::Hello => 2,
            MessageType::Welcome => 3,
            MessageType::Unknown(o) => o,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        // Magic first: a stray datagram on our port is "not ipsync", whatever its length.
        if b.len() < 4 || b[field::MAGIC] != MAGIC {
            return if b.len() < 4 { Err(Error::Truncated(b.len())) } else { Err(Error::Magic) };
        }
        if b.len() < MIN_LEN {
            return Err(Error::Truncated(b.len()));
        }
        if b[field::VERSION] != VERSION {
            return Err(Error::Version(b[field::VERSION]));
        }
        if let MessageType::Unknown(t) = MessageType::from(b[field::TYPE]) {
            return Err(Error::Type(t));
        }
        let len = be16(b, field::LENGTH);
        if usize::from(len) < MIN_LEN || usize::from(len) > MAX_LEN || usize::from(len) != b.len() {
            return Err(Error::Length(len));
        }
        Ok(())
    }

    pub fn msg_type(&self) -> MessageType {
        MessageType::from(byte(self.buffer.as_ref(), field::TYPE))
    }
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }
    pub fn key_id(&self) -> u32 {
        be32(self.buffer.as_ref(), field::KEY_ID)
    }
    pub fn sequence(&self) -> u64 {
        be64(self.buffer.as_ref(), field::SEQUENCE)
    }
    fn hmac_start(&self) -> usize {
        self.buffer.as_ref().len().saturating_sub(field::HMAC_LEN)
    }
    pub fn tlv_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(field::TLVS..self.hmac_start()).unwrap_or(&[])
    }
    pub fn hmac(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(self.hmac_start()..).unwrap_or(&[])
    }
    /// HMAC-SHA256 over everything before the tag, compared in constant time.
    pub fn verify(&self, key: &[u8]) -> bool {
        let b = self.buffer.as_ref();
        auth::verify_sha256(key, b.get(..self.hmac_start()).unwrap_or(&[]), self.hmac())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub msg_type: MessageType,
    pub key_id: u32,
    pub sequence: u64,
    pub server_ipv4: Option<Ipv4Addr>,
    pub server_mac: Option<Mac>,
    pub previous_ipv4: Option<Ipv4Addr>,
    pub server_name: Option<&'a str>,
    pub service_port: Option<u16>,
    pub nonce: Option<[u8; 16]>,
    pub terminal_mac: Option<Mac>,
    pub terminal_ipv4: Option<Ipv4Addr>,
    pub status: Option<u8>,
}

impl<'a> Repr<'a> {
    pub fn new(msg_type: MessageType, key_id: u32, sequence: u64) -> Repr<'a> {
        Repr {
            msg_type,
            key_id,
            sequence,
            server_ipv4: None,
            server_mac: None,
            previous_ipv4: None,
            server_name: None,
            service_port: None,
            nonce: None,
            terminal_mac: None,
            terminal_ipv4: None,
            status: None,
        }
    }

    pub fn parse(packet: &Packet<&'a [u8]>) -> Result<Repr<'a>, Error> {
        let b: &'a [u8] = packet.buffer;
        Packet::new_checked(b)?;
        let mut r = Repr::new(packet.msg_type(), packet.key_id(), packet.sequence());
        let tlvs: &'a [u8] = b.get(field::TLVS..b.len() - field::HMAC_LEN).unwrap_or(&[]);
        let mut seen = [false; 128];
        let mut i = 0;
        while i < tlvs.len() {
            let t = tlvs[i];
            let Some(&len) = tlvs.get(i + 1) else {
                return Err(Error::TlvOverrun { tlv: t });
            };
            let Some(v) = tlvs.get(i + 2..i + 2 + usize::from(len)) else {
                return Err(Error::TlvOverrun { tlv: t });
            };
            i += 2 + usize::from(len);
            if t >= tlv::FIRST_SKIPPABLE {
                continue;
            }
            if seen[usize::from(t)] {
                return Err(Error::TlvDuplicate { tlv: t });
            }
            seen[usize::from(t)] = true;
            let bad_len = Error::TlvLength { tlv: t, len };
            match t {
                tlv::SERVER_IPV4 | tlv::PREVIOUS_IPV4 | tlv::TERMINAL_IPV4 => {
                    if v.len() != 4 {
                        return Err(bad_len);
                    }
                    let a = Some(ipv4_at(v, 0..4));
                    match t {
                        tlv::SERVER_IPV4 => r.server_ipv4 = a,
                        tlv::PREVIOUS_IPV4 => r.previous_ipv4 = a,
                        _ => r.terminal_ipv4 = a,
                    }
                }
                tlv::SERVER_MAC | tlv::TERMINAL_MAC => {
                    let m = if v.len() == 6 { Mac::from_slice(v) } else { None };
                    let m = Some(m.ok_or(bad_len)?);
                    if t == tlv::SERVER_MAC {
                        r.server_mac = m;
                    } else {
                        r.terminal_mac = m;
                    }
                }
                tlv::SERVER_NAME => {
                    if v.is_empty() || v.len() > 64 {
                        return Err(bad_len);
                    }
                    r.server_name = Some(core::str::from_utf8(v).map_err(|_| Error::ServerName)?);
                }
                tlv::SERVICE_PORT => match v {
                    [a, c] => r.service_port = Some(u16::from_be_bytes([*a, *c])),
                    _ => return Err(bad_len),
                },
                tlv::NONCE => r.nonce = Some(v.try_into().map_err(|_| bad_len)?),
                tlv::STATUS => match v {
                    [s] => r.status = Some(*s),
                    _ => return Err(bad_len),
                },
                _ => return Err(Error::TlvUnknown { tlv: t }),
            }
        }
        let need: &[u8] = match r.msg_type {
            MessageType::Announce => &[tlv::SERVER_IPV4, tlv::SERVER_MAC],
            MessageType::Hello => &[tlv::NONCE, tlv::TERMINAL_MAC, tlv::TERMINAL_IPV4],
            MessageType::Welcome => &[tlv::SERVER_IPV4, tlv::STATUS],
            MessageType::Unknown(t) => return Err(Error::Type(t)),
        };
        if let Some(&missing) = need.iter().find(|&&t| !seen[usize::from(t)]) {
            return Err(Error::TlvMissing { tlv: missing });
        }
        Ok(r)
    }

    fn tlvs_len(&self) -> usize {
        let mut n = 0;
        n += [self.server_ipv4, self.previous_ipv4, self.terminal_ipv4].iter().flatten().count() * 6;
        n += [self.server_mac, self.terminal_mac].iter().flatten().count() * 8;
        n += self.server_name.map_or(0, |s| 2 + s.len().min(64));
        n += self.service_port.map_or(0, |_| 4);
        n += self.nonce.map_or(0, |_| 18);
        n += self.status.map_or(0, |_| 3);
        n
    }

    pub fn buffer_len(&self) -> usize {
        (field::TLVS + self.tlvs_len() + field::HMAC_LEN).max(MIN_LEN)
    }

    /// Writes the message and signs it with `key`. TLVs go in type order. (Header plus tag is
    /// exactly the 52-byte minimum, so no padding is ever needed.)
    pub fn emit(&self, buf: &mut [u8], key: &[u8]) -> Result<usize, BufferTooSmall> {
        let len = self.buffer_len();
        if len > MAX_LEN {
            return Err(BufferTooSmall);
        }
        let buf = buf.get_mut(..len).ok_or(BufferTooSmall)?;
        buf.fill(0);
        put(buf, field::MAGIC, &MAGIC)?;
        buf[field::VERSION] = VERSION;
        buf[field::TYPE] = u8::from(self.msg_type);
        put(buf, field::LENGTH, &(len as u16).to_be_bytes())?;
        put(buf, field::KEY_ID, &self.key_id.to_be_bytes())?;
        put(buf, field::SEQUENCE, &self.sequence.to_be_bytes())?;
        let mut pos = field::TLVS;
        let mut w = |t: u8, v: &[u8]| -> Result<(), BufferTooSmall> {
            put(buf, pos..pos + 2, &[t, v.len() as u8])?;
            put(buf, pos + 2..pos + 2 + v.len(), v)?;
            pos += 2 + v.len();
            Ok(())
        };
        if let Some(a) = self.server_ipv4 {
            w(tlv::SERVER_IPV4, &a.octets())?;
        }
        if let Some(m) = self.server_mac {
            w(tlv::SERVER_MAC, &m.0)?;
        }
        if let Some(a) = self.previous_ipv4 {
            w(tlv::PREVIOUS_IPV4, &a.octets())?;
        }
        if let Some(s) = self.server_name {
            let mut end = s.len().min(64);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            w(tlv::SERVER_NAME, &s.as_bytes()[..end])?;
        }
        if let Some(p) = self.service_port {
            w(tlv::SERVICE_PORT, &p.to_be_bytes())?;
        }
        if let Some(n) = self.nonce {
            w(tlv::NONCE, &n)?;
        }
        if let Some(m) = self.terminal_mac {
            w(tlv::TERMINAL_MAC, &m.0)?;
        }
        if let Some(a) = self.terminal_ipv4 {
            w(tlv::TERMINAL_IPV4, &a.octets())?;
        }
        if let Some(s) = self.status {
            w(tlv::STATUS, &[s])?;
        }
        let hmac_at = len - field::HMAC_LEN;
        debug_assert_eq!(pos, hmac_at);
        let tag = auth::hmac_sha256(key, &buf[..hmac_at]);
        put(buf, hmac_at..len, &tag)?;
        Ok(len)
    }

    pub fn to_bytes(&self, key: &[u8]) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len()];
        let n = self.emit(&mut v, key).unwrap_or(0);
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn announce() -> Repr<'static> {
        let mut r = Repr::new(MessageType::Announce, 1, 1_764_138_625_000_000);
        r.server_ipv4 = Some(Ipv4Addr::new(10, 77, 0, 20));
        r.server_mac = Some(Mac([2, 0, 0, 0, 0, 2]));
        r.previous_ipv4 = Some(Ipv4Addr::new(10, 77, 0, 1));
        r
    }

    // Written out from the DESIGN §4.3 tables by hand: header, three TLVs, pad TLV, tag.
    fn announce_bytes() -> Vec<u8> {
        let mut b = b"IPSY".to_vec();
        b.extend_from_slice(&[1, 1, 0, 72]);
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&1_764_138_625_000_000u64.to_be_bytes());
        b.extend_from_slice(&[1, 4, 10, 77, 0, 20, 2, 6, 2, 0, 0, 0, 0, 2, 3, 4, 10, 77, 0, 1]);
        let tag = auth::hmac_sha256(KEY, &b);
        b.extend_from_slice(&tag);
        b
    }

    #[test]
    fn parse_and_emit_agree_with_the_table() {
        let raw = announce_bytes();
        assert_eq!(announce().to_bytes(KEY), raw);
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert!(p.verify(KEY));
        assert!(!p.verify(b"wrong"));
        assert_eq!(Repr::parse(&p).unwrap(), announce());
    }

    #[test]
    fn structural_errors() {
        let raw = announce_bytes();
        fn parse(b: &[u8]) -> Result<Repr<'_>, Error> {
            Packet::new_checked(b).and_then(|_| Repr::parse(&Packet::new_unchecked(b)))
        }
        let mut m = raw.clone();
        m[0] = b'X';
        assert_eq!(parse(&m).unwrap_err(), Error::Magic);
        let mut l = raw.clone();
        l[7] = 60;
        assert_eq!(parse(&l).unwrap_err(), Error::Length(60));
        let mut d = raw.clone();
        d[26] = 1; // SERVER_MAC's type byte becomes a second SERVER_IPV4
        assert!(matches!(parse(&d).unwrap_err(), Error::TlvDuplicate { tlv: 1 } | Error::TlvLength { .. }));
        let mut o = raw.clone();
        o[35] = 200; // PREVIOUS_IPV4 claims 200 bytes
        assert_eq!(parse(&o).unwrap_err(), Error::TlvOverrun { tlv: 3 });
        let mut u = raw.clone();
        u[34] = 77;
        assert_eq!(parse(&u).unwrap_err(), Error::TlvUnknown { tlv: 77 });
        let mut s = raw.clone();
        s[34] = 200; // unknown but skippable
        assert!(parse(&s).is_ok());
        assert_eq!(parse(&raw[..51]).unwrap_err(), Error::Truncated(51));
    }

    #[test]
    fn missing_required_tlv() {
        let mut r = announce();
        r.server_mac = None;
        let raw = r.to_bytes(KEY);
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::TlvMissing { tlv: tlv::SERVER_MAC });
    }
}
