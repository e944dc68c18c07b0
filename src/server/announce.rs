//! `ipsyncd announce`: broadcasts the server's signed ANNOUNCE on one interface, once, `--count`
//! times, or with `--watch` whenever the interface gains a new address.
//!
//! Contract: the sequence follows DESIGN §4.3 (max(last + 1, µs since the epoch)) and the last
//! value sent is persisted in `state_dir/announce.seq` before the datagram leaves, so a restart
//! never reuses a sequence. The datagram is sent from the announced address through a UDP socket
//! bound to the interface (SO_BINDTODEVICE), so it never leaves on any other interface. It is
//! signed with the config's Ed25519 signing key when it has one, else with its first shared
//! `[[key]]` secret ([`Config::signing_key`]).

use super::error::ToolError;
use super::sequence;
use super::Announce;
use crate::config::{Config, IpsyncKey};
use crate::shell::clock;
use crate::shell::netlink::{self, Netlink};
use crate::wire::sig::Signer;
use crate::wire::Mac;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

pub const SEQ_FILE: &str = "announce.seq";

pub struct Sender {
    sock: UdpSocket,
    port: u16,
}

impl Sender {
    pub fn open(interface: &str, from: Ipv4Addr, port: u16) -> std::io::Result<Sender> {
        let sock = UdpSocket::bind(SocketAddrV4::new(from, 0))?;
        sock.set_broadcast(true)?;
        let name = interface.as_bytes();
        // SAFETY: passes the interface name bytes and their length to setsockopt.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Sender { sock, port })
    }

    pub fn send(&self, payload: &[u8]) -> std::io::Result<()> {
        self.sock.send_to(payload, SocketAddrV4::new(Ipv4Addr::BROADCAST, self.port)).map(|_| ())
    }
}

/// Builds, persists and sends one announcement; returns its sequence.
#[allow(clippy::too_many_arguments)]
pub fn announce_once(
    sender: &Sender,
    state_dir: &Path,
    key_id: u32,
    key: Signer<'_>,
    ip: Ipv4Addr,
    mac: Mac,
    previous: Option<Ipv4Addr>,
    now_unix_us: u64,
) -> std::io::Result<u64> {
    let sequence = sequence::take_persisted(state_dir, SEQ_FILE, now_unix_us)?;
    let a = Announce {
        key_id,
        key,
        sequence,
        server_ip: ip,
        server_mac: mac,
        previous_ip: previous,
        server_name: None,
        service_port: None,
    };
    sender.send(&a.payload())?;
    Ok(sequence)
}

/// The command line's request, as given.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub interface: String,
    /// Announce this address instead of the interface's first IPv4 address.
    pub address: Option<String>,
    /// PREVIOUS_IPV4: the address the terminals may still follow.
    pub previous: Option<String>,
    pub watch: bool,
    /// Seconds between announcements (`--count`), or between refreshes (`--watch`).
    pub interval: Option<u64>,
    pub count: Option<u64>,
}

/// What every announcement of one run shares.
struct Announcer<'a> {
    interface: &'a str,
    cfg: &'a Config,
    key_id: u32,
    key: IpsyncKey,
    mac: Mac,
}

impl Announcer<'_> {
    fn open(&self, ip: Ipv4Addr) -> Result<Sender, ToolError> {
        Sender::open(self.interface, ip, self.cfg.server.port)
            .map_err(|e| ToolError::Runtime(format!("{}: cannot send from {ip}: {e}", self.interface)))
    }

    fn send(&self, sender: &Sender, ip: Ipv4Addr, previous: Option<Ipv4Addr>) -> Result<(), ToolError> {
        let seq = announce_once(
            sender,
            &self.cfg.state_dir,
            self.key_id,
            // signing_key() only returns keys that can sign.
            self.key.signer().ok_or_else(|| ToolError::Usage("[[key]]: no signing key".into()))?,
            ip,
            self.mac,
            previous,
            clock::unix_us(),
        )
        .map_err(|e| ToolError::Runtime(format!("announce {ip}: {e}")))?;
        log::info!("announced {ip} ({}) on {}, sequence {seq}", self.mac, self.interface);
        Ok(())
    }
}

/// `ipsyncd announce`. `config_path` names the config in errors.
pub fn run(cfg: &Config, config_path: &Path, req: Request) -> Result<(), ToolError> {
    let (key_id, key) = cfg.signing_key().ok_or_else(|| {
        ToolError::Usage(format!(
            "{}: [[key]]: announce needs a key to sign with: an Ed25519 `signing_key` or a shared `secret` (a `public_key` alone cannot sign)",
            config_path.display()
        ))
    })?;
    let previous = req.previous.as_deref().map(|p| parse_ip("--previous", p)).transpose()?;
    let interface = req.interface.as_str();
    let mut nl = Netlink::open().map_err(|e| ToolError::Runtime(format!("netlink: {e}")))?;
    let link = nl.link(interface).map_err(|e| ToolError::Runtime(e.to_string()))?;
    let mac = link.mac.ok_or_else(|| ToolError::Runtime(format!("{interface}: has no MAC address")))?;
    let ip = match &req.address {
        Some(a) => parse_ip("--address", a)?,
        None => nl
            .addresses(link.index)
            .map_err(|e| ToolError::Runtime(e.to_string()))?
            .first()
            .map(|c| c.addr)
            .ok_or_else(|| ToolError::Usage(format!("--address: {interface} has no IPv4 address to announce")))?,
    };
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| ToolError::Runtime(format!("{}: {e}", cfg.state_dir.display())))?;
    let signer = Announcer { interface, cfg, key_id, key, mac };
    // Opened before anything is sent, so a bad address fails at once, in either mode.
    let sender = signer.open(ip)?;
    if req.watch {
        return watch(&signer, sender, link.index, ip, previous, req.interval);
    }
    let count = req.count.unwrap_or(1).max(1);
    for i in 0..count {
        signer.send(&sender, ip, previous)?;
        if i + 1 < count {
            std::thread::sleep(Duration::from_secs(req.interval.unwrap_or(1)));
        }
    }
    Ok(())
}

fn parse_ip(flag: &str, s: &str) -> Result<Ipv4Addr, ToolError> {
    s.parse().map_err(|_| ToolError::Usage(format!("{flag}: expected an IPv4 address, got {s:?}")))
}

/// `announce --watch`: announce now, then again whenever the interface gains a new IPv4 address
/// (with the old one as PREVIOUS_IPV4), and every `interval` seconds if given. Runs until killed.
fn watch(
    signer: &Announcer,
    mut sender: Sender,
    ifindex: u32,
    mut ip: Ipv4Addr,
    mut previous: Option<Ipv4Addr>,
    interval: Option<u64>,
) -> Result<(), ToolError> {
    let mon = netlink::address_monitor().map_err(|e| ToolError::Runtime(format!("netlink: {e}")))?;
    let mut buf = Vec::new();
    // poll(2) takes milliseconds as an int; -1 waits for an address change only.
    let timeout = interval.map_or(-1, |s| (s.saturating_mul(1000)).min(i32::MAX as u64) as i32);
    loop {
        signer.send(&sender, ip, previous)?;
        // Wait for a new address, or for the refresh interval.
        loop {
            let mut pfd = libc::pollfd { fd: mon.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if r == 0 {
                break; // refresh
            }
            if r < 0 {
                continue; // EINTR
            }
            let events = netlink::next_address_events(&mon, ifindex, &mut buf)
                .map_err(|e| ToolError::Runtime(format!("netlink: {e}")))?;
            if let Some((_, c)) = events.iter().rev().find(|(added, c)| *added && c.addr != ip) {
                previous = Some(ip);
                ip = c.addr;
                break;
            }
        }
        // A fresh socket each time: the announced address may have changed.
        sender = signer.open(ip)?;
    }
}
