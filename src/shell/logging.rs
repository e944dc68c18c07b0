//! Where log records go: stderr as env_logger writes it, or journald's native protocol when
//! systemd connected our stderr to the journal, with each record's key-values as journal fields.
//!
//! Contract: `RUST_LOG` filters exactly as env_logger does (the filter is env_logger's own,
//! built from the same environment), and it filters both paths alike: a record env_logger would
//! not write is never sent to the journal either. An entry the journal refuses (journald
//! restarting, its socket full) is written to stderr instead, with its syslog priority as
//! `<N>`, so nothing is lost silently. Key-values never reach stderr: a line there reads as it
//! did before the journal fields existed.

use super::journal::{self, Journal};
use log::kv::{Key, Value, VisitSource};
use log::{Log, Metadata, Record};
use std::io::Write;
use std::path::Path;

/// The logger the process installs.
pub struct Logger {
    /// Filters every record, and writes those that go to stderr.
    stderr: env_logger::Logger,
    journal: Option<Journal>,
}

impl Logger {
    /// The filter from `RUST_LOG`, or `default_level` without it.
    pub fn from_env(default_level: &str, journal: Option<Journal>, stderr_is_journal: bool) -> Logger {
        let b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
        Logger::build(b, journal, stderr_is_journal)
    }

    /// The filter from a `RUST_LOG`-style spec (tests).
    pub fn with_filter(spec: &str, journal: Option<Journal>) -> Logger {
        let mut b = env_logger::Builder::new();
        b.parse_filters(spec);
        Logger::build(b, journal, false)
    }

    fn build(mut b: env_logger::Builder, journal: Option<Journal>, stderr_is_journal: bool) -> Logger {
        // Under systemd stderr is the journal's stream: journald adds the time itself and reads
        // the priority from a `<N>` prefix (sd-daemon(3)). Only when stderr really is that
        // stream: JOURNAL_STREAM is inherited by shells in a desktop's terminal too.
        if stderr_is_journal {
            b.format(|f, r| writeln!(f, "<{}>{}", priority(r.level()), r.args()));
        } else {
            b.format_timestamp_millis();
        }
        Logger { stderr: b.build(), journal }
    }

    /// The most verbose level any directive lets through (for `log::set_max_level`).
    pub fn filter(&self) -> log::LevelFilter {
        self.stderr.filter()
    }

    /// Whether records go to the journal.
    pub fn to_journal(&self) -> bool {
        self.journal.is_some()
    }
}

/// syslog's priorities, as journald's PRIORITY field and the stderr prefix use them.
pub fn priority(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One record as a journal entry: the standard fields, then the record's key-values.
pub fn entry(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    journal::put_field(&mut out, "PRIORITY", priority(r.level()).to_string().as_bytes());
    journal::put_field(&mut out, "MESSAGE", r.args().to_string().as_bytes());
    journal::put_field(&mut out, "SYSLOG_IDENTIFIER", b"ipsyncd");
    journal::put_field(&mut out, "SYSLOG_PID", std::process::id().to_string().as_bytes());
    journal::put_field(&mut out, "TARGET", r.target().as_bytes());
    if let (Some(file), Some(line)) = (r.file(), r.line()) {
        journal::put_field(&mut out, "CODE_FILE", file.as_bytes());
        journal::put_field(&mut out, "CODE_LINE", line.to_string().as_bytes());
    }
    struct Fields<'a>(&'a mut Vec<u8>);
    impl<'kvs> VisitSource<'kvs> for Fields<'_> {
        fn visit_pair(&mut self, k: Key<'kvs>, v: Value<'kvs>) -> Result<(), log::kv::Error> {
            journal::put_field(self.0, k.as_str(), v.to_string().as_bytes());
            Ok(())
        }
    }
    let _ = r.key_values().visit(&mut Fields(&mut out));
    out
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        self.stderr.enabled(m)
    }

    fn log(&self, r: &Record) {
        if !self.stderr.matches(r) {
            return;
        }
        match &self.journal {
            Some(j) if j.send(&entry(r)).is_ok() => {}
            _ => self.stderr.log(r),
        }
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Installs the process's logger: journald's native protocol when systemd connected stderr to
/// the journal (`socket` is where journald listens, [`journal::JOURNAL_SOCKET`]), else stderr.
pub fn init(default_level: &str, socket: &Path) {
    let connected = journal::stderr_is_journal();
    let journal = if connected { Journal::open(socket).ok() } else { None };
    let logger = Logger::from_env(default_level, journal, connected);
    log::set_max_level(logger.filter());
    // Only fails when a logger is already installed, and then that one stays.
    let _ = log::set_boxed_logger(Box::new(logger));
}

/// Logs `message` at `level` under `target` through `logger` with journal `fields`, if the
/// filter lets it through; `message` is only built then (a decision's JSON costs a few
/// allocations, and under a flood every decision passes here).
pub fn emit(
    logger: &dyn Log,
    level: log::Level,
    target: &str,
    fields: &[(&str, &str)],
    message: impl FnOnce() -> String,
) {
    // The logger's own filter, not `log::max_level()`: a test's logger is not the process's.
    if !logger.enabled(&Metadata::builder().level(level).target(target).build()) {
        return;
    }
    let m = message();
    logger.log(&Record::builder().level(level).target(target).args(format_args!("{m}")).key_values(&fields).build());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_gets_fields_and_the_filter_of_rust_log() {
        let (dir, path, server) = crate::shell::journal::tests::test_socket("logging");
        let l = Logger::with_filter("info,ipsyncd::decision=debug", Some(Journal::open(&path).unwrap()));
        emit(&l, log::Level::Debug, "ipsyncd::decision", &[("IPSYNC_VERDICT", "reject")], || "{}".into());
        emit(&l, log::Level::Debug, "ipsyncd::shell::worker", &[], || "filtered out".into());
        let mut buf = vec![0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let f = journal::parse_entry(&buf[..n]).unwrap_or_default();
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(get("PRIORITY").as_deref(), Some("7"));
        assert_eq!(get("IPSYNC_VERDICT").as_deref(), Some("reject"));
        assert_eq!(get("TARGET").as_deref(), Some("ipsyncd::decision"));
        assert!(server.recv(&mut buf).is_err(), "debug of another target is filtered as RUST_LOG says");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
