//! The worker thread: runs the engine. It waits on the capture channel, the applier's results or
//! the engine's next deadline, feeds the engine, and forwards decisions to the log and actions to
//! the applier.
//!
//! Contract: in replay the clock is the capture's: before each frame every deadline up to the
//! frame's time runs, and at the end every deadline up to the last frame's time; nothing after
//! the last frame runs. Live, the clocks are read once per wakeup: CLOCK_BOOTTIME for the engine,
//! wall time only to convert a decision's time for its log line; the frames of one batch from
//! the capture thread are decided at that time, and the status sink runs once after them.
//!
//! Live, `transmit` actions are carried out here, in order, by [`FrameTx`], and never reach the
//! applier: a frame changes no kernel state, so its order against the applier's actions does
//! not matter, and each hand-off to another thread is a wake-up on the path from FORCERENEW to
//! our REQUEST (`benches/forcerenew.rs`: the median fell from about 0.30 to 0.18 ms when frames
//! stopped going through the applier). Every other action, and every transmit in replay, goes
//! to the applier.
//!
//! A changed state is handed to the applier ahead of the first hook among the actions that
//! changed it (after the pins and addresses before that hook), and the applier holds life-cycle
//! hooks while the last write failed (see [`run_applier`]), so no hook runs ahead of the state
//! it reports (DESIGN §10).

use super::applier::Applier;
use super::clock::Clock;
use crate::engine::{ActionResult, Decision, Engine, Inbound, Instant, State};
use crossbeam_channel::{select, Receiver, Sender};

/// From the capture thread.
#[derive(Debug)]
pub enum CaptureMsg {
    /// Frames in capture order, each with its source's time (replay: the pcap's).
    Frames(Vec<(Instant, Inbound)>),
    /// The source ended; the time of its last frame (replay runs deadlines up to it).
    End(Option<Instant>),
}

/// To the applier thread.
#[derive(Debug)]
pub enum ApplierMsg {
    Action(crate::engine::Action),
    Persist(Box<State>),
    /// Answered once everything before it was carried out (replay's lock-step).
    Barrier(Sender<()>),
}

pub enum Timing {
    /// Time comes from the frames.
    Replay,
    Live(Box<dyn Clock>),
}

/// Sends one whole Ethernet frame (live only; see the module comment).
pub type FrameTx = Box<dyn FnMut(&[u8]) -> std::io::Result<()> + Send>;

/// Gets each decision with its wall-clock time (replay: the pcap time).
pub type DecisionSink = Box<dyn FnMut(&Decision, Instant) + Send>;
/// Called (live only) after anything changed: decisions made or results handled.
/// It returns how soon it wants to be called again when it held a write back (a burst of
/// counter-only changes is written at most once a second, and its last state must still land).
pub type StatusSink = Box<dyn FnMut(&Engine, Instant) -> Option<std::time::Duration> + Send>;

/// systemd's watchdog (sd_watchdog_enabled(3)), pinged from the worker's loop so that a worker
/// stuck in the engine stops the pings and systemd restarts the daemon. The ping itself (an
/// sd_notify datagram) belongs to the daemon, which hands it in.
pub struct Watchdog {
    /// Half of WATCHDOG_USEC, as systemd recommends.
    pub every: std::time::Duration,
    pub ping: Box<dyn FnMut() + Send>,
}

/// Out-of-band requests to the worker (from the signal thread).
#[derive(Debug)]
pub enum Control {
    /// SIGHUP: new keys from a re-read config.
    ReloadKeys {
        keys: std::collections::BTreeMap<u32, crate::wire::sig::VerifyKey>,
        dhcp_keys: std::collections::BTreeMap<u32, Vec<u8>>,
    },
}

/// Guards against an engine bug that keeps a deadline in the past: never spin.
const MAX_TIMER_STEPS: usize = 10_000;

pub struct Worker {
    pub engine: Engine,
    pub timing: Timing,
    pub to_applier: Sender<ApplierMsg>,
    pub results: Receiver<ActionResult>,
    pub sink: DecisionSink,
    pub status: Option<StatusSink>,
    pub control: Receiver<Control>,
    /// Live: frames go out from here (with where a failure is reported).
    pub frames: Option<(FrameTx, Sender<ActionResult>)>,
    /// When the status sink asked to be called again (one wake-up, only after a held write).
    pub status_again: Option<std::time::Instant>,
    /// Live, under systemd with `WatchdogSec=`: pinged from [`Worker::run_live`]'s loop.
    pub watchdog: Option<Watchdog>,
}

impl Worker {
    /// Actions first (a frame is on the wire before its decision is even logged), then the
    /// decisions. A changed state goes to the applier before the first hook of the batch (or
    /// after its last action when it has none), so a change's hooks never run before its state
    /// is on disk (DESIGN §10); the applier holds them when that write fails.
    fn flush(&mut self) {
        let mut unsaved = self.engine.take_dirty();
        while let Some(a) = self.engine.poll_action() {
            if let (Some((tx, failed)), crate::engine::Action::Transmit { kind, frame }) = (self.frames.as_mut(), &a) {
                if let Err(e) = tx(frame) {
                    log::error!("transmit {}: {e}", kind.as_str());
                    let _ =
                        failed.send(ActionResult::Failed { op: "transmit", error: format!("{}: {e}", kind.as_str()) });
                }
                continue;
            }
            if unsaved && matches!(a, crate::engine::Action::Hook { .. }) {
                self.persist();
                unsaved = false;
            }
            // The applier outlives the worker; a send error means it died, and then there is
            // nobody left to carry anything out.
            let _ = self.to_applier.send(ApplierMsg::Action(a));
        }
        while let Some(d) = self.engine.poll_decision() {
            let wall = Instant::from_micros(self.engine.wall_us(d.time));
            (self.sink)(&d, wall);
        }
        if unsaved {
            self.persist();
        }
    }

    fn persist(&mut self) {
        let _ = self.to_applier.send(ApplierMsg::Persist(Box::new(self.engine.state().clone())));
    }

    /// Runs every deadline up to `upto`. A deadline that does not move forward after it ran
    /// (one saturated at the end of time, or an engine bug) stops the loop instead of spinning.
    /// Replay steps through each deadline at its own time; live, what is overdue (after a
    /// suspend, say) runs at `now`, so the engine catches up in one step instead of replaying
    /// every missed retransmission.
    fn run_timers(&mut self, upto: Instant, live: bool) {
        let mut steps = 0;
        let mut last = None;
        while let Some(d) = self.engine.poll_timeout() {
            if d > upto || last == Some(d) || steps >= MAX_TIMER_STEPS {
                break;
            }
            self.engine.handle_timeout(if live { upto } else { d });
            self.flush();
            last = Some(d);
            steps += 1;
        }
        if steps >= MAX_TIMER_STEPS {
            log::error!("engine kept a deadline in the past; timers stopped at {upto}");
        }
    }

    fn drain_results(&mut self, now: Instant) {
        while let Ok(r) = self.results.try_recv() {
            self.engine.handle_result(now, r);
            self.flush();
        }
    }

    /// Runs until the capture channel closes or says End. Returns the engine for inspection.
    pub fn run(mut self, rx: Receiver<CaptureMsg>) -> Engine {
        match std::mem::replace(&mut self.timing, Timing::Replay) {
            Timing::Replay => self.run_replay(&rx),
            Timing::Live(clock) => self.run_live(&rx, clock.as_ref()),
        }
        self.flush();
        self.engine
    }

    fn run_replay(&mut self, rx: &Receiver<CaptureMsg>) {
        for msg in rx.iter() {
            match msg {
                CaptureMsg::Frames(frames) => {
                    for (t, inbound) in frames {
                        self.run_timers(t, false);
                        self.engine.handle_frame(t, &inbound);
                        self.flush();
                        self.wait_results(t);
                    }
                }
                CaptureMsg::End(last) => {
                    if let Some(t) = last {
                        self.run_timers(t, false);
                        self.wait_results(t);
                    }
                    return;
                }
            }
        }
    }

    /// Replay: the Recorder answers at once, so wait for every answer to the actions sent so far
    /// before the next frame. That keeps the log identical from run to run.
    fn wait_results(&mut self, t: Instant) {
        loop {
            self.drain_results(t);
            let (tx, rx) = crossbeam_channel::bounded(1);
            if self.to_applier.send(ApplierMsg::Barrier(tx)).is_err() {
                return;
            }
            let _ = rx.recv();
            if self.results.is_empty() {
                return;
            }
        }
    }

    fn changed(&mut self, now: Instant) {
        if let Some(s) = self.status.as_mut() {
            self.status_again = s(&self.engine, now).map(|d| std::time::Instant::now() + d);
        }
    }

    /// Reads both clocks once: the monotonic one drives the engine, the wall one only converts.
    fn wake(&mut self, clock: &dyn Clock) -> Instant {
        let now = clock.now();
        let (unix_us, synced) = clock.wall();
        self.engine.set_wall_clock(now, unix_us, synced);
        now
    }

    /// A clean stop: what the engine does on the way out (a DHCPRELEASE with release_on_stop)
    /// still reaches the applier, which drains before exit.
    fn stop_live(&mut self, clock: &dyn Clock) {
        let now = self.wake(clock);
        self.engine.stop(now);
        self.flush();
    }

    fn run_live(&mut self, rx: &Receiver<CaptureMsg>, clock: &dyn Clock) {
        let now = self.wake(clock);
        self.engine.start(now);
        self.flush();
        self.changed(now);
        let control = self.control.clone();
        let mut watchdog = self.watchdog.take();
        let mut ping_at = std::time::Instant::now();
        loop {
            // Pinged whenever one is due, whichever arm woke us: under a flood the frames' arm is
            // always ready, and the ping must not wait for a quiet moment.
            if let Some(w) = watchdog.as_mut() {
                let t = std::time::Instant::now();
                if t >= ping_at {
                    (w.ping)();
                    ping_at = t + w.every;
                }
            }
            // Only with the watchdog on: without it the idle daemon has no timer at all.
            let dog_tick = match &watchdog {
                Some(_) => crossbeam_channel::at(ping_at),
                None => crossbeam_channel::never(),
            };
            // No deadline, no timer: an idle daemon does not wake up.
            let tick = match self.engine.poll_timeout() {
                Some(d) => crossbeam_channel::after(std::time::Duration::from_micros(d.saturating_sub(clock.now()))),
                None => crossbeam_channel::never(),
            };
            let status_tick = match self.status_again {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(rx) -> msg => match msg {
                    Ok(CaptureMsg::Frames(frames)) => {
                        // A batch (a ring block's worth under load) is decided at one `now`,
                        // one clock read per wakeup, and the status sink runs once after it:
                        // under a flood its snapshot, not the decisions, was most of this
                        // thread's time (benches/live.rs).
                        let now = self.wake(clock);
                        self.run_timers(now, true);
                        for (_, inbound) in &frames {
                            self.engine.handle_frame(now, inbound);
                            self.flush();
                        }
                        self.changed(now);
                    }
                    Ok(CaptureMsg::End(_)) | Err(_) => return self.stop_live(clock),
                },
                recv(self.results) -> r => if let Ok(r) = r {
                    let now = self.wake(clock);
                    self.engine.handle_result(now, r);
                    self.flush();
                    self.changed(now);
                },
                recv(control) -> c => match c {
                    Ok(Control::ReloadKeys { keys, dhcp_keys }) => {
                        log::info!("reloaded keys: {} ipsync, {} DHCP", keys.len(), dhcp_keys.len());
                        self.engine.reload_keys(keys, dhcp_keys);
                    }
                    Err(_) => {}
                },
                recv(status_tick) -> _ => {
                    let now = self.wake(clock);
                    self.changed(now);
                },
                recv(tick) -> _ => {
                    let now = self.wake(clock);
                    self.run_timers(now, true);
                    self.changed(now);
                }
                // The ping itself is at the top of the loop.
                recv(dog_tick) -> _ => {}
            }
        }
    }
}

/// Life-cycle hooks held while the state on disk is older than the engine's (DESIGN §10: a
/// change's hooks run only once its state is on disk). Bounded: after days of a read-only disk
/// the oldest go first, with an error, since the newest say where the server is now.
pub const MAX_HELD_HOOKS: usize = super::hooks::MAX_LIFECYCLE_QUEUED;

/// The applier thread's loop: carry out actions in order and report each result. Returns the
/// applier and how many times the state could not be persisted.
///
/// Persistence gates the hooks: after a failed write every life-cycle hook (all but CONFLICT
/// and SERVER_UNREACHABLE, which report evidence rather than follow a change) is held, in
/// order, and the next successful write releases them, each once, and reports
/// [`ActionResult::Persisted`]. When and how often to write again is the engine's policy; this
/// loop only keeps the order that the engine's actions and the worker's writes arrive in.
pub fn run_applier(
    mut applier: Box<dyn Applier>,
    rx: Receiver<ApplierMsg>,
    results: Sender<ActionResult>,
) -> (Box<dyn Applier>, u64) {
    applier.start(results.clone());
    let mut persist_failures = 0;
    let mut unsaved = false;
    let mut held: std::collections::VecDeque<crate::engine::Action> = std::collections::VecDeque::new();
    let apply = |applier: &mut Box<dyn Applier>, a: &crate::engine::Action| {
        let r = applier.apply(a);
        if r != ActionResult::Done {
            let _ = results.send(r);
        }
    };
    for msg in rx.iter() {
        match msg {
            ApplierMsg::Action(a) => match &a {
                crate::engine::Action::Hook { reason, .. } if unsaved && !reason.is_alarm() => {
                    if held.len() >= MAX_HELD_HOOKS {
                        if let Some(crate::engine::Action::Hook { reason, .. }) = held.pop_front() {
                            log::error!("hook {} dropped: {MAX_HELD_HOOKS} hooks wait for the state", reason.as_str());
                        }
                    }
                    log::warn!("hook {} held until the state is on disk", reason.as_str());
                    held.push_back(a);
                }
                _ => apply(&mut applier, &a),
            },
            ApplierMsg::Persist(s) => match applier.persist(&s) {
                Ok(()) => {
                    if unsaved {
                        unsaved = false;
                        for a in held.drain(..) {
                            apply(&mut applier, &a);
                        }
                        let _ = results.send(ActionResult::Persisted);
                    }
                }
                Err(e) => {
                    persist_failures += 1;
                    unsaved = true;
                    let _ = results.send(ActionResult::PersistFailed { error: e.to_string() });
                }
            },
            ApplierMsg::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
    if !held.is_empty() {
        log::error!("{} hooks never ran: the state was never written", held.len());
    }
    (applier, persist_failures)
}
