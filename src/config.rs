//! The TOML configuration (DESIGN §7).
//!
//! Contract: unknown keys are errors, and every error names the file, the key (with its line)
//! and what was expected. Loading validates everything the engine relies on (key kinds and
//! lengths, duplicate ids, addresses, ports and options DHCP itself owns), and reports every
//! such problem at once, so a bad file fails at start with exit code 2, never later at runtime.
//! What depends on the machine (the hook, the state directory) is checked by
//! `shell::preflight`, which `run` and `check` share.

use crate::engine::{AcdMode, Cidr, EngineConfig, Mode};
use crate::wire::sig::{self, Signer, VerifyKey};
use crate::wire::Mac;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/ipsyncd/ipsyncd.toml";
/// Lines the parser refuses that [`Config::parse_all`] steps over before it gives up: a file
/// with more is not a config of ours.
pub const MAX_LISTED: usize = 64;
/// A config is a few hundred bytes; anything past this is not one (and is not read whole).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads at most `limit` bytes of UTF-8 text: a huge file or a device is refused, not swallowed.
pub fn read_text(path: &Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // O_NONBLOCK: a plain open of a FIFO blocks until a writer comes, which may be never.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    match f.metadata().map(|m| m.file_type()) {
        Ok(t) if t.is_dir() => return Err("cannot read: is a directory".into()),
        Ok(t) if t.is_fifo() || t.is_socket() => return Err("a FIFO or socket: not a config file".into()),
        _ => {}
    }
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes: not a config file"));
    }
    String::from_utf8(buf).map_err(|e| format!("byte {}: not UTF-8 text", e.utf8_error().valid_up_to()))
}

#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One problem per line, each naming the file, so every line stands alone in a log.
        for (i, line) in self.message.lines().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {line}", self.file.display())?;
        }
        Ok(())
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

/// A `[[key]]` or `[[dhcp_key]]` as written. `[[dhcp_key]]` takes `secret` only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: u32,
    pub secret: Option<String>,
    /// Ed25519: the half terminals hold.
    pub public_key: Option<String>,
    /// Ed25519: the half only the server's tools hold.
    pub signing_key: Option<String>,
}

/// The shortest secret accepted (DESIGN §6): below this one captured message is enough to
/// guess the key offline.
pub const MIN_SECRET_LEN: usize = 16;
/// `[[key]]` secrets shorter than this are accepted with a warning (HMAC-SHA256's block
/// strength is reached at 32 bytes).
pub const GOOD_SECRET_LEN: usize = 32;

/// A key printed in one of the example configs (contrib/ipsyncd.toml.example and
/// contrib/ipsyncd-server.toml.example): public, so a config holding one is warned about.
pub struct ExampleKey {
    /// The value as the example writes it ("0x" and hex).
    pub hex: &'static str,
    /// What the warning says after "line N: [[key]] id N field: ".
    pub why: &'static str,
    /// Whether anyone can sign or authenticate with it (its secret or signing half is
    /// published). A terminal that trusts such a key follows whoever read the example: `run`
    /// refuses it; the server tools only warn, so the example itself passes `check`.
    pub signable: bool,
}

const FROM_SERVER_EXAMPLE: &str =
    "this is the published example key from ipsyncd-server.toml.example; generate your own with `ipsyncd keygen`";

/// Every key in the example configs. The terminal example's public key was made once and its
/// signing half thrown away, so no one can sign for it; the server example's keys must be whole
/// to be valid, so anyone can sign with them.
pub const EXAMPLE_KEYS: &[ExampleKey] = &[
    ExampleKey {
        hex: "0xd96c3f396582f3774718efc92dbaffc5f13da12fe8b1e4445af9be37e692755c",
        why: "this is the published example key from ipsyncd.toml.example, whose signing half was discarded: \
              no server can sign for it; put your server's public key here (`ipsyncd keygen` on the server)",
        signable: false,
    },
    // [[key]] id 1 of the server example: public_key, then signing_key.
    ExampleKey {
        hex: "0x98b773b1071f3729e0c0810aeebc7d3facbae2e4451143831376f51c8ff285da",
        why: "this is the public half of the published example key from ipsyncd-server.toml.example, whose \
              signing half anyone can read; generate your own with `ipsyncd keygen`",
        signable: true,
    },
    ExampleKey {
        hex: "0x7728ae540102de05aefed077192f5df3e769d3cec011e89fd60490509f69ad83",
        why: FROM_SERVER_EXAMPLE,
        signable: true,
    },
    // [[key]] id 2 secret (HELLO), [[dhcp_key]] id 1 secret, [forcerenew] reconfigure_key.
    ExampleKey {
        hex: "0x465406e57e01952c5b6441a8455cdd7850251b9346479c807781fd2c63db2337",
        why: FROM_SERVER_EXAMPLE,
        signable: true,
    },
    ExampleKey {
        hex: "0xa6e9959988175815c1fecbca3718ce0cd714209f16b5c38c4fc62c205dd96ba7",
        why: FROM_SERVER_EXAMPLE,
        signable: true,
    },
    ExampleKey { hex: "0xb1b474547cb895902de1337a9521cd26", why: FROM_SERVER_EXAMPLE, signable: true },
];

/// One `[[key]]`, checked: what the receiver verifies with, and for Ed25519 what a server
/// signs with when the config holds the signing half.
#[derive(Clone)]
pub enum IpsyncKey {
    Hmac(Vec<u8>),
    Ed25519 { public: sig::VerifyingKey, signing: Option<sig::SigningKey> },
}

impl IpsyncKey {
    pub fn verify_key(&self) -> VerifyKey {
        match self {
            IpsyncKey::Hmac(s) => VerifyKey::Hmac(s.clone()),
            IpsyncKey::Ed25519 { public, .. } => VerifyKey::Ed25519(*public),
        }
    }

    /// What a server tool signs with: the secret, or the Ed25519 signing half; `None` for a
    /// public key alone.
    pub fn signer(&self) -> Option<Signer<'_>> {
        match self {
            IpsyncKey::Hmac(s) => Some(Signer::Hmac(s)),
            IpsyncKey::Ed25519 { signing, .. } => signing.as_ref().map(Signer::Ed25519),
        }
    }
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

/// A command-line duration: a number with a unit (`250ms`, `30s`, `5m`, `1h`), or a bare number
/// of seconds as before. At least 1 ms and at most a day: a longer pause is a typo, and a zero
/// one would be a flood.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number with a unit, such as 500ms, 30s or 5m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    match ms {
        Some(ms @ 1..=86_400_000) => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!("{s:?}: expected between 1ms and 24h")),
    }
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
        let text = read_text(path, MAX_CONFIG_BYTES).map_err(err)?;
        Config::parse(&text).map_err(err)
    }

    /// Parses and validates. A TOML syntax error stops at the first one (the parser cannot go
    /// on); every other problem is listed, one per line, each with its line where it has one.
    pub fn parse(text: &str) -> Result<Config, String> {
        if let Some(at) = text.find('\0') {
            let line = text[..at].matches('\n').count() + 1;
            return Err(format!("line {line}: a NUL byte: a config is text; is this a binary or a truncated file?"));
        }
        let c = Config::from_text(text).map_err(|(line, msg)| match line {
            Some(line) => format!("line {line}: {msg}"),
            None => msg,
        })?;
        let problems = c.problems(text);
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        Ok(c)
    }

    /// TOML and the schema only; the error with its 1-based line where the parser knows one.
    fn from_text(text: &str) -> Result<Config, (Option<usize>, String)> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            (line, e.message().to_string())
        })
    }

    /// As [`Config::parse`], for `check` and `run`, which list every problem at once (DESIGN
    /// §6): a line the parser refuses (an unknown key, a `mode` that is neither choice, a value
    /// of the wrong type) does not hide the rest. It is reported and left out, so its default
    /// applies, and the parser goes on, up to [`MAX_LISTED`] such lines; the config without them
    /// is then validated as usual. A line that is not TOML at all is stepped over the same way.
    /// `Ok`: that config and every problem (none: the file is valid). `Err`: no config could
    /// be had (a NUL byte, a problem with no line to leave out, or too many), with every
    /// problem found until then.
    pub fn parse_all(text: &str) -> Result<(Config, Vec<String>), String> {
        if text.contains('\0') {
            return Config::parse(text).map(|c| (c, Vec::new()));
        }
        let mut lines: Vec<&str> = text.split('\n').collect();
        let mut found = Vec::new();
        loop {
            // Left-out lines stay as empty lines, so every line number is the file's.
            let current = lines.join("\n");
            match Config::from_text(&current) {
                Ok(c) => {
                    found.extend(c.problems(&current));
                    return Ok((c, found));
                }
                Err((line, msg)) => {
                    let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
                    // The parser names a bad value but not its key ("unknown variant `fallow`").
                    let key = line.and_then(|l| key_on_line(&current, l)).filter(|k| {
                        let bare = k.rsplit(['.', ' ']).next().unwrap_or(k);
                        !msg.contains(&format!("`{bare}`"))
                    });
                    let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
                    found.push(format!("{at}{key}{msg}"));
                    let idx = line.and_then(|l| l.checked_sub(1)).filter(|&i| i < lines.len());
                    match idx {
                        Some(i) if !lines[i].trim().is_empty() && found.len() < MAX_LISTED => lines[i] = "",
                        _ => return Err(found.join("\n")),
                    }
                }
            }
        }
    }

    /// Every problem in a parsed config, each as "line N: key: what was expected".
    pub fn problems(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let at = |table: &str, index: usize, key: &str| match locate(text, table, index, key) {
            Some(l) => format!("line {l}: "),
            None => String::new(),
        };
        let mut err = |table: &str, key: &str, msg: String| {
            let name = if table.is_empty() { key.to_string() } else { format!("{table}.{key}") };
            out.push(format!("{}{name}: {msg}", at(table, 0, key)));
        };
        if let Err(e) = self.terminal_mac() {
            err("terminal", "mac", e.trim_start_matches("terminal.mac: ").to_string());
        }
        if let Err(e) = self.terminal_address() {
            err("terminal", "address", e.trim_start_matches("terminal.address: ").to_string());
        }
        if self.server.connect_attempts == 0 {
            err("server", "connect_attempts", "expected at least 1".into());
        }
        if self.server.connect_timeout_ms == 0 {
            err("server", "connect_timeout_ms", "expected a positive number of milliseconds".into());
        }
        if self.hook_timeout_ms == 0 {
            err("", "hook_timeout_ms", "expected a positive number of milliseconds".into());
        }
        match self.server.port {
            0 => err("server", "port", "expected a port from 1 to 65535, got 0".into()),
            67 | 68 => err(
                "server",
                "port",
                format!("{} is a DHCP port; ipsync needs its own (the default is 47474)", self.server.port),
            ),
            _ => {}
        }
        let o = self.server.dhcp_option;
        if (1..=61).contains(&o) || o == 255 {
            err(
                "server",
                "dhcp_option",
                format!(
                    "option {o} is one DHCP itself uses; expected 0 (option 54) or a site option 62–254, usually 224"
                ),
            );
        }
        if let Some(fr) = &self.forcerenew {
            if let Some(k) = &fr.reconfigure_key {
                match parse_secret(k) {
                    Err(e) => err("forcerenew", "reconfigure_key", e),
                    Ok(v) if v.len() != 16 => err(
                        "forcerenew",
                        "reconfigure_key",
                        format!("expected 16 bytes (\"0x\" + 32 hex digits), got {}", v.len()),
                    ),
                    Ok(_) => {}
                }
            }
        }
        for (i, p) in ipsync_keys(&self.key).1 {
            out.push(format!("{}{p}", at("key", i, key_field(&p))));
        }
        for (i, p) in dhcp_keys(&self.dhcp_key).1 {
            out.push(format!("{}{p}", at("dhcp_key", i, key_field(&p))));
        }
        out
    }

    /// Warnings that `check` shows and `run` logs: accepted, but weaker than it should be.
    pub fn warnings(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, k) in self.key.iter().enumerate() {
            let Some(len) = k.secret.as_deref().and_then(|s| parse_secret(s).ok()).map(|v| v.len()) else { continue };
            if (MIN_SECRET_LEN..GOOD_SECRET_LEN).contains(&len) {
                let line = locate(text, "key", i, "secret").map(|l| format!("line {l}: ")).unwrap_or_default();
                out.push(format!(
                    "{line}[[key]] id {} secret: {len} bytes; 32 or more are recommended (`ipsyncd keygen`)",
                    k.id
                ));
            }
        }
        out
    }

    /// Every key copied from contrib/*.toml.example, with whether anyone can sign with it:
    /// loud, since the examples are published (the value itself is never printed).
    pub fn example_keys(&self, text: &str) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut look = |table: &str, index: usize, name: String, key: &str, value: Option<&String>| {
            let Some(bytes) = value.and_then(|v| parse_secret(v).ok()) else { return };
            let Some(ex) = EXAMPLE_KEYS.iter().find(|e| parse_secret(e.hex).is_ok_and(|h| h == bytes)) else { return };
            let line = locate(text, table, index, key).map(|l| format!("line {l}: ")).unwrap_or_default();
            out.push((format!("{line}{name} {key}: {}", ex.why), ex.signable));
        };
        for (i, k) in self.key.iter().enumerate() {
            for (field, v) in [("secret", &k.secret), ("public_key", &k.public_key), ("signing_key", &k.signing_key)] {
                look("key", i, format!("[[key]] id {}", k.id), field, v.as_ref());
            }
        }
        for (i, k) in self.dhcp_key.iter().enumerate() {
            look("dhcp_key", i, format!("[[dhcp_key]] id {}", k.id), "secret", k.secret.as_ref());
        }
        if let Some(fr) = &self.forcerenew {
            look("forcerenew", 0, "[forcerenew]".into(), "reconfigure_key", fr.reconfigure_key.as_ref());
        }
        out
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

    /// The `[[key]]`s by id (a parsed Config has no bad one: [`Config::parse`] refused it).
    pub fn ipsync_keys(&self) -> BTreeMap<u32, IpsyncKey> {
        ipsync_keys(&self.key).0
    }

    /// What a receiver verifies with, by key id.
    pub fn keys(&self) -> BTreeMap<u32, VerifyKey> {
        self.ipsync_keys().into_iter().map(|(id, k)| (id, k.verify_key())).collect()
    }

    /// The first `[[key]]` that can sign, preferring an Ed25519 signing key (DESIGN §4.3: then
    /// no terminal can forge what the server tools send).
    pub fn signing_key(&self) -> Option<(u32, IpsyncKey)> {
        let keys = self.ipsync_keys();
        let ed = keys.iter().find(|(_, k)| matches!(k, IpsyncKey::Ed25519 { signing: Some(_), .. }));
        let hmac =
            self.key.iter().find_map(|e| keys.get_key_value(&e.id).filter(|(_, k)| matches!(k, IpsyncKey::Hmac(_))));
        ed.or(hmac).map(|(id, k)| (*id, k.clone()))
    }

    /// The first `[[key]]` that is a shared secret: what a terminal signs HELLO with.
    pub fn hello_key(&self) -> Option<(u32, Vec<u8>)> {
        let keys = self.ipsync_keys();
        self.key.iter().find_map(|e| match keys.get(&e.id) {
            Some(IpsyncKey::Hmac(s)) => Some((e.id, s.clone())),
            _ => None,
        })
    }

    pub fn dhcp_keys(&self) -> BTreeMap<u32, Vec<u8>> {
        dhcp_keys(&self.dhcp_key).0
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

/// The field a key problem is about, for its line: every one reads "[[section]] id N FIELD: …".
fn key_field(problem: &str) -> &str {
    problem.split_whitespace().nth(3).map_or("id", |f| f.trim_end_matches(':'))
}

fn secret_problem(section: &str, k: &KeyEntry, s: &str) -> Result<Vec<u8>, String> {
    let v = parse_secret(s).map_err(|e| format!("[[{section}]] id {} secret: {e}", k.id))?;
    if v.len() < MIN_SECRET_LEN {
        return Err(format!(
            "[[{section}]] id {} secret: expected at least {MIN_SECRET_LEN} bytes, got {} (`ipsyncd keygen` makes one)",
            k.id,
            v.len()
        ));
    }
    Ok(v)
}

/// `[[key]]`s by id, and the problems (by entry index) of those that were refused.
fn ipsync_keys(entries: &[KeyEntry]) -> (BTreeMap<u32, IpsyncKey>, Vec<(usize, String)>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, k) in entries.iter().enumerate() {
        let id = k.id;
        let parsed = match (&k.secret, &k.public_key, &k.signing_key) {
            (Some(s), None, None) => secret_problem("key", k, s).map(IpsyncKey::Hmac),
            (None, public, signing) if public.is_some() || signing.is_some() => ed25519_entry(k, public, signing),
            (None, None, None) => {
                Err(format!("[[key]] id {id} secret: expected `secret` (a shared HMAC key) or `public_key` (Ed25519)"))
            }
            _ => {
                Err(format!("[[key]] id {id} secret: a key is either `secret` or `public_key`/`signing_key`, not both"))
            }
        };
        match parsed {
            Ok(v) => {
                if out.insert(id, v).is_some() {
                    problems.push((i, format!("[[key]] id {id} id: defined twice")));
                }
            }
            Err(e) => problems.push((i, e)),
        }
    }
    (out, problems)
}

fn ed25519_entry(k: &KeyEntry, public: &Option<String>, signing: &Option<String>) -> Result<IpsyncKey, String> {
    let id = k.id;
    let public = match public {
        Some(p) => {
            let b = parse_secret(p).map_err(|e| format!("[[key]] id {id} public_key: {e}"))?;
            Some(sig::public_key(&b).map_err(|e| format!("[[key]] id {id} public_key: {e}"))?)
        }
        None => None,
    };
    let signing = match signing {
        Some(s) => {
            let b = parse_secret(s).map_err(|e| format!("[[key]] id {id} signing_key: {e}"))?;
            Some(sig::signing_key(&b, public.as_ref()).map_err(|e| format!("[[key]] id {id} signing_key: {e}"))?)
        }
        None => None,
    };
    let public = match (public, &signing) {
        (Some(p), _) => p,
        (None, Some(s)) => s.verifying_key(),
        (None, None) => return Err(format!("[[key]] id {id} public_key: missing")),
    };
    Ok(IpsyncKey::Ed25519 { public, signing })
}

fn dhcp_keys(entries: &[KeyEntry]) -> (BTreeMap<u32, Vec<u8>>, Vec<(usize, String)>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, k) in entries.iter().enumerate() {
        let parsed = match (&k.secret, &k.public_key, &k.signing_key) {
            (Some(s), None, None) => secret_problem("dhcp_key", k, s),
            (None, None, None) => Err(format!("[[dhcp_key]] id {} secret: missing", k.id)),
            _ => Err(format!("[[dhcp_key]] id {} public_key: RFC 3118 keys are shared secrets: `secret` only", k.id)),
        };
        match parsed {
            Ok(v) => {
                if out.insert(k.id, v).is_some() {
                    problems.push((i, format!("[[dhcp_key]] id {} id: defined twice", k.id)));
                }
            }
            Err(e) => problems.push((i, e)),
        }
    }
    (out, problems)
}

/// The key set on 1-based `line`, as the problems name it: `key`, `table.key`, or
/// `[[table]] key` for an array's entry; `None` for a line that sets no key.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if n + 1 == line {
            let (k, _) = l.split_once('=')?;
            let k = k.trim().trim_matches('"');
            return Some(match (table.as_str(), k) {
                (_, "") => return None,
                ("", k) => k.to_string(),
                (t, k) if t.starts_with("[[") => format!("{t} {k}"),
                (t, k) => format!("{t}.{k}"),
            });
        }
        if let Some(h) = l.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            table = format!("[[{}]]", h.trim());
        } else if let Some(h) = l.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = h.trim().to_string();
        }
    }
    None
}

/// The 1-based line of `key` in the `index`-th table named `table` ("" for the top level, or
/// a `[[table]]` array's entry), found by a scan of the text: enough for the files people
/// write (one key per line), and `None` where the scan cannot tell (inline tables).
pub fn locate(text: &str, table: &str, index: usize, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut entry = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            current = h.trim().to_string();
            let c = seen.entry(current.clone()).or_insert(0);
            entry = *c;
            *c += 1;
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = h.trim().to_string();
            entry = 0;
            continue;
        }
        let Some((k, _)) = line.split_once('=') else { continue };
        if current == table && entry == index && k.trim().trim_matches('"') == key {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn durations_take_units_and_refuse_nonsense() {
        use std::time::Duration as D;
        assert_eq!(parse_duration("500ms"), Ok(D::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(D::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(D::from_secs(30)), "bare seconds, as before");
        assert_eq!(parse_duration("5m"), Ok(D::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(D::from_secs(3600)));
        for bad in ["", "0", "0ms", "1s5", "-1s", "1.5s", "25h", "1d", "99999999999999999999s", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn parse_all_steps_over_refused_lines_and_lists_every_problem() {
        let text =
            "mode = \"fallow\"\nfavourite_colour = 1\n[server]\nport = \"x\"\n[[key]]\nid = 1\nsecret = \"short\"\n";
        let (c, p) = Config::parse_all(text).unwrap();
        assert_eq!(c.mode, Mode::Dhcp, "a refused line leaves its default");
        assert_eq!(c.server.port, crate::wire::ipsync::DEFAULT_PORT);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p[0].starts_with("line 1: mode: unknown variant `fallow`"), "{p:#?}");
        assert!(p[1].starts_with("line 2: unknown field `favourite_colour`"), "{p:#?}");
        assert!(p[2].starts_with("line 4: server.port: invalid type"), "{p:#?}");
        assert!(p[3].starts_with("line 7: [[key]] id 1 secret: expected at least 16 bytes, got 5"), "{p:#?}");
        // The strict parse still stops at the first, as every other command loads the file.
        assert!(Config::parse(text).unwrap_err().starts_with("line 1: unknown variant"));
        assert_eq!(Config::parse_all("mode = \"follow\"\n").map(|(_, p)| p), Ok(vec![]));
        // A line that is not TOML at all is stepped over like the others.
        let (_, p) = Config::parse_all("mode = \"fallow\"\n[server\n").unwrap();
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p.iter().any(|p| p.starts_with("line 1: mode: unknown variant")), "{p:#?}");
        assert!(p.iter().any(|p| p.starts_with("line 2: ")), "{p:#?}");
        // What has no line to leave out ends it (a NUL byte: not a text file).
        assert!(Config::parse_all("mode = \"follow\"\n\0").is_err());
    }

    #[test]
    fn the_published_example_keys_are_warned_about_by_line_and_never_shown() {
        let k = &EXAMPLE_KEYS[2];
        let text = format!("[[key]]\nid = 1\npublic_key = \"{}\"\nsigning_key = \"{}\"\n", EXAMPLE_KEYS[1].hex, k.hex);
        let w: Vec<String> = Config::parse(&text).unwrap().example_keys(&text).into_iter().map(|(w, _)| w).collect();
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].starts_with("line 3: [[key]] id 1 public_key: this is the public half"), "{w:#?}");
        assert_eq!(
            w[1],
            "line 4: [[key]] id 1 signing_key: this is the published example key from \
             ipsyncd-server.toml.example; generate your own with `ipsyncd keygen`"
        );
        assert!(!w.iter().any(|w| w.contains(&k.hex[2..])), "the secret is never logged");
    }

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
secret = "dhcpsecret-at-least-16"
[forcerenew]
auth = "reconfigure-key"
reconfigure_key = "0x00112233445566778899aabbccddeeff"
"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Follow);
        assert!(matches!(&c.keys()[&1], VerifyKey::Hmac(k) if k.len() == 32));
        assert_eq!(c.dhcp_keys()[&7], b"dhcpsecret-at-least-16");
        assert_eq!(c.server.port, 47474);
        assert_eq!(c.forcerenew.unwrap().auth, ForceRenewAuth::ReconfigureKey);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::parse("[terminal]\nmac = \"zz\"").unwrap_err().contains("terminal.mac"));
        assert!(Config::parse("[[key]]\nid = 1\nsecret = \"0x0g\"").unwrap_err().contains("not hex"));
        assert!(Config::parse("[[key]]\nid = 1\nsecret = \"\"").unwrap_err().contains("at least 16"));
        let dup =
            "[[dhcp_key]]\nid = 1\nsecret = \"aaaaaaaaaaaaaaaa\"\n[[dhcp_key]]\nid = 1\nsecret = \"bbbbbbbbbbbbbbbb\"";
        assert!(Config::parse(dup).unwrap_err().contains("twice"));
        assert!(Config::parse("mode = \"dhcpx\"").is_err());
    }

    #[test]
    fn every_problem_is_listed_with_its_line_and_key() {
        let text = "mode = \"follow\"\n[server]\nport = 67\ndhcp_option = 54\n[[key]]\nid = 1\nsecret = \"x\"\n[[dhcp_key]]\nid = 2\nsecret = \"short\"\n";
        let e = Config::parse(text).unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(lines[0].starts_with("line 3: server.port: 67 is a DHCP port"), "{e}");
        assert!(lines[1].starts_with("line 4: server.dhcp_option: option 54"), "{e}");
        assert!(lines[2].starts_with("line 7: [[key]] id 1 secret: expected at least 16 bytes, got 1"), "{e}");
        assert!(lines[3].starts_with("line 10: [[dhcp_key]] id 2 secret: expected at least 16 bytes, got 5"), "{e}");
        assert!(Config::parse("[server]\nport = 0").unwrap_err().contains("got 0"));
        assert!(Config::parse("[server]\ndhcp_option = 255").unwrap_err().contains("option 255"));
        assert!(Config::parse("[server]\ndhcp_option = 0").is_ok());
        assert!(Config::parse("[server]\ndhcp_option = 62").is_ok());
        let nul = Config::parse("interface = \"eth0\"\n\0\0").unwrap_err();
        assert!(nul.starts_with("line 2: a NUL byte"), "{nul}");
    }

    #[test]
    fn ed25519_keys_are_checked() {
        let sk = crate::wire::sig::SigningKey::from_bytes(&[5; 32]);
        let pk = crate::wire::hex::to_hex(sk.verifying_key().as_bytes());
        let seed = crate::wire::hex::to_hex(sk.as_bytes());
        let t = Config::parse(&format!("[[key]]\nid = 2\npublic_key = \"0x{pk}\"")).unwrap();
        assert!(matches!(t.ipsync_keys()[&2], IpsyncKey::Ed25519 { signing: None, .. }));
        assert!(t.signing_key().is_none(), "a public key alone cannot sign");
        assert!(t.hello_key().is_none());
        let s =
            Config::parse(&format!("[[key]]\nid = 2\npublic_key = \"0x{pk}\"\nsigning_key = \"0x{seed}\"")).unwrap();
        assert_eq!(s.signing_key().map(|(id, _)| id), Some(2));
        let other = crate::wire::hex::to_hex(&[9; 32]);
        let e = Config::parse(&format!("[[key]]\nid = 2\npublic_key = \"0x{pk}\"\nsigning_key = \"0x{other}\""))
            .unwrap_err();
        assert!(e.starts_with("line 4: [[key]] id 2 signing_key: signing_key does not belong"), "{e}");
        let e = Config::parse(
            "[[key]]\nid = 2\npublic_key = \"0x0100000000000000000000000000000000000000000000000000000000000000\"",
        )
        .unwrap_err();
        assert!(e.contains("small-order"), "{e}");
        let both = format!("[[key]]\nid = 2\nsecret = \"0123456789abcdef\"\npublic_key = \"0x{pk}\"");
        assert!(Config::parse(&both).unwrap_err().contains("not both"));
        assert!(Config::parse(&format!("[[dhcp_key]]\nid = 2\npublic_key = \"0x{pk}\""))
            .unwrap_err()
            .contains("`secret` only"));
    }
}
