//! The state file (DESIGN §10): `state_dir/state.json`.
//!
//! Contract: [`save`] writes a temp file, fsyncs it, renames it over the old one and fsyncs the
//! directory, so a crash at any point leaves the old or the new state, never a torn one.
//! [`load`] moves a corrupt file aside (never silently empties it) and says so loudly.

use crate::engine::State;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "state.json";
/// A state file larger than this is not ours.
const MAX_STATE_BYTES: u64 = 1 << 20;

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

pub fn load(dir: &Path, now_unix: u64) -> std::io::Result<Loaded> {
    let p = path(dir);
    let meta = match fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Fresh),
        Err(e) => return Err(e),
    };
    let parsed = if meta.len() > MAX_STATE_BYTES {
        Err(format!("{} bytes is too large for a state file", meta.len()))
    } else {
        let text = fs::read(&p)?;
        serde_json::from_slice::<State>(&text).map_err(|e| e.to_string())
    };
    match parsed {
        Ok(s) => Ok(Loaded::Restored(s)),
        Err(error) => {
            let to = dir.join(format!("{FILE_NAME}.corrupt-{now_unix}"));
            fs::rename(&p, &to)?;
            log::error!(
                "state file {} is corrupt ({error}); moved it to {} and starting fresh",
                p.display(),
                to.display()
            );
            Ok(Loaded::MovedAside { to, error })
        }
    }
}

pub fn save(dir: &Path, state: &State) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path(dir))?;
    File::open(dir)?.sync_all()
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
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_emptied() {
        let d = tmpdir("corrupt");
        fs::write(path(&d), b"{\"version\":1,").unwrap();
        match load(&d, 42).unwrap() {
            Loaded::MovedAside { to, .. } => {
                assert_eq!(fs::read(&to).unwrap(), b"{\"version\":1,");
                assert!(!path(&d).exists());
            }
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
