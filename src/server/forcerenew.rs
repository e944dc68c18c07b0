//! `ipsyncd forcerenew`: authenticated FORCERENEW (RFC 3203) to one client or to every live
//! lease of a DHCP server, until each one renews.
//!
//! Contract: signed per `[forcerenew]` (RFC 3118 delayed auth with a `[[dhcp_key]]`, or the
//! RFC 6704 reconfigure key). The replay counters follow the sequence rule of DESIGN §4.3 and
//! are persisted a block at a time before the first frame of the block leaves, so they strictly
//! increase across frames and runs (dhcpcd rejects an equal counter). The xid comes from the
//! xid file when it knows the client (dhcpcd acts only on the xid of its last exchange; ipsyncd
//! terminals accept any). Each frame is sent from the interface's address on the client's
//! subnet, else its first. Who is sent what and when is [`Campaign`]'s policy (pacing, doubling
//! retries, "renewed" = its REQUEST seen on the interface); this file only executes it and
//! prints the report of DESIGN §6. A frame the device had no room for is sent again, not lost.

use super::campaign::{Campaign, Policy, Report, Target};
use super::dhcp_watch::DhcpWatch;
use super::error::ToolError;
use super::xid_db::{self, XidDb};
use super::{fleet, sequence, ForceRenew, ForceRenewAuth};
use crate::config::{self, Config, ForceRenewAuth as AuthKind};
use crate::shell::capture::Transmitter;
use crate::shell::clock;
use crate::shell::netlink::Netlink;
use crate::wire::dhcpv4::MessageType;
use crate::wire::Mac;
use std::net::Ipv4Addr;
use std::path::Path;

pub const REPLAY_FILE: &str = "forcerenew.replay";
/// Replay counters reserved per write (at most 65 ms ahead of a µs clock).
const MAX_REPLAY_BLOCK: u64 = 65_536;

/// The next RFC 3118 replay counter, persisted in `state_dir` before use.
pub fn next_replay(state_dir: &Path, now_unix_us: u64) -> std::io::Result<u64> {
    sequence::take_persisted(state_dir, REPLAY_FILE, now_unix_us)
}

/// The command line's request, as given.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub interface: String,
    pub client: Option<String>,
    pub client_mac: Option<String>,
    /// A dnsmasq lease file, a Kea memfile CSV, or `kea:PATH` (Kea's control socket).
    pub leases: Option<String>,
    /// Resends after the first (default [`Policy::DEFAULT_RETRIES`]).
    pub retries: Option<u32>,
    /// First FORCERENEWs per second (default [`Policy::DEFAULT_RATE`]).
    pub rate: Option<u32>,
    pub require_confirm: bool,
    pub json: bool,
}

/// How `run` ended when every frame went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// `--require-confirm` and some clients did not renew (exit 3).
    Unconfirmed {
        missing: usize,
    },
}

/// The signing material of `[forcerenew]`, owned.
enum Auth {
    Delayed { secret_id: u32, key: Vec<u8> },
    ReconfigureKey { key: [u8; 16] },
}

impl Auth {
    fn from_config(cfg: &Config, config_path: &Path) -> Result<Auth, ToolError> {
        let in_file = |m: String| ToolError::Usage(format!("{}: {m}", config_path.display()));
        let section =
            cfg.forcerenew.clone().ok_or_else(|| in_file("[forcerenew]: required to sign FORCERENEW".into()))?;
        match section.auth {
            AuthKind::Delayed => {
                let key = cfg.dhcp_keys().get(&section.key_id).cloned().ok_or_else(|| {
                    in_file(format!("forcerenew.key_id = {}: no [[dhcp_key]] with that id", section.key_id))
                })?;
                Ok(Auth::Delayed { secret_id: section.key_id, key: key.to_vec() })
            }
            AuthKind::ReconfigureKey => {
                let v = section.reconfigure_key.as_deref().ok_or_else(|| {
                    in_file("forcerenew.reconfigure_key: required for auth = \"reconfigure-key\"".into())
                })?;
                let bytes = config::parse_secret(v).map_err(|e| in_file(format!("forcerenew.reconfigure_key: {e}")))?;
                let key = <[u8; 16]>::try_from(bytes.as_slice())
                    .map_err(|_| in_file("forcerenew.reconfigure_key: expected 16 bytes".into()))?;
                Ok(Auth::ReconfigureKey { key })
            }
        }
    }

    fn borrow(&self) -> ForceRenewAuth<'_> {
        match self {
            Auth::Delayed { secret_id, key } => ForceRenewAuth::Delayed { secret_id: *secret_id, key },
            Auth::ReconfigureKey { key } => ForceRenewAuth::ReconfigureKey { key },
        }
    }
}

/// Replay counters taken from `forcerenew.replay` a block at a time (see
/// [`sequence::take_block`]): strictly increasing across frames and runs.
struct Replay<'a> {
    dir: &'a Path,
    next: u64,
    /// Values of the reserved block not yet used.
    remaining: u64,
    block: u64,
}

impl Replay<'_> {
    fn take(&mut self) -> Result<u64, ToolError> {
        if self.remaining == 0 {
            self.next = sequence::take_block(self.dir, REPLAY_FILE, clock::unix_us(), self.block)
                .map_err(|e| ToolError::Runtime(format!("{}: {e}", self.dir.display())))?;
            self.remaining = self.block;
        }
        let r = self.next;
        self.remaining -= 1;
        // take_block checked that the whole block fits; past its end the value is never used.
        self.next = self.next.wrapping_add(1);
        Ok(r)
    }
}

/// Who to reach: `--client IP --client-mac MAC`, or the live leases of `--leases`.
fn targets(req: &Request, xids: &XidDb) -> Result<Vec<Target>, ToolError> {
    let with_xid = |ip, mac| Target { ip, mac, xid: xids.get(mac) };
    match (&req.client, &req.leases) {
        (Some(_), Some(_)) => Err(ToolError::Usage("--client and --leases: give one, not both".into())),
        (None, None) => Err(ToolError::Usage("--client IP (with --client-mac) or --leases SOURCE is required".into())),
        (Some(client), None) => {
            let ip: Ipv4Addr = client
                .parse()
                .map_err(|_| ToolError::Usage(format!("--client: expected an IPv4 address, got {client:?}")))?;
            let mac: Mac = req
                .client_mac
                .as_deref()
                .ok_or_else(|| ToolError::Usage("--client-mac MAC is required with --client".into()))?
                .parse()
                .map_err(|_| ToolError::Usage("--client-mac: expected aa:bb:cc:dd:ee:ff".into()))?;
            Ok(vec![with_xid(ip, mac)])
        }
        (None, Some(source)) => {
            if req.client_mac.is_some() {
                return Err(ToolError::Usage("--client-mac goes with --client, not --leases".into()));
            }
            Ok(fleet::read(source)?.leases.iter().map(|l| with_xid(l.ip, l.mac)).collect())
        }
    }
}

/// `ipsyncd forcerenew`. `config_path` names the config in errors. Prints the report (DESIGN
/// §6) on stdout.
pub fn run(cfg: &Config, config_path: &Path, req: Request) -> Result<Outcome, ToolError> {
    let auth = Auth::from_config(cfg, config_path)?;
    let xids = cfg
        .forcerenew
        .as_ref()
        .and_then(|s| s.xid_db.as_deref())
        .map_or_else(|| XidDb::new(xid_db::MAX_ENTRIES), known_xids);
    let targets = targets(&req, &xids)?;
    let policy = Policy {
        retries: req.retries.unwrap_or(Policy::DEFAULT_RETRIES),
        rate_per_s: match req.rate {
            Some(0) => return Err(ToolError::Usage("--rate: expected at least 1 frame per second".into())),
            Some(r) => r,
            None => Policy::DEFAULT_RATE,
        },
        ..Policy::default()
    };
    let interface = req.interface.as_str();
    let mut nl = Netlink::open().map_err(|e| ToolError::Runtime(format!("netlink: {e}")))?;
    let link = nl.link(interface).map_err(|e| ToolError::Runtime(e.to_string()))?;
    let server_mac = link.mac.ok_or_else(|| ToolError::Runtime(format!("{interface}: has no MAC address")))?;
    let addrs = nl.addresses(link.index).map_err(|e| ToolError::Runtime(e.to_string()))?;
    let first = addrs
        .first()
        .map(|c| c.addr)
        .ok_or_else(|| ToolError::Runtime(format!("{interface}: has no IPv4 address to send from")))?;
    // From the interface's address on the client's subnet, else its first (RFC 3203: the
    // server identifier the client knows).
    let from = |ip: Ipv4Addr| addrs.iter().find(|c| c.contains(ip)).map_or(first, |c| c.addr);
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| ToolError::Runtime(format!("{}: {e}", cfg.state_dir.display())))?;
    let tx = Transmitter::open(link.index)
        .map_err(|e| ToolError::Runtime(format!("{interface}: {e} (needs CAP_NET_RAW)")))?;
    // Opened before the first frame leaves, so no REQUEST it provokes is missed.
    let mut watch = DhcpWatch::open(link.index)
        .map_err(|e| ToolError::Runtime(format!("{interface}: watching for REQUESTs: {e} (needs CAP_NET_RAW)")))?;
    // Enough for every frame of a normal run in one write, but never far ahead of the clock:
    // a counter reserved days ahead would make terminals reject the next sender's frames as
    // replayed if this state directory were lost.
    let block = (targets.len() as u64).saturating_mul(u64::from(policy.retries) + 1).clamp(1, MAX_REPLAY_BLOCK);
    let mut replay = Replay { dir: &cfg.state_dir, next: 0, remaining: 0, block };
    let auth = auth.borrow();
    let mut campaign = Campaign::new(targets, policy, clock::boottime());
    // Whatever ends the run early, the report of what was done so far is printed first.
    let result = drive(&mut campaign, &tx, &mut watch, &mut replay, auth, &from, server_mac, interface);
    let report = campaign.report();
    print_report(&report, req.json);
    result?;
    let missing = report.clients.len() - report.renewed;
    if req.require_confirm && report.clients.is_empty() {
        return Ok(Outcome::Unconfirmed { missing: 0 });
    }
    Ok(if req.require_confirm && missing > 0 { Outcome::Unconfirmed { missing } } else { Outcome::Sent })
}

/// Runs the campaign to its end: sends what it says when it says, and reports the REQUESTs.
#[allow(clippy::too_many_arguments)]
fn drive(
    campaign: &mut Campaign,
    tx: &Transmitter,
    watch: &mut DhcpWatch,
    replay: &mut Replay<'_>,
    auth: ForceRenewAuth<'_>,
    from: &dyn Fn(Ipv4Addr) -> Ipv4Addr,
    server_mac: Mac,
    interface: &str,
) -> Result<(), ToolError> {
    while !campaign.is_finished() {
        let now = clock::boottime();
        watch
            .drain(|m| {
                if m.message_type == MessageType::Request && campaign.handle_request(now, m.mac, m.address()) {
                    log::debug!("REQUEST from {} ({}) xid {:#010x}", m.mac, m.address().unwrap_or(m.src_ip), m.xid);
                }
            })
            .map_err(|e| ToolError::Runtime(format!("{interface}: {e}")))?;
        while let Some(s) = campaign.poll_transmit(now) {
            let t = s.target;
            let m = ForceRenew {
                server_ip: from(t.ip),
                server_mac,
                client_ip: t.ip,
                client_mac: t.mac,
                xid: t.xid.unwrap_or(0),
                replay: replay.take()?,
                auth,
            };
            match tx.send(&m.frame()) {
                Ok(()) => log::debug!("FORCERENEW {} to {} ({}) replay {}", s.attempt, t.ip, t.mac, m.replay),
                // The device queue is full: not lost, sent again when there is room.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) => {
                    campaign.handle_send_blocked(now, s);
                    break;
                }
                Err(e) => {
                    return Err(ToolError::Runtime(format!("{interface}: sending FORCERENEW to {}: {e}", t.ip)));
                }
            }
        }
        if let Some(at) = campaign.poll_timeout() {
            wait(watch.raw_fd(), at.saturating_sub(clock::boottime()))
                .map_err(|e| ToolError::Runtime(format!("{interface}: {e}")))?;
        }
    }
    Ok(())
}

/// Sleeps until `fd` is readable or `us` microseconds passed.
fn wait(fd: std::os::fd::RawFd, us: u64) -> std::io::Result<()> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ts =
        libc::timespec { tv_sec: (us / 1_000_000) as libc::time_t, tv_nsec: ((us % 1_000_000) * 1000) as libc::c_long };
    // SAFETY: one live pollfd and a live timespec; no signal mask.
    let r = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn xid_text(x: Option<u32>) -> String {
    x.map_or_else(|| "unknown".into(), |x| format!("{x:#010x}"))
}

/// The report of DESIGN §6: one JSON object, or text for a person.
pub fn render_report(r: &Report, json: bool) -> String {
    if json {
        let clients: Vec<serde_json::Value> = r
            .clients
            .iter()
            .map(|c| {
                serde_json::json!({
                    "ip": c.target.ip.to_string(),
                    "mac": c.target.mac.to_string(),
                    "xid": c.target.xid.map(|x| format!("{x:#010x}")),
                    "attempts": c.attempts,
                    "renewed": c.renewed,
                    "ms": c.ms.map(|m| (m * 1000.0).round() / 1000.0),
                })
            })
            .collect();
        let v = serde_json::json!({
            "sent": r.sent,
            "renewed": r.renewed,
            "seconds": (r.seconds * 1000.0).round() / 1000.0,
            "frames": r.frames,
            "within_1s": r.within_1s,
            "within_2s": r.within_2s,
            "first_sends_ms": r.first_sends_ms.map(|m| (m * 1000.0).round() / 1000.0),
            "clients": clients,
        });
        return format!("{v}\n");
    }
    let mut out = format!(
        "sent FORCERENEW to {} clients ({} frames); {} renewed in {:.2} s: {} within 1 s, {} within 2 s\n",
        r.sent, r.frames, r.renewed, r.seconds, r.within_1s, r.within_2s
    );
    for c in &r.clients {
        let t = c.target;
        let what = match c.ms {
            Some(ms) if c.renewed => format!("renewed after {ms:.1} ms"),
            _ => "NOT renewed".to_string(),
        };
        let plural = if c.attempts == 1 { "" } else { "s" };
        out.push_str(&format!(
            "{:<15} {} xid {:<10} {} attempt{plural}: {what}\n",
            t.ip.to_string(),
            t.mac,
            xid_text(t.xid),
            c.attempts
        ));
    }
    let missing = r.clients.len() - r.renewed;
    if missing > 0 {
        out.push_str(&format!("{missing} of {} clients did not renew\n", r.clients.len()));
    }
    out
}

fn print_report(r: &Report, json: bool) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(render_report(r, json).as_bytes());
}

/// The xid file's table, or an empty one (with a warning) when it cannot be read. Read like
/// `serve` reads it: bounded, a link not followed (DESIGN §10).
fn known_xids(path: &Path) -> XidDb {
    match XidDb::load(path, xid_db::MAX_ENTRIES) {
        Ok((db, loaded)) => {
            if !loaded.bad_lines.is_empty() {
                let lines = xid_db::describe_lines(&loaded.bad_lines);
                log::warn!("{}: not `<mac> 0x<8 hex digits>`, ignored: {lines}", path.display());
            }
            db
        }
        Err(e) => {
            log::warn!("{}: {e}; sending xid 0 (dhcpcd will drop it)", path.display());
            XidDb::new(xid_db::MAX_ENTRIES)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::campaign::ClientReport;

    fn report() -> Report {
        let t = |last: u8, xid| Target { ip: Ipv4Addr::new(10, 77, 0, last), mac: Mac([2, 0, 0, 0, 0, last]), xid };
        Report {
            sent: 2,
            frames: 6,
            renewed: 1,
            seconds: 7.7512,
            within_1s: 1,
            within_2s: 1,
            first_sends_ms: Some(0.05),
            clients: vec![
                ClientReport {
                    target: t(50, Some(0x1a2b_3c4d)),
                    attempts: 1,
                    renewed: true,
                    ms: Some(0.9004),
                    since_start_ms: Some(1.0),
                },
                ClientReport { target: t(51, None), attempts: 5, renewed: false, ms: None, since_start_ms: None },
            ],
        }
    }

    #[test]
    fn the_json_report_has_design_s6_fields() {
        let v: serde_json::Value = serde_json::from_str(&render_report(&report(), true)).unwrap();
        assert_eq!((v["sent"].as_u64(), v["renewed"].as_u64(), v["seconds"].as_f64()), (Some(2), Some(1), Some(7.751)));
        let c = &v["clients"];
        assert_eq!(c[0]["ip"], "10.77.0.50");
        assert_eq!(c[0]["mac"], "02:00:00:00:00:32");
        assert_eq!(c[0]["xid"], "0x1a2b3c4d");
        assert_eq!(
            (c[0]["attempts"].as_u64(), c[0]["renewed"].as_bool(), c[0]["ms"].as_f64()),
            (Some(1), Some(true), Some(0.9))
        );
        assert_eq!((&c[1]["xid"], &c[1]["ms"]), (&serde_json::Value::Null, &serde_json::Value::Null));
        assert_eq!((c[1]["attempts"].as_u64(), c[1]["renewed"].as_bool()), (Some(5), Some(false)));
    }

    #[test]
    fn the_text_report_names_every_client_and_the_ones_that_did_not_renew() {
        let t = render_report(&report(), false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "sent FORCERENEW to 2 clients (6 frames); 1 renewed in 7.75 s: 1 within 1 s, 1 within 2 s"
        );
        assert!(
            lines[1].starts_with("10.77.0.50") && lines[1].ends_with("xid 0x1a2b3c4d 1 attempt: renewed after 0.9 ms"),
            "{t}"
        );
        assert!(lines[2].ends_with("xid unknown    5 attempts: NOT renewed"), "{t}");
        assert_eq!(lines[3], "1 of 2 clients did not renew");
    }
}
