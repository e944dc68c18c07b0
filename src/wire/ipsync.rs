//! The ipsync message (DESIGN §4.3): ANNOUNCE over UDP, HELLO and WELCOME as one record on TCP.
//!
//! Contract: [`Packet::new_checked`] proves magic, version, type and that the length field
//! equals the buffer and lies in 52..=1024. [`Repr::parse`] walks the TLVs once and rejects
//! overruns, duplicates, unknown types below 128 and missing required TLVs. [`Repr::emit`] never
//! writes what parse would reject: it refuses a Repr that [`Repr::check_required`] refuses, and
//! otherwise writes [`Repr::normalised`] (SERVER_NAME cut to 64 bytes at a character boundary),
//! so `parse(emit(r)) == r.normalised()` for every Repr. Authentication is separate
//! ([`Packet::verify`]) so the engine can order its checks as DESIGN §5 requires: structure, key
//! id, HMAC or signature, sequence. The trailer is 32 bytes of HMAC-SHA256 or a 64-byte Ed25519
//! signature; which one is named by the key_id (the receiver's key says, [`super::sig`]), so the
//! TLV walk is told the trailer ([`Repr::parse_with`]) rather than guessing it from the bytes.

use super::bytes::{be16, be32, be64, byte, put, BufferTooSmall, Mac};
use super::sig::{Signer, Trailer, VerifyKey};
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
    pub const HMAC_LEN: usize = crate::wire::sig::HMAC_LEN;
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
    /// Too short for the trailer its key_id names (an Ed25519 message is at least 84 bytes).
    Trailer(u16),
    TlvOverrun {
        tlv: u8,
    },
    TlvDuplicate {
        tlv: u8,
    },
    TlvUnknown {
        tlv: u8,
    },
    TlvLength {
        tlv: u8,
        len: u8,
    },
    TlvMissing {
        tlv: u8,
    },
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
            Error::Trailer(_) => "ipsync_trailer",
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
        match b.get(field::MAGIC) {
            None => return Err(Error::Truncated(b.len())),
            Some(m) if m != MAGIC => return Err(Error::Magic),
            Some(_) => {}
        }
        if b.len() < MIN_LEN {
            return Err(Error::Truncated(b.len()));
        }
        let version = byte(b, field::VERSION);
        if version != VERSION {
            return Err(Error::Version(version));
        }
        if let MessageType::Unknown(t) = MessageType::from(byte(b, field::TYPE)) {
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
    /// The message is long enough for the header and `trailer` (at least 84 bytes for Ed25519;
    /// [`Packet::check_len`] already proved the 52 an HMAC trailer needs).
    pub fn check_trailer(&self, trailer: Trailer) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN + trailer.len() {
            return Err(Error::Trailer(u16::try_from(b.len()).unwrap_or(u16::MAX)));
        }
        Ok(())
    }
    fn trailer_start(&self, trailer: Trailer) -> usize {
        self.buffer.as_ref().len().saturating_sub(trailer.len())
    }
    pub fn tlv_bytes(&self, trailer: Trailer) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(field::TLVS..self.trailer_start(trailer)).unwrap_or(&[])
    }
    /// The HMAC tag or signature.
    pub fn trailer(&self, trailer: Trailer) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(self.trailer_start(trailer).max(field::TLVS)..).unwrap_or(&[])
    }
    /// The trailer `key` names, checked over everything before it: HMAC-SHA256 compared in
    /// constant time, or an Ed25519 signature under `verify_strict`.
    pub fn verify(&self, key: &VerifyKey) -> bool {
        let t = key.trailer();
        if self.check_trailer(t).is_err() {
            return false;
        }
        let b = self.buffer.as_ref();
        key.verify(b.get(..self.trailer_start(t)).unwrap_or(&[]), self.trailer(t))
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

/// The longest SERVER_NAME value (DESIGN §4.3: 1–64 bytes of UTF-8).
pub const MAX_SERVER_NAME: usize = 64;

/// Every TLV we emit, each at its largest: 3 addresses, 2 MACs, the name, port, nonce, status.
const MAX_TLVS_LEN: usize = 3 * (2 + 4) + 2 * (2 + 6) + (2 + MAX_SERVER_NAME) + (2 + 2) + (2 + 16) + (2 + 1);
// Emit cannot outgrow the length field's range, whatever the Repr holds: checked at compile time.
const _: () = assert!(HEADER_LEN + MAX_TLVS_LEN + crate::wire::sig::ED25519_LEN <= MAX_LEN);
const _: () = assert!(HEADER_LEN + field::HMAC_LEN == MIN_LEN);

/// Why [`Repr::emit`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The message would not parse: the error [`Repr::parse`] would report for it (an unknown
    /// type, or a required TLV left out). Emit never produces bytes its own parser rejects.
    Invalid(Error),
    Buffer(BufferTooSmall),
}

impl From<BufferTooSmall> for EmitError {
    fn from(e: BufferTooSmall) -> EmitError {
        EmitError::Buffer(e)
    }
}

impl core::fmt::Display for EmitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EmitError::Invalid(e) => write!(f, "message would not parse: {}", e.reason()),
            EmitError::Buffer(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EmitError {}

/// The TLVs a message of type `t` must carry (DESIGN §4.3's "required" column).
fn required(t: MessageType) -> Result<&'static [u8], Error> {
    match t {
        MessageType::Announce => Ok(&[tlv::SERVER_IPV4, tlv::SERVER_MAC]),
        MessageType::Hello => Ok(&[tlv::NONCE, tlv::TERMINAL_MAC, tlv::TERMINAL_IPV4]),
        MessageType::Welcome => Ok(&[tlv::SERVER_IPV4, tlv::STATUS]),
        MessageType::Unknown(t) => Err(Error::Type(t)),
    }
}

/// `s` cut to at most [`MAX_SERVER_NAME`] bytes at a character boundary; `None` when nothing is
/// left, since the wire has no empty SERVER_NAME.
fn wire_server_name(s: &str) -> Option<&str> {
    let mut end = s.len().min(MAX_SERVER_NAME);
    // A UTF-8 character is at most 4 bytes, so this steps back at most 3 times.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).filter(|n| !n.is_empty())
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

    /// [`Repr::parse_with`] for a message under an HMAC key (32-byte trailer).
    pub fn parse(packet: &Packet<&'a [u8]>) -> Result<Repr<'a>, Error> {
        Repr::parse_with(packet, Trailer::HmacSha256)
    }

    /// Walks the TLVs between the header and `trailer` once. Unknown types from
    /// [`tlv::FIRST_SKIPPABLE`] up are skipped; the first of any other problem is the error.
    pub fn parse_with(packet: &Packet<&'a [u8]>, trailer: Trailer) -> Result<Repr<'a>, Error> {
        let b: &'a [u8] = packet.buffer;
        let p = Packet::new_checked(b)?;
        p.check_trailer(trailer)?;
        let mut r = Repr::new(p.msg_type(), p.key_id(), p.sequence());
        let mut tlvs: &'a [u8] = b.get(field::TLVS..p.trailer_start(trailer)).unwrap_or(&[]);
        // One bit per type below 128: "each type at most once".
        let mut seen = 0u128;
        while let [t, rest @ ..] = tlvs {
            let t = *t;
            let [len, rest @ ..] = rest else {
                return Err(Error::TlvOverrun { tlv: t });
            };
            let len = *len;
            let (Some(v), Some(next)) = (rest.get(..usize::from(len)), rest.get(usize::from(len)..)) else {
                return Err(Error::TlvOverrun { tlv: t });
            };
            tlvs = next;
            if t >= tlv::FIRST_SKIPPABLE {
                continue;
            }
            let bit = 1u128 << t;
            if seen & bit != 0 {
                return Err(Error::TlvDuplicate { tlv: t });
            }
            seen |= bit;
            let bad_len = Error::TlvLength { tlv: t, len };
            let ip = |v: &[u8]| match v {
                [a, b, c, d] => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
                _ => Err(bad_len),
            };
            let mac = |v: &[u8]| if v.len() == 6 { Mac::from_slice(v).ok_or(bad_len) } else { Err(bad_len) };
            match t {
                tlv::SERVER_IPV4 => r.server_ipv4 = Some(ip(v)?),
                tlv::PREVIOUS_IPV4 => r.previous_ipv4 = Some(ip(v)?),
                tlv::TERMINAL_IPV4 => r.terminal_ipv4 = Some(ip(v)?),
                tlv::SERVER_MAC => r.server_mac = Some(mac(v)?),
                tlv::TERMINAL_MAC => r.terminal_mac = Some(mac(v)?),
                tlv::SERVER_NAME => {
                    if v.is_empty() || v.len() > MAX_SERVER_NAME {
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
        // Every known TLV that was seen is now a `Some`, so the fields answer "was it there".
        r.check_required()?;
        Ok(r)
    }

    fn has(&self, t: u8) -> bool {
        match t {
            tlv::SERVER_IPV4 => self.server_ipv4.is_some(),
            tlv::SERVER_MAC => self.server_mac.is_some(),
            tlv::PREVIOUS_IPV4 => self.previous_ipv4.is_some(),
            tlv::SERVER_NAME => self.server_name.and_then(wire_server_name).is_some(),
            tlv::SERVICE_PORT => self.service_port.is_some(),
            tlv::NONCE => self.nonce.is_some(),
            tlv::TERMINAL_MAC => self.terminal_mac.is_some(),
            tlv::TERMINAL_IPV4 => self.terminal_ipv4.is_some(),
            tlv::STATUS => self.status.is_some(),
            _ => false,
        }
    }

    /// The type is known and every TLV it requires is present: the check that ends
    /// [`Repr::parse`], and that [`Repr::emit`] makes first so it never writes a message that
    /// parse would refuse.
    pub fn check_required(&self) -> Result<(), Error> {
        match required(self.msg_type)?.iter().find(|&&t| !self.has(t)) {
            Some(&missing) => Err(Error::TlvMissing { tlv: missing }),
            None => Ok(()),
        }
    }

    /// What `parse(emit(self))` returns: SERVER_NAME cut to at most 64 bytes at a character
    /// boundary, and an empty one dropped. Every other field goes on the wire as it is.
    pub fn normalised(&self) -> Repr<'a> {
        Repr { server_name: self.server_name.and_then(wire_server_name), ..*self }
    }

    fn tlvs_len(&self) -> usize {
        let r = self.normalised();
        let mut n = 0;
        n += [r.server_ipv4, r.previous_ipv4, r.terminal_ipv4].iter().flatten().count() * 6;
        n += [r.server_mac, r.terminal_mac].iter().flatten().count() * 8;
        n += r.server_name.map_or(0, |s| 2 + s.len());
        n += r.service_port.map_or(0, |_| 4);
        n += r.nonce.map_or(0, |_| 18);
        n += r.status.map_or(0, |_| 3);
        n
    }

    /// Header, TLVs and an HMAC tag. Header plus tag is exactly the 52-byte minimum, so no
    /// padding is ever needed, and every TLV at its largest still fits in 1024 (checked at
    /// compile time, for the longer Ed25519 trailer too).
    pub fn buffer_len(&self) -> usize {
        self.buffer_len_with(Trailer::HmacSha256)
    }

    pub fn buffer_len_with(&self, trailer: Trailer) -> usize {
        HEADER_LEN + self.tlvs_len() + trailer.len()
    }

    /// [`Repr::emit_signed`] with an HMAC-SHA256 key.
    pub fn emit(&self, buf: &mut [u8], key: &[u8]) -> Result<usize, EmitError> {
        self.emit_signed(buf, Signer::Hmac(key))
    }

    /// Writes [`Repr::normalised`] and signs it with `signer`. TLVs go in type order. Refuses
    /// (and writes nothing) what [`Repr::check_required`] refuses. An Ed25519 message whose TLVs
    /// are shorter than 20 bytes would be under the 84-byte minimum; every type's required TLVs
    /// exceed that, and the check below refuses rather than pads if one ever did not.
    pub fn emit_signed(&self, buf: &mut [u8], signer: Signer<'_>) -> Result<usize, EmitError> {
        self.check_required().map_err(EmitError::Invalid)?;
        let r = self.normalised();
        let trailer = signer.trailer();
        let len = r.buffer_len_with(trailer);
        if len < HEADER_LEN + trailer.len() || len < MIN_LEN {
            return Err(EmitError::Invalid(Error::Trailer(u16::try_from(len).unwrap_or(u16::MAX))));
        }
        let len16 = u16::try_from(len).ok().filter(|_| len <= MAX_LEN).ok_or(BufferTooSmall)?;
        let buf = buf.get_mut(..len).ok_or(BufferTooSmall)?;
        buf.fill(0);
        put(buf, field::MAGIC, &MAGIC)?;
        put(buf, field::VERSION..field::VERSION + 1, &[VERSION])?;
        put(buf, field::TYPE..field::TYPE + 1, &[u8::from(r.msg_type)])?;
        put(buf, field::LENGTH, &len16.to_be_bytes())?;
        put(buf, field::KEY_ID, &r.key_id.to_be_bytes())?;
        put(buf, field::SEQUENCE, &r.sequence.to_be_bytes())?;
        let hmac_at = len - trailer.len();
        let (signed, tag_out) = buf.split_at_mut(hmac_at);
        let mut pos = field::TLVS;
        let mut w = |t: u8, v: &[u8]| -> Result<(), BufferTooSmall> {
            let l = u8::try_from(v.len()).map_err(|_| BufferTooSmall)?;
            put(signed, pos..pos + 2, &[t, l])?;
            put(signed, pos + 2..pos + 2 + v.len(), v)?;
            pos += 2 + v.len();
            Ok(())
        };
        if let Some(a) = r.server_ipv4 {
            w(tlv::SERVER_IPV4, &a.octets())?;
        }
        if let Some(m) = r.server_mac {
            w(tlv::SERVER_MAC, &m.0)?;
        }
        if let Some(a) = r.previous_ipv4 {
            w(tlv::PREVIOUS_IPV4, &a.octets())?;
        }
        if let Some(s) = r.server_name {
            w(tlv::SERVER_NAME, s.as_bytes())?;
        }
        if let Some(p) = r.service_port {
            w(tlv::SERVICE_PORT, &p.to_be_bytes())?;
        }
        if let Some(n) = r.nonce {
            w(tlv::NONCE, &n)?;
        }
        if let Some(m) = r.terminal_mac {
            w(tlv::TERMINAL_MAC, &m.0)?;
        }
        if let Some(a) = r.terminal_ipv4 {
            w(tlv::TERMINAL_IPV4, &a.octets())?;
        }
        if let Some(s) = r.status {
            w(tlv::STATUS, &[s])?;
        }
        // buffer_len and the writes above must agree to the byte: a gap would be read back as
        // a TLV of type 0. Reported rather than signed.
        if pos != hmac_at {
            return Err(EmitError::Buffer(BufferTooSmall));
        }
        let tag = tag_out.get_mut(..trailer.len()).ok_or(BufferTooSmall)?;
        signer.sign(signed, tag);
        Ok(len)
    }

    /// The HMAC-signed message, or an empty vector when [`Repr::emit`] refuses the Repr.
    pub fn to_bytes(&self, key: &[u8]) -> Vec<u8> {
        self.to_bytes_signed(Signer::Hmac(key))
    }

    /// The signed message, or an empty vector when [`Repr::emit_signed`] refuses the Repr.
    pub fn to_bytes_signed(&self, signer: Signer<'_>) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len_with(signer.trailer())];
        let n = self.emit_signed(&mut v, signer).unwrap_or(0);
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
        let tag = crate::wire::auth::hmac_sha256(KEY, &b);
        b.extend_from_slice(&tag);
        b
    }

    #[test]
    fn parse_and_emit_agree_with_the_table() {
        let raw = announce_bytes();
        assert_eq!(announce().to_bytes(KEY), raw);
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert!(p.verify(&VerifyKey::Hmac(KEY.to_vec())));
        assert!(!p.verify(&VerifyKey::Hmac(b"wrong".to_vec())));
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
        // announce_bytes() with SERVER_MAC (bytes 26..34) cut out and the length fixed up: emit
        // refuses to write such a message, so it is made by hand.
        let mut raw = announce_bytes();
        raw.truncate(raw.len() - 32);
        raw.drain(26..34);
        raw[7] = 64;
        let tag = crate::wire::auth::hmac_sha256(KEY, &raw);
        raw.extend_from_slice(&tag);
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::TlvMissing { tlv: tlv::SERVER_MAC });
    }

    fn round_trip(r: &Repr<'_>) -> Vec<u8> {
        let raw = r.to_bytes(KEY);
        assert_eq!(raw.len(), r.buffer_len());
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert!(p.verify(&VerifyKey::Hmac(KEY.to_vec())));
        assert_eq!(Repr::parse(&p).unwrap(), r.normalised());
        raw
    }

    #[test]
    fn server_name_is_cut_at_a_character_boundary_within_64_bytes() {
        // 63 ASCII bytes and a 2-byte 'é' make 65: emit used to size 64 and write 63 (a stray
        // zero byte before the tag, read back as a TLV overrun), or cut 'é' in half.
        let long = format!("{}é", "a".repeat(63));
        let mut r = announce();
        r.server_name = Some(&long);
        round_trip(&r);
        assert_eq!(r.normalised().server_name, Some(&long[..63]));
        // Three-byte characters: 64 is not a boundary, 63 is.
        let euros = "€".repeat(30);
        r.server_name = Some(&euros);
        round_trip(&r);
        assert_eq!(r.normalised().server_name.map(str::len), Some(63));
        // Exactly 64 bytes goes out whole.
        let full = "b".repeat(64);
        r.server_name = Some(&full);
        round_trip(&r);
        assert_eq!(r.normalised().server_name, Some(&full[..]));
        // The wire has no empty name (parse rejects length 0), so emit leaves it out.
        r.server_name = Some("");
        let raw = round_trip(&r);
        assert_eq!(r.normalised().server_name, None);
        assert_eq!(raw, announce().to_bytes(KEY));
    }

    #[test]
    fn emit_refuses_what_parse_would_reject() {
        let mut buf = [0xaa; MAX_LEN];
        let mut r = announce();
        r.server_mac = None;
        assert_eq!(r.emit(&mut buf, KEY), Err(EmitError::Invalid(Error::TlvMissing { tlv: tlv::SERVER_MAC })));
        assert!(r.to_bytes(KEY).is_empty());
        assert!(buf.iter().all(|&b| b == 0xaa), "a refused emit writes nothing");
        let mut u = announce();
        u.msg_type = MessageType::Unknown(4);
        assert_eq!(u.emit(&mut buf, KEY), Err(EmitError::Invalid(Error::Type(4))));
        let w = Repr { server_ipv4: Some(Ipv4Addr::new(10, 77, 0, 20)), ..Repr::new(MessageType::Welcome, 1, 2) };
        assert_eq!(w.emit(&mut buf, KEY), Err(EmitError::Invalid(Error::TlvMissing { tlv: tlv::STATUS })));
        assert_eq!(announce().emit(&mut buf[..71], KEY), Err(EmitError::Buffer(BufferTooSmall)));
    }

    #[test]
    fn every_tlv_at_its_largest_fits() {
        let name = "n".repeat(200);
        let r = Repr {
            server_name: Some(&name),
            service_port: Some(443),
            nonce: Some([7; 16]),
            terminal_mac: Some(Mac([2, 0, 0, 0, 0, 0x10])),
            terminal_ipv4: Some(Ipv4Addr::new(10, 77, 0, 10)),
            status: Some(status::BUSY),
            ..announce()
        };
        let raw = round_trip(&r);
        assert_eq!(raw.len(), HEADER_LEN + MAX_TLVS_LEN + 32);
    }
}
