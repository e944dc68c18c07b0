//! The DHCP client's state (RFC 2131 §4.4): an enum whose variants carry their own data and
//! absolute deadlines. The transitions live in [`super::dhcp_client`].
//!
//! Contract: plain data and queries (the address, the router, the next deadline); persisted
//! deadlines are wall-clock microseconds and are mapped through [`Wall`] both ways.

use super::acd::Acd;
use super::state::{LeaseState, State};
use super::vocab::{Cidr, Instant, Wall};
use crate::wire::Mac;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub cidr: Cidr,
    pub server_id: Ipv4Addr,
    pub server_mac: Mac,
    pub router: Option<Ipv4Addr>,
    pub acquired: Instant,
    pub t1_at: Instant,
    pub t2_at: Instant,
    pub expires_at: Instant,
}

impl Lease {
    /// Persisted deadlines are wall-clock microseconds: monotonic time restarts at boot.
    pub fn to_state(self, wall: Wall) -> LeaseState {
        LeaseState {
            address: self.cidr,
            server_id: self.server_id,
            server_mac: Some(self.server_mac).filter(|m| m.is_unicast()),
            router: self.router,
            acquired: wall.unix_us(self.acquired),
            t1: wall.unix_us(self.t1_at),
            t2: wall.unix_us(self.t2_at),
            expires: wall.unix_us(self.expires_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    /// No lease and nothing scheduled (replay before the capture's client speaks).
    Init,
    Selecting {
        xid: u32,
        attempt: u32,
        retransmit_at: Instant,
    },
    Requesting {
        xid: u32,
        requested: Ipv4Addr,
        server_id: Ipv4Addr,
        attempt: u32,
        retransmit_at: Instant,
    },
    Rebooting {
        xid: u32,
        requested: Ipv4Addr,
        attempt: u32,
        retransmit_at: Instant,
    },
    /// RFC 5227 probing of an ACKed address before it is configured (acd = "strict"). An
    /// address we had before stays configured until the new one is bound.
    Probing {
        lease: Lease,
        acd: Acd,
    },
    Bound {
        lease: Lease,
        /// RFC 5227 §2.3: the next ARP announcement.
        announce_at: Option<Instant>,
        /// acd = "optimistic": the address is in use already and the probes run in parallel;
        /// a conflict while they run gives the address up (DECLINE) instead of defending it.
        probing: Option<Acd>,
    },
    Renewing {
        xid: u32,
        lease: Lease,
        retransmit_at: Instant,
        /// A renewal a FORCERENEW started retransmits fast, then on RFC 2131's 4 s doubling
        /// backoff (the server is waiting for it; see `FORCED_FAST_MS`); one at T1 on §4.4.5's
        /// half-the-time-left. The count of retransmissions so far.
        forced: Option<u32>,
    },
    Rebinding {
        xid: u32,
        lease: Lease,
        retransmit_at: Instant,
    },
}

impl Client {
    pub fn restore(state: &State, wall: Wall) -> Client {
        match state.lease {
            Some(l) => {
                let lease = Lease {
                    cidr: l.address,
                    server_id: l.server_id,
                    // Unknown (an older state): RENEWING then broadcasts at layer 2.
                    server_mac: l.server_mac.unwrap_or(Mac::BROADCAST),
                    router: l.router,
                    acquired: wall.instant(l.acquired),
                    t1_at: wall.instant(l.t1),
                    t2_at: wall.instant(l.t2),
                    expires_at: wall.instant(l.expires),
                };
                Client::Bound { lease, announce_at: None, probing: None }
            }
            None => Client::Init,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Client::Init => "INIT",
            Client::Selecting { .. } => "SELECTING",
            Client::Requesting { .. } => "REQUESTING",
            Client::Rebooting { .. } => "REBOOTING",
            Client::Probing { .. } => "PROBING",
            Client::Bound { .. } => "BOUND",
            Client::Renewing { .. } => "RENEWING",
            Client::Rebinding { .. } => "REBINDING",
        }
    }

    pub fn is_bound(&self) -> bool {
        matches!(self, Client::Bound { .. })
    }

    pub fn lease(&self) -> Option<&Lease> {
        match self {
            Client::Bound { lease, .. } | Client::Renewing { lease, .. } | Client::Rebinding { lease, .. } => {
                Some(lease)
            }
            _ => None,
        }
    }

    /// The configured address (a probing candidate is not configured yet).
    pub fn address(&self) -> Option<Cidr> {
        self.lease().map(|l| l.cidr)
    }

    pub fn router(&self) -> Option<Ipv4Addr> {
        match self {
            Client::Probing { lease, .. } => lease.router,
            _ => self.lease().and_then(|l| l.router),
        }
    }

    pub fn xid(&self) -> Option<u32> {
        match self {
            Client::Selecting { xid, .. }
            | Client::Requesting { xid, .. }
            | Client::Rebooting { xid, .. }
            | Client::Renewing { xid, .. }
            | Client::Rebinding { xid, .. } => Some(*xid),
            _ => None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Client::Init => None,
            Client::Selecting { retransmit_at, .. }
            | Client::Requesting { retransmit_at, .. }
            | Client::Rebooting { retransmit_at, .. } => Some(*retransmit_at),
            Client::Probing { acd, .. } => Some(acd.next_at),
            Client::Bound { lease, announce_at, probing, .. } => {
                [Some(lease.t1_at), *announce_at, probing.map(|a| a.next_at)].into_iter().flatten().min()
            }
            Client::Renewing { lease, retransmit_at, .. } => Some((*retransmit_at).min(lease.t2_at)),
            Client::Rebinding { lease, retransmit_at, .. } => Some((*retransmit_at).min(lease.expires_at)),
        }
    }
}
