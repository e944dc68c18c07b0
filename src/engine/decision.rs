//! Decisions: what the engine concluded about one input, with the actions it caused, in order.
//! The decision log (DESIGN §8) is these, one per line.
//!
//! Contract: every relevant input and every outcome yields exactly one [`Decision`], and no
//! action is ever queued without the decision that caused it.

use super::vocab::{Action, Instant};
use crate::wire::Mac;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The decision log's `input` field. Ordered (by variant) so it can key the rate limiter's
/// tables without comparing strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    Announce,
    ForceRenew,
    Offer,
    Ack,
    Nak,
    Dhcp,
    Arp,
    Welcome,
    Channel,
    Kernel,
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
            Input::Channel => "channel",
            Input::Kernel => "kernel",
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
    Retry,
    Unreachable,
    Repin,
}

impl Verdict {
    /// Every verdict, for tables keyed by verdict (the journal's MESSAGE_IDs).
    pub const ALL: [Verdict; 13] = [
        Verdict::Apply,
        Verdict::Same,
        Verdict::Conflict,
        Verdict::Renew,
        Verdict::Lease,
        Verdict::Reject,
        Verdict::Malformed,
        Verdict::Select,
        Verdict::Restart,
        Verdict::Ignore,
        Verdict::Retry,
        Verdict::Unreachable,
        Verdict::Repin,
    ];

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
            Verdict::Retry => "retry",
            Verdict::Unreachable => "unreachable",
            Verdict::Repin => "repin",
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
    pub const BAD_ADDRESS: &str = "bad_address";
    pub const STALE: &str = "stale";
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
    /// The frame's Ethernet and IPv4 source, for the journal's reject warning. Not in the JSON
    /// decision log (DESIGN §8 fixes its fields); `None` for timers and results.
    pub source: Option<(Mac, Ipv4Addr)>,
    /// The key the input named (an ipsync key_id, a FORCERENEW's RFC 3118 secret id), for the
    /// same warning; not in the JSON either.
    pub key_id: Option<u32>,
}

impl Decision {
    pub fn new(frame: Option<u64>, time: Instant, input: Input, verdict: Verdict) -> Decision {
        Decision {
            frame,
            time,
            input,
            verdict,
            reason: None,
            server_ip: None,
            server_mac: None,
            actions: Vec::new(),
            source: None,
            key_id: None,
        }
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
    /// Where the frame decided on came from, and the key it named.
    pub fn from_frame(mut self, source: Option<(Mac, Ipv4Addr)>, key_id: Option<u32>) -> Decision {
        self.source = source;
        self.key_id = key_id;
        self
    }
    pub fn actions(mut self, actions: Vec<Action>) -> Decision {
        self.actions = actions;
        self
    }
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
