//! `ipsyncd status` (DESIGN §6): the one status schema, [`Status`], how the running daemon
//! publishes it and how the CLI reads and shows it.
//!
//! Contract: one function ([`build`]) makes every [`Status`]: the snapshot the running daemon
//! writes to `state_dir/status.json` (through [`atomic_file::write_atomic`], so a reader never
//! sees half a file) and the fallback made from the state file when the daemon is not running.
//! The snapshot is not the source of truth: the state file is. Reading never changes a file and
//! never follows a link planted at either name (through [`atomic_file::read_own`]); only the
//! reader asks the kernel whether the pin is in place (`pin.in_kernel`).

use super::atomic_file;
use super::netlink::Netlink;
use super::state_file;
use crate::config::Config;
use crate::engine::{Engine, Instant, Mode, State};
use netlink_packet_route::neighbour::NeighbourState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "status.json";

/// What `status --json` prints. The tests read these fields (DESIGN §6); others may be added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub interface: Option<String>,
    pub mode: Mode,
    pub server: Option<ServerStatus>,
    pub pin: Option<PinStatus>,
    /// Only in dhcp mode and only while the client runs: its state is the client's.
    pub lease: Option<LeaseStatus>,
    pub last_decision: Option<LastDecision>,
    /// Per verdict: a count, or counts per reason for verdicts that carry one.
    pub counters: BTreeMap<String, Count>,
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
    #[serde(default)]
    pub seconds_since_contact: Option<u64>,
    /// The writer's process id: a status file outlives a crashed daemon.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The engine's clock at the snapshot, in seconds.
    #[serde(default)]
    pub updated: Option<f64>,
    #[serde(default)]
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub ip: Ipv4Addr,
    pub mac: Option<String>,
    /// Unix seconds when it became our server; unknown for a configured server never switched to.
    pub since: Option<u64>,
    pub connected: bool,
    pub last_welcome: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinStatus {
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Whether the kernel holds it as a PERMANENT entry with this MAC; `None` when not asked.
    pub in_kernel: Option<bool>,
    /// What the kernel holds for the server's address when asked: "PERMANENT 02:…",
    /// "REACHABLE 02:…", "none". `None` when not asked.
    #[serde(default)]
    pub kernel_entry: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub address: String,
    pub server_id: Ipv4Addr,
    /// Unix seconds.
    pub expires: u64,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDecision {
    pub input: String,
    pub verdict: String,
    pub time: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Total(u64),
    ByReason(BTreeMap<String, u64>),
}

#[derive(Debug)]
pub enum StatusError {
    /// Neither a status file nor a readable state file in this directory.
    NothingKnown(PathBuf),
    /// The directory is there but this user may not read it (exit 1: we cannot tell).
    Unreadable(PathBuf, std::io::Error),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::NothingKnown(dir) => write!(f, "{}: no status or state (is ipsyncd running?)", dir.display()),
            StatusError::Unreadable(dir, e) => write!(
                f,
                "{}: {e}: cannot tell whether ipsyncd runs (run as root or as a member of the state directory's group)",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for StatusError {}

/// What a running engine knows beyond the persisted state.
struct Live<'a> {
    engine: &'a Engine,
    now: Instant,
}

/// Wall-clock seconds at the engine's monotonic `t`: every time in the status goes through here.
fn secs(e: &Engine, t: Instant) -> f64 {
    e.wall_us(t) as f64 / 1e6
}

/// The one constructor of [`Status`]: from the persisted state, plus the engine when it runs.
fn build(
    interface: Option<&str>,
    mode: Mode,
    state: &State,
    initial_server: Option<Ipv4Addr>,
    live: Option<Live>,
) -> Status {
    // The engine counts a WELCOME only from the current server, persisted or configured.
    let connected_since = live.as_ref().and_then(|l| l.engine.connected_since());
    let connected = connected_since.is_some();
    let last_welcome = live.as_ref().and_then(|l| connected_since.map(|t| secs(l.engine, t) as u64));
    let server = state
        .server
        .map(|s| ServerStatus {
            ip: s.ip,
            mac: s.mac.map(|m| m.to_string()),
            since: Some(s.since),
            connected,
            last_welcome,
        })
        .or_else(|| initial_server.map(|ip| ServerStatus { ip, mac: None, since: None, connected, last_welcome }));
    let pin = state
        .server
        .and_then(|s| s.mac.map(|m| PinStatus { ip: s.ip, mac: m.to_string(), in_kernel: None, kernel_entry: None }));
    let lease = match (mode, state.lease, &live) {
        (Mode::Dhcp, Some(l), Some(live)) => Some(LeaseStatus {
            address: l.address.to_string(),
            server_id: l.server_id,
            expires: l.expires / 1_000_000,
            state: live.engine.client_state().to_string(),
        }),
        _ => None,
    };
    let mut status = Status {
        interface: interface.map(str::to_string),
        mode,
        server,
        pin,
        lease,
        last_decision: None,
        counters: BTreeMap::new(),
        dropped: BTreeMap::new(),
        seconds_since_contact: None,
        pid: None,
        updated: None,
        running: false,
    };
    if let Some(Live { engine, now }) = live {
        let c = engine.counters();
        status.counters = c
            .verdicts
            .iter()
            .map(|(verdict, n)| {
                let count = match c.reasons.get(verdict) {
                    Some(reasons) => Count::ByReason(reasons.clone()),
                    None => Count::Total(*n),
                };
                (verdict.clone(), count)
            })
            .collect();
        status.dropped = c.drops.clone();
        status.last_decision = engine.last_decision().map(|(i, v, t)| LastDecision {
            input: i.as_str().to_string(),
            verdict: v.as_str().to_string(),
            time: secs(engine, t),
        });
        status.seconds_since_contact = connected_since.map(|t| now.saturating_sub(t) / 1_000_000);
        status.pid = Some(std::process::id());
        status.updated = Some(secs(engine, now));
        status.running = true;
    }
    status
}

/// The running daemon's status, as written to the status file.
pub fn snapshot(e: &Engine, interface: &str, now: Instant) -> Value {
    let s =
        build(Some(interface), e.config().mode, e.state(), e.config().initial_server, Some(Live { engine: e, now }));
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// The last known status of a daemon that is not running, from its state file.
pub fn from_state(cfg: &Config, state: &State) -> Status {
    build(cfg.interface.as_deref(), cfg.mode, state, cfg.server.address, None)
}

/// Whether two snapshots say the same, apart from the fields that only tell the time.
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("updated");
            o.remove("seconds_since_contact");
        }
        v
    };
    strip(a) == strip(b)
}

/// The status file's mode: the state directory's group (`ipsyncd`, StateDirectoryMode=0750 in
/// the unit) may read it, so monitoring users need not be root. It holds no secret; the state
/// file, which holds the RFC 6704 nonce and the replay counters, stays 0600.
pub const FILE_MODE: u32 = 0o640;

pub fn write(dir: &Path, v: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
    atomic_file::write_atomic_mode(dir, FILE_NAME, &bytes, FILE_MODE)
}

/// A status file is a few kilobytes; anything much larger was not written by us.
pub const MAX_STATUS_BYTES: u64 = 1 << 20;

/// The status file, read without following a link and within [`MAX_STATUS_BYTES`].
pub fn read(dir: &Path) -> std::io::Result<Status> {
    let b = atomic_file::read_own(dir, FILE_NAME, MAX_STATUS_BYTES)?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{FILE_NAME}: none")))?;
    serde_json::from_slice(&b).map_err(std::io::Error::other)
}

/// The status file if there is one (with `running` from whether its writer is alive), else the
/// state file; then asks the kernel about the pin.
pub fn query(cfg: &Config) -> Result<Status, StatusError> {
    // A directory we may not list is not the same answer as no daemon at all.
    if let Err(e) = std::fs::read_dir(&cfg.state_dir) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(StatusError::Unreadable(cfg.state_dir.clone(), e));
        }
    }
    let mut s = match read(&cfg.state_dir) {
        Ok(mut s) => {
            s.running = s.pid.is_some_and(daemon_alive);
            // A daemon that is gone holds no connection, whatever its last snapshot said.
            if !s.running {
                if let Some(srv) = s.server.as_mut() {
                    srv.connected = false;
                }
                s.seconds_since_contact = None;
            }
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(StatusError::Unreadable(cfg.state_dir.clone(), e));
        }
        Err(_) => match state_file::read(&cfg.state_dir) {
            Ok(Some(state)) => from_state(cfg, &state),
            // The state file is 0600: a group member without a status file cannot tell.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(StatusError::Unreadable(cfg.state_dir.clone(), e));
            }
            _ => return Err(StatusError::NothingKnown(cfg.state_dir.clone())),
        },
    };
    let iface = s.interface.clone().or(cfg.interface.clone());
    if let (Some(pin), Some(ifname)) = (s.pin.as_mut(), iface) {
        if let Some((held, entry)) = pin_in_kernel(&ifname, pin) {
            pin.in_kernel = Some(held);
            pin.kernel_entry = Some(entry);
        }
    }
    Ok(s)
}

/// Whether the status file's writer still runs: its pid exists and is an ipsyncd, not another
/// program that got the pid after a crash (when its name cannot be read, the pid decides).
fn daemon_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim_end() == "ipsyncd",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// Whether the pin is in the kernel as a PERMANENT entry with the right MAC, and what entry the
/// kernel holds for the address; `None` when the kernel cannot be asked.
fn pin_in_kernel(ifname: &str, pin: &PinStatus) -> Option<(bool, String)> {
    let mut nl = Netlink::open().ok()?;
    let link = nl.link(ifname).ok()?;
    let entry = nl.neighbour(link.index, pin.ip).ok()?;
    let held = matches!(entry, Some((Some(m), NeighbourState::Permanent)) if m.to_string() == pin.mac);
    let words = match entry {
        None => "none".to_string(),
        Some((mac, state)) => {
            let state = format!("{state:?}").to_uppercase();
            match mac {
                Some(m) => format!("{state} {m}"),
                None => state,
            }
        }
    };
    Some((held, words))
}

/// `t` (Unix seconds) as a local date, with the zone: "2026-12-01 21:40:12 CET".
pub fn local_date(t: u64) -> String {
    let Ok(secs) = libc::time_t::try_from(t) else { return format!("@{t}") };
    // SAFETY: localtime_r and strftime write only into the buffers given, within their sizes.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return format!("@{t}");
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c"%Y-%m-%d %H:%M:%S %Z".as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// How long ago `t` was at `now` (both Unix seconds), or how far ahead: "5 s ago", "3 min ago",
/// "2 h 5 min ago", "4 days ago", "in 59 min".
pub fn age(now: u64, t: u64) -> String {
    let (d, future) = if t > now { (t - now, true) } else { (now - t, false) };
    let span = match d {
        0..=119 => format!("{d} s"),
        120..=7_199 => format!("{} min", d / 60),
        7_200..=172_799 => match (d % 3_600) / 60 {
            0 => format!("{} h", d / 3_600),
            m => format!("{} h {m} min", d / 3_600),
        },
        _ => format!("{} days", d / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// "2026-12-01 21:40:12 CET (3 min ago)".
fn when(now: u64, t: u64) -> String {
    format!("{} ({})", local_date(t), age(now, t))
}

/// What a verdict's count means, for the text form (DESIGN §5's vocabulary).
fn verdict_in_words(verdict: &str) -> &'static str {
    match verdict {
        "apply" => "server changes applied",
        "same" => "announcements of the server already in use",
        "conflict" => "conflicting announcements (alarm raised, nothing changed)",
        "renew" => "authenticated FORCERENEWs acted on",
        "lease" => "DHCP leases bound or renewed",
        "reject" => "frames refused",
        "malformed" => "malformed frames dropped",
        "select" => "DHCP offers selected",
        "restart" => "DHCP restarts (NAK, lost or declined lease)",
        "ignore" => "frames ignored (not for this terminal, or nothing to do)",
        "retry" => "failed connection attempts, retried",
        "unreachable" => "times the server became unreachable",
        "repin" => "pins put back after the kernel dropped them",
        _ => "",
    }
}

/// What a drop counter means.
fn drop_in_words(what: &str) -> &'static str {
    match what {
        "rate_limited" => "over the per-second handling limit",
        "verify_budget" => "over the per-second signature check budget",
        "alarm_coalesced" => "alarms folded into an earlier one of the same kind",
        "stale_channel_result" => "connection results for a server no longer current",
        _ => "",
    }
}

/// One counter line: the count, the name as JSON has it, and what it means.
fn counter_line(indent: usize, name: &str, n: u64, words: &str) -> String {
    let name_w = 22usize.saturating_sub(indent);
    let line = format!("{:indent$}{name:<name_w$} {n:>8}  {words}", "");
    format!("{}\n", line.trim_end())
}

/// The text form of `status`, at `now` (Unix seconds): times as local dates with their age,
/// counters one per line with what they mean.
pub fn render_text(s: &Status, config_path: &Path, now: u64) -> String {
    render_text_from(s, &config_path.display().to_string(), now)
}

/// [`render_text`] with the header's "config …" words given: `status` names the state
/// directory there when it could not read the config.
pub fn render_text_from(s: &Status, config: &str, now: u64) -> String {
    let mut out = format!(
        "ipsyncd on {} ({} mode), config {config}\n",
        s.interface.as_deref().unwrap_or("?"),
        match s.mode {
            Mode::Dhcp => "dhcp",
            Mode::Follow => "follow",
        },
    );
    out += &match (s.running, s.pid) {
        (true, Some(p)) => format!("daemon:   running, pid {p}"),
        (true, None) => "daemon:   running".to_string(),
        (false, Some(p)) => format!("daemon:   NOT running (the status below was written by pid {p})"),
        (false, None) => "daemon:   NOT running (the status below is from its state file)".to_string(),
    };
    if let Some(u) = s.updated {
        out += &format!("; status written {}", when(now, u as u64));
    }
    out += "\n";
    match &s.server {
        Some(srv) => {
            out += &format!(
                "server:   {} mac {} — {}\n",
                srv.ip,
                srv.mac.as_deref().unwrap_or("unknown"),
                if srv.connected { "connected" } else { "not connected" },
            );
            if let Some(t) = srv.last_welcome {
                out += &format!("          last WELCOME {}\n", when(now, t));
            }
            match srv.since {
                Some(t) => out += &format!("          our server since {}\n", when(now, t)),
                None => out += "          configured (not switched to since)\n",
            }
        }
        None => out += "server:   none known\n",
    }
    match &s.pin {
        Some(p) => {
            let state = match (p.in_kernel, p.kernel_entry.as_deref()) {
                (Some(true), _) => "PERMANENT in the kernel".to_string(),
                (Some(false), Some(k)) => format!("MISSING from the kernel (it holds: {k})"),
                (Some(false), None) => "MISSING from the kernel".to_string(),
                (None, _) => "kernel not checked".to_string(),
            };
            out += &format!("pin:      {} → {} ({state})\n", p.ip, p.mac);
        }
        None => out += "pin:      none\n",
    }
    if let Some(l) = &s.lease {
        out +=
            &format!("lease:    {} from {}, {}, expires {}\n", l.address, l.server_id, l.state, when(now, l.expires));
    }
    if let Some(l) = &s.last_decision {
        // The exact time as JSON prints it, so text and --json can be matched.
        out +=
            &format!("last:     {} → {}, {} [{}]\n", l.input, l.verdict, when(now, l.time as u64), Value::from(l.time));
    }
    if s.counters.is_empty() {
        out += "counters: none yet\n";
    } else {
        out += "counters:\n";
        for (verdict, count) in &s.counters {
            match count {
                Count::Total(n) => out += &counter_line(2, verdict, *n, verdict_in_words(verdict)),
                Count::ByReason(reasons) => {
                    let total = reasons.values().fold(0u64, |a, b| a.saturating_add(*b));
                    out += &counter_line(2, verdict, total, verdict_in_words(verdict));
                    for (reason, n) in reasons {
                        out += &counter_line(4, reason, *n, &super::decision_log::reason_in_words(reason));
                    }
                }
            }
        }
    }
    if !s.dropped.is_empty() {
        out += "dropped before a decision:\n";
        for (what, n) in &s.dropped {
            out += &counter_line(2, what, *n, drop_in_words(what));
        }
    }
    if !s.running {
        out += "note:     the daemon is not running; this is its last known state\n";
    }
    out
}

/// Prints the status (`ipsyncd status [--json]`) on stdout; returns whether the daemon runs
/// (DESIGN §6: `status` exits 0 when it does, 3 when it does not, as `systemctl status`).
/// `config_read` is false when the config could not be read and `cfg` holds only the state
/// directory to look in: the header then says so.
pub fn show(cfg: &Config, config_path: &Path, config_read: bool, json: bool) -> Result<bool, StatusError> {
    let s = query(cfg)?;
    if json {
        // Through a Value, whose keys are sorted: the same order the file has.
        println!("{}", serde_json::to_value(&s).map(|v| v.to_string()).unwrap_or_default());
    } else {
        let config = match config_read {
            true => config_path.display().to_string(),
            false => format!("{} (not readable; state from {})", config_path.display(), cfg.state_dir.display()),
        };
        print!("{}", render_text_from(&s, &config, super::clock::unix_secs()));
    }
    Ok(s.running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::ServerState;

    fn cfg(dir: &Path) -> Config {
        let mut c = Config::parse("interface = \"eth9\"\nmode = \"follow\"\n").unwrap();
        c.state_dir = dir.to_path_buf();
        c
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ipsyncd-status-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn state_with_server() -> State {
        let server = ServerState {
            ip: Ipv4Addr::new(10, 77, 0, 20),
            mac: Some("02:00:00:00:00:02".parse().unwrap()),
            since: 1_764_138_625,
        };
        State { server: Some(server), ..State::default() }
    }

    #[test]
    fn fallback_from_state_has_the_snapshot_fields() {
        let d = tmpdir("fallback");
        let c = cfg(&d);
        let v = serde_json::to_value(from_state(&c, &state_with_server())).unwrap();
        for k in ["interface", "mode", "server", "pin", "lease", "last_decision", "counters", "running"] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        assert_eq!(v["interface"], "eth9");
        assert_eq!(v["mode"], "follow");
        assert_eq!(v["server"]["ip"], "10.77.0.20");
        assert_eq!(v["server"]["since"], 1_764_138_625);
        assert_eq!(v["server"]["connected"], false);
        assert_eq!(v["pin"]["mac"], "02:00:00:00:00:02");
        assert_eq!(v["running"], false);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// One schema: the running daemon's snapshot and the fallback have the same fields, and the
    /// same values where both know them.
    #[test]
    fn snapshot_and_fallback_share_one_schema() {
        let d = tmpdir("schema");
        let c = cfg(&d);
        let state = state_with_server();
        let ecfg = c.engine_config("02:00:00:00:00:10".parse().unwrap()).unwrap();
        let e = Engine::new(ecfg, state.clone(), 0);
        let live = snapshot(&e, "eth9", Instant::from_micros(5_000_000));
        let down = serde_json::to_value(from_state(&c, &state)).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&live), keys(&down));
        for k in ["interface", "mode", "server", "pin", "lease"] {
            assert_eq!(live[k], down[k], "{k}");
        }
        assert_eq!(live["running"], true);
        assert_eq!(live["pid"], std::process::id());
        // What the daemon writes, the reader reads back whole.
        write(&d, &live).unwrap();
        assert_eq!(serde_json::to_value(read(&d).unwrap()).unwrap(), live);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn status_file_round_trips_and_reading_changes_nothing() {
        let d = tmpdir("rt");
        let c = cfg(&d);
        let s = from_state(&c, &state_with_server());
        write(&d, &serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(read(&d).unwrap(), s);
        // A corrupt state file is left where it is by `status`.
        std::fs::remove_file(d.join(FILE_NAME)).unwrap();
        std::fs::write(state_file::path(&d), b"{").unwrap();
        assert!(matches!(query(&c), Err(StatusError::NothingKnown(_))));
        assert_eq!(std::fs::read(state_file::path(&d)).unwrap(), b"{");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn text_names_server_pin_and_that_the_daemon_is_down() {
        let d = tmpdir("text");
        let s = from_state(&cfg(&d), &state_with_server());
        let now = 1_764_138_625 + 180;
        let t = render_text(&s, Path::new("/etc/ipsyncd/ipsyncd.toml"), now);
        assert!(t.starts_with("ipsyncd on eth9 (follow mode), config /etc/ipsyncd/ipsyncd.toml\n"), "{t}");
        assert!(t.contains("daemon:   NOT running (the status below is from its state file)\n"), "{t}");
        assert!(t.contains("server:   10.77.0.20 mac 02:00:00:00:00:02 — not connected\n"), "{t}");
        let since = format!("          our server since {} (3 min ago)\n", local_date(1_764_138_625));
        assert!(t.contains(&since), "{t}");
        assert!(t.contains("pin:      10.77.0.20 → 02:00:00:00:00:02 (kernel not checked)\n"), "{t}");
        assert!(t.contains("counters: none yet\n"), "{t}");
        assert!(t.ends_with("note:     the daemon is not running; this is its last known state\n"), "{t}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn counters_are_one_per_line_with_their_meaning() {
        let d = tmpdir("words");
        let mut s = from_state(&cfg(&d), &state_with_server());
        s.counters.insert("apply".into(), Count::Total(3));
        let reasons = BTreeMap::from([("bad_mac".to_string(), 200), ("replayed".to_string(), 100)]);
        s.counters.insert("reject".into(), Count::ByReason(reasons));
        s.dropped.insert("rate_limited".into(), 7);
        let t = render_text(&s, Path::new("x.toml"), 0);
        let lines: Vec<&str> = t.lines().collect();
        let at = lines.iter().position(|l| *l == "counters:").expect(&t);
        assert_eq!(lines[at + 1], "  apply                       3  server changes applied", "{t}");
        assert_eq!(lines[at + 2], "  reject                    300  frames refused", "{t}");
        assert!(lines[at + 3].starts_with("    bad_mac                 200  "), "{t}");
        assert!(lines[at + 3].contains("HMAC or signature"), "{t}");
        assert!(lines[at + 4].starts_with("    replayed                100  "), "{t}");
        assert_eq!(lines[at + 5], "dropped before a decision:", "{t}");
        assert_eq!(lines[at + 6], "  rate_limited                7  over the per-second handling limit", "{t}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ages_read_as_a_person_says_them() {
        assert_eq!(age(100, 95), "5 s ago");
        assert_eq!(age(1_000, 1_000), "0 s ago");
        assert_eq!(age(0, 180), "in 3 min");
        assert_eq!(age(3 * 3_600 + 300, 0), "3 h 5 min ago");
        assert_eq!(age(7_200, 0), "2 h ago");
        assert_eq!(age(5 * 86_400, 0), "5 days ago");
        // A local date with its zone, never raw epoch seconds.
        let d = local_date(1_764_138_625);
        assert!(d.starts_with("2025-11-2"), "{d}");
        assert_eq!(d.matches(':').count(), 2, "{d}");
    }

    #[test]
    fn the_status_file_is_group_readable_and_the_state_file_is_not() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir("mode");
        write(&d, &serde_json::json!({})).unwrap();
        let mode = std::fs::metadata(d.join(FILE_NAME)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
