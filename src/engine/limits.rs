//! The engine's bounded memory of the segment: rate limits, the verification budget, ARP
//! evidence and alarm coalescing.
//!
//! Contract: every table here has a fixed maximum size, and eviction is deterministic (the
//! stalest entry goes, ties broken by key order), so a flood from random sources costs CPU in
//! proportion to its rate, never memory, and two runs over the same input decide the same.
//! DESIGN §5: a frame is over the limit above 50 per second from one source, or above 500 per
//! second of one input kind from all sources together. [`VerifyBudget`] bounds how many HMACs
//! or signatures a second the engine checks on unsolicited frames, with the sources it already
//! trusts in their own lane; it never refuses a frame the rate limits let through (its figures
//! below say why), only the checks the limits do not bound. Time is the `now` passed in.

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

/// Verification budget (DESIGN §10, §12), checks per second and burst, per [`Check`]:
///
/// - [`Lane::Other`], sources the terminal does not follow: 500, the all-sources limit. Every
///   frame from such a source that reaches a check has passed that limit (they are never
///   exempt from it), so the budget never refuses one the limits let through, and replays of
///   the fixtures never meet it. It is the ceiling on what any flood from other MACs makes the
///   engine verify, whatever the limiter's tables do: 500 Ed25519 checks of ~50 µs are 2.5% of
///   a core.
/// - [`Lane::Server`], the MACs the terminal follows (the current server's, a pending move's
///   target's; for FORCERENEW the DHCP server's that leased to us): 200. A flood from other
///   MACs never touches it, so it cannot starve the server. Within the limits those at most
///   two sources send 2 × 50 a second, with a burst of 2 × 50: [`VERIFY_SERVER_RESERVE`] keeps
///   that much for them, and only the rest ([`VerifyBudget::take_spare`]) goes to the one check
///   the limits do not bound: fresh ANNOUNCEs from the server's MAC past its own per-source
///   limit (a spoofer can drain that bucket with frames forged from the server's MAC). That
///   path cost one check per frame before; now at most 200 a second (1% of a core at 50 µs).
///   What it cannot do: tell a genuine ANNOUNCE from forged ones that carry the server's own
///   MAC and fresh sequences, so such a flood can delay a move until a spare check meets it;
///   floods from any other MAC cannot.
pub const VERIFY_OTHER_PER_SEC: u64 = PER_KIND_PER_SEC;
pub const VERIFY_SERVER_PER_SEC: u64 = 200;
/// Server-lane checks kept for the frames the per-source limits pass (2 sources × 50).
pub const VERIFY_SERVER_RESERVE: u64 = 2 * PER_SOURCE_PER_SEC;

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
        self.take_above(rate, now, 0)
    }
    /// Takes one token only if `reserve` whole tokens remain after it.
    fn take_above(&mut self, rate: u64, now: Instant, reserve: u64) -> bool {
        let cap = rate * TOKEN;
        let refill = now.saturating_sub(self.last).saturating_mul(rate) / 1000;
        self.tokens = self.tokens.saturating_add(refill).min(cap);
        self.last = self.last.max(now);
        if self.tokens >= reserve.saturating_add(1).saturating_mul(TOKEN) {
            self.tokens -= TOKEN;
            true
        } else {
            false
        }
    }
}

/// Whose budget pays for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A MAC the terminal follows (see [`VERIFY_SERVER_PER_SEC`]).
    Server,
    /// Anyone else.
    Other,
}

/// What is checked: each has its own budgets, as each input kind has its own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// An ipsync message's HMAC or signature.
    Announce,
    /// A FORCERENEW's RFC 3118 / RFC 6704 HMAC-MD5.
    ForceRenew,
}

/// Token buckets of checks per second, per lane and check (figures above). A bucket starts
/// full at its first use, as the rate limiter's do.
#[derive(Debug, Default)]
pub struct VerifyBudget {
    buckets: [Option<Bucket>; 4],
}

impl VerifyBudget {
    fn bucket(&mut self, lane: Lane, check: Check, now: Instant) -> (&mut Bucket, u64) {
        let (i, rate) = match (lane, check) {
            (Lane::Server, Check::Announce) => (0, VERIFY_SERVER_PER_SEC),
            (Lane::Server, Check::ForceRenew) => (1, VERIFY_SERVER_PER_SEC),
            (Lane::Other, Check::Announce) => (2, VERIFY_OTHER_PER_SEC),
            (Lane::Other, Check::ForceRenew) => (3, VERIFY_OTHER_PER_SEC),
        };
        (self.buckets[i].get_or_insert_with(|| Bucket::full(rate, now)), rate)
    }

    /// One check for a frame the rate limits let through. False: over budget, do not check.
    pub fn take(&mut self, lane: Lane, check: Check, now: Instant) -> bool {
        let (b, rate) = self.bucket(lane, check, now);
        b.take(rate, now)
    }

    /// One check for a frame past its source's own limit: only from what the server lane holds
    /// beyond [`VERIFY_SERVER_RESERVE`], so these never use up the checks of frames within the
    /// limits. The other lane has no such checks: past the limits its frames are only counted.
    pub fn take_spare(&mut self, lane: Lane, check: Check, now: Instant) -> bool {
        if lane != Lane::Server {
            return false;
        }
        let (b, rate) = self.bucket(lane, check, now);
        b.take_above(rate, now, VERIFY_SERVER_RESERVE)
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
        self.with(k, now, || v, |_| ());
    }
    /// Runs `f` on `k`'s value (made by `new` when absent, evicting the stalest entry when
    /// full) and stamps it `now`. One lookup when `k` is present; the age index is touched only
    /// when the stamp changes, so a flood decided at one `now` (a batch) costs one lookup per
    /// frame.
    fn with<R>(&mut self, k: K, now: Instant, new: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        if let Some((v, t)) = self.map.get_mut(&k) {
            let r = f(v);
            if *t != now {
                let old = core::mem::replace(t, now);
                self.by_age.remove(&(old, k));
                self.by_age.insert((now, k));
            }
            return r;
        }
        if self.map.len() >= self.max {
            if let Some((_, old)) = self.by_age.pop_first() {
                self.map.remove(&old);
            }
        }
        let mut v = new();
        let r = f(&mut v);
        self.map.insert(k, (v, now));
        self.by_age.insert((now, k));
        r
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
    sources: Lru<(Mac, Input), Bucket>,
    kinds: BTreeMap<Input, Bucket>,
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
        let ok = self.sources.with(
            (src, input),
            now,
            || Bucket::full(PER_SOURCE_PER_SEC, now),
            |b| b.take(PER_SOURCE_PER_SEC, now),
        );
        if !ok {
            return false;
        }
        if exempt {
            return true;
        }
        let k = self.kinds.entry(input).or_insert_with(|| Bucket::full(PER_KIND_PER_SEC, now));
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
    fn verify_budget_lanes_are_apart_and_refill_with_time() {
        let mut v = VerifyBudget::default();
        let t = Instant::from_secs(10);
        let other = (0..2000).filter(|_| v.take(Lane::Other, Check::Announce, t)).count();
        assert_eq!(other as u64, VERIFY_OTHER_PER_SEC, "a burst of one second's budget");
        // A flood from other MACs leaves the server's lane, and other checks, untouched.
        assert!(v.take(Lane::Server, Check::Announce, t));
        assert!(v.take(Lane::Other, Check::ForceRenew, t));
        // Refill is exact: 10 ms is 5 checks at 500 a second.
        let t2 = t.add_ms(10);
        assert_eq!((0..100).filter(|_| v.take(Lane::Other, Check::Announce, t2)).count(), 5);
        // A clock that goes back refills nothing and breaks nothing.
        assert!(!v.take(Lane::Other, Check::Announce, t));
        // After a second of quiet the bucket is full again, never more.
        let t3 = t2.add_secs(5);
        assert_eq!((0..2000).filter(|_| v.take(Lane::Other, Check::Announce, t3)).count() as u64, VERIFY_OTHER_PER_SEC);
    }

    #[test]
    fn spare_server_checks_keep_the_reserve_for_frames_within_the_limits() {
        let mut v = VerifyBudget::default();
        let t = Instant::from_secs(10);
        // Past-the-limit checks get what is above the reserve, and then nothing.
        let spare = (0..1000).filter(|_| v.take_spare(Lane::Server, Check::Announce, t)).count() as u64;
        assert_eq!(spare, VERIFY_SERVER_PER_SEC - VERIFY_SERVER_RESERVE);
        // The reserve is still there for the frames the per-source limits pass.
        let within = (0..1000).filter(|_| v.take(Lane::Server, Check::Announce, t)).count() as u64;
        assert_eq!(within, VERIFY_SERVER_RESERVE);
        // Sustained: the two sources within their limits (2 × 50/s) are never refused while a
        // flood takes every spare check, over ten simulated seconds at 1 ms steps.
        let mut v = VerifyBudget::default();
        let mut refused = 0;
        let mut spare = 0u64;
        for ms in 0..10_000u64 {
            let now = t.add_ms(ms);
            if ms % 10 == 0 && !v.take(Lane::Server, Check::Announce, now) {
                refused += 1;
            }
            for _ in 0..100 {
                spare += u64::from(v.take_spare(Lane::Server, Check::Announce, now));
            }
        }
        assert_eq!(refused, 0);
        // Spare checks stay bounded by the lane's rate: 200/s less the 100/s taken within limits.
        assert!(spare <= VERIFY_SERVER_PER_SEC - VERIFY_SERVER_RESERVE + 10 * (VERIFY_SERVER_PER_SEC - 100), "{spare}");
        assert!(!v.take_spare(Lane::Other, Check::Announce, t.add_secs(60)), "no spare checks for other MACs");
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
