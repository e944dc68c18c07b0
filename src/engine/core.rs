//! The engine itself: the state it keeps between inputs and the quinn-proto style API.
//!
//! Contract: the shell feeds [`Engine::handle_frame`], [`Engine::handle_timeout`] and
//! [`Engine::handle_result`], then drains [`Engine::poll_decision`] and [`Engine::poll_action`],
//! and sleeps until [`Engine::poll_timeout`], the earliest of every deadline the engine owns (the
//! DHCP client's, ACD's, the ARP resolution window, the connection channel's retry and a failed
//! state write's retry). Time and randomness come in as arguments; wall time only through
//! [`Engine::set_wall_clock`]. Actions are queued only through [`Engine::decide`], so the
//! decision log is the complete record.

use super::decision::{Counters, Decision, Input, Verdict};
use super::input::{input_of, Inbound, InboundKind, IpsyncMsg};
use super::lease::Client;
use super::limits::{Alarms, ArpCache, Lane, RateLimiter, VerifyBudget};
use super::pending::{Dial, FollowRequest, PendingMove, PersistRetry, Resolving, RESOLVE_REQUESTS};
use super::state::{ServerState, State};
use super::vocab::{
    reserved_address, Action, ActionResult, Cidr, EngineConfig, HookEnv, HookReason, Instant, Mode, Rng, Service, Wall,
};
use crate::wire::sig::{Trailer, VerifyKey};
use crate::wire::Mac;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

pub struct Engine {
    pub(super) cfg: EngineConfig,
    pub(super) state: State,
    pub(super) client: Client,
    pub(super) rng: Rng,
    pub(super) rate: RateLimiter,
    /// Checks of unsolicited frames' HMACs and signatures (limits.rs has the figures).
    pub(super) verify: VerifyBudget,
    pub(super) arp: ArpCache,
    pub(super) alarms: Alarms,
    pub(super) resolving: Option<Resolving>,
    pub(super) dial: Option<Dial>,
    pub(super) pending: Option<PendingMove>,
    /// Follow mode: the system client's last REQUEST, whose ACK may move the server.
    pub(super) follow_request: Option<FollowRequest>,
    /// dhcp mode: the address we put in the kernel (a restart finds the persisted lease's
    /// address still there). It stays while a new one is probed, until that one is bound.
    pub(super) configured: Option<Cidr>,
    /// RFC 5227 §2.4: when we last defended our address with an announcement.
    pub(super) defended_at: Option<Instant>,
    /// dhcp mode: the cloud server an ACK named while we had no address yet (strict ACD still
    /// probing); judged at the bind, so that it is dialled from an address and OLD/OWN_IP are set.
    pub(super) deferred_server: Option<Ipv4Addr>,
    /// dhcp mode: the address a NAK took away; the next bind of another one is LEASE_CHANGED.
    pub(super) lost: Option<Cidr>,
    /// When an authenticated FORCERENEW last started a renewal (at most one per second).
    pub(super) renewed_at: Option<Instant>,
    pub(super) wall: Wall,
    /// RFC 5227 conflicts since the last successful bind (MAX_CONFLICTS).
    pub(super) acd_conflicts: u32,
    decisions: VecDeque<Decision>,
    actions: VecDeque<Action>,
    pub(super) counters: Counters,
    dirty: bool,
    /// The last state write failed and is being retried (persist.rs).
    pub(super) persist: Option<PersistRetry>,
    last_decision: Option<(Input, Verdict, Instant)>,
    /// The server we last got a WELCOME from, and when.
    pub(super) welcomed: Option<(Ipv4Addr, Instant)>,
    /// While [`Engine::handle_frame`] runs: the frame's source and the key it named, which
    /// [`Engine::decide`] puts on that frame's decision (for the journal's reject warning).
    frame_source: Option<((Mac, Ipv4Addr), Option<u32>)>,
    /// What the ANNOUNCE (or WELCOME) that made this server current said about its service, so
    /// the SERVER_CONNECTED hook of a later WELCOME that carries none still sees it. Not
    /// persisted: after a restart only a WELCOME can tell.
    pub(super) service: Option<(Ipv4Addr, Service)>,
}

impl Engine {
    /// An engine whose wall clock is its monotonic clock (replay and tests).
    pub fn new(cfg: EngineConfig, state: State, seed: u64) -> Engine {
        Engine::with_wall(cfg, state, seed, Wall::REPLAY)
    }

    /// The live daemon's engine: persisted wall-clock deadlines are mapped through `wall`.
    pub fn with_wall(cfg: EngineConfig, state: State, seed: u64, wall: Wall) -> Engine {
        let client = Client::restore(&state, wall);
        let configured = if cfg.mode == Mode::Dhcp { state.lease.map(|l| l.address) } else { None };
        Engine {
            cfg,
            state,
            client,
            rng: Rng::new(seed),
            rate: RateLimiter::default(),
            verify: VerifyBudget::default(),
            arp: ArpCache::default(),
            alarms: Alarms::default(),
            resolving: None,
            dial: None,
            pending: None,
            follow_request: None,
            configured,
            defended_at: None,
            deferred_server: None,
            lost: None,
            renewed_at: None,
            wall,
            acd_conflicts: 0,
            decisions: VecDeque::new(),
            actions: VecDeque::new(),
            counters: Counters::default(),
            dirty: false,
            persist: None,
            last_decision: None,
            welcomed: None,
            frame_source: None,
            service: None,
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
    /// Wall-clock microseconds at monotonic `t` (for the log line and `status`).
    pub fn wall_us(&self, t: Instant) -> u64 {
        self.wall.unix_us(t)
    }
    /// `Some(time of the last WELCOME)` when the current server has answered since it became current.
    pub fn connected_since(&self) -> Option<Instant> {
        self.welcomed.filter(|(ip, _)| Some(*ip) == self.current_server()).map(|(_, t)| t)
    }
    /// The DHCP client's state name for `status` (BOUND, RENEWING, …).
    pub fn client_state(&self) -> &'static str {
        self.client.name()
    }
    /// The address a make-before-break move is waiting on, if any.
    pub fn pending_move(&self) -> Option<Ipv4Addr> {
        self.pending.map(|p| p.to)
    }

    /// The shell reports wall time once per wakeup; an NTP step changes only how times are shown
    /// and the freshness check, never a deadline.
    pub fn set_wall_clock(&mut self, now: Instant, unix_us: u64, synced: bool) {
        self.wall = Wall::at(now, unix_us, synced);
    }

    /// True once after the persisted state changed: the shell then writes it out.
    pub fn take_dirty(&mut self) -> bool {
        core::mem::take(&mut self.dirty)
    }

    /// Live start (DESIGN §6): re-pin and connect to a known server at once, and in dhcp mode
    /// start the client. Each is a decision. Replay does not call this: a capture starts in the
    /// middle of a terminal's life, and its own frames play the client's part.
    pub fn start(&mut self, now: Instant) {
        if let Some(ip) = self.current_server() {
            let mut actions = Vec::new();
            match self.state.server.filter(|s| s.ip == ip).and_then(|s| s.mac).filter(|_| self.on_link(ip)) {
                Some(mac) => actions.push(Action::PinNeighbour { ip, mac }),
                None => actions.extend(self.resolve_pin_of(now, ip)),
            }
            actions.extend(self.dial_now(ip));
            self.decide(Decision::new(None, now, Input::Timer, Verdict::Same).server(Some(ip), None).actions(actions));
        }
        if self.cfg.mode == Mode::Dhcp {
            self.client_start(now);
        }
    }

    /// A clean stop (SIGTERM): with `release_on_stop` in dhcp mode, the lease is released. The
    /// shell carries out the actions before it exits.
    pub fn stop(&mut self, now: Instant) {
        self.client_stop(now);
    }

    /// Updates keys after a reload; state and counters are kept.
    pub fn reload_keys(&mut self, keys: BTreeMap<u32, VerifyKey>, dhcp_keys: BTreeMap<u32, Vec<u8>>) {
        self.cfg.keys = keys;
        self.cfg.dhcp_keys = dhcp_keys;
    }

    pub fn handle_frame(&mut self, now: Instant, inbound: &Inbound) {
        self.frame_source = match &inbound.kind {
            InboundKind::Ipsync { src_ip } => Some(((inbound.src, *src_ip), Some(IpsyncMsg::key_id_of(&inbound.raw)))),
            InboundKind::Dhcp(msg) => Some(((inbound.src, msg.src_ip), dhcp_key_id(msg))),
            _ => None,
        };
        self.handle_frame_from(now, inbound);
        self.frame_source = None;
    }

    fn handle_frame_from(&mut self, now: Instant, inbound: &Inbound) {
        let exempt = self.state.server.and_then(|s| s.mac).is_some_and(|m| m.ct_eq(&inbound.src));
        match &inbound.kind {
            InboundKind::Own(msg) => self.handle_own_dhcp(now, msg),
            InboundKind::Ignored => {}
            InboundKind::Arp(arp) => self.handle_arp(now, inbound.frame, arp, inbound.src),
            InboundKind::Malformed { input, reason } => self.handle_malformed(now, inbound, *input, reason, exempt),
            InboundKind::Ipsync { src_ip } => {
                let key_id = IpsyncMsg::key_id_of(&inbound.raw);
                let trailer = self.cfg.keys.get(&key_id).map_or(Trailer::HmacSha256, |k| k.trailer());
                let msg = match IpsyncMsg::parse(&inbound.raw, *src_ip, trailer) {
                    Ok(m) => m,
                    Err(reason) => return self.handle_malformed(now, inbound, Input::Announce, reason, exempt),
                };
                let lane = self.announce_lane(inbound.src);
                if self.rate.allow(inbound.src, Input::Announce, now, exempt) {
                    self.handle_ipsync(now, inbound.frame, &msg, &inbound.raw, Some(lane));
                } else if exempt {
                    // A spoofer can drain the pinned server's own bucket with frames forged from
                    // its MAC: one that could still move us is checked from the server lane's
                    // spare budget, and decided when authentic.
                    self.handle_ipsync_past_limit(now, inbound.frame, &msg, &inbound.raw);
                } else {
                    self.counters.drop("rate_limited");
                }
            }
            InboundKind::Dhcp(msg) => {
                if self.rate.allow(inbound.src, input_of(msg), now, exempt) {
                    self.handle_dhcp(now, inbound.frame, msg, &inbound.raw, inbound.src);
                } else {
                    self.counters.drop("rate_limited");
                }
            }
        }
    }

    fn handle_malformed(&mut self, now: Instant, inbound: &Inbound, input: Input, reason: &'static str, exempt: bool) {
        if self.rate.allow(inbound.src, input, now, exempt) {
            self.decide(Decision::new(inbound.frame, now, input, Verdict::Malformed).reason(reason));
        } else {
            self.counters.drop("rate_limited");
        }
    }

    /// Runs every deadline that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client_timeout(now);
        self.resolve_timeout(now);
        self.channel_timeout(now);
        self.persist_timeout(now);
    }

    pub fn handle_result(&mut self, now: Instant, result: ActionResult) {
        match result {
            ActionResult::Done => {}
            ActionResult::Failed { op, error } => {
                log::warn!("{op} failed: {error}");
                self.counters.drop("action_failed");
            }
            ActionResult::PersistFailed { error } => self.persist_failed(now, error),
            ActionResult::Persisted => self.persisted(),
            ActionResult::Welcome { ip, mac, status, service } => self.handle_welcome(now, ip, mac, status, service),
            ActionResult::WelcomeRejected { ip, reason } => self.handle_welcome_rejected(now, ip, reason),
            ActionResult::ChannelFailed { ip, failure } => self.handle_channel_failed(now, ip, failure.as_str()),
            ActionResult::PinLost { ip } => {
                let pins: Vec<Action> = self.pins().into_iter().filter(|a| pin_ip(a) == Some(ip)).collect();
                self.repin(now, pins);
            }
            ActionResult::LinkUp => {
                let pins = self.pins();
                self.repin(now, pins);
            }
        }
    }

    /// The earliest deadline the engine owns; `None` when nothing is scheduled, so an idle
    /// daemon never wakes up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let resolve = self.resolving.map(|r| if r.requests < RESOLVE_REQUESTS { r.next_at } else { r.until });
        [self.client.deadline(), resolve, self.dial.and_then(|d| d.next_at), self.persist_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// Records one decision and queues its actions for the applier: the only way an action is
    /// ever queued.
    pub(super) fn decide(&mut self, mut d: Decision) {
        // Only the frame's own decision: a timer that ran on the way has no source.
        if let (Some((source, key_id)), Some(_)) = (self.frame_source, d.frame) {
            if d.source.is_none() {
                d = d.from_frame(Some(source), key_id);
            }
        }
        self.actions.extend(d.actions.iter().cloned());
        self.counters.count_decision(&d);
        self.last_decision = Some((d.input, d.verdict, d.time));
        self.decisions.push_back(d);
    }

    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Our own IPv4 address: the lease's in dhcp mode, the configured one in follow mode.
    pub fn own_cidr(&self) -> Option<Cidr> {
        match self.cfg.mode {
            Mode::Dhcp => self.client.address().or(self.configured),
            Mode::Follow => self.cfg.address,
        }
    }

    pub fn current_server(&self) -> Option<Ipv4Addr> {
        self.state.server.map(|s| s.ip).or(self.cfg.initial_server)
    }

    pub(super) fn set_server_state(&mut self, now: Instant, ip: Ipv4Addr, mac: Option<Mac>, keep_since: bool) {
        let since = match self.state.server {
            Some(s) if keep_since && s.ip == ip => s.since,
            _ => self.wall.unix_us(now) / 1_000_000,
        };
        self.state.server = Some(ServerState { ip, mac, since });
        self.mark_dirty();
    }

    pub(super) fn hook_env(&self, new: Option<Ipv4Addr>, mac: Option<Mac>) -> HookEnv {
        HookEnv {
            old_server_ip: self.current_server(),
            new_server_ip: new,
            server_mac: mac,
            own_ip: self.own_cidr().map(|c| c.addr),
            ..HookEnv::default()
        }
    }

    /// An alarm about `ip`, coalesced per kind and address (DESIGN §5): the alarm action, plus a
    /// CONFLICT hook when `hook` is set, or nothing when one was raised within the interval.
    pub(super) fn alarm(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        mac: Option<Mac>,
        kind: &'static str,
        detail: String,
        hook: Option<HookReason>,
    ) -> Vec<Action> {
        if !self.alarms.raise(kind, ip, now, self.cfg.alarm_interval_s) {
            self.counters.drop("alarm_coalesced");
            return Vec::new();
        }
        let mut out = vec![Action::Alarm { kind, detail }];
        if let Some(reason) = hook {
            let mut env = self.hook_env(Some(ip), mac);
            if reason == HookReason::Conflict {
                env.conflict_kind = Some(kind);
            }
            out.push(Action::Hook { reason, env });
        }
        out
    }

    /// Every pin the engine wants in the kernel: the server's, a pending move's target, and in
    /// dhcp mode the DHCP server's when it is on-link (the MAC its ACK came from).
    pub(super) fn pins(&self) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(ServerState { ip, mac: Some(mac), .. }) = self.state.server {
            out.extend(self.pin_announced(ip, mac));
        }
        if let Some(p) = self.pending {
            out.extend(self.pin_announced(p.to, p.mac));
        }
        if let Some(l) = self.client.lease() {
            let cloud = self.current_server();
            if l.cidr.contains(l.server_id) && self.usable_mac(l.server_mac) && cloud != Some(l.server_id) {
                out.push(Action::PinNeighbour { ip: l.server_id, mac: l.server_mac });
            }
        }
        out
    }

    /// A netlink event touched our pins: put them back, as a `kernel` `repin` decision.
    fn repin(&mut self, now: Instant, pins: Vec<Action>) {
        if pins.is_empty() {
            return;
        }
        let (ip, mac) = match pins.first() {
            Some(Action::PinNeighbour { ip, mac }) => (Some(*ip), Some(*mac)),
            _ => (None, None),
        };
        self.decide(Decision::new(None, now, Input::Kernel, Verdict::Repin).server(ip, mac).actions(pins));
    }

    pub(super) fn is_own(&self, ip: Ipv4Addr) -> bool {
        self.own_cidr().is_some_and(|c| c.addr == ip)
    }

    /// DESIGN §5 "Usable addresses": unicast, outside the reserved ranges, and not the network or
    /// broadcast address of our own subnet.
    pub(super) fn usable_address(&self, ip: Ipv4Addr) -> bool {
        self.usable_address_in(ip, self.own_cidr())
    }

    /// The same against `own`, e.g. the lease an ACK is applying while ACD still probes.
    pub(super) fn usable_address_in(&self, ip: Ipv4Addr, own: Option<Cidr>) -> bool {
        let edge = own.is_some_and(|c| c.prefix < 31 && (ip == c.network() || ip == c.broadcast()));
        !reserved_address(ip) && !edge
    }

    /// The verification lane of an ANNOUNCE from `src`: the server lane for the MACs we follow,
    /// the current server's and a pending move's target's (limits.rs says why).
    pub(super) fn announce_lane(&self, src: Mac) -> Lane {
        let server = self.state.server.and_then(|s| s.mac);
        let target = self.pending.map(|p| p.mac);
        if [server, target].into_iter().flatten().any(|m| m.ct_eq(&src)) {
            Lane::Server
        } else {
            Lane::Other
        }
    }

    /// The verification lane of a FORCERENEW from `src`: the server lane for the current
    /// server's MAC (where `ipsyncd forcerenew` may run) and the DHCP server's that leased to us.
    pub(super) fn forcerenew_lane(&self, src: Mac) -> Lane {
        let server = self.state.server.and_then(|s| s.mac);
        let dhcp = self.client.lease().map(|l| l.server_mac);
        if [server, dhcp].into_iter().flatten().any(|m| m.ct_eq(&src)) {
            Lane::Server
        } else {
            Lane::Other
        }
    }

    /// A server MAC must be unicast, non-zero and not our own.
    pub(super) fn usable_mac(&self, mac: Mac) -> bool {
        mac.is_unicast() && !mac.ct_eq(&self.cfg.mac)
    }
}

/// The RFC 3118 secret id a DHCP message names, when it uses delayed authentication; RFC 6704's
/// nonce has no id.
fn dhcp_key_id(msg: &super::input::DhcpMsg) -> Option<u32> {
    match msg.auth.map(|a| a.scheme) {
        Some(crate::wire::auth::Scheme::Delayed { secret_id, .. }) => Some(secret_id),
        _ => None,
    }
}

fn pin_ip(a: &Action) -> Option<Ipv4Addr> {
    match a {
        Action::PinNeighbour { ip, .. } => Some(*ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_addresses_follow_design() {
        let mut cfg = EngineConfig::new(Mode::Follow, Mac([2, 0, 0, 0, 0, 1]));
        cfg.address = Some("10.77.0.10/24".parse().unwrap_or(Cidr::new(Ipv4Addr::UNSPECIFIED, 0)));
        let e = Engine::new(cfg, State::default(), 1);
        for bad in [
            "0.1.2.3",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "10.77.0.0",
            "10.77.0.255",
        ] {
            assert!(!e.usable_address(bad.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)), "{bad}");
        }
        assert!(e.usable_address(Ipv4Addr::new(10, 77, 0, 20)));
        assert!(e.usable_address(Ipv4Addr::new(192, 168, 1, 0)), "another subnet's .0 may be a host");
        assert!(!e.usable_mac(Mac([2, 0, 0, 0, 0, 1])), "our own MAC");
        assert!(!e.usable_mac(Mac([1, 0, 0, 0, 0, 9])), "multicast");
        assert!(!e.usable_mac(Mac::ZERO));
    }
}
