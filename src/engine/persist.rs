//! The persistence policy (DESIGN §10): a state that cannot be written is never treated as
//! written.
//!
//! Contract: the shell writes the state each time [`Engine::take_dirty`] says it changed, before
//! the hooks queued with that change, and holds every later life-cycle hook until a write
//! succeeds (shell/worker.rs). What a failed write leads to is decided here:
//! - every failure ([`ActionResult::PersistFailed`]) is counted in `dropped.persist_failed`;
//! - the first failure of an outage, and then at most one per `alarm_interval_s`, is a decision
//!   `kernel` `retry` with reason `persist_failed` and the action `alarm persist_failed` (the
//!   kernel refused the write: EROFS, ENOSPC, EACCES…);
//! - the state is written again after a backoff of 1 s, doubling up to 30 s, until the shell
//!   reports [`ActionResult::Persisted`], which ends the outage. A retry coming due only marks the
//!   state dirty: it has no action of its own, so it makes no line; its outcome does.
//!
//! [`ActionResult::PersistFailed`]: super::vocab::ActionResult::PersistFailed
//! [`ActionResult::Persisted`]: super::vocab::ActionResult::Persisted

use super::core::Engine;
use super::decision::{Decision, Input, Verdict};
use super::pending::PersistRetry;
use super::vocab::{Action, Instant};
use std::net::Ipv4Addr;

pub const BACKOFF_FIRST_MS: u64 = 1000;
pub const BACKOFF_MAX_MS: u64 = 30_000;
/// The `alarm` kind and the `retry` reason.
pub const PERSIST_FAILED: &str = "persist_failed";

/// Nominal backoff before the `attempts`-th retry: 1 s, 2 s, 4 s, 8 s, 16 s, then 30 s.
pub fn backoff_ms(attempts: u32) -> u64 {
    BACKOFF_FIRST_MS.saturating_mul(1u64 << attempts.saturating_sub(1).min(16)).min(BACKOFF_MAX_MS)
}

impl Engine {
    /// A write failed. Several writes may be in flight (each change sends one); only a failure
    /// while no retry is scheduled schedules one, so a burst of failures does not run the backoff
    /// up to its cap at once.
    pub(super) fn persist_failed(&mut self, now: Instant, error: String) {
        self.counters.drop(PERSIST_FAILED);
        let mut retry = self.persist.unwrap_or(PersistRetry { attempts: 0, next_at: None });
        if retry.next_at.is_none() {
            retry.attempts = retry.attempts.saturating_add(1);
            retry.next_at = Some(now.add_ms(backoff_ms(retry.attempts)));
        }
        self.persist = Some(retry);
        // Not about an address: coalesced under 0.0.0.0.
        if !self.alarms.raise(PERSIST_FAILED, Ipv4Addr::UNSPECIFIED, now, self.cfg.alarm_interval_s) {
            log::debug!("state not persisted (again): {error}");
            self.counters.drop("alarm_coalesced");
            return;
        }
        log::error!("state not persisted: {error}");
        let detail = format!("{error}; the state is not on disk and its hooks wait; retrying");
        self.decide(
            Decision::new(None, now, Input::Kernel, Verdict::Retry)
                .reason(PERSIST_FAILED)
                .actions(vec![Action::Alarm { kind: PERSIST_FAILED, detail }]),
        );
    }

    /// A write succeeded after failures: the outage is over.
    pub(super) fn persisted(&mut self) {
        if let Some(r) = self.persist.take() {
            log::info!("state persisted again after {} retries", r.attempts);
        }
    }

    pub(super) fn persist_deadline(&self) -> Option<Instant> {
        self.persist.and_then(|r| r.next_at)
    }

    /// A retry coming due: the shell writes the state again.
    pub(super) fn persist_timeout(&mut self, now: Instant) {
        if let Some(r) = self.persist.as_mut().filter(|r| r.next_at.is_some_and(|t| t <= now)) {
            r.next_at = None;
            self.mark_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_one_second_and_caps_at_thirty() {
        let v: Vec<u64> = (1..=8).map(backoff_ms).collect();
        assert_eq!(v, [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(backoff_ms(u32::MAX), 30_000);
        assert_eq!(backoff_ms(0), 1000);
    }
}
