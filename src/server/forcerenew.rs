//! `ipsyncd forcerenew`: sends an authenticated FORCERENEW (RFC 3203) to one client.
//!
//! Contract: signed per `[forcerenew]` (RFC 3118 delayed auth with a `[[dhcp_key]]`, or the
//! RFC 6704 reconfigure key); the replay counter follows the sequence rule of DESIGN §4.3 and is
//! persisted before the frame leaves, so it strictly increases across runs (dhcpcd rejects an
//! equal counter). The xid comes from the xid file when it knows the client (dhcpcd acts only on
//! the xid of its last exchange); ipsyncd terminals accept any.

use crate::wire::Mac;
use std::collections::HashMap;
use std::path::Path;

pub const REPLAY_FILE: &str = "forcerenew.replay";

/// Parses the xid file: `<mac> 0x<8 hex digits>` per line, `#` comments, later lines win.
/// Returns the map and the 1-based numbers of lines that were not understood.
pub fn parse_xid_db(text: &str) -> (HashMap<Mac, u32>, Vec<usize>) {
    let mut map = HashMap::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let parsed = match (it.next(), it.next(), it.next()) {
            (Some(m), Some(x), None) => m
                .parse::<Mac>()
                .ok()
                .zip(x.strip_prefix("0x").filter(|h| h.len() == 8).and_then(|h| u32::from_str_radix(h, 16).ok())),
            _ => None,
        };
        match parsed {
            Some((m, x)) => {
                map.insert(m, x);
            }
            None => bad.push(i + 1),
        }
    }
    (map, bad)
}

/// The next RFC 3118 replay counter, persisted in `state_dir` before use.
pub fn next_replay(state_dir: &Path, now_unix_us: u64) -> std::io::Result<u64> {
    super::sequence::take_persisted(state_dir, REPLAY_FILE, now_unix_us)
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
