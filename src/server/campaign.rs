//! The sender's policy for `forcerenew --leases`: who gets a FORCERENEW when, how often it is
//! retransmitted, and when a client counts as renewed. Sans-IO, like the terminal's engine.
//!
//! Contract: time comes in as an argument (the engine's monotonic [`Instant`]); the campaign
//! reads no clock, socket or random source, so the live tool, the tests and the fleet
//! simulation (benches/fleet.rs) run the very same logic. The shell asks
//! [`Campaign::poll_transmit`] what to send now, reports every REQUEST it sees with
//! [`Campaign::handle_request`], a send the kernel refused for lack of room with
//! [`Campaign::handle_send_blocked`], and sleeps until [`Campaign::poll_timeout`].
//!
//! - **Pacing.** A GCRA rate limit, `rate_per_s` with a burst of `burst` frames: 10,000 leases
//!   at the default 20,000/s get their first FORCERENEW within half a second, in bursts small
//!   enough for a switch's buffers and a socket's send queue. Retransmissions share the same
//!   budget and go first, since they are older.
//! - **Retransmission.** Exponential backoff from `first_retry_ms`, doubling up to
//!   `max_retry_ms`, until the client's REQUEST is seen or `retries` resends have gone out; the
//!   client is then given one more interval to answer before it counts as not renewed.
//! - **Renewed** means a DHCPREQUEST from the client's chaddr seen after our first FORCERENEW
//!   to it (DESIGN §6). A REQUEST seen before that is the client's own business and changes
//!   nothing.

use crate::engine::Instant;
use crate::wire::Mac;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;

/// One client to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// The client's last xid, when the xid file knows it (else 0 is sent).
    pub xid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub rate_per_s: u32,
    pub burst: u32,
    /// Resends after the first (DESIGN §6: `--retries`, default 4).
    pub retries: u32,
    pub first_retry_ms: u64,
    pub max_retry_ms: u64,
}

impl Policy {
    pub const DEFAULT_RETRIES: u32 = 4;
    pub const DEFAULT_RATE: u32 = 20_000;

    /// The wait after attempt `attempt` (1-based) before the next, or before giving up.
    pub fn interval_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(20);
        self.first_retry_ms.saturating_mul(1 << shift).min(self.max_retry_ms)
    }
}

impl Default for Policy {
    /// 250 ms, 500 ms, 1 s, 2 s between the five sends, then 4 s for the last to be answered:
    /// a client that never answers is given up after 7.75 s. The first resend comes well after
    /// a healthy client's REQUEST (under a millisecond on a LAN, a few behind a busy relay), and
    /// the doubling keeps a dead segment from being hammered.
    fn default() -> Policy {
        Policy {
            rate_per_s: Policy::DEFAULT_RATE,
            burst: 64,
            retries: Policy::DEFAULT_RETRIES,
            first_retry_ms: 250,
            max_retry_ms: 4000,
        }
    }
}

/// Where one client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not sent to yet.
    Queued,
    /// Sent `attempts` times; the next send (or giving up) is due at `next_at`.
    Sent {
        attempts: u32,
        first_at: Instant,
        next_at: Instant,
    },
    Renewed {
        attempts: u32,
        first_at: Instant,
        at: Instant,
    },
    /// Every attempt went out and no REQUEST came.
    NotRenewed {
        attempts: u32,
        first_at: Instant,
    },
}

/// What the shell is to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub index: usize,
    pub target: Target,
    /// 1 for the first FORCERENEW to this client.
    pub attempt: u32,
}

/// One client's line in the report (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientReport {
    pub target: Target,
    pub attempts: u32,
    pub renewed: bool,
    /// From our first FORCERENEW to its REQUEST.
    pub ms: Option<f64>,
    /// From the start of the campaign to its REQUEST (the fleet's convergence).
    pub since_start_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Clients sent at least one FORCERENEW.
    pub sent: usize,
    /// FORCERENEW frames sent in all.
    pub frames: u64,
    pub renewed: usize,
    /// From the start to the last event (the last REQUEST, or giving up).
    pub seconds: f64,
    /// Clients renewed within 1 s and within 2 s of the start.
    pub within_1s: usize,
    pub within_2s: usize,
    /// The time from the start until the first FORCERENEW had gone to every client.
    pub first_sends_ms: Option<f64>,
    pub clients: Vec<ClientReport>,
}

/// A GCRA rate limit: `rate_per_s` frames a second on average, up to `burst` at once. Shared by
/// `forcerenew` (through [`Campaign`]) and `announce --leases`.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    interval_us: u64,
    tolerance_us: u64,
    /// The theoretical arrival time of the next frame.
    tat: Instant,
}

impl Pacer {
    pub fn new(rate_per_s: u32, burst: u32, now: Instant) -> Pacer {
        let interval_us = (1_000_000 / u64::from(rate_per_s.max(1))).max(1);
        Pacer { interval_us, tolerance_us: interval_us.saturating_mul(u64::from(burst.max(1) - 1)), tat: now }
    }

    /// The earliest time the next frame may go.
    pub fn earliest(&self) -> Instant {
        Instant(self.tat.micros().saturating_sub(self.tolerance_us))
    }

    /// Takes the right to send one frame now, if the rate allows.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if now < self.earliest() {
            return false;
        }
        self.tat = Instant(self.tat.max(now).micros() + self.interval_us);
        true
    }

    /// The device had no room: nothing more for `pause_us`, so its queue can drain (and the
    /// burst tolerance cannot turn the refusal into a tight retry loop).
    pub fn hold(&mut self, now: Instant, pause_us: u64) {
        let resume = now.micros().saturating_add(pause_us).saturating_add(self.tolerance_us);
        self.tat = Instant(self.tat.micros().max(resume));
    }
}

/// How long the sender pauses after the device refused a frame for lack of room.
pub const BLOCKED_PAUSE_US: u64 = 1000;

pub struct Campaign {
    policy: Policy,
    targets: Vec<Target>,
    progress: Vec<Progress>,
    by_mac: HashMap<Mac, usize>,
    started: Instant,
    /// The next client never sent to.
    next_first: usize,
    /// (due, index) of clients waiting for a resend or for the end of their last interval.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Sends the kernel refused, to go out again first.
    blocked: Vec<Send>,
    pacer: Pacer,
    frames: u64,
    last_event: Instant,
    first_sends_done: Option<Instant>,
}

impl Campaign {
    /// A campaign over `targets`. A MAC listed twice is sent to once, at its first entry: one
    /// client, one renewal.
    pub fn new(targets: Vec<Target>, policy: Policy, now: Instant) -> Campaign {
        let mut by_mac = HashMap::with_capacity(targets.len());
        let mut unique = Vec::with_capacity(targets.len());
        for t in targets {
            if let std::collections::hash_map::Entry::Vacant(e) = by_mac.entry(t.mac) {
                e.insert(unique.len());
                unique.push(t);
            }
        }
        let n = unique.len();
        Campaign {
            policy,
            pacer: Pacer::new(policy.rate_per_s, policy.burst, now),
            targets: unique,
            progress: vec![Progress::Queued; n],
            by_mac,
            started: now,
            next_first: 0,
            due: BinaryHeap::new(),
            blocked: Vec::new(),
            frames: 0,
            last_event: now,
            first_sends_done: (n == 0).then_some(now),
        }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn progress(&self, index: usize) -> Option<Progress> {
        self.progress.get(index).copied()
    }

    fn earliest_send(&self) -> Instant {
        self.pacer.earliest()
    }

    fn take_token(&mut self, now: Instant) -> bool {
        self.pacer.try_take(now)
    }

    /// Moves clients whose last interval ran out to NotRenewed; returns the next resend due now.
    fn next_due(&mut self, now: Instant) -> Option<usize> {
        while let Some(&Reverse((at, i))) = self.due.peek() {
            if at > now {
                return None;
            }
            self.due.pop();
            match self.progress[i] {
                // A stale heap entry: the client renewed, or was rescheduled.
                Progress::Sent { next_at, .. } if next_at != at => {}
                Progress::Sent { attempts, first_at, .. } if attempts > self.policy.retries => {
                    self.progress[i] = Progress::NotRenewed { attempts, first_at };
                    self.last_event = self.last_event.max(at);
                }
                Progress::Sent { .. } => return Some(i),
                _ => {}
            }
        }
        None
    }

    /// What to send now, if anything; call until it returns None, then wait for
    /// [`Campaign::poll_timeout`].
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Send> {
        if let Some(s) = self.blocked.last().copied() {
            if !self.take_token(now) {
                return None;
            }
            self.blocked.pop();
            // Renewed while its frame waited for room: nothing to send any more.
            if !matches!(self.progress[s.index], Progress::Sent { .. }) {
                return self.poll_transmit(now);
            }
            // The refused frame never left: the client's clock starts now.
            let next_at = now.add_ms(self.policy.interval_ms(s.attempt));
            if let Progress::Sent { first_at, next_at: n, .. } = &mut self.progress[s.index] {
                if s.attempt == 1 {
                    *first_at = now;
                }
                *n = next_at;
                self.due.push(Reverse((next_at, s.index)));
            }
            self.frames += 1;
            return Some(s);
        }
        // Resends first (so a client's backoff stays what it says), then new clients.
        let resend = match self.due.peek() {
            Some(&Reverse((at, _))) if at <= now => self.next_due(now),
            _ => None,
        };
        let index = match resend {
            Some(i) => i,
            None if self.next_first < self.targets.len() => self.next_first,
            None => return None,
        };
        if !self.take_token(now) {
            if let Some(i) = resend {
                // Not sent: back in the heap at the same time, so it goes first next time.
                if let Progress::Sent { next_at, .. } = self.progress[i] {
                    self.due.push(Reverse((next_at, i)));
                }
            }
            return None;
        }
        let attempt = match self.progress[index] {
            Progress::Queued => {
                self.next_first += 1;
                if self.next_first == self.targets.len() {
                    self.first_sends_done = Some(now);
                }
                self.progress[index] = Progress::Sent { attempts: 1, first_at: now, next_at: now };
                1
            }
            Progress::Sent { attempts, first_at, .. } => {
                self.progress[index] = Progress::Sent { attempts: attempts + 1, first_at, next_at: now };
                attempts + 1
            }
            _ => return None,
        };
        let next_at = now.add_ms(self.policy.interval_ms(attempt));
        if let Progress::Sent { next_at: n, .. } = &mut self.progress[index] {
            *n = next_at;
        }
        self.due.push(Reverse((next_at, index)));
        self.frames += 1;
        self.last_event = self.last_event.max(now);
        Some(Send { index, target: self.targets[index], attempt })
    }

    /// The kernel had no room for `send` (ENOBUFS, EAGAIN): it goes out again first, and it is
    /// not counted as an attempt the client could have answered.
    pub fn handle_send_blocked(&mut self, now: Instant, send: Send) {
        self.frames = self.frames.saturating_sub(1);
        self.pacer.hold(now, BLOCKED_PAUSE_US);
        self.blocked.push(send);
    }

    /// A DHCPREQUEST from `mac` for `address` (its ciaddr, else its requested address) was
    /// seen. It renews the client only if it is for the leased address: a forged REQUEST with
    /// the client's chaddr alone does not silence the retries. Returns whether it renewed one.
    pub fn handle_request(&mut self, now: Instant, mac: Mac, address: Option<Ipv4Addr>) -> bool {
        let Some(&i) = self.by_mac.get(&mac) else {
            return false;
        };
        if address != Some(self.targets[i].ip) {
            return false;
        }
        match self.progress[i] {
            Progress::Sent { attempts, first_at, .. } | Progress::NotRenewed { attempts, first_at } => {
                self.progress[i] = Progress::Renewed { attempts, first_at, at: now };
                self.last_event = self.last_event.max(now);
                true
            }
            _ => false,
        }
    }

    /// When the campaign next needs [`Campaign::poll_transmit`]: the next frame the pacing
    /// allows when there is one to send, else the next resend or give-up. None when finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A resend due now still waits for the pacing, or the shell would spin.
        let due = self.due.peek().map(|Reverse((at, _))| (*at).max(self.earliest_send()));
        let pending_first = self.next_first < self.targets.len() || !self.blocked.is_empty();
        let paced = pending_first.then(|| self.earliest_send());
        [paced, due].into_iter().flatten().min()
    }

    /// Every client renewed or was given up.
    pub fn is_finished(&self) -> bool {
        self.blocked.is_empty()
            && self.next_first == self.targets.len()
            && self.progress.iter().all(|p| matches!(p, Progress::Renewed { .. } | Progress::NotRenewed { .. }))
    }

    pub fn report(&self) -> Report {
        let ms = |a: Instant, b: Instant| b.saturating_sub(a) as f64 / 1000.0;
        let mut clients = Vec::with_capacity(self.targets.len());
        let (mut renewed, mut sent, mut w1, mut w2) = (0, 0, 0, 0);
        for (t, p) in self.targets.iter().zip(&self.progress) {
            let (attempts, ok, first_to_renew, since_start) = match *p {
                Progress::Queued => (0, false, None, None),
                Progress::Sent { attempts, .. } | Progress::NotRenewed { attempts, .. } => {
                    (attempts, false, None, None)
                }
                Progress::Renewed { attempts, first_at, at } => {
                    (attempts, true, Some(ms(first_at, at)), Some(ms(self.started, at)))
                }
            };
            sent += usize::from(attempts > 0);
            renewed += usize::from(ok);
            if let Some(s) = since_start {
                w1 += usize::from(s <= 1000.0);
                w2 += usize::from(s <= 2000.0);
            }
            clients.push(ClientReport {
                target: *t,
                attempts,
                renewed: ok,
                ms: first_to_renew,
                since_start_ms: since_start,
            });
        }
        Report {
            sent,
            frames: self.frames,
            renewed,
            seconds: ms(self.started, self.last_event) / 1000.0,
            within_1s: w1,
            within_2s: w2,
            first_sends_ms: self.first_sends_done.map(|t| ms(self.started, t)),
            clients,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: u32) -> Vec<Target> {
        (0..n)
            .map(|i| {
                let b = i.to_be_bytes();
                Target { ip: Ipv4Addr::new(10, 77, b[2], b[3]), mac: Mac([2, 0, b[0], b[1], b[2], b[3]]), xid: None }
            })
            .collect()
    }

    const T0: Instant = Instant::from_secs(1000);

    /// Steps the campaign as the shell would, with `answer(index, attempt)` saying whether the
    /// client's REQUEST comes back (after `rtt_us`). Returns the finished report.
    fn drive(c: &mut Campaign, rtt_us: u64, answer: impl Fn(usize, u32) -> bool) -> Report {
        let mut now = T0;
        let mut replies: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
        for _ in 0..10_000_000 {
            while let Some(s) = c.poll_transmit(now) {
                if answer(s.index, s.attempt) {
                    replies.push(Reverse((Instant(now.micros() + rtt_us), s.index)));
                }
            }
            while let Some(&Reverse((at, i))) = replies.peek() {
                if at > now {
                    break;
                }
                replies.pop();
                let mac = c.targets[i].mac;
                c.handle_request(at, mac, Some(c.targets[i].ip));
            }
            if c.is_finished() {
                return c.report();
            }
            let next = [c.poll_timeout(), replies.peek().map(|Reverse((t, _))| *t)].into_iter().flatten().min();
            now = next.expect("unfinished campaign with nothing to wait for").max(now);
        }
        panic!("campaign never finished");
    }

    #[test]
    fn ten_thousand_first_sends_take_half_a_second_at_the_default_rate() {
        let mut c = Campaign::new(targets(10_000), Policy::default(), T0);
        let r = drive(&mut c, 500, |_, _| true);
        assert_eq!((r.sent, r.renewed, r.frames), (10_000, 10_000, 10_000));
        let first = r.first_sends_ms.unwrap();
        // A burst of 64 at once, then one every 50 µs.
        assert!((496.0..=500.0).contains(&first), "{first} ms");
        assert_eq!(r.within_1s, 10_000);
    }

    #[test]
    fn a_silent_client_gets_the_first_send_and_every_retry_with_doubling_gaps() {
        let mut c = Campaign::new(targets(1), Policy::default(), T0);
        let mut times = Vec::new();
        let mut now = T0;
        while !c.is_finished() {
            while let Some(s) = c.poll_transmit(now) {
                times.push((now.saturating_sub(T0) / 1000, s.attempt));
            }
            now = c.poll_timeout().unwrap_or(now).max(now);
        }
        assert_eq!(times, vec![(0, 1), (250, 2), (750, 3), (1750, 4), (3750, 5)]);
        let r = c.report();
        assert_eq!((r.sent, r.renewed, r.clients[0].attempts, r.clients[0].renewed), (1, 0, 5, false));
        assert_eq!(r.seconds, 7.75);
    }

    #[test]
    fn a_client_that_answers_the_third_send_is_renewed_after_three_attempts() {
        let mut c = Campaign::new(targets(3), Policy::default(), T0);
        let r = drive(&mut c, 1000, |i, attempt| i != 1 || attempt == 3);
        assert_eq!(r.renewed, 3);
        let c1 = r.clients[1];
        assert_eq!((c1.attempts, c1.renewed), (3, true));
        // From the first send (at 50 µs) to the REQUEST after the third (750 ms + 1 ms).
        assert!((750.9..=751.0).contains(&c1.ms.unwrap()), "{:?}", c1.ms);
        assert_eq!(r.clients[0].attempts, 1);
    }

    #[test]
    fn retries_zero_sends_once_and_a_request_before_our_send_does_not_count() {
        let p = Policy { retries: 0, ..Policy::default() };
        let mut c = Campaign::new(targets(2), p, T0);
        assert!(!c.handle_request(T0, c.targets[0].mac, Some(c.targets[0].ip)));
        let r = drive(&mut c, 0, |_, _| false);
        assert_eq!((r.frames, r.renewed), (2, 0));
        assert!(r.clients.iter().all(|c| c.attempts == 1));
    }

    #[test]
    fn pacing_holds_the_rate_and_blocked_sends_go_again_uncounted() {
        let p = Policy { rate_per_s: 1000, burst: 4, ..Policy::default() };
        let mut c = Campaign::new(targets(100), p, T0);
        let mut burst = Vec::new();
        while let Some(s) = c.poll_transmit(T0) {
            burst.push(s);
        }
        assert_eq!(burst.len(), 4, "the burst");
        let blocked = burst[3];
        c.handle_send_blocked(T0, blocked);
        let next = c.poll_timeout().unwrap();
        assert!(next > T0);
        assert_eq!(c.poll_transmit(next), Some(blocked), "the refused send goes first");
        for s in &burst {
            assert!(!c.handle_request(next, s.target.mac, None), "a REQUEST for no address");
            assert!(c.handle_request(next, s.target.mac, Some(s.target.ip)));
        }
        let r = drive(&mut c, 10, |_, _| true);
        assert_eq!((r.sent, r.frames, r.renewed), (100, 100, 100));
        // 100 frames at 1000/s with a burst of 4, one of them pushed back.
        let first = r.first_sends_ms.unwrap();
        assert!((96.0..=99.0).contains(&first), "{first} ms");
    }

    #[test]
    fn duplicate_macs_are_one_client_and_unknown_macs_are_ignored() {
        let mut t = targets(2);
        t.push(t[0]);
        let mut c = Campaign::new(t, Policy::default(), T0);
        assert_eq!(c.len(), 2);
        assert!(!c.handle_request(T0, Mac([9; 6]), None));
        let r = drive(&mut c, 1, |_, _| true);
        assert_eq!((r.sent, r.renewed), (2, 2));
    }

    #[test]
    fn an_empty_campaign_is_finished_at_once() {
        let c = Campaign::new(Vec::new(), Policy::default(), T0);
        assert!(c.is_finished());
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.report().sent, 0);
    }
}
