//! `ipsyncd`: the command line (DESIGN §6), and only that: the clap definitions, loading the
//! config, and dispatch to the module that does each subcommand's work.
//!
//! Contract: exit 0 on success, 1 on a runtime failure, 2 on a usage or config error, 3 when
//! `forcerenew --require-confirm` saw a client not renew or `status` finds no daemon running; every
//! error message names the file, the key and what was expected. The modules return typed
//! errors; this file alone maps them to exit codes.

use clap::Parser;
use ipsyncd::cli::{Cli, Cmd, KeyKind};
use ipsyncd::config::{self, Config};
use ipsyncd::server::error::ToolError;
use ipsyncd::server::{announce, forcerenew, keygen, serve};
use ipsyncd::shell::daemon::{self, DaemonError};
use ipsyncd::shell::preflight;
use ipsyncd::shell::replay::{self, ReplayError};
use ipsyncd::shell::status::{self, StatusError};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// `status`'s config, and whether it was read. A monitoring user in the state directory's group
/// may not read the config (it holds the keys): then the status is read from `--state-dir`, or
/// the state directory the unit gives that config (`/var/lib/ipsyncd`, or `/var/lib/ipsyncd/NAME`
/// for an `ipsyncd@NAME` instance's `/etc/ipsyncd/NAME.toml`), and said so, rather than refused.
/// Any other config error is still one.
fn status_config(p: Option<PathBuf>, dir_given: bool) -> Result<(PathBuf, Config, bool), Fail> {
    let path = p.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let mut cfg = Config::parse("").map_err(Fail::Usage)?;
            let instance = path.file_stem().and_then(|n| n.to_str()).filter(|n| *n != "ipsyncd");
            if let (Some(name), Some(parent)) = (instance, path.parent()) {
                if parent == std::path::Path::new("/etc/ipsyncd") {
                    cfg.state_dir = cfg.state_dir.join(name);
                }
            }
            if !dir_given {
                eprintln!(
                    "ipsyncd: {}: {e}; reading the status in {} (give --state-dir for another)",
                    path.display(),
                    cfg.state_dir.display()
                );
            }
            Ok((path, cfg, false))
        }
        _ => load_config(p).map(|(path, cfg)| (path, cfg, true)),
    }
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
        Cmd::Check { config, interface } => {
            let cpath = config.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            let (_, problems) = preflight::load_and_check(&cpath, interface.as_deref(), None)
                .map_err(|e| Fail::Usage(e.to_string()))?;
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
        Cmd::Status { config, state_dir, json } => {
            let (cpath, mut cfg, read) = status_config(config, state_dir.is_some())?;
            if let Some(d) = state_dir {
                cfg.state_dir = d;
            }
            match status::show(&cfg, &cpath, read, json)? {
                true => Ok(()),
                false => Err(Fail::Negative("ipsyncd is not running; the status above is its last".into())),
            }
        }
        Cmd::Announce {
            interface,
            config,
            address,
            previous,
            watch,
            interval,
            count,
            leases,
            service_port,
            server_name,
        } => {
            let (cpath, cfg) = load_config(config)?;
            let req = announce::Request {
                interface,
                address,
                previous,
                watch,
                leases,
                interval,
                count,
                service_port,
                server_name,
            };
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
        Cmd::Serve { config, listen, interface, service_port, server_name } => {
            let (cpath, cfg) = load_config(config)?;
            let service = serve::Service { port: service_port, name: server_name };
            Ok(serve::run(&cfg, &cpath, listen.as_deref(), interface.as_deref(), service)?)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports what it does at info; one-shot tools only warn.
    ipsyncd::shell::logging::init(
        if matches!(cli.cmd, Cmd::Run { .. } | Cmd::Serve { .. }) { "info" } else { "warn" },
        std::path::Path::new(ipsyncd::shell::journal::JOURNAL_SOCKET),
    );
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
