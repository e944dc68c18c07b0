//! The connection table of `serve`: which connections are open, since when, and from where.
//!
//! Contract: at most `cap` entries in all and at most `per_peer` per peer address, so memory is
//! bounded whatever peers do, and admission never refuses the newcomer. A peer already at its cap
//! loses its own oldest connection; otherwise a full table loses its oldest connection overall.
//! `admit` hands the one evicted entry (there is never more than one) back to the caller to
//! close and count. Entries are kept in order of admission, oldest first, which is also the order
//! of their deadlines when each gets the same allowance. A [`Token`] carries its slot's
//! generation, so the token of a removed entry never reaches the entry that reused the slot.
//! No I/O and no clock: admission times are passed in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

/// Names one admitted entry; round-trips through a `u64` (epoll's user data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u64);

impl Token {
    fn new(slot: u32, generation: u32) -> Token {
        Token((u64::from(generation) << 32) | u64::from(slot))
    }
    fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn to_u64(self) -> u64 {
        self.0
    }
    pub fn from_u64(v: u64) -> Token {
        Token(v)
    }
}

/// Why `admit` pushed an older entry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The newcomer's peer address already held `per_peer` entries: its own oldest went.
    PerPeer,
    /// The table held `cap` entries: the oldest of all went.
    Pressure,
}

#[derive(Debug)]
pub struct Evicted<C> {
    pub why: Eviction,
    pub conn: C,
}

#[derive(Debug)]
struct Entry<C> {
    seq: u64,
    peer: IpAddr,
    since: Instant,
    conn: C,
}

#[derive(Debug)]
struct Slot<C> {
    generation: u32,
    entry: Option<Entry<C>>,
}

#[derive(Debug)]
pub struct Table<C> {
    cap: usize,
    per_peer: usize,
    slots: Vec<Slot<C>>,
    free: Vec<u32>,
    /// Admission number → slot; the first key is the oldest entry.
    by_age: BTreeMap<u64, u32>,
    /// Peer → its entries' admission numbers, oldest first; never holds an empty queue.
    by_peer: HashMap<IpAddr, VecDeque<u64>>,
    next_seq: u64,
}

impl<C> Table<C> {
    /// `cap` and `per_peer` of 0 are taken as 1: a table that admits nobody would refuse.
    pub fn new(cap: usize, per_peer: usize) -> Table<C> {
        // Slots are u32 and u32::MAX stays unused, so a token never equals a caller's own
        // reserved value such as u64::MAX.
        let cap = cap.clamp(1, u32::MAX as usize - 1);
        Table {
            cap,
            per_peer: per_peer.clamp(1, cap),
            slots: Vec::new(),
            free: Vec::new(),
            by_age: BTreeMap::new(),
            by_peer: HashMap::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_age.len()
    }

    /// How many entries `peer` holds now.
    pub fn peer_len(&self, peer: IpAddr) -> usize {
        self.by_peer.get(&peer).map_or(0, VecDeque::len)
    }

    /// Admits `conn` from `peer`, first evicting one older entry when a cap would be exceeded.
    pub fn admit(&mut self, peer: IpAddr, since: Instant, conn: C) -> (Token, Option<Evicted<C>>) {
        let evicted = if self.peer_len(peer) >= self.per_peer {
            self.by_peer.get(&peer).and_then(|q| q.front().copied()).and_then(|seq| self.evict(seq, Eviction::PerPeer))
        } else if self.len() >= self.cap {
            self.by_age.first_key_value().map(|(&seq, _)| seq).and_then(|seq| self.evict(seq, Eviction::Pressure))
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                // len < cap here, and every slot below slots.len() is either live or free, so
                // the table never grows past cap slots.
                self.slots.push(Slot { generation: 0, entry: None });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.entry = Some(Entry { seq, peer, since, conn });
        let token = Token::new(slot, s.generation);
        self.by_age.insert(seq, slot);
        self.by_peer.entry(peer).or_default().push_back(seq);
        (token, evicted)
    }

    fn evict(&mut self, seq: u64, why: Eviction) -> Option<Evicted<C>> {
        let slot = *self.by_age.get(&seq)?;
        let (_, conn) = self.take(slot as usize)?;
        Some(Evicted { why, conn })
    }

    /// Removes the entry in `slot` from every index and frees the slot for a new generation.
    fn take(&mut self, slot: usize) -> Option<(IpAddr, C)> {
        let s = self.slots.get_mut(slot)?;
        let e = s.entry.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot as u32);
        self.by_age.remove(&e.seq);
        if let Some(q) = self.by_peer.get_mut(&e.peer) {
            // At most per_peer entries, and usually the first: the oldest leave first.
            if let Some(i) = q.iter().position(|&x| x == e.seq) {
                q.remove(i);
            }
            if q.is_empty() {
                self.by_peer.remove(&e.peer);
            }
        }
        Some((e.peer, e.conn))
    }

    fn live(&self, t: Token) -> Option<&Entry<C>> {
        let s = self.slots.get(t.slot())?;
        if s.generation != t.generation() {
            return None;
        }
        s.entry.as_ref()
    }

    pub fn get_mut(&mut self, t: Token) -> Option<&mut C> {
        let s = self.slots.get_mut(t.slot())?;
        if s.generation != t.generation() {
            return None;
        }
        s.entry.as_mut().map(|e| &mut e.conn)
    }

    pub fn remove(&mut self, t: Token) -> Option<C> {
        self.live(t)?;
        self.take(t.slot()).map(|(_, c)| c)
    }

    /// The oldest entry and when it was admitted.
    pub fn oldest(&self) -> Option<(Token, Instant)> {
        let (_, &slot) = self.by_age.first_key_value()?;
        let s = self.slots.get(slot as usize)?;
        s.entry.as_ref().map(|e| (Token::new(slot, s.generation), e.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn a_peer_at_its_cap_loses_its_own_oldest_not_the_newcomer() {
        let t0 = Instant::now();
        let mut t = Table::new(10, 2);
        let (a, _) = t.admit(ip(1), t0, "a1");
        let (other, _) = t.admit(ip(2), t0, "b1");
        let (b, _) = t.admit(ip(1), t0, "a2");
        let (c, ev) = t.admit(ip(1), t0, "a3");
        let ev = ev.expect("evicted");
        assert_eq!((ev.why, ev.conn), (Eviction::PerPeer, "a1"));
        assert!(t.get_mut(a).is_none());
        assert_eq!(t.get_mut(b).copied(), Some("a2"));
        assert_eq!(t.get_mut(c).copied(), Some("a3"));
        assert_eq!(t.get_mut(other).copied(), Some("b1"));
        assert_eq!((t.len(), t.peer_len(ip(1)), t.peer_len(ip(2))), (3, 2, 1));
    }

    #[test]
    fn a_full_table_loses_its_oldest_entry() {
        let t0 = Instant::now();
        let mut t = Table::new(3, 3);
        for (i, name) in ["x", "y", "z"].into_iter().enumerate() {
            assert!(t.admit(ip(i as u8 + 1), t0 + Duration::from_millis(i as u64), name).1.is_none());
        }
        let (_, ev) = t.admit(ip(9), t0 + Duration::from_secs(1), "new");
        let ev = ev.expect("evicted");
        assert_eq!((ev.why, ev.conn), (Eviction::Pressure, "x"));
        assert_eq!(t.len(), 3);
        assert_eq!(t.peer_len(ip(1)), 0);
        assert_eq!(t.oldest().map(|(_, s)| s), Some(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn a_stale_token_never_reaches_the_slot_s_next_entry() {
        let t0 = Instant::now();
        let mut t = Table::new(4, 4);
        let (old, _) = t.admit(ip(1), t0, 1);
        assert_eq!(t.remove(old), Some(1));
        let (new, _) = t.admit(ip(1), t0, 2);
        assert_ne!(old, new);
        assert!(t.get_mut(old).is_none());
        assert!(t.remove(old).is_none());
        assert_eq!(t.get_mut(Token::from_u64(new.to_u64())).copied(), Some(2));
        assert!(t.get_mut(Token::from_u64(u64::MAX)).is_none());
    }

    #[test]
    fn oldest_follows_admission_order_through_removals() {
        let t0 = Instant::now();
        let mut t = Table::new(8, 8);
        let toks: Vec<_> = (0..5).map(|i| t.admit(ip(1), t0 + Duration::from_millis(i), i).0).collect();
        assert_eq!(t.oldest().map(|(k, _)| k), Some(toks[0]));
        t.remove(toks[0]);
        t.remove(toks[2]);
        assert_eq!(t.oldest(), Some((toks[1], t0 + Duration::from_millis(1))));
        t.remove(toks[1]);
        assert_eq!(t.oldest().map(|(k, _)| k), Some(toks[3]));
        t.remove(toks[3]);
        t.remove(toks[4]);
        assert!(t.oldest().is_none() && t.len() == 0 && t.peer_len(ip(1)) == 0);
    }

    #[test]
    fn memory_stays_within_the_caps_under_churn() {
        let t0 = Instant::now();
        let mut t = Table::new(16, 4);
        for i in 0..10_000u32 {
            let _ = t.admit(ip((i % 7) as u8), t0, i);
            assert!(t.len() <= 16);
            assert!((0..7).all(|p| t.peer_len(ip(p)) <= 4));
        }
        assert!(t.slots.len() <= 16 && t.free.len() <= 16 && t.by_peer.len() <= 7);
    }

    #[test]
    fn zero_caps_still_admit() {
        let mut t = Table::new(0, 0);
        let (a, _) = t.admit(ip(1), Instant::now(), ());
        assert!(t.get_mut(a).is_some());
        assert_eq!((t.cap, t.per_peer), (1, 1));
    }
}
