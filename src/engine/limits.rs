//! The engine's bounded memory of the segment: rate limits, ARP evidence and alarm coalescing.
//!
//! Contract: every table here has a fixed maximum size, and eviction is deterministic (the
//! stalest entry goes, ties broken by key order), so a flood from random sources costs CPU in
//! proportion to its rate, never memory, and two runs over the same input decide the same.
//! DESIGN §5: a frame is over the limit above 50 per second from one source, or above 500 per
//! second of one input kind from all sources together.

use super::decision::Input;
use super::vocab::Instant;
use crate::wire::Mac;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub const PER_SOURCE_PER_SEC: u64 = 50;
pub const PER_KIND_PER_SEC: u64 = 500;
/// Sources remembered by the per-source limiter.
pub const RATE_SOURCES: usize = 1024;
/// ARP owners remembered as conflict evidence.
pub const ARP_CACHE_MAX: usize = 256;
/// ARP evidence older than this is not held against an announcement.
pub const ARP_EVIDENCE_US: u64 = 60_000_000;
/// (kind, address) pairs remembered by the alarm coalescer.
pub const ALARMS_MAX: usize = 256;

/// Tokens are kept in thousandths of a frame, so refill is exact at microsecond resolution.
const TOKEN: u64 = 1000;

/// One token bucket: `rate` frames per second with a burst of `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

impl Bucket {
    fn full(rate: u64, now: Instant) -> Bucket {
        Bucket { tokens: rate * TOKEN, last: now }
    }
    fn take(&mut self, rate: u64, now: Instant) -> bool {
        let cap = rate * TOKEN;
        let refill = now.saturating_sub(self.last).saturating_mul(rate) / 1000;
        self.tokens = self.tokens.saturating_add(refill).min(cap);
        self.last = self.last.max(now);
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }
}

/// A bounded map whose stalest entry is evicted first (ties: the smallest key).
#[derive(Debug)]
struct Lru<K: Ord + Copy, V> {
    max: usize,
    map: BTreeMap<K, (V, Instant)>,
    by_age: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy, V> Lru<K, V> {
    fn new(max: usize) -> Lru<K, V> {
        Lru { max, map: BTreeMap::new(), by_age: BTreeSet::new() }
    }
    fn get(&self, k: &K) -> Option<&(V, Instant)> {
        self.map.get(k)
    }
    /// Inserts or replaces `k`, stamped `now`, evicting the stalest entry when full.
    fn put(&mut self, k: K, v: V, now: Instant) {
        if let Some((_, t)) = self.map.get(&k) {
            self.by_age.remove(&(*t, k));
        } else if self.map.len() >= self.max {
            if let Some((t, old)) = self.by_age.pop_first() {
                let _ = t;
                self.map.remove(&old);
            }
        }
        self.map.insert(k, (v, now));
        self.by_age.insert((now, k));
    }
    fn remove(&mut self, k: &K) {
        if let Some((_, t)) = self.map.remove(k) {
            self.by_age.remove(&(t, *k));
        }
    }
}

/// The two limits of DESIGN §5. A source's budget is per input kind, so spoofed ARP or garbage
/// from a MAC never spends that MAC's ANNOUNCE budget.
#[derive(Debug)]
pub struct RateLimiter {
    sources: Lru<(Mac, &'static str), Bucket>,
    kinds: BTreeMap<&'static str, Bucket>,
}

impl Default for RateLimiter {
    fn default() -> RateLimiter {
        RateLimiter { sources: Lru::new(RATE_SOURCES), kinds: BTreeMap::new() }
    }
}

impl RateLimiter {
    /// Whether one more frame of `input` from `src` may be decided. `exempt` (the current
    /// server's pinned MAC) skips the all-sources limit, so a flood from random sources cannot
    /// starve a genuine move; it still counts against its own per-source bucket.
    pub fn allow(&mut self, src: Mac, input: Input, now: Instant, exempt: bool) -> bool {
        let key = (src, input.as_str());
        let mut b = match self.sources.get(&key) {
            Some((b, _)) => *b,
            None => Bucket::full(PER_SOURCE_PER_SEC, now),
        };
        let ok = b.take(PER_SOURCE_PER_SEC, now);
        self.sources.put(key, b, now);
        if !ok {
            return false;
        }
        if exempt {
            return true;
        }
        let k = self.kinds.entry(input.as_str()).or_insert_with(|| Bucket::full(PER_KIND_PER_SEC, now));
        k.take(PER_KIND_PER_SEC, now)
    }
}

/// What ARP has said about who owns an address: conflict evidence (DESIGN §5 "ARP evidence").
#[derive(Debug)]
pub struct ArpCache {
    entries: Lru<Ipv4Addr, Mac>,
}

impl Default for ArpCache {
    fn default() -> ArpCache {
        ArpCache { entries: Lru::new(ARP_CACHE_MAX) }
    }
}

impl ArpCache {
    pub fn learn(&mut self, ip: Ipv4Addr, mac: Mac, now: Instant) {
        self.entries.put(ip, mac, now);
    }
    /// The MAC that ARP showed owning `ip` within the last minute.
    pub fn owner(&self, ip: Ipv4Addr, now: Instant) -> Option<Mac> {
        self.entries.get(&ip).filter(|(_, t)| now.saturating_sub(*t) <= ARP_EVIDENCE_US).map(|(m, _)| *m)
    }
    pub fn forget(&mut self, ip: Ipv4Addr) {
        self.entries.remove(&ip);
    }
}

/// At most one alarm (and one CONFLICT or SERVER_UNREACHABLE hook) per kind and address per
/// `alarm_interval_s` (DESIGN §5 "Alarms are coalesced"); what is held back is counted.
#[derive(Debug)]
pub struct Alarms {
    last: Lru<(&'static str, Ipv4Addr), ()>,
}

impl Default for Alarms {
    fn default() -> Alarms {
        Alarms { last: Lru::new(ALARMS_MAX) }
    }
}

impl Alarms {
    /// True when an alarm of `kind` about `ip` may be raised now (and records that it was).
    pub fn raise(&mut self, kind: &'static str, ip: Ipv4Addr, now: Instant, interval_s: u64) -> bool {
        let due = match self.last.get(&(kind, ip)) {
            Some((_, t)) => now.saturating_sub(*t) >= interval_s.saturating_mul(1_000_000),
            None => true,
        };
        if due {
            self.last.put((kind, ip), (), now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn per_source_limit_is_fifty_per_second_with_refill() {
        let mut r = RateLimiter::default();
        let t = Instant::from_secs(10);
        let ok = (0..80).filter(|_| r.allow(mac(1), Input::Announce, t, false)).count();
        assert_eq!(ok, 50);
        // 20 ms later one more token has refilled.
        assert!(r.allow(mac(1), Input::Announce, t.add_ms(20), false));
        assert!(!r.allow(mac(1), Input::Announce, t.add_ms(20), false));
    }

    #[test]
    fn all_sources_limit_spares_the_exempt_server() {
        let mut r = RateLimiter::default();
        let t = Instant::from_secs(10);
        let ok = (0..2000).filter(|&i| r.allow(mac(i), Input::Arp, t, false)).count();
        assert_eq!(ok, 500);
        assert!(r.allow(mac(99_999), Input::Arp, t, true), "the server's MAC skips the all-sources limit");
        // Another input kind has its own budget.
        assert!(r.allow(mac(5000), Input::Announce, t, false));
    }

    #[test]
    fn tables_stay_bounded_and_evict_deterministically() {
        let mut a = ArpCache::default();
        let t = Instant::from_secs(1);
        for i in 0..10_000u32 {
            a.learn(Ipv4Addr::from(i), mac(i), t);
        }
        assert_eq!(a.entries.map.len(), ARP_CACHE_MAX);
        // Equal timestamps: the smallest keys went first, so the largest remain.
        assert!(a.owner(Ipv4Addr::from(9_999u32), t).is_some());
        assert!(a.owner(Ipv4Addr::from(0u32), t).is_none());
        let mut r = RateLimiter::default();
        for i in 0..5000 {
            r.allow(mac(i), Input::Arp, t, false);
        }
        assert_eq!(r.sources.map.len(), RATE_SOURCES);
        assert_eq!(r.sources.by_age.len(), RATE_SOURCES);
    }

    #[test]
    fn alarms_coalesce_per_kind_and_address() {
        let mut a = Alarms::default();
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let t = Instant::from_secs(100);
        assert!(a.raise("address_in_use", ip, t, 10));
        assert!(!a.raise("address_in_use", ip, t.add_secs(9), 10));
        assert!(a.raise("own_address", ip, t.add_secs(9), 10));
        assert!(a.raise("address_in_use", Ipv4Addr::new(10, 0, 0, 2), t, 10));
        assert!(a.raise("address_in_use", ip, t.add_secs(10), 10));
    }
}
