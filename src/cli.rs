//! The command line's definition (DESIGN §6): every subcommand, option, help text and default,
//! as clap sees it. `main.rs` parses with it and dispatches; `examples/gendocs.rs` renders the
//! same definition into the man page ipsyncd(8) and the shell completions, so the documents can
//! never disagree with `--help`.
//!
//! Contract: types only; no I/O. Defaults shown in help are the ones the code applies.

use crate::config;
use crate::engine::ServerName;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "ipsyncd", version, about = "Keeps thin clients pointed at their cloud server when its address moves")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
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
        /// Check for `run --interface IFACE`, as the ipsyncd@IFACE unit runs it: the terminal's
        /// checks, with this interface instead of the config's.
        #[arg(long)]
        interface: Option<String>,
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
        /// The daemon's state directory, for a user who may read it but not the config (which
        /// holds the keys) [default: the config's state_dir; when the config cannot be read,
        /// /var/lib/ipsyncd].
        #[arg(long)]
        state_dir: Option<PathBuf>,
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
        /// The VDI service's TCP port, sent as SERVICE_PORT; terminals hand it to their hooks as
        /// SERVICE_PORT (SPICE 5900, RDP 3389): 1-65535.
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        service_port: Option<u16>,
        /// The server's name, sent as SERVER_NAME; terminals hand it to their hooks as
        /// SERVER_NAME (a viewer's window title, say): 1-64 bytes of UTF-8, no control characters.
        #[arg(long, value_name = "NAME", value_parser = parse_server_name)]
        server_name: Option<String>,
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
        /// The VDI service's TCP port, sent as SERVICE_PORT in each WELCOME; terminals hand it to their hooks as
        /// SERVICE_PORT (SPICE 5900, RDP 3389): 1-65535.
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        service_port: Option<u16>,
        /// The server's name, sent as SERVER_NAME in each WELCOME; terminals hand it to their hooks as
        /// SERVER_NAME (a viewer's window title, say): 1-64 bytes of UTF-8, no control characters.
        #[arg(long, value_name = "NAME", value_parser = parse_server_name)]
        server_name: Option<String>,
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
pub enum KeyKind {
    Ed25519,
    Hmac,
    Dhcp,
    Reconfigure,
}

/// `--server-name`: what a terminal's engine passes on as SERVER_NAME (DESIGN §4.3 TLV 4: 1-64
/// bytes of UTF-8; §9: no control character, which would start a new key in a viewer's file).
/// Refused here rather than sent, since every terminal would silently drop it.
pub fn parse_server_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > ServerName::MAX {
        return Err(format!("expected 1-{} bytes of UTF-8, got {} bytes", ServerName::MAX, s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err("control characters (newline, tab, escape...) are not allowed".into());
    }
    ServerName::new(s).map(|_| s.to_string()).ok_or_else(|| "not a server name".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_what_terminals_pass_on() {
        assert_eq!(parse_server_name("vdi-1"), Ok("vdi-1".into()));
        assert!(parse_server_name(&"é".repeat(32)).is_ok(), "64 bytes of UTF-8");
        assert!(parse_server_name(&"a".repeat(65)).is_err());
        assert!(parse_server_name("").is_err());
        assert!(parse_server_name("vdi\nhost=evil").is_err());
        assert!(parse_server_name("vdi\u{1b}[2J").is_err());
    }
}
