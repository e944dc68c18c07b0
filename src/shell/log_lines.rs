//! The daemon's log lines about decisions: the decision line itself (the JSON of DESIGN §8, at
//! debug under `ipsyncd::decision`), the reject warning (rate-limited, [`RejectWarnings`]) and
//! one warning per alarm, each with its journal fields.
//!
//! Contract: every one of these lines carries `MESSAGE_ID` (one fixed id per verdict, and
//! [`ALARM_MESSAGE_ID`] for alarms, listed in README.md so that `journalctl MESSAGE_ID=…`
//! finds them), `IPSYNC_INPUT`, `IPSYNC_VERDICT`, `IPSYNC_REASON` when the decision has a reason
//! and `SERVER_IP` when it names a server; an alarm adds `IPSYNC_ALARM`. The ids never change:
//! administrators' saved queries depend on them. The messages are what stderr showed before the
//! fields existed, and the targets are the ones they had, so `RUST_LOG` selects them as before.

use super::decision_log::{to_json_at, RejectWarnings};
use super::logging::emit;
use crate::engine::{Action, Decision, Instant, Verdict};

/// The decision line's target (DESIGN §8).
pub const DECISION_TARGET: &str = "ipsyncd::decision";
/// The targets the warnings had when the daemon and the applier logged them.
const WARNING_TARGET: &str = "ipsyncd::shell::daemon";
const ALARM_TARGET: &str = "ipsyncd::shell::applier";

/// Every alarm (`alarm` actions: address_in_use, server_unreachable, move_failed, …).
pub const ALARM_MESSAGE_ID: &str = "58a3ccc3d44a49bc89e62295b14d627d";

/// The MESSAGE_ID of a decision line (and, for `reject`, of its warning).
pub fn message_id(v: Verdict) -> &'static str {
    match v {
        Verdict::Apply => "1f53bedddb3b46f58f9a0c8350082bfb",
        Verdict::Same => "19bdffd7210c4d058437c738f7fe54d7",
        Verdict::Conflict => "ae0ac2c246ad43369feb48434b4065a3",
        Verdict::Renew => "8f3c667f2e4d4c1480b78795bf386dde",
        Verdict::Lease => "ad76d779126846f7a3e21b7996d265df",
        Verdict::Reject => "aa2f23f7ffa54a3d9360c57fd01fee57",
        Verdict::Malformed => "3663b865cd224c888746267501a7111e",
        Verdict::Select => "aef94fad1407409b969f677de8ee3eb5",
        Verdict::Restart => "7d41e3c668914200aac3a7684fcaaff1",
        Verdict::Ignore => "879d3989d3d84bb1b1f9b59e8f281607",
        Verdict::Retry => "3fb14e96b87942789481229a7619d9b7",
        Verdict::Unreachable => "098a5cbbbb9f485a97a5d90d1e9828ae",
        Verdict::Repin => "0469edf4d85f439e83747909cfd16013",
    }
}

/// Logs a decision's lines through `logger` (the daemon passes `log::logger()`).
#[derive(Debug, Default)]
pub struct DecisionLines {
    warnings: RejectWarnings,
}

impl DecisionLines {
    /// `wall` is the decision's time as the JSON shows it; the warnings' rate limit runs on the
    /// decision's monotonic time, so a step of the wall clock cannot silence them.
    pub fn log(&mut self, logger: &dyn log::Log, d: &Decision, wall: Instant) {
        let server = d.server_ip.map(|ip| ip.to_string());
        let mut fields: Vec<(&str, &str)> = vec![
            ("MESSAGE_ID", message_id(d.verdict)),
            ("IPSYNC_INPUT", d.input.as_str()),
            ("IPSYNC_VERDICT", d.verdict.as_str()),
        ];
        if let Some(r) = d.reason {
            fields.push(("IPSYNC_REASON", r));
        }
        if let Some(s) = &server {
            fields.push(("SERVER_IP", s));
        }
        emit(logger, log::Level::Debug, DECISION_TARGET, &fields, || to_json_at(d, wall));
        if let Some(w) = self.warnings.note(d, d.time) {
            emit(logger, log::Level::Warn, WARNING_TARGET, &fields, || w);
        }
        for a in &d.actions {
            if let Action::Alarm { kind, detail } = a {
                let mut f = fields.clone();
                f[0] = ("MESSAGE_ID", ALARM_MESSAGE_ID);
                f.push(("IPSYNC_ALARM", *kind));
                emit(logger, log::Level::Warn, ALARM_TARGET, &f, || format!("ALARM {kind}: {detail}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Input;
    use crate::shell::journal::{parse_entry, Journal};
    use crate::shell::logging::Logger;
    use crate::wire::Mac;
    use std::net::Ipv4Addr;

    #[test]
    fn ids_are_distinct_and_128_bits() {
        let all = Verdict::ALL;
        let mut ids: Vec<&str> = all.iter().map(|&v| message_id(v)).collect();
        ids.push(ALARM_MESSAGE_ID);
        assert!(ids.iter().all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len() + 1);
    }

    /// What the daemon's sink does, into a journal socket of the test's own.
    #[test]
    fn reject_and_alarm_reach_the_journal_with_their_fields() {
        let (dir, path, server) = crate::shell::journal::tests::test_socket("loglines");
        let logger = Logger::with_filter("info,ipsyncd::decision=debug", Some(Journal::open(&path).unwrap()));
        let mut lines = DecisionLines::default();
        let srv = Ipv4Addr::new(10, 77, 0, 20);
        let reject = Decision::new(Some(1), Instant::from_secs(10), Input::Announce, Verdict::Reject)
            .reason("bad_mac")
            .server(Some(srv), None)
            .from_frame(Some((Mac([2, 0, 0, 0, 0, 0x66]), Ipv4Addr::new(10, 77, 0, 66))), Some(1));
        lines.log(&logger, &reject, Instant::from_secs(10));
        let conflict = Decision::new(Some(2), Instant::from_secs(11), Input::Arp, Verdict::Conflict)
            .reason("address_in_use")
            .server(Some(srv), Some(Mac([2, 0, 0, 0, 0, 0x77])))
            .actions(vec![Action::Alarm { kind: "address_in_use", detail: "10.77.0.20 at 02:00:00:00:00:77".into() }]);
        lines.log(&logger, &conflict, Instant::from_secs(11));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = server.recv(&mut buf) {
            got.push(parse_entry(&buf[..n]).unwrap_or_default());
        }
        let field = |e: &Vec<(String, Vec<u8>)>, k: &str| {
            e.iter().find(|(n, _)| n == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(got.len(), 4, "decision, warning, decision, alarm: {got:?}");
        let want = [
            (message_id(Verdict::Reject), "7", "reject", Some("bad_mac")),
            (message_id(Verdict::Reject), "4", "reject", Some("bad_mac")),
            (message_id(Verdict::Conflict), "7", "conflict", Some("address_in_use")),
            (ALARM_MESSAGE_ID, "4", "conflict", Some("address_in_use")),
        ];
        for (e, (id, prio, verdict, reason)) in got.iter().zip(want) {
            assert_eq!(field(e, "MESSAGE_ID").as_deref(), Some(id), "{e:?}");
            assert_eq!(field(e, "PRIORITY").as_deref(), Some(prio), "{e:?}");
            assert_eq!(field(e, "IPSYNC_VERDICT").as_deref(), Some(verdict));
            assert_eq!(field(e, "IPSYNC_REASON").as_deref(), reason);
            assert_eq!(field(e, "SERVER_IP").as_deref(), Some("10.77.0.20"));
        }
        assert_eq!(field(&got[0], "IPSYNC_INPUT").as_deref(), Some("announce"));
        assert_eq!(
            field(&got[0], "MESSAGE"),
            Some(crate::shell::decision_log::to_json_at(&reject, Instant::from_secs(10)))
        );
        let warning = field(&got[1], "MESSAGE").unwrap_or_default();
        assert!(warning.contains("for key 1 from 02:00:00:00:00:66/10.77.0.66"), "{warning}");
        assert_eq!(field(&got[3], "IPSYNC_ALARM").as_deref(), Some("address_in_use"));
        assert_eq!(field(&got[3], "MESSAGE").as_deref(), Some("ALARM address_in_use: 10.77.0.20 at 02:00:00:00:00:77"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
