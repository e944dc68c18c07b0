//! A whole fleet moving from cloud server A to B on the simulated network (sim.rs): the two
//! moves DESIGN §12 "Fleet" measures, shared by the r9 regression tests (small fleets) and the
//! fleet bench (benches/fleet.rs, 10,000 terminals).
//!
//! Contract: [`forcerenew_move`] and [`announced_move`] build the fleet, bring it up on A (not
//! measured), move it, and return when every terminal has followed or the horizon has passed.
//! The [`Outcome`] holds, per terminal, the simulated time from the move's start (the campaign's
//! start; the first ANNOUNCE) until its engine's current server was B, plus what the sender
//! reported and why the slowest terminals were slow. Same [`Fleet`] (seed included), same
//! outcome.
//!
//! The network is sim.rs's: every frame and TCP segment lost with `loss_pct`, one-way delay
//! uniform in 0.2–2 ms (a switched LAN with some queueing), TCP retransmission as Linux does it.
//!
//! - **FORCERENEW move**: dhcp-mode terminals (`acd = "optimistic"`, otherwise DESIGN's
//!   defaults) bound to the sim's DHCP server, whose option 224 says A. At the start it says B
//!   and the real [`Campaign`](ipsyncd::server::campaign::Campaign) (default policy) sends an
//!   RFC 3118-signed FORCERENEW to every lease; a terminal follows when the ACK of its REQUEST
//!   arrives (a `lease` decision whose 224 is B switches the server at once).
//! - **Announced move**: follow-mode terminals connected to A, both `serve`s up. The server
//!   broadcasts ANNOUNCE B with PREVIOUS_IPV4 A, as `ipsyncd announce --count N --interval S`
//!   would (a fresh sequence each copy); a terminal pins B, dials it, and follows on B's
//!   WELCOME (make-before-break).

use crate::sim::{dhcp_config, fleet_mac, follow_config, DhcpServer, Network, Sim};
use ipsyncd::engine::{Instant, State};
use ipsyncd::server::campaign::{Policy, Report};
use ipsyncd::server::Announce;
use ipsyncd::wire::sig::Signer;
use ipsyncd::wire::Mac;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const KEY: [u8; 32] = [0x42; 32];
pub const DHCP_KEY: &[u8] = b"fleet-dhcp-key-0123456789";
pub const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const A_MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
pub const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
pub const B_MAC: Mac = Mac([2, 0, 0, 0, 0, 2]);
/// The DHCP host: dnsmasq and `ipsyncd forcerenew --leases`.
pub const DHCP_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const DHCP_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xd]);

/// One fleet run.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub terminals: u32,
    pub net: Network,
    pub seed: u64,
    /// `announce --count`.
    pub announce_count: u32,
    /// `announce --interval`, in milliseconds (the tool takes whole seconds).
    pub announce_interval_ms: u64,
    /// How long after the start a terminal that has not followed counts as never.
    pub horizon_s: u64,
}

impl Fleet {
    pub fn new(terminals: u32, loss_pct: u64, seed: u64) -> Fleet {
        Fleet {
            terminals,
            // A switched LAN with some queueing: 0.2–2 ms one way.
            net: Network { loss_pct, delay_us: (200, 2000), ..Network::default() },
            seed,
            announce_count: 3,
            announce_interval_ms: 1000,
            horizon_s: 120,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub terminals: usize,
    /// Seconds from the start until each terminal followed, per terminal (None: not by the
    /// horizon).
    pub times: Vec<Option<f64>>,
    /// The FORCERENEW campaign's own report.
    pub campaign: Option<Report>,
    /// ANNOUNCE copies broadcast.
    pub announces: u32,
    /// FORCERENEWs the terminals rejected as `wrong_state` (a resend that found them RENEWING).
    pub wrong_state: u64,
    /// Why the terminals that took longer than `slow_s` did, by cause.
    pub slow: BTreeMap<&'static str, usize>,
    pub slow_s: f64,
    pub horizon_s: u64,
}

impl Outcome {
    pub fn followed(&self) -> usize {
        self.times.iter().flatten().count()
    }

    /// The time by which a fraction `q` of the fleet had followed; None if it never did.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let mut t: Vec<f64> = self.times.iter().flatten().copied().collect();
        t.sort_by(f64::total_cmp);
        let k = ((q * self.terminals as f64).ceil() as usize).max(1);
        t.get(k - 1).copied()
    }
}

fn secs_since(t0: Instant, t: Instant) -> f64 {
    t.saturating_sub(t0) as f64 / 1e6
}

/// Adds `n` terminals spread over about five seconds, as a fleet's power-on is.
fn bring_up(sim: &mut Sim, n: u32, mut cfg: impl FnMut(u32) -> ipsyncd::engine::EngineConfig) {
    let stagger_us = (5_000_000 / u64::from(n.max(1))).max(1);
    for i in 0..n {
        sim.terminal(cfg(i), State::default());
        let next = Instant(sim.now.micros() + stagger_us);
        sim.run_until(next);
    }
}

/// Runs until `done` or `limit`, checking every 50 ms of simulated time.
fn run_while(sim: &mut Sim, limit: Instant, mut done: impl FnMut(&Sim) -> bool) {
    while !done(sim) && sim.now < limit {
        let next = Instant(sim.now.micros() + 50_000).min(limit);
        sim.run_until(next);
    }
}

/// The FORCERENEW move of the module comment.
pub fn forcerenew_move(f: &Fleet) -> Outcome {
    let n = f.terminals as usize;
    let mut sim = Sim::new(f.seed, f.net);
    sim.record = false;
    sim.serve(A, A_MAC, true);
    sim.serve(B, B_MAC, true);
    sim.dhcp(DhcpServer::new(DHCP_IP, DHCP_MAC, A, Ipv4Addr::new(10, 77, 100, 1)));
    bring_up(&mut sim, f.terminals, |i| dhcp_config(i, &KEY, DHCP_KEY));
    // Every terminal BOUND on A and in the lease table (the `--leases` file), and its optimistic
    // probes done, so the move starts from a quiet fleet.
    let up_by = sim.now.add_secs(600);
    run_while(&mut sim, up_by, |s| {
        s.dhcp.as_ref().is_some_and(|d| d.leases.len() == n)
            && s.terminals.iter().all(|t| t.engine.client_state() == "BOUND" && t.server() == Some(A))
    });
    assert_eq!(sim.dhcp.as_ref().map(|d| d.leases.len()), Some(n), "the fleet did not come up on A");
    let settle = sim.now.add_secs(10);
    sim.run_until(settle);
    let wrong_state_before = wrong_state(&sim);

    let t0 = sim.now;
    if let Some(d) = &mut sim.dhcp {
        d.cloud = B;
    }
    sim.watch(B);
    sim.forcerenew_leases(1, DHCP_KEY, Policy::default());
    let horizon = t0.add_secs(f.horizon_s);
    run_while(&mut sim, horizon, |s| s.reached == n && s.forcerenew.as_ref().is_some_and(|c| c.campaign.is_finished()));

    let report = sim.forcerenew.as_ref().map(|c| c.campaign.report());
    let times: Vec<Option<f64>> = sim.terminals.iter().map(|t| t.reached.map(|r| secs_since(t0, r))).collect();
    // Why the slow ones were slow, from the sender's view of the same terminal: when it saw the
    // REQUEST against when the terminal got its ACK.
    let slow_s = 3.0;
    let mut slow = BTreeMap::new();
    if let Some(r) = &report {
        let by_mac: BTreeMap<Mac, usize> = (0..n).map(|i| (fleet_mac(i as u32), i)).collect();
        for c in &r.clients {
            let Some(&i) = by_mac.get(&c.target.mac) else { continue };
            let followed = times[i];
            if followed.is_some_and(|t| t < slow_s) {
                continue;
            }
            let seen = c.since_start_ms.map(|ms| ms / 1000.0);
            let cause = match (seen, followed) {
                (None, _) => "no REQUEST reached the host before the campaign gave up",
                (Some(_), None) => "REQUEST seen, no ACK arrived by the horizon",
                (Some(s), Some(t)) if t - s > 1.0 => {
                    "ACK lost: the sender saw the REQUEST and stopped; the terminal waited for its own REQUEST retransmit (250 ms ±25%, six times, then 4 s)"
                }
                (Some(_), Some(_)) if c.attempts > 1 => {
                    "REQUEST lost: the sender's resends found the terminal RENEWING (wrong_state); it waited for its own REQUEST retransmit"
                }
                _ => "other",
            };
            *slow.entry(cause).or_default() += 1;
        }
    }
    Outcome {
        terminals: n,
        times,
        campaign: report,
        announces: 0,
        wrong_state: wrong_state(&sim) - wrong_state_before,
        slow,
        slow_s,
        horizon_s: f.horizon_s,
    }
}

fn wrong_state(sim: &Sim) -> u64 {
    sim.terminals
        .iter()
        .filter_map(|t| t.engine.counters().reasons.get("reject").and_then(|r| r.get("wrong_state")))
        .sum()
}

fn announce(sequence: u64) -> Vec<u8> {
    Announce {
        key_id: 1,
        key: Signer::Hmac(&KEY),
        sequence,
        server_ip: B,
        server_mac: B_MAC,
        previous_ip: Some(A),
        server_name: None,
        service_port: Some(3389),
    }
    .frame(47474)
}

/// The announced make-before-break move of the module comment.
pub fn announced_move(f: &Fleet) -> Outcome {
    let n = f.terminals as usize;
    let mut sim = Sim::new(f.seed, f.net);
    sim.record = false;
    sim.serve(A, A_MAC, true);
    sim.serve(B, B_MAC, true);
    bring_up(&mut sim, f.terminals, |i| {
        let mut c = follow_config(i, &KEY);
        c.initial_server = Some(A);
        c
    });
    // Every terminal pinned to A and connected to it.
    let up_by = sim.now.add_secs(600);
    run_while(&mut sim, up_by, |s| {
        s.terminals.iter().all(|t| t.engine.connected_since().is_some() && t.pins.get(&A) == Some(&A_MAC))
    });
    assert!(sim.terminals.iter().all(|t| t.engine.connected_since().is_some()), "the fleet did not come up on A");
    let settle = sim.now.add_secs(5);
    sim.run_until(settle);

    let t0 = sim.now;
    sim.watch(B);
    for k in 0..f.announce_count {
        let at = Instant(t0.micros() + u64::from(k) * f.announce_interval_ms * 1000);
        sim.run_until(at);
        // The tool's sequence: µs since the epoch (the sim's clock is the epoch clock).
        sim.broadcast(&announce(sim.now.micros()));
    }
    let horizon = t0.add_secs(f.horizon_s);
    run_while(&mut sim, horizon, |s| s.reached == n);

    let times: Vec<Option<f64>> = sim.terminals.iter().map(|t| t.reached.map(|r| secs_since(t0, r))).collect();
    let slow_s = 3.0;
    let mut slow = BTreeMap::new();
    for (t, followed) in sim.terminals.iter().zip(&times) {
        if followed.is_some_and(|t| t < slow_s) {
            continue;
        }
        let dials = t.connects.get(&B).copied().unwrap_or(0);
        let cause = match (dials, followed) {
            (0, _) => "every ANNOUNCE copy lost: it never dialled B",
            (1, Some(_)) => "one connect to B, slow: SYN or SYN-ACK lost (1 s initial RTO)",
            (_, Some(_)) => "a connect to B timed out (2 s) and was retried after the channel's backoff",
            (_, None) => "dialled B and never got a WELCOME by the horizon",
        };
        *slow.entry(cause).or_default() += 1;
    }
    Outcome {
        terminals: n,
        times,
        campaign: None,
        announces: f.announce_count,
        wrong_state: 0,
        slow,
        slow_s,
        horizon_s: f.horizon_s,
    }
}
