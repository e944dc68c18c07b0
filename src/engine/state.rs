//! What survives a restart (DESIGN §10): the cloud server and its MAC, the lease, the replay
//! counters and the RFC 6704 reconfigure nonce.
//!
//! Contract: plain data with serde. Writing it atomically (temp file, fsync, rename, fsync the
//! directory) and moving a corrupt file aside belong to the shell; the engine only marks the
//! state dirty when it changed.

use super::vocab::Cidr;
use crate::wire::Mac;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerState {
    pub ip: Ipv4Addr,
    #[serde(default, with = "opt_mac")]
    pub mac: Option<Mac>,
    /// Unix seconds when we switched to it.
    pub since: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    #[serde(with = "cidr_str")]
    pub address: Cidr,
    pub server_id: Ipv4Addr,
    /// The Ethernet source of the ACK (the server, or the relay): where RENEWING unicasts to.
    #[serde(default, with = "opt_mac", skip_serializing_if = "Option::is_none")]
    pub server_mac: Option<Mac>,
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// Absolute times, microseconds since the Unix epoch.
    pub acquired: u64,
    pub t1: u64,
    pub t2: u64,
    pub expires: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    #[serde(default)]
    pub server: Option<ServerState>,
    #[serde(default)]
    pub lease: Option<LeaseState>,
    /// Last accepted ipsync sequence per key_id.
    #[serde(default)]
    pub sequences: BTreeMap<u32, u64>,
    /// Last accepted FORCERENEW replay counter per scheme ("delayed:<id>", "rkap").
    #[serde(default)]
    pub dhcp_replay: BTreeMap<String, u64>,
    /// RFC 6704 reconfigure key from the ACK we bound with, as hex.
    #[serde(default)]
    pub reconfigure_nonce: Option<String>,
}

impl Default for State {
    fn default() -> State {
        State {
            version: STATE_VERSION,
            server: None,
            lease: None,
            sequences: BTreeMap::new(),
            dhcp_replay: BTreeMap::new(),
            reconfigure_nonce: None,
        }
    }
}

impl State {
    pub fn nonce(&self) -> Option<[u8; 16]> {
        let h = self.reconfigure_nonce.as_deref()?;
        let v = crate::wire::hex::parse_hex(h).ok()?;
        v.try_into().ok()
    }

    pub fn set_nonce(&mut self, n: Option<[u8; 16]>) {
        self.reconfigure_nonce = n.map(|n| n.iter().map(|b| format!("{b:02x}")).collect());
    }
}

mod opt_mac {
    use super::*;
    pub fn serialize<S: Serializer>(m: &Option<Mac>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.serialize_some(&m.to_string()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mac>, D::Error> {
        let o: Option<String> = Option::deserialize(d)?;
        o.map(|s| s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not a MAC address")))).transpose()
    }
}

mod cidr_str {
    use super::*;
    pub fn serialize<S: Serializer>(c: &Cidr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&c.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut s = State {
            server: Some(ServerState {
                ip: Ipv4Addr::new(10, 77, 0, 20),
                mac: Some(Mac([2, 0, 0, 0, 0, 2])),
                since: 5,
            }),
            ..State::default()
        };
        s.sequences.insert(1, 99);
        s.set_nonce(Some([7; 16]));
        let j = serde_json::to_string(&s).unwrap();
        let back: State = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.nonce(), Some([7; 16]));
    }
}
