//! The daemon's runtime status for `ipsyncd status` (DESIGN §6): written by the worker after
//! anything changes, read by the CLI.
//!
//! Contract: `state_dir/status.json` is replaced through [`super::atomic_file`], so a reader never
//! sees half a file. It is a snapshot, not the source of truth: the state file is.

use crate::engine::{Engine, Mode};
use serde_json::{json, Map, Value};
use std::path::Path;

pub const FILE_NAME: &str = "status.json";

fn secs(t: crate::engine::Instant) -> f64 {
    t.micros() as f64 / 1e6
}

/// The status object; `pin.in_kernel` is filled in by the reader, who can ask the kernel.
pub fn snapshot(e: &Engine, interface: &str, now: crate::engine::Instant) -> Value {
    let st = e.state();
    let server = st.server.map(|s| {
        json!({
            "ip": s.ip.to_string(),
            "mac": s.mac.map(|m| m.to_string()),
            "since": s.since,
            "connected": e.connected_since().is_some(),
            "last_welcome": e.connected_since().map(|t| t.secs()),
        })
    });
    let server = server.or_else(|| {
        e.current_server().map(
            |ip| json!({"ip": ip.to_string(), "mac": null, "since": null, "connected": false, "last_welcome": null}),
        )
    });
    let pin =
        st.server.and_then(|s| s.mac.map(|m| json!({"ip": s.ip.to_string(), "mac": m.to_string(), "in_kernel": null})));
    let lease = match (e.config().mode, st.lease) {
        (Mode::Dhcp, Some(l)) => json!({
            "address": l.address.to_string(),
            "server_id": l.server_id.to_string(),
            "expires": l.expires / 1_000_000,
            "state": e.client_state(),
        }),
        _ => Value::Null,
    };
    let c = e.counters();
    let mut counters = Map::new();
    for (verdict, n) in &c.verdicts {
        match c.reasons.get(verdict) {
            Some(reasons) => {
                counters.insert(verdict.clone(), json!(reasons));
            }
            None => {
                counters.insert(verdict.clone(), json!(n));
            }
        }
    }
    let last = e.last_decision().map(|(i, v, t)| json!({"input": i.as_str(), "verdict": v.as_str(), "time": secs(t)}));
    let since_contact = e.connected_since().map(|t| now.saturating_sub(t) / 1_000_000);
    json!({
        "interface": interface,
        "mode": match e.config().mode { Mode::Dhcp => "dhcp", Mode::Follow => "follow" },
        "server": server,
        "pin": pin,
        "lease": lease,
        "last_decision": last,
        "counters": Value::Object(counters),
        "dropped": json!(c.drops),
        "seconds_since_contact": since_contact,
        "pid": std::process::id(),
        "updated": secs(now),
    })
}

pub fn write(dir: &Path, v: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
    super::atomic_file::write_atomic(dir, FILE_NAME, &bytes)
}

pub fn read(dir: &Path) -> std::io::Result<Value> {
    let b = std::fs::read(dir.join(FILE_NAME))?;
    serde_json::from_slice(&b).map_err(std::io::Error::other)
}
