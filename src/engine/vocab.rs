//! The engine's vocabulary: time, addresses, randomness, configuration, and the actions the
//! applier carries out with the results it reports back.
//!
//! Contract: plain data. Nothing here decides anything; [`super::core`] does.

use crate::wire::sig::VerifyKey;
use crate::wire::Mac;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// A monotonic count of microseconds (DESIGN §3). Live it is CLOCK_BOOTTIME, so a step of the
/// wall clock never moves a deadline; in replay it is the pcap time. Wall time reaches the
/// engine only through [`Engine::set_wall_clock`](super::Engine::set_wall_clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    pub const fn from_micros(us: u64) -> Instant {
        Instant(us)
    }
    pub const fn from_secs(s: u64) -> Instant {
        Instant(s.saturating_mul(1_000_000))
    }
    pub fn micros(self) -> u64 {
        self.0
    }
    pub fn secs(self) -> u64 {
        self.0 / 1_000_000
    }
    pub fn add_ms(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms.saturating_mul(1000)))
    }
    pub fn add_secs(self, s: u64) -> Instant {
        Instant(self.0.saturating_add(s.saturating_mul(1_000_000)))
    }
    pub fn saturating_sub(self, o: Instant) -> u64 {
        self.0.saturating_sub(o.0)
    }
    pub const FAR: Instant = Instant(u64::MAX);
}

impl fmt::Display for Instant {
    /// `seconds.micros`, the decision log's `time`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// An IPv4 address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Cidr {
        Cidr { addr, prefix: prefix.min(32) }
    }
    pub fn from_mask(addr: Ipv4Addr, mask: Ipv4Addr) -> Cidr {
        Cidr::new(addr, u32::from(mask).leading_ones() as u8)
    }
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

/// DESIGN §5 "Usable addresses": outside 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4
/// and 240.0.0.0/4 (broadcast included).
pub fn reserved_address(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0 || o[0] == 127 || (o[0] == 169 && o[1] == 254) || o[0] >= 224
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl core::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("expected ADDRESS/PREFIX, got {s:?}"))?;
        let addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix length"))?;
        if prefix > 32 {
            return Err(format!("prefix /{prefix} is longer than 32"));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// A small deterministic generator (xorshift64*). Randomness is an input like time: live seeds
/// it from the OS, replay from a constant, so xids and jitter are replayable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in `lo..=hi` (milliseconds, typically).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo + 1)
        }
    }
    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        b
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookReason {
    ServerChanged,
    ServerConnected,
    ServerUnreachable,
    Conflict,
    ForceRenew,
    LeaseBound,
    LeaseRenewed,
    LeaseChanged,
    LeaseLost,
}

impl HookReason {
    /// CONFLICT and SERVER_UNREACHABLE report evidence (coalesced, rate-limited, never holding a
    /// life-cycle hook back); every other reason follows a change (DESIGN §5, §10).
    pub fn is_alarm(self) -> bool {
        matches!(self, HookReason::Conflict | HookReason::ServerUnreachable)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HookReason::ServerChanged => "SERVER_CHANGED",
            HookReason::ServerConnected => "SERVER_CONNECTED",
            HookReason::ServerUnreachable => "SERVER_UNREACHABLE",
            HookReason::Conflict => "CONFLICT",
            HookReason::ForceRenew => "FORCERENEW",
            HookReason::LeaseBound => "LEASE_BOUND",
            HookReason::LeaseRenewed => "LEASE_RENEWED",
            HookReason::LeaseChanged => "LEASE_CHANGED",
            HookReason::LeaseLost => "LEASE_LOST",
        }
    }
}

/// An ANNOUNCE's SERVER_NAME as a hook may see it (DESIGN §9): at most 64 bytes of UTF-8 with no
/// control character, held inline so that the records carrying it stay `Copy` and a frame
/// costs no allocation for it. A name with a control character (a newline written into a
/// viewer's config file starts a new key there) is not passed on at all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerName {
    len: u8,
    bytes: [u8; ServerName::MAX],
}

impl ServerName {
    pub const MAX: usize = 64;

    pub fn new(s: &str) -> Option<ServerName> {
        if s.is_empty() || s.len() > ServerName::MAX || s.chars().any(char::is_control) {
            return None;
        }
        let mut bytes = [0; ServerName::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(ServerName { len: s.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Built only from a whole &str in `new`, so this is its bytes; the fallback is unreachable.
        self.bytes.get(..usize::from(self.len)).and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("")
    }
}

impl fmt::Debug for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What the server said about its VDI service, for the hook's SERVICE_PORT and SERVER_NAME
/// (DESIGN §4.3 TLVs 5 and 4): from an ANNOUNCE, or from a WELCOME, which may carry them too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Service {
    pub port: Option<u16>,
    pub name: Option<ServerName>,
}

impl Service {
    /// Each value from `self` where it has one, else from `other`.
    pub fn or(self, other: Service) -> Service {
        Service { port: self.port.or(other.port), name: self.name.or(other.name) }
    }
}

/// The hook's environment (DESIGN §9), filled by the engine so hooks see what it decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookEnv {
    pub old_server_ip: Option<Ipv4Addr>,
    pub new_server_ip: Option<Ipv4Addr>,
    pub server_mac: Option<Mac>,
    pub service_port: Option<u16>,
    pub own_ip: Option<Ipv4Addr>,
    pub old_own_ip: Option<Ipv4Addr>,
    pub conflict_kind: Option<&'static str>,
    /// SERVER_NAME, from the ANNOUNCE that moved us or the server's WELCOME, when one carried it.
    pub server_name: Option<ServerName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxKind {
    Discover,
    Request,
    Decline,
    Release,
    ArpProbe,
    ArpAnnounce,
    ArpRequest,
}

impl TxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Discover => "discover",
            TxKind::Request => "request",
            TxKind::Decline => "decline",
            TxKind::Release => "release",
            TxKind::ArpProbe => "arp_probe",
            TxKind::ArpAnnounce => "arp_announce",
            TxKind::ArpRequest => "arp_request",
        }
    }
}

/// What the applier does. Order within a decision is significant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    PinNeighbour {
        ip: Ipv4Addr,
        mac: Mac,
    },
    UnpinNeighbour {
        ip: Ipv4Addr,
    },
    /// Our own address, and the default route via the lease's router (option 3) when it has one.
    SetAddress {
        cidr: Cidr,
        router: Option<Ipv4Addr>,
    },
    DelAddress {
        cidr: Cidr,
    },
    /// A complete Ethernet frame to send on the interface.
    Transmit {
        kind: TxKind,
        frame: Vec<u8>,
    },
    Connect {
        ip: Ipv4Addr,
        port: u16,
    },
    SetServer {
        ip: Ipv4Addr,
        mac: Option<Mac>,
    },
    Alarm {
        kind: &'static str,
        detail: String,
    },
    Hook {
        reason: HookReason,
        env: HookEnv,
    },
}

impl Action {
    pub fn op(&self) -> &'static str {
        match self {
            Action::PinNeighbour { .. } => "pin_neighbour",
            Action::UnpinNeighbour { .. } => "unpin_neighbour",
            Action::SetAddress { .. } => "set_address",
            Action::DelAddress { .. } => "del_address",
            Action::Transmit { .. } => "transmit",
            Action::Connect { .. } => "connect",
            Action::SetServer { .. } => "set_server",
            Action::Alarm { .. } => "alarm",
            Action::Hook { .. } => "hook",
        }
    }
}

/// Why one connection attempt failed (DESIGN §5 `retry` reasons that the shell can observe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelFailure {
    /// No answer within `connect_timeout_ms` (connect or the whole exchange).
    Timeout,
    /// The server refused the TCP connection.
    Refused,
    /// The server closed the connection (or another I/O error) before a WELCOME.
    Closed,
    /// A reply that is no WELCOME for our HELLO: malformed, wrong type, nonce or server address.
    BadWelcome,
}

impl ChannelFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelFailure::Timeout => "timeout",
            ChannelFailure::Refused => "refused",
            ChannelFailure::Closed => "closed",
            ChannelFailure::BadWelcome => "bad_welcome",
        }
    }
}

/// What the applier reports back. An outcome is an input like a frame: the engine turns each
/// into its decision (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// The action took effect (the Recorder reports every action this way).
    Done,
    /// The action failed; the engine logs and counts it, and does not pretend it happened.
    Failed { op: &'static str, error: String },
    /// One `connect` got an authenticated WELCOME from `ip` echoing our nonce, with this status.
    /// The Recorder answers every `connect` with status 0: replay is a perfect network.
    /// `service`: the WELCOME's SERVICE_PORT and SERVER_NAME, for the SERVER_CONNECTED hook.
    Welcome { ip: Ipv4Addr, mac: Option<Mac>, status: u8, service: Service },
    /// One `connect` got a WELCOME that failed authentication (`unknown_key`, `bad_mac`).
    WelcomeRejected { ip: Ipv4Addr, reason: &'static str },
    /// One `connect` to `ip` failed.
    ChannelFailed { ip: Ipv4Addr, failure: ChannelFailure },
    /// The kernel dropped the entry for `ip` (RTM_DELNEIGH, or replaced by a dynamic one).
    PinLost { ip: Ipv4Addr },
    /// The interface came back up (an admin down flushed every permanent entry), or netlink
    /// events were lost: every pin is re-asserted.
    LinkUp,
    /// The state could not be written to disk (DESIGN §10); nothing that waits on it has run.
    PersistFailed { error: String },
    /// The state reached the disk after a [`ActionResult::PersistFailed`]; the hooks held behind
    /// it have been released.
    Persisted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dhcp,
    Follow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AcdMode {
    Strict,
    Optimistic,
}

/// Everything the engine needs from the configuration, already validated.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub mode: Mode,
    pub mac: Mac,
    /// Own address in follow mode (and in replay of follow-mode captures).
    pub address: Option<Cidr>,
    pub initial_server: Option<Ipv4Addr>,
    pub server_option: u8,
    pub port: u16,
    /// `[[key]]`: ipsync keys by id, HMAC-SHA256 secrets or Ed25519 public keys.
    pub keys: BTreeMap<u32, VerifyKey>,
    /// `[[dhcp_key]]`: RFC 3118 delayed-auth keys by secret id.
    pub dhcp_keys: BTreeMap<u32, Vec<u8>>,
    pub allow_unauthenticated: bool,
    pub acd: AcdMode,
    /// `server.connect_attempts`: failures in a row before `unreachable`.
    pub connect_attempts: u32,
    /// `server.max_age_s`: ANNOUNCE freshness against a synchronised clock; 0 = off.
    pub max_age_s: u64,
    /// `server.alarm_interval_s`: alarms are coalesced per kind and address over this.
    pub alarm_interval_s: u64,
    /// `release_on_stop`: a clean stop sends DHCPRELEASE and removes the address (dhcp mode).
    pub release_on_stop: bool,
}

impl EngineConfig {
    /// A configuration with DESIGN §7's defaults, for tests and tools that build one by hand.
    pub fn new(mode: Mode, mac: Mac) -> EngineConfig {
        EngineConfig {
            mode,
            mac,
            address: None,
            initial_server: None,
            server_option: 224,
            port: crate::wire::ipsync::DEFAULT_PORT,
            keys: BTreeMap::new(),
            dhcp_keys: BTreeMap::new(),
            allow_unauthenticated: false,
            acd: AcdMode::Strict,
            connect_attempts: 3,
            max_age_s: 86_400,
            alarm_interval_s: 10,
            release_on_stop: false,
        }
    }
}

/// How wall time relates to the engine's monotonic time. Replay: the pcap time is both, and it
/// counts as synchronised, so a capture decides the same on any day (DESIGN §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wall {
    /// Wall microseconds minus monotonic microseconds.
    pub offset_us: i128,
    /// adjtimex(2) does not report STA_UNSYNC.
    pub synced: bool,
}

impl Wall {
    pub const REPLAY: Wall = Wall { offset_us: 0, synced: true };

    pub fn at(now: Instant, unix_us: u64, synced: bool) -> Wall {
        Wall { offset_us: i128::from(unix_us) - i128::from(now.micros()), synced }
    }
    /// Wall microseconds at monotonic `t`.
    pub fn unix_us(self, t: Instant) -> u64 {
        (i128::from(t.micros()) + self.offset_us).clamp(0, i128::from(u64::MAX)) as u64
    }
    /// Monotonic time at wall microseconds `us` (for restoring persisted deadlines).
    pub fn instant(self, us: u64) -> Instant {
        Instant((i128::from(us) - self.offset_us).clamp(0, i128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_keep_text_and_refuse_control_characters() {
        assert_eq!(ServerName::new("vdi-1.example").map(|n| n.as_str().to_string()), Some("vdi-1.example".into()));
        assert_eq!(ServerName::new(&"é".repeat(32)).map(|n| n.as_str().len()), Some(64));
        for bad in ["", "a\nHOST=evil", "a\u{1b}[2J", "a\u{85}", &"x".repeat(65)] {
            assert!(ServerName::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn wall_maps_both_ways_and_saturates() {
        let w = Wall::at(Instant(5_000_000), 1_700_000_000_000_000, true);
        assert_eq!(w.unix_us(Instant(6_000_000)), 1_700_000_001_000_000);
        assert_eq!(w.instant(1_700_000_001_000_000), Instant(6_000_000));
        assert_eq!(w.instant(0), Instant(0));
        assert_eq!(Wall::REPLAY.unix_us(Instant(42)), 42);
    }
}
