//! The persisted sequence counters of the senders: `announce.seq` (ipsync sequence) and
//! `forcerenew.replay` (RFC 3118 replay counter), both in `state_dir`.
//!
//! Contract: the next value follows DESIGN §4.3, max(last + 1, µs since the epoch), and is on
//! disk (through the shell's one atomic writer) before it is returned, so a sender that crashes
//! right after sending never reuses it. An unreadable counter file (a planted symlink, which is
//! never followed, or anything over [`MAX_COUNTER_BYTES`] included) counts as none, with a
//! warning: the clock term still keeps the sequence above anything sent before.

use crate::shell::atomic_file::{read_own, write_atomic};
use crate::wire::ipsync::next_sequence;
use std::path::Path;

/// A counter file holds one u64 in decimal and a newline.
pub const MAX_COUNTER_BYTES: u64 = 64;

/// Takes the next sequence from the counter file `dir/name` and persists it before returning.
pub fn take_persisted(dir: &Path, name: &str, now_unix_us: u64) -> std::io::Result<u64> {
    take_block(dir, name, now_unix_us, 1)
}

/// Takes `count` consecutive sequences at once: returns the first, with the last persisted (one
/// write) before returning. A sender of thousands of frames writes its counter once instead of
/// once per frame, and the next run still starts above every value of this block. A counter
/// that would pass `u64::MAX` is an error, never a wrap or a repeat.
pub fn take_block(dir: &Path, name: &str, now_unix_us: u64, count: u64) -> std::io::Result<u64> {
    let last = match read_own(dir, name, MAX_COUNTER_BYTES) {
        Ok(Some(b)) => std::str::from_utf8(&b).ok().and_then(|s| s.trim().parse().ok()),
        Ok(None) => None,
        Err(e) => {
            log::warn!("{e}; counting from the clock");
            None
        }
    };
    let exhausted = || std::io::Error::other(format!("{}: the counter is exhausted", dir.join(name).display()));
    if last == Some(u64::MAX) {
        return Err(exhausted());
    }
    let first = next_sequence(last, now_unix_us);
    let end = first.checked_add(count.max(1) - 1).ok_or_else(exhausted)?;
    write_atomic(dir, name, format!("{end}\n").as_bytes())?;
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increases_even_when_the_clock_goes_back() {
        let d = std::env::temp_dir().join(format!("ipsyncd-seq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(take_persisted(&d, "announce.seq", 1000).unwrap(), 1000);
        assert_eq!(take_persisted(&d, "announce.seq", 10).unwrap(), 1001);
        assert_eq!(std::fs::read_to_string(d.join("announce.seq")).unwrap(), "1001\n");
        assert_eq!(take_persisted(&d, "announce.seq", 5000).unwrap(), 5000);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_block_is_persisted_at_its_last_value() {
        let d = std::env::temp_dir().join(format!("ipsyncd-seq-block-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(take_block(&d, "forcerenew.replay", 1000, 50).unwrap(), 1000);
        assert_eq!(std::fs::read_to_string(d.join("forcerenew.replay")).unwrap(), "1049\n");
        assert_eq!(take_block(&d, "forcerenew.replay", 1010, 1).unwrap(), 1050);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_exhausted_counter_is_an_error_not_a_wrap() {
        let d = std::env::temp_dir().join(format!("ipsyncd-seq-max-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("forcerenew.replay"), format!("{}\n", u64::MAX - 2)).unwrap();
        assert!(take_block(&d, "forcerenew.replay", 5, 3).is_err(), "MAX-1 ..= MAX+1 does not fit");
        assert_eq!(take_block(&d, "forcerenew.replay", 5, 2).unwrap(), u64::MAX - 1);
        assert!(take_persisted(&d, "forcerenew.replay", 5).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_planted_counter_link_is_replaced_not_followed() {
        let d = std::env::temp_dir().join(format!("ipsyncd-seq-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("victim"), b"99999999\n").unwrap();
        std::os::unix::fs::symlink(d.join("victim"), d.join("forcerenew.replay")).unwrap();
        // The link's target is not read as our counter, nor written.
        assert_eq!(take_persisted(&d, "forcerenew.replay", 7).unwrap(), 7);
        assert_eq!(std::fs::read(d.join("victim")).unwrap(), b"99999999\n");
        assert!(!std::fs::symlink_metadata(d.join("forcerenew.replay")).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
