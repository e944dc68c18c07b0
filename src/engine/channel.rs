//! The connection channel's policy (seed claims 2 and 6; DESIGN §5 `welcome`, `retry`,
//! `unreachable`, planned moves): which server to dial, when to try again, when to give up.
//!
//! Contract: the shell makes exactly one attempt per `connect` action and reports its outcome
//! (`Welcome`, `WelcomeRejected`, `ChannelFailed`). Everything else is here: the backoff starts at
//! 500 ms and doubles up to 5 s with ±25% jitter from the engine's RNG; `connect_attempts` failures
//! in a row make one `unreachable` per outage (alarm and hook coalesced), and attempts go on at
//! the capped backoff. A WELCOME from the target of a make-before-break move completes it; that
//! target becoming unreachable first abandons it and the terminal stays with the old server.
//! A terminal without an HMAC key dials nothing (it cannot sign a HELLO).

use super::core::Engine;
use super::decision::{Decision, Input, Verdict};
use super::pending::Dial;
use super::vocab::{Action, HookReason, Instant, Service};
use crate::wire::sig::VerifyKey;
use crate::wire::{ipsync, Mac};
use std::net::Ipv4Addr;

pub const BACKOFF_FIRST_MS: u64 = 500;
pub const BACKOFF_MAX_MS: u64 = 5000;
/// Jitter in percent either side of the nominal backoff.
pub const JITTER_PCT: u64 = 25;

/// Nominal backoff after `failures` failures in a row: 500 ms, 1 s, 2 s, 4 s, then 5 s.
pub fn backoff_ms(failures: u32) -> u64 {
    BACKOFF_FIRST_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(16)).min(BACKOFF_MAX_MS)
}

impl Engine {
    /// Whether this terminal can sign a HELLO: it holds an HMAC `[[key]]`. One that holds only
    /// Ed25519 public keys sends none (DESIGN §4.3): its moves complete on the authenticated
    /// ANNOUNCE, and the channel's decisions do not occur.
    pub(super) fn has_channel(&self) -> bool {
        self.cfg.keys.values().any(|k| matches!(k, VerifyKey::Hmac(_)))
    }

    /// Starts dialling `ip` afresh (a new server, a planned move, start-up): the `connect`
    /// action for the caller's decision, or none without a channel.
    pub(super) fn dial_now(&mut self, ip: Ipv4Addr) -> Option<Action> {
        if !self.has_channel() {
            return None;
        }
        self.dial =
            Some(Dial { ip, in_flight: true, failures: 0, next_at: None, outage: false, last_failure: "timeout" });
        Some(Action::Connect { ip, port: self.cfg.port })
    }

    /// Stops dialling `ip` (a planned move abandoned or replaced).
    pub(super) fn hang_up(&mut self, ip: Ipv4Addr) {
        if self.dial.is_some_and(|d| d.ip == ip) {
            self.dial = None;
        }
    }

    /// Whether an outcome for `ip` answers the attempt in flight; anything else is stale (a
    /// newer server superseded it) and is only counted.
    fn awaited(&mut self, ip: Ipv4Addr) -> bool {
        let ok = self.dial.is_some_and(|d| d.ip == ip && d.in_flight);
        if !ok {
            self.counters.drop("stale_channel_result");
        }
        ok
    }

    /// `service`: what the WELCOME itself carried (SERVICE_PORT, SERVER_NAME). Each value it
    /// carries wins over the one the ANNOUNCE gave, since the server answering is the one the
    /// VDI client is about to reach; a value it leaves out is the ANNOUNCE's. Both hooks of a
    /// completed move see the same values, so a hook that writes a viewer file on either writes
    /// the same file.
    pub(super) fn handle_welcome(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        mac: Option<Mac>,
        status: u8,
        service: Service,
    ) {
        if !self.awaited(ip) {
            return;
        }
        if status != ipsync::status::SUCCESS {
            let why = match status {
                ipsync::status::UNKNOWN_TERMINAL => "status_1",
                ipsync::status::BUSY => "status_2",
                _ => "bad_welcome",
            };
            return self.attempt_failed(now, ip, why, None);
        }
        self.dial = None;
        self.welcomed = Some((ip, now));
        match self.pending.filter(|p| p.to == ip) {
            Some(p) => {
                // B's WELCOME completes the make-before-break move.
                self.pending = None;
                let mut actions = Vec::new();
                if p.from != ip {
                    actions.push(Action::UnpinNeighbour { ip: p.from });
                }
                actions.push(Action::SetServer { ip, mac: Some(p.mac) });
                let svc = service.or(Service { port: p.service_port, name: p.server_name });
                let mut env = self.hook_env(Some(ip), Some(p.mac));
                env.service_port = svc.port;
                env.server_name = svc.name;
                self.service = Some((ip, svc));
                self.set_server_state(now, ip, Some(p.mac), false);
                let mut connected = env.clone();
                connected.old_server_ip = Some(p.from);
                env.old_server_ip = Some(p.from);
                actions.push(Action::Hook { reason: HookReason::ServerChanged, env });
                actions.push(Action::Hook { reason: HookReason::ServerConnected, env: connected });
                // server_mac is what the WELCOME carried (DESIGN §8); the pin is the announced MAC.
                self.decide(
                    Decision::new(None, now, Input::Welcome, Verdict::Apply).server(Some(ip), mac).actions(actions),
                );
            }
            None => {
                let pinned = self.state.server.filter(|s| s.ip == ip).and_then(|s| s.mac);
                let known = self.service.filter(|(s, _)| *s == ip).map(|(_, svc)| svc).unwrap_or_default();
                let svc = service.or(known);
                self.service = Some((ip, svc));
                let mut env = self.hook_env(Some(ip), pinned.or(mac));
                env.service_port = svc.port;
                env.server_name = svc.name;
                let actions = vec![Action::Hook { reason: HookReason::ServerConnected, env }];
                self.decide(
                    Decision::new(None, now, Input::Welcome, Verdict::Same).server(Some(ip), mac).actions(actions),
                );
            }
        }
    }

    pub(super) fn handle_welcome_rejected(&mut self, now: Instant, ip: Ipv4Addr, reason: &'static str) {
        if self.awaited(ip) {
            self.attempt_failed(now, ip, reason, Some(reason));
        }
    }

    pub(super) fn handle_channel_failed(&mut self, now: Instant, ip: Ipv4Addr, why: &'static str) {
        if self.awaited(ip) {
            self.attempt_failed(now, ip, why, None);
        }
    }

    /// One attempt failed: schedule the next and decide `retry`, or `unreachable` once per
    /// outage. `rejected` makes the line a `welcome` `reject` (a WELCOME that failed
    /// authentication), which still counts as a failed attempt. Callers checked that the outcome
    /// answers the attempt in flight.
    fn attempt_failed(&mut self, now: Instant, ip: Ipv4Addr, why: &'static str, rejected: Option<&'static str>) {
        let Some(mut d) = self.dial else { return };
        d.in_flight = false;
        d.failures = d.failures.saturating_add(1);
        d.last_failure = why;
        let nominal = backoff_ms(d.failures);
        let spread = nominal * JITTER_PCT / 100;
        d.next_at = Some(now.add_ms(self.rng.between(nominal - spread, nominal + spread)));
        let outage = d.failures >= self.cfg.connect_attempts.max(1) && !d.outage;
        d.outage |= outage;
        self.dial = Some(d);
        let mut actions = Vec::new();
        if outage {
            actions = self.unreachable_actions(now, ip, why);
        }
        let decision = match (rejected, outage) {
            (Some(r), _) => Decision::new(None, now, Input::Welcome, Verdict::Reject).reason(r),
            (None, true) => Decision::new(None, now, Input::Channel, Verdict::Unreachable),
            (None, false) => Decision::new(None, now, Input::Channel, Verdict::Retry).reason(why),
        };
        self.decide(decision.server(Some(ip), None).actions(actions));
    }

    /// `unreachable`: a planned move's target is abandoned (unpin it, `alarm move_failed`); the
    /// current server is kept and dialled on (`alarm server_unreachable`). Both fire the
    /// SERVER_UNREACHABLE hook with NEW_SERVER_IP = the address that failed.
    fn unreachable_actions(&mut self, now: Instant, ip: Ipv4Addr, why: &'static str) -> Vec<Action> {
        let attempts = self.cfg.connect_attempts;
        match self.pending.filter(|p| p.to == ip) {
            Some(p) => {
                self.pending = None;
                self.hang_up(ip);
                let mut actions = vec![Action::UnpinNeighbour { ip }];
                let detail = format!(
                    "move from {} to {ip} abandoned: {attempts} attempts failed ({why}); staying with {}",
                    p.from, p.from
                );
                actions.extend(self.alarm(
                    now,
                    ip,
                    Some(p.mac),
                    "move_failed",
                    detail,
                    Some(HookReason::ServerUnreachable),
                ));
                // The move took the dial from A: if A has not answered, dial it again.
                if self.welcomed.map(|(w, _)| w) != Some(p.from) {
                    actions.extend(self.dial_now(p.from));
                }
                actions
            }
            None => {
                let detail = format!("{ip}: {attempts} connection attempts failed ({why}); still trying");
                self.alarm(now, ip, None, "server_unreachable", detail, Some(HookReason::ServerUnreachable))
            }
        }
    }

    /// A retry coming due: one more `connect`, as a `timer` `retry` line.
    pub(super) fn channel_timeout(&mut self, now: Instant) {
        let Some(mut d) = self.dial else { return };
        let Some(at) = d.next_at.filter(|&t| t <= now) else { return };
        d.next_at = None;
        d.in_flight = true;
        self.dial = Some(d);
        let a = Action::Connect { ip: d.ip, port: self.cfg.port };
        self.decide(
            Decision::new(None, at, Input::Timer, Verdict::Retry)
                .reason(d.last_failure)
                .server(Some(d.ip), None)
                .actions(vec![a]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::input::{decode_frame, DecodeContext, Decoded};
    use crate::engine::state::State;
    use crate::engine::vocab::{ActionResult, Cidr, EngineConfig, HookEnv, Mode, ServerName};
    use crate::wire::frame::{Checksum, UdpFrameRepr};
    use crate::wire::sig::Signer;
    use std::collections::BTreeMap;

    const ME: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
    const SRV: Mac = Mac([2, 0, 0, 0, 0, 2]);
    const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
    const KEY: [u8; 32] = [0x42; 32];
    const T0: Instant = Instant::from_secs(1_800_000_000);

    /// A follow-mode terminal with a HELLO key (so it dials), optionally knowing server `A`.
    fn engine(initial: Option<Ipv4Addr>) -> Engine {
        let mut cfg = EngineConfig::new(Mode::Follow, ME);
        cfg.address = Some(Cidr::new(Ipv4Addr::new(10, 77, 0, 10), 24));
        cfg.keys = BTreeMap::from([(1, VerifyKey::Hmac(KEY.to_vec()))]);
        cfg.max_age_s = 0;
        cfg.initial_server = initial;
        Engine::new(cfg, State::default(), 1)
    }

    fn announce(e: &mut Engine, now: Instant, seq: u64, to: Ipv4Addr, previous: Option<Ipv4Addr>, port: Option<u16>) {
        let mut r = ipsync::Repr::new(ipsync::MessageType::Announce, 1, seq);
        r.server_ipv4 = Some(to);
        r.server_mac = Some(SRV);
        r.previous_ipv4 = previous;
        r.service_port = port;
        r.server_name = Some("vdi-1");
        let udp = UdpFrameRepr {
            src_mac: SRV,
            dst_mac: Mac::BROADCAST,
            src_ip: to,
            dst_ip: Ipv4Addr::BROADCAST,
            src_port: 47474,
            dst_port: 47474,
            ttl: 64,
        };
        let frame = udp.emit(&r.to_bytes_signed(Signer::Hmac(&KEY)));
        let ctx = DecodeContext { mac: ME, port: 47474, server_option: 224 };
        match decode_frame(Some(1), &frame, Checksum::Verify, &ctx) {
            Decoded::Inbound(i) => e.handle_frame(now, &i),
            other => assert!(matches!(other, Decoded::Inbound(_)), "an ANNOUNCE decodes: {other:?}"),
        }
    }

    fn welcome(ip: Ipv4Addr, port: Option<u16>, name: Option<&str>) -> ActionResult {
        let service = Service { port, name: name.and_then(ServerName::new) };
        ActionResult::Welcome { ip, mac: Some(SRV), status: ipsync::status::SUCCESS, service }
    }

    /// The hooks queued since the last call, with the two values under test.
    fn hooks(e: &mut Engine) -> Vec<(HookReason, Option<u16>, Option<String>)> {
        let name = |env: &HookEnv| env.server_name.map(|n| n.as_str().to_string());
        let mut out = Vec::new();
        while let Some(a) = e.poll_action() {
            if let Action::Hook { reason, env } = a {
                out.push((reason, env.service_port, name(&env)));
            }
        }
        while e.poll_decision().is_some() {}
        out
    }

    #[test]
    fn a_welcome_at_start_hands_its_service_to_server_connected() {
        // DESIGN §6: at start the terminal dials its known server with no ANNOUNCE heard, so
        // only the WELCOME (serve --service-port/--server-name) can tell the hook.
        let mut e = engine(Some(A));
        e.start(T0);
        assert_eq!(hooks(&mut e), []);
        e.handle_result(T0.add_ms(1), welcome(A, Some(3389), Some("rdp-1")));
        assert_eq!(hooks(&mut e), [(HookReason::ServerConnected, Some(3389), Some("rdp-1".into()))]);

        let mut plain = engine(Some(A));
        plain.start(T0);
        plain.handle_result(T0.add_ms(1), welcome(A, None, None));
        assert_eq!(hooks(&mut plain), [(HookReason::ServerConnected, None, None)]);
    }

    #[test]
    fn after_a_switch_a_bare_welcome_keeps_the_announced_service() {
        // Break-before-make: SERVER_CHANGED has the ANNOUNCE's values, and the WELCOME that
        // follows (carrying none) must not make SERVER_CONNECTED forget them: a hook writing a
        // viewer file on both would otherwise rewrite it with its default port.
        let mut e = engine(None);
        announce(&mut e, T0, 1, B, None, Some(5900));
        assert_eq!(hooks(&mut e), [(HookReason::ServerChanged, Some(5900), Some("vdi-1".into()))]);
        e.handle_result(T0.add_ms(1), welcome(B, None, None));
        assert_eq!(hooks(&mut e), [(HookReason::ServerConnected, Some(5900), Some("vdi-1".into()))]);
    }

    #[test]
    fn a_planned_move_takes_the_welcomes_values_over_the_announces() {
        let mut e = engine(Some(A));
        e.start(T0);
        e.handle_result(T0.add_ms(1), welcome(A, None, None));
        let _ = hooks(&mut e);
        // Make-before-break: the ANNOUNCE names A as previous, so B's WELCOME completes it.
        announce(&mut e, T0.add_ms(10), 2, B, Some(A), Some(5900));
        assert_eq!(hooks(&mut e), []);
        e.handle_result(T0.add_ms(11), welcome(B, Some(5901), None));
        let want = |r| (r, Some(5901), Some("vdi-1".to_string()));
        assert_eq!(hooks(&mut e), [want(HookReason::ServerChanged), want(HookReason::ServerConnected)]);
        assert_eq!(e.current_server(), Some(B));
    }

    #[test]
    fn backoff_starts_at_half_a_second_and_caps_at_five() {
        let v: Vec<u64> = (1..=7).map(backoff_ms).collect();
        assert_eq!(v, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff_ms(u32::MAX), 5000);
    }
}
