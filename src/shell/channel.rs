//! The connection channel, terminal side (seed claims 2 and 6): connect to server:port over TCP,
//! send HELLO with a fresh nonce, and accept only the WELCOME that proves the connection:
//! valid HMAC, our nonce echoed, SERVER_IPV4 equal to the address we dialled, STATUS 0.
//!
//! Contract: one attempt per call, no policy: retries, backoff and giving up belong to the engine
//! (engine/channel.rs), which gets each attempt's outcome as an [`ActionResult`] ([`outcome`]).
//! One record each way, each at most 1024 bytes (the ipsync maximum); the whole exchange
//! (connect, HELLO, WELCOME) has one deadline; every failure is a typed [`ChannelError`].

use crate::engine::{ActionResult, ChannelFailure, ServerName, Service};
use crate::wire::ipsync::next_sequence;
use crate::wire::sig::VerifyKey;
use crate::wire::{ipsync, Mac};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug)]
#[non_exhaustive]
pub enum ChannelError {
    Connect(std::io::Error),
    Io(std::io::Error),
    Malformed(ipsync::Error),
    NotWelcome,
    UnknownKey(u32),
    BadMac,
    NonceMismatch,
    WrongServer { dialled: Ipv4Addr, said: Option<Ipv4Addr> },
    Status(u8),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::Connect(e) => write!(f, "connect: {e}"),
            ChannelError::Io(e) => write!(f, "i/o: {e}"),
            ChannelError::Malformed(e) => write!(f, "malformed reply: {}", e.reason()),
            ChannelError::NotWelcome => write!(f, "reply is not a WELCOME"),
            ChannelError::UnknownKey(k) => write!(f, "reply signed with unknown key id {k}"),
            ChannelError::BadMac => write!(f, "reply HMAC does not verify"),
            ChannelError::NonceMismatch => write!(f, "reply does not echo our nonce"),
            ChannelError::WrongServer { dialled, said } => write!(f, "dialled {dialled} but WELCOME names {said:?}"),
            ChannelError::Status(s) => write!(f, "server answered status {s}"),
        }
    }
}

impl std::error::Error for ChannelError {}

/// Reads one ipsync record from a stream: the 8-byte prefix gives the length, which is checked
/// against the protocol bounds before the rest is read, so a peer cannot make us allocate.
pub fn read_record(s: &mut impl Read) -> Result<Vec<u8>, ChannelError> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).map_err(ChannelError::Io)?;
    if head[..4] != ipsync::MAGIC {
        return Err(ChannelError::Malformed(ipsync::Error::Magic));
    }
    let len = usize::from(u16::from_be_bytes([head[6], head[7]]));
    if !(ipsync::MIN_LEN..=ipsync::MAX_LEN).contains(&len) {
        return Err(ChannelError::Malformed(ipsync::Error::Length(len as u16)));
    }
    let mut buf = vec![0u8; len];
    buf[..8].copy_from_slice(&head);
    s.read_exact(&mut buf[8..]).map_err(ChannelError::Io)?;
    Ok(buf)
}

/// Who we are on the channel.
#[derive(Debug, Clone)]
pub struct Terminal {
    /// The shared `[[key]]` that signs HELLO.
    pub key_id: u32,
    pub key: Vec<u8>,
    /// Every `[[key]]`: what a WELCOME may be signed with ([`Terminal::welcome_key`]).
    pub keys: BTreeMap<u32, VerifyKey>,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

impl Terminal {
    /// The key a WELCOME under `key_id` is checked with. A terminal that holds an Ed25519 key
    /// takes WELCOMEs signed by one only (DESIGN §4.3: `serve` signs with its Ed25519 key when it
    /// has one), so whoever holds the shared HELLO key cannot stand in for the server; without
    /// one, the WELCOME is under the HELLO's own key.
    pub fn welcome_key(&self, key_id: u32) -> Option<&VerifyKey> {
        let ed25519 = self.keys.values().any(|k| matches!(k, VerifyKey::Ed25519(_)));
        match self.keys.get(&key_id) {
            Some(k @ VerifyKey::Ed25519(_)) => Some(k),
            Some(k @ VerifyKey::Hmac(_)) if !ed25519 && key_id == self.key_id => Some(k),
            _ => None,
        }
    }
}

/// A verified WELCOME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub server_ip: Ipv4Addr,
    pub server_mac: Option<Mac>,
    pub sequence: u64,
    /// Its SERVICE_PORT and SERVER_NAME (a name with a control character is dropped, as the
    /// engine drops one in an ANNOUNCE), for the SERVER_CONNECTED hook.
    pub service: Service,
}

/// Reads from a stream with one deadline for all reads together, so a peer that drips one
/// byte at a time cannot stretch the exchange.
struct Deadline<'a> {
    s: &'a TcpStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        self.s.set_read_timeout(Some(left))?;
        let mut s = self.s;
        s.read(buf)
    }
}

/// One HELLO → WELCOME exchange within `timeout`. `nonce` and `sequence` are inputs so the caller
/// owns randomness and the sender's sequence.
pub fn hello(
    t: &Terminal,
    server: Ipv4Addr,
    port: u16,
    timeout: Duration,
    nonce: [u8; 16],
    sequence: u64,
) -> Result<Welcome, ChannelError> {
    let until = Instant::now() + timeout;
    let addr = SocketAddr::V4(SocketAddrV4::new(server, port));
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(ChannelError::Connect)?;
    let _ = s.set_nodelay(true);
    let left = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    s.set_write_timeout(Some(left)).map_err(ChannelError::Io)?;
    let mut h = ipsync::Repr::new(ipsync::MessageType::Hello, t.key_id, sequence);
    h.nonce = Some(nonce);
    h.terminal_mac = Some(t.mac);
    h.terminal_ipv4 = Some(t.ip);
    (&s).write_all(&h.to_bytes(&t.key)).map_err(ChannelError::Io)?;
    let reply = read_record(&mut Deadline { s: &s, until })?;
    let p = ipsync::Packet::new_checked(&reply[..]).map_err(ChannelError::Malformed)?;
    let key = t.welcome_key(p.key_id()).ok_or(ChannelError::UnknownKey(p.key_id()))?;
    let w = ipsync::Repr::parse_with(&p, key.trailer()).map_err(ChannelError::Malformed)?;
    if w.msg_type != ipsync::MessageType::Welcome {
        return Err(ChannelError::NotWelcome);
    }
    if !p.verify(key) {
        return Err(ChannelError::BadMac);
    }
    if !w.nonce.is_some_and(|n| crate::wire::auth::ct_eq(&n, &nonce)) {
        return Err(ChannelError::NonceMismatch);
    }
    if w.server_ipv4 != Some(server) {
        return Err(ChannelError::WrongServer { dialled: server, said: w.server_ipv4 });
    }
    match w.status {
        Some(ipsync::status::SUCCESS) => {
            let service = Service { port: w.service_port, name: w.server_name.and_then(ServerName::new) };
            Ok(Welcome { server_ip: server, server_mac: w.server_mac, sequence: w.sequence, service })
        }
        other => Err(ChannelError::Status(other.unwrap_or(u8::MAX))),
    }
}

/// What the engine is told about one attempt to `ip` (DESIGN §5 `welcome`/`retry` reasons).
pub fn outcome(ip: Ipv4Addr, r: &Result<Welcome, ChannelError>) -> ActionResult {
    let io_failure = |e: &io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => ChannelFailure::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ChannelFailure::Timeout,
        _ => ChannelFailure::Closed,
    };
    let failed = |failure| ActionResult::ChannelFailed { ip, failure };
    match r {
        Ok(w) => ActionResult::Welcome { ip, mac: w.server_mac, status: ipsync::status::SUCCESS, service: w.service },
        Err(ChannelError::Status(s)) => {
            ActionResult::Welcome { ip, mac: None, status: *s, service: Service::default() }
        }
        Err(ChannelError::UnknownKey(_)) => ActionResult::WelcomeRejected { ip, reason: "unknown_key" },
        Err(ChannelError::BadMac) => ActionResult::WelcomeRejected { ip, reason: "bad_mac" },
        Err(ChannelError::Connect(e)) | Err(ChannelError::Io(e)) => failed(io_failure(e)),
        Err(ChannelError::Malformed(_))
        | Err(ChannelError::NotWelcome)
        | Err(ChannelError::NonceMismatch)
        | Err(ChannelError::WrongServer { .. }) => failed(ChannelFailure::BadWelcome),
    }
}

/// The sender side of DESIGN §4.3 for HELLOs: a fresh sequence for each message.
pub fn next_hello_sequence(last: &mut Option<u64>, now_unix_us: u64) -> u64 {
    let s = next_sequence(*last, now_unix_us);
    *last = Some(s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_with_an_ed25519_key_takes_welcomes_signed_by_one_only() {
        let ed = VerifyKey::Ed25519(crate::wire::sig::SigningKey::from_bytes(&[9; 32]).verifying_key());
        let hmac = VerifyKey::Hmac(vec![7; 32]);
        let mut t = Terminal {
            key_id: 1,
            key: vec![7; 32],
            keys: BTreeMap::from([(1, hmac.clone()), (2, ed.clone())]),
            mac: Mac([2, 0, 0, 0, 0, 0x10]),
            ip: Ipv4Addr::LOCALHOST,
        };
        // Whoever holds the shared HELLO key (any terminal) cannot stand in for the server.
        assert_eq!(t.welcome_key(1), None);
        assert_eq!(t.welcome_key(2), Some(&ed));
        assert_eq!(t.welcome_key(3), None);
        t.keys.remove(&2);
        assert_eq!(t.welcome_key(1), Some(&hmac), "without Ed25519, the HELLO's own key signs");
        t.keys.insert(4, VerifyKey::Hmac(vec![8; 32]));
        assert_eq!(t.welcome_key(4), None, "another shared key is not the HELLO's");
    }

    #[test]
    fn record_reader_bounds_the_length() {
        let mut bad = &b"IPSY\x01\x02\xff\xff"[..];
        assert!(matches!(read_record(&mut bad), Err(ChannelError::Malformed(ipsync::Error::Length(0xffff)))));
        let mut junk = &b"GET / HTTP/1.1\r\n"[..];
        assert!(matches!(read_record(&mut junk), Err(ChannelError::Malformed(ipsync::Error::Magic))));
    }

    #[test]
    fn outcomes_map_to_design_reasons() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let refused = Err(ChannelError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert_eq!(outcome(ip, &refused), ActionResult::ChannelFailed { ip, failure: ChannelFailure::Refused });
        let slow = Err(ChannelError::Io(io::Error::from(io::ErrorKind::WouldBlock)));
        assert_eq!(outcome(ip, &slow), ActionResult::ChannelFailed { ip, failure: ChannelFailure::Timeout });
        let eof = Err(ChannelError::Io(io::Error::from(io::ErrorKind::UnexpectedEof)));
        assert_eq!(outcome(ip, &eof), ActionResult::ChannelFailed { ip, failure: ChannelFailure::Closed });
        assert_eq!(outcome(ip, &Err(ChannelError::BadMac)), ActionResult::WelcomeRejected { ip, reason: "bad_mac" });
        assert_eq!(
            outcome(ip, &Err(ChannelError::Status(2))),
            ActionResult::Welcome { ip, mac: None, status: 2, service: Service::default() }
        );
        assert_eq!(
            outcome(ip, &Err(ChannelError::NonceMismatch)),
            ActionResult::ChannelFailed { ip, failure: ChannelFailure::BadWelcome }
        );
    }
}
