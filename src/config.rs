//! The TOML configuration (DESIGN §7).
//!
//! Contract: unknown keys are errors, and every error names the file, the key (with its line
//! where TOML gives one) and what was expected. Loading validates everything the engine relies on
//! (key lengths, duplicate ids, addresses), so a bad file fails at start with exit code 2, never
//! later at runtime.

use crate::engine::{AcdMode, Cidr, EngineConfig, Mode};
use crate::wire::Mac;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/ipsyncd/ipsyncd.toml";

#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ipsyncd")
}
fn default_hook_timeout() -> u64 {
    5000
}
fn default_mode() -> Mode {
    Mode::Dhcp
}
fn default_acd() -> AcdMode {
    AcdMode::Strict
}
fn default_dhcp_option() -> u8 {
    224
}
fn default_port() -> u16 {
    crate::wire::ipsync::DEFAULT_PORT
}
fn default_connect_timeout() -> u64 {
    2000
}
fn default_connect_attempts() -> u32 {
    3
}
fn default_max_age() -> u64 {
    86_400
}
fn default_alarm_interval() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub interface: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    pub hook: Option<PathBuf>,
    #[serde(default = "default_hook_timeout")]
    pub hook_timeout_ms: u64,
    #[serde(default)]
    pub renew_command: String,
    #[serde(default)]
    pub allow_unauthenticated: bool,
    #[serde(default = "default_acd")]
    pub acd: AcdMode,
    /// dhcp mode: a clean stop sends DHCPRELEASE and removes the address.
    #[serde(default)]
    pub release_on_stop: bool,
    #[serde(default)]
    pub terminal: Terminal,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub key: Vec<KeyEntry>,
    #[serde(default)]
    pub dhcp_key: Vec<KeyEntry>,
    pub forcerenew: Option<ForceRenew>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terminal {
    pub mac: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub address: Option<Ipv4Addr>,
    #[serde(default = "default_dhcp_option")]
    pub dhcp_option: u8,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Failures in a row before SERVER_UNREACHABLE.
    #[serde(default = "default_connect_attempts")]
    pub connect_attempts: u32,
    /// ANNOUNCE freshness against a synchronised clock; 0 = off.
    #[serde(default = "default_max_age")]
    pub max_age_s: u64,
    /// Alarms (and CONFLICT/UNREACHABLE hooks) per kind and address at most once per interval.
    #[serde(default = "default_alarm_interval")]
    pub alarm_interval_s: u64,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            address: None,
            dhcp_option: default_dhcp_option(),
            port: default_port(),
            connect_timeout_ms: default_connect_timeout(),
            connect_attempts: default_connect_attempts(),
            max_age_s: default_max_age(),
            alarm_interval_s: default_alarm_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: u32,
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ForceRenewAuth {
    #[serde(rename = "delayed")]
    Delayed,
    #[serde(rename = "reconfigure-key")]
    ReconfigureKey,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceRenew {
    #[serde(default = "default_fr_auth")]
    pub auth: ForceRenewAuth,
    #[serde(default = "default_key_id")]
    pub key_id: u32,
    pub reconfigure_key: Option<String>,
    pub xid_db: Option<PathBuf>,
}

fn default_fr_auth() -> ForceRenewAuth {
    ForceRenewAuth::Delayed
}
fn default_key_id() -> u32 {
    1
}

/// `"0x…"` is hex; anything else is its UTF-8 bytes (as dhcpcd's authtoken).
pub fn parse_secret(s: &str) -> Result<Vec<u8>, String> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => parse_hex(h),
        None => Ok(s.as_bytes().to_vec()),
    }
}

pub use crate::wire::hex::{parse_hex, to_hex};

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError { file: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Config::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        self.terminal_mac()?;
        self.terminal_address()?;
        keys_by_id("key", &self.key, 1)?;
        for k in &self.key {
            if parse_secret(&k.secret).map_or(0, |v| v.len()) < 16 {
                log::warn!("[[key]] id {}: secret is shorter than 16 bytes; use `ipsyncd keygen`", k.id);
            }
        }
        keys_by_id("dhcp_key", &self.dhcp_key, 1)?;
        if self.server.connect_attempts == 0 {
            return Err("server.connect_attempts: expected at least 1".into());
        }
        if self.server.connect_timeout_ms == 0 {
            return Err("server.connect_timeout_ms: expected a positive number of milliseconds".into());
        }
        if self.hook_timeout_ms == 0 {
            return Err("hook_timeout_ms: expected a positive number of milliseconds".into());
        }
        if let Some(fr) = &self.forcerenew {
            if let Some(k) = &fr.reconfigure_key {
                let v = parse_secret(k).map_err(|e| format!("forcerenew.reconfigure_key: {e}"))?;
                if v.len() != 16 {
                    return Err(format!(
                        "forcerenew.reconfigure_key: expected 16 bytes (\"0x\" + 32 hex digits), got {}",
                        v.len()
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn terminal_mac(&self) -> Result<Option<Mac>, String> {
        self.terminal
            .mac
            .as_deref()
            .map(|m| m.parse::<Mac>().map_err(|_| format!("terminal.mac: expected aa:bb:cc:dd:ee:ff, got {m:?}")))
            .transpose()
    }

    pub fn terminal_address(&self) -> Result<Option<Cidr>, String> {
        self.terminal
            .address
            .as_deref()
            .map(|a| a.parse::<Cidr>().map_err(|e| format!("terminal.address: {e}")))
            .transpose()
    }

    pub fn keys(&self) -> BTreeMap<u32, Vec<u8>> {
        keys_by_id("key", &self.key, 1).unwrap_or_default()
    }

    pub fn dhcp_keys(&self) -> BTreeMap<u32, Vec<u8>> {
        keys_by_id("dhcp_key", &self.dhcp_key, 1).unwrap_or_default()
    }

    /// The engine's view. `mac` is the terminal's MAC (configured, or read from the interface).
    pub fn engine_config(&self, mac: Mac) -> Result<EngineConfig, String> {
        Ok(EngineConfig {
            mode: self.mode,
            mac,
            address: if self.mode == Mode::Follow { self.terminal_address()? } else { None },
            initial_server: self.server.address,
            server_option: self.server.dhcp_option,
            port: self.server.port,
            keys: self.keys(),
            dhcp_keys: self.dhcp_keys(),
            allow_unauthenticated: self.allow_unauthenticated,
            acd: self.acd,
            connect_attempts: self.server.connect_attempts,
            max_age_s: self.server.max_age_s,
            alarm_interval_s: self.server.alarm_interval_s,
            release_on_stop: self.release_on_stop,
        })
    }
}

fn keys_by_id(section: &str, keys: &[KeyEntry], min_len: usize) -> Result<BTreeMap<u32, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let v = parse_secret(&k.secret).map_err(|e| format!("[[{section}]] #{} (id {}) secret: {e}", i + 1, k.id))?;
        if v.len() < min_len {
            return Err(format!(
                "[[{section}]] #{} (id {}) secret: expected at least {min_len} bytes, got {}",
                i + 1,
                k.id,
                v.len()
            ));
        }
        if out.insert(k.id, v).is_some() {
            return Err(format!("[[{section}]] id {} is defined twice", k.id));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_its_line() {
        let e = Config::parse("mode = \"follow\"\n\n[server]\nprot = 1\n").unwrap_err();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
interface = "eth0"
mode = "follow"
acd = "optimistic"
[terminal]
mac = "02:00:00:00:00:10"
address = "10.77.0.10/24"
[server]
address = "10.77.0.1"
[[key]]
id = 1
secret = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
[[dhcp_key]]
id = 7
secret = "dhcpsecret"
[forcerenew]
auth = "reconfigure-key"
reconfigure_key = "0x00112233445566778899aabbccddeeff"
"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Follow);
        assert_eq!(c.keys()[&1].len(), 32);
        assert_eq!(c.dhcp_keys()[&7], b"dhcpsecret");
        assert_eq!(c.server.port, 47474);
        assert_eq!(c.forcerenew.unwrap().auth, ForceRenewAuth::ReconfigureKey);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::parse("[terminal]\nmac = \"zz\"").unwrap_err().contains("terminal.mac"));
        assert!(Config::parse("[[key]]\nid = 1\nsecret = \"0x0g\"").unwrap_err().contains("not hex"));
        assert!(Config::parse("[[key]]\nid = 1\nsecret = \"\"").unwrap_err().contains("at least 1"));
        let dup = "[[dhcp_key]]\nid = 1\nsecret = \"a\"\n[[dhcp_key]]\nid = 1\nsecret = \"b\"";
        assert!(Config::parse(dup).unwrap_err().contains("twice"));
        assert!(Config::parse("mode = \"dhcpx\"").is_err());
    }
}
