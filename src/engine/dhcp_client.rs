//! The DHCPv4 client (RFC 2131 §4.4) and FORCERENEW handling (RFC 3203, RFC 3118, RFC 6704).
//!
//! Contract: states are an enum whose variants carry their own data and absolute deadlines.
//! Our own transmissions and frames the terminal sent (seen in a capture) arm the same state, so
//! replay of a real client's capture walks the same machine. FORCERENEW is accepted only after
//! the checks of DESIGN §4.2, in that order: not_for_us, bad_source, authentication, replay,
//! wrong_state; its HMAC is checked only once the key is known and the sender's lane has
//! verification budget left (limits.rs). Any xid is accepted: FORCERENEW is unsolicited.

use super::acd::{self, Acd, Step};
use super::core::Engine;
use super::decision::{reason, Decision, Input, Verdict};
use super::input::input_of;
use super::input::DhcpMsg;
use super::lease::{Client, Lease};
use super::limits::Check;
use super::pending::FollowRequest;
use super::vocab::{reserved_address, AcdMode, Action, Cidr, HookEnv, HookReason, Instant, Mode, TxKind};
use crate::wire::auth::Scheme;
use crate::wire::dhcpv4::{self, MessageType};
use crate::wire::frame::{self, UdpFrameRepr};
use crate::wire::{arp, Mac};
use std::net::Ipv4Addr;

/// RFC 2131 §4.1: first retransmission after 4 s, doubling to 64 s, each ±1 s.
const RETRANSMIT_FIRST_MS: u64 = 4000;
const RETRANSMIT_MAX_MS: u64 = 64_000;
/// Give up REQUESTING / REBOOTING after this many retransmissions and start over.
const REQUEST_ATTEMPTS: u32 = 4;
/// RFC 2131 §4.4.5: in RENEWING/REBINDING wait half the remaining time, at least 60 s.
const RENEW_MIN_RETRANSMIT_MS: u64 = 60_000;
const DEFAULT_LEASE_SECS: u32 = 3600;
const MIN_LEASE_SECS: u32 = 20;
/// RFC 2131 §3.1 (5): the least wait after a DHCPDECLINE.
const DECLINE_WAIT_MS: u64 = 10_000;
/// A renewal a FORCERENEW started: the server has just shown it is there and is waiting for
/// this REQUEST, so a lost REQUEST or ACK is retried within a quarter second, six times (1.5 s),
/// before the §4.1 schedule takes over. RFC 2131 §4.1 leaves the delay to the network's
/// characteristics; a LAN's round trip is well under a millisecond. With the 4 s first
/// retransmit, the tenth of a fleet whose REQUEST or ACK was lost (5% loss each way) waited
/// 3–5 s and more: the fleet simulation (benches/fleet.rs) took 28–31 s to move all of 10,000
/// terminals, and takes under 2.1 s with this schedule. The load stays bounded: six extra small
/// frames per terminal at most, and only from terminals whose exchange did not complete.
const FORCED_FAST_MS: u64 = 250;
const FORCED_FAST_RETRANSMITS: u32 = 6;
/// At most one FORCERENEW-driven renewal per this interval.
const FORCERENEW_INTERVAL_MS: u64 = 1000;
const DEFAULT_PREFIX: u8 = 24;

fn backoff_ms(attempt: u32) -> u64 {
    RETRANSMIT_FIRST_MS.saturating_mul(1 << attempt.min(4)).min(RETRANSMIT_MAX_MS)
}

impl Engine {
    fn jittered(&mut self, now: Instant, attempt: u32) -> Instant {
        let base = backoff_ms(attempt);
        now.add_ms(self.rng.between(base - 1000, base + 1000))
    }

    fn renew_retransmit(&mut self, now: Instant, until: Instant) -> Instant {
        let half_ms = until.saturating_sub(now) / 2000;
        now.add_ms(half_ms.max(RENEW_MIN_RETRANSMIT_MS))
    }

    /// When a FORCERENEW-started renewal sends its REQUEST again: after [`FORCED_FAST_MS`]
    /// ±25% for the first [`FORCED_FAST_RETRANSMITS`], then the RFC 2131 §4.1 schedule.
    fn forced_retransmit(&mut self, now: Instant, attempt: u32) -> Instant {
        if attempt < FORCED_FAST_RETRANSMITS {
            now.add_ms(self.rng.between(FORCED_FAST_MS * 3 / 4, FORCED_FAST_MS * 5 / 4))
        } else {
            self.jittered(now, attempt - FORCED_FAST_RETRANSMITS)
        }
    }

    /// RENEWING: (re)send the unicast REQUEST to the server that leased to us. `forced`: the
    /// attempt of a renewal a FORCERENEW started.
    fn enter_renewing(&mut self, now: Instant, xid: u32, lease: Lease, forced: Option<u32>) -> Action {
        let retransmit_at = match forced {
            Some(attempt) => self.forced_retransmit(now, attempt).min(lease.t2_at),
            None => self.renew_retransmit(now, lease.t2_at),
        };
        self.client = Client::Renewing { xid, lease, retransmit_at, forced };
        self.tx_request(xid, Some(lease.cidr.addr), None, None, Some((lease.server_id, lease.server_mac)))
    }

    /// Live start in dhcp mode: INIT-REBOOT with a remembered lease (a `timer` `renew` line),
    /// else DISCOVER (a `timer` `restart` line).
    pub(super) fn client_start(&mut self, now: Instant) {
        let (verdict, action) = match self.client.clone() {
            Client::Bound { lease, .. } if now < lease.expires_at => {
                let xid = self.rng.next_u32();
                self.client = Client::Rebooting {
                    xid,
                    requested: lease.cidr.addr,
                    attempt: 0,
                    retransmit_at: self.jittered(now, 0),
                };
                (Verdict::Renew, self.tx_request(xid, None, Some(lease.cidr.addr), None, None))
            }
            _ => {
                // A lease that ran out while we were down: its address must not stay in use.
                let mut actions = Vec::new();
                if let Some(c) = self.configured.take() {
                    self.state.lease = None;
                    self.mark_dirty();
                    actions.push(Action::DelAddress { cidr: c });
                    actions.push(Action::Hook { reason: HookReason::LeaseLost, env: self.lease_env(None, Some(c)) });
                }
                actions.insert(0, self.begin_discover(now));
                let d = Decision::new(None, now, Input::Timer, Verdict::Restart).actions(actions);
                return self.decide(d);
            }
        };
        self.decide(Decision::new(None, now, Input::Timer, verdict).actions(vec![action]));
    }

    fn begin_discover(&mut self, now: Instant) -> Action {
        let xid = self.rng.next_u32();
        self.client = Client::Selecting { xid, attempt: 0, retransmit_at: self.jittered(now, 0) };
        self.tx(MessageType::Discover, xid, Ipv4Addr::UNSPECIFIED, None, None, None)
    }

    fn tx_request(
        &mut self,
        xid: u32,
        ciaddr: Option<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
        unicast: Option<(Ipv4Addr, Mac)>,
    ) -> Action {
        self.tx(MessageType::Request, xid, ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED), requested, server_id, unicast)
    }

    /// Builds one client message as a whole Ethernet frame.
    fn tx(
        &mut self,
        t: MessageType,
        xid: u32,
        ciaddr: Ipv4Addr,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
        unicast: Option<(Ipv4Addr, Mac)>,
    ) -> Action {
        let mac = self.cfg.mac;
        let mut client_id = [0u8; 7];
        client_id[0] = 1;
        client_id[1..].copy_from_slice(&mac.0);
        let prl_buf = [1, 3, 6, 43, 51, 54, 58, 59, self.cfg.server_option];
        let prl: &[u8] = if self.cfg.server_option == 0 { &prl_buf[..8] } else { &prl_buf };
        let asks = matches!(t, MessageType::Discover | MessageType::Request);
        let repr = dhcpv4::Repr {
            op: 1,
            ciaddr,
            client_identifier: Some(&client_id),
            server_identifier: server_id,
            requested_ip: requested,
            parameter_request_list: if asks { Some(prl) } else { None },
            max_size: if asks { Some(1500) } else { None },
            forcerenew_nonce_capable: asks,
            ..dhcpv4::Repr::new(t, xid, &mac.0)
        };
        let (src_ip, dst_ip, dst_mac) = match unicast {
            Some((ip, m)) => (ciaddr, ip, m),
            // A broadcast with ciaddr set (REBINDING) comes from that address; the rest from 0.
            None => (ciaddr, Ipv4Addr::BROADCAST, Mac::BROADCAST),
        };
        let udp = UdpFrameRepr {
            src_mac: mac,
            dst_mac,
            src_ip,
            dst_ip,
            src_port: dhcpv4::CLIENT_PORT,
            dst_port: dhcpv4::SERVER_PORT,
            ttl: 64,
        };
        let kind = match t {
            MessageType::Discover => TxKind::Discover,
            MessageType::Decline => TxKind::Decline,
            MessageType::Release => TxKind::Release,
            _ => TxKind::Request,
        };
        Action::Transmit { kind, frame: udp.emit(&repr.to_bytes()) }
    }

    fn tx_arp(&self, kind: TxKind, a: arp::Repr) -> Action {
        Action::Transmit { kind, frame: frame::emit_arp_frame(self.cfg.mac, Mac::BROADCAST, &a.to_bytes()) }
    }

    /// The cloud-server address a DHCP reply carries (DESIGN §5).
    fn cloud_server_of(&self, msg: &DhcpMsg) -> Option<Ipv4Addr> {
        if self.cfg.server_option == 0 {
            msg.server_id
        } else {
            msg.cloud_server
        }
    }

    pub(super) fn handle_dhcp(&mut self, now: Instant, frame: Option<u64>, msg: &DhcpMsg, raw: &[u8], src: Mac) {
        let input = input_of(msg);
        if input == Input::ForceRenew {
            return self.handle_forcerenew(now, frame, msg, raw, src);
        }
        let server_ip = if input == Input::Dhcp { None } else { self.cloud_server_of(msg) };
        let ignore = |e: &mut Engine, r| {
            e.decide(Decision::new(frame, now, input, Verdict::Ignore).reason(r).server(server_ip, None))
        };
        if input == Input::Dhcp || msg.op != 2 {
            return ignore(self, reason::UNEXPECTED);
        }
        if !msg.chaddr.is_some_and(|m| m.ct_eq(&self.cfg.mac)) {
            return ignore(self, reason::NOT_FOR_US);
        }
        if self.cfg.mode == Mode::Follow {
            if matches!(input, Input::Ack | Input::Nak) && self.answers_follow_request(now, msg) {
                // One answer per REQUEST: the system client takes the first, and so do we.
                self.follow_request = None;
                if input == Input::Ack {
                    return self.handle_follow_ack(now, frame, msg);
                }
            }
            return ignore(self, reason::UNEXPECTED);
        }
        if self.client.xid() != Some(msg.xid) {
            return ignore(self, reason::UNEXPECTED);
        }
        // DESIGN §5: an OFFER or ACK whose yiaddr is unusable is never bound.
        if matches!(input, Input::Offer | Input::Ack) && reserved_address(msg.yiaddr) {
            return ignore(self, reason::BAD_ADDRESS);
        }
        match (input, self.client.clone()) {
            (Input::Offer, Client::Selecting { xid, .. }) => {
                let Some(server_id) = msg.server_id else {
                    return ignore(self, reason::UNEXPECTED);
                };
                let requested = msg.yiaddr;
                let retransmit_at = self.jittered(now, 0);
                self.client = Client::Requesting { xid, requested, server_id, attempt: 0, retransmit_at };
                let a = self.tx_request(xid, None, Some(requested), Some(server_id), None);
                self.decide(Decision::new(frame, now, input, Verdict::Select).server(server_ip, None).actions(vec![a]));
            }
            (Input::Offer, _) => ignore(self, reason::UNEXPECTED),
            // RFC 2131: SELECTING takes only OFFERs; REQUESTING only the selected server's ACK.
            (Input::Ack, Client::Selecting { .. }) => ignore(self, reason::UNEXPECTED),
            (Input::Ack, Client::Requesting { server_id, .. }) if msg.server_id.is_some_and(|s| s != server_id) => {
                ignore(self, reason::UNEXPECTED)
            }
            (Input::Ack, _) => self.handle_ack(now, frame, msg, src),
            (Input::Nak, Client::Selecting { .. }) => ignore(self, reason::UNEXPECTED),
            (Input::Nak, _) => {
                // The DISCOVER goes out first: it needs no address, and removing one (a netlink
                // round trip that also flushes routes) must not delay the new lease.
                let mut actions = vec![self.begin_discover(now)];
                let old = self.configured.take();
                if let Some(c) = old {
                    actions.push(Action::DelAddress { cidr: c });
                }
                self.lost = old;
                self.state.lease = None;
                self.mark_dirty();
                if old.is_some() {
                    actions.push(Action::Hook { reason: HookReason::LeaseLost, env: self.lease_env(None, old) });
                }
                self.decide(
                    Decision::new(frame, now, input, Verdict::Restart).server(server_ip, None).actions(actions),
                );
            }
            _ => ignore(self, reason::UNEXPECTED),
        }
    }

    fn lease_env(&self, new: Option<Cidr>, old: Option<Cidr>) -> HookEnv {
        HookEnv {
            own_ip: new.map(|c| c.addr),
            old_own_ip: old.map(|c| c.addr),
            old_server_ip: self.current_server(),
            new_server_ip: self.current_server(),
            ..Default::default()
        }
    }

    fn handle_ack(&mut self, now: Instant, frame: Option<u64>, msg: &DhcpMsg, server_mac: Mac) {
        let input = Input::Ack;
        let server_ip = self.cloud_server_of(msg);
        let Some(server_id) = msg.server_id.or(self.client.lease().map(|l| l.server_id)) else {
            return self.decide(
                Decision::new(frame, now, input, Verdict::Ignore).reason(reason::UNEXPECTED).server(server_ip, None),
            );
        };
        // A lease of a few seconds would make every ACK a bind-and-lose with hooks; dhcpcd too
        // treats anything under MIN_LEASE_SECS as that.
        let lease_secs = msg.lease_time.unwrap_or(DEFAULT_LEASE_SECS).max(MIN_LEASE_SECS);
        let l = u64::from(lease_secs);
        let t1 = msg.renewal_time.map_or(l / 2, u64::from).min(l);
        let t2 = msg.rebinding_time.map_or(l * 7 / 8, u64::from).clamp(t1, l);
        let cidr = match msg.subnet_mask {
            Some(m) => Cidr::from_mask(msg.yiaddr, m),
            None => Cidr::new(msg.yiaddr, DEFAULT_PREFIX),
        };
        // DESIGN §5: not the network or broadcast address of its own subnet either.
        if !self.usable_address_in(msg.yiaddr, Some(cidr)) {
            return self.decide(
                Decision::new(frame, now, input, Verdict::Ignore).reason(reason::BAD_ADDRESS).server(server_ip, None),
            );
        }
        let lease = Lease {
            cidr,
            server_id,
            server_mac,
            router: msg.router,
            acquired: now,
            t1_at: now.add_secs(t1),
            t2_at: now.add_secs(t2),
            expires_at: now.add_secs(l),
        };
        // RFC 6704: a reconfigure key in the ACK we bind with is the key for FORCERENEW.
        if let Some(a) = msg.auth {
            if let Scheme::ReconfigureKey { key } = a.scheme {
                if self.state.nonce() != Some(key) {
                    self.state.set_nonce(Some(key));
                    self.state.dhcp_replay.remove("rkap");
                }
            }
        }
        let before = self.client.clone();
        let mut actions = Vec::new();
        let mut hook = None;
        let mut old_own = before.address();
        match before {
            Client::Renewing { lease: old, .. } | Client::Rebinding { lease: old, .. } if old.cidr == cidr => {
                self.client = Client::Bound { lease, announce_at: None, probing: None };
                if old.router != lease.router {
                    actions.push(Action::SetAddress { cidr, router: lease.router });
                }
                // The kernel may have dropped pins while we could not reach the server.
                if matches!(before, Client::Rebinding { .. }) {
                    actions.extend(self.pins());
                }
                self.state.lease = Some(lease.to_state(self.wall));
                hook = Some(HookReason::LeaseRenewed);
            }
            // A new or changed address is probed first; one we had stays until the new is bound.
            _ if self.cfg.acd == AcdMode::Strict => {
                let acd = Acd::new(now, cidr.addr, &mut self.rng);
                self.client = Client::Probing { lease, acd };
            }
            // Optimistic: use it at once and probe in parallel; a conflict meanwhile withdraws it.
            _ => {
                let acd = Acd::new(now, cidr.addr, &mut self.rng);
                self.client = Client::Bound { lease, announce_at: None, probing: Some(acd) };
                let (bind, h, old) = self.bind(lease);
                actions.extend(bind);
                hook = Some(h);
                old_own = old;
            }
        }
        self.mark_dirty();
        // An unusable server address in the ACK is ignored; the lease still applies. Without
        // any address yet (strict ACD probing the first one) it waits for the bind: nothing
        // could be dialled or resolved before, and the hooks would see no OWN_IP.
        self.deferred_server = None;
        if let Some(b) = server_ip.filter(|&b| self.usable_address_in(b, Some(cidr))) {
            if self.own_cidr().is_some() {
                actions.extend(self.dhcp_server_address(now, b, cidr).2);
            } else {
                self.deferred_server = Some(b);
            }
        }
        if let Some(h) = hook {
            actions.push(Action::Hook { reason: h, env: self.lease_env(Some(cidr), old_own) });
        }
        self.decide(Decision::new(frame, now, input, Verdict::Lease).server(server_ip, None).actions(actions));
    }

    /// Puts a bound lease into the kernel: the address (with its default route), then the old
    /// address out (promote_secondaries keeps the new one), then every pin again, because the
    /// kernel deletes permanent entries with the last address. The hook says whether our
    /// address is new or changed, and the old address goes to OLD_OWN_IP. The client must
    /// already be in its bound state.
    fn bind(&mut self, lease: Lease) -> (Vec<Action>, HookReason, Option<Cidr>) {
        let replaced = self.configured.filter(|o| *o != lease.cidr);
        let mut actions = vec![Action::SetAddress { cidr: lease.cidr, router: lease.router }];
        if let Some(o) = replaced {
            actions.push(Action::DelAddress { cidr: o });
        }
        // A server-driven re-address goes through a NAK (dnsmasq and Kea NAK the old address):
        // the new bind is then still a change from the address the NAK took.
        let old = replaced.or(self.lost.take()).filter(|o| o.addr != lease.cidr.addr);
        self.configured = Some(lease.cidr);
        self.state.lease = Some(lease.to_state(self.wall));
        self.mark_dirty();
        actions.extend(self.pins());
        (actions, if old.is_some() { HookReason::LeaseChanged } else { HookReason::LeaseBound }, old)
    }

    /// A cloud-server address from a DHCP reply (DESIGN §5): judged like an ANNOUNCE's address
    /// known only by IP. `own` is the lease it came with. Returns the verdict it amounts to
    /// (with its reason) and the actions.
    fn dhcp_server_address(
        &mut self,
        now: Instant,
        b: Ipv4Addr,
        own: Cidr,
    ) -> (Verdict, Option<&'static str>, Vec<Action>) {
        let mut actions = Vec::new();
        if b == own.addr {
            let detail = format!("DHCP hands out server address {b}, which is our own address");
            actions.extend(self.alarm(now, b, None, reason::OWN_ADDRESS, detail, Some(HookReason::Conflict)));
            return (Verdict::Conflict, Some(reason::OWN_ADDRESS), actions);
        }
        if self.pending.is_some_and(|p| p.to == b) {
            // Already moving there with a signed MAC: B's WELCOME completes it.
            return (Verdict::Same, None, actions);
        }
        if self.current_server() != Some(b) {
            if let Some(p) = self.pending.take() {
                self.hang_up(p.to);
                actions.push(Action::UnpinNeighbour { ip: p.to });
            }
            actions.extend(self.switch_server(now, b, None, None, None));
            return (Verdict::Apply, None, actions);
        }
        if self.state.server.map_or(true, |s| s.mac.is_none())
            && !self.resolving_active()
            && own.contains(b)
            && self.own_cidr().is_some()
        {
            // Same server, still unpinned (known only by IP): resolve it so it can be pinned.
            actions.push(self.start_resolving(now, b));
        }
        (Verdict::Same, None, actions)
    }

    /// Follow mode: an ACK answering the system client's REQUEST moves the server (DESIGN §5).
    fn handle_follow_ack(&mut self, now: Instant, frame: Option<u64>, msg: &DhcpMsg) {
        let input = Input::Ack;
        let server_ip = self.cloud_server_of(msg);
        let line = |v| Decision::new(frame, now, input, v).server(server_ip, None);
        let Some(b) = server_ip else {
            return self.decide(line(Verdict::Ignore).reason(reason::UNEXPECTED));
        };
        if !self.usable_address(b) {
            return self.decide(line(Verdict::Ignore).reason(reason::BAD_ADDRESS));
        }
        let Some(own) = self.own_cidr() else {
            return self.decide(line(Verdict::Ignore).reason(reason::UNEXPECTED));
        };
        let (verdict, why, actions) = self.dhcp_server_address(now, b, own);
        let mut d = line(verdict).actions(actions);
        if let Some(r) = why {
            d = d.reason(r);
        }
        self.decide(d);
    }

    /// Whether `msg` answers the system client's last REQUEST: same xid, in time, and from the
    /// server that REQUEST named, when it named one.
    fn answers_follow_request(&self, now: Instant, msg: &DhcpMsg) -> bool {
        self.follow_request.is_some_and(|r| {
            r.xid == msg.xid && now <= r.until && r.server.map_or(true, |s| msg.src_ip == s || msg.server_id == Some(s))
        })
    }

    /// A clean stop with `release_on_stop`: DHCPRELEASE to the server, and the address removed
    /// (RFC 2131 §4.4.6). One decision; nothing else is scheduled after it.
    pub(super) fn client_stop(&mut self, now: Instant) {
        if self.cfg.mode != Mode::Dhcp || !self.cfg.release_on_stop {
            return;
        }
        let Some(lease) = self.client.lease().copied() else { return };
        let xid = self.rng.next_u32();
        let unicast = Some((lease.server_id, lease.server_mac));
        let mut actions =
            vec![self.tx(MessageType::Release, xid, lease.cidr.addr, None, Some(lease.server_id), unicast)];
        if let Some(c) = self.configured.take() {
            actions.push(Action::DelAddress { cidr: c });
        }
        self.client = Client::Init;
        self.state.lease = None;
        self.mark_dirty();
        actions.push(Action::Hook { reason: HookReason::LeaseLost, env: self.lease_env(None, Some(lease.cidr)) });
        self.decide(Decision::new(None, now, Input::Timer, Verdict::Lease).actions(actions));
    }

    fn handle_forcerenew(&mut self, now: Instant, frame: Option<u64>, msg: &DhcpMsg, raw: &[u8], src: Mac) {
        let input = Input::ForceRenew;
        let reject = |e: &mut Engine, r| e.decide(Decision::new(frame, now, input, Verdict::Reject).reason(r));
        if msg.op != 2 || !msg.chaddr.is_some_and(|m| m.ct_eq(&self.cfg.mac)) {
            return reject(self, reason::NOT_FOR_US);
        }
        if msg.src_ip.is_unspecified() || msg.src_ip.is_broadcast() {
            return reject(self, reason::BAD_SOURCE);
        }
        let (counter_key, replay) = match (msg.auth, &msg.auth_mac) {
            (Some(a), Some(range)) => {
                let key: Vec<u8> = match a.scheme {
                    Scheme::Delayed { secret_id, .. } => match self.cfg.dhcp_keys.get(&secret_id) {
                        Some(k) => k.clone(),
                        None => return reject(self, reason::UNKNOWN_KEY),
                    },
                    Scheme::ReconfigureHmac { .. } => match self.state.nonce() {
                        Some(n) => n.to_vec(),
                        None => return reject(self, reason::UNKNOWN_KEY),
                    },
                    Scheme::ReconfigureKey { .. } => return reject(self, reason::UNAUTHENTICATED),
                };
                // The HMAC is the costly check: paid from the sender's lane (limits.rs); over
                // budget the frame is dropped and counted before it, with no line.
                if !self.verify.take(self.forcerenew_lane(src), Check::ForceRenew, now) {
                    return self.counters.drop("verify_budget");
                }
                if !crate::wire::auth::verify_dhcp_mac(&key, raw, range.clone()) {
                    return reject(self, reason::BAD_MAC);
                }
                let ck = match a.scheme {
                    Scheme::Delayed { secret_id, .. } => format!("delayed:{secret_id}"),
                    _ => "rkap".to_string(),
                };
                (Some(ck), a.replay)
            }
            _ if self.cfg.allow_unauthenticated && msg.auth.is_none() && !msg.auth_invalid => {
                log::warn!("ACCEPTING UNAUTHENTICATED FORCERENEW from {} (allow_unauthenticated = true)", msg.src_ip);
                (None, 0)
            }
            _ => return reject(self, reason::UNAUTHENTICATED),
        };
        if let Some(ck) = &counter_key {
            if self.state.dhcp_replay.get(ck).is_some_and(|&last| replay <= last) {
                return reject(self, reason::REPLAYED);
            }
        }
        if !self.forcerenew_bound() {
            return reject(self, reason::WRONG_STATE);
        }
        // However many authentic FORCERENEWs arrive, at most one renewal per second reaches the
        // DHCP server. Over the limit: no line, counted, and the counter is not committed.
        if self.renewed_at.is_some_and(|t| now.saturating_sub(t) < FORCERENEW_INTERVAL_MS * 1000) {
            self.counters.drop("rate_limited");
            return;
        }
        self.renewed_at = Some(now);
        if let Some(ck) = counter_key {
            self.state.dhcp_replay.insert(ck, replay);
            self.mark_dirty();
        }
        let mut actions = Vec::new();
        if self.cfg.mode == Mode::Dhcp {
            if let Client::Bound { lease, .. } = self.client.clone() {
                let xid = self.rng.next_u32();
                actions.push(self.enter_renewing(now, xid, lease, Some(0)));
            }
        }
        let env = self.hook_env(None, None);
        actions.push(Action::Hook { reason: HookReason::ForceRenew, env });
        self.decide(Decision::new(frame, now, input, Verdict::Renew).actions(actions));
    }

    /// A frame the terminal itself sent: it arms the state exactly as if we had sent it.
    pub(super) fn handle_own_dhcp(&mut self, now: Instant, msg: &DhcpMsg) {
        if msg.op != 1 {
            return;
        }
        if self.cfg.mode == Mode::Follow {
            // The system client's REQUEST: its ACK may carry a new server (DESIGN §5).
            if msg.msg_type == MessageType::Request {
                let named = msg.server_id.or(Some(msg.dst_ip).filter(|d| !d.is_broadcast() && !d.is_unspecified()));
                let until = now.add_ms(super::pending::FOLLOW_REQUEST_MS);
                self.follow_request = Some(FollowRequest { xid: msg.xid, server: named, until });
            }
            return;
        }
        let xid = msg.xid;
        let retransmit_at = self.jittered(now, 0);
        self.client = match (msg.msg_type, self.client.clone()) {
            (MessageType::Discover, _) => Client::Selecting { xid, attempt: 0, retransmit_at },
            (MessageType::Request, c) if !msg.ciaddr.is_unspecified() => match c.lease().copied() {
                Some(lease) if msg.dst_ip.is_broadcast() => {
                    Client::Rebinding { xid, lease, retransmit_at: self.renew_retransmit(now, lease.expires_at) }
                }
                Some(lease) => Client::Renewing {
                    xid,
                    lease,
                    retransmit_at: self.renew_retransmit(now, lease.t2_at),
                    forced: None,
                },
                None => Client::Rebooting { xid, requested: msg.ciaddr, attempt: 0, retransmit_at },
            },
            (MessageType::Request, _) => match (msg.requested_ip, msg.server_id) {
                (Some(requested), Some(server_id)) => {
                    Client::Requesting { xid, requested, server_id, attempt: 0, retransmit_at }
                }
                (Some(requested), None) => Client::Rebooting { xid, requested, attempt: 0, retransmit_at },
                _ => return,
            },
            (MessageType::Decline | MessageType::Release, _) => {
                self.state.lease = None;
                self.mark_dirty();
                Client::Init
            }
            _ => return,
        };
    }

    pub(super) fn client_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.client.deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        let t = Input::Timer;
        match self.client.clone() {
            Client::Init => {}
            Client::Selecting { attempt, .. } => {
                let a = self.begin_discover(now);
                if let Client::Selecting { attempt: at, .. } = &mut self.client {
                    *at = attempt + 1;
                }
                let next = self.jittered(now, attempt + 1);
                if let Client::Selecting { retransmit_at, .. } = &mut self.client {
                    *retransmit_at = next;
                }
                self.decide(Decision::new(None, deadline, t, Verdict::Restart).actions(vec![a]));
            }
            Client::Requesting { xid, requested, server_id, attempt, .. } if attempt + 1 < REQUEST_ATTEMPTS => {
                let retransmit_at = self.jittered(now, attempt + 1);
                self.client = Client::Requesting { xid, requested, server_id, attempt: attempt + 1, retransmit_at };
                let a = self.tx_request(xid, None, Some(requested), Some(server_id), None);
                self.decide(Decision::new(None, deadline, t, Verdict::Renew).actions(vec![a]));
            }
            Client::Rebooting { xid, requested, attempt, .. } if attempt + 1 < REQUEST_ATTEMPTS => {
                let retransmit_at = self.jittered(now, attempt + 1);
                self.client = Client::Rebooting { xid, requested, attempt: attempt + 1, retransmit_at };
                let a = self.tx_request(xid, None, Some(requested), None, None);
                self.decide(Decision::new(None, deadline, t, Verdict::Renew).actions(vec![a]));
            }
            // RFC 2131 §3.2: with neither ACK nor NAK the client may keep the lease it had; its
            // own T1, T2 and expiry then run (and remove the address when it runs out).
            Client::Rebooting { requested, .. }
                if self
                    .state
                    .lease
                    .is_some_and(|l| l.address.addr == requested && self.wall.instant(l.expires) > now) =>
            {
                self.client = Client::restore(&self.state, self.wall);
                self.decide(Decision::new(None, deadline, t, Verdict::Lease));
            }
            Client::Requesting { .. } | Client::Rebooting { .. } => {
                let a = self.begin_discover(now);
                self.decide(Decision::new(None, deadline, t, Verdict::Restart).actions(vec![a]));
            }
            Client::Probing { lease, mut acd } => match acd.on_timeout(now, &mut self.rng) {
                Step::Probe => {
                    self.client = Client::Probing { lease, acd };
                    let a = self.tx_arp(TxKind::ArpProbe, arp::Repr::probe(self.cfg.mac, lease.cidr.addr));
                    self.decide(Decision::new(None, deadline, t, Verdict::Lease).actions(vec![a]));
                }
                Step::Bind => {
                    self.client = Client::Bound {
                        lease,
                        announce_at: Some(now.add_ms(acd::ANNOUNCE_INTERVAL_MS)),
                        probing: None,
                    };
                    self.acd_conflicts = 0;
                    let (mut actions, hook, old) = self.bind(lease);
                    actions
                        .push(self.tx_arp(TxKind::ArpAnnounce, arp::Repr::announcement(self.cfg.mac, lease.cidr.addr)));
                    if let Some(b) = self.deferred_server.take() {
                        actions.extend(self.dhcp_server_address(now, b, lease.cidr).2);
                    } else if let Some(s) =
                        self.state.server.filter(|s| s.mac.is_none()).filter(|_| !self.resolving_active())
                    {
                        // A server known only by IP is pinned now that we can ARP.
                        actions.extend(self.resolve_pin_of(now, s.ip));
                    }
                    actions.push(Action::Hook { reason: hook, env: self.lease_env(Some(lease.cidr), old) });
                    self.decide(Decision::new(None, deadline, t, Verdict::Lease).actions(actions));
                }
            },
            // Optimistic ACD: the probes that run while the address is already in use; when
            // they are done, the first announcement.
            Client::Bound { lease, probing: Some(mut acd), .. } if now >= acd.next_at && now < lease.t1_at => {
                let a = match acd.on_timeout(now, &mut self.rng) {
                    Step::Probe => {
                        self.client = Client::Bound { lease, announce_at: None, probing: Some(acd) };
                        self.tx_arp(TxKind::ArpProbe, arp::Repr::probe(self.cfg.mac, lease.cidr.addr))
                    }
                    Step::Bind => {
                        // The probes found no one: only now does the address count as ours.
                        self.acd_conflicts = 0;
                        let announce_at = Some(now.add_ms(acd::ANNOUNCE_INTERVAL_MS));
                        self.client = Client::Bound { lease, announce_at, probing: None };
                        self.tx_arp(TxKind::ArpAnnounce, arp::Repr::announcement(self.cfg.mac, lease.cidr.addr))
                    }
                };
                self.decide(Decision::new(None, deadline, t, Verdict::Lease).actions(vec![a]));
            }
            // RFC 5227 §2.3: the second of ANNOUNCE_NUM announcements.
            Client::Bound { lease, announce_at: Some(at), probing: None } if now >= at && now < lease.t1_at => {
                self.client = Client::Bound { lease, announce_at: None, probing: None };
                let a = self.tx_arp(TxKind::ArpAnnounce, arp::Repr::announcement(self.cfg.mac, lease.cidr.addr));
                self.decide(Decision::new(None, at, t, Verdict::Lease).actions(vec![a]));
            }
            // T1, and retransmissions while RENEWING (same xid).
            Client::Bound { lease, .. } | Client::Renewing { lease, .. } if now < lease.t2_at => {
                let (xid, forced) = match self.client {
                    Client::Renewing { xid, forced, .. } => (xid, forced.map(|a| a + 1)),
                    _ => (self.rng.next_u32(), None),
                };
                let a = self.enter_renewing(now, xid, lease, forced);
                self.decide(Decision::new(None, deadline, t, Verdict::Renew).actions(vec![a]));
            }
            // T2 (or T1 found already past T2, e.g. after a restart).
            Client::Bound { lease, .. } | Client::Renewing { lease, .. } | Client::Rebinding { lease, .. }
                if now < lease.expires_at =>
            {
                let xid = match self.client.clone() {
                    Client::Rebinding { xid, .. } => xid,
                    _ => self.rng.next_u32(),
                };
                let retransmit_at = self.renew_retransmit(now, lease.expires_at);
                self.client = Client::Rebinding { xid, lease, retransmit_at };
                let a = self.tx_request(xid, Some(lease.cidr.addr), None, None, None);
                self.decide(Decision::new(None, deadline, t, Verdict::Renew).actions(vec![a]));
            }
            Client::Bound { lease, .. } | Client::Renewing { lease, .. } | Client::Rebinding { lease, .. } => {
                self.state.lease = None;
                self.mark_dirty();
                let gone = self.configured.take().unwrap_or(lease.cidr);
                let mut actions = vec![Action::DelAddress { cidr: gone }];
                actions.push(self.begin_discover(now));
                actions
                    .push(Action::Hook { reason: HookReason::LeaseLost, env: self.lease_env(None, Some(lease.cidr)) });
                self.decide(Decision::new(None, deadline, t, Verdict::Restart).actions(actions));
            }
        }
    }

    /// ARP while we have or probe for a lease: RFC 5227 conflicts. Returns true when consumed.
    pub(super) fn client_handle_arp(&mut self, now: Instant, frame: Option<u64>, a: &arp::Repr) -> bool {
        if self.cfg.mode != Mode::Dhcp {
            return false;
        }
        match self.client.clone() {
            Client::Probing { lease, acd } | Client::Bound { lease, probing: Some(acd), .. }
                if acd.conflicts(a, self.cfg.mac) =>
            {
                self.conflict_decline(now, frame, lease, a.sha);
                true
            }
            ref c if c.lease().is_some_and(|l| acd::conflicts_with(l.cidr.addr, a, self.cfg.mac, false)) => {
                let Some(lease) = c.lease().copied() else { return false };
                if !self.rate.allow(a.sha, Input::Arp, now, false) {
                    self.counters.drop("rate_limited");
                    return true;
                }
                // RFC 5227 §2.4 (c): the server gave us this address, so we keep it and defend
                // it, with at most one announcement per DEFEND_INTERVAL (no ARP storm with the
                // other host). Giving it up at the second claim, as (b) allows, would let any
                // host on the segment re-address a terminal at will.
                let detail = format!("{} claims our address {}", a.sha, lease.cidr.addr);
                let mut actions = Vec::new();
                if self.defended_at.map_or(true, |t| now.saturating_sub(t) >= acd::DEFEND_INTERVAL_MS * 1000) {
                    self.defended_at = Some(now);
                    actions
                        .push(self.tx_arp(TxKind::ArpAnnounce, arp::Repr::announcement(self.cfg.mac, lease.cidr.addr)));
                }
                actions.extend(self.alarm(
                    now,
                    lease.cidr.addr,
                    Some(a.sha),
                    reason::ADDRESS_IN_USE,
                    detail,
                    Some(HookReason::Conflict),
                ));
                self.decide(
                    Decision::new(frame, now, Input::Arp, Verdict::Conflict)
                        .reason(reason::ADDRESS_IN_USE)
                        .actions(actions),
                );
                true
            }
            _ => false,
        }
    }

    fn conflict_decline(&mut self, now: Instant, frame: Option<u64>, lease: Lease, other: Mac) {
        let detail = format!("{} is in use by {other}; declining it", lease.cidr.addr);
        let mut actions = Vec::new();
        self.deferred_server = None;
        // Optimistic ACD had it in use already; a strict probe for a changed address leaves the
        // old one, whose lease the server has replaced: neither may stay.
        let withdrawn = self.configured.take();
        if let Some(c) = withdrawn {
            actions.push(Action::DelAddress { cidr: c });
        }
        let xid = self.rng.next_u32();
        actions.push(self.tx(
            MessageType::Decline,
            xid,
            Ipv4Addr::UNSPECIFIED,
            Some(lease.cidr.addr),
            Some(lease.server_id),
            None,
        ));
        actions.extend(self.alarm(
            now,
            lease.cidr.addr,
            Some(other),
            reason::ADDRESS_IN_USE,
            detail,
            Some(HookReason::Conflict),
        ));
        if let Some(c) = withdrawn {
            actions.push(Action::Hook { reason: HookReason::LeaseLost, env: self.lease_env(None, Some(c)) });
        }
        self.state.lease = None;
        self.mark_dirty();
        self.acd_conflicts = self.acd_conflicts.saturating_add(1);
        // RFC 2131 §3.1 (5): wait at least 10 s after a DECLINE before starting again; RFC 5227
        // §2.1.1: after MAX_CONFLICTS, at most one new address per RATE_LIMIT_INTERVAL.
        let wait = if self.acd_conflicts >= acd::MAX_CONFLICTS { acd::RATE_LIMIT_INTERVAL_MS } else { DECLINE_WAIT_MS };
        let xid = self.rng.next_u32();
        self.client = Client::Selecting { xid, attempt: 0, retransmit_at: now.add_ms(wait) };
        self.decide(
            Decision::new(frame, now, Input::Arp, Verdict::Conflict).reason(reason::ADDRESS_IN_USE).actions(actions),
        );
    }
}
