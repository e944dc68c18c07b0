//! A network-namespace lab for tests, benchmarks and the demo: a bridge in its own namespace
//! and hosts `srv`, `term` and `attacker` on it, each with a veth and an address in 10.77.0.0/24.
//! Everything it creates (processes, namespaces) is removed when it drops, even after a panic.
//! Shared by tests/it (as a module) and benches/live.rs (through `#[path]`).

#![allow(dead_code)]

use ipsyncd::shell::netlink::Netlink;
use ipsyncd::wire::Mac;
use netlink_packet_route::neighbour::NeighbourState;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY_HEX: &str = "0x4242424242424242424242424242424242424242424242424242424242424242";
pub const SRV_MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
pub const TERM_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x10]);
pub const EVIL_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x66]);

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

    /// `None` when not root; the live bench reports that as its own SKIP line.
    pub fn new(tag: &str) -> Option<Lab> {
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let prefix = format!("ipsl{}{}", tag, std::process::id());
        let mut lab = Lab { prefix: prefix.clone(), names: Vec::new(), children: Vec::new(), dir: tmpdir(tag) };
        let br = lab.add_ns("br");
        lab.ip(&["-n", &br, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
        lab.ip(&["-n", &br, "link", "set", "br0", "up"]);
        lab.host("srv", "srv0", SRV_MAC, "10.77.0.1/24");
        lab.host("term", "term0", TERM_MAC, "10.77.0.10/24");
        lab.host("attacker", "att0", EVIL_MAC, "10.77.0.66/24");
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
        // Interface names are at most 15 bytes.
        let peer = format!("v{}{}", &host[..3], std::process::id() % 100_000);
        self.ip(&["link", "add", &peer, "netns", &br, "type", "veth", "peer", "name", ifname, "netns", &n]);
        self.ip(&["-n", &br, "link", "set", &peer, "master", "br0", "up"]);
        self.ip(&["-n", &n, "link", "set", ifname, "address", &mac.to_string(), "up"]);
        if !cidr.is_empty() {
            self.ip(&["-n", &n, "addr", "add", cidr, "dev", ifname]);
        }
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

    pub fn write_configs(&self) {
        let lab = self;
        let d = &lab.dir;
        std::fs::create_dir_all(d.join("term-state")).unwrap();
        std::fs::create_dir_all(d.join("srv-state")).unwrap();
        let hook = d.join("hook.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$REASON $OLD_SERVER_IP $NEW_SERVER_IP $SERVER_MAC\" >> {}/hook.log\n",
                d.display()
            ),
        )
        .unwrap();
        let _ = Command::new("chmod").arg("+x").arg(&hook).status();
        std::fs::write(
            d.join("term.toml"),
            format!(
                "interface = \"term0\"\nmode = \"follow\"\nstate_dir = \"{}/term-state\"\nhook = \"{}\"\nhook_timeout_ms = 2000\n\n[terminal]\naddress = \"10.77.0.10/24\"\n\n[server]\naddress = \"10.77.0.1\"\nconnect_timeout_ms = 500\n\n[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n",
                d.display(),
                hook.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("srv.toml"),
            format!("state_dir = \"{}/srv-state\"\n\n[[key]]\nid = 1\nsecret = \"{KEY_HEX}\"\n", d.display()),
        )
        .unwrap();
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
