//! Running the integrator's hook (DESIGN §9) and, in follow mode, `renew_command`.
//!
//! Contract: a hook never blocks the pipeline: it runs on its own thread, is killed after
//! `hook_timeout_ms`, and at most [`MAX_IN_FLIGHT`] run at once and [`MAX_PER_SECOND`] start per
//! second; beyond that a hook is skipped with a warning (a flood of conflicts cannot fork-bomb
//! the terminal). The environment mirrors dhcpcd-run-hooks.

use crate::engine::{HookEnv, HookReason};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MAX_IN_FLIGHT: usize = 8;
pub const MAX_PER_SECOND: usize = 10;

#[derive(Clone)]
pub struct Hooks {
    pub hook: Option<PathBuf>,
    pub renew_command: Option<String>,
    pub interface: String,
    pub timeout: Duration,
    in_flight: Arc<AtomicUsize>,
    window: Arc<Mutex<(Instant, usize)>>,
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl Hooks {
    pub fn new(hook: Option<PathBuf>, renew_command: Option<String>, interface: String, timeout: Duration) -> Hooks {
        Hooks {
            hook,
            renew_command: renew_command.filter(|c| !c.trim().is_empty()),
            interface,
            timeout,
            in_flight: Arc::new(AtomicUsize::new(0)),
            window: Arc::new(Mutex::new((Instant::now(), 0))),
        }
    }

    fn admit(&self) -> bool {
        let mut w = self.window.lock();
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        if w.1 >= MAX_PER_SECOND || self.in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
            return false;
        }
        w.1 += 1;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Starts the hook for `reason` (and, for FORCERENEW, `renew_command` first). Returns
    /// immediately.
    pub fn fire(&self, reason: HookReason, env: &HookEnv) {
        let renew = if reason == HookReason::ForceRenew { self.renew_command.clone() } else { None };
        if self.hook.is_none() && renew.is_none() {
            return;
        }
        if !self.admit() {
            log::warn!("hook {} skipped: hook rate limit reached", reason.as_str());
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
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("hook".into()).spawn(move || {
            if let Some(cmd) = renew {
                me.run_one("renew_command", Command::new("/bin/sh").arg("-c").arg(cmd), &vars);
            }
            if let Some(h) = &me.hook {
                me.run_one(&h.display().to_string(), &mut Command::new(h), &vars);
            }
            me.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
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
