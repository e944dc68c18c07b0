//! Carrying out actions. [`Applier`] is implemented by the Recorder here (replay and tests) and,
//! for the live daemon, by the netlink applier (issue 3).
//!
//! Contract: the applier thread owns every side effect (kernel state, hooks, the state file), so
//! the worker never blocks on one. Each action is answered with an [`ActionResult`].

use crate::engine::{Action, ActionResult, State};
use std::path::PathBuf;

pub trait Applier: Send {
    fn apply(&mut self, action: &Action) -> ActionResult;
    /// Writes the state durably. Called after every change.
    fn persist(&mut self, state: &State) -> std::io::Result<()>;
}

/// Records what would be done and reports every action as done. With a state directory it
/// also persists state, so a replay can be continued or inspected with `status`.
#[derive(Debug, Default)]
pub struct Recorder {
    pub state_dir: Option<PathBuf>,
    /// Count per action op.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    pub persisted: u64,
}

impl Recorder {
    pub fn new(state_dir: Option<PathBuf>) -> Recorder {
        Recorder { state_dir, ..Recorder::default() }
    }
}

impl Applier for Recorder {
    fn apply(&mut self, action: &Action) -> ActionResult {
        *self.counts.entry(action.op()).or_default() += 1;
        ActionResult::Done
    }

    fn persist(&mut self, state: &State) -> std::io::Result<()> {
        self.persisted += 1;
        match &self.state_dir {
            Some(d) => super::state_file::save(d, state),
            None => Ok(()),
        }
    }
}
