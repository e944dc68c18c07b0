//! A network-namespace lab for tests, benchmarks and the demo: a bridge in its own namespace
//! and hosts `srv`, `term` and `attacker` on it, each with a veth and an address in 10.77.0.0/24.
//! Everything it creates (processes, namespaces) is removed when it drops, even after a panic.
//! Shared by tests/it (as a module) and benches/live.rs (through `#[path]`).
//!
//! For dhcp mode ([`Lab::new_dhcp`]) `term` starts without an address, dnsmasq in `srv` is the
//! DHCP server (private hosts, opts, lease and pid files under the lab's directory, option 224
//! keyed by the `known` tag that a plain hosts-file reservation sets: LAB-NOTES' SIGHUP crash
//! needs `set:` tags in the hosts file), and dhcpcd, when used, runs in a mount namespace with a
//! private /run, /var/lib and /etc/resolv.conf and a logging `script`, so it can never touch the
//! host's files. [`Sniffer`] records every frame through `term`'s bridge port with kernel
//! timestamps; [`AddrMonitor`] is `ip -ts monitor address` in a namespace.

#![allow(dead_code)]

use ipsyncd::shell::netlink::Netlink;
use ipsyncd::wire::Mac;
use netlink_packet_route::neighbour::NeighbourState;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const KEY_HEX: &str = "0x4242424242424242424242424242424242424242424242424242424242424242";
pub const SRV_MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
pub const TERM_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
pub const EVIL_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x66]);
pub const RTR_MAC: Mac = Mac([2, 0, 0, 0, 0, 0xfe]);
/// The RFC 3118 `[[dhcp_key]] id = 1` secret of the dhcp-mode configs (and dhcpcd's authtoken).
pub const DHCP_SECRET: &str = "dhcpsecret-at-least-16";

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipsyncd-lab-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("lab dir");
    d
}

pub struct Lab {
    prefix: String,
    names: Vec<String>,
    pub children: Vec<Child>,
    pub dir: PathBuf,
    /// The running dnsmasq's pid (a child of ours: `ip netns exec` execs it).
    dnsmasq: Option<u32>,
}

impl Lab {
    /// Tests call this: root-only tests are `#[ignore = "needs root"]`, so reaching it without
    /// root means someone asked for them, and a skip that reports ok would hide that nothing ran.
    pub fn require(tag: &str) -> Lab {
        match Lab::new(tag) {
            Some(lab) => lab,
            None => panic!("end-to-end tests need root (run them as root with --include-ignored)"),
        }
    }

    /// As [`Lab::require`], with `term` given no address: its DHCP client (ipsyncd in dhcp
    /// mode, or dhcpcd) gets one from dnsmasq.
    pub fn require_dhcp(tag: &str) -> Lab {
        match Lab::new_dhcp(tag) {
            Some(lab) => lab,
            None => panic!("end-to-end tests need root (run them as root with --include-ignored)"),
        }
    }

    /// `None` when not root; the live bench reports that as its own SKIP line.
    pub fn new(tag: &str) -> Option<Lab> {
        Lab::build(tag, "10.77.0.10/24")
    }

    /// `term` without an address, for dhcp mode; `None` when not root.
    pub fn new_dhcp(tag: &str) -> Option<Lab> {
        Lab::build(tag, "")
    }

    /// The bridge in its own namespace and `srv` on it; `None` when not root.
    fn bridge_and_srv(tag: &str) -> Option<Lab> {
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let prefix = format!("ipsl{}{}", tag, std::process::id());
        let mut lab = Lab { prefix, names: Vec::new(), children: Vec::new(), dir: tmpdir(tag), dnsmasq: None };
        let br = lab.add_ns("br");
        lab.ip(&["-n", &br, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
        lab.ip(&["-n", &br, "link", "set", "br0", "up"]);
        lab.host("srv", "srv0", SRV_MAC, "10.77.0.1/24");
        Some(lab)
    }

    fn build(tag: &str, term_cidr: &str) -> Option<Lab> {
        let mut lab = Lab::bridge_and_srv(tag)?;
        lab.host("term", "term0", TERM_MAC, term_cidr);
        lab.host("attacker", "att0", EVIL_MAC, "10.77.0.66/24");
        Some(lab)
    }

    /// `srv` on the bridge as usual, and `term` on a subnet of its own behind a router: `rtr`
    /// has rtr0 (10.77.0.254/24) on the bridge and rtr1 (10.78.0.254/24) on a veth to term0
    /// (10.78.0.10/24, default route via rtr1); srv routes 10.78.0.0/24 via rtr0. A broadcast
    /// from srv never reaches `term`; a unicast does. `None` when not root.
    pub fn new_routed(tag: &str) -> Option<Lab> {
        let mut lab = Lab::bridge_and_srv(tag)?;
        lab.host("rtr", "rtr0", RTR_MAC, "10.77.0.254/24");
        let (rtr, term) = (lab.ns("rtr"), lab.add_ns("term"));
        lab.ip(&["link", "add", "rtr1", "netns", &rtr, "type", "veth", "peer", "name", "term0", "netns", &term]);
        lab.ip(&["-n", &rtr, "link", "set", "rtr1", "up"]);
        lab.ip(&["-n", &rtr, "addr", "add", "10.78.0.254/24", "dev", "rtr1"]);
        lab.ip(&["-n", &term, "link", "set", "term0", "address", &TERM_MAC.to_string(), "up"]);
        lab.ip(&["-n", &term, "addr", "add", "10.78.0.10/24", "dev", "term0"]);
        lab.ip(&["-n", &term, "route", "add", "default", "via", "10.78.0.254"]);
        lab.ip(&["-n", &lab.ns("srv"), "route", "add", "10.78.0.0/24", "via", "10.77.0.254"]);
        assert!(lab.sh("rtr", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        Some(lab)
    }

    fn ip(&self, args: &[&str]) {
        let ok = Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "ip {args:?}");
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}{}", self.prefix, host)
    }

    fn add_ns(&mut self, host: &str) -> String {
        let n = self.ns(host);
        self.ip(&["netns", "add", &n]);
        self.names.push(n.clone());
        self.ip(&["-n", &n, "link", "set", "lo", "up"]);
        let _ = Command::new("ip")
            .args(["netns", "exec", &n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            .status();
        n
    }

    pub fn host(&mut self, host: &str, ifname: &str, mac: Mac, cidr: &str) {
        let n = self.add_ns(host);
        let br = self.ns("br");
        let peer = self.port(host);
        self.ip(&["link", "add", &peer, "netns", &br, "type", "veth", "peer", "name", ifname, "netns", &n]);
        self.ip(&["-n", &br, "link", "set", &peer, "master", "br0", "up"]);
        self.ip(&["-n", &n, "link", "set", ifname, "address", &mac.to_string(), "up"]);
        if !cidr.is_empty() {
            self.ip(&["-n", &n, "addr", "add", cidr, "dev", ifname]);
        }
    }

    /// The name of `host`'s veth end in the bridge namespace (its switch port).
    pub fn port(&self, host: &str) -> String {
        // Interface names are at most 15 bytes.
        format!("v{}{}", &host[..3], std::process::id() % 100_000)
    }

    pub fn sh(&self, host: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn spawn(&mut self, host: &str, args: &[&str], log: &str) {
        let out = std::fs::File::create(self.dir.join(log)).unwrap();
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(env!("CARGO_BIN_EXE_ipsyncd"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        self.children.push(c);
    }

    /// Runs `f` on a thread inside `host`'s namespace.
    pub fn in_ns<T: Send + 'static>(&self, host: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.ns(host), f)
    }

    /// Runs `ipsyncd ARGS` inside `host`; (exit code, stdout, stderr).
    pub fn tool(&self, host: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), env!("CARGO_BIN_EXE_ipsyncd")])
            .args(args)
            .output()
            .expect("ipsyncd");
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), s(&out.stdout), s(&out.stderr))
    }

    /// Runs `ipsyncd ARGS` inside `host`; true when it exits 0.
    pub fn ipsyncd(&self, host: &str, args: &[&str]) -> bool {
        let mut full = vec![env!("CARGO_BIN_EXE_ipsyncd")];
        full.extend_from_slice(args);
        self.sh(host, &full)
    }

    /// Starts `serve` on srv and `run` on term with the configs `write_configs` made, and waits
    /// until the terminal has connected (its SERVER_CONNECTED hook ran).
    pub fn start_follow(&mut self) {
        let srv_cfg = self.dir.join("srv.toml").display().to_string();
        let term_cfg = self.dir.join("term.toml").display().to_string();
        self.spawn("srv", &["serve", "--config", &srv_cfg], "serve.log");
        self.spawn("term", &["run", "--config", &term_cfg], "run.log");
        assert!(
            within(Duration::from_secs(5), || self.log("hook.log").contains("SERVER_CONNECTED")).is_some(),
            "run:\n{}\nserve:\n{}\nhooks:\n{}",
            self.log("run.log"),
            self.log("serve.log"),
            self.log("hook.log")
        );
    }

    /// The terminal's kernel entry for `ip`.
    pub fn term_neigh(&self, ip: Ipv4Addr) -> Option<(Option<Mac>, NeighbourState)> {
        self.in_ns("term", move || {
            let mut nl = Netlink::open().unwrap();
            let l = nl.link("term0").unwrap();
            nl.neighbour(l.index, ip).unwrap()
        })
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("term")])
            .arg(env!("CARGO_BIN_EXE_ipsyncd"))
            .args(["status", "--json", "--config"])
            .arg(self.dir.join("term.toml"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The state directories, `srv.toml` for `serve`, and an executable `hook.sh` that appends
    /// `line` (shell words, e.g. "$REASON $OWN_IP") to `hook.log`; returns the hook's path.
    fn write_common(&self, line: &str) -> PathBuf {
        let d = &self.dir;
        std::fs::create_dir_all(d.join("term-state")).unwrap();
        std::fs::create_dir_all(d.join("srv-state")).unwrap();
        let hook = d.join("hook.sh");
        std::fs::write(&hook, format!("#!/bin/sh\necho \"{line}\" >> {}/hook.log\n", d.display())).unwrap();
        let _ = Command::new("chmod").arg("+x").arg(&hook).status();
        std::fs::write(
            d.join("srv.toml"),
            format!("state_dir = \"{}/srv-state\"\n\n[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n", d.display()),
        )
        .unwrap();
        hook
    }

    pub fn write_configs(&self) {
        let d = &self.dir;
        let hook = self.write_common("$REASON $OLD_SERVER_IP $NEW_SERVER_IP $SERVER_MAC");
        std::fs::write(
            d.join("term.toml"),
            format!(
                "interface = \"term0\"\nmode = \"follow\"\nstate_dir = \"{}/term-state\"\nhook = \"{}\"\nhook_timeout_ms = 2000\n\n[terminal]\naddress = \"10.77.0.10/24\"\n\n[server]\naddress = \"10.77.0.1\"\nconnect_timeout_ms = 500\n\n[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n",
                d.display(),
                hook.display()
            ),
        )
        .unwrap();
    }

    /// The operator re-addresses the server: `to` (a /24) is added to srv0, then `from` removed.
    /// Without promote_secondaries, deleting the old primary would delete the new address too.
    pub fn readdress_server(&self, from: Ipv4Addr, to: Ipv4Addr) {
        assert!(self.sh("srv", &["sysctl", "-qw", "net.ipv4.conf.srv0.promote_secondaries=1"]));
        assert!(self.sh("srv", &["ip", "addr", "add", &format!("{to}/24"), "dev", "srv0"]));
        assert!(self.sh("srv", &["ip", "addr", "del", &format!("{from}/24"), "dev", "srv0"]));
    }

    /// `ipsyncd announce` from srv: `address`, optionally moving from `previous`.
    pub fn announce(&self, address: Ipv4Addr, previous: Option<Ipv4Addr>) {
        let cfg = self.dir.join("srv.toml").display().to_string();
        let (a, p) = (address.to_string(), previous.map(|p| p.to_string()));
        let mut args = vec!["announce", "--interface", "srv0", "--address", &a, "--config", &cfg];
        if let Some(p) = &p {
            args.extend(["--previous", p.as_str()]);
        }
        assert!(self.ipsyncd("srv", &args), "announce {address}");
    }

    pub fn pinned(&self, ip: Ipv4Addr, mac: Mac) -> bool {
        let lab = self;
        lab.term_neigh(ip) == Some((Some(mac), NeighbourState::Permanent))
    }

    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_all();
        for n in &self.names {
            // Daemons that forked away from us (dhcpcd, dnsmasq) die with their namespace.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", n]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a thread that has joined the named network namespace (setns affects only that
/// thread; sockets made there stay in that namespace wherever they are used later).
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// Polls `f` every 50 ms until it holds or `limit` passes, then once more (for checks that
/// fork a process, such as `status`).
pub fn poll(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Seconds since the epoch, as lease files count them.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Polls `f` every 5 ms until it holds or `limit` passes; returns how long it took.
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// dhcp mode: dnsmasq, the dhcp-mode terminal, dhcpcd, the kernel's view, captures.
// ---------------------------------------------------------------------------------------------

/// One decision-log line of `run` (target `ipsyncd::decision`), as JSON.
pub fn decisions_in(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.contains("ipsyncd::decision"))
        .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
        .collect()
}

/// Writes `text` to `path` through a rename, so a reader (dnsmasq on SIGHUP) never sees half.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Lab {
    /// Spawns `args` (any program) inside `host`, stdout and stderr appended to `log`; returns
    /// its pid. `ip netns exec` execs the program, so the pid is the program's own.
    pub fn spawn_cmd(&mut self, host: &str, args: &[&str], log: &str) -> u32 {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(log)).unwrap();
        let err = out.try_clone().unwrap();
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let pid = c.id();
        self.children.push(c);
        pid
    }

    /// Sends `sig` to the child `pid` and waits up to 5 s for it (then SIGKILL).
    pub fn stop_child(&mut self, pid: u32, sig: nix::sys::signal::Signal) {
        let Some(i) = self.children.iter().position(|c| c.id() == pid) else { return };
        let mut c = self.children.remove(i);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Whether the child `pid` still runs.
    pub fn child_alive(&mut self, pid: u32) -> bool {
        self.children.iter_mut().find(|c| c.id() == pid).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    // --- dnsmasq -------------------------------------------------------------------------

    fn dnsmasq_dir(&self) -> PathBuf {
        let d = self.dir.join("dnsmasq");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The hosts file reserves `reserve` for the terminal's MAC (a plain line, no `set:`); the
    /// opts file sends option 224 = `cloud` to hosts with a reservation (tag `known`).
    fn dnsmasq_files(&self, reserve: Option<Ipv4Addr>, cloud: Option<Ipv4Addr>) {
        let d = self.dnsmasq_dir();
        let hosts = reserve.map(|a| format!("{TERM_MAC},{a}\n")).unwrap_or_default();
        let opts = cloud.map(|c| format!("tag:known,224,{c}\n")).unwrap_or_default();
        write_atomic(&d.join("hosts"), &hosts);
        write_atomic(&d.join("opts"), &opts);
    }

    /// Starts dnsmasq in `srv` as the DHCP server for 10.77.0.0/24 (range .100–.150, lease
    /// `lease`, e.g. "2m", dnsmasq's minimum), with every file private to the lab and its log
    /// (`--log-dhcp`, xids included) in `dnsmasq.log`. Waits until it serves.
    pub fn start_dnsmasq(&mut self, lease: &str, reserve: Option<Ipv4Addr>, cloud: Option<Ipv4Addr>) {
        self.start_dnsmasq_with(lease, reserve, cloud, &[]);
    }

    pub fn start_dnsmasq_with(
        &mut self,
        lease: &str,
        reserve: Option<Ipv4Addr>,
        cloud: Option<Ipv4Addr>,
        extra: &[&str],
    ) {
        assert!(self.dnsmasq.is_none(), "dnsmasq already runs");
        self.dnsmasq_files(reserve, cloud);
        let d = self.dnsmasq_dir().display().to_string();
        let before = self.dnsmasq_log().matches("sockets bound exclusively").count();
        let mut args: Vec<String> = [
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--log-facility=-",
            "--port=0",
            "--no-resolv",
            "--no-hosts",
            "--interface=srv0",
            "--bind-interfaces",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--dhcp-range=10.77.0.100,10.77.0.150,{lease}"));
        args.push(format!("--dhcp-hostsfile={d}/hosts"));
        args.push(format!("--dhcp-optsfile={d}/opts"));
        args.push(format!("--dhcp-leasefile={d}/leases"));
        args.push(format!("--pid-file={d}/pid"));
        args.push("--log-dhcp".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let pid = self.spawn_cmd("srv", &a, "dnsmasq.log");
        self.dnsmasq = Some(pid);
        assert!(
            within(Duration::from_secs(5), || self.dnsmasq_log().matches("sockets bound exclusively").count() > before)
                .is_some(),
            "dnsmasq did not start:\n{}",
            self.dnsmasq_log()
        );
    }

    /// Rewrites the reservation and option 224 and reloads dnsmasq (SIGHUP); waits until it has
    /// read both files again.
    pub fn dnsmasq_reload(&self, reserve: Option<Ipv4Addr>, cloud: Option<Ipv4Addr>) {
        let pid = self.dnsmasq.expect("dnsmasq runs");
        let d = self.dnsmasq_dir().display().to_string();
        let marker = format!("read {d}/opts");
        let before = self.dnsmasq_log().matches(&marker).count();
        self.dnsmasq_files(reserve, cloud);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
        assert!(
            within(Duration::from_secs(3), || self.dnsmasq_log().matches(&marker).count() > before).is_some(),
            "dnsmasq did not reload:\n{}",
            self.dnsmasq_log()
        );
    }

    pub fn stop_dnsmasq(&mut self) {
        if let Some(pid) = self.dnsmasq.take() {
            self.stop_child(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }

    pub fn dnsmasq_running(&self) -> bool {
        self.dnsmasq.is_some()
    }

    pub fn dnsmasq_log(&self) -> String {
        self.log("dnsmasq.log")
    }

    /// dnsmasq's log lines for message `kind` (e.g. "DHCPREQUEST", "DHCPDECLINE") and `mac`.
    pub fn dnsmasq_lines(&self, kind: &str, mac: Mac) -> Vec<String> {
        let (k, m) = (format!("{kind}("), mac.to_string());
        self.dnsmasq_log().lines().filter(|l| l.contains(&k) && l.contains(&m)).map(|l| l.to_string()).collect()
    }

    /// The xid of dnsmasq's last ACK to `mac` (`--log-dhcp` prints it, in decimal, before the
    /// message name).
    pub fn dnsmasq_last_ack_xid(&self, mac: Mac) -> Option<u32> {
        let l = self.dnsmasq_lines("DHCPACK", mac).pop()?;
        let before = &l[..l.find("DHCPACK(")?];
        before.split_whitespace().last()?.parse().ok()
    }

    // --- the dhcp-mode terminal ----------------------------------------------------------

    /// Writes `term.toml` for dhcp mode (ACD `acd`, `extra` appended at top level before the
    /// tables), `srv.toml` for `serve`, and a hook that appends one line per call to `hook.log`:
    /// `REASON=… OWN_IP=… OLD_OWN_IP=… OLD_SERVER_IP=… NEW_SERVER_IP=… SERVER_MAC=… CONFLICT_KIND=…`.
    pub fn write_dhcp_configs(&self, acd: &str, extra: &str) {
        let d = &self.dir;
        let hook = self.write_common(
            "REASON=$REASON OWN_IP=$OWN_IP OLD_OWN_IP=$OLD_OWN_IP OLD_SERVER_IP=$OLD_SERVER_IP NEW_SERVER_IP=$NEW_SERVER_IP SERVER_MAC=$SERVER_MAC CONFLICT_KIND=$CONFLICT_KIND",
        );
        std::fs::write(
            d.join("term.toml"),
            format!(
                "interface = \"term0\"\nmode = \"dhcp\"\nstate_dir = \"{0}/term-state\"\nhook = \"{1}\"\nhook_timeout_ms = 2000\nacd = \"{acd}\"\nrelease_on_stop = false\n{extra}\n\n[server]\ndhcp_option = 224\nconnect_timeout_ms = 500\n\n[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n\n[[dhcp_key]]\nid = 1\nsecret = \"{DHCP_SECRET}\"\n",
                d.display(),
                hook.display()
            ),
        )
        .unwrap();
    }

    /// Writes `NAME.toml`, a FORCERENEW sender's config: RFC 3118 delayed auth with
    /// `[[dhcp_key]] id = key_id, secret = secret`, its replay counter in its own state dir,
    /// and the xid file `xid_db` when given.
    pub fn write_sender(&self, name: &str, key_id: u32, secret: &str, xid_db: Option<&Path>) {
        let d = &self.dir;
        std::fs::create_dir_all(d.join(format!("{name}-state"))).unwrap();
        let xid = xid_db.map(|p| format!("xid_db = \"{}\"\n", p.display())).unwrap_or_default();
        std::fs::write(
            d.join(format!("{name}.toml")),
            format!(
                "state_dir = \"{}/{name}-state\"\n\n[[dhcp_key]]\nid = {key_id}\nsecret = \"{secret}\"\n\n[forcerenew]\nauth = \"delayed\"\nkey_id = {key_id}\n{xid}",
                d.display()
            ),
        )
        .unwrap();
    }

    /// `ipsyncd forcerenew` from `srv` with the sender config `NAME.toml` to `client` (TERM_MAC).
    pub fn forcerenew(&self, name: &str, client: Ipv4Addr) -> bool {
        let cfg = self.dir.join(format!("{name}.toml")).display().to_string();
        let c = client.to_string();
        let m = TERM_MAC.to_string();
        // Its report is not ours to print. One frame, no retries: these tests count what one
        // FORCERENEW does (the retries have their own tests, tests/it/fleet.rs).
        Command::new("ip")
            .args(["netns", "exec", &self.ns("srv"), env!("CARGO_BIN_EXE_ipsyncd")])
            .args(["forcerenew", "--interface", "srv0", "--client", &c, "--client-mac", &m, "--config", &cfg])
            .args(["--retries", "0"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts `ipsyncd serve` in srv (all addresses, port 47474) and waits until it listens;
    /// returns its pid.
    pub fn start_serve(&mut self) -> u32 {
        let cfg = self.dir.join("srv.toml").display().to_string();
        let bin = env!("CARGO_BIN_EXE_ipsyncd");
        let pid = self.spawn_cmd("srv", &[bin, "serve", "--config", &cfg], "serve.log");
        assert!(
            within(Duration::from_secs(5), || self.sh("srv", &["sh", "-c", "ss -ltnH | grep -q ':47474 '"])).is_some(),
            "serve does not listen:\n{}",
            self.log("serve.log")
        );
        pid
    }

    /// Starts `ipsyncd run` with `term.toml` in term, its log appended to `run.log`; returns
    /// its pid.
    pub fn start_run(&mut self) -> u32 {
        let cfg = self.dir.join("term.toml").display().to_string();
        let bin = env!("CARGO_BIN_EXE_ipsyncd");
        self.spawn_cmd("term", &[bin, "run", "--config", &cfg], "run.log")
    }

    /// [`Lab::start_run`] with /proc/sys read-only for the daemon (a bind mount remounted ro in
    /// its own mount namespace), as the unit's ProtectKernelTunables leaves it.
    pub fn start_run_with_proc_sys_read_only(&mut self) -> u32 {
        let cfg = self.dir.join("term.toml").display().to_string();
        let bin = env!("CARGO_BIN_EXE_ipsyncd");
        let script = "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec \"$0\" \"$@\"";
        let args = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, bin, "run", "--config", &cfg];
        self.spawn_cmd("term", &args, "run.log")
    }

    /// The daemon's decision log so far.
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        decisions_in(&self.log("run.log"))
    }

    /// The hook lines whose REASON is `reason`.
    pub fn hooks(&self, reason: &str) -> Vec<String> {
        let r = format!("REASON={reason} ");
        self.log("hook.log").lines().filter(|l| l.starts_with(&r)).map(|l| l.to_string()).collect()
    }

    /// Everything a failed assertion should show.
    pub fn dump(&self) -> String {
        let tail = |s: String, n: usize| {
            s.lines().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!(
            "--- run.log (last 60)\n{}\n--- hook.log\n{}\n--- dnsmasq.log (DHCP lines)\n{}\n--- kernel\n{:?} gw {:?}\n--- status\n{}",
            tail(self.log("run.log"), 60),
            self.log("hook.log"),
            self.dnsmasq_log().lines().filter(|l| l.contains("DHCP") && l.contains('(')).collect::<Vec<_>>().join("\n"),
            self.addrs("term", "term0"),
            self.default_gateway("term"),
            self.status()
        )
    }

    // --- the kernel's view, read with iproute2 (not with the code under test) --------------

    /// `host`'s IPv4 addresses on `ifname` as "a.b.c.d/len", from `ip -j addr`.
    pub fn addrs(&self, host: &str, ifname: &str) -> Vec<String> {
        let out = Command::new("ip").args(["-n", &self.ns(host), "-j", "-4", "addr", "show", "dev", ifname]).output();
        let Ok(out) = out else { return Vec::new() };
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
            .collect()
    }

    pub fn term_addrs(&self) -> Vec<String> {
        self.addrs("term", "term0")
    }

    /// The gateway of `host`'s IPv4 default route, from `ip -j route`.
    pub fn default_gateway(&self, host: &str) -> Option<Ipv4Addr> {
        let out =
            Command::new("ip").args(["-n", &self.ns(host), "-j", "-4", "route", "show", "default"]).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.iter().find_map(|r| r["gateway"].as_str()?.parse().ok())
    }

    // --- dhcpcd, always with private files ---------------------------------------------------

    /// The shell prefix that gives dhcpcd a private /run, /var/lib and /etc/resolv.conf in a new
    /// mount (and UTS) namespace. Everything that runs dhcpcd, control commands included, goes
    /// through it: a dhcpcd that cannot find its control socket starts a new instance, and one
    /// outside these mounts would rewrite the host's resolv.conf through its stock hooks.
    pub fn dhcpcd_mounts(&self) -> String {
        let d = self.dir.join("dhcpcd");
        for sub in ["run", "db"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let resolv = d.join("resolv.conf");
        if !resolv.exists() {
            std::fs::write(&resolv, "").unwrap();
        }
        let d = d.display();
        format!(
            "mount --bind {d}/run /run && mkdir -p /run/dhcpcd && mount --bind {d}/db /var/lib && mount --bind {d}/resolv.conf /etc/resolv.conf"
        )
    }

    /// Writes dhcpcd's config `dhcpcd.conf` (returns its path): IPv4 only, no udev (`nodev`, so
    /// manager mode works in a namespace), RFC 3118 delayed auth with the lab's secret as a
    /// quoted string (hex keys are broken in 9.4.1), `noauthrequired` (dnsmasq cannot sign),
    /// option 224 requested as `vdi`, a `script` that only logs to `dhcpcd-hook.log`, and `extra`.
    pub fn write_dhcpcd_conf(&self, extra: &str) -> PathBuf {
        let d = &self.dir;
        let script = d.join("dhcpcd-hook.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$reason $new_ip_address $new_vdi\" >> {}/dhcpcd-hook.log\n", d.display()),
        )
        .unwrap();
        let _ = Command::new("chmod").arg("+x").arg(&script).status();
        let conf = d.join("dhcpcd.conf");
        std::fs::write(
            &conf,
            format!(
                "ipv4only\nnodev\nnoipv4ll\nscript {}\ndefine 224 ipaddress vdi\noption vdi\nauthprotocol delayed\nauthtoken 1 \"\" forever \"{DHCP_SECRET}\"\nnoauthrequired\n{extra}\n",
                script.display()
            ),
        )
        .unwrap();
        conf
    }

    /// The command line (for `sh -c` inside `term`) that runs `dhcpcd -f dhcpcd.conf ARGS` in
    /// the private mounts.
    pub fn dhcpcd_cmd(&self, args: &str) -> String {
        format!("{} && dhcpcd -f {} {args}", self.dhcpcd_mounts(), self.dir.join("dhcpcd.conf").display())
    }

    /// Starts dhcpcd in manager mode on term0 and waits for its lease (`-w`). Manager mode: in
    /// per-interface mode dhcpcd 9.4.1 never sees dnsmasq's broadcast NAK to a unicast renewal
    /// (its socket is bound to the leased address) and retries for a minute.
    pub fn start_dhcpcd(&self) -> bool {
        self.start_dhcpcd_in("term", "term0")
    }

    /// As [`Lab::start_dhcpcd`], on `ifname` in `host` (one dhcpcd per lab: the files are shared).
    pub fn start_dhcpcd_in(&self, host: &str, ifname: &str) -> bool {
        let cmd = self.dhcpcd_cmd(&format!("-M -4 -w -t 20 {ifname}"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dhcpcd.log")).unwrap();
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "unshare", "-m", "-u", "sh", "-c", &cmd])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Stops the dhcpcd in term (`-x`: it double-forks, so its pid is not ours to kill).
    pub fn stop_dhcpcd(&self) {
        let cmd = self.dhcpcd_cmd("-x");
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns("term"), "unshare", "-m", "-u", "sh", "-c", &cmd])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = within(Duration::from_secs(3), || !self.any_dhcpcd_in("term"));
    }

    fn any_dhcpcd_in(&self, host: &str) -> bool {
        let o = Command::new("ip").args(["netns", "pids", &self.ns(host)]).output();
        let pids = o.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
        pids.split_whitespace()
            .any(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).map(|c| c.trim() == "dhcpcd").unwrap_or(false))
    }
}

// ---------------------------------------------------------------------------------------------
// Sniffer: every frame through one interface, with the kernel's receive timestamp.
// ---------------------------------------------------------------------------------------------

/// One captured frame. `ts_ns` is the kernel's timestamp (CLOCK_REALTIME, ns since the epoch).
#[derive(Debug, Clone)]
pub struct Sniffed {
    pub ts_ns: u64,
    pub bytes: Vec<u8>,
}

/// A DHCP message read from a captured frame (a parser of its own, independent of the code
/// under test).
#[derive(Debug, Clone)]
pub struct DhcpSeen {
    pub ts_ns: u64,
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub op: u8,
    pub msg_type: u8,
    pub xid: u32,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub chaddr: Mac,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    /// Option 90's value.
    pub auth: Option<Vec<u8>>,
    /// The whole Ethernet frame.
    pub frame: Vec<u8>,
}

pub mod dhcp_type {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const FORCERENEW: u8 = 9;
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Ethernet → IPv4 → UDP 67/68 → DHCP, or `None`.
pub fn parse_dhcp(ts_ns: u64, f: &[u8]) -> Option<DhcpSeen> {
    if f.len() < 14 + 20 + 8 + 240 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if f[14 + 9] != 17 {
        return None;
    }
    let udp = 14 + ihl;
    let (sp, dp) = (u16::from_be_bytes([f[udp], f[udp + 1]]), u16::from_be_bytes([f[udp + 2], f[udp + 3]]));
    if !matches!((sp, dp), (67, 68) | (68, 67) | (67, 67) | (68, 68)) {
        return None;
    }
    let m = udp + 8;
    let d = f.get(m..)?;
    if d.len() < 240 || d[236..240] != [0x63, 0x82, 0x53, 0x63] {
        return None;
    }
    let mac = |b: &[u8]| Mac([b[0], b[1], b[2], b[3], b[4], b[5]]);
    let mut s = DhcpSeen {
        ts_ns,
        dst_mac: mac(&f[0..6]),
        src_mac: mac(&f[6..12]),
        src_ip: ip_at(f, 14 + 12),
        dst_ip: ip_at(f, 14 + 16),
        op: d[0],
        msg_type: 0,
        xid: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ciaddr: ip_at(d, 12),
        yiaddr: ip_at(d, 16),
        chaddr: mac(&d[28..34]),
        requested: None,
        server_id: None,
        auth: None,
        frame: f.to_vec(),
    };
    let mut i = 240;
    while i < d.len() {
        let code = d[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = usize::from(*d.get(i + 1)?);
        let v = d.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (53, 1) => s.msg_type = v[0],
            (50, 4) => s.requested = Some(ip_at(v, 0)),
            (54, 4) => s.server_id = Some(ip_at(v, 0)),
            (90, _) => s.auth = Some(v.to_vec()),
            _ => {}
        }
        i += 2 + len;
    }
    Some(s)
}

const SO_TIMESTAMPNS: libc::c_int = 35;
/// At most this many frames are kept (a flood must not eat the test's memory).
const SNIFF_MAX: usize = 200_000;

pub struct Sniffer {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Sniffed>>>,
    pub dropped: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sniffer {
    /// Captures everything on `ifname` in namespace `ns` (both directions) until dropped.
    /// Returns once the socket is bound.
    pub fn start(ns: &str, ifname: &str) -> Sniffer {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let path = format!("/var/run/netns/{ns}");
        let ifname = ifname.to_string();
        let ifname_dbg = format!("{ns}/{ifname}");
        let (stop2, frames2, dropped2) = (Arc::clone(&stop), Arc::clone(&frames), Arc::clone(&dropped));
        let thread = std::thread::spawn(move || {
            let setup = || -> Result<libc::c_int, String> {
                let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
                let cname = std::ffi::CString::new(ifname.clone()).unwrap();
                // SAFETY: plain syscalls on values we own.
                unsafe {
                    let idx = libc::if_nametoindex(cname.as_ptr());
                    if idx == 0 {
                        return Err(format!("no interface {ifname}"));
                    }
                    let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32);
                    if fd < 0 {
                        return Err(format!("socket: {}", std::io::Error::last_os_error()));
                    }
                    let one: libc::c_int = 1;
                    libc::setsockopt(fd, libc::SOL_SOCKET, SO_TIMESTAMPNS, (&one as *const libc::c_int).cast(), 4);
                    recv_timeout_20ms(fd);
                    let buf: libc::c_int = 4 << 20;
                    libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&buf as *const libc::c_int).cast(), 4);
                    let mut sa: libc::sockaddr_ll = std::mem::zeroed();
                    sa.sll_family = libc::AF_PACKET as u16;
                    sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                    sa.sll_ifindex = idx as i32;
                    if libc::bind(
                        fd,
                        (&sa as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    ) < 0
                    {
                        return Err(format!("bind: {}", std::io::Error::last_os_error()));
                    }
                    Ok(fd)
                }
            };
            let fd = match setup() {
                Ok(fd) => {
                    let _ = ready_tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 4096];
            let mut cmsg = [0u64; 16];
            while !stop2.load(Ordering::Acquire) {
                // SAFETY: every pointer refers to a live buffer of the stated size.
                let (n, ts) = unsafe {
                    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = &mut iov;
                    msg.msg_iovlen = 1;
                    msg.msg_control = cmsg.as_mut_ptr().cast();
                    msg.msg_controllen = std::mem::size_of_val(&cmsg);
                    let n = libc::recvmsg(fd, &mut msg, 0);
                    let mut ts = 0u64;
                    if n > 0 {
                        let mut c = libc::CMSG_FIRSTHDR(&msg);
                        while !c.is_null() {
                            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                                let t = libc::CMSG_DATA(c).cast::<libc::timespec>().read_unaligned();
                                ts = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
                            }
                            c = libc::CMSG_NXTHDR(&msg, c);
                        }
                    }
                    (n, ts)
                };
                if n <= 0 {
                    continue;
                }
                let ts = if ts == 0 { now_ns() } else { ts };
                let mut v = frames2.lock().unwrap();
                if v.len() < SNIFF_MAX {
                    v.push(Sniffed { ts_ns: ts, bytes: buf[..n as usize].to_vec() });
                } else {
                    dropped2.fetch_add(1, Ordering::Relaxed);
                }
            }
            // SAFETY: our own descriptor, closed once.
            unsafe { libc::close(fd) };
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            other => panic!("sniffer on {ifname_dbg}: {other:?}"),
        }
        Sniffer { stop, frames, dropped, thread: Some(thread) }
    }

    /// The bridge port of `host` in `lab` (sees everything to and from that host).
    pub fn on_port(lab: &Lab, host: &str) -> Sniffer {
        Sniffer::start(&lab.ns("br"), &lab.port(host))
    }

    pub fn frames(&self) -> Vec<Sniffed> {
        self.frames.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    /// Every DHCP message captured so far.
    pub fn dhcp(&self) -> Vec<DhcpSeen> {
        self.frames.lock().unwrap().iter().filter_map(|f| parse_dhcp(f.ts_ns, &f.bytes)).collect()
    }

    /// DHCP messages of type `t` sent from `mac` (Ethernet source).
    pub fn dhcp_from(&self, mac: Mac, t: u8) -> Vec<DhcpSeen> {
        self.dhcp().into_iter().filter(|d| d.src_mac == mac && d.msg_type == t).collect()
    }

    /// DHCP messages of type `t` sent to `mac` (Ethernet destination).
    pub fn dhcp_to(&self, mac: Mac, t: u8) -> Vec<DhcpSeen> {
        self.dhcp().into_iter().filter(|d| d.dst_mac == mac && d.msg_type == t).collect()
    }

    pub fn clear(&self) {
        self.frames.lock().unwrap().clear();
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// AddrMonitor: `ip -ts monitor address` in a namespace.
// ---------------------------------------------------------------------------------------------

/// One address event: when `ip` printed it (ns since the epoch), added or deleted, the CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrEvent {
    pub ts_ns: u64,
    pub added: bool,
    pub ifname: String,
    pub cidr: String,
}

pub struct AddrMonitor {
    child: Child,
    path: PathBuf,
}

impl AddrMonitor {
    /// Runs `ip -ts -n NS monitor address` (TZ=UTC) with its output in `path`; returns once it
    /// runs (give it a moment to subscribe before relying on it).
    pub fn start(ns: &str, path: PathBuf) -> AddrMonitor {
        let out = std::fs::File::create(&path).unwrap();
        let child = Command::new("ip")
            .args(["-ts", "-n", ns, "monitor", "address"])
            .env("TZ", "UTC")
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        AddrMonitor { child, path }
    }

    pub fn events(&self) -> Vec<AddrEvent> {
        parse_ip_monitor(&std::fs::read_to_string(&self.path).unwrap_or_default())
    }
}

impl Drop for AddrMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `ip -ts monitor address` output: `[YYYY-MM-DDTHH:MM:SS.uuuuuu] [Deleted ]N: IF    inet CIDR …`.
pub fn parse_ip_monitor(text: &str) -> Vec<AddrEvent> {
    let mut out = Vec::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix('[') else { continue };
        let Some((ts, rest)) = rest.split_once("] ") else { continue };
        let ts_ns = (|| -> Option<u64> {
            let (date, time) = ts.split_once('T')?;
            let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
            let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
            let (hms, frac) = time.split_once('.')?;
            let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
            let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
            let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s;
            let us: u64 = frac.parse().ok()?;
            Some(secs as u64 * 1_000_000_000 + us * 1000)
        })();
        let Some(ts_ns) = ts_ns else { continue };
        let (added, rest) = match rest.strip_prefix("Deleted ") {
            Some(r) => (false, r),
            None => (true, rest),
        };
        let mut w = rest.split_whitespace();
        let (_idx, ifname) = (w.next(), w.next());
        if w.next() != Some("inet") {
            continue;
        }
        if let (Some(ifname), Some(cidr)) = (ifname, w.next()) {
            out.push(AddrEvent { ts_ns, added, ifname: ifname.to_string(), cidr: cidr.to_string() });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// An ARP responder for the attacker: claims an address by answering probes for it.
// ---------------------------------------------------------------------------------------------

/// Answers every ARP probe (sender 0.0.0.0) and request for `claim` on the attacker's
/// `att0` with a reply from `EVIL_MAC`, as a host that owns the address would. Bounded: at most
/// 200 replies. Stops when dropped; `replies` counts what it sent, `probes_from` who probed.
pub struct ArpClaimer {
    stop: Arc<AtomicBool>,
    pub replies: Arc<AtomicU64>,
    pub probes_from_term: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArpClaimer {
    pub fn start(lab: &Lab, claim: Ipv4Addr) -> ArpClaimer {
        use ipsyncd::shell::capture::Transmitter;
        use ipsyncd::wire::{arp, frame};
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU64::new(0));
        let probes = Arc::new(AtomicU64::new(0));
        let (s2, r2, p2) = (Arc::clone(&stop), Arc::clone(&replies), Arc::clone(&probes));
        let path = format!("/var/run/netns/{}", lab.ns("attacker"));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let idx = Netlink::open().unwrap().link("att0").unwrap().index;
            let tx = Transmitter::open(idx).unwrap();
            // SAFETY: plain syscalls on values we own.
            let fd = unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (0x0806u16).to_be() as i32);
                assert!(fd >= 0);
                recv_timeout_20ms(fd);
                let mut sa: libc::sockaddr_ll = std::mem::zeroed();
                sa.sll_family = libc::AF_PACKET as u16;
                sa.sll_protocol = (0x0806u16).to_be();
                sa.sll_ifindex = idx as i32;
                assert!(
                    libc::bind(
                        fd,
                        (&sa as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32
                    ) == 0
                );
                fd
            };
            let _ = ready_tx.send(());
            let mut buf = [0u8; 1514];
            while !s2.load(Ordering::Acquire) && r2.load(Ordering::Relaxed) < 200 {
                // SAFETY: buf is live and its length passed.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 42 {
                    continue;
                }
                let a = &buf[14..42];
                // Ethernet/IPv4 ARP request (op 1) for `claim`.
                if a[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] || ip_at(a, 24) != claim {
                    continue;
                }
                let sha = Mac([a[8], a[9], a[10], a[11], a[12], a[13]]);
                if sha == EVIL_MAC {
                    continue;
                }
                if sha == TERM_MAC {
                    p2.fetch_add(1, Ordering::Relaxed);
                }
                let spa = ip_at(a, 14);
                let reply =
                    arp::Repr { operation: arp::Operation::Reply, sha: EVIL_MAC, spa: claim, tha: sha, tpa: spa };
                if tx.send(&frame::emit_arp_frame(EVIL_MAC, sha, &reply.to_bytes())).is_ok() {
                    r2.fetch_add(1, Ordering::Relaxed);
                }
            }
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("ARP claimer started");
        ArpClaimer { stop, replies, probes_from_term: probes, thread: Some(thread) }
    }
}

impl Drop for ArpClaimer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SO_RCVTIMEO of 20 ms on a raw socket the lab reads in a loop (so it can check a stop flag).
fn recv_timeout_20ms(fd: libc::c_int) {
    let tv = libc::timeval { tv_sec: 0, tv_usec: 20_000 };
    // SAFETY: `tv` is a live timeval and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kea: kea-dhcp4 in a namespace, every file of it private.
// ---------------------------------------------------------------------------------------------

/// Finds Kea's `libdhcp_lease_cmds.so` (the hook that answers `lease4-*` commands): Debian and
/// Ubuntu keep hooks in `/usr/lib/<multiarch>/kea/hooks` (package kea-common), others in
/// `/usr/lib{,64}/kea/hooks`.
pub fn kea_lease_cmds_hook() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib").into_iter().flatten().flatten().map(|e| e.path().join("kea/hooks")).collect();
    dirs.extend([PathBuf::from("/usr/lib/kea/hooks"), PathBuf::from("/usr/lib64/kea/hooks")]);
    dirs.into_iter().map(|d| d.join("libdhcp_lease_cmds.so")).find(|p| p.is_file())
}

/// kea-dhcp4 (Kea 2.2 and later) running inside a namespace on one interface, with a private
/// config, memfile lease file, control socket, log, pid and lock files, all in its own temp
/// directory: KEA_PIDFILE_DIR and KEA_LOCKFILE_DIR point there (nothing touches /run or
/// /var), and so do the directories newer Kea restricts paths to (KEA_DHCP_DATA_DIR,
/// KEA_CONTROL_SOCKET_DIR, KEA_LOG_FILE_DIR). /etc/kea and any host service are never used.
/// Its config defines option 224 `ipsync-server` (ipv4-address) and sends it; the lease_cmds
/// hook is loaded, so the control socket answers `lease4-get-all`, `lease4-add`, `lease4-del`.
/// Dropping it stops Kea (SIGTERM, then SIGKILL) and removes the directory.
pub struct Kea {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Kea {
    /// Starts Kea in namespace `ns` (the full name, e.g. `lab.ns("srv")`) serving `subnet`
    /// (e.g. "10.77.0.0/24") from `pool` ("10.77.0.100 - 10.77.0.150") on `iface`, with option
    /// 224 = `ipsync_server` and leases of `valid_lifetime` seconds. Returns once Kea has
    /// started and its control socket answers with the lease commands listed; panics (with
    /// Kea's log) otherwise, after which the drop still cleans up.
    pub fn start(ns: &str, iface: &str, subnet: &str, pool: &str, ipsync_server: Ipv4Addr, valid_lifetime: u32) -> Kea {
        let dir = std::env::temp_dir().join(format!("ipsyncd-kea-{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("kea dir");
        let mut kea = Kea { dir, child: None };
        let hook = kea_lease_cmds_hook().expect("libdhcp_lease_cmds.so (package kea-common; `make deps`)");
        let d = kea.dir.display().to_string();
        let config = serde_json::json!({ "Dhcp4": {
            "interfaces-config": { "interfaces": [iface], "dhcp-socket-type": "raw" },
            "control-socket": { "socket-type": "unix", "socket-name": format!("{d}/kea.sock") },
            // lfc-interval 0: no kea-lfc runs, so the file stays the append log Kea writes.
            "lease-database": { "type": "memfile", "persist": true, "name": format!("{d}/leases4.csv"), "lfc-interval": 0 },
            "hooks-libraries": [ { "library": hook.display().to_string() } ],
            "option-def": [ { "name": "ipsync-server", "code": 224, "type": "ipv4-address", "space": "dhcp4" } ],
            "option-data": [ { "name": "ipsync-server", "code": 224, "space": "dhcp4", "data": ipsync_server.to_string() } ],
            "valid-lifetime": valid_lifetime,
            "min-valid-lifetime": valid_lifetime,
            "max-valid-lifetime": valid_lifetime,
            "subnet4": [ { "id": 1, "subnet": subnet, "pools": [ { "pool": pool } ] } ],
            "loggers": [ {
                "name": "kea-dhcp4",
                "output_options": [ { "output": format!("{d}/kea.log") } ],
                "severity": "INFO"
            } ]
        } });
        let conf = kea.dir.join("kea-dhcp4.json");
        std::fs::write(&conf, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let out = std::fs::File::create(kea.dir.join("kea.out")).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "kea-dhcp4", "-c"])
            .arg(&conf)
            .env("KEA_PIDFILE_DIR", &kea.dir)
            .env("KEA_LOCKFILE_DIR", &kea.dir)
            .env("KEA_DHCP_DATA_DIR", &kea.dir)
            .env("KEA_CONTROL_SOCKET_DIR", &kea.dir)
            .env("KEA_LOG_FILE_DIR", &kea.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("kea-dhcp4 (package kea-dhcp4-server; `make deps`)");
        kea.child = Some(child);
        // Ready = the server logged DHCP4_STARTED (its DHCP sockets are open) and the control
        // socket answers list-commands with the lease hook's commands in it.
        let ready = within(Duration::from_secs(15), || {
            if !kea.running() {
                return true;
            }
            kea.log().contains("DHCP4_STARTED")
                && kea.command(r#"{"command":"list-commands"}"#).is_ok_and(|v| v.to_string().contains("lease4-get-all"))
        });
        assert!(ready.is_some() && kea.running(), "kea-dhcp4 did not start:\n{}", kea.log());
        kea
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("kea.sock")
    }

    /// The operator moves the cloud server: option 224 becomes `ip` in Kea's config file, and
    /// Kea re-reads it (`config-reload` over the control socket).
    pub fn set_ipsync_server(&self, ip: Ipv4Addr) {
        let conf = self.dir.join("kea-dhcp4.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&conf).unwrap()).unwrap();
        v["Dhcp4"]["option-data"][0]["data"] = serde_json::Value::String(ip.to_string());
        std::fs::write(&conf, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        self.command(r#"{"command":"config-reload"}"#).unwrap_or_else(|e| panic!("config-reload: {e}\n{}", self.log()));
    }

    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("leases4.csv")
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kea's log file, then its stdout and stderr.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        format!("{}\n--- kea stdout/stderr\n{}", read("kea.log"), read("kea.out"))
    }

    /// Sends one command over the control socket (Kea answers, then closes); returns the
    /// answer, or why there was none. A result other than 0 or 3 is an `Err` with the answer.
    pub fn command(&self, json: &str) -> Result<serde_json::Value, String> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.write_all(json.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out)))?;
        match v["result"].as_i64() {
            Some(0 | 3) => Ok(v),
            _ => Err(v.to_string()),
        }
    }

    /// Kea's leases as the lease file holds them (for failure messages).
    pub fn lease_csv(&self) -> String {
        std::fs::read_to_string(self.lease_file()).unwrap_or_default()
    }
}

impl Drop for Kea {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
