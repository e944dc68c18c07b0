//! `ipsyncd replay` (DESIGN §6): a capture through the live pipeline, the decision log as JSON
//! lines on stdout.
//!
//! Contract: the same pipeline as `run`, with the pcap as source, the pcap's time as clock and
//! the Recorder as applier; the generator is seeded with a constant, so the same capture and
//! config always print the same log. Reading the capture to its end is success even when frames
//! were rejected; a capture that cannot be read to its end is a runtime error.

use super::applier::Recorder;
use super::source::PcapSource;
use super::worker::Timing;
use super::{clock, decision_log, pipeline, state_file};
use crate::config::Config;
use crate::engine::input::DecodeContext;
use crate::engine::{Decision, Engine, State};
use std::fmt;
use std::io::Write;
use std::path::Path;

#[derive(Debug)]
pub enum ReplayError {
    /// The config cannot replay (exit 2); the message names the file and the key.
    Config(String),
    /// The state directory or the capture failed (exit 1).
    Runtime(String),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Config(m) | ReplayError::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Replays `pcap` with `cfg` (read from `config_path`, named in errors). With `state_dir` the
/// state is loaded from and persisted there; without it replay starts fresh and persists nothing.
pub fn run(pcap: &Path, cfg: &Config, config_path: &Path, state_dir: Option<&Path>) -> Result<(), ReplayError> {
    let in_file = |m: String| ReplayError::Config(format!("{}: {m}", config_path.display()));
    let mac = cfg
        .terminal_mac()
        .map_err(in_file)?
        .ok_or_else(|| in_file("terminal.mac: required for replay (the terminal's MAC)".into()))?;
    let ecfg = cfg.engine_config(mac).map_err(in_file)?;
    if ecfg.allow_unauthenticated {
        log::warn!("allow_unauthenticated = true: unauthenticated FORCERENEW will be ACCEPTED (lab use only)");
    }
    let state = match state_dir {
        None => State::default(),
        Some(d) => load_state(d)?,
    };
    let source = PcapSource::open(pcap).map_err(|e| ReplayError::Runtime(format!("{}: {e}", pcap.display())))?;
    let ctx = DecodeContext { mac, port: ecfg.port, server_option: ecfg.server_option };
    // Replay seeds its generator with a constant: the same capture gives the same log.
    let engine = Engine::new(ecfg, state, 0);
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let sink = Box::new(move |d: &Decision, wall: crate::engine::Instant| {
        let _ = writeln!(out, "{}", decision_log::to_json_at(d, wall));
    });
    // The one call into the pipeline: when its API changes, only this changes.
    let summary = pipeline::run(
        Box::new(source),
        ctx,
        engine,
        Box::new(Recorder::new(state_dir.map(Path::to_path_buf))),
        sink,
        Timing::Replay,
        pipeline::Extras::default(),
    );
    log::info!(
        "replayed {} frames: {} filtered, drops {:?}, verdicts {:?}",
        summary.frames,
        summary.filtered,
        summary.capture_drops,
        summary.counters.verdicts
    );
    match summary.source_error {
        Some(e) => Err(ReplayError::Runtime(format!("{}: {e} (after {} frames)", pcap.display(), summary.frames))),
        // DESIGN §6: with --state-dir, a state that could not be persisted is exit 1.
        None if summary.persist_failures > 0 => Err(ReplayError::Runtime(format!(
            "{}: the state could not be persisted ({} failed writes)",
            state_dir.map_or(String::new(), |d| d.display().to_string()),
            summary.persist_failures
        ))),
        None => Ok(()),
    }
}

/// The persisted state to continue from; a missing or corrupt one (moved aside) starts fresh.
fn load_state(dir: &Path) -> Result<State, ReplayError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ReplayError::Runtime(format!("{}: cannot create state directory: {e}", dir.display())))?;
    match state_file::load(dir, clock::unix_secs())
        .map_err(|e| ReplayError::Runtime(format!("{}: {e}", dir.display())))?
    {
        state_file::Loaded::Restored(s) => Ok(s),
        _ => Ok(State::default()),
    }
}
