//! The sans-IO decision engine: `(now, input) → decisions + actions`, deterministic.
//!
//! Contract (quinn-proto style): the shell feeds [`Engine::handle_frame`],
//! [`Engine::handle_timeout`] and [`Engine::handle_result`], then drains
//! [`Engine::poll_decision`] and [`Engine::poll_action`], and sleeps until
//! [`Engine::poll_timeout`]. The engine never reads a clock, a socket or a random source: `now`
//! comes in as an argument and randomness from a seeded [`Rng`]. The same inputs therefore give
//! the same decision log, which is what makes replay and golden fixtures possible.
//!
//! Every relevant input yields exactly one [`Decision`]; each decision carries the actions it
//! caused, in order, and the same actions are queued for the applier.

pub mod acd;
pub mod dhcp_client;
pub mod input;
pub mod state;
pub mod sync;

use crate::wire::Mac;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;

pub use input::{DhcpMsg, Inbound, InboundKind, IpsyncMsg};
use state::ServerState;
pub use state::State;

/// Microseconds since the Unix epoch. Replay takes it from pcap timestamps; live from the clock,
/// read once per wakeup in the shell.
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
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
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

/// The decision log's `input` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    Announce,
    ForceRenew,
    Offer,
    Ack,
    Nak,
    Dhcp,
    Arp,
    Welcome,
    Timer,
}

impl Input {
    pub fn as_str(self) -> &'static str {
        match self {
            Input::Announce => "announce",
            Input::ForceRenew => "forcerenew",
            Input::Offer => "offer",
            Input::Ack => "ack",
            Input::Nak => "nak",
            Input::Dhcp => "dhcp",
            Input::Arp => "arp",
            Input::Welcome => "welcome",
            Input::Timer => "timer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Apply,
    Same,
    Conflict,
    Renew,
    Lease,
    Reject,
    Malformed,
    Select,
    Restart,
    Ignore,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Apply => "apply",
            Verdict::Same => "same",
            Verdict::Conflict => "conflict",
            Verdict::Renew => "renew",
            Verdict::Lease => "lease",
            Verdict::Reject => "reject",
            Verdict::Malformed => "malformed",
            Verdict::Select => "select",
            Verdict::Restart => "restart",
            Verdict::Ignore => "ignore",
        }
    }
}

/// Security and semantic reasons (DESIGN §5); decode reasons come from `wire::Malformed`.
pub mod reason {
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const UNKNOWN_KEY: &str = "unknown_key";
    pub const BAD_MAC: &str = "bad_mac";
    pub const REPLAYED: &str = "replayed";
    pub const BAD_SOURCE: &str = "bad_source";
    pub const WRONG_STATE: &str = "wrong_state";
    pub const NOT_FOR_US: &str = "not_for_us";
    pub const OWN_ADDRESS: &str = "own_address";
    pub const ADDRESS_IN_USE: &str = "address_in_use";
    pub const UNEXPECTED: &str = "unexpected";
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
    SetAddress {
        cidr: Cidr,
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

/// What the applier reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// The action took effect (the Recorder reports every action this way).
    Done,
    /// The action failed; the engine logs and counts it, and does not pretend it happened.
    Failed { op: &'static str, error: String },
    /// The connection channel got an authenticated WELCOME from `ip` with this status.
    Welcome { ip: Ipv4Addr, mac: Option<Mac>, status: u8 },
    /// Every connection attempt to `ip` failed.
    Unreachable { ip: Ipv4Addr },
    /// The kernel dropped the entry for `ip` (RTM_DELNEIGH, or replaced by a dynamic one).
    PinLost { ip: Ipv4Addr },
    /// The interface came back up (an admin down flushed every permanent entry).
    LinkUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    /// 1-based frame index; `None` for timer-driven decisions and results.
    pub frame: Option<u64>,
    pub time: Instant,
    pub input: Input,
    pub verdict: Verdict,
    pub reason: Option<&'static str>,
    pub server_ip: Option<Ipv4Addr>,
    pub server_mac: Option<Mac>,
    pub actions: Vec<Action>,
}

impl Decision {
    pub fn new(frame: Option<u64>, time: Instant, input: Input, verdict: Verdict) -> Decision {
        Decision { frame, time, input, verdict, reason: None, server_ip: None, server_mac: None, actions: Vec::new() }
    }
    pub fn reason(mut self, r: &'static str) -> Decision {
        self.reason = Some(r);
        self
    }
    pub fn server(mut self, ip: Option<Ipv4Addr>, mac: Option<Mac>) -> Decision {
        self.server_ip = ip;
        self.server_mac = mac;
        self
    }
    pub fn actions(mut self, actions: Vec<Action>) -> Decision {
        self.actions = actions;
        self
    }
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
    /// `[[key]]`: ipsync HMAC-SHA256 keys by id.
    pub keys: BTreeMap<u32, Vec<u8>>,
    /// `[[dhcp_key]]`: RFC 3118 delayed-auth keys by secret id.
    pub dhcp_keys: BTreeMap<u32, Vec<u8>>,
    pub allow_unauthenticated: bool,
    pub acd: AcdMode,
}

/// Counts per verdict and per (verdict, reason), plus drops that make no decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub verdicts: BTreeMap<String, u64>,
    pub reasons: BTreeMap<String, BTreeMap<String, u64>>,
    pub drops: BTreeMap<String, u64>,
}

impl Counters {
    pub fn count_decision(&mut self, d: &Decision) {
        *self.verdicts.entry(d.verdict.as_str().to_string()).or_default() += 1;
        if let Some(r) = d.reason {
            *self.reasons.entry(d.verdict.as_str().to_string()).or_default().entry(r.to_string()).or_default() += 1;
        }
    }
    pub fn drop(&mut self, what: &str) {
        match self.drops.get_mut(what) {
            Some(n) => *n += 1,
            None => {
                self.drops.insert(what.to_string(), 1);
            }
        }
    }
}

/// Per-source token bucket: 50 relevant frames per second with a burst of 50 (DESIGN §5). The
/// table is bounded; when full, the stalest source is forgotten, so a flood from many spoofed
/// sources costs CPU, never memory.
#[derive(Debug, Default)]
struct RateLimiter {
    buckets: HashMap<Mac, (u64, Instant)>,
}

const RATE_PER_SEC: u64 = 50;
const RATE_SOURCES: usize = 1024;
/// Tokens are kept in millis of a frame, so refill is exact at microsecond resolution.
const TOKEN: u64 = 1000;

impl RateLimiter {
    fn allow(&mut self, src: Mac, now: Instant) -> bool {
        if !self.buckets.contains_key(&src) && self.buckets.len() >= RATE_SOURCES {
            if let Some(stalest) = self.buckets.iter().min_by_key(|(_, (_, t))| *t).map(|(m, _)| *m) {
                self.buckets.remove(&stalest);
            }
        }
        let cap = RATE_PER_SEC * TOKEN;
        let (tokens, last) = self.buckets.entry(src).or_insert((cap, now));
        let refill = now.saturating_sub(*last) * RATE_PER_SEC * TOKEN / 1_000_000;
        *tokens = (*tokens + refill).min(cap);
        *last = now;
        if *tokens >= TOKEN {
            *tokens -= TOKEN;
            true
        } else {
            false
        }
    }
}

/// What we have seen ARP say about who owns an address: conflict evidence (DESIGN §2 step 3).
#[derive(Debug, Default)]
struct ArpCache {
    entries: HashMap<Ipv4Addr, (Mac, Instant)>,
}

const ARP_CACHE_MAX: usize = 256;
/// ARP evidence older than this is not held against an announcement.
const ARP_EVIDENCE_US: u64 = 60_000_000;

impl ArpCache {
    fn learn(&mut self, ip: Ipv4Addr, mac: Mac, now: Instant) {
        if !self.entries.contains_key(&ip) && self.entries.len() >= ARP_CACHE_MAX {
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(ip, _)| *ip) {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(ip, (mac, now));
    }
    fn owner(&self, ip: Ipv4Addr, now: Instant) -> Option<Mac> {
        self.entries.get(&ip).filter(|(_, t)| now.saturating_sub(*t) <= ARP_EVIDENCE_US).map(|(m, _)| *m)
    }
}

/// An address we are resolving by ARP so that it can be pinned.
#[derive(Debug, Clone, Copy)]
struct Resolving {
    ip: Ipv4Addr,
    /// The first MAC that answered; a second, different one is a conflict.
    answered: Option<Mac>,
    until: Instant,
}

pub struct Engine {
    cfg: EngineConfig,
    state: State,
    client: dhcp_client::Client,
    rng: Rng,
    rate: RateLimiter,
    arp: ArpCache,
    resolving: Option<Resolving>,
    decisions: VecDeque<Decision>,
    actions: VecDeque<Action>,
    counters: Counters,
    dirty: bool,
    last_decision: Option<(Input, Verdict, Instant)>,
    /// The server we last got a WELCOME from, and when.
    welcomed: Option<(Ipv4Addr, Instant)>,
}

impl Engine {
    pub fn new(cfg: EngineConfig, state: State, seed: u64) -> Engine {
        let client = dhcp_client::Client::restore(&state);
        Engine {
            cfg,
            state,
            client,
            rng: Rng::new(seed),
            rate: RateLimiter::default(),
            arp: ArpCache::default(),
            resolving: None,
            decisions: VecDeque::new(),
            actions: VecDeque::new(),
            counters: Counters::default(),
            dirty: false,
            last_decision: None,
            welcomed: None,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn last_decision(&self) -> Option<(Input, Verdict, Instant)> {
        self.last_decision
    }
    /// `Some(time of the last WELCOME)` when the current server has answered since it became current.
    pub fn connected_since(&self) -> Option<Instant> {
        self.welcomed.filter(|(ip, _)| Some(*ip) == self.current_server()).map(|(_, t)| t)
    }

    /// The DHCP client's state name for `status` (BOUND, RENEWING, …).
    pub fn client_state(&self) -> &'static str {
        self.client.name()
    }

    /// True once after the persisted state changed: the shell then writes it out.
    pub fn take_dirty(&mut self) -> bool {
        core::mem::take(&mut self.dirty)
    }

    /// Live start: re-pin and connect to a known server at once (DESIGN §6), and in dhcp mode
    /// start the client. Replay does not call this: the capture's own frames play the client's part.
    pub fn start(&mut self, now: Instant) {
        // A restart (or a crash) may have lost the pin with the link or the address: re-assert it.
        if let Some(ServerState { ip, mac: Some(mac), .. }) = self.state.server {
            self.actions.push_back(Action::PinNeighbour { ip, mac });
        }
        if let Some(ip) = self.current_server() {
            self.actions.push_back(Action::Connect { ip, port: self.cfg.port });
        }
        if self.cfg.mode == Mode::Dhcp {
            self.client_start(now);
        }
    }

    /// Updates keys after a reload; state and counters are kept.
    pub fn reload_keys(&mut self, keys: BTreeMap<u32, Vec<u8>>, dhcp_keys: BTreeMap<u32, Vec<u8>>) {
        self.cfg.keys = keys;
        self.cfg.dhcp_keys = dhcp_keys;
    }

    pub fn handle_frame(&mut self, now: Instant, inbound: &Inbound) {
        match &inbound.kind {
            InboundKind::Own(msg) => self.handle_own_dhcp(now, msg),
            InboundKind::Malformed { input, reason } => {
                if self.rate.allow(inbound.src, now) {
                    self.decide(Decision::new(inbound.frame, now, *input, Verdict::Malformed).reason(reason));
                } else {
                    self.counters.drop("rate_limited");
                }
            }
            InboundKind::Ignored => {}
            InboundKind::Ipsync(msg) => {
                if self.rate.allow(inbound.src, now) {
                    self.handle_ipsync(now, inbound.frame, msg, &inbound.raw);
                } else {
                    self.counters.drop("rate_limited");
                }
            }
            InboundKind::Dhcp(msg) => {
                if self.rate.allow(inbound.src, now) {
                    self.handle_dhcp(now, inbound.frame, msg, &inbound.raw, inbound.src);
                } else {
                    self.counters.drop("rate_limited");
                }
            }
            InboundKind::Arp(arp) => self.handle_arp(now, inbound.frame, arp),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.client_timeout(now);
    }

    pub fn handle_result(&mut self, now: Instant, result: ActionResult) {
        match result {
            ActionResult::Done => {}
            ActionResult::Failed { op, error } => {
                log::warn!("{op} failed: {error}");
                self.counters.drop("action_failed");
            }
            ActionResult::Welcome { ip, mac, status } => self.handle_welcome(now, ip, mac, status),
            ActionResult::Unreachable { ip } => {
                if self.current_server() == Some(ip) {
                    let env = self.hook_env(Some(ip), None);
                    self.actions.push_back(Action::Hook { reason: HookReason::ServerUnreachable, env });
                }
            }
            // The kernel dropped a pin (deleted, replaced by a dynamic entry, or flushed by a
            // link down): put the server's back. Other addresses are not ours to pin.
            ActionResult::PinLost { ip } => {
                if let Some(ServerState { ip: sip, mac: Some(mac), .. }) = self.state.server {
                    if sip == ip {
                        self.actions.push_back(Action::PinNeighbour { ip, mac });
                    }
                }
            }
            ActionResult::LinkUp => {
                if let Some(ServerState { ip, mac: Some(mac), .. }) = self.state.server {
                    self.actions.push_back(Action::PinNeighbour { ip, mac });
                }
            }
        }
    }

    /// The next deadline. An ARP resolution window is checked when an answer arrives, not by a
    /// timer, so nothing here wakes an idle daemon needlessly.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.deadline()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// Records one decision and queues its actions for the applier.
    fn decide(&mut self, d: Decision) {
        self.actions.extend(d.actions.iter().cloned());
        self.counters.count_decision(&d);
        self.last_decision = Some((d.input, d.verdict, d.time));
        self.decisions.push_back(d);
    }

    fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Our own IPv4 address: the lease's in dhcp mode, the configured one in follow mode.
    pub fn own_cidr(&self) -> Option<Cidr> {
        match self.cfg.mode {
            Mode::Dhcp => self.client.address(),
            Mode::Follow => self.cfg.address,
        }
    }

    pub fn current_server(&self) -> Option<Ipv4Addr> {
        self.state.server.map(|s| s.ip).or(self.cfg.initial_server)
    }

    fn hook_env(&self, new: Option<Ipv4Addr>, mac: Option<Mac>) -> HookEnv {
        HookEnv {
            old_server_ip: self.current_server(),
            new_server_ip: new,
            server_mac: mac,
            own_ip: self.own_cidr().map(|c| c.addr),
            ..HookEnv::default()
        }
    }
}
