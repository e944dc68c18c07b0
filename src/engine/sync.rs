//! Following the cloud server: authenticated announcements, the compare/ignore/conflict/apply
//! rule, replay counters, ARP evidence and pin resolution.
//!
//! Contract: an ipsync message is checked in the order DESIGN §5 fixes (structure was checked by
//! the decoder; then key id, HMAC, sequence, semantics). A sequence is committed only after the
//! HMAC checked, and is committed whatever the semantic verdict. A server switch emits, in order:
//! pin the new pair, unpin the old address, connect, persist (`set_server`), hook.

use super::state::ServerState;
use super::Instant;
use super::{reason, Action, Decision, Engine, HookReason, Input, IpsyncMsg, Mode, Resolving, TxKind, Verdict};
use crate::wire::{arp, frame, ipsync, Mac};
use std::net::Ipv4Addr;

/// How long an ARP resolution for a pin stays open for answers (and for a second, conflicting
/// answer to show up).
const RESOLVE_WINDOW_MS: u64 = 3000;

fn usable_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

impl Engine {
    pub(super) fn handle_ipsync(&mut self, now: Instant, frame: Option<u64>, msg: &IpsyncMsg, raw: &[u8]) {
        let input = Input::Announce;
        let (sip, smac) = (msg.server_ipv4, msg.server_mac);
        let reject =
            |e: &mut Engine, r| e.decide(Decision::new(frame, now, input, Verdict::Reject).reason(r).server(sip, smac));
        let Some(key) = self.cfg.keys.get(&msg.key_id) else {
            return reject(self, reason::UNKNOWN_KEY);
        };
        if !ipsync::Packet::new_unchecked(raw).verify(key) {
            return reject(self, reason::BAD_MAC);
        }
        if let Some(&last) = self.state.sequences.get(&msg.key_id) {
            if msg.sequence <= last {
                return reject(self, reason::REPLAYED);
            }
        }
        self.state.sequences.insert(msg.key_id, msg.sequence);
        self.mark_dirty();

        if msg.msg_type != ipsync::MessageType::Announce {
            return self.decide(
                Decision::new(frame, now, input, Verdict::Ignore).reason(reason::UNEXPECTED).server(sip, smac),
            );
        }
        // The decoder proved both are present in an ANNOUNCE.
        let (Some(ip), Some(mac)) = (sip, smac) else {
            return self.decide(
                Decision::new(frame, now, input, Verdict::Ignore).reason(reason::UNEXPECTED).server(sip, smac),
            );
        };
        if !usable_unicast(ip) || !mac.is_unicast() {
            return self
                .decide(Decision::new(frame, now, input, Verdict::Ignore).reason("bad_address").server(sip, smac));
        }
        if let Some(actions) = self.conflict_actions(now, ip, Some(mac)) {
            let r = if self.is_own(ip) { reason::OWN_ADDRESS } else { reason::ADDRESS_IN_USE };
            return self.decide(
                Decision::new(frame, now, input, Verdict::Conflict).reason(r).server(sip, smac).actions(actions),
            );
        }
        let current = self.state.server;
        match (self.current_server(), current.and_then(|s| s.mac)) {
            (Some(cur), known) if cur == ip && known.map_or(true, |k| k.ct_eq(&mac)) => {
                let mut actions = Vec::new();
                if known.is_none() {
                    // Same server, first time we learn its MAC: pin it; this is no switch.
                    actions.push(Action::PinNeighbour { ip, mac });
                    actions.push(Action::SetServer { ip, mac: Some(mac) });
                    self.state.server =
                        Some(ServerState { ip, mac: Some(mac), since: current.map_or(now.secs(), |s| s.since) });
                }
                self.decide(Decision::new(frame, now, input, Verdict::Same).server(sip, smac).actions(actions))
            }
            _ => {
                let actions = self.switch_server(now, ip, Some(mac), msg.service_port);
                self.decide(Decision::new(frame, now, input, Verdict::Apply).server(sip, smac).actions(actions))
            }
        }
    }

    pub(super) fn is_own(&self, ip: Ipv4Addr) -> bool {
        self.own_cidr().is_some_and(|c| c.addr == ip)
    }

    /// `Some(actions)` when `ip` may not become the server: it is our own address, or ARP has
    /// recently shown it owned by a MAC other than `mac`.
    pub(super) fn conflict_actions(&mut self, now: Instant, ip: Ipv4Addr, mac: Option<Mac>) -> Option<Vec<Action>> {
        let (kind, detail) = if self.is_own(ip) {
            (reason::OWN_ADDRESS, format!("server address {ip} is this terminal's own address"))
        } else {
            let seen = self.arp.owner(ip, now)?;
            let m = mac?;
            if seen.ct_eq(&m) {
                return None;
            }
            (reason::ADDRESS_IN_USE, format!("{ip} announced at {m} but ARP shows it at {seen}"))
        };
        Some(self.alarm(now, ip, mac, kind, detail))
    }

    pub(super) fn alarm(
        &mut self,
        _now: Instant,
        ip: Ipv4Addr,
        mac: Option<Mac>,
        kind: &'static str,
        detail: String,
    ) -> Vec<Action> {
        let mut env = self.hook_env(Some(ip), mac);
        env.conflict_kind = Some(kind);
        vec![Action::Alarm { kind, detail }, Action::Hook { reason: HookReason::Conflict, env }]
    }

    /// The actions of a switch to `ip`, and the state change. Without a MAC, an on-link server
    /// is resolved by ARP and pinned when it answers; an off-link one is not pinned, the gateway
    /// is (DESIGN §5, "Where a pin's MAC comes from").
    pub(super) fn switch_server(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        mac: Option<Mac>,
        port: Option<u16>,
    ) -> Vec<Action> {
        let old = self.current_server();
        let mut actions = Vec::new();
        match mac {
            Some(m) => actions.push(Action::PinNeighbour { ip, mac: m }),
            None => {
                let on_link = self.own_cidr().is_some_and(|c| c.contains(ip));
                let target = if on_link { Some(ip) } else { self.client.router() };
                if let Some(t) = target {
                    if let Some(a) = self.start_resolving(now, t) {
                        actions.push(a);
                    }
                }
            }
        }
        if let Some(o) = old.filter(|&o| o != ip) {
            actions.push(Action::UnpinNeighbour { ip: o });
        }
        actions.push(Action::Connect { ip, port: self.cfg.port });
        actions.push(Action::SetServer { ip, mac });
        let mut env = self.hook_env(Some(ip), mac);
        env.service_port = port;
        actions.push(Action::Hook { reason: HookReason::ServerChanged, env });
        self.state.server = Some(ServerState { ip, mac, since: now.secs() });
        self.mark_dirty();
        actions
    }

    pub(super) fn resolving_active(&self, now: Instant) -> bool {
        self.resolving.is_some_and(|r| now < r.until)
    }

    pub(super) fn start_resolving(&mut self, now: Instant, target: Ipv4Addr) -> Option<Action> {
        self.resolving = Some(Resolving { ip: target, answered: None, until: now.add_ms(RESOLVE_WINDOW_MS) });
        let spa = self.own_cidr().map_or(Ipv4Addr::UNSPECIFIED, |c| c.addr);
        let req = arp::Repr { operation: arp::Operation::Request, sha: self.cfg.mac, spa, tha: Mac::ZERO, tpa: target };
        Some(Action::Transmit {
            kind: TxKind::ArpRequest,
            frame: frame::emit_arp_frame(self.cfg.mac, Mac::BROADCAST, &req.to_bytes()),
        })
    }

    pub(super) fn handle_arp(&mut self, now: Instant, frame: Option<u64>, a: &arp::Repr) {
        if self.client_handle_arp(now, frame, a) {
            return;
        }
        let (spa, sha) = (a.spa, a.sha);
        if spa.is_unspecified() {
            return;
        }
        let decision = self.arp_evidence(now, frame, spa, sha);
        self.arp.learn(spa, sha, now);
        if let Some(d) = decision {
            self.decide(d);
        }
    }

    fn arp_evidence(&mut self, now: Instant, frame: Option<u64>, spa: Ipv4Addr, sha: Mac) -> Option<Decision> {
        if self.resolving.is_some_and(|r| now >= r.until) {
            self.resolving = None;
        }
        if let Some(mut r) = self.resolving.filter(|r| r.ip == spa) {
            match r.answered {
                None => {
                    r.answered = Some(sha);
                    self.resolving = Some(r);
                    let mut actions = vec![Action::PinNeighbour { ip: spa, mac: sha }];
                    // The target is the server (or, for an off-link server, the gateway).
                    if self.current_server() == Some(spa) {
                        let since = self.state.server.map_or(now.secs(), |s| s.since);
                        self.state.server = Some(ServerState { ip: spa, mac: Some(sha), since });
                        actions.push(Action::SetServer { ip: spa, mac: Some(sha) });
                        self.mark_dirty();
                    }
                    return Some(
                        Decision::new(frame, now, Input::Arp, Verdict::Apply)
                            .server(Some(spa), Some(sha))
                            .actions(actions),
                    );
                }
                Some(first) if !first.ct_eq(&sha) => {
                    let detail = format!("{spa} answered by {first} and by {sha}");
                    let actions = self.alarm(now, spa, Some(sha), reason::ADDRESS_IN_USE, detail);
                    return Some(
                        Decision::new(frame, now, Input::Arp, Verdict::Conflict)
                            .reason(reason::ADDRESS_IN_USE)
                            .server(Some(spa), Some(sha))
                            .actions(actions),
                    );
                }
                Some(_) => return None,
            }
        }
        // A spoofer claiming the pinned server's address: the pin holds; raise the alarm.
        let pinned = self.state.server.filter(|s| s.ip == spa).and_then(|s| s.mac)?;
        if pinned.ct_eq(&sha) || !self.rate.allow(sha, now) {
            return None;
        }
        let detail = format!("ARP claims server {spa} is at {sha}, pinned at {pinned}");
        let actions = self.alarm(now, spa, Some(sha), reason::ADDRESS_IN_USE, detail);
        Some(
            Decision::new(frame, now, Input::Arp, Verdict::Conflict)
                .reason(reason::ADDRESS_IN_USE)
                .server(Some(spa), Some(sha))
                .actions(actions),
        )
    }

    pub(super) fn handle_welcome(&mut self, now: Instant, ip: Ipv4Addr, mac: Option<Mac>, status: u8) {
        if self.current_server() != Some(ip) {
            return;
        }
        if status == ipsync::status::SUCCESS {
            self.welcomed = Some((ip, now));
            let mac = mac.or(self.state.server.filter(|s| s.ip == ip).and_then(|s| s.mac));
            let env = self.hook_env(Some(ip), mac);
            let actions = vec![Action::Hook { reason: HookReason::ServerConnected, env }];
            self.decide(Decision::new(None, now, Input::Welcome, Verdict::Same).server(Some(ip), mac).actions(actions));
        } else {
            self.decide(
                Decision::new(None, now, Input::Welcome, Verdict::Ignore).reason("refused").server(Some(ip), mac),
            );
        }
    }

    /// Whether FORCERENEW's final check ("we are BOUND") holds. In follow mode the system's own
    /// client holds the lease, so we count as bound.
    pub(super) fn forcerenew_bound(&self) -> bool {
        self.cfg.mode == Mode::Follow || self.client.is_bound()
    }
}
