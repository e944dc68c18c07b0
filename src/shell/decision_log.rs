//! The JSON decision log (DESIGN §8): one object per line, fields in a fixed order.
//!
//! Contract: written by hand rather than through a map so the field order and the number format
//! (`time` as seconds with six decimals) are exactly what the golden files hold.

use crate::engine::{Action, Decision, Input, Instant};
use std::fmt::Write;

fn esc(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn action(a: &Action, out: &mut String) {
    out.push_str("{\"op\":");
    esc(a.op(), out);
    match a {
        Action::PinNeighbour { ip, mac } => {
            let _ = write!(out, ",\"ip\":\"{ip}\",\"mac\":\"{mac}\"");
        }
        Action::UnpinNeighbour { ip } => {
            let _ = write!(out, ",\"ip\":\"{ip}\"");
        }
        Action::SetAddress { cidr, router } => {
            let _ = write!(out, ",\"cidr\":\"{cidr}\"");
            if let Some(r) = router {
                let _ = write!(out, ",\"router\":\"{r}\"");
            }
        }
        Action::DelAddress { cidr } => {
            let _ = write!(out, ",\"cidr\":\"{cidr}\"");
        }
        Action::Transmit { kind, .. } => {
            let _ = write!(out, ",\"kind\":\"{}\"", kind.as_str());
        }
        Action::Connect { ip, port } => {
            let _ = write!(out, ",\"ip\":\"{ip}\",\"port\":{port}");
        }
        Action::SetServer { ip, mac } => {
            // Both fields always present: a server known only by IP has "mac": null until ARP pins it.
            match mac {
                Some(m) => write!(out, ",\"ip\":\"{ip}\",\"mac\":\"{m}\""),
                None => write!(out, ",\"ip\":\"{ip}\",\"mac\":null"),
            }
            .unwrap_or(());
        }
        Action::Alarm { kind, detail } => {
            out.push_str(",\"kind\":");
            esc(kind, out);
            out.push_str(",\"detail\":");
            esc(detail, out);
        }
        Action::Hook { reason, .. } => {
            let _ = write!(out, ",\"reason\":\"{}\"", reason.as_str());
        }
    }
    out.push('}');
}

/// One decision as a JSON object, without the trailing newline; `time` is the decision's own
/// (replay: the pcap time).
pub fn to_json(d: &Decision) -> String {
    to_json_at(d, d.time)
}

/// The same with `time` given: live, the engine's monotonic time converted to wall-clock time
/// (DESIGN §3: wall time only in the log line).
pub fn to_json_at(d: &Decision, time: Instant) -> String {
    let mut out = String::with_capacity(128 + 64 * d.actions.len());
    match d.frame {
        Some(n) => {
            let _ = write!(out, "{{\"frame\":{n}");
        }
        None => out.push_str("{\"frame\":null"),
    }
    let _ = write!(out, ",\"time\":{},\"input\":\"{}\",\"verdict\":\"{}\"", time, d.input.as_str(), d.verdict.as_str());
    if let Some(r) = d.reason {
        out.push_str(",\"reason\":");
        esc(r, &mut out);
    }
    if let Some(ip) = d.server_ip {
        let _ = write!(out, ",\"server_ip\":\"{ip}\"");
    }
    if let Some(m) = d.server_mac {
        let _ = write!(out, ",\"server_mac\":\"{m}\"");
    }
    out.push_str(",\"actions\":[");
    for (i, a) in d.actions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        action(a, &mut out);
    }
    out.push_str("]}");
    out
}

/// Security drops as warnings for the journal (issue 7): at most one line per input and reason
/// per minute, saying how many were folded into it. The decision log (debug) keeps every one.
#[derive(Debug, Default)]
pub struct RejectWarnings {
    last: std::collections::BTreeMap<(&'static str, &'static str), (Instant, u64)>,
}

/// One warning per input and reason per this many microseconds.
const REJECT_WARN_INTERVAL_US: u64 = 60_000_000;

impl RejectWarnings {
    /// The warning to log for `d` at `time`, if one is due.
    pub fn note(&mut self, d: &Decision, time: Instant) -> Option<String> {
        if d.verdict != crate::engine::Verdict::Reject {
            return None;
        }
        let key = (d.input.as_str(), d.reason.unwrap_or("unknown"));
        let entry = self.last.entry(key).or_insert((Instant(0), 0));
        if entry.0 != Instant(0) && time.saturating_sub(entry.0) < REJECT_WARN_INTERVAL_US {
            entry.1 += 1;
            return None;
        }
        let folded = std::mem::take(&mut entry.1);
        entry.0 = time;
        let more = if folded > 0 { format!(" ({folded} more since the last warning)") } else { String::new() };
        let server = match (d.server_ip, d.server_mac) {
            (Some(ip), Some(mac)) => format!(", naming server {ip} at {mac}"),
            (Some(ip), None) => format!(", naming server {ip}"),
            _ => String::new(),
        };
        // The source is what an administrator blocks or hunts down: the MAC first, since a
        // forged IPv4 source is cheap and the MAC at least names the segment's port.
        let from = match d.source {
            Some((mac, ip)) => format!(" from {mac}/{ip}"),
            None => String::new(),
        };
        Some(format!("rejected {}: {}{from} ({}){server}{more}", key.0, in_words(key.1, d.input, d.key_id), key.1))
    }
}

/// A reject reason counted over every input and key (`status`'s counters): the words of
/// [`in_words`] with neither an input's own check nor a key to name.
pub fn reason_in_words(reason: &str) -> String {
    in_words(reason, Input::Announce, None)
}

/// A reject reason (DESIGN §5) as an administrator reads it, naming the key the input named
/// when one applies: `bad_mac` is the message's authentication code, never a MAC address.
pub fn in_words(reason: &str, input: Input, key: Option<u32>) -> String {
    use crate::engine::reason as r;
    // FORCERENEW is checked with RFC 3118's HMAC-MD5 only; an ipsync key may be Ed25519.
    let check = if input == Input::ForceRenew { "HMAC" } else { "HMAC or signature" };
    let holds = if input == Input::ForceRenew { "[[dhcp_key]]" } else { "[[key]]" };
    let what = match input {
        Input::ForceRenew => "FORCERENEW",
        Input::Welcome => "WELCOMEs",
        _ => "announcements",
    };
    match (reason, key) {
        (r::UNKNOWN_KEY, Some(k)) => format!("no key {k} for {what} (this terminal holds no {holds} with id {k})"),
        (r::UNKNOWN_KEY, None) if input == Input::ForceRenew => {
            "RFC 6704 authentication, and no nonce from a lease is stored to check it with".into()
        }
        (r::UNKNOWN_KEY, None) => "signed with a key id this terminal does not hold for it".into(),
        (r::BAD_MAC, Some(k)) => format!("{check} check failed for key {k}"),
        (r::BAD_MAC, None) => format!("its {check} check failed"),
        (r::REPLAYED, Some(k)) => {
            format!("its sequence or replay counter is not above the last one accepted for key {k}")
        }
        (r::REPLAYED, None) => "its sequence or replay counter is not above the last one accepted".into(),
        (r::UNAUTHENTICATED, _) => "no authentication, and unauthenticated input is not allowed".into(),
        (r::BAD_SOURCE, _) => "it came from a source this terminal does not take it from".into(),
        (r::WRONG_STATE, _) => "it does not fit the DHCP client's state".into(),
        (r::NOT_FOR_US, _) => "it is addressed to another client".into(),
        (r::STALE, _) => "its timestamp is too far from this terminal's clock".into(),
        _ => "see the decision log".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{HookEnv, HookReason, Input, Instant, Verdict};
    use crate::wire::Mac;
    use std::net::Ipv4Addr;

    #[test]
    fn matches_design_example() {
        let b = Ipv4Addr::new(10, 77, 0, 20);
        let m = Mac([2, 0, 0, 0, 0, 2]);
        let d = Decision {
            frame: Some(12),
            time: Instant(1_764_138_625_123_456),
            input: Input::Announce,
            verdict: Verdict::Apply,
            reason: None,
            server_ip: Some(b),
            server_mac: Some(m),
            actions: vec![
                Action::PinNeighbour { ip: b, mac: m },
                Action::UnpinNeighbour { ip: Ipv4Addr::new(10, 77, 0, 1) },
                Action::Connect { ip: b, port: 47474 },
                Action::SetServer { ip: b, mac: Some(m) },
                Action::Hook { reason: HookReason::ServerChanged, env: HookEnv::default() },
            ],
            // The journal's source and key: never in the JSON (the golden files fix its fields).
            source: Some((Mac([2, 0, 0, 0, 0, 0x66]), Ipv4Addr::new(10, 77, 0, 66))),
            key_id: Some(1),
        };
        let want = r#"{"frame":12,"time":1764138625.123456,"input":"announce","verdict":"apply","server_ip":"10.77.0.20","server_mac":"02:00:00:00:00:02","actions":[{"op":"pin_neighbour","ip":"10.77.0.20","mac":"02:00:00:00:00:02"},{"op":"unpin_neighbour","ip":"10.77.0.1"},{"op":"connect","ip":"10.77.0.20","port":47474},{"op":"set_server","ip":"10.77.0.20","mac":"02:00:00:00:00:02"},{"op":"hook","reason":"SERVER_CHANGED"}]}"#;
        assert_eq!(to_json(&d), want);
        let v: serde_json::Value = serde_json::from_str(&to_json(&d)).unwrap();
        assert_eq!(v["time"].as_f64().unwrap(), 1764138625.123456);
    }

    #[test]
    fn reject_warnings_are_one_per_reason_per_minute() {
        let mut w = RejectWarnings::default();
        let d = |r| Decision::new(None, Instant(0), Input::ForceRenew, Verdict::Reject).reason(r);
        let t = Instant::from_secs(1000);
        assert!(w.note(&d("bad_mac"), t).is_some());
        assert!(w.note(&d("bad_mac"), t.add_secs(1)).is_none());
        assert!(w.note(&d("replayed"), t.add_secs(1)).is_some(), "another reason has its own minute");
        let again = w.note(&d("bad_mac"), t.add_secs(61)).unwrap_or_default();
        assert!(again.contains("1 more"), "{again}");
        assert!(again.starts_with("rejected forcerenew: its HMAC check failed (bad_mac)"), "{again}");
        let apply = Decision::new(None, Instant(0), Input::ForceRenew, Verdict::Renew);
        assert!(w.note(&apply, t).is_none());
    }

    #[test]
    fn reject_warning_names_the_key_and_the_source() {
        let mut w = RejectWarnings::default();
        let src = Some((Mac([2, 0, 0, 0, 0, 0x66]), Ipv4Addr::new(10, 77, 0, 66)));
        let d = Decision::new(Some(3), Instant(0), Input::ForceRenew, Verdict::Reject)
            .reason("bad_mac")
            .from_frame(src, Some(1));
        let line = w.note(&d, Instant::from_secs(5)).unwrap_or_default();
        assert_eq!(
            line,
            "rejected forcerenew: HMAC check failed for key 1 from 02:00:00:00:00:66/10.77.0.66 (bad_mac)"
        );
        let a = Decision::new(Some(4), Instant(0), Input::Announce, Verdict::Reject)
            .reason("unknown_key")
            .server(Some(Ipv4Addr::new(10, 77, 0, 20)), None)
            .from_frame(src, Some(7));
        let line = w.note(&a, Instant::from_secs(5)).unwrap_or_default();
        assert_eq!(
            line,
            "rejected announce: no key 7 for announcements (this terminal holds no [[key]] with id 7) \
             from 02:00:00:00:00:66/10.77.0.66 (unknown_key), naming server 10.77.0.20"
        );
    }

    #[test]
    fn reasons_in_words_name_the_key_only_when_one_applies() {
        assert_eq!(in_words("bad_mac", Input::Announce, Some(2)), "HMAC or signature check failed for key 2");
        assert_eq!(in_words("bad_mac", Input::Announce, None), "its HMAC or signature check failed");
        assert!(in_words("unknown_key", Input::ForceRenew, Some(9)).starts_with("no key 9 for FORCERENEW"));
        assert!(in_words("unknown_key", Input::ForceRenew, None).contains("RFC 6704"));
        assert!(in_words("replayed", Input::Announce, Some(3)).ends_with("for key 3"));
        assert!(!in_words("bad_source", Input::ForceRenew, Some(3)).contains("key"), "no key in a source check");
        assert_eq!(in_words("something_new", Input::Dhcp, None), "see the decision log");
    }
}
