//! `ipsyncd`: the command line (DESIGN §6), and only that: the clap definitions, loading the
//! config, and dispatch to the module that does each subcommand's work.
//!
//! Contract: exit 0 on success, 1 on a runtime failure, 2 on a usage or config error, 3 when
//! `forcerenew --require-confirm` saw a client not renew or `status` finds no daemon running; every
//! error message names the file, the key and what was expected. The modules return typed
//! errors; this file alone maps them to exit codes.

use clap::{Parser, Subcommand};
use ipsyncd::config::{self, Config};
use ipsyncd::server::error::ToolError;
use ipsyncd::server::{announce, forcerenew, keygen, serve};
use ipsyncd::shell::daemon::{self, DaemonError};
use ipsyncd::shell::preflight;
use ipsyncd::shell::replay::{self, ReplayError};
use ipsyncd::shell::status::{self, StatusError};
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
        /// Config file [default: /etc/ipsyncd/ipsyncd.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Interface to follow on (overrides `interface` in the config).
        #[arg(long)]
        interface: Option<String>,
    },
    /// Validate a config as `run` (or, with no `interface`, the server tools) would; every problem
    /// at once. Exit 0 when valid, 2 otherwise.
    Check {
        /// Config file [default: /etc/ipsyncd/ipsyncd.toml].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replay a pcap or pcapng capture through the pipeline; decision log as JSON lines on stdout.
    Replay {
        /// The capture to replay.
        pcap: PathBuf,
        /// Config file [default: /etc/ipsyncd/ipsyncd.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load and persist state here (default: start fresh and persist nothing).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Current server, pin, lease and counters.
    Status {
        /// Config file [default: /etc/ipsyncd/ipsyncd.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Announce the server's address (cloud-server side).
    Announce {
        /// Interface to broadcast on.
        #[arg(long)]
        interface: String,
        /// Config file [default: /etc/ipsyncd/ipsyncd.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to announce [default: the interface's first IPv4 address].
        #[arg(long)]
        address: Option<String>,
        /// The server's previous address (PREVIOUS_IPV4).
        #[arg(long)]
        previous: Option<String>,
        /// Keep running; announce again whenever the interface gains a new address.
        #[arg(long)]
        watch: bool,
        /// Time between announcements with --count [default: 1s], or between refreshes with
        /// --watch [default: none, only on address changes]: 500ms, 30s, 5m.
        #[arg(long, value_parser = config::parse_duration)]
        interval: Option<std::time::Duration>,
        /// How many announcements to send [default: 1].
        #[arg(long)]
        count: Option<u64>,
        /// Also send each announcement unicast to every live lease of this DHCP server (a
        /// dnsmasq lease file, a Kea memfile CSV, or kea:PATH), so terminals behind routers hear it.
        #[arg(long, value_name = "SOURCE")]
        leases: Option<String>,
    },
    /// Send authenticated FORCERENEW to terminals (cloud-server side).
    Forcerenew {
        /// Interface to send on.
        #[arg(long)]
        interface: String,
        /// Config file [default: /etc/ipsyncd/ipsyncd.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// The client's IPv4 address.
        #[arg(long)]
        client: Option<String>,
        /// The client's MAC (aa:bb:cc:dd:ee:ff).
        #[arg(long)]
        client_mac: Option<String>,
        /// Every live lease of a DHCP server: a dnsmasq lease file, a Kea memfile CSV (both
        /// detected by content), or kea:PATH for Kea's control socket.
        #[arg(long, value_name = "SOURCE")]
        leases: Option<String>,
        /// Resends after the first, with doubling gaps from 250 ms, until the client's REQUEST
        /// is seen.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=16))]
        retries: u32,
        /// First FORCERENEWs per second (retries share the rate).
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rate: u32,
        /// Exit 3 unless every client renewed (its REQUEST was seen).
        #[arg(long)]
        require_confirm: bool,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Answer HELLO with WELCOME (cloud-server side).
    Serve {
        /// Config file [default: /etc/ipsyncd/ipsyncd.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// ADDR:PORT to listen on [default: 0.0.0.0 and the config's port].
        #[arg(long)]
        listen: Option<String>,
        /// Also watch DHCP clients on this interface and keep each one's last xid in
        /// `[forcerenew] xid_db`, so that `forcerenew` reaches clients that check it (dhcpcd).
        #[arg(long)]
        interface: Option<String>,
    },
    /// Print a fresh key section (ed25519: the server's and the terminals' halves).
    Keygen {
        /// The key's id.
        #[arg(long, default_value_t = 1)]
        id: u32,
        /// ed25519: a [[key]] pair, terminals get the public half; hmac: a shared [[key]]
        /// secret (signs HELLO); dhcp: a [[dhcp_key]]; reconfigure: an RFC 6704 reconfigure key.
        #[arg(long, value_enum, default_value_t = KeyKind::Ed25519)]
        kind: KeyKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KeyKind {
    Ed25519,
    Hmac,
    Dhcp,
    Reconfigure,
}

/// How a subcommand failed, as far as the exit code cares.
enum Fail {
    /// A flag or the config is wrong: exit 2.
    Usage(String),
    /// The system refused: exit 1.
    Runtime(String),
    /// The command ran and the answer is no: exit 3 (`forcerenew --require-confirm` with a
    /// client that did not renew; `status` of a daemon that is not running).
    Negative(String),
}

impl From<ReplayError> for Fail {
    fn from(e: ReplayError) -> Fail {
        match e {
            ReplayError::Config(m) => Fail::Usage(m),
            ReplayError::Runtime(m) => Fail::Runtime(m),
        }
    }
}

impl From<DaemonError> for Fail {
    fn from(e: DaemonError) -> Fail {
        match e {
            DaemonError::Config(m) => Fail::Usage(m),
            DaemonError::Runtime(m) => Fail::Runtime(m),
        }
    }
}

impl From<StatusError> for Fail {
    fn from(e: StatusError) -> Fail {
        match e {
            StatusError::NothingKnown(_) => Fail::Negative(e.to_string()),
            StatusError::Unreadable(..) => Fail::Runtime(e.to_string()),
        }
    }
}

impl From<ToolError> for Fail {
    fn from(e: ToolError) -> Fail {
        match e {
            ToolError::Usage(m) => Fail::Usage(m),
            ToolError::Runtime(m) => Fail::Runtime(m),
        }
    }
}

/// The config named by `--config` (or the default path), and that path for error messages.
fn load_config(p: Option<PathBuf>) -> Result<(PathBuf, Config), Fail> {
    let path = p.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let c = Config::load(&path).map_err(|e| Fail::Usage(e.to_string()))?;
    Ok((path, c))
}

fn dispatch(cmd: Cmd) -> Result<(), Fail> {
    match cmd {
        Cmd::Replay { pcap, config, state_dir } => {
            let (cpath, cfg) = load_config(config)?;
            Ok(replay::run(&pcap, &cfg, &cpath, state_dir.as_deref())?)
        }
        Cmd::Keygen { id, kind } => {
            keygen::run(
                match kind {
                    KeyKind::Ed25519 => keygen::Kind::Ed25519,
                    KeyKind::Hmac => keygen::Kind::Hmac,
                    KeyKind::Dhcp => keygen::Kind::Dhcp,
                    KeyKind::Reconfigure => keygen::Kind::Reconfigure,
                },
                id,
            );
            Ok(())
        }
        Cmd::Run { config, interface } => {
            // What `check` calls an error, `run` refuses at start (DESIGN §6).
            let cpath = config.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            let (cfg, problems) =
                preflight::load_and_check(&cpath, interface.as_deref(), Some(preflight::Role::Terminal))
                    .map_err(|e| Fail::Usage(e.to_string()))?;
            let (errors, warnings): (Vec<_>, Vec<_>) =
                problems.iter().partition(|p| p.severity == preflight::Severity::Error);
            for w in warnings {
                log::warn!("{}", preflight::render(&cpath, w));
            }
            if !errors.is_empty() {
                let all: Vec<String> = errors.iter().map(|p| preflight::render(&cpath, p)).collect();
                return Err(Fail::Usage(all.join("\n")));
            }
            Ok(daemon::run(&cpath, cfg, interface)?)
        }
        Cmd::Check { config } => {
            let cpath = config.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            let (_, problems) =
                preflight::load_and_check(&cpath, None, None).map_err(|e| Fail::Usage(e.to_string()))?;
            for p in &problems {
                println!("{}", preflight::render(&cpath, p));
            }
            let errors = problems.iter().filter(|p| p.severity == preflight::Severity::Error).count();
            if errors > 0 {
                return Err(Fail::Usage(format!("{}: {errors} error(s)", cpath.display())));
            }
            println!("{}: OK ({} warning(s))", cpath.display(), problems.len());
            Ok(())
        }
        Cmd::Status { config, json } => {
            let (cpath, cfg) = load_config(config)?;
            match status::show(&cfg, &cpath, json)? {
                true => Ok(()),
                false => Err(Fail::Negative("ipsyncd is not running; the status above is its last".into())),
            }
        }
        Cmd::Announce { interface, config, address, previous, watch, interval, count, leases } => {
            let (cpath, cfg) = load_config(config)?;
            let req = announce::Request { interface, address, previous, watch, leases, interval, count };
            Ok(announce::run(&cfg, &cpath, req)?)
        }
        Cmd::Forcerenew { interface, config, client, client_mac, leases, retries, rate, require_confirm, json } => {
            let (cpath, cfg) = load_config(config)?;
            let req = forcerenew::Request {
                interface,
                client,
                client_mac,
                leases,
                retries: Some(retries),
                rate: Some(rate),
                require_confirm,
                json,
            };
            match forcerenew::run(&cfg, &cpath, req)? {
                forcerenew::Outcome::Sent => Ok(()),
                forcerenew::Outcome::Unconfirmed { missing: 0 } => {
                    Err(Fail::Negative("no live leases: nothing was confirmed (--require-confirm)".into()))
                }
                forcerenew::Outcome::Unconfirmed { missing } => {
                    Err(Fail::Negative(format!("{missing} clients did not renew (--require-confirm)")))
                }
            }
        }
        Cmd::Serve { config, listen, interface } => {
            let (cpath, cfg) = load_config(config)?;
            Ok(serve::run(&cfg, &cpath, listen.as_deref(), interface.as_deref())?)
        }
    }
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
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("ipsyncd: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Runtime(m)) => {
            eprintln!("ipsyncd: {m}");
            ExitCode::from(1)
        }
        Err(Fail::Negative(m)) => {
            eprintln!("ipsyncd: {m}");
            ExitCode::from(3)
        }
    }
}
