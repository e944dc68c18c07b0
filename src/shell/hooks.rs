//! Running the integrator's hook (DESIGN §9) and, in follow mode, `renew_command`.
//!
//! Contract:
//! - **Never blocks the pipeline.** [`Hooks::fire`] only queues. Life-cycle hooks
//!   (SERVER_CHANGED, SERVER_CONNECTED, FORCERENEW, LEASE_*) are never dropped or delayed by
//!   alarms (DESIGN §5): they have their own queue and thread and run in the order fired
//!   (SERVER_CHANGED before the SERVER_CONNECTED that follows it). Alarm hooks (CONFLICT,
//!   SERVER_UNREACHABLE), which the engine already coalesces, are further bounded: at most
//!   [`MAX_QUEUED`] wait and [`MAX_PER_SECOND`] start per second, beyond that one is skipped with
//!   a warning, so no flood can fork-bomb the terminal.
//! - **What a program sees.** Its environment is only REASON, INTERFACE, OLD_SERVER_IP,
//!   NEW_SERVER_IP, SERVER_MAC, SERVICE_PORT, OWN_IP, OLD_OWN_IP, CONFLICT_KIND (empty when not
//!   known), SERVER_NAME (only when the ANNOUNCE or WELCOME carried one) and `PATH=`[`SAFE_PATH`], as
//!   dhcpcd-run-hooks does; nothing of the daemon's own environment leaks through. Its stdin is
//!   /dev/null; stdout and stderr are the daemon's (the journal).
//! - **Its own process group, killed whole at the timeout.** Each program starts as the leader
//!   of a new process group. If it is still running after `hook_timeout_ms`, the whole group
//!   gets SIGKILL and the program is reaped, so a `sleep 1000 &` it left behind dies with it.
//!   A program that exits in time may leave children running (a viewer it launched); one that
//!   moves itself to another group or session (setsid) has left ours. Either is its own business.
//! - **No capabilities**, even when the daemon runs as root. Between fork and exec, with raw
//!   system calls only: no_new_privs is set (so neither a setuid binary nor file capabilities
//!   give any back, and root's exec does not refill the sets: the kernel then grants no more
//!   than was held before exec); when the daemon holds CAP_SETPCAP (root), SECBIT_NOROOT is
//!   locked on and every capability is dropped from the bounding set; the ambient set is
//!   cleared; and the effective, permitted and inheritable sets are emptied (capset). Each step
//!   is best effort, so a sandbox that refuses one never costs the hook: after the start the
//!   daemon reads `/proc/PID/status` and says once, at error level, if any capability
//!   survived. Without CAP_SETPCAP the bounding set stays as inherited (systemd's
//!   CapabilityBoundingSet), which is said once at start. The program still runs under the
//!   daemon's uid: a root daemon's hook owns root's files. Only a non-root `User=`
//!   (capabilities/) takes that away.
//! - **`hook` may be a directory.** Then, at each run, its entries are listed and those that are
//!   regular files (or links to one) with an execute bit run one after another in the byte
//!   order of their names, each with its own timeout. Skipped, as run-parts does: names
//!   starting with `.`, ending in `~` or `#` (editor backups and autosaves), and packaging
//!   leftovers containing `.dpkg-` or ending in `.rpmnew`, `.rpmsave` or `.rpmorig`.
//! - `renew_command` runs through `/bin/sh -c`, confined the same way, before the FORCERENEW hook.

use crate::engine::{HookEnv, HookReason};
use crossbeam_channel::{bounded, Sender, TrySendError};
use parking_lot::Mutex;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MAX_QUEUED: usize = 16;
pub const MAX_PER_SECOND: usize = 10;
/// Life-cycle hooks come only from authenticated, rate-limited events; this bound is a backstop.
pub const MAX_LIFECYCLE_QUEUED: usize = 1024;
/// The only PATH a hook gets: the system's directories, never the daemon's own PATH, which
/// whoever started it chose.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone)]
pub struct Hooks {
    pub hook: Option<PathBuf>,
    pub renew_command: Option<String>,
    pub interface: String,
    pub timeout: Duration,
    queue: Option<Sender<Job>>,
    lifecycle: Option<Sender<Job>>,
    window: Arc<Mutex<(Instant, usize)>>,
    confine: Confine,
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
            confine: Confine::probe(),
        };
        if h.hook.is_some() || h.renew_command.is_some() {
            if !h.confine.drop_bounding {
                log::info!(
                    "hooks: no CAP_SETPCAP, so they keep the inherited capability bounding set; they still start with no capabilities and no_new_privs"
                );
            }
            let (tx, rx) = bounded::<Job>(MAX_QUEUED);
            let (ltx, lrx) = bounded::<Job>(MAX_LIFECYCLE_QUEUED);
            // Two threads: a running alarm hook never delays a life-cycle hook (DESIGN §5); each
            // queue keeps its own order (SERVER_CHANGED before its SERVER_CONNECTED).
            let run = |name: &str, rx: crossbeam_channel::Receiver<Job>| {
                let runner = h.clone();
                std::thread::Builder::new().name(name.into()).spawn(move || {
                    for job in rx.iter() {
                        runner.run_job(&job);
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
        let alarm = reason.is_alarm();
        let Some(queue) = (if alarm { &self.queue } else { &self.lifecycle }) else { return };
        let renew = if reason == HookReason::ForceRenew { self.renew_command.clone() } else { None };
        if self.hook.is_none() && renew.is_none() {
            return;
        }
        if alarm && !self.admit() {
            log::warn!("hook {} skipped: more than {MAX_PER_SECOND} hooks in a second", reason.as_str());
            return;
        }
        let vars = hook_vars(reason, &self.interface, env);
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

    fn run_job(&self, job: &Job) {
        if let Some(cmd) = &job.renew {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(cmd);
            self.run_one("renew_command", c, &job.vars);
        }
        if let Some(p) = &self.hook {
            for program in programs(p) {
                self.run_one(&program.display().to_string(), Command::new(&program), &job.vars);
            }
        }
    }

    fn run_one(&self, what: &str, mut cmd: Command, vars: &[(&'static str, String)]) {
        let reason = vars.first().map_or("", |(_, v)| v.as_str());
        cmd.env_clear()
            .env("PATH", SAFE_PATH)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .process_group(0);
        let confine = self.confine;
        // SAFETY: the closure runs between fork and exec and makes only raw system calls
        // (prctl, capset), which are async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || confine.apply());
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                log::error!("{what} ({reason}): cannot start: {e}");
                return;
            }
        };
        // spawn returned after the exec: these are the program's own sets.
        self.confine.check(what, child.id());
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => {
                    log::warn!("{what} ({reason}) exited with {status}");
                    return;
                }
                Ok(None) if started.elapsed() >= self.timeout => {
                    // The whole group: what the program started dies with it.
                    let pgid = libc::pid_t::try_from(child.id()).unwrap_or(0);
                    // SAFETY: killpg takes two integers. The group is the child's own (it is its
                    // leader and not yet reaped), so no other process can have that id.
                    let grouped = pgid > 0 && unsafe { libc::killpg(pgid, libc::SIGKILL) } == 0;
                    if !grouped {
                        let _ = child.kill();
                    }
                    let _ = child.wait();
                    log::warn!("{what} ({reason}) killed with its process group after {:?}", self.timeout);
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

/// The environment of DESIGN §9, in that order (REASON first).
fn hook_vars(reason: HookReason, interface: &str, env: &HookEnv) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("REASON", reason.as_str().to_string()),
        ("INTERFACE", interface.to_string()),
        ("OLD_SERVER_IP", fmt_opt(env.old_server_ip)),
        ("NEW_SERVER_IP", fmt_opt(env.new_server_ip)),
        ("SERVER_MAC", fmt_opt(env.server_mac)),
        ("SERVICE_PORT", fmt_opt(env.service_port)),
        ("OWN_IP", fmt_opt(env.own_ip)),
        ("OLD_OWN_IP", fmt_opt(env.old_own_ip)),
        ("CONFLICT_KIND", env.conflict_kind.unwrap_or("").to_string()),
    ];
    if let Some(name) = &env.server_name {
        vars.push(("SERVER_NAME", name.as_str().to_string()));
    }
    vars
}

/// Whether a directory entry named `name` is one of the hooks (the module's rule).
pub fn runs_in_dir(name: &[u8]) -> bool {
    let skipped_suffix = [&b"~"[..], b"#", b".rpmnew", b".rpmsave", b".rpmorig"].iter().any(|s| name.ends_with(s));
    let dpkg = name.windows(6).any(|w| w == b".dpkg-");
    !name.is_empty() && !name.starts_with(b".") && !skipped_suffix && !dpkg
}

/// The programs `hook` stands for: itself, or, for a directory, its hooks in name order. A
/// missing hook is returned as it is, so that its start fails and says so.
pub fn programs(hook: &Path) -> Vec<PathBuf> {
    if !std::fs::metadata(hook).is_ok_and(|m| m.is_dir()) {
        return vec![hook.to_path_buf()];
    }
    let entries = match std::fs::read_dir(hook) {
        Ok(e) => e,
        Err(e) => {
            log::error!("hook directory {}: {e}", hook.display());
            return Vec::new();
        }
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| runs_in_dir(e.file_name().as_bytes()))
        .map(|e| e.path())
        // Links are followed here, as run-parts does: the target must be an executable file.
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .collect();
    out.sort_by(|a, b| a.file_name().map(OsStrExt::as_bytes).cmp(&b.file_name().map(OsStrExt::as_bytes)));
    out
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;
const CAP_SETPCAP: u32 = 8;
/// linux/securebits.h: root gets no capabilities at exec, locked so the hook cannot undo it;
/// keep-caps off and locked; ambient raising refused and locked. NO_SETUID_FIXUP is left off on
/// purpose: it would keep capabilities across a uid change, the opposite of what we want.
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
const HOOK_SECUREBITS: libc::c_ulong = SECBIT_NOROOT
    | SECBIT_NOROOT_LOCKED
    | SECBIT_KEEP_CAPS_LOCKED
    | SECBIT_NO_CAP_AMBIENT_RAISE
    | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Said once per daemon: a kernel that keeps capabilities will keep them for every hook.
static CAPS_WARNED: AtomicBool = AtomicBool::new(false);

/// How a hook is stripped of privilege, decided once in the daemon (where it may read files
/// and allocate) and applied in the child (where it may not).
#[derive(Debug, Clone, Copy)]
struct Confine {
    /// We hold CAP_SETPCAP: securebits and the bounding set can be changed.
    drop_bounding: bool,
    /// The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).
    last_cap: u32,
}

impl Confine {
    fn probe() -> Confine {
        let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget writes two CapData into the live array and reads the live header.
        let ok = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) } == 0;
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63u32)
            .min(63);
        Confine { drop_bounding: ok && data[0].effective & (1 << CAP_SETPCAP) != 0, last_cap }
    }

    /// Runs in the child between fork and exec: raw system calls only. Every step is best
    /// effort: a sandbox that refuses one (a seccomp filter without capset, a kernel without
    /// ambient capabilities, a securebit systemd already locked) must not cost the integrator
    /// the hook, and any one of no_new_privs + an empty bounding set, SECBIT_NOROOT or capset
    /// keeps a root hook from holding anything. [`Confine::check`] reports what survived.
    fn apply(self) -> std::io::Result<()> {
        let _ = prctl(libc::PR_SET_NO_NEW_PRIVS, 1);
        if self.drop_bounding {
            let _ = prctl(libc::PR_SET_SECUREBITS, HOOK_SECUREBITS);
            for cap in 0..=self.last_cap {
                let _ = prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap));
            }
        }
        let _ = prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong);
        let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
        let data = [CapData::default(); 2];
        // SAFETY: capset reads the live header and two CapData from the live array.
        let _ = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
        Ok(())
    }

    /// Reads what the started program holds, and says once if it is not nothing.
    fn check(self, what: &str, pid: u32) {
        let Some(caps) = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| parse_caps(&s))
        else {
            return;
        };
        let kept = caps.effective | caps.permitted | caps.ambient != 0 || (self.drop_bounding && caps.bounding != 0);
        if kept && !CAPS_WARNED.swap(true, Ordering::Relaxed) {
            log::error!(
                "{what}: the system refused to drop the hook's capabilities (CapEff {:016x}, CapPrm {:016x}, CapBnd {:016x}); hooks run with them, against DESIGN §9 (is capset or prctl filtered?)",
                caps.effective,
                caps.permitted,
                caps.bounding
            );
        }
    }
}

/// prctl(2) with one argument, the rest zero: async-signal-safe.
fn prctl(option: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
    // SAFETY: every option used here takes integers only.
    unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) }
}

/// The capability sets of a `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcCaps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// `None` unless every set is there: a partial read tells nothing.
pub fn parse_caps(status: &str) -> Option<ProcCaps> {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(ProcCaps {
        inheritable: field("CapInh:")?,
        permitted: field("CapPrm:")?,
        effective: field("CapEff:")?,
        bounding: field("CapBnd:")?,
        ambient: field("CapAmb:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_rule_skips_dotfiles_backups_and_package_leftovers() {
        for skip in [
            &b".hidden"[..],
            b"hook~",
            b"#hook#",
            b"10-viewer.dpkg-old",
            b"10-viewer.dpkg-dist",
            b"x.rpmnew",
            b"x.rpmsave",
            b"x.rpmorig",
            b"",
        ] {
            assert!(!runs_in_dir(skip), "{}", String::from_utf8_lossy(skip));
        }
        for run in [&b"10-viewer"[..], b"hook", b"a.sh", b"x.rpm", b"dpkg-helper"] {
            assert!(runs_in_dir(run), "{}", String::from_utf8_lossy(run));
        }
    }

    #[test]
    fn environment_is_the_design_list_with_server_name_only_when_known() {
        let env = HookEnv { new_server_ip: Some(std::net::Ipv4Addr::new(10, 77, 0, 20)), ..HookEnv::default() };
        let names = |v: &[(&'static str, String)]| v.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let v = hook_vars(HookReason::ServerChanged, "eth0", &env);
        assert_eq!(
            names(&v),
            [
                "REASON",
                "INTERFACE",
                "OLD_SERVER_IP",
                "NEW_SERVER_IP",
                "SERVER_MAC",
                "SERVICE_PORT",
                "OWN_IP",
                "OLD_OWN_IP",
                "CONFLICT_KIND"
            ]
        );
        assert_eq!(v[0].1, "SERVER_CHANGED");
        assert_eq!(v[3].1, "10.77.0.20");
        let named = HookEnv { server_name: crate::engine::ServerName::new("vdi-1"), ..env };
        let v = hook_vars(HookReason::ServerChanged, "eth0", &named);
        assert_eq!(v.last(), Some(&("SERVER_NAME", "vdi-1".to_string())));
    }

    #[test]
    fn proc_status_capabilities_parse_and_partial_reads_do_not() {
        let s = "Name:\tsh\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let c = parse_caps(s).unwrap();
        assert_eq!(c.bounding, 0x1ff_ffff_ffff);
        assert_eq!(c.effective | c.permitted | c.inheritable | c.ambient, 0);
        assert_eq!(parse_caps("CapEff:\t0\n"), None);
    }
}
