//! The one way the daemon and its tools replace a file (DESIGN §10): the state file, the status
//! file and the announce/forcerenew sequence files all go through [`write_atomic`].
//!
//! Contract: when [`write_atomic`] returns `Ok`, `dir/name` holds exactly the given bytes and
//! survives a crash (the file and the directory are fsynced); a crash or an error at any point
//! leaves either the old content or the new, never a torn file. The temp file is created with
//! O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, under a fresh unpredictable name in `dir`: a symlink
//! planted there is never followed, and a temp left by a crash never blocks the next write. On
//! any error the temp file is removed.

use super::clock;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Fresh names to try before giving up. A collision of 64 random bits means someone is
/// planting names in our directory; a few retries make that harmless without looping forever.
const CREATE_ATTEMPTS: usize = 8;

/// Atomically replaces `dir/name` with `bytes`. `name` must be a plain file name.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a plain file name")));
    }
    let (tmp, file) = create_temp(dir, name)?;
    if let Err(e) = fill_and_rename(file, bytes, &tmp, &dir.join(name)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is only durable once the directory entry is on disk.
    File::open(dir)?.sync_all()
}

/// `.NAME.<16 random hex digits>.tmp`: hidden, recognisably ours, and not guessable in advance.
fn temp_name(name: &str) -> String {
    format!(".{name}.{:016x}.tmp", clock::random_u64())
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..CREATE_ATTEMPTS {
        let tmp = dir.join(temp_name(name));
        // create_new is O_CREAT|O_EXCL: it fails on any existing entry, a symlink included;
        // O_NOFOLLOW says so a second time for kernels and filesystems that we have not met.
        let opened =
            OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp);
        match opened {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

fn fill_and_rename(mut file: File, bytes: &[u8], tmp: &Path, target: &Path) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ipsyncd-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn write_then_read_round_trips_with_mode_0600() {
        let d = tmpdir("rt");
        write_atomic(&d, "state.json", b"first").unwrap();
        write_atomic(&d, "state.json", b"second\n").unwrap();
        assert_eq!(fs::read(d.join("state.json")).unwrap(), b"second\n");
        assert_eq!(fs::metadata(d.join("state.json")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(leftovers(&d).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_at_predictable_temp_names_are_not_followed() {
        let d = tmpdir("symlink");
        let victim = d.join("victim");
        fs::write(&victim, b"untouched").unwrap();
        // Every temp name an earlier version used, plus the target itself.
        for name in ["state.json", "status.json", "announce.seq", "forcerenew.replay"] {
            std::os::unix::fs::symlink(&victim, d.join(format!(".{name}.tmp"))).unwrap();
        }
        std::os::unix::fs::symlink(&victim, d.join("status.json")).unwrap();
        for name in ["state.json", "status.json", "announce.seq", "forcerenew.replay"] {
            write_atomic(&d, name, name.as_bytes()).unwrap();
            assert_eq!(fs::read(d.join(name)).unwrap(), name.as_bytes());
        }
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        // The planted link at the target was replaced, not written through.
        assert!(!fs::symlink_metadata(d.join("status.json")).unwrap().file_type().is_symlink());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_names_are_fresh_each_time() {
        let a = temp_name("state.json");
        assert!(a.starts_with(".state.json.") && a.ends_with(".tmp"));
        assert_ne!(a, temp_name("state.json"));
    }

    #[test]
    fn a_failed_write_removes_its_temp_and_keeps_the_target() {
        let d = tmpdir("fail");
        // A directory at the target: the rename fails after the temp was written.
        fs::create_dir(d.join("state.json")).unwrap();
        fs::write(d.join("state.json/keep"), b"x").unwrap();
        assert!(write_atomic(&d, "state.json", b"new").is_err());
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        assert_eq!(fs::read(d.join("state.json/keep")).unwrap(), b"x");
        assert!(write_atomic(&d, "../escape", b"no").is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
