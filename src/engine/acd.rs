//! IPv4 address conflict detection (RFC 5227) for an address the DHCP server assigned us.
//!
//! Contract: a pure timer schedule and a conflict test. The caller feeds timeouts and ARP; the
//! schedule says when to probe and when the address may be bound. Every interval stays inside
//! the RFC's bounds (a first wait in 0..PROBE_WAIT, probes PROBE_MIN..PROBE_MAX apart, then
//! ANNOUNCE_WAIT), but the random part is drawn from the low end: [`SPREAD_MS`] of jitter
//! instead of the whole range. The jitter is there to keep hosts that start at once from
//! probing in lock-step; a tenth of a second does that as well as a second does, and a
//! server-driven re-address (FORCERENEW) then costs 4.0–4.3 s instead of 4–7 s. Binding is
//! always inside the 10 s that DESIGN §5 allows.

use super::vocab::{Instant, Rng};
use crate::wire::{arp, Mac};
use std::net::Ipv4Addr;

/// RFC 5227 §1.1 constants, in milliseconds where they are times.
pub const PROBE_WAIT_MS: u64 = 1000;
pub const PROBE_NUM: u8 = 3;
pub const PROBE_MIN_MS: u64 = 1000;
pub const PROBE_MAX_MS: u64 = 2000;
pub const ANNOUNCE_WAIT_MS: u64 = 2000;
pub const ANNOUNCE_NUM: u8 = 2;
pub const ANNOUNCE_INTERVAL_MS: u64 = 2000;
pub const MAX_CONFLICTS: u32 = 10;
pub const RATE_LIMIT_INTERVAL_MS: u64 = 60_000;
pub const DEFEND_INTERVAL_MS: u64 = 10_000;
/// The random part of each wait (see the module comment): ≤ PROBE_WAIT and ≤ PROBE_MAX − PROBE_MIN.
pub const SPREAD_MS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Probe,
    Bind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acd {
    pub candidate: Ipv4Addr,
    pub probes_sent: u8,
    pub next_at: Instant,
}

impl Acd {
    pub fn new(now: Instant, candidate: Ipv4Addr, rng: &mut Rng) -> Acd {
        Acd { candidate, probes_sent: 0, next_at: now.add_ms(rng.between(0, SPREAD_MS.min(PROBE_WAIT_MS))) }
    }

    /// Called at `next_at`: what to do now, and the next deadline is updated.
    pub fn on_timeout(&mut self, now: Instant, rng: &mut Rng) -> Step {
        if self.probes_sent >= PROBE_NUM {
            return Step::Bind;
        }
        self.probes_sent += 1;
        self.next_at = if self.probes_sent < PROBE_NUM {
            now.add_ms(rng.between(PROBE_MIN_MS, (PROBE_MIN_MS + SPREAD_MS).min(PROBE_MAX_MS)))
        } else {
            now.add_ms(ANNOUNCE_WAIT_MS)
        };
        Step::Probe
    }

    /// RFC 5227 §2.1.1: while probing, any ARP whose sender is the candidate, or another host's
    /// probe for the same candidate, is a conflict.
    pub fn conflicts(&self, a: &arp::Repr, our_mac: Mac) -> bool {
        conflicts_with(self.candidate, a, our_mac, true)
    }
}

/// Whether `a` shows another host using (or, while `probing`, also probing for) `addr`.
pub fn conflicts_with(addr: Ipv4Addr, a: &arp::Repr, our_mac: Mac, probing: bool) -> bool {
    if a.sha.ct_eq(&our_mac) {
        return false;
    }
    a.spa == addr || (probing && a.spa.is_unspecified() && a.tpa == addr && a.operation == arp::Operation::Request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_stays_inside_rfc_bounds() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let t0 = Instant::from_secs(100);
            let mut a = Acd::new(t0, Ipv4Addr::new(10, 0, 0, 5), &mut rng);
            assert!(a.next_at.saturating_sub(t0) <= PROBE_WAIT_MS * 1000);
            let mut probes = 0;
            loop {
                let now = a.next_at;
                match a.on_timeout(now, &mut rng) {
                    Step::Probe => probes += 1,
                    Step::Bind => {
                        assert_eq!(probes, PROBE_NUM);
                        let took = now.saturating_sub(t0);
                        // Inside the RFC's bounds, and at most 4.3 s (module comment).
                        assert!((4_000_000..=4_300_000).contains(&took), "bound at {now} from {t0}");
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn conflict_rules() {
        let me = Mac([2, 0, 0, 0, 0, 1]);
        let other = Mac([2, 0, 0, 0, 0, 9]);
        let cand = Ipv4Addr::new(10, 0, 0, 5);
        let a = Acd { candidate: cand, probes_sent: 0, next_at: Instant(0) };
        assert!(a.conflicts(&arp::Repr::announcement(other, cand), me));
        assert!(a.conflicts(&arp::Repr::probe(other, cand), me));
        assert!(!a.conflicts(&arp::Repr::probe(me, cand), me));
        assert!(!conflicts_with(cand, &arp::Repr::probe(other, cand), me, false));
    }
}
