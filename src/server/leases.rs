//! STUB (replaced by the `leases` branch): the lease sources of `--leases`.
use crate::wire::Mac;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub expires: Option<u64>,
    pub hostname: Option<String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dnsmasq,
    KeaCsv,
    KeaSocket,
}
#[derive(Debug, Clone)]
pub struct BadLine {
    pub line: usize,
    pub why: String,
}
#[derive(Debug, Clone)]
pub struct Loaded {
    pub format: Format,
    pub leases: Vec<Lease>,
    pub bad: Vec<BadLine>,
    pub expired: usize,
}
#[derive(Debug)]
pub enum LeaseError {
    Io(String),
}
impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Io(m) => f.write_str(m),
        }
    }
}
impl std::error::Error for LeaseError {}

pub fn load(source: &str, now_unix: u64) -> Result<Loaded, LeaseError> {
    let text = std::fs::read_to_string(source).map_err(|e| LeaseError::Io(format!("{source}: {e}")))?;
    parse_text(&text, now_unix)
}

pub fn parse_text(text: &str, now_unix: u64) -> Result<Loaded, LeaseError> {
    let mut out = Loaded { format: Format::Dnsmasq, leases: Vec::new(), bad: Vec::new(), expired: 0 };
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match (f.first().and_then(|e| e.parse::<u64>().ok()), f.get(1).and_then(|m| m.parse::<Mac>().ok()), f.get(2).and_then(|a| a.parse().ok())) {
            (Some(e), Some(mac), Some(ip)) => {
                if e != 0 && e <= now_unix {
                    out.expired += 1;
                } else {
                    out.leases.push(Lease { ip, mac, expires: (e != 0).then_some(e), hostname: None });
                }
            }
            _ => out.bad.push(BadLine { line: i + 1, why: "not a dnsmasq lease".into() }),
        }
    }
    Ok(out)
}
