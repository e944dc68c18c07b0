//! Carrying out actions. [`Applier`] is implemented by the Recorder here (replay and tests) and,
//! for the live daemon, by the netlink applier.
//!
//! Contract: the applier thread owns every side effect (kernel state, hooks, the state file), so
//! the worker never blocks on one. It holds no policy: each action is executed once and answered
//! with an [`ActionResult`]; a `connect` is one attempt whose outcome comes back asynchronously.

use crate::engine::{Action, ActionResult, Service, State};
use crossbeam_channel::Sender;
use std::path::PathBuf;

pub trait Applier: Send {
    /// Called once on the applier thread before the first action: where asynchronous results
    /// (connection outcomes, kernel events) go.
    fn start(&mut self, _results: Sender<ActionResult>) {}
    fn apply(&mut self, action: &Action) -> ActionResult;
    /// Writes the state durably. Called after every change, ahead of that change's hooks.
    fn persist(&mut self, state: &State) -> std::io::Result<()>;
}

/// Records what would be done and reports every action as done: replay is the live daemon on a
/// perfect network, so a `connect` is answered by a WELCOME from the server dialled (DESIGN §3).
/// With a state directory it also persists state, so a replay can be continued or inspected.
#[derive(Debug, Default)]
pub struct Recorder {
    pub state_dir: Option<PathBuf>,
    /// Count per action op.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub persisted: u64,
    /// When set, every action in the order received (a test compares it with the decision log).
    pub log: Option<std::sync::Arc<parking_lot::Mutex<Vec<Action>>>>,
}

impl Recorder {
    pub fn new(state_dir: Option<PathBuf>) -> Recorder {
        Recorder { state_dir, ..Recorder::default() }
    }
}

impl Applier for Recorder {
    fn apply(&mut self, action: &Action) -> ActionResult {
        *self.counts.entry(action.op()).or_default() += 1;
        if let Some(log) = &self.log {
            log.lock().push(action.clone());
        }
        match action {
            Action::Connect { ip, .. } => {
                ActionResult::Welcome { ip: *ip, mac: None, status: 0, service: Service::default() }
            }
            _ => ActionResult::Done,
        }
    }

    fn persist(&mut self, state: &State) -> std::io::Result<()> {
        self.persisted += 1;
        match &self.state_dir {
            Some(d) => super::state_file::save(d, state),
            None => Ok(()),
        }
    }
}

pub use live::{LiveApplier, LiveConfig};

mod live {
    use super::Applier;
    use crate::engine::{Action, ActionResult, State};
    use crate::shell::capture::Transmitter;
    use crate::shell::channel::{self, Terminal};
    use crate::shell::clock;
    use crate::shell::hooks::Hooks;
    use crate::shell::netlink::{self, Event, Netlink};
    use crate::shell::state_file;
    use crossbeam_channel::Sender;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    pub struct LiveConfig {
        pub ifname: String,
        pub ifindex: u32,
        pub state_dir: PathBuf,
        /// Shared with the signal thread: SIGHUP can rotate the key used for HELLO.
        pub terminal: Arc<parking_lot::RwLock<Terminal>>,
        pub connect_timeout: Duration,
        pub hooks: Hooks,
        /// The interface's frame socket, shared with the worker (which sends frames live).
        pub tx: Arc<Transmitter>,
    }

    /// The real applier: rtnetlink for pins and addresses, AF_PACKET for frames, TCP for the
    /// connection channel, processes for hooks, the state file for persistence.
    pub struct LiveApplier {
        cfg: LiveConfig,
        nl: Netlink,
        results: Option<Sender<ActionResult>>,
        last_hello_seq: Arc<parking_lot::Mutex<Option<u64>>>,
    }

    impl LiveApplier {
        pub fn new(cfg: LiveConfig) -> std::io::Result<LiveApplier> {
            let nl = Netlink::open()?;
            Ok(LiveApplier { cfg, nl, results: None, last_hello_seq: Arc::new(parking_lot::Mutex::new(None)) })
        }

        /// One attempt, on its own thread so the applier never blocks on a slow server; its
        /// outcome goes back to the engine, which decides whether and when to try again.
        fn connect(&self, ip: Ipv4Addr, port: u16) {
            let Some(results) = self.results.clone() else { return };
            if self.cfg.terminal.read().key.is_empty() {
                // No [[key]] (run warned at start): a HELLO could not be signed, so none is sent.
                let _ =
                    results.send(ActionResult::ChannelFailed { ip, failure: crate::engine::ChannelFailure::Closed });
                return;
            }
            let terminal = Arc::clone(&self.cfg.terminal);
            let timeout = self.cfg.connect_timeout;
            let seq = Arc::clone(&self.last_hello_seq);
            let spawned = std::thread::Builder::new().name("connect".into()).spawn(move || {
                let sequence = channel::next_hello_sequence(&mut seq.lock(), clock::unix_us());
                let t = terminal.read().clone();
                let r = channel::hello(&t, ip, port, timeout, clock::random_bytes::<16>(), sequence);
                if let Err(e) = &r {
                    log::info!("connect {ip}:{port}: {e}");
                }
                let _ = results.send(channel::outcome(ip, &r));
            });
            if let Err(e) = spawned {
                log::error!("cannot start the connection thread: {e}");
                if let Some(r) = &self.results {
                    let failure = crate::engine::ChannelFailure::Closed;
                    let _ = r.send(ActionResult::ChannelFailed { ip, failure });
                }
            }
        }

        fn set_promote_secondaries(&mut self) {
            // Without it, removing the old primary silently deletes the new secondary
            // (DESIGN §5). Through rtnetlink: /proc/sys is read-only under the unit.
            if let Err(e) = self.nl.set_promote_secondaries(self.cfg.ifindex) {
                log::warn!("{e}; the old address's removal may take the new one with it");
            }
        }
    }

    impl Applier for LiveApplier {
        fn start(&mut self, results: Sender<ActionResult>) {
            self.results = Some(results.clone());
            let ifindex = self.cfg.ifindex;
            let mon = match Netlink::monitor() {
                Ok(m) => m,
                Err(e) => {
                    log::error!("netlink monitor: {e}; pins will not be restored after a deletion");
                    return;
                }
            };
            let spawned = std::thread::Builder::new().name("netlink-monitor".into()).spawn(move || {
                let mut buf = Vec::new();
                loop {
                    match netlink::next_events(&mon, ifindex, &mut buf) {
                        Ok(events) => {
                            for e in events {
                                let r = match e {
                                    Event::NeighbourGone(ip) => ActionResult::PinLost { ip },
                                    Event::LinkUp => ActionResult::LinkUp,
                                    Event::LinkDown => continue,
                                };
                                if results.send(r).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                            // Events were lost: re-assert the pin rather than guess.
                            log::warn!("netlink monitor overrun; re-pinning");
                            if results.send(ActionResult::LinkUp).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            log::error!("netlink monitor: {e}");
                            return;
                        }
                    }
                }
            });
            if let Err(e) = spawned {
                log::error!("cannot start the netlink monitor: {e}");
            }
        }

        fn apply(&mut self, action: &Action) -> ActionResult {
            log::debug!("apply {}", action.op());
            let idx = self.cfg.ifindex;
            let failed = |op: &'static str, e: &dyn std::fmt::Display| {
                log::error!("{op}: {e}");
                ActionResult::Failed { op, error: e.to_string() }
            };
            match action {
                Action::PinNeighbour { ip, mac } => match self.nl.pin(idx, *ip, *mac) {
                    Ok(()) => ActionResult::Done,
                    Err(e) => failed("pin_neighbour", &e),
                },
                Action::UnpinNeighbour { ip } => match self.nl.unpin(idx, *ip) {
                    Ok(()) => ActionResult::Done,
                    Err(e) => failed("unpin_neighbour", &e),
                },
                Action::SetAddress { cidr, router } => {
                    self.set_promote_secondaries();
                    if let Err(e) = self.nl.add_address(idx, *cidr) {
                        return failed("set_address", &e);
                    }
                    // HELLO carries our address: it is the lease's from now on.
                    self.cfg.terminal.write().ip = cidr.addr;
                    match router.map(|gw| self.nl.set_default_route(idx, gw)) {
                        Some(Err(e)) => failed("set_address", &format!("default route: {e}")),
                        _ => ActionResult::Done,
                    }
                }
                Action::DelAddress { cidr } => match self.nl.del_address(idx, *cidr) {
                    Ok(()) => ActionResult::Done,
                    Err(e) => failed("del_address", &e),
                },
                Action::Transmit { kind, frame } => match self.cfg.tx.send(frame) {
                    Ok(()) => ActionResult::Done,
                    Err(e) => failed("transmit", &format!("{}: {e}", kind.as_str())),
                },
                Action::Connect { ip, port } => {
                    self.connect(*ip, *port);
                    ActionResult::Done
                }
                Action::SetServer { ip, mac } => {
                    log::info!("server is now {ip}{}", mac.map(|m| format!(" at {m}")).unwrap_or_default());
                    ActionResult::Done
                }
                // Logged by the worker's decision sink (log_lines.rs), which knows the decision
                // the alarm belongs to and gives its line the journal fields.
                Action::Alarm { .. } => ActionResult::Done,
                Action::Hook { reason, env } => {
                    self.cfg.hooks.fire(*reason, env);
                    ActionResult::Done
                }
            }
        }

        fn persist(&mut self, state: &State) -> std::io::Result<()> {
            state_file::save(&self.cfg.state_dir, state)
        }
    }
}
