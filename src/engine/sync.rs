//! Following the cloud server: authenticated announcements, the compare/ignore/conflict/apply
//! rule, planned (make-before-break) moves, ARP evidence and pin resolution.
//!
//! Contract: an ipsync message is checked in the order DESIGN §5 fixes (structure was checked by
//! the decoder; over UDP only ANNOUNCE is taken; then key id, HMAC, sequence, freshness, then
//! semantics). A sequence is committed only after all of those passed, whatever the semantic
//! verdict. The HMAC (or signature) is the one costly step: it is paid from the verification
//! budget of the sender's lane, and a frame over budget is dropped and counted
//! (`dropped.verify_budget`) before it is checked, with no line, like a rate-limited one. Past
//! the server's own rate limit only an ANNOUNCE that could still move us (known key, fresh
//! sequence, within `max_age_s`) is checked at all. A break-before-make switch emits, in order: pin the new pair, unpin the old address,
//! connect, persist (`set_server`), hook. ARP evidence never holds a signed move back; it only
//! adds an alarm. A pin's MAC learnt by ARP comes only from a unicast reply to us.

use super::core::Engine;
use super::decision::{reason, Decision, Input, Verdict};
use super::input::IpsyncMsg;
use super::limits::{Check, Lane};
use super::pending::{PendingMove, Resolving, RESOLVE_REQUESTS, RESOLVE_WINDOW_MS};
use super::vocab::{Action, HookReason, Instant, Mode, ServerName, Service, TxKind};
use crate::wire::sig::VerifyKey;
use crate::wire::{arp, frame, ipsync, Mac};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

impl Engine {
    /// The key an ANNOUNCE under `key_id` is checked with. Once any Ed25519 key is configured,
    /// shared keys sign HELLO only (DESIGN §4.3: whoever steals one "can ask `serve` for
    /// WELCOMEs and nothing more"), so an ANNOUNCE under one is `unknown_key`.
    pub(super) fn announce_key(keys: &BTreeMap<u32, VerifyKey>, key_id: u32) -> Option<&VerifyKey> {
        let ed25519 = keys.values().any(|k| matches!(k, VerifyKey::Ed25519(_)));
        keys.get(&key_id).filter(|k| !ed25519 || matches!(k, VerifyKey::Ed25519(_)))
    }

    /// An ipsync message the rate limits let through. `lane`: whose budget pays for its check;
    /// `None` when it was checked already ([`Engine::handle_ipsync_past_limit`]).
    pub(super) fn handle_ipsync(
        &mut self,
        now: Instant,
        frame: Option<u64>,
        msg: &IpsyncMsg,
        raw: &[u8],
        lane: Option<Lane>,
    ) {
        let input = Input::Announce;
        let (sip, smac) = (msg.server_ipv4, msg.server_mac);
        let line = |v: Verdict| Decision::new(frame, now, input, v).server(sip, smac);
        // Over UDP a terminal takes ANNOUNCE only; a HELLO or WELCOME here commits nothing.
        if msg.msg_type != ipsync::MessageType::Announce {
            return self.decide(line(Verdict::Ignore).reason(reason::UNEXPECTED));
        }
        if Engine::announce_key(&self.cfg.keys, msg.key_id).is_none() {
            return self.decide(line(Verdict::Reject).reason(reason::UNKNOWN_KEY));
        }
        if let Some(lane) = lane {
            if !self.verify.take(lane, Check::Announce, now) {
                return self.counters.drop("verify_budget");
            }
            if !self.ipsync_authentic(msg.key_id, raw) {
                return self.decide(line(Verdict::Reject).reason(reason::BAD_MAC));
            }
        }
        if self.state.sequences.get(&msg.key_id).is_some_and(|&last| msg.sequence <= last) {
            return self.decide(line(Verdict::Reject).reason(reason::REPLAYED));
        }
        if self.stale(now, msg.sequence) {
            return self.decide(line(Verdict::Reject).reason(reason::STALE));
        }
        self.state.sequences.insert(msg.key_id, msg.sequence);
        self.mark_dirty();

        // The decoder proved both are present in an ANNOUNCE.
        let (Some(ip), Some(mac)) = (sip, smac) else {
            return self.decide(line(Verdict::Ignore).reason(reason::UNEXPECTED));
        };
        if !self.usable_address(ip) || !self.usable_mac(mac) {
            return self.decide(line(Verdict::Ignore).reason(reason::BAD_ADDRESS));
        }
        if self.is_own(ip) {
            let detail = format!("server address {ip} is this terminal's own address");
            let actions = self.alarm(now, ip, Some(mac), reason::OWN_ADDRESS, detail, Some(HookReason::Conflict));
            return self.decide(line(Verdict::Conflict).reason(reason::OWN_ADDRESS).actions(actions));
        }
        if self.pending.is_some_and(|p| p.to == ip && p.mac.ct_eq(&mac)) {
            return self.decide(line(Verdict::Same));
        }
        let current = self.current_server();
        let known = self.state.server.filter(|s| Some(s.ip) == current).and_then(|s| s.mac);
        if current == Some(ip) && known.map_or(true, |k| k.ct_eq(&mac)) {
            let mut actions = Vec::new();
            // The server says it is still at A: a pending move is cancelled.
            if let Some(p) = self.pending.take() {
                self.hang_up(p.to);
                actions.push(Action::UnpinNeighbour { ip: p.to });
                // The move took the dial from A: if A has not answered, dial it again.
                if self.welcomed.map(|(w, _)| w) != Some(ip) {
                    actions.extend(self.dial_now(ip));
                }
            }
            if known.is_none() {
                // Same server, first time we learn its MAC: pin it; this is no switch.
                actions.extend(self.pin_announced(ip, mac));
                actions.push(Action::SetServer { ip, mac: Some(mac) });
                self.set_server_state(now, ip, Some(mac), true);
            }
            return self.decide(line(Verdict::Same).actions(actions));
        }
        // ARP that shows the address at another MAC raises an alarm but never holds the move back.
        let evidence = match self.arp.owner(ip, now) {
            Some(seen) if !seen.ct_eq(&mac) => {
                let detail = format!("{ip} announced at {mac} but ARP shows it at {seen}; pinning {mac}");
                self.alarm(now, ip, Some(mac), reason::ADDRESS_IN_USE, detail, None)
            }
            _ => Vec::new(),
        };
        let mut actions = Vec::new();
        // A pending move to another address is replaced by this one.
        if let Some(p) = self.pending.take() {
            self.hang_up(p.to);
            if Some(p.to) != current && p.to != ip {
                actions.push(Action::UnpinNeighbour { ip: p.to });
            }
        }
        match current {
            // Without a channel no WELCOME can complete it: the move is break-before-make.
            Some(from) if msg.previous_ipv4 == Some(from) && from != ip && self.has_channel() => {
                // Make-before-break: pin and dial B, keep A until B's WELCOME.
                actions.extend(self.pin_announced(ip, mac));
                actions.extend(self.dial_now(ip));
                self.pending = Some(PendingMove {
                    to: ip,
                    mac,
                    from,
                    service_port: msg.service_port,
                    server_name: msg.server_name,
                });
            }
            _ => actions.extend(self.switch_server(now, ip, Some(mac), msg.service_port, msg.server_name)),
        }
        actions.extend(evidence);
        self.decide(line(Verdict::Apply).actions(actions));
    }

    /// An ANNOUNCE from the pinned server's MAC past that MAC's own rate limit. The cheap checks
    /// come first: only one that could be accepted (an ANNOUNCE, known key, a sequence above the
    /// last accepted and within `max_age_s`) is checked at all, and only from the server lane's
    /// spare budget; an authentic one is then decided as usual. The rest are counted, no line.
    pub(super) fn handle_ipsync_past_limit(&mut self, now: Instant, frame: Option<u64>, msg: &IpsyncMsg, raw: &[u8]) {
        let fresh = self.state.sequences.get(&msg.key_id).map_or(true, |&last| msg.sequence > last);
        let could_move = msg.msg_type == ipsync::MessageType::Announce
            && Engine::announce_key(&self.cfg.keys, msg.key_id).is_some()
            && fresh
            && !self.stale(now, msg.sequence);
        if !could_move {
            return self.counters.drop("rate_limited");
        }
        if !self.verify.take_spare(Lane::Server, Check::Announce, now) {
            return self.counters.drop("verify_budget");
        }
        if !self.ipsync_authentic(msg.key_id, raw) {
            return self.counters.drop("rate_limited");
        }
        self.handle_ipsync(now, frame, msg, raw, None);
    }

    /// The one place an ipsync message's trailer is checked against its `[[key]]`.
    fn ipsync_authentic(&self, key_id: u32, raw: &[u8]) -> bool {
        Engine::announce_key(&self.cfg.keys, key_id).is_some_and(|k| ipsync::Packet::new_unchecked(raw).verify(k))
    }

    /// DESIGN §4.3 freshness: with a synchronised clock, a sequence more than `max_age_s` from
    /// the terminal's wall clock, either way.
    fn stale(&self, now: Instant, sequence: u64) -> bool {
        self.cfg.max_age_s > 0
            && self.wall.synced
            && self.wall.unix_us(now).abs_diff(sequence) > self.cfg.max_age_s.saturating_mul(1_000_000)
    }

    /// The actions of a break-before-make switch to `ip`, and the state change. Without a MAC, an
    /// on-link server is resolved by ARP and pinned when it answers; an off-link one is not
    /// pinned, the gateway is (DESIGN §5, "Where a pin's MAC comes from").
    pub(super) fn switch_server(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        mac: Option<Mac>,
        port: Option<u16>,
        name: Option<ServerName>,
    ) -> Vec<Action> {
        let old = self.current_server();
        let mut actions = Vec::new();
        // A window opened for the old server (or its gateway) does not outlive it.
        self.resolving = None;
        match mac.filter(|_| self.on_link(ip)) {
            Some(m) => actions.push(Action::PinNeighbour { ip, mac: m }),
            None => actions.extend(self.resolve_pin_of(now, ip)),
        }
        if let Some(o) = old.filter(|&o| o != ip) {
            actions.push(Action::UnpinNeighbour { ip: o });
        }
        actions.extend(self.dial_now(ip));
        actions.push(Action::SetServer { ip, mac });
        let mut env = self.hook_env(Some(ip), mac);
        env.service_port = port;
        env.server_name = name;
        actions.push(Action::Hook { reason: HookReason::ServerChanged, env });
        self.service = Some((ip, Service { port, name }));
        self.set_server_state(now, ip, mac, false);
        actions
    }

    /// Whether `ip` is on our own subnet. Unknown (no address yet) counts as on-link, so an
    /// announced MAC is still pinned before the lease is bound.
    pub(super) fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.own_cidr().map_or(true, |c| c.contains(ip))
    }

    /// The pin of an announced server: its SERVER_MAC when it is on our link. An ANNOUNCE that
    /// reached us through a router names a MAC on another segment, which no frame of ours is
    /// ever sent to: off-link servers are not pinned (DESIGN §5), their gateway is.
    pub(super) fn pin_announced(&self, ip: Ipv4Addr, mac: Mac) -> Option<Action> {
        self.on_link(ip).then_some(Action::PinNeighbour { ip, mac })
    }

    /// Starts resolving the pin for a server known only by IP: the server itself when on-link,
    /// else the gateway. Nothing when there is nothing to resolve.
    pub(super) fn resolve_pin_of(&mut self, now: Instant, server: Ipv4Addr) -> Option<Action> {
        // Without an address of our own (strict ACD still probing) no reply can reach us: the
        // bind resolves it then.
        let own = self.own_cidr()?;
        let on_link = own.contains(server);
        let target = if on_link { Some(server) } else { self.client.router() }?;
        Some(self.start_resolving(now, target))
    }

    pub(super) fn resolving_active(&self) -> bool {
        self.resolving.is_some()
    }

    pub(super) fn start_resolving(&mut self, now: Instant, target: Ipv4Addr) -> Action {
        self.resolving = Some(Resolving {
            ip: target,
            answered: None,
            conflicted: false,
            requests: 1,
            next_at: now.add_ms(RESOLVE_WINDOW_MS / u64::from(RESOLVE_REQUESTS)),
            until: now.add_ms(RESOLVE_WINDOW_MS),
        });
        self.arp_request(target)
    }

    fn arp_request(&self, target: Ipv4Addr) -> Action {
        let spa = self.own_cidr().map_or(Ipv4Addr::UNSPECIFIED, |c| c.addr);
        let req = arp::Repr { operation: arp::Operation::Request, sha: self.cfg.mac, spa, tha: Mac::ZERO, tpa: target };
        Action::Transmit {
            kind: TxKind::ArpRequest,
            frame: frame::emit_arp_frame(self.cfg.mac, Mac::BROADCAST, &req.to_bytes()),
        }
    }

    /// The resolution window's timer: the next request, or the window's end. Unanswered, the
    /// server stays applied unpinned, with `alarm unresolved`.
    pub(super) fn resolve_timeout(&mut self, now: Instant) {
        let Some(mut r) = self.resolving else { return };
        if r.requests < RESOLVE_REQUESTS {
            if now < r.next_at {
                return;
            }
            let at = r.next_at;
            r.requests += 1;
            r.next_at = at.add_ms(RESOLVE_WINDOW_MS / u64::from(RESOLVE_REQUESTS));
            self.resolving = Some(r);
            if r.answered.is_some() {
                return;
            }
            let a = self.arp_request(r.ip);
            return self.decide(
                Decision::new(None, at, Input::Timer, Verdict::Apply).server(Some(r.ip), None).actions(vec![a]),
            );
        }
        if now < r.until {
            return;
        }
        self.resolving = None;
        if r.answered.is_none() {
            let detail = format!(
                "{} did not answer {RESOLVE_REQUESTS} ARP requests in {RESOLVE_WINDOW_MS} ms; not pinned",
                r.ip
            );
            let actions = self.alarm(now, r.ip, None, "unresolved", detail, None);
            self.decide(
                Decision::new(None, r.until, Input::Timer, Verdict::Apply).server(Some(r.ip), None).actions(actions),
            );
        }
    }

    /// Whether `a` answers our resolution of `ip`: a reply to our MAC and address, from a usable
    /// MAC that is also the frame's source. Requests and gratuitous ARP never are.
    fn is_answer(&self, a: &arp::Repr, src: Mac, ip: Ipv4Addr) -> bool {
        let ours = self.own_cidr().map(|c| c.addr);
        a.operation == arp::Operation::Reply
            && a.spa == ip
            && a.tha.ct_eq(&self.cfg.mac)
            && Some(a.tpa) == ours
            && a.sha.ct_eq(&src)
            && self.usable_mac(a.sha)
    }

    pub(super) fn handle_arp(&mut self, now: Instant, frame: Option<u64>, a: &arp::Repr, src: Mac) {
        if self.client_handle_arp(now, frame, a) {
            return;
        }
        let (spa, sha) = (a.spa, a.sha);
        if spa.is_unspecified() {
            return;
        }
        // Only for the server we still resolve (known by IP only), or its gateway.
        let still_ours = |r: &Resolving| {
            if self.current_server() != Some(r.ip) {
                return true; // the gateway of an off-link server
            }
            let pinned = self.state.server.is_some_and(|s| s.ip == r.ip && s.mac.is_some());
            !pinned || r.answered.is_some()
        };
        if let Some(r) = self.resolving.filter(|r| r.ip == spa && still_ours(r) && self.is_answer(a, src, spa)) {
            self.resolution_answer(now, frame, r, sha);
            return;
        }
        let d = self.arp_evidence(now, frame, spa, sha, src);
        self.arp.learn(spa, sha, now);
        if let Some(d) = d {
            self.decide(d);
        }
    }

    fn resolution_answer(&mut self, now: Instant, frame: Option<u64>, mut r: Resolving, sha: Mac) {
        let line = |v: Verdict| Decision::new(frame, now, Input::Arp, v).server(Some(r.ip), Some(sha));
        match r.answered {
            None => {
                r.answered = Some(sha);
                self.resolving = Some(r);
                let mut actions = vec![Action::PinNeighbour { ip: r.ip, mac: sha }];
                // The target is the server (or, for an off-link server, the gateway).
                if self.current_server() == Some(r.ip) {
                    self.set_server_state(now, r.ip, Some(sha), true);
                    actions.push(Action::SetServer { ip: r.ip, mac: Some(sha) });
                }
                self.decide(line(Verdict::Apply).actions(actions));
            }
            Some(first) if !first.ct_eq(&sha) && !r.conflicted => {
                // Two MACs answer for one address: trust neither. The address stays; the pin goes.
                self.resolving = Some(Resolving { answered: Some(sha), conflicted: true, ..r });
                let mut actions = vec![Action::UnpinNeighbour { ip: r.ip }];
                if self.state.server.is_some_and(|s| s.ip == r.ip && s.mac.is_some()) {
                    self.set_server_state(now, r.ip, None, true);
                    actions.push(Action::SetServer { ip: r.ip, mac: None });
                }
                let detail = format!("{} answered by {first} and by {sha}; not pinned", r.ip);
                actions.extend(self.alarm(
                    now,
                    r.ip,
                    Some(sha),
                    reason::ADDRESS_IN_USE,
                    detail,
                    Some(HookReason::Conflict),
                ));
                self.decide(line(Verdict::Conflict).reason(reason::ADDRESS_IN_USE).actions(actions));
            }
            Some(_) => {}
        }
    }

    /// A spoofer claiming the pinned server's address: the pin holds; the alarm is coalesced.
    fn arp_evidence(
        &mut self,
        now: Instant,
        frame: Option<u64>,
        spa: Ipv4Addr,
        sha: Mac,
        src: Mac,
    ) -> Option<Decision> {
        let pinned = self.state.server.filter(|s| s.ip == spa).and_then(|s| s.mac)?;
        if pinned.ct_eq(&sha) {
            return None;
        }
        if !self.rate.allow(src, Input::Arp, now, false) {
            self.counters.drop("rate_limited");
            return None;
        }
        let detail = format!("ARP claims server {spa} is at {sha}, pinned at {pinned}");
        let actions = self.alarm(now, spa, Some(sha), reason::ADDRESS_IN_USE, detail, Some(HookReason::Conflict));
        Some(
            Decision::new(frame, now, Input::Arp, Verdict::Conflict)
                .reason(reason::ADDRESS_IN_USE)
                .server(Some(spa), Some(sha))
                .actions(actions),
        )
    }

    /// Whether FORCERENEW's final check ("we are BOUND") holds. In follow mode the system's own
    /// client holds the lease, so we count as bound.
    pub(super) fn forcerenew_bound(&self) -> bool {
        self.cfg.mode == Mode::Follow || self.client.is_bound()
    }
}
