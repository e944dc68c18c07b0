//! The one place the daemon reads a clock or the kernel's random source.
//!
//! Contract: the engine's [`Instant`] is CLOCK_BOOTTIME live (monotonic, counts suspend, never
//! stepped by NTP or an operator); wall time ([`unix_us`]) is used only where a human or a peer
//! reads it: the decision log's `time`, persisted dates, ipsync sequences. Randomness comes from
//! getrandom(2) and is handed to the engine as a seed.

use crate::engine::Instant;

/// What the worker reads once per wakeup.
pub trait Clock: Send {
    /// Monotonic time for the engine.
    fn now(&self) -> Instant;
    /// Wall time, microseconds since the Unix epoch, and whether it is synchronised.
    fn wall(&self) -> (u64, bool);
}

/// The live daemon's clock: CLOCK_BOOTTIME for the engine, the system clock for wall time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        boottime()
    }
    fn wall(&self) -> (u64, bool) {
        (unix_us(), wall_synchronised_cached())
    }
}

/// CLOCK_BOOTTIME in microseconds.
pub fn boottime() -> Instant {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into a live, properly aligned local.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if r != 0 {
        // CLOCK_BOOTTIME exists on every kernel since 2.6.39; fall back to MONOTONIC, never to wall.
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    Instant::from_micros((ts.tv_sec.max(0) as u64).saturating_mul(1_000_000) + (ts.tv_nsec.max(0) as u64) / 1000)
}

/// Wall time in microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Wall time in whole seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    unix_us() / 1_000_000
}

/// Whether the kernel says the wall clock is synchronised (adjtimex(2) without STA_UNSYNC).
/// An answer we cannot get counts as unsynchronised, so the freshness check is skipped rather
/// than applied against a clock nobody vouches for.
pub fn wall_synchronised() -> bool {
    // SAFETY: a zeroed timex is a valid "read only" request (modes = 0); adjtimex fills it in.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: one live timex.
    let state = unsafe { libc::adjtimex(&mut tx) };
    state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
}

/// [`wall_synchronised`], asked of the kernel at most once a second. It is read on every
/// wake-up, including the one between a FORCERENEW and our REQUEST, and adjtimex is a real
/// system call (clock_gettime is not). NTP's state does not change faster than that matters
/// for a freshness check measured in hours.
pub fn wall_synchronised_cached() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Bit 0: the answer; the rest: when it was asked (boot-time seconds + 1, 0 = never).
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now_s = boottime().0 / 1_000_000 + 1;
    let last = LAST.load(Ordering::Relaxed);
    if last != 0 && now_s.saturating_sub(last >> 1) < 1 {
        return last & 1 == 1;
    }
    let synced = wall_synchronised();
    LAST.store(now_s << 1 | u64::from(synced), Ordering::Relaxed);
    synced
}

/// `N` bytes from getrandom(2). The kernel's generator does not fail once seeded; if it did,
/// this falls back to mixing both clocks rather than return a constant.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: getrandom writes at most N - filled bytes into the live tail of `b`.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n <= 0 {
            let mix = unix_us() ^ boottime().micros().rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
            for (i, x) in b[filled..].iter_mut().enumerate() {
                *x = (mix >> ((i % 8) * 8)) as u8 ^ (i as u8);
            }
            break;
        }
        filled += n as usize;
    }
    b
}

pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_is_monotonic_and_random_differs() {
        let a = boottime();
        let b = boottime();
        assert!(b >= a);
        assert_ne!(random_bytes::<16>(), random_bytes::<16>());
        assert!(unix_us() > 1_600_000_000_000_000);
    }
}
