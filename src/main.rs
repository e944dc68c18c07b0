//! `ipsyncd`: the command line (DESIGN §6). Picks the source, clock and applier, then runs the
//! pipeline or a server-side tool.
//!
//! Contract: exit 0 on success, 1 on a runtime failure, 2 on a usage or config error; every
//! error message names the file, the key and what was expected.

use clap::{Parser, Subcommand};
use ipsyncd::config::{self, Config};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ipsyncd", version, about = "Keeps thin clients pointed at their cloud server when its address moves")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Terminal daemon (foreground).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        interface: Option<String>,
    },
    /// Replay a pcap or pcapng capture through the pipeline; decision log as JSON lines on stdout.
    Replay {
        pcap: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load and persist state here (default: start fresh and persist nothing).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Current server, pin, lease and counters.
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Announce the server's address (cloud-server side).
    Announce {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        previous: Option<String>,
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        interval: Option<u64>,
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send authenticated FORCERENEW to terminals (cloud-server side).
    Forcerenew {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        client_mac: Option<String>,
        #[arg(long)]
        leases: Option<PathBuf>,
        #[arg(long)]
        retries: Option<u32>,
        #[arg(long)]
        require_confirm: bool,
    },
    /// Answer HELLO with WELCOME (cloud-server side).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<String>,
    },
    /// Print a fresh [[key]] section.
    Keygen {
        #[arg(long, default_value_t = 1)]
        id: u32,
    },
}

enum Fail {
    Usage(String),
    Runtime(String),
}

fn config_path(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

fn load_config(p: Option<PathBuf>) -> Result<(PathBuf, Config), Fail> {
    let path = config_path(p);
    let c = Config::load(&path).map_err(|e| Fail::Usage(e.to_string()))?;
    Ok((path, c))
}

fn replay(pcap: PathBuf, config: Option<PathBuf>, state_dir: Option<PathBuf>) -> Result<(), Fail> {
    use ipsyncd::shell::replay::{self, ReplayError};
    let (cpath, cfg) = load_config(config)?;
    replay::run(&pcap, &cfg, &cpath, state_dir.as_deref()).map_err(|e| match e {
        ReplayError::Config(m) => Fail::Usage(m),
        ReplayError::Runtime(m) => Fail::Runtime(m),
    })
}

fn keygen(id: u32) -> Result<(), Fail> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .map_err(|e| Fail::Runtime(format!("/dev/urandom: {e}")))?;
    println!("[[key]]\nid = {id}\nsecret = \"0x{}\"", config::to_hex(&key));
    Ok(())
}

fn serve(config: Option<PathBuf>, listen: Option<String>) -> Result<(), Fail> {
    let (cpath, cfg) = load_config(config)?;
    let keys = cfg.keys();
    if keys.is_empty() {
        return Err(Fail::Usage(format!("{}: [[key]]: serve needs at least one key to sign WELCOME", cpath.display())));
    }
    let addr: std::net::SocketAddr = match listen {
        Some(l) => l.parse().map_err(|_| Fail::Usage(format!("--listen: expected ADDR:PORT, got {l:?}")))?,
        None => std::net::SocketAddr::from(([0, 0, 0, 0], cfg.server.port)),
    };
    let listener = ipsyncd::server::serve::bind(addr).map_err(|e| Fail::Runtime(format!("listen {addr}: {e}")))?;
    log::info!("serving HELLO on {addr}");
    let server = ipsyncd::server::serve::Server::new(keys, None);
    server.run(listener).map_err(|e| Fail::Runtime(format!("serve {addr}: {e}")))
}

fn run(config: Option<PathBuf>, interface: Option<String>) -> Result<(), Fail> {
    let (cpath, cfg) = load_config(config)?;
    ipsyncd::shell::daemon::run(&cpath, cfg, interface).map_err(|e| match e {
        ipsyncd::shell::daemon::DaemonError::Config(m) => Fail::Usage(m),
        ipsyncd::shell::daemon::DaemonError::Runtime(m) => Fail::Runtime(m),
    })
}

fn status(config: Option<PathBuf>, json: bool) -> Result<(), Fail> {
    let (cpath, cfg) = load_config(config)?;
    ipsyncd::shell::status::show(&cfg, &cpath, json).map_err(|e| Fail::Runtime(e.to_string()))
}

#[allow(clippy::too_many_arguments)]
fn announce(
    interface: String,
    config: Option<PathBuf>,
    address: Option<String>,
    previous: Option<String>,
    watch: bool,
    interval: Option<u64>,
    count: Option<u64>,
) -> Result<(), Fail> {
    let (cpath, cfg) = load_config(config)?;
    let (key_id, key) = cfg
        .key
        .first()
        .and_then(|k| cfg.keys().get(&k.id).map(|v| (k.id, v.clone())))
        .ok_or_else(|| Fail::Usage(format!("{}: [[key]]: announce needs a key to sign with", cpath.display())))?;
    let parse_ip = |flag: &str, s: &str| {
        s.parse::<std::net::Ipv4Addr>().map_err(|_| Fail::Usage(format!("{flag}: expected an IPv4 address, got {s:?}")))
    };
    let previous = previous.as_deref().map(|p| parse_ip("--previous", p)).transpose()?;
    let mut nl = ipsyncd::shell::netlink::Netlink::open().map_err(|e| Fail::Runtime(format!("netlink: {e}")))?;
    let link = nl.link(&interface).map_err(|e| Fail::Runtime(e.to_string()))?;
    let mac = link.mac.ok_or_else(|| Fail::Runtime(format!("{interface}: has no MAC address")))?;
    let ip = match address {
        Some(a) => parse_ip("--address", &a)?,
        None => nl
            .addresses(link.index)
            .map_err(|e| Fail::Runtime(e.to_string()))?
            .first()
            .map(|c| c.addr)
            .ok_or_else(|| Fail::Usage(format!("--address: {interface} has no IPv4 address to announce")))?,
    };
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Fail::Runtime(format!("{}: {e}", cfg.state_dir.display())))?;
    let sender = ipsyncd::server::announce::Sender::open(&interface, ip, cfg.server.port)
        .map_err(|e| Fail::Runtime(format!("{interface}: cannot send from {ip}: {e}")))?;
    if watch {
        return announce_watch(&interface, &cfg, key_id, &key, link.index, mac, ip, previous, interval);
    }
    let count = count.unwrap_or(1).max(1);
    for i in 0..count {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let seq =
            ipsyncd::server::announce::announce_once(&sender, &cfg.state_dir, key_id, &key, ip, mac, previous, now_us)
                .map_err(|e| Fail::Runtime(format!("announce {ip}: {e}")))?;
        log::info!("announced {ip} ({mac}) on {interface}, sequence {seq}");
        if i + 1 < count {
            std::thread::sleep(std::time::Duration::from_secs(interval.unwrap_or(1)));
        }
    }
    Ok(())
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// `announce --watch`: announce now, then again whenever the interface gains a new IPv4 address
/// (with the old one as PREVIOUS_IPV4), and every `--interval` seconds if given.
#[allow(clippy::too_many_arguments)]
fn announce_watch(
    interface: &str,
    cfg: &Config,
    key_id: u32,
    key: &[u8],
    ifindex: u32,
    mac: ipsyncd::wire::Mac,
    mut ip: std::net::Ipv4Addr,
    mut previous: Option<std::net::Ipv4Addr>,
    interval: Option<u64>,
) -> Result<(), Fail> {
    use ipsyncd::server::announce as an;
    use std::os::fd::AsRawFd;
    let mon = ipsyncd::shell::netlink::address_monitor().map_err(|e| Fail::Runtime(format!("netlink: {e}")))?;
    let mut buf = Vec::new();
    loop {
        let sender = an::Sender::open(interface, ip, cfg.server.port)
            .map_err(|e| Fail::Runtime(format!("{interface}: cannot send from {ip}: {e}")))?;
        let seq = an::announce_once(&sender, &cfg.state_dir, key_id, key, ip, mac, previous, now_us())
            .map_err(|e| Fail::Runtime(format!("announce {ip}: {e}")))?;
        log::info!("announced {ip} ({mac}) on {interface}, sequence {seq}");
        // Wait for a new address, or for the refresh interval.
        loop {
            let timeout = interval.map_or(-1, |s| (s.saturating_mul(1000)).min(i32::MAX as u64) as i32);
            let mut pfd = libc::pollfd { fd: mon.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if r == 0 {
                break; // refresh
            }
            if r < 0 {
                continue; // EINTR
            }
            let events = ipsyncd::shell::netlink::next_address_events(&mon, ifindex, &mut buf)
                .map_err(|e| Fail::Runtime(format!("netlink: {e}")))?;
            if let Some((_, c)) = events.iter().rev().find(|(added, c)| *added && c.addr != ip) {
                previous = Some(ip);
                ip = c.addr;
                break;
            }
        }
    }
}

fn forcerenew(
    interface: String,
    config: Option<PathBuf>,
    client: Option<String>,
    client_mac: Option<String>,
    leases: Option<PathBuf>,
    retries: Option<u32>,
    require_confirm: bool,
) -> Result<(), Fail> {
    use ipsyncd::config::ForceRenewAuth as Auth;
    use ipsyncd::server::forcerenew as fr;
    let (cpath, cfg) = load_config(config)?;
    if leases.is_some() || require_confirm {
        return not_yet("forcerenew --leases / --require-confirm");
    }
    let in_file = |m: String| Fail::Usage(format!("{}: {m}", cpath.display()));
    let client = client.ok_or_else(|| Fail::Usage("--client IP (or --leases FILE) is required".into()))?;
    let client_ip: std::net::Ipv4Addr =
        client.parse().map_err(|_| Fail::Usage(format!("--client: expected an IPv4 address, got {client:?}")))?;
    let client_mac: ipsyncd::wire::Mac = client_mac
        .ok_or_else(|| Fail::Usage("--client-mac MAC is required with --client".into()))?
        .parse()
        .map_err(|_| Fail::Usage("--client-mac: expected aa:bb:cc:dd:ee:ff".into()))?;
    let section = cfg.forcerenew.clone().ok_or_else(|| in_file("[forcerenew]: required to sign FORCERENEW".into()))?;
    let dhcp_keys = cfg.dhcp_keys();
    let rk;
    let auth = match section.auth {
        Auth::Delayed => {
            let key = dhcp_keys.get(&section.key_id).ok_or_else(|| {
                in_file(format!("forcerenew.key_id = {}: no [[dhcp_key]] with that id", section.key_id))
            })?;
            ipsyncd::server::ForceRenewAuth::Delayed { secret_id: section.key_id, key }
        }
        Auth::ReconfigureKey => {
            let v = section
                .reconfigure_key
                .as_deref()
                .ok_or_else(|| in_file("forcerenew.reconfigure_key: required for auth = \"reconfigure-key\"".into()))?;
            let bytes = config::parse_secret(v).map_err(|e| in_file(format!("forcerenew.reconfigure_key: {e}")))?;
            rk = <[u8; 16]>::try_from(bytes.as_slice())
                .map_err(|_| in_file("forcerenew.reconfigure_key: expected 16 bytes".into()))?;
            ipsyncd::server::ForceRenewAuth::ReconfigureKey { key: &rk }
        }
    };
    let xid = match &section.xid_db {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => {
                let (map, bad) = fr::parse_xid_db(&text);
                if !bad.is_empty() {
                    log::warn!("{}: lines {bad:?} are not `<mac> 0x<8 hex digits>`; ignored", p.display());
                }
                map.get(&client_mac).copied().unwrap_or(0)
            }
            Err(e) => {
                log::warn!("{}: {e}; using xid 0", p.display());
                0
            }
        },
        None => 0,
    };
    let mut nl = ipsyncd::shell::netlink::Netlink::open().map_err(|e| Fail::Runtime(format!("netlink: {e}")))?;
    let link = nl.link(&interface).map_err(|e| Fail::Runtime(e.to_string()))?;
    let server_mac = link.mac.ok_or_else(|| Fail::Runtime(format!("{interface}: has no MAC address")))?;
    let server_ip = nl
        .addresses(link.index)
        .map_err(|e| Fail::Runtime(e.to_string()))?
        .into_iter()
        .find(|c| c.contains(client_ip))
        .or_else(|| nl.addresses(link.index).ok().and_then(|a| a.first().copied()))
        .map(|c| c.addr)
        .ok_or_else(|| Fail::Runtime(format!("{interface}: has no IPv4 address to send from")))?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Fail::Runtime(format!("{}: {e}", cfg.state_dir.display())))?;
    let tx = ipsyncd::shell::capture::Transmitter::open(link.index)
        .map_err(|e| Fail::Runtime(format!("{interface}: {e} (needs CAP_NET_RAW)")))?;
    for attempt in 0..=retries.unwrap_or(0) {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let replay = fr::next_replay(&cfg.state_dir, now_us)
            .map_err(|e| Fail::Runtime(format!("{}: {e}", cfg.state_dir.display())))?;
        let m = ipsyncd::server::ForceRenew { server_ip, server_mac, client_ip, client_mac, xid, replay, auth };
        tx.send(&m.frame()).map_err(|e| Fail::Runtime(format!("send FORCERENEW to {client_ip}: {e}")))?;
        println!("sent FORCERENEW to {client_ip} ({client_mac}) xid {xid:#010x} replay {replay}");
        if attempt < retries.unwrap_or(0) {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    Ok(())
}

fn not_yet(what: &str) -> Result<(), Fail> {
    Err(Fail::Runtime(format!("`ipsyncd {what}` is not available in this build yet")))
}

/// stderr, or journald when systemd connected our stderr to it (JOURNAL_STREAM): then each line
/// carries its syslog priority as `<N>` and no timestamp, which journald adds itself.
fn init_logging(default_level: &str) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.format(|f, r| {
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                _ => 7,
            };
            writeln!(f, "<{prio}>{}", r.args())
        });
    } else {
        b.format_timestamp_millis();
    }
    b.init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports what it does at info; one-shot tools only warn.
    init_logging(if matches!(cli.cmd, Cmd::Run { .. } | Cmd::Serve { .. }) { "info" } else { "warn" });
    let r = match cli.cmd {
        Cmd::Replay { pcap, config, state_dir } => replay(pcap, config, state_dir),
        Cmd::Keygen { id } => keygen(id),
        Cmd::Run { config, interface } => run(config, interface),
        Cmd::Status { config, json } => status(config, json),
        Cmd::Announce { interface, config, address, previous, watch, interval, count } => {
            announce(interface, config, address, previous, watch, interval, count)
        }
        Cmd::Forcerenew { interface, config, client, client_mac, leases, retries, require_confirm } => {
            forcerenew(interface, config, client, client_mac, leases, retries, require_confirm)
        }
        Cmd::Serve { config, listen } => serve(config, listen),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("ipsyncd: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Runtime(m)) => {
            eprintln!("ipsyncd: {m}");
            ExitCode::from(1)
        }
    }
}
