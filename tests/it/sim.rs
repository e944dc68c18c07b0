//! A simulated network for engine tests, in the spirit of quinn-proto's test `Pair`: real
//! [`Engine`]s, a fake `serve` per server address, a fake kernel neighbour table per terminal,
//! and a network with configurable loss and delay, all stepped by `poll_timeout` →
//! `handle_timeout` in simulated time: no threads, no sleeping, no sockets.
//!
//! How a test uses it: build a [`Sim`], add terminals ([`Sim::terminal`]) and servers
//! ([`Sim::serve`]), inject frames ([`Sim::broadcast`], [`Sim::deliver`]) or kernel events
//! ([`Sim::kernel_drops_pin`]), then [`Sim::run_until`] a time. Each terminal keeps its decision
//! log, its hooks and its kernel table for the assertions. Randomness (loss, delay) comes from
//! one seeded generator, so a failing run replays exactly.

use ipsyncd::engine::input::{decode_frame, DecodeContext, Decoded};
use ipsyncd::engine::{
    Action, ActionResult, ChannelFailure, Decision, Engine, EngineConfig, HookEnv, HookReason, Instant, Mode, Rng,
    State, TxKind,
};
use ipsyncd::wire::frame::Checksum;
use ipsyncd::wire::{arp, frame, Mac};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::Ipv4Addr;

/// What the network does to a frame (or a channel exchange) on the way.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Percent of frames and channel exchanges lost.
    pub loss_pct: u64,
    /// One-way delay, uniform in this range of microseconds.
    pub delay_us: (u64, u64),
    /// What a `connect` to a dead server costs before it times out.
    pub connect_timeout_us: u64,
}

impl Default for Network {
    fn default() -> Network {
        Network { loss_pct: 0, delay_us: (200, 200), connect_timeout_us: 2_000_000 }
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
    /// Every decision, in order.
    pub log: Vec<Decision>,
    /// Every hook fired, in order.
    pub hooks: Vec<(HookReason, HookEnv)>,
    /// The fake kernel's permanent neighbour entries.
    pub pins: BTreeMap<Ipv4Addr, Mac>,
    /// Every frame the terminal transmitted.
    pub sent: Vec<(TxKind, Vec<u8>)>,
    /// How many `connect` attempts it made, per server.
    pub connects: BTreeMap<Ipv4Addr, u32>,
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

#[derive(Debug)]
enum Event {
    Frame { to: usize, bytes: Vec<u8> },
    Result { to: usize, r: ActionResult },
}

pub struct Sim {
    pub now: Instant,
    pub net: Network,
    rng: Rng,
    pub terminals: Vec<Terminal>,
    pub servers: BTreeMap<Ipv4Addr, Serve>,
    /// Other hosts on the segment that answer ARP for their address.
    pub hosts: BTreeMap<Ipv4Addr, Mac>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: BTreeMap<u64, Event>,
    next_id: u64,
}

pub const T0: Instant = Instant::from_secs(1_800_000_000);

/// A follow-mode configuration for terminal `i` of a fleet, with DESIGN's defaults.
pub fn follow_config(i: u32, key: &[u8]) -> EngineConfig {
    let b = i.to_be_bytes();
    let mut c = EngineConfig::new(Mode::Follow, Mac([2, 0x10, b[0], b[1], b[2], b[3]]));
    c.address = Some(ipsyncd::engine::Cidr::new(Ipv4Addr::new(10, 77, 100 + b[2], b[3].max(1)), 16));
    c.keys = BTreeMap::from([(1, ipsyncd::wire::sig::VerifyKey::Hmac(key.to_vec()))]);
    c
}

impl Sim {
    pub fn new(seed: u64, net: Network) -> Sim {
        Sim {
            now: T0,
            net,
            rng: Rng::new(seed),
            terminals: Vec::new(),
            servers: BTreeMap::new(),
            hosts: BTreeMap::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_id: 0,
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
        });
        let i = self.terminals.len() - 1;
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

    fn schedule(&mut self, at: Instant, ev: Event) {
        let to = match &ev {
            Event::Frame { to, .. } | Event::Result { to, .. } => *to,
        };
        let id = self.next_id;
        self.next_id += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at, id, to)));
    }

    fn lost(&mut self) -> bool {
        self.net.loss_pct > 0 && self.rng.between(0, 99) < self.net.loss_pct
    }

    fn delay(&mut self) -> u64 {
        self.rng.between(self.net.delay_us.0, self.net.delay_us.1)
    }

    /// Sends a frame to one terminal through the network (loss and delay apply).
    pub fn deliver(&mut self, to: usize, bytes: Vec<u8>) {
        if self.lost() {
            return;
        }
        let at = Instant(self.now.micros() + self.delay());
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

    /// The earliest thing that happens next: a queued event or an engine deadline.
    fn next_time(&self) -> Option<Instant> {
        let q = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let e = self.terminals.iter().filter_map(|t| t.engine.poll_timeout()).min();
        [q, e].into_iter().flatten().min()
    }

    /// Steps simulated time until `until` (inclusive) or until nothing is left to do.
    pub fn run_until(&mut self, until: Instant) {
        let mut steps = 0u64;
        while let Some(t) = self.next_time().filter(|&t| t <= until) {
            steps += 1;
            assert!(steps < 50_000_000, "simulation does not settle");
            self.now = self.now.max(t);
            // Events due now, in order.
            while let Some(Reverse((at, id, to))) = self.queue.peek().copied() {
                if at > self.now {
                    break;
                }
                self.queue.pop();
                match self.events.remove(&id) {
                    Some(Event::Frame { bytes, .. }) => {
                        let term = &self.terminals[to];
                        if let Decoded::Inbound(inb) = decode_frame(None, &bytes, Checksum::Verify, &term.ctx) {
                            self.terminals[to].engine.handle_frame(self.now, &inb);
                        }
                    }
                    Some(Event::Result { r, .. }) => self.terminals[to].engine.handle_result(self.now, r),
                    None => {}
                }
                self.drain(to);
            }
            for i in 0..self.terminals.len() {
                if self.terminals[i].engine.poll_timeout().is_some_and(|d| d <= self.now) {
                    self.terminals[i].engine.handle_timeout(self.now);
                    self.drain(i);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Collects terminal `i`'s decisions and carries out its actions, as the applier would.
    fn drain(&mut self, i: usize) {
        while let Some(d) = self.terminals[i].engine.poll_decision() {
            self.terminals[i].log.push(d);
        }
        while let Some(a) = self.terminals[i].engine.poll_action() {
            self.apply(i, a);
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
            Action::Hook { reason, env } => self.terminals[i].hooks.push((reason, env)),
            Action::Connect { ip, .. } => {
                *self.terminals[i].connects.entry(ip).or_default() += 1;
                let serve = self.servers.get(&ip).copied();
                let rtt = self.delay() * 2;
                let (at, r) = match serve {
                    Some(s) if s.up && !self.lost() => {
                        (self.now.micros() + rtt, ActionResult::Welcome { ip, mac: Some(s.mac), status: 0 })
                    }
                    Some(s) if !s.up && s.refuse_when_down => {
                        (self.now.micros() + rtt, ActionResult::ChannelFailed { ip, failure: ChannelFailure::Refused })
                    }
                    _ => (
                        self.now.micros() + self.net.connect_timeout_us,
                        ActionResult::ChannelFailed { ip, failure: ChannelFailure::Timeout },
                    ),
                };
                self.schedule(Instant(at), Event::Result { to: i, r });
            }
            Action::Transmit { kind, frame: bytes } => {
                if kind == TxKind::ArpRequest {
                    self.answer_arp(i, &bytes);
                }
                self.terminals[i].sent.push((kind, bytes));
            }
            Action::SetServer { .. } | Action::Alarm { .. } | Action::SetAddress { .. } | Action::DelAddress { .. } => {
            }
        }
    }

    /// A host that owns the requested address answers with a unicast reply.
    fn answer_arp(&mut self, i: usize, bytes: &[u8]) {
        let Some(req) =
            bytes.get(14..).and_then(|p| arp::Packet::new_checked(p).ok()).and_then(|p| arp::Repr::parse(&p).ok())
        else {
            return;
        };
        if let Some(&mac) = self.hosts.get(&req.tpa) {
            let (tm, tip) = (self.terminals[i].mac, self.terminals[i].ip);
            let r = arp::Repr { operation: arp::Operation::Reply, sha: mac, spa: req.tpa, tha: tm, tpa: tip };
            self.deliver(i, frame::emit_arp_frame(mac, tm, &r.to_bytes()));
        }
    }
}
