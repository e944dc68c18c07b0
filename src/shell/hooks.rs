//! Running the integrator's hook (DESIGN §9) and, in follow mode, `renew_command`.
//!
//! Contract: a hook never blocks the pipeline: each hook is
//! killed after `hook_timeout_ms`. Life-cycle hooks (SERVER_CHANGED, SERVER_CONNECTED,
//! FORCERENEW, LEASE_*) are never dropped or delayed by alarms (DESIGN §5): they have their own
//! queue and thread and run in the order fired (SERVER_CHANGED before the SERVER_CONNECTED that
//! follows it). Alarm hooks (CONFLICT, SERVER_UNREACHABLE), which the engine
//! already coalesces, are further bounded: at most [`MAX_QUEUED`] wait and [`MAX_PER_SECOND`]
//! start per second, beyond that one is skipped with a warning, so no flood can fork-bomb the
//! terminal. The environment mirrors dhcpcd-run-hooks.

use crate::engine::{HookEnv, HookReason};
use crossbeam_channel::{bounded, Sender, TrySendError};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MAX_QUEUED: usize = 16;
pub const MAX_PER_SECOND: usize = 10;
/// Life-cycle hooks come only from authenticated, rate-limited events; this bound is a backstop.
pub const MAX_LIFECYCLE_QUEUED: usize = 1024;

#[derive(Clone)]
pub struct Hooks {
    pub hook: Option<PathBuf>,
    pub renew_command: Option<String>,
    pub interface: String,
    pub timeout: Duration,
    queue: Option<Sender<Job>>,
    lifecycle: Option<Sender<Job>>,
    window: Arc<Mutex<(Instant, usize)>>,
}

struct Job {
    renew: Option<String>,
    vars: Vec<(&'static str, String)>,
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl Hooks {
    pub fn new(hook: Option<PathBuf>, renew_command: Option<String>, interface: String, timeout: Duration) -> Hooks {
        let mut h = Hooks {
            hook,
            renew_command: renew_command.filter(|c| !c.trim().is_empty()),
            interface,
            timeout,
            queue: None,
            lifecycle: None,
            window: Arc::new(Mutex::new((Instant::now(), 0))),
        };
        if h.hook.is_some() || h.renew_command.is_some() {
            let (tx, rx) = bounded::<Job>(MAX_QUEUED);
            let (ltx, lrx) = bounded::<Job>(MAX_LIFECYCLE_QUEUED);
            // Two threads: a running alarm hook never delays a life-cycle hook (DESIGN §5); each
            // queue keeps its own order (SERVER_CHANGED before its SERVER_CONNECTED).
            let run = |name: &str, rx: crossbeam_channel::Receiver<Job>| {
                let runner = h.clone();
                std::thread::Builder::new().name(name.into()).spawn(move || {
                    for job in rx.iter() {
                        if let Some(cmd) = job.renew {
                            runner.run_one("renew_command", Command::new("/bin/sh").arg("-c").arg(cmd), &job.vars);
                        }
                        if let Some(p) = &runner.hook {
                            runner.run_one(&p.display().to_string(), &mut Command::new(p), &job.vars);
                        }
                    }
                })
            };
            let spawned = run("hooks", lrx).and_then(|_| run("alarm-hooks", rx));
            match spawned {
                Ok(_) => {
                    h.queue = Some(tx);
                    h.lifecycle = Some(ltx);
                }
                Err(e) => log::error!("cannot start the hook thread: {e}; hooks are disabled"),
            }
        }
        h
    }

    fn admit(&self) -> bool {
        let mut w = self.window.lock();
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        if w.1 >= MAX_PER_SECOND {
            return false;
        }
        w.1 += 1;
        true
    }

    /// Queues the hook for `reason` (and, for FORCERENEW, `renew_command` first). Returns
    /// immediately.
    pub fn fire(&self, reason: HookReason, env: &HookEnv) {
        let alarm = matches!(reason, HookReason::Conflict | HookReason::ServerUnreachable);
        let Some(queue) = (if alarm { &self.queue } else { &self.lifecycle }) else { return };
        let renew = if reason == HookReason::ForceRenew { self.renew_command.clone() } else { None };
        if self.hook.is_none() && renew.is_none() {
            return;
        }
        if alarm && !self.admit() {
            log::warn!("hook {} skipped: more than {MAX_PER_SECOND} hooks in a second", reason.as_str());
            return;
        }
        let vars: Vec<(&'static str, String)> = vec![
            ("REASON", reason.as_str().to_string()),
            ("INTERFACE", self.interface.clone()),
            ("OLD_SERVER_IP", fmt_opt(env.old_server_ip)),
            ("NEW_SERVER_IP", fmt_opt(env.new_server_ip)),
            ("SERVER_MAC", fmt_opt(env.server_mac)),
            ("SERVICE_PORT", fmt_opt(env.service_port)),
            ("OWN_IP", fmt_opt(env.own_ip)),
            ("OLD_OWN_IP", fmt_opt(env.old_own_ip)),
            ("CONFLICT_KIND", env.conflict_kind.unwrap_or("").to_string()),
        ];
        match queue.try_send(Job { renew, vars }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::warn!("hook {} skipped: {} hooks already waiting", reason.as_str(), queue.len())
            }
            Err(TrySendError::Disconnected(_)) => {
                log::error!("hook {} skipped: the hook thread is gone", reason.as_str())
            }
        }
    }

    fn run_one(&self, what: &str, cmd: &mut Command, vars: &[(&'static str, String)]) {
        use std::os::unix::process::CommandExt;
        cmd.envs(vars.iter().map(|(k, v)| (*k, v.as_str()))).stdin(Stdio::null());
        // The integrator's script must not inherit our network capabilities.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                log::error!("{what}: cannot start: {e}");
                return;
            }
        };
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => {
                    log::warn!("{what} ({}) exited with {status}", vars[0].1);
                    return;
                }
                Ok(None) if started.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    log::warn!("{what} ({}) killed after {:?}", vars[0].1, self.timeout);
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    log::error!("{what}: wait: {e}");
                    return;
                }
            }
        }
    }
}
