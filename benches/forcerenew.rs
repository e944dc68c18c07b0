//! FORCERENEW latency, ipsyncd in dhcp mode against dhcpcd (DESIGN §12, issue item 7), in the
//! same namespaces, with the same dnsmasq, each woken by the same kind of RFC 3118-signed
//! FORCERENEW from `ipsyncd forcerenew`:
//! - FORCERENEW → the client's REQUEST on the wire (target: ipsyncd ≤ 0.5× dhcpcd);
//! - FORCERENEW → the new address in the kernel, the reservation changed every round:
//!   ipsyncd `acd = "strict"` against dhcpcd's default ARP probing (target ≤ 0.8×), and
//!   ipsyncd `acd = "optimistic"` against dhcpcd with `noarp` (target ≤ 0.2×).
//!
//! Every time comes from one capture: tcpdump on the bridge (in its own namespace,
//! `--immediate-mode`, nanosecond stamps) for the frames, and `ip -ts monitor address` in the
//! terminal's namespace for the kernel; both are CLOCK_REALTIME. dhcpcd acts only on a FORCERENEW
//! with its last xid (LAB-NOTES), so before each of its rounds the xid of dnsmasq's last ACK
//! (from `--log-dhcp`) goes into the sender's xid file; ipsyncd accepts any xid.
//!
//! For scale the bench also times the kernel's own answer on the same path: ICMP echo from `srv`
//! to the terminal and the reply, at the same bridge (no user space on the terminal's side).
//!
//! Bounded: BENCH_ROUNDS rounds per phase (default 20, at most 100), each waiting at most 20 s,
//! and the whole bench stops starting rounds after BENCH_MAX_SECONDS (default 900). Results go to
//! stdout and to target/live-bench.txt (replacing the lines of an earlier run of this bench).

#[path = "../tests/it/lab.rs"]
mod lab;

use ipsyncd::shell::capture::Transmitter;
use ipsyncd::shell::netlink::Netlink;
use lab::{dhcp_type, parse_dhcp, AddrMonitor, Lab, SRV_MAC, TERM_MAC};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const PREFIX: &str = "forcerenew:";
const CLOUD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
/// The reservation alternates between these two.
const POOL: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 77, 0, 50), Ipv4Addr::new(10, 77, 0, 51)];
const ROUND_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    IpsyncdStrict,
    IpsyncdOptimistic,
    DhcpcdArp,
    DhcpcdNoarp,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::IpsyncdStrict => "ipsyncd acd=strict",
            Client::IpsyncdOptimistic => "ipsyncd acd=optimistic",
            Client::DhcpcdArp => "dhcpcd (default ARP probing)",
            Client::DhcpcdNoarp => "dhcpcd noarp",
        }
    }
}

/// One round: the wall-clock window it ran in and the address it moved to.
struct Round {
    client: Client,
    start_ns: u64,
    end_ns: u64,
    target: Ipv4Addr,
    ok: bool,
}

/// The measurements of one round, in ms from the FORCERENEW on the wire.
#[derive(Default, Clone, Copy)]
struct Measured {
    to_request: Option<f64>,
    to_address: Option<f64>,
    /// The exchange FR → REQUEST → NAK → DISCOVER → OFFER → REQUEST → ACK → address, split into
    /// the client's share (its four steps) and the server's (dnsmasq's three answers), when the
    /// capture holds the whole chain.
    client_ms: Option<f64>,
    server_ms: Option<f64>,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn cidr(a: Ipv4Addr) -> String {
    format!("{a}/24")
}

/// Classic pcap (either byte order, µs or ns stamps), Ethernet: (ts_ns, frame).
fn read_pcap(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let Ok(b) = std::fs::read(path) else { return Vec::new() };
    if b.len() < 24 {
        return Vec::new();
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => return Vec::new(),
    };
    let rd = |at: usize| -> Option<u32> {
        let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(s) } else { u32::from_be_bytes(s) })
    };
    let mut out = Vec::new();
    let mut at = 24;
    while let (Some(sec), Some(frac), Some(incl)) = (rd(at), rd(at + 4), rd(at + 8)) {
        let start = at + 16;
        let Some(data) = b.get(start..start + incl as usize) else { break };
        let ns = u64::from(sec) * 1_000_000_000 + if nanos { u64::from(frac) } else { u64::from(frac) * 1000 };
        out.push((ns, data.to_vec()));
        at = start + incl as usize;
    }
    out
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An ICMP echo request from srv (10.77.0.1) to the terminal at `dst`, id 0x1505, sequence `seq`.
fn echo_frame(dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 20 + 8 + 32);
    f.extend_from_slice(&TERM_MAC.0);
    f.extend_from_slice(&SRV_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + 32) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[10, 77, 0, 1]);
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut icmp = vec![8, 0, 0, 0, 0x15, 0x05];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(&[0x5a; 32]);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

/// Echo request → reply at the bridge, ms, matched by our id and the sequence.
fn echo_times(frames: &[(u64, Vec<u8>)]) -> Vec<f64> {
    let mut sent = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (ts, f) in frames {
        if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 1 {
            continue;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let i = 14 + ihl;
        if f.len() < i + 8 || f[i + 4..i + 6] != [0x15, 0x05] {
            continue;
        }
        let seq = u16::from_be_bytes([f[i + 6], f[i + 7]]);
        match f[i] {
            8 => {
                sent.insert(seq, *ts);
            }
            0 => {
                if let Some(t0) = sent.remove(&seq) {
                    out.push((ts - t0) as f64 / 1e6);
                }
            }
            _ => {}
        }
    }
    out
}

struct Bench {
    lab: Lab,
    rounds: usize,
    deadline: Instant,
    log: Vec<Round>,
    notes: Vec<String>,
    /// Index into POOL of the current reservation.
    current: usize,
    /// When the last FORCERENEW left: ipsyncd renews at most once a second, so every client
    /// gets them at least `FR_SPACING` apart.
    last_fr: Option<Instant>,
    /// A netlink socket in the terminal's namespace, and term0's index there.
    nl: Netlink,
    idx: u32,
}

const FR_SPACING: Duration = Duration::from_millis(1100);

impl Bench {
    fn target(&self) -> Ipv4Addr {
        POOL[self.current]
    }

    fn restart_dnsmasq(&mut self) {
        self.lab.stop_dnsmasq();
        let _ = std::fs::remove_file(self.lab.dir.join("dnsmasq/leases"));
        self.lab.start_dnsmasq("2m", Some(self.target()), Some(CLOUD));
    }

    fn flush_term(&self) {
        let ns = self.lab.ns("term");
        let _ = std::process::Command::new("ip").args(["-n", &ns, "addr", "flush", "dev", "term0"]).status();
        let _ = std::process::Command::new("ip").args(["-n", &ns, "route", "flush", "dev", "term0"]).status();
    }

    /// Waits until the terminal holds exactly `a` (and, for ipsyncd, its lease is BOUND).
    /// Polls the kernel through a netlink socket made in the terminal's namespace (no process
    /// per poll: on two cores a forking poller would slow the client it measures); `status` is
    /// asked only once the address is there.
    fn wait_for(&mut self, a: Ipv4Addr, ipsyncd: bool, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            let kernel = self.nl.addresses(self.idx).map(|v| v.iter().map(|c| c.to_string()).collect::<Vec<_>>());
            if kernel.ok() == Some(vec![cidr(a)])
                && (!ipsyncd || {
                    let st = self.lab.status();
                    st["lease"]["state"] == "BOUND" && st["lease"]["address"] == cidr(a)
                })
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// BENCH_ROUNDS moves for `client`, which is running and bound to the current reservation.
    fn rounds(&mut self, client: Client) {
        let ipsyncd = matches!(client, Client::IpsyncdStrict | Client::IpsyncdOptimistic);
        let xids = self.lab.dir.join("xids");
        let mut failures = 0;
        for i in 0..self.rounds {
            if Instant::now() > self.deadline {
                self.notes.push(format!("{}: stopped after {i} rounds (BENCH_MAX_SECONDS)", client.name()));
                break;
            }
            let from = self.target();
            self.current = 1 - self.current;
            let to = self.target();
            if !ipsyncd {
                // dhcpcd acts only on its last xid.
                match self.lab.dnsmasq_last_ack_xid(TERM_MAC) {
                    Some(x) => lab::write_atomic(&xids, &format!("{TERM_MAC} 0x{x:08x}\n")),
                    None => self.notes.push(format!("{}: round {i}: no xid in dnsmasq's log", client.name())),
                }
            }
            self.lab.dnsmasq_reload(Some(to), Some(CLOUD));
            // Let the previous round's trailing frames (ARP announcements, hooks) pass.
            std::thread::sleep(Duration::from_millis(300));
            if let Some(t) = self.last_fr {
                std::thread::sleep(FR_SPACING.saturating_sub(t.elapsed()));
            }
            self.last_fr = Some(Instant::now());
            let start_ns = lab::now_ns();
            let sender = if ipsyncd { "fr" } else { "fr-xid" };
            let sent = self.lab.forcerenew(sender, from);
            let ok = sent && self.wait_for(to, ipsyncd, ROUND_LIMIT);
            let end_ns = lab::now_ns();
            self.log.push(Round { client, start_ns, end_ns, target: to, ok });
            if !ok {
                failures += 1;
                self.notes.push(format!(
                    "{}: round {i}: no move {from} → {to} within {} s (kernel {:?})",
                    client.name(),
                    ROUND_LIMIT.as_secs(),
                    self.lab.term_addrs()
                ));
                if failures >= 3 {
                    self.notes.push(format!("{}: three failed rounds, phase abandoned", client.name()));
                    // Resynchronise the reservation with what the client holds.
                    break;
                }
                // The client may hold either address now: follow it.
                if self.lab.term_addrs() == vec![cidr(from)] {
                    self.current = 1 - self.current;
                }
            }
        }
    }

    /// 20 ICMP echoes from srv to the terminal, 50 ms apart (the kernel answers them).
    fn echoes(&self) {
        let dst = self.target();
        self.lab.in_ns("srv", move || {
            let tx = Transmitter::open(Netlink::open().unwrap().link("srv0").unwrap().index).unwrap();
            for seq in 0..20u16 {
                let _ = tx.send(&echo_frame(dst, seq));
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }

    fn start_ipsyncd(&mut self, acd: &str) -> u32 {
        self.lab.write_dhcp_configs(acd, "");
        // A hook-less terminal: hooks are processes, and this measures the daemon.
        let p = self.lab.dir.join("term.toml");
        let cfg = std::fs::read_to_string(&p).unwrap();
        let cfg: String = cfg.lines().filter(|l| !l.starts_with("hook")).map(|l| format!("{l}\n")).collect();
        std::fs::write(&p, cfg).unwrap();
        let pid = self.lab.start_run();
        let t = self.target();
        if !self.wait_for(t, true, ROUND_LIMIT) {
            self.notes.push(format!(
                "ipsyncd acd={acd}: did not bind {t} at start: {}",
                self.lab.log("run.log").lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ));
        }
        pid
    }
}

/// FORCERENEW → REQUEST and → address for one round, from the capture and the monitor.
fn measure(r: &Round, frames: &[lab::DhcpSeen], addrs: &[lab::AddrEvent]) -> Measured {
    let in_window = |ts: u64| ts >= r.start_ns && ts <= r.end_ns + 50_000_000;
    let Some(fr) =
        frames.iter().find(|d| in_window(d.ts_ns) && d.msg_type == dhcp_type::FORCERENEW && d.chaddr == TERM_MAC)
    else {
        return Measured::default();
    };
    let t0 = fr.ts_ns;
    let request = frames.iter().find(|d| d.ts_ns >= t0 && d.src_mac == TERM_MAC && d.msg_type == dhcp_type::REQUEST);
    let to_request = request.filter(|q| in_window(q.ts_ns)).map(|q| (q.ts_ns - t0) as f64 / 1e6);
    let want = cidr(r.target);
    let address = if r.ok {
        addrs.iter().find(|e| e.added && e.ifname == "term0" && e.cidr == want && e.ts_ns >= t0 && in_window(e.ts_ns))
    } else {
        None
    };
    let to_address = address.map(|e| (e.ts_ns - t0) as f64 / 1e6);
    // The chain, each step the first matching frame after the one before.
    let next = |after: u64, from_client: bool, t: u8| {
        frames
            .iter()
            .find(|d| {
                d.ts_ns >= after
                    && in_window(d.ts_ns)
                    && d.msg_type == t
                    && if from_client { d.src_mac == TERM_MAC } else { d.chaddr == TERM_MAC && d.src_mac != TERM_MAC }
            })
            .map(|d| d.ts_ns)
    };
    let chain = (|| {
        let q1 = next(t0, true, dhcp_type::REQUEST)?;
        let nak = next(q1, false, dhcp_type::NAK)?;
        let dis = next(nak, true, dhcp_type::DISCOVER)?;
        let off = next(dis, false, dhcp_type::OFFER)?;
        let q2 = next(off, true, dhcp_type::REQUEST)?;
        let ack = next(q2, false, dhcp_type::ACK)?;
        let a = address?.ts_ns.max(ack);
        let client = (q1 - t0) + (dis - nak) + (q2 - off) + (a - ack);
        let server = (nak - q1) + (off - dis) + (ack - q2);
        Some((client as f64 / 1e6, server as f64 / 1e6))
    })();
    Measured { to_request, to_address, client_ms: chain.map(|c| c.0), server_ms: chain.map(|c| c.1) }
}

fn run(out: &mut String) {
    let Some(lab) = Lab::new_dhcp("fb") else {
        let _ = writeln!(out, "{PREFIX} SKIP (needs root for network namespaces)");
        return;
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20).clamp(1, 100);
    let max_s: u64 = std::env::var("BENCH_MAX_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(900);
    let (nl, idx) = lab.in_ns("term", || {
        let mut nl = Netlink::open().unwrap();
        let idx = nl.link("term0").unwrap().index;
        (nl, idx)
    });
    let mut b = Bench {
        nl,
        idx,
        lab,
        rounds,
        deadline: Instant::now() + Duration::from_secs(max_s),
        log: Vec::new(),
        notes: Vec::new(),
        current: 0,
        last_fr: None,
    };
    assert!(b.lab.sh("srv", &["ip", "addr", "add", &cidr(CLOUD), "dev", "srv0"]));
    let xids = b.lab.dir.join("xids");
    b.lab.write_sender("fr", 1, lab::DHCP_SECRET, None);
    b.lab.write_sender("fr-xid", 1, lab::DHCP_SECRET, Some(&xids));
    b.lab.write_dhcp_configs("strict", ""); // srv.toml for serve
    b.lab.start_serve();
    // One capture on the bridge for the whole bench, one address monitor in the terminal.
    let pcap = b.lab.dir.join("bridge.pcap");
    let pcap_s = pcap.display().to_string();
    let tcpdump = b.lab.spawn_cmd(
        "br",
        &[
            "tcpdump",
            "-i",
            "br0",
            "-n",
            "--immediate-mode",
            "-U",
            "--time-stamp-precision=nano",
            "-s",
            "600",
            "-w",
            &pcap_s,
            "udp port 67 or udp port 68 or icmp",
        ],
        "tcpdump.log",
    );
    if lab::within(Duration::from_secs(5), || b.lab.log("tcpdump.log").contains("listening on")).is_none() {
        let _ = writeln!(out, "{PREFIX} SKIP (tcpdump did not start: {})", b.lab.log("tcpdump.log").trim());
        return;
    }
    let monitor = AddrMonitor::start(&b.lab.ns("term"), b.lab.dir.join("addr-monitor.txt"));
    let t_all = Instant::now();

    // ipsyncd, strict then optimistic (a restart keeps the lease: INIT-REBOOT).
    b.restart_dnsmasq();
    let pid = b.start_ipsyncd("strict");
    b.echoes();
    b.rounds(Client::IpsyncdStrict);
    b.lab.stop_child(pid, nix::sys::signal::Signal::SIGTERM);
    let pid = b.start_ipsyncd("optimistic");
    b.rounds(Client::IpsyncdOptimistic);
    b.lab.stop_child(pid, nix::sys::signal::Signal::SIGTERM);

    // dhcpcd, default ARP probing then noarp; a fresh dnsmasq lease database for each.
    for (client, extra) in [(Client::DhcpcdArp, ""), (Client::DhcpcdNoarp, "noarp")] {
        b.flush_term();
        b.restart_dnsmasq();
        b.lab.write_dhcpcd_conf(extra);
        if !b.lab.start_dhcpcd() || !b.wait_for(b.target(), false, ROUND_LIMIT) {
            b.notes.push(format!("{}: no lease at start (is dhcpcd-base installed?)", client.name()));
            b.lab.stop_dhcpcd();
            continue;
        }
        b.rounds(client);
        b.lab.stop_dhcpcd();
    }
    let total_s = t_all.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500)); // tcpdump may lose frames stopped at once
    b.lab.stop_child(tcpdump, nix::sys::signal::Signal::SIGINT);
    let raw = read_pcap(&pcap);
    let frames: Vec<lab::DhcpSeen> = raw.iter().filter_map(|(ts, f)| parse_dhcp(*ts, f)).collect();
    let echo = echo_times(&raw);
    let addrs = monitor.events();
    drop(monitor);

    let mut req: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut adr: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut n_ok: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut own: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut srv: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for r in &b.log {
        let m = measure(r, &frames, &addrs);
        let e = n_ok.entry(r.client.name()).or_default();
        e.1 += 1;
        if r.ok {
            e.0 += 1;
        }
        if let Some(v) = m.to_request {
            req.entry(r.client.name()).or_default().push(v);
        }
        if let Some(v) = m.to_address {
            adr.entry(r.client.name()).or_default().push(v);
        }
        if let (Some(c), Some(sv)) = (m.client_ms, m.server_ms) {
            own.entry(r.client.name()).or_default().push(c);
            srv.entry(r.client.name()).or_default().push(sv);
        }
    }
    let med =
        |m: &std::collections::BTreeMap<&str, Vec<f64>>, c: Client| median(m.get(c.name()).map_or(&[][..], |v| v));
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3} ms"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.3}x", a / b),
        _ => "n/a".into(),
    };
    let pooled = |m: &std::collections::BTreeMap<&str, Vec<f64>>, cs: [Client; 2]| {
        let v: Vec<f64> = cs.iter().flat_map(|c| m.get(c.name()).cloned().unwrap_or_default()).collect();
        (median(&v), v.len())
    };
    let _ = writeln!(
        out,
        "{PREFIX} ipsyncd (dhcp mode) vs dhcpcd 9.4.1, same namespaces and dnsmasq, RFC 3118-signed FORCERENEW from `ipsyncd forcerenew`; {rounds} rounds per client, reservation changed every round; {total_s:.0} s in all"
    );
    for c in [Client::IpsyncdStrict, Client::IpsyncdOptimistic, Client::DhcpcdArp, Client::DhcpcdNoarp] {
        let (ok, n) = n_ok.get(c.name()).copied().unwrap_or((0, 0));
        let _ = writeln!(
            out,
            "{PREFIX}   {:<30} moved {ok}/{n}: FORCERENEW → REQUEST median {} (n={}), → new address in kernel median {} (n={})",
            c.name(),
            fmt(med(&req, c)),
            req.get(c.name()).map_or(0, |v| v.len()),
            fmt(med(&adr, c)),
            adr.get(c.name()).map_or(0, |v| v.len())
        );
    }
    for c in [Client::IpsyncdOptimistic, Client::DhcpcdNoarp] {
        let _ = writeln!(
            out,
            "{PREFIX}   {:<30} of FORCERENEW → address without ACD waits: the client's own steps median {}, dnsmasq's three answers median {} (n={})",
            c.name(),
            fmt(med(&own, c)),
            fmt(med(&srv, c)),
            own.get(c.name()).map_or(0, |v| v.len())
        );
    }
    let (ours_req, n1) = pooled(&req, [Client::IpsyncdStrict, Client::IpsyncdOptimistic]);
    let (theirs_req, n2) = pooled(&req, [Client::DhcpcdArp, Client::DhcpcdNoarp]);
    let _ = writeln!(
        out,
        "{PREFIX} FORCERENEW → REQUEST on the wire: ipsyncd {} (n={n1}) vs dhcpcd {} (n={n2}): ratio {} (target ≤ 0.5x)",
        fmt(ours_req),
        fmt(theirs_req),
        ratio(ours_req, theirs_req)
    );
    let _ = writeln!(
        out,
        "{PREFIX} for scale, the kernel on the same path: ICMP echo srv → terminal → reply at the bridge, median {} (n={})",
        fmt(median(&echo)),
        echo.len()
    );
    let (s, d) = (med(&adr, Client::IpsyncdStrict), med(&adr, Client::DhcpcdArp));
    let _ = writeln!(
        out,
        "{PREFIX} FORCERENEW → new address, strict ACD vs dhcpcd default ARP: {} vs {}: ratio {} (target ≤ 0.8x)",
        fmt(s),
        fmt(d),
        ratio(s, d)
    );
    let (o, n) = (med(&adr, Client::IpsyncdOptimistic), med(&adr, Client::DhcpcdNoarp));
    let _ = writeln!(
        out,
        "{PREFIX} FORCERENEW → new address, optimistic ACD vs dhcpcd noarp: {} vs {}: ratio {} (target ≤ 0.2x)",
        fmt(o),
        fmt(n),
        ratio(o, n)
    );
    for note in &b.notes {
        let _ = writeln!(out, "{PREFIX} note: {note}");
    }
    if frames.is_empty() {
        let _ = writeln!(out, "{PREFIX} note: the bridge capture is empty ({})", b.lab.log("tcpdump.log").trim());
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let mut out = String::new();
    run(&mut out);
    print!("{out}");
    // Replace this bench's lines in the shared figures file, keep the others'.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/live-bench.txt");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut text: String = old.lines().filter(|l| !l.starts_with(PREFIX)).map(|l| format!("{l}\n")).collect();
    text.push_str(&out);
    let _ = std::fs::write(path, text);
}
