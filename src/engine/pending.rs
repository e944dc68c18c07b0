//! What the engine is waiting on between inputs, besides the persisted state: an ARP resolution,
//! a make-before-break move, the server being dialled, and a state write being retried.
//!
//! Contract: plain data with absolute `*_at` deadlines; the rules that create and end each live
//! in [`super::sync`], [`super::channel`] and [`super::persist`].

use super::vocab::{Instant, ServerName};
use crate::wire::Mac;
use std::net::Ipv4Addr;

/// DESIGN §5: the ARP resolution window is 1 s, with 3 requests spread over it.
pub const RESOLVE_WINDOW_MS: u64 = 1000;
pub const RESOLVE_REQUESTS: u8 = 3;

/// An address being resolved by ARP so that it can be pinned (DESIGN §5: 1 s, 3 requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolving {
    pub ip: Ipv4Addr,
    /// The first MAC that answered; a different second one is a conflict.
    pub answered: Option<Mac>,
    /// A second MAC answered: the window decided its conflict; later answers are ignored.
    pub conflicted: bool,
    pub requests: u8,
    pub next_at: Instant,
    pub until: Instant,
}

/// A make-before-break move to `to`, waiting for its WELCOME (DESIGN §5 "Planned moves").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingMove {
    pub to: Ipv4Addr,
    pub mac: Mac,
    pub from: Ipv4Addr,
    pub service_port: Option<u16>,
    pub server_name: Option<ServerName>,
}

/// A state write outage: the state on disk is older than the engine's (DESIGN §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistRetry {
    /// Retries scheduled so far in this outage.
    pub attempts: u32,
    /// When the next write is due; `None` while one is on its way and its outcome is awaited.
    pub next_at: Option<Instant>,
}

/// The server being dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    pub ip: Ipv4Addr,
    /// A `connect` was handed to the shell and its outcome has not come back.
    pub in_flight: bool,
    /// Failures in a row.
    pub failures: u32,
    /// When the next attempt is due (set after a failure).
    pub next_at: Option<Instant>,
    /// `unreachable` was decided for this outage.
    pub outage: bool,
    /// Why the last attempt failed: the reason of the `timer` `retry` line that re-dials.
    pub last_failure: &'static str,
}

/// Follow mode: how long a REQUEST of the system's DHCP client waits for its ACK (its own
/// retransmissions renew the record).
pub const FOLLOW_REQUEST_MS: u64 = 60_000;

/// Follow mode: the last REQUEST the system's DHCP client sent from the terminal's MAC
/// (DESIGN §5 "Follow mode and DHCP"). Only an ACK answering it moves the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowRequest {
    pub xid: u32,
    /// The server it named in option 54 or unicast to; None for a broadcast REBINDING.
    pub server: Option<Ipv4Addr>,
    pub until: Instant,
}
