//! A simulated network for engine tests and the fleet bench, in the spirit of quinn-proto's test
//! `Pair`: real [`Engine`]s, a fake `serve` per server address, a fake kernel neighbour table per
//! terminal, a fake DHCP server with the real FORCERENEW sender ([`Campaign`]) on its host, and a
//! network with configurable loss and delay, all stepped by `poll_timeout` → `handle_timeout` in
//! simulated time: no threads, no sleeping, no sockets.
//!
//! How a test uses it: build a [`Sim`], add terminals ([`Sim::terminal`]), servers
//! ([`Sim::serve`]) and optionally the DHCP host ([`Sim::dhcp`]), inject frames
//! ([`Sim::broadcast`], [`Sim::deliver`]), kernel events ([`Sim::kernel_drops_pin`]) or a
//! FORCERENEW campaign ([`Sim::forcerenew_leases`]), then [`Sim::run_until`] a time. Each terminal
//! keeps its decision log, its hooks and its kernel table for the assertions (unless
//! [`Sim::record`] is off, as in the fleet bench, which only needs [`Terminal::reached`]).
//! Randomness (loss, delay, the engines' seeds) comes from one seeded generator, so a failing run
//! replays exactly.
//!
//! The model (what a frame or an exchange costs):
//! - **Frames.** Every frame, in either direction (terminal ↔ DHCP host, ANNOUNCE and
//!   FORCERENEW to a terminal, ARP request and reply), is lost on its own with probability
//!   `loss_pct`, else arrives after a one-way delay drawn uniformly from `delay_us`. A broadcast
//!   is one independent draw per receiver.
//! - **The DHCP host.** [`DhcpServer`] answers DISCOVER with OFFER and REQUEST with ACK (54, 51,
//!   1, 3 and 224 = [`DhcpServer::cloud`]; the address is a function of the MAC), or NAK for any
//!   other address; it answers at once. The FORCERENEW sender runs on the same host, so it sees a
//!   REQUEST exactly when (and only if) the frame reaches that host, as `forcerenew` watching the
//!   interface would. A terminal's lost ACK is invisible to the sender.
//! - **The connection channel is TCP.** A lost segment costs a retransmission, not a failed
//!   connect: SYN or SYN-ACK lost costs Linux's initial RTO of 1 s, then 2 s, 4 s (the next SYN);
//!   a lost HELLO or WELCOME data segment costs the minimum RTO of 200 ms, doubling, on the side
//!   that sent it. The exchange is SYN, SYN-ACK, HELLO (with the ACK), WELCOME: four one-way
//!   delays when nothing is lost. Only when the whole exchange takes longer than
//!   `connect_timeout_us` (DESIGN's `connect_timeout_ms`, 2000) does the engine see
//!   `ChannelFailed Timeout`, at that timeout; its own backoff then applies. A `serve` that is
//!   down times out (or refuses at once with `refuse_when_down`).
//!
//! Scheduling is two heaps, so a step costs O(log n) however many terminals there are: one of
//! queued events (frames, action results), and one of engine deadlines, (deadline, terminal),
//! invalidated lazily: after every `handle_*` of terminal i the sim re-reads its `poll_timeout`
//! and pushes it when it changed; a popped entry that no longer equals the terminal's armed
//! deadline is dropped.

use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded};
use ipsyncd::engine::{
    AcdMode, Action, ActionResult, ChannelFailure, Decision, Engine, EngineConfig, HookEnv, HookReason, Instant, Mode,
    Rng, State, TxKind,
};
use ipsyncd::server::campaign::{Campaign, Policy, Target};
use ipsyncd::server::{ForceRenew, ForceRenewAuth};
use ipsyncd::wire::dhcpv4::{self, CloudServer, MessageType, ServerForm};
use ipsyncd::wire::frame::{Body, Checksum, UdpFrameRepr};
use ipsyncd::wire::{arp, frame, Mac};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::Ipv4Addr;

/// What the network does to a frame (or a channel exchange) on the way.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Percent of frames (and TCP segments) lost, each on its own.
    pub loss_pct: u64,
    /// One-way delay, uniform in this range of microseconds.
    pub delay_us: (u64, u64),
    /// The shell's limit on one connection attempt (`connect_timeout_ms`).
    pub connect_timeout_us: u64,
    /// Linux's initial RTO: what a lost SYN or SYN-ACK costs (doubling).
    pub syn_rto_us: u64,
    /// Linux's minimum RTO on a LAN: what a lost data segment costs (doubling).
    pub data_rto_us: u64,
}

impl Default for Network {
    fn default() -> Network {
        Network {
            loss_pct: 0,
            delay_us: (200, 200),
            connect_timeout_us: 2_000_000,
            syn_rto_us: 1_000_000,
            data_rto_us: 200_000,
        }
    }
}

/// A fake `ipsyncd serve`: answers HELLO with WELCOME (status 0) while up.
#[derive(Debug, Clone, Copy)]
pub struct Serve {
    pub mac: Mac,
    pub up: bool,
    /// Refuse the TCP connection at once instead of timing out when down.
    pub refuse_when_down: bool,
}

/// One simulated thin client.
pub struct Terminal {
    pub engine: Engine,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub ctx: DecodeContext,
    /// Every decision, in order (when the sim records).
    pub log: Vec<Decision>,
    /// Every hook fired, in order (when the sim records).
    pub hooks: Vec<(HookReason, HookEnv)>,
    /// The fake kernel's permanent neighbour entries.
    pub pins: BTreeMap<Ipv4Addr, Mac>,
    /// Every frame the terminal transmitted (when the sim records).
    pub sent: Vec<(TxKind, Vec<u8>)>,
    /// How many `connect` attempts it made, per server.
    pub connects: BTreeMap<Ipv4Addr, u32>,
    /// When its current server first became [`Sim::watch`]'s address.
    pub reached: Option<Instant>,
}

impl Terminal {
    pub fn server(&self) -> Option<Ipv4Addr> {
        self.engine.current_server()
    }
    pub fn hook_count(&self, r: HookReason) -> usize {
        self.hooks.iter().filter(|(h, _)| *h == r).count()
    }
    /// (input, verdict, reason) of every decision, for compact assertions.
    pub fn lines(&self) -> Vec<(&'static str, &'static str, Option<&'static str>)> {
        self.log.iter().map(|d| (d.input.as_str(), d.verdict.as_str(), d.reason)).collect()
    }
}

/// The fake DHCP server (dnsmasq's part of the DHCP host). Builds its replies with the wire
/// module's own Repr, as a real server's bytes would arrive.
#[derive(Debug, Clone)]
pub struct DhcpServer {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// What option 224 answers: the cloud server's address now.
    pub cloud: Ipv4Addr,
    pub lease_secs: u32,
    pub mask: Ipv4Addr,
    pub router: Ipv4Addr,
    /// The address of MAC `..:00:00:00`; a MAC's last three bytes are its offset.
    pub pool_start: Ipv4Addr,
    /// Leases in the order of their first ACK: the `--leases` file of the campaign.
    pub leases: Vec<(Mac, Ipv4Addr)>,
    leased: HashMap<Mac, usize>,
}

impl DhcpServer {
    /// A server at `ip` handing out `pool_start` + offset in a /16 with 3600 s leases.
    pub fn new(ip: Ipv4Addr, mac: Mac, cloud: Ipv4Addr, pool_start: Ipv4Addr) -> DhcpServer {
        DhcpServer {
            ip,
            mac,
            cloud,
            lease_secs: 3600,
            mask: Ipv4Addr::new(255, 255, 0, 0),
            router: Ipv4Addr::new(10, 77, 0, 254),
            pool_start,
            leases: Vec::new(),
            leased: HashMap::new(),
        }
    }

    /// A deterministic address per MAC (a static reservation table, as a fleet has).
    pub fn address_for(&self, mac: Mac) -> Ipv4Addr {
        let off = u32::from_be_bytes([0, mac.0[3], mac.0[4], mac.0[5]]);
        Ipv4Addr::from(u32::from(self.pool_start).wrapping_add(off))
    }

    /// The reply to one client message, as a whole Ethernet frame, and the client's MAC.
    fn answer(&mut self, udp_payload: &[u8]) -> Option<(Mac, Vec<u8>)> {
        let p = dhcpv4::Packet::new_checked(udp_payload).ok()?;
        let m = dhcpv4::Repr::parse(&p, 224).ok()?;
        let chaddr = Mac::from_slice(m.chaddr)?;
        if m.op != 1 {
            return None;
        }
        let addr = self.address_for(chaddr);
        let t = match m.message_type {
            MessageType::Discover => MessageType::Offer,
            MessageType::Request => {
                // RENEWING names its address in ciaddr; SELECTING and INIT-REBOOT in option 50.
                let asked = m.requested_ip.unwrap_or(m.ciaddr);
                let for_us = m.server_identifier.map_or(true, |s| s == self.ip);
                if !for_us {
                    return None;
                }
                if asked == addr {
                    MessageType::Ack
                } else {
                    MessageType::Nak
                }
            }
            _ => return None,
        };
        let reply = if t == MessageType::Nak {
            dhcpv4::Repr { server_identifier: Some(self.ip), ..dhcpv4::Repr::new(t, m.xid, m.chaddr) }
        } else {
            dhcpv4::Repr {
                yiaddr: addr,
                server_identifier: Some(self.ip),
                lease_time: Some(self.lease_secs),
                subnet_mask: Some(self.mask),
                router: Some(self.router),
                cloud_server: Some(CloudServer { code: 224, addr: self.cloud, form: ServerForm::Binary }),
                ..dhcpv4::Repr::new(t, m.xid, m.chaddr)
            }
        };
        if t == MessageType::Ack {
            if let std::collections::hash_map::Entry::Vacant(e) = self.leased.entry(chaddr) {
                e.insert(self.leases.len());
                self.leases.push((chaddr, addr));
            }
        }
        // Unicast to the client's MAC, as dnsmasq answers a client that did not ask for broadcast.
        let dst_ip = if t == MessageType::Nak { Ipv4Addr::BROADCAST } else { addr };
        let udp = UdpFrameRepr {
            src_mac: self.mac,
            dst_mac: chaddr,
            src_ip: self.ip,
            dst_ip,
            src_port: dhcpv4::SERVER_PORT,
            dst_port: dhcpv4::CLIENT_PORT,
            ttl: 64,
        };
        Some((chaddr, udp.emit(&reply.to_bytes())))
    }
}

/// `forcerenew --leases` on the DHCP host: the real [`Campaign`] and RFC 3118 signing.
pub struct ForceRenewSender {
    pub campaign: Campaign,
    secret_id: u32,
    key: Vec<u8>,
    /// The replay counter of the first frame; each frame takes the next.
    replay_base: u64,
    sent: u64,
}

#[derive(Debug)]
enum Event {
    /// A frame reaching terminal `to`.
    Frame { to: usize, bytes: Vec<u8> },
    /// The outcome of an action of terminal `to`.
    Result { to: usize, r: ActionResult },
    /// A terminal's frame reaching the DHCP host.
    ToHost { bytes: Vec<u8> },
}

/// A queued event, ordered by (time, insertion).
struct Queued {
    at: Instant,
    id: u64,
    ev: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Queued) -> bool {
        (self.at, self.id) == (o.at, o.id)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Queued) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Queued) -> Ordering {
        (self.at, self.id).cmp(&(o.at, o.id))
    }
}

/// What happens next.
enum Next {
    Event,
    Timer(usize),
    Campaign,
}

pub struct Sim {
    pub now: Instant,
    pub net: Network,
    rng: Rng,
    pub terminals: Vec<Terminal>,
    pub servers: BTreeMap<Ipv4Addr, Serve>,
    /// Other hosts on the segment that answer ARP for their address.
    pub hosts: BTreeMap<Ipv4Addr, Mac>,
    /// The DHCP host, when there is one: frames to UDP port 67 go there.
    pub dhcp: Option<DhcpServer>,
    pub forcerenew: Option<ForceRenewSender>,
    /// Keep every terminal's decisions, hooks and frames (off for the fleet bench).
    pub record: bool,
    /// The address [`Terminal::reached`] watches for, and how many terminals have reached it.
    pub watch: Option<Ipv4Addr>,
    pub reached: usize,
    queue: BinaryHeap<Reverse<Queued>>,
    next_id: u64,
    /// Engine deadlines, (deadline, terminal); an entry counts only while it equals `armed`.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    armed: Vec<Option<Instant>>,
    by_mac: HashMap<Mac, usize>,
}

pub const T0: Instant = Instant::from_secs(1_800_000_000);

/// The MAC of fleet terminal `i`.
pub fn fleet_mac(i: u32) -> Mac {
    let b = i.to_be_bytes();
    Mac([2, 0x10, b[0], b[1], b[2], b[3]])
}

/// A follow-mode configuration for terminal `i` of a fleet, with DESIGN's defaults.
pub fn follow_config(i: u32, key: &[u8]) -> EngineConfig {
    let mut c = EngineConfig::new(Mode::Follow, fleet_mac(i));
    // One address per terminal in the /16 (10.77.100.1 onwards), as the DHCP host would hand out.
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 77, 100, 1)) + i);
    c.address = Some(ipsyncd::engine::Cidr::new(addr, 16));
    c.keys = BTreeMap::from([(1, ipsyncd::wire::sig::VerifyKey::Hmac(key.to_vec()))]);
    c
}

/// A dhcp-mode configuration for terminal `i` of a fleet: DESIGN's defaults, the `[[key]]` for
/// the channel, `[[dhcp_key]] id = 1` for FORCERENEW, and `acd = "optimistic"` (start-up is not
/// what the fleet bench measures, and a re-address is not what a server move does).
pub fn dhcp_config(i: u32, key: &[u8], dhcp_key: &[u8]) -> EngineConfig {
    let mut c = EngineConfig::new(Mode::Dhcp, fleet_mac(i));
    c.keys = BTreeMap::from([(1, ipsyncd::wire::sig::VerifyKey::Hmac(key.to_vec()))]);
    c.dhcp_keys = BTreeMap::from([(1, dhcp_key.to_vec())]);
    c.acd = AcdMode::Optimistic;
    c
}

impl Sim {
    pub fn new(seed: u64, net: Network) -> Sim {
        Sim {
            now: T0,
            net,
            // Rng::new sets the seed's low bit, so seeds 2k and 2k+1 would run the same: shifted,
            // every seed runs its own network.
            rng: Rng::new(seed << 1),
            terminals: Vec::new(),
            servers: BTreeMap::new(),
            hosts: BTreeMap::new(),
            dhcp: None,
            forcerenew: None,
            record: true,
            watch: None,
            reached: 0,
            queue: BinaryHeap::new(),
            next_id: 0,
            timers: BinaryHeap::new(),
            armed: Vec::new(),
            by_mac: HashMap::new(),
        }
    }

    /// Adds a terminal and starts it as the live daemon would; returns its index.
    pub fn terminal(&mut self, cfg: EngineConfig, state: State) -> usize {
        let ctx = DecodeContext { mac: cfg.mac, port: cfg.port, server_option: cfg.server_option };
        let (mac, ip) = (cfg.mac, cfg.address.map_or(Ipv4Addr::UNSPECIFIED, |c| c.addr));
        let seed = self.rng.next_u64();
        let mut engine = Engine::new(cfg, state, seed);
        engine.start(self.now);
        self.terminals.push(Terminal {
            engine,
            mac,
            ip,
            ctx,
            log: Vec::new(),
            hooks: Vec::new(),
            pins: BTreeMap::new(),
            sent: Vec::new(),
            connects: BTreeMap::new(),
            reached: None,
        });
        self.armed.push(None);
        let i = self.terminals.len() - 1;
        self.by_mac.insert(mac, i);
        self.drain(i);
        i
    }

    /// A `serve` at `ip` (up or down).
    pub fn serve(&mut self, ip: Ipv4Addr, mac: Mac, up: bool) {
        self.servers.insert(ip, Serve { mac, up, refuse_when_down: false });
        self.hosts.insert(ip, mac);
    }

    pub fn set_up(&mut self, ip: Ipv4Addr, up: bool) {
        if let Some(s) = self.servers.get_mut(&ip) {
            s.up = up;
        }
    }

    /// Puts the DHCP host on the segment.
    pub fn dhcp(&mut self, server: DhcpServer) {
        self.hosts.insert(server.ip, server.mac);
        self.dhcp = Some(server);
    }

    /// From now on, [`Terminal::reached`] records when each terminal's current server is `ip`.
    pub fn watch(&mut self, ip: Ipv4Addr) {
        self.watch = Some(ip);
        self.reached = 0;
        for i in 0..self.terminals.len() {
            self.terminals[i].reached = None;
            self.check_reached(i);
        }
    }

    /// `forcerenew --leases` now, from the DHCP host, over every lease the DHCP server handed
    /// out, signed with `[[dhcp_key]] id = secret_id`.
    pub fn forcerenew_leases(&mut self, secret_id: u32, key: &[u8], policy: Policy) {
        let Some(d) = &self.dhcp else { panic!("forcerenew_leases needs the DHCP host") };
        let targets = d.leases.iter().map(|&(mac, ip)| Target { ip, mac, xid: None }).collect();
        self.forcerenew = Some(ForceRenewSender {
            campaign: Campaign::new(targets, policy, self.now),
            secret_id,
            key: key.to_vec(),
            // The persisted counter's rule: µs since the epoch, then one more per frame.
            replay_base: self.now.micros(),
            sent: 0,
        });
    }

    fn schedule(&mut self, at: Instant, ev: Event) {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push(Reverse(Queued { at, id, ev }));
    }

    fn lost(&mut self) -> bool {
        self.net.loss_pct > 0 && self.rng.between(0, 99) < self.net.loss_pct
    }

    fn delay(&mut self) -> u64 {
        self.rng.between(self.net.delay_us.0, self.net.delay_us.1)
    }

    /// Sends a frame to one terminal through the network (loss and delay apply).
    pub fn deliver(&mut self, to: usize, bytes: Vec<u8>) {
        self.deliver_after(to, bytes, 0);
    }

    fn deliver_after(&mut self, to: usize, bytes: Vec<u8>, extra_us: u64) {
        if self.lost() {
            return;
        }
        let at = Instant(self.now.micros() + extra_us + self.delay());
        self.schedule(at, Event::Frame { to, bytes });
    }

    /// Sends a frame to every terminal, each copy lost and delayed on its own.
    pub fn broadcast(&mut self, bytes: &[u8]) {
        for i in 0..self.terminals.len() {
            self.deliver(i, bytes.to_vec());
        }
    }

    /// The kernel deleted a pin (RTM_DELNEIGH): the fake table loses it and the engine hears.
    pub fn kernel_drops_pin(&mut self, i: usize, ip: Ipv4Addr) {
        self.terminals[i].pins.remove(&ip);
        let at = self.now;
        self.schedule(at, Event::Result { to: i, r: ActionResult::PinLost { ip } });
    }

    /// The earliest thing that happens next, and when: a queued event, an engine deadline, or
    /// the campaign's next send. Drops stale deadline entries on the way.
    fn next(&mut self) -> Option<(Instant, Next)> {
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if self.armed[i] == Some(at) {
                break;
            }
            self.timers.pop();
        }
        let q = self.queue.peek().map(|Reverse(e)| (e.at, Next::Event));
        let e = self.timers.peek().map(|&Reverse((t, i))| (t, Next::Timer(i)));
        let c = self.forcerenew.as_ref().and_then(|f| f.campaign.poll_timeout()).map(|t| (t, Next::Campaign));
        // On a tie: frames and results first, then deadlines, then the sender.
        [q, e, c].into_iter().flatten().min_by_key(|(t, _)| *t)
    }

    /// Steps simulated time until `until` (inclusive) or until nothing is left to do.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps = 0u64;
        while let Some((t, next)) = self.next().filter(|(t, _)| *t <= until) {
            steps += 1;
            assert!(steps < 50_000_000, "simulation does not settle");
            self.now = self.now.max(t);
            match next {
                Next::Event => {
                    let Some(Reverse(Queued { ev, .. })) = self.queue.pop() else { continue };
                    self.handle_event(ev);
                }
                Next::Timer(i) => {
                    self.timers.pop();
                    // Disarmed first, so the drain re-arms it even when the deadline stays put.
                    self.armed[i] = None;
                    self.terminals[i].engine.handle_timeout(self.now);
                    self.drain(i);
                }
                Next::Campaign => self.campaign_sends(),
            }
        }
        self.now = self.now.max(until);
    }

    fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Frame { to, bytes } => {
                let term = &self.terminals[to];
                if let Decoded::Inbound(inb) = decode_frame(None, &bytes, Checksum::Verify, &term.ctx) {
                    self.terminals[to].engine.handle_frame(self.now, &inb);
                }
                self.drain(to);
            }
            Event::Result { to, r } => {
                self.terminals[to].engine.handle_result(self.now, r);
                self.drain(to);
            }
            Event::ToHost { bytes } => self.host_receives(&bytes),
        }
    }

    /// A terminal's frame reaches the DHCP host: the sender sees a REQUEST, the server answers.
    fn host_receives(&mut self, bytes: &[u8]) {
        let Ok(f) = frame::decode(bytes, Checksum::Verify) else { return };
        let Body::Udp(udp) = f.body else { return };
        if udp.dst_port != dhcpv4::SERVER_PORT {
            return;
        }
        // What `forcerenew` does with a frame on its interface: the real watcher's decode.
        let mut stats = ipsyncd::server::dhcp_watch::WatchStats::default();
        let seen = ipsyncd::server::dhcp_watch::decode(bytes, Checksum::Verify, &mut stats);
        if let (Some(m), Some(s)) = (seen.filter(|m| m.message_type == MessageType::Request), &mut self.forcerenew) {
            s.campaign.handle_request(self.now, m.mac, m.address());
        }
        let Some((mac, reply)) = self.dhcp.as_mut().and_then(|d| d.answer(udp.payload)) else { return };
        if let Some(&to) = self.by_mac.get(&mac) {
            self.deliver(to, reply);
        }
    }

    /// Everything the campaign may send now, each FORCERENEW through the network.
    fn campaign_sends(&mut self) {
        let (Some(s), Some(d)) = (&mut self.forcerenew, &self.dhcp) else { return };
        let mut out = Vec::new();
        while let Some(send) = s.campaign.poll_transmit(self.now) {
            let m = ForceRenew {
                server_ip: d.ip,
                server_mac: d.mac,
                client_ip: send.target.ip,
                client_mac: send.target.mac,
                xid: send.target.xid.unwrap_or(0),
                replay: s.replay_base + s.sent,
                auth: ForceRenewAuth::Delayed { secret_id: s.secret_id, key: &s.key },
            };
            s.sent += 1;
            out.push((send.target.mac, m.frame()));
        }
        for (mac, bytes) in out {
            if let Some(&to) = self.by_mac.get(&mac) {
                self.deliver(to, bytes);
            }
        }
    }

    fn check_reached(&mut self, i: usize) {
        let t = &mut self.terminals[i];
        if t.reached.is_none() && self.watch.is_some() && t.engine.current_server() == self.watch {
            t.reached = Some(self.now);
            self.reached += 1;
        }
    }

    /// Collects terminal `i`'s decisions and carries out its actions, as the applier would, then
    /// re-arms its deadline.
    fn drain(&mut self, i: usize) {
        while let Some(d) = self.terminals[i].engine.poll_decision() {
            if self.record {
                self.terminals[i].log.push(d);
            }
        }
        while let Some(a) = self.terminals[i].engine.poll_action() {
            self.apply(i, a);
        }
        self.check_reached(i);
        let deadline = self.terminals[i].engine.poll_timeout();
        if deadline != self.armed[i] {
            self.armed[i] = deadline;
            if let Some(d) = deadline {
                self.timers.push(Reverse((d, i)));
            }
        }
    }

    fn apply(&mut self, i: usize, a: Action) {
        match a {
            Action::PinNeighbour { ip, mac } => {
                self.terminals[i].pins.insert(ip, mac);
            }
            Action::UnpinNeighbour { ip } => {
                self.terminals[i].pins.remove(&ip);
            }
            Action::Hook { reason, env } => {
                if self.record {
                    self.terminals[i].hooks.push((reason, env));
                }
            }
            Action::Connect { ip, .. } => {
                *self.terminals[i].connects.entry(ip).or_default() += 1;
                let (after, r) = self.connect(ip);
                let at = Instant(self.now.micros() + after);
                self.schedule(at, Event::Result { to: i, r });
            }
            Action::Transmit { kind, frame: bytes } => {
                // DHCP client messages go to the DHCP host (UDP port 67), when there is one.
                let to_host = self.dhcp.is_some()
                    && matches!(kind, TxKind::Discover | TxKind::Request | TxKind::Decline | TxKind::Release);
                if kind == TxKind::ArpRequest {
                    self.answer_arp(i, &bytes);
                } else if to_host && !self.lost() {
                    let at = Instant(self.now.micros() + self.delay());
                    self.schedule(at, Event::ToHost { bytes: bytes.clone() });
                }
                if self.record {
                    self.terminals[i].sent.push((kind, bytes));
                }
            }
            Action::SetServer { .. } | Action::Alarm { .. } | Action::SetAddress { .. } | Action::DelAddress { .. } => {
            }
        }
    }

    /// One connection attempt to `ip` under the TCP model of the module comment: when its
    /// outcome reaches the engine, and what it is.
    fn connect(&mut self, ip: Ipv4Addr) -> (u64, ActionResult) {
        let timeout =
            (self.net.connect_timeout_us, ActionResult::ChannelFailed { ip, failure: ChannelFailure::Timeout });
        let s = match self.servers.get(&ip).copied() {
            Some(s) if s.up => s,
            Some(s) if s.refuse_when_down => {
                let rtt = self.delay() + self.delay();
                return (rtt, ActionResult::ChannelFailed { ip, failure: ChannelFailure::Refused });
            }
            _ => return timeout,
        };
        let limit = self.net.connect_timeout_us;
        // The handshake: a SYN and its SYN-ACK must both arrive; a loss of either costs the
        // client's SYN retransmission timer (1 s, 2 s, …).
        let mut t = 0;
        let mut rto = self.net.syn_rto_us;
        loop {
            if t > limit {
                return timeout;
            }
            let syn_ok = !self.lost();
            let synack_ok = syn_ok && !self.lost();
            if synack_ok {
                t += self.delay() + self.delay();
                break;
            }
            t += rto;
            rto *= 2;
        }
        // HELLO from the terminal, then WELCOME from serve: one data segment each, each
        // retransmitted by its sender at the minimum RTO, doubling.
        for _ in 0..2 {
            let mut rto = self.net.data_rto_us;
            while self.lost() {
                t += rto;
                rto *= 2;
                if t > limit {
                    return timeout;
                }
            }
            t += self.delay();
        }
        if t > limit {
            return timeout;
        }
        (t, ActionResult::Welcome { ip, mac: Some(s.mac), status: 0, service: Default::default() })
    }

    /// A host that owns the requested address answers with a unicast reply to the requester's
    /// MAC and address. Request and reply are each lost and delayed on their own.
    fn answer_arp(&mut self, i: usize, bytes: &[u8]) {
        let Some(req) =
            bytes.get(14..).and_then(|p| arp::Packet::new_checked(p).ok()).and_then(|p| arp::Repr::parse(&p).ok())
        else {
            return;
        };
        let Some(&mac) = self.hosts.get(&req.tpa) else { return };
        if self.lost() {
            return;
        }
        let there = self.delay();
        let r = arp::Repr { operation: arp::Operation::Reply, sha: mac, spa: req.tpa, tha: req.sha, tpa: req.spa };
        let tm = self.terminals[i].mac;
        self.deliver_after(i, frame::emit_arp_frame(mac, tm, &r.to_bytes()), there);
    }
}
