//! `ipsyncd announce`: broadcasts the server's signed ANNOUNCE on one interface, once, `--count`
//! times, or with `--watch` whenever the interface gains a new address. With `--leases SOURCE`
//! each announcement also goes unicast to every live lease, so terminals behind routers hear it
//! (a broadcast stays on its segment).
//!
//! Each unicast copy has its own sequence, above the broadcast's: a terminal that hears both
//! takes the first and finds the second the same address (`same`), never a replay. The copies
//! are paced like `forcerenew` ([`Pacer`], 20,000 a second by default) and the lease source is
//! read again for every announcement, so `--watch` follows the DHCP server's fleet.
//!
//! Contract: the sequence follows DESIGN §4.3 (max(last + 1, µs since the epoch)) and the last
//! value sent is persisted in `state_dir/announce.seq` before the datagram leaves, so a restart
//! never reuses a sequence. The datagram is sent from the announced address through a UDP socket
//! bound to the interface (SO_BINDTODEVICE), so it never leaves on any other interface. It is
//! signed with the config's Ed25519 signing key when it has one, else with its first shared
//! `[[key]]` secret ([`Config::signing_key`]).

use super::campaign::{Pacer, Policy, BLOCKED_PAUSE_US};
use super::error::ToolError;
use super::{fleet, sequence, Announce};
use crate::config::{Config, IpsyncKey};
use crate::shell::clock;
use crate::shell::netlink::{self, Netlink};
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

/// What one announcement's unicast copies did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unicast {
    pub sent: usize,
    /// The kernel had no route or neighbour for the lease (EHOSTUNREACH, ENETUNREACH).
    pub unreachable: usize,
    /// Any other refusal.
    pub failed: usize,
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
        self.send_to(payload, Ipv4Addr::BROADCAST)
    }

    /// To one address; the kernel routes it (across routers, through this interface only).
    pub fn send_to(&self, payload: &[u8], to: Ipv4Addr) -> std::io::Result<()> {
        self.sock.send_to(payload, SocketAddrV4::new(to, self.port)).map(|_| ())
    }
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
    /// Also unicast to every live lease of this source (as `forcerenew --leases`).
    pub leases: Option<String>,
    /// Between announcements (`--count`), or between refreshes (`--watch`).
    pub interval: Option<Duration>,
    pub count: Option<u64>,
    /// SERVICE_PORT: the VDI port terminals hand to their hooks.
    pub service_port: Option<u16>,
    /// SERVER_NAME (checked by the command line: 1-64 bytes, no control characters).
    pub server_name: Option<String>,
}

/// What every announcement of one run shares.
struct Announcer<'a> {
    interface: &'a str,
    leases: Option<&'a str>,
    cfg: &'a Config,
    key_id: u32,
    key: IpsyncKey,
    mac: Mac,
    service_port: Option<u16>,
    server_name: Option<&'a str>,
}

impl Announcer<'_> {
    fn open(&self, ip: Ipv4Addr) -> Result<Sender, ToolError> {
        Sender::open(self.interface, ip, self.cfg.server.port)
            .map_err(|e| ToolError::Runtime(format!("{}: cannot send from {ip}: {e}", self.interface)))
    }

    /// One announcement: the broadcast, then the unicast copies when `--leases` is given.
    /// `Ok(Some(why))`: the broadcast went out but the lease source could not be read, so no
    /// copy did (one-shot runs fail with it after the broadcast; `--watch` warns and goes on).
    fn send(&self, sender: &Sender, ip: Ipv4Addr, previous: Option<Ipv4Addr>) -> Result<Option<String>, ToolError> {
        // signing_key() only returns keys that can sign.
        let key = self.key.signer().ok_or_else(|| ToolError::Usage("[[key]]: no signing key".into()))?;
        let (leases, lease_error) = match self.leases.map(fleet::read).transpose() {
            Ok(l) => (l.map(|l| l.leases).unwrap_or_default(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        // One sequence for the broadcast and one per copy; take_block checked they all fit.
        let count = leases.len() as u64 + 1;
        let first = sequence::take_block(&self.cfg.state_dir, SEQ_FILE, clock::unix_us(), count)
            .map_err(|e| ToolError::Runtime(format!("{}: {e}", self.cfg.state_dir.display())))?;
        let payload = |sequence| {
            Announce {
                key_id: self.key_id,
                key,
                sequence,
                server_ip: ip,
                server_mac: self.mac,
                previous_ip: previous,
                server_name: self.server_name,
                service_port: self.service_port,
            }
            .payload()
        };
        sender.send(&payload(first)).map_err(|e| ToolError::Runtime(format!("announce {ip}: {e}")))?;
        // What was sent, on stdout: the operator's record (and `--watch`'s journal).
        let prev = previous.map(|p| format!(", previous {p}")).unwrap_or_default();
        let port = self.service_port.map(|p| format!(", service port {p}")).unwrap_or_default();
        let name = self.server_name.map(|n| format!(", name {n:?}")).unwrap_or_default();
        println!("announced {ip} ({}){prev}{port}{name} on {}, sequence {first}", self.mac, self.interface);
        if let (Some(source), None) = (self.leases, &lease_error) {
            let u = unicast(sender, leases.iter().map(|l| l.ip), |i| payload(first + 1 + i as u64));
            println!(
                "announced {ip} unicast to {} of {} leases of {source} ({} unreachable, {} refused), sequences {}..={}",
                u.sent,
                leases.len(),
                u.unreachable,
                u.failed,
                first + 1,
                first + leases.len() as u64
            );
        }
        Ok(lease_error.map(|e| format!("announced {ip} by broadcast only: {e}")))
    }
}

/// Sends `payload(i)` to each address in turn, paced; a full device queue is waited out, an
/// unroutable address counted.
fn unicast(sender: &Sender, to: impl Iterator<Item = Ipv4Addr>, payload: impl Fn(usize) -> Vec<u8>) -> Unicast {
    let mut pacer = Pacer::new(Policy::DEFAULT_RATE, Policy::default().burst, clock::boottime());
    let mut out = Unicast::default();
    for (i, ip) in to.enumerate() {
        let bytes = payload(i);
        loop {
            let now = clock::boottime();
            if !pacer.try_take(now) {
                std::thread::sleep(Duration::from_micros(pacer.earliest().saturating_sub(now).max(50)));
                continue;
            }
            match sender.send_to(&bytes, ip) {
                Ok(()) => out.sent += 1,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) => {
                    pacer.hold(now, BLOCKED_PAUSE_US);
                    continue;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EHOSTUNREACH | libc::ENETUNREACH)) => {
                    log::debug!("announce to {ip}: {e}");
                    out.unreachable += 1;
                }
                // One lease the kernel will not send to (a full neighbour table, say) does not
                // cost the others their copy.
                Err(e) => {
                    if out.failed == 0 {
                        log::warn!("announce to {ip}: {e} (further refusals are only counted)");
                    }
                    out.failed += 1;
                }
            }
            break;
        }
    }
    out
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
    let signer = Announcer {
        interface,
        leases: req.leases.as_deref(),
        cfg,
        key_id,
        key,
        mac,
        service_port: req.service_port,
        server_name: req.server_name.as_deref(),
    };
    // Opened before anything is sent, so a bad address fails at once, in either mode.
    let sender = signer.open(ip)?;
    if req.watch {
        return watch(&signer, sender, link.index, ip, previous, req.interval);
    }
    let count = req.count.unwrap_or(1).max(1);
    let mut partial = None;
    for i in 0..count {
        partial = signer.send(&sender, ip, previous)?.or(partial);
        if i + 1 < count {
            std::thread::sleep(req.interval.unwrap_or(Duration::from_secs(1)));
        }
    }
    partial.map_or(Ok(()), |why| Err(ToolError::Runtime(why)))
}

fn parse_ip(flag: &str, s: &str) -> Result<Ipv4Addr, ToolError> {
    s.parse().map_err(|_| ToolError::Usage(format!("{flag}: expected an IPv4 address, got {s:?}")))
}

/// `announce --watch`: announce now, then again whenever the interface gains a new IPv4 address
/// (with the old one as PREVIOUS_IPV4), and every `interval` if given. Runs until killed.
fn watch(
    signer: &Announcer,
    mut sender: Sender,
    ifindex: u32,
    mut ip: Ipv4Addr,
    mut previous: Option<Ipv4Addr>,
    interval: Option<Duration>,
) -> Result<(), ToolError> {
    let mon = netlink::address_monitor().map_err(|e| ToolError::Runtime(format!("netlink: {e}")))?;
    let mut buf = Vec::new();
    // poll(2) takes milliseconds as an int; -1 waits for an address change only.
    let timeout = interval.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
    loop {
        if let Some(why) = signer.send(&sender, ip, previous)? {
            log::warn!("{why}; trying the lease source again at the next announcement");
        }
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
