//! `ipsyncd forcerenew`: sends an authenticated FORCERENEW (RFC 3203) to one client.
//!
//! Contract: signed per `[forcerenew]` (RFC 3118 delayed auth with a `[[dhcp_key]]`, or the
//! RFC 6704 reconfigure key); the replay counter follows the sequence rule of DESIGN §4.3 and is
//! persisted before the frame leaves, so it strictly increases across runs (dhcpcd rejects an
//! equal counter). The xid comes from the xid file when it knows the client (dhcpcd acts only on
//! the xid of its last exchange); ipsyncd terminals accept any. The frame is sent from the
//! interface's address on the client's subnet (else its first), `--retries` more times a second
//! apart.

use super::error::ToolError;
use super::{sequence, ForceRenew, ForceRenewAuth};
use crate::config::{self, Config, ForceRenewAuth as AuthKind};
use crate::shell::capture::Transmitter;
use crate::shell::clock;
use crate::shell::netlink::Netlink;
use crate::wire::Mac;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

pub use super::xid_db::parse_xid_db;

pub const REPLAY_FILE: &str = "forcerenew.replay";

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
    pub leases: Option<std::path::PathBuf>,
    /// Resends after the first (default 0).
    pub retries: Option<u32>,
    pub require_confirm: bool,
}

/// `ipsyncd forcerenew`. `config_path` names the config in errors.
pub fn run(cfg: &Config, config_path: &Path, req: Request) -> Result<(), ToolError> {
    if req.leases.is_some() || req.require_confirm {
        return Err(ToolError::Runtime(
            "`ipsyncd forcerenew --leases / --require-confirm` is not available in this build yet".into(),
        ));
    }
    let in_file = |m: String| ToolError::Usage(format!("{}: {m}", config_path.display()));
    let client = req.client.ok_or_else(|| ToolError::Usage("--client IP (or --leases FILE) is required".into()))?;
    let client_ip: Ipv4Addr =
        client.parse().map_err(|_| ToolError::Usage(format!("--client: expected an IPv4 address, got {client:?}")))?;
    let client_mac: Mac = req
        .client_mac
        .ok_or_else(|| ToolError::Usage("--client-mac MAC is required with --client".into()))?
        .parse()
        .map_err(|_| ToolError::Usage("--client-mac: expected aa:bb:cc:dd:ee:ff".into()))?;
    let section = cfg.forcerenew.clone().ok_or_else(|| in_file("[forcerenew]: required to sign FORCERENEW".into()))?;
    let dhcp_keys = cfg.dhcp_keys();
    let rk;
    let auth = match section.auth {
        AuthKind::Delayed => {
            let key = dhcp_keys.get(&section.key_id).ok_or_else(|| {
                in_file(format!("forcerenew.key_id = {}: no [[dhcp_key]] with that id", section.key_id))
            })?;
            ForceRenewAuth::Delayed { secret_id: section.key_id, key }
        }
        AuthKind::ReconfigureKey => {
            let v = section
                .reconfigure_key
                .as_deref()
                .ok_or_else(|| in_file("forcerenew.reconfigure_key: required for auth = \"reconfigure-key\"".into()))?;
            let bytes = config::parse_secret(v).map_err(|e| in_file(format!("forcerenew.reconfigure_key: {e}")))?;
            rk = <[u8; 16]>::try_from(bytes.as_slice())
                .map_err(|_| in_file("forcerenew.reconfigure_key: expected 16 bytes".into()))?;
            ForceRenewAuth::ReconfigureKey { key: &rk }
        }
    };
    let xid = section.xid_db.as_deref().map_or(0, |p| known_xid(p, client_mac));
    let interface = req.interface.as_str();
    let mut nl = Netlink::open().map_err(|e| ToolError::Runtime(format!("netlink: {e}")))?;
    let link = nl.link(interface).map_err(|e| ToolError::Runtime(e.to_string()))?;
    let server_mac = link.mac.ok_or_else(|| ToolError::Runtime(format!("{interface}: has no MAC address")))?;
    let server_ip = nl
        .addresses(link.index)
        .map_err(|e| ToolError::Runtime(e.to_string()))?
        .into_iter()
        .find(|c| c.contains(client_ip))
        .or_else(|| nl.addresses(link.index).ok().and_then(|a| a.first().copied()))
        .map(|c| c.addr)
        .ok_or_else(|| ToolError::Runtime(format!("{interface}: has no IPv4 address to send from")))?;
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| ToolError::Runtime(format!("{}: {e}", cfg.state_dir.display())))?;
    let tx = Transmitter::open(link.index)
        .map_err(|e| ToolError::Runtime(format!("{interface}: {e} (needs CAP_NET_RAW)")))?;
    let retries = req.retries.unwrap_or(0);
    for attempt in 0..=retries {
        let replay = next_replay(&cfg.state_dir, clock::unix_us())
            .map_err(|e| ToolError::Runtime(format!("{}: {e}", cfg.state_dir.display())))?;
        let m = ForceRenew { server_ip, server_mac, client_ip, client_mac, xid, replay, auth };
        tx.send(&m.frame()).map_err(|e| ToolError::Runtime(format!("send FORCERENEW to {client_ip}: {e}")))?;
        println!("sent FORCERENEW to {client_ip} ({client_mac}) xid {xid:#010x} replay {replay}");
        if attempt < retries {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(())
}

/// The client's last xid from the xid file, or 0 (with a warning) when the file cannot be read.
fn known_xid(path: &Path, client_mac: Mac) -> u32 {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (map, bad) = parse_xid_db(&text);
            if !bad.is_empty() {
                log::warn!("{}: lines {bad:?} are not `<mac> 0x<8 hex digits>`; ignored", path.display());
            }
            map.get(&client_mac).copied().unwrap_or(0)
        }
        Err(e) => {
            log::warn!("{}: {e}; using xid 0", path.display());
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_db_format() {
        let (m, bad) = parse_xid_db("# comment\n02:00:00:00:00:20 0x0000beef\nnonsense\n02:00:00:00:00:20 0x12345678 # later wins\n02:00:00:00:00:21 0x123\n");
        assert_eq!(m.get(&Mac([2, 0, 0, 0, 0, 0x20])), Some(&0x1234_5678));
        assert_eq!(bad, vec![3, 5]);
    }
}
