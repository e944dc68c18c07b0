//! The state file (DESIGN §10): `state_dir/state.json`.
//!
//! Contract: [`save`] goes through [`atomic_file::write_atomic`], so a crash at any point leaves
//! the old or the new state, never a torn one, and a symlink planted in `state_dir` is never
//! followed. Reading goes through [`atomic_file::read_own`]: a symlink, a FIFO or anything else
//! that is not a regular file at `state.json` is never followed or blocked on, and nothing over
//! [`MAX_STATE_BYTES`] is read. [`load`] moves a corrupt file (any of those included) aside,
//! never silently empties it, under a name that never replaces an earlier moved-aside file
//! (renameat2 RENAME_NOREPLACE, or a hard link where the filesystem has no such rename), and
//! says so loudly. [`read`] only looks: it is for `status`, which must not change the daemon's
//! files.

use super::atomic_file;
use crate::engine::state::STATE_VERSION;
use crate::engine::State;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "state.json";
/// A state file larger than this is not ours (a real one is a few hundred bytes).
pub const MAX_STATE_BYTES: u64 = 1 << 20;
/// Moved-aside names tried per second before giving up; a thousand corrupt states within one
/// second means something else is writing here.
const MAX_ASIDE_PER_SECOND: u32 = 1000;

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

#[derive(Debug)]
pub enum Loaded {
    Fresh,
    Restored(State),
    /// The file was unreadable as state and was moved to the given path.
    MovedAside {
        to: PathBuf,
        error: String,
    },
}

/// A state written by a build that reads another version: not corrupt, and never moved aside
/// or overwritten (a downgrade must not destroy a newer build's state); `run` refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedVersion(pub u64);

impl std::fmt::Display for UnsupportedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state version {}, but this build reads version {STATE_VERSION} only; run the build that wrote it, or move the file away to start fresh",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedVersion {}

/// The version a state file's JSON names, read before the strict parse: a newer version may
/// hold fields this build does not know, and is then not "corrupt".
fn version_of(text: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u64,
    }
    serde_json::from_slice::<Versioned>(text).ok().map(|v| v.version)
}

/// Whether the state in `dir` (if any) is one this build reads; what `check` and `run` ask at
/// start. A corrupt file is not an error here: `run` moves it aside.
pub fn check_version(dir: &Path) -> Result<(), UnsupportedVersion> {
    match atomic_file::read_own(dir, FILE_NAME, MAX_STATE_BYTES) {
        Ok(Some(text)) => match version_of(&text) {
            Some(v) if v != u64::from(STATE_VERSION) => Err(UnsupportedVersion(v)),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// `None` when there is no state file; `Some(Err(why))` when there is one but it is not state.
/// A state of another version is an error of its own ([`UnsupportedVersion`]), not corrupt.
fn parse(dir: &Path) -> io::Result<Option<Result<State, String>>> {
    match atomic_file::read_own(dir, FILE_NAME, MAX_STATE_BYTES) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => match version_of(&text) {
            Some(v) if v != u64::from(STATE_VERSION) => {
                Err(io::Error::new(io::ErrorKind::InvalidData, UnsupportedVersion(v)))
            }
            _ => Ok(Some(serde_json::from_slice::<State>(&text).map_err(|e| e.to_string()))),
        },
        Err(e) if e.is_foreign() => Ok(Some(Err(e.to_string()))),
        Err(e) => Err(e.into()),
    }
}

/// Loads the state for a run; `now_unix` (seconds) names a moved-aside corrupt file.
pub fn load(dir: &Path, now_unix: u64) -> io::Result<Loaded> {
    let p = path(dir);
    match parse(dir)? {
        None => Ok(Loaded::Fresh),
        Some(Ok(s)) => Ok(Loaded::Restored(s)),
        Some(Err(error)) => {
            let to = move_aside(dir, &p, now_unix)?;
            log::error!(
                "state file {} is corrupt ({error}); moved it to {} and starting fresh",
                p.display(),
                to.display()
            );
            Ok(Loaded::MovedAside { to, error })
        }
    }
}

/// The state as it is on disk, changing nothing: `Ok(None)` when there is none or it is corrupt
/// (the daemon moves a corrupt one aside when it next starts).
pub fn read(dir: &Path) -> io::Result<Option<State>> {
    Ok(parse(dir)?.and_then(Result::ok))
}

/// Moves `p` to `state.json.corrupt-<now>` or, if that is taken, `…-<now>-<n>`, with a move
/// that refuses to replace an existing name, so an earlier moved-aside file is never lost.
fn move_aside(dir: &Path, p: &Path, now_unix: u64) -> io::Result<PathBuf> {
    for n in 0..MAX_ASIDE_PER_SECOND {
        let name = match n {
            0 => format!("{FILE_NAME}.corrupt-{now_unix}"),
            n => format!("{FILE_NAME}.corrupt-{now_unix}-{n}"),
        };
        let to = dir.join(name);
        match rename_noreplace(p, &to) {
            Ok(()) => {
                fs::File::open(dir)?.sync_all()?;
                return Ok(to);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: {MAX_ASIDE_PER_SECOND} moved-aside state files for second {now_unix} already", p.display()),
    ))
}

/// Renames `from` to `to` unless `to` exists (EEXIST then). renameat2(RENAME_NOREPLACE) does it
/// in one step; on a filesystem or kernel without it (EINVAL, ENOSYS), a hard link, which never
/// replaces a name either, then removing `from`. A crash between those two leaves both names,
/// so the next start moves the same bytes aside once more: a copy too many, never one lost.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call; renameat2 reads nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        _ => Err(e),
    }
}

pub fn save(dir: &Path, state: &State) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    json.push(b'\n');
    // The path in the message: it reaches the `alarm persist_failed` line.
    atomic_file::write_atomic(dir, FILE_NAME, &json)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path(dir).display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ipsyncd-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn save_then_load() {
        let d = tmpdir("rt");
        let mut s = State::default();
        s.sequences.insert(3, 7);
        save(&d, &s).unwrap();
        match load(&d, 0).unwrap() {
            Loaded::Restored(back) => assert_eq!(back, s),
            other => panic!("{other:?}"),
        }
        assert_eq!(read(&d).unwrap(), Some(s));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn another_version_is_refused_and_left_in_place() {
        let d = tmpdir("version");
        let newer = b"{\"version\":2,\"field_of_the_future\":1}";
        fs::write(path(&d), newer).unwrap();
        assert_eq!(check_version(&d), Err(UnsupportedVersion(2)));
        let e = load(&d, 0).unwrap_err();
        assert!(e.to_string().contains("state version 2"), "{e}");
        assert_eq!(fs::read(path(&d)).unwrap(), newer, "never moved aside or rewritten");
        fs::write(path(&d), b"{\"version\":1}").unwrap();
        assert_eq!(check_version(&d), Ok(()));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_emptied() {
        let d = tmpdir("corrupt");
        fs::write(path(&d), b"{\"version\":1,").unwrap();
        // `read` only looks.
        assert_eq!(read(&d).unwrap(), None);
        assert!(path(&d).exists());
        match load(&d, 42).unwrap() {
            Loaded::MovedAside { to, .. } => {
                assert_eq!(fs::read(&to).unwrap(), b"{\"version\":1,");
                assert!(!path(&d).exists());
            }
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&d).unwrap();
    }

    /// Two corrupt states within the same second used to share one moved-aside name, and the
    /// second rename destroyed the first.
    #[test]
    fn two_corrupt_states_in_one_second_leave_two_files() {
        let d = tmpdir("corrupt-twice");
        let mut moved = Vec::new();
        for body in [&b"first corrupt"[..], b"second corrupt", b"third corrupt"] {
            fs::write(path(&d), body).unwrap();
            match load(&d, 1_764_138_625).unwrap() {
                Loaded::MovedAside { to, .. } => moved.push((to, body)),
                other => panic!("{other:?}"),
            }
        }
        assert_ne!(moved[0].0, moved[1].0);
        assert_ne!(moved[1].0, moved[2].0);
        for (to, body) in &moved {
            assert_eq!(&fs::read(to).unwrap()[..], *body);
        }
        assert!(matches!(load(&d, 1_764_138_625).unwrap(), Loaded::Fresh));
        fs::remove_dir_all(&d).unwrap();
    }

    /// A planted link at state.json is neither followed for reading nor left to be written
    /// through: it is moved aside as it is, and its target keeps its bytes.
    #[test]
    fn a_symlinked_or_oversized_state_is_moved_aside_unfollowed() {
        let d = tmpdir("symlinked");
        let victim = d.join("victim");
        fs::write(&victim, b"{}").unwrap();
        std::os::unix::fs::symlink(&victim, path(&d)).unwrap();
        assert_eq!(read(&d).unwrap(), None, "a link is not state, even to valid JSON");
        match load(&d, 7).unwrap() {
            Loaded::MovedAside { to, error } => {
                assert!(fs::symlink_metadata(&to).unwrap().file_type().is_symlink(), "{error}");
                assert!(error.contains("symbolic link"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        save(&d, &State::default()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"{}");
        fs::write(path(&d), vec![b' '; MAX_STATE_BYTES as usize + 1]).unwrap();
        assert!(matches!(load(&d, 7).unwrap(), Loaded::MovedAside { .. }));
        fs::remove_dir_all(&d).unwrap();
    }
}
