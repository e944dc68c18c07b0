//! `ipsyncd run`: the live terminal daemon, in dhcp mode (the terminal's own DHCPv4 client) or
//! follow mode (beside the system's client). Wires the live source, the system clock and the
//! live applier into the same pipeline replay uses, and owns process concerns: signals,
//! sd_notify, the status file.
//!
//! Contract: SIGTERM/SIGINT stop the pipeline cleanly (the capture thread is woken through an
//! eventfd); SIGHUP re-reads the keys from the config file; start-up errors are typed and name
//! what failed, so the CLI can map them to exit codes.

use super::applier::{LiveApplier, LiveConfig};
use super::capture::{LiveSource, Shutdown};
use super::channel::Terminal;
use super::clock::{Clock, SystemClock};
use super::hooks::Hooks;
use super::netlink::Netlink;
use super::pipeline::{self, Extras};
use super::state_file;
use super::status;
use super::worker::{Control, Timing};
use crate::config::Config;
use crate::engine::input::DecodeContext;
use crate::engine::{Engine, Mode, State, Wall};
use nix::sys::signal::{SigSet, Signal};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug)]
pub enum DaemonError {
    /// The configuration cannot run (exit 2).
    Config(String),
    /// The system refused (exit 1).
    Runtime(String),
}

/// Sends a datagram to systemd's notify socket, if we were started with one.
pub fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), Path::new(&path))
    };
    if let Err(e) = r {
        log::debug!("sd_notify: {e}");
    }
}

/// The ping interval when systemd's watchdog is on for us (sd_watchdog_enabled(3)):
/// `WATCHDOG_USEC` set and non-zero, and `WATCHDOG_PID`, when set, our own pid (a variable
/// inherited from a parent service is not ours). Half the timeout, as systemd recommends.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// What the status file shows, in a form that costs no allocation: whether to write it is
/// decided on this, and the snapshot is built only to be written (the worker calls the sink
/// once per batch of frames, so under a flood thousands of times a second).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fingerprint {
    /// What makes a write due at once: the server, its connection, the kind of last decision.
    shown: Shown,
    lease: Option<crate::engine::state::LeaseState>,
    client: &'static str,
    /// Every counter only grows, so their sum changes when any of them does.
    counted: u64,
    captured: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Shown {
    server: Option<crate::engine::state::ServerState>,
    connected: Option<crate::engine::Instant>,
    last: Option<(crate::engine::Input, crate::engine::Verdict)>,
}

impl Fingerprint {
    fn of(e: &Engine, capture: &super::capture::CaptureStats) -> Fingerprint {
        let c = e.counters();
        Fingerprint {
            shown: Shown {
                server: e.state().server,
                connected: e.connected_since(),
                last: e.last_decision().map(|(i, v, _)| (i, v)),
            },
            lease: e.state().lease,
            client: e.client_state(),
            counted: c.verdicts.values().sum::<u64>() + c.drops.values().sum::<u64>(),
            captured: capture.dropped_total(),
        }
    }
}

pub fn run(config_path: &Path, cfg: Config, interface: Option<String>) -> Result<(), DaemonError> {
    let cfg_err = |m: String| DaemonError::Config(format!("{}: {m}", config_path.display()));
    let ifname = interface
        .or(cfg.interface.clone())
        .ok_or_else(|| cfg_err("interface: required for run (or --interface)".into()))?;
    if cfg.allow_unauthenticated {
        log::warn!("allow_unauthenticated = true: UNAUTHENTICATED FORCERENEW WILL BE ACCEPTED (lab use only)");
    }
    // Signals are handled by one thread with sigwait; every other thread inherits the mask.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().map_err(|e| DaemonError::Runtime(format!("sigprocmask: {e}")))?;

    let mut nl = Netlink::open().map_err(|e| DaemonError::Runtime(format!("netlink: {e}")))?;
    let link = nl.link(&ifname).map_err(|e| DaemonError::Runtime(e.to_string()))?;
    let mac = match cfg.terminal_mac().map_err(cfg_err)? {
        Some(m) => m,
        None => link.mac.ok_or_else(|| DaemonError::Runtime(format!("{ifname}: has no MAC address")))?,
    };
    let mut ecfg = cfg.engine_config(mac).map_err(cfg_err)?;
    if cfg.mode == Mode::Follow && ecfg.address.is_none() {
        let addrs = nl.addresses(link.index).map_err(|e| DaemonError::Runtime(e.to_string()))?;
        ecfg.address = addrs.first().copied();
        if ecfg.address.is_none() {
            return Err(cfg_err(format!("terminal.address: not set and {ifname} has no IPv4 address")));
        }
    }
    if ecfg.keys.is_empty() {
        if cfg.mode == Mode::Follow {
            return Err(cfg_err("[[key]]: at least one key is needed to authenticate the server".into()));
        }
        // A DHCP client still: the lease is kept, but no server can be followed or reached.
        log::warn!(
            "{}: no [[key]]: ANNOUNCEs cannot be authenticated and no HELLO is sent; the lease is kept and a server from option {} is pinned but never confirmed",
            config_path.display(),
            cfg.server.dhcp_option
        );
    }
    let (key_id, key) = cfg.hello_key().unwrap_or_default();
    if key.is_empty() && !ecfg.keys.is_empty() {
        log::info!("no shared [[key]] secret: no HELLO is sent; a move completes on its authenticated ANNOUNCE");
    }
    if cfg.ipsync_keys().values().any(|k| matches!(k, crate::config::IpsyncKey::Ed25519 { signing: Some(_), .. })) {
        log::warn!(
            "{}: a [[key]] holds an Ed25519 signing_key: a terminal needs only public_key, and whoever takes this terminal could move the fleet",
            config_path.display()
        );
    }
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| DaemonError::Runtime(format!("{}: cannot create state_dir: {e}", cfg.state_dir.display())))?;
    let state = match state_file::load(&cfg.state_dir, super::clock::unix_secs())
        .map_err(|e| DaemonError::Runtime(format!("{}: {e}", cfg.state_dir.display())))?
    {
        state_file::Loaded::Restored(s) => s,
        _ => State::default(),
    };
    // dhcp mode: the persisted lease's address (still configured after a restart), until a bind.
    let own_ip = match cfg.mode {
        Mode::Follow => ecfg.address.map(|c| c.addr),
        Mode::Dhcp => state.lease.map(|l| l.address.addr),
    }
    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    let port = ecfg.port;
    let ctx = DecodeContext { mac, port, server_option: ecfg.server_option };
    let clock = SystemClock;
    let (unix_us, synced) = clock.wall();
    let engine = Engine::with_wall(ecfg, state, super::clock::random_u64(), Wall::at(clock.now(), unix_us, synced));

    let shutdown = Shutdown::new().map_err(|e| DaemonError::Runtime(format!("eventfd: {e}")))?;
    // Follow mode also reads the REQUESTs the system's client sends (DESIGN §5).
    let own_requests = cfg.mode == Mode::Follow;
    let source = LiveSource::open(link.index, port, own_requests, shutdown.clone())
        .map_err(|e| DaemonError::Runtime(format!("{ifname}: AF_PACKET capture: {e} (needs CAP_NET_RAW)")))?;
    // dhcp mode: hold UDP port 68, so that replies unicast to our address are not answered
    // with ICMP port unreachable (we read them on the packet socket). Someone else holding it
    // means another DHCP client runs here, and two clients fight over one address.
    let _port68 = if cfg.mode == Mode::Dhcp {
        match super::capture::hold_client_port(&ifname) {
            Ok(s) => Some(s),
            // Without CAP_NET_BIND_SERVICE (the unit grants only NET_RAW and NET_ADMIN) the
            // kernel answers a unicast reply with ICMP port unreachable; servers ignore that.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                log::info!(
                    "{ifname}: UDP port 68 not held (no CAP_NET_BIND_SERVICE); replies are read on the packet socket"
                );
                None
            }
            Err(e) => {
                log::warn!(
                    "{ifname}: cannot hold UDP port 68 ({e}): is another DHCP client running on this interface?"
                );
                None
            }
        }
    } else {
        None
    };
    let hooks = Hooks::new(
        cfg.hook.clone(),
        // DESIGN §7: renew_command belongs to follow mode; in dhcp mode we renew ourselves.
        (cfg.mode == Mode::Follow).then(|| cfg.renew_command.clone()),
        ifname.clone(),
        Duration::from_millis(cfg.hook_timeout_ms),
    );
    let terminal =
        std::sync::Arc::new(parking_lot::RwLock::new(Terminal { key_id, key, keys: cfg.keys(), mac, ip: own_ip }));
    let hup_terminal = std::sync::Arc::clone(&terminal);
    let tx = std::sync::Arc::new(
        super::capture::Transmitter::open(link.index)
            .map_err(|e| DaemonError::Runtime(format!("{ifname}: AF_PACKET transmit: {e} (needs CAP_NET_RAW)")))?,
    );
    let applier = LiveApplier::new(LiveConfig {
        ifname: ifname.clone(),
        ifindex: link.index,
        state_dir: cfg.state_dir.clone(),
        terminal: std::sync::Arc::clone(&terminal),
        connect_timeout: Duration::from_millis(cfg.server.connect_timeout_ms),
        hooks,
        tx: std::sync::Arc::clone(&tx),
    })
    .map_err(|e| DaemonError::Runtime(format!("{ifname}: applier: {e}")))?;
    let frames: super::worker::FrameTx = Box::new(move |f: &[u8]| tx.send(f));
    let (ctl_tx, ctl_rx) = crossbeam_channel::bounded::<Control>(4);
    let sig_shutdown = shutdown.clone();
    let reload_path = config_path.to_path_buf();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            match sigs.wait() {
                Ok(Signal::SIGHUP) => match Config::load(&reload_path) {
                    Ok(c) => {
                        let keys = c.keys();
                        // HELLO is signed with the first shared [[key]], as at start.
                        {
                            let mut t = hup_terminal.write();
                            (t.key_id, t.key) = c.hello_key().unwrap_or_default();
                            t.keys = keys.clone();
                        }
                        let _ = ctl_tx.send(Control::ReloadKeys { keys, dhcp_keys: c.dhcp_keys() });
                    }
                    Err(e) => log::error!("SIGHUP: keeping the old keys: {e}"),
                },
                Ok(s) => {
                    log::info!("{s}: shutting down");
                    sd_notify("STOPPING=1");
                    sig_shutdown.trigger();
                    return;
                }
                Err(e) => log::error!("sigwait: {e}"),
            }
        })
        .map_err(|e| DaemonError::Runtime(format!("signal thread: {e}")))?;

    let status_dir: PathBuf = cfg.state_dir.clone();
    let status_if = ifname.clone();
    let capture_stats = std::sync::Arc::clone(&source.stats);
    let mut last_write: Option<(std::time::Instant, Fingerprint)> = None;
    let status_sink = Box::new(move |e: &Engine, now: crate::engine::Instant| {
        let fp = Fingerprint::of(e, &capture_stats);
        // A new server or a new kind of decision is written at once; counters alone at most once
        // a second, so a flood of forged frames does not become a flood of file writes.
        // Not the decision's time: a stream of identical rejects must not mean a write each.
        let due = match &last_write {
            None => true,
            Some((t, last)) => last.shown != fp.shown || t.elapsed() >= Duration::from_secs(1),
        };
        if !due {
            // Held back: written when the second is up, unless nothing changed since.
            let same = last_write.as_ref().is_some_and(|(_, last)| *last == fp);
            let left =
                last_write.as_ref().map_or(Duration::ZERO, |(t, _)| Duration::from_secs(1).saturating_sub(t.elapsed()));
            return (!same).then_some(left);
        }
        let mut snap = status::snapshot(e, &status_if, now);
        // What the capture dropped before the engine saw it (ring overruns, truncated frames).
        if let Some(dropped) = snap.get_mut("dropped").and_then(|d| d.as_object_mut()) {
            for (what, n) in capture_stats.drops() {
                dropped.insert(what.to_string(), n.into());
            }
        }
        if let Err(err) = status::write(&status_dir, &snap) {
            log::warn!("status: {err}");
        }
        let new_server = last_write.as_ref().map_or(true, |(_, last)| {
            (last.shown.server, last.shown.connected) != (fp.shown.server, fp.shown.connected)
        });
        if new_server {
            if let Some(ip) = snap["server"]["ip"].as_str() {
                sd_notify(&format!(
                    "STATUS=following {ip}{}",
                    if snap["server"]["connected"] == true { " (connected)" } else { "" }
                ));
            }
        }
        last_write = Some((std::time::Instant::now(), fp));
        None
    });
    // The decision line, its reject warning and its alarms, with their journal fields.
    let mut lines = super::log_lines::DecisionLines::default();
    let sink = Box::new(move |d: &crate::engine::Decision, wall: crate::engine::Instant| {
        lines.log(log::logger(), d, wall);
    });
    match cfg.mode {
        Mode::Follow => log::info!("following on {ifname} ({mac}, {own_ip}), ipsync port {port}"),
        Mode::Dhcp => log::info!(
            "DHCP client on {ifname} ({mac}{}), acd {}, ipsync port {port}",
            if own_ip.is_unspecified() { String::new() } else { format!(", lease for {own_ip}") },
            if cfg.acd == crate::engine::AcdMode::Strict { "strict" } else { "optimistic" }
        ),
    }
    let watchdog = watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
    .map(|every| {
        log::info!("systemd watchdog: pinging every {} ms from the worker", every.as_millis());
        super::worker::Watchdog { every, ping: Box::new(|| sd_notify("WATCHDOG=1")) }
    });
    sd_notify("READY=1");
    let summary = pipeline::run(
        Box::new(source),
        ctx,
        engine,
        Box::new(applier),
        sink,
        Timing::Live(Box::new(clock)),
        Extras { status: Some(status_sink), control: Some(ctl_rx), frames: Some(frames), watchdog },
    );
    match summary.source_error {
        Some(e) => Err(DaemonError::Runtime(format!("{ifname}: capture: {e}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        assert_eq!(watchdog_interval(Some("400000"), None, 7), Some(Duration::from_millis(200)));
        assert_eq!(watchdog_interval(Some("400000"), Some("7"), 7), Some(Duration::from_millis(200)));
        assert_eq!(watchdog_interval(Some("400000"), Some("8"), 7), None, "another process's watchdog");
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }
}
