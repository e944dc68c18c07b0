//! The fleet the senders reach: `--leases SOURCE` read and summarised the same way for
//! `forcerenew` and `announce`.
//!
//! Contract: every bad line is reported on stderr with its number and why, and skipped; the
//! expired leases are skipped and counted; an unreadable source is an error naming it (exit 1,
//! since the file is the DHCP server's, not ours to fix). Nothing is sent from here.

use super::error::ToolError;
use super::leases::{self, Loaded};
use crate::shell::clock;

/// Reads `source` and reports what was skipped.
pub fn read(source: &str) -> Result<Loaded, ToolError> {
    let loaded =
        leases::load(source, clock::unix_secs()).map_err(|e| ToolError::Runtime(format!("--leases {source}: {e}")))?;
    for b in &loaded.bad {
        log::warn!("{source}: line {}: {}; skipped", b.line, b.why);
    }
    eprintln!(
        "{source}: {}: {} live leases, {} expired and {} bad lines skipped",
        loaded.format,
        loaded.leases.len(),
        loaded.expired,
        loaded.bad.len()
    );
    Ok(loaded)
}
